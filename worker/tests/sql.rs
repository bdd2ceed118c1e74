//! The `sql` connector against the real local PostgreSQL (127.0.0.1:5432, user
//! `postgres`, trust) and MariaDB (127.0.0.1:3306, `root`, no password). Each test gets
//! a fresh, randomly named database (and, on MariaDB, a user with a password), dropped
//! afterwards, so the tests run in parallel. An unreachable server skips the test
//! loudly, or fails it under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use entity::{ConnectorKind, ErrorClass};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, PgConnection};
use syncfleet_worker::connectors::{self, ConnectorEnv, FetchContext, FetchError, Fetched};
use syncfleet_worker::net::NetPolicy;
use uuid::Uuid;

/// In every URL the tests build; no message may ever contain it.
const PASSWORD: &str = "Pw-S3cr3t-77";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Pg,
    Maria,
}

fn pg_admin_url(db: &str) -> String {
    let base = std::env::var("SYNCFLEET_TEST_SQL_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    format!("{base}/{db}")
}

fn maria_admin_url(db: &str) -> String {
    let base = std::env::var("SYNCFLEET_TEST_SQL_MARIADB")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    format!("{base}/{db}")
}

fn skip_or_fail(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is unreachable and CI=true: failing instead of skipping");
    }
    eprintln!("\n======== SKIPPED: {what} is unreachable; start it to run this test ========\n");
}

/// One test's database.
struct Db {
    engine: Engine,
    name: String,
}

impl Db {
    async fn new(engine: Engine) -> Option<Self> {
        let name = format!("sf_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let ok = match engine {
            Engine::Pg => {
                Self::admin_pg(&format!("CREATE DATABASE {name}"), "postgres").await
                    && Self::admin_pg(
                        &format!("ALTER DATABASE {name} SET timezone TO 'UTC'"),
                        "postgres",
                    )
                    .await
            }
            Engine::Maria => {
                let mut ok = Self::admin_maria(&format!("CREATE DATABASE {name}"), "mysql").await;
                for stmt in [
                    format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{PASSWORD}'"),
                    format!("GRANT ALL ON {name}.* TO '{name}'@'%'"),
                ] {
                    ok = ok && Self::admin_maria(&stmt, "mysql").await;
                }
                ok
            }
        };
        if !ok {
            skip_or_fail(match engine {
                Engine::Pg => "PostgreSQL at 127.0.0.1:5432",
                Engine::Maria => "MariaDB at 127.0.0.1:3306",
            });
            return None;
        }
        Some(Self { engine, name })
    }

