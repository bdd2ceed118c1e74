//! Who may send a webhook from the cloud (docs/architecture.md §4.19): a signature over
//! the raw body made with the integration's webhook secret, a timestamp close to the
//! database clock, and optionally a source address on the integration's allow-list.
//!
//! Two signature schemes:
//! - `standard` (Standard Webhooks): `webhook-id`, `webhook-timestamp` (Unix seconds)
//!   and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//!   several space-separated; the key is the bytes of the base64 after `whsec_`.
//! - `cloud`: `X-Cloud-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">` with
//!   `X-Cloud-Timestamp` (Unix seconds); the key is the secret's text, exactly as the
//!   cloud was given it. The optional `X-Cloud-Event-Id` names the event for replay
//!   detection; the signature itself names it too, so a request sent again unchanged is
//!   recognised with or without one.
//!
//! Signatures are compared in constant time (`subtle`). The signature is checked before
//! the timestamp, so "stale" always means a genuinely signed message sent too late.

use std::net::IpAddr;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ipnet::IpNet;
use subtle::ConstantTimeEq;
use syncfleet_worker::notifications::sign::{self, hmac_sha256};

/// How far a webhook's timestamp may be from the database clock, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// Random bytes a webhook secret carries at least.
pub const MIN_SECRET_BYTES: usize = 24;
/// Longest webhook id (`webhook-id`, `X-Cloud-Event-Id`).
const MAX_ID: usize = 256;

/// How the cloud signs an integration's webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Standard,
    Cloud,
}

impl Scheme {
    pub const ALL: [Scheme; 2] = [Self::Standard, Self::Cloud];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Cloud => "cloud",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A webhook whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The id it is known by (answers, the audit trail).
    pub id: String,
    /// The ids its receipt is kept under; a replay has one of them.
    pub receipts: Vec<String>,
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not signed the way the scheme says, or not with the webhook's secret.
    Signature(String),
    /// Signed, but its timestamp is this many seconds from the clock (positive: ahead).
    Stale(i64),
}

/// A new secret: `whsec_` and the base64 of 24 random bytes.
pub fn new_secret() -> String {
    sign::new_secret()
}

/// Checks a secret given by a person: `whsec_` and the base64 of at least 24 bytes.
pub fn check_secret(secret: &str) -> Result<(), String> {
    match standard_key(secret) {
        Some(k) if k.len() >= MIN_SECRET_BYTES => Ok(()),
        _ => Err(format!(
            "must be {} followed by the base64 of at least {MIN_SECRET_BYTES} bytes",
            sign::PREFIX
        )),
    }
}

fn standard_key(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix(sign::PREFIX)?).ok()
}

/// Verifies a webhook of `scheme` signed with one of `secrets` (the current one and,
/// during a rotation's grace, the previous one) at `now` (database clock, Unix seconds).
pub fn verify(
    scheme: Scheme,
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, Refused> {
    match scheme {
        Scheme::Standard => verify_standard(secrets, headers, body, now),
        Scheme::Cloud => verify_cloud(secrets, headers, body, now),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Refused> {
    let v = headers
        .get(name)
        .ok_or_else(|| Refused::Signature(format!("the {name} header is missing")))?;
    v.to_str()
        .map(str::trim)
        .map_err(|_| Refused::Signature(format!("the {name} header is not ASCII")))
}

fn check_id(name: &str, id: &str) -> Result<(), Refused> {
    if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Refused::Signature(format!(
            "the {name} header must be 1 to {MAX_ID} printable ASCII characters"
        )));
    }
    Ok(())
}

fn timestamp(name: &str, text: &str) -> Result<i64, Refused> {
    text.parse()
        .map_err(|_| Refused::Signature(format!("the {name} header is not Unix seconds")))
}

fn fresh(ts: i64, now: i64) -> Result<(), Refused> {
    let off = ts.saturating_sub(now);
    if off.saturating_abs() > TOLERANCE_SECS {
        return Err(Refused::Stale(off));
    }
    Ok(())
}

fn message(parts: &[&[u8]]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            msg.push(b'.');
        }
        msg.extend_from_slice(p);
    }
    msg
}

