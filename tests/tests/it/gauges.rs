//! `/metrics` gauges agree with `GET /api/sync/status`, in the embedded mode and on
//! every process of the production roles (two API replicas and a worker).

use std::time::Duration;

use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::test_env;

use crate::util::{eventually, gauge};

/// Four integrations the system disables (a config error skips the retries) and that go
/// stale a second later (their objective is 1 s), one with a run that stays RUNNING.
async fn seed(c: &ApiClient) {
    for i in 0..4 {
        let (s, v) = c
            .post(
                "/api/integrations",
                &json!({
                    "name": format!("broken {i}"), "kind": "synthetic", "staleAfter": 1,
                    "config": { "failAlways": true, "errorClass": "config" },
                }),
            )
            .await;
        assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    }
    c.create("slow", "synthetic", json!({ "latencyMs": 60_000 }), None)
        .await;
}

async fn settled(c: &ApiClient) -> Value {
    eventually(
        Duration::from_secs(20),
        "4 disabled and stale, 1 running",
        || async {
            let (_, st) = c.get("/api/sync/status").await;
            (st["disabledIntegrations"] == 4
                && st["staleCount"] == 4
                && st["runsRunning"] == 1
                && st["runsPending"] == 0)
                .then_some(st)
        },
    )
    .await
}

async fn assert_agree(base: &str, st: &Value) {
    for (metric, field) in [
        ("syncfleet_disabled_integrations", "disabledIntegrations"),
        ("syncfleet_stale_integrations", "staleCount"),
        ("syncfleet_runs_running", "runsRunning"),
        ("syncfleet_runs_pending", "runsPending"),
        ("syncfleet_queue_depth", "queueDepth"),
    ] {
        assert_eq!(
            Some(gauge(base, metric).await),
            st[field].as_i64(),
            "{base}: {metric} disagrees with status.{field}: {st}"
        );
    }
}

#[tokio::test]
async fn gauges_agree_with_status_on_every_production_process() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let a = env.spawn_app(&[]).await;
    let b = env.spawn_app(&[]).await;
    let port = tests::procs::free_port();
    let listen = format!("127.0.0.1:{port}");
    let (stop, worker) = env.spawn_worker(&[("SYNCFLEET_WORKER_LISTEN", listen.as_str())]);
    seed(&a.client).await;
    let st = settled(&a.client).await;
    let worker_url = format!("http://{listen}");
    for base in [a.url.as_str(), b.url.as_str(), worker_url.as_str()] {
        assert_agree(base, &st).await;
    }
    stop.cancel();
    let _ = worker.await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn gauges_agree_with_status_in_the_embedded_mode() {
    let app = tests::embedded::spawn_standalone(&[]).await;
    seed(&app.client).await;
    let st = settled(&app.client).await;
    assert_agree(&app.url, &st).await;
    app.stop().await;
}