    /// Runs one admin statement; `false` if the server cannot be reached. A busy shared
    /// server (too many clients) is retried for a while.
    async fn admin_pg(sql: &str, db: &str) -> bool {
        for _ in 0..40 {
            match PgConnection::connect(&pg_admin_url(db)).await {
                Ok(mut c) => {
                    c.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
                    let _ = c.close().await;
                    return true;
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("53300") => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => return false,
            }
        }
        false
    }

    async fn admin_maria(sql: &str, db: &str) -> bool {
        match MySqlConnection::connect(&maria_admin_url(db)).await {
            Ok(mut c) => {
                c.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
                let _ = c.close().await;
                true
            }
            Err(_) => false,
        }
    }

    /// Runs setup statements in this database, as the admin.
    async fn exec(&self, stmts: &[&str]) {
        for s in stmts {
            let ok = match self.engine {
                Engine::Pg => Self::admin_pg(s, &self.name).await,
                Engine::Maria => Self::admin_maria(s, &self.name).await,
            };
            assert!(ok, "setup failed: {s}");
        }
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self.engine {
            Engine::Pg => {
                let mut c = PgConnection::connect(&pg_admin_url(&self.name))
                    .await
                    .unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
            Engine::Maria => {
                let mut c = MySqlConnection::connect(&maria_admin_url(&self.name))
                    .await
                    .unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
        }
    }

    /// The connector's URL for this database (always with a password in it).
    fn url(&self) -> String {
        match self.engine {
            // Trust auth: the password is sent only if asked for, and never is.
            Engine::Pg => format!(
                "postgres://postgres:{PASSWORD}@127.0.0.1:5432/{}",
                self.name
            ),
            Engine::Maria => format!(
                "mariadb://{}:{PASSWORD}@127.0.0.1:3306/{}",
                self.name, self.name
            ),
        }
    }

    fn config(&self, query: &str, extra: Value) -> Value {
        let mut c = json!({ "url": self.url(), "query": query, "idColumn": "id" });
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    }

    /// `pg` or `maria`, whichever this database speaks.
    fn pick<'a>(&self, pg: &'a str, maria: &'a str) -> &'a str {
        match self.engine {
            Engine::Pg => pg,
            Engine::Maria => maria,
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (engine, name) = (self.engine, self.name.clone());
        // Drop runs inside the test's runtime (maybe while unwinding): clean up on a
        // thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                match engine {
                    Engine::Pg => {
                        Db::admin_pg(
                            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                            "postgres",
                        )
                        .await;
                    }
                    Engine::Maria => {
                        Db::admin_maria(&format!("DROP DATABASE IF EXISTS {name}"), "mysql").await;
                        Db::admin_maria(&format!("DROP USER IF EXISTS '{name}'@'%'"), "mysql")
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

fn allow_all() -> ConnectorEnv {
    ConnectorEnv {
        net: NetPolicy {
            allow_private: true,
            allowed: Vec::new(),
        },
    }
}

fn ctx(watermark: Option<&str>) -> FetchContext {
    FetchContext {
        integration_id: Uuid::new_v4(),
        run_id: Uuid::new_v4(),
        attempt: 1,
        previous_runs: 0,
        watermark: watermark.map(str::to_owned),
        gate: None,
    }
}

async fn fetch_with(
    config: &Value,
    env: &ConnectorEnv,
    watermark: Option<&str>,
) -> Result<Fetched, FetchError> {
    let c = connectors::build(ConnectorKind::Sql, config, env).expect("valid config");
    let r = c.fetch(&ctx(watermark)).await;
    if let Err(e) = &r {
        assert!(
            !e.message.contains(PASSWORD),
            "password in message: {}",
            e.message
        );
    }
    r
}

async fn fetch(config: &Value, watermark: Option<&str>) -> Result<Fetched, FetchError> {
    fetch_with(config, &allow_all(), watermark).await
}

fn ids(f: &Fetched) -> Vec<&str> {
    f.records.iter().map(|r| r.external_id.as_str()).collect()
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::Db::new(super::Engine::Pg).await {
                    super::$name(&db).await;
                }
            }
            #[tokio::test]
            async fn mariadb() {
                if let Some(db) = super::Db::new(super::Engine::Maria).await {
                    super::$name(&db).await;
                }
            }
        }
    )*};
}

both!(
    types_are_mapped_faithfully,
    incremental_runs_lose_no_row_at_the_limit,
    integer_watermarks_and_full_mode_limits,
    failures_have_their_classes,
    writes_are_refused,
    slow_queries_time_out,
    private_addresses_are_refused_without_connecting,
);

async fn types_are_mapped_faithfully(db: &Db) {
    match db.engine {
        Engine::Pg => {
            db.exec(&[
                "CREATE TYPE mood AS ENUM ('happy', 'sad')",
                "CREATE TABLE items (id int8 PRIMARY KEY, name text, small int2, price numeric(12,4), \
                 huge numeric, ratio float8, active bool, created timestamptz, day date, naive timestamp, \
                 meta jsonb, doc json, uid uuid, raw bytea, tags text[], grid int4[][], feeling mood, \
                 nothing text, forever timestamptz)",
                "INSERT INTO items VALUES (1, 'Ana', 7, 1234.5600, 123456789012345678901234567890.123456789, \
                 0.25, true, '2026-03-04 05:06:07.123456+02', '2026-03-04', '2026-03-04 05:06:07', \
                 '{\"a\": [1, 2]}', '{\"b\": null}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', \
                 '{x,NULL,z}', '{{1,2},{3,4}}', 'sad', NULL, 'infinity')",
                "INSERT INTO items (id, name) VALUES (2, 'Bo')",
            ])
            .await;
            let f = fetch(&db.config("SELECT * FROM items", json!({})), None)
                .await
                .unwrap();
            assert!(f.full);
            assert_eq!(f.watermark, None);
            let mut ids = ids(&f);
            ids.sort_unstable();
            assert_eq!(ids, ["1", "2"]);
            let one = &f
                .records
                .iter()
                .find(|r| r.external_id == "1")
                .unwrap()
                .data;
            assert_eq!(
                one,
                &json!({
                    "id": 1, "name": "Ana", "small": 7, "price": "1234.5600",
                    "huge": "123456789012345678901234567890.123456789", "ratio": 0.25, "active": true,
                    "created": "2026-03-04T03:06:07.123456Z", "day": "2026-03-04",
                    "naive": "2026-03-04T05:06:07", "meta": { "a": [1, 2] }, "doc": { "b": null },
                    "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "raw": "AP8Q",
                    "tags": ["x", null, "z"], "grid": [[1, 2], [3, 4]], "feeling": "sad",
                    "nothing": null, "forever": "infinity"
                })
            );
        }
        Engine::Maria => {
            db.exec(&[
                "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(20), small SMALLINT, \
                 big BIGINT UNSIGNED, price DECIMAL(12,4), ratio DOUBLE, active BOOLEAN, \
                 created TIMESTAMP(6) NULL, day DATE, naive DATETIME, meta JSON, raw VARBINARY(8), \
                 feeling ENUM('happy','sad'), nothing TEXT, at TIME, \
                 code VARCHAR(8) COLLATE utf8mb4_bin)",
                "INSERT INTO items VALUES (1, 'Ana', 7, 18446744073709551615, 1234.5600, 0.25, TRUE, \
                 '2026-03-04 03:06:07.123456', '2026-03-04', '2026-03-04 05:06:07', '{\"a\": [1, 2]}', \
                 X'00FF10', 'sad', NULL, '12:34:56', 'AbC')",
                "INSERT INTO items (id, name) VALUES (2, 'Bo')",
            ])
            .await;
            let f = fetch(&db.config("SELECT * FROM items", json!({})), None)
                .await
                .unwrap();
            assert!(f.full);
            let one = &f
                .records
                .iter()
                .find(|r| r.external_id == "1")
                .unwrap()
                .data;
            // MariaDB's JSON is LONGTEXT: it arrives as the JSON text.
            assert_eq!(
                one,
                &json!({
                    "id": 1, "name": "Ana", "small": 7, "big": 18446744073709551615u64, "price": "1234.5600",
                    "ratio": 0.25, "active": true, "created": "2026-03-04T03:06:07.123456Z",
                    "day": "2026-03-04", "naive": "2026-03-04T05:06:07", "meta": "{\"a\": [1, 2]}",
                    "raw": "AP8Q", "feeling": "sad", "nothing": null, "at": "12:34:56", "code": "AbC"
                })
            );
            let two = &f
                .records
                .iter()
                .find(|r| r.external_id == "2")
                .unwrap()
                .data
                .to_value()
                .unwrap();
            assert_eq!(two["created"], Value::Null);
        }
    }
}

async fn incremental_runs_lose_no_row_at_the_limit(db: &Db) {
    let ts = db.pick("timestamptz", "DATETIME(6)");
    db.exec(&[
        &format!("CREATE TABLE events (id int PRIMARY KEY, v text, at {ts})"),
        "INSERT INTO events VALUES (1, 'a', '2026-01-01 00:00:01'), (2, 'b', '2026-01-01 00:00:02'), \
         (3, 'c', '2026-01-01 00:00:03.5'), (4, 'd', '2026-01-01 00:00:03.5'), \
         (5, 'e', '2026-01-01 00:00:04'), (6, 'skipped', NULL)",
    ])
    .await;
    let cfg = db.config(
        "SELECT id, v, at FROM events",
        json!({ "watermarkColumn": "at", "maxRows": 3 }),
    );
    let wm = |s: &str| match db.engine {
        Engine::Pg => format!("2026-01-01T00:00:{s}Z"),
        Engine::Maria => format!("2026-01-01 00:00:{s}"),
    };

    // Rows 3 and 4 tie at the limit: both wait for the next run.
    let f = fetch(&cfg, None).await.unwrap();
    assert!(!f.full);
    assert_eq!(ids(&f), ["1", "2"]);
    assert_eq!(f.watermark.as_deref(), Some(wm("02").as_str()));

    let f = fetch(&cfg, f.watermark.as_deref()).await.unwrap();
    assert_eq!(ids(&f), ["3", "4", "5"]);
    assert_eq!(f.watermark.as_deref(), Some(wm("04").as_str()));
    let last = f.watermark.clone();

    // Nothing new: no rows, the watermark stays.
    let f = fetch(&cfg, last.as_deref()).await.unwrap();
    assert!(f.records.is_empty());
    assert_eq!(f.watermark, last);

    // Rows added later come in the next run; a changed old row too (its `at` moved).
    db.exec(&[
        "INSERT INTO events VALUES (7, 'g', '2026-01-01 00:00:05')",
        "UPDATE events SET v = 'a2', at = '2026-01-01 00:00:06' WHERE id = 1",
    ])
    .await;
    let f = fetch(&cfg, last.as_deref()).await.unwrap();
    assert_eq!(ids(&f), ["7", "1"]);
    assert_eq!(f.records[1].data.to_value().unwrap()["v"], "a2");
    assert_eq!(f.watermark.as_deref(), Some(wm("06").as_str()));

    // A tie group larger than maxRows cannot be split: a clear error, not a loop.
    db.exec(&["INSERT INTO events VALUES (8, 'h', '2026-01-01 00:00:09'), (9, 'i', '2026-01-01 00:00:09'), \
               (10, 'j', '2026-01-01 00:00:09'), (11, 'k', '2026-01-01 00:00:09')"])
        .await;
    let e = fetch(&cfg, f.watermark.as_deref()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData, "{e}");
    assert!(e.message.contains("share one watermarkColumn value"), "{e}");
}

async fn integer_watermarks_and_full_mode_limits(db: &Db) {
    db.exec(&[
        "CREATE TABLE n (id int PRIMARY KEY, price decimal(8,2))",
        "INSERT INTO n VALUES (1, 1.50), (2, 2.50), (10, 3.00), (11, 3.00), (12, 4.25)",
    ])
    .await;
    let by_id = db.config(
        "SELECT * FROM n",
        json!({ "watermarkColumn": "id", "maxRows": 2 }),
    );
    let f = fetch(&by_id, None).await.unwrap();
    assert_eq!(
        (ids(&f), f.watermark.as_deref()),
        (vec!["1", "2"], Some("2"))
    );
    // Compared as integers: "10" > "2" although it sorts before it as text.
    let f = fetch(&by_id, Some("2")).await.unwrap();
    assert_eq!(
        (ids(&f), f.watermark.as_deref()),
        (vec!["10", "11"], Some("11"))
    );
    let f = fetch(&by_id, Some("11")).await.unwrap();
    assert_eq!((ids(&f), f.watermark.as_deref()), (vec!["12"], Some("12")));

    // A decimal watermark, with a tie (10 and 11 at 3.00) cut by the limit.
    let by_price = db.config(
        "SELECT * FROM n",
        json!({ "watermarkColumn": "price", "maxRows": 3 }),
    );
    let f = fetch(&by_price, None).await.unwrap();
    assert_eq!(
        (ids(&f), f.watermark.as_deref()),
        (vec!["1", "2"], Some("2.50"))
    );
    let f = fetch(&by_price, Some("2.50")).await.unwrap();
    assert_eq!(
        (ids(&f), f.watermark.as_deref()),
        (vec!["10", "11", "12"], Some("4.25"))
    );

    // Full mode: all rows or an error, never a truncated set.
    let full = db.config("SELECT * FROM n;", json!({ "maxRows": 5 }));
    assert_eq!(fetch(&full, None).await.unwrap().records.len(), 5);
    let small = db.config("SELECT * FROM n", json!({ "maxRows": 4 }));
    let e = fetch(&small, None).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData, "{e}");
    assert!(e.message.contains("maxRows"), "{e}");

    // A float cannot order a watermark.
    let float = db.config(
        db.pick(
            "SELECT id, 1.5::float8 AS f FROM n",
            "SELECT id, CAST(1.5 AS DOUBLE) AS f FROM n",
        ),
        json!({ "watermarkColumn": "f" }),
    );
    let e = fetch(&float, None).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Config, "{e}");
}

async fn failures_have_their_classes(db: &Db) {
    db.exec(&[
        "CREATE TABLE t (id int PRIMARY KEY)",
        "INSERT INTO t VALUES (1), (2)",
    ])
    .await;
    let expect = |r: Result<Fetched, FetchError>, class: ErrorClass| {
        let e = r.unwrap_err();
        assert_eq!(e.class, class, "{e}");
        assert!(!e.message.contains(PASSWORD), "{e}");
        e
    };

    // Wrong credentials.
    let url = match db.engine {
        Engine::Pg => format!(
            "postgres://sf_nobody_{}:{PASSWORD}@127.0.0.1:5432/{}",
            db.name, db.name
        ),
        Engine::Maria => format!(
            "mysql://{}:wrong-{PASSWORD}@127.0.0.1:3306/{}",
            db.name, db.name
        ),
    };
    let cfg = json!({ "url": url, "query": "SELECT * FROM t", "idColumn": "id" });
    let e = expect(fetch(&cfg, None).await, ErrorClass::Auth);
    assert!(
        e.message.contains(&format!(
            "127.0.0.1:{}/{}",
            db.pick("5432", "3306"),
            db.name
        )),
        "{e}"
    );

    // Unknown table, syntax error, unknown column, unknown database.
    expect(
        fetch(&db.config("SELECT * FROM missing", json!({})), None).await,
        ErrorClass::Config,
    );
    expect(
        fetch(&db.config("SELECT * FROM t WHERE", json!({})), None).await,
        ErrorClass::Config,
    );
    expect(
        fetch(&db.config("SELECT nope AS id FROM t", json!({})), None).await,
        ErrorClass::Config,
    );
    let e = expect(
        fetch(&db.config("SELECT id AS other FROM t", json!({})), None).await,
        ErrorClass::Config,
    );
    assert!(e.message.contains("no column `id`"), "{e}");
    let gone = json!({ "url": db.url().replace(&db.name, "sf_does_not_exist"), "query": "SELECT 1 AS id", "idColumn": "id" });
    let e = fetch(&gone, None).await.unwrap_err();
    // MariaDB says "access denied" for a database the user cannot see.
    assert!(
        matches!(e.class, ErrorClass::Config | ErrorClass::Auth),
        "{e}"
    );

    // Duplicate and missing ids are the source's problem.
    expect(
        fetch(
            &db.config("SELECT 1 AS id UNION ALL SELECT 1", json!({})),
            None,
        )
        .await,
        ErrorClass::SourceData,
    );
    expect(
        fetch(&db.config("SELECT NULL AS id", json!({})), None).await,
        ErrorClass::SourceData,
    );

    // Nothing listening: transient.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = json!({ "url": format!("{}://u:{PASSWORD}@127.0.0.1:{closed}/x", db.pick("postgres", "mysql")), "query": "SELECT 1 AS id", "idColumn": "id" });
    expect(fetch(&down, None).await, ErrorClass::Transient);
}

async fn writes_are_refused(db: &Db) {
    // At validation: anything but one SELECT.
    for q in [
        "DELETE FROM t",
        "SELECT 1 AS id; DROP TABLE t",
        "UPDATE t SET id = 2",
        "/* SELECT */ TRUNCATE t",
    ] {
        let errs = connectors::validate(ConnectorKind::Sql, &db.config(q, json!({}))).unwrap_err();
        assert!(
            errs.iter().any(|e| e.field == "config.query"),
            "{q}: {errs:?}"
        );
    }
    // At run time: a write hidden in a function called by a SELECT.
    match db.engine {
        Engine::Pg => {
            db.exec(&[
                "CREATE TABLE t (id int PRIMARY KEY)",
                "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql VOLATILE AS $$ INSERT INTO t VALUES (99) RETURNING 1 $$",
            ])
            .await;
            // A data-modifying WITH is refused inside the derived table.
            let e = fetch(
                &db.config(
                    "WITH d AS (DELETE FROM t RETURNING id) SELECT id FROM d",
                    json!({}),
                ),
                None,
            )
            .await
            .unwrap_err();
            assert_eq!(e.class, ErrorClass::Config, "{e}");
        }
        Engine::Maria => {
            db.exec(&[
                "CREATE TABLE t (id int PRIMARY KEY)",
                "CREATE FUNCTION sneaky() RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO t VALUES (99); RETURN 1; END",
            ])
            .await;
        }
    }
    let e = fetch(&db.config("SELECT sneaky() AS id", json!({})), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Config, "{e}");
    assert!(e.message.to_lowercase().contains("read"), "{e}");
    assert_eq!(db.count("t").await, 0);
}

async fn slow_queries_time_out(db: &Db) {
    db.exec(&[
        "CREATE TABLE t (id int PRIMARY KEY)",
        "INSERT INTO t VALUES (1), (2)",
    ])
    .await;
    let q = db.pick(
        "SELECT id, pg_sleep(5) AS s FROM t",
        "SELECT id, SLEEP(5) AS s FROM t",
    );
    let started = std::time::Instant::now();
    let e = fetch(&db.config(q, json!({ "timeoutMs": 500 })), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Timeout, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

async fn private_addresses_are_refused_without_connecting(db: &Db) {
    // A listener that would see any connection attempt.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let scheme = db.pick("postgresql", "mariadb");
    let cfg = json!({ "url": format!("{scheme}://u:{PASSWORD}@127.0.0.1:{port}/x"), "query": "SELECT 1 AS id", "idColumn": "id" });
    let e = fetch_with(&cfg, &ConnectorEnv::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Config, "{e}");
    assert!(e.message.contains("is refused"), "{e}");
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "a connection was made");
    // The same database by a name that resolves to loopback, and the real server.
    let by_name = json!({ "url": db.url().replace("127.0.0.1", "localhost"), "query": "SELECT 1 AS id", "idColumn": "id" });
    let e = fetch_with(&by_name, &ConnectorEnv::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Config, "{e}");

    // What the API checks when the config is saved: the redacted URL, refused.
    let urls = connectors::urls(ConnectorKind::Sql, &cfg);
    assert_eq!(urls.len(), 1);
    assert!(
        !urls[0].as_str().contains(PASSWORD) && !urls[0].as_str().contains("u@"),
        "{}",
        urls[0]
    );
    assert!(
        NetPolicy::default()
            .check_url_resolving(&urls[0])
            .await
            .is_err()
    );
    assert!(allow_all().net.check_url_resolving(&urls[0]).await.is_ok());
}

#[test]
fn configs_are_validated_field_by_field_without_quoting_the_url() {
    let errs = connectors::validate(
        ConnectorKind::Sql,
        &json!({ "url": format!("ftp://u:{PASSWORD}@h/db"), "query": "DROP TABLE x", "idColumn": "",
                 "maxRows": 0, "timeoutMs": 5, "extra": 1 }),
    )
    .unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "config.url",
        "config.query",
        "config.idColumn",
        "config.maxRows",
        "config.timeoutMs",
        "config.extra",
    ] {
        assert!(fields.contains(&f), "{f} missing from {errs:?}");
    }
    assert!(
        errs.iter().all(|e| !e.message.contains(PASSWORD)),
        "{errs:?}"
    );
    let errs = connectors::validate(
        ConnectorKind::Sql,
        &json!({ "url": 5, "query": "SELECT 1" }),
    )
    .unwrap_err();
    assert!(
        errs.iter().any(|e| e.field == "config.idColumn"),
        "{errs:?}"
    );
    connectors::validate(
        ConnectorKind::Sql,
        &json!({ "url": "mysql://u:p@db.example.com/shop", "query": "with a as (select 1 as id) select * from a;",
                 "idColumn": "id", "watermarkColumn": "updated_at", "maxRows": 10, "timeoutMs": 1000 }),
    )
    .unwrap();
}
