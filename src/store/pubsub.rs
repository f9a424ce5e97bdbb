//! Pub-sub persistence: nodes, items, subscriptions and affiliations (XEP-0060).
//!
//! The store knows nothing of XML: node configurations are stored as the list of
//! `(field var, value)` pairs of their `pubsub#node_config` form (so a later build that
//! knows more fields reads old rows unchanged), and item payloads as opaque UTF-8 text.
//!
//! Every change is a batch of [`PubsubOp`]s applied in one durable redb transaction: the
//! engine builds the batch and stages it ([`Store::pubsub_stage`], which checks it; the
//! daemon commits staged batches in groups, `writer.rs`) before it changes its memory,
//! and answers the client once the batch is on disk. A batch is never split across
//! transactions, so a create-and-publish (auto-create) either leaves both the node and
//! the item or neither.
//!
//! # Layouts (all integers big-endian; see `docs/storage.md`)
//!
//! | table | key | value |
//! |---|---|---|
//! | `pubsub_nodes` | node id | `01 · u64 created_ms · u16 creator · u16 n · (u16 var · u32 value)ⁿ` |
//! | `pubsub_items` | `node 00 u64 seq` | `01 · u16 id · u16 publisher · u64 published_ms · u32 payload` |
//! | `pubsub_subscriptions` | `node 00 jid 00 subid` | `02 · u8 state · u8 flags · u8 show · u64 expire_ms` |
//!
//! Subscription rows written before SubIDs existed have the key `node 00 jid` and the
//! value `01 · u8 state · u8 flags`; they still load (with an empty SubID, which the engine
//! replaces by a generated one at start).
//! | `pubsub_affiliations` | `node 00 bare-jid` | `01 · u8 affiliation` |

use redb::{ReadableTable, WriteTransaction};

use super::codec::DecodeError;
use super::schema::{PUBSUB_AFFILIATIONS, PUBSUB_ITEMS, PUBSUB_NODES, PUBSUB_SUBSCRIPTIONS};
use super::writer::DbHandle;
use super::{
    ItemRecord, NodeRecord, PubsubOp, PubsubSnapshot, Store, StoreError, SubscriptionRecord,
    corrupt,
};

/// Format byte of every pub-sub record of this version.
const V1: u8 = 1;
/// Longest node id, item id or JID stored, in bytes (the `u16` prefixes allow more).
pub const MAX_PUBSUB_NAME_BYTES: usize = 3071;
/// Most fields in a stored node configuration (the registry has 29; headroom for `x-`).
pub const MAX_PUBSUB_CONFIG_FIELDS: usize = 256;
/// Longest config value, in bytes.
pub const MAX_PUBSUB_CONFIG_VALUE_BYTES: usize = 65_536;
/// Largest stored payload, in bytes (the stanza limit caps it far lower in practice).
pub const MAX_PUBSUB_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Format byte of subscription records with options (SubID in the key).
const V2: u8 = 2;
/// Format byte of subscription records with XEP-0248 options (V2 plus `u8 type · u32
/// depth`); written only when they differ from the defaults, so V2 rows stay V2.
const V3: u8 = 3;
/// Subscription flag: notifications are delivered (`pubsub#deliver`).
const SUB_FLAG_DELIVER: u8 = 0b1;
/// Subscription flag: notifications carry a `<body/>` (`pubsub#include_body`).
const SUB_FLAG_BODY: u8 = 0b10;
/// Subscription flag: temporary, ends with the subscriber's presence (`pubsub#expire` =
/// `presence`, §12.4).
const SUB_FLAG_TEMP: u8 = 0b100;
/// Every subscription flag this build knows.
const SUB_FLAGS: u8 = SUB_FLAG_DELIVER | SUB_FLAG_BODY | SUB_FLAG_TEMP;
/// Longest SubID stored, in bytes.
pub const MAX_PUBSUB_SUBID_BYTES: usize = 64;

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("value is truncated"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn str16(&mut self, max: usize) -> Result<&'a str, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(DecodeError("string longer than the limit"));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("string is not UTF-8"))
    }
    fn str32(&mut self, max: usize) -> Result<&'a str, DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError("length overflows"))?;
        if n > max {
            return Err(DecodeError("string longer than the limit"));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("string is not UTF-8"))
    }
    fn format(&mut self) -> Result<(), DecodeError> {
        if self.u8()? == V1 {
            Ok(())
        } else {
            Err(DecodeError("unknown record format"))
        }
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes after the record"))
        }
    }
}

