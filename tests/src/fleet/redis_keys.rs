//! The size of a fleet's Redis state, key by key: `SCAN` for the prefix, `TYPE`, then
//! the cardinality of each (`ZCARD`, `LLEN`, `SCARD`, `HLEN`; 1 for a string). Whatever
//! the queue backend keeps, a key that grows without bound shows up here. A key belongs
//! to the prefix when it contains `<prefix>:` anywhere, so hash-tagged keys
//! (`{<prefix>:queue}:ready`) count as well as plain ones (`<prefix>:queue:…`).

use redis::aio::MultiplexedConnection;

/// One sample of every key under a prefix.
#[derive(Debug, Clone, Default)]
pub struct KeySample {
    pub keys: u64,
    /// The largest cardinality of one key, and that key.
    pub max_card: u64,
    pub max_key: String,
    /// Sum over all keys.
    pub total_card: u64,
}

/// Samples every key containing `<prefix>:`.
pub async fn sample(
    c: &mut MultiplexedConnection,
    prefix: &str,
) -> Result<KeySample, redis::RedisError> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{prefix}:*"))
            .arg("COUNT")
            .arg(2000)
            .query_async(c)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut out = KeySample {
        keys: keys.len() as u64,
        ..KeySample::default()
    };
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("TYPE").arg(k);
        }
        let types: Vec<String> = pipe.query_async(c).await?;
        let mut pipe = redis::pipe();
        for (k, t) in chunk.iter().zip(&types) {
            let cmd = match t.as_str() {
                "zset" => "ZCARD",
                "list" => "LLEN",
                "set" => "SCARD",
                "hash" => "HLEN",
                "stream" => "XLEN",
                // A string (or a key gone since the scan) counts as one.
                _ => "EXISTS",
            };
            pipe.cmd(cmd).arg(k);
        }
        let cards: Vec<u64> = pipe.query_async(c).await?;
        for (k, n) in chunk.iter().zip(cards) {
            out.total_card += n;
            if n > out.max_card {
                out.max_card = n;
                out.max_key = k.clone();
            }
        }
    }
    Ok(out)
}
