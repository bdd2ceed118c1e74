//! A TCP proxy a test can turn into a black hole: the way to make a real PostgreSQL (or
//! Redis) hang for one process without touching the machine's server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:<port>` to an upstream address until told to hang.
pub struct Proxy {
    pub port: u16,
    hanging: Arc<AtomicBool>,
    /// Woken to drop every forwarded connection.
    cut: Arc<Notify>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let hanging = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(Notify::new());
        let (h, c) = (hanging.clone(), cut.clone());
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                if h.load(Ordering::SeqCst) {
                    // A black hole: the connection is accepted and never answered.
                    held.push(client);
                    continue;
                }
                let (up, c) = (upstream.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&up).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = c.notified() => {}
                    }
                });
            }
        });
        Self {
            port,
            hanging,
            cut,
            accept,
        }
    }

    /// Drops every open connection and answers no new one (they hang).
    pub fn hang(&self) {
        self.hanging.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.hanging.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.notify_waiters();
        self.accept.abort();
    }
}
