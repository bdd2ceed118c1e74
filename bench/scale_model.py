#!/usr/bin/env python3
"""A capacity model of a syncfleet deployment (docs/scale.md).

It is arithmetic, not a benchmark: it takes the CPU each component spends per run (as
fleet-bench measures it, BENCHMARKS.md), the cores and processes you give each component,
and a workload (integrations, interval, run duration, burst), and reports for every
resource the load, the utilisation, the capacity in runs/s and the headroom, which
resource binds first, and how long a burst of runs due at once takes to drain while the
steady load goes on. Every figure it uses is a flag, so a new measurement is re-plugged
by passing it. Only the Python standard library is used.

    python3 bench/scale_model.py                      # 1M integrations, 5 min, measured costs
    python3 bench/scale_model.py --profile redesign   # history written once (assumed costs)
    python3 bench/scale_model.py --records-share 0.2  # a fifth of the runs write records
    python3 bench/scale_model.py --sweep workers=8,14,20,28
    python3 bench/scale_model.py --json               # the same figures, machine-readable
    python3 bench/scale_model.py slots syncfleet tenant-b   # Redis Cluster slot of prefixes
    python3 bench/scale_model.py selftest             # checks the arithmetic

The model is linear: a component's CPU per run is taken as constant up to saturation.
Real PostgreSQL is not linear on many cores for a write-heavy load (WAL insertion, lock
manager, buffer mapping), which is why the verdict uses a planning ceiling (--plan-util,
70 % by default) and not 100 %.
"""

import argparse
import json
import math
import sys

# CPU µs per completed run on the benchmark machine (2 vCPU, shared), by profile.
# `source` says where each figure comes from; anything not measured says so.
PROFILES = {
    "measured": {
        "source": "fleet-bench throughput, 4 worker processes, 0 records/run, "
        "Redis queue (BENCHMARKS.md, 2026-12-02; midpoints of the measured ranges)",
        "api_us": 4.0,
        "workers_us": 125.0,  # 119-131
        "redis_us": 12.0,  # 11-12
        "pg_us": 353.0,  # 319-387
        "pg_tx_per_run": 0.215,  # 0.20-0.23
        "finish_tx_per_run": 0.10,  # assumed: about half the transactions are finish batches
        "history_kb_per_run": 1.047,  # sync_logs table + indexes per run (footprint round)
        "wal_kb_per_run": 4.0,  # ESTIMATE from row and index-tuple counts, not measured
    },
    "redesign": {
        "source": "ASSUMED until measured: history row written once, live runs in a narrow "
        "live_runs table; PostgreSQL CPU and history bytes per run scaled from the measured "
        "profile (x0.65 and ~0.6 KB), the rest as measured",
        "api_us": 4.0,
        "workers_us": 125.0,
        "redis_us": 12.0,
        "pg_us": 353.0 * 0.65,
        "pg_tx_per_run": 0.215,
        "finish_tx_per_run": 0.10,
        "history_kb_per_run": 0.6,
        "wal_kb_per_run": 2.6,
    },
}

# A run that writes records: first sync of 100 records, every record an insert, each such
# run in its own finish transaction (BENCHMARKS.md, 2026-11-22). Its Redis figure (97 µs)
# was measured on the old apalis-redis queue; the queue's cost no longer depends on
# records, so the 0-record figure is used instead.
RECORDS_RUN = {
    "api_us": 18.0,
    "workers_us": 600.0,
    "redis_us": 12.0,
    "pg_us": 1960.0,
    "pg_tx_per_run": 2.12,
    "history_kb_per_run": 1.047,
    "wal_kb_per_run": 4.0 + 100 * 0.5,  # ESTIMATE: ~0.5 KB of WAL per inserted record
}

