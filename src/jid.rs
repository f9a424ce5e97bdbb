//! XMPP addresses (JIDs, RFC 7622): parsing, validation and normalisation.
//!
//! This module owns the [`Jid`] value type and nothing else: it is pure, allocation-bounded
//! and has no IO. Every JID the server handles (stream `from`/`to`, stanza addresses, pubsub
//! subscribers, account names) goes through [`Jid::parse`] or [`Jid::new`] so that comparisons
//! are done on one canonical form.
//!
//! # What is implemented (a subset of RFC 7622)
//!
//! Splitting follows RFC 7622 §3.1: the resourcepart is everything after the first `/`, the
//! localpart is everything before the first `@` that precedes that `/`, the rest is the
//! domainpart. Then:
//!
//! - **localpart**: lower-cased with Unicode [`str::to_lowercase`] (which covers ASCII);
//!   1..=1023 bytes after lower-casing; may not contain `"`, `&`, `'`, `/`, `:`, `<`, `>`,
//!   `@` (RFC 7622 §3.3.1), Unicode whitespace or control characters.
//! - **domainpart**: one trailing `.` is removed (RFC 7622 §3.2); lower-cased like the
//!   localpart; 1..=1023 bytes. It is either an IPv6 literal in brackets (`[::1]`, checked
//!   with [`std::net::Ipv6Addr`] and kept in its canonical textual form) or a sequence of
//!   dot-separated labels, each 1..=63 bytes, made of Unicode alphanumerics, `-` and `_`,
//!   not starting or ending with `-`. IPv4 addresses pass as labels of digits.
//! - **resourcepart**: kept exactly as given (case preserved); 1..=1023 bytes; may not contain
//!   control characters (PRECIS OpaqueString forbids them).
//!
//! # What is not implemented
//!
//! Full PRECIS (RFC 8264/8265 UsernameCaseMapped and OpaqueString profiles), stringprep,
//! Unicode normalisation (NFC/NFKC), width mapping, bidi rules and IDNA2008 (A-label/U-label
//! conversion and validation) are not implemented. Two JIDs that differ only by Unicode
//! normalisation form therefore compare unequal. Non-ASCII domain labels are accepted as
//! lower-cased Unicode; punycode `xn--` labels are kept as given and not converted.

use std::fmt;
use std::str::FromStr;

/// Maximum length in bytes of each of the three parts (RFC 7622 §3.2–3.4).
pub const MAX_PART_BYTES: usize = 1023;

/// Maximum length in bytes of a whole JID string: three full parts plus `@` and `/`.
pub const MAX_JID_BYTES: usize = 3 * MAX_PART_BYTES + 2;

/// Maximum length in bytes of one DNS label.
const MAX_LABEL_BYTES: usize = 63;

/// Why a string is not a valid JID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JidError {
    /// The input was empty.
    Empty,
    /// The input or one of its parts is longer than the RFC 7622 limits.
    TooLong,
    /// The localpart is empty or contains a forbidden character.
    BadLocal,
    /// The domainpart is empty, malformed or contains a forbidden character.
    BadDomain,
    /// The resourcepart is empty or contains a forbidden character.
    BadResource,
}

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            JidError::Empty => "empty JID",
            JidError::TooLong => "JID or JID part too long",
            JidError::BadLocal => "invalid JID localpart",
            JidError::BadDomain => "invalid JID domainpart",
            JidError::BadResource => "invalid JID resourcepart",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for JidError {}

/// A validated, normalised JID: `[localpart@]domainpart[/resourcepart]`.
///
/// Stored as one normalised `String` plus two offsets (32 bytes on 64-bit targets).
/// Equality, hashing and ordering are those of the normalised string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    /// The normalised JID text.
    s: String,
    /// Length in bytes of the localpart; 0 when there is none.
    /// Invariant: if non-zero, `s.as_bytes()[local_len] == b'@'`.
    local_len: u16,
    /// Byte offset just past the domainpart.
    /// Invariant: `domain_end == s.len()` or `s.as_bytes()[domain_end] == b'/'`.
    domain_end: u16,
}

