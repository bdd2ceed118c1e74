//! Secrets at rest: the secret fields of a connector config are encrypted with
//! XChaCha20-Poly1305 under `SYNCFLEET_SECRET_KEY`, with the integration id and the field
//! name as associated data, so a ciphertext copied to another row or field does not
//! decrypt. A stored secret is the string `enc:v1:<base64(nonce ‖ ciphertext)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::Value;
use uuid::Uuid;

use crate::connectors;
use entity::ConnectorKind;

const PREFIX: &str = "enc:v1:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret key must be 32 bytes, as 64 hex characters or base64")]
    BadKey,
    #[error(
        "secret field `{0}` does not decrypt with this key (wrong key, or copied from another integration)"
    )]
    Decrypt(String),
}

/// The key for secrets at rest. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    /// Parses a key given as 64 hex characters or as base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| SecretError::BadKey)?
        } else {
            B64.decode(t).map_err(|_| SecretError::BadKey)?
        };
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        Ok(Self {
            cipher: XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?,
        })
    }

    /// A new random key, as 64 hex characters.
    pub fn generate() -> String {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        hex::encode(k)
    }

    fn aad(integration: Uuid, field: &str) -> Vec<u8> {
        let mut aad = integration.as_bytes().to_vec();
        aad.extend_from_slice(field.as_bytes());
        aad
    }

    pub fn is_encrypted(v: &Value) -> bool {
        v.as_str().is_some_and(|s| s.starts_with(PREFIX))
    }

    /// Encrypts one JSON value (any type) of `field`.
    pub fn seal(&self, integration: Uuid, field: &str, value: &Value) -> Value {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let plain = value.to_string();
        let aad = Self::aad(integration, field);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Value::String(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// Decrypts one sealed value.
    pub fn open(
        &self,
        integration: Uuid,
        field: &str,
        sealed: &Value,
    ) -> Result<Value, SecretError> {
        let err = || SecretError::Decrypt(field.to_owned());
        let text = sealed
            .as_str()
            .and_then(|s| s.strip_prefix(PREFIX))
            .ok_or_else(err)?;
        let raw = B64.decode(text).map_err(|_| err())?;
        if raw.len() < 24 {
            return Err(err());
        }
        let (nonce, ct) = raw.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| err())?;
        let aad = Self::aad(integration, field);
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| err())?;
        serde_json::from_slice(&plain).map_err(|_| err())
    }

    /// Encrypts every plain secret field of a config in place. A field whose value is
    /// already sealed is kept; `keep` supplies the stored value for a field sent back
    /// masked (a client echoing what it read).
    pub fn seal_config(
        &self,
        kind: ConnectorKind,
        integration: Uuid,
        config: &mut Value,
        keep: Option<&Value>,
        mask: &str,
    ) {
        let Some(obj) = config.as_object_mut() else {
            return;
        };
        for field in connectors::secret_fields(kind) {
            let Some(v) = obj.get_mut(*field) else {
                continue;
            };
            if v.is_null() || Self::is_encrypted(v) {
                continue;
            }
            if v.as_str() == Some(mask) {
                match keep.and_then(|k| k.get(*field)) {
                    Some(old) => *v = old.clone(),
                    None => *v = Value::Null,
                }
                continue;
            }
            *v = self.seal(integration, field, v);
        }
    }

    /// Decrypts every sealed secret field of a config (for the connector only).
    pub fn open_config(
        &self,
        kind: ConnectorKind,
        integration: Uuid,
        config: &Value,
    ) -> Result<Value, SecretError> {
        let mut out = config.clone();
        if let Some(obj) = out.as_object_mut() {
            for field in connectors::secret_fields(kind) {
                if let Some(v) = obj.get_mut(*field)
                    && Self::is_encrypted(v)
                {
                    *v = self.open(integration, field, v)?;
                }
            }
        }
        Ok(out)
    }
}

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are redacted only where they stand as a whole word: a
/// short secret inside an ordinary word ("k" in "loopback") is a coincidence, and
/// redacting it there would reveal the secret (and its length) instead of hiding it.
pub const MIN_REDACT_INSIDE_WORDS: usize = 8;

/// Characters that belong to a word (a token of a message, a URL component, a base64
/// or hex string): a redaction takes the whole word around an occurrence, so neither
/// the secret's length nor its position within the word shows.
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '%')
}

