//! The storage contract of the core: the records the core reads and writes, the changes it
//! stages, the errors it can get, and the [`Storage`] trait through which it reaches them.
//!
//! This module owns no IO. The shell's redb store (`crate::store::Store`) implements
//! [`Storage`]; the core (the router, the sessions and the pub-sub engine) holds an
//! `Rc<dyn Storage>` and never names redb, files or the committer. Core tests run on the
//! store's in-memory backend (`Store::open_in_memory`). What the store does with a staged
//! change (commit it at once, or in a group on a blocking thread, `store::writer`) is the
//! shell's business: the core learns the outcome through `Router::pubsub_committed` and
//! `Router::roster_committed`.
//!
//! The on-disk layouts of these records are documented in `docs/storage.md`.

mod error;

use std::time::Duration;

pub use error::StoreError;

/// Longest roster item name (handle), in bytes.
pub const MAX_ROSTER_NAME_BYTES: usize = 255;
/// Most groups one roster item may be in.
pub const MAX_ROSTER_GROUPS: usize = 16;
/// Longest roster group name, in bytes.
pub const MAX_GROUP_BYTES: usize = 255;
/// Ceiling on the rows of one user's roster: the largest accepted
/// `limits.max_roster_items`. New items are refused at the configured limit
/// (`Store::set_max_roster_items`); only this ceiling makes [`Storage::roster_get`] report
/// corruption, so lowering the configured limit never makes a stored roster unreadable.
/// A full item is at most about 6.4 KiB in memory (JID 2047 + name 255 + 16 groups × 255
/// bytes plus `String` headers); see `limits.max_roster_items` for what a roster costs.
pub const MAX_ROSTER_ITEMS: usize = 100_000;
/// Longest stanza one offline message record may hold, in bytes: above anything the
/// `limits.offline_*` bounds let through (a stanza is at most `limits.max_stanza_bytes`,
/// 16 MiB, plus the envelope of a pub-sub notification), so only a damaged record is
/// refused for it.
pub const MAX_OFFLINE_STANZA_BYTES: usize = 32 * 1024 * 1024;

/// One message kept for an account that had no available resource (XEP-0160).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Its place in the store: unique store-wide and increasing, so the messages of one
    /// account read back in the order they were stored.
    pub seq: u64,
    /// When it was stored, milliseconds since the Unix epoch (the XEP-0203 delay stamp).
    pub stamp_ms: u64,
    /// The stanza as it was routed (`from` stamped), serialised as a child of a
    /// `jabber:client` stream.
    pub stanza: String,
}

/// What one account's offline messages take on disk ([`Storage::offline_usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfflineUsage {
    /// Messages stored.
    pub count: usize,
    /// Bytes of their stanzas (the `stanza` fields, without the record overhead).
    pub bytes: usize,
}

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

/// One roster change, staged for the group commit ([`Storage::roster_stage`]) like pub-sub
/// changes, or applied at once (`Store::roster_put`, `Store::roster_remove`, by the command line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterWrite {
    /// Insert or replace the item in the roster of the user (first field).
    Put(String, RosterItem),
    /// Remove the item with this contact JID from the roster of the user.
    Remove(String, String),
}

impl RosterWrite {
    /// The user whose roster changes.
    pub fn user(&self) -> &str {
        match self {
            RosterWrite::Put(u, _) | RosterWrite::Remove(u, _) => u,
        }
    }

    /// The contact JID of the item.
    pub fn jid(&self) -> &str {
        match self {
            RosterWrite::Put(_, i) => &i.jid,
            RosterWrite::Remove(_, j) => j,
        }
    }
}

/// A stored node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Bare JID of the creator.
    pub creator: String,
    /// The configuration as `(var, value)` pairs; a multi-valued field repeats its var.
    pub config: Vec<(String, String)>,
}

/// A stored item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRecord {
    /// Item id (unique within the node).
    pub id: String,
    /// Full JID of the publisher.
    pub publisher: String,
    /// Publication time, milliseconds since the Unix epoch.
    pub published_ms: u64,
    /// The payload element as XML text (empty for a notification-only item).
    pub payload: String,
}

