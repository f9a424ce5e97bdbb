//! Persistence: the broker's one redb database file, holding accounts and rosters (and,
//! later, the pub-sub tables).
//!
//! This module owns the file, its schema (`schema.rs`), the on-disk encodings (`codec.rs`)
//! and [`StoreError`]. It knows nothing of XML, sessions or the network; callers pass
//! already-normalised usernames (JID localparts) and bare JIDs. Every write is one small
//! redb transaction committed with `Durability::Immediate`: account and roster changes are
//! rare, and a reply to the client means the change is on disk. Pub-sub changes are
//! frequent: in the daemon they are staged and committed in groups on a blocking thread
//! (`writer.rs`, [`CommitMode`]), which is why the `redb::Database` is in an `Arc` (redb's
//! `Database` is `Sync`); everything else runs on the one event-loop thread. redb's file
//! lock keeps a second process (e.g. `kinglet user add` while the broker runs) out: it gets
//! [`StoreError::Locked`].
//!
//! The file layout, tables, encodings, migration policy and durability are documented in
//! `docs/storage.md`.

mod codec;
mod error;
mod pubsub;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::cell::RefCell;
use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableHandle, WriteTransaction};

pub use error::StoreError;
pub use pubsub::{DEPTH_ALL, ItemRecord, NodeRecord, PubsubOp, PubsubSnapshot, SubscriptionRecord};
pub use schema::SCHEMA_VERSION;
use schema::{ACCOUNTS, META, META_ROSTER_SEQ, ROSTER_VERSIONS, ROSTERS};
pub use writer::{Batch, CommitMode, MAX_BATCH_BYTES, MAX_BATCH_OPS};

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
/// Longest roster item name (handle), in bytes.
pub const MAX_ROSTER_NAME_BYTES: usize = 255;
/// Most groups one roster item may be in.
pub const MAX_ROSTER_GROUPS: usize = 16;
/// Longest roster group name, in bytes.
pub const MAX_GROUP_BYTES: usize = 255;
/// Most items in one user's roster. A full item is at most about 6.4 KiB in memory (JID
/// 2047 + name 255 + 16 groups × 255 bytes plus `String` headers), so the largest roster
/// [`Store::roster_get`] can return is about 3.2 MiB; real rosters of this broker's
/// devices hold a handful of items. Lowering this bound needs a migration, because
/// reading a roster with more rows reports corruption.
pub const MAX_ROSTER_ITEMS: usize = 512;

/// A subscription state of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// Neither side receives the other's presence.
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Subscription {
    /// The value of the `subscription` attribute.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::To => "to",
            Self::From => "from",
            Self::Both => "both",
        }
    }

    /// Parses the `subscription` attribute; `None` for anything else (including
    /// `"remove"`, which is a request, not a state).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "to" => Some(Self::To),
            "from" => Some(Self::From),
            "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// True if the user receives the contact's presence (`to` or `both`).
    pub fn has_to(&self) -> bool {
        matches!(self, Self::To | Self::Both)
    }

    /// True if the contact receives the user's presence (`from` or `both`).
    pub fn has_from(&self) -> bool {
        matches!(self, Self::From | Self::Both)
    }
}

/// One contact in a user's roster (RFC 6121 §2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID, as normalised by the caller; the item's identity.
    pub jid: String,
    /// The user-assigned name (handle), if any.
    pub name: Option<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// We sent a subscription request that is still pending (`ask="subscribe"`).
    pub ask_out: bool,
    /// The contact asked to subscribe to our presence and awaits approval.
    pub pending_in: bool,
    /// The groups the item is in, in the order given.
    pub groups: Vec<String>,
    /// Whether the user has this contact in its roster. `false` for a row that only records
    /// a pending inbound subscription request (hidden from roster results and pushes).
    pub in_roster: bool,
}

/// The broker's database: one redb file in the data directory, locked for this process
/// while the value lives.
pub struct Store {
    /// The open database. Invariant: the schema is [`SCHEMA_VERSION`] (checked or migrated
    /// by [`Store::open`]), so every table of `schema` exists. Shared (`Arc`) with the
    /// blocking thread that commits pub-sub batches ([`Batch::write`]).
    db: Arc<Database>,
    /// The database file, for messages.
    path: PathBuf,
    /// Pub-sub changes staged for the next group commit, and the one being committed.
    staging: RefCell<writer::Staging>,
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
        let mut dir = DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(data_dir).map_err(|e| io_at(data_dir, e))?;

