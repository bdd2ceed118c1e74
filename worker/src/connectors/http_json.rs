//! `http_json`: any REST/JSON API (a cloud POS, an internal service).
//!
//! Records are the array at `recordsPointer` (a JSON pointer); each record's id is at
//! `idPointer`. Pagination follows a next link, a cursor field or page numbers;
//! incremental mode sends the last successful watermark as `sinceParam` and takes the
//! new one as the largest `watermarkPointer` value seen. Auth comes from the secret
//! `auth` field and never appears in errors or logs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use entity::ErrorClass;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use super::{
    Connector, ConnectorEnv, FetchContext, FetchError, Fetched, FieldError, SourceRecord, http,
};
use crate::net::NetPolicy;

const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_MAX_PAGES: u64 = 1_000;
const MAX_PAGES: u64 = 100_000;
/// Page numbers start at most here (so `start + pages` cannot overflow).
const MAX_PAGE_START: u64 = 1_000_000_000;
/// The largest page size asked of a source.
const MAX_PAGE_SIZE: u64 = 100_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "get")]
    method: String,
    /// Secret: read apart from the rest (see `from_config`).
    #[serde(skip)]
    headers: std::collections::BTreeMap<String, String>,
    /// Secret: read apart from the rest.
    #[serde(skip)]
    auth: Option<Auth>,
    records_pointer: String,
    id_pointer: String,
    #[serde(default)]
    pagination: Option<Pagination>,
    #[serde(default)]
    since_param: Option<String>,
    #[serde(default)]
    watermark_pointer: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_response_bytes: Option<u64>,
    #[serde(default)]
    max_pages: Option<u64>,
    /// Where local changes are pushed (bidirectional sync); absent = pull only.
    #[serde(default)]
    push: Option<PushTarget>,
}

/// How local changes reach the cloud: one request per change, carrying
/// `Idempotency-Key: <the outbox entry's id>` and, when the record has a cloud version,
/// `If-Match: <it>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushTarget {
    /// The record's URL; `{externalId}` and `{cloudId}` are replaced (URL-encoded; `{cloudId}`
    /// is the external id until the cloud gave one).
    url: String,
    /// Where a record the cloud does not know yet is created with `POST`; absent = a
    /// `PUT` to `url`.
    #[serde(default)]
    create_url: Option<String>,
    /// `PUT` (default) or `PATCH` for a change to a record the cloud has.
    #[serde(default = "put")]
    update_method: String,
    /// Where the answer's JSON holds the cloud's version of the record (else its `ETag`).
    #[serde(default)]
    version_pointer: Option<String>,
    /// Where the answer's JSON holds the cloud's id of the record.
    #[serde(default)]
    id_pointer: Option<String>,
    /// Where a record's JSON holds the time the cloud last changed it (RFC 3339 or Unix
    /// seconds/milliseconds): what `newest_wins` compares with the local `modifiedAt`.
    #[serde(default)]
    updated_at_pointer: Option<String>,
    /// Where a 409/412 answer's JSON holds the cloud's current record (`""` = the whole
    /// answer); absent = the answer does not carry it (the next pull brings it).
    #[serde(default)]
    conflict_pointer: Option<String>,
    /// Several changes in one request (docs/architecture.md §4.17): absent = one request
    /// per change.
    #[serde(default)]
    batch: Option<PushBatch>,
    /// Send `If-None-Match: *` with a create (a change of a record the cloud has never
    /// acknowledged), so a late duplicate of an older create cannot overwrite what a
    /// newer change put there (docs/architecture.md §4.17). Default true; turn it off for
    /// a target that refuses the header.
    #[serde(default = "yes")]
    conditional_create: bool,
}

fn yes() -> bool {
    true
}

fn put() -> String {
    "PUT".into()
}

