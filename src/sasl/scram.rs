//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding, plus the
//! stored account credentials they verify against.
//!
//! Server flow: [`ScramServer::start`] parses client-first and returns server-first;
//! [`ScramServer::finish`] checks client-final's proof and returns server-final. The server
//! never needs the password: it holds `StoredKey` and `ServerKey` only, and never runs PBKDF2.
//!
//! Unknown users get deterministic fake credentials derived from a server secret, so that
//! server-first looks the same (same shape, stable salt, same iteration count) whether or not
//! the account exists; such exchanges always fail at [`ScramServer::finish`] with
//! [`SaslFailure::NotAuthorized`].

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

use crate::env::Env;

use super::{SaslFailure, base64_decode, base64_encode, normalize_username};

/// Lowest iteration count accepted: RFC 7677 §4 recommends at least 4096. Deriving with less
/// clamps up to this value; a client refuses a server asking for less.
pub const MIN_ITERATIONS: u32 = 4096;

/// Highest iteration count accepted. It bounds the CPU a stored record or a server can make
/// us spend (one PBKDF2 run at 1,000,000 iterations takes seconds on a router).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Iteration count of [`ScramServer::start`] (its fake credentials for unknown users): the
/// RFC minimum. The daemon passes `auth.scram_iterations` to [`ScramServer::start_with`]
/// instead, and new accounts get that count too.
pub const DEFAULT_ITERATIONS: u32 = MIN_ITERATIONS;

/// Length in bytes of the salts [`StoredCredentials::derive`] generates.
pub const SALT_LEN: usize = 16;

/// Longest salt [`StoredCredentials::from_bytes`] accepts.
const MAX_SALT_LEN: usize = 64;

/// Upper bound on the size of any SCRAM message handled here. A username is at most a
/// 1023-byte localpart, tripled by `=2C` escapes; nonces and proofs are short.
pub const MAX_SCRAM_MESSAGE: usize = 8 * 1024;

/// Longest nonce (client part or server part) accepted.
const MAX_NONCE_LEN: usize = 256;

/// Format version byte of [`StoredCredentials::to_bytes`].
const CREDENTIALS_VERSION: u8 = 1;

/// The hash function of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The SASL mechanism name, e.g. `"SCRAM-SHA-256"`.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The hash for a SASL mechanism name, if it is one of ours.
    pub fn from_mechanism(name: &str) -> Option<ScramHash> {
        match name {
            "SCRAM-SHA-1" => Some(ScramHash::Sha1),
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            _ => None,
        }
    }

    /// Output length of the hash in bytes (20 or 32): the length of keys and proofs.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
        }
    }

    fn pbkdf2_alg(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_alg(), key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_alg(), data).as_ref().to_vec()
    }

    /// `SaltedPassword := Hi(Normalize(password), salt, i)` (RFC 5802 §3).
    /// `iterations` must already be within bounds.
    fn salted_password(self, password: &str, salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        pbkdf2::derive(
            self.pbkdf2_alg(),
            iterations,
            salt,
            password.as_bytes(),
            &mut out,
        );
        out
    }
}

/// Constant-time equality of two byte strings of public length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let acc = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(acc) == 0
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// A fresh server nonce: 18 random bytes from `env` in base64 (24 printable characters,
/// no `,`).
///
/// # Panics
///
/// If `env` has no randomness (the operating system's random number generator fails);
/// continuing with predictable nonces would be worse.
pub fn random_nonce(env: &dyn Env) -> String {
    let mut buf = [0u8; 18];
    assert!(
        env.fill_random(&mut buf),
        "invariant: the operating system's random number generator works"
    );
    base64_encode(&buf)
}