/// A stored subscription (one per node, JID and SubID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// 0 none, 1 pending, 2 unconfigured, 3 subscribed.
    pub state: u8,
    /// `pubsub#deliver`.
    pub deliver: bool,
    /// The SubID (part of the key; empty only for rows of the first format).
    pub subid: String,
    /// `pubsub#include_body`.
    pub include_body: bool,
    /// `pubsub#expire` = `presence`: the subscription ends when the subscriber goes
    /// unavailable (§12.4).
    pub temporary: bool,
    /// `pubsub#show-values`: bit 7 set when the option is given, bits 0..=4 the accepted
    /// values (away, chat, dnd, online, xa).
    pub show: u8,
    /// `pubsub#expire` as milliseconds since the Unix epoch; 0 = no lease.
    pub expire_ms: u64,
    /// XEP-0248 `pubsub#subscription_type`: 0 `nodes` (the default), 1 `items`, 2 `all`.
    pub sub_type: u8,
    /// XEP-0248 `pubsub#subscription_depth`: levels below the collection, or
    /// [`DEPTH_ALL`]; the default is 1.
    pub depth: u32,
}

/// [`SubscriptionRecord::depth`] value meaning `all`.
pub const DEPTH_ALL: u32 = u32::MAX;

impl Default for SubscriptionRecord {
    fn default() -> Self {
        SubscriptionRecord {
            state: 0,
            deliver: false,
            subid: String::new(),
            include_body: false,
            temporary: false,
            show: 0,
            expire_ms: 0,
            sub_type: 0,
            depth: 1,
        }
    }
}

/// One change of a [`Storage::pubsub_apply`] batch.
#[derive(Clone, Debug)]
pub enum PubsubOp {
    /// Create or replace a node row.
    PutNode(String, NodeRecord),
    /// Remove a node and every item, subscription and affiliation row of it.
    DeleteNode(String),
    /// Insert or replace an item at `seq`.
    PutItem(String, u64, ItemRecord),
    /// Remove the item at `seq`.
    DeleteItem(String, u64),
    /// Remove every item of the node.
    PurgeItems(String),
    /// Create or replace a subscription.
    PutSubscription(String, String, SubscriptionRecord),
    /// Remove a subscription row of the first format (key `node 00 jid`, no SubID).
    DeleteSubscription(String, String),
    /// Remove the subscription `(node, jid, subid)`.
    DeleteSubscriptionId(String, String, String),
    /// Create or replace an affiliation (code: see `pubsub::Affiliation`).
    PutAffiliation(String, String, u8),
    /// Remove an affiliation.
    DeleteAffiliation(String, String),
}

/// Everything but the item payloads: what the engine loads at start.
#[derive(Clone, Debug, Default)]
pub struct PubsubSnapshot {
    /// Every node, sorted by id.
    pub nodes: Vec<(String, NodeRecord)>,
    /// Every item without its payload (`payload` empty), as `(node, seq, item, payload
    /// length in bytes)`, sorted by node and sequence.
    pub items: Vec<(String, u64, ItemRecord, usize)>,
    /// Every subscription as `(node, jid, record)` (the record's SubID filled in from the
    /// key).
    pub subscriptions: Vec<(String, String, SubscriptionRecord)>,
    /// Every affiliation as `(node, bare jid, code)`.
    pub affiliations: Vec<(String, String, u8)>,
}

/// When staged pub-sub changes reach the disk (`store.flush_interval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Each [`Storage::pubsub_stage`] commits at once on the calling thread.
    Inline,
    /// Durable group commit: the engine holds replies until their batch is on disk.
    Group,
    /// Replies go out at once; a batch is committed every interval (and when full, and at
    /// a clean shutdown). A power loss loses at most the last interval.
    Interval(Duration),
}

/// What the core needs of the database: reads, staged writes and the state of the group
/// commit. Implemented by the shell's redb store (`crate::store::Store`); every method runs
/// on the protocol thread and never blocks on a disk sync (staged writes are synced by the
/// shell's committer, off the event loop).
pub trait Storage {
    /// Where the data lives, for log lines (the database file's path).
    fn location(&self) -> String;

    /// Whether the account exists.
    ///
    /// # Errors
    ///
    /// The database cannot be read.
    fn user_exists(&self, username: &str) -> Result<bool, StoreError>;

