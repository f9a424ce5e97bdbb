//! Persistence: the broker's one redb database file, holding accounts and rosters (and,
//! later, the pub-sub tables).
//!
//! This module owns the file, its schema (`schema.rs`), the on-disk encodings (`codec.rs`)
//! and [`StoreError`]. It knows nothing of XML, sessions or the network; callers pass
//! already-normalised usernames (JID localparts) and bare JIDs. Every write is a redb
//! transaction committed with `Durability::Immediate`: a reply to the client means the
//! change is on disk. Account changes (the command line) commit at once. In the daemon,
//! pub-sub and roster changes are staged and committed in groups on a blocking thread
//! (`writer.rs`, [`CommitMode`], [`Store::roster_stage`]), so no fsync runs on the event
//! loop; that is why the `redb::Database` is in an `Arc` (redb's
//! `Database` is `Sync`); everything else runs on the one event-loop thread. redb's file
//! lock keeps a second process (e.g. `kinglet user add` while the broker runs) out: it gets
//! [`StoreError::Locked`].
//!
//! The file layout, tables, encodings, migration policy and durability are documented in
//! `docs/storage.md`.

mod codec;
mod offline;
mod pubsub;
mod redb_error;
mod schema;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod writer;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableHandle, WriteTransaction};

pub use crate::storage::{
    CommitMode, DEPTH_ALL, ItemRecord, MAX_GROUP_BYTES, MAX_OFFLINE_STANZA_BYTES,
    MAX_ROSTER_GROUPS, MAX_ROSTER_ITEMS, MAX_ROSTER_NAME_BYTES, NodeRecord, OfflineMessage,
    OfflineUsage, PubsubOp, PubsubSnapshot, RosterItem, RosterWrite, Storage, StoreError,
    Subscription, SubscriptionRecord,
};
pub use schema::SCHEMA_VERSION;
use schema::{ACCOUNTS, META, META_ROSTER_SEQ, ROSTER_VERSIONS, ROSTERS};
pub use writer::Batch;

/// The database's file name inside the data directory.
pub const DB_FILE_NAME: &str = "kinglet.redb";