/// SCRAM credentials of one account for one hash (RFC 5802 §3): what the server stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The salt given to PBKDF2.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramCredentials {
    /// Derives credentials from a password with a given salt. `iterations` is clamped to
    /// [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`]. Used for new accounts (through
    /// [`StoredCredentials::derive`]) and for reproducing known vectors.
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredentials {
        let iterations = iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS);
        let nz =
            NonZeroU32::new(iterations).expect("invariant: clamped to at least MIN_ITERATIONS");
        let salted = hash.salted_password(password, salt, nz);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// True if the keys have the hash's length, the salt is non-empty and the iteration count
    /// is within bounds: the shape a server can use.
    fn is_usable(&self, hash: ScramHash) -> bool {
        !self.salt.is_empty()
            && self.salt.len() <= MAX_SALT_LEN
            && (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&self.iterations)
            && self.stored_key.len() == hash.output_len()
            && self.server_key.len() == hash.output_len()
    }

    /// Checks a password against these credentials by recomputing `StoredKey`.
    /// Returns false for unusable credentials.
    fn verify_password(&self, hash: ScramHash, password: &str) -> bool {
        if !self.is_usable(hash) {
            return false;
        }
        let Some(nz) = NonZeroU32::new(self.iterations) else {
            return false;
        };
        let salted = hash.salted_password(password, &self.salt, nz);
        let client_key = hash.hmac(&salted, b"Client Key");
        ct_eq(&hash.hash(&client_key), &self.stored_key)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.iterations.to_be_bytes());
        for field in [&self.salt, &self.stored_key, &self.server_key] {
            // Fields longer than 255 bytes cannot come from `derive`; they are written as
            // empty, which `decode` rejects, rather than silently truncated.
            match u8::try_from(field.len()) {
                Ok(n) => {
                    out.push(n);
                    out.extend_from_slice(field);
                }
                Err(_) => out.push(0),
            }
        }
    }

    fn decode(hash: ScramHash, b: &mut &[u8]) -> Option<ScramCredentials> {
        let (iter_bytes, rest) = b.split_first_chunk::<4>()?;
        *b = rest;
        let mut field = || -> Option<Vec<u8>> {
            let (&n, rest) = b.split_first()?;
            let n = usize::from(n);
            let v = rest.get(..n)?.to_vec();
            *b = rest.get(n..)?;
            Some(v)
        };
        let salt = field()?;
        let stored_key = field()?;
        let server_key = field()?;
        let creds = ScramCredentials {
            salt,
            iterations: u32::from_be_bytes(*iter_bytes),
            stored_key,
            server_key,
        };
        creds.is_usable(hash).then_some(creds)
    }
}

/// What the store keeps per account: SCRAM credentials for both hashes, never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredentials {
    /// Credentials for SCRAM-SHA-1.
    pub sha1: ScramCredentials,
    /// Credentials for SCRAM-SHA-256 (also used to verify PLAIN).
    pub sha256: ScramCredentials,
}

impl StoredCredentials {
    /// Derives credentials for both hashes, each with its own random [`SALT_LEN`]-byte salt
    /// from `env`. `iterations` is clamped to [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`].
    ///
    /// # Panics
    ///
    /// If `env` has no randomness (the operating system's random number generator fails).
    pub fn derive(env: &dyn Env, password: &str, iterations: u32) -> StoredCredentials {
        let mut salt1 = [0u8; SALT_LEN];
        let mut salt256 = [0u8; SALT_LEN];
        assert!(
            env.fill_random(&mut salt1) && env.fill_random(&mut salt256),
            "invariant: the operating system's random number generator works"
        );
        StoredCredentials {
            sha1: ScramCredentials::derive(ScramHash::Sha1, password, &salt1, iterations),
            sha256: ScramCredentials::derive(ScramHash::Sha256, password, &salt256, iterations),
        }
    }

