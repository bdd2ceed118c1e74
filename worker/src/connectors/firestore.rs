//! `firestore`: the documents of one Cloud Firestore collection, through the REST API v1.
//!
//! A run lists the collection page by page:
//!
//! ```text
//! GET {baseUrl}/v1/projects/{projectId}/databases/{databaseId}/documents/{collection}
//!     ?pageSize=N[&pageToken=T][&mask.fieldPaths=a&mask.fieldPaths=b]
//! Authorization: Bearer {token}            (only when a token is configured)
//! ```
//!
//! and follows `nextPageToken` until it is absent. A page looks like
//!
//! ```json
//! { "documents": [ { "name": "projects/p/databases/(default)/documents/employees/e1",
//!                    "fields": { "name": { "stringValue": "Ana" },
//!                                "age":  { "integerValue": "42" } },
//!                    "createTime": "2026-01-02T03:04:05.123456Z",
//!                    "updateTime": "2026-01-02T03:04:05.123456Z" } ],
//!   "nextPageToken": "…" }
//! ```
//!
//! (`documents` is absent for an empty collection). Every field value is a *typed* value:
//! an object with exactly one key naming its type (`stringValue`, `integerValue` — a
//! decimal **string**, because JSON numbers cannot hold every int64 —, `doubleValue`,
//! `booleanValue`, `timestampValue`, `nullValue`, `mapValue`, `arrayValue`,
//! `referenceValue`, `geoPointValue`, `bytesValue`). Records carry plain JSON instead:
//! the id is the last segment of the document `name`, the data is the decoded `fields`
//! plus `_updateTime`. A value of a type this connector does not know is a `source_data`
//! error naming the document and field, never silently dropped.
//!
//! Every run lists the whole collection (`full = true`); with `watermarkField` the
//! largest value of that field is reported as the watermark. The `token` is secret: it is
//! only ever put in the `Authorization` header, never in a message or log.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use entity::ErrorClass;
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::{
    Connector, ConnectorEnv, FetchContext, FetchError, Fetched, FieldError, SourceRecord, http,
};
use crate::net::NetPolicy;

const DEFAULT_BASE_URL: &str = "https://firestore.googleapis.com";
const DEFAULT_DATABASE: &str = "(default)";
const DEFAULT_PAGE_SIZE: u64 = 300;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// A page of 1000 large documents fits comfortably; anything bigger is not a Firestore
/// page we asked for.
const MAX_PAGE_BYTES: u64 = 32 * 1024 * 1024;
/// Ten thousand pages is millions of documents: a source that keeps going is broken
/// (or looping), and the run must end rather than fetch forever.
const MAX_PAGES: u64 = 10_000;
/// Most field paths in `fieldMask` (each is a query parameter of every request).
const MAX_MASK_PATHS: usize = 100;

/// The configuration keys, so that unknown ones can be reported alongside every other
/// problem (serde's `deny_unknown_fields` alone stops at the first one).
const FIELDS: &[&str] = &[
    "projectId",
    "collection",
    "databaseId",
    "fieldMask",
    "token",
    "baseUrl",
    "pageSize",
    "timeoutMs",
    "watermarkField",
];

/// Every field is optional at the serde level so that a config can be deserialized key
/// by key and each problem reported with its own field name; required ones are checked
/// afterwards.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    project_id: Option<String>,
    collection: Option<String>,
    database_id: Option<String>,
    field_mask: Option<Vec<String>>,
    token: Option<String>,
    base_url: Option<String>,
    page_size: Option<u64>,
    timeout_ms: Option<u64>,
    watermark_field: Option<String>,
}

pub struct Firestore {
    /// `{baseUrl}/v1/projects/{p}/databases/{d}/documents/{collection}`, no query.
    list_url: Url,
    mask: Vec<String>,
    token: Option<String>,
    page_size: u64,
    watermark_field: Option<String>,
    http: reqwest::Client,
    policy: NetPolicy,
}

/// Written by hand so that the token can never reach a log through `{:?}`.
impl fmt::Debug for Firestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Firestore")
            .field("list_url", &self.list_url.as_str())
            .field("mask", &self.mask)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("page_size", &self.page_size)
            .field("watermark_field", &self.watermark_field)
            .finish_non_exhaustive()
    }
}

