//! `pg-outage`: the database goes away (`pg_ctl stop -m fast`) for tens of seconds.
//!
//! Nothing can be done without the source of truth, but the fleet must ride it out:
//! every process survives, none spins (CPU during the outage stays low), `/readyz` keeps
//! answering quickly that the database is down (load balancers and orchestrators act on
//! it), and the fleet syncs again soon after the database is back.

use std::time::{Duration, Instant};

use super::harness::{self, Ctx, LEASE_MS, REENQUEUE_MS};
use super::report::{Report, secs};
use crate::fleet::sys::cpu_secs;

/// Most CPU one process may use while the database is down, in cores.
const CPU_BOUND: f64 = 0.25;

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("pg-outage");
    let n = ctx.n(20, 40);
    let outage = ctx.phase(15, 45);
    let mut f = ctx.fleet("pg-outage", &[]).await;
    f.add_api(&[]).await;
    for i in 0..2 {
        f.add_worker(&format!("po{i}"), &[]).await;
    }
    f.seed_group(
        "po",
        n,
        1,
        "'{\"records\": 1, \"latencyMs\": 200}'::jsonb",
        "t0",
        "NULL",
    )
    .await;
    let steady = harness::until_n(
        &f,
        "SELECT count(DISTINCT integration_id) AS n FROM sync_logs WHERE status = 'SUCCESS'",
        n as i64,
        Duration::from_secs(30),
    )
    .await;
    r.within(
        "precondition: steady state before the outage",
        steady,
        Duration::from_secs(30),
    );
    let members: Vec<(String, i32)> = f
        .apis
        .iter()
        .chain(f.workers.iter())
        .map(|m| (m.label.clone(), m.pid()))
        .collect();
    let cpu0: Vec<f64> = members.iter().map(|(_, p)| cpu_secs(*p)).collect();
    let stopped = Instant::now();
    if let Err(e) = ctx.pg.stop_fast() {
        r.check("pg_ctl stop -m fast", e.to_string(), "stops", false);
        return r;
    }

    // /readyz every second while the database is down, each probe on its own so a slow
    // answer does not thin out the samples or stretch the outage.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client");
    let ready_url = f.apis[0].url("/readyz");
    let mut probes = Vec::new();
    while stopped.elapsed() < outage {
        let (http, url) = (http.clone(), ready_url.clone());
        probes.push(tokio::spawn(async move {
            let t = Instant::now();
            let named = match http.get(&url).send().await {
                Ok(a) => {
                    a.status().as_u16() == 503
                        && a.text()
                            .await
                            .is_ok_and(|b| b.contains("\"database\":\"unavailable\""))
                }
                Err(_) => false,
            };
            (t.elapsed(), named)
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let down_for = stopped.elapsed();
    let cpu: Vec<f64> = members
        .iter()
        .zip(&cpu0)
        .map(|((_, p), c0)| (cpu_secs(*p) - c0) / down_for.as_secs_f64())
        .collect();
    if let Err(e) = ctx.pg.start_again() {
        r.check("pg_ctl start", e.to_string(), "starts", false);
        return r;
    }
    let up = Instant::now();
    let mut alive = 0;
    for m in f.apis.iter_mut().chain(f.workers.iter_mut()) {
        if m.alive() {
            alive += 1;
        }
    }
    // The harness's own pool reconnects too; "after the restart" is by the database clock.
    let t_up = harness::poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { harness::db_now(&f.db).await },
    )
    .await
    .map(|(t, _)| t);
    let bound = Duration::from_millis(2 * LEASE_MS + 2 * REENQUEUE_MS) + Duration::from_secs(10);
    let (first, all) = match t_up {
        Some(t) => {
            let since = harness::lit(t);
            let first = harness::until_n(
                &f,
                &format!(
                    "SELECT count(*) AS n FROM sync_logs WHERE status = 'SUCCESS' AND completed_at > {since}"
                ),
                1,
                bound,
            )
            .await
            .map(|_| up.elapsed());
            let all = harness::until_n(
                &f,
                &format!(
                    "SELECT count(DISTINCT integration_id) AS n FROM sync_logs WHERE status = 'SUCCESS' AND completed_at > {since}"
                ),
                n as i64,
                bound,
            )
            .await
            .map(|_| up.elapsed());
            (first, all)
        }
        None => (None, None),
    };
    // Probes still waiting when the database came back count as slow and unnamed.
    let (mut slow, mut named, mut worst) = (0, 0, Duration::ZERO);
    let probes_n = probes.len();
    for p in probes {
        let (took, ok) = p.await.unwrap_or((Duration::from_secs(15), false));
        worst = worst.max(took);
        slow += usize::from(took > Duration::from_secs(1));
        named += usize::from(ok);
    }
    let probes = probes_n;
    r.check(
        "processes alive after the outage",
        format!("{alive}/{}", members.len()),
        "all",
        alive == members.len(),
    );
    let hottest = cpu.iter().copied().fold(0.0, f64::max);
    r.check(
        "CPU per process during the outage (hottest)",
        format!("{:.0} % of a core", hottest * 100.0),
        format!("≤ {:.0} %", CPU_BOUND * 100.0),
        hottest <= CPU_BOUND,
    );
    r.check(
        "/readyz answered within 1 s during the outage",
        format!(
            "{}/{probes} probes (slowest {})",
            probes - slow,
            secs(worst)
        ),
        "all",
        slow == 0 && probes > 0,
    );
    r.check(
        "/readyz 503 naming the database",
        format!("{named}/{probes}"),
        "all",
        named == probes && probes > 0,
    );
    r.within("first success after the restart", first, bound);
    r.within(
        "every integration synced again after the restart",
        all,
        bound,
    );
    r.note(format!(
        "PostgreSQL down {}; CPU during the outage: {}.",
        secs(down_for),
        members
            .iter()
            .zip(&cpu)
            .map(|((l, _), c)| format!("{l} {:.1} %", c * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    f.stop(Duration::from_secs(10)).await;
    r
}
