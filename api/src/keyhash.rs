//! How API keys are stored: as HMAC-SHA256 under a server key, never as a plain hash.
//!
//! The server key is 32 random bytes made on first start and kept in the
//! `server_secrets` table sealed by `SYNCFLEET_SECRET_KEY` (so a copy of the database
//! alone does not let anyone test guesses against the stored hashes, and rotating the
//! secret key re-seals it instead of invalidating every API key).
//!
//! Keys stored before (`hash_version = 1`: unsalted SHA-256) keep working: a lookup
//! tries both forms in one statement and rewrites a legacy row under the HMAC the first
//! time its key is used.

use rand::RngCore;
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use syncfleet_worker::db as q;
use syncfleet_worker::secrets::SecretBox;

/// The row of `server_secrets` holding the sealed HMAC key.
const SECRET_NAME: &str = "api_key_hmac";
/// `hash_version` of rows hashed with [`KeyHasher::hash`].
pub const HMAC_VERSION: i16 = 2;
/// `hash_version` of rows stored as an unsalted SHA-256 (before migration 12).
pub const LEGACY_VERSION: i16 = 1;

/// The server key for API key hashes. `Debug` never shows it.
#[derive(Clone)]
pub struct KeyHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(***)")
    }
}

impl KeyHasher {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The stored form of `token`: hex HMAC-SHA256.
    pub fn hash(&self, token: &str) -> String {
        hex::encode(hmac_sha256(&self.key, token.as_bytes()))
    }
}

/// How keys were stored before keyed hashing (only to find and upgrade those rows).
pub fn legacy_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104) over a 32-byte key.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The id the sealed server key is bound to (no integration has it).
fn aad_id() -> Uuid {
    Uuid::nil()
}

fn open(secrets: &SecretBox, sealed: &Value) -> anyhow::Result<KeyHasher> {
    let plain = secrets.open(aad_id(), SECRET_NAME, sealed).map_err(|_| {
        anyhow::anyhow!(
            "SYNCFLEET_SECRET_KEY does not open the API key hashing key stored in this database \
             (is it the key the database was set up with?)"
        )
    })?;
    let bytes = plain
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| anyhow::anyhow!("the stored API key hashing key is malformed"))?;
    Ok(KeyHasher::from_bytes(bytes))
}

/// The server key: read from the database, or made (once, whichever replica is first)
/// on the first start.
pub async fn load_or_create(
    db: &impl ConnectionTrait,
    secrets: &SecretBox,
) -> anyhow::Result<KeyHasher> {
    if let Some(sealed) = read(db).await? {
        return open(secrets, &sealed);
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let sealed = secrets.seal(aad_id(), SECRET_NAME, &Value::String(hex::encode(key)));
    q::exec(
        db,
        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [
            SECRET_NAME.into(),
            sealed.as_str().unwrap_or_default().into(),
        ],
    )
    .await?;
    // Another replica may have won the insert: use what is stored.
    let sealed = read(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the API key hashing key was not stored"))?;
    open(secrets, &sealed)
}

async fn read(db: &impl ConnectionTrait) -> Result<Option<Value>, DbErr> {
    let rows = q::query(
        db,
        "SELECT value FROM server_secrets WHERE name = $1",
        [SECRET_NAME.into()],
    )
    .await?;
    rows.first()
        .map(|r| r.try_get::<String>("", "value").map(Value::String))
        .transpose()
}

/// Re-seals the server key under `new` (key rotation); `false` if there is none yet.
pub async fn reseal(
    db: &impl ConnectionTrait,
    old: &SecretBox,
    new: &SecretBox,
) -> anyhow::Result<bool> {
    let Some(sealed) = read(db).await? else {
        return Ok(false);
    };
    let hasher = open(old, &sealed)?;
    let resealed = new.seal(
        aad_id(),
        SECRET_NAME,
        &Value::String(hex::encode(hasher.key)),
    );
    q::exec(
        db,
        "UPDATE server_secrets SET value = $2 WHERE name = $1",
        [
            SECRET_NAME.into(),
            resealed.as_str().unwrap_or_default().into(),
        ],
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 uses a 4-byte key; with a 32-byte key, check against
        // the definition with a key of "Jefe" zero-padded to 32 bytes (HMAC pads keys
        // shorter than the block with zeros, so both give the same MAC).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let h = KeyHasher::from_bytes([7; 32]);
        assert_ne!(h.hash("sf_x"), legacy_hash("sf_x"));
        assert_ne!(h.hash("sf_x"), KeyHasher::from_bytes([8; 32]).hash("sf_x"));
        assert_eq!(format!("{h:?}"), "KeyHasher(***)");
    }
}
