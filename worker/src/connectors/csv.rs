//! `csv`: a CSV file over HTTP(S), typically a Google Sheets "publish to web" export
//! (`…/pub?output=csv`), an S3/GCS object or an export endpoint.
//!
//! The body is RFC 4180 text in UTF-8 (a leading BOM is dropped): records end with CRLF
//! or LF, fields are separated by `delimiter`, and a field that starts with `"` is
//! quoted — it may contain the delimiter, line breaks and `""` for a quote. The first
//! row is the header; every later row becomes a JSON object keyed by it. Cells are
//! strings unless `columns` gives a type; an empty cell is `null`. A row whose typed cell
//! does not parse is skipped (and logged) rather than failing the run, unless every row
//! is bad. The id is `idColumn`'s cell, or else the 1-based data-row number, which is
//! also stored as `google_row_id` so it stays visible in the record.
//!
//! The header-to-record logic ([`Table`]) is shared with `google_sheets`.

use std::collections::{BTreeMap, HashSet};
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

const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Where the row number goes when there is no id column.
pub(crate) const ROW_ID_FIELD: &str = "google_row_id";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    id_column: Option<String>,
    // Strings, not enums: a bad value must become a field error next to the others
    // instead of one opaque deserialization error.
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
    /// Secret: read apart from the rest (see `from_config`).
    #[serde(skip)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_response_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    String,
    Number,
    Integer,
    Bool,
    Date,
    DateTime,
}

impl ColumnType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "number" => Self::Number,
            "integer" => Self::Integer,
            "bool" => Self::Bool,
            "date" => Self::Date,
            "datetime" => Self::DateTime,
            _ => return None,
        })
    }

    /// The typed value of a non-empty cell, or why it is not one (without the value:
    /// cells can hold personal data and the reason ends up in logs).
    fn convert(self, cell: &str) -> Result<Value, &'static str> {
        let t = cell.trim();
        match self {
            Self::String => Ok(Value::String(cell.to_owned())),
            Self::Integer => t
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "not an integer"),
            Self::Number => {
                if let Ok(i) = t.parse::<i64>() {
                    return Ok(Value::from(i));
                }
                // `f64::from_str` accepts "inf" and "NaN", which JSON cannot carry.
                t.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or("not a number")
            }
            Self::Bool => match t.to_ascii_lowercase().as_str() {
                // Sheets exports TRUE/FALSE; 1/0 is what most other tools write.
                "true" | "1" => Ok(Value::Bool(true)),
                "false" | "0" => Ok(Value::Bool(false)),
                _ => Err("not a boolean"),
            },
            // Normalised so "2026-1-5" and "2026-01-05" compare (and hash) equal.
            Self::Date => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                .map_err(|_| "not a date (YYYY-MM-DD)"),
            Self::DateTime => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
                .map_err(|_| "not an RFC 3339 date-time"),
        }
    }
}

pub struct Csv {
    url: Url,
    id_column: Option<String>,
    delimiter: u8,
    columns: BTreeMap<String, ColumnType>,
    headers: BTreeMap<String, String>,
    max_bytes: u64,
    http: reqwest::Client,
    policy: NetPolicy,
}

pub(crate) fn check_id_column(id_column: Option<&str>, errors: &mut Vec<FieldError>) {
    if id_column.is_some_and(|c| c.trim().is_empty()) {
        errors.push(FieldError::new(
            "config.idColumn",
            "must name a header column",
        ));
    }
}