/// Up to `maxOperations` changes of one integration sent as one `POST` to `url`. The
/// body is `body` with the string `"{{operations}}"` replaced by the array of
/// `operation`s, each `operation` with its placeholders filled: a string that is
/// exactly `"{{data}}"` becomes the record (`null` for a delete); `{{externalId}}`,
/// `{{cloudId}}`, `{{operation}}` (`upsert` or `delete`), `{{idempotencyKey}}` and
/// `{{ifMatch}}` are replaced inside strings (a string that is exactly `"{{ifMatch}}"`
/// or `"{{cloudId}}"` becomes `null` when there is none). The answer holds one result
/// per operation, in order, at `resultsPointer`; a result's status at `statusPointer`
/// and the cloud's answer for that change at `bodyPointer`, where `versionPointer`,
/// `idPointer` and `conflictPointer` are read as for a single push.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushBatch {
    url: String,
    #[serde(default = "batch_size")]
    max_operations: u32,
    #[serde(default = "batch_body")]
    body: Value,
    #[serde(default = "batch_operation")]
    operation: Value,
    #[serde(default = "results_pointer")]
    results_pointer: String,
    #[serde(default = "status_pointer")]
    status_pointer: String,
    #[serde(default = "body_pointer")]
    body_pointer: String,
}

/// The largest batch a push target may ask for.
pub const MAX_PUSH_BATCH: u32 = 1000;

fn batch_size() -> u32 {
    100
}
fn batch_body() -> Value {
    serde_json::json!({ "operations": "{{operations}}" })
}
fn batch_operation() -> Value {
    serde_json::json!({
        "id": "{{externalId}}", "op": "{{operation}}", "data": "{{data}}",
        "key": "{{idempotencyKey}}", "ifMatch": "{{ifMatch}}", "ifNoneMatch": "{{ifNoneMatch}}"
    })
}
fn results_pointer() -> String {
    "/results".into()
}
fn status_pointer() -> String {
    "/status".into()
}
fn body_pointer() -> String {
    "/body".into()
}

/// Whether `v` holds the string `"{{operations}}"` somewhere.
fn has_operations(v: &Value) -> bool {
    match v {
        Value::String(s) => s == "{{operations}}",
        Value::Array(a) => a.iter().any(has_operations),
        Value::Object(o) => o.values().any(has_operations),
        _ => false,
    }
}

