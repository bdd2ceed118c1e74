//! `sql`: the rows of a read-only `SELECT` on PostgreSQL or MySQL/MariaDB.
//!
//! A run opens one connection (no pool: runs of one integration are minutes apart, and
//! a pool would keep credentials and sockets alive between them) to the address the
//! SSRF guard accepted, starts a read-only transaction with a statement timeout, and
//! runs the user's query wrapped as
//!
//! ```sql
//! SELECT * FROM (<query>) AS sf_q [WHERE wm IS NOT NULL [AND wm > <last>] ORDER BY wm] LIMIT maxRows + 1
//! ```
//!
//! then rolls back. Without `watermarkColumn` every run is a full sync, which must be
//! complete: more than `maxRows` rows is an error, never a truncated set (the missing
//! rows would be soft-deleted). With it, each run takes the rows after the last
//! watermark in watermark order, at most `maxRows`; when the limit cuts through a group
//! of rows sharing one watermark value, the whole group is left for the next run so
//! that none is skipped. The `url` (with its password) is secret: messages name the
//! database as `scheme://host:port/db` only.

mod error;
mod query;
mod target;
mod value;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use entity::ErrorClass;
use futures::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Column as _, Connection as _, Executor as _, SqlSafeStr as _};
use sqlx::{MySqlConnection, PgConnection, Statement as _, TypeInfo as _};

use self::query::WmKind;
use self::target::{Dialect, Target};
use super::{Connector, ConnectorEnv, FetchContext, FetchError, Fetched, FieldError, SourceRecord};
use crate::net::NetPolicy;

const DEFAULT_MAX_ROWS: u64 = 100_000;
const MAX_MAX_ROWS: u64 = 1_000_000;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const MAX_QUERY_BYTES: usize = 100_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past the statement timeout the server's own cancellation may take before
/// the run gives up on it.
const BACKSTOP_GRACE: Duration = Duration::from_secs(2);

const FIELDS: &[&str] = &[
    "url",
    "query",
    "idColumn",
    "watermarkColumn",
    "maxRows",
    "timeoutMs",
];

pub struct Sql {
    target: Target,
    query: String,
    id_column: String,
    watermark_column: Option<String>,
    max_rows: u64,
    timeout: Duration,
    policy: NetPolicy,
}

/// Written by hand: the target's `Debug` is the redacted one.
impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql")
            .field("target", &self.target)
            .field("id_column", &self.id_column)
            .field("watermark_column", &self.watermark_column)
            .field("max_rows", &self.max_rows)
            .finish_non_exhaustive()
    }
}

fn string(
    obj: &Map<String, Value>,
    key: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) if required => {
            errors.push(FieldError::new(format!("config.{key}"), "is required"));
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        // Never quote the value: for `url` it is a secret.
        Some(_) => {
            errors.push(FieldError::new(format!("config.{key}"), "must be a string"));
            None
        }
    }
}

fn bounded(
    obj: &Map<String, Value>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    let v = obj.get(key).filter(|v| !v.is_null())?;
    match v.as_u64().filter(|n| range.contains(n)) {
        Some(n) => Some(n),
        None => {
            errors.push(FieldError::new(
                format!("config.{key}"),
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            ));
            None
        }
    }
}

