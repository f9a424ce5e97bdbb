//! Kinglet: a tiny, single-threaded XMPP publish-subscribe broker for embedded Linux.
//!
//! # Architecture
//!
//! ```text
//!  socket ──bytes──► net (IO shell: TCP, TLS, timers; guard: admission, login throttle)
//!                      ▼
//!                    session (sans-IO c2s stream: xml::Framer → Element, STARTTLS, SASL, bind)
//!                      ▼
//!                    stanza (typed Iq / Message / Presence, checked once)
//!                      ▼
//!                    router: the broker { im, caps, pubsub } (IM: sessions, roster,
//!                      ▼      presence, messages, server IQs)
//!                    pubsub::Engine → Host on one Service (generic or a PEP account;
//!                                     one file per use case)
//!                      ▼ staged writes            ▲ commit result
//!                    storage::Storage (the core's contract), implemented by
//!                    store (redb, shell; group commit on a blocking thread: net::committer)
//!                      ▼ outputs released once durable
//!                    outbox (bounded, per connection) ──► net ──► socket
//! ```
//!
//! Layers, bottom up: `jid`, `xml`, `sasl`, `caps` and `guard` are pure and know nothing
//! of the rest; `proto` holds the wire vocabulary; `session` negotiates one stream;
//! `router` owns every bound session and the rosters and hands pub-sub to `pubsub`;
//! the core reaches the database only through the `storage::Storage` trait, which
//! `store` implements on redb; `net` and `daemon` are the only modules that touch sockets
//! and the executor (`tests/purity.rs` checks the core's imports). Time and randomness reach the core through
//! `env::Env`, implemented for the OS by `system::SystemEnv`. All protocol state lives on one thread (a
//! `LocalExecutor`); fsync and password hashing run on the blocking pool. The full map,
//! with where to change what: `docs/architecture.md`.

pub mod admin;
pub mod caps;
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod component;
pub mod config;
pub mod daemon;
pub mod env;
pub mod exit;
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
pub mod stanza;
pub mod storage;
pub mod store;
pub mod system;
pub mod xml;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
pub(crate) mod test_support;
