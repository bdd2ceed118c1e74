//! The command line: roles (`standalone`, `api`, `worker`, `migrate`) and operator
//! commands (`status`, `integrations`, `sync`, `history`, `pause`, `resume`).

pub mod ops;

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
    /// Re-encrypt every stored secret under SYNCFLEET_NEW_SECRET_KEY (then switch
    /// SYNCFLEET_SECRET_KEY to it).
    RotateKey,
    #[command(flatten)]
    Ops(OpsCommand),
}

/// Operator commands (clients of the HTTP API).
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Fleet status: workers, queue, live runs, failures.
    Status {
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// List integrations or change their interval.
    Integrations {
        #[command(subcommand)]
        cmd: ops::IntegrationsCmd,
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// Sync an integration now.
    Sync {
        /// Integration id.
        id: String,
        /// Run even if the integration is paused or disabled.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// Sync history of an integration, newest first.
    History {
        /// Integration id.
        id: String,
        /// Only runs with this status (`success`, `failed`, `pending`, …).
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs (1–500).
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// Pause an integration's syncs.
    Pause {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// Resume a paused or disabled integration (failures reset, syncs now).
    Resume {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        conn: ops::Conn,
    },
}

/// Runs an operator command; returns the exit code.
async fn run_ops(command: OpsCommand) -> i32 {
    let result = match command {
        OpsCommand::Status { conn } => ops::status(conn).await,
        OpsCommand::Integrations { cmd, conn } => ops::integrations(conn, cmd).await,
        OpsCommand::Sync { id, force, conn } => ops::sync(conn, id, force).await,
        OpsCommand::History {
            id,
            status,
            limit,
            conn,
        } => ops::history(conn, id, status, limit).await,
        OpsCommand::Pause { id, reason, conn } => ops::pause_resume(conn, id, reason, true).await,
        OpsCommand::Resume { id, reason, conn } => ops::pause_resume(conn, id, reason, false).await,
    };
    match result {
        Ok(()) => 0,
        Err(ops::OpsError(msg)) => {
            eprintln!("syncfleet: {msg}");
            1
        }
    }
}

/// The server roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Standalone,
    Api,
    Worker,
    Migrate,
    RotateKey,
}

/// Process exit codes.
pub const EXIT_CONFIG: i32 = 2;

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let command = match cli.command {
        Some(Command::Ops(op)) => return run_ops(op).await,
        None | Some(Command::Standalone) => Role::Standalone,
        Some(Command::Api) => Role::Api,
        Some(Command::Worker) => Role::Worker,
        Some(Command::Migrate) => Role::Migrate,
        Some(Command::RotateKey) => Role::RotateKey,
    };
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syncfleet: {e}");
            return EXIT_CONFIG;
        }
    };
    // Production roles need their services named before anything starts.
    let precheck = match command {
        Role::Api | Role::Worker => config
            .require_database()
            .and_then(|_| config.require_redis())
            .and_then(|_| config.require_secret_key())
            .map(|_| ()),
        _ => Ok(()),
    };
    if let Err(e) = precheck {
        eprintln!("syncfleet: {e}");
        return EXIT_CONFIG;
    }
    let role_name = match command {
        Role::Standalone => "standalone",
        Role::Api => "api",
        Role::Worker => "worker",
        Role::Migrate => "migrate",
        Role::RotateKey => "rotate-key",
    };
    let _telemetry = telemetry::init_role(config.log_format, role_name);
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    let result = match command {
        Role::Standalone | Role::Api => {
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
                println!("console: open {}/ and log in with an API key", s.url);
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
            if matches!(command, Role::Api) {
                app::run_api(config, listener, shutdown, banner).await
            } else {
                app::run_standalone(config, listener, shutdown, banner).await
            }
        }
        Role::Worker => app::run_worker(config, shutdown).await,
        Role::Migrate => app::run_migrate(config)
            .await
            .map(|n| println!("applied {n} migration(s)")),
        Role::RotateKey => match std::env::var("SYNCFLEET_NEW_SECRET_KEY") {
            Ok(new) => app::run_rotate_key(config, &new).await.map(|n| {
                println!("re-encrypted the secrets of {n} integration(s); now set SYNCFLEET_SECRET_KEY to the new key")
            }),
            Err(_) => {
                eprintln!("syncfleet: SYNCFLEET_NEW_SECRET_KEY is required (the key to rotate to)");
                return EXIT_CONFIG;
            }
        },
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
