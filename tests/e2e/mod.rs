//! End-to-end tests: the real `kinglet` binary on loopback, a temp data dir, a generated cert.

mod auth;
mod backpressure;
#[cfg(feature = "client")]
mod chaos;
#[cfg(feature = "client")]
mod cli;
pub mod client;
mod component;
mod core;
mod crash;
mod diskfull;
mod interop;
mod interop_sm;
mod loadgen;
mod offline;
mod pubsub;
mod service;
mod sm;
#[cfg(feature = "client")]
mod sub_cuts;

// The daemon launcher and `TempDir`, shared with the benchmarks.
#[path = "../support/daemon.rs"]
mod daemon;
pub use daemon::*;

/// An XEP-0199 ping payload.
pub const PING: &str = "<ping xmlns='urn:xmpp:ping'/>";

/// Sends `<iq type='get' id='{id}' to='{to}'>{payload}</iq>` and waits for its reply.
pub fn get(c: &mut client::Client, id: &str, to: &str, payload: &str) -> kinglet::xml::Element {
    c.iq(
        id,
        &format!("<iq type='get' id='{id}' to='{to}'>{payload}</iq>"),
    )
}
