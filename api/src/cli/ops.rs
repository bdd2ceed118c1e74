//! Operator commands: clients of the HTTP API for people without curl. Readable tables
//! by default, `--json` for scripts; any error is one line on stderr and exit code 1.

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Where and as whom to talk to the API.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// API base URL.
    #[arg(
        long,
        env = "SYNCFLEET_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key (`sf_…`).
    #[arg(long, env = "SYNCFLEET_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCmd {
    /// List integrations.
    List {
        /// Only this connector kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only this health (`healthy`, `degraded`, `at_risk`, `disabled`, `paused`).
        #[arg(long)]
        health: Option<String>,
        /// At most this many (1–500).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Set the sync interval in seconds (`0` = manual syncs only).
    SetInterval { id: String, seconds: u64 },
}

/// A failed command: the message printed, exit code 1.
#[derive(Debug)]
pub struct OpsError(pub String);

type Result<T> = std::result::Result<T, OpsError>;

pub struct Client {
    conn: Conn,
    http: reqwest::Client,
}

impl Client {
    pub fn new(conn: Conn) -> Result<Self> {
        if conn.token.as_deref().is_none_or(str::is_empty) {
            return Err(OpsError(
                "no API key: pass --token or set SYNCFLEET_TOKEN".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| OpsError(format!("HTTP client: {e}")))?;
        Ok(Self { conn, http })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.conn.url.trim_end_matches('/'));
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(self.conn.token.as_deref().unwrap_or_default());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            OpsError(if e.is_connect() {
                format!(
                    "cannot reach the API at {} (is syncfleet running? --url / SYNCFLEET_URL)",
                    self.conn.url
                )
            } else {
                format!("request to {url} failed: {e}")
            })
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(OpsError(problem_line(status, &value)))
    }
}

fn problem_line(status: StatusCode, v: &Value) -> String {
    let detail = v["detail"]
        .as_str()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"));
    let code = v["code"].as_str().unwrap_or("error");
    let fields = v["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["field"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    format!("{detail}{fields} [{code}, HTTP {}]", status.as_u16())
}

/// Left-aligned columns.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2026-11-22T03:06:53.123Z` → `2026-11-22 03:06:53`.
fn t(v: &Value) -> String {
    v.as_str()
        .map(|s| s.replace('T', " ").chars().take(19).collect())
        .unwrap_or_else(|| "-".into())
}

fn print(conn: &Conn, v: &Value, human: impl FnOnce(&Value) -> String) {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", human(v));
    }
}

fn check_id(id: &str) -> Result<&str> {
    uuid::Uuid::parse_str(id)
        .map(|_| id)
        .map_err(|_| OpsError(format!("`{id}` is not an integration id (a UUID)")))
}

pub async fn status(conn: Conn) -> Result<()> {
    let c = Client::new(conn.clone())?;
    let v = c.call(Method::GET, "/api/sync/status", None).await?;
    print(&conn, &v, |v| {
        [
            ("workers alive", s(&v["workersAlive"])),
            ("queue depth", s(&v["queueDepth"])),
            ("runs pending", s(&v["runsPending"])),
            ("runs running", s(&v["runsRunning"])),
            ("failed (last hour)", s(&v["failedLastHour"])),
            ("integrations", s(&v["integrations"])),
            ("disabled", s(&v["disabledIntegrations"])),
            ("paused", s(&v["pausedIntegrations"])),
            ("stale", s(&v["staleCount"])),
            ("last successful sync", t(&v["lastSuccessfulSync"])),
        ]
        .iter()
        .map(|(k, v)| format!("{k:<22}{v}"))
        .collect::<Vec<_>>()
        .join("\n")
    });
    Ok(())
}

pub async fn integrations(conn: Conn, cmd: IntegrationsCmd) -> Result<()> {
    let c = Client::new(conn.clone())?;
    match cmd {
        IntegrationsCmd::List {
            kind,
            health,
            limit,
        } => {
            if !(1..=500).contains(&limit) {
                return Err(OpsError("--limit must be from 1 to 500".into()));
            }
            let mut path = format!("/api/integrations?pageSize={limit}");
            if let Some(k) = kind {
                path.push_str(&format!("&kind={k}"));
            }
            if let Some(h) = health {
                path.push_str(&format!("&health={h}"));
            }
            let v = c.call(Method::GET, &path, None).await?;
            print(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v["integrations"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|i| {
                                vec![
                                    s(&i["id"]),
                                    s(&i["name"]),
                                    s(&i["kind"]),
                                    i["syncInterval"]
                                        .as_i64()
                                        .map_or("manual".into(), |n| format!("{n}s")),
                                    s(&i["syncEnabled"]),
                                    s(&i["health"]),
                                    s(&i["retryCount"]),
                                    t(&i["nextSyncAt"]),
                                    t(&i["lastSuccessAt"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let head = [
                    "ID",
                    "NAME",
                    "KIND",
                    "INTERVAL",
                    "ENABLED",
                    "HEALTH",
                    "FAILS",
                    "NEXT SYNC",
                    "LAST SUCCESS",
                ];
                format!(
                    "{}\n({} of {})",
                    table(&head, &rows),
                    rows.len(),
                    s(&v["total"])
                )
            });
        }
        IntegrationsCmd::SetInterval { id, seconds } => {
            let id = check_id(&id)?;
            let interval = if seconds == 0 {
                Value::Null
            } else {
                json!(seconds)
            };
            let v = c
                .call(
                    Method::PATCH,
                    &format!("/api/integrations/{id}/sync-settings"),
                    Some(json!({ "syncInterval": interval })),
                )
                .await?;
            print(&conn, &v, |v| {
                format!(
                    "{}: interval {}, next sync {}",
                    s(&v["name"]),
                    v["syncInterval"]
                        .as_i64()
                        .map_or("manual".into(), |n| format!("{n}s")),
                    t(&v["nextSyncAt"])
                )
            });
        }
    }
    Ok(())
}

pub async fn sync(conn: Conn, id: String, force: bool) -> Result<()> {
    let c = Client::new(conn.clone())?;
    let id = check_id(&id)?;
    let v = c
        .call(
            Method::POST,
            &format!("/api/integrations/{id}/sync"),
            Some(json!({ "force": force })),
        )
        .await?;
    print(&conn, &v, |v| {
        let run = &v["run"];
        if v["coalesced"] == true {
            let follow = if v["followupRequested"] == true {
                "; one follow-up run will start after it"
            } else {
                ""
            };
            format!(
                "coalesced with run {} ({}){follow}",
                s(&run["id"]),
                s(&run["status"])
            )
        } else {
            format!("run {} queued", s(&run["id"]))
        }
    });
    Ok(())
}

pub async fn history(conn: Conn, id: String, status: Option<String>, limit: u64) -> Result<()> {
    let c = Client::new(conn.clone())?;
    let id = check_id(&id)?;
    if !(1..=500).contains(&limit) {
        return Err(OpsError("--limit must be from 1 to 500".into()));
    }
    let mut path = format!("/api/integrations/{id}/sync-history?pageSize={limit}");
    if let Some(st) = status {
        path.push_str(&format!("&status={st}"));
    }
    let v = c.call(Method::GET, &path, None).await?;
    print(&conn, &v, |v| {
        let rows: Vec<Vec<String>> = v["logs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| {
                        let err = match (&l["errorClass"], &l["errorMessage"]) {
                            (Value::Null, _) => "-".into(),
                            (c, m) => {
                                format!("{}: {}", s(c), s(m).chars().take(60).collect::<String>())
                            }
                        };
                        vec![
                            s(&l["id"]),
                            s(&l["status"]),
                            s(&l["trigger"]),
                            s(&l["attempt"]),
                            t(&l["scheduledFor"]),
                            l["duration"]
                                .as_i64()
                                .map_or("-".into(), |d| format!("{d} ms")),
                            s(&l["recordsCount"]),
                            err,
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        let head = [
            "RUN",
            "STATUS",
            "TRIGGER",
            "ATTEMPT",
            "SCHEDULED",
            "DURATION",
            "RECORDS",
            "ERROR",
        ];
        table(&head, &rows)
    });
    Ok(())
}

pub async fn pause_resume(
    conn: Conn,
    id: String,
    reason: Option<String>,
    pause: bool,
) -> Result<()> {
    let c = Client::new(conn.clone())?;
    let id = check_id(&id)?;
    let verb = if pause { "pause" } else { "resume" };
    let body = json!({ "reason": reason });
    let v = c
        .call(
            Method::POST,
            &format!("/api/integrations/{id}/{verb}"),
            Some(body),
        )
        .await?;
    print(&conn, &v, |v| {
        format!(
            "{}: {} (health {}, next sync {})",
            s(&v["name"]),
            if pause { "paused" } else { "resumed" },
            s(&v["health"]),
            t(&v["nextSyncAt"])
        )
    });
    Ok(())
}
