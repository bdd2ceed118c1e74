//! The command line: roles (`standalone`, `api`, `worker`, `migrate`).

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::Config;
use crate::db::AdminKey;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "syncfleet",
    version,
    about = "Keeps a KPI dashboard's data fresh: a job-queue worker fleet for data-source syncs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// API + scheduler + worker in one process on the embedded default (the default).
    Standalone,
    /// A production API replica (PostgreSQL + Redis) with the scheduler.
    Api,
    /// A production worker process.
    Worker,
    /// Apply pending database migrations.
    Migrate,
}

/// Process exit codes.
pub const EXIT_CONFIG: i32 = 2;

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syncfleet: {e}");
            return EXIT_CONFIG;
        }
    };
    let command = cli.command.unwrap_or(Command::Standalone);
    // Production roles need their services named before anything starts.
    let precheck = match command {
        Command::Api | Command::Worker => config
            .require_database()
            .and_then(|_| config.require_redis())
            .map(|_| ()),
        _ => Ok(()),
    };
    if let Err(e) = precheck {
        eprintln!("syncfleet: {e}");
        return EXIT_CONFIG;
    }
    telemetry::init(config.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    let result = match command {
        Command::Standalone | Command::Api => {
            let listener = match TcpListener::bind(config.listen).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!(
                        "syncfleet: cannot listen on {} (SYNCFLEET_LISTEN): {e}",
                        config.listen
                    );
                    return 1;
                }
            };
            let banner = |s: app::Started| {
                println!("syncfleet listening on {}", s.url);
                match s.admin_key {
                    AdminKey::Generated(k) => {
                        println!("admin API key (shown once, store it now): {k}")
                    }
                    AdminKey::Given => println!("admin API key: the one in SYNCFLEET_ADMIN_TOKEN"),
                    AdminKey::Existing => println!(
                        "admin API key: created on first start (set SYNCFLEET_ADMIN_TOKEN to use your own)"
                    ),
                }
            };
            if matches!(command, Command::Api) {
                app::run_api(config, listener, shutdown, banner).await
            } else {
                app::run_standalone(config, listener, shutdown, banner).await
            }
        }
        Command::Worker => app::run_worker(config, shutdown).await,
        Command::Migrate => app::run_migrate(config)
            .await
            .map(|n| println!("applied {n} migration(s)")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("syncfleet: {e:#}");
            1
        }
    }
}

/// SIGINT/SIGTERM → the one shutdown token.
async fn signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested; draining");
    token.cancel();
}