impl Csv {
    pub fn from_config(
        config: &Value,
        env: Option<&ConnectorEnv>,
    ) -> Result<Self, Vec<FieldError>> {
        // `headers` is secret: read on its own, with a message that never quotes it.
        let mut errors = Vec::new();
        let headers = super::secret_field(
            config,
            "headers",
            super::http_json::HEADERS_SHAPE,
            &mut errors,
        )
        .unwrap_or_default();
        let mut c: Config = serde_json::from_value(super::without_secrets(config, &["headers"]))
            .map_err(|e| {
                errors.push(FieldError::new("config", e.to_string()));
                std::mem::take(&mut errors)
            })?;
        c.headers = headers;
        let url = http::http_url(
            "config.url",
            &c.url,
            "send them as an `Authorization` header in `headers`, which is kept secret",
            &mut errors,
        );
        check_id_column(c.id_column.as_deref(), &mut errors);
        let delimiter = match c.delimiter.as_deref().map(str::as_bytes) {
            None => b',',
            // The quote and line breaks already mean something in the format.
            Some(&[d]) if d.is_ascii() && !matches!(d, b'"' | b'\r' | b'\n') => d,
            Some(_) => {
                errors.push(FieldError::new(
                    "config.delimiter",
                    "must be one ASCII character other than a quote or a line break",
                ));
                b','
            }
        };
        let mut columns = BTreeMap::new();
        for (name, ty) in &c.columns {
            match ColumnType::parse(ty) {
                Some(t) => {
                    columns.insert(name.trim().to_owned(), t);
                }
                None => errors.push(FieldError::new(
                    "config.columns",
                    format!(
                        "column `{name}`: type `{ty}` is not string, number, integer, bool, date or datetime"
                    ),
                )),
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
        http::check_timeout(c.timeout_ms, &mut errors);
        http::check_max_bytes(c.max_response_bytes, &mut errors);
        let (Some(url), true) = (url, errors.is_empty()) else {
            return Err(errors);
        };
        let policy = env.map(|e| e.net.clone()).unwrap_or_default();
        let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        Ok(Self {
            url,
            id_column: c.id_column.map(|s| s.trim().to_owned()),
            delimiter,
            columns,
            headers: c.headers,
            max_bytes: c.max_response_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            http: policy.http_client(timeout),
            policy,
        })
    }
}

#[async_trait]
impl Connector for Csv {
    fn urls(&self) -> Vec<Url> {
        vec![self.url.clone()]
    }

    async fn fetch(&self, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        self.policy
            .check_url(&self.url)
            .map_err(|e| FetchError::new(ErrorClass::Config, e.to_string()))?;
        let mut req = self
            .http
            .get(self.url.clone())
            .header("accept", "text/csv, text/plain;q=0.9, */*;q=0.1");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let body = http::send(ctx.gate.as_ref(), req, &self.url, self.max_bytes).await?;
        let at = http::redact(&self.url);
        let bad = |m: String| FetchError::new(ErrorClass::SourceData, format!("{at}: {m}"));
        // Decoding lossily would silently corrupt every non-ASCII value.
        let text = std::str::from_utf8(&body)
            .map_err(|e| bad(format!("not UTF-8 text (at byte {})", e.valid_up_to())))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rows = Reader::new(text, self.delimiter);
        let header = match rows.next() {
            None => {
                return Ok(Fetched {
                    records: Vec::new(),
                    full: true,
                    watermark: None,
                });
            }
            Some(h) => h.map_err(bad)?,
        };
        let mut table = Table::new(header, self.id_column.as_deref(), true).map_err(bad)?;
        let missing: Vec<&str> = self
            .columns
            .keys()
            .filter(|name| {
                !table
                    .names
                    .iter()
                    .any(|n| n.as_deref() == Some(name.as_str()))
            })
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "typed column(s) `{}` not in the header row",
                missing.join("`, `")
            )));
        }
        // Per position: the column's name and type, for converting and for messages.
        let types: Vec<Option<(String, ColumnType)>> = table
            .names
            .iter()
            .map(|n| {
                let n = n.as_ref()?;
                Some((n.clone(), *self.columns.get(n)?))
            })
            .collect();
        for row in rows {
            let cells = row
                .map_err(&bad)?
                .into_iter()
                .enumerate()
                .map(|(i, cell)| match types.get(i).and_then(Option::as_ref) {
                    None | Some((_, ColumnType::String)) if cell.is_empty() => Ok(Value::Null),
                    None | Some((_, ColumnType::String)) => Ok(Value::String(cell)),
                    // Typed cells are trimmed before parsing, so blank means empty.
                    Some(_) if cell.trim().is_empty() => Ok(Value::Null),
                    Some((name, ty)) => ty
                        .convert(&cell)
                        .map_err(|why| format!("column `{name}` is {why}")),
                })
                .collect();
            table.push(cells);
        }
        Ok(Fetched {
            records: table.finish(&at)?,
            full: true,
            watermark: None,
        })
    }
}