/// Longest username (JID localpart) accepted, in bytes (RFC 7622 §3.3.1).
pub const MAX_USERNAME_BYTES: usize = 1023;
/// Longest contact bare JID in a roster, in bytes: localpart, `@`, domainpart
/// (1023 + 1 + 1023, RFC 7622 §3.2 and §3.3).
pub const MAX_JID_BYTES: usize = 2047;
/// Largest credentials blob, in bytes. SCRAM-SHA-1 and SCRAM-SHA-256 data together need
/// about 200; the rest is headroom for future mechanisms.
pub const MAX_CREDENTIALS_BYTES: usize = 4096;
/// The broker's database: one redb file in the data directory, locked for this process
/// while the value lives.
pub struct Store {
    /// The open database. Invariant: the schema is [`SCHEMA_VERSION`] (checked or migrated
    /// by [`Store::open`]), so every table of `schema` exists. Shared (`Arc`) with the
    /// blocking thread that commits pub-sub batches ([`Batch::write`]). `None` while it is
    /// closed for reopening after a failed write ([`Store::reopen_begin`]) and when that
    /// reopening failed: every operation then fails with [`Store::closed_error`].
    db: RefCell<Option<Arc<Database>>>,
    /// The database file, for messages and for reopening.
    path: PathBuf,
    /// How the file is opened (cache size, test backend); `None` for a store in memory,
    /// which cannot be reopened.
    opener: Option<Opener>,
    /// A write failed: redb refuses all further I/O on this `Database` (even reads of
    /// pages not in its cache) until the file is opened again ([`Store::reopen`]).
    faulted: Cell<bool>,
    /// The last reopening failed because the disk is full (the error while closed).
    closed_full: Cell<bool>,
    /// Pub-sub changes staged for the next group commit, and the one being committed.
    staging: RefCell<writer::Staging>,
    /// Most rows a roster may grow to ([`Store::set_max_roster_items`]).
    max_roster_items: Cell<usize>,
    /// The last offline message sequence number handed out (`None` until the first is
    /// read from `meta`, see `offline.rs`).
    offline_seq: Cell<Option<u64>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A `Corrupt` error naming the table, the key and what is wrong.
fn corrupt(table: &impl TableHandle, key: &[u8], e: codec::DecodeError) -> StoreError {
    StoreError::Corrupt(format!(
        "table `{}`, key {}: {}",
        table.name(),
        codec::key_context(key),
        e.0
    ))
}

/// Opens a `Database` on the file (redb's builder with the store's settings); called again
/// to reopen the file after a failed write, possibly on another thread.
type FileOpener = Arc<dyn Fn(std::fs::File) -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// Opens the store's database (the file at its path through a [`FileOpener`]; a test
/// backend in the model test), checked and migrated; called again to reopen it.
type Opener = Arc<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// Length of redb 2's file header (magic number, layout, two commit slots), in bytes.
const REDB_HEADER_BYTES: usize = 320;
/// redb's magic number, the first bytes of every database file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// redb's page size (kinglet keeps redb's default).
const REDB_PAGE_SIZE: u64 = 4096;

/// Checks that a redb file is as long as its header says, before redb opens it: redb 2.6
/// asserts this (a panic, so an abort in release builds) rather than returning an error,
/// so a truncated file (a failed copy or restore, a full disk while copying it) would
/// abort the daemon without a word. An empty file is a new database.
fn check_file_length(file: &std::fs::File, path: &Path) -> Result<(), StoreError> {
    use std::io::{Read, Seek};
    let len = file.metadata().map_err(|e| io_at(path, e))?.len();
    if len == 0 {
        return Ok(());
    }
    let truncated = |what: String| {
        StoreError::Corrupt(format!(
            "{} is truncated ({what}): it was probably cut short while being copied or \
             restored",
            path.display()
        ))
    };
    let mut head = Vec::with_capacity(REDB_HEADER_BYTES);
    let mut reader = file;
    reader
        .take(REDB_HEADER_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| io_at(path, e))?;
    reader
        .seek(std::io::SeekFrom::Start(0))
        .map_err(|e| io_at(path, e))?;
    if !head.starts_with(&REDB_MAGIC) {
        return Err(StoreError::Corrupt(format!(
            "{} is not a redb database file",
            path.display()
        )));
    }
    if head.len() < REDB_HEADER_BYTES {
        return Err(truncated(format!(
            "{len} bytes, shorter than the {REDB_HEADER_BYTES}-byte header"
        )));
    }
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&head[at..at + 4]);
        u64::from(u32::from_le_bytes(b))
    };
    let damaged = |what: &str| {
        StoreError::Corrupt(format!(
            "{}: the file header is damaged ({what})",
            path.display()
        ))
    };
    // redb's header: magic (9), god byte, 2 padding, then u32 LE page size, region header
    // pages, region data pages, full regions, data pages of the trailing region.
    let (page, region_header, region_data, full, trailing) =
        (u32_at(12), u32_at(16), u32_at(20), u32_at(24), u32_at(28));
    if page != REDB_PAGE_SIZE {
        return Err(damaged(&format!("page size {page}")));
    }
    if full == 0 && trailing == 0 {
        return Err(damaged("no regions"));
    }
    // The layout's length: one header page, the full regions, the trailing region.
    let expected = (region_header + region_data)
        .checked_mul(page)
        .and_then(|r| r.checked_mul(full))
        .and_then(|f| {
            let t = if trailing > 0 {
                (region_header + trailing).checked_mul(page)?
            } else {
                0
            };
            f.checked_add(t)?.checked_add(page)
        })
        .ok_or_else(|| damaged("impossible layout"))?;
    if len < expected {
        return Err(truncated(format!(
            "{len} bytes, but its header describes {expected}"
        )));
    }
    Ok(())
}

