//! Real processes: `syncfleet` roles and private `redis-server`s. Tests only ever
//! signal processes they started, by PID.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// PIDs of the children started through this module that have not been dropped yet, so
/// a harness interrupted by a signal (where no `Drop` runs) can still stop exactly them.
static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn track(child: Child) -> Proc {
    let p = Proc { child };
    if let Ok(mut live) = LIVE.lock() {
        live.insert(p.pid());
    }
    p
}

/// SIGKILLs every child started through this module that is still tracked (for a
/// signal handler: the harness is going away without unwinding).
pub fn kill_live_children() {
    let pids: Vec<i32> = LIVE
        .lock()
        .map(|l| l.iter().copied().collect())
        .unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

/// The `syncfleet` binary built beside this test binary.
pub fn syncfleet_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bench> → target/<profile>/syncfleet
    let mut dir = exe.parent().expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target dir");
    }
    let bin = dir.join("syncfleet");
    assert!(
        bin.exists(),
        "{} not built (run through `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM and wait up to `within`; returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&self.pid());
        }
    }
}

/// Starts `syncfleet <role>` with exactly `vars` (plus PATH).
pub fn syncfleet(role: &str, vars: &HashMap<String, String>) -> Proc {
    syncfleet_logged(role, vars, None)
}

/// [`syncfleet`], appending the process's stderr (its log) to `log` when given.
pub fn syncfleet_logged(role: &str, vars: &HashMap<String, String>, log: Option<&Path>) -> Proc {
    let mut cmd = Command::new(syncfleet_bin());
    cmd.arg(role)
        .env_clear()
        .envs(vars)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let file = log.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    if let Some(f) = file {
        cmd.stderr(Stdio::from(f));
    } else if std::env::var("SYNCFLEET_TEST_LOGS").is_ok() {
        cmd.stderr(Stdio::inherit());
    } else {
        cmd.stderr(Stdio::null());
    }
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    track(cmd.spawn().expect("spawn syncfleet"))
}

/// Debian's libfaketime (multithreaded variant), for a process whose wall clock is
/// skewed: preload it with `FAKETIME=-300s`. Preloading it into our own process (rather
/// than running the `faketime` wrapper, which forks) keeps the PID ours to signal.
pub fn libfaketime() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib").ok()?.flatten().find_map(|d| {
        let p = d.path().join("faketime").join("libfaketimeMT.so.1");
        p.exists().then_some(p)
    });
    lib.or_else(|| {
        let p = PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1");
        p.exists().then_some(p)
    })
}

/// A private `redis-server` on a free port, for tests that stop or restart Redis.
pub struct RedisServer {
    pub port: u16,
    pub proc: Option<Proc>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl RedisServer {
    /// `None` when `redis-server` is not installed (the caller skips or fails).
    pub fn start() -> Option<Self> {
        let port = free_port();
        let mut s = Self { port, proc: None };
        s.proc = Some(s.spawn()?);
        Some(s)
    }

    fn spawn(&self) -> Option<Proc> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let p = track(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (data is lost: it keeps nothing on disk).
    pub fn stop(&mut self) {
        self.proc = None;
    }

    pub fn restart(&mut self) {
        self.proc = None;
        self.proc = self.spawn();
        assert!(self.proc.is_some(), "redis-server restart failed");
    }
}