impl Sql {
    pub fn from_config(
        config: &Value,
        env: Option<&ConnectorEnv>,
    ) -> Result<Self, Vec<FieldError>> {
        let Some(obj) = config.as_object() else {
            return Err(vec![FieldError::new("config", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        for key in obj.keys() {
            if !FIELDS.contains(&key.as_str()) {
                errors.push(FieldError::new(
                    format!("config.{key}"),
                    format!("unknown field (expected one of {})", FIELDS.join(", ")),
                ));
            }
        }
        let target =
            string(obj, "url", true, &mut errors).and_then(|raw| Target::parse(&raw, &mut errors));
        let query = string(obj, "query", true, &mut errors);
        if let Some(q) = &query {
            if q.len() > MAX_QUERY_BYTES {
                errors.push(FieldError::new(
                    "config.query",
                    format!("must be at most {MAX_QUERY_BYTES} bytes"),
                ));
            } else if let Some(why) = query::query_problem(q) {
                errors.push(FieldError::new("config.query", why));
            }
        }
        let id_column = string(obj, "idColumn", true, &mut errors);
        let watermark_column = string(obj, "watermarkColumn", false, &mut errors);
        for (field, name) in [
            ("config.idColumn", &id_column),
            ("config.watermarkColumn", &watermark_column),
        ] {
            if let Some(why) = name.as_deref().and_then(query::identifier_problem) {
                errors.push(FieldError::new(field, why));
            }
        }
        let max_rows = bounded(obj, "maxRows", 1..=MAX_MAX_ROWS, &mut errors);
        let timeout_ms = bounded(obj, "timeoutMs", 100..=600_000, &mut errors);
        let (Some(target), Some(query), Some(id_column), true) =
            (target, query, id_column, errors.is_empty())
        else {
            return Err(errors);
        };
        Ok(Self {
            target,
            query,
            id_column,
            watermark_column,
            max_rows: max_rows.unwrap_or(DEFAULT_MAX_ROWS),
            timeout: Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            policy: env.map(|e| e.net.clone()).unwrap_or_default(),
        })
    }

    fn timeout_error(&self, what: &str) -> FetchError {
        FetchError::new(
            ErrorClass::Timeout,
            format!("{what} {} timed out", self.target.redacted()),
        )
    }

    /// The one address to connect to, checked by the SSRF guard. The driver is given
    /// the IP itself, so a second DNS answer (rebinding) cannot send it elsewhere.
    async fn address(&self) -> Result<String, FetchError> {
        let t = &self.target;
        let addrs = self.policy.resolve(&t.host, t.port).await.map_err(|e| {
            let class = match e {
                crate::net::NetError::Resolve(_) => ErrorClass::Transient,
                _ => ErrorClass::Config,
            };
            FetchError::new(class, format!("{}: {e}", t.redacted()))
        })?;
        addrs
            .first()
            .map(|a| a.ip().to_string())
            .ok_or_else(|| FetchError::new(ErrorClass::Transient, "no address"))
    }

    /// What to ask for, given the columns the query returns.
    fn plan(&self, columns: &[(String, String)], last: Option<&str>) -> Result<Plan, FetchError> {
        let names = || {
            columns
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let type_of = |field: &str, col: &str| {
            columns
                .iter()
                .find(|(n, _)| n == col)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    FetchError::new(
                        ErrorClass::Config,
                        format!(
                            "the query returns no column `{col}` ({field}); it returns: {}",
                            names()
                        ),
                    )
                })
        };
        type_of("idColumn", &self.id_column)?;
        let watermark = match &self.watermark_column {
            None => None,
            Some(col) => {
                let ty = type_of("watermarkColumn", col)?;
                let kind = WmKind::of(self.target.dialect, &ty).ok_or_else(|| {
                    FetchError::new(
                        ErrorClass::Config,
                        format!(
                            "watermarkColumn `{col}` has type {ty}; use an integer, decimal, \
                             date, timestamp or text column"
                        ),
                    )
                })?;
                Some((col.clone(), kind))
            }
        };
        let after = watermark.is_some() && last.is_some();
        let sql = query::select(
            self.target.dialect,
            &self.query,
            watermark.as_ref().map(|(c, k)| (c.as_str(), *k, after)),
            self.max_rows + 1,
        );
        Ok(Plan {
            sql,
            bind: last.filter(|_| after).map(str::to_owned),
            watermark: watermark.map(|(_, k)| k),
        })
    }

    fn collector(&self, wm_kind: Option<WmKind>) -> Collector<'_> {
        Collector {
            sql: self,
            wm_kind,
            rows: Vec::new(),
            seen: HashSet::new(),
        }
    }

    async fn run_pg(&self, ip: &str, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        let t = &self.target;
        let db = |e: sqlx::Error| error::classify(&e, t);
        let opts = t.pg_options(ip, "syncfleet");
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts))
            .await
            .map_err(|_| self.timeout_error("connecting to"))?
            .map_err(db)?;
        let session = async {
            conn.execute("BEGIN READ ONLY").await.map_err(db)?;
            let set = format!("SET LOCAL statement_timeout = {}", self.timeout.as_millis());
            conn.execute(AssertSqlSafe(set)).await.map_err(db)?;
            let probe = AssertSqlSafe(query::derived(&self.query)).into_sql_str();
            let columns: Vec<(String, String)> = conn
                .prepare(probe)
                .await
                .map_err(db)?
                .columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
                .collect();
            let plan = self.plan(&columns, ctx.watermark.as_deref())?;
            let mut q = sqlx::query(AssertSqlSafe(plan.sql));
            if let Some(w) = plan.bind {
                q = q.bind(w);
            }
            let mut out = self.collector(plan.watermark);
            let mut rows = q.fetch(&mut conn);
            while let Some(row) = rows.try_next().await.map_err(db)? {
                out.push(value::pg_row(&row))?;
            }
            drop(rows);
            conn.execute("ROLLBACK").await.map_err(db)?;
            out.finish(ctx.watermark.as_deref())
        };
        // The server enforces the statement timeout; this is the backstop for a server
        // that does not (or a network that stops answering mid-result).
        let result = tokio::time::timeout(self.timeout + BACKSTOP_GRACE, session)
            .await
            .unwrap_or_else(|_| Err(self.timeout_error("the query on")));
        // Closing ends the transaction too (the server rolls back), error or not.
        let _ = conn.close().await;
        result
    }

