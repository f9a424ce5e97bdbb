//! On-disk encodings of the store's keys and values.
//!
//! Everything here is hand-written and endian-explicit: integers are big-endian, lengths are
//! `u16`/`u32` prefixes, and `usize` never reaches the disk (its width differs between the
//! 32-bit routers and 64-bit hosts). Every record starts with a format byte so a later
//! version can decode old and new records side by side. Decoding takes bytes we do not
//! trust (a damaged flash page, a file edited by hand) and never panics: every failure is a
//! [`DecodeError`] that the caller turns into `StoreError::Corrupt` with table and key
//! context. Encoding checks the bounds ([`super::MAX_USERNAME_BYTES`] and friends), so
//! everything on disk is also something the decoder accepts.
//!
//! The layouts are described in `docs/storage.md`; keep the two in step.

use super::{
    MAX_CREDENTIALS_BYTES, MAX_GROUP_BYTES, MAX_JID_BYTES, MAX_OFFLINE_STANZA_BYTES,
    MAX_ROSTER_GROUPS, MAX_ROSTER_NAME_BYTES, MAX_USERNAME_BYTES, RosterItem, StoreError,
    Subscription,
};

/// Format byte of an `accounts` value: `01 | u32 len | credentials`.
const ACCOUNT_V1: u8 = 1;
/// Format byte of a `rosters` value:
/// `01 | subscription u8 | flags u8 | [u16 len | name] | u16 count | (u16 len | group)*`.
const ROSTER_ITEM_V1: u8 = 1;
/// Format byte of a `roster_versions` value: `01 | u64 version`.
const ROSTER_VERSION_V1: u8 = 1;
/// Format byte of an `offline` value: `01 | u64 stamp_ms | u32 len | stanza (UTF-8)`.
const OFFLINE_V1: u8 = 1;

/// Roster flag: we sent a subscription request that is still pending (RFC 6121 `ask`).
const FLAG_ASK_OUT: u8 = 0b001;
/// Roster flag: the contact asked to subscribe to us and awaits approval.
const FLAG_PENDING_IN: u8 = 0b010;
/// Roster flag: a name (handle) field follows.
const FLAG_HAS_NAME: u8 = 0b100;
/// The row only records a pending inbound subscription request; the user never added the
/// contact (RFC 6121 §3.1.3: such a contact is not shown in roster results or pushes).
const FLAG_NOT_IN_ROSTER: u8 = 0b1000;
/// All flags this version knows; any other bit set means a newer writer or a damaged value.
const KNOWN_FLAGS: u8 = FLAG_ASK_OUT | FLAG_PENDING_IN | FLAG_HAS_NAME | FLAG_NOT_IN_ROSTER;

/// Separator between the owner and the contact in a `rosters` key. Usernames and JIDs
/// never contain it (checked on write), and it sorts before every other byte, so all rows
/// of one owner are contiguous and "ann" rows never interleave with "anna" rows.
const KEY_SEPARATOR: u8 = 0;

/// Longest key excerpt quoted in a corruption message, in bytes.
const MAX_CONTEXT_BYTES: usize = 96;

/// Why a stored key or value could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DecodeError(pub(super) &'static str);

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    /// The bytes not consumed yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError("value is truncated"))?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < len {
            return Err(DecodeError("value is truncated"));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    /// A `u16`-prefixed UTF-8 string of at most `max` bytes.
    fn string(&mut self, max: usize, too_long: &'static str) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError(too_long));
        }
        std::str::from_utf8(self.bytes(len)?).map_err(|_| DecodeError("string is not UTF-8"))
    }

    fn format(&mut self, expected: u8) -> Result<(), DecodeError> {
        if self.u8()? == expected {
            Ok(())
        } else {
            Err(DecodeError("unknown record format"))
        }
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes after the record"))
        }
    }
}

