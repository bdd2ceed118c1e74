//! The embedded mode (one process, SQLite file, embedded queue) in-process on port 0,
//! for tests that must hold on both databases.

use std::time::Duration;

use syncfleet_api::app::{self, Started};
use syncfleet_api::config::Config;
use syncfleet_api::db::AdminKey;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::ApiClient;

/// A running standalone process (API + scheduler + worker) on a temporary SQLite file.
pub struct Embedded {
    pub url: String,
    pub client: ApiClient,
    /// The SQLite database file.
    pub db_path: std::path::PathBuf,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
    // Kept for the lifetime of the process: dropping it removes the files.
    _dir: tempfile::TempDir,
}

/// Starts `run_standalone` on a fresh SQLite file in a temporary directory, with the
/// tests' fast timings and `overrides`.
pub async fn spawn_standalone(overrides: &[(&str, &str)]) -> Embedded {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("syncfleet.db");
    let url = format!("sqlite://{}?mode=rwc", db_path.display());
    let mut vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", url.as_str()),
        ("SYNCFLEET_SCHEDULER_TICK_MS", "100"),
        ("SYNCFLEET_POLL_INTERVAL_MS", "20"),
        ("SYNCFLEET_MIN_INTERVAL_SECS", "1"),
        ("SYNCFLEET_REAPER_PERIOD_MS", "250"),
        ("SYNCFLEET_RETRY_BASE_MS", "300"),
        ("SYNCFLEET_RETRY_CAP_MS", "2000"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Config::from_map(&vars).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<Started>();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        app::run_standalone(config, listener, token, move |s| {
            let _ = tx.send(s);
        })
        .await
    });
    let started = rx.await.expect("started");
    let key = match started.admin_key {
        AdminKey::Generated(k) => k,
        other => panic!("no admin key generated: {other:?}"),
    };
    Embedded {
        client: ApiClient::new(&started.url, &key),
        url: started.url,
        db_path,
        shutdown,
        handle,
        _dir: dir,
    }
}

impl Embedded {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}
