//! Group commit of pub-sub changes: the staging area between the engine and the file.
//!
//! In [`CommitMode::Inline`] (the default of a freshly opened [`Store`], used by the
//! command line and the engine's unit tests) [`Store::pubsub_stage`] commits at once, on
//! the calling thread. The daemon switches to [`CommitMode::Group`] or
//! [`CommitMode::Interval`]: staged changes are checked ([`super::pubsub`]'s layouts) and
//! appended to the *pending* batch; the committer task (`net::committer`) takes the
//! pending batch when no commit is in flight ([`Store::pubsub_take`]), writes it in one
//! redb transaction on a blocking thread ([`Batch::write`]) while new changes fill the
//! next batch, and reports the outcome ([`Store::pubsub_done`]).
//!
//! Until a batch is on disk its items are read from here ([`Store::pubsub_items`] looks
//! in the pending batch, then the one in flight, then the file), so readers always see
//! what the engine's memory says.
//!
//! Roster changes take the same path ([`Store::roster_stage`]): the router holds its
//! reply, roster pushes and presence until their batch is on disk, so a roster result
//! means durable too, and no roster write (no fsync) runs on the event loop. They are
//! written in the same transaction as the batch's pub-sub ops, and ask for a commit at
//! once even in [`CommitMode::Interval`] (they are rare, and a client is waiting).
//! XEP-0160 offline messages take it too ([`Store::offline_stage`], `offline.rs`): in
//! the same transaction, after the roster changes; in group mode they wake the committer
//! at once, in interval mode they ride the next interval's commit.
//!
//! Bounds: the pending batch holds at most `limits.commit_batch_ops` ops and about
//! `limits.commit_batch_bytes` bytes (one request's ops are always accepted into an empty
//! batch; [`Store::pubsub_set_batch_limits`], the defaults until it is called);
//! with one batch in flight and one pending, at most twice that is staged. A change that
//! does not fit is refused with [`StoreError::LimitReached`] (the client gets
//! `resource-constraint`, type `wait`).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use redb::{Database, WriteTransaction};

use super::offline::{OfflineWrite, apply_offline_writes};
use super::pubsub::{apply_ops, check_ops};
use super::{CommitMode, ItemRecord, PubsubOp, RosterWrite, Store, StoreError};

/// A `Send + Sync` handle on the database, for the blocking thread that commits.
#[derive(Clone)]
pub(crate) struct DbHandle {
    db: Arc<Database>,
}

impl DbHandle {
    /// A durable write transaction (see [`super::begin_write`]).
    pub(super) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        super::begin_write(&self.db)
    }
}

/// A batch of ops and an index of the items it writes.
#[derive(Default)]
struct Staged {
    ops: Vec<PubsubOp>,
    /// Roster changes, written after `ops` in the same transaction.
    roster: Vec<RosterWrite>,
    /// Offline-message changes, written after `roster` in the same transaction.
    offline: Vec<OfflineWrite>,
    bytes: usize,
    /// `(node, seq)` → index in `ops` of the last `PutItem` of that item.
    items: HashMap<(String, u64), usize>,
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.roster.is_empty() && self.offline.is_empty()
    }

    fn item(&self, node: &str, seq: u64) -> Option<&ItemRecord> {
        // The key is owned; building it for a lookup costs one small allocation.
        let i = *self.items.get(&(node.to_owned(), seq))?;
        match self.ops.get(i) {
            Some(PubsubOp::PutItem(_, _, rec)) => Some(rec),
            _ => None,
        }
    }
}

