//! A fake cloud for the push and conflict tests and `push-bench`: it records every request, can go down
//! (every request, or only writes), answers 409/412/400 when told, deduplicates by
//! `Idempotency-Key` the way a real cloud does, lists its items for pulls
//! (`GET /items`), and takes batched changes (`POST /batch`).
//!
//! An item is seen by a pull as its data plus `id`, `version` and `updatedAt`; a 409 or
//! 412 answer carries that same view under `current`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Cloud {
    /// `false` = every request gets 503.
    pub up: bool,
    /// `false` = every request but a `GET` gets 503 (reads work, writes do not).
    pub writes_up: bool,
    /// The next request is applied, then answered only after 300 s (a worker killed
    /// while waiting for it).
    pub hang_after_apply: bool,
    /// Record id → status the cloud answers instead of applying.
    pub refuse: HashMap<String, u16>,
    /// Record id → status the cloud answers once, to the next change of that record.
    pub refuse_once: HashMap<String, u16>,
    /// Record id → (data, version); a delete removes it.
    pub items: HashMap<String, (Value, u64)>,
    /// Record id → its `updatedAt` (RFC 3339) as a pull sees it.
    pub updated: HashMap<String, String>,
    /// Idempotency-Key → the answer first given (a repeat gets it without applying).
    pub answered: HashMap<String, (u16, Value)>,
    /// (record id, status) of every refused change, in order.
    pub refused: Vec<(String, u16)>,
    /// (record id, Idempotency-Key) of every applied change, in order.
    pub applied: Vec<(String, String)>,
    /// Requests received, and of them batch requests.
    pub requests: usize,
    pub batches: usize,
}

impl Cloud {
    /// How a pull (and a refusal's `current`) shows item `id`.
    pub fn view(&self, id: &str) -> Option<Value> {
        let (data, version) = self.items.get(id)?;
        let mut v = data.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), json!(id));
            o.insert("version".into(), json!(version));
            o.insert(
                "updatedAt".into(),
                json!(
                    self.updated
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| "2000-01-01T00:00:00Z".into())
                ),
            );
        }
        Some(v)
    }

    /// A change made at the cloud (by someone else): a new version.
    pub fn change(&mut self, id: &str, data: Value, updated_at: &str) {
        let version = self.items.get(id).map_or(0, |(_, v)| *v) + 1;
        self.items.insert(id.to_owned(), (data, version));
        self.updated.insert(id.to_owned(), updated_at.to_owned());
    }

    /// How many changes the cloud applied to record `id`.
    pub fn applied_to(&self, id: &str) -> usize {
        self.applied.iter().filter(|(r, _)| r == id).count()
    }

    /// One change: `key` deduplicates it; `if_match` must match the current version, and
    /// a create with `if_none_match` (`If-None-Match: *`) is refused if the record exists.
    fn apply(
        &mut self,
        id: &str,
        delete: bool,
        data: Value,
        key: &str,
        if_match: Option<&str>,
        if_none_match: bool,
    ) -> (u16, Value) {
        if let Some((s, a)) = self.answered.get(key) {
            return (*s, a.clone());
        }
        if let Some(s) = self
            .refuse
            .get(id)
            .copied()
            .or_else(|| self.refuse_once.remove(id))
        {
            self.refused.push((id.to_owned(), s));
            return (s, json!({ "error": "refused", "current": self.view(id) }));
        }
        let current = self.items.get(id).map(|(_, v)| *v);
        if let (Some(m), Some(v)) = (if_match, current)
            && m != v.to_string()
        {
            self.refused.push((id.to_owned(), 412));
            return (
                412,
                json!({ "error": "version mismatch", "version": v, "current": self.view(id) }),
            );
        }
        if let (true, Some(v)) = (if_none_match, current) {
            self.refused.push((id.to_owned(), 412));
            return (
                412,
                json!({ "error": "exists", "version": v, "current": self.view(id) }),
            );
        }
        let version = current.unwrap_or(0) + 1;
        if delete {
            self.items.remove(id);
        } else {
            self.items.insert(id.to_owned(), (data, version));
            self.updated
                .insert(id.to_owned(), chrono::Utc::now().to_rfc3339());
        }
        self.applied.push((id.to_owned(), key.to_owned()));
        let a = json!({ "id": format!("c-{id}"), "version": version });
        self.answered.insert(key.to_owned(), (200, a.clone()));
        (200, a)
    }
}

#[derive(Clone)]
pub struct FakeCloud {
    pub url: String,
    st: Arc<Mutex<Cloud>>,
}

impl FakeCloud {
    pub async fn start() -> Self {
        let st = Arc::new(Mutex::new(Cloud {
            up: true,
            writes_up: true,
            ..Cloud::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let s = st.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { handle(s, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, st }
    }

    pub fn set(&self, f: impl FnOnce(&mut Cloud)) {
        f(&mut self.st.lock().expect("lock"));
    }

    pub fn get<T>(&self, f: impl FnOnce(&Cloud) -> T) -> T {
        f(&self.st.lock().expect("lock"))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    st: Arc<Mutex<Cloud>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = header(&headers, "idempotency-key").unwrap_or_default();
    let if_match = header(&headers, "if-match");
    let (status, answer, hang) = {
        let mut c = st.lock().expect("lock");
        c.requests += 1;
        if !c.up || (!c.writes_up && method != Method::GET) {
            return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
        }
        if method == Method::GET && uri.path() == "/items" {
            let mut ids: Vec<&String> = c.items.keys().collect();
            ids.sort();
            let items: Vec<Value> = ids.iter().filter_map(|id| c.view(id)).collect();
            return axum::Json(json!({ "items": items })).into_response();
        }
        if uri.path() == "/batch" {
            // `{"operations": [{"id", "op": "upsert"|"delete", "data", "key", "ifMatch"}]}`
            // → `{"results": [{"status", "body"}]}`, each applied as a single request
            // would be (the request's own key deduplicates the batch as a whole).
            c.batches += 1;
            if let Some((s, a)) = c.answered.get(&key) {
                let (s, a) = (*s, a.clone());
                return (StatusCode::from_u16(s).expect("status"), axum::Json(a)).into_response();
            }
            let ops: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut results = Vec::new();
            for op in ops["operations"].as_array().cloned().unwrap_or_default() {
                let id = op["id"].as_str().unwrap_or_default().to_owned();
                let op_key = op["key"].as_str().unwrap_or_default().to_owned();
                let (s, a) = c.apply(
                    &id,
                    op["op"] == "delete",
                    op["data"].clone(),
                    &op_key,
                    op["ifMatch"].as_str(),
                    op["ifNoneMatch"] == "*",
                );
                results.push(json!({ "status": s, "body": a }));
            }
            let a = json!({ "results": results });
            if !key.is_empty() {
                c.answered.insert(key.clone(), (200, a.clone()));
            }
            return axum::Json(a).into_response();
        }
        let id = uri.path().trim_start_matches("/items/").to_owned();
        let data: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (s, a) = c.apply(
            &id,
            method == Method::DELETE,
            data,
            &key,
            if_match.as_deref(),
            header(&headers, "if-none-match").as_deref() == Some("*"),
        );
        let hang = s == 200 && std::mem::take(&mut c.hang_after_apply);
        (s, a, hang)
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
    (
        StatusCode::from_u16(status).expect("status"),
        axum::Json(answer),
    )
        .into_response()
}