/// Turns a header row and data rows into records: validates the header, picks the id,
/// and counts the rows that had to be skipped.
pub(crate) struct Table {
    /// Field name per column; `None` for a column with an empty header cell, which is
    /// ignored (spreadsheets often carry unlabelled helper columns).
    pub(crate) names: Vec<Option<String>>,
    id_index: Option<usize>,
    /// Whether a non-empty cell right of the header is an error (CSV: a quoting mistake
    /// that shifted values) or just an unlabelled column (Sheets trims the header row).
    strict_width: bool,
    row_no: u64,
    records: Vec<SourceRecord>,
    skipped: usize,
    first_error: Option<String>,
}

impl Table {
    pub(crate) fn new(
        header: Vec<String>,
        id_column: Option<&str>,
        strict_width: bool,
    ) -> Result<Self, String> {
        let names: Vec<Option<String>> = header
            .into_iter()
            .map(|h| Some(h.trim().to_owned()).filter(|h| !h.is_empty()))
            .collect();
        let mut seen = HashSet::new();
        for n in names.iter().flatten() {
            if !seen.insert(n.as_str()) {
                return Err(format!("duplicate column `{n}` in the header row"));
            }
        }
        if seen.is_empty() {
            return Err("the header row has no column names".into());
        }
        let id_index = match id_column {
            Some(id) => Some(
                names
                    .iter()
                    .position(|n| n.as_deref() == Some(id))
                    .ok_or_else(|| format!("id column `{id}` is not in the header row"))?,
            ),
            None if seen.contains(ROW_ID_FIELD) => {
                return Err(format!(
                    "column `{ROW_ID_FIELD}` would be overwritten by the row number; set idColumn"
                ));
            }
            None => None,
        };
        Ok(Self {
            names,
            id_index,
            strict_width,
            row_no: 0,
            records: Vec::new(),
            skipped: 0,
            first_error: None,
        })
    }

    /// Adds the next data row: its cells (empty ones already `null`), or why one of
    /// them did not convert.
    pub(crate) fn push(&mut self, cells: Result<Vec<Value>, String>) {
        // Counted even for blank and bad rows, so ids stay the row's position.
        self.row_no += 1;
        match cells.and_then(|c| self.record(c)) {
            Ok(Some(r)) => self.records.push(r),
            Ok(None) => {}
            Err(why) => {
                self.skipped += 1;
                self.first_error
                    .get_or_insert_with(|| format!("data row {}: {why}", self.row_no));
            }
        }
    }

    fn record(&self, mut cells: Vec<Value>) -> Result<Option<SourceRecord>, String> {
        // Exports pad ranges with empty rows; they are not records.
        if cells.iter().all(Value::is_null) {
            return Ok(None);
        }
        let width = self.names.len();
        if self.strict_width && cells.iter().skip(width).any(|c| !c.is_null()) {
            return Err(format!(
                "has {} cells but the header has {width}",
                cells.len()
            ));
        }
        cells.resize(width.max(cells.len()), Value::Null);
        let external_id = match self.id_index {
            Some(i) => match &cells[i] {
                Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err("has no id".into()),
            },
            None => self.row_no.to_string(),
        };
        let mut data: Map<String, Value> = self
            .names
            .iter()
            .zip(cells)
            .filter_map(|(n, v)| Some((n.clone()?, v)))
            .collect();
        if self.id_index.is_none() {
            data.insert(ROW_ID_FIELD.into(), Value::from(self.row_no));
        }
        Ok(Some(SourceRecord::new(external_id, &Value::Object(data))))
    }

    /// The records; an error if every non-blank row was bad (then the source, not the
    /// rows, is what is wrong, and an empty success would soft-delete everything).
    pub(crate) fn finish(self, source: &str) -> Result<Vec<SourceRecord>, FetchError> {
        let first = self.first_error.unwrap_or_default();
        if self.skipped > 0 && self.records.is_empty() {
            return Err(FetchError::new(
                ErrorClass::SourceData,
                format!(
                    "{source}: all {} data rows are invalid ({first})",
                    self.skipped
                ),
            ));
        }
        if self.skipped > 0 {
            tracing::warn!(
                source,
                skipped = self.skipped,
                kept = self.records.len(),
                first = %first,
                "skipped rows whose cells did not parse"
            );
        }
        Ok(self.records)
    }
}

/// An RFC 4180 reader yielding one row (its fields) at a time.
///
/// Lenient where that is unambiguous: a bare CR also ends a record, and a quote in the
/// middle of an unquoted field is kept as text. Strict where guessing would misalign
/// every later row: an unterminated quoted field, or text after a closing quote.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
    delimiter: u8,
    line: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str, delimiter: u8) -> Self {
        Self {
            text,
            pos: 0,
            delimiter,
            line: 1,
        }
    }

    fn fail(&mut self, why: &str) -> Option<Result<Vec<String>, String>> {
        self.pos = self.text.len();
        Some(Err(format!("line {}: {why}", self.line)))
    }
}

