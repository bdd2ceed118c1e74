//! The binary's contract with operators: bad configuration is one line naming the
//! variable and exit status 2; production roles refuse to start without their services.

use std::process::Command;

fn syncfleet(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncfleet"));
    cmd.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_database_url_exits_2_naming_the_variable() {
    let (code, err) = syncfleet(
        &["api"],
        &[
            ("DATABASE_URL", "not-a-url"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ],
    );
    assert_eq!(code, 2, "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_values_exit_2() {
    for (k, v) in [
        ("SYNCFLEET_SCHEDULER_TICK_MS", "0"),
        ("SYNCFLEET_LOG_FORMAT", "xml"),
        ("SYNCFLEET_LEASE_MS", "soon"),
        ("REDIS_URL", "::"),
        ("SYNCFLEET_PROVIDER_CONCURRENCY", "http_json=none"),
    ] {
        let (code, err) = syncfleet(&["standalone"], &[(k, v)]);
        assert_eq!(code, 2, "{k}={v}: {err}");
        assert!(err.contains(k), "{k}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    }
}

#[test]
fn production_roles_require_their_services() {
    let (code, err) = syncfleet(&["worker"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    let (code, err) = syncfleet(&["api"], &[("DATABASE_URL", "postgres://127.0.0.1/x")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("REDIS_URL"), "{err}");
}
