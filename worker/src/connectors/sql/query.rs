//! The SQL a `sql` run sends: the user's `SELECT` checked at save, then wrapped so that
//! ordering, the watermark filter and the row limit are ours, whatever the query says.
//!
//! The check is a first line only (one statement, starting with `SELECT` or `WITH`); the
//! real guard is the read-only transaction the query runs in, which also catches writes
//! hidden in functions. Wrapping the query as a derived table adds a second one: data-
//! modifying `WITH` (PostgreSQL) and `SELECT … INTO` (MySQL) are refused inside it.

use super::target::Dialect;

/// Why `query` cannot be the source query, if it cannot.
pub fn query_problem(query: &str) -> Option<&'static str> {
    let body = query.trim_end();
    let body = body.strip_suffix(';').unwrap_or(body);
    if body.contains(';') {
        return Some("must be a single statement (no `;` except one at the end)");
    }
    let head = skip_comments(body);
    let word: String = head
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    match word.as_str() {
        "select" | "with" => None,
        "" => Some("must be a SELECT (or WITH … SELECT) statement"),
        _ => Some("must be a read-only SELECT (or WITH … SELECT) statement"),
    }
}

/// `s` after leading whitespace, `-- …` and `/* … */` comments.
fn skip_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return s;
        }
    }
}

/// Why `name` cannot be a column name, if it cannot (it is always quoted, so anything
/// printable fits).
pub fn identifier_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 63 {
        Some("must be a column name of 1 to 63 bytes")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}

/// `name` quoted as an identifier of `dialect`.
pub fn quote(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        Dialect::MySql => format!("`{}`", name.replace('`', "``")),
    }
}

/// The user's query as a derived table. The newlines keep a trailing `-- comment` from
/// swallowing the closing parenthesis.
pub fn derived(query: &str) -> String {
    let body = query.trim_end();
    let body = body.strip_suffix(';').unwrap_or(body);
    format!("SELECT * FROM (\n{body}\n) AS sf_q")
}

/// How a watermark value is compared: the stored watermark is text, and comparing a
/// text parameter with a timestamp or integer column fails (PostgreSQL) or compares the
/// wrong way (MySQL, as floating point). The parameter is cast to the column's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WmKind {
    Int,
    UnsignedInt,
    Decimal,
    Date,
    Timestamp,
    TimestampTz,
    Text,
}

impl WmKind {
    /// The kind of a column of driver type `type_name`, or `None` if it cannot order a
    /// watermark (floats, booleans, JSON, …).
    pub fn of(dialect: Dialect, type_name: &str) -> Option<Self> {
        Some(match (dialect, type_name) {
            (Dialect::Postgres, "INT2" | "INT4" | "INT8" | "OID") => Self::Int,
            (Dialect::Postgres, "NUMERIC") => Self::Decimal,
            (Dialect::Postgres, "DATE") => Self::Date,
            (Dialect::Postgres, "TIMESTAMP") => Self::Timestamp,
            (Dialect::Postgres, "TIMESTAMPTZ") => Self::TimestampTz,
            (Dialect::Postgres, "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "CITEXT") => Self::Text,
            (Dialect::MySql, "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR") => {
                Self::Int
            }
            (
                Dialect::MySql,
                "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
                | "BIGINT UNSIGNED",
            ) => Self::UnsignedInt,
            (Dialect::MySql, "DECIMAL") => Self::Decimal,
            (Dialect::MySql, "DATE") => Self::Date,
            // MySQL TIMESTAMPs reach us in the session zone, which the driver sets to UTC.
            (Dialect::MySql, "DATETIME" | "TIMESTAMP") => Self::Timestamp,
            (
                Dialect::MySql,
                "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT",
            ) => Self::Text,
            _ => return None,
        })
    }

    /// The bound watermark parameter, cast to this kind.
    fn param(self, dialect: Dialect) -> &'static str {
        match (dialect, self) {
            (Dialect::Postgres, Self::Int | Self::UnsignedInt) => "CAST($1 AS bigint)",
            (Dialect::Postgres, Self::Decimal) => "CAST($1 AS numeric)",
            (Dialect::Postgres, Self::Date) => "CAST($1 AS date)",
            (Dialect::Postgres, Self::Timestamp) => "CAST($1 AS timestamp)",
            (Dialect::Postgres, Self::TimestampTz) => "CAST($1 AS timestamptz)",
            (Dialect::Postgres, Self::Text) => "$1",
            (Dialect::MySql, Self::Int) => "CAST(? AS SIGNED)",
            (Dialect::MySql, Self::UnsignedInt) => "CAST(? AS UNSIGNED)",
            (Dialect::MySql, Self::Decimal) => "CAST(? AS DECIMAL(65,30))",
            (Dialect::MySql, Self::Date) => "CAST(? AS DATE)",
            (Dialect::MySql, Self::Timestamp | Self::TimestampTz) => "CAST(? AS DATETIME(6))",
            (Dialect::MySql, Self::Text) => "CAST(? AS BINARY)",
        }
    }

