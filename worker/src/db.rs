//! The few SQL differences between PostgreSQL and SQLite, in one place.
//!
//! The run protocol is written as raw SQL because every state change must be one
//! conditional statement whose clock is the database's. Both backends accept `$n`
//! placeholders, `RETURNING` and `ON CONFLICT DO NOTHING`; what differs is the clock
//! expression, interval arithmetic and row locking, which these helpers render.

use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, ExecResult, QueryResult, Statement, Value};

/// The SQL dialect of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn of(db: &impl ConnectionTrait) -> Self {
        match db.get_database_backend() {
            DatabaseBackend::Sqlite => Self::Sqlite,
            _ => Self::Postgres,
        }
    }

    fn backend(self) -> DatabaseBackend {
        match self {
            Self::Postgres => DatabaseBackend::Postgres,
            Self::Sqlite => DatabaseBackend::Sqlite,
        }
    }

    /// The database's current time. On SQLite it is rendered in the same RFC 3339 text
    /// form the driver uses for bound timestamps, so text comparisons order correctly.
    pub fn now(self) -> &'static str {
        match self {
            Self::Postgres => "now()",
            Self::Sqlite => "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
        }
    }

    /// The database's current time as whole Unix seconds (a signed webhook's timestamp
    /// is compared with it).
    pub fn epoch_secs(self) -> &'static str {
        match self {
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)",
            Self::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
        }
    }

    /// The database's current time plus `param` milliseconds (`param` is e.g. `$3`).
    pub fn now_plus_ms(self, param: &str) -> String {
        match self {
            Self::Postgres => {
                format!("(now() + ({param}::double precision * interval '1 millisecond'))")
            }
            Self::Sqlite => format!(
                "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', (({param}) / 1000.0) || ' seconds')"
            ),
        }
    }

    /// The timestamp expression `col` plus `param` milliseconds.
    pub fn plus_ms(self, col: &str, param: &str) -> String {
        match self {
            Self::Postgres => {
                format!("({col} + ({param}::double precision * interval '1 millisecond'))")
            }
            Self::Sqlite => format!(
                "strftime('%Y-%m-%dT%H:%M:%f+00:00', {col}, (({param}) / 1000.0) || ' seconds')"
            ),
        }
    }

    /// The later of two timestamp expressions.
    pub fn greatest(self, a: &str, b: &str) -> String {
        match self {
            Self::Postgres => format!("GREATEST({a}, {b})"),
            Self::Sqlite => format!("MAX({a}, {b})"),
        }
    }

    /// The wall clock at this statement (PostgreSQL's `now()` is the transaction's
    /// start, which would hide the time a long transaction took).
    pub fn clock(self) -> &'static str {
        match self {
            Self::Postgres => "clock_timestamp()",
            Self::Sqlite => "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
        }
    }

    /// Milliseconds between the timestamp expression `col` and [`Self::clock`].
    pub fn ms_since_clock(self, col: &str) -> String {
        match self {
            Self::Postgres => {
                format!("CAST(EXTRACT(EPOCH FROM (clock_timestamp() - {col})) * 1000 AS BIGINT)")
            }
            Self::Sqlite => self.ms_since(col),
        }
    }

    /// Milliseconds elapsed since the timestamp expression `col`.
    pub fn ms_since(self, col: &str) -> String {
        match self {
            Self::Postgres => format!("CAST(EXTRACT(EPOCH FROM (now() - {col})) * 1000 AS BIGINT)"),
            Self::Sqlite => {
                format!("CAST((julianday('now') - julianday({col})) * 86400000 AS INTEGER)")
            }
        }
    }

    /// A JSON column value from the text parameter `param` (PostgreSQL parses it into
    /// `jsonb`; SQLite stores JSON as text anyway).
    pub fn json_from_text(self, param: &str) -> String {
        match self {
            Self::Postgres => format!("CAST({param} AS jsonb)"),
            Self::Sqlite => param.to_owned(),
        }
    }

    /// Row lock for a claiming `SELECT` (PostgreSQL only; SQLite serialises writers).
    pub fn skip_locked(self) -> &'static str {
        match self {
            Self::Postgres => "FOR UPDATE SKIP LOCKED",
            Self::Sqlite => "",
        }
    }

    /// Row lock for a `SELECT` that picks integrations to change (never their key):
    /// `FOR NO KEY UPDATE`, which the foreign-key checks of inserts that reference an
    /// integration (`FOR KEY SHARE`) do not block, so they cannot make the scheduler or
    /// the reaper skip it.
    pub fn skip_locked_state(self) -> &'static str {
        match self {
            Self::Postgres => "FOR NO KEY UPDATE SKIP LOCKED",
            Self::Sqlite => "",
        }
    }

    pub fn stmt(
        self,
        sql: impl Into<String>,
        values: impl IntoIterator<Item = Value>,
    ) -> Statement {
        Statement::from_sql_and_values(self.backend(), sql.into(), values)
    }
}

/// Runs a statement that returns rows.
pub async fn query(
    db: &impl ConnectionTrait,
    sql: impl Into<String>,
    values: impl IntoIterator<Item = Value>,
) -> Result<Vec<QueryResult>, DbErr> {
    let d = Dialect::of(db);
    db.query_all_raw(d.stmt(sql, values)).await
}

/// Runs a statement that returns no rows.
pub async fn exec(
    db: &impl ConnectionTrait,
    sql: impl Into<String>,
    values: impl IntoIterator<Item = Value>,
) -> Result<ExecResult, DbErr> {
    let d = Dialect::of(db);
    db.execute_raw(d.stmt(sql, values)).await
}

/// A statement that waited for a row lock past the session's `lock_timeout` (PostgreSQL
/// `55P03`), or that PostgreSQL chose as a deadlock's victim (`40P01`): its transaction
/// is rolled back and may be run again.
pub fn lock_timed_out(e: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    let sqlx = match e {
        DbErr::Conn(RuntimeErr::SqlxError(s))
        | DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s)) => s,
        _ => return false,
    };
    matches!(sqlx.as_ref(), sea_orm::sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("55P03" | "40P01")))
}