// Positions only ever stop at ASCII bytes (delimiter, quote, CR, LF), which are never
// part of a multi-byte UTF-8 sequence, so slicing `text` at them is always valid.
impl Iterator for Reader<'_> {
    type Item = Result<Vec<String>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        if self.pos >= bytes.len() {
            return None;
        }
        let mut row = Vec::new();
        loop {
            let mut field = String::new();
            if bytes.get(self.pos) == Some(&b'"') {
                self.pos += 1;
                loop {
                    let rest = &self.text[self.pos..];
                    let Some(q) = rest.find('"') else {
                        return self.fail("quoted field is never closed");
                    };
                    field.push_str(&rest[..q]);
                    self.line += rest[..q].matches('\n').count();
                    self.pos += q + 1;
                    if bytes.get(self.pos) == Some(&b'"') {
                        field.push('"');
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                match bytes.get(self.pos) {
                    None | Some(b'\r' | b'\n') => {}
                    Some(&d) if d == self.delimiter => {}
                    Some(_) => return self.fail("text after a closing quote"),
                }
            } else {
                let rest = &bytes[self.pos..];
                let len = rest
                    .iter()
                    .position(|&b| b == self.delimiter || b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                field.push_str(&self.text[self.pos..self.pos + len]);
                self.pos += len;
            }
            row.push(field);
            match bytes.get(self.pos) {
                Some(&d) if d == self.delimiter => self.pos += 1,
                Some(b'\r') => {
                    self.pos += 1;
                    if bytes.get(self.pos) == Some(&b'\n') {
                        self.pos += 1;
                    }
                    self.line += 1;
                    break;
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    break;
                }
                _ => break,
            }
        }
        Some(Ok(row))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str, d: u8) -> Result<Vec<Vec<String>>, String> {
        Reader::new(text, d).collect()
    }

    #[test]
    fn reader_handles_the_rfc_4180_corners() {
        let rows = parse("a,\"b,\"\"c\"\"\r\nd\",\r\n,x\rlast", b',').unwrap();
        assert_eq!(
            rows,
            vec![vec!["a", "b,\"c\"\r\nd", ""], vec!["", "x"], vec!["last"]]
        );
        // A trailing line break does not make an extra empty row.
        assert_eq!(parse("h\n1\n", b',').unwrap().len(), 2);
        assert_eq!(parse("a;b\t", b';').unwrap(), vec![vec!["a", "b\t"]]);
        assert_eq!(
            parse("5\" pipe,ok", b',').unwrap(),
            vec![vec!["5\" pipe", "ok"]]
        );
        assert!(parse("", b',').unwrap().is_empty());
        assert_eq!(parse("é,ü\n", b',').unwrap(), vec![vec!["é", "ü"]]);
    }

    #[test]
    fn reader_refuses_what_would_misalign_rows() {
        let e = parse("a\n\"b\nc", b',').unwrap_err();
        assert!(e.contains("never closed"), "{e}");
        let e = parse("h\n1\n\"x\"y,2", b',').unwrap_err();
        assert_eq!(e, "line 3: text after a closing quote");
    }

    #[test]
    fn types_convert_or_say_why_not() {
        assert_eq!(ColumnType::Number.convert(" 12 "), Ok(Value::from(12)));
        assert_eq!(ColumnType::Number.convert("1.5"), Ok(Value::from(1.5)));
        assert!(ColumnType::Number.convert("NaN").is_err());
        assert!(ColumnType::Integer.convert("1.5").is_err());
        assert_eq!(ColumnType::Bool.convert("TRUE"), Ok(Value::Bool(true)));
        assert_eq!(
            ColumnType::Date.convert("2026-1-5"),
            Ok(Value::from("2026-01-05"))
        );
        assert!(ColumnType::Date.convert("05/01/2026").is_err());
        assert_eq!(
            ColumnType::DateTime.convert("2026-01-05T10:00:00+02:00"),
            Ok(Value::from("2026-01-05T10:00:00+02:00"))
        );
        assert!(ColumnType::DateTime.convert("2026-01-05 10:00").is_err());
    }
}
