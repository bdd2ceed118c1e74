//! Each connector's configuration fields, described for forms (the web console builds
//! its "new integration" form from this). Validation stays in the connectors
//! themselves (`connectors::validate`); this only says which fields exist, what type
//! each one has, and which hold secrets. The test below keeps the two in step.

use entity::ConnectorKind;

/// How a field is entered and how its text becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string.
    Text,
    /// Several lines of text (a query), sent as a string.
    TextArea,
    /// A whole number.
    Integer,
    /// `true` / `false` (a checkbox).
    Bool,
    /// One of the given strings.
    Choice(&'static [&'static str]),
    /// A JSON value (an object or a list), typed as JSON text.
    Json,
}

/// One configuration field of a connector.
#[derive(Debug, Clone, Copy)]
pub struct ConfigField {
    /// The camelCase key in `config`.
    pub name: &'static str,
    pub label: &'static str,
    pub ty: FieldType,
    pub required: bool,
    /// Write-only: encrypted at rest and never shown (see `secret_fields`).
    pub secret: bool,
    pub help: &'static str,
    /// An example value, shown as the placeholder.
    pub example: &'static str,
}

const fn f(
    name: &'static str,
    label: &'static str,
    ty: FieldType,
    required: bool,
    help: &'static str,
    example: &'static str,
) -> ConfigField {
    ConfigField {
        name,
        label,
        ty,
        required,
        secret: false,
        help,
        example,
    }
}

const fn secret(mut c: ConfigField) -> ConfigField {
    c.secret = true;
    c
}

use FieldType::{Bool, Choice, Integer, Json, Text, TextArea};

const SYNTHETIC: &[ConfigField] = &[
    f(
        "records",
        "Records",
        Integer,
        false,
        "How many records each run produces (default 10).",
        "25",
    ),
    f(
        "latencyMs",
        "Latency (ms)",
        Integer,
        false,
        "Simulated fetch time.",
        "0",
    ),
    f(
        "failFirst",
        "Fail first runs",
        Integer,
        false,
        "The first N runs fail.",
        "0",
    ),
    f(
        "failAlways",
        "Always fail",
        Bool,
        false,
        "Every run fails.",
        "",
    ),
    f(
        "errorClass",
        "Error class",
        Choice(&[
            "transient",
            "rate_limited",
            "auth",
            "config",
            "source_data",
            "timeout",
        ]),
        false,
        "The class of the simulated failures.",
        "transient",
    ),
];

const HTTP_JSON: &[ConfigField] = &[
    f(
        "url",
        "URL",
        Text,
        true,
        "The endpoint that returns JSON.",
        "https://api.example.com/orders",
    ),
    f(
        "recordsPointer",
        "Records pointer",
        Text,
        true,
        "JSON pointer to the array of records.",
        "/data",
    ),
    f(
        "idPointer",
        "Id pointer",
        Text,
        true,
        "JSON pointer to a record's id, inside a record.",
        "/id",
    ),
    f(
        "method",
        "Method",
        Choice(&["GET", "POST"]),
        false,
        "HTTP method.",
        "GET",
    ),
    secret(f(
        "headers",
        "Headers",
        Json,
        false,
        "Extra request headers (credentials too), as a JSON object.",
        "{\"Accept\": \"application/json\"}",
    )),
    secret(f(
        "auth",
        "Authentication",
        Json,
        false,
        "{\"type\":\"bearer\",\"token\":…}, {\"type\":\"apiKey\",\"header\",\"value\"} or {\"type\":\"basic\",\"username\",\"password\"}.",
        "{\"type\": \"bearer\", \"token\": \"…\"}",
    )),
    f(
        "pagination",
        "Pagination",
        Json,
        false,
        "{\"type\":\"nextLink\",\"pointer\"}, {\"type\":\"cursor\",\"pointer\",\"param\"} or {\"type\":\"page\",\"param\"}.",
        "{\"type\": \"nextLink\", \"pointer\": \"/next\"}",
    ),
    f(
        "sinceParam",
        "Since parameter",
        Text,
        false,
        "Query parameter carrying the watermark (incremental syncs).",
        "updated_since",
    ),
    f(
        "watermarkPointer",
        "Watermark pointer",
        Text,
        false,
        "JSON pointer to a record's change time.",
        "/updatedAt",
    ),
    f(
        "timeoutMs",
        "Timeout (ms)",
        Integer,
        false,
        "Per-request timeout.",
        "30000",
    ),
    f(
        "maxPages",
        "Max pages",
        Integer,
        false,
        "Most pages one run fetches.",
        "100",
    ),
];

const CSV: &[ConfigField] = &[
    f(
        "url",
        "URL",
        Text,
        true,
        "A CSV file, or a Google Sheets \"publish to web\" CSV link.",
        "https://example.com/export.csv",
    ),
    f(
        "idColumn",
        "Id column",
        Text,
        false,
        "Column holding each row's id (else the row number).",
        "id",
    ),
    f(
        "delimiter",
        "Delimiter",
        Text,
        false,
        "One character (default ,).",
        ",",
    ),
    f(
        "columns",
        "Column types",
        Json,
        false,
        "Types by column: string, number, integer, bool, date, datetime.",
        "{\"amount\": \"number\"}",
    ),
    secret(f(
        "headers",
        "Request headers",
        Json,
        false,
        "Headers sent with the request (credentials), as a JSON object.",
        "{\"Authorization\": \"Bearer …\"}",
    )),
    f(
        "timeoutMs",
        "Timeout (ms)",
        Integer,
        false,
        "Request timeout.",
        "30000",
    ),
];