/// Opens the file `path` (creating it, mode 0600, if missing), checks its length and
/// schema (migrating an older one) and returns the database.
fn open_db(path: &Path, opener: &FileOpener) -> Result<Database, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| io_at(path, e))?;
    check_file_length(&file, path)?;
    let db = opener(file).map_err(|e| redb_error::from_open_error(e, path.to_path_buf()))?;
    schema::check_and_migrate(&db)?;
    Ok(db)
}

/// Reopening the database file after a failed write, taken by [`Store::reopen_begin`]:
/// [`Reopen::run`] opens the file (redb repairs it from its last durable commit: a read of
/// the whole file and two fsyncs), so it runs on a blocking thread.
pub struct Reopen {
    opener: Opener,
}

/// The outcome of [`Reopen::run`], for [`Store::reopen_end`].
pub struct Reopened(Result<Database, StoreError>);

impl Reopen {
    /// Opens the file again (blocking).
    pub fn run(self) -> Reopened {
        Reopened((self.opener)())
    }
}

/// Adds the path to an I/O error from opening, keeping its kind (so ENOSPC is still `Full`).
fn io_at(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::from(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

impl Store {
    /// Opens the database `data_dir/kinglet.redb`, creating the directory (mode 0700 on
    /// unix; an existing directory keeps its mode) and the file (mode 0600) if missing.
    /// `cache_bytes` is redb's page cache (9/10 read, 1/10 write), replacing redb's 1 GiB
    /// default. The schema is checked, and an older file is migrated in one durable
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] if another process (or another `Store` in this process)
    /// has the file open; [`StoreError::SchemaTooNew`] for a file from a newer kinglet;
    /// [`StoreError::Corrupt`] for a file that is not a redb database or holds foreign
    /// tables under our names; [`StoreError::Io`] / [`StoreError::Full`] from the file
    /// system.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        // `create_file` takes redb's exclusive, non-blocking lock (flock on unix) and
        // initialises an empty file; an existing database is opened as it is.
        Store::open_with(data_dir, move |file| {
            Database::builder()
                .set_cache_size(cache_bytes)
                .create_file(file)
        })
    }

    /// Opens the database like [`Store::open`], through a test backend whose writes and
    /// syncs fail with ENOSPC ([`StoreError::Full`]) while `fail` is set: a disk that
    /// fills up under the running broker.
    #[cfg(test)]
    pub(crate) fn open_with_faults(
        data_dir: &Path,
        fail: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Store, StoreError> {
        Store::open_with(data_dir, move |file| {
            let inner = redb::backends::FileBackend::new(file)?;
            Database::builder().create_with_backend(tests::FaultyBackend {
                inner,
                fail: fail.clone(),
            })
        })
    }

    /// A store in memory, for the fuzz targets in `fuzz/`: a fresh one per iteration costs
    /// well under a millisecond, a file-backed one several. Not for the daemon: nothing is
    /// persisted.
    ///
    /// # Errors
    ///
    /// As [`Store::open`], minus the file system.
    #[doc(hidden)]
    #[allow(unexpected_cfgs)]
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let mut builder = Database::builder();
        builder.set_cache_size(0);
        // redb's default 16 MiB region has allocator bitmaps that dominate the cost of a
        // small database; redb lets fuzz builds (`--cfg fuzzing`, set by cargo-fuzz for
        // every crate) choose a smaller one.
        #[cfg(fuzzing)]
        builder.set_region_size(1 << 16);
        let db = builder
            .create_with_backend(MemoryBackend::default())
            .map_err(|e| redb_error::from_open_error(e, path.clone()))?;
        schema::check_and_migrate(&db)?;
        Ok(Store::from_db(db, path, None))
    }

    fn open_with(
        data_dir: &Path,
        create: impl Fn(std::fs::File) -> Result<Database, redb::DatabaseError> + Send + Sync + 'static,
    ) -> Result<Store, StoreError> {
        let mut dir = DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(data_dir).map_err(|e| io_at(data_dir, e))?;

        let path = data_dir.join(DB_FILE_NAME);
        let create: FileOpener = Arc::new(create);
        let db = open_db(&path, &create)?;
        let at = path.clone();
        let opener: Opener = Arc::new(move || open_db(&at, &create));
        Ok(Store::from_db(db, path, Some(opener)))
    }

    fn from_db(db: Database, path: PathBuf, opener: Option<Opener>) -> Store {
        Store {
            db: RefCell::new(Some(Arc::new(db))),
            path,
            opener,
            faulted: Cell::new(false),
            closed_full: Cell::new(false),
            staging: RefCell::new(writer::Staging::default()),
            max_roster_items: Cell::new(MAX_ROSTER_ITEMS),
            offline_seq: Cell::new(None),
        }
    }

    /// The open database, or the error every operation gets while it is closed.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.borrow().clone().ok_or_else(|| self.closed_error())
    }

    /// The error of an operation while the database is closed after a failed write:
    /// [`StoreError::Full`] if reopening failed for lack of space, else an I/O error.
    pub fn closed_error(&self) -> StoreError {
        if self.closed_full.get() {
            StoreError::Full
        } else {
            StoreError::Io(std::io::Error::other(
                "the database is closed after a failed write; kinglet reopens it by itself \
                 once the disk works again",
            ))
        }
    }

    /// Whether a write failed and the database has not been reopened since: redb refuses
    /// all further I/O on it, so the next step is [`Store::reopen`] (the committer does
    /// it, see `net::committer`).
    pub fn faulted(&self) -> bool {
        self.faulted.get()
    }

    /// Records that a write failed (a group commit, see [`Store::pubsub_done`]).
    pub(crate) fn set_faulted(&self) {
        self.faulted.set(true);
    }

    /// Closes the database for reopening after a failed write, so that [`Reopen::run`]
    /// can open the file again (redb locks it: the old handle must be gone first). Until
    /// [`Store::reopen_end`] every operation fails.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`] if the store is in memory (nothing to reopen), or a commit is
    /// in flight (its batch still uses the database); retry once it ended.
    pub fn reopen_begin(&self) -> Result<Reopen, StoreError> {
        let Some(opener) = self.opener.clone() else {
            return Err(StoreError::Db(
                "a store in memory cannot be reopened".into(),
            ));
        };
        let mut slot = self.db.borrow_mut();
        if slot.as_ref().is_some_and(|db| Arc::strong_count(db) > 1) {
            return Err(StoreError::Db(
                "the database cannot be reopened while a commit uses it".into(),
            ));
        }
        // Dropping the last handle closes the file and releases redb's lock on it.
        *slot = None;
        Ok(Reopen { opener })
    }

    /// Installs the database [`Reopen::run`] opened: the store works again (and is no
    /// longer [`Store::faulted`]).
    ///
    /// # Errors
    ///
    /// Why the file could not be opened (then the store stays closed; reopen again
    /// later): [`StoreError::Full`] if the disk is still too full even for redb's repair,
    /// as [`Store::open`] otherwise.
    pub fn reopen_end(&self, reopened: Reopened) -> Result<(), StoreError> {
        match reopened.0 {
            Ok(db) => {
                *self.db.borrow_mut() = Some(Arc::new(db));
                self.faulted.set(false);
                self.closed_full.set(false);
                Ok(())
            }
            Err(e) => {
                self.closed_full.set(matches!(e, StoreError::Full));
                Err(e)
            }
        }
    }

    /// [`Store::reopen_begin`], [`Reopen::run`] and [`Store::reopen_end`] on this thread
    /// (tests, and callers without an event loop).
    ///
    /// # Errors
    ///
    /// As those.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let job = self.reopen_begin()?;
        self.reopen_end(job.run())
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction that commits durably: when `commit` returns, the data is
    /// on disk (fsync).
    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        begin_write(&*self.db()?)
    }

    /// Adds an account with its opaque credentials blob.
    ///
    /// # Errors
    ///
    /// [`StoreError::AlreadyExists`] if the user exists; [`StoreError::Invalid`] for an
    /// empty, too long or NUL-containing username or oversized credentials.
    pub fn user_add(&self, username: &str, credentials: &[u8]) -> Result<(), StoreError> {
        self.put_account(username, credentials, false)
    }

    /// Replaces the credentials of an existing account.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if the user does not exist; [`StoreError::Invalid`] as for
    /// [`Store::user_add`].
    pub fn user_set_credentials(
        &self,
        username: &str,
        credentials: &[u8],
    ) -> Result<(), StoreError> {
        self.put_account(username, credentials, true)
    }

    /// Writes the account `username` with `credentials` if it exists exactly when
    /// `existing` says so; else nothing changes: [`StoreError::NotFound`] (an update of a
    /// missing account) or [`StoreError::AlreadyExists`] (an add of an existing one).
    fn put_account(
        &self,
        username: &str,
        credentials: &[u8],
        existing: bool,
    ) -> Result<(), StoreError> {
        codec::check_username(username)?;
        let value = codec::encode_account(credentials)?;
        let txn = self.begin_write()?;
        let existed = txn
            .open_table(ACCOUNTS)?
            .insert(username.as_bytes(), value.as_slice())?
            .is_some();
        if existed != existing {
            txn.abort()?;
            return Err(if existing {
                StoreError::NotFound
            } else {
                StoreError::AlreadyExists
            });
        }
        txn.commit()?;
        Ok(())
    }

    /// The credentials of `username`, or `None` if there is no such account.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the stored value cannot be decoded.
    pub fn user_get(&self, username: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(ACCOUNTS)?;
        let Some(value) = table.get(username.as_bytes())? else {
            return Ok(None);
        };
        codec::decode_account(value.value())
            .map(Some)
            .map_err(|e| corrupt(&ACCOUNTS, username.as_bytes(), e))
    }

    /// True if the account exists (its value is not decoded).
    pub fn user_exists(&self, username: &str) -> Result<bool, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(ACCOUNTS)?;
        Ok(table.get(username.as_bytes())?.is_some())
    }

    /// Deletes an account, its roster, its roster version, its offline messages (XEP-0160)
    /// and its PEP (XEP-0163) nodes with their items, subscriptions and affiliations (the
    /// pub-sub rows keyed `01 username@… 01 node`) in one transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if the user does not exist.
    pub fn user_del(&self, username: &str) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        let existed = txn
            .open_table(ACCOUNTS)?
            .remove(username.as_bytes())?
            .is_some();
        if !existed {
            txn.abort()?;
            return Err(StoreError::NotFound);
        }
        let (start, end) = codec::roster_range(username);
        txn.open_table(ROSTERS)?
            .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| false)?;
        txn.open_table(ROSTER_VERSIONS)?
            .remove(username.as_bytes())?;
        offline::delete_user(&txn, username)?;
        // `01 username @` up to (excluding) `01 username A`: '@' ends the localpart.
        let start = format!("\u{1}{username}@").into_bytes();
        let end = format!("\u{1}{username}A").into_bytes();
        for table in [
            schema::PUBSUB_NODES,
            schema::PUBSUB_ITEMS,
            schema::PUBSUB_SUBSCRIPTIONS,
            schema::PUBSUB_AFFILIATIONS,
        ] {
            txn.open_table(table)?
                .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// All usernames, sorted (by bytes, which for UTF-8 is code point order). Accounts are
    /// created only by the operator (`kinglet user add`), so the list is as long as the
    /// operator made it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if a stored username is not UTF-8.
    pub fn user_list(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(ACCOUNTS)?;
        let mut users = Vec::new();
        for entry in table.iter()? {
            let (key, _) = entry?;
            let name = codec::decode_username(key.value())
                .map_err(|e| corrupt(&ACCOUNTS, key.value(), e))?;
            users.push(name.to_owned());
        }
        Ok(users)
    }

    /// The roster of `username`, sorted by contact JID (bytewise). Empty for a user
    /// without a roster (or without an account).
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if a row cannot be decoded or there are more than
    /// [`MAX_ROSTER_ITEMS`] rows.
    pub fn roster_get(&self, username: &str) -> Result<Vec<RosterItem>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(ROSTERS)?;
        let (start, end) = codec::roster_range(username);
        let mut items = Vec::new();
        for entry in table.range::<&[u8]>(start.as_slice()..end.as_slice())? {
            let (key, value) = entry?;
            let key = key.value();
            if items.len() == MAX_ROSTER_ITEMS {
                return Err(corrupt(
                    &ROSTERS,
                    key,
                    codec::DecodeError("roster has more rows than MAX_ROSTER_ITEMS"),
                ));
            }
            let (owner, jid) =
                codec::split_roster_key(key).map_err(|e| corrupt(&ROSTERS, key, e))?;
            if owner != username {
                // The range holds exactly `username 00 ...`; anything else is a bug.
                return Err(StoreError::Db(format!(
                    "roster range of {username:?} returned a row of {owner:?}"
                )));
            }
            let item = codec::decode_roster_item(jid, value.value())
                .map_err(|e| corrupt(&ROSTERS, key, e))?;
            items.push(item);
        }
        Ok(items)
    }

    /// Inserts `item` into the roster of `username`, or replaces the item with the same
    /// JID, and bumps the roster version. Writing an identical item changes nothing (and
    /// keeps the version). The user need not have an account: clients authenticated by
    /// certificate (SASL EXTERNAL) may have none.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if a field is empty or too long;
    /// [`StoreError::LimitReached`] when adding a new item to a roster that has
    /// [`Store::max_roster_items`] items.
    pub fn roster_put(&self, username: &str, item: &RosterItem) -> Result<(), StoreError> {
        let w = [RosterWrite::Put(username.to_owned(), item.clone())];
        check_roster_writes(&*self.db()?, &w, self.max_roster_items())?;
        let txn = self.begin_write()?;
        if apply_roster_write(&txn, &w[0])? {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(())
    }

    /// Removes the item `jid` from the roster of `username`. Returns whether it existed;
    /// only a removal bumps the roster version.
    pub fn roster_remove(&self, username: &str, jid: &str) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let w = RosterWrite::Remove(username.to_owned(), jid.to_owned());
        if !apply_roster_write(&txn, &w)? {
            txn.abort()?;
            return Ok(false);
        }
        txn.commit()?;
        Ok(true)
    }

    /// Most rows one roster may grow to: `limits.max_roster_items` once the router set it,
    /// [`MAX_ROSTER_ITEMS`] until then.
    pub fn max_roster_items(&self) -> usize {
        self.max_roster_items.get()
    }

    /// Sets the bound on new roster rows (the broker passes `limits.max_roster_items`),
    /// clamped to 1..=[`MAX_ROSTER_ITEMS`]. Existing rows over it stay readable; only
    /// adding an item to a roster at or over it is refused ([`StoreError::LimitReached`]).
    pub fn set_max_roster_items(&self, max: usize) {
        self.max_roster_items.set(max.clamp(1, MAX_ROSTER_ITEMS));
    }

    /// The roster version of `username` (for XEP-0237 `ver`): 0 until the first change,
    /// then strictly greater after every change. Versions come from one store-wide counter,
    /// so they grow by 1 or more, and a user deleted and created again never sees a
    /// version a client may have cached from the old account.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the stored value cannot be decoded.
    pub fn roster_version(&self, username: &str) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(ROSTER_VERSIONS)?;
        let Some(value) = table.get(username.as_bytes())? else {
            return Ok(0);
        };
        codec::decode_roster_version(value.value())
            .map_err(|e| corrupt(&ROSTER_VERSIONS, username.as_bytes(), e))
    }
}

