//! The fake cloud of the push and conflict tests lives in the harness (`tests::cloud`),
//! where the push benchmark uses it too.

pub use tests::cloud::*;