fn project_id_ok(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `(default)` or a named database (lowercase letters, digits, hyphens).
fn database_id_ok(s: &str) -> bool {
    s == DEFAULT_DATABASE || project_id_ok(s)
}

/// Why `path` is not a collection path (`employees`, `outlets/o1/employees`), if it is
/// not. An even number of segments would name a document, not a collection.
fn collection_problem(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Some("segments must not be empty (no leading, trailing or double `/`)");
    }
    // `.` and `..` would be resolved away by URL handling and reach another resource.
    if segments.iter().any(|s| matches!(*s, "." | "..")) {
        return Some("segments must not be `.` or `..`");
    }
    if segments
        .iter()
        .any(|s| s.len() > 1500 || s.chars().any(char::is_control))
    {
        return Some("segments must be at most 1500 bytes without control characters");
    }
    if segments.len().is_multiple_of(2) {
        return Some(
            "must name a collection: an odd number of segments like `employees` or `outlets/o1/employees`",
        );
    }
    None
}

fn field_path_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 1500 && !p.chars().any(char::is_control)
}

/// Characters allowed in a bearer token (visible ASCII): anything else would make an
/// invalid header, which reqwest would only report at send time.
fn token_ok(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Deserializes `config` key by key, so that every bad or unknown key is reported.
fn parse(config: &Value, errors: &mut Vec<FieldError>) -> Config {
    let Some(obj) = config.as_object() else {
        errors.push(FieldError::new("config", "must be a JSON object"));
        return Config::default();
    };
    let mut good = Map::new();
    for (key, value) in obj {
        let field = format!("config.{key}");
        if !FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(
                field,
                format!("unknown field (expected one of {})", FIELDS.join(", ")),
            ));
            continue;
        }
        let single = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
        match serde_json::from_value::<Config>(single) {
            Ok(_) => {
                good.insert(key.clone(), value.clone());
            }
            // serde quotes the offending value; for the secret, say only what is wrong.
            Err(_) if key == "token" => errors.push(FieldError::new(field, "must be a string")),
            Err(e) => errors.push(FieldError::new(field, e.to_string())),
        }
    }
    match serde_json::from_value(Value::Object(good)) {
        Ok(c) => c,
        // Cannot happen (every key was accepted alone), but is not worth a panic.
        Err(e) => {
            errors.push(FieldError::new("config", e.to_string()));
            Config::default()
        }
    }
}