/// Starts a durable write transaction on `db` (see [`Store::begin_write`]). redb runs one
/// write transaction at a time: this waits while another (a pub-sub group commit on its
/// blocking thread) is committing.
pub(crate) fn begin_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    // Never panics: redb asserts only when persistent savepoints exist, and the store
    // creates none.
    txn.set_durability(Durability::Immediate);
    Ok(txn)
}

/// Checks roster writes before they are staged or applied, so that the commit can fail
/// only for I/O reasons: field sizes ([`StoreError::Invalid`]) and, for new items, the
/// `max_items` bound against the rows on disk ([`StoreError::LimitReached`]).
/// Returns the size estimate of the writes in bytes.
pub(crate) fn check_roster_writes(
    db: &Database,
    writes: &[RosterWrite],
    max_items: usize,
) -> Result<usize, StoreError> {
    let mut bytes = 0;
    let mut added: Vec<(&str, &str)> = Vec::new();
    let txn = db.begin_read()?;
    let rosters = txn.open_table(ROSTERS)?;
    for w in writes {
        bytes += 64 + w.user().len() + w.jid().len();
        let RosterWrite::Put(user, item) = w else {
            continue;
        };
        codec::check_username(user)?;
        bytes += codec::encode_roster_item(item)?.len();
        let key = codec::roster_key(user, &item.jid);
        if rosters.get(key.as_slice())?.is_some() || added.contains(&(user, &item.jid)) {
            continue;
        }
        let (start, end) = codec::roster_range(user);
        let mut count = added.iter().filter(|(u, _)| u == user).count();
        for entry in rosters.range::<&[u8]>(start.as_slice()..end.as_slice())? {
            entry?;
            count += 1;
        }
        if count >= max_items {
            return Err(StoreError::LimitReached {
                what: "roster items",
                max: max_items,
            });
        }
        added.push((user, &item.jid));
    }
    Ok(bytes)
}

