//! The web console in a real browser: Debian's Chromium driven over chromedriver
//! (fantoccini), against the real API role and a worker on PostgreSQL + Redis, and one
//! flow on the embedded mode (SQLite). Each flow saves screenshots under
//! `target/console-screenshots/`. Without Chromium the tests print SKIPPED (and fail
//! under `CI=true`, where `.ci/run` installs it).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use syncfleet_api::app::{self, Started};
use syncfleet_api::config::Config;
use syncfleet_worker::db as q;
use tests::env::skip_or_fail;
use tests::test_env;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cloud::FakeCloud;
use crate::push::{PUSH, batch};
use crate::util::{count, eventually, gauge};

/// One browser at a time: the machine has two cores.
static BROWSER_LOCK: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

const CHROMIUM: &str = "/usr/bin/chromium";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A headless Chromium with its own chromedriver and an empty profile.
struct Browser {
    c: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    base: String,
}

impl Browser {
    async fn start(base: &str) -> Option<Self> {
        let (Some(driver_bin), true) = (
            which("chromedriver"),
            std::path::Path::new(CHROMIUM).exists(),
        ) else {
            skip_or_fail("Chromium and chromedriver (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").port()
        };
        let driver = tokio::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // Its own process group, so the browser it starts goes with it (see Drop).
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1366,900", "--lang=en-US",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.as_object().cloned().expect("caps"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let c = loop {
            match builder.connect(&url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start Chromium through chromedriver: {e}"),
            }
        };
        Some(Self {
            c,
            driver,
            _profile: profile,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// Opens a page and waits until its scripts are ready (htmx, live updates).
    async fn goto(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("goto");
        if !path.starts_with("/login") {
            self.ready().await;
        }
    }

    async fn ready(&self) {
        self.until(
            Duration::from_secs(10),
            "the page's scripts",
            "(!document.body.hasAttribute('data-events')) || (window.htmx && document.body.dataset.ready === '1')",
        )
        .await;
    }

    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.c.execute(script, args).await.expect(script)
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.expect("screenshot");
        std::fs::write(shots_dir().join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn login(&self, key: &str) {
        self.goto("/login").await;
        self.c
            .find(Locator::Css("#key"))
            .await
            .expect("key input")
            .send_keys(key)
            .await
            .expect("type key");
        self.click("form button[type=submit]").await;
        self.wait_path("/").await;
    }

    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types into an input; tries again if a live update replaced it meanwhile.
    async fn fill(&self, css: &str, text: &str) {
        let mut tries = 0;
        loop {
            let el = self
                .c
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            let typed = async {
                el.clear().await?;
                el.send_keys(text).await
            };
            match typed.await {
                Ok(()) => return,
                Err(e) if tries < 5 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("typing into {css}: {e}"),
            }
        }
    }

    async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.c.current_url().await.expect("url");
            if url.path() == path {
                if path != "/login" {
                    self.ready().await;
                }
                return;
            }
            assert!(Instant::now() < deadline, "still at {url}, expected {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a JS expression until it is truthy; returns its value.
    async fn until(&self, within: Duration, what: &str, expr: &str) -> Value {
        let script = format!("return ({expr});");
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(&script, vec![]).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            if Instant::now() >= deadline {
                self.shot("FAILED").await;
                panic!(
                    "timed out after {within:?} waiting for {what} ({expr}); the page is in FAILED.png"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `expr` evaluates to once htmx has wired it (a live reload may
    /// have just replaced it; htmx wires new content a moment after the swap).
    async fn htmx_click(&self, expr: &str) {
        // Checked and clicked in one script: nothing can swap it out in between.
        self.until(
            Duration::from_secs(10),
            "the control, wired by htmx",
            &format!("(() => {{ const e = {expr}; if (!(e && e['htmx-internal-data'] && e['htmx-internal-data'].initHash)) return false; e.click(); return true; }})()"),
        )
        .await;
    }

    /// Clicks the submit button `expr` evaluates to once htmx has wired its form.
    async fn htmx_submit(&self, expr: &str) {
        self.until(
            Duration::from_secs(10),
            "the form, wired by htmx",
            &format!("(() => {{ const e = {expr}; const f = e && e.form; if (!(f && f['htmx-internal-data'] && f['htmx-internal-data'].initHash)) return false; e.click(); return true; }})()"),
        )
        .await;
    }

    /// Marks the document; [`Browser::same_document`] proves no navigation happened.
    async fn mark(&self) {
        self.js("window.__sfMark = 42;", vec![]).await;
    }

    async fn same_document(&self) -> bool {
        self.js("return window.__sfMark === 42;", vec![]).await == json!(true)
    }

    async fn csrf(&self) -> String {
        let v = self
            .js(
                "return JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];",
                vec![],
            )
            .await;
        v.as_str().expect("csrf token").to_owned()
    }

    async fn close(self) {
        let _ = self.c.clone().close().await;
    }
}

impl Drop for Browser {
    /// Ends chromedriver and every browser process it started, even when a test fails.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Browser {
    /// `execute` is synchronous; fetch needs the async variant.
    async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.c.execute_async(script, args).await.expect(script)
    }
}

/// The overview card's health of integration `id` (or null).
fn card_health(id: Uuid) -> String {
    format!("document.getElementById('card-{id}')?.dataset.health")
}

async fn post_status(b: &Browser, path: &str, csrf: Option<&str>) -> u16 {
    let v = b
        .js_async(
            "const [p, t, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
             const h = {'content-type': 'application/x-www-form-urlencoded'};
             if (t) h['X-CSRF-Token'] = t;
             fetch(p, {method: 'POST', headers: h, body: ''}).then(r => done(r.status), () => done(0));",
            vec![json!(path), json!(csrf)],
        )
        .await;
    v.as_u64().unwrap_or(0) as u16
}

/// Creates an integration through the form and returns its id (from the detail URL).
async fn create_through_form(b: &Browser, name: &str, records: &str, latency: &str) -> Uuid {
    b.goto("/integrations/new?kind=synthetic").await;
    b.fill("#name", name).await;
    b.c.find(Locator::Css("#interval"))
        .await
        .expect("interval")
        .select_by_value("3600")
        .await
        .expect("select interval");
    b.fill("[name='cfg.records']", records).await;
    b.fill("[name='cfg.latencyMs']", latency).await;
    b.click("form.intform button.primary").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = b.c.current_url().await.expect("url");
        if let Some(id) = url
            .path()
            .strip_prefix("/integrations/")
            .and_then(|s| Uuid::parse_str(s).ok())
        {
            b.ready().await;
            return id;
        }
        assert!(Instant::now() < deadline, "no redirect after create: {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Admin flows on PostgreSQL + Redis: log in, create through the form, watch it sync
/// live, change the interval, sync now, pause with a reason, resume, escaping,
/// logout.
#[tokio::test]
async fn admin_flows_live_on_postgres() {
    let _one = BROWSER_LOCK.lock().await;
    if std::env::var("SYNCFLEET_TEST_LOGS").is_ok() {
        let _ = syncfleet_api::telemetry::init(syncfleet_api::config::LogFormat::Text);
    }
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (wtoken, worker) = env.spawn_worker(&[]);
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };

    // Log in with the admin key; the overview explains what to do first.
    b.login(&env.admin_token()).await;
    b.until(
        Duration::from_secs(5),
        "empty state",
        "document.querySelector('.empty h2')?.textContent.includes('No integrations yet')",
    )
    .await;
    b.shot("01-overview-empty").await;

    // Company for the screenshots: a few sources in different states.
    let mut extras = Vec::new();
    for (name, config, interval, enabled) in [
        ("Shop orders", json!({"records": 120}), Some(300), true),
        (
            "Warehouse stock",
            json!({"records": 40, "latencyMs": 300}),
            Some(900),
            true,
        ),
        (
            "Legacy CRM export",
            json!({"failAlways": true}),
            Some(3600),
            true,
        ),
        (
            "Finance ledger",
            json!({"failFirst": 1, "records": 8}),
            Some(3600),
            true,
        ),
        (
            "Marketing sheet",
            json!({"records": 12}),
            Some(86_400),
            false,
        ),
    ] {
        let (s, v) = app
            .client
            .post(
                "/api/integrations",
                &json!({"name": name, "kind": "synthetic", "config": config, "syncInterval": interval, "syncEnabled": enabled}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        extras.push(Uuid::parse_str(v["id"].as_str().unwrap()).unwrap());
    }

    // Create through the form: a synthetic source slow enough to watch.
    let id =
        create_through_form(&b, "Orders <script>window.__pwned=1</script>", "12", "1500").await;
    b.shot("02-detail-new").await;
    // The name is text, not markup.
    let title = b
        .js("return document.querySelector('h1').textContent;", vec![])
        .await;
    assert_eq!(title, json!("Orders <script>window.__pwned=1</script>"));
    assert_eq!(
        b.js("return window.__pwned === undefined;", vec![]).await,
        json!(true)
    );

    // The overview card is blue (never synced) and turns green without a reload.
    b.goto("/").await;
    b.mark().await;
    let first = b.js(&format!("return {};", card_health(id)), vec![]).await;
    assert!(first.is_string(), "card missing: {first}");
    b.until(
        Duration::from_secs(10),
        "the card turns green",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-ok')"),
    )
    .await;
    assert!(b.same_document().await, "the overview reloaded");
    b.shot("03-overview-green").await;

    // Detail: the history shows the SUCCESS run, and a manual run appears live.
    b.goto(&format!("/integrations/{id}")).await;
    b.until(
        Duration::from_secs(5),
        "a SUCCESS run",
        "document.querySelector('#history tr.run[data-status=SUCCESS]')",
    )
    .await;
    b.mark().await;
    b.htmx_click("document.querySelector('#live button.primary')")
        .await; // Sync now
    b.until(
        Duration::from_secs(5),
        "the toast",
        "document.querySelector('#toasts .toast.ok')?.textContent.includes('Sync queued')",
    )
    .await;
    b.until(
        Duration::from_secs(15),
        "a finished manual run in the history",
        "document.querySelector('#history tr.run[data-trigger=manual][data-status=SUCCESS]')",
    )
    .await;
    assert!(b.same_document().await, "the detail page reloaded");
    b.until(
        Duration::from_secs(5),
        "the chart",
        "document.querySelector('#chart canvas')",
    )
    .await;
    b.shot("04-detail-history").await;

    // Change the interval: the answer says when the next sync is.
    b.c.find(Locator::Css("form.settings #interval"))
        .await
        .expect("interval")
        .select_by_value("300")
        .await
        .expect("select");
    b.click("form.settings button.primary").await;
    let next = b
        .until(
            Duration::from_secs(5),
            "next sync in the toast",
            "document.querySelector('#toasts .toast.ok[data-next]')?.dataset.next",
        )
        .await;
    let next: chrono::DateTime<chrono::Utc> = next.as_str().unwrap().parse().unwrap();
    let last: chrono::DateTime<chrono::Utc> = sea_orm_last_sync(&env, id).await;
    let delta = (next - last).num_seconds();
    assert!(
        (295..=305).contains(&delta),
        "next sync {delta} s after the last, expected 300"
    );
    b.until(
        Duration::from_secs(5),
        "the interval shown",
        "document.querySelector('#interval')?.textContent === '5 min'",
    )
    .await;
    b.until(
        Duration::from_secs(5),
        "the next sync shown",
        "document.querySelector('#next-sync time')",
    )
    .await;
    b.shot("05-detail-interval").await;

    // Pause with a reason: grey, and the reason in the audit trail.
    b.fill(
        "#live form.inline input[name=reason]",
        "source maintenance <b>tonight</b>",
    )
    .await;
    b.htmx_click("document.querySelector('#live form.inline button')")
        .await;
    b.until(
        Duration::from_secs(5),
        "paused badge",
        "document.querySelector('#health-badge')?.dataset.health === 'paused'",
    )
    .await;
    b.until(
        Duration::from_secs(5),
        "the reason in the audit trail",
        "[...document.querySelectorAll('.timeline li')].some(li => li.textContent.includes('integration.pause') && li.textContent.includes('source maintenance <b>tonight</b>'))",
    )
    .await;
    b.shot("06-detail-paused").await;
    b.goto("/").await;
    b.until(
        Duration::from_secs(5),
        "grey card",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-off')"),
    )
    .await;
    b.goto(&format!("/integrations/{id}")).await;

    // Resume: a run right away, healthy again.
    b.htmx_click("document.querySelector('#live form.inline button')")
        .await;
    b.until(
        Duration::from_secs(10),
        "healthy again",
        "document.querySelector('#health-badge')?.dataset.health === 'healthy'",
    )
    .await;
    b.until(
        Duration::from_secs(5),
        "resume in the audit trail",
        "[...document.querySelectorAll('.timeline li')].some(li => li.textContent.includes('integration.resume'))",
    )
    .await;
    // Record values are text too.
    let records = count(
        &env.db,
        "SELECT COUNT(*) FROM records WHERE integration_id = $1",
        vec![id.into()],
    )
    .await;
    assert!(records >= 12, "records: {records}");
    syncfleet_worker::db::exec(
        &env.db,
        "UPDATE records SET data = $2 WHERE integration_id = $1",
        [
            id.into(),
            json!({"note": "<img src=x onerror=window.__pwned=2>"}).into(),
        ],
    )
    .await
    .unwrap();
    b.goto(&format!("/integrations/{id}")).await;
    b.until(
        Duration::from_secs(5),
        "record shown as text",
        "document.querySelector('table.records code')?.textContent.includes('<img src=x')",
    )
    .await;
    assert_eq!(
        b.js(
            "return window.__pwned === undefined && !document.querySelector('table.records img');",
            vec![]
        )
        .await,
        json!(true)
    );

    // Every console action is in the audit trail with the key.
    let audited = count(
        &env.db,
        "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1 AND actor LIKE 'key:%' \
         AND action IN ('integration.create', 'integration.trigger', 'integration.settings', 'integration.pause', 'integration.resume')",
        vec![id.into()],
    )
    .await;
    assert!(audited >= 5, "audited actions: {audited}");

    // The page of an integration that failed once and recovered, with a few runs.
    let ledger = extras[3];
    for _ in 0..3 {
        eventually(Duration::from_secs(10), "the ledger idle", || async {
            (count(&env.db, "SELECT COUNT(*) FROM sync_logs WHERE integration_id = $1 AND status IN ('PENDING', 'RUNNING')", vec![ledger.into()]).await == 0).then_some(())
        })
        .await;
        app.client.trigger(ledger).await;
    }
    b.goto(&format!("/integrations/{ledger}")).await;
    b.until(Duration::from_secs(10), "five runs", "document.querySelectorAll('#history tr.run[data-status=SUCCESS], #history tr.run[data-status=FAILED]').length >= 5").await;
    b.until(
        Duration::from_secs(5),
        "the chart",
        "document.querySelector('#chart canvas')",
    )
    .await;
    b.shot("08-detail-ledger").await;

    b.goto("/fleet").await;
    b.until(
        Duration::from_secs(5),
        "fleet tiles",
        "document.querySelectorAll('.tile').length >= 8",
    )
    .await;
    b.shot("07-fleet").await;

    // Logout ends the session: the old cookie no longer works.
    b.click(".who form button").await;
    b.wait_path("/login").await;
    b.goto("/").await;
    b.wait_path("/login").await;
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM console_sessions", vec![]).await,
        0
    );

    // Quiet down before the env checks for leftover work.
    wait_idle(&env).await;
    b.close().await;
    wtoken.cancel();
    let _ = worker.await;
    app.stop().await;
}

async fn sea_orm_last_sync(env: &tests::TestEnv, id: Uuid) -> chrono::DateTime<chrono::Utc> {
    let rows = syncfleet_worker::db::query(
        &env.db,
        "SELECT last_sync_at FROM integrations WHERE id = $1",
        [id.into()],
    )
    .await
    .unwrap();
    rows[0].try_get("", "last_sync_at").unwrap()
}

async fn wait_idle(env: &tests::TestEnv) {
    eventually(Duration::from_secs(20), "no live runs", || async {
        (count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status IN ('PENDING', 'RUNNING')",
            vec![],
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
}

/// A failing integration turns amber, then red when disabled; it is on the Failures
/// page; Re-enable and Retry work; Clear hides it.
#[tokio::test]
async fn failures_turn_amber_then_red_and_recover() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let slow_backoff = [
        ("SYNCFLEET_RETRY_BASE_MS", "1500"),
        ("SYNCFLEET_RETRY_CAP_MS", "3000"),
    ];
    let app = env.spawn_app(&slow_backoff).await;
    let (wtoken, worker) = env.spawn_worker(&slow_backoff);
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    let (s, v) = app
        .client
        .post(
            "/api/integrations",
            &json!({"name": "flaky source", "kind": "synthetic", "config": {"failAlways": true, "latencyMs": 200}, "syncInterval": 3600, "maxRetries": 3}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
    b.goto("/").await;
    b.mark().await;
    b.until(
        Duration::from_secs(10),
        "amber",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-warn')"),
    )
    .await;
    b.until(Duration::from_secs(5), "last error on the card", &format!("document.querySelector('#card-{id} .lasterr')?.textContent.includes('Last sync failed')")).await;
    b.shot("10-overview-amber").await;
    b.until(
        Duration::from_secs(20),
        "red (disabled)",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-bad')"),
    )
    .await;
    assert!(b.same_document().await, "the overview reloaded");
    b.shot("11-overview-red").await;

    // The Failures page lists it with the error class.
    b.goto("/failures").await;
    b.until(
        Duration::from_secs(5),
        "listed",
        &format!("document.querySelector('#failure-{id} .errclass')?.textContent === 'transient'"),
    )
    .await;
    b.shot("12-failures").await;

    // Retry one run: a forced manual run (it fails again; the integration stays disabled).
    let runs_before = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE integration_id = $1",
        vec![id.into()],
    )
    .await;
    b.htmx_click(&format!(
        "document.querySelector('#failure-{id} .actions button')"
    ))
    .await;
    b.until(
        Duration::from_secs(5),
        "retry toast",
        "document.querySelector('#toasts .toast.ok')?.textContent.includes('Retry queued')",
    )
    .await;
    eventually(Duration::from_secs(10), "the retry ran", || async {
        (count(&env.db, "SELECT COUNT(*) FROM sync_logs WHERE integration_id = $1 AND \"trigger\" = 'manual' AND status = 'FAILED'", vec![id.into()]).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE integration_id = $1",
            vec![id.into()]
        )
        .await,
        runs_before + 1
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1 AND action = 'run.retry'",
            vec![id.into()]
        )
        .await,
        1
    );

    // Fix the source through the API, then Re-enable from the Failures page.
    let (s, v) = app.client.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(s, 200);
    let r = app
        .client
        .http
        .patch(format!("{}/api/integrations/{id}", app.url))
        .bearer_auth(env.admin_token())
        .json(&json!({"version": v["version"], "config": {"records": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.goto("/failures").await;
    b.until(Duration::from_secs(5), "re-enable button", &format!("[...document.querySelectorAll('#failure-{id} button')].some(x => x.textContent === 'Re-enable')")).await;
    b.htmx_click(&format!("[...document.querySelectorAll('#failure-{id} button')].find(x => x.textContent === 'Re-enable')")).await;
    b.until(
        Duration::from_secs(5),
        "re-enable toast",
        "document.querySelector('#toasts .toast.ok')?.textContent.includes('Re-enabled')",
    )
    .await;
    b.until(
        Duration::from_secs(10),
        "gone from the list once healthy",
        &format!("!document.getElementById('failure-{id}')"),
    )
    .await;
    b.goto("/").await;
    b.until(
        Duration::from_secs(10),
        "green again",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-ok')"),
    )
    .await;

    // Clear: a second failing integration is acknowledged and leaves the list.
    let (s, v) = app
        .client
        .post("/api/integrations", &json!({"name": "broken creds", "kind": "synthetic", "config": {"failAlways": true, "errorClass": "auth"}, "syncInterval": 3600}))
        .await;
    assert_eq!(s, 201);
    let id2 = Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
    b.goto("/failures").await;
    b.until(
        Duration::from_secs(10),
        "listed",
        &format!("document.getElementById('failure-{id2}')"),
    )
    .await;
    b.htmx_click(&format!(
        "document.querySelector('#failure-{id2} button.link')"
    ))
    .await;
    b.until(
        Duration::from_secs(5),
        "cleared",
        &format!("!document.getElementById('failure-{id2}')"),
    )
    .await;
    assert_eq!(count(&env.db, "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1 AND action = 'failure.acknowledge'", vec![id2.into()]).await, 1);
    b.shot("13-failures-cleared").await;

    wait_idle(&env).await;
    b.close().await;
    wtoken.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Invalid input is shown next to its field and writes nothing; a POST without the
/// CSRF token is refused; a viewer sees no write controls and gets 403 for a
/// hand-made POST; revoking the key ends its session at once.
#[tokio::test]
async fn forms_csrf_viewers_and_revocation() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;

    // An invalid form: messages next to the fields, nothing written.
    b.goto("/integrations/new?kind=synthetic").await;
    b.fill("#name", "   ").await;
    b.fill("[name='cfg.records']", "5000000").await;
    b.click("form.intform button.primary").await;
    // The API's messages, each next to its field: the name, and the connector's own.
    b.until(
        Duration::from_secs(5),
        "error next to the name",
        "document.querySelector('#err-name')?.textContent.includes('1 to 200 characters')",
    )
    .await;
    b.until(
        Duration::from_secs(5),
        "the connector's message",
        "document.querySelector('#err-cfg\\\\.records')?.textContent.includes('at most 1000000')",
    )
    .await;
    assert_eq!(
        b.js(
            "return document.querySelector('#name').getAttribute('aria-invalid');",
            vec![]
        )
        .await,
        json!("true")
    );
    b.shot("20-form-invalid").await;
    b.fill("#name", "ok name").await;
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        0
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'integration.create'",
            vec![]
        )
        .await,
        0
    );

    // Test connection: fetches once, shows records, stores nothing.
    b.fill("[name='cfg.records']", "4").await;
    b.click("form.intform button[hx-post]").await;
    b.until(
        Duration::from_secs(10),
        "test result",
        "document.querySelector('#test-result')?.textContent.includes('Fetched 4 records')",
    )
    .await;
    b.js(
        "document.querySelector('#test-result').scrollIntoView({block: 'center'});",
        vec![],
    )
    .await;
    b.shot("21-form-test-connection").await;
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        0
    );

    let id = app
        .client
        .create("kept", "synthetic", json!({"records": 2}), Some(3600))
        .await;
    env.leaves_work(
        "no worker runs here: the first run's hint stays queued after the pause cancels it",
    );
    // A POST without the CSRF token is refused and changes nothing.
    b.goto("/").await;
    assert_eq!(
        post_status(&b, &format!("/integrations/{id}/pause"), None).await,
        403
    );
    assert_eq!(
        post_status(&b, &format!("/integrations/{id}/pause"), Some("wrong")).await,
        403
    );
    let enabled = count(
        &env.db,
        "SELECT COUNT(*) FROM integrations WHERE sync_enabled",
        vec![],
    )
    .await;
    assert_eq!(enabled, 1);
    // With the token it works (the same request).
    let token = b.csrf().await;
    assert_eq!(
        post_status(&b, &format!("/integrations/{id}/pause"), Some(&token)).await,
        200
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM integrations WHERE sync_enabled",
            vec![]
        )
        .await,
        0
    );

    // A viewer: no write controls, and a hand-made POST gets 403.
    let (s, v) = app
        .client
        .post("/api/keys", &json!({"name": "wallboard", "role": "viewer"}))
        .await;
    assert_eq!(s, 201);
    let viewer_key = v["key"].as_str().unwrap().to_owned();
    let viewer_id = v["id"].as_str().unwrap().to_owned();
    b.click(".who form button").await;
    b.wait_path("/login").await;
    b.login(&viewer_key).await;
    b.until(
        Duration::from_secs(5),
        "the card",
        &format!("document.getElementById('card-{id}')"),
    )
    .await;
    assert_eq!(
        b.js(
            "return !document.querySelector('a[href=\"/integrations/new\"]');",
            vec![]
        )
        .await,
        json!(true)
    );
    b.goto(&format!("/integrations/{id}")).await;
    b.until(
        Duration::from_secs(5),
        "detail",
        "document.querySelector('#live')",
    )
    .await;
    let controls = b.js("return document.querySelectorAll('#detail button, #detail form.settings, #detail a[href$=\"/edit\"]').length;", vec![]).await;
    assert_eq!(controls, json!(0), "a viewer sees write controls");
    b.shot("22-viewer-detail").await;
    let token = b.csrf().await;
    assert_eq!(
        post_status(&b, &format!("/integrations/{id}/resume"), Some(&token)).await,
        403
    );
    assert_eq!(
        post_status(&b, &format!("/integrations/{id}/sync"), Some(&token)).await,
        403
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM integrations WHERE sync_enabled",
            vec![]
        )
        .await,
        0
    );

    // Revoking the viewer's key ends its session at once.
    let r = app
        .client
        .http
        .delete(format!("{}/api/keys/{viewer_id}", app.url))
        .bearer_auth(env.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    b.goto("/").await;
    b.wait_path("/login").await;

    b.close().await;
    app.stop().await;
}

/// The embedded mode (SQLite, one process): log in, create through the form, see it
/// sync without reloading.
#[tokio::test]
async fn embedded_mode_console_flow() {
    let _one = BROWSER_LOCK.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("syncfleet.db").display()
    );
    let token = "embedded-admin-token-0123456789";
    let config = Config::from_map(
        &[
            ("DATABASE_URL", url.as_str()),
            ("SYNCFLEET_ADMIN_TOKEN", token),
            ("SYNCFLEET_SCHEDULER_TICK_MS", "100"),
            ("SYNCFLEET_POLL_INTERVAL_MS", "20"),
            ("SYNCFLEET_MIN_INTERVAL_SECS", "1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
    )
    .expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<Started>();
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        app::run_standalone(config, listener, stop, move |s| {
            let _ = tx.send(s);
        })
        .await
    });
    let started = rx.await.expect("started");
    let Some(b) = Browser::start(&started.url).await else {
        shutdown.cancel();
        return;
    };
    b.login(token).await;
    let id = create_through_form(&b, "embedded demo", "7", "1200").await;
    b.goto("/").await;
    b.mark().await;
    b.until(
        Duration::from_secs(15),
        "the card turns green",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-ok')"),
    )
    .await;
    assert!(b.same_document().await, "the overview reloaded");
    b.shot("30-embedded-overview").await;
    // A change made through the HTTP API (as the CLI makes it) shows without a reload:
    // the embedded feed reads control actions from the audit trail.
    let api = tests::ApiClient::new(&started.url, token);
    let (s, v) = api
        .post(
            &format!("/api/integrations/{id}/pause"),
            &json!({"reason": "paused from the CLI"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    b.until(
        Duration::from_secs(5),
        "the card turns grey",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-off')"),
    )
    .await;
    let (s, v) = api
        .post(&format!("/api/integrations/{id}/resume"), &json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    b.until(
        Duration::from_secs(15),
        "green again after the resume's run",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-ok')"),
    )
    .await;
    assert!(b.same_document().await, "the overview reloaded");
    b.goto(&format!("/integrations/{id}")).await;
    b.until(
        Duration::from_secs(5),
        "a SUCCESS run",
        "document.querySelector('#history tr.run[data-status=SUCCESS]')",
    )
    .await;
    b.shot("31-embedded-detail").await;
    b.close().await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
}

/// The edit form (prefilled, inline errors that write nothing, a save that is audited)
/// and a run that starts showing on the overview without a reload.
#[tokio::test]
async fn edit_form_and_run_starts_live() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    // One run at a time, so a run can wait queued behind another one.
    let (wtoken, worker) = env.spawn_worker(&[("SYNCFLEET_WORKER_CONCURRENCY", "1")]);
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    let blocker = app
        .client
        .create(
            "Nightly export",
            "synthetic",
            json!({"records": 1, "latencyMs": 3000}),
            None,
        )
        .await;
    let id = app
        .client
        .create(
            "Stock levels",
            "synthetic",
            json!({"records": 3, "latencyMs": 2500}),
            Some(3600),
        )
        .await;
    b.goto("/").await;
    b.until(
        Duration::from_secs(20),
        "the first run's green card",
        &format!("document.getElementById('card-{id}')?.classList.contains('tone-ok')"),
    )
    .await;

    // A run that starts is announced, not only one that is queued or finished: queued
    // behind a 3 s run, the card says "queued"; when the worker claims it (which sends
    // no notification) it says "syncing now" while it runs (2.5 s).
    wait_idle(&env).await;
    b.mark().await;
    app.client.trigger(blocker).await;
    eventually(Duration::from_secs(5), "the blocker running", || async {
        (count(
            &env.db,
            "SELECT COUNT(*) FROM live_runs WHERE integration_id = $1 AND status = 'RUNNING'",
            vec![blocker.into()],
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    app.client.trigger(id).await;
    b.until(
        Duration::from_secs(2),
        "the card shows the queued sync",
        &format!("document.getElementById('card-{id}')?.textContent.includes('queued')"),
    )
    .await;
    b.until(
        Duration::from_secs(6),
        "the card shows the running sync",
        &format!("document.getElementById('card-{id}')?.textContent.includes('syncing now')"),
    )
    .await;
    b.shot("40-overview-syncing").await;
    b.until(
        Duration::from_secs(10),
        "green when it finished",
        &format!(
            "(() => {{ const c = document.getElementById('card-{id}'); return c && !c.textContent.includes('syncing now') && c.classList.contains('tone-ok'); }})()"
        ),
    )
    .await;
    assert!(b.same_document().await, "the overview reloaded");

    // The edit form holds the stored settings.
    b.goto(&format!("/integrations/{id}/edit")).await;
    assert_eq!(
        b.js("return document.querySelector('#name').value;", vec![])
            .await,
        json!("Stock levels")
    );
    assert_eq!(
        b.js(
            "return document.querySelector(\"[name='cfg.records']\").value;",
            vec![]
        )
        .await,
        json!("3")
    );
    // An invalid edit: the message next to its field, nothing written.
    b.fill("[name='cfg.records']", "5000000").await;
    b.click("form.intform button.primary").await;
    b.until(
        Duration::from_secs(5),
        "the connector's message next to the field",
        "document.querySelector('#err-cfg\\\\.records')?.textContent.includes('at most 1000000')",
    )
    .await;
    b.shot("41-edit-invalid").await;
    let (_, v) = app.client.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(v["config"]["records"], json!(3), "{v}");
    assert_eq!(v["name"], json!("Stock levels"), "{v}");
    let version = v["version"].as_i64().expect("version");

    // A valid edit saves, lands on the detail page and is audited with the key.
    b.fill("#name", "Stock levels (EU)").await;
    b.fill("[name='cfg.records']", "5").await;
    b.click("form.intform button.primary").await;
    b.wait_path(&format!("/integrations/{id}")).await;
    assert_eq!(
        b.js("return document.querySelector('h1').textContent;", vec![])
            .await,
        json!("Stock levels (EU)")
    );
    b.shot("42-edit-saved").await;
    let (_, v) = app.client.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(v["config"]["records"], json!(5), "{v}");
    assert_eq!(v["config"]["latencyMs"], json!(2500), "{v}");
    assert_eq!(v["name"], json!("Stock levels (EU)"), "{v}");
    assert_eq!(v["version"].as_i64(), Some(version + 1), "{v}");
    let audited = count(
        &env.db,
        "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1 AND action = 'integration.update' AND actor LIKE 'key:%'",
        vec![id.into()],
    )
    .await;
    assert_eq!(audited, 1);

    wait_idle(&env).await;
    b.close().await;
    wtoken.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Test connection keeps to the provider's fleet-wide rate limit: with one request a
/// minute allowed, the first test fetches and the second is held back, fetching nothing
/// and storing nothing.
#[tokio::test]
async fn test_connection_keeps_to_the_provider_limits() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let app = env
        .spawn_app(&[("SYNCFLEET_RATE_LIMITS", "synthetic=1/60s:1")])
        .await;
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    b.goto("/integrations/new?kind=synthetic").await;
    b.fill("#name", "rate limited source").await;
    b.fill("[name='cfg.records']", "4").await;
    b.click("form.intform button[hx-post]").await;
    b.until(
        Duration::from_secs(10),
        "the first test fetches",
        "document.querySelector('#test-result')?.textContent.includes('Fetched 4 records')",
    )
    .await;
    b.js(
        "document.querySelector('#test-result').innerHTML = '';",
        vec![],
    )
    .await;
    b.click("form.intform button[hx-post]").await;
    // The next token is a minute away, past the test's wait: it says so at once.
    b.until(
        Duration::from_secs(10),
        "the second is held back by the provider's limit",
        "(() => { const t = document.querySelector('#test-result')?.textContent || ''; return t.includes('limits hold it back') && t.includes('next request allowed in') && !t.includes('Fetched'); })()",
    )
    .await;
    b.shot("43-test-connection-limited").await;
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        0
    );
    b.close().await;
    app.stop().await;
}

/// Eight tabs of one session: every page loads and gets live updates, over one event
/// stream for all of them (a browser allows six HTTP/1.1 connections per host, so eight
/// streams of their own would leave the seventh tab unable even to load).
#[tokio::test]
async fn tabs_of_a_session_share_one_stream() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    let id = app
        .client
        .create("Manual export", "synthetic", json!({"records": 1}), None)
        .await;
    env.leaves_work(
        "no worker runs here: the first run's hint stays queued after the pause cancels it",
    );
    let mut tabs = vec![b.c.window().await.expect("window")];
    for _ in 1..8 {
        let w = b.c.new_window(true).await.expect("new tab");
        b.c.switch_to_window(w.handle.clone())
            .await
            .expect("switch");
        tabs.push(w.handle);
    }
    for t in &tabs {
        b.c.switch_to_window(t.clone()).await.expect("switch");
        b.goto("/").await;
        b.until(
            Duration::from_secs(10),
            "live updates on, through the shared stream",
            "window.sfEvents === 'shared' && document.getElementById('live-state')?.classList.contains('on')",
        )
        .await;
        b.mark().await;
    }
    let streams = || gauge(&app.url, "syncfleet_console_streams");
    assert_eq!(streams().await, 1, "eight tabs, one stream");

    // A change reaches every tab without a reload.
    let (s, v) = app
        .client
        .post(
            &format!("/api/integrations/{id}/pause"),
            &json!({"reason": "month end"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for t in &tabs {
        b.c.switch_to_window(t.clone()).await.expect("switch");
        b.until(
            Duration::from_secs(5),
            "the card turns grey in every tab",
            &format!("document.getElementById('card-{id}')?.classList.contains('tone-off')"),
        )
        .await;
        assert!(b.same_document().await, "a tab reloaded");
    }
    b.shot("44-eighth-tab").await;

    // Closing the tabs ends the stream.
    for t in tabs.iter().skip(1) {
        b.c.switch_to_window(t.clone()).await.expect("switch");
        b.c.close_window().await.expect("close tab");
    }
    b.c.switch_to_window(tabs[0].clone()).await.expect("switch");
    // Log out: the login page holds no stream. (Going to /login while logged in is sent
    // back to the overview, which keeps the stream, rightly.)
    b.click(".who form button").await;
    b.wait_path("/login").await;
    // The server notices a closed stream at a write: the second 5 s keep-alive after
    // the close at the latest.
    eventually(Duration::from_secs(25), "no stream left", || async {
        (streams().await == 0).then_some(())
    })
    .await;
    b.close().await;
    app.stop().await;
}

/// What the test receiver got: each request's headers and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A local webhook receiver answering 200 to every POST; returns its URL.
async fn webhook_receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    g.lock().unwrap().push((headers, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), got, server)
}

/// Whether a received webhook is signed with `secret` (as a receiver checks it).
fn signed_with(headers: &axum::http::HeaderMap, body: &[u8], secret: &str) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    syncfleet_worker::notifications::sign::verify(
        secret,
        h("webhook-id"),
        ts,
        body,
        h("webhook-signature"),
        chrono::Utc::now().timestamp(),
    )
    .is_ok()
}

/// The Notifications page: add an endpoint (its secret shown once, and it is the one
/// that signs), send a test and watch its delivery succeed, rotate the secret (a new
/// one, shown once, signing beside the old); a viewer sees it all read-only.
#[tokio::test]
async fn notifications_page_adds_tests_and_rotates_an_endpoint() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let (hook, received, server) = webhook_receiver().await;
    let private = [("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")];
    let app = env.spawn_app(&private).await;
    let (wtoken, worker) = env.spawn_worker(&private);
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    b.goto("/notifications").await;
    assert_eq!(
        b.js(
            "return document.querySelector('header.top nav a[aria-current=page]')?.getAttribute('href');",
            vec![]
        )
        .await,
        json!("/notifications")
    );

    // An invalid URL: the API's message next to the field, nothing written.
    b.fill("#ep-url", "ftp://example.com/hook").await;
    b.htmx_click("document.querySelector('#add-endpoint button.primary')")
        .await;
    b.until(
        Duration::from_secs(5),
        "the message next to the URL",
        "document.querySelector('#err-url')?.textContent.includes('not http or https')",
    )
    .await;
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM notification_endpoints",
            vec![]
        )
        .await,
        0
    );

    // Add it: the secret is shown once, in its box.
    b.fill("#ep-url", &hook).await;
    b.fill("#ep-description", "on-call <b>channel</b>").await;
    b.click("#add-endpoint input[value='integration.disabled']")
        .await;
    b.htmx_click("document.querySelector('#add-endpoint button.primary')")
        .await;
    let secret = b
        .until(
            Duration::from_secs(5),
            "the secret, shown once",
            "(() => { const box = document.querySelector('#add-endpoint .secret-once'); return box && box.textContent.includes('not shown again') && box.querySelector('.secret-value')?.textContent.trim(); })()",
        )
        .await;
    let secret = secret.as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id = b
        .until(
            Duration::from_secs(5),
            "the endpoint in the table",
            &format!(
                "[...document.querySelectorAll('#endpoints tr.endpoint')].find(r => r.querySelector('.url')?.textContent === {hook:?})?.dataset.id"
            ),
        )
        .await;
    let id = Uuid::parse_str(id.as_str().expect("endpoint id")).expect("uuid");
    assert_eq!(
        b.js(&format!("return document.querySelector('#endpoint-{id}').textContent.includes('integration.disabled') && document.querySelector('#endpoint-{id}').textContent.includes('on-call <b>channel</b>');"), vec![]).await,
        json!(true)
    );
    b.shot("50-notifications-added").await;
    // Once: a reload shows it nowhere.
    b.goto("/notifications").await;
    assert_eq!(
        b.js(
            "return document.documentElement.outerHTML.includes(arguments[0]);",
            vec![json!(secret)]
        )
        .await,
        json!(false),
        "the secret is shown again"
    );

    // Send test: the delivery turns succeeded without a reload, signed with that secret.
    b.mark().await;
    b.htmx_click(&format!(
        "document.querySelector('#endpoint-{id} button[data-action=test]')"
    ))
    .await;
    b.until(
        Duration::from_secs(5),
        "the test toast",
        "document.querySelector('#toasts .toast.ok')?.textContent.includes('Test sent')",
    )
    .await;
    b.until(
        Duration::from_secs(15),
        "the test delivery succeeded",
        "document.querySelector('#deliveries tr.delivery[data-event=test][data-status=succeeded]')",
    )
    .await;
    assert!(b.same_document().await, "the page reloaded");
    assert_eq!(
        b.js(
            "return document.querySelector('#deliveries tr.delivery[data-event=test] td:nth-child(5)').textContent.trim();",
            vec![]
        )
        .await,
        json!("200")
    );
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 1, "one test webhook");
        assert!(
            signed_with(&got[0].0, &got[0].1, &secret),
            "the shown secret signs"
        );
    }
    b.js(
        "document.querySelector('#deliveries').scrollIntoView({block: 'center'});",
        vec![],
    )
    .await;
    b.shot("51-notifications-test-delivered").await;

    // Rotate: a new secret, shown once; the next delivery is signed with both.
    b.htmx_click(&format!(
        "document.querySelector('#endpoint-{id} button[data-action=rotate]')"
    ))
    .await;
    let rotated = b
        .until(
            Duration::from_secs(5),
            "the new secret",
            "(() => { const box = document.querySelector('#secret-slot .secret-once'); return box && box.textContent.includes('not shown again') && box.querySelector('.secret-value')?.textContent.trim(); })()",
        )
        .await;
    let rotated = rotated.as_str().expect("new secret").to_owned();
    assert!(
        rotated.starts_with("whsec_") && rotated != secret,
        "{rotated}"
    );
    b.until(
        Duration::from_secs(5),
        "the previous secret's grace in the table",
        &format!("document.querySelector('#endpoint-{id}')?.textContent.includes('previous secret still signs')"),
    )
    .await;
    b.shot("52-notifications-rotated").await;
    b.htmx_click(&format!(
        "document.querySelector('#endpoint-{id} button[data-action=test]')"
    ))
    .await;
    b.until(
        Duration::from_secs(15),
        "the second test delivery succeeded",
        "document.querySelectorAll('#deliveries tr.delivery[data-event=test][data-status=succeeded]').length === 2",
    )
    .await;
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 2, "two test webhooks");
        assert!(
            signed_with(&got[1].0, &got[1].1, &rotated),
            "the new secret signs"
        );
        assert!(
            signed_with(&got[1].0, &got[1].1, &secret),
            "the old one too, in its grace"
        );
    }
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM audit_events WHERE actor LIKE 'key:%' AND action IN \
             ('notification_endpoint.create', 'notification_endpoint.rotate_secret')",
            vec![]
        )
        .await,
        2
    );

    // A viewer sees the endpoint and its deliveries, and no form or button.
    let (s, v) = app
        .client
        .post("/api/keys", &json!({"name": "wallboard", "role": "viewer"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let viewer_key = v["key"].as_str().unwrap().to_owned();
    b.click(".who form button").await;
    b.wait_path("/login").await;
    b.login(&viewer_key).await;
    b.goto("/notifications").await;
    b.until(
        Duration::from_secs(5),
        "the endpoint and its deliveries",
        &format!("document.getElementById('endpoint-{id}') && document.querySelectorAll('#deliveries tr.delivery').length === 2"),
    )
    .await;
    assert_eq!(
        b.js(
            "return document.querySelectorAll('main button, main form, #add-endpoint').length;",
            vec![]
        )
        .await,
        json!(0),
        "a viewer sees write controls"
    );
    let token = b.csrf().await;
    assert_eq!(
        post_status(
            &b,
            &format!("/notifications/endpoints/{id}/test"),
            Some(&token)
        )
        .await,
        403
    );
    b.shot("53-notifications-viewer").await;

    b.close().await;
    wtoken.cancel();
    let _ = worker.await;
    app.stop().await;
    server.abort();
}

/// A stale integration (no success within its freshness objective) shows on the
/// overview (an amber card with a Stale badge, the stale count, the stale filter), on
/// the Failures page, and on its detail page with its objective and staleness.
#[tokio::test]
async fn stale_integrations_show_on_the_overview_failures_and_detail() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    env.leaves_work("no worker runs here: the first runs stay queued, so nothing succeeds");
    let app = env.spawn_app(&[("SYNCFLEET_NOTIFY_PUMP_MS", "100")]).await;
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    let (s, v) = app
        .client
        .post(
            "/api/integrations",
            &json!({"name": "Never fresh", "kind": "synthetic", "config": {}, "syncInterval": 3600, "staleAfter": 1}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
    let fresh = app
        .client
        .create("Fresh enough", "synthetic", json!({}), Some(3600))
        .await;
    eventually(
        Duration::from_secs(10),
        "the objective breached",
        || async {
            (count(
                &env.db,
                "SELECT COUNT(*) FROM integrations WHERE id = $1 AND stale_since IS NOT NULL",
                vec![id.into()],
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;

    b.goto("/").await;
    b.until(
        Duration::from_secs(5),
        "an amber card with a Stale badge",
        &format!("(() => {{ const c = document.getElementById('card-{id}'); return c && c.dataset.stale === '1' && c.classList.contains('tone-warn') && c.querySelector('.badge.stale'); }})()"),
    )
    .await;
    assert_eq!(
        b.js(&format!("return !document.getElementById('card-{fresh}').dataset.stale && !document.querySelector('#card-{fresh} .badge.stale');"), vec![]).await,
        json!(true)
    );
    b.until(
        Duration::from_secs(5),
        "the stale count",
        "document.querySelector('#counts .count.stale')?.textContent.trim() === '1 stale'",
    )
    .await;
    b.shot("60-overview-stale").await;
    b.goto("/?health=stale").await;
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('#list article.icard')].map(c => c.id);",
            vec![]
        )
        .await,
        json!([format!("card-{id}")])
    );

    b.goto("/failures").await;
    b.until(
        Duration::from_secs(5),
        "listed as stale",
        &format!("document.querySelector('#stale-{id}')?.textContent.includes('without a successful sync')"),
    )
    .await;
    assert_eq!(
        b.js(
            &format!("return !document.getElementById('stale-{fresh}');"),
            vec![]
        )
        .await,
        json!(true)
    );
    b.shot("61-failures-stale").await;

    b.goto(&format!("/integrations/{id}")).await;
    b.until(
        Duration::from_secs(5),
        "the stale badge",
        "document.querySelector('#stale-badge')",
    )
    .await;
    let objective = b
        .js(
            "return document.querySelector('#stale-after').textContent;",
            vec![],
        )
        .await;
    let objective = objective.as_str().unwrap();
    assert!(
        objective.contains("1 s") && !objective.contains("default"),
        "{objective}"
    );
    let staleness = b
        .js(
            "return document.querySelector('#staleness').textContent;",
            vec![],
        )
        .await;
    assert!(
        staleness.as_str().unwrap().contains("since it was created"),
        "{staleness}"
    );
    b.shot("62-detail-stale").await;
    b.goto(&format!("/integrations/{fresh}")).await;
    let objective = b
        .js(
            "return document.querySelector('#stale-after').textContent;",
            vec![],
        )
        .await;
    assert!(
        objective
            .as_str()
            .unwrap()
            .contains("(default: twice the interval plus the lease)"),
        "{objective}"
    );
    assert_eq!(
        b.js("return !document.querySelector('#stale-badge');", vec![])
            .await,
        json!(true)
    );

    b.close().await;
    app.stop().await;
}

/// A manual-only http_json integration whose push target is `cloud` (strategy manual).
async fn push_integration(c: &tests::ApiClient, cloud: &FakeCloud, name: &str) -> Uuid {
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({
                "name": name, "kind": "http_json", "syncEnabled": false,
                "config": {
                    "url": format!("{}/items", cloud.url), "recordsPointer": "/items", "idPointer": "/id",
                    "push": { "url": format!("{}/items/{{externalId}}", cloud.url),
                              "versionPointer": "/version", "idPointer": "/id", "conflictPointer": "/current" }
                }
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    Uuid::parse_str(v["id"].as_str().expect("id")).expect("uuid")
}

/// Waits until `n` records of integration `id` are in sync state `state`.
async fn records_in(env: &tests::TestEnv, id: Uuid, state: &str, n: i64) {
    eventually(
        Duration::from_secs(20),
        &format!("{n} records {state}"),
        || async {
            (count(
                &env.db,
                "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND sync_state = $2",
                vec![id.into(), state.into()],
            )
            .await
                == n)
                .then_some(())
        },
    )
    .await;
}

/// A record's data and sync state, read through the API.
async fn record_of(c: &tests::ApiClient, id: Uuid, ext: &str) -> Value {
    let (_, page) = c
        .get(&format!(
            "/api/integrations/{id}/records?pageSize=500&includeDeleted=true"
        ))
        .await;
    page["records"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["externalId"] == ext).cloned())
        .unwrap_or_else(|| panic!("no record {ext}: {page}"))
}

/// A form POST from the page (the session's cookie) with `body`; its status.
async fn post_form(b: &Browser, path: &str, csrf: Option<&str>, body: &str) -> u16 {
    let v = b
        .js_async(
            "const [p, t, body, done] = [arguments[0], arguments[1], arguments[2], arguments[arguments.length - 1]];
             const h = {'content-type': 'application/x-www-form-urlencoded'};
             if (t) h['X-CSRF-Token'] = t;
             fetch(p, {method: 'POST', headers: h, body}).then(r => done(r.status), () => done(0));",
            vec![json!(path), json!(csrf), json!(body)],
        )
        .await;
    v.as_u64().unwrap_or(0) as u16
}

async fn conflict_id(env: &tests::TestEnv, ext: &str) -> Uuid {
    let rows = q::query(
        &env.db,
        "SELECT id FROM conflicts WHERE external_id = $1 ORDER BY detected_at DESC LIMIT 1",
        [ext.into()],
    )
    .await
    .expect("conflict");
    rows.first()
        .map(|r| r.try_get::<Uuid>("", "id").expect("id"))
        .expect("a conflict")
}

/// The statuses of a record's outbox entries, oldest first.
async fn entries_of(env: &tests::TestEnv, ext: &str) -> Vec<String> {
    crate::util::strings(
        &env.db,
        "SELECT status FROM outbox WHERE external_id = $1 ORDER BY created_at, id",
        vec![ext.into()],
    )
    .await
}

/// Conflicts found by a real push (the cloud changed the records, then answered the
/// local changes 412) are resolved each way through the Conflicts page: Keep local
/// (pushed over the cloud's version), Keep cloud (the held push dropped), Merge with
/// edited JSON (bad JSON and a non-object refused at the editor first); the copies are
/// side by side with the differing fields highlighted; resolved ones are listed under
/// their filter; a viewer sees no controls and a forged resolve is refused.
#[tokio::test]
async fn conflicts_resolved_each_way_in_the_browser() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let cloud = FakeCloud::start().await;
    let app = env.spawn_app(PUSH).await;
    let (wtoken, worker) = env.spawn_worker(PUSH);
    let c = &app.client;
    let id = push_integration(c, &cloud, "Outlet 12 sales").await;
    let records = ["keep-local", "keep-cloud", "merge-me", "held"];
    let base = json!({ "item": "Widget", "qty": 1, "price": 10 });
    batch(
        c,
        id,
        records
            .iter()
            .map(|r| json!({ "op": "put", "externalId": r, "data": base }))
            .collect(),
    )
    .await;
    records_in(&env, id, "synced", 4).await;
    // The cloud changes them behind our back (version 2), then we change them here: the
    // pushes carry `If-Match: 1`, the cloud answers 412 with its copy (its data with its
    // `id`, `version` and `updatedAt`), and the manual strategy holds each record.
    let changed = json!({ "item": "Widget", "qty": 1, "price": 12, "color": "red" });
    const CLOUD_TIME: &str = "2026-01-01T00:00:00Z";
    cloud.set(|cl| {
        for r in records {
            cl.change(r, changed.clone(), CLOUD_TIME);
        }
    });
    let at_cloud = |r: &str| {
        let mut v = changed.clone();
        v["id"] = json!(r);
        v["version"] = json!(2);
        v["updatedAt"] = json!(CLOUD_TIME);
        v
    };
    batch(
        c,
        id,
        records
            .iter()
            .map(|r| json!({ "op": "patch", "externalId": r, "data": { "qty": 5 } }))
            .collect(),
    )
    .await;
    records_in(&env, id, "conflict", 4).await;
    let local = json!({ "item": "Widget", "qty": 5, "price": 10 });
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM conflicts WHERE status = 'open' AND source = 'push'",
            vec![]
        )
        .await,
        4
    );
    assert_eq!(entries_of(&env, "keep-local").await, ["pushed", "conflict"]);
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;

    // The list, and the open count in the navigation.
    b.goto("/conflicts").await;
    b.until(
        Duration::from_secs(5),
        "four open conflicts",
        "document.querySelectorAll('#conflicts tr.conflict[data-status=open]').length === 4",
    )
    .await;
    b.until(
        Duration::from_secs(5),
        "the open count in the navigation",
        "document.querySelector('#nav-count-conflicts')?.dataset.count === '4'",
    )
    .await;
    assert_eq!(
        b.js(
            "return document.querySelector('header.top nav a[aria-current=page]')?.getAttribute('href');",
            vec![]
        )
        .await,
        json!("/conflicts")
    );
    b.shot("70-conflicts-open").await;

    // Side by side, the differing top-level fields highlighted.
    let keep_local = conflict_id(&env, "keep-local").await;
    b.goto(&format!("/conflicts/{keep_local}")).await;
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('table.compare tr.diff')].map(r => r.dataset.field);",
            vec![]
        )
        .await,
        json!(["color", "id", "price", "qty", "updatedAt", "version"])
    );
    assert_eq!(
        b.js(
            "const r = document.querySelector('table.compare tr[data-field=item]'); return [r.classList.contains('diff'), r.querySelector('td.local').textContent, r.querySelector('td.cloud').textContent];",
            vec![]
        )
        .await,
        json!([false, "\"Widget\"", "\"Widget\""])
    );
    assert_eq!(
        b.js(
            "const r = document.querySelector('table.compare tr[data-field=qty]'); return [r.querySelector('td.local').textContent, r.querySelector('td.cloud').textContent];",
            vec![]
        )
        .await,
        json!(["5", "1"])
    );
    assert_eq!(
        b.js(
            "return document.querySelector('table.compare tr[data-field=color] td.local').textContent;",
            vec![]
        )
        .await,
        json!("absent")
    );
    b.shot("71-conflict-side-by-side").await;

    // Keep local: pushed over the cloud's version 2.
    b.js("window.confirm = () => true;", vec![]).await;
    b.htmx_submit("document.querySelector('#keep-local')").await;
    b.until(
        Duration::from_secs(5),
        "resolved: kept local",
        "document.querySelector('#conflict[data-status=resolved][data-resolution=local] #resolved')",
    )
    .await;
    b.shot("72-conflict-kept-local").await;
    eventually(Duration::from_secs(20), "keep-local pushed", || async {
        let r = record_of(c, id, "keep-local").await;
        (r["syncState"] == "synced").then_some(r)
    })
    .await;
    let r = record_of(c, id, "keep-local").await;
    assert_eq!(r["data"], local, "{r}");
    assert_eq!(
        cloud.get(|cl| cl.items["keep-local"].clone()),
        (local.clone(), 3),
        "the local copy at the cloud, over version 2"
    );
    assert_eq!(entries_of(&env, "keep-local").await, ["pushed", "pushed"]);

    // Keep cloud: the cloud's copy here, the held push dropped, nothing sent.
    let keep_cloud = conflict_id(&env, "keep-cloud").await;
    b.goto(&format!("/conflicts/{keep_cloud}")).await;
    b.js("window.confirm = () => true;", vec![]).await;
    b.htmx_submit("document.querySelector('#keep-cloud')").await;
    b.until(
        Duration::from_secs(5),
        "resolved: kept cloud",
        "document.querySelector('#conflict[data-status=resolved][data-resolution=cloud]')",
    )
    .await;
    let r = record_of(c, id, "keep-cloud").await;
    assert_eq!(r["data"], at_cloud("keep-cloud"), "{r}");
    assert_eq!(r["syncState"], "synced", "{r}");
    assert_eq!(r["cloudVersion"], "2", "{r}");
    assert_eq!(
        entries_of(&env, "keep-cloud").await,
        ["pushed", "superseded"]
    );
    assert_eq!(
        cloud.get(|cl| cl.items["keep-cloud"].1),
        2,
        "nothing pushed for keep-cloud"
    );

    // Merge: the editor holds the local copy plus the cloud's other fields; bad JSON
    // and a non-object are refused at the editor, writing nothing.
    let merge = conflict_id(&env, "merge-me").await;
    b.goto(&format!("/conflicts/{merge}")).await;
    let draft = b
        .js(
            "return JSON.parse(document.querySelector('#merged').value);",
            vec![],
        )
        .await;
    assert_eq!(
        draft,
        json!({ "item": "Widget", "qty": 5, "price": 10, "color": "red", "id": "merge-me", "version": 2, "updatedAt": CLOUD_TIME })
    );
    b.fill("#merged", "{\"item\": \"Widget\", \"qty\": 5,")
        .await;
    b.htmx_submit("document.querySelector('#merge')").await;
    b.until(
        Duration::from_secs(5),
        "the JSON error at the editor",
        "document.querySelector('#err-merged')?.textContent.includes('not valid JSON')",
    )
    .await;
    b.shot("73-conflict-merge-bad-json").await;
    b.fill("#merged", "[1, 2]").await;
    b.htmx_submit("document.querySelector('#merge')").await;
    b.until(
        Duration::from_secs(5),
        "the object error at the editor",
        "document.querySelector('#err-merged')?.textContent.includes('must be a JSON object') && document.querySelector('#err-merged').textContent.includes('not an array')",
    )
    .await;
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM conflicts WHERE id = $1 AND status = 'open'",
            vec![merge.into()]
        )
        .await,
        1,
        "a refused merge resolved the conflict"
    );
    let merged = json!({ "item": "Widget", "qty": 5, "price": 12, "color": "red", "note": "merged <b>by hand</b>" });
    b.fill("#merged", &merged.to_string()).await;
    b.htmx_submit("document.querySelector('#merge')").await;
    b.until(
        Duration::from_secs(5),
        "resolved: merged",
        "document.querySelector('#conflict[data-status=resolved][data-resolution=merged]')",
    )
    .await;
    b.shot("74-conflict-merged").await;
    eventually(Duration::from_secs(20), "merge-me pushed", || async {
        let r = record_of(c, id, "merge-me").await;
        (r["syncState"] == "synced").then_some(r)
    })
    .await;
    assert_eq!(record_of(c, id, "merge-me").await["data"], merged);
    assert_eq!(
        cloud.get(|cl| cl.items["merge-me"].clone()),
        (merged.clone(), 3)
    );
    // The held change superseded by the merged one, which was pushed.
    assert_eq!(
        entries_of(&env, "merge-me").await,
        ["pushed", "superseded", "pushed"]
    );
    let (_, v) = c.get(&format!("/api/sync/conflicts/{merge}")).await;
    assert_eq!(
        (v["status"].as_str(), v["resolution"].as_str()),
        (Some("resolved"), Some("merged")),
        "{v}"
    );
    assert!(
        v["resolvedBy"]
            .as_str()
            .is_some_and(|k| k.starts_with("key:")),
        "{v}"
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'conflict.resolve' AND actor LIKE 'key:%'",
            vec![]
        )
        .await,
        3
    );

    // Resolved ones under their filter; one left open, and the count follows.
    b.goto("/conflicts?status=resolved").await;
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('#conflicts tr.conflict')].map(r => r.dataset.record + ':' + r.dataset.resolution).sort();",
            vec![]
        )
        .await,
        json!(["keep-cloud:cloud", "keep-local:local", "merge-me:merged"])
    );
    b.shot("75-conflicts-resolved").await;
    b.goto("/conflicts").await;
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('#conflicts tr.conflict')].map(r => r.dataset.record);",
            vec![]
        )
        .await,
        json!(["held"])
    );
    b.until(
        Duration::from_secs(5),
        "one open in the navigation",
        "document.querySelector('#nav-count-conflicts')?.dataset.count === '1'",
    )
    .await;

    // The records preview shows each record's sync state and filters by it.
    b.goto(&format!("/integrations/{id}")).await;
    assert_eq!(
        b.js(
            "return Object.fromEntries([...document.querySelectorAll('#records tr.record')].map(r => [r.dataset.id, r.querySelector('[data-sync-state]').dataset.syncState]));",
            vec![]
        )
        .await,
        json!({ "held": "conflict", "keep-cloud": "synced", "keep-local": "synced", "merge-me": "synced" })
    );
    b.goto(&format!("/integrations/{id}?syncState=conflict"))
        .await;
    assert_eq!(
        b.js(
            "return [[...document.querySelectorAll('#records tr.record')].map(r => r.dataset.id), document.querySelector('#records a[data-filter=conflict]').getAttribute('aria-current'), document.querySelector('#records a[data-filter=conflict]').dataset.count];",
            vec![]
        )
        .await,
        json!([["held"], "page", "1"])
    );
    b.js(
        "document.querySelector('#records').scrollIntoView({block: 'center'});",
        vec![],
    )
    .await;
    b.shot("76-detail-records-sync-state").await;

    // A viewer sees both copies and no control; a forged resolve is refused.
    let (s, v) = c
        .post("/api/keys", &json!({"name": "wallboard", "role": "viewer"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let viewer_key = v["key"].as_str().unwrap().to_owned();
    b.click(".who form button").await;
    b.wait_path("/login").await;
    b.login(&viewer_key).await;
    let held = conflict_id(&env, "held").await;
    b.goto(&format!("/conflicts/{held}")).await;
    assert_eq!(
        b.js(
            "return [document.querySelectorAll('table.compare tr.diff').length, document.querySelectorAll('main button, main form, main textarea').length];",
            vec![]
        )
        .await,
        json!([6, 0]),
        "a viewer sees write controls"
    );
    b.shot("77-conflict-viewer").await;
    let token = b.csrf().await;
    assert_eq!(
        post_form(
            &b,
            &format!("/conflicts/{held}/resolve"),
            Some(&token),
            "resolution=cloud"
        )
        .await,
        403
    );
    assert_eq!(
        post_form(
            &b,
            &format!("/conflicts/{held}/resolve"),
            None,
            "resolution=cloud"
        )
        .await,
        403
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM conflicts WHERE id = $1 AND status = 'open'",
            vec![held.into()]
        )
        .await,
        1,
        "the viewer resolved it"
    );

    b.close().await;
    wtoken.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// The Outbox page: pending, pushing, failed and held counts and the oldest pending
/// age, per integration; failed pushes with the cloud's error; Retry makes one pending
/// again (and it reaches the cloud when the cloud is back), and closes one the record
/// has moved on from without pushing it; the records preview filters by sync state; a
/// viewer sees no Retry and a forged retry is refused.
#[tokio::test]
async fn outbox_page_counts_and_retries_failed_pushes() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    env.leaves_work("a change waits for a push target that is never configured");
    let cloud = FakeCloud::start().await;
    cloud.set(|cl| {
        cl.refuse.insert("bad-1".into(), 400);
        cl.refuse.insert("bad-2".into(), 422);
    });
    let app = env.spawn_app(PUSH).await;
    let (wtoken, worker) = env.spawn_worker(PUSH);
    let c = &app.client;
    let id = push_integration(c, &cloud, "Outlet 7 tills").await;
    // No push target: its change waits (retried without limit), and ages.
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({ "name": "Back office", "kind": "http_json", "syncEnabled": false,
                     "config": { "url": format!("{}/items", cloud.url), "recordsPointer": "/items", "idPointer": "/id" } }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let waiting = Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
    batch(
        c,
        waiting,
        vec![json!({ "op": "put", "externalId": "w-1", "data": { "n": 1 } })],
    )
    .await;
    batch(
        c,
        id,
        ["ok-1", "bad-1", "bad-2"]
            .iter()
            .map(|r| json!({ "op": "put", "externalId": r, "data": { "till": r } }))
            .collect(),
    )
    .await;
    records_in(&env, id, "synced", 1).await;
    records_in(&env, id, "failed", 2).await;
    let entry = |ext: &'static str| {
        let db = env.db.clone();
        async move {
            let rows = q::query(
                &db,
                "SELECT id FROM outbox WHERE external_id = $1 AND status = 'failed'",
                [ext.into()],
            )
            .await
            .expect("entry");
            rows.first()
                .map(|r| r.try_get::<Uuid>("", "id").expect("id"))
                .expect("a failed entry")
        }
    };
    let (bad1, bad2) = (entry("bad-1").await, entry("bad-2").await);
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    b.goto("/outbox").await;
    let pending = "Number(document.querySelector('#outbox-pending').dataset.count) + Number(document.querySelector('#outbox-pushing').dataset.count)";
    assert_eq!(
        b.js(
            &format!("return [document.querySelector('#outbox-failed').dataset.count, {pending}, document.querySelector('#outbox-held').dataset.count];"),
            vec![]
        )
        .await,
        json!(["2", 1, "0"])
    );
    b.until(
        Duration::from_secs(5),
        "the oldest pending age",
        "document.querySelector('#outbox-oldest').dataset.seconds !== undefined",
    )
    .await;
    let row = b
        .js(
            &format!("const r = document.querySelector('#outbox-entry-{bad1}'); return r && [...r.querySelectorAll('td')].map(td => td.textContent.trim());"),
            vec![],
        )
        .await;
    let cells: Vec<String> = serde_json::from_value(row.clone()).expect("row cells");
    assert_eq!(cells[0], "Outlet 7 tills", "{row}");
    assert_eq!(cells[1], "bad-1", "{row}");
    assert_eq!(cells[2], "upsert", "{row}");
    assert!(
        cells[3].contains("400") && cells[3].contains("HTTP 400"),
        "{row}"
    );
    assert_eq!(cells[4], "1", "{row}");
    assert!(cells[6].contains("failed"), "{row}");
    assert!(
        b.js(
            &format!("return !!document.querySelector('#outbox-entry-{bad2}');"),
            vec![]
        )
        .await
            == json!(true)
    );
    assert_eq!(
        b.js(
            &format!("const a = document.querySelector('#outbox-int-{id}').dataset, w = document.querySelector('#outbox-int-{waiting}').dataset; return [a.failed, Number(w.pending) + Number(w.pushing)];"),
            vec![]
        )
        .await,
        json!(["2", 1])
    );
    b.shot("80-outbox").await;
    b.goto(&format!("/integrations/{id}?syncState=failed"))
        .await;
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('#records tr.record')].map(r => r.dataset.id + ':' + r.dataset.syncState);",
            vec![]
        )
        .await,
        json!(["bad-1:failed", "bad-2:failed"])
    );

    // A viewer: the same counts, no Retry, and a forged retry is refused.
    let (s, v) = c
        .post("/api/keys", &json!({"name": "wallboard", "role": "viewer"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let viewer_key = v["key"].as_str().unwrap().to_owned();
    b.click(".who form button").await;
    b.wait_path("/login").await;
    b.login(&viewer_key).await;
    b.goto("/outbox").await;
    assert_eq!(
        b.js(
            "return [document.querySelectorAll('tr.failed-push').length, document.querySelectorAll('main button').length];",
            vec![]
        )
        .await,
        json!([2, 0]),
        "a viewer sees Retry"
    );
    let token = b.csrf().await;
    assert_eq!(
        post_form(&b, &format!("/outbox/{bad1}/retry"), Some(&token), "").await,
        403
    );
    assert_eq!(entries_of(&env, "bad-1").await, ["failed"]);
    b.click(".who form button").await;
    b.wait_path("/login").await;

    // Retry with the cloud down: pending again (from zero attempts), and failed no more.
    b.login(&env.admin_token()).await;
    cloud.set(|cl| {
        cl.refuse.clear();
        cl.up = false;
    });
    b.goto("/outbox").await;
    b.mark().await;
    b.htmx_click(&format!(
        "document.querySelector('#outbox-entry-{bad1} button[data-action=retry]')"
    ))
    .await;
    b.until(
        Duration::from_secs(5),
        "the retry toast",
        "document.querySelector('#toasts .toast.ok')?.textContent.includes('pending again')",
    )
    .await;
    b.until(
        Duration::from_secs(5),
        "the failed push gone from the list, counted as pending",
        &format!(
            "!document.querySelector('#outbox-entry-{bad1}') && document.querySelector('#outbox-failed').dataset.count === '1' && ({pending}) === 2"
        ),
    )
    .await;
    assert!(b.same_document().await, "the outbox page reloaded");
    b.shot("81-outbox-retried").await;
    assert_eq!(entries_of(&env, "bad-1").await, ["pending"]);
    let st = record_of(c, id, "bad-1").await["syncState"].clone();
    assert!(st == "pending" || st == "pushing", "{st}");
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'outbox.retry' AND actor LIKE 'key:%' AND integration_id = $1",
            vec![id.into()]
        )
        .await,
        1
    );
    // The cloud back: the retried change reaches it.
    cloud.set(|cl| cl.up = true);
    eventually(Duration::from_secs(20), "bad-1 pushed", || async {
        (record_of(c, id, "bad-1").await["syncState"] == "synced").then_some(())
    })
    .await;
    assert_eq!(
        cloud.get(|cl| cl.items.get("bad-1").map(|(d, _)| d.clone())),
        Some(json!({ "till": "bad-1" }))
    );
    assert_eq!(entries_of(&env, "bad-1").await, ["pushed"]);

    // A newer change of bad-2 went through meanwhile: retrying the old failure closes it
    // and pushes nothing stale.
    batch(
        c,
        id,
        vec![json!({ "op": "put", "externalId": "bad-2", "data": { "till": "bad-2", "v": 2 } })],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "bad-2's newer change pushed",
        || async { (record_of(c, id, "bad-2").await["syncState"] == "synced").then_some(()) },
    )
    .await;
    let applied = cloud.get(|cl| cl.applied_to("bad-2"));
    b.goto("/outbox").await;
    b.htmx_click(&format!(
        "document.querySelector('#outbox-entry-{bad2} button[data-action=retry]')"
    ))
    .await;
    b.until(
        Duration::from_secs(5),
        "the closing toast",
        "document.querySelector('#toasts .toast.ok')?.textContent.includes('nothing stale was pushed')",
    )
    .await;
    b.until(
        Duration::from_secs(5),
        "no failed push left",
        "document.querySelector('#outbox-failed').dataset.count === '0' && !document.querySelector('tr.failed-push')",
    )
    .await;
    assert_eq!(entries_of(&env, "bad-2").await, ["superseded", "pushed"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cloud.get(|cl| cl.applied_to("bad-2")),
        applied,
        "the stale change was pushed"
    );
    assert_eq!(
        cloud.get(|cl| cl.items["bad-2"].0.clone()),
        json!({ "till": "bad-2", "v": 2 })
    );
    // Retrying it again: it is no longer failed.
    let (s, v) = c
        .post(&format!("/api/sync/outbox/{bad2}/retry"), &json!({}))
        .await;
    assert_eq!(s, 409, "{v}");

    b.close().await;
    wtoken.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// The integration form's conflict strategy: chosen at create, shown and changed at
/// edit, through the API's own create and update; a value the API refuses is shown at
/// the select and nothing is written.
#[tokio::test]
async fn conflict_strategy_select_round_trips() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let Some(b) = Browser::start(&app.url).await else {
        return;
    };
    b.login(&env.admin_token()).await;
    b.goto("/integrations/new?kind=synthetic").await;
    assert_eq!(
        b.js(
            "return document.querySelector('#conflict_strategy').value;",
            vec![]
        )
        .await,
        json!("manual"),
        "manual by default"
    );
    b.fill("#name", "Till sales").await;
    b.c.find(Locator::Css("#interval"))
        .await
        .expect("interval")
        .select_by_value("manual")
        .await
        .expect("select interval");
    b.click("input[name=enabled]").await;
    b.c.find(Locator::Css("#conflict_strategy"))
        .await
        .expect("strategy")
        .select_by_value("cloud_wins")
        .await
        .expect("select strategy");
    b.click("form.intform button.primary").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let url = b.c.current_url().await.expect("url");
        if let Some(id) = url
            .path()
            .strip_prefix("/integrations/")
            .and_then(|s| Uuid::parse_str(s).ok())
        {
            break id;
        }
        assert!(Instant::now() < deadline, "no redirect after create: {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, v) = app.client.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(v["conflictStrategy"], "cloud_wins", "{v}");

    b.goto(&format!("/integrations/{id}/edit")).await;
    assert_eq!(
        b.js(
            "return document.querySelector('#conflict_strategy').value;",
            vec![]
        )
        .await,
        json!("cloud_wins")
    );
    // A value the API refuses: its message at the select, nothing written.
    b.js(
        "const s = document.querySelector('#conflict_strategy'); s.options[0].value = 'bogus'; s.value = 'bogus';",
        vec![],
    )
    .await;
    b.click("form.intform button.primary").await;
    b.until(
        Duration::from_secs(5),
        "the API's message at the select",
        "document.querySelector('#err-conflict_strategy')?.textContent.includes('must be cloud_wins, local_wins, newest_wins or manual')",
    )
    .await;
    b.shot("90-strategy-invalid").await;
    let (_, v) = app.client.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(v["conflictStrategy"], "cloud_wins", "{v}");
    b.goto(&format!("/integrations/{id}/edit")).await;
    b.c.find(Locator::Css("#conflict_strategy"))
        .await
        .expect("strategy")
        .select_by_value("newest_wins")
        .await
        .expect("select strategy");
    b.click("form.intform button.primary").await;
    b.wait_path(&format!("/integrations/{id}")).await;
    let (_, v) = app.client.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(v["conflictStrategy"], "newest_wins", "{v}");
    b.goto(&format!("/integrations/{id}/edit")).await;
    assert_eq!(
        b.js(
            "return document.querySelector('#conflict_strategy').value;",
            vec![]
        )
        .await,
        json!("newest_wins")
    );
    b.close().await;
    app.stop().await;
}
