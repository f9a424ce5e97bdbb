//! SASL for client-to-server authentication (RFC 6120 §6): the mechanism logic, sans IO.
//!
//! This module owns:
//! - SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), server side ([`ScramServer`]) and
//!   client side ([`ScramClient`]), without channel binding (the `-PLUS` variants are not
//!   offered, so a client's `p=` gs2 flag is refused);
//! - the stored form of an account's secrets ([`StoredCredentials`]): salted keys for both
//!   hashes, never the password, with a versioned binary encoding for the store;
//! - SASL PLAIN message parsing (RFC 4616) and password verification against the stored keys;
//! - the failure conditions of RFC 6120 §6.5 ([`SaslFailure`]);
//! - base64 as used on the wire ([`base64_encode`], [`base64_decode`]).
//!
//! It does not own the XML (`<auth/>`, `<challenge/>`, …), mechanism negotiation, the account
//! store or any IO: the session layer decodes the base64 payloads, calls in here, and maps
//! [`SaslFailure`] to `<failure/>` with [`SaslFailure::condition`]. Nothing in this module logs,
//! and passwords are only held for the duration of a call (and inside a [`ScramClient`] until
//! the server's first message arrives).
//!
//! # Usernames and SASLprep
//!
//! Full SASLprep (RFC 4013) / PRECIS (RFC 8265) is **not** implemented. Usernames (SCRAM `n=`,
//! PLAIN authcid) go through [`normalize_username`]: control characters are rejected, then the
//! name must be a valid JID localpart and is lower-cased like one (see [`crate::jid`]).
//! Passwords are used as their UTF-8 bytes, unchanged, on both the deriving and verifying
//! side; ASCII passwords therefore interoperate with any implementation, while non-ASCII
//! passwords only match if the client sends the same normalisation form that was stored.

mod base64;
mod scram;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::jid::{self, Jid};

pub use base64::{BASE64_MAX_INPUT, base64_decode, base64_encode};
pub use scram::{
    DEFAULT_ITERATIONS, MAX_ITERATIONS, MAX_SCRAM_MESSAGE, MIN_ITERATIONS, PasswordCheck, SALT_LEN,
    ScramClient, ScramCredentials, ScramHash, ScramServer, StoredCredentials, random_nonce,
};

/// Upper bound on the size of a SASL PLAIN message: authzid (a full JID, at most 3071 bytes),
/// authcid (a localpart, at most 1023 bytes), a password of at most 1024 bytes and two NULs.
pub const MAX_PLAIN_MESSAGE: usize = 3071 + 1023 + 1024 + 2;

/// SASL failure conditions of RFC 6120 §6.5, each mapping to one element name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslFailure {
    /// `<aborted/>`: the client aborted the exchange (§6.5.1).
    Aborted,
    /// `<account-disabled/>`: the account is disabled (§6.5.2).
    AccountDisabled,
    /// `<credentials-expired/>`: the credentials have expired (§6.5.3).
    CredentialsExpired,
    /// `<encryption-required/>`: the mechanism needs TLS first (§6.5.4).
    EncryptionRequired,
    /// `<incorrect-encoding/>`: the base64 payload is invalid (§6.5.5).
    IncorrectEncoding,
    /// `<invalid-authzid/>`: the authorization identity is not acceptable (§6.5.6).
    InvalidAuthzid,
    /// `<invalid-mechanism/>`: the mechanism is not supported or not offered (§6.5.7).
    InvalidMechanism,
    /// `<malformed-request/>`: the message does not follow the mechanism's syntax (§6.5.8).
    MalformedRequest,
    /// `<mechanism-too-weak/>`: the mechanism or its parameters are too weak (§6.5.9).
    MechanismTooWeak,
    /// `<not-authorized/>`: the credentials are wrong (§6.5.10).
    NotAuthorized,
    /// `<temporary-auth-failure/>`: a server-side problem; the client may retry (§6.5.11).
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// The RFC 6120 §6.5 element name of this condition, e.g. `"not-authorized"`.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::AccountDisabled => "account-disabled",
            SaslFailure::CredentialsExpired => "credentials-expired",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::MechanismTooWeak => "mechanism-too-weak",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl fmt::Display for SaslFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SASL failure: {}", self.condition())
    }
}

impl std::error::Error for SaslFailure {}

/// Normalises a SASL username (SCRAM `n=`, PLAIN authcid) into the account name used for
/// lookup: the minimal SASLprep subset (control characters rejected), then JID localpart
/// validation and lower-casing ([`jid::normalize_local`]).
///
/// # Errors
///
/// [`SaslFailure::MalformedRequest`] for an empty name or one with control characters;
/// [`SaslFailure::NotAuthorized`] for a name that cannot be a localpart (no such account can
/// exist, so this reveals nothing about existing accounts).
pub fn normalize_username(name: &str) -> Result<String, SaslFailure> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(SaslFailure::MalformedRequest);
    }
    jid::normalize_local(name).map_err(|_| SaslFailure::NotAuthorized)
}

/// True if `authzid` names the account itself: the bare JID `username@domain` (after
/// normalisation of both sides). Use it to check a PLAIN authzid, and in the closure given to
/// [`ScramServer::start_with`].
pub fn authzid_matches(authzid: &str, username: &str, domain: &str) -> bool {
    let Ok(requested) = Jid::parse(authzid) else {
        return false;
    };
    let Ok(own) = Jid::new(Some(username), domain, None) else {
        return false;
    };
    requested == own
}

fn utf8(b: &[u8]) -> Result<&str, SaslFailure> {
    std::str::from_utf8(b).map_err(|_| SaslFailure::MalformedRequest)
}

/// Parses a SASL PLAIN message (RFC 4616 §2): `[authzid] NUL authcid NUL passwd`.
///
/// Returns `(authzid, authcid, password)`; an empty authzid is `None`. The authcid is
/// normalised with [`normalize_username`]; the authzid is returned as sent (check it with
/// [`authzid_matches`]); the password is returned as sent.
///
/// # Errors
///
/// [`SaslFailure::MalformedRequest`] if the message is longer than [`MAX_PLAIN_MESSAGE`],
/// does not have exactly two NULs, is not UTF-8, has an empty authcid or password, or has
/// control characters in the authzid or authcid; [`SaslFailure::NotAuthorized`] if the
/// authcid cannot be an account name.
pub fn parse_plain(msg: &[u8]) -> Result<(Option<String>, String, String), SaslFailure> {
    if msg.len() > MAX_PLAIN_MESSAGE {
        return Err(SaslFailure::MalformedRequest);
    }
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let (authzid, authcid, password) = (utf8(authzid)?, utf8(authcid)?, utf8(password)?);
    if password.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    if authzid.chars().any(char::is_control) {
        return Err(SaslFailure::MalformedRequest);
    }
    let authcid = normalize_username(authcid)?;
    let authzid = (!authzid.is_empty()).then(|| authzid.to_owned());
    Ok((authzid, authcid, password.to_owned()))
}