fn put16(out: &mut Vec<u8>, s: &str, max: usize, what: &str) -> Result<(), StoreError> {
    if s.len() > max || s.len() > usize::from(u16::MAX) {
        return Err(StoreError::Invalid(format!(
            "the {what} is {} bytes long; the limit is {max}",
            s.len()
        )));
    }
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put32(out: &mut Vec<u8>, s: &str, max: usize, what: &str) -> Result<(), StoreError> {
    let len = u32::try_from(s.len()).ok().filter(|_| s.len() <= max);
    let Some(len) = len else {
        return Err(StoreError::Invalid(format!(
            "the {what} is {} bytes long; the limit is {max}",
            s.len()
        )));
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// The node of a subscription row: a node id, or empty for the root collection
/// (XEP-0248), whose subscriptions are the only rows keyed by the empty node.
fn check_sub_node(node: &str) -> Result<(), StoreError> {
    if node.is_empty() {
        Ok(())
    } else {
        check_key_part("node id", node)
    }
}

fn check_key_part(what: &str, s: &str) -> Result<(), StoreError> {
    if s.is_empty() || s.len() > MAX_PUBSUB_NAME_BYTES || s.as_bytes().contains(&0) {
        return Err(StoreError::Invalid(format!(
            "the {what} must be 1..={MAX_PUBSUB_NAME_BYTES} bytes without NUL"
        )));
    }
    Ok(())
}

fn encode_node(n: &NodeRecord) -> Result<Vec<u8>, StoreError> {
    if n.config.len() > MAX_PUBSUB_CONFIG_FIELDS {
        return Err(StoreError::Invalid("too many configuration fields".into()));
    }
    let mut out = vec![V1];
    out.extend_from_slice(&n.created_ms.to_be_bytes());
    put16(&mut out, &n.creator, MAX_PUBSUB_NAME_BYTES, "creator")?;
    out.extend_from_slice(&(n.config.len() as u16).to_be_bytes());
    for (k, v) in &n.config {
        put16(&mut out, k, MAX_PUBSUB_NAME_BYTES, "field name")?;
        put32(&mut out, v, MAX_PUBSUB_CONFIG_VALUE_BYTES, "field value")?;
    }
    Ok(out)
}

fn decode_node(b: &[u8]) -> Result<NodeRecord, DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let created_ms = r.u64()?;
    let creator = r.str16(MAX_PUBSUB_NAME_BYTES)?.to_owned();
    let n = usize::from(r.u16()?);
    if n > MAX_PUBSUB_CONFIG_FIELDS {
        return Err(DecodeError("too many configuration fields"));
    }
    let mut config = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.str16(MAX_PUBSUB_NAME_BYTES)?.to_owned();
        let v = r.str32(MAX_PUBSUB_CONFIG_VALUE_BYTES)?.to_owned();
        config.push((k, v));
    }
    r.finish()?;
    Ok(NodeRecord {
        created_ms,
        creator,
        config,
    })
}

fn encode_item(i: &ItemRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(32 + i.id.len() + i.publisher.len() + i.payload.len());
    out.push(V1);
    put16(&mut out, &i.id, MAX_PUBSUB_NAME_BYTES, "item id")?;
    put16(&mut out, &i.publisher, MAX_PUBSUB_NAME_BYTES, "publisher")?;
    out.extend_from_slice(&i.published_ms.to_be_bytes());
    put32(&mut out, &i.payload, MAX_PUBSUB_PAYLOAD_BYTES, "payload")?;
    Ok(out)
}

/// Decodes an item and its payload length; with `payload == false` the payload is
/// skipped (left empty).
fn decode_item(b: &[u8], payload: bool) -> Result<(ItemRecord, usize), DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let id = r.str16(MAX_PUBSUB_NAME_BYTES)?.to_owned();
    let publisher = r.str16(MAX_PUBSUB_NAME_BYTES)?.to_owned();
    let published_ms = r.u64()?;
    let (payload, len) = if payload {
        let p = r.str32(MAX_PUBSUB_PAYLOAD_BYTES)?.to_owned();
        let len = p.len();
        (p, len)
    } else {
        let n = usize::try_from(r.u32()?).map_err(|_| DecodeError("length overflows"))?;
        if n > MAX_PUBSUB_PAYLOAD_BYTES {
            return Err(DecodeError("string longer than the limit"));
        }
        r.take(n)?;
        (String::new(), n)
    };
    r.finish()?;
    Ok((
        ItemRecord {
            id,
            publisher,
            published_ms,
            payload,
        },
        len,
    ))
}

