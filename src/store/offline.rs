//! XEP-0160 offline messages: the `offline` table (schema 3), staged and group-committed
//! like roster changes (`writer.rs`).
//!
//! A row is `username 00 u64 seq` → `01 | u64 stamp_ms | u32 len | stanza` (see
//! `codec.rs` and `docs/storage.md`). The sequence comes from one store-wide counter (the
//! `meta` row `offline_seq`, written in the transaction that stores the message), so the
//! rows of one account read back in the order they were stored, and a sequence is never
//! handed out twice, even after a failed commit. Reads see staged changes
//! ([`Store::offline_get`]), so a message stored a moment ago is delivered even before its
//! commit is on disk.

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};

use super::schema::{META, META_OFFLINE_SEQ, OFFLINE};
use super::{CommitMode, OfflineMessage, OfflineUsage, Store, StoreError, codec, corrupt};

/// One staged offline-message change.
#[derive(Clone, Debug)]
pub(crate) enum OfflineWrite {
    /// Store a message of the user (first field).
    Put(String, OfflineMessage),
    /// Delete the user's messages up to and including this sequence number.
    DeleteThrough(String, u64),
}

impl OfflineWrite {
    /// The user whose messages change.
    pub(super) fn user(&self) -> &str {
        match self {
            OfflineWrite::Put(u, _) | OfflineWrite::DeleteThrough(u, _) => u,
        }
    }

    /// Bytes charged to the pending batch (the record, the key, and 64 B of bookkeeping).
    pub(super) fn charge(&self) -> usize {
        match self {
            OfflineWrite::Put(u, m) => 64 + 13 + u.len() + 9 + m.stanza.len(),
            OfflineWrite::DeleteThrough(u, _) => 64 + u.len() + 9,
        }
    }
}

/// Applies offline-message changes inside `txn`, in order, and moves the `offline_seq`
/// counter past every stored sequence.
pub(crate) fn apply_offline_writes(
    txn: &WriteTransaction,
    writes: &[OfflineWrite],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(OFFLINE)?;
    let mut last_seq = None;
    for w in writes {
        match w {
            OfflineWrite::Put(user, m) => {
                codec::check_username(user)?;
                let value = codec::encode_offline(m.stamp_ms, &m.stanza)?;
                let key = codec::offline_key(user, m.seq);
                table.insert(key.as_slice(), value.as_slice())?;
                last_seq = last_seq.max(Some(m.seq));
            }
            OfflineWrite::DeleteThrough(user, seq) => {
                let start = codec::offline_key(user, 0);
                let end = codec::offline_key(user, *seq);
                table.retain_in::<&[u8], _>(start.as_slice()..=end.as_slice(), |_, _| false)?;
            }
        }
    }
    drop(table);
    if let Some(seq) = last_seq {
        let mut meta = txn.open_table(META)?;
        let stored = read_seq(meta.get(META_OFFLINE_SEQ)?.map(|v| v.value().to_vec()))?;
        if seq > stored {
            meta.insert(META_OFFLINE_SEQ, &codec::encode_meta_u64(seq)[..])?;
        }
    }
    Ok(())
}

/// Decodes the `offline_seq` meta value (missing = 0).
fn read_seq(value: Option<Vec<u8>>) -> Result<u64, StoreError> {
    match value {
        Some(v) => codec::decode_meta_u64(&v).map_err(|e| corrupt(&META, META_OFFLINE_SEQ, e)),
        None => Ok(0),
    }
}

