//! `google_sheets`: one range of a spreadsheet through the Sheets API v4
//! (`spreadsheets.values.get`).
//!
//! `GET {baseUrl}/v4/spreadsheets/{spreadsheetId}/values/{range}?majorDimension=ROWS`
//! answers `{"range": "Sheet1!A1:F9", "majorDimension": "ROWS", "values": [[…], …]}`:
//! the first row is the header, the rest are data rows. The API drops trailing empty
//! cells (rows can be shorter than the header: the missing cells are `null`), trailing
//! empty rows, and `values` itself for an empty range. Cells are formatted strings; an
//! empty one is `null`. Ids work as in `csv` (`idColumn`, else the data-row number, also
//! stored as `google_row_id`).
//!
//! Auth is an API key (`key` query parameter, for sheets shared by link) or an OAuth
//! bearer `token`; both are secrets and never appear in errors or logs.

use std::time::Duration;

use async_trait::async_trait;
use entity::ErrorClass;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::csv::{Table, check_id_column};
use super::http::{check_timeout, http_url};
use super::{Connector, ConnectorEnv, FetchContext, FetchError, Fetched, FieldError, http};
use crate::net::NetPolicy;

const DEFAULT_BASE_URL: &str = "https://sheets.googleapis.com";
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const MAX_BYTES: u64 = 50 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    spreadsheet_id: String,
    range: String,
    // Taken as raw values: serde's type errors quote the offending value, and these
    // hold secrets.
    #[serde(default)]
    api_key: Option<Value>,
    #[serde(default)]
    token: Option<Value>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    id_column: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
enum Auth {
    ApiKey(String),
    Bearer(String),
}

pub struct GoogleSheets {
    base_url: Url,
    /// The full request URL without the key (added per request).
    values_url: Url,
    auth: Auth,
    id_column: Option<String>,
    http: reqwest::Client,
    policy: NetPolicy,
}

/// Present, a string, and not empty (if present at all).
fn secret(field: &str, v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        _ => {
            errors.push(FieldError::new(field, "must be a non-empty string"));
            None
        }
    }
}

impl GoogleSheets {
    pub fn from_config(
        config: &Value,
        env: Option<&ConnectorEnv>,
    ) -> Result<Self, Vec<FieldError>> {
        let c: Config = serde_json::from_value(config.clone())
            .map_err(|e| vec![FieldError::new("config", e.to_string())])?;
        let mut errors = Vec::new();
        if c.spreadsheet_id.is_empty()
            || !c
                .spreadsheet_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(FieldError::new(
                "config.spreadsheetId",
                "must be the id from the sheet's URL (letters, digits, - and _)",
            ));
        }
        if c.range.trim().is_empty() {
            errors.push(FieldError::new(
                "config.range",
                "must be an A1 range such as Sheet1!A1:F",
            ));
        }
        let api_key = secret("config.apiKey", c.api_key.as_ref(), &mut errors);
        let token = secret("config.token", c.token.as_ref(), &mut errors);
        let auth = match (c.api_key.is_some(), c.token.is_some()) {
            (true, true) => {
                errors.push(FieldError::new(
                    "config.token",
                    "give apiKey or token, not both",
                ));
                None
            }
            (false, false) => {
                errors.push(FieldError::new(
                    "config.apiKey",
                    "an apiKey or a token is required",
                ));
                None
            }
            _ => api_key.map(Auth::ApiKey).or(token.map(Auth::Bearer)),
        };
        let base_url = http_url(
            "config.baseUrl",
            c.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
            "use `apiKey` or `token`, which are kept secret",
            &mut errors,
        );
        check_id_column(c.id_column.as_deref(), &mut errors);
        check_timeout(c.timeout_ms, &mut errors);
        let (Some(base_url), Some(auth), true) = (base_url, auth, errors.is_empty()) else {
            return Err(errors);
        };
        let mut values_url = base_url.clone();
        values_url.set_query(None);
        values_url
            .path_segments_mut()
            .map_err(|()| vec![FieldError::new("config.baseUrl", "cannot take a path")])?
            .pop_if_empty()
            // Each one is percent-encoded as a single segment: a `/` or `?` in a sheet
            // name cannot change the request.
            .extend([
                "v4",
                "spreadsheets",
                c.spreadsheet_id.as_str(),
                "values",
                c.range.trim(),
            ]);
        values_url
            .query_pairs_mut()
            .append_pair("majorDimension", "ROWS");
        let policy = env.map(|e| e.net.clone()).unwrap_or_default();
        let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        Ok(Self {
            base_url,
            values_url,
            auth,
            id_column: c.id_column.map(|s| s.trim().to_owned()),
            http: policy.http_client(timeout),
            policy,
        })
    }

    async fn get(&self, ctx: &FetchContext) -> Result<Vec<u8>, FetchError> {
        let mut url = self.values_url.clone();
        let req = match &self.auth {
            Auth::ApiKey(key) => {
                url.query_pairs_mut().append_pair("key", key);
                self.http.get(url.clone())
            }
            Auth::Bearer(token) => self.http.get(url.clone()).bearer_auth(token),
        }
        .header("accept", "application/json");
        // `http::send` redacts the query string; scrubbing the secret as well covers a
        // transport error whose text quotes the full URL.
        http::send(ctx.gate.as_ref(), req, &url, MAX_BYTES)
            .await
            .map_err(|mut e| {
                let (Auth::ApiKey(s) | Auth::Bearer(s)) = &self.auth;
                e.message = crate::secrets::redact(&e.message, s);
                e
            })
    }
}

/// The `spreadsheets.values.get` response; other fields are ignored.
#[derive(Deserialize)]
struct ValueRange {
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

/// A cell as a record value: empty strings are `null`; numbers and booleans (when the
/// sheet is read unformatted) are kept.
fn cell(v: Value) -> Result<Value, String> {
    match v {
        Value::String(s) if s.is_empty() => Ok(Value::Null),
        Value::Array(_) | Value::Object(_) => Err("has a cell that is not a value".into()),
        v => Ok(v),
    }
}

fn header_name(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Connector for GoogleSheets {
    fn urls(&self) -> Vec<Url> {
        vec![self.base_url.clone()]
    }

    async fn fetch(&self, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        self.policy
            .check_url(&self.values_url)
            .map_err(|e| FetchError::new(ErrorClass::Config, e.to_string()))?;
        let body = self.get(ctx).await?;
        let at = http::redact(&self.values_url);
        let bad = |m: String| FetchError::new(ErrorClass::SourceData, format!("{at}: {m}"));
        let resp: ValueRange = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("not a Sheets values response ({e})")))?;
        let mut rows = resp.values.into_iter();
        let Some(header) = rows.next() else {
            return Ok(Fetched {
                records: Vec::new(),
                full: true,
                watermark: None,
            });
        };
        let header = header.into_iter().map(header_name).collect();
        let mut table = Table::new(header, self.id_column.as_deref(), false).map_err(bad)?;
        for row in rows {
            table.push(row.into_iter().map(cell).collect());
        }
        Ok(Fetched {
            records: table.finish(&at)?,
            full: true,
            watermark: None,
        })
    }
}