/// Appends a `u16` length prefix and `s`; the caller has checked `s.len() <= u16::MAX`.
fn put_string(out: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    let len = u16::try_from(s.len())
        .map_err(|_| StoreError::Invalid(format!("a {}-byte string does not fit", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends a `u32` length prefix and `bytes` (`what` they are, for the error).
fn put_bytes_u32(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| StoreError::Invalid(format!("{} bytes of {what}", bytes.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn check_name(what: &str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::Invalid(format!("the {what} is empty")));
    }
    if value.len() > max {
        return Err(StoreError::Invalid(format!(
            "the {what} is {} bytes long; the limit is {max}",
            value.len()
        )));
    }
    if value.as_bytes().contains(&KEY_SEPARATOR) {
        return Err(StoreError::Invalid(format!(
            "the {what} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Checks a username before it becomes (part of) a key.
pub(super) fn check_username(username: &str) -> Result<(), StoreError> {
    check_name("username", username, MAX_USERNAME_BYTES)
}

/// Checks a contact JID before it becomes part of a roster key.
pub(super) fn check_jid(jid: &str) -> Result<(), StoreError> {
    check_name("roster JID", jid, MAX_JID_BYTES)
}

/// Encodes an `accounts` value.
pub(super) fn encode_account(credentials: &[u8]) -> Result<Vec<u8>, StoreError> {
    if credentials.len() > MAX_CREDENTIALS_BYTES {
        return Err(StoreError::Invalid(format!(
            "the credentials are {} bytes long; the limit is {MAX_CREDENTIALS_BYTES}",
            credentials.len()
        )));
    }
    let mut out = Vec::with_capacity(5 + credentials.len());
    out.push(ACCOUNT_V1);
    put_bytes_u32(&mut out, credentials, "credentials")?;
    Ok(out)
}

/// Decodes an `accounts` value.
pub(super) fn decode_account(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.format(ACCOUNT_V1)?;
    let len = usize::try_from(r.u32()?).map_err(|_| DecodeError("length overflows usize"))?;
    if len > MAX_CREDENTIALS_BYTES {
        return Err(DecodeError("credentials longer than the limit"));
    }
    let credentials = r.bytes(len)?.to_vec();
    r.finish()?;
    Ok(credentials)
}

fn subscription_code(s: Subscription) -> u8 {
    match s {
        Subscription::None => 0,
        Subscription::To => 1,
        Subscription::From => 2,
        Subscription::Both => 3,
    }
}

fn subscription_from_code(code: u8) -> Result<Subscription, DecodeError> {
    match code {
        0 => Ok(Subscription::None),
        1 => Ok(Subscription::To),
        2 => Ok(Subscription::From),
        3 => Ok(Subscription::Both),
        _ => Err(DecodeError("unknown subscription state")),
    }
}

/// Encodes a `rosters` value (the JID lives in the key, not here) after checking every
/// field against its bound.
pub(super) fn encode_roster_item(item: &RosterItem) -> Result<Vec<u8>, StoreError> {
    check_jid(&item.jid)?;
    if item.groups.len() > MAX_ROSTER_GROUPS {
        return Err(StoreError::Invalid(format!(
            "the roster item is in {} groups; the limit is {MAX_ROSTER_GROUPS}",
            item.groups.len()
        )));
    }
    let mut flags = 0;
    if item.ask_out {
        flags |= FLAG_ASK_OUT;
    }
    if item.pending_in {
        flags |= FLAG_PENDING_IN;
    }
    if item.name.is_some() {
        flags |= FLAG_HAS_NAME;
    }
    if !item.in_roster {
        flags |= FLAG_NOT_IN_ROSTER;
    }
    let mut out = Vec::with_capacity(32);
    out.push(ROSTER_ITEM_V1);
    out.push(subscription_code(item.subscription));
    out.push(flags);
    if let Some(name) = &item.name {
        if name.len() > MAX_ROSTER_NAME_BYTES {
            return Err(StoreError::Invalid(format!(
                "the roster name is {} bytes long; the limit is {MAX_ROSTER_NAME_BYTES}",
                name.len()
            )));
        }
        put_string(&mut out, name)?;
    }
    let count = u16::try_from(item.groups.len())
        .map_err(|_| StoreError::Invalid(format!("{} groups", item.groups.len())))?;
    out.extend_from_slice(&count.to_be_bytes());
    for group in &item.groups {
        if group.len() > MAX_GROUP_BYTES {
            return Err(StoreError::Invalid(format!(
                "a roster group name is {} bytes long; the limit is {MAX_GROUP_BYTES}",
                group.len()
            )));
        }
        put_string(&mut out, group)?;
    }
    Ok(out)
}

/// Decodes a `rosters` value; `jid` comes from the key.
pub(super) fn decode_roster_item(jid: &str, bytes: &[u8]) -> Result<RosterItem, DecodeError> {
    let mut r = Reader::new(bytes);
    r.format(ROSTER_ITEM_V1)?;
    let subscription = subscription_from_code(r.u8()?)?;
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError("unknown roster flags"));
    }
    let name = if flags & FLAG_HAS_NAME != 0 {
        Some(
            r.string(MAX_ROSTER_NAME_BYTES, "roster name longer than the limit")?
                .to_owned(),
        )
    } else {
        None
    };
    let count = usize::from(r.u16()?);
    if count > MAX_ROSTER_GROUPS {
        return Err(DecodeError("more roster groups than the limit"));
    }
    let mut groups = Vec::with_capacity(count);
    for _ in 0..count {
        groups.push(
            r.string(MAX_GROUP_BYTES, "group name longer than the limit")?
                .to_owned(),
        );
    }
    r.finish()?;
    Ok(RosterItem {
        jid: jid.to_owned(),
        name,
        subscription,
        ask_out: flags & FLAG_ASK_OUT != 0,
        pending_in: flags & FLAG_PENDING_IN != 0,
        groups,
        in_roster: flags & FLAG_NOT_IN_ROSTER == 0,
    })
}

/// Encodes a `roster_versions` value.
pub(super) fn encode_roster_version(version: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(ROSTER_VERSION_V1);
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// Decodes a `roster_versions` value.
pub(super) fn decode_roster_version(bytes: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(bytes);
    r.format(ROSTER_VERSION_V1)?;
    let version = r.u64()?;
    r.finish()?;
    Ok(version)
}

/// Encodes a `meta` `u32` (no format byte: see `schema.rs` on why meta values never change
/// their layout).
pub(super) fn encode_meta_u32(value: u32) -> [u8; 4] {
    value.to_be_bytes()
}

/// Decodes a `meta` `u32`.
pub(super) fn decode_meta_u32(bytes: &[u8]) -> Result<u32, DecodeError> {
    decode_meta(bytes, Reader::u32)
}

/// Encodes a `meta` `u64`.
pub(super) fn encode_meta_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

/// Decodes a `meta` `u64`.
pub(super) fn decode_meta_u64(bytes: &[u8]) -> Result<u64, DecodeError> {
    decode_meta(bytes, Reader::u64)
}

/// Decodes a `meta` value that is the one field `read` reads, with nothing after it.
fn decode_meta<'a, T>(
    bytes: &'a [u8],
    read: fn(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let value = read(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// Decodes an `accounts` key (a username).
pub(super) fn decode_username(key: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(key).map_err(|_| DecodeError("username is not UTF-8"))
}

/// The `rosters` key of one item: `username 00 jid`.
pub(super) fn roster_key(username: &str, jid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(username.len() + 1 + jid.len());
    key.extend_from_slice(username.as_bytes());
    key.push(KEY_SEPARATOR);
    key.extend_from_slice(jid.as_bytes());
    key
}

/// The half-open key range `[username 00, username 01)` holding exactly the rows of
/// `username`'s roster, in JID order.
pub(super) fn roster_range(username: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = Vec::with_capacity(username.len() + 1);
    start.extend_from_slice(username.as_bytes());
    let mut end = start.clone();
    start.push(KEY_SEPARATOR);
    end.push(KEY_SEPARATOR + 1);
    (start, end)
}

/// Splits a `rosters` key into (owner, contact JID).
pub(super) fn split_roster_key(key: &[u8]) -> Result<(&str, &str), DecodeError> {
    let at = key
        .iter()
        .position(|&b| b == KEY_SEPARATOR)
        .ok_or(DecodeError("roster key has no separator"))?;
    let (owner, rest) = key.split_at(at);
    let jid = rest.get(1..).unwrap_or_default();
    let owner = std::str::from_utf8(owner).map_err(|_| DecodeError("owner is not UTF-8"))?;
    let jid = std::str::from_utf8(jid).map_err(|_| DecodeError("roster JID is not UTF-8"))?;
    Ok((owner, jid))
}

/// Encodes an `offline` value (XEP-0160): `01 | u64 stamp_ms | u32 len | stanza`.
pub(super) fn encode_offline(stamp_ms: u64, stanza: &str) -> Result<Vec<u8>, StoreError> {
    if stanza.is_empty() || stanza.len() > MAX_OFFLINE_STANZA_BYTES {
        return Err(StoreError::Invalid(format!(
            "an offline message of {} bytes (at most {MAX_OFFLINE_STANZA_BYTES})",
            stanza.len()
        )));
    }
    let mut out = Vec::with_capacity(13 + stanza.len());
    out.push(OFFLINE_V1);
    out.extend_from_slice(&stamp_ms.to_be_bytes());
    put_bytes_u32(&mut out, stanza.as_bytes(), "stanza")?;
    Ok(out)
}

/// Reads the header of an `offline` value: the stamp and the stanza's bytes (checked
/// for length, not yet for UTF-8).
fn offline_parts(bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let mut r = Reader::new(bytes);
    r.format(OFFLINE_V1)?;
    let stamp_ms = r.u64()?;
    let len = usize::try_from(r.u32()?).map_err(|_| DecodeError("length overflows usize"))?;
    if len == 0 || len > MAX_OFFLINE_STANZA_BYTES {
        return Err(DecodeError("offline stanza length out of range"));
    }
    let stanza = r.bytes(len)?;
    r.finish()?;
    Ok((stamp_ms, stanza))
}

/// Decodes an `offline` value into its stamp and stanza.
pub(super) fn decode_offline(bytes: &[u8]) -> Result<(u64, String), DecodeError> {
    let (stamp_ms, stanza) = offline_parts(bytes)?;
    let stanza =
        std::str::from_utf8(stanza).map_err(|_| DecodeError("offline stanza is not UTF-8"))?;
    Ok((stamp_ms, stanza.to_owned()))
}

/// The length of the stanza of an `offline` value, checking the layout but not copying
/// it (what [`decode_offline`] would return the length of).
pub(super) fn offline_stanza_len(bytes: &[u8]) -> Result<usize, DecodeError> {
    let (_, stanza) = offline_parts(bytes)?;
    std::str::from_utf8(stanza).map_err(|_| DecodeError("offline stanza is not UTF-8"))?;
    Ok(stanza.len())
}

/// The `offline` key of one message: `username 00 u64 seq` (big-endian, so one user's
/// rows sort by sequence).
pub(super) fn offline_key(username: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(username.len() + 9);
    key.extend_from_slice(username.as_bytes());
    key.push(KEY_SEPARATOR);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Splits an `offline` key into (username, seq).
pub(super) fn split_offline_key(key: &[u8]) -> Result<(&str, u64), DecodeError> {
    let at = key
        .iter()
        .position(|&b| b == KEY_SEPARATOR)
        .ok_or(DecodeError("offline key has no separator"))?;
    let (user, rest) = key.split_at(at);
    let seq: [u8; 8] = rest
        .get(1..)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError("offline key has no 8-byte sequence"))?;
    let user = std::str::from_utf8(user).map_err(|_| DecodeError("username is not UTF-8"))?;
    Ok((user, u64::from_be_bytes(seq)))
}

/// Renders a key for an error message: lossy UTF-8, escaped, cut at a bounded length.
pub(super) fn key_context(key: &[u8]) -> String {
    let shown = key.get(..MAX_CONTEXT_BYTES).unwrap_or(key);
    let mut text = format!("{:?}", String::from_utf8_lossy(shown));
    if shown.len() < key.len() {
        text.push_str("...");
    }
    text
}