impl Firestore {
    pub fn from_config(
        config: &Value,
        env: Option<&ConnectorEnv>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let c = parse(config, &mut errors);

        match c.project_id.as_deref() {
            None => errors.push(FieldError::new("config.projectId", "is required")),
            Some(p) if !project_id_ok(p) => errors.push(FieldError::new(
                "config.projectId",
                "must be 1 to 63 lowercase letters, digits or hyphens",
            )),
            Some(_) => {}
        }
        match c.collection.as_deref() {
            None => errors.push(FieldError::new("config.collection", "is required")),
            Some(path) => {
                if let Some(why) = collection_problem(path) {
                    errors.push(FieldError::new("config.collection", why));
                }
            }
        }
        let database = c.database_id.as_deref().unwrap_or(DEFAULT_DATABASE);
        if !database_id_ok(database) {
            errors.push(FieldError::new(
                "config.databaseId",
                "must be `(default)` or 1 to 63 lowercase letters, digits or hyphens",
            ));
        }
        if let Some(mask) = &c.field_mask {
            if mask.is_empty() {
                // An empty mask would silently mean "every field": say so instead.
                errors.push(FieldError::new(
                    "config.fieldMask",
                    "must list at least one field path (omit it to fetch every field)",
                ));
            }
            if mask.len() > MAX_MASK_PATHS {
                errors.push(FieldError::new(
                    "config.fieldMask",
                    format!("must list at most {MAX_MASK_PATHS} field paths"),
                ));
            }
            if mask.iter().any(|p| !field_path_ok(p)) {
                errors.push(FieldError::new(
                    "config.fieldMask",
                    "field paths must be non-empty, at most 1500 bytes, without control characters",
                ));
            }
        }
        if c.token.as_deref().is_some_and(|t| !token_ok(t)) {
            errors.push(FieldError::new(
                "config.token",
                "must be a non-empty token of visible ASCII characters",
            ));
        }
        let base = c.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let base = match Url::parse(base) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                errors.push(FieldError::new(
                    "config.baseUrl",
                    format!("scheme `{}` is not http or https", u.scheme()),
                ));
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                errors.push(FieldError::new(
                    "config.baseUrl",
                    "must not have a query or fragment",
                ));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                // Credentials belong in `token`, which is kept secret; a URL is not.
                errors.push(FieldError::new(
                    "config.baseUrl",
                    "must not contain credentials (use `token`)",
                ));
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(FieldError::new(
                    "config.baseUrl",
                    format!("not a URL ({e})"),
                ));
                None
            }
        };
        if c.page_size.is_some_and(|n| !(1..=1000).contains(&n)) {
            errors.push(FieldError::new("config.pageSize", "must be from 1 to 1000"));
        }
        if c.timeout_ms.is_some_and(|t| !(100..=600_000).contains(&t)) {
            errors.push(FieldError::new(
                "config.timeoutMs",
                "must be from 100 to 600000",
            ));
        }
        if c.watermark_field
            .as_deref()
            .is_some_and(|p| !field_path_ok(p))
        {
            errors.push(FieldError::new(
                "config.watermarkField",
                "must be a non-empty field path without control characters",
            ));
        }

        let (Some(base), Some(project), Some(collection), true) = (
            base,
            c.project_id.as_deref(),
            c.collection.as_deref(),
            errors.is_empty(),
        ) else {
            return Err(errors);
        };
        let list_url = list_url(&base, project, database, collection).ok_or_else(|| {
            vec![FieldError::new(
                "config.baseUrl",
                "cannot be a base for the API path",
            )]
        })?;
        let mut mask = c.field_mask.clone().unwrap_or_default();
        // The watermark is read from each document, so a mask must not hide it.
        if let Some(w) = &c.watermark_field
            && !mask.is_empty()
            && !mask.contains(w)
        {
            mask.push(w.clone());
        }
        let policy = env.map(|e| e.net.clone()).unwrap_or_default();
        let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let http = policy.http_client(timeout);
        Ok(Self {
            list_url,
            mask,
            token: c.token,
            page_size: c.page_size.unwrap_or(DEFAULT_PAGE_SIZE),
            watermark_field: c.watermark_field,
            http,
            policy,
        })
    }

    async fn page(&self, ctx: &FetchContext, url: &Url) -> Result<ListResponse, FetchError> {
        self.policy
            .check_url(url)
            .map_err(|e| FetchError::new(ErrorClass::Config, e.to_string()))?;
        let mut req = self
            .http
            .get(url.clone())
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let body = http::send(ctx.gate.as_ref(), req, url, MAX_PAGE_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| {
            FetchError::new(
                ErrorClass::SourceData,
                format!(
                    "response from {} is not a Firestore document list: {e}",
                    http::redact(url)
                ),
            )
        })
    }
}

/// Builds the list URL; each path segment is percent-encoded on its own, so a
/// collection id cannot smuggle in a query or another path.
fn list_url(base: &Url, project: &str, database: &str, collection: &str) -> Option<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend([
            "v1",
            "projects",
            project,
            "databases",
            database,
            "documents",
        ])
        .extend(collection.split('/'));
    Some(url)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(default)]
    documents: Option<Vec<Document>>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    name: String,
    /// Absent for a document without fields.
    #[serde(default)]
    fields: Option<Map<String, Value>>,
    #[serde(default)]
    update_time: Option<String>,
}

/// One step of a field path, kept structured until an error needs to be printed.
enum Seg {
    Key(String),
    Index(usize),
}

/// A value that could not be decoded; `path` is innermost first (it is built while the
/// error travels outwards, so nothing is allocated on the happy path).
struct DecodeError {
    path: Vec<Seg>,
    why: String,
}

