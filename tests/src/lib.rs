//! End-to-end test harness: real PostgreSQL and Redis, one fresh database and one random
//! Redis key prefix per test, so tests run in parallel without seeing each other.
//!
//! When a service is unreachable a test prints a loud SKIPPED line and passes, except
//! under `CI=true`, where it fails: CI must prove the real thing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos;
pub mod client;
pub mod cloud;
pub mod embedded;
pub mod env;
pub mod fleet;
pub mod procs;
pub mod proxy;

pub use client::ApiClient;
pub use env::{TestApp, TestEnv, test_env};