/// Applies one roster write inside `txn` and bumps the user's roster version if it
/// changed anything. Returns whether it did: writing an identical item or removing an
/// absent one changes nothing (and keeps the version).
pub(crate) fn apply_roster_write(
    txn: &WriteTransaction,
    w: &RosterWrite,
) -> Result<bool, StoreError> {
    let changed = match w {
        RosterWrite::Put(user, item) => {
            codec::check_username(user)?;
            let value = codec::encode_roster_item(item)?;
            let key = codec::roster_key(user, &item.jid);
            let mut rosters = txn.open_table(ROSTERS)?;
            let same = rosters
                .get(key.as_slice())?
                .is_some_and(|v| v.value() == value.as_slice());
            if !same {
                rosters.insert(key.as_slice(), value.as_slice())?;
            }
            !same
        }
        RosterWrite::Remove(user, jid) => {
            let key = codec::roster_key(user, jid);
            txn.open_table(ROSTERS)?.remove(key.as_slice())?.is_some()
        }
    };
    if changed {
        bump_roster_version(txn, w.user())?;
    }
    Ok(changed)
}

/// Takes the next value of the store-wide roster sequence and makes it the roster version
/// of `username`, inside `txn`.
fn bump_roster_version(txn: &WriteTransaction, username: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let current = match meta.get(META_ROSTER_SEQ)? {
        Some(value) => {
            codec::decode_meta_u64(value.value()).map_err(|e| corrupt(&META, META_ROSTER_SEQ, e))?
        }
        None => 0,
    };
    let next = current.checked_add(1).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "table `{}`, key {}: the roster sequence is exhausted",
            META.name(),
            codec::key_context(META_ROSTER_SEQ)
        ))
    })?;
    meta.insert(META_ROSTER_SEQ, &codec::encode_meta_u64(next)[..])?;
    txn.open_table(ROSTER_VERSIONS)?.insert(
        username.as_bytes(),
        codec::encode_roster_version(next).as_slice(),
    )?;
    Ok(next)
}

