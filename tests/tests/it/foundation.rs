//! The foundation: migrations on both databases, isolation of parallel tests, the
//! embedded standalone mode, health and readiness.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use syncfleet_api::app::{self, Started};
use syncfleet_api::config::Config;
use tests::env::test_env;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::util::{count, eventually};

const TABLES: &[&str] = &[
    "workspaces",
    "integrations",
    "sync_logs",
    "records",
    "audit_events",
    "api_keys",
    "run_stats_hourly",
    "run_stats_watermark",
    "inbound_webhooks",
    "webhook_receipts",
];

async fn assert_tables(db: &impl ConnectionTrait, present: bool) {
    for t in TABLES {
        let ok = db
            .execute_unprepared(&format!("SELECT 1 FROM {t} LIMIT 1"))
            .await
            .is_ok();
        assert_eq!(ok, present, "table {t} present={ok}");
    }
}

#[tokio::test]
async fn migrations_up_down_up_on_postgres() {
    let Some(env) = test_env().await else { return };
    // test_env migrated up already.
    assert_tables(&env.db, true).await;
    Migrator::down(&env.db, None).await.expect("down");
    assert_tables(&env.db, false).await;
    Migrator::up(&env.db, None).await.expect("up again");
    assert_tables(&env.db, true).await;
    assert!(
        Migrator::get_pending_migrations(&env.db)
            .await
            .expect("status")
            .is_empty()
    );
}

#[tokio::test]
async fn migrations_up_down_up_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let db = Database::connect(&url).await.expect("sqlite");
    Migrator::up(&db, None).await.expect("up");
    assert_tables(&db, true).await;
    Migrator::down(&db, None).await.expect("down");
    assert_tables(&db, false).await;
    Migrator::up(&db, None).await.expect("up again");
    assert_tables(&db, true).await;
}

/// The database itself refuses a second RUNNING (or live) run of one integration and a
/// second run of one slot, on both backends.
#[tokio::test]
async fn constraints_enforce_one_live_run_and_one_run_per_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Database::connect(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("c.db").display()
    ))
    .await
    .expect("sqlite");
    Migrator::up(&sqlite, None).await.expect("up");
    let pg = test_env().await;
    if let Some(env) = &pg {
        env.leaves_work("it inserts live runs to test the constraints");
    }
    let mut dbs = vec![sqlite];
    if let Some(env) = &pg {
        dbs.push(env.db.clone());
    }
    for db in &dbs {
        let ws = syncfleet_api::db::default_workspace(db)
            .await
            .expect("workspace");
        let iid = uuid::Uuid::now_v7();
        let now = syncfleet_worker::db::Dialect::of(db).now();
        syncfleet_worker::db::exec(
            db,
            format!(
                "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_enabled, created_at, updated_at) \
                 VALUES ($1, $2, 'c', 'synthetic', $3, true, {now}, {now})"
            ),
            [iid.into(), ws.into(), json!({}).into()],
        )
        .await
        .expect("integration");
        // Live runs and finished ones have their own tables (docs/architecture.md §3.3).
        let insert = |status: &'static str, slot: &'static str| {
            let table = if matches!(status, "PENDING" | "RUNNING") {
                "live_runs"
            } else {
                "run_history"
            };
            syncfleet_worker::db::exec(
                db,
                format!(
                    "INSERT INTO {table} (id, integration_id, status, \"trigger\", scheduled_for, created_at) \
                     VALUES ($1, $2, '{status}', 'schedule', '{slot}', {now})"
                ),
                [uuid::Uuid::now_v7().into(), iid.into()],
            )
        };
        insert("RUNNING", "2026-01-01T00:00:00+00:00")
            .await
            .expect("first live run");
        assert!(
            insert("RUNNING", "2026-01-01T00:01:00+00:00")
                .await
                .is_err(),
            "second RUNNING accepted"
        );
        assert!(
            insert("PENDING", "2026-01-01T00:02:00+00:00")
                .await
                .is_err(),
            "second live run accepted"
        );
        // A slot is not unique in the history any more: one live run per integration,
        // and slots that only move forward, make a second run of one slot impossible.
        insert("SUCCESS", "2026-01-01T00:03:00+00:00")
            .await
            .expect("finished runs are unconstrained");
    }
}

