//! The `syncfleet` binary: parse, run, exit. Everything else lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let code = syncfleet_api::cli::run(syncfleet_api::cli::Cli::parse()).await;
    std::process::exit(code);
}