/// redb storage in a `Vec` for [`Store::open_in_memory`]. Unlike `redb::backends::
/// InMemoryBackend`, which grows by pushing one byte at a time (seconds per database
/// under fuzzer instrumentation), it grows by one zeroed allocation and a copy.
#[derive(Debug, Default)]
struct MemoryBackend(std::sync::RwLock<Vec<u8>>);

fn poisoned() -> std::io::Error {
    std::io::Error::other("memory store lock poisoned")
}

impl MemoryBackend {
    fn range(offset: u64, len: usize, have: usize) -> std::io::Result<std::ops::Range<usize>> {
        usize::try_from(offset)
            .ok()
            .and_then(|o| Some(o..o.checked_add(len)?))
            .filter(|r| r.end <= have)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "out of range"))
    }
}

impl redb::StorageBackend for MemoryBackend {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.read().map_err(|_| poisoned())?.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let v = self.0.read().map_err(|_| poisoned())?;
        Ok(v[Self::range(offset, len, v.len())?].to_vec())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut v = self.0.write().map_err(|_| poisoned())?;
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        if len > v.len() {
            let mut grown = vec![0u8; len];
            grown[..v.len()].copy_from_slice(&v);
            *v = grown;
        } else {
            v.truncate(len);
        }
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut v = self.0.write().map_err(|_| poisoned())?;
        let r = Self::range(offset, data.len(), v.len())?;
        v[r].copy_from_slice(data);
        Ok(())
    }
}