fn encode_sub(rec: &SubscriptionRecord) -> Vec<u8> {
    let mut flags = 0;
    for (on, bit) in [
        (rec.deliver, SUB_FLAG_DELIVER),
        (rec.include_body, SUB_FLAG_BODY),
        (rec.temporary, SUB_FLAG_TEMP),
    ] {
        if on {
            flags |= bit;
        }
    }
    let collection = (rec.sub_type, rec.depth) != (0, 1);
    let mut out = vec![if collection { V3 } else { V2 }, rec.state, flags, rec.show];
    out.extend_from_slice(&rec.expire_ms.to_be_bytes());
    if collection {
        out.push(rec.sub_type);
        out.extend_from_slice(&rec.depth.to_be_bytes());
    }
    out
}

/// Decodes a subscription value of either format (the SubID comes from the key).
fn decode_sub(b: &[u8]) -> Result<SubscriptionRecord, DecodeError> {
    let mut r = Reader(b);
    let format = r.u8()?;
    let state = r.u8()?;
    let flags = r.u8()?;
    let (show, expire_ms) = match format {
        V1 => (0, 0),
        V2 | V3 => (r.u8()?, r.u64()?),
        _ => return Err(DecodeError("unknown record format")),
    };
    let (sub_type, depth) = if format == V3 {
        (r.u8()?, r.u32()?)
    } else {
        (0, 1)
    };
    r.finish()?;
    if sub_type > 2 {
        return Err(DecodeError("unknown subscription type"));
    }
    let known = if format == V1 {
        SUB_FLAG_DELIVER
    } else {
        SUB_FLAGS
    };
    if state > 3 || flags & !known != 0 || show & 0b0110_0000 != 0 {
        return Err(DecodeError("unknown subscription state or flag"));
    }
    Ok(SubscriptionRecord {
        state,
        deliver: flags & SUB_FLAG_DELIVER != 0,
        subid: String::new(),
        include_body: flags & SUB_FLAG_BODY != 0,
        temporary: flags & SUB_FLAG_TEMP != 0,
        show,
        expire_ms,
        sub_type,
        depth,
    })
}

/// The key of subscription `(node, jid, subid)`: `node 00 jid 00 subid`, or `node 00 jid`
/// for an empty SubID (rows of the first format).
fn sub_key(node: &str, jid: &str, subid: &str) -> Vec<u8> {
    let mut k = key2(node, jid.as_bytes());
    if !subid.is_empty() {
        k.push(0);
        k.extend_from_slice(subid.as_bytes());
    }
    k
}

fn decode_aff(b: &[u8]) -> Result<u8, DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let a = r.u8()?;
    r.finish()?;
    if a > 5 {
        return Err(DecodeError("unknown affiliation"));
    }
    Ok(a)
}