        let path = data_dir.join(DB_FILE_NAME);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| io_at(&path, e))?;

        // `create_file` takes redb's exclusive, non-blocking lock (flock on unix) and
        // initialises an empty file; an existing database is opened as it is.
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create_file(file)
            .map_err(|e| error::from_open_error(e, path.clone()))?;
        schema::check_and_migrate(&db)?;
        Ok(Store {
            db: Arc::new(db),
            path,
            staging: RefCell::new(writer::Staging::default()),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction that commits durably: when `commit` returns, the data is
    /// on disk (fsync).
    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        begin_write(&self.db)
    }

    /// Adds an account with its opaque credentials blob.
    ///
    /// # Errors
    ///
    /// [`StoreError::AlreadyExists`] if the user exists; [`StoreError::Invalid`] for an
    /// empty, too long or NUL-containing username or oversized credentials.
    pub fn user_add(&self, username: &str, credentials: &[u8]) -> Result<(), StoreError> {
        codec::check_username(username)?;
        let value = codec::encode_account(credentials)?;
        let txn = self.begin_write()?;
        let existed = txn
            .open_table(ACCOUNTS)?
            .insert(username.as_bytes(), value.as_slice())?
            .is_some();
        if existed {
            txn.abort()?;
            return Err(StoreError::AlreadyExists);
        }
        txn.commit()?;
        Ok(())
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
        codec::check_username(username)?;
        let value = codec::encode_account(credentials)?;
        let txn = self.begin_write()?;
        let existed = txn
            .open_table(ACCOUNTS)?
            .insert(username.as_bytes(), value.as_slice())?
            .is_some();
        if !existed {
            txn.abort()?;
            return Err(StoreError::NotFound);
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ACCOUNTS)?;
        Ok(table.get(username.as_bytes())?.is_some())
    }

    /// Deletes an account, its roster, its roster version and its PEP (XEP-0163) nodes
    /// with their items, subscriptions and affiliations (the pub-sub rows keyed
    /// `01 username@… 01 node`) in one transaction.
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
    /// [`MAX_ROSTER_ITEMS`] items.
    pub fn roster_put(&self, username: &str, item: &RosterItem) -> Result<(), StoreError> {
        codec::check_username(username)?;
        let value = codec::encode_roster_item(item)?;
        let key = codec::roster_key(username, &item.jid);
        let txn = self.begin_write()?;
        {
            let mut rosters = txn.open_table(ROSTERS)?;
            let existing = rosters.get(key.as_slice())?.map(|v| v.value() == value);
            match existing {
                Some(true) => {
                    drop(rosters);
                    txn.abort()?;
                    return Ok(());
                }
                Some(false) => {}
                None => {
                    let (start, end) = codec::roster_range(username);
                    let mut count = 0;
                    for entry in rosters.range::<&[u8]>(start.as_slice()..end.as_slice())? {
                        entry?;
                        count += 1;
                    }
                    if count >= MAX_ROSTER_ITEMS {
                        drop(rosters);
                        txn.abort()?;
                        return Err(StoreError::LimitReached {
                            what: "roster items",
                            max: MAX_ROSTER_ITEMS,
                        });
                    }
                }
            }
            rosters.insert(key.as_slice(), value.as_slice())?;
        }
        bump_roster_version(&txn, username)?;
        txn.commit()?;
        Ok(())
    }

    /// Removes the item `jid` from the roster of `username`. Returns whether it existed;
    /// only a removal bumps the roster version.
    pub fn roster_remove(&self, username: &str, jid: &str) -> Result<bool, StoreError> {
        let key = codec::roster_key(username, jid);
        let txn = self.begin_write()?;
        let existed = txn.open_table(ROSTERS)?.remove(key.as_slice())?.is_some();
        if !existed {
            txn.abort()?;
            return Ok(false);
        }
        bump_roster_version(&txn, username)?;
        txn.commit()?;
        Ok(true)
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
        let txn = self.db.begin_read()?;
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