/// The core's view of the store: each method is the inherent one of the same name.
impl Storage for Store {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn user_exists(&self, username: &str) -> Result<bool, StoreError> {
        Store::user_exists(self, username)
    }

    fn user_get(&self, username: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Store::user_get(self, username)
    }

    fn roster_get(&self, username: &str) -> Result<Vec<RosterItem>, StoreError> {
        Store::roster_get(self, username)
    }

    fn roster_stage(&self, writes: &[RosterWrite]) -> Result<Option<u64>, StoreError> {
        Store::roster_stage(self, writes)
    }

    fn set_max_roster_items(&self, max: usize) {
        Store::set_max_roster_items(self, max)
    }

    fn pubsub_load(&self) -> Result<PubsubSnapshot, StoreError> {
        Store::pubsub_load(self)
    }

    fn pubsub_apply(&self, ops: &[PubsubOp]) -> Result<(), StoreError> {
        Store::pubsub_apply(self, ops)
    }

    fn pubsub_items(
        &self,
        node: &str,
        seqs: &[u64],
    ) -> Result<Vec<Option<ItemRecord>>, StoreError> {
        Store::pubsub_items(self, node, seqs)
    }

    fn pubsub_stage(&self, ops: &[PubsubOp]) -> Result<(), StoreError> {
        Store::pubsub_stage(self, ops)
    }