impl DecodeError {
    fn new(why: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            why: why.into(),
        }
    }

    fn at(mut self, seg: Seg) -> Self {
        self.path.push(seg);
        self
    }

    /// The path in Firestore field-path syntax: `a.b[2].c`, with keys that are not
    /// simple identifiers back-quoted.
    fn field_path(&self) -> String {
        let mut out = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    let simple = k
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if simple {
                        out.push_str(k);
                    } else {
                        out.push('`');
                        out.push_str(&k.replace('\\', "\\\\").replace('`', "\\`"));
                        out.push('`');
                    }
                }
            }
        }
        out
    }
}

fn decode_fields(fields: &Map<String, Value>) -> Result<Map<String, Value>, DecodeError> {
    fields
        .iter()
        .map(|(k, v)| {
            decode(v)
                .map(|d| (k.clone(), d))
                .map_err(|e| e.at(Seg::Key(k.clone())))
        })
        .collect()
}

/// Decodes one typed Firestore value into plain JSON. Error messages describe the
/// problem but never quote the value (source data may be personal).
fn decode(v: &Value) -> Result<Value, DecodeError> {
    let Some(obj) = v.as_object() else {
        return Err(DecodeError::new("is not a typed value object"));
    };
    let mut entries = obj.iter();
    let (Some((kind, inner)), None) = (entries.next(), entries.next()) else {
        return Err(DecodeError::new(format!(
            "has {} type keys, expected exactly one",
            obj.len()
        )));
    };
    let wrong = || DecodeError::new(format!("{kind} has the wrong JSON type"));
    match kind.as_str() {
        // Strings whose text is kept as given: timestamps stay RFC 3339, references stay
        // resource names, bytes stay base64.
        "stringValue" | "timestampValue" | "referenceValue" | "bytesValue" => match inner {
            Value::String(_) => Ok(inner.clone()),
            _ => Err(wrong()),
        },
        "integerValue" => {
            let n = match inner {
                // int64 travels as a decimal string in proto3 JSON.
                Value::String(s) => s.parse::<i64>().ok(),
                // Some emulators and proxies send a number; accept it when it is whole.
                Value::Number(n) => n.as_i64(),
                _ => None,
            };
            n.map(Value::from)
                .ok_or_else(|| DecodeError::new("integerValue is not a 64-bit integer"))
        }
        "doubleValue" => match inner {
            Value::Number(_) => Ok(inner.clone()),
            // proto3 JSON spells non-finite doubles as strings; JSON has no such number.
            Value::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {
                Ok(Value::Null)
            }
            // A finite double may also arrive as a string; anything else is not a number.
            Value::String(s) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| DecodeError::new("doubleValue is not a number")),
            _ => Err(wrong()),
        },
        "booleanValue" => match inner {
            Value::Bool(_) => Ok(inner.clone()),
            _ => Err(wrong()),
        },
        "nullValue" => match inner {
            Value::Null | Value::String(_) => Ok(Value::Null),
            _ => Err(wrong()),
        },
        "mapValue" => {
            let Some(map) = inner.as_object() else {
                return Err(wrong());
            };
            match map.get("fields") {
                // An empty map omits `fields` altogether.
                None | Some(Value::Null) => Ok(Value::Object(Map::new())),
                Some(Value::Object(fields)) => decode_fields(fields).map(Value::Object),
                Some(_) => Err(DecodeError::new("mapValue.fields is not an object")),
            }
        }
        "arrayValue" => {
            let Some(arr) = inner.as_object() else {
                return Err(wrong());
            };
            match arr.get("values") {
                // An empty array omits `values` altogether.
                None | Some(Value::Null) => Ok(Value::Array(Vec::new())),
                Some(Value::Array(values)) => values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| decode(v).map_err(|e| e.at(Seg::Index(i))))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                Some(_) => Err(DecodeError::new("arrayValue.values is not an array")),
            }
        }
        "geoPointValue" => {
            let Some(point) = inner.as_object() else {
                return Err(wrong());
            };
            // proto3 JSON omits zero values, so a point on the equator has no latitude.
            let coord = |name: &str| match point.get(name) {
                None | Some(Value::Null) => Ok(Value::from(0.0)),
                Some(Value::Number(n)) => Ok(Value::Number(n.clone())),
                Some(_) => Err(DecodeError::new(format!(
                    "geoPointValue.{name} is not a number"
                ))),
            };
            let mut out = Map::new();
            out.insert("latitude".into(), coord("latitude")?);
            out.insert("longitude".into(), coord("longitude")?);
            Ok(Value::Object(out))
        }
        other => Err(DecodeError::new(format!("unknown value type `{other}`"))),
    }
}