    /// The account's stored credentials blob (SCRAM data), if the account exists.
    ///
    /// # Errors
    ///
    /// The database cannot be read, or the row is damaged.
    fn user_get(&self, username: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The user's roster as stored (including rows that only record a pending inbound
    /// subscription request).
    ///
    /// # Errors
    ///
    /// The database cannot be read, or a row is damaged.
    fn roster_get(&self, username: &str) -> Result<Vec<RosterItem>, StoreError>;

    /// Stages roster changes for the next commit, after checking them against the stored
    /// roster and its bound. Returns the generation whose commit makes them durable (`None`
    /// when `writes` is empty).
    ///
    /// # Errors
    ///
    /// A change is invalid or over a bound ([`StoreError::Invalid`],
    /// [`StoreError::LimitReached`]), or the database cannot be read.
    fn roster_stage(&self, writes: &[RosterWrite]) -> Result<Option<u64>, StoreError>;

    /// Sets the roster bound [`Storage::roster_stage`] enforces (`limits.max_roster_items`,
    /// clamped to `1..=MAX_ROSTER_ITEMS`).
    fn set_max_roster_items(&self, max: usize);

    /// Everything of the pub-sub state but the item payloads: what the engine loads.
    ///
    /// # Errors
    ///
    /// The database cannot be read, or a row is damaged.
    fn pubsub_load(&self) -> Result<PubsubSnapshot, StoreError>;

    /// Applies a batch of pub-sub changes in one durable transaction, at once (used at load,
    /// for migrations and repairs, before the service answers anyone).
    ///
    /// # Errors
    ///
    /// The batch is invalid, or the write failed (nothing of it is applied).
    fn pubsub_apply(&self, ops: &[PubsubOp]) -> Result<(), StoreError>;

    /// The items of `node` at the sequence numbers `seqs` (payloads included), `None` for
    /// one that is gone.
    ///
    /// # Errors
    ///
    /// The database cannot be read, or a row is damaged.
    fn pubsub_items(&self, node: &str, seqs: &[u64])
    -> Result<Vec<Option<ItemRecord>>, StoreError>;

    /// Stages a batch of pub-sub changes for the next commit (in [`CommitMode::Inline`]:
    /// commits it at once), after checking it.
    ///
    /// # Errors
    ///
    /// The batch is invalid, or (inline) the write failed.
    fn pubsub_stage(&self, ops: &[PubsubOp]) -> Result<(), StoreError>;

    /// When staged pub-sub changes reach the disk.
    fn pubsub_mode(&self) -> CommitMode;

    /// How many batches were staged so far (to tell whether a request staged anything).
    fn pubsub_staged_ops(&self) -> u64;

    /// In [`CommitMode::Group`], with changes staged or in flight: the generation of the
    /// commit that makes everything staged so far durable; the caller holds its replies
    /// until [`Storage::pubsub_done`] reports it. `None` when nothing needs holding.
    fn pubsub_hold_generation(&self) -> Option<u64>;

    /// The commit of `generation` ended (`ok` false: it failed, and what it held is
    /// dropped from the staging).
    fn pubsub_done(&self, generation: u64, ok: bool);

    /// Whether a write failed and the database must be reopened before it works again.
    fn faulted(&self) -> bool;

    /// Marks the database as failed (a group commit failed on the committer's thread).
    fn set_faulted(&self);

    /// The error every operation gets while the database is faulted or closed.
    fn closed_error(&self) -> StoreError;

    /// XEP-0160: what every account's offline messages take on disk, for the accounts
    /// that have any (staged changes not included: the router calls it at start and after
    /// a failed commit, when nothing it counted is staged).
    ///
    /// # Errors
    ///
    /// The database cannot be read, or a row is damaged.
    fn offline_usage(&self) -> Result<Vec<(String, OfflineUsage)>, StoreError>;

    /// The offline messages of `username`, oldest first: as committed, with the staged
    /// changes applied (a message stored a moment ago is there, a deleted one is not).
    ///
    /// # Errors
    ///
    /// The database cannot be read, or a row is damaged.
    fn offline_get(&self, username: &str) -> Result<Vec<OfflineMessage>, StoreError>;

    /// Stages one offline message of `username` for the next commit (in
    /// [`CommitMode::Inline`]: writes it at once), after the messages it already has.
    /// Returns its [`OfflineMessage::seq`]. In [`CommitMode::Group`] the committer is woken
    /// at once; in [`CommitMode::Interval`] it rides the next interval's commit. If that
    /// commit fails, [`Storage::offline_unsaved`] returns it until
    /// [`Storage::pubsub_done`] drops the staged batches.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or too long username or stanza;
    /// [`StoreError::LimitReached`] when the pending batch is full; the database is
    /// faulted or closed; in inline mode, I/O and redb errors.
    fn offline_stage(&self, username: &str, stamp_ms: u64, stanza: &str)
    -> Result<u64, StoreError>;

    /// Stages the deletion of `username`'s offline messages up to and including `seq`
    /// (the last one delivered), for the next commit (inline: at once).
    ///
    /// # Errors
    ///
    /// As [`Storage::offline_stage`].
    fn offline_stage_delete(&self, username: &str, seq: u64) -> Result<(), StoreError>;

    /// The offline messages staged but not on disk, with their usernames, in the order
    /// they were staged, less those a later staged deletion covers (they were delivered):
    /// what a failed commit loses. Called by the router when a commit failed, before
    /// [`Storage::pubsub_done`] drops the staged batches, to bounce them to their senders.
    fn offline_unsaved(&self) -> Vec<(String, OfflineMessage)>;
}