    /// Binary encoding for the store. Layout (version 1), all integers big-endian:
    /// `version: u8 = 1`, then for SHA-1 and then SHA-256: `iterations: u32`,
    /// `salt_len: u8`, `salt`, `key_len: u8`, `stored_key`, `key_len: u8`, `server_key`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 2 * (4 + 3 + SALT_LEN) + 2 * (20 + 32));
        out.push(CREDENTIALS_VERSION);
        self.sha1.encode(&mut out);
        self.sha256.encode(&mut out);
        out
    }

    /// Decodes [`StoredCredentials::to_bytes`]. Returns `None` (never panics) for an unknown
    /// version, truncated or trailing bytes, keys of the wrong length, an empty or over-long
    /// salt, or an iteration count outside [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`].
    pub fn from_bytes(b: &[u8]) -> Option<StoredCredentials> {
        let (&version, mut rest) = b.split_first()?;
        if version != CREDENTIALS_VERSION {
            return None;
        }
        let sha1 = ScramCredentials::decode(ScramHash::Sha1, &mut rest)?;
        let sha256 = ScramCredentials::decode(ScramHash::Sha256, &mut rest)?;
        rest.is_empty()
            .then_some(StoredCredentials { sha1, sha256 })
    }

    /// The credentials for one hash.
    pub fn get(&self, h: ScramHash) -> &ScramCredentials {
        match h {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }

    /// Verifies a password (SASL PLAIN) by recomputing the SHA-256 `StoredKey` with the
    /// stored salt and iteration count and comparing in constant time. Costs one PBKDF2 run.
    pub fn verify_plain(&self, password: &str) -> bool {
        self.sha256.verify_password(ScramHash::Sha256, password)
    }
}

/// One SASL PLAIN password check, prepared on the event loop and run on a blocking thread
/// ([`PasswordCheck::run`] costs one PBKDF2 derivation).
///
/// An unknown account is checked against deterministic fake credentials (the same as SCRAM
/// shows for it) with the server's iteration count for new accounts, so the check costs the
/// same whether or not the account exists, and always fails.
pub struct PasswordCheck {
    creds: ScramCredentials,
    password: String,
    known: bool,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("iterations", &self.creds.iterations)
            .field("known", &self.known)
            .finish_non_exhaustive()
    }
}

impl PasswordCheck {
    /// A check of `password` for `username`: against `stored` (the account's credentials),
    /// or, for `None` (no such account, or unreadable credentials), against fake ones
    /// derived from `secret` with `fake_iterations` (clamped to
    /// [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`]).
    pub fn new(
        stored: Option<&StoredCredentials>,
        username: &str,
        password: String,
        secret: &[u8],
        fake_iterations: u32,
    ) -> PasswordCheck {
        match stored {
            Some(c) => PasswordCheck {
                creds: c.sha256.clone(),
                password,
                known: true,
            },
            None => PasswordCheck {
                creds: fake_credentials(ScramHash::Sha256, secret, username, fake_iterations),
                password,
                known: false,
            },
        }
    }

    /// Whether the account exists (false: the check runs, and fails, all the same).
    pub fn known(&self) -> bool {
        self.known
    }

    /// The PBKDF2 iteration count this check costs.
    pub fn iterations(&self) -> u32 {
        self.creds.iterations
    }

    /// Runs the check: one PBKDF2 derivation, then a constant-time comparison. Blocking:
    /// call it off the event loop.
    pub fn run(self) -> bool {
        let ok = self
            .creds
            .verify_password(ScramHash::Sha256, &self.password);
        ok && self.known
    }
}

/// Splits one SCRAM attribute `x=value` into its name and value. Names are one ASCII letter.
fn attr(s: &str) -> Result<(u8, &str), SaslFailure> {
    match s.as_bytes() {
        [name, b'=', ..] if name.is_ascii_alphabetic() => Ok((*name, &s[2..])),
        _ => Err(SaslFailure::MalformedRequest),
    }
}

/// Expects attribute `name` and returns its value.
fn expect_attr(s: Option<&str>, name: u8) -> Result<&str, SaslFailure> {
    match s.map(attr) {
        Some(Ok((n, v))) if n == name => Ok(v),
        _ => Err(SaslFailure::MalformedRequest),
    }
}