/// `message` with every occurrence of `secret` (as written, or form-urlencoded as in a
/// query string) removed: each occurrence takes its whole word with it and becomes
/// [`REDACTED`]. A secret shorter than [`MIN_REDACT_INSIDE_WORDS`] is redacted only
/// where it is a whole word. An empty secret changes nothing.
pub fn redact(message: &str, secret: &str) -> String {
    if secret.is_empty() {
        return message.to_owned();
    }
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for form in [secret, encoded.as_str()] {
        for (start, found) in message.match_indices(form) {
            let end = start + found.len();
            let from = message[..start]
                .char_indices()
                .rev()
                .take_while(|(_, c)| word_char(*c))
                .last()
                .map_or(start, |(i, _)| i);
            let to = message[end..]
                .char_indices()
                .find(|(_, c)| !word_char(*c))
                .map_or(message.len(), |(i, _)| end + i);
            let whole_word = from == start && to == end;
            if whole_word || secret.chars().count() >= MIN_REDACT_INSIDE_WORDS {
                spans.push((from, to));
            }
        }
    }
    if spans.is_empty() {
        return message.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(message.len());
    let mut at = 0;
    for (from, to) in spans {
        if to <= at {
            continue;
        }
        if from >= at {
            out.push_str(&message[at..from]);
            out.push_str(REDACTED);
        }
        at = to;
    }
    out.push_str(&message[at..]);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn round_trip_and_binding_to_the_row() {
        let b = SecretBox::parse(&SecretBox::generate()).unwrap();
        let (a, other) = (Uuid::now_v7(), Uuid::now_v7());
        let v = json!({ "type": "bearer", "token": "canary-secret-123" });
        let sealed = b.seal(a, "auth", &v);
        assert!(!sealed.to_string().contains("canary"));
        assert_eq!(b.open(a, "auth", &sealed).unwrap(), v);
        assert!(
            b.open(other, "auth", &sealed).is_err(),
            "copied to another row decrypted"
        );
        assert!(
            b.open(a, "token", &sealed).is_err(),
            "copied to another field decrypted"
        );
        let wrong = SecretBox::parse(&SecretBox::generate()).unwrap();
        assert!(wrong.open(a, "auth", &sealed).is_err());
    }

    #[test]
    fn redaction_takes_whole_words_and_spares_short_coincidences() {
        let m = "localhost is refused: loopback address (key=k)";
        assert_eq!(
            redact(m, "k"),
            "localhost is refused: loopback address (key=[redacted])"
        );
        assert_eq!(redact("loopback", "loop"), "loopback");
        let long = "s3cr3t-t0ken";
        assert_eq!(
            redact(&format!("GET /x?key=ab{long}cd failed"), long),
            "GET /x?key=[redacted] failed"
        );
        assert_eq!(
            redact(&format!("{long} and {long}x, again {long}"), long),
            "[redacted] and [redacted], again [redacted]"
        );
        // As a query string carries it.
        assert_eq!(
            redact("url?key=a+b%2Bc%2Fd1234&x=1", "a b+c/d1234"),
            "url?key=[redacted]&x=1"
        );
        // Secrets with separators inside, and overlapping occurrences.
        assert_eq!(
            redact("user pass word here", "pass word"),
            "user [redacted] here"
        );
        assert_eq!(redact("aaaaaaaaaaaa", "aaaaaaaaa"), "[redacted]");
        assert_eq!(redact("nothing here", ""), "nothing here");
        assert_eq!(
            redact("ünïcode-sëcret-välue!", "sëcret-välue"),
            "[redacted]!"
        );
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(SecretBox::parse("short").is_err());
        assert!(SecretBox::parse(&"ab".repeat(31)).is_err());
        assert!(SecretBox::parse(&B64.encode([7u8; 32])).is_ok());
    }

    #[test]
    fn configs_are_sealed_and_masked_values_keep_the_stored_secret() {
        let b = SecretBox::parse(&SecretBox::generate()).unwrap();
        let id = Uuid::now_v7();
        let mut cfg = json!({ "url": "https://x", "auth": { "type": "bearer", "token": "t0p" } });
        b.seal_config(ConnectorKind::HttpJson, id, &mut cfg, None, "********");
        assert!(SecretBox::is_encrypted(&cfg["auth"]));
        let mut echoed = json!({ "url": "https://y", "auth": "********" });
        b.seal_config(
            ConnectorKind::HttpJson,
            id,
            &mut echoed,
            Some(&cfg),
            "********",
        );
        assert_eq!(echoed["auth"], cfg["auth"]);
        let open = b.open_config(ConnectorKind::HttpJson, id, &echoed).unwrap();
        assert_eq!(open["auth"]["token"], "t0p");
    }
}