/// Two tests' environments never see each other's rows or queue keys.
#[tokio::test]
async fn spawn_app_isolates_parallel_tests() {
    let (Some(a), Some(b)) = (test_env().await, test_env().await) else {
        return;
    };
    a.leaves_work("A's run waits in A's queue: no worker runs in this test");
    assert_ne!(a.db_url, b.db_url);
    assert_ne!(a.prefix, b.prefix);
    let (app_a, app_b) = (a.spawn_app(&[]).await, b.spawn_app(&[]).await);
    let id = app_a
        .client
        .create("only-in-a", "synthetic", json!({}), Some(60))
        .await;
    let (s, _) = app_b.client.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(s, 404);
    // B's key is not valid against A either.
    let cross = tests::ApiClient::new(&app_a.url, &b.admin_token());
    assert_eq!(cross.get("/api/integrations").await.0, 401);
    assert_eq!(
        count(&b.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        0
    );
    // A's scheduled run went to A's queue keys only.
    eventually(
        Duration::from_secs(10),
        "a run pushed to A's queue",
        || async {
            let mut r = a.redis().await;
            let n: i64 = redis::cmd("ZCARD")
                .arg(format!("{{{}:sync}}:ready", a.prefix))
                .query_async(&mut r)
                .await
                .ok()?;
            (n > 0).then_some(())
        },
    )
    .await;
    let mut r = b.redis().await;
    let queued: i64 = redis::cmd("ZCARD")
        .arg(format!("{{{}:sync}}:ready", b.prefix))
        .query_async(&mut r)
        .await
        .expect("zcard");
    assert_eq!(queued, 0, "B's queue holds a run");
    app_a.stop().await;
    app_b.stop().await;
}

/// The embedded default: SQLite file + embedded queue in one process; migrates itself,
/// answers health/readiness, runs syncs, and stops cleanly.
#[tokio::test]
async fn standalone_runs_syncs_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("syncfleet.db").display()
    );
    let config = Config::from_map(
        &[
            ("DATABASE_URL", url.as_str()),
            ("SYNCFLEET_SCHEDULER_TICK_MS", "100"),
            ("SYNCFLEET_POLL_INTERVAL_MS", "20"),
            ("SYNCFLEET_MIN_INTERVAL_SECS", "1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
    )
    .expect("config");
    if std::env::var("SYNCFLEET_TEST_LOGS").is_ok() {
        syncfleet_api::telemetry::init(syncfleet_api::config::LogFormat::Text);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<Started>();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        app::run_standalone(config, listener, token, move |s| {
            let _ = tx.send(s);
        })
        .await
    });
    let started = rx.await.expect("started");
    let syncfleet_api::db::AdminKey::Generated(key) = started.admin_key else {
        panic!("no key generated")
    };
    let client = tests::ApiClient::new(&started.url, &key);
    let health = reqwest::get(format!("{}/healthz", started.url))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", started.url))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let id = client
        .create("embedded", "synthetic", json!({ "records": 3 }), Some(1))
        .await;
    let runs = eventually(Duration::from_secs(15), "two successful runs", || async {
        let h = client.history(id).await;
        (h.iter().filter(|l| l["status"] == "SUCCESS").count() >= 2).then_some(h)
    })
    .await;
    assert!(runs.iter().any(|l| l["recordsInserted"] == 3));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("stopped in time")
        .expect("join")
        .expect("clean exit");
}

/// `api` and `worker` refuse an unmigrated database and say what to do.
#[tokio::test]
async fn production_roles_refuse_an_unmigrated_database() {
    let Some(env) = test_env().await else { return };
    Migrator::down(&env.db, None).await.expect("down");
    let config = env.config(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = app::run_api(config.clone(), listener, CancellationToken::new(), |_| {})
        .await
        .expect_err("api started");
    assert!(format!("{err:#}").contains("syncfleet migrate"), "{err:#}");
    let err = app::run_worker(config, CancellationToken::new())
        .await
        .expect_err("worker started");
    assert!(format!("{err:#}").contains("syncfleet migrate"), "{err:#}");
}

/// The real binary with no configuration: prints its URL and key, answers health and
/// readiness, and exits 0 soon after SIGTERM.
#[tokio::test]
async fn binary_standalone_starts_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = tests::procs::free_port();
    let mut child = std::process::Command::new(tests::procs::syncfleet_bin())
        .current_dir(dir.path())
        .env_clear()
        .env("SYNCFLEET_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "standalone ready", || async {
        let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert!(
        dir.path().join("syncfleet.db").exists(),
        "embedded database file not created"
    );
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut out).expect("read");
    assert!(out.contains(&base), "URL not printed: {out}");
    assert!(out.contains("sf_"), "admin key not printed: {out}");
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans (one per run) reach an OTLP/HTTP
/// collector; here a local listener standing in for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().extend_from_slice(&body);
                ""
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });
    let dir = tempfile::tempdir().expect("tempdir");
    let port = tests::procs::free_port();
    let token = "otel-test-admin-token-123";
    let mut child = tests::procs::Proc {
        child: std::process::Command::new(tests::procs::syncfleet_bin())
            .current_dir(dir.path())
            .env_clear()
            .env("SYNCFLEET_LISTEN", format!("127.0.0.1:{port}"))
            .env("SYNCFLEET_ADMIN_TOKEN", token)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    };
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "standalone ready", || async {
        let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let client = tests::ApiClient::new(&base, token);
    let id = client.create("traced", "synthetic", json!({}), None).await;
    eventually(Duration::from_secs(10), "run finished", || async {
        client
            .history(id)
            .await
            .iter()
            .any(|l| l["status"] == "SUCCESS")
            .then_some(())
    })
    .await;
    assert_eq!(child.terminate(Duration::from_secs(10)), Some(0));
    let body = received.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("sync_run"),
        "no run span exported ({} bytes)",
        body.len()
    );
    assert!(
        text.contains(&id.to_string()),
        "the span lacks integration.id"
    );
}