/// Checks optional trailing extensions: each must be a well-formed attribute; they are
/// otherwise ignored (RFC 5802 §5.1: unknown optional extensions are ignored).
fn check_extensions<'a>(rest: impl Iterator<Item = &'a str>) -> Result<(), SaslFailure> {
    for ext in rest {
        attr(ext)?;
    }
    Ok(())
}

/// Decodes a SCRAM `saslname` (RFC 5802 §5.1): `=2C` is `,`, `=3D` is `=`, any other `=`
/// is an error. Rejects empty names.
fn decode_saslname(s: &str) -> Result<String, SaslFailure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        match rest.get(pos..pos + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslFailure::MalformedRequest),
        }
        rest = rest.get(pos + 3..).ok_or(SaslFailure::MalformedRequest)?;
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    Ok(out)
}

/// Escapes a name for the SCRAM `n=`/`a=` attributes.
fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// True if `s` is a valid SCRAM nonce fragment: printable ASCII except `,`, bounded.
fn valid_nonce(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NONCE_LEN
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parses a positive decimal iteration count (digits only).
fn parse_iterations(s: &str) -> Result<u32, SaslFailure> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SaslFailure::MalformedRequest);
    }
    s.parse::<u32>().map_err(|_| SaslFailure::MalformedRequest)
}

/// Decodes a base64 value inside a SCRAM message, where (unlike the XMPP payload around it)
/// whitespace is not allowed.
fn scram_b64(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    base64_decode(s)
}

/// Bounds and UTF-8-checks a SCRAM message.
fn scram_str(msg: &[u8]) -> Result<&str, SaslFailure> {
    if msg.len() > MAX_SCRAM_MESSAGE {
        return Err(SaslFailure::MalformedRequest);
    }
    std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)
}

/// Deterministic credentials for an unknown user: the same shape as real ones, with a salt
/// stable per (secret, hash, username) and keys no proof can match.
fn fake_credentials(
    hash: ScramHash,
    secret: &[u8],
    username: &str,
    iterations: u32,
) -> ScramCredentials {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let derive = |label: &[u8], len: usize| {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(label);
        ctx.update(hash.mechanism().as_bytes());
        ctx.update(&[0]);
        ctx.update(username.as_bytes());
        let tag = ctx.sign();
        tag.as_ref()
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect::<Vec<u8>>()
    };
    ScramCredentials {
        salt: derive(b"kinglet scram fake salt\0", SALT_LEN),
        iterations: iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS),
        stored_key: derive(b"kinglet scram fake stored key\0", hash.output_len()),
        server_key: derive(b"kinglet scram fake server key\0", hash.output_len()),
    }
}