    fn pubsub_mode(&self) -> CommitMode {
        Store::pubsub_mode(self)
    }

    fn pubsub_staged_ops(&self) -> u64 {
        Store::pubsub_staged_ops(self)
    }

    fn pubsub_hold_generation(&self) -> Option<u64> {
        Store::pubsub_hold_generation(self)
    }

    fn pubsub_done(&self, generation: u64, ok: bool) {
        Store::pubsub_done(self, generation, ok)
    }

    fn faulted(&self) -> bool {
        Store::faulted(self)
    }

    fn set_faulted(&self) {
        Store::set_faulted(self)
    }

    fn closed_error(&self) -> StoreError {
        Store::closed_error(self)
    }

    fn offline_usage(&self) -> Result<Vec<(String, OfflineUsage)>, StoreError> {
        Store::offline_usage(self)
    }

    fn offline_get(&self, username: &str) -> Result<Vec<OfflineMessage>, StoreError> {
        Store::offline_get(self, username)
    }

    fn offline_stage(
        &self,
        username: &str,
        stamp_ms: u64,
        stanza: &str,
    ) -> Result<u64, StoreError> {
        Store::offline_stage(self, username, stamp_ms, stanza)
    }

    fn offline_stage_delete(&self, username: &str, seq: u64) -> Result<(), StoreError> {
        Store::offline_stage_delete(self, username, seq)
    }

    fn offline_unsaved(&self) -> Vec<(String, OfflineMessage)> {
        Store::offline_unsaved(self)
    }
}
