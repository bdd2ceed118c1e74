//! One fetched record, held as the text the store writes rather than as a JSON tree.
//!
//! A run holds every record of the source until its finish transaction (the writes are
//! fenced, so they cannot start earlier). A `serde_json::Value` object costs about 1 KB
//! for a six-field record (a B-tree node plus a heap string per key and value); its
//! compact JSON text costs what it prints, ~150 bytes. So a connector turns each record
//! into [`RecordJson`] as soon as it has the record's id, and the tree is dropped.
//!
//! The text is canonical — serde_json's compact form of a `Value`, object keys sorted —
//! so equal content always has equal text and the same content hash, which is computed
//! here once (the store compares it with the stored one and writes it beside the data).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One record as the source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub external_id: String,
    pub data: RecordJson,
}

impl SourceRecord {
    pub fn new(external_id: impl Into<String>, data: &Value) -> Self {
        Self {
            external_id: external_id.into(),
            data: RecordJson::new(data),
        }
    }
}

/// A record's data as canonical JSON text with its content hash.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordJson {
    text: Box<str>,
    hash: [u8; 32],
}

impl RecordJson {
    pub fn new(data: &Value) -> Self {
        let text = data.to_string().into_boxed_str();
        let hash = Sha256::digest(text.as_bytes()).into();
        Self { text, hash }
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// SHA-256 of [`Self::as_str`].
    pub fn content_hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The content hash as stored in `records.content_hash` (lowercase hex).
    pub fn content_hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// The data as a tree again (tests, and anything that must look inside).
    pub fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.text)
    }

    pub fn into_string(self) -> String {
        self.text.into_string()
    }
}

impl From<&Value> for RecordJson {
    fn from(data: &Value) -> Self {
        Self::new(data)
    }
}

impl From<Value> for RecordJson {
    fn from(data: Value) -> Self {
        Self::new(&data)
    }
}

/// Equal content (for tests: it parses the text).
impl PartialEq<Value> for RecordJson {
    fn eq(&self, other: &Value) -> bool {
        self.to_value().is_ok_and(|v| v == *other)
    }
}

impl std::fmt::Debug for RecordJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_text_and_hash_do_not_depend_on_key_order() {
        let a: Value = serde_json::from_str(r#"{ "b": 1, "a": [true, null, 2.5] }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":[true,null,2.5],"b":1}"#).unwrap();
        let (ra, rb) = (RecordJson::new(&a), RecordJson::new(&b));
        assert_eq!(ra.as_str(), r#"{"a":[true,null,2.5],"b":1}"#);
        assert_eq!(ra, rb);
        assert_eq!(ra, json!({ "a": [true, null, 2.5], "b": 1 }));
        assert_eq!(ra.to_value().unwrap(), a);
        // The hash the store has always written: SHA-256 of `Value::to_string()`.
        assert_eq!(
            ra.content_hash_hex(),
            hex::encode(Sha256::digest(a.to_string().as_bytes()))
        );
    }
}