/// Server side of one SCRAM exchange, between server-first and server-final.
///
/// Created by [`ScramServer::start`]; consumed by [`ScramServer::finish`].
pub struct ScramServer {
    /// Which mechanism is running.
    hash: ScramHash,
    /// The normalised account name (what `lookup` was called with).
    username: String,
    /// The decoded authorization identity, if the client sent one.
    authzid: Option<String>,
    /// The gs2 header exactly as sent (`n,,`, `y,,`, `n,a=…,`); client-final's `c=` must
    /// decode to it.
    gs2_header: String,
    /// `client-first-message-bare` exactly as sent, for the AuthMessage.
    client_first_bare: String,
    /// `server-first-message` as sent, for the AuthMessage.
    server_first: String,
    /// Client nonce followed by server nonce.
    nonce: String,
    /// The account's credentials, or fake ones for an unknown account.
    creds: ScramCredentials,
    /// False when `creds` are fake: the exchange must fail.
    known: bool,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("hash", &self.hash)
            .field("username", &self.username)
            .field("authzid", &self.authzid)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Starts an exchange from client-first (the decoded `<auth/>` payload) and returns the
    /// server state and server-first.
    ///
    /// `nonce` is fresh server randomness (use [`random_nonce`]); `secret` is a server-wide
    /// secret for the fake credentials of unknown users; `lookup` is called once with the
    /// normalised username (see [`super::normalize_username`]) and returns the account's
    /// credentials for `hash`, or `None` if there is no such account.
    ///
    /// The authorization identity, if sent, must be a bare JID whose localpart is the
    /// username; its domain is **not** checked here: use [`ScramServer::start_with`] with
    /// [`super::authzid_matches`] to check it against the served domain.
    ///
    /// # Errors
    ///
    /// [`SaslFailure::MalformedRequest`] for syntax errors, a `p=` channel binding flag
    /// (channel binding is not offered), a mandatory extension (`m=`), bad escapes, an
    /// empty, non-UTF-8 or control-character username; [`SaslFailure::NotAuthorized`] for a
    /// username that cannot be an account name; [`SaslFailure::InvalidAuthzid`] for an
    /// unacceptable authzid; [`SaslFailure::TemporaryAuthFailure`] if `nonce` is not a
    /// valid nonce or `lookup` returned unusable credentials.
    pub fn start(
        hash: ScramHash,
        client_first: &[u8],
        nonce: &str,
        secret: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredentials>,
    ) -> Result<(ScramServer, Vec<u8>), SaslFailure> {
        ScramServer::start_with(
            hash,
            client_first,
            nonce,
            secret,
            DEFAULT_ITERATIONS,
            lookup,
            |authzid, username| {
                crate::jid::Jid::parse(authzid)
                    .is_ok_and(|j| j.is_bare() && j.local() == Some(username))
            },
        )
    }

    /// [`ScramServer::start`] with the iteration count advertised for unknown users
    /// (`fake_iterations`: use the one new accounts are derived with, so both look alike)
    /// and the authorization check: `authz(authzid, username)` is called only when the
    /// client sent an authzid, with the normalised username, and must return true to accept.
    ///
    /// # Errors
    ///
    /// As [`ScramServer::start`].
    pub fn start_with(
        hash: ScramHash,
        client_first: &[u8],
        nonce: &str,
        secret: &[u8],
        fake_iterations: u32,
        lookup: impl FnOnce(&str) -> Option<ScramCredentials>,
        authz: impl FnOnce(&str, &str) -> bool,
    ) -> Result<(ScramServer, Vec<u8>), SaslFailure> {
        let msg = scram_str(client_first)?;
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let mut parts = msg.splitn(3, ',');
        let flag = parts.next().ok_or(SaslFailure::MalformedRequest)?;
        let authz_field = parts.next().ok_or(SaslFailure::MalformedRequest)?;
        let bare = parts.next().ok_or(SaslFailure::MalformedRequest)?;
        match flag {
            "n" | "y" => {}
            // The client wants channel binding, which only -PLUS mechanisms (not offered) do.
            _ => return Err(SaslFailure::MalformedRequest),
        }
        let authzid = if authz_field.is_empty() {
            None
        } else {
            let raw = expect_attr(Some(authz_field), b'a')?;
            let a = decode_saslname(raw)?;
            if a.chars().any(char::is_control) {
                return Err(SaslFailure::MalformedRequest);
            }
            Some(a)
        };
        let gs2_len = flag.len() + authz_field.len() + 2;
        let gs2_header = msg.get(..gs2_len).ok_or(SaslFailure::MalformedRequest)?;

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attrs = bare.split(',');
        let first = attrs.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            // Mandatory extensions are not supported (RFC 5802 §5.1).
            return Err(SaslFailure::MalformedRequest);
        }
        let username = decode_saslname(expect_attr(first, b'n')?)?;
        let client_nonce = expect_attr(attrs.next(), b'r')?;
        if !valid_nonce(client_nonce) {
            return Err(SaslFailure::MalformedRequest);
        }
        check_extensions(attrs)?;
        let username = normalize_username(&username)?;
        if let Some(a) = &authzid {
            if !authz(a, &username) {
                return Err(SaslFailure::InvalidAuthzid);
            }
        }
        if !valid_nonce(nonce) {
            return Err(SaslFailure::TemporaryAuthFailure);
        }