impl Store {
    /// The next offline sequence number: one past the last handed out (read from `meta`
    /// the first time).
    fn next_offline_seq(&self) -> Result<u64, StoreError> {
        let last = match self.offline_seq.get() {
            Some(last) => last,
            None => {
                let txn = self.db()?.begin_read()?;
                let meta = txn.open_table(META)?;
                read_seq(meta.get(META_OFFLINE_SEQ)?.map(|v| v.value().to_vec()))?
            }
        };
        let next = last.checked_add(1).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "table `meta`, key {}: the offline message sequence is exhausted",
                codec::key_context(META_OFFLINE_SEQ)
            ))
        })?;
        self.offline_seq.set(Some(next));
        Ok(next)
    }

    /// Stages `w` for the next commit, or applies it at once in [`CommitMode::Inline`].
    fn offline_write(&self, w: OfflineWrite) -> Result<(), StoreError> {
        if self.faulted() {
            return Err(self.closed_error());
        }
        if self.pubsub_mode() == CommitMode::Inline {
            let txn = self.begin_write()?;
            apply_offline_writes(&txn, std::slice::from_ref(&w))?;
            txn.commit()?;
            return Ok(());
        }
        self.offline_push(w)
    }

    /// [`crate::storage::Storage::offline_stage`].
    ///
    /// # Errors
    ///
    /// As there.
    pub fn offline_stage(
        &self,
        username: &str,
        stamp_ms: u64,
        stanza: &str,
    ) -> Result<u64, StoreError> {
        codec::check_username(username)?;
        // Checks the stanza's length before a sequence number is taken.
        codec::encode_offline(stamp_ms, stanza)?;
        let seq = self.next_offline_seq()?;
        let m = OfflineMessage {
            seq,
            stamp_ms,
            stanza: stanza.to_owned(),
        };
        self.offline_write(OfflineWrite::Put(username.to_owned(), m))?;
        Ok(seq)
    }

    /// [`crate::storage::Storage::offline_stage_delete`].
    ///
    /// # Errors
    ///
    /// As there.
    pub fn offline_stage_delete(&self, username: &str, seq: u64) -> Result<(), StoreError> {
        codec::check_username(username)?;
        self.offline_write(OfflineWrite::DeleteThrough(username.to_owned(), seq))
    }

    /// [`crate::storage::Storage::offline_get`].
    ///
    /// # Errors
    ///
    /// As there.
    pub fn offline_get(&self, username: &str) -> Result<Vec<OfflineMessage>, StoreError> {
        let mut out = BTreeMap::new();
        {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(OFFLINE)?;
            let (start, end) = codec::roster_range(username);
            for entry in table.range::<&[u8]>(start.as_slice()..end.as_slice())? {
                let (key, value) = entry?;
                let key = key.value();
                let (user, seq) =
                    codec::split_offline_key(key).map_err(|e| corrupt(&OFFLINE, key, e))?;
                if user != username {
                    return Err(StoreError::Db(format!(
                        "offline range of {username:?} returned a row of {user:?}"
                    )));
                }
                let (stamp_ms, stanza) =
                    codec::decode_offline(value.value()).map_err(|e| corrupt(&OFFLINE, key, e))?;
                out.insert(
                    seq,
                    OfflineMessage {
                        seq,
                        stamp_ms,
                        stanza,
                    },
                );
            }
        }
        // The staged changes, oldest first (a batch being committed may be on disk
        // already: the same sequence number is then the same message).
        for w in self.offline_staged(Some(username)) {
            match w {
                OfflineWrite::Put(_, m) => {
                    out.insert(m.seq, m);
                }
                OfflineWrite::DeleteThrough(_, seq) => out.retain(|s, _| *s > seq),
            }
        }
        Ok(out.into_values().collect())
    }

    /// [`crate::storage::Storage::offline_unsaved`].
    pub fn offline_unsaved(&self) -> Vec<(String, OfflineMessage)> {
        let mut out: Vec<(String, OfflineMessage)> = Vec::new();
        for w in self.offline_staged(None) {
            match w {
                OfflineWrite::Put(user, m) => out.push((user, m)),
                OfflineWrite::DeleteThrough(user, seq) => {
                    out.retain(|(u, m)| *u != user || m.seq > seq);
                }
            }
        }
        out
    }

    /// [`crate::storage::Storage::offline_usage`].
    ///
    /// # Errors
    ///
    /// As there.
    pub fn offline_usage(&self) -> Result<Vec<(String, OfflineUsage)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(OFFLINE)?;
        let mut out: Vec<(String, OfflineUsage)> = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let key = key.value();
            let (user, _) = codec::split_offline_key(key).map_err(|e| corrupt(&OFFLINE, key, e))?;
            let len =
                codec::offline_stanza_len(value.value()).map_err(|e| corrupt(&OFFLINE, key, e))?;
            // One user's rows are contiguous (the key starts with the username and 00).
            match out.last_mut() {
                Some((u, usage)) if u == user => {
                    usage.count += 1;
                    usage.bytes = usage.bytes.saturating_add(len);
                }
                _ => out.push((
                    user.to_owned(),
                    OfflineUsage {
                        count: 1,
                        bytes: len,
                    },
                )),
            }
        }
        Ok(out)
    }
}

/// Deletes every offline message of `username` inside `txn` (account deletion).
pub(super) fn delete_user(txn: &WriteTransaction, username: &str) -> Result<(), StoreError> {
    let (start, end) = codec::roster_range(username);
    txn.open_table(OFFLINE)?
        .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| false)?;
    Ok(())
}
