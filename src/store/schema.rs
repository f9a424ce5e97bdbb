//! The database schema: every redb table, the schema version and the migrations.
//!
//! This file is the one place that says which tables exist. To add tables (the pub-sub
//! engine will add nodes, items, subscriptions and affiliations):
//!
//! 1. add a `TableDefinition` constant below and open it in [`create_tables`];
//! 2. bump [`SCHEMA_VERSION`] and add an arm to [`upgrade_from`] for the old version
//!    (`Ok(())` when the new tables simply start empty);
//! 3. describe the table and the new version in `docs/storage.md`.
//!
//! All keys and values are raw bytes (`&[u8]`). redb's own `&str` type calls
//! `str::from_utf8(..).unwrap()` when it compares or reads keys, so a damaged page would
//! panic the daemon; with byte slices the comparison is `memcmp` and UTF-8 is checked in
//! `codec.rs`, which reports corruption instead. A table's key and value *types* must never
//! change: redb refuses to open a table under a different type (a `TableTypeMismatch`),
//! so a change of layout is a change of the bytes, marked by the record's format byte.

use redb::{ReadTransaction, TableDefinition, TableError, WriteTransaction};

use super::codec;
use super::{StoreError, corrupt};

/// The schema version this build writes and understands. Opening a file with a larger
/// version fails with `StoreError::SchemaTooNew`; a smaller one is migrated on open.
pub const SCHEMA_VERSION: u32 = 3;

/// Store-wide settings: `meta` key (ASCII) → fixed-width big-endian integer. Meta values
/// carry no format byte: `schema_version` must stay readable by every past and future
/// build, so the layout of meta values is frozen.
pub(super) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
/// Accounts: username (JID localpart, UTF-8) → `codec::encode_account`.
pub(super) const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
/// Roster items: `username 00 contact-bare-jid` → `codec::encode_roster_item`.
pub(super) const ROSTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rosters");
/// Roster versions: username → `codec::encode_roster_version`. A missing row is version 0.
pub(super) const ROSTER_VERSIONS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("roster_versions");
/// Pub-sub nodes (schema 2): node id → node record (`store/pubsub.rs`).
pub(super) const PUBSUB_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pubsub_nodes");
/// Pub-sub items (schema 2): `node 00 u64 seq` → item record.
pub(super) const PUBSUB_ITEMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pubsub_items");
/// Pub-sub subscriptions (schema 2): `node 00 jid` → subscription record.
pub(super) const PUBSUB_SUBSCRIPTIONS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("pubsub_subscriptions");
/// Pub-sub affiliations (schema 2): `node 00 bare-jid` → affiliation record.
pub(super) const PUBSUB_AFFILIATIONS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("pubsub_affiliations");
/// XEP-0160 offline messages (schema 3): `username 00 u64 seq` → `codec::encode_offline`.
pub(super) const OFFLINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("offline");

/// `meta` key of the schema version (`u32`).
pub(super) const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// `meta` key of the last roster version handed out (`u64`); see `Store::roster_version`.
pub(super) const META_ROSTER_SEQ: &[u8] = b"roster_seq";
/// `meta` key of the last offline message sequence number handed out (`u64`); see
/// `Store::offline_stage`.
pub(super) const META_OFFLINE_SEQ: &[u8] = b"offline_seq";

/// Opens (and so creates) every table of the current schema.
fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(ACCOUNTS)?;
    txn.open_table(ROSTERS)?;
    txn.open_table(ROSTER_VERSIONS)?;
    txn.open_table(PUBSUB_NODES)?;
    txn.open_table(PUBSUB_ITEMS)?;
    txn.open_table(PUBSUB_SUBSCRIPTIONS)?;
    txn.open_table(PUBSUB_AFFILIATIONS)?;
    txn.open_table(OFFLINE)?;
    Ok(())
}

/// Converts the data of a file at schema `version` to `version + 1`. All tables of the
/// current schema already exist when this runs.
fn upgrade_from(_txn: &WriteTransaction, version: u32) -> Result<(), StoreError> {
    match version {
        // Version 0 is a file without a `schema_version` row: a new file, or a redb file
        // nobody has written our tables to. There is nothing to convert.
        0 => Ok(()),
        // Version 2 added the four pub-sub tables, which start empty.
        1 => Ok(()),
        // Version 3 added the `offline` table, which starts empty.
        2 => Ok(()),
        _ => Err(StoreError::Db(format!(
            "no migration from schema version {version} (a bug: SCHEMA_VERSION is \
             {SCHEMA_VERSION})"
        ))),
    }
}

/// Reads the schema version; `None` if the file has no `meta` table or no version row.
fn stored_version(txn: &ReadTransaction) -> Result<Option<u32>, StoreError> {
    let meta = match txn.open_table(META) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(value) = meta.get(META_SCHEMA_VERSION)? else {
        return Ok(None);
    };
    codec::decode_meta_u32(value.value())
        .map(Some)
        .map_err(|e| corrupt(&META, META_SCHEMA_VERSION, e))
}

/// Checks the schema version on open and migrates an older file in one durable write
/// transaction, so a crash mid-migration leaves the old version intact.
pub(super) fn check_and_migrate(db: &redb::Database) -> Result<(), StoreError> {
    let found = stored_version(&db.begin_read()?)?;
    let from = match found {
        Some(v) if v == SCHEMA_VERSION => return Ok(()),
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::SchemaTooNew {
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        Some(v) => v,
        None => 0,
    };
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate);
    create_tables(&txn)?;
    for version in from..SCHEMA_VERSION {
        upgrade_from(&txn, version)?;
    }
    txn.open_table(META)?.insert(
        META_SCHEMA_VERSION,
        &codec::encode_meta_u32(SCHEMA_VERSION)[..],
    )?;
    txn.commit()?;
    Ok(())
}