    async fn run_mysql(&self, ip: &str, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        let t = &self.target;
        let db = |e: sqlx::Error| error::classify(&e, t);
        let opts = t.mysql_options(ip);
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(&opts))
            .await
            .map_err(|_| self.timeout_error("connecting to"))?
            .map_err(db)?;
        let session = async {
            let version: String = sqlx::query_scalar("SELECT VERSION()")
                .fetch_one(&mut conn)
                .await
                .map_err(db)?;
            // MariaDB limits every statement in seconds; MySQL limits SELECTs in ms.
            let set = if version.contains("MariaDB") {
                format!(
                    "SET SESSION max_statement_time = {:.3}",
                    self.timeout.as_secs_f64()
                )
            } else {
                format!(
                    "SET SESSION max_execution_time = {}",
                    self.timeout.as_millis()
                )
            };
            conn.execute(AssertSqlSafe(set)).await.map_err(db)?;
            conn.execute("START TRANSACTION READ ONLY")
                .await
                .map_err(db)?;
            let probe = AssertSqlSafe(query::derived(&self.query)).into_sql_str();
            let columns: Vec<(String, String)> = conn
                .prepare(probe)
                .await
                .map_err(db)?
                .columns()
                .iter()
                .map(|c| (c.name().to_owned(), value::mysql_type_name(c.type_info())))
                .collect();
            let plan = self.plan(&columns, ctx.watermark.as_deref())?;
            let mut q = sqlx::query(AssertSqlSafe(plan.sql));
            if let Some(w) = plan.bind {
                q = q.bind(w);
            }
            let mut out = self.collector(plan.watermark);
            let mut rows = q.fetch(&mut conn);
            while let Some(row) = rows.try_next().await.map_err(db)? {
                out.push(value::mysql_row(&row))?;
            }
            drop(rows);
            conn.execute("ROLLBACK").await.map_err(db)?;
            out.finish(ctx.watermark.as_deref())
        };
        let result = tokio::time::timeout(self.timeout + BACKSTOP_GRACE, session)
            .await
            .unwrap_or_else(|_| Err(self.timeout_error("the query on")));
        let _ = conn.close().await;
        result
    }
}

struct Plan {
    sql: String,
    /// The last watermark, bound as the query's one parameter.
    bind: Option<String>,
    watermark: Option<WmKind>,
}

