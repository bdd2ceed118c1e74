//! Driver and server errors as error classes: what the run protocol should do about
//! them (retry, wait, stop until someone fixes the config or the credentials).
//!
//! PostgreSQL is classified by SQLSTATE, MySQL/MariaDB by error number. Messages name
//! the redacted target (`scheme://host:port/db`) and pass through `Target::scrub`.

use entity::ErrorClass;
use sqlx::mysql::MySqlDatabaseError;

use super::super::FetchError;
use super::target::{Dialect, Target};

/// The class of a PostgreSQL SQLSTATE.
fn pg_class(state: &str) -> ErrorClass {
    match state {
        "28P01" | "28000" => ErrorClass::Auth,
        "57014" => ErrorClass::Timeout,
        "53300" => ErrorClass::RateLimited,
        // read_only_sql_transaction: the query tried to write.
        "25006" => ErrorClass::Config,
        // invalid_catalog_name (unknown database), insufficient privilege.
        "3D000" | "42501" => ErrorClass::Config,
        // Syntax errors, undefined tables/columns/functions, feature not supported (a
        // data-modifying WITH below the top level).
        s if s.starts_with("42") || s.starts_with("0A") => ErrorClass::Config,
        // Data exceptions: a value the query cannot handle (or a stored watermark the
        // column's type cannot read).
        s if s.starts_with("22") => ErrorClass::SourceData,
        // Connection exceptions, operator intervention (shutdown), insufficient resources,
        // serialization failures: worth retrying.
        s if s.starts_with("08") || s.starts_with("57") || s.starts_with("53") => {
            ErrorClass::Transient
        }
        s if s.starts_with("40") => ErrorClass::Transient,
        _ => ErrorClass::Config,
    }
}

/// The class of a MySQL/MariaDB error number.
fn mysql_class(number: u16) -> ErrorClass {
    match number {
        // Access denied (user/password; to the database), account locked or expired.
        1044 | 1045 | 1698 | 3118 | 1820 | 1862 => ErrorClass::Auth,
        // MariaDB max_statement_time, MySQL max_execution_time, query interrupted.
        1969 | 3024 | 1317 => ErrorClass::Timeout,
        // Too many connections (server-wide, per user).
        1040 | 1203 | 1226 => ErrorClass::RateLimited,
        // Write in a read-only transaction.
        1792 => ErrorClass::Config,
        // Unknown database, syntax, unknown table/column, no privilege on a table.
        1049 | 1064 | 1146 | 1054 | 1142 | 1143 | 1052 | 1060 | 1248 => ErrorClass::Config,
        // Lock wait timeout, deadlock, server shutting down / gone.
        1205 | 1213 | 1053 | 2006 | 2013 => ErrorClass::Transient,
        // Data errors (truncation, out of range, bad value).
        1264 | 1292 | 1366 | 1406 | 1411 => ErrorClass::SourceData,
        _ => ErrorClass::Config,
    }
}

/// A sqlx error met while talking to `target`, as a fetch error.
pub fn classify(e: &sqlx::Error, target: &Target) -> FetchError {
    let at = target.redacted();
    let (class, message) = match e {
        sqlx::Error::Database(db) => {
            let class = match target.dialect {
                Dialect::Postgres => pg_class(db.code().as_deref().unwrap_or("")),
                Dialect::MySql => db
                    .try_downcast_ref::<MySqlDatabaseError>()
                    .map_or(ErrorClass::Config, |m| mysql_class(m.number())),
            };
            let code = match target.dialect {
                Dialect::Postgres => db.code().map(|c| format!("SQLSTATE {c}")),
                Dialect::MySql => db
                    .try_downcast_ref::<MySqlDatabaseError>()
                    .map(|m| format!("error {}", m.number())),
            };
            let what = match class {
                ErrorClass::Auth => "refused the credentials",
                ErrorClass::Timeout => "stopped the query at the statement timeout",
                ErrorClass::RateLimited => "has no connection slot free",
                _ => "refused the query",
            };
            (
                class,
                format!(
                    "{at} {what} ({}): {}",
                    code.unwrap_or_default(),
                    db.message()
                ),
            )
        }
        sqlx::Error::Io(io) => (
            ErrorClass::Transient,
            format!("connection to {at} failed: {io}"),
        ),
        sqlx::Error::Tls(t) => (
            ErrorClass::Config,
            format!("TLS with {at} failed (check sslmode): {t}"),
        ),
        sqlx::Error::Protocol(p) => (
            ErrorClass::Transient,
            format!("protocol error talking to {at}: {p}"),
        ),
        sqlx::Error::ColumnDecode { index, source } => (
            ErrorClass::SourceData,
            format!("column {index} from {at} could not be read: {source}"),
        ),
        sqlx::Error::Configuration(c) => {
            (ErrorClass::Config, format!("cannot connect to {at}: {c}"))
        }
        other => (ErrorClass::Transient, format!("{at}: {other}")),
    };
    FetchError::new(class, target.scrub(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_numbers_map_to_classes() {
        assert_eq!(pg_class("28P01"), ErrorClass::Auth);
        assert_eq!(pg_class("42P01"), ErrorClass::Config);
        assert_eq!(pg_class("3D000"), ErrorClass::Config);
        assert_eq!(pg_class("57014"), ErrorClass::Timeout);
        assert_eq!(pg_class("25006"), ErrorClass::Config);
        assert_eq!(pg_class("57P01"), ErrorClass::Transient);
        assert_eq!(pg_class("53300"), ErrorClass::RateLimited);
        assert_eq!(mysql_class(1045), ErrorClass::Auth);
        assert_eq!(mysql_class(1146), ErrorClass::Config);
        assert_eq!(mysql_class(1969), ErrorClass::Timeout);
        assert_eq!(mysql_class(3024), ErrorClass::Timeout);
        assert_eq!(mysql_class(1792), ErrorClass::Config);
        assert_eq!(mysql_class(1040), ErrorClass::RateLimited);
    }
}
