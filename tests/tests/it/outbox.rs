//! Local writes and the transactional outbox: `If-Match`, `Idempotency-Key`, the
//! record's sync state, and one outbox entry per accepted change in the same transaction.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::test_env;
use uuid::Uuid;

use crate::util::{count, strings};

/// Sends `method path` with a JSON `body` and extra headers.
async fn send(
    c: &ApiClient,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut r = c
        .http
        .request(method, format!("{}{path}", c.base))
        .bearer_auth(&c.key);
    if let Some(b) = body {
        r = r.json(b);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("request");
    let (s, h) = (resp.status(), resp.headers().clone());
    (s, resp.json().await.unwrap_or(Value::Null), h)
}

async fn outbox(env: &tests::env::TestEnv, id: Uuid) -> Vec<String> {
    if std::env::var("SYNCFLEET_TEST_LOGS").is_ok() {
        let _ = syncfleet_api::telemetry::init(syncfleet_api::config::LogFormat::Text);
    }
    strings(
        &env.db,
        "SELECT external_id || ':' || operation || ':' || status || ':' || record_version FROM outbox \
         WHERE integration_id = $1 ORDER BY created_at, id",
        vec![id.into()],
    )
    .await
}

/// PUT creates then replaces, PATCH merges, DELETE soft-deletes; each bumps the version,
/// marks the record `pending` and writes its outbox entry, a newer change superseding
/// one not pushed yet. A stale `If-Match` is a 409 and writes nothing.
#[tokio::test]
async fn local_writes_keep_versions_and_write_their_outbox_entry() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the new integration is due at once and no worker runs it");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c
        .create("pos", "synthetic", json!({ "records": 0 }), None)
        .await;
    let rec = format!("/api/integrations/{id}/records/sale-1");
    use reqwest::Method;

    let (s, v, _) = send(
        c,
        Method::PUT,
        &rec,
        Some(&json!({ "total": 10, "items": 2 })),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["syncState"], "pending");
    assert!(
        v["modifiedBy"]
            .as_str()
            .is_some_and(|a| a.starts_with("key:")),
        "{v}"
    );

    let (s, v, _) = send(
        c,
        Method::PUT,
        &rec,
        Some(&json!({ "total": 12, "items": 2 })),
        &[("If-Match", "\"1\"")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);

    let (s, v, _) = send(
        c,
        Method::PUT,
        &rec,
        Some(&json!({ "total": 99 })),
        &[("If-Match", "1")],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "version_conflict");

    let (s, v, _) = send(
        c,
        Method::PATCH,
        &rec,
        Some(&json!({ "items": null, "note": "refund" })),
        &[("If-Match", "2")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"], json!({ "total": 12, "note": "refund" }));
    assert_eq!(v["version"], 3);

    let (s, _, _) = send(
        c,
        Method::PATCH,
        &format!("/api/integrations/{id}/records/nope"),
        Some(&json!({ "a": 1 })),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v, _) = send(c, Method::PUT, &rec, Some(&json!([1, 2])), &[]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v, _) = send(
        c,
        Method::PUT,
        &rec,
        Some(&json!({})),
        &[("If-Match", "soon")],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let (s, v, _) = send(c, Method::DELETE, &rec, None, &[("If-Match", "3")]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["deletedAt"].is_string(), "{v}");
    assert_eq!(v["version"], 4);

    // Each accepted change has its entry, waiting behind the record's one live push,
    // which points at the first; when that push is first claimed it takes the newest
    // (`push::take_newest`) and the older ones are superseded.
    assert_eq!(
        outbox(&env, id).await,
        vec![
            "sale-1:upsert:pending:1",
            "sale-1:upsert:pending:2",
            "sale-1:upsert:pending:3",
            "sale-1:delete:pending:4",
        ]
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM live_pushes WHERE integration_id = $1",
            vec![id.into()]
        )
        .await,
        1
    );
    let (s, page) = c
        .get(&format!(
            "/api/integrations/{id}/records?syncState=pending&includeDeleted=true"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["records"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["records"][0]["syncState"], "pending");
    let (s, _) = c
        .get(&format!("/api/integrations/{id}/records?syncState=lost"))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

/// The same `Idempotency-Key` with the same request answers the first answer again and
/// writes nothing; with another body it is a 422.
#[tokio::test]
async fn an_idempotency_key_answers_once_and_refuses_another_body() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the new integration is due at once and no worker runs it");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c
        .create("pos", "synthetic", json!({ "records": 0 }), None)
        .await;
    let rec = format!("/api/integrations/{id}/records/sale-9");
    use reqwest::Method;
    let body = json!({ "total": 5 });
    let key = [("Idempotency-Key", "upload-7f3a")];
    let (s1, v1, h1) = send(c, Method::PUT, &rec, Some(&body), &key).await;
    assert_eq!(s1, StatusCode::CREATED, "{v1}");
    assert!(h1.get("idempotent-replayed").is_none());
    let (s2, v2, h2) = send(c, Method::PUT, &rec, Some(&body), &key).await;
    assert_eq!(s2, StatusCode::CREATED, "the first answer again");
    assert_eq!(v2, v1);
    assert_eq!(
        h2.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(outbox(&env, id).await.len(), 1, "written once");
    let (s3, v3, _) = send(c, Method::PUT, &rec, Some(&json!({ "total": 6 })), &key).await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{v3}");
    assert_eq!(v3["code"], "idempotency_key_reused");
    // A failed request does not use its key up.
    let other = [("Idempotency-Key", "upload-8")];
    let (s, _, _) = send(
        c,
        Method::PUT,
        &rec,
        Some(&json!({ "x": 1 })),
        &[other[0], ("If-Match", "9")],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v, _) = send(
        c,
        Method::PUT,
        &rec,
        Some(&json!({ "x": 1 })),
        &[other[0], ("If-Match", "1")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(outbox(&env, id).await.len(), 2);
    app.stop().await;
}

/// A batch is one transaction: every write and its outbox entry, or nothing at all.
#[tokio::test]
async fn a_batch_is_all_or_nothing_with_its_outbox() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the new integration is due at once and no worker runs it");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c
        .create("pos", "synthetic", json!({ "records": 0 }), None)
        .await;
    let path = format!("/api/integrations/{id}/records:batch");
    use reqwest::Method;
    let ops: Vec<Value> = (0..1000)
        .map(|k| json!({ "op": "put", "externalId": format!("s-{k}"), "data": { "n": k } }))
        .collect();
    let (s, v, _) = send(
        c,
        Method::POST,
        &path,
        Some(&json!({ "operations": ops })),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"].as_array().map(Vec::len), Some(1000));
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM outbox", vec![]).await,
        1000
    );

    // One stale operation: nothing of the batch is written, and no outbox entry.
    let bad = json!({ "operations": [
        { "op": "patch", "externalId": "s-1", "data": { "n": -1 }, "ifMatch": 1 },
        { "op": "delete", "externalId": "s-2" },
        { "op": "put", "externalId": "s-3", "data": { "n": 3 }, "ifMatch": 7 },
    ] });
    let (s, v, _) = send(c, Method::POST, &path, Some(&bad), &[]).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM outbox", vec![]).await,
        1000
    );
    let (_, page) = c
        .get(&format!("/api/integrations/{id}/records?pageSize=3"))
        .await;
    assert_eq!(page["records"][1]["data"], json!({ "n": 1 }), "{page}");

    let too_many: Vec<Value> = (0..1001)
        .map(|k| json!({ "op": "delete", "externalId": format!("s-{k}") }))
        .collect();
    let (s, v, _) = send(
        c,
        Method::POST,
        &path,
        Some(&json!({ "operations": too_many })),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v, _) = send(
        c,
        Method::POST,
        &path,
        Some(&json!({ "operations": [{ "op": "upsert", "externalId": "a" }] })),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    app.stop().await;
}

/// The embedded mode (SQLite) takes local writes the same way.
#[tokio::test]
async fn the_embedded_mode_takes_local_writes() {
    let app = tests::embedded::spawn_standalone(&[]).await;
    let c = &app.client;
    use reqwest::Method;
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({ "name": "pos", "kind": "synthetic", "config": { "records": 0 }, "syncEnabled": false }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id");
    let rec = format!("/api/integrations/{id}/records/a");
    let key = [("Idempotency-Key", "k1")];
    let (s, v1, _) = send(c, Method::PUT, &rec, Some(&json!({ "n": 1 })), &key).await;
    assert_eq!(s, StatusCode::CREATED, "{v1}");
    let (s, v2, h) = send(c, Method::PUT, &rec, Some(&json!({ "n": 1 })), &key).await;
    assert_eq!((s, &v2), (StatusCode::CREATED, &v1));
    assert!(h.get("idempotent-replayed").is_some());
    let (s, v, _) = send(
        c,
        Method::PATCH,
        &rec,
        Some(&json!({ "m": 2 })),
        &[("If-Match", "1")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"], json!({ "n": 1, "m": 2 }));
    let bad = json!({ "operations": [
        { "op": "put", "externalId": "b", "data": { "n": 2 } },
        { "op": "delete", "externalId": "missing" },
    ] });
    let (s, _, _) = send(
        c,
        Method::POST,
        &format!("/api/integrations/{id}/records:batch"),
        Some(&bad),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, page) = c
        .get(&format!("/api/integrations/{id}/records?syncState=pending"))
        .await;
    assert_eq!(
        page["records"].as_array().map(Vec::len),
        Some(1),
        "the batch left nothing: {page}"
    );
    app.stop().await;
}

/// The other way round from the batch test: when the outbox entry cannot be written
/// (a trigger refuses it here), the write it belongs to is rolled back with it — the
/// record stays as it was, alone or inside a batch, and the idempotency key is not used
/// up; once the outbox takes entries again the same request writes both.
#[tokio::test]
async fn a_write_whose_outbox_entry_fails_is_rolled_back() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the new integration is due at once and no worker runs it");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c
        .create("pos", "synthetic", json!({ "records": 0 }), None)
        .await;
    use reqwest::Method;
    let (s, v, _) = send(
        c,
        Method::PUT,
        &format!("/api/integrations/{id}/records/kept"),
        Some(&json!({ "n": 1 })),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for sql in [
        "CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN \
           IF NEW.external_id = 'boom' THEN RAISE EXCEPTION 'the outbox refuses boom'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
    ] {
        syncfleet_worker::db::exec(&env.db, sql, [])
            .await
            .expect(sql);
    }
    let boom = format!("/api/integrations/{id}/records/boom");
    let (s, v, _) = send(
        c,
        Method::PUT,
        &boom,
        Some(&json!({ "n": 2 })),
        &[("Idempotency-Key", "k-boom")],
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let batch = json!({ "operations": [
        { "op": "patch", "externalId": "kept", "data": { "n": 9 } },
        { "op": "put", "externalId": "boom", "data": { "n": 3 } },
    ] });
    let (s, v, _) = send(
        c,
        Method::POST,
        &format!("/api/integrations/{id}/records:batch"),
        Some(&batch),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let rows = strings(
        &env.db,
        "SELECT external_id || '=' || CAST(data AS TEXT) || '@' || CAST(version AS TEXT) FROM records ORDER BY 1",
        vec![],
    )
    .await;
    assert_eq!(
        rows,
        [r#"kept={"n": 1}@1"#],
        "no write without its outbox entry"
    );
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM outbox", vec![]).await,
        1
    );
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM idempotency_keys", vec![]).await,
        0,
        "the failed request's key is not used up"
    );
    syncfleet_worker::db::exec(&env.db, "DROP TRIGGER refuse_boom ON outbox", [])
        .await
        .expect("drop trigger");
    let (s, v, _) = send(
        c,
        Method::PUT,
        &boom,
        Some(&json!({ "n": 2 })),
        &[("Idempotency-Key", "k-boom")],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM outbox WHERE external_id = 'boom'",
            vec![]
        )
        .await,
        1
    );
    app.stop().await;
}