        let (creds, known) = match lookup(&username) {
            Some(c) if c.is_usable(hash) => (c, true),
            Some(_) => return Err(SaslFailure::TemporaryAuthFailure),
            None => (
                fake_credentials(hash, secret, &username, fake_iterations),
                false,
            ),
        };
        let full_nonce = format!("{client_nonce}{nonce}");
        let server_first = format!(
            "r={full_nonce},s={},i={}",
            base64_encode(&creds.salt),
            creds.iterations
        );
        let out = server_first.clone().into_bytes();
        Ok((
            ScramServer {
                hash,
                username,
                authzid,
                gs2_header: gs2_header.to_owned(),
                client_first_bare: bare.to_owned(),
                server_first,
                nonce: full_nonce,
                creds,
                known,
            },
            out,
        ))
    }

    /// The authorization identity the client sent (decoded), if any. It has passed the
    /// check of [`ScramServer::start`] / [`ScramServer::start_with`].
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }

    /// Verifies client-final and returns the authenticated (normalised) username and
    /// server-final (`v=…`).
    ///
    /// # Errors
    ///
    /// [`SaslFailure::NotAuthorized`] for a wrong proof or an unknown user;
    /// [`SaslFailure::MalformedRequest`] for syntax errors, bad base64 inside the message,
    /// a channel-binding value that is not the gs2 header from client-first, a nonce
    /// that is not the one from server-first, or a proof of the wrong length.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), SaslFailure> {
        let msg = scram_str(client_final)?;
        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof_attr) =
            msg.rsplit_once(',').ok_or(SaslFailure::MalformedRequest)?;
        let proof_b64 = expect_attr(Some(proof_attr), b'p')?;
        let mut attrs = without_proof.split(',');
        let cbind = expect_attr(attrs.next(), b'c')?;
        let nonce = expect_attr(attrs.next(), b'r')?;
        check_extensions(attrs)?;
        let cbind = scram_b64(cbind).ok_or(SaslFailure::MalformedRequest)?;
        if cbind != self.gs2_header.as_bytes() {
            return Err(SaslFailure::MalformedRequest);
        }
        if nonce != self.nonce {
            return Err(SaslFailure::MalformedRequest);
        }
        let proof = scram_b64(proof_b64).ok_or(SaslFailure::MalformedRequest)?;
        if proof.len() != self.hash.output_len() {
            return Err(SaslFailure::MalformedRequest);
        }

        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = self
            .hash
            .hmac(&self.creds.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        let proof_ok = ct_eq(&self.hash.hash(&client_key), &self.creds.stored_key);
        if !(proof_ok && self.known) {
            return Err(SaslFailure::NotAuthorized);
        }
        let server_signature = self
            .hash
            .hmac(&self.creds.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", base64_encode(&server_signature));
        Ok((self.username, server_final.into_bytes()))
    }
}

/// Client side of one SCRAM exchange (no channel binding, gs2 flag `n`, no authzid).
pub struct ScramClient {
    /// Which mechanism is running.
    hash: ScramHash,
    /// The password, kept only until server-first arrives. Invariant: empty once
    /// `expected_server_signature` is set.
    password: String,
    /// `client-first-message-bare`.
    client_first_bare: String,
    /// Our nonce; server-first's nonce must extend it.
    nonce: String,
    /// `ServerSignature` we expect in server-final, once server-first has been handled.
    expected_server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

/// The gs2 header the client sends: no channel binding support, no authzid.
const CLIENT_GS2_HEADER: &str = "n,,";

impl ScramClient {
    /// Prepares an exchange for `username` (escaped as needed) with client nonce `nonce`
    /// (printable ASCII without `,`; use [`random_nonce`]).
    pub fn new(hash: ScramHash, username: &str, password: &str, nonce: &str) -> ScramClient {
        ScramClient {
            hash,
            password: password.to_owned(),
            client_first_bare: format!("n={},r={nonce}", encode_saslname(username)),
            nonce: nonce.to_owned(),
            expected_server_signature: None,
        }
    }