/// `node 00 rest`.
fn key2(node: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(node.len() + 1 + rest.len());
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

/// The key range `[node 00, node 01)` of every row of `node`.
fn node_range(node: &str) -> (Vec<u8>, Vec<u8>) {
    let mut a = node.as_bytes().to_vec();
    let mut b = a.clone();
    a.push(0);
    b.push(1);
    (a, b)
}

/// Splits `node 00 rest`.
fn split_key(k: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let i = k
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError("key has no separator"))?;
    let node = std::str::from_utf8(&k[..i]).map_err(|_| DecodeError("node is not UTF-8"))?;
    Ok((node, &k[i + 1..]))
}

fn split_seq(k: &[u8]) -> Result<(&str, u64), DecodeError> {
    let (node, rest) = split_key(k)?;
    let a: [u8; 8] = rest
        .try_into()
        .map_err(|_| DecodeError("item key has no 8-byte sequence"))?;
    Ok((node, u64::from_be_bytes(a)))
}

fn split_jid(k: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (node, rest) = split_key(k)?;
    let jid = std::str::from_utf8(rest).map_err(|_| DecodeError("JID is not UTF-8"))?;
    Ok((node, jid))
}

fn clear_range(
    txn: &WriteTransaction,
    def: redb::TableDefinition<&[u8], &[u8]>,
    node: &str,
) -> Result<(), StoreError> {
    let (a, b) = node_range(node);
    txn.open_table(def)?
        .retain_in::<&[u8], _>(a.as_slice()..b.as_slice(), |_, _| false)?;
    Ok(())
}

impl Store {
    /// Applies a batch of pub-sub changes in one durable transaction, now, on this thread:
    /// when this returns `Ok`, all of them are on disk; on error none is. (The daemon
    /// stages changes with [`Store::pubsub_stage`] instead, committed in groups.)
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a field that does not fit its layout; I/O and redb errors.
    pub fn pubsub_apply(&self, ops: &[PubsubOp]) -> Result<(), StoreError> {
        self.db_handle()?.pubsub_apply(ops)
    }
}

/// Checks that every op of a batch fits its layout (what [`Store::pubsub_apply`] refuses with
/// [`StoreError::Invalid`]), without writing, and returns the batch's size estimate in
/// bytes. Staged batches are checked one request at a time, so that one bad request
/// never fails a group commit shared with others.
pub(super) fn check_ops(ops: &[PubsubOp]) -> Result<usize, StoreError> {
    let mut bytes = 0;
    for op in ops {
        bytes += 64;
        match op {
            PubsubOp::PutNode(node, rec) => {
                check_key_part("node id", node)?;
                bytes += node.len() + encode_node(rec)?.len();
            }
            PubsubOp::PutItem(node, _, item) => {
                check_key_part("node id", node)?;
                bytes += node.len() + encode_item(item)?.len();
            }
            PubsubOp::PutSubscription(node, jid, rec) => {
                check_sub_node(node)?;
                check_key_part("JID", jid)?;
                if rec.subid.len() > MAX_PUBSUB_SUBID_BYTES || rec.subid.contains('\0') {
                    return Err(StoreError::Invalid("bad SubID".into()));
                }
                bytes += node.len() + jid.len() + encode_sub(rec).len();
            }
            PubsubOp::PutAffiliation(node, jid, _) => {
                check_key_part("node id", node)?;
                check_key_part("JID", jid)?;
                bytes += node.len() + jid.len();
            }
            PubsubOp::DeleteSubscriptionId(node, jid, subid) => {
                bytes += node.len() + jid.len() + subid.len();
            }
            PubsubOp::DeleteNode(node)
            | PubsubOp::DeleteItem(node, _)
            | PubsubOp::PurgeItems(node) => bytes += node.len(),
            PubsubOp::DeleteSubscription(node, jid) | PubsubOp::DeleteAffiliation(node, jid) => {
                bytes += node.len() + jid.len();
            }
        }
    }
    Ok(bytes)
}

