//! A typed client of the HTTP API for tests.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, key: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("POST");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates an integration and returns its id. Like a client that honours
    /// `Retry-After`, it sends the request again after a 503 (nothing was written): on a
    /// loaded machine the suite's short lease makes the API's sessions' idle-in-transaction
    /// timeout short enough for a stalled request to meet it.
    pub async fn create(
        &self,
        name: &str,
        kind: &str,
        config: Value,
        interval: Option<i64>,
    ) -> Uuid {
        let body =
            json!({ "name": name, "kind": kind, "config": config, "syncInterval": interval });
        let mut tries = 0;
        let (s, v) = loop {
            tries += 1;
            let (s, v) = self.post("/api/integrations", &body).await;
            if s != StatusCode::SERVICE_UNAVAILABLE || tries == 5 {
                break (s, v);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        assert_eq!(s, StatusCode::CREATED, "create failed: {v}");
        v["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("id")
    }

    pub async fn trigger(&self, id: Uuid) -> Value {
        let (s, v) = self
            .post(&format!("/api/integrations/{id}/sync"), &json!({}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "trigger failed: {v}");
        v
    }

    pub async fn history(&self, id: Uuid) -> Vec<Value> {
        let (s, v) = self
            .get(&format!("/api/integrations/{id}/sync-history?pageSize=500"))
            .await;
        assert_eq!(s, StatusCode::OK, "history failed: {v}");
        v["logs"].as_array().cloned().unwrap_or_default()
    }
}
