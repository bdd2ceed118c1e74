//! The operator CLI against a running API: one test per command, tables and `--json`,
//! and clear errors with a non-zero exit.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tests::env::test_env;
use tests::procs::syncfleet_bin;

use crate::util::eventually;

fn cli(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(syncfleet_bin())
        .args(args)
        .env_clear()
        .env("SYNCFLEET_URL", url)
        .env("SYNCFLEET_TOKEN", token)
        .output()
        .expect("run cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_cli_command_works_and_fails_clearly() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    let token = env.admin_token();
    let id = app
        .client
        .create("cli-demo", "synthetic", json!({ "records": 4 }), Some(60))
        .await;
    let ids = id.to_string();
    eventually(Duration::from_secs(10), "first run", || async {
        app.client
            .history(id)
            .await
            .iter()
            .any(|l| l["status"] == "SUCCESS")
            .then_some(())
    })
    .await;
    let url = app.url.clone();
    let run = move |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&url, &token, &a)
        })
    };
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (code, out, err) = run(v(&["status"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("workers alive") && out.contains("queue depth"),
        "{out}"
    );

    let (code, out, err) = run(v(&["integrations", "list"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cli-demo") && out.contains("HEALTH"), "{out}");
    let (code, out, _) = run(v(&["integrations", "list", "--json"])).await.unwrap();
    assert_eq!(code, 0);
    let parsed: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(parsed["total"], 1);

    let (code, out, err) = run(v(&["integrations", "set-interval", &ids, "120"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("interval 120s"), "{out}");

    let (code, out, err) = run(v(&["sync", &ids])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued") || out.contains("coalesced"), "{out}");

    let (code, out, err) = run(v(&["history", &ids, "--status", "success", "--limit", "5"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SUCCESS") && out.contains("RUN"), "{out}");

    let (code, out, err) = run(v(&["pause", &ids, "--reason", "maintenance"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused"), "{out}");
    let (code, _, err) = run(v(&["sync", &ids])).await.unwrap();
    assert_eq!(code, 1, "a plain sync of a paused integration must fail");
    assert!(err.contains("paused") && err.contains("409"), "{err}");
    let (code, out, err) = run(v(&["sync", &ids, "--force"])).await.unwrap();
    assert_eq!(code, 0, "{err}: {out}");
    let (code, out, err) = run(v(&["resume", &ids])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumed") && out.contains("healthy"), "{out}");

    // Errors: one clear line, exit 1.
    let (code, _, err) = run(v(&["history", "not-an-id"])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("not an integration id"), "{err}");
    let (code, _, err) = run(v(&["integrations", "set-interval", &ids, "5000000"]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("syncInterval"), "{err}");
    let (code, _, err) = tokio::task::spawn_blocking({
        let url = app.url.clone();
        move || cli(&url, "sf_wrong", &["status"])
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) =
        tokio::task::spawn_blocking(|| cli("http://127.0.0.1:9", "sf_x", &["status"]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}
