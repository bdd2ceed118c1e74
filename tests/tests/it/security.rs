//! Security edges: files at rest, API key storage, rate limits before authentication,
//! and revocation across API replicas.

#[cfg(unix)]
#[tokio::test]
async fn the_embedded_database_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = tests::embedded::spawn_standalone(&[]).await;
    // A write, so the WAL files exist too.
    app.client
        .create("perm", "synthetic", serde_json::json!({}), None)
        .await;
    let dir = app.db_path.parent().unwrap().to_owned();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("syncfleet.") {
            continue;
        }
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the database, its WAL and the key file"
    );
    app.stop().await;
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// API keys are stored under a keyed hash (HMAC with a server key sealed by
/// `SYNCFLEET_SECRET_KEY`), listed by a short non-secret id, and keys stored the old way
/// (unsalted SHA-256) keep working and are rehashed on first use.
#[tokio::test]
async fn api_keys_are_stored_under_a_keyed_hash_and_listed_by_id() {
    use crate::util::{count, strings};
    let Some(env) = tests::env::test_env().await else {
        return;
    };
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let (s, k) = c
        .post(
            "/api/keys",
            &serde_json::json!({ "name": "dash", "role": "viewer" }),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_owned();
    let (_, list) = c.get("/api/keys").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == k["id"])
        .cloned()
        .unwrap();
    let id = listed["prefix"].as_str().expect("a key id").to_owned();
    assert!(
        id.starts_with("sf_") && key.starts_with(&format!("{id}_")),
        "the listed id {id} is not the key's non-secret id ({key})"
    );
    let secret = &key[id.len() + 1..];
    assert!(secret.len() >= 40, "{key}");
    assert!(
        !list.to_string().contains(&secret[..6]),
        "the listing shows part of the secret: {list}"
    );
    let stored = strings(
        &env.db,
        "SELECT key_hash FROM api_keys WHERE id = $1",
        vec![
            uuid::Uuid::parse_str(k["id"].as_str().unwrap())
                .unwrap()
                .into(),
        ],
    )
    .await;
    assert_ne!(
        stored[0],
        sha256_hex(&key),
        "an unsalted SHA-256 of the key is stored"
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM api_keys WHERE key_hash = $1",
            vec![sha256_hex(&env.admin_token()).into()],
        )
        .await,
        0,
        "the bootstrap token is stored as an unsalted SHA-256"
    );
    let viewer = tests::ApiClient::new(&app.url, &key);
    assert_eq!(viewer.get("/api/integrations").await.0, 200);
    // A key stored the old way (before this migration) still works, and is rehashed.
    let legacy = "sf_00112233445566778899aabbccddeeff00112233";
    let ws = strings(&env.db, "SELECT CAST(id AS TEXT) FROM workspaces", vec![]).await;
    syncfleet_worker::db::exec(
        &env.db,
        "INSERT INTO api_keys (id, workspace_id, name, role, key_hash, key_prefix, created_at) \
         VALUES ($1, $2, 'old', 'viewer', $3, '', now())",
        [
            uuid::Uuid::now_v7().into(),
            uuid::Uuid::parse_str(&ws[0]).unwrap().into(),
            sha256_hex(legacy).into(),
        ],
    )
    .await
    .unwrap();
    let old = tests::ApiClient::new(&app.url, legacy);
    assert_eq!(
        old.get("/api/integrations").await.0,
        200,
        "a legacy key stopped working"
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM api_keys WHERE key_hash = $1",
            vec![sha256_hex(legacy).into()],
        )
        .await,
        0,
        "the legacy key was not rehashed on first use"
    );
    assert_eq!(
        old.get("/api/integrations").await.0,
        200,
        "the rehashed key stopped working"
    );
    // A wrong key close to a right one does not work.
    let wrong = format!("{id}_{}", "0".repeat(secret.len()));
    assert_eq!(
        tests::ApiClient::new(&app.url, &wrong)
            .get("/api/integrations")
            .await
            .0,
        401
    );
    app.stop().await;
}