fn verify_standard(
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, Refused> {
    let id = header(headers, "webhook-id")?;
    check_id("webhook-id", id)?;
    let ts_text = header(headers, "webhook-timestamp")?;
    let ts = timestamp("webhook-timestamp", ts_text)?;
    let given: Vec<Vec<u8>> = header(headers, "webhook-signature")?
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| B64.decode(b).ok())
        .collect();
    if given.is_empty() {
        return Err(Refused::Signature(
            "the webhook-signature header has no v1,<base64> signature".into(),
        ));
    }
    // The timestamp is signed as it was sent.
    let msg = message(&[id.as_bytes(), ts_text.as_bytes(), body]);
    let matched = secrets.iter().filter_map(|s| standard_key(s)).any(|key| {
        let mac = hmac_sha256(&key, &msg);
        given.iter().any(|g| bool::from(g.as_slice().ct_eq(&mac)))
    });
    if !matched {
        return Err(Refused::Signature(
            "no signature in webhook-signature matches the webhook's secret".into(),
        ));
    }
    fresh(ts, now)?;
    Ok(Verified {
        id: id.to_owned(),
        receipts: vec![id.to_owned()],
    })
}

fn verify_cloud(
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, Refused> {
    let bad = || Refused::Signature("the X-Cloud-Signature header is not sha256=<hex>".into());
    let sig = header(headers, "x-cloud-signature")?;
    let given = sig
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|g| g.len() == 32)
        .ok_or_else(bad)?;
    let ts_text = header(headers, "x-cloud-timestamp")?;
    let ts = timestamp("X-Cloud-Timestamp", ts_text)?;
    let event = match headers.get("x-cloud-event-id") {
        None => None,
        Some(_) => {
            let e = header(headers, "x-cloud-event-id")?;
            check_id("X-Cloud-Event-Id", e)?;
            Some(e.to_owned())
        }
    };
    let msg = message(&[ts_text.as_bytes(), body]);
    let matched = secrets.iter().any(|s| {
        let mac = hmac_sha256(s.as_bytes(), &msg);
        bool::from(given.as_slice().ct_eq(&mac))
    });
    if !matched {
        return Err(Refused::Signature(
            "X-Cloud-Signature does not match the webhook's secret".into(),
        ));
    }
    fresh(ts, now)?;
    let by_signature = format!("sig:{}", hex::encode(&given));
    let mut receipts = Vec::with_capacity(2);
    if let Some(e) = &event {
        receipts.push(e.clone());
    }
    receipts.push(by_signature.clone());
    Ok(Verified {
        id: event.unwrap_or(by_signature),
        receipts,
    })
}

/// The address a webhook came from: the TCP peer, unless the peer is one of the
/// `trusted` proxies; then the nearest address in `X-Forwarded-For` (read from the
/// right, each proxy appending the address it heard from) that is not a trusted proxy.
/// `None` when it cannot be told (no peer, or a forwarded entry that is not an address).
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        let ip = forwarded_ip(hop)?;
        nearest = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(nearest)
}