/// `template` with `"{{operations}}"` replaced by `ops`.
fn fill_body(template: &Value, ops: &Value) -> Value {
    match template {
        Value::String(s) if s == "{{operations}}" => ops.clone(),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill_body(v, ops)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), fill_body(v, ops)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One operation of a batch: `template` with `r`'s placeholders filled.
fn fill_operation(template: &Value, r: &PushRequest<'_>, data: &Value) -> Value {
    match template {
        Value::String(s) => match s.as_str() {
            "{{data}}" => data.clone(),
            "{{ifMatch}}" => r.if_match.map_or(Value::Null, |v| Value::String(v.into())),
            "{{ifNoneMatch}}" => match r.create_only {
                true => Value::String("*".into()),
                false => Value::Null,
            },
            "{{cloudId}}" => r.cloud_id.map_or(Value::Null, |v| Value::String(v.into())),
            _ => Value::String(
                s.replace("{{externalId}}", r.external_id)
                    .replace("{{cloudId}}", r.cloud_id.unwrap_or(r.external_id))
                    .replace(
                        "{{operation}}",
                        if r.data.is_some() { "upsert" } else { "delete" },
                    )
                    .replace("{{idempotencyKey}}", r.idempotency_key)
                    .replace("{{ifMatch}}", r.if_match.unwrap_or_default())
                    .replace("{{ifNoneMatch}}", if r.create_only { "*" } else { "" }),
            ),
        },
        Value::Array(a) => Value::Array(a.iter().map(|v| fill_operation(v, r, data)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), fill_operation(v, r, data)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The `Idempotency-Key` of a batch request: the same for the same changes (their
/// keys, in any order), so a retried batch is recognised as one by a cloud that
/// deduplicates requests, while each operation carries its own entry's key too.
pub fn batch_key(reqs: &[PushRequest<'_>]) -> String {
    use sha2::{Digest, Sha256};
    let mut keys: Vec<&str> = reqs.iter().map(|r| r.idempotency_key).collect();
    keys.sort_unstable();
    let mut h = Sha256::new();
    for k in keys {
        h.update(k.as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("batch-{hex}")
}

/// One change to push.
#[derive(Debug, Clone)]
pub struct PushRequest<'a> {
    pub external_id: &'a str,
    pub cloud_id: Option<&'a str>,
    /// The record's data (canonical JSON); `None` = a delete.
    pub data: Option<&'a str>,
    pub idempotency_key: &'a str,
    pub if_match: Option<&'a str>,
    /// A create: the cloud has never acknowledged this record (no version, no id, no
    /// agreed content), so the request asks it to refuse if it holds one already
    /// (`If-None-Match: *`, when the target's `conditionalCreate` is on).
    pub create_only: bool,
}

/// What the cloud answered a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub cloud_version: Option<String>,
    pub cloud_id: Option<String>,
    /// A 409/412 answer's copy of the cloud's record (at `conflictPointer`).
    pub cloud_record: Option<Value>,
    /// The start of the body, for an error message.
    pub excerpt: String,
}

/// Largest push answer read.
const MAX_PUSH_ANSWER: usize = 1 << 20;

/// What `auth` must be (the message for any other value, which is never quoted).
const AUTH_SHAPES: &str = "must be {\"type\": \"bearer\", \"token\": string}, \
     {\"type\": \"apiKey\", \"header\": string, \"value\": string} or \
     {\"type\": \"basic\", \"username\": string, \"password\": string}";

/// What `headers` must be.
pub(crate) const HEADERS_SHAPE: &str = "must be an object of header names to string values";

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum Auth {
    Bearer {
        token: String,
    },
    #[serde(rename_all = "camelCase")]
    ApiKey {
        header: String,
        value: String,
    },
    Basic {
        username: String,
        password: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum Pagination {
    /// The next page's URL is at `pointer` in the body (absolute or relative).
    NextLink { pointer: String },
    /// The next cursor is at `pointer`; it is sent as `param`.
    #[serde(rename_all = "camelCase")]
    Cursor { pointer: String, param: String },
    /// Page numbers in `param`, from `start`; stops at an empty page.
    #[serde(rename_all = "camelCase")]
    Page {
        param: String,
        #[serde(default = "one")]
        start: u64,
        size_param: Option<String>,
        size: Option<u64>,
    },
}

fn one() -> u64 {
    1
}

pub struct HttpJson {
    c: Config,
    url: Url,
    http: reqwest::Client,
    policy: NetPolicy,
}

fn pointer_ok(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

impl HttpJson {
    pub fn from_config(
        config: &Value,
        env: Option<&ConnectorEnv>,
    ) -> Result<Self, Vec<FieldError>> {
        // Nested structs are objects too (serde would read them from arrays).
        if config
            .get("pagination")
            .is_some_and(|v| !v.is_null() && !v.is_object())
        {
            return Err(vec![FieldError::new(
                "config.pagination",
                "must be a JSON object",
            )]);
        }
        let mut errors = Vec::new();
        // The secret fields are read on their own, with messages that never quote them.
        let auth = if config
            .get("auth")
            .is_some_and(|v| !v.is_object() && !v.is_null())
        {
            errors.push(FieldError::new("config.auth", AUTH_SHAPES));
            None
        } else {
            super::secret_field::<Auth>(config, "auth", AUTH_SHAPES, &mut errors)
        };
        let headers =
            super::secret_field(config, "headers", HEADERS_SHAPE, &mut errors).unwrap_or_default();
        let mut c: Config =
            serde_json::from_value(super::without_secrets(config, &["auth", "headers"])).map_err(
                |e| {
                    errors.push(FieldError::new("config", e.to_string()));
                    std::mem::take(&mut errors)
                },
            )?;
        c.auth = auth;
        c.headers = headers;
        let url = http::http_url(
            "config.url",
            &c.url,
            "put them in `auth` (basic, bearer or apiKey), which is kept secret",
            &mut errors,
        );
        if !matches!(c.method.as_str(), "GET" | "POST") {
            errors.push(FieldError::new("config.method", "must be GET or POST"));
        }
        for (field, p) in [
            ("config.recordsPointer", &c.records_pointer),
            ("config.idPointer", &c.id_pointer),
        ] {
            if !pointer_ok(p) {
                errors.push(FieldError::new(
                    field,
                    "must be a JSON pointer like /data/items",
                ));
            }
        }
        if c.watermark_pointer
            .as_deref()
            .is_some_and(|p| !pointer_ok(p))
        {
            errors.push(FieldError::new(
                "config.watermarkPointer",
                "must be a JSON pointer",
            ));
        }
        if c.since_param.is_some() != c.watermark_pointer.is_some() {
            errors.push(FieldError::new(
                "config.sinceParam",
                "sinceParam and watermarkPointer go together",
            ));
        }
        http::check_timeout(c.timeout_ms, &mut errors);
        http::check_max_bytes(c.max_response_bytes, &mut errors);
        http::check_range("config.maxPages", c.max_pages, 1..=MAX_PAGES, &mut errors);
        if let Some(Pagination::Page { start, size, .. }) = &c.pagination {
            if *start > MAX_PAGE_START {
                errors.push(FieldError::new(
                    "config.pagination",
                    format!("start must be at most {MAX_PAGE_START}"),
                ));
            }
            if size.is_some_and(|n| !(1..=MAX_PAGE_SIZE).contains(&n)) {
                errors.push(FieldError::new(
                    "config.pagination",
                    format!("size must be from 1 to {MAX_PAGE_SIZE}"),
                ));
            }
        }
        for (name, value) in &c.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(FieldError::new(
                    "config.headers",
                    format!("`{name}` is not a header name"),
                ));
            } else if reqwest::header::HeaderValue::from_str(value).is_err() {
                // The value may be a credential: name the header only.
                errors.push(FieldError::new(
                    "config.headers",
                    format!("the value of `{name}` is not a valid header value"),
                ));
            }
        }
        if let Some(p) = &c.push {
            for (field, u) in [
                ("config.push.url", Some(&p.url)),
                ("config.push.createUrl", p.create_url.as_ref()),
            ] {
                if let Some(u) = u {
                    let filled = u.replace("{externalId}", "x").replace("{cloudId}", "x");
                    http::http_url(
                        field,
                        &filled,
                        "put them in `auth`, which is kept secret",
                        &mut errors,
                    );
                }
            }
            if !matches!(p.update_method.as_str(), "PUT" | "PATCH") {
                errors.push(FieldError::new(
                    "config.push.updateMethod",
                    "must be PUT or PATCH",
                ));
            }
            if let Some(b) = &p.batch {
                http::http_url(
                    "config.push.batch.url",
                    &b.url,
                    "put them in `auth`, which is kept secret",
                    &mut errors,
                );
                if !(2..=MAX_PUSH_BATCH).contains(&b.max_operations) {
                    errors.push(FieldError::new(
                        "config.push.batch.maxOperations",
                        format!("must be between 2 and {MAX_PUSH_BATCH}"),
                    ));
                }
                if !has_operations(&b.body) {
                    errors.push(FieldError::new(
                        "config.push.batch.body",
                        "must hold the string \"{{operations}}\" where the operations go",
                    ));
                }
                for (field, ptr) in [
                    ("config.push.batch.resultsPointer", &b.results_pointer),
                    ("config.push.batch.statusPointer", &b.status_pointer),
                    ("config.push.batch.bodyPointer", &b.body_pointer),
                ] {
                    if !pointer_ok(ptr) {
                        errors.push(FieldError::new(
                            field,
                            "must be a JSON pointer like /results",
                        ));
                    }
                }
            }
            for (field, ptr) in [
                ("config.push.versionPointer", &p.version_pointer),
                ("config.push.idPointer", &p.id_pointer),
                ("config.push.updatedAtPointer", &p.updated_at_pointer),
                ("config.push.conflictPointer", &p.conflict_pointer),
            ] {
                if ptr.as_deref().is_some_and(|x| !pointer_ok(x)) {
                    errors.push(FieldError::new(
                        field,
                        "must be a JSON pointer like /version",
                    ));
                }
            }
        }
        let (Some(url), true) = (url, errors.is_empty()) else {
            return Err(errors);
        };
        let policy = env.map(|e| e.net.clone()).unwrap_or_default();
        let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let http = policy.http_client(timeout);
        Ok(Self {
            c,
            url,
            http,
            policy,
        })
    }

    /// One response body, as text (JSON is UTF-8).
    async fn page(&self, ctx: &FetchContext, url: &Url) -> Result<String, FetchError> {
        self.policy
            .check_url(url)
            .map_err(|e| FetchError::new(ErrorClass::Config, e.to_string()))?;
        let method = if self.c.method == "POST" {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let mut req = self
            .http
            .request(method, url.clone())
            .header("accept", "application/json");
        for (k, v) in &self.c.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = match &self.c.auth {
            None => req,
            Some(Auth::Bearer { token }) => req.bearer_auth(token),
            Some(Auth::ApiKey { header, value }) => req.header(header.as_str(), value.as_str()),
            Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password)),
        };
        let max = self.c.max_response_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        let body = http::send(ctx.gate.as_ref(), req, url, max).await?;
        String::from_utf8(body).map_err(|e| {
            FetchError::new(
                ErrorClass::SourceData,
                format!(
                    "response from {} is not JSON: not UTF-8 (at byte {})",
                    http::redact(url),
                    e.utf8_error().valid_up_to()
                ),
            )
        })
    }
}

/// The JSON text at `pointer` (RFC 6901, as `Value::pointer` resolves it) inside the
/// JSON text `json`, without building the document as a tree: each level on the way is
/// read as borrowed raw slices of its children. `Ok(None)` when nothing is there;
/// an error when a level read is not JSON (the root level covers the whole document).
fn raw_pointer<'a>(json: &'a str, pointer: &str) -> serde_json::Result<Option<&'a str>> {
    let mut at = json;
    if pointer.is_empty() {
        // Validates the document as a whole.
        return serde_json::from_str::<&RawValue>(at).map(|r| Some(r.get()));
    }
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let next = match at.trim_start().as_bytes().first() {
            Some(b'{') => serde_json::from_str::<BTreeMap<String, &RawValue>>(at)?.remove(&token),
            Some(b'[') => {
                let items = serde_json::from_str::<Vec<&RawValue>>(at)?;
                array_index(&token).and_then(|i| items.get(i).copied())
            }
            _ => {
                serde_json::from_str::<&RawValue>(at)?;
                None
            }
        };
        match next {
            Some(raw) => at = raw.get(),
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

/// An array index token as `Value::pointer` accepts it (no sign, no leading zero).
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// `url` with query parameter `param` set to `value` (replacing any earlier value).
fn with_param(url: &Url, param: &str, value: &str) -> Url {
    let mut u = url.clone();
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != param)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(param, value);
    u
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl Connector for HttpJson {
    fn urls(&self) -> Vec<Url> {
        let mut out = vec![self.url.clone()];
        if let Some(p) = &self.c.push {
            for u in std::iter::once(&p.url).chain(p.create_url.as_ref()) {
                if let Ok(u) = Url::parse(&u.replace("{externalId}", "x").replace("{cloudId}", "x"))
                {
                    out.push(u);
                }
            }
        }
        out
    }

    async fn fetch(&self, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        let mut url = self.url.clone();
        let incremental = match (&self.c.since_param, &ctx.watermark) {
            (Some(param), Some(mark)) => {
                url.query_pairs_mut().append_pair(param, mark);
                true
            }
            _ => false,
        };
        if let Some(Pagination::Page {
            param,
            start,
            size_param,
            size,
        }) = &self.c.pagination
        {
            url.query_pairs_mut().append_pair(param, &start.to_string());
            if let (Some(sp), Some(sz)) = (size_param, size) {
                url.query_pairs_mut().append_pair(sp, &sz.to_string());
            }
        }
        let mut records = Vec::new();
        let mut watermark = ctx.watermark.clone();
        let max_pages = self.c.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
        let mut page_no = 0u64;
        loop {
            page_no += 1;
            if page_no > max_pages {
                return Err(FetchError::new(
                    ErrorClass::SourceData,
                    format!("more than {max_pages} pages"),
                ));
            }
            let body = self.page(ctx, &url).await?;
            let not_json = |e: serde_json::Error| {
                FetchError::new(
                    ErrorClass::SourceData,
                    format!("response from {} is not JSON: {e}", http::redact(&url)),
                )
            };
            // Each record is read from the body's text on its own and kept as compact
            // text (see `SourceRecord`): the page never exists as one `Value` tree.
            let items = match raw_pointer(&body, &self.c.records_pointer).map_err(not_json)? {
                Some(raw) if raw.starts_with('[') => {
                    serde_json::from_str::<Vec<&RawValue>>(raw).map_err(not_json)?
                }
                _ => {
                    return Err(FetchError::new(
                        ErrorClass::SourceData,
                        format!("no array at {} in the response", self.c.records_pointer),
                    ));
                }
            };
            let empty_page = items.is_empty();
            records.reserve(items.len());
            for (i, raw) in items.into_iter().enumerate() {
                let item: Value = serde_json::from_str(raw.get()).map_err(not_json)?;
                let id = item
                    .pointer(&self.c.id_pointer)
                    .and_then(id_string)
                    .ok_or_else(|| {
                        FetchError::new(
                            ErrorClass::SourceData,
                            format!(
                                "record {i} of page {page_no} has no id at {}",
                                self.c.id_pointer
                            ),
                        )
                    })?;
                if let Some((pointer, mark)) = self
                    .c
                    .watermark_pointer
                    .as_deref()
                    .and_then(|p| Some((p, item.pointer(p).and_then(id_string)?)))
                {
                    let newer = match watermark.as_deref() {
                        None => true,
                        Some(w) => match super::watermark::compare(&mark, w) {
                            Ok(order) => order == std::cmp::Ordering::Greater,
                            Err((now, before)) => {
                                return Err(FetchError::new(
                                    ErrorClass::SourceData,
                                    format!(
                                        "record {i} of page {page_no}: the watermark at {pointer} is {} \
                                         but the watermark so far is {}; a watermark must keep one type \
                                         (number, RFC 3339 timestamp or text)",
                                        now.describe(),
                                        before.describe()
                                    ),
                                ));
                            }
                        },
                    };
                    if newer {
                        watermark = Some(mark);
                    }
                }
                records.push(SourceRecord::new(id, &item));
            }
            // Pagination fields are small: read them as values.
            let field = |pointer: &str| -> Result<Option<Value>, FetchError> {
                raw_pointer(&body, pointer)
                    .and_then(|raw| raw.map(serde_json::from_str).transpose())
                    .map_err(not_json)
            };
            let next = match &self.c.pagination {
                None => None,
                Some(Pagination::NextLink { pointer }) => match field(pointer)? {
                    Some(Value::String(s)) if !s.is_empty() => {
                        Some(url.join(&s).map_err(|_| {
                            FetchError::new(
                                ErrorClass::SourceData,
                                format!("next link `{s}` is not a URL"),
                            )
                        })?)
                    }
                    _ => None,
                },
                Some(Pagination::Cursor { pointer, param }) => field(pointer)?
                    .as_ref()
                    .and_then(id_string)
                    .map(|cursor| with_param(&url, param, &cursor)),
                Some(Pagination::Page { param, start, .. }) => {
                    (!empty_page).then(|| with_param(&url, param, &(start + page_no).to_string()))
                }
            };
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        Ok(Fetched {
            records,
            full: !incremental,
            watermark,
        })
    }
}

impl HttpJson {
    /// Whether this config has a push target.
    pub fn pushes(&self) -> bool {
        self.c.push.is_some()
    }

    /// Whether creates ask the cloud to refuse a record it holds already
    /// (`config.push.conditionalCreate`).
    pub fn conditional_create(&self) -> bool {
        self.push_target().is_ok_and(|p| p.conditional_create)
    }

    /// How many changes one push request may carry (1 without `push.batch`).
    pub fn push_batch_size(&self) -> usize {
        self.c
            .push
            .as_ref()
            .and_then(|p| p.batch.as_ref())
            .map_or(1, |b| b.max_operations as usize)
    }

    fn push_target(&self) -> Result<&PushTarget, FetchError> {
        self.c.push.as_ref().ok_or_else(|| {
            FetchError::new(
                ErrorClass::Config,
                "no push target configured (config.push)",
            )
        })
    }

    /// A request to the push target with the integration's auth and headers.
    fn push_request(
        &self,
        method: reqwest::Method,
        target: &str,
        idempotency_key: &str,
    ) -> Result<(reqwest::RequestBuilder, Url), FetchError> {
        let url = Url::parse(target)
            .map_err(|e| FetchError::new(ErrorClass::Config, format!("push URL: {e}")))?;
        self.policy
            .check_url(&url)
            .map_err(|e| FetchError::new(ErrorClass::Config, e.to_string()))?;
        let mut req = self
            .http
            .request(method, url.clone())
            .header("accept", "application/json")
            .header("idempotency-key", idempotency_key);
        for (k, v) in &self.c.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = match &self.c.auth {
            None => req,
            Some(Auth::Bearer { token }) => req.bearer_auth(token),
            Some(Auth::ApiKey { header, value }) => req.header(header.as_str(), value.as_str()),
            Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password)),
        };
        Ok((req, url))
    }

    /// Sends a push request: its status, `Retry-After`, `ETag` and (bounded) body.
    async fn push_send(
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<(u16, Option<Duration>, Option<String>, Vec<u8>), FetchError> {
        let resp = req
            .send()
            .await
            .map_err(|e| http::transport_error(&e, url))?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after =
            http::retry_after(resp.headers()).map(|d| d.min(Duration::from_secs(3600)));
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| http::transport_error(&e, url))?;
        let body = bytes[..bytes.len().min(MAX_PUSH_ANSWER)].to_vec();
        Ok((status, retry_after, etag, body))
    }

    /// The cloud's answer to one change: its version and id (at the target's pointers,
    /// in the refusal's copy of the record for a 409/412 that carries one).
    fn push_answer(
        p: &PushTarget,
        status: u16,
        retry_after: Option<Duration>,
        etag: Option<String>,
        json: Option<&Value>,
        excerpt: String,
    ) -> PushResponse {
        // A refusal may carry the cloud's current record: its version and id are read
        // there, like a success's in the answer itself.
        let cloud_record = match (status, &p.conflict_pointer) {
            (409 | 412, Some(ptr)) => json
                .and_then(|j| j.pointer(ptr))
                .filter(|v| v.is_object())
                .cloned(),
            _ => None,
        };
        let doc = cloud_record.as_ref().or(json);
        let at = |ptr: &Option<String>| -> Option<String> {
            let v = doc?.pointer(ptr.as_deref()?)?;
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        };
        PushResponse {
            status,
            retry_after,
            cloud_version: at(&p.version_pointer).or(etag),
            cloud_id: at(&p.id_pointer),
            excerpt,
            cloud_record,
        }
    }

    /// Sends one change to the push target: `Err` is a transport error, classified as
    /// for a fetch (`http::transport_error`: a refused address is `config`).
    pub async fn push(&self, r: &PushRequest<'_>) -> Result<PushResponse, FetchError> {
        let p = self.push_target()?;
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let fill = |t: &str| {
            t.replace("{externalId}", &enc(r.external_id))
                .replace("{cloudId}", &enc(r.cloud_id.unwrap_or(r.external_id)))
        };
        let (method, target) = match (r.data, r.cloud_id, &p.create_url) {
            (None, _, _) => (reqwest::Method::DELETE, fill(&p.url)),
            (Some(_), None, Some(create)) => (reqwest::Method::POST, fill(create)),
            (Some(_), None, None) => (reqwest::Method::PUT, fill(&p.url)),
            (Some(_), Some(_), _) if p.update_method == "PATCH" => {
                (reqwest::Method::PATCH, fill(&p.url))
            }
            (Some(_), Some(_), _) => (reqwest::Method::PUT, fill(&p.url)),
        };
        let (mut req, url) = self.push_request(method, &target, r.idempotency_key)?;
        if let Some(v) = r.if_match {
            req = req.header("if-match", v);
        } else if r.create_only && r.data.is_some() {
            req = req.header("if-none-match", "*");
        }
        if let Some(d) = r.data {
            req = req
                .header("content-type", "application/json")
                .body(d.to_owned());
        }
        let (status, retry_after, etag, body) = Self::push_send(req, &url).await?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        Ok(Self::push_answer(
            p,
            status,
            retry_after,
            etag,
            json.as_ref(),
            excerpt,
        ))
    }

    /// Sends `reqs` (changes of this integration, at most [`Self::push_batch_size`]) as
    /// one batch request when the target batches, else one request each. One answer per
    /// change, in order; an answer that is not 2xx for the whole batch is every change's
    /// answer. `Err` is a transport error, or a 2xx answer without one result per change.
    pub async fn push_many(
        &self,
        reqs: &[PushRequest<'_>],
    ) -> Result<Vec<PushResponse>, FetchError> {
        let p = self.push_target()?;
        let Some(b) = p.batch.as_ref() else {
            let mut out = Vec::with_capacity(reqs.len());
            for r in reqs {
                out.push(self.push(r).await?);
            }
            return Ok(out);
        };
        let mut ops = Vec::with_capacity(reqs.len());
        for r in reqs {
            let data = match r.data {
                Some(d) => serde_json::from_str(d).map_err(|e| {
                    FetchError::new(
                        ErrorClass::Internal,
                        format!("a record to push is not JSON: {e}"),
                    )
                })?,
                None => Value::Null,
            };
            ops.push(fill_operation(&b.operation, r, &data));
        }
        let body = fill_body(&b.body, &Value::Array(ops));
        let (req, url) = self.push_request(reqwest::Method::POST, &b.url, &batch_key(reqs))?;
        let req = req
            .header("content-type", "application/json")
            .body(body.to_string());
        let (status, retry_after, etag, answer) = Self::push_send(req, &url).await?;
        let excerpt = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
        if !(200..300).contains(&status) {
            let whole = Self::push_answer(p, status, retry_after, etag, None, excerpt(&answer));
            return Ok(vec![whole; reqs.len()]);
        }
        let json: Option<Value> = serde_json::from_slice(&answer).ok();
        let results = json
            .as_ref()
            .and_then(|j| j.pointer(&b.results_pointer))
            .and_then(Value::as_array)
            .filter(|a| a.len() == reqs.len())
            .ok_or_else(|| {
                FetchError::new(
                    ErrorClass::Transient,
                    format!(
                        "the batch answer has no array of {} results at {}: {}",
                        reqs.len(),
                        b.results_pointer,
                        excerpt(&answer)
                    ),
                )
            })?;
        let mut out = Vec::with_capacity(reqs.len());
        for r in results {
            let status = match r.pointer(&b.status_pointer) {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => s.parse().ok(),
                _ => None,
            }
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..600).contains(n))
            .unwrap_or(502);
            let one = r.pointer(&b.body_pointer);
            let text = one.map(Value::to_string).unwrap_or_default();
            out.push(Self::push_answer(
                p,
                status,
                retry_after,
                None,
                one,
                excerpt(text.as_bytes()),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    /// `raw_pointer` finds what `Value::pointer` finds, as text.
    #[test]
    fn raw_pointer_resolves_like_value_pointer() {
        let doc = json!({
            "data": { "items": [{ "id": 1 }, { "id": 2 }], "a/b": { "m~n": [10, [20, 21]] } },
            "links": { "next": "/p2", "none": null },
            "list": [[{ "x": "y" }]],
            "": { "": 0 }
        });
        // Whitespace and escapes as a server may send them.
        let text = format!("  {}\n", serde_json::to_string_pretty(&doc).unwrap());
        for pointer in [
            "",
            "/data",
            "/data/items",
            "/data/items/1",
            "/data/items/1/id",
            "/data/items/2",
            "/data/items/01",
            "/data/items/+1",
            "/data/items/x",
            "/data/a~1b/m~0n/1/0",
            "/data/a~1b/m~0n/1/0/deeper",
            "/links/next",
            "/links/none",
            "/links/missing",
            "/list/0/0/x",
            "/",
            "//",
            "/nope/deeper",
        ] {
            let raw = raw_pointer(&text, pointer).unwrap();
            let parsed: Option<Value> = raw.map(|r| serde_json::from_str(r).unwrap());
            assert_eq!(parsed.as_ref(), doc.pointer(pointer), "{pointer}");
        }
    }

    #[test]
    fn raw_pointer_refuses_what_is_not_json() {
        for text in [
            "<html>",
            r#"{"items": [1,]}"#,
            r#"{"items": []} trailing"#,
            "",
        ] {
            assert!(raw_pointer(text, "/items").is_err(), "{text}");
        }
        // Siblings of the path are checked too.
        assert!(raw_pointer(r#"{"items": [], "other": [nope]}"#, "/items").is_err());
    }
}
