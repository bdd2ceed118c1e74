//! Standard Webhooks signatures (docs/architecture.md §4.16).
//!
//! A secret is `whsec_` + base64 of random bytes; the key is those bytes. A message is
//! signed over `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256, and the
//! `webhook-signature` header carries `v1,<base64 signature>`, several of them separated
//! by spaces while a rotated-out secret still signs. Any Standard Webhooks library
//! verifies these; the spec's published example vector is a unit test below.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The secret prefix the spec uses.
pub const PREFIX: &str = "whsec_";
/// Random bytes in a new secret.
const SECRET_BYTES: usize = 24;
/// How far a timestamp may be from the verifier's clock (the spec's recommendation).
pub const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the secret is not whsec_ followed by base64")]
    BadSecret,
    #[error("no signature matches")]
    NoMatch,
    #[error("the timestamp is too far from now")]
    Timestamp,
}

/// A new secret, `whsec_…`.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", B64.encode(bytes))
}

fn key_of(secret: &str) -> Result<Vec<u8>, SignError> {
    let raw = secret.strip_prefix(PREFIX).unwrap_or(secret);
    B64.decode(raw).map_err(|_| SignError::BadSecret)
}

/// Checks that `secret` is a usable signing secret.
pub fn check_secret(secret: &str) -> Result<(), SignError> {
    match key_of(secret) {
        Ok(k) if k.len() >= 16 => Ok(()),
        _ => Err(SignError::BadSecret),
    }
}

/// HMAC-SHA256 (RFC 2104) over `msg`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// `v1,<base64>` for one secret.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignError> {
    let key = key_of(secret)?;
    let mut msg = Vec::with_capacity(id.len() + body.len() + 24);
    msg.extend_from_slice(id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    Ok(format!("v1,{}", B64.encode(hmac_sha256(&key, &msg))))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let sigs: Result<Vec<String>, SignError> = secrets
        .iter()
        .map(|s| signature(s, id, timestamp, body))
        .collect();
    Ok(sigs?.join(" "))
}

/// Verifies a received message as a receiver would: some `v1` signature in `header`
/// matches `secret`, and `timestamp` is within [`TOLERANCE_SECS`] of `now`.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
) -> Result<(), SignError> {
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignError::Timestamp);
    }
    let expected = signature(secret, id, timestamp, body)?;
    let ok = header
        .split(' ')
        .filter(|s| s.starts_with("v1,"))
        .any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()));
    if ok { Ok(()) } else { Err(SignError::NoMatch) }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // The example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_spec_example_vector_signs_and_verifies() {
        assert_eq!(signature(SECRET, ID, TS, BODY).unwrap(), SIG);
        assert_eq!(verify(SECRET, ID, TS, BODY, SIG, TS + 10), Ok(()));
    }

    #[test]
    fn tampering_fails() {
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(SECRET, ID, TS, tampered, SIG, TS),
            Err(SignError::NoMatch)
        );
        assert_eq!(
            verify(SECRET, ID, TS + 1, BODY, SIG, TS),
            Err(SignError::NoMatch)
        );
        assert_eq!(
            verify(SECRET, "msg_other", TS, BODY, SIG, TS),
            Err(SignError::NoMatch)
        );
        assert_eq!(
            verify(SECRET, ID, TS, BODY, SIG, TS + TOLERANCE_SECS + 1),
            Err(SignError::Timestamp)
        );
    }

    #[test]
    fn a_rotated_out_secret_fails_and_both_sign_during_the_grace() {
        let old = new_secret();
        let new = new_secret();
        check_secret(&old).unwrap();
        let both = header(&[&new, &old], ID, TS, BODY).unwrap();
        assert_eq!(verify(&old, ID, TS, BODY, &both, TS), Ok(()));
        assert_eq!(verify(&new, ID, TS, BODY, &both, TS), Ok(()));
        let after = header(&[&new], ID, TS, BODY).unwrap();
        assert_eq!(
            verify(&old, ID, TS, BODY, &after, TS),
            Err(SignError::NoMatch)
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
