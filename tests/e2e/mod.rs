//! End-to-end tests: the real `kinglet` binary on loopback, a temp data dir, a generated cert.

mod auth;
mod backpressure;
#[cfg(feature = "client")]
mod cli;
pub mod client;
mod core;
mod crash;
mod diskfull;
mod interop;
mod loadgen;
mod pubsub;
mod service;

// The daemon launcher and `TempDir`, shared with the benchmarks.
#[path = "../support/daemon.rs"]
mod daemon;
pub use daemon::*;