impl Jid {
    /// Parses and normalises a JID string.
    ///
    /// # Errors
    ///
    /// [`JidError::Empty`] for an empty string, [`JidError::TooLong`] when the input or a
    /// part is over the limit, otherwise the error naming the first offending part.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        if s.is_empty() {
            return Err(JidError::Empty);
        }
        if s.len() > MAX_JID_BYTES {
            return Err(JidError::TooLong);
        }
        let (before_slash, resource) = match s.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        let (local, domain) = match before_slash.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, before_slash),
        };
        Jid::new(local, domain, resource)
    }

    /// Builds a JID from its parts, validating and normalising each one.
    ///
    /// # Errors
    ///
    /// As [`Jid::parse`]; a `local` containing `@` or `/` is [`JidError::BadLocal`], a
    /// `domain` containing `@` or `/` is [`JidError::BadDomain`].
    pub fn new(local: Option<&str>, domain: &str, resource: Option<&str>) -> Result<Jid, JidError> {
        let local = local.map(normalize_local).transpose()?;
        let domain = normalize_domain(domain)?;
        if let Some(r) = resource {
            check_resource(r)?;
        }
        let local_len = local.as_ref().map_or(0, String::len);
        let capacity = local_len + 1 + domain.len() + 1 + resource.map_or(0, str::len);
        let mut s = String::with_capacity(capacity);
        if let Some(l) = &local {
            s.push_str(l);
            s.push('@');
        }
        s.push_str(&domain);
        let domain_end = s.len();
        if let Some(r) = resource {
            s.push('/');
            s.push_str(r);
        }
        // Each part is at most MAX_PART_BYTES, so both offsets are below 2 * 1024 + 1.
        let local_len = u16::try_from(local_len).map_err(|_| JidError::TooLong)?;
        let domain_end = u16::try_from(domain_end).map_err(|_| JidError::TooLong)?;
        Ok(Jid {
            s,
            local_len,
            domain_end,
        })
    }

    /// The localpart, if any.
    pub fn local(&self) -> Option<&str> {
        if self.local_len == 0 {
            None
        } else {
            self.s.get(..usize::from(self.local_len))
        }
    }

    /// The domainpart.
    pub fn domain(&self) -> &str {
        let start = if self.local_len == 0 {
            0
        } else {
            usize::from(self.local_len) + 1
        };
        self.s
            .get(start..usize::from(self.domain_end))
            .expect("invariant: offsets lie on part boundaries")
    }

    /// The resourcepart, if any.
    pub fn resource(&self) -> Option<&str> {
        self.s.get(usize::from(self.domain_end) + 1..)
    }

    /// This JID without its resourcepart.
    pub fn bare(&self) -> Jid {
        let end = usize::from(self.domain_end);
        Jid {
            s: self
                .s
                .get(..end)
                .expect("invariant: offsets lie on part boundaries")
                .to_owned(),
            local_len: self.local_len,
            domain_end: self.domain_end,
        }
    }

    /// True when the JID has no resourcepart.
    pub fn is_bare(&self) -> bool {
        usize::from(self.domain_end) == self.s.len()
    }

    /// True when the JID has a resourcepart.
    pub fn is_full(&self) -> bool {
        !self.is_bare()
    }

    /// The bare form of this JID with resourcepart `r` (replacing any existing one).
    ///
    /// # Errors
    ///
    /// [`JidError::BadResource`] or [`JidError::TooLong`] if `r` is not a valid resourcepart.
    pub fn with_resource(&self, r: &str) -> Result<Jid, JidError> {
        check_resource(r)?;
        let end = usize::from(self.domain_end);
        let bare = self
            .s
            .get(..end)
            .expect("invariant: offsets lie on part boundaries");
        let mut s = String::with_capacity(end + 1 + r.len());
        s.push_str(bare);
        s.push('/');
        s.push_str(r);
        Ok(Jid {
            s,
            local_len: self.local_len,
            domain_end: self.domain_end,
        })
    }

    /// The normalised JID text.
    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.s)
    }
}

impl FromStr for Jid {
    type Err = JidError;

    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

/// Characters RFC 7622 §3.3.1 forbids in a localpart.
fn is_forbidden_in_local(c: char) -> bool {
    matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
        || c.is_whitespace()
        || c.is_control()
}

/// Validates and lower-cases a localpart (also used for SASL usernames).
///
/// # Errors
///
/// [`JidError::BadLocal`] if empty or containing a forbidden character,
/// [`JidError::TooLong`] if longer than [`MAX_PART_BYTES`] before or after lower-casing.
pub fn normalize_local(local: &str) -> Result<String, JidError> {
    if local.is_empty() {
        return Err(JidError::BadLocal);
    }
    if local.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong);
    }
    if local.chars().any(is_forbidden_in_local) {
        return Err(JidError::BadLocal);
    }
    let lower = local.to_lowercase();
    if lower.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong);
    }
    // Lower-casing maps letters to letters (possibly with combining marks), never to one of
    // the forbidden characters; checking again keeps that assumption out of the invariants.
    if lower.chars().any(is_forbidden_in_local) {
        return Err(JidError::BadLocal);
    }
    Ok(lower)
}