/// The staging state of a [`Store`].
pub(crate) struct Staging {
    mode: CommitMode,
    /// Generation of `pending`; batches are committed in generation order, from 1.
    generation: u64,
    pending: Staged,
    in_flight: Option<Arc<Staged>>,
    /// Replies wait for `generation`: commit it even if it holds no op.
    barrier: bool,
    /// Roster changes wait in `pending`: commit it now, whatever the mode.
    urgent: bool,
    /// Shutting down: the committer takes what is pending and stops.
    closing: bool,
    /// Ops staged since the store was opened ([`Store::pubsub_staged_ops`]).
    staged_ops: u64,
    waker: Option<Waker>,
    /// Most ops in one pending batch (`limits.commit_batch_ops`).
    max_ops: usize,
    /// Most bytes (encoded records plus 64 bytes per op) in one pending batch
    /// (`limits.commit_batch_bytes`).
    max_bytes: usize,
    /// Test hook: every batch write first sleeps this long.
    #[cfg(test)]
    delay: std::time::Duration,
}

impl Default for Staging {
    fn default() -> Self {
        Staging {
            mode: CommitMode::Inline,
            generation: 1,
            pending: Staged::default(),
            in_flight: None,
            barrier: false,
            urgent: false,
            closing: false,
            staged_ops: 0,
            waker: None,
            max_ops: crate::limits::Limits::default().commit_batch_ops,
            max_bytes: crate::limits::Limits::default().commit_batch_bytes,
            #[cfg(test)]
            delay: std::time::Duration::ZERO,
        }
    }
}

impl Staging {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
    fn full(&self) -> bool {
        let p = &self.pending;
        p.ops.len() + p.roster.len() + p.offline.len() >= self.max_ops || p.bytes >= self.max_bytes
    }
}

/// A batch taken for commit. [`Batch::write`] may run on any thread.
pub struct Batch {
    generation: u64,
    staged: Arc<Staged>,
    /// `None` while the database is closed (after a failed write): the write fails.
    db: Result<DbHandle, String>,
    #[cfg(test)]
    delay: std::time::Duration,
}

impl Batch {
    /// The batch's generation, to hand back to [`Store::pubsub_done`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of ops, pub-sub, roster and offline messages (0 for a batch taken only to
    /// release waiting replies).
    pub fn len(&self) -> usize {
        self.staged.ops.len() + self.staged.roster.len() + self.staged.offline.len()
    }

    /// Whether the batch holds no op.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Writes the batch in one durable transaction (blocks for the fsync).
    ///
    /// # Errors
    ///
    /// I/O and redb errors; then nothing of the batch is on disk.
    pub fn write(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        std::thread::sleep(self.delay);
        let db = self
            .db
            .as_ref()
            .map_err(|e| StoreError::Io(std::io::Error::other(e.clone())))?;
        if self.staged.roster.is_empty() && self.staged.offline.is_empty() {
            return db.pubsub_apply(&self.staged.ops);
        }
        let txn = db.begin_write()?;
        apply_ops(&txn, &self.staged.ops)?;
        for w in &self.staged.roster {
            super::apply_roster_write(&txn, w)?;
        }
        apply_offline_writes(&txn, &self.staged.offline)?;
        txn.commit()?;
        Ok(())
    }
}

impl Store {
    /// The database handle the commit thread writes through.
    pub(crate) fn db_handle(&self) -> Result<DbHandle, StoreError> {
        Ok(DbHandle { db: self.db()? })
    }

    /// Chooses when staged pub-sub changes are committed. Set once, before any change is
    /// staged (the daemon does it at start).
    pub fn pubsub_set_mode(&self, mode: CommitMode) {
        self.staging.borrow_mut().mode = mode;
    }

    /// Bounds the pending batch to `max_ops` ops and `max_bytes` bytes
    /// (`limits.commit_batch_ops`, `limits.commit_batch_bytes`). Set before any change is
    /// staged (the daemon does it at start).
    pub fn pubsub_set_batch_limits(&self, max_ops: usize, max_bytes: usize) {
        let mut st = self.staging.borrow_mut();
        st.max_ops = max_ops;
        st.max_bytes = max_bytes;
    }

    /// The current [`CommitMode`].
    pub fn pubsub_mode(&self) -> CommitMode {
        self.staging.borrow().mode
    }

