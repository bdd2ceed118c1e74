//! End-to-end tests across api + worker against real PostgreSQL and Redis, and the
//! embedded mode on a temporary SQLite file. One binary, one module per concern.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod cli;
mod cloud;
mod conflicts;
mod connectors;
mod console;
mod control;
mod faults;
mod foundation;
mod gauges;
mod history;
mod notifications;
mod outbox;
mod protocol;
mod push;
mod queue;
mod recovery;
mod security;
mod spec;
mod util;
mod validation;
mod webhooks;
mod workspaces;
