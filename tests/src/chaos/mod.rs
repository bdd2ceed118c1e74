//! The chaos battery: the real `syncfleet api` and `syncfleet worker` processes against a
//! PostgreSQL cluster and a `redis-server` of the battery's own, put through the faults a
//! fleet meets in production (kills, freezes, outages, skewed clocks, herds, poison,
//! drains), each scenario checked against invariants of the run protocol.
//!
//! `chaos <scenario>|all [--short] [--integrations N] [--seconds S] [--logs DIR]`
//!
//! Unit and end-to-end tests prove each mechanism once; this battery proves they hold
//! together under abuse, measured from outside (database rows, Redis keys, `/proc`,
//! `/metrics`, HTTP). Every scenario prints one markdown table (invariant, observed,
//! bound, ok); the binary exits 1 if any invariant is violated. Only processes the
//! battery started are ever signalled, by PID; everything it started is stopped and
//! removed at the end, also on panic (guards' `Drop`) and on SIGINT/SIGTERM.

pub mod clock_skew;
pub mod drain;
pub mod harness;
pub mod herd;
pub mod kill_storm;
pub mod pg;
pub mod pg_outage;
pub mod poison;
pub mod redis_restart;
pub mod report;
pub mod zombie;

use std::sync::Arc;
use std::time::Instant;

use harness::Ctx;
use report::Report;

/// Every scenario, in the order `all` runs them.
pub const SCENARIOS: &[&str] = &[
    "kill-storm",
    "zombie",
    "redis-restart",
    "pg-outage",
    "clock-skew",
    "herd",
    "poison",
    "drain",
];

async fn dispatch(name: &'static str, ctx: Arc<Ctx>) -> Report {
    match name {
        "kill-storm" => kill_storm::run(&ctx).await,
        "zombie" => zombie::run(&ctx).await,
        "redis-restart" => redis_restart::run(&ctx).await,
        "pg-outage" => pg_outage::run(&ctx).await,
        "clock-skew" => clock_skew::run(&ctx).await,
        "herd" => herd::run(&ctx).await,
        "poison" => poison::run(&ctx).await,
        "drain" => drain::run(&ctx).await,
        other => Report::aborted(other, "unknown scenario"),
    }
}

struct Args {
    scenarios: Vec<&'static str>,
    short: bool,
    integrations: Option<u64>,
    seconds: Option<u64>,
    logs: Option<std::path::PathBuf>,
}

const USAGE: &str = "usage: chaos <scenario>|all [--short] [--integrations N] [--seconds S] [--logs DIR]\n\
                     scenarios: kill-storm zombie redis-restart pg-outage clock-skew herd poison drain";

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let which = it.next().ok_or("missing scenario")?;
    let scenarios: Vec<&'static str> = if which == "all" {
        SCENARIOS.to_vec()
    } else {
        let mut v = Vec::new();
        for w in which.split(',') {
            let s = SCENARIOS
                .iter()
                .find(|s| **s == w)
                .ok_or_else(|| format!("unknown scenario `{w}`"))?;
            v.push(*s);
        }
        v
    };
    let mut a = Args {
        scenarios,
        short: false,
        integrations: None,
        seconds: None,
        logs: None,
    };
    while let Some(k) = it.next() {
        let mut value = |k: &str| it.next().cloned().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--short" => a.short = true,
            "--integrations" => {
                let v = value(k)?;
                a.integrations = Some(v.parse().map_err(|_| format!("--integrations {v}"))?);
            }
            "--seconds" => {
                let v = value(k)?;
                a.seconds = Some(v.parse().map_err(|_| format!("--seconds {v}"))?);
            }
            "--logs" => a.logs = Some(value(k)?.into()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(a)
}

/// What the battery needs on the machine, checked before anything starts.
fn preflight() -> Result<(), String> {
    let mut missing = Vec::new();
    for tool in ["redis-server", "runuser", "chown"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()));
        if !found {
            missing.push(tool.to_owned());
        }
    }
    if pg::bindir().is_none() {
        missing.push("PostgreSQL server binaries (initdb, pg_ctl)".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing: {}", missing.join(", ")))
    }
}

/// On SIGINT/SIGTERM no destructor runs: stop exactly what the battery started and
/// remove its scratch directory (`scratch`, when it made one).
fn on_signal_cleanup(scratch: Option<std::path::PathBuf>) {
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("chaos: interrupted; stopping every process it started");
        crate::procs::kill_live_children();
        pg::emergency_stop_all();
        if let Some(d) = scratch {
            let _ = std::fs::remove_dir_all(d);
        }
        std::process::exit(130);
    });
}

/// The `chaos` binary: runs the scenarios, prints their tables and a summary; the exit
/// status is 0 only if every invariant held.
pub async fn main(args: Vec<String>) -> i32 {
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return 2;
        }
    };
    if let Err(e) = preflight() {
        eprintln!("chaos: {e}");
        return 2;
    }
    let scratch = tempfile::Builder::new()
        .prefix("syncfleet-chaos-logs-")
        .tempdir();
    on_signal_cleanup(match (&a.logs, &scratch) {
        (None, Ok(t)) => Some(t.path().to_owned()),
        _ => None,
    });
    let began = Instant::now();
    let pg = match pg::PgCluster::start() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("chaos: cannot start a PostgreSQL cluster: {e:#}");
            return 2;
        }
    };
    let logs = match (&a.logs, &scratch) {
        (Some(d), _) => d.clone(),
        (None, Ok(t)) => t.path().to_owned(),
        (None, Err(_)) => std::env::temp_dir(),
    };
    eprintln!(
        "chaos: PostgreSQL {} on port {}, logs in {}{}",
        pg::bindir()
            .map(|b| b.display().to_string())
            .unwrap_or_default(),
        pg.port,
        logs.display(),
        if a.logs.is_none() {
            " (removed at the end; --logs DIR keeps them)"
        } else {
            ""
        }
    );
    let ctx = Arc::new(Ctx::new(a.short, a.integrations, a.seconds, pg, logs));
    let mut summary = Vec::new();
    for &name in &a.scenarios {
        eprintln!("chaos: {name} …");
        let t = Instant::now();
        let task = tokio::spawn(dispatch(name, ctx.clone()));
        let mut report = match task.await {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "panic".into())
                } else {
                    e.to_string()
                };
                Report::aborted(name, &format!("panicked: {}", why.replace('|', "/")))
            }
        };
        report.elapsed = t.elapsed();
        // A scenario that died mid-outage must not leave the next one without a database.
        if !ctx.pg.is_running() {
            let _ = ctx.pg.start_again();
        }
        println!("{}", report.markdown());
        summary.push((name, report.ok(), report.elapsed));
    }
    let failed = summary.iter().filter(|(_, ok, _)| !ok).count();
    println!("\n### chaos summary\n\n| scenario | result | seconds |\n|---|---|---|");
    for (name, ok, d) in &summary {
        println!(
            "| {name} | {} | {:.0} |",
            if *ok { "PASS" } else { "**FAIL**" },
            d.as_secs_f64()
        );
    }
    println!("\nchaos took {:.0} s", began.elapsed().as_secs_f64());
    println!("chaos: {} passed, {failed} failed", summary.len() - failed);
    drop(ctx);
    if failed == 0 { 0 } else { 1 }
}
