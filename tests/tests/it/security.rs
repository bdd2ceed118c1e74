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
