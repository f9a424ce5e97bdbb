//! The command-line XMPP publish-subscribe client: `kinglet pub`, `sub`, `nodes`, `items`
//! and `node create|delete|config` (feature `client`, on by default).
//!
//! This module owns everything the client commands do after argument parsing: resolving the
//! connection settings ([`settings`]), one blocking client-to-server stream with STARTTLS or
//! direct TLS, SASL and resource binding ([`conn`]), the rustls client configuration
//! ([`tls`]), the XEP-0060 requests and the output formats ([`pubsub`], [`json`]), XEP-0198
//! stream management ([`sm`]) and the catch-up of `sub` after a reconnect ([`catchup`]), and
//! the command flows with their exit codes ([`commands`]). It speaks standard XMPP only, so it
//! works against any compliant server, not only Kinglet.
//!
//! It does not own the argument types (those are in [`crate::cli`]) and shares no state with
//! the daemon. Blocking `std::net` I/O is used on purpose: one connection, one thread (plus a
//! signal thread for `sub`), no executor.
//!
//! # Exit codes
//!
//! sysexits-style, like the rest of the binary; see [`ClientError::exit_code`] and
//! `docs/cli.md`.

pub mod catchup;
pub mod commands;
pub mod conn;
pub mod json;
pub mod pubsub;
pub mod settings;
pub mod sm;
pub mod tls;

#[cfg(test)]
mod script;
#[cfg(test)]
mod tests;

use std::fmt;

pub use commands::run;

// The client's exit statuses (defined in `crate::exit`): an XMPP error reply (stanza
// error) 1; bad command line `EX_USAGE`; bad input data (a payload that is not one XML
// element or not JSON) `EX_DATAERR`; an unreadable input file (password, CA file)
// `EX_NOINPUT`; the server cannot be reached, refused the connection or closed the stream
// `EX_UNAVAILABLE`; writing the output failed `EX_IOERR`; the server did not answer in time
// `EX_TEMPFAIL`; the server broke the protocol, sent a stream error, or TLS failed
// `EX_PROTOCOL`; authentication failed `EX_NOPERM`.
pub use crate::exit::{
    EX_DATAERR, EX_FAILURE as EXIT_XMPP_ERROR, EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_PROTOCOL,
    EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE,
};

/// Everything that ends a client command early; each kind has its own exit status.
#[derive(Debug)]
pub enum ClientError {
    /// A bad command line (message for the user).
    Usage(String),
    /// Bad payload or input data.
    Data(String),
    /// An unreadable input file.
    NoInput(String),
    /// Connecting failed, or the connection was lost.
    Unavailable(String),
    /// No reply within the timeout.
    Timeout(String),
    /// A protocol violation, a stream error or a TLS failure.
    Protocol(String),
    /// SASL failure (condition and text) or no usable mechanism.
    Auth(String),
    /// A stanza error reply.
    Xmpp(StanzaError),
    /// Writing to stdout failed.
    Output(std::io::Error),
}

impl ClientError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Usage(_) => EX_USAGE,
            ClientError::Data(_) => EX_DATAERR,
            ClientError::NoInput(_) => EX_NOINPUT,
            ClientError::Unavailable(_) => EX_UNAVAILABLE,
            ClientError::Timeout(_) => EX_TEMPFAIL,
            ClientError::Protocol(_) => EX_PROTOCOL,
            ClientError::Auth(_) => EX_NOPERM,
            ClientError::Xmpp(_) => EXIT_XMPP_ERROR,
            ClientError::Output(_) => EX_IOERR,
        }
    }

    /// Whether `sub` should reconnect after this error (the server went away or hung)
    /// rather than give up.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unavailable(_) | ClientError::Timeout(_))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Usage(m) => write!(f, "usage: {m}"),
            ClientError::Data(m) => write!(f, "bad input: {m}"),
            ClientError::NoInput(m) => write!(f, "cannot read {m}"),
            ClientError::Unavailable(m) => write!(f, "server unavailable: {m}"),
            ClientError::Timeout(m) => write!(f, "timed out: {m}"),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Auth(m) => write!(f, "authentication failed: {m}"),
            ClientError::Xmpp(e) => write!(f, "{e}"),
            ClientError::Output(e) => write!(f, "cannot write output: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A stanza error (RFC 6120 §8.3) from an `<iq type='error'>` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    /// The defined condition, e.g. `item-not-found`.
    pub condition: String,
    /// An application-specific condition (e.g. XEP-0060's `nodeid-required`), if any.
    pub app_condition: Option<String>,
    /// The human-readable `<text/>`, if any.
    pub text: Option<String>,
    /// What was being done, e.g. `publish to node 'temp'`.
    pub context: String,
}

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.condition)?;
        if let Some(a) = &self.app_condition {
            write!(f, " ({a})")?;
        }
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}