/// Rotating `SYNCFLEET_SECRET_KEY` re-seals the API key hashing key: every key keeps
/// working under the new secret key.
#[tokio::test]
async fn api_keys_survive_a_secret_key_rotation() {
    let Some(env) = tests::env::test_env().await else {
        return;
    };
    let app = env.spawn_app(&[]).await;
    let (_, k) = app
        .client
        .post(
            "/api/keys",
            &serde_json::json!({ "name": "v", "role": "viewer" }),
        )
        .await;
    let key = k["key"].as_str().unwrap().to_owned();
    app.stop().await;
    let new_key = syncfleet_worker::secrets::SecretBox::generate();
    syncfleet_api::app::run_rotate_key(env.config(&[]), &new_key)
        .await
        .expect("rotate");
    let app = env.spawn_app(&[("SYNCFLEET_SECRET_KEY", &new_key)]).await;
    assert_eq!(app.client.get("/api/integrations").await.0, 200);
    let viewer = tests::ApiClient::new(&app.url, &key);
    assert_eq!(viewer.get("/api/integrations").await.0, 200);
    app.stop().await;
}

/// Requests with unknown keys cost a database lookup each: past a small budget per
/// client address they get 429 (with `Retry-After`) before any lookup, while a valid
/// key from the same address keeps working.
#[tokio::test]
async fn unknown_keys_are_rate_limited_by_client_address() {
    let Some(env) = tests::env::test_env().await else {
        return;
    };
    let app = env
        .spawn_app(&[
            ("SYNCFLEET_AUTH_FAILURES_PER_SEC", "1"),
            ("SYNCFLEET_AUTH_FAILURES_BURST", "3"),
        ])
        .await;
    assert_eq!(app.client.get("/api/integrations").await.0, 200);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..10 {
        let r = reqwest::Client::new()
            .get(format!("{}/api/integrations", app.url))
            .bearer_auth(format!("sf_guess{i:04}_{}", "0".repeat(40)))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").cloned();
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(retry_after.is_some(), "429 without Retry-After");
    // The admin key (verified before) still works from this address, also once its
    // cache entry has expired and it must be looked up again.
    assert_eq!(app.client.get("/api/integrations").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(app.client.get("/api/integrations").await.0, 200);
    // A new guess from the blocked address is still refused without a lookup.
    let r = reqwest::Client::new()
        .get(format!("{}/api/integrations", app.url))
        .bearer_auth("sf_other000_guess")
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 429), "{}", r.status());
    app.stop().await;
}

/// A key revoked through one API replica stops working on every other one at once (they
/// cache verified keys, and drop them when PostgreSQL notifies the revocation), not
/// after the cache's lifetime.
#[tokio::test]
async fn revocation_reaches_every_replica_at_once() {
    let Some(env) = tests::env::test_env().await else {
        return;
    };
    let a = env.spawn_app(&[]).await;
    let b = env.spawn_app(&[]).await;
    let (_, k) = a
        .client
        .post(
            "/api/keys",
            &serde_json::json!({ "name": "v", "role": "viewer" }),
        )
        .await;
    let key = k["key"].as_str().unwrap().to_owned();
    let on_b = tests::ApiClient::new(&b.url, &key);
    // B has verified (and cached) the key.
    for _ in 0..3 {
        assert_eq!(on_b.get("/api/integrations").await.0, 200);
    }
    let r = a
        .client
        .http
        .delete(format!("{}/api/keys/{}", a.url, k["id"].as_str().unwrap()))
        .bearer_auth(&a.client.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let revoked = std::time::Instant::now();
    crate::util::eventually(
        std::time::Duration::from_millis(250),
        "the revoked key refused by the other replica",
        || async { (on_b.get("/api/integrations").await.0 == 401).then_some(()) },
    )
    .await;
    eprintln!(
        "revocation reached the other replica in {:?}",
        revoked.elapsed()
    );
    a.stop().await;
    b.stop().await;
}