const GOOGLE_SHEETS: &[ConfigField] = &[
    f(
        "spreadsheetId",
        "Spreadsheet id",
        Text,
        true,
        "From the sheet's URL.",
        "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
    ),
    f("range", "Range", Text, true, "A1 notation.", "Sheet1!A1:F"),
    secret(f(
        "apiKey",
        "API key",
        Text,
        false,
        "A Google API key (or a token below).",
        "",
    )),
    secret(f(
        "token",
        "OAuth token",
        Text,
        false,
        "A bearer token.",
        "",
    )),
    f(
        "idColumn",
        "Id column",
        Text,
        false,
        "Header of the column holding ids.",
        "id",
    ),
];

const FIRESTORE: &[ConfigField] = &[
    f(
        "projectId",
        "Project id",
        Text,
        true,
        "Google Cloud project.",
        "my-project",
    ),
    f(
        "collection",
        "Collection",
        Text,
        true,
        "Collection to read.",
        "orders",
    ),
    f(
        "fieldMask",
        "Field mask",
        Json,
        false,
        "Fields to read, as a JSON list.",
        "[\"total\", \"status\"]",
    ),
    secret(f(
        "token",
        "OAuth token",
        Text,
        false,
        "A bearer token.",
        "",
    )),
    f(
        "watermarkField",
        "Watermark field",
        Text,
        false,
        "A timestamp field for incremental syncs.",
        "updatedAt",
    ),
    f(
        "pageSize",
        "Page size",
        Integer,
        false,
        "Documents per request.",
        "300",
    ),
];

const SQL: &[ConfigField] = &[
    secret(f(
        "url",
        "Database URL",
        Text,
        true,
        "postgres://user:password@host/db or mysql://…",
        "postgres://reader:…@db.internal/shop",
    )),
    f(
        "query",
        "Query",
        TextArea,
        true,
        "One SELECT.",
        "SELECT id, total, updated_at FROM orders",
    ),
    f(
        "idColumn",
        "Id column",
        Text,
        true,
        "Column holding each row's id.",
        "id",
    ),
    f(
        "watermarkColumn",
        "Watermark column",
        Text,
        false,
        "Incremental syncs: rows above the last value.",
        "updated_at",
    ),
    f(
        "maxRows",
        "Max rows",
        Integer,
        false,
        "Most rows per run (default 100000).",
        "100000",
    ),
    f(
        "timeoutMs",
        "Timeout (ms)",
        Integer,
        false,
        "Statement timeout (default 30000).",
        "30000",
    ),
];

/// Every connector kind, in the order a form offers them.
pub const KINDS: &[ConnectorKind] = &[
    ConnectorKind::Synthetic,
    ConnectorKind::HttpJson,
    ConnectorKind::Csv,
    ConnectorKind::GoogleSheets,
    ConnectorKind::Firestore,
    ConnectorKind::Sql,
];

/// The configuration fields of `kind` a form shows.
pub fn config_fields(kind: ConnectorKind) -> &'static [ConfigField] {
    match kind {
        ConnectorKind::Synthetic => SYNTHETIC,
        ConnectorKind::HttpJson => HTTP_JSON,
        ConnectorKind::Csv => CSV,
        ConnectorKind::GoogleSheets => GOOGLE_SHEETS,
        ConnectorKind::Firestore => FIRESTORE,
        ConnectorKind::Sql => SQL,
    }
}

/// A one-line description of a connector kind.
pub fn describe(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Synthetic => "Deterministic made-up records, for demos and tests",
        ConnectorKind::HttpJson => "A REST/JSON API",
        ConnectorKind::Csv => "A CSV file or a published Google Sheet",
        ConnectorKind::GoogleSheets => "Google Sheets through the Sheets API",
        ConnectorKind::Firestore => "A Firestore collection",
        ConnectorKind::Sql => "A PostgreSQL or MySQL/MariaDB query",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field the schema names is one the connector accepts, and the secret flags
    /// match `secret_fields`.
    #[test]
    fn schema_matches_the_connectors() {
        for &kind in KINDS {
            let fields = config_fields(kind);
            let secrets: Vec<&str> = fields.iter().filter(|f| f.secret).map(|f| f.name).collect();
            let mut expected = super::super::secret_fields(kind).to_vec();
            expected.sort_unstable();
            let mut got = secrets.clone();
            got.sort_unstable();
            assert_eq!(got, expected, "{kind:?} secret fields");
            for field in fields {
                let config = serde_json::json!({ field.name: serde_json::Value::Null });
                let errs = super::super::validate(kind, &config)
                    .err()
                    .unwrap_or_default();
                assert!(
                    !errs.iter().any(|e| e.message.contains("unknown field")),
                    "{kind:?}.{} is not a field the connector knows: {errs:?}",
                    field.name
                );
            }
        }
    }
}