    /// Stages a batch of pub-sub changes (one request's), or commits it at once in
    /// [`CommitMode::Inline`]. Staged changes are checked now, so a later commit fails
    /// only for I/O reasons.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a field that does not fit its layout;
    /// [`StoreError::LimitReached`] when the pending batch is full; in inline mode, I/O
    /// and redb errors.
    pub fn pubsub_stage(&self, ops: &[PubsubOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.pubsub_mode() == CommitMode::Inline {
            return self.pubsub_apply(ops);
        }
        let bytes = check_ops(ops)?;
        let mut st = self.staging.borrow_mut();
        let p = &st.pending;
        let max_ops = st.max_ops;
        let over = p.ops.len() + ops.len() > max_ops || p.bytes + bytes > st.max_bytes;
        if over && !p.ops.is_empty() {
            st.wake();
            return Err(StoreError::LimitReached {
                what: "pub-sub changes waiting for commit",
                max: max_ops,
            });
        }
        let st = &mut *st;
        for op in ops {
            if let PubsubOp::PutItem(node, seq, _) = op {
                st.pending
                    .items
                    .insert((node.clone(), *seq), st.pending.ops.len());
            }
            st.pending.ops.push(op.clone());
        }
        st.pending.bytes += bytes;
        st.staged_ops += ops.len() as u64;
        if st.mode == CommitMode::Group || st.full() {
            st.wake();
        }
        Ok(())
    }

    /// Stages roster changes (one request's) for the next commit, or writes them at once
    /// in [`CommitMode::Inline`]. They are checked now ([`StoreError::Invalid`],
    /// [`StoreError::LimitReached`] for a full roster), so the commit can fail only for
    /// I/O reasons. Returns the generation whose commit makes them durable (`None`: they
    /// are on disk already). The caller stages one request's roster changes at a time and
    /// the next only once they are committed, so the check against the rows on disk holds.
    ///
    /// # Errors
    ///
    /// As above; in inline mode, I/O and redb errors.
    pub fn roster_stage(&self, writes: &[RosterWrite]) -> Result<Option<u64>, StoreError> {
        if writes.is_empty() {
            return Ok(None);
        }
        let bytes = super::check_roster_writes(&*self.db()?, writes, self.max_roster_items())?;
        if self.pubsub_mode() == CommitMode::Inline {
            let txn = self.begin_write()?;
            let mut changed = false;
            for w in writes {
                changed |= super::apply_roster_write(&txn, w)?;
            }
            if changed {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            return Ok(None);
        }
        let mut st = self.staging.borrow_mut();
        st.pending.roster.extend_from_slice(writes);
        st.pending.bytes += bytes;
        st.urgent = true;
        st.wake();
        Ok(Some(st.generation))
    }

    /// Appends an offline-message change to the pending batch (checked by the caller);
    /// refused with [`StoreError::LimitReached`] when the batch is full, unless it is
    /// empty. Wakes the committer in [`CommitMode::Group`] (and when the batch is full).
    pub(super) fn offline_push(&self, w: OfflineWrite) -> Result<(), StoreError> {
        let bytes = w.charge();
        let mut st = self.staging.borrow_mut();
        let p = &st.pending;
        let max_ops = st.max_ops;
        let count = p.ops.len() + p.roster.len() + p.offline.len();
        if !p.is_empty() && (count + 1 > max_ops || p.bytes + bytes > st.max_bytes) {
            st.wake();
            return Err(StoreError::LimitReached {
                what: "changes waiting for commit",
                max: max_ops,
            });
        }
        st.pending.offline.push(w);
        st.pending.bytes += bytes;
        if st.mode == CommitMode::Group || st.full() {
            st.wake();
        }
        Ok(())
    }

    /// The staged offline-message changes (of `user`, or all), oldest first: the batch
    /// being committed, then the pending one (none in [`CommitMode::Inline`]).
    pub(super) fn offline_staged(&self, user: Option<&str>) -> Vec<OfflineWrite> {
        let st = self.staging.borrow();
        let flight = st.in_flight.as_ref().map(|f| f.offline.as_slice());
        flight
            .unwrap_or_default()
            .iter()
            .chain(&st.pending.offline)
            .filter(|w| user.is_none_or(|u| w.user() == u))
            .cloned()
            .collect()
    }

    /// How many pub-sub ops were staged since the store was opened: a request that did not
    /// change it wrote nothing, so after a failed commit it can be handled again.
    pub fn pubsub_staged_ops(&self) -> u64 {
        self.staging.borrow().staged_ops
    }

    /// In [`CommitMode::Group`], while changes are staged or being committed: the
    /// generation that replies produced now must wait for (and the committer will commit
    /// it even if it stays empty). `None` when replies may go out at once.
    pub fn pubsub_hold_generation(&self) -> Option<u64> {
        let mut st = self.staging.borrow_mut();
        if st.mode != CommitMode::Group || (st.pending.is_empty() && st.in_flight.is_none()) {
            return None;
        }
        if !st.barrier {
            st.barrier = true;
            st.wake();
        }
        Some(st.generation)
    }

    /// Ready when the committer has work and no commit is in flight: in group mode any
    /// staged change or waiting reply, in interval mode a full batch; in both, shutdown.
    pub fn pubsub_poll_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.staging.borrow_mut();
        let work = match st.mode {
            CommitMode::Group => !st.pending.is_empty() || st.barrier,
            CommitMode::Interval(_) => st.full() || st.urgent,
            CommitMode::Inline => false,
        };
        if st.in_flight.is_none() && (work || st.closing) {
            return Poll::Ready(());
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether [`Store::pubsub_close`] was called.
    pub fn pubsub_closing(&self) -> bool {
        self.staging.borrow().closing
    }

    /// Asks the committer to commit what is pending and stop (clean shutdown).
    pub fn pubsub_close(&self) {
        let mut st = self.staging.borrow_mut();
        st.closing = true;
        st.wake();
    }

    /// Takes the pending batch for commit: `None` if a commit is in flight or there is
    /// nothing to commit (no op, no waiting reply).
    pub fn pubsub_take(&self) -> Option<Batch> {
        let mut st = self.staging.borrow_mut();
        if st.in_flight.is_some() || (st.pending.is_empty() && !st.barrier) {
            return None;
        }
        let staged = Arc::new(std::mem::take(&mut st.pending));
        let generation = st.generation;
        st.generation += 1;
        st.barrier = false;
        st.urgent = false;
        st.in_flight = Some(staged.clone());
        Some(Batch {
            generation,
            staged,
            db: self.db_handle().map_err(|e| e.to_string()),
            #[cfg(test)]
            delay: st.delay,
        })
    }

    /// The commit of `generation` ended. On failure the pending batch is discarded too
    /// (it was built on the failed one): the caller reloads its state from the file, once
    /// the file is reopened (the committer marks the store [`Store::faulted`] and reopens
    /// it before it reports the failure).
    pub fn pubsub_done(&self, generation: u64, ok: bool) {
        let mut st = self.staging.borrow_mut();
        debug_assert_eq!(generation + 1, st.generation);
        st.in_flight = None;
        if !ok {
            st.pending = Staged::default();
            st.barrier = false;
            st.urgent = false;
        }
    }

    /// Commits whatever is pending now, on this thread (shutdown, after the committer
    /// stopped). Replies still waiting are not released: their connections are gone.
    ///
    /// # Errors
    ///
    /// I/O and redb errors: the pending changes are lost.
    pub fn pubsub_flush(&self) -> Result<usize, StoreError> {
        let Some(batch) = self.pubsub_take() else {
            return Ok(0);
        };
        let r = batch.write();
        self.pubsub_done(batch.generation, r.is_ok());
        r.map(|()| batch.len())
    }

    /// The newest staged (not yet committed) version of an item, if any.
    pub(super) fn staged_item(&self, node: &str, seq: u64) -> Option<ItemRecord> {
        let st = self.staging.borrow();
        if st.mode == CommitMode::Inline {
            return None;
        }
        st.pending
            .item(node, seq)
            .or_else(|| st.in_flight.as_ref().and_then(|f| f.item(node, seq)))
            .cloned()
    }

    /// Test hook: every batch write sleeps `d` first.
    #[cfg(test)]
    pub(crate) fn pubsub_test_delay(&self, d: std::time::Duration) {
        self.staging.borrow_mut().delay = d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NodeRecord;

    fn node(name: &str) -> PubsubOp {
        PubsubOp::PutNode(
            name.into(),
            NodeRecord {
                created_ms: 1,
                creator: "a@b".into(),
                config: Vec::new(),
            },
        )
    }

    fn item(node: &str, seq: u64, payload: &str) -> PubsubOp {
        PubsubOp::PutItem(
            node.into(),
            seq,
            ItemRecord {
                id: format!("i{seq}"),
                publisher: "a@b".into(),
                published_ms: 2,
                payload: payload.into(),
            },
        )
    }

    #[test]
    fn staged_items_are_read_before_commit_and_from_disk_after() {
        let dir = crate::test_support::TempDir::new("writer-overlay");
        let store = Store::open(&dir, 0).expect("open");
        store.pubsub_set_mode(CommitMode::Group);
        store
            .pubsub_stage(&[node("n"), item("n", 1, "<a xmlns='u'/>")])
            .expect("stage");
        assert!(store.pubsub_load().expect("load").nodes.is_empty());
        let got = store.pubsub_items("n", &[1]).expect("read");
        assert_eq!(
            got[0].as_ref().map(|i| i.payload.as_str()),
            Some("<a xmlns='u'/>")
        );
        let batch = store.pubsub_take().expect("batch");
        assert!(
            store.pubsub_take().is_none(),
            "one commit in flight at a time"
        );
        // Staged while the first batch is in flight: the newest version wins.
        store
            .pubsub_stage(&[item("n", 1, "<b xmlns='u'/>")])
            .expect("stage");
        let got = store.pubsub_items("n", &[1]).expect("read");
        assert_eq!(
            got[0].as_ref().map(|i| i.payload.as_str()),
            Some("<b xmlns='u'/>")
        );
        batch.write().expect("write");
        store.pubsub_done(batch.generation(), true);
        assert_eq!(store.pubsub_load().expect("load").nodes.len(), 1);
        assert_eq!(store.pubsub_flush().expect("flush"), 1);
        store.pubsub_set_mode(CommitMode::Inline);
        let got = store.pubsub_items("n", &[1]).expect("read");
        assert_eq!(
            got[0].as_ref().map(|i| i.payload.as_str()),
            Some("<b xmlns='u'/>")
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_ops_are_refused_at_stage_time_and_batches_are_bounded() {
        let dir = crate::test_support::TempDir::new("writer-bounds");
        let store = Store::open(&dir, 0).expect("open");
        store.pubsub_set_mode(CommitMode::Group);
        let bad = PubsubOp::PutNode(
            "x".repeat(4000),
            NodeRecord {
                created_ms: 1,
                creator: "a@b".into(),
                config: Vec::new(),
            },
        );
        assert!(matches!(
            store.pubsub_stage(&[bad]),
            Err(StoreError::Invalid(_))
        ));
        assert!(store.pubsub_take().is_none(), "nothing was staged");
        let max_ops = crate::limits::Limits::default().commit_batch_ops;
        let ops: Vec<PubsubOp> = (0..max_ops as u64).map(|s| item("n", s, "")).collect();
        store.pubsub_stage(&ops).expect("fills the batch");
        assert!(matches!(
            store.pubsub_stage(&[item("n", 0, "")]),
            Err(StoreError::LimitReached { .. })
        ));
        let batch = store.pubsub_take().expect("batch");
        assert_eq!(batch.len(), max_ops);
        store.pubsub_done(batch.generation(), false);
        assert!(
            store.pubsub_take().is_none(),
            "a failed commit drops the pending batch"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