WORKER_POOL_CAP = 16  # a worker's pool: min(concurrency + 4, 16) (docs/architecture.md §2.7)
API_POOL = 16


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Capacity model of a syncfleet deployment (docs/scale.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    w = p.add_argument_group("workload")
    w.add_argument("--integrations", type=float, default=1_000_000)
    w.add_argument("--interval", type=float, default=300, help="sync interval, seconds")
    w.add_argument("--run-secs", type=float, default=1.0,
                   help="mean claim-to-finish time of a run (the source's latency); "
                        "fleet-bench's synthetic runs take milliseconds")
    w.add_argument("--burst", type=float, default=33_000,
                   help="runs due at the same instant on top of the steady load")
    w.add_argument("--records-share", type=float, default=0.0,
                   help="fraction of runs that write records (each keeps its own finish "
                        "transaction; costed as a 100-record first sync)")
    c = p.add_argument_group("per-run costs (CPU µs per run on the benchmark machine)")
    c.add_argument("--profile", choices=sorted(PROFILES), default="measured")
    for name in ("api", "workers", "redis", "pg"):
        c.add_argument(f"--{name}-us", type=float, help=f"override the profile's {name} µs/run")
    c.add_argument("--pg-tx-per-run", type=float)
    c.add_argument("--finish-tx-per-run", type=float,
                   help="finish transactions per batched run (each sends NOTIFY)")
    c.add_argument("--history-kb-per-run", type=float)
    c.add_argument("--wal-kb-per-run", type=float)
    c.add_argument("--core-speed", type=float, default=1.0,
                   help="a core of the target machines relative to the benchmark machine's")
    d = p.add_argument_group("deployment")
    d.add_argument("--api-replicas", type=int, default=2)
    d.add_argument("--api-cores", type=float, default=4, help="all API replicas together")
    d.add_argument("--workers", type=int, default=20, help="worker processes")
    d.add_argument("--concurrency", type=int, default=256, help="SYNCFLEET_WORKER_CONCURRENCY")
    d.add_argument("--worker-cores", type=float, default=4, help="all worker processes together")
    d.add_argument("--redis-cores", type=float, default=1,
                   help="Redis executes commands and scripts on one thread: at most 1 counts")
    d.add_argument("--pg-cores", type=float, default=16)
    d.add_argument("--pg-max-connections", type=int, default=400)
    d.add_argument("--pg-other-connections", type=int, default=10,
                   help="connections outside the pools: listeners, migrate, psql, replicas")
    d.add_argument("--commit-ms", type=float, default=1.0,
                   help="commit latency of the primary (WAL flush; a synchronous standby "
                        "adds its round trip); commits that NOTIFY are serialised on it")
    d.add_argument("--retention-days", type=float, default=7)
    d.add_argument("--plan-util", type=float, default=0.70,
                   help="utilisation above which a resource counts as saturated")
    p.add_argument("--sweep", help="flag=v1,v2,... re-runs the model for each value of one "
                   "numeric flag (workers, concurrency, pg_cores, pg_max_connections, "
                   "run_secs, commit_ms, records_share, burst, ...)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def costs(a):
    """Per-run figures of the chosen profile, mixed with record-writing runs."""
    base = dict(PROFILES[a.profile])
    for k in ("api_us", "workers_us", "redis_us", "pg_us", "pg_tx_per_run",
              "finish_tx_per_run", "history_kb_per_run", "wal_kb_per_run"):
        v = getattr(a, k)
        if v is not None:
            base[k] = v
    f = a.records_share
    mixed = {k: (1 - f) * base[k] + f * RECORDS_RUN[k] for k in RECORDS_RUN}
    mixed["source"] = base["source"]
    # Finish commits (each sends NOTIFY): a batched run shares one, a record-writing run
    # commits its own.
    mixed["finish_tx_per_run"] = base["finish_tx_per_run"]
    mixed["single_finish_per_run"] = f
    return mixed


def model(a):
    k = costs(a)
    n, interval = a.integrations, a.interval
    # After a success the next slot is interval - phase (phase uniform in
    # [0, min(interval/10, 60 s)), docs/architecture.md §4.6), counted from the finish.
    window = min(interval / 10, 60)
    period = interval - window / 2 + a.run_secs
    rate = n / period
    in_flight = rate * a.run_secs
    speed = a.core_speed * 1e6  # CPU µs one core gives per second

    res = []

    def cpu(name, us, cores, note):
        cores_eff = min(cores, 1.0) if name == "Redis" else cores
        need = rate * us / speed  # cores busy at the steady rate
        cap = cores_eff * speed / us if us > 0 else math.inf
        res.append({"resource": name, "unit": "cores", "per_run": f"{us:.0f} µs",
                    "need": need, "have": cores_eff, "util": need / cores_eff,
                    "capacity_runs_s": cap, "note": note})

    cpu("API (scheduler, maintenance)", k["api_us"], a.api_cores,
        "HTTP reads (history, console) come on top")
    cpu("workers CPU", k["workers_us"], a.worker_cores,
        "real connectors (TLS, JSON) cost more than synthetic runs")
    slots = a.workers * a.concurrency
    res.append({"resource": "worker slots", "unit": "runs in flight", "per_run": f"{a.run_secs:g} s",
                "need": in_flight, "have": slots, "util": in_flight / slots,
                "capacity_runs_s": slots / a.run_secs if a.run_secs > 0 else math.inf,
                "note": f"{a.workers} processes x concurrency {a.concurrency}"})
    cpu("Redis", k["redis_us"], a.redis_cores, "one thread; a limited kind adds a script per request")
    cpu("PostgreSQL CPU", k["pg_us"], a.pg_cores, "linear model; see --plan-util")
    # Commits that send NOTIFY hold one instance-wide lock until after their commit.
    serial_per_run = k["single_finish_per_run"] + (1 - a.records_share) * k["finish_tx_per_run"]
    commits_s = rate * serial_per_run
    commit_cap = 1000.0 / a.commit_ms
    single = k["single_finish_per_run"]
    # Batched finishes grow their batches when commits queue (up to 256 runs a commit,
    # docs/architecture.md §4.7); single-run finishes take one commit each.
    notify_cap = commit_cap / (single + (1 - single) / 256)
    # `need` is at today's batch size; the utilisation is against the capacity, since a
    # busy lock makes the batches larger rather than the queue longer.
    res.append({"resource": "NOTIFY commit lock", "unit": "commits/s", "per_run": f"{serial_per_run:.2f}",
                "need": commits_s, "have": commit_cap, "util": rate / notify_cap,
                "capacity_runs_s": notify_cap,
                "note": f"{a.commit_ms:g} ms a commit; single-run finishes {single:.0%} of runs"})
    conns = a.api_replicas * API_POOL + a.workers * min(a.concurrency + 4, WORKER_POOL_CAP) \
        + a.pg_other_connections
    res.append({"resource": "PostgreSQL connections", "unit": "connections", "per_run": "-",
                "need": conns, "have": a.pg_max_connections, "util": conns / a.pg_max_connections,
                "capacity_runs_s": math.inf if conns <= a.pg_max_connections else 0.0,
                "note": "pools at their maximum; not a rate, a count"})

    capacity = min(r["capacity_runs_s"] for r in res)
    bottleneck = min(res, key=lambda r: r["capacity_runs_s"])["resource"]
    planned = min(r["capacity_runs_s"] * (a.plan_util if r["unit"] != "connections" else 1)
                  for r in res)

    def drain(cap):
        spare = cap - rate
        return a.burst / spare if spare > 0 else math.inf

    history_gb_day = rate * 86400 * k["history_kb_per_run"] / 1e6
    out = {
        "workload": {
            "integrations": n, "interval_s": interval, "run_secs": a.run_secs,
            "nominal_runs_s": n / interval, "runs_s": rate, "mean_period_s": period,
            "runs_in_flight": in_flight, "burst": a.burst, "records_share": a.records_share,
        },
        "profile": a.profile, "source": k["source"],
        "resources": res,
        "capacity_runs_s": capacity, "bottleneck": bottleneck,
        "planned_capacity_runs_s": planned,
        "headroom": capacity / rate - 1,
        "burst_drain_s": drain(capacity),
        "burst_drain_at_plan_s": drain(planned),
        "burst_slack_s": window,
        "storage": {
            "history_gb_per_day": history_gb_day,
            "history_gb_retained": history_gb_day * a.retention_days,
            "retention_days": a.retention_days,
            "wal_mb_per_s": rate * k["wal_kb_per_run"] / 1000,
            "wal_gb_per_day": rate * 86400 * k["wal_kb_per_run"] / 1e6,
            "xids_per_day": rate * 86400 * k["pg_tx_per_run"],
            "pg_tx_per_s": rate * k["pg_tx_per_run"],
        },
    }
    return out


def finite(x):
    """JSON has no infinity: unbounded figures become null."""
    if isinstance(x, float) and math.isinf(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


def fmt_num(x, unit=""):
    if x == math.inf:
        return "unbounded"
    if abs(x) >= 100:
        return f"{x:,.0f}{unit}"
    if abs(x) >= 10:
        return f"{x:,.1f}{unit}"
    return f"{x:,.2f}{unit}"


def fmt_secs(s):
    if s == math.inf:
        return "never"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def report(m, a):
    w = m["workload"]
    print(f"# syncfleet capacity model ({m['profile']} costs)\n")
    print(f"costs: {m['source']}\n")
    print(f"- {w['integrations']:,.0f} integrations every {w['interval_s']:g} s: "
          f"{w['nominal_runs_s']:,.0f} runs/s nominal, {w['runs_s']:,.0f} runs/s with the "
          f"schedule's phase and a {w['run_secs']:g} s run (mean period {w['mean_period_s']:.1f} s)")
    print(f"- runs in flight: {w['runs_in_flight']:,.0f}; runs that write records: "
          f"{w['records_share']:.0%}; burst: {w['burst']:,.0f} runs due at once\n")
    print("| resource | per run | needed | available | utilisation | capacity runs/s | note |")
    print("|---|---|---|---|---|---|---|")
    for r in m["resources"]:
        limit = 1.0 if r["unit"] == "connections" else a.plan_util
        flag = " **over**" if r["util"] > limit else ""
        print(f"| {r['resource']} | {r['per_run']} | {fmt_num(r['need'])} {r['unit']} | "
              f"{fmt_num(r['have'])} | {r['util']:.1%}{flag} | {fmt_num(r['capacity_runs_s'])} | "
              f"{r['note']} |")
    print()
    margin = (f"headroom {fmt_num(100 * m['headroom'])} % over the steady load"
              if m["headroom"] >= 0 else
              f"**short**: {fmt_num(100 * (1 + m['headroom']))} % of the steady load")
    print(f"- binds first: **{m['bottleneck']}**, at {fmt_num(m['capacity_runs_s'])} runs/s "
          f"({margin}); at the {a.plan_util:.0%} planning ceiling "
          f"{fmt_num(m['planned_capacity_runs_s'])} runs/s")
    def drains(t):
        return "never drains" if t == math.inf else f"drains in {fmt_secs(t)}"

    print(f"- the burst of {w['burst']:,.0f} {drains(m['burst_drain_s'])} at full "
          f"capacity and {drains(m['burst_drain_at_plan_s'])} at the planning ceiling, while the "
          f"steady load goes on (a run late by less than its integration's phase, "
          f"0-{m['burst_slack_s']:g} s, still syncs it within its interval)")
    s = m["storage"]
    print(f"- history: {fmt_num(s['history_gb_per_day'])} GB/day, "
          f"{fmt_num(s['history_gb_retained'])} GB kept at {s['retention_days']:g} days' retention")
    print(f"- WAL (estimate): {fmt_num(s['wal_mb_per_s'])} MB/s, {fmt_num(s['wal_gb_per_day'])} GB/day "
          f"before full-page images; {fmt_num(s['pg_tx_per_s'])} transactions/s, "
          f"{fmt_num(s['xids_per_day'] / 1e6)} M transaction ids/day")


def sweep(a):
    name, _, values = a.sweep.partition("=")
    name = name.strip().replace("-", "_")
    if not hasattr(a, name) or not values:
        sys.exit(f"--sweep: unknown flag `{name}` or no values")
    cast = type(getattr(a, name))
    rows = []
    for v in values.split(","):
        setattr(a, name, cast(float(v)) if cast is int else cast(v))
        m = model(a)
        rows.append((v, m))
    if a.json:
        print(json.dumps(finite([{name: v, **m} for v, m in rows]), indent=2, ensure_ascii=False))
        return
    print(f"# sweep of --{name.replace('_', '-')} ({a.profile} costs, burst {a.burst:,.0f})\n")
    print(f"| {name} | steady runs/s | binds first | capacity runs/s | headroom | burst drain | "
          f"at {a.plan_util:.0%} ceiling | PG connections |")
    print("|---|---|---|---|---|---|---|---|")
    for v, m in rows:
        conns = next(r for r in m["resources"] if r["resource"] == "PostgreSQL connections")
        print(f"| {v} | {m['workload']['runs_s']:,.0f} | {m['bottleneck']} | "
              f"{fmt_num(m['capacity_runs_s'])} | {fmt_num(100 * m['headroom'])} % | "
              f"{fmt_secs(m['burst_drain_s'])} | {fmt_secs(m['burst_drain_at_plan_s'])} | "
              f"{conns['need']:.0f} of {conns['have']:.0f} |")


def crc16(data):
    """CRC16/XMODEM, the hash Redis Cluster slots keys by."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def slots(argv):
    """The cluster slot of each prefix's keys (all of them share `{<prefix>:sync}`)."""
    p = argparse.ArgumentParser(prog="scale_model.py slots",
                                description="Redis Cluster slot of each SYNCFLEET_REDIS_PREFIX")
    p.add_argument("prefixes", nargs="+")
    p.add_argument("--shards", type=int, default=3,
                   help="shards of an evenly split cluster, to show which one a slot falls in")
    a = p.parse_args(argv)
    assert crc16(b"123456789") == 0x31C3
    print("| prefix | hash tag | slot | shard of an even split |")
    print("|---|---|---|---|")
    for prefix in a.prefixes:
        slot = crc16(f"{prefix}:sync".encode()) % 16384
        print(f"| {prefix} | {{{prefix}:sync}} | {slot} | {slot * a.shards // 16384 + 1} of {a.shards} |")


def selftest():
    """Checks the arithmetic against figures worked out by hand (docs/scale.md §2, §5.4)."""
    assert crc16(b"123456789") == 0x31C3  # the CRC16/XMODEM check value
    assert crc16(b"foo") % 16384 == 12182 and crc16(b"bar") % 16384 == 5061  # CLUSTER KEYSLOT
    m = model(parse_args([]))
    assert round(m["workload"]["runs_s"]) == 3497  # 1e6 / (300 - 15 + 1)
    assert round(m["workload"]["nominal_runs_s"]) == 3333
    pg = next(r for r in m["resources"] if r["resource"] == "PostgreSQL CPU")
    assert abs(pg["need"] - 3497 * 353 / 1e6) < 0.01
    assert abs(m["burst_drain_s"] - 33000 / (5120 - m["workload"]["runs_s"])) < 1e-6
    short = model(parse_args(["--workers", "3", "--concurrency", "16"]))
    assert short["bottleneck"] == "worker slots" and short["burst_drain_s"] == math.inf
    notify = model(parse_args(["--records-share", "1"]))
    assert round(notify["capacity_runs_s"]) == 1000  # one commit a run at 1 ms
    over = model(parse_args(["--workers", "30"]))
    assert over["bottleneck"] == "PostgreSQL connections"
    print("selftest ok")


def main(argv):
    if argv[:1] == ["slots"]:
        slots(argv[1:])
        return
    if argv[:1] == ["selftest"]:
        selftest()
        return
    a = parse_args(argv)
    if a.sweep:
        sweep(a)
        return
    m = model(a)
    if a.json:
        print(json.dumps(finite(m), indent=2, ensure_ascii=False))
    else:
        report(m, a)


if __name__ == "__main__":
    main(sys.argv[1:])