impl DbHandle {
    /// Applies `ops` in one durable write transaction (see [`Store::pubsub_apply`]); runs
    /// on the event loop ([`CommitMode::Inline`](super::CommitMode)) or on the group
    /// commit's blocking thread.
    pub(super) fn pubsub_apply(&self, ops: &[PubsubOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write()?;
        apply_ops(&txn, ops)?;
        txn.commit()?;
        Ok(())
    }
}

/// Applies `ops` inside `txn` (see [`Store::pubsub_apply`]); the caller commits.
pub(super) fn apply_ops(txn: &WriteTransaction, ops: &[PubsubOp]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            PubsubOp::PutNode(node, rec) => {
                check_key_part("node id", node)?;
                let v = encode_node(rec)?;
                txn.open_table(PUBSUB_NODES)?
                    .insert(node.as_bytes(), v.as_slice())?;
            }
            PubsubOp::DeleteNode(node) => {
                txn.open_table(PUBSUB_NODES)?.remove(node.as_bytes())?;
                clear_range(txn, PUBSUB_ITEMS, node)?;
                clear_range(txn, PUBSUB_SUBSCRIPTIONS, node)?;
                clear_range(txn, PUBSUB_AFFILIATIONS, node)?;
            }
            PubsubOp::PutItem(node, seq, item) => {
                check_key_part("node id", node)?;
                let v = encode_item(item)?;
                let k = key2(node, &seq.to_be_bytes());
                txn.open_table(PUBSUB_ITEMS)?
                    .insert(k.as_slice(), v.as_slice())?;
            }
            PubsubOp::DeleteItem(node, seq) => {
                let k = key2(node, &seq.to_be_bytes());
                txn.open_table(PUBSUB_ITEMS)?.remove(k.as_slice())?;
            }
            PubsubOp::PurgeItems(node) => clear_range(txn, PUBSUB_ITEMS, node)?,
            PubsubOp::PutSubscription(node, jid, rec) => {
                check_sub_node(node)?;
                check_key_part("JID", jid)?;
                if rec.subid.len() > MAX_PUBSUB_SUBID_BYTES || rec.subid.contains('\0') {
                    return Err(StoreError::Invalid("bad SubID".into()));
                }
                let k = sub_key(node, jid, &rec.subid);
                txn.open_table(PUBSUB_SUBSCRIPTIONS)?
                    .insert(k.as_slice(), encode_sub(rec).as_slice())?;
            }
            PubsubOp::DeleteSubscriptionId(node, jid, subid) => {
                let k = sub_key(node, jid, subid);
                txn.open_table(PUBSUB_SUBSCRIPTIONS)?.remove(k.as_slice())?;
            }
            PubsubOp::DeleteSubscription(node, jid) => {
                let k = key2(node, jid.as_bytes());
                txn.open_table(PUBSUB_SUBSCRIPTIONS)?.remove(k.as_slice())?;
            }
            PubsubOp::PutAffiliation(node, jid, code) => {
                check_key_part("node id", node)?;
                check_key_part("JID", jid)?;
                let k = key2(node, jid.as_bytes());
                txn.open_table(PUBSUB_AFFILIATIONS)?
                    .insert(k.as_slice(), &[V1, *code][..])?;
            }
            PubsubOp::DeleteAffiliation(node, jid) => {
                let k = key2(node, jid.as_bytes());
                txn.open_table(PUBSUB_AFFILIATIONS)?.remove(k.as_slice())?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// Every node, item header, subscription and affiliation (item payloads are not read).
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a row that cannot be decoded.
    pub fn pubsub_load(&self) -> Result<PubsubSnapshot, StoreError> {
        let txn = self.db()?.begin_read()?;
        let mut snap = PubsubSnapshot::default();
        let t = txn.open_table(PUBSUB_NODES)?;
        for e in t.iter()? {
            let (k, v) = e?;
            let name = std::str::from_utf8(k.value())
                .map_err(|_| corrupt(&PUBSUB_NODES, k.value(), DecodeError("not UTF-8")))?;
            let rec = decode_node(v.value()).map_err(|e| corrupt(&PUBSUB_NODES, k.value(), e))?;
            snap.nodes.push((name.to_owned(), rec));
        }
        let t = txn.open_table(PUBSUB_ITEMS)?;
        for e in t.iter()? {
            let (k, v) = e?;
            let (node, seq) =
                split_seq(k.value()).map_err(|e| corrupt(&PUBSUB_ITEMS, k.value(), e))?;
            let (item, len) =
                decode_item(v.value(), false).map_err(|e| corrupt(&PUBSUB_ITEMS, k.value(), e))?;
            snap.items.push((node.to_owned(), seq, item, len));
        }
        let t = txn.open_table(PUBSUB_SUBSCRIPTIONS)?;
        for e in t.iter()? {
            let (k, v) = e?;
            let (node, rest) =
                split_jid(k.value()).map_err(|e| corrupt(&PUBSUB_SUBSCRIPTIONS, k.value(), e))?;
            let (jid, subid) = rest.split_once('\0').unwrap_or((rest, ""));
            let mut rec =
                decode_sub(v.value()).map_err(|e| corrupt(&PUBSUB_SUBSCRIPTIONS, k.value(), e))?;
            rec.subid = subid.to_owned();
            snap.subscriptions
                .push((node.to_owned(), jid.to_owned(), rec));
        }
        let t = txn.open_table(PUBSUB_AFFILIATIONS)?;
        for e in t.iter()? {
            let (k, v) = e?;
            let (node, jid) =
                split_jid(k.value()).map_err(|e| corrupt(&PUBSUB_AFFILIATIONS, k.value(), e))?;
            let a =
                decode_aff(v.value()).map_err(|e| corrupt(&PUBSUB_AFFILIATIONS, k.value(), e))?;
            snap.affiliations.push((node.to_owned(), jid.to_owned(), a));
        }
        Ok(snap)
    }

    /// The items of `node` at the given sequence numbers, payloads included, in the order
    /// asked; a missing row is `None`. Items staged but not yet committed are read from
    /// the staging area (the newest staged write wins), the others from the file.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a row that cannot be decoded.
    pub fn pubsub_items(
        &self,
        node: &str,
        seqs: &[u64],
    ) -> Result<Vec<Option<ItemRecord>>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(PUBSUB_ITEMS)?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(staged) = self.staged_item(node, *seq) {
                out.push(Some(staged));
                continue;
            }
            let k = key2(node, &seq.to_be_bytes());
            match t.get(k.as_slice())? {
                Some(v) => out.push(Some(
                    decode_item(v.value(), true)
                        .map(|(item, _)| item)
                        .map_err(|e| corrupt(&PUBSUB_ITEMS, &k, e))?,
                )),
                None => out.push(None),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DEPTH_ALL;

    #[test]
    fn schema_1_file_migrates_to_2_with_empty_pubsub_tables() {
        use super::super::schema::{META, META_SCHEMA_VERSION};
        let dir = crate::test_support::TempDir::new("ps-migrate");
        {
            let store = Store::open(&dir, 0).expect("open");
            store.user_add("alice", b"creds").expect("user");
        }
        {
            // Make it a schema-1 file: no pub-sub tables, version 1.
            let db = redb::Database::open(dir.join(super::super::DB_FILE_NAME)).expect("redb");
            let txn = db.begin_write().expect("txn");
            for t in [
                PUBSUB_NODES,
                PUBSUB_ITEMS,
                PUBSUB_SUBSCRIPTIONS,
                PUBSUB_AFFILIATIONS,
            ] {
                txn.delete_table(t).expect("delete table");
            }
            txn.open_table(META)
                .expect("meta")
                .insert(META_SCHEMA_VERSION, &1u32.to_be_bytes()[..])
                .expect("version");
            txn.commit().expect("commit");
        }
        let store = Store::open(&dir, 0).expect("migrated");
        // A subscription row of the first format (before SubIDs) still loads.
        {
            let mut rec = SubscriptionRecord {
                state: 3,
                deliver: true,
                ..SubscriptionRecord::default()
            };
            store
                .pubsub_apply(&[PubsubOp::PutNode(
                    "old".into(),
                    NodeRecord {
                        created_ms: 1,
                        creator: "alice@localhost".into(),
                        config: Vec::new(),
                    },
                )])
                .expect("node");
            let txn = store.begin_write().expect("txn");
            txn.open_table(PUBSUB_SUBSCRIPTIONS)
                .expect("table")
                .insert(key2("old", b"bob@localhost").as_slice(), &[V1, 3, 1][..])
                .expect("v1 row");
            txn.commit().expect("commit");
            let snap = store.pubsub_load().expect("load");
            assert_eq!(
                snap.subscriptions,
                vec![("old".into(), "bob@localhost".into(), rec.clone())]
            );
            rec.subid = "s1".into();
            store
                .pubsub_apply(&[
                    PubsubOp::DeleteSubscription("old".into(), "bob@localhost".into()),
                    PubsubOp::PutSubscription("old".into(), "bob@localhost".into(), rec.clone()),
                ])
                .expect("rewrite");
            let snap = store.pubsub_load().expect("load");
            assert_eq!(
                snap.subscriptions,
                vec![("old".into(), "bob@localhost".into(), rec)]
            );
            store
                .pubsub_apply(&[PubsubOp::DeleteNode("old".into())])
                .expect("drop");
        }
        assert_eq!(
            store.user_get("alice").expect("get"),
            Some(b"creds".to_vec())
        );
        assert!(store.pubsub_load().expect("load").nodes.is_empty());
        let rec = NodeRecord {
            created_ms: 1,
            creator: "alice@localhost".into(),
            config: Vec::new(),
        };
        store
            .pubsub_apply(&[PubsubOp::PutNode("n".into(), rec)])
            .expect("write");
        assert_eq!(store.pubsub_load().expect("load").nodes.len(), 1);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_round_trip_and_reject_damage() {
        let n = NodeRecord {
            created_ms: 42,
            creator: "a@b".into(),
            config: vec![("pubsub#title".into(), "T".into())],
        };
        let b = encode_node(&n).expect("encode");
        assert_eq!(decode_node(&b), Ok(n));
        assert!(decode_node(&b[..b.len() - 1]).is_err());
        let i = ItemRecord {
            id: "x".into(),
            publisher: "a@b/c".into(),
            published_ms: 7,
            payload: "<p xmlns='u'/>".into(),
        };
        let b = encode_item(&i).expect("encode");
        assert_eq!(decode_item(&b, true), Ok((i.clone(), 14)));
        assert_eq!(
            decode_item(&b, false).map(|x| (x.0.id, x.1)),
            Ok(("x".into(), 14))
        );
        assert!(decode_sub(&[1, 9, 0]).is_err());
        assert!(
            decode_sub(&[1, 3, 2]).is_err(),
            "v1 rows know only the deliver flag"
        );
        assert!(decode_sub(&[3, 3, 1]).is_err());
        let sub = SubscriptionRecord {
            state: 1,
            deliver: true,
            subid: String::new(),
            include_body: true,
            temporary: true,
            show: 0b1000_0101,
            expire_ms: 123_456,
            sub_type: 0,
            depth: 1,
        };
        assert_eq!(
            encode_sub(&sub)[0],
            V2,
            "default collection options keep V2"
        );
        assert_eq!(decode_sub(&encode_sub(&sub)), Ok(sub.clone()));
        let coll = SubscriptionRecord {
            sub_type: 1,
            depth: DEPTH_ALL,
            ..sub
        };
        assert_eq!(encode_sub(&coll)[0], V3);
        assert_eq!(decode_sub(&encode_sub(&coll)), Ok(coll.clone()));
        let mut bad = encode_sub(&coll);
        bad[12] = 3;
        assert!(decode_sub(&bad).is_err(), "unknown subscription type");
        assert!(decode_sub(&encode_sub(&SubscriptionRecord::default())[..5]).is_err());
        assert!(decode_aff(&[2, 0]).is_err());
        assert_eq!(split_seq(&key2("n", &5u64.to_be_bytes())), Ok(("n", 5)));
    }
}