/// Validates and normalises a domainpart.
fn normalize_domain(domain: &str) -> Result<String, JidError> {
    if domain.len() > MAX_PART_BYTES + 1 {
        return Err(JidError::TooLong);
    }
    if let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let addr: std::net::Ipv6Addr = inner.parse().map_err(|_| JidError::BadDomain)?;
        return Ok(format!("[{addr}]"));
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(JidError::BadDomain);
    }
    let lower = domain.to_lowercase();
    if lower.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong);
    }
    for label in lower.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_BYTES {
            return Err(JidError::BadDomain);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(JidError::BadDomain);
        }
        if !label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        {
            return Err(JidError::BadDomain);
        }
    }
    Ok(lower)
}

/// Validates a resourcepart (kept as is).
fn check_resource(r: &str) -> Result<(), JidError> {
    if r.is_empty() {
        return Err(JidError::BadResource);
    }
    if r.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong);
    }
    if r.chars().any(char::is_control) {
        return Err(JidError::BadResource);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, normalised, local, domain, resource)
    type ValidCase<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, Option<&'a str>);

    #[test]
    fn valid_table() {
        let cases: &[ValidCase<'_>] = &[
            ("example.com", "example.com", None, "example.com", None),
            (
                "juliet@example.com",
                "juliet@example.com",
                Some("juliet"),
                "example.com",
                None,
            ),
            (
                "Juliet@Example.COM/Balcony",
                "juliet@example.com/Balcony",
                Some("juliet"),
                "example.com",
                Some("Balcony"),
            ),
            (
                "example.com/foo",
                "example.com/foo",
                None,
                "example.com",
                Some("foo"),
            ),
            ("a@b/c@d/e", "a@b/c@d/e", Some("a"), "b", Some("c@d/e")),
            (
                "a@example.com./r",
                "a@example.com/r",
                Some("a"),
                "example.com",
                Some("r"),
            ),
            ("a@[::1]", "a@[::1]", Some("a"), "[::1]", None),
            ("[0:0:0:0:0:0:0:1]/x", "[::1]/x", None, "[::1]", Some("x")),
            ("192.168.1.1", "192.168.1.1", None, "192.168.1.1", None),
            (
                "ÉLODIE@Exämple.ORG",
                "élodie@exämple.org",
                Some("élodie"),
                "exämple.org",
                None,
            ),
            ("ΣΑΣ@x", "σας@x", Some("σας"), "x", None),
            (
                "u@x/ spaced resource ",
                "u@x/ spaced resource ",
                Some("u"),
                "x",
                Some(" spaced resource "),
            ),
            (
                "u@my_host-1.lan",
                "u@my_host-1.lan",
                Some("u"),
                "my_host-1.lan",
                None,
            ),
            ("localhost", "localhost", None, "localhost", None),
        ];
        for &(input, norm, local, domain, resource) in cases {
            let j = Jid::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(j.as_str(), norm, "{input}");
            assert_eq!(j.local(), local, "{input}");
            assert_eq!(j.domain(), domain, "{input}");
            assert_eq!(j.resource(), resource, "{input}");
            assert_eq!(j.to_string(), norm);
            // Normalisation is idempotent and the string determines the parts.
            assert_eq!(Jid::parse(norm), Ok(j.clone()), "{input}");
            assert_eq!(Jid::new(local, domain, resource), Ok(j), "{input}");
        }
    }

    #[test]
    fn invalid_table() {
        let long = "a".repeat(1024);
        let long_label = format!("{}.com", "a".repeat(64));
        let too_long_total = "a".repeat(MAX_JID_BYTES + 1);
        let cases: Vec<(&str, JidError)> = vec![
            ("", JidError::Empty),
            ("@example.com", JidError::BadLocal),
            ("a@", JidError::BadDomain),
            ("a@/r", JidError::BadDomain),
            ("/r", JidError::BadDomain),
            ("a@b/", JidError::BadResource),
            ("a@b/x\u{0}y", JidError::BadResource),
            ("a@b/x\ny", JidError::BadResource),
            ("a b@c", JidError::BadLocal),
            ("a\"b@c", JidError::BadLocal),
            ("a&b@c", JidError::BadLocal),
            ("a'b@c", JidError::BadLocal),
            ("a:b@c", JidError::BadLocal),
            ("a<b@c", JidError::BadLocal),
            ("a>b@c", JidError::BadLocal),
            ("a\u{7}@c", JidError::BadLocal),
            ("a@b@c", JidError::BadDomain),
            ("a@b..c", JidError::BadDomain),
            ("a@.c", JidError::BadDomain),
            ("a@.", JidError::BadDomain),
            ("a@c..", JidError::BadDomain),
            ("a@-c.com", JidError::BadDomain),
            ("a@c-.com", JidError::BadDomain),
            ("a@c d", JidError::BadDomain),
            ("a@c:5222", JidError::BadDomain),
            ("a@[::1", JidError::BadDomain),
            ("a@[not-ip]", JidError::BadDomain),
            ("a@[127.0.0.1]", JidError::BadDomain),
            (long_label.as_str(), JidError::BadDomain),
            (too_long_total.as_str(), JidError::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(Jid::parse(input), Err(want), "{input:?}");
        }
        assert_eq!(Jid::parse(&format!("{long}@x")), Err(JidError::TooLong));
        assert_eq!(Jid::parse(&format!("x/{long}")), Err(JidError::TooLong));
        let ok_long = "a".repeat(1023);
        assert!(Jid::parse(&format!("{ok_long}@x/{ok_long}")).is_ok());
    }

    #[test]
    fn maximal_jid_offsets_fit() {
        let label = "a".repeat(63);
        // 16 labels of 63 bytes plus 15 dots = 1023 bytes.
        let domain = vec![label.as_str(); 16].join(".");
        assert_eq!(domain.len(), 1023);
        let part = "b".repeat(1023);
        let s = format!("{part}@{domain}/{part}");
        assert_eq!(s.len(), MAX_JID_BYTES);
        let j = Jid::parse(&s).expect("maximal JID is valid");
        assert_eq!(j.local(), Some(part.as_str()));
        assert_eq!(j.domain(), domain);
        assert_eq!(j.resource(), Some(part.as_str()));
        let over = format!("{domain}a");
        assert_eq!(Jid::new(None, &over, None), Err(JidError::TooLong));
    }

    #[test]
    fn bare_full_and_with_resource() {
        let full = Jid::parse("Romeo@Montague.lit/Orchard").expect("valid");
        assert!(full.is_full());
        assert!(!full.is_bare());
        let bare = full.bare();
        assert!(bare.is_bare());
        assert_eq!(bare.as_str(), "romeo@montague.lit");
        assert_eq!(bare.resource(), None);
        assert_eq!(bare.local(), Some("romeo"));
        assert_eq!(bare, Jid::parse("romeo@montague.lit").expect("valid"));
        let other = full.with_resource("Garden").expect("valid");
        assert_eq!(other.as_str(), "romeo@montague.lit/Garden");
        assert_eq!(other.bare(), bare);
        assert_eq!(
            bare.with_resource("x").expect("valid").resource(),
            Some("x")
        );
        assert_eq!(bare.with_resource(""), Err(JidError::BadResource));
        let domain_only = Jid::parse("montague.lit/r").expect("valid");
        assert_eq!(domain_only.bare().as_str(), "montague.lit");
        assert_eq!(domain_only.bare().local(), None);
        let parsed: Jid = "a@b".parse().expect("valid");
        assert_eq!(parsed.domain(), "b");
    }

    #[test]
    fn new_rejects_separators_in_parts() {
        assert_eq!(Jid::new(Some("a@b"), "c", None), Err(JidError::BadLocal));
        assert_eq!(Jid::new(Some("a/b"), "c", None), Err(JidError::BadLocal));
        assert_eq!(Jid::new(Some(""), "c", None), Err(JidError::BadLocal));
        assert_eq!(Jid::new(None, "c/d", None), Err(JidError::BadDomain));
        assert_eq!(Jid::new(None, "c@d", None), Err(JidError::BadDomain));
        assert_eq!(Jid::new(None, "", None), Err(JidError::BadDomain));
        assert_eq!(Jid::new(None, "c", Some("")), Err(JidError::BadResource));
        let j = Jid::new(None, "c", Some("a/b@c")).expect("resource may hold separators");
        assert_eq!(Jid::parse(j.as_str()), Ok(j));
    }

    #[test]
    fn errors_display() {
        assert_eq!(JidError::Empty.to_string(), "empty JID");
        assert_eq!(JidError::BadDomain.to_string(), "invalid JID domainpart");
    }

    #[test]
    fn fuzz_parse_never_panics() {
        let alphabet: &[&str] = &[
            "a", "Z", "@", "/", ".", "-", "[", "]", ":", "1", " ", "\u{0}", "é", "Σ", "İ", "ß",
            "_", "\"",
        ];
        let mut state: u64 = 0x1234_5678_9abc_def0;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for _ in 0..20_000 {
            let len = next() % 24;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(alphabet[next() % alphabet.len()]);
            }
            if let Ok(j) = Jid::parse(&s) {
                // Anything accepted re-parses to itself and has consistent parts.
                assert_eq!(Jid::parse(j.as_str()).as_ref(), Ok(&j), "{s:?}");
                assert_eq!(
                    Jid::new(j.local(), j.domain(), j.resource()).as_ref(),
                    Ok(&j)
                );
                assert!(j.bare().is_bare());
            }
        }
    }
}