    /// The column as compared and ordered. MySQL text compares under the column's
    /// collation (often case- and accent-insensitive), which would make rows that look
    /// different here tie there; comparing bytes keeps both sides in agreement.
    fn column(self, dialect: Dialect, col: &str) -> String {
        match (dialect, self) {
            (Dialect::MySql, Self::Text) => format!("CAST({col} AS BINARY)"),
            _ => col.to_owned(),
        }
    }

    /// A key equal for two watermark texts exactly when the database finds them equal
    /// (`1.50` and `1.5` are one NUMERIC value).
    pub fn tie_key(self, text: &str) -> String {
        match self {
            Self::Decimal if text.contains('.') => {
                text.trim_end_matches('0').trim_end_matches('.').to_owned()
            }
            _ => text.to_owned(),
        }
    }

    /// The watermark text for a value rendered as `json` (see `value`): what the next
    /// run binds. MySQL's `CAST(… AS DATETIME)` wants a space and no zone designator.
    pub fn watermark_text(self, dialect: Dialect, json: &serde_json::Value) -> Option<String> {
        let text = match json {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(match (dialect, self) {
            (Dialect::MySql, Self::Timestamp | Self::TimestampTz) => {
                text.trim_end_matches('Z').replacen('T', " ", 1)
            }
            _ => text,
        })
    }
}

/// The statement a run executes: the derived table, optionally after the watermark,
/// in watermark order, at most `limit` rows.
pub fn select(
    dialect: Dialect,
    query: &str,
    watermark: Option<(&str, WmKind, bool)>,
    limit: u64,
) -> String {
    let mut sql = derived(query);
    if let Some((column, kind, after)) = watermark {
        let col = format!("sf_q.{}", quote(dialect, column));
        let ord = kind.column(dialect, &col);
        // Rows without a watermark cannot be synced incrementally: they are skipped
        // (consistently, on every run), as the README says.
        sql.push_str(&format!(" WHERE {col} IS NOT NULL"));
        if after {
            sql.push_str(&format!(" AND {ord} > {}", kind.param(dialect)));
        }
        sql.push_str(&format!(" ORDER BY {ord}"));
    }
    sql.push_str(&format!(" LIMIT {limit}"));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_selects_only() {
        for ok in [
            "SELECT 1",
            "  select * from t;  ",
            "-- note\n/* x */ WITH a AS (SELECT 1) SELECT * FROM a",
            "Select id from t where name = 'x'",
        ] {
            assert_eq!(query_problem(ok), None, "{ok}");
        }
        for bad in [
            "DELETE FROM t",
            "SELECT 1; DELETE FROM t",
            "update t set a = 1",
            "",
            "-- only a comment",
            "/* SELECT */ INSERT INTO t VALUES (1)",
            "(SELECT 1)",
        ] {
            assert!(query_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn quotes_and_wraps() {
        assert_eq!(quote(Dialect::Postgres, "a\"b"), "\"a\"\"b\"");
        assert_eq!(quote(Dialect::MySql, "a`b"), "`a``b`");
        assert_eq!(
            select(
                Dialect::Postgres,
                "SELECT * FROM t -- c",
                Some(("at", WmKind::TimestampTz, true)),
                11
            ),
            "SELECT * FROM (\nSELECT * FROM t -- c\n) AS sf_q WHERE sf_q.\"at\" IS NOT NULL \
             AND sf_q.\"at\" > CAST($1 AS timestamptz) ORDER BY sf_q.\"at\" LIMIT 11"
        );
        assert_eq!(
            select(Dialect::MySql, "SELECT 1;", None, 5),
            "SELECT * FROM (\nSELECT 1\n) AS sf_q LIMIT 5"
        );
    }
}