/// One `X-Forwarded-For` entry: an address, or an address with a port.
fn forwarded_ip(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// Whether `addr` may send: no allow-list, or an address on it.
pub fn allowed(list: Option<&[IpNet]>, addr: Option<IpAddr>) -> bool {
    match list {
        None => true,
        Some(nets) => addr.is_some_and(|a| nets.iter().any(|n| n.contains(&a))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    // The example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    // HMAC-SHA256 under SECRET's text of "1614265330." + BODY, computed independently.
    const CLOUD_SIG: &str =
        "sha256=2e37df5d4a028c51a7f3133d64ae1e300d2c2c900f1b1d49d4369ad2530f8964";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn standard(sig: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", ID),
            ("webhook-timestamp", &TS.to_string()),
            ("webhook-signature", sig),
        ])
    }

    #[test]
    fn the_spec_example_verifies_and_tampering_does_not() {
        let s = [SECRET.to_owned()];
        let v = verify(Scheme::Standard, &s, &standard(SIG), BODY, TS + 10).unwrap();
        assert_eq!(v.receipts, [ID]);
        let several = format!("v1a,abc v1,bm90IGl0 {SIG}");
        assert!(verify(Scheme::Standard, &s, &standard(&several), BODY, TS).is_ok());
        let tampered = br#"{"test": 2432232315}"#;
        assert!(matches!(
            verify(Scheme::Standard, &s, &standard(SIG), tampered, TS),
            Err(Refused::Signature(_))
        ));
        let other = [new_secret()];
        assert!(matches!(
            verify(Scheme::Standard, &other, &standard(SIG), BODY, TS),
            Err(Refused::Signature(_))
        ));
        assert_eq!(
            verify(Scheme::Standard, &s, &standard(SIG), BODY, TS + 301),
            Err(Refused::Stale(-301))
        );
        assert_eq!(
            verify(Scheme::Standard, &s, &standard(SIG), BODY, TS - 400),
            Err(Refused::Stale(400))
        );
        let missing = headers(&[("webhook-id", ID), ("webhook-signature", SIG)]);
        assert!(matches!(
            verify(Scheme::Standard, &s, &missing, BODY, TS),
            Err(Refused::Signature(m)) if m.contains("webhook-timestamp")
        ));
    }

    #[test]
    fn the_previous_secret_verifies_beside_the_new_one() {
        let both = [new_secret(), SECRET.to_owned()];
        assert!(verify(Scheme::Standard, &both, &standard(SIG), BODY, TS).is_ok());
        assert!(verify(Scheme::Standard, &both[..1], &standard(SIG), BODY, TS).is_err());
    }

    #[test]
    fn the_cloud_scheme_signs_timestamp_and_body_with_the_secret_text() {
        let s = [SECRET.to_owned()];
        let h = headers(&[
            ("x-cloud-signature", CLOUD_SIG),
            ("x-cloud-timestamp", &TS.to_string()),
        ]);
        let v = verify(Scheme::Cloud, &s, &h, BODY, TS).unwrap();
        assert_eq!(v.receipts, [format!("sig:{}", &CLOUD_SIG[7..])]);
        let mut with_event = h.clone();
        with_event.insert("x-cloud-event-id", HeaderValue::from_static("evt-1"));
        let v = verify(Scheme::Cloud, &s, &with_event, BODY, TS).unwrap();
        assert_eq!(v.id, "evt-1");
        assert_eq!(v.receipts.len(), 2);
        assert!(matches!(
            verify(Scheme::Cloud, &s, &h, b"{}", TS),
            Err(Refused::Signature(_))
        ));
        // A Standard Webhooks request is not a cloud one.
        assert!(matches!(
            verify(Scheme::Cloud, &s, &standard(SIG), BODY, TS),
            Err(Refused::Signature(_))
        ));
        assert_eq!(
            verify(Scheme::Cloud, &s, &h, BODY, TS + 600),
            Err(Refused::Stale(-600))
        );
    }

    #[test]
    fn secrets_carry_at_least_24_bytes() {
        assert!(check_secret(SECRET).is_ok());
        assert!(check_secret(&new_secret()).is_ok());
        assert!(check_secret("whsec_c2hvcnQ=").is_err());
        assert!(check_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(check_secret("whsec_not base64!").is_err());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.9")]);
        // Not behind a trusted proxy: the header is ignored.
        assert_eq!(client_address(Some(proxy), &xff, &[]), Some(proxy));
        // Behind one: the nearest untrusted hop, not the client-supplied leftmost one.
        assert_eq!(
            client_address(Some(proxy), &xff, &trusted),
            Some("198.51.100.7".parse().unwrap())
        );
        let garbage = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(client_address(Some(proxy), &garbage, &trusted), None);
        assert_eq!(
            client_address(Some(proxy), &HeaderMap::new(), &trusted),
            Some(proxy)
        );
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(
            client_address(Some(mapped), &HeaderMap::new(), &[]),
            Some(proxy)
        );
        let list: Vec<IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        assert!(allowed(Some(&list), Some("198.51.100.7".parse().unwrap())));
        assert!(!allowed(Some(&list), Some(proxy)));
        assert!(!allowed(Some(&list), None));
        assert!(allowed(None, None));
    }
}
