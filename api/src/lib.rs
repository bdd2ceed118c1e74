//! syncfleet's API side and the `syncfleet` binary's roles.
//!
//! `main` only parses the command line and calls into [`cli`]; every role lives in
//! [`app`] behind a function that takes its config, listener and shutdown token.

pub mod app;
pub mod auth;
pub mod auth_cache;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod db;
pub mod error;
pub mod extract;
pub mod inbound;
pub mod keyhash;
pub mod notifications;
pub mod routes;
pub mod scheduler;
pub mod state;
pub mod telemetry;
pub mod views;
