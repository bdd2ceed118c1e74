//! The chaos battery (see `tests::chaos`): the real api and worker processes against a
//! PostgreSQL cluster and a `redis-server` of its own, through kills, freezes, outages,
//! skewed clocks, herds, poison runs and drains.
//!
//! cargo run -p tests --bin chaos -- <scenario>|all [--short] [--integrations N] [--seconds S] [--logs DIR]
//!
//! Needs the `syncfleet` binary built beside it (`cargo build -p syncfleet-api --bin
//! syncfleet` in the same profile), root (the cluster runs as `postgres` via `runuser`),
//! `redis-server`, the PostgreSQL server binaries and, for `clock-skew`, `faketime`.

#[tokio::main]
async fn main() {
    let code = tests::chaos::main(std::env::args().skip(1).collect()).await;
    std::process::exit(code);
}