/// The document's path below `documents/` (for messages): `outlets/o1/employees/e1`.
fn short_name(name: &str) -> &str {
    name.split_once("/documents/")
        .map_or(name, |(_, rest)| rest)
}

/// Reads `path` from decoded data: the key as written first, then as a dotted path
/// into nested maps (Firestore's `a.b` means field `b` of map `a`).
fn lookup<'a>(data: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = data.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = data.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

fn watermark_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// Orders watermark values. RFC 3339 timestamps are compared as instants because
/// Firestore trims trailing zeros from fractions, so `…:00Z` sorts after the later
/// `…:00.5Z` as text; integers are compared as numbers; anything else as text.
fn compare_marks(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<i64>(), b.parse::<i64>()) {
        return x.cmp(&y);
    }
    a.cmp(b)
}

/// A document's id and fields.
fn to_record(doc: Document) -> Result<(String, Map<String, Value>), FetchError> {
    let id = doc
        .name
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            FetchError::new(
                ErrorClass::SourceData,
                format!("document name `{}` has no id", doc.name),
            )
        })?
        .to_owned();
    let mut data = match &doc.fields {
        None => Map::new(),
        Some(fields) => decode_fields(fields).map_err(|e| {
            FetchError::new(
                ErrorClass::SourceData,
                format!(
                    "document `{}`, field `{}`: {}",
                    short_name(&doc.name),
                    e.field_path(),
                    e.why
                ),
            )
        })?,
    };
    // Metadata goes last so it wins over a user field of the same name: it is what
    // change detection can rely on.
    data.insert(
        "_updateTime".into(),
        doc.update_time.map_or(Value::Null, Value::String),
    );
    Ok((id, data))
}

#[async_trait]
impl Connector for Firestore {
    fn urls(&self) -> Vec<Url> {
        vec![self.list_url.clone()]
    }

    async fn fetch(&self, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        let mut records = Vec::new();
        // Seeded with the last watermark so that it never moves backwards (e.g. when the
        // newest documents were deleted since).
        let mut watermark = ctx.watermark.clone();
        let mut page_token: Option<String> = None;
        for page_no in 1..=MAX_PAGES {
            let mut url = self.list_url.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("pageSize", &self.page_size.to_string());
                if let Some(t) = &page_token {
                    q.append_pair("pageToken", t);
                }
                // Repeated parameters are how the REST API takes a repeated field.
                for path in &self.mask {
                    q.append_pair("mask.fieldPaths", path);
                }
            }
            let page = self.page(ctx, &url).await?;
            let documents = page.documents.unwrap_or_default();
            tracing::debug!(
                page = page_no,
                documents = documents.len(),
                "firestore page"
            );
            for doc in documents {
                let (id, data) = to_record(doc)?;
                if let Some(field) = &self.watermark_field
                    && let Some(mark) = lookup(&data, field).and_then(watermark_text)
                    && watermark
                        .as_deref()
                        .is_none_or(|w| compare_marks(&mark, w) == Ordering::Greater)
                {
                    watermark = Some(mark);
                }
                records.push(SourceRecord::new(id, &Value::Object(data)));
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                None => {
                    return Ok(Fetched {
                        records,
                        full: true,
                        watermark,
                    });
                }
                // The same token again would loop until the page cap: stop at once.
                Some(next) if page_token.as_deref() == Some(next.as_str()) => {
                    return Err(FetchError::new(
                        ErrorClass::SourceData,
                        format!(
                            "page {page_no} returned the same nextPageToken as the page before"
                        ),
                    ));
                }
                Some(next) => page_token = Some(next),
            }
        }
        Err(FetchError::new(
            ErrorClass::SourceData,
            format!("the collection has more than {MAX_PAGES} pages"),
        ))
    }
}
