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
use tests::env::skip_or_fail;
use tests::test_env;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
