//! A PostgreSQL cluster of the battery's own: `initdb` into a temporary directory, run
//! as the `postgres` OS user (the server refuses root), on a private loopback port.
//!
//! The battery stops and restarts it (the `pg-outage` scenario) without touching any
//! other server on the machine. The cluster is stopped and its directory removed on
//! drop, and by [`emergency_stop_all`] when the harness is interrupted by a signal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

/// The OS user the server runs as.
const PG_USER: &str = "postgres";

/// Clusters alive now: (bindir, data directory, temporary root), for [`emergency_stop_all`].
static LIVE: Mutex<Vec<(PathBuf, PathBuf, PathBuf)>> = Mutex::new(Vec::new());

pub struct PgCluster {
    /// Removed on drop (after the server stopped).
    root: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
    running: AtomicBool,
}

/// The directory of `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/<ver>/bin`
/// that has both, else whatever `pg_config --bindir` names.
pub fn bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let ver: u32 = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((ver, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    has_tools(&bin).then_some(bin)
}

/// Runs `tool args…` from `bindir` as the `postgres` user; `Ok` if it exited 0.
fn as_postgres(bindir: &Path, cwd: &Path, tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("runuser")
        .arg("-u")
        .arg(PG_USER)
        .arg("--")
        .arg(bindir.join(tool))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {tool} as {PG_USER} (runuser)"))?;
    if !status.success() {
        bail!("{tool} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

impl PgCluster {
    /// `initdb` + `pg_ctl start` on a free port. Durability is off (fsync, synchronous
    /// commit, full-page writes): the cluster lives for one battery run.
    pub fn start() -> anyhow::Result<Self> {
        let bindir = bindir().context("no PostgreSQL server binaries (initdb, pg_ctl) found")?;
        let root = tempfile::Builder::new()
            .prefix("syncfleet-chaos-pg-")
            .tempdir()
            .context("temporary directory")?;
        let status = Command::new("chown")
            .arg(format!("{PG_USER}:"))
            .arg(root.path())
            .status()
            .context("chown")?;
        if !status.success() {
            bail!("chown {PG_USER} {} failed", root.path().display());
        }
        let data = root.path().join("data");
        let data_s = data.to_string_lossy().into_owned();
        as_postgres(
            &bindir,
            root.path(),
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                PG_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let port = crate::procs::free_port();
        let conf = format!(
            "\n# syncfleet chaos battery\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nmax_connections = 400\nshared_buffers = 128MB\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            root.path().display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).context("postgresql.conf")?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).context("postgresql.conf")?;
        let c = Self {
            root,
            bindir,
            port,
            running: AtomicBool::new(false),
        };
        if let Ok(mut live) = LIVE.lock() {
            live.push((c.bindir.clone(), data, c.root.path().to_owned()));
        }
        c.start_again()?;
        Ok(c)
    }

    fn data(&self) -> String {
        self.root.path().join("data").to_string_lossy().into_owned()
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.data();
        let log = self.root.path().join("server.log");
        let log = log.to_string_lossy();
        let mut all = vec!["-D", &data, "-l", &log];
        all.extend_from_slice(args);
        as_postgres(&self.bindir, self.root.path(), "pg_ctl", &all)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-w", "-t", "60", "start"])?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// `pg_ctl stop -m fast`: every session is cut, the server is down when this returns.
    pub fn stop_fast(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"])?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// A connection URL for database `db` (the superuser, trusted on loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log, for a failing scenario's report.
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            let _ = self.pg_ctl(&["-w", "-t", "30", "-m", "immediate", "stop"]);
        }
        let data = self.root.path().join("data");
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|(_, d, _)| d != &data);
        }
    }
}

/// Stops every cluster still alive (`-m immediate`) and removes its directory: for a
/// signal handler, where no destructor runs.
pub fn emergency_stop_all() {
    let live: Vec<_> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for (bindir, data, root) in live {
        let data_s = data.to_string_lossy().into_owned();
        let _ = as_postgres(
            &bindir,
            &root,
            "pg_ctl",
            &["-D", &data_s, "-w", "-t", "30", "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
