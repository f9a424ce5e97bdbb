//! Kinglet: a tiny, single-threaded XMPP publish-subscribe broker for embedded Linux.
//!
//! # Architecture
//!
//! ```text
//!  socket ──bytes──► net (IO shell) ──► session (sans-IO stream state machine)
//!                                          │ xml::Framer → Element, SASL, bind
//!                                          ▼
//!                                       router (addressing, roster, presence, disco)
//!                                          │ serialise once, Rc<str>
//!                                          ▼
//!                    outbox (bounded, per connection) ──► net ──► socket
//! ```
//!
//! Layers, bottom up: `jid`, `xml` and `sasl` are pure and know nothing of the rest;
//! `proto` holds the wire vocabulary; `session` negotiates one stream; `router` owns every
//! bound session and the rosters; `store` persists accounts and rosters in redb; `net` and
//! `daemon` are the only modules that touch sockets, clocks and the executor (`guard` holds the
//! sans-IO counters they consult against login abuse and connection floods). All protocol
//! state lives on one thread (a `LocalExecutor`).

pub mod admin;
pub mod caps;
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod daemon;
pub mod guard;
pub mod jid;
pub mod limits;
pub mod logging;
pub mod net;
pub mod notify;
pub mod outbox;
pub mod proto;
pub mod pubsub;
pub mod router;
pub mod sasl;
pub mod session;
pub mod signals;
pub mod store;
pub mod xml;

#[cfg(test)]
mod model_tests;