/// One fetched row: the record, its watermark text and the key rows tie on.
struct Row {
    record: SourceRecord,
    watermark: Option<(String, String)>,
}

/// Collects rows as they stream in (so only JSON is held, not driver rows too).
struct Collector<'a> {
    sql: &'a Sql,
    wm_kind: Option<WmKind>,
    rows: Vec<Row>,
    seen: HashSet<String>,
}

impl Collector<'_> {
    fn push(
        &mut self,
        row: Result<Map<String, Value>, (String, String)>,
    ) -> Result<(), FetchError> {
        let n = self.rows.len() + 1;
        let data = row.map_err(|(col, why)| {
            FetchError::new(
                ErrorClass::SourceData,
                format!("row {n}, column `{col}`: {why}"),
            )
        })?;
        let id_col = &self.sql.id_column;
        let external_id = match data.get(id_col) {
            None | Some(Value::Null) => {
                return Err(FetchError::new(
                    ErrorClass::SourceData,
                    format!("row {n} has no value in idColumn `{id_col}`"),
                ));
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if !self.seen.insert(external_id.clone()) {
            return Err(FetchError::new(
                ErrorClass::SourceData,
                format!("id `{external_id}` (idColumn `{id_col}`) appears in more than one row"),
            ));
        }
        let watermark = match (self.wm_kind, &self.sql.watermark_column) {
            (Some(kind), Some(col)) => {
                let text = data
                    .get(col)
                    .and_then(|v| kind.watermark_text(self.sql.target.dialect, v))
                    .ok_or_else(|| {
                        FetchError::new(
                            ErrorClass::SourceData,
                            format!("row {n} has no usable value in watermarkColumn `{col}`"),
                        )
                    })?;
                Some((kind.tie_key(&text), text))
            }
            _ => None,
        };
        self.rows.push(Row {
            record: SourceRecord::new(external_id, &Value::Object(data)),
            watermark,
        });
        Ok(())
    }

    fn finish(mut self, last: Option<&str>) -> Result<Fetched, FetchError> {
        let max = usize::try_from(self.sql.max_rows).unwrap_or(usize::MAX);
        let incremental = self.wm_kind.is_some();
        if self.rows.len() > max {
            if !incremental {
                return Err(FetchError::new(
                    ErrorClass::SourceData,
                    format!(
                        "the query returned more than maxRows ({max}) rows; a full sync must \
                         be complete (missing rows would be deleted): raise maxRows or set \
                         watermarkColumn"
                    ),
                ));
            }
            // The first row past the limit: rows tying with it may continue past the
            // limit too, so the whole tie group waits for the next run (`>` would skip
            // the rest of it otherwise).
            let boundary = self.rows.pop().and_then(|r| r.watermark).map(|(k, _)| k);
            self.rows.truncate(max);
            while self
                .rows
                .last()
                .is_some_and(|r| r.watermark.as_ref().map(|(k, _)| k) == boundary.as_ref())
            {
                self.rows.pop();
            }
            if self.rows.is_empty() {
                return Err(FetchError::new(
                    ErrorClass::SourceData,
                    format!(
                        "more than maxRows ({max}) rows share one watermarkColumn value; \
                         raise maxRows"
                    ),
                ));
            }
        }
        let watermark = match self.rows.last() {
            Some(r) if incremental => r.watermark.as_ref().map(|(_, text)| text.clone()),
            _ if incremental => last.map(str::to_owned),
            _ => None,
        };
        Ok(Fetched {
            records: self.rows.into_iter().map(|r| r.record).collect(),
            full: !incremental,
            watermark,
        })
    }
}

#[async_trait]
impl Connector for Sql {
    fn urls(&self) -> Vec<url::Url> {
        self.target.url().into_iter().collect()
    }

    async fn fetch(&self, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        let ip = self.address().await?;
        match self.target.dialect {
            Dialect::Postgres => self.run_pg(&ip, ctx).await,
            Dialect::MySql => self.run_mysql(&ip, ctx).await,
        }
    }
}