    /// The client-first message (`n,,n=…,r=…`).
    pub fn client_first(&self) -> Vec<u8> {
        format!("{CLIENT_GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Handles server-first and returns client-final. Runs PBKDF2 once.
    ///
    /// # Errors
    ///
    /// [`SaslFailure::MalformedRequest`] for syntax errors, a mandatory extension, a nonce
    /// that does not extend ours, bad salt base64, an iteration count above
    /// [`MAX_ITERATIONS`], or a second call; [`SaslFailure::MechanismTooWeak`] for an
    /// iteration count below [`MIN_ITERATIONS`].
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        if self.expected_server_signature.is_some() {
            return Err(SaslFailure::MalformedRequest);
        }
        let msg = scram_str(server_first)?;
        let mut attrs = msg.split(',');
        let first = attrs.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            return Err(SaslFailure::MalformedRequest);
        }
        let nonce = expect_attr(first, b'r')?;
        let salt = expect_attr(attrs.next(), b's')?;
        let iterations = parse_iterations(expect_attr(attrs.next(), b'i')?)?;
        check_extensions(attrs)?;
        match nonce.strip_prefix(self.nonce.as_str()) {
            Some(server_part) if valid_nonce(server_part) => {}
            _ => return Err(SaslFailure::MalformedRequest),
        }
        let salt = scram_b64(salt).ok_or(SaslFailure::MalformedRequest)?;
        if salt.is_empty() {
            return Err(SaslFailure::MalformedRequest);
        }
        if iterations < MIN_ITERATIONS {
            return Err(SaslFailure::MechanismTooWeak);
        }
        if iterations > MAX_ITERATIONS {
            return Err(SaslFailure::MalformedRequest);
        }
        let nz = NonZeroU32::new(iterations).ok_or(SaslFailure::MechanismTooWeak)?;

        let hash = self.hash;
        let salted = hash.salted_password(&self.password, &salt, nz);
        self.password.clear();
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.hash(&client_key);
        let server_key = hash.hmac(&salted, b"Server Key");
        let without_proof = format!(
            "c={},r={nonce}",
            base64_encode(CLIENT_GS2_HEADER.as_bytes())
        );
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let client_signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        self.expected_server_signature = Some(hash.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", base64_encode(&proof)).into_bytes())
    }

    /// Verifies server-final (`v=…`), authenticating the server.
    ///
    /// # Errors
    ///
    /// [`SaslFailure::NotAuthorized`] for a server error (`e=…`) or a wrong signature;
    /// [`SaslFailure::MalformedRequest`] for syntax errors or if server-first was not
    /// handled yet.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), SaslFailure> {
        let expected = self
            .expected_server_signature
            .as_ref()
            .ok_or(SaslFailure::MalformedRequest)?;
        let msg = scram_str(server_final)?;
        let mut attrs = msg.split(',');
        let (name, value) = attr(attrs.next().unwrap_or(""))?;
        check_extensions(attrs)?;
        match name {
            b'e' => Err(SaslFailure::NotAuthorized),
            b'v' => {
                let sig = scram_b64(value).ok_or(SaslFailure::MalformedRequest)?;
                if ct_eq(&sig, expected) {
                    Ok(())
                } else {
                    Err(SaslFailure::NotAuthorized)
                }
            }
            _ => Err(SaslFailure::MalformedRequest),
        }
    }
}
