//! The XEP-0060 publish-subscribe service at `pubsub.<domain>`: a sans-IO engine.
//!
//! The router hands it every IQ addressed to the service JID ([`Engine::handle_iq`]) and
//! every initial presence ([`Engine::on_available`]), together with a [`Directory`] (roster
//! and account lookups), the [`Store`] and the current time. It answers with a list of
//! [`Delivery`]s: already-serialised stanzas and their recipients. It never touches a
//! socket or a clock.
//!
//! # State and durability
//!
//! Nodes, their configuration, subscriptions, affiliations and an index of their items
//! (sequence, id, time) live in memory, loaded at start; item payloads live in redb, except
//! the last item of every node, which is cached. Every change is one store batch
//! ([`crate::store::PubsubOp`]) staged ([`Store::pubsub_stage`], which checks it) *before*
//! memory changes; a refused batch changes nothing. The daemon commits staged batches in
//! groups off the event loop, and `commit.rs` holds the replies and notifications until
//! their batch is on disk: a publish result means the item is on disk (unless the
//! operator chose `store.flush_interval`).
//!
//! # Fan-out
//!
//! A publish serialises the `<item>` (with its payload) once; each subscriber gets a small
//! envelope around that shared text. Deliveries to a bare JID reach every available
//! resource of the account through the router's bounded outboxes.

mod collections;
mod commit;
mod config;
pub mod dag;
mod error;
mod pep;
mod rsm;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::rc::Rc;

pub use commit::{
    MAX_DEFERRED, MAX_DEFERRED_BYTES, MAX_HELD_BYTES, committed, restore, save_failed_error,
    unavailable_error,
};
pub use config::{AccessModel, NodeConfig, NodeFull, PublishModel, SendLast};
pub use error::PubSubError;
pub use pep::PEP_FEATURES;

use crate::config::{Config, CreatePolicy, FullPolicy};
use crate::jid::Jid;
use crate::limits::Limits;
use crate::outbox::Stanza;
use crate::proto::{self, NS_DISCO_INFO, NS_DISCO_ITEMS};
use crate::store::{
    DEPTH_ALL, ItemRecord, NodeRecord, PubsubOp, Store, StoreError, SubscriptionRecord,
};
use crate::xml::{Element, NS_CLIENT, escape_attr, escape_text};
use config::{
    FORM_META_DATA, FORM_NODE_CONFIG, FORM_PUBLISH_OPTIONS, FORM_SUBSCRIBE_OPTIONS, NS_DATA,
    find_form, form_fields, hidden_form_type,
};
use dag::{Dag, Depth, Kind};
use rsm::{Page, Window, parse_len};
use std::borrow::Cow;

/// XEP-0060 main namespace.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 owner namespace.
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 event namespace.
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 application error namespace.
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0203 delayed delivery.
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0059 result set management.
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// The `http://jabber.org/protocol/pubsub#…` features advertised, each one implemented by
/// the handler named next to it (and nothing else is advertised).
pub const FEATURES: &[&str] = &[
    "access-authorize",       // check_access, AccessModel::Authorize; approval (§8.6)
    "access-open",            // check_access, AccessModel::Open (the default)
    "access-presence",        // check_access, AccessModel::Presence
    "access-roster",          // check_access, AccessModel::Roster
    "access-whitelist",       // check_access, AccessModel::Whitelist
    "auto-create",            // publish to a missing node
    "collections",            // XEP-0248: collections.rs (DAG, fan-out, items, associate)
    "config-node",            // owner_configure
    "config-node-max",        // NodeConfig::set accepts `max`
    "create-and-configure",   // create with <configure><x/>
    "create-nodes",           // create
    "delete-items",           // retract
    "delete-nodes",           // owner_delete
    "get-pending",            // command (XEP-0050, §8.7)
    "instant-nodes",          // create without a node id
    "item-ids",               // publish with an item id
    "last-published",         // send_last_published_item
    "leased-subscription",    // pubsub#expire, on_tick
    "manage-subscriptions",   // owner_subscriptions
    "member-affiliation",     // Affiliation::Member
    "meta-data",              // disco#info of a node
    "modify-affiliations",    // owner_affiliations
    "multi-collection",       // XEP-0248: several parents (the spelling of XEP-0060 1.x)
    "multi-collections",      // XEP-0248: several parents (the spelling of XEP-0248)
    "multi-items",            // max_items > 1
    "multi-subscribe",        // subscribe: SubIDs, SHIM headers in notify_body
    "outcast-affiliation",    // Affiliation::Outcast
    "persistent-items",       // persist_items
    "presence-notifications", // presence_based_delivery, show-values (notify_body)
    "publish",                // publish
    "publish-node-full",      // NodeFull: retract-oldest, discard-oldest, reject
    "publish-options",        // preconditions
    "publish-only-affiliation", // Affiliation::PublishOnly
    "publisher-affiliation",  // Affiliation::Publisher
    "purge-nodes",            // owner_purge
    "retract-items",          // retract
    "retrieve-affiliations",  // own affiliations
    "retrieve-default",       // owner <default/>
    "retrieve-default-sub",   // <default/> subscription options
    "retrieve-items",         // items
    "retrieve-subscriptions", // own subscriptions
    "rsm",                    // items: XEP-0059 paging (Rsm)
    "subscribe",              // subscribe / unsubscribe
    "subscription-notifications", // subscription_changed (owner changes, §12.13)
    "subscription-options",   // options
];

/// Longest node id accepted, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 1023;
/// Longest item id accepted, in bytes.
pub const MAX_ITEM_ID_BYTES: usize = 1023;

/// What the engine needs to know about accounts and rosters (implemented by the router).
pub trait Directory {
    /// The roster item of `contact` (bare) in the roster of the local account `owner`
    /// (bare): whether `contact` has a presence subscription to `owner` (`from`/`both`),
    /// and its groups. `None` if there is no such item.
    fn roster_entry(&self, owner: &Jid, contact: &Jid) -> Option<(bool, Vec<String>)>;

    /// The available resources of the account `bare` with their presence `<show/>`
    /// (`online` when it has none); empty when none is available or the JID is not local.
    fn presences(&self, bare: &Jid) -> Vec<(Jid, String)>;

    /// XEP-0115/0163: whether the available resource `full` advertised `node+notify`.
    fn wants(&self, _full: &Jid, _node: &str) -> bool {
        false
    }

    /// The contacts of the local account `owner` with a presence subscription to it
    /// (`from`/`both`): who may receive its PEP events (bare JIDs).
    fn presence_subscribers(&self, _owner: &Jid) -> Vec<Jid> {
        Vec::new()
    }

    /// The accounts `contact` has a presence subscription to (its roster items with
    /// `to`/`both`): whose PEP events it may receive (bare JIDs).
    fn presence_subscriptions(&self, _contact: &Jid) -> Vec<Jid> {
        Vec::new()
    }
}

/// A serialised stanza and its recipient: a full JID (one resource) or a bare JID (every
/// available resource of the account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Recipient.
    pub to: Jid,
    /// The stanza, ready for the outbox (a notification shares its event payload).
    pub stanza: Stanza,
}

/// An entity's affiliation with a node (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affiliation {
    /// No affiliation.
    None,
    /// Full control.
    Owner,
    /// May publish and retract.
    Publisher,
    /// May publish, retract its own items, never subscribe or retrieve.
    PublishOnly,
    /// May subscribe and retrieve (whitelist).
    Member,
    /// Banned.
    Outcast,
}

impl Affiliation {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Owner => "owner",
            Self::Publisher => "publisher",
            Self::PublishOnly => "publish-only",
            Self::Member => "member",
            Self::Outcast => "outcast",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "owner" => Self::Owner,
            "publisher" => Self::Publisher,
            "publish-only" => Self::PublishOnly,
            "member" => Self::Member,
            "outcast" => Self::Outcast,
            _ => return None,
        })
    }
    fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Owner => 1,
            Self::Publisher => 2,
            Self::PublishOnly => 3,
            Self::Member => 4,
            Self::Outcast => 5,
        }
    }
    fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Owner,
            2 => Self::Publisher,
            3 => Self::PublishOnly,
            4 => Self::Member,
            5 => Self::Outcast,
            _ => Self::None,
        }
    }
}

/// One item in a node's index (its payload is in the store).
#[derive(Clone, Debug)]
struct IndexEntry {
    seq: u64,
    id: String,
    published_ms: u64,
    /// Payload length in bytes (to size replies before reading payloads).
    bytes: usize,
    /// The publisher's bare JID (for `purge_offline`).
    publisher: Rc<str>,
    /// What the item counts against `store.max_bytes` ([`item_cost`]).
    stored: u64,
}

/// Bytes an item counts against the store budget: payload, id, publisher and about 48
/// bytes of key and record overhead.
fn item_cost(payload: usize, id: &str, publisher: &str) -> u64 {
    (payload + id.len() + publisher.len() + 48) as u64
}

/// A fully loaded item.
#[derive(Clone, Debug)]
struct CachedItem {
    id: String,
    publisher: String,
    published_ms: u64,
    /// The payload element as XML text (namespace declared on it); empty when none.
    payload: String,
}

/// Most subscriptions one JID may hold on one node (`multi-subscribe`); more fail with
/// `policy-violation` + `too-many-subscriptions`.
pub const MAX_SUBSCRIPTIONS_PER_JID: usize = 8;

/// XEP-0131 SHIM headers.
pub const NS_SHIM: &str = "http://jabber.org/protocol/shim";
/// XEP-0050 ad-hoc commands.
pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
/// The `get-pending` command node (§8.7).
pub const CMD_GET_PENDING: &str = "http://jabber.org/protocol/pubsub#get-pending";
/// `FORM_TYPE` of the subscription approval form (§8.6).
pub const FORM_SUBSCRIBE_AUTH: &str = "http://jabber.org/protocol/pubsub#subscribe_authorization";

/// The `pubsub#show-values` values, in bit order of [`SubOptions::show`].
const SHOWS: [&str; 5] = ["away", "chat", "dnd", "online", "xa"];
/// Bit of [`SubOptions::show`] saying the option is set at all.
const SHOW_SET: u8 = 0x80;

/// A subscription's state (§4.2; `none` is the absence of a subscription).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubState {
    /// Awaiting an owner's approval (authorize access model).
    Pending,
    /// Subscribed.
    Subscribed,
}

impl SubState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Subscribed => "subscribed",
        }
    }
}

/// XEP-0248 `pubsub#subscription_type`: which events of a collection a subscription takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubType {
    /// Node events (associations, dissociations): the default.
    Nodes,
    /// Item events of the leaves below.
    Items,
    /// Both.
    All,
}

impl SubType {
    fn code(self) -> u8 {
        match self {
            Self::Nodes => 0,
            Self::Items => 1,
            Self::All => 2,
        }
    }
    fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Items,
            2 => Self::All,
            _ => Self::Nodes,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Nodes => "nodes",
            Self::Items => "items",
            Self::All => "all",
        }
    }
    fn items(self) -> bool {
        self != Self::Nodes
    }
    fn nodes(self) -> bool {
        self != Self::Items
    }
}

/// Subscription options (`pubsub#subscribe_options`, §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SubOptions {
    deliver: bool,
    include_body: bool,
    /// `expire` = `presence` (§12.4), or forced by the node's `tempsub`.
    temporary: bool,
    /// [`SHOW_SET`] plus one bit per [`SHOWS`] value; 0 = any presence.
    show: u8,
    /// Lease end (§12.18), ms since the epoch; 0 = none.
    expire_ms: u64,
    /// XEP-0248 `pubsub#subscription_type` (meaningful on collections only).
    sub_type: SubType,
    /// XEP-0248 `pubsub#subscription_depth` (meaningful on collections only).
    depth: Depth,
}

impl Default for SubOptions {
    fn default() -> Self {
        SubOptions {
            deliver: true,
            include_body: false,
            temporary: false,
            show: 0,
            expire_ms: 0,
            sub_type: SubType::Nodes,
            depth: Depth::Levels(1),
        }
    }
}

impl SubOptions {
    /// Whether a resource whose presence `<show/>` is `show` ("online" for none) takes
    /// notifications.
    fn show_ok(&self, show: &str) -> bool {
        self.show & SHOW_SET == 0
            || SHOWS
                .iter()
                .position(|s| *s == show)
                .is_some_and(|i| self.show & (1 << i) != 0)
    }
}

/// One subscription (several per JID and node, told apart by SubID).
#[derive(Clone, Debug)]
struct Sub {
    jid: Jid,
    subid: String,
    state: SubState,
    opts: SubOptions,
}

impl Sub {
    fn record(&self) -> SubscriptionRecord {
        SubscriptionRecord {
            state: match self.state {
                SubState::Pending => 1,
                SubState::Subscribed => 3,
            },
            deliver: self.opts.deliver,
            subid: self.subid.clone(),
            include_body: self.opts.include_body,
            temporary: self.opts.temporary,
            show: self.opts.show,
            expire_ms: self.opts.expire_ms,
            sub_type: self.opts.sub_type.code(),
            depth: match self.opts.depth {
                Depth::All => DEPTH_ALL,
                Depth::Levels(n) => n,
            },
        }
    }
    fn put(&self, node: &str) -> PubsubOp {
        PubsubOp::PutSubscription(node.to_owned(), self.jid.as_str().to_owned(), self.record())
    }
    fn delete(&self, node: &str) -> PubsubOp {
        PubsubOp::DeleteSubscriptionId(
            node.to_owned(),
            self.jid.as_str().to_owned(),
            self.subid.clone(),
        )
    }
    /// Whether notifications go to it at `now_ms`.
    fn active(&self, now_ms: u64) -> bool {
        self.state == SubState::Subscribed
            && self.opts.deliver
            && (self.opts.expire_ms == 0 || self.opts.expire_ms > now_ms)
    }
}

/// A leaf node.
#[derive(Debug)]
struct Node {
    created_ms: u64,
    creator: String,
    config: NodeConfig,
    /// Persistent items, oldest first (empty for transient nodes).
    items: VecDeque<IndexEntry>,
    next_seq: u64,
    /// The last published item (the only one of a transient node).
    last: Option<Rc<CachedItem>>,
    /// Subscriptions in `(jid, subid)` order.
    subs: Vec<Sub>,
    /// Earliest lease end among `subs` (0: none); kept by [`Node::subs_changed`].
    lease_min: u64,
    /// Bare JID → affiliation (never `None`).
    affs: Vec<(String, Affiliation)>,
    /// Sum of `stored` over `items`.
    stored: u64,
}

impl Node {
    /// Recomputes `lease_min` after `subs` changed.
    fn subs_changed(&mut self) {
        self.lease_min = self
            .subs
            .iter()
            .map(|s| s.opts.expire_ms)
            .filter(|e| *e != 0)
            .min()
            .unwrap_or(0);
    }
    /// Inserts `sub` in `(jid, subid)` order.
    fn insert_sub(&mut self, sub: Sub) {
        let pos = self.subs.partition_point(|s| {
            (s.jid.as_str(), s.subid.as_str()) < (sub.jid.as_str(), sub.subid.as_str())
        });
        self.subs.insert(pos, sub);
        self.subs_changed();
    }
    /// Number of approved subscriptions.
    fn subscribed(&self) -> usize {
        self.subs
            .iter()
            .filter(|s| s.state == SubState::Subscribed)
            .count()
    }
    /// When the next item or lease of this node expires (ms since the epoch).
    fn next_deadline(&self) -> Option<u64> {
        let items = match (self.config.item_expire, self.items.front()) {
            (Some(secs), Some(e)) if self.config.persist_items => {
                Some(e.published_ms.saturating_add(secs.saturating_mul(1000)))
            }
            _ => None,
        };
        let lease = (self.lease_min != 0).then_some(self.lease_min);
        match (items, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn push_item(&mut self, e: IndexEntry) {
        self.stored += e.stored;
        self.items.push_back(e);
    }
    fn remove_seqs(&mut self, seqs: &[u64]) {
        let mut freed = 0;
        self.items.retain(|e| {
            let gone = seqs.contains(&e.seq);
            if gone {
                freed += e.stored;
            }
            !gone
        });
        self.stored -= freed;
        if self.config.persist_items && self.items.is_empty() {
            self.last = None;
        }
    }
    fn clear_items(&mut self) {
        self.items.clear();
        self.stored = 0;
    }
    fn record(&self) -> NodeRecord {
        NodeRecord {
            created_ms: self.created_ms,
            creator: self.creator.clone(),
            config: self.config.to_pairs(),
        }
    }
    fn expired(&self, published_ms: u64, now_ms: u64) -> bool {
        self.config
            .item_expire
            .is_some_and(|s| published_ms.saturating_add(s.saturating_mul(1000)) <= now_ms)
    }
}

/// Why the engine could not start.
#[derive(Debug)]
pub enum EngineError {
    /// The store failed.
    Store(StoreError),
    /// A stored node configuration is not understood.
    BadNode(String, PubSubError),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(e) => write!(f, "cannot load pub-sub state: {e}"),
            Self::BadNode(n, e) => write!(f, "stored configuration of node {n:?}: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// The request being handled.
struct Req {
    bare: Jid,
    now_ms: u64,
}

/// The pub-sub service.
#[derive(Debug)]
pub struct Engine {
    service: Jid,
    /// `service`, escaped for attributes (written into every notification).
    service_attr: String,
    domain: String,
    limits: Limits,
    create_policy: CreatePolicy,
    admins: Vec<String>,
    /// `store.max_bytes` (0: none) and `store.full_policy`.
    budget: u64,
    full_policy: FullPolicy,
    /// Every node, the root collection (`""`, never stored) included.
    nodes: BTreeMap<String, Node>,
    /// The XEP-0248 graph: kinds and parent/child edges of `nodes`.
    dag: Dag,
    /// `pubsub.path_collections`: `a/b/c` ids create their parent collections.
    path_collections: bool,
    /// XEP-0163: the PEP service of every account that has PEP nodes, by bare JID. While
    /// a PEP request is handled, its nodes are swapped into `nodes` (see `pep.rs`).
    pep: std::collections::HashMap<String, pep::PepService>,
    /// The account whose PEP service is swapped in (None: the generic service).
    pep_owner: Option<Jid>,
    /// Bytes stored by the services not swapped in (for `store.max_bytes`).
    other_stored: u64,
    /// PEP settings (`[pubsub] pep_force`, `limits.pep_*`).
    pep_cfg: pep::PepConfig,
    /// The counter part of generated ids (items, SubIDs, instant nodes). It starts from a
    /// random value per process ([`Engine::seed_ids`]), so ids of another run differ even
    /// when the clock (the other part) stepped back, as on boards without an RTC; item
    /// ids are also checked against the node's items ([`Engine::new_item_id`]).
    counter: u64,
    /// The sequence of the next published item, service-wide (item keys keep per-node
    /// order; one counter also orders items of different nodes).
    next_item_seq: u64,
    /// The deadline last handed to the timer ([`Engine::arm`]).
    armed: Option<u64>,
    /// After a failed timer commit: no retry before this time (ms).
    retry_at: u64,
    /// Time of the request being handled (ms since the epoch).
    now_ms: u64,
    /// Notifications produced by the current request; sent after its reply.
    out: Vec<Delivery>,
    /// Outputs waiting for a group commit.
    held: commit::Held,
}

/// `s` escaped for text content.
fn text(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    escape_text(s, &mut o);
    o
}

/// `s` escaped for an attribute value.
fn attr(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    escape_attr(s, &mut o);
    o
}

/// XEP-0082 date-time (UTC, milliseconds) for `ms` since the epoch. Any `u64` is safe:
/// the day count is below 2^38 and every intermediate stays far inside an `i64` (years past
/// 9999 print with more digits; [`parse_xep0082`] never yields one).
pub fn xep0082(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Serialises a payload so that it carries its own namespace declaration wherever it is
/// embedded (the sentinel parent namespace forces `xmlns` on the top element).
fn serialise_payload(p: &Element) -> String {
    let mut s = String::with_capacity(128);
    p.write_to(&mut s, "\u{1}");
    s
}

/// `<item id='…' publisher='…'>payload</item>` (or without payload; without the
/// publisher when `itemreply` is `none`).
fn item_xml(it: &CachedItem, with_payload: bool, with_publisher: bool) -> String {
    let mut s = String::with_capacity(48 + it.id.len() + it.payload.len());
    let _ = write!(s, "<item id='{}'", attr(&it.id));
    if with_publisher {
        let _ = write!(s, " publisher='{}'", attr(&it.publisher));
    }
    if with_payload && !it.payload.is_empty() {
        s.push('>');
        s.push_str(&it.payload);
        s.push_str("</item>");
    } else {
        s.push_str("/>");
    }
    s
}

/// The `<body/>` text of an item notification (`pubsub#include_body`): node, item id,
/// publisher and the payload's text content, cut at 512 bytes.
fn body_text(node: &str, it: &CachedItem) -> String {
    let mut s = format!("{node}: item {} from {}", it.id, it.publisher);
    let mut txt = String::new();
    if let Ok(e) = Element::parse(&it.payload) {
        deep_text(&e, &mut txt);
    }
    let txt = txt.split_whitespace().collect::<Vec<_>>().join(" ");
    if !txt.is_empty() {
        s.push_str(": ");
        s.push_str(&txt);
    }
    if s.len() > 512 {
        let mut cut = 509;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The text of `e` and its descendants, at most about 1 KiB.
fn deep_text(e: &Element, out: &mut String) {
    if out.len() > 1024 {
        return;
    }
    out.push_str(&e.text());
    out.push(' ');
    for c in e.elements() {
        deep_text(c, out);
    }
}

/// Days in `month` (1–12) of `year` (proleptic Gregorian).
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses an XEP-0082 date-time (`YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm)`) into ms since
/// the epoch; `None` if malformed, not a real date (month 13, February 30), an offset
/// beyond ±23:59, or before 1970.
///
/// Every field is range-checked before any arithmetic: the year has exactly four digits
/// (0000–9999), so the day count stays below 4 million and the millisecond result below
/// 2^48; nothing here can overflow an `i64`.
pub fn parse_xep0082(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) && !t.is_empty() {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let f3: String = frac.chars().chain("00".chars()).take(3).collect();
        ms = f3.parse::<i64>().ok()?;
    }
    let offset = match s.get(i..)? {
        "Z" => 0,
        tz if tz.len() == 6
            && (tz.starts_with('+') || tz.starts_with('-'))
            && tz.as_bytes()[3] == b':' =>
        {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 60 + om) * 60;
            if tz.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs * 1000 + ms).ok()
}

fn flag(e: &Element, name: &str) -> Option<bool> {
    e.attr(name).map(|v| v == "1" || v == "true")
}

impl Engine {
    /// The engine for `config`, with every node loaded from `store`.
    ///
    /// # Errors
    ///
    /// A store failure or a stored node this build cannot read.
    pub fn load(config: &Config, store: &Store) -> Result<Engine, EngineError> {
        let service = Jid::parse(&config.pubsub_service()).map_err(|e| {
            EngineError::BadNode(
                String::new(),
                PubSubError::BadForm(format!("service JID: {e}")),
            )
        })?;
        let mut engine = Engine {
            service_attr: attr(service.as_str()),
            service,
            domain: config.domain.clone(),
            limits: config.limits.clone(),
            create_policy: config.pubsub.create_nodes,
            admins: config.pubsub.admins.clone(),
            budget: config.store.max_bytes,
            full_policy: config.store.full_policy,
            nodes: BTreeMap::new(),
            dag: Dag::new(config.limits.pubsub_max_nodes, dag::DEFAULT_MAX_PARENTS),
            path_collections: config.pubsub.path_collections,
            pep: std::collections::HashMap::new(),
            pep_owner: None,
            other_stored: 0,
            pep_cfg: pep::PepConfig::from_config(config),
            counter: 0,
            next_item_seq: 1,
            armed: None,
            retry_at: 0,
            now_ms: 0,
            out: Vec::new(),
            held: commit::Held::default(),
        };
        let snap = store.pubsub_load().map_err(EngineError::Store)?;
        for (name, rec) in snap.nodes {
            let cfg = NodeConfig::from_pairs(&rec.config, &engine.limits)
                .map_err(|e| EngineError::BadNode(name.clone(), e))?;
            engine.nodes.insert(
                name,
                Node {
                    created_ms: rec.created_ms,
                    creator: rec.creator,
                    config: cfg,
                    items: VecDeque::new(),
                    stored: 0,
                    next_seq: 1,
                    last: None,
                    subs: Vec::new(),
                    lease_min: 0,
                    affs: Vec::new(),
                },
            );
        }
        engine.insert_root();
        let mut migrate = Vec::new();
        for (name, seq, item, bytes) in snap.items {
            if let Some(n) = engine.nodes.get_mut(&name) {
                n.next_seq = n.next_seq.max(seq + 1);
                engine.next_item_seq = engine.next_item_seq.max(seq + 1);
                let stored = item_cost(bytes, &item.id, &item.publisher);
                let publisher = Jid::parse(&item.publisher).map_or_else(
                    |_| Rc::from(item.publisher.as_str()),
                    |j| Rc::from(j.bare().as_str()),
                );
                n.push_item(IndexEntry {
                    seq,
                    id: item.id,
                    published_ms: item.published_ms,
                    bytes,
                    stored,
                    publisher,
                });
            }
        }
        // Rows of the first format (no SubID) get one now, rewritten in one commit.
        for (name, jid, rec) in snap.subscriptions {
            let (Some(n), Ok(j)) = (engine.nodes.get_mut(&name), Jid::parse(&jid)) else {
                continue;
            };
            let state = match rec.state {
                1 => SubState::Pending,
                3 => SubState::Subscribed,
                _ => continue,
            };
            let mut sub = Sub {
                jid: j,
                subid: rec.subid.clone(),
                state,
                opts: SubOptions {
                    deliver: rec.deliver,
                    include_body: rec.include_body,
                    temporary: rec.temporary,
                    show: rec.show,
                    expire_ms: rec.expire_ms,
                    sub_type: SubType::from_code(rec.sub_type),
                    depth: if rec.depth == DEPTH_ALL {
                        Depth::All
                    } else {
                        Depth::Levels(rec.depth)
                    },
                },
            };
            // Temporary subscriptions (§12.4) lived for a presence session; after a
            // restart nobody has one.
            if sub.opts.temporary || n.config.tempsub {
                migrate.push(if sub.subid.is_empty() {
                    PubsubOp::DeleteSubscription(name.clone(), jid.clone())
                } else {
                    sub.delete(&name)
                });
                continue;
            }
            if sub.subid.is_empty() {
                engine.counter = engine.counter.wrapping_add(1);
                sub.subid = format!("{:x}-{:x}", rec.expire_ms, engine.counter);
                migrate.push(PubsubOp::DeleteSubscription(name.clone(), jid.clone()));
                migrate.push(sub.put(&name));
            }
            // The store yields rows in key order, which is `(jid, subid)` order; sorted
            // once per node below.
            n.subs.push(sub);
        }
        for n in engine.nodes.values_mut() {
            n.subs.sort_by(|a, b| {
                (a.jid.as_str(), a.subid.as_str()).cmp(&(b.jid.as_str(), b.subid.as_str()))
            });
            n.subs_changed();
        }
        if !migrate.is_empty() {
            store.pubsub_apply(&migrate).map_err(EngineError::Store)?;
            tracing::info!(
                ops = migrate.len(),
                "pub-sub records migrated (SubIDs given, temporary subscriptions dropped, collection edges repaired)"
            );
        }
        for (name, jid, code) in snap.affiliations {
            if let Some(n) = engine.nodes.get_mut(&name) {
                let a = Affiliation::from_code(code);
                if a != Affiliation::None {
                    n.affs.push((jid, a));
                }
            }
        }
        for (name, n) in &mut engine.nodes {
            if let Some(e) = n.items.back() {
                let got = store
                    .pubsub_items(name, &[e.seq])
                    .map_err(EngineError::Store)?;
                n.last = got.into_iter().flatten().next().map(|r| {
                    Rc::new(CachedItem {
                        id: r.id,
                        publisher: r.publisher,
                        published_ms: r.published_ms,
                        payload: r.payload,
                    })
                });
            }
        }
        // PEP nodes (store keys `01 owner 01 node`) go to their accounts' services; the
        // rest form the generic service's collection graph.
        engine.split_pep();
        let repaired = engine.load_graph();
        if !repaired.is_empty() {
            store.pubsub_apply(&repaired).map_err(EngineError::Store)?;
        }
        Ok(engine)
    }

    /// The service JID.
    pub fn service(&self) -> &Jid {
        &self.service
    }

    /// Number of nodes (the root collection is not counted).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - usize::from(self.nodes.contains_key(dag::ROOT))
    }

    /// [`Engine::handle_iq`], without holding the outputs.
    fn handle_iq_now(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        from: &Jid,
        iq: &Element,
        now_ms: u64,
    ) -> Vec<Delivery> {
        self.out.clear();
        self.now_ms = now_ms;
        let ty = iq.attr("type").unwrap_or("");
        if !matches!(ty, "get" | "set") {
            return Vec::new();
        }
        // XEP-0163: an IQ to an account's bare JID (or without `to`: the sender's own)
        // is for that account's PEP service (the router sends only those here).
        if self.pep_owner.is_none() {
            let target = match iq.attr("to") {
                None => Some(from.bare()),
                Some(t) => Jid::parse(t).ok().map(|j| j.bare()),
            };
            if let Some(owner) = target.filter(|t| *t != self.service) {
                return self.with_pep(&owner, |e| e.handle_iq_now(dir, store, from, iq, now_ms));
            }
        }
        let req = Req {
            bare: from.bare(),
            now_ms,
        };
        let result = match proto::iq_payload(iq) {
            Some(p) if p.is("query", NS_DISCO_INFO) && ty == "get" => self.disco_info(dir, &req, p),
            Some(p) if p.is("query", NS_DISCO_ITEMS) && ty == "get" => {
                self.disco_items(dir, &req, p)
            }
            Some(p) if p.is("pubsub", NS_PUBSUB) => self.pubsub(dir, store, &req, p, ty == "set"),
            Some(p) if p.is("pubsub", NS_PUBSUB_OWNER) => {
                self.owner(dir, store, &req, p, ty == "set")
            }
            Some(p) if p.is("command", NS_COMMANDS) && ty == "set" => self.command(&req, p),
            _ => {
                let err =
                    crate::proto::StanzaError::new(crate::proto::Condition::ServiceUnavailable);
                let mut v = Vec::new();
                if let Some(r) = proto::error_reply(iq, &err) {
                    v.push(Delivery {
                        to: from.clone(),
                        stanza: Stanza::from(r.to_string_in_stream()),
                    });
                }
                return v;
            }
        };
        let mut v = Vec::with_capacity(1 + self.out.len());
        match result {
            Ok(payload) => {
                let mut s = String::with_capacity(96 + payload.as_ref().map_or(0, String::len));
                let _ = write!(
                    s,
                    "<iq type='result' id='{}' to='{}' from='{}'",
                    attr(iq.attr("id").unwrap_or("")),
                    attr(from.as_str()),
                    attr(iq.attr("to").unwrap_or(self.service.as_str()))
                );
                match payload {
                    Some(p) => {
                        s.push('>');
                        s.push_str(&p);
                        s.push_str("</iq>");
                    }
                    None => s.push_str("/>"),
                }
                v.push(Delivery {
                    to: from.clone(),
                    stanza: Stanza::from(s),
                });
                v.append(&mut self.out);
            }
            Err(e) => {
                self.out.clear();
                if let Some(r) = proto::error_reply(iq, &e.to_stanza_error()) {
                    v.push(Delivery {
                        to: from.clone(),
                        stanza: Stanza::from(r.to_string_in_stream()),
                    });
                }
            }
        }
        v
    }

    /// [`Engine::on_available`], without holding the outputs.
    fn on_available_now(&mut self, full: &Jid, now_ms: u64) -> Vec<Delivery> {
        let bare = full.bare();
        let mut out = Vec::new();
        for (name, n) in &self.nodes {
            if n.config.send_last != SendLast::OnSubAndPresence {
                continue;
            }
            let Some(last) = &n.last else { continue };
            if n.expired(last.published_ms, now_ms) {
                continue;
            }
            let subscribed = n
                .subs
                .iter()
                .any(|s| s.active(now_ms) && (s.jid == bare || &s.jid == full));
            if subscribed {
                let inner = self.items_event(
                    name,
                    &item_xml(
                        last,
                        n.config.deliver_payloads,
                        n.config.itemreply_publisher,
                    ),
                );
                out.push(self.message(full, n.config.headline, &inner, Some(last.published_ms)));
            }
        }
        out
    }

    // ------------------------------------------------------------ timers and presence

    /// When the next item (`item_expire`) or subscription lease (`pubsub#expire`) ends,
    /// in ms since the epoch; `None` when nothing is due. The router sleeps until then and
    /// calls [`Engine::on_tick`].
    pub fn next_deadline(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(Node::next_deadline)
            .min()
            .map(|d| d.max(self.retry_at))
    }

    /// Records and returns the deadline the timer now sleeps until.
    pub fn arm(&mut self) -> Option<u64> {
        self.armed = self.next_deadline();
        self.armed
    }

    /// Whether the next deadline moved earlier than the one the timer sleeps until (the
    /// router then wakes the timer).
    pub fn needs_rearm(&self) -> bool {
        match (self.next_deadline(), self.armed) {
            (Some(d), Some(a)) => d < a,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Deletes what expired by `now_ms` in one commit: items past `item_expire` (retract
    /// notifications if `notify_retract`) and subscriptions past their lease (the
    /// subscriber is told its subscription is `none`, owners if `notify_sub`). A failed
    /// commit is logged and retried 5 s later.
    pub fn on_tick(&mut self, dir: &dyn Directory, store: &Store, now_ms: u64) -> Vec<Delivery> {
        self.out.clear();
        self.now_ms = now_ms;
        if now_ms < self.retry_at {
            return Vec::new();
        }
        let mut ops = Vec::new();
        let mut items: Vec<(String, Vec<(u64, String)>)> = Vec::new();
        let mut leases: Vec<(String, Sub)> = Vec::new();
        for (name, n) in &self.nodes {
            if n.next_deadline().is_none_or(|d| d > now_ms) {
                continue;
            }
            if n.config.persist_items {
                let gone: Vec<(u64, String)> = n
                    .items
                    .iter()
                    .filter(|e| n.expired(e.published_ms, now_ms))
                    .map(|e| (e.seq, e.id.clone()))
                    .collect();
                for (seq, _) in &gone {
                    ops.push(PubsubOp::DeleteItem(name.clone(), *seq));
                }
                if !gone.is_empty() {
                    items.push((name.clone(), gone));
                }
            }
            for s in n
                .subs
                .iter()
                .filter(|s| s.opts.expire_ms != 0 && s.opts.expire_ms <= now_ms)
            {
                ops.push(s.delete(name));
                leases.push((name.clone(), s.clone()));
            }
        }
        if ops.is_empty() {
            return Vec::new();
        }
        if self.commit(store, &ops).is_err() {
            self.retry_at = now_ms.saturating_add(5000);
            return Vec::new();
        }
        self.retry_at = 0;
        for (name, gone) in &items {
            let Some(n) = self.nodes.get_mut(name) else {
                continue;
            };
            let seqs: Vec<u64> = gone.iter().map(|(s, _)| *s).collect();
            n.remove_seqs(&seqs);
            if n.config.notify_retract {
                for (_, id) in gone {
                    let inner = self.items_event(name, &format!("<retract id='{}'/>", attr(id)));
                    self.notify_items(dir, name, &inner, None);
                }
            }
        }
        for (name, sub) in &leases {
            if let Some(n) = self.nodes.get_mut(name) {
                n.subs
                    .retain(|s| !(s.jid == sub.jid && s.subid == sub.subid));
                n.subs_changed();
            }
            self.subscription_changed(name, &sub.jid, &sub.subid, "none");
            self.notify_owners_sub(name, &sub.jid, &sub.subid, "none");
        }
        tracing::debug!(
            items = items.iter().map(|(_, g)| g.len()).sum::<usize>(),
            leases = leases.len(),
            "pub-sub expiry"
        );
        std::mem::take(&mut self.out)
    }

    /// `full` went unavailable (`account_offline`: it was the account's last available
    /// resource). Temporary subscriptions (§12.4, `tempsub`) of that resource, or of the
    /// bare JID when the account is now offline, end; nodes with `purge_offline` whose
    /// stored items were all published by entities now offline are purged.
    pub fn on_unavailable(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        full: &Jid,
        account_offline: bool,
        now_ms: u64,
    ) -> Vec<Delivery> {
        self.out.clear();
        self.now_ms = now_ms;
        let bare = full.bare();
        let mut ops = Vec::new();
        let mut ended: Vec<(String, Sub)> = Vec::new();
        let mut purged: Vec<String> = Vec::new();
        for (name, n) in &self.nodes {
            let temp = |s: &Sub| s.opts.temporary || n.config.tempsub;
            for s in n
                .subs
                .iter()
                .filter(|s| temp(s) && (s.jid == *full || (account_offline && s.jid == bare)))
            {
                ops.push(s.delete(name));
                ended.push((name.clone(), s.clone()));
            }
            // Who published what the node holds (a transient node: its last item).
            let publishers: Vec<&str> = if n.config.persist_items {
                n.items.iter().map(|e| &*e.publisher).collect()
            } else {
                n.last.iter().map(|l| l.publisher.as_str()).collect()
            };
            if account_offline && n.config.purge_offline && publishers.contains(&bare.as_str()) {
                let mut others: Vec<&str> = publishers
                    .into_iter()
                    .filter(|p| *p != bare.as_str())
                    .collect();
                others.sort_unstable();
                others.dedup();
                let online = others
                    .iter()
                    .filter_map(|p| Jid::parse(p).ok())
                    .any(|p| !dir.presences(&p).is_empty());
                if !online {
                    ops.push(PubsubOp::PurgeItems(name.clone()));
                    purged.push(name.clone());
                }
            }
        }
        if ops.is_empty() || self.commit(store, &ops).is_err() {
            return Vec::new();
        }
        for (name, sub) in &ended {
            if let Some(n) = self.nodes.get_mut(name) {
                n.subs
                    .retain(|s| !(s.jid == sub.jid && s.subid == sub.subid));
                n.subs_changed();
            }
            self.notify_owners_sub(name, &sub.jid, &sub.subid, "none");
        }
        for name in &purged {
            if let Some(n) = self.nodes.get_mut(name) {
                n.clear_items();
                n.last = None;
            }
            let inner = format!("<purge node='{}'/>", attr(name));
            self.notify(dir, name, &inner);
        }
        std::mem::take(&mut self.out)
    }

    // ------------------------------------------------------------ helpers

    /// One notification: the per-subscriber envelope around the shared `inner` text.
    fn message(&self, to: &Jid, headline: bool, inner: &str, delay_ms: Option<u64>) -> Delivery {
        self.message_ext(to, headline, &Rc::from(inner), delay_ms, &[], None)
    }

    /// [`Engine::message`] around a shared `inner`, with XEP-0131 SHIM headers
    /// (`(name, value)`: `SubID`, `Collection`) and an optional `<body/>`.
    fn message_ext(
        &self,
        to: &Jid,
        headline: bool,
        inner: &Rc<str>,
        delay_ms: Option<u64>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Delivery {
        // The envelope is the recipient's own; `inner` (the event payload, with the item)
        // is shared by every recipient of one notification, never copied per subscriber.
        let mut head = String::with_capacity(96 + self.service_attr.len());
        head.push_str("<message from='");
        head.push_str(&self.service_attr);
        head.push_str("' to='");
        escape_attr(to.as_str(), &mut head);
        head.push_str(if headline {
            "' type='headline'>"
        } else {
            "' type='normal'>"
        });
        head.push_str("<event xmlns='");
        head.push_str(NS_PUBSUB_EVENT);
        head.push_str("'>");
        if body.is_none() && headers.is_empty() && delay_ms.is_none() {
            return Delivery {
                to: to.clone(),
                stanza: Stanza::wrapped(&head, inner, Cow::Borrowed("</event></message>")),
            };
        }
        let mut tail = String::with_capacity(64);
        tail.push_str("</event>");
        if let Some(b) = body {
            tail.push_str("<body>");
            escape_text(b, &mut tail);
            tail.push_str("</body>");
        }
        if !headers.is_empty() {
            let _ = write!(tail, "<headers xmlns='{NS_SHIM}'>");
            for (name, value) in headers {
                tail.push_str("<header name='");
                escape_attr(name, &mut tail);
                tail.push_str("'>");
                escape_text(value, &mut tail);
                tail.push_str("</header>");
            }
            tail.push_str("</headers>");
        }
        if let Some(ms) = delay_ms {
            let _ = write!(
                tail,
                "<delay xmlns='{NS_DELAY}' from='{}' stamp='{}'/>",
                attr(self.service.as_str()),
                xep0082(ms)
            );
        }
        tail.push_str("</message>");
        Delivery {
            to: to.clone(),
            stanza: Stanza::wrapped(&head, inner, Cow::Owned(tail)),
        }
    }

    fn items_event(&self, node: &str, body: &str) -> String {
        let mut s = String::with_capacity(32 + node.len() + body.len());
        let _ = write!(s, "<items node='{}'>", attr(node));
        s.push_str(body);
        s.push_str("</items>");
        s
    }

    /// Queues `inner` (inside `<event/>`) for every subscriber of `node` that takes
    /// notifications.
    fn notify(&mut self, dir: &dyn Directory, node: &str, inner: &str) {
        self.notify_body(dir, node, inner, None, false);
    }

    /// [`Engine::notify`] for item publications and retractions: these carry SHIM
    /// `SubID` headers (§12.5; configuration, purge and delete notifications do not).
    fn notify_items(&mut self, dir: &dyn Directory, node: &str, inner: &str, body: Option<&str>) {
        self.notify_body(dir, node, inner, body, true);
    }

    /// [`Engine::notify`], with `body` as the `<body/>` for subscriptions with
    /// `include_body`. One message per JID: with `shim`, a JID with several subscriptions
    /// gets one message carrying the SubIDs as SHIM headers (§12.5). Subscriptions with
    /// `show-values` go to the account's available resources whose `<show/>` matches.
    fn notify_body(
        &mut self,
        dir: &dyn Directory,
        node: &str,
        inner: &str,
        body: Option<&str>,
        shim: bool,
    ) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        if !n.config.deliver_notifications {
            return;
        }
        let headline = n.config.headline;
        let now = self.now_ms;
        // Serialised once; every recipient's message shares it.
        let inner: Rc<str> = Rc::from(inner);
        let inner = &inner;
        let mut msgs = Vec::new();
        let mut i = 0;
        while i < n.subs.len() {
            let jid = &n.subs[i].jid;
            let mut j = i;
            while j < n.subs.len() && &n.subs[j].jid == jid {
                j += 1;
            }
            let group = &n.subs[i..j];
            i = j;
            // Fast path: one plain subscription (no allocation per subscriber).
            if let [s] = group {
                if !n.config.presence_based && s.opts.show & SHOW_SET == 0 {
                    if s.active(now) {
                        let b = body.filter(|_| s.opts.include_body);
                        msgs.push(self.message_ext(jid, headline, inner, None, &[], b));
                    }
                    continue;
                }
            }
            let active: Vec<&Sub> = group.iter().filter(|s| s.active(now)).collect();
            if active.is_empty() {
                continue;
            }
            // presence_based_delivery: a full JID must be available (a bare JID reaches
            // only available resources anyway).
            if n.config.presence_based
                && jid.is_full()
                && !dir.presences(&jid.bare()).iter().any(|(r, _)| r == jid)
            {
                continue;
            }
            let several = shim && group.len() > 1;
            let send = |to: &Jid, subs: &[&Sub], msgs: &mut Vec<Delivery>| {
                let ids: Vec<(&str, &str)> = if several {
                    subs.iter().map(|s| ("SubID", s.subid.as_str())).collect()
                } else {
                    Vec::new()
                };
                let b = body.filter(|_| subs.iter().any(|s| s.opts.include_body));
                msgs.push(self.message_ext(to, headline, inner, None, &ids, b));
            };
            if active.iter().all(|s| s.opts.show & SHOW_SET == 0) {
                send(jid, &active, &mut msgs);
                continue;
            }
            for (res, show) in dir.presences(&jid.bare()) {
                if jid.is_full() && &res != jid {
                    continue;
                }
                let subs: Vec<&Sub> = active
                    .iter()
                    .copied()
                    .filter(|s| s.opts.show_ok(&show))
                    .collect();
                if !subs.is_empty() {
                    send(&res, &subs, &mut msgs);
                }
            }
        }
        self.out.extend(msgs);
        self.notify_pep(dir, node, inner);
    }

    /// §12.13 (impl-subchange): tells `jid` that its subscription `subid` changed to
    /// `state`, with an `<event/>` holding one `<subscription/>`.
    fn subscription_changed(&mut self, node: &str, jid: &Jid, subid: &str, state: &str) {
        let s = format!(
            "<message from='{}' to='{}'><event xmlns='{NS_PUBSUB_EVENT}'><subscription node='{}' jid='{}' subid='{}' subscription='{state}'/></event></message>",
            attr(self.service.as_str()),
            attr(jid.as_str()),
            attr(node),
            attr(jid.as_str()),
            attr(subid)
        );
        self.out.push(Delivery {
            to: jid.clone(),
            stanza: Stanza::from(s),
        });
    }

    /// `notify_sub`: tells every owner of `node` that `jid`'s subscription `subid` is now
    /// `state` (an event notification carrying the `<subscription/>`).
    fn notify_owners_sub(&mut self, node: &str, jid: &Jid, subid: &str, state: &str) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        if !n.config.notify_sub {
            return;
        }
        let inner = format!(
            "<subscription node='{}' jid='{}' subid='{}' subscription='{state}'/>",
            attr(node),
            attr(jid.as_str()),
            attr(subid)
        );
        let msgs: Vec<Delivery> = n
            .affs
            .iter()
            .filter(|(_, a)| *a == Affiliation::Owner)
            .filter_map(|(j, _)| Jid::parse(j).ok())
            .map(|o| self.message(&o, n.config.headline, &inner, None))
            .collect();
        self.out.extend(msgs);
    }

    /// Stages `ops` (one request's changes) for the next commit, or commits them at once
    /// in [`crate::store::CommitMode::Inline`]; call before changing memory.
    fn commit(&self, store: &Store, ops: &[PubsubOp]) -> Result<(), PubSubError> {
        let mapped;
        let ops = match &self.pep_owner {
            None => ops,
            Some(o) => {
                mapped = pep::store_ops(o, ops);
                &mapped
            }
        };
        store.pubsub_stage(ops).map_err(|e| match e {
            StoreError::LimitReached { .. } => PubSubError::Backlog,
            e => {
                tracing::error!(error = %e, "pub-sub store commit failed");
                PubSubError::Internal
            }
        })
    }

    fn affiliation(&self, node: &Node, bare: &Jid) -> Affiliation {
        // XEP-0163: the account is the one owner of its PEP nodes (`pubsub.admins` are
        // not); on the generic service, admins own every node.
        match &self.pep_owner {
            Some(o) if o == bare => return Affiliation::Owner,
            Some(_) => {}
            None if self.admins.iter().any(|a| a == bare.as_str()) => {
                return Affiliation::Owner;
            }
            None => {}
        }
        node.affs
            .iter()
            .find(|(j, _)| j == bare.as_str())
            .map_or(Affiliation::None, |(_, a)| *a)
    }

    fn node(&self, name: &str) -> Result<&Node, PubSubError> {
        self.nodes.get(name).ok_or(PubSubError::NodeNotFound)
    }

    fn require_owner(&self, name: &str, bare: &Jid) -> Result<&Node, PubSubError> {
        let n = self.node(name)?;
        if self.affiliation(n, bare) != Affiliation::Owner {
            return Err(PubSubError::Forbidden("only owners may do this"));
        }
        Ok(n)
    }

    fn may_create(&self, bare: &Jid) -> bool {
        if let Some(o) = &self.pep_owner {
            return o == bare;
        }
        self.admins.iter().any(|a| a == bare.as_str())
            || match self.create_policy {
                CreatePolicy::Anyone => true,
                CreatePolicy::Local => bare.domain() == self.domain && bare.local().is_some(),
                CreatePolicy::Admins => false,
            }
    }

    /// May `bare` subscribe to / retrieve items of `node` (§4.5, §6.1.3, §6.5.9)?
    fn check_access(
        &self,
        dir: &dyn Directory,
        node: &Node,
        bare: &Jid,
    ) -> Result<(), PubSubError> {
        match self.affiliation(node, bare) {
            Affiliation::Outcast => return Err(PubSubError::Outcast),
            Affiliation::PublishOnly => {
                return Err(PubSubError::Forbidden("publish-only entities cannot read"));
            }
            Affiliation::Owner | Affiliation::Publisher | Affiliation::Member => return Ok(()),
            Affiliation::None => {}
        }
        let owners = || {
            node.affs
                .iter()
                .filter(|(_, a)| *a == Affiliation::Owner)
                .filter_map(|(j, _)| Jid::parse(j).ok())
        };
        match node.config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Presence => {
                if owners().any(|o| dir.roster_entry(&o, bare).is_some_and(|(from, _)| from)) {
                    Ok(())
                } else {
                    Err(PubSubError::PresenceSubscriptionRequired)
                }
            }
            AccessModel::Roster => {
                let allowed = &node.config.roster_groups_allowed;
                let ok = owners().any(|o| {
                    dir.roster_entry(&o, bare)
                        .is_some_and(|(_, groups)| groups.iter().any(|g| allowed.contains(g)))
                });
                if ok {
                    Ok(())
                } else {
                    Err(PubSubError::NotInRosterGroup)
                }
            }
            AccessModel::Whitelist => Err(PubSubError::ClosedNode),
            AccessModel::Authorize => {
                let mine = || node.subs.iter().filter(|s| s.jid.bare() == *bare);
                if mine().any(|s| s.state == SubState::Subscribed) {
                    Ok(())
                } else if mine().any(|s| s.state == SubState::Pending) {
                    Err(PubSubError::PendingSubscription)
                } else {
                    Err(PubSubError::AuthorizationRequired)
                }
            }
        }
    }

    fn new_id(&mut self, now_ms: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        format!("{now_ms:x}-{:x}", self.counter)
    }

    /// A generated id for a new item of `node` that no item of the node has: a publish
    /// must never overwrite an item by an id the client did not choose.
    fn new_item_id(&mut self, node: &str, now_ms: u64) -> String {
        let taken = |e: &Self, id: &str| {
            e.nodes
                .get(node)
                .is_some_and(|n| n.items.iter().any(|i| i.id == id))
        };
        // Each try has a new counter value; at most one try per item can fail.
        let tries = self.nodes.get(node).map_or(0, |n| n.items.len()) + 1;
        let mut id = self.new_id(now_ms);
        for _ in 1..tries {
            if !taken(self, &id) {
                break;
            }
            id = self.new_id(now_ms);
        }
        id
    }

    /// Starts the counter of generated ids at `seed`: the router gives a random value per
    /// process (and per reload), so that ids from different runs differ.
    pub fn seed_ids(&mut self, seed: u64) {
        self.counter = seed;
    }

    /// The counter of generated ids, to carry over to an engine reloaded in this process.
    pub(crate) fn id_counter(&self) -> u64 {
        self.counter
    }

    fn node_attr(e: &Element) -> Result<&str, PubSubError> {
        match e.attr("node") {
            Some(n) if !n.is_empty() => Ok(n),
            _ => Err(PubSubError::NodeIdRequired),
        }
    }

    /// Reads items of `node` by index entries (payloads from the store).
    fn load_items(
        &self,
        store: &Store,
        name: &str,
        entries: &[&IndexEntry],
    ) -> Result<Vec<CachedItem>, PubSubError> {
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        let key = self.store_key(name);
        let got = store.pubsub_items(&key, &seqs).map_err(|e| {
            tracing::error!(node = name, error = %e, "cannot read pub-sub items");
            PubSubError::Internal
        })?;
        let mut out = Vec::with_capacity(got.len());
        for r in got.into_iter().flatten() {
            out.push(CachedItem {
                id: r.id,
                publisher: r.publisher,
                published_ms: r.published_ms,
                payload: r.payload,
            });
        }
        Ok(out)
    }

    // ------------------------------------------------------------ disco (XEP-0030)

    fn disco_info(
        &self,
        dir: &dyn Directory,
        req: &Req,
        q: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let mut out = Element::new("query", NS_DISCO_INFO);
        match q.attr("node") {
            None => {
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "service")
                        .with_attr("name", "Kinglet publish-subscribe"),
                );
                // XEP-0059 paging of items, also under its own namespace (§6.5.4).
                for f in [
                    NS_DISCO_INFO,
                    NS_DISCO_ITEMS,
                    NS_PUBSUB,
                    NS_RSM,
                    NS_COMMANDS,
                ] {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
                }
                for f in FEATURES {
                    out.push_child(
                        Element::new("feature", NS_DISCO_INFO)
                            .with_attr("var", format!("{NS_PUBSUB}#{f}")),
                    );
                }
            }
            Some(CMD_GET_PENDING) => {
                // XEP-0050 §2.3: the command node.
                out.set_attr("node", CMD_GET_PENDING);
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "automation")
                        .with_attr("type", "command-node")
                        .with_attr("name", "Get pending subscriptions"),
                );
                for f in [NS_COMMANDS, NS_DATA] {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
                }
            }
            Some(name) => {
                let n = self.node(name)?;
                // PEP: a node the requester may not read does not exist for it.
                if self.pep_owner.is_some() && self.check_access(dir, n, &req.bare).is_err() {
                    return Err(PubSubError::NodeNotFound);
                }
                out.set_attr("node", name);
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", n.config.kind.as_str()),
                );
                for f in [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PUBSUB] {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
                }
                out.push_child(self.meta_data(n));
            }
        }
        let mut s = String::new();
        out.write_to(&mut s, NS_CLIENT);
        Ok(Some(s))
    }

    /// The `pubsub#meta-data` form (§5.4).
    fn meta_data(&self, n: &Node) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", "result");
        x.push_child(hidden_form_type(FORM_META_DATA));
        let mut field = |var: &str, ty: &str, values: Vec<String>| {
            let mut f = Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", ty);
            for v in values {
                f.push_child(Element::new("value", NS_DATA).with_text(v));
            }
            x.push_child(f);
        };
        let with = |a: Affiliation| -> Vec<String> {
            n.affs
                .iter()
                .filter(|(_, x)| *x == a)
                .map(|(j, _)| j.clone())
                .collect()
        };
        field(
            "pubsub#node_type",
            "text-single",
            vec![n.config.kind.as_str().to_owned()],
        );
        field("pubsub#title", "text-single", vec![n.config.title.clone()]);
        field("pubsub#contact", "jid-multi", n.config.contact.clone());
        field(
            "pubsub#language",
            "text-single",
            vec![n.config.language.clone()],
        );
        field(
            "pubsub#description",
            "text-single",
            vec![n.config.description.clone()],
        );
        field(
            "pubsub#type",
            "text-single",
            vec![n.config.payload_type.clone()],
        );
        field("pubsub#creator", "jid-single", vec![n.creator.clone()]);
        field(
            "pubsub#creation_date",
            "text-single",
            vec![xep0082(n.created_ms)],
        );
        field(
            "pubsub#access_model",
            "list-single",
            vec![n.config.access_model_str().to_owned()],
        );
        field(
            "pubsub#publish_model",
            "list-single",
            vec![n.config.publish_model_str().to_owned()],
        );
        field(
            "pubsub#num_subscribers",
            "text-single",
            vec![n.subscribed().to_string()],
        );
        field("pubsub#owner", "jid-multi", with(Affiliation::Owner));
        field(
            "pubsub#publisher",
            "jid-multi",
            with(Affiliation::Publisher),
        );
        field(
            "pubsub#max_items",
            "text-single",
            vec![n.config.effective_max_items(&self.limits).to_string()],
        );
        x
    }

    /// disco#items of the service (its nodes) or of a node (its item ids), paged with
    /// XEP-0059 like items retrieval and never larger than half an outbox.
    fn disco_items(
        &self,
        dir: &dyn Directory,
        req: &Req,
        q: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let svc = attr(self.service.as_str());
        let page = q
            .child("set", NS_RSM)
            .map(|set| Page::parse(set, self.limits.pubsub_max_page_items))
            .transpose()?;
        // (key, fragment) in order.
        // XEP-0248: the service (the root collection) and every collection list their
        // children.
        let children = |c: &str| -> Vec<(&str, String)> {
            self.dag
                .children(c)
                .iter()
                .filter_map(|id| self.nodes.get_key_value(&**id))
                // PEP: only the nodes the requester may read (XEP-0163 §6).
                .filter(|(_, n)| {
                    self.pep_owner.is_none() || self.check_access(dir, n, &req.bare).is_ok()
                })
                .map(|(name, n)| {
                    let mut f = format!("<item jid='{svc}' node='{}'", attr(name));
                    if !n.config.title.is_empty() {
                        let _ = write!(f, " name='{}'", attr(&n.config.title));
                    }
                    f.push_str("/>");
                    (name.as_str(), f)
                })
                .collect()
        };
        let (head, rows): (String, Vec<(&str, String)>) = match q.attr("node") {
            None | Some("") => (format!("<query xmlns='{NS_DISCO_ITEMS}'>"), children("")),
            Some(name) if self.dag.kind(name) == Some(Kind::Collection) => (
                format!("<query xmlns='{NS_DISCO_ITEMS}' node='{}'>", attr(name)),
                children(name),
            ),
            Some(NS_COMMANDS) => (
                format!("<query xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'>"),
                vec![(
                    CMD_GET_PENDING,
                    format!(
                        "<item jid='{svc}' node='{CMD_GET_PENDING}' name='Get pending subscriptions'/>"
                    ),
                )],
            ),
            Some(name) => {
                let n = self.node(name)?;
                if self.pep_owner.is_some() && self.check_access(dir, n, &req.bare).is_err() {
                    return Err(PubSubError::NodeNotFound);
                }
                let ids: Vec<&str> = if n.config.persist_items {
                    n.items
                        .iter()
                        .filter(|e| !n.expired(e.published_ms, req.now_ms))
                        .map(|e| e.id.as_str())
                        .collect()
                } else {
                    n.last.iter().map(|l| l.id.as_str()).collect()
                };
                (
                    format!("<query xmlns='{NS_DISCO_ITEMS}' node='{}'>", attr(name)),
                    ids.into_iter()
                        .map(|id| (id, format!("<item jid='{svc}' name='{}'/>", attr(id))))
                        .collect(),
                )
            }
        };
        let keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
        let window = match &page {
            None => Window::all(keys.len()),
            Some(p) => p.window(&keys)?,
        }
        .fit(&rows, self.limits.outbox_max_bytes / 2, |(_, f)| f.len());
        let mut s = head;
        for (_, f) in window.slice(&rows) {
            s.push_str(f);
        }
        if page.is_some() || !window.is_whole() {
            s.push_str(&window.set_xml(&keys));
        }
        s.push_str("</query>");
        Ok(Some(s))
    }

    // ------------------------------------------------------------ pubsub namespace

    fn pubsub(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        p: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        let mut children = p.elements();
        let Some(first) = children.next() else {
            return Err(PubSubError::BadRequest("empty pubsub element"));
        };
        let rest: Vec<&Element> = children.collect();
        let sibling = |name: &str| rest.iter().copied().find(|e| e.is(name, NS_PUBSUB));
        match (first.name.as_str(), set) {
            ("create", true) => self.create(dir, store, req, first, sibling("configure")),
            ("publish", true) => self.publish(dir, store, req, first, sibling("publish-options")),
            ("retract", true) => self.retract(dir, store, req, first),
            ("subscribe", true) => self.subscribe(dir, store, req, first, sibling("options")),
            ("unsubscribe", true) => self.unsubscribe(store, req, first),
            ("options", _) => self.options(store, req, first, set),
            ("items", false) => {
                let rsm = rest.iter().copied().find(|e| e.is("set", NS_RSM));
                self.items(dir, store, req, first, rsm)
            }
            ("subscriptions", false) => Ok(Some(self.own_subscriptions(req, first))),
            ("affiliations", false) => Ok(Some(self.own_affiliations(req, first))),
            ("default", false) => Ok(Some(Self::default_sub_options(first))),
            ("configure", _) if rest.is_empty() => Err(PubSubError::BadRequest(
                "configure belongs in the owner namespace",
            )),
            _ => Err(PubSubError::BadRequest("unknown pubsub request")),
        }
    }

    /// §8.1 create (named, instant, create-and-configure).
    fn create(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        c: &Element,
        configure: Option<&Element>,
    ) -> Result<Option<String>, PubSubError> {
        if !self.may_create(&req.bare) {
            return Err(PubSubError::Forbidden("you may not create nodes"));
        }
        let instant = c.attr("node").is_none_or(str::is_empty);
        let name = match c.attr("node") {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => loop {
                let id = format!("instant-{}", self.new_id(req.now_ms));
                if !self.nodes.contains_key(&id) {
                    break id;
                }
            },
        };
        let mut cfg = self.default_config();
        if let Some(x) = configure.and_then(find_form) {
            cfg.apply_form(x, FORM_NODE_CONFIG, &self.limits)?;
        }
        // PEP: the operator's forced fields win at creation; one the form contradicts
        // is refused rather than overridden.
        self.check_forced_form(&name, &cfg)?;
        self.apply_forced(&name, &mut cfg)?;
        self.create_node(dir, store, req, &name, cfg, Vec::new())?;
        if instant {
            Ok(Some(format!(
                "<pubsub xmlns='{NS_PUBSUB}'><create node='{}'/></pubsub>",
                attr(&name)
            )))
        } else {
            Ok(None)
        }
    }

    /// Validates and commits a new node (plus `extra` ops in the same transaction). The
    /// node joins the collection graph under its `pubsub#collection` parents (or, with
    /// `path_collections`, under the collections its `/` path names, created here as
    /// well); the graph changes first and is reverted if the commit fails.
    fn create_node(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        name: &str,
        mut cfg: NodeConfig,
        extra: Vec<PubsubOp>,
    ) -> Result<(), PubSubError> {
        if name.len() > MAX_NODE_ID_BYTES {
            return Err(PubSubError::BadRequest("node id too long"));
        }
        if self.nodes.contains_key(name) {
            return Err(PubSubError::NodeExists);
        }
        if self.node_count() >= self.limits.pubsub_max_nodes {
            return Err(PubSubError::MaxNodes);
        }
        let parents = std::mem::take(&mut cfg.parents);
        let children = cfg.children.take();
        let kind = cfg.kind;
        if self.pep_owner.is_some() && (kind == Kind::Collection || !parents.is_empty()) {
            // PEP services are flat (XEP-0163 leaves collections out).
            return Err(PubSubError::Unsupported("collections"));
        }
        // A clean `/` path whose existing ancestors are collections; anything else
        // (URIs with `//`, a leaf on the way) is created flat, as XEP-0060 nodes always were.
        let path = self.path_collections
            && parents.is_empty()
            && dag::implicit_parents(name).is_some_and(|a| {
                !a.is_empty() && a.iter().all(|p| self.dag.kind(p) != Some(Kind::Leaf))
            });
        let (created, mut events) = self.with_dag(&req.bare, |d, may| {
            if path {
                d.create_with_path(name, kind, may)
            } else {
                let ps: Vec<&str> = parents.iter().map(String::as_str).collect();
                d.create(name, kind, &ps, may)
                    .map(|ev| (vec![Rc::from(name)], ev))
            }
        })?;
        let undo = |e: &mut Engine, events: &[dag::Event]| {
            e.dag.revert(events);
            for c in created.iter().rev() {
                let _ = e.dag.remove(c);
            }
        };
        if kind == Kind::Collection {
            let r = self
                .dag
                .set_children_max(name, cfg.children_max)
                .map_err(PubSubError::Dag)
                .and_then(|()| match &children {
                    Some(ch) => self.with_dag(&req.bare, |d, may| {
                        let ch: Vec<&str> = ch.iter().map(String::as_str).collect();
                        d.set_children(name, &ch, may)
                    }),
                    None => Ok(Vec::new()),
                });
            match r {
                Ok(mut ev) => events.append(&mut ev),
                Err(e) => {
                    undo(self, &events);
                    return Err(e);
                }
            }
        }
        let mut nodes = Vec::with_capacity(created.len());
        let mut ops = Vec::with_capacity(2 * created.len() + extra.len());
        for id in &created {
            let mut c = if &**id == name {
                cfg.clone()
            } else {
                NodeConfig::collection_default(&self.limits)
            };
            c.parents = self.explicit_parents(id);
            let node = Node {
                created_ms: req.now_ms,
                creator: req.bare.as_str().to_owned(),
                config: c,
                items: VecDeque::new(),
                stored: 0,
                next_seq: 1,
                last: None,
                subs: Vec::new(),
                lease_min: 0,
                affs: vec![(req.bare.as_str().to_owned(), Affiliation::Owner)],
            };
            ops.push(PubsubOp::PutNode(id.to_string(), node.record()));
            ops.push(PubsubOp::PutAffiliation(
                id.to_string(),
                req.bare.as_str().to_owned(),
                Affiliation::Owner.code(),
            ));
            nodes.push((id.to_string(), node));
        }
        let skip: Vec<&str> = created.iter().map(|c| &**c).collect();
        ops.extend(self.edge_ops(&events, &skip));
        ops.extend(extra);
        if let Err(e) = self.commit(store, &ops) {
            undo(self, &events);
            return Err(e);
        }
        self.nodes.extend(nodes);
        self.sync_parents(&events);
        self.notify_edges(dir, &events);
        Ok(())
    }

    /// §7.1 publish, with §7.1.5 publish-options and auto-create.
    fn publish(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        p: &Element,
        options: Option<&Element>,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(p)?.to_owned();
        let items: Vec<&Element> = p.elements().filter(|e| e.is("item", NS_PUBSUB)).collect();
        if items.len() > 1 || p.elements().count() != items.len() {
            return Err(PubSubError::BadRequest("publish exactly one item"));
        }
        let item = items.first().copied();
        let payload = match item {
            None => None,
            Some(it) => {
                let mut kids = it.elements();
                let first = kids.next();
                if kids.next().is_some() {
                    return Err(PubSubError::InvalidPayload);
                }
                first
            }
        };
        let options_form = options.and_then(find_form);
        let exists = self.nodes.contains_key(&name);
        let cfg = if exists {
            let n = self.node(&name)?;
            if n.config.kind == Kind::Collection {
                // XEP-0248: a collection holds nodes, never items.
                return Err(PubSubError::Unsupported("publish"));
            }
            let allowed = match self.affiliation(n, &req.bare) {
                Affiliation::Owner | Affiliation::Publisher | Affiliation::PublishOnly => true,
                Affiliation::Outcast => false,
                Affiliation::Member | Affiliation::None => match n.config.publish_model {
                    PublishModel::Open => true,
                    PublishModel::Subscribers => n
                        .subs
                        .iter()
                        .any(|s| s.jid.bare() == req.bare && s.state == SubState::Subscribed),
                    PublishModel::Publishers => false,
                },
            };
            if !allowed {
                return Err(PubSubError::Forbidden("you may not publish to this node"));
            }
            if let Some(x) = options_form {
                let mut wanted = n.config.clone();
                wanted
                    .apply_form(x, FORM_PUBLISH_OPTIONS, &self.limits)
                    .map_err(|e| PubSubError::PreconditionNotMet(e.to_string()))?;
                // `max` equals the cap it stands for (XEP-0402 asks for `max`).
                let mut have = n.config.clone();
                for c in [&mut wanted, &mut have] {
                    c.max_items = Some(c.effective_max_items(&self.limits));
                }
                if wanted != have {
                    return Err(PubSubError::PreconditionNotMet(
                        "the node configuration differs".into(),
                    ));
                }
            }
            n.config.clone()
        } else {
            if !self.may_create(&req.bare) {
                return Err(PubSubError::NodeNotFound);
            }
            // Auto-create (PEP: always, for the owner): defaults, then the publish-options
            // as configuration, then the operator's forced fields; a forced field the
            // options contradict is `precondition-not-met` and nothing is created.
            let mut cfg = self.default_config();
            if let Some(x) = options_form {
                cfg.apply_form(x, FORM_PUBLISH_OPTIONS, &self.limits)
                    .map_err(|e| PubSubError::PreconditionNotMet(e.to_string()))?;
            }
            self.check_forced_form(&name, &cfg)
                .map_err(|e| PubSubError::PreconditionNotMet(e.to_string()))?;
            self.apply_forced(&name, &mut cfg)?;
            if cfg.kind == Kind::Collection {
                return Err(PubSubError::Unsupported("publish"));
            }
            cfg
        };
        // §7.1.3.6: does the request match the configuration?
        if item.is_none() && cfg.persist_items {
            return Err(PubSubError::ItemRequired);
        }
        if payload.is_none() && cfg.deliver_payloads {
            return Err(PubSubError::PayloadRequired);
        }
        if item.is_some() && !cfg.deliver_payloads && !cfg.persist_items {
            return Err(PubSubError::ItemForbidden);
        }
        let payload_xml = payload.map(serialise_payload).unwrap_or_default();
        if payload_xml.len() > cfg.max_payload_size.min(self.limits.pubsub_max_item_bytes) {
            return Err(PubSubError::PayloadTooBig);
        }
        let id = match item.and_then(|i| i.attr("id")).filter(|i| !i.is_empty()) {
            Some(id) if id.len() > MAX_ITEM_ID_BYTES => {
                return Err(PubSubError::BadRequest("item id too long"));
            }
            Some(id) => id.to_owned(),
            None => self.new_item_id(&name, req.now_ms),
        };
        let cached = Rc::new(CachedItem {
            id: id.clone(),
            // The bare JID: subscribers learn who published, not from which device.
            publisher: req.bare.as_str().to_owned(),
            published_ms: req.now_ms,
            payload: payload_xml,
        });
        // The store batch: item insert, overwrite and eviction (and the node, if new).
        let mut ops = Vec::new();
        let (seq, mut evicted, full) = match self.nodes.get(&name) {
            Some(n) => {
                let (gone, full) =
                    Self::evictions(n, &id, cfg.effective_max_items(&self.limits), req.now_ms);
                (self.next_item_seq.max(n.next_seq), gone, full)
            }
            None => (self.next_item_seq, Vec::new(), Vec::new()),
        };
        // Sequences are service-wide, so that items of different nodes published in the
        // same millisecond still have one order (collection items, newest first).
        self.next_item_seq = seq + 1;
        if cfg.persist_items && !full.is_empty() && cfg.node_full == NodeFull::Reject {
            return Err(PubSubError::NodeFull);
        }
        evicted.extend(full.iter().map(|(s, _)| *s));
        let cost = item_cost(cached.payload.len(), &id, &cached.publisher);
        let elsewhere = if cfg.persist_items {
            self.budget_evictions(&name, &evicted, cost)?
        } else {
            Vec::new()
        };
        for (node, seq) in &elsewhere {
            if node == &name {
                evicted.push(*seq);
            } else {
                ops.push(PubsubOp::DeleteItem(node.clone(), *seq));
            }
        }
        if cfg.persist_items {
            for e in &evicted {
                ops.push(PubsubOp::DeleteItem(name.clone(), *e));
            }
            ops.push(PubsubOp::PutItem(
                name.clone(),
                seq,
                ItemRecord {
                    id: id.clone(),
                    publisher: cached.publisher.clone(),
                    published_ms: cached.published_ms,
                    payload: cached.payload.clone(),
                },
            ));
        }
        if exists {
            self.commit(store, &ops)?;
        } else {
            self.create_node(dir, store, req, &name, cfg.clone(), ops)?;
        }
        for (node, seq) in elsewhere.iter().filter(|(n, _)| n != &name) {
            if let Some(n) = self.nodes.get_mut(node) {
                n.remove_seqs(&[*seq]);
            }
        }
        let Some(n) = self.nodes.get_mut(&name) else {
            return Err(PubSubError::Internal);
        };
        if cfg.persist_items {
            n.remove_seqs(&evicted);
            n.push_item(IndexEntry {
                seq,
                id: id.clone(),
                published_ms: req.now_ms,
                bytes: cached.payload.len(),
                stored: cost,
                publisher: Rc::from(req.bare.as_str()),
            });
            n.next_seq = seq + 1;
        }
        // PEP: a large last item (an avatar) is read from the store when needed instead
        // of being cached for every account (`pep::PEP_CACHE_PAYLOAD_MAX`).
        let pep_big = self.pep_owner.is_some()
            && cfg.persist_items
            && cached.payload.len() > pep::PEP_CACHE_PAYLOAD_MAX;
        n.last = (!pep_big).then(|| cached.clone());
        // Fan-out: the item is serialised once, the envelope per subscriber.
        let shared = self.items_event(
            &name,
            &item_xml(&cached, cfg.deliver_payloads, cfg.itemreply_publisher),
        );
        // The text rendering costs a parse of the payload: only when someone wants it.
        let body = self
            .nodes
            .get(&name)
            .is_some_and(|n| n.subs.iter().any(|s| s.opts.include_body))
            .then(|| body_text(&name, &cached));
        self.notify_items(dir, &name, &shared, body.as_deref());
        self.notify_collections(dir, &name, &shared);
        if cfg.persist_items && cfg.node_full == NodeFull::RetractOldest && cfg.notify_retract {
            for (_, old) in &full {
                let inner = self.items_event(&name, &format!("<retract id='{}'/>", attr(old)));
                self.notify_items(dir, &name, &inner, None);
                self.notify_collections(dir, &name, &inner);
            }
        }
        Ok(Some(format!(
            "<pubsub xmlns='{NS_PUBSUB}'><publish node='{}'><item id='{}'/></publish></pubsub>",
            attr(&name),
            attr(&id)
        )))
    }

    /// Items to delete before inserting item `id`: first those replaced or expired (an
    /// item with the same id, §7.1.2, and items older than `item_expire`), then the
    /// oldest beyond `max` as `(seq, id)` (what `publish_node_full` governs).
    fn evictions(n: &Node, id: &str, max: usize, now_ms: u64) -> (Vec<u64>, Vec<(u64, String)>) {
        let gone: Vec<u64> = n
            .items
            .iter()
            .filter(|e| e.id == id || n.expired(e.published_ms, now_ms))
            .map(|e| e.seq)
            .collect();
        let remaining = n.items.len() - gone.len();
        let excess = (remaining + 1).saturating_sub(max);
        let full = n
            .items
            .iter()
            .filter(|e| !gone.contains(&e.seq))
            .take(excess)
            .map(|e| (e.seq, e.id.clone()))
            .collect();
        (gone, full)
    }

    /// Items to delete so that an item costing `cost` fits `store.max_bytes`, oldest
    /// first across every node, as `(node, seq)`; `skip` are items of `node` this publish
    /// deletes anyway. Under the `reject` policy a full budget is an error instead.
    fn budget_evictions(
        &self,
        node: &str,
        skip: &[u64],
        cost: u64,
    ) -> Result<Vec<(String, u64)>, PubSubError> {
        if self.budget == 0 {
            return Ok(Vec::new());
        }
        let total: u64 =
            self.nodes.values().map(|n| n.stored).sum::<u64>() + self.stored_elsewhere();
        let freed: u64 = self
            .nodes
            .get(node)
            .map(|n| {
                n.items
                    .iter()
                    .filter(|e| skip.contains(&e.seq))
                    .map(|e| e.stored)
                    .sum()
            })
            .unwrap_or(0);
        let mut over = (total - freed + cost).saturating_sub(self.budget);
        if over == 0 {
            return Ok(Vec::new());
        }
        if cost > self.budget || self.full_policy == FullPolicy::Reject {
            return Err(PubSubError::StoreFull);
        }
        // Merge the per-node queues (each oldest first) by publication time.
        let mut cursors: Vec<(&String, &Node, usize)> =
            self.nodes.iter().map(|(k, n)| (k, n, 0)).collect();
        let mut out = Vec::new();
        while over > 0 {
            let mut best: Option<(usize, &IndexEntry)> = None;
            for (i, (k, n, c)) in cursors.iter_mut().enumerate() {
                while *c < n.items.len() && k.as_str() == node && skip.contains(&n.items[*c].seq) {
                    *c += 1;
                }
                if let Some(e) = n.items.get(*c) {
                    if best.is_none_or(|(_, b)| e.published_ms < b.published_ms) {
                        best = Some((i, e));
                    }
                }
            }
            let Some((i, e)) = best else {
                return Err(PubSubError::StoreFull);
            };
            over = over.saturating_sub(e.stored);
            out.push((cursors[i].0.clone(), e.seq));
            cursors[i].2 += 1;
        }
        Ok(out)
    }

    /// §7.2 retract.
    fn retract(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        r: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(r)?.to_owned();
        let id = r
            .child("item", NS_PUBSUB)
            .and_then(|i| i.attr("id"))
            .filter(|i| !i.is_empty())
            .ok_or(PubSubError::ItemRequired)?
            .to_owned();
        let n = self.node(&name)?;
        let aff = self.affiliation(n, &req.bare);
        let (seq, publisher) = if n.config.persist_items {
            let e = n
                .items
                .iter()
                .find(|e| e.id == id)
                .ok_or(PubSubError::ItemNotFound)?;
            let publisher = match &n.last {
                Some(l) if l.id == id => Some(l.publisher.clone()),
                _ => self
                    .load_items(store, &name, &[e])?
                    .into_iter()
                    .next()
                    .map(|i| i.publisher),
            };
            (Some(e.seq), publisher)
        } else {
            match &n.last {
                Some(l) if l.id == id => (None, Some(l.publisher.clone())),
                _ => return Err(PubSubError::ItemNotFound),
            }
        };
        let own = publisher
            .as_deref()
            .and_then(|p| Jid::parse(p).ok())
            .is_some_and(|p| p.bare() == req.bare);
        let allowed = match aff {
            Affiliation::Owner | Affiliation::Publisher => true,
            Affiliation::PublishOnly => own,
            _ => false,
        };
        if !allowed {
            return Err(PubSubError::Forbidden("you may not retract this item"));
        }
        let notify = flag(r, "notify").unwrap_or(false) || n.config.notify_retract;
        if let Some(seq) = seq {
            self.commit(store, &[PubsubOp::DeleteItem(name.clone(), seq)])?;
        }
        let new_last = {
            let n = self.node(&name)?;
            let rest: Vec<&IndexEntry> = n.items.iter().filter(|e| e.id != id).collect();
            match rest.last() {
                Some(e) if n.last.as_ref().is_some_and(|l| l.id == id) => self
                    .load_items(store, &name, &[e])
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .map(Rc::new),
                _ if n.last.as_ref().is_some_and(|l| l.id == id) => None,
                _ => n.last.clone(),
            }
        };
        if let Some(n) = self.nodes.get_mut(&name) {
            if let Some(seq) = seq {
                n.remove_seqs(&[seq]);
            }
            n.last = new_last;
        }
        let pep = self.pep_owner.is_some();
        if let Some(n) = self.nodes.get_mut(&name) {
            if pep
                && n.last
                    .as_ref()
                    .is_some_and(|l| l.payload.len() > pep::PEP_CACHE_PAYLOAD_MAX)
            {
                n.last = None;
            }
        }
        if notify {
            let inner = self.items_event(&name, &format!("<retract id='{}'/>", attr(&id)));
            self.notify_items(dir, &name, &inner, None);
            self.notify_collections(dir, &name, &inner);
        }
        Ok(None)
    }

    /// The `jid` attribute of a subscribe/unsubscribe/options request, which must be the
    /// requester's bare or full JID (§6.1.3.1).
    fn sub_jid(req: &Req, e: &Element) -> Result<Jid, PubSubError> {
        let j = e
            .attr("jid")
            .filter(|j| !j.is_empty())
            .ok_or(PubSubError::JidRequired)?;
        let j = Jid::parse(j).map_err(|_| PubSubError::InvalidJid)?;
        if j.bare() != req.bare {
            return Err(PubSubError::InvalidJid);
        }
        Ok(j)
    }

    /// The subscription of `jid` a request names: by its `subid`, or the only one
    /// (§6.2.3.1 `subid-required`, §6.2.3.5 `invalid-subid`).
    fn find_sub(n: &Node, jid: &Jid, e: &Element) -> Result<usize, PubSubError> {
        let mine: Vec<usize> = (0..n.subs.len())
            .filter(|i| &n.subs[*i].jid == jid)
            .collect();
        match e.attr("subid").filter(|s| !s.is_empty()) {
            Some(id) => mine.into_iter().find(|i| n.subs[*i].subid == id).ok_or(
                if n.subs.iter().any(|s| &s.jid == jid) {
                    PubSubError::InvalidSubId
                } else {
                    PubSubError::NotSubscribed
                },
            ),
            None => match mine.as_slice() {
                [] => Err(PubSubError::NotSubscribed),
                [i] => Ok(*i),
                _ => Err(PubSubError::SubIdRequired),
            },
        }
    }

    /// `<subscription node jid subid subscription/>` of the pubsub namespace.
    fn subscription_xml(node: &str, sub: &Sub) -> String {
        format!(
            "<subscription node='{}' jid='{}' subid='{}' subscription='{}'/>",
            attr(node),
            attr(sub.jid.as_str()),
            attr(&sub.subid),
            sub.state.as_str()
        )
    }

    /// §6.1 subscribe. Several subscriptions per JID (`multi-subscribe`, §6.1.6): a
    /// request with options equal to an existing subscription's returns that one (and
    /// sends the last item again); other options make a new subscription with its own
    /// SubID. Under the authorize access model the subscription is `pending` and every
    /// owner gets the approval form (§8.6).
    fn subscribe(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        s: &Element,
        options: Option<&Element>,
    ) -> Result<Option<String>, PubSubError> {
        // XEP-0248: no node (or an empty one) is the root collection.
        let name = s.attr("node").unwrap_or(dag::ROOT).to_owned();
        let jid = Self::sub_jid(req, s)?;
        let n = self.node(&name)?;
        let state = match self.check_access(dir, n, &req.bare) {
            Ok(()) => SubState::Subscribed,
            Err(PubSubError::AuthorizationRequired) => SubState::Pending,
            Err(e) => return Err(e),
        };
        if !n.config.subscribe {
            return Err(PubSubError::SubscriptionsDisabled);
        }
        let mut opts = SubOptions::default();
        if let Some(x) = options.and_then(find_form) {
            Self::parse_sub_options(x, &mut opts, req.now_ms)?;
        }
        opts.temporary |= n.config.tempsub;
        let existing = n
            .subs
            .iter()
            .position(|x| x.jid == jid && x.opts == opts && x.state == state);
        // XEP-0248: one subscription per JID and type to a collection (`conflict`).
        if existing.is_none()
            && n.config.kind == Kind::Collection
            && n.subs
                .iter()
                .any(|x| x.jid == jid && x.opts.sub_type == opts.sub_type)
        {
            return Err(PubSubError::CollectionSubscribed);
        }
        let sub = match existing {
            Some(i) => n.subs[i].clone(),
            None => {
                if n.subs.len() >= self.limits.pubsub_max_subscriptions_per_node
                    || n.subs.iter().filter(|x| x.jid == jid).count() >= MAX_SUBSCRIPTIONS_PER_JID
                {
                    return Err(PubSubError::TooManySubscriptions);
                }
                let sub = Sub {
                    jid: jid.clone(),
                    subid: self.new_id(req.now_ms),
                    state,
                    opts,
                };
                self.commit(store, &[sub.put(&name)])?;
                let n = self.nodes.get_mut(&name).ok_or(PubSubError::NodeNotFound)?;
                n.insert_sub(sub.clone());
                if state == SubState::Pending {
                    self.send_approval_forms(&name, &sub);
                } else {
                    self.notify_owners_sub(&name, &jid, &sub.subid, "subscribed");
                }
                sub
            }
        };
        let n = self.node(&name)?;
        // §6.1.7: the last published item, with a delay stamp.
        if state == SubState::Subscribed && n.config.send_last != SendLast::Never {
            let last = match (&n.last, n.items.back()) {
                (Some(l), _) => Some(l.clone()),
                // Not cached (a large PEP item): from the store.
                (None, Some(e)) if n.config.persist_items => self
                    .load_items(store, &name, &[e])?
                    .into_iter()
                    .next()
                    .map(Rc::new),
                _ => None,
            };
            if let Some(last) = last {
                if !n.expired(last.published_ms, req.now_ms) && sub.opts.deliver {
                    let payloads = n.config.deliver_payloads;
                    let headline = n.config.headline;
                    let with_publisher = n.config.itemreply_publisher;
                    let inner = self.items_event(&name, &item_xml(&last, payloads, with_publisher));
                    let d = self.message(&jid, headline, &inner, Some(last.published_ms));
                    self.out.push(d);
                }
            }
        }
        // §6.1.5: options are supported (never required, so never `unconfigured`).
        let mut xml = Self::subscription_xml(&name, &sub);
        xml.truncate(xml.len() - 2);
        xml.push_str("><subscribe-options/></subscription>");
        Ok(Some(format!("<pubsub xmlns='{NS_PUBSUB}'>{xml}</pubsub>")))
    }

    /// §8.6: the approval form for `sub`, to every owner of `node`.
    fn send_approval_forms(&mut self, node: &str, sub: &Sub) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        let owners: Vec<Jid> = n
            .affs
            .iter()
            .filter(|(_, a)| *a == Affiliation::Owner)
            .filter_map(|(j, _)| Jid::parse(j).ok())
            .collect();
        for o in owners {
            self.send_approval_forms_to(node, sub, &o);
        }
    }

    /// The `pubsub#subscribe_authorization` form (§8.6.1).
    fn approval_form(node: &str, sub: &Sub) -> String {
        let field = |var: &str, ty: &str, label: &str, v: &str| {
            let mut f = Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", ty);
            if !label.is_empty() {
                f.set_attr("label", label);
            }
            f.with_child(Element::new("value", NS_DATA).with_text(v))
        };
        let x = Element::new("x", NS_DATA)
            .with_attr("type", "form")
            .with_child(Element::new("title", NS_DATA).with_text("PubSub subscriber request"))
            .with_child(Element::new("instructions", NS_DATA).with_text(
                "To approve this entity's subscription request, set Allow and submit the form; to deny it, submit the form with Allow unset.",
            ))
            .with_child(hidden_form_type(FORM_SUBSCRIBE_AUTH))
            .with_child(field("pubsub#subid", "hidden", "", &sub.subid))
            .with_child(field("pubsub#node", "text-single", "Node ID", node))
            .with_child(field(
                "pubsub#subscriber_jid",
                "jid-single",
                "Subscriber Address",
                sub.jid.as_str(),
            ))
            .with_child(field(
                "pubsub#allow",
                "boolean",
                "Allow this JID to subscribe to this pubsub node?",
                "false",
            ));
        let mut s = String::new();
        x.write_to(&mut s, NS_CLIENT);
        s
    }

    /// A message to the service: an owner's answer to an approval form (§8.6.2), with
    /// `pubsub#allow` true (the subscription becomes `subscribed`) or false (it is
    /// removed); the subscriber is told either way. Anything else is ignored (logged).
    pub fn handle_message(
        &mut self,
        store: &Store,
        from: &Jid,
        msg: &Element,
        now_ms: u64,
    ) -> Vec<Delivery> {
        self.out.clear();
        self.now_ms = now_ms;
        let Some(x) = find_form(msg) else {
            return Vec::new();
        };
        if let Err(e) = self.approval(store, &from.bare(), x) {
            tracing::info!(from = %from, error = %e, "pub-sub approval form refused");
            self.out.clear();
        }
        std::mem::take(&mut self.out)
    }

    fn approval(&mut self, store: &Store, owner: &Jid, x: &Element) -> Result<(), PubSubError> {
        let fields = form_fields(x);
        let get = |var: &str| {
            fields
                .iter()
                .find(|(v, _)| v == var)
                .and_then(|(_, vals)| vals.first())
                .map(|v| v.trim().to_owned())
        };
        if get("FORM_TYPE").as_deref() != Some(FORM_SUBSCRIBE_AUTH) {
            return Err(PubSubError::BadForm("not an approval form".into()));
        }
        let name = get("pubsub#node").ok_or(PubSubError::NodeIdRequired)?;
        let jid = get("pubsub#subscriber_jid")
            .and_then(|j| Jid::parse(&j).ok())
            .ok_or(PubSubError::InvalidJid)?;
        // A cancelled form changes nothing: the request stays pending (§8.6).
        if x.attr("type") == Some("cancel") {
            return Ok(());
        }
        let allow = match (x.attr("type"), get("pubsub#allow").as_deref()) {
            (_, Some("1" | "true")) => true,
            (_, Some("0" | "false")) => false,
            _ => return Err(PubSubError::BadForm("pubsub#allow is a boolean".into())),
        };
        let n = self.require_owner(&name, owner)?;
        let subid = get("pubsub#subid");
        let i = n
            .subs
            .iter()
            .position(|s| {
                s.jid == jid
                    && s.state == SubState::Pending
                    && subid
                        .as_ref()
                        .is_none_or(|id| id.is_empty() || *id == s.subid)
            })
            .ok_or(PubSubError::NotSubscribed)?;
        let mut sub = n.subs[i].clone();
        if allow {
            sub.state = SubState::Subscribed;
            self.commit(store, &[sub.put(&name)])?;
        } else {
            self.commit(store, &[sub.delete(&name)])?;
        }
        let n = self.nodes.get_mut(&name).ok_or(PubSubError::NodeNotFound)?;
        if allow {
            n.subs[i].state = SubState::Subscribed;
        } else {
            n.subs.remove(i);
            n.subs_changed();
        }
        let state = if allow { "subscribed" } else { "none" };
        self.subscription_changed(&name, &jid, &sub.subid, state);
        self.notify_owners_sub(&name, &jid, &sub.subid, state);
        Ok(())
    }

    /// XEP-0050 commands: §8.7 `get-pending`. Without a form it answers the list of nodes
    /// the requester owns that have pending subscriptions; with a submitted form naming a
    /// node it sends the approval form of each of them again. Stateless: the session id
    /// is echoed, nothing is kept between the two steps.
    fn command(&mut self, req: &Req, c: &Element) -> Result<Option<String>, PubSubError> {
        if c.attr("node") != Some(CMD_GET_PENDING) {
            return Err(PubSubError::ItemNotFound);
        }
        let session = c
            .attr("sessionid")
            .map_or_else(|| format!("pending-{:x}", req.now_ms), str::to_owned);
        if c.attr("action") == Some("cancel") {
            return Ok(Some(format!(
                "<command xmlns='{NS_COMMANDS}' node='{CMD_GET_PENDING}' sessionid='{}' status='canceled'/>",
                attr(&session)
            )));
        }
        let chosen = find_form(c).and_then(|x| {
            form_fields(x)
                .into_iter()
                .find(|(v, _)| v == "pubsub#node")
                .and_then(|(_, vals)| vals.into_iter().next())
        });
        match chosen {
            None => {
                let mut f = Element::new("field", NS_DATA)
                    .with_attr("var", "pubsub#node")
                    .with_attr("type", "list-single")
                    .with_attr("label", "Node ID");
                for (name, n) in &self.nodes {
                    let owner = self.affiliation(n, &req.bare) == Affiliation::Owner;
                    if owner && n.subs.iter().any(|s| s.state == SubState::Pending) {
                        f.push_child(
                            Element::new("option", NS_DATA).with_child(
                                Element::new("value", NS_DATA).with_text(name.as_str()),
                            ),
                        );
                    }
                }
                let x = Element::new("x", NS_DATA)
                    .with_attr("type", "form")
                    .with_child(hidden_form_type(FORM_SUBSCRIBE_AUTH))
                    .with_child(f);
                let cmd = Element::new("command", NS_COMMANDS)
                    .with_attr("node", CMD_GET_PENDING)
                    .with_attr("sessionid", session.as_str())
                    .with_attr("status", "executing")
                    .with_child(
                        Element::new("actions", NS_COMMANDS)
                            .with_attr("execute", "complete")
                            .with_child(Element::new("complete", NS_COMMANDS)),
                    )
                    .with_child(x);
                let mut s = String::new();
                cmd.write_to(&mut s, NS_CLIENT);
                Ok(Some(s))
            }
            Some(name) => {
                let n = self.require_owner(&name, &req.bare)?;
                let pending: Vec<Sub> = n
                    .subs
                    .iter()
                    .filter(|s| s.state == SubState::Pending)
                    .cloned()
                    .collect();
                for sub in &pending {
                    self.send_approval_forms_to(&name, sub, &req.bare);
                }
                Ok(Some(format!(
                    "<command xmlns='{NS_COMMANDS}' node='{CMD_GET_PENDING}' sessionid='{}' status='completed'/>",
                    attr(&session)
                )))
            }
        }
    }

    /// The approval form of `sub` to the owner `to` (§8.6; again for §8.7). The message
    /// id names the SubID (the owner's answer reflects it, §8.6).
    fn send_approval_forms_to(&mut self, node: &str, sub: &Sub, to: &Jid) {
        let s = format!(
            "<message from='{}' to='{}' id='approve-{}'>{}</message>",
            self.service_attr,
            attr(to.as_str()),
            attr(&sub.subid),
            Self::approval_form(node, sub)
        );
        self.out.push(Delivery {
            to: to.clone(),
            stanza: Stanza::from(s),
        });
    }

    /// §6.2 unsubscribe (one subscription: by SubID when the JID has several).
    fn unsubscribe(
        &mut self,
        store: &Store,
        req: &Req,
        u: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let name = u.attr("node").unwrap_or(dag::ROOT).to_owned();
        let jid = Self::sub_jid(req, u)?;
        let n = self.node(&name)?;
        let i = Self::find_sub(n, &jid, u)?;
        let sub = n.subs[i].clone();
        self.commit(store, &[sub.delete(&name)])?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.subs.remove(i);
            n.subs_changed();
        }
        self.notify_owners_sub(&name, &jid, &sub.subid, "none");
        Ok(None)
    }

    /// Reads a `pubsub#subscribe_options` form into `opts`. `digest` and the XEP-0248
    /// options are refused with `not-acceptable` + `unsupported` (never ignored).
    fn parse_sub_options(
        x: &Element,
        opts: &mut SubOptions,
        now_ms: u64,
    ) -> Result<(), PubSubError> {
        let boolean = |var: &str, values: &[String]| match values.first().map(|v| v.trim()) {
            Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            _ => Err(PubSubError::InvalidOptions(format!("{var} is a boolean"))),
        };
        for (var, values) in form_fields(x) {
            match var.as_str() {
                "FORM_TYPE" => {
                    if values.first().map(String::as_str) != Some(FORM_SUBSCRIBE_OPTIONS) {
                        return Err(PubSubError::InvalidOptions("wrong FORM_TYPE".into()));
                    }
                }
                "pubsub#deliver" => opts.deliver = boolean(&var, &values)?,
                "pubsub#include_body" => opts.include_body = boolean(&var, &values)?,
                "pubsub#digest" => {
                    if boolean(&var, &values)? {
                        return Err(PubSubError::UnsupportedValue("digest"));
                    }
                }
                "pubsub#digest_frequency" => return Err(PubSubError::UnsupportedValue("digest")),
                // XEP-0248 (accepted on leaves too, where they mean nothing).
                "pubsub#subscription_type" => {
                    opts.sub_type = match values.first().map(|v| v.trim()) {
                        Some("nodes") => SubType::Nodes,
                        Some("items") => SubType::Items,
                        Some("all") => SubType::All,
                        _ => {
                            return Err(PubSubError::InvalidOptions(
                                "pubsub#subscription_type is nodes, items or all".into(),
                            ));
                        }
                    }
                }
                "pubsub#subscription_depth" => {
                    opts.depth = match values.first().map(|v| v.trim()) {
                        Some("0") => Depth::Levels(0),
                        Some(v) => Depth::parse(v).ok_or_else(|| {
                            PubSubError::InvalidOptions(
                                "pubsub#subscription_depth is a number or all".into(),
                            )
                        })?,
                        None => Depth::Levels(1),
                    }
                }
                "pubsub#show-values" => {
                    let mut mask = SHOW_SET;
                    for v in &values {
                        let i = SHOWS.iter().position(|s| *s == v.trim()).ok_or_else(|| {
                            PubSubError::InvalidOptions(format!("unknown show value {v:?}"))
                        })?;
                        mask |= 1 << i;
                    }
                    opts.show = mask;
                }
                "pubsub#expire" => match values.first().map(|v| v.trim()).unwrap_or("") {
                    "" => {
                        opts.expire_ms = 0;
                        opts.temporary = false;
                    }
                    "presence" => {
                        opts.expire_ms = 0;
                        opts.temporary = true;
                    }
                    v => {
                        let ms = parse_xep0082(v).ok_or_else(|| {
                            PubSubError::InvalidOptions(format!(
                                "pubsub#expire: {v:?} is not a date-time"
                            ))
                        })?;
                        if ms <= now_ms {
                            return Err(PubSubError::InvalidOptions(
                                "pubsub#expire is in the past".into(),
                            ));
                        }
                        opts.expire_ms = ms;
                        opts.temporary = false;
                    }
                },
                other => {
                    return Err(PubSubError::InvalidOptions(format!(
                        "unsupported option {other:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The subscription options form (§6.3.2) with the values of `o`.
    fn sub_options_form(o: &SubOptions, ty: &str) -> Element {
        let field = |var: &str, fty: &str, label: &str, values: Vec<String>| {
            let mut f = Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", fty)
                .with_attr("label", label);
            if var == "pubsub#show-values" {
                for s in SHOWS {
                    f.push_child(
                        Element::new("option", NS_DATA)
                            .with_child(Element::new("value", NS_DATA).with_text(s)),
                    );
                }
            }
            for v in values {
                f.push_child(Element::new("value", NS_DATA).with_text(v));
            }
            f
        };
        let b = |v: bool| vec![if v { "1" } else { "0" }.to_owned()];
        let expire = if o.temporary {
            "presence".to_owned()
        } else if o.expire_ms != 0 {
            xep0082(o.expire_ms)
        } else {
            String::new()
        };
        let shows: Vec<String> = SHOWS
            .iter()
            .enumerate()
            .filter(|(i, _)| o.show & SHOW_SET != 0 && o.show & (1 << i) != 0)
            .map(|(_, s)| (*s).to_owned())
            .collect();
        Element::new("x", NS_DATA)
            .with_attr("type", ty)
            .with_child(hidden_form_type(FORM_SUBSCRIBE_OPTIONS))
            .with_child(field(
                "pubsub#deliver",
                "boolean",
                "Enable delivery?",
                b(o.deliver),
            ))
            .with_child(field(
                "pubsub#include_body",
                "boolean",
                "Receive message body in addition to payload?",
                b(o.include_body),
            ))
            .with_child(field(
                "pubsub#expire",
                "text-single",
                "Requested lease period (a date-time, or presence)",
                vec![expire],
            ))
            .with_child(field(
                "pubsub#show-values",
                "list-multi",
                "Receive notifications only when your presence is one of these",
                shows,
            ))
            .with_child(field(
                "pubsub#subscription_type",
                "list-single",
                "Collections: notifications of items, of nodes, or all",
                vec![o.sub_type.as_str().to_owned()],
            ))
            .with_child(field(
                "pubsub#subscription_depth",
                "text-single",
                "Collections: how many levels below (a number, or all)",
                vec![o.depth.to_string()],
            ))
    }

    /// §6.4 default subscription options.
    fn default_sub_options(d: &Element) -> String {
        let mut e = Element::new("default", NS_PUBSUB);
        if let Some(n) = d.attr("node") {
            e.set_attr("node", n);
        }
        e.push_child(Self::sub_options_form(&SubOptions::default(), "form"));
        let p = Element::new("pubsub", NS_PUBSUB).with_child(e);
        let mut s = String::new();
        p.write_to(&mut s, NS_CLIENT);
        s
    }

    /// §6.3 subscription options (get and set), of one subscription (by SubID when the
    /// JID has several).
    fn options(
        &mut self,
        store: &Store,
        req: &Req,
        o: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        let name = o.attr("node").unwrap_or(dag::ROOT).to_owned();
        let jid = Self::sub_jid(req, o)?;
        let n = self.node(&name)?;
        let i = Self::find_sub(n, &jid, o)?;
        if !set {
            let e = Element::new("options", NS_PUBSUB)
                .with_attr("node", name.as_str())
                .with_attr("jid", jid.as_str())
                .with_attr("subid", n.subs[i].subid.as_str())
                .with_child(Self::sub_options_form(&n.subs[i].opts, "form"));
            let mut s = String::new();
            Element::new("pubsub", NS_PUBSUB)
                .with_child(e)
                .write_to(&mut s, NS_CLIENT);
            return Ok(Some(s));
        }
        let x = find_form(o).ok_or(PubSubError::InvalidOptions("no form".into()))?;
        let mut sub = n.subs[i].clone();
        Self::parse_sub_options(x, &mut sub.opts, req.now_ms)?;
        sub.opts.temporary |= n.config.tempsub;
        self.commit(store, &[sub.put(&name)])?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.subs[i] = sub;
            n.subs_changed();
        }
        Ok(None)
    }

    /// §6.5 retrieve items (all, by id, newest `max_items`), paged with XEP-0059 RSM
    /// (§6.5.4). The reply never exceeds half an outbox: a larger result is cut and says so
    /// with an RSM `<set/>` (count, first, last), so nothing is truncated silently.
    fn items(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        it: &Element,
        rsm: Option<&Element>,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(it)?.to_owned();
        let n = self.node(&name)?;
        // §6.5.9.3: a pending subscription is no subscription for retrieval.
        self.check_access(dir, n, &req.bare).map_err(|e| match e {
            PubSubError::PendingSubscription => PubSubError::AuthorizationRequired,
            e => e,
        })?;
        // §6.5.9.1 and §6.5.9.2: with several subscriptions, the request names one.
        let mine: Vec<&Sub> = n.subs.iter().filter(|s| s.jid.bare() == req.bare).collect();
        match it.attr("subid").filter(|s| !s.is_empty()) {
            None if mine.len() > 1 => return Err(PubSubError::SubIdRequired),
            Some(id) if !mine.is_empty() && !mine.iter().any(|s| s.subid == id) => {
                return Err(PubSubError::InvalidSubId);
            }
            _ => {}
        }
        let wanted: Vec<&str> = it
            .elements()
            .filter(|e| e.is("item", NS_PUBSUB))
            .filter_map(|e| e.attr("id"))
            .collect();
        // Any size is the newest that many (saturated: the same on 32-bit targets).
        let max = it
            .attr("max_items")
            .map(|m| {
                parse_len(m).ok_or(PubSubError::BadRequest(
                    "max_items is a non-negative integer",
                ))
            })
            .transpose()?;
        let page = rsm
            .map(|set| Page::parse(set, self.limits.pubsub_max_page_items))
            .transpose()?;
        if n.config.kind == Kind::Collection {
            return self.collection_items(dir, store, req, &name, max, page.as_ref());
        }
        let transient;
        let mut entries: Vec<&IndexEntry> = if n.config.persist_items {
            n.items
                .iter()
                .filter(|e| !n.expired(e.published_ms, req.now_ms))
                .filter(|e| wanted.is_empty() || wanted.contains(&e.id.as_str()))
                .collect()
        } else {
            transient = n.last.as_ref().map(|l| IndexEntry {
                seq: 0,
                id: l.id.clone(),
                published_ms: l.published_ms,
                bytes: l.payload.len(),
                stored: 0,
                publisher: Rc::from(l.publisher.as_str()),
            });
            transient
                .iter()
                .filter(|e| !n.expired(e.published_ms, req.now_ms))
                .filter(|e| wanted.is_empty() || wanted.contains(&e.id.as_str()))
                .collect()
        };
        if let Some(m) = max {
            let skip = entries.len().saturating_sub(m);
            entries.drain(..skip);
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        // The RSM window over `entries`, cut to half an outbox by the estimated reply bytes
        // of each item: payload, id, publisher and markup.
        let window = match &page {
            None => Window::all(ids.len()),
            Some(p) => p.window(&ids)?,
        }
        .fit(&entries, self.limits.outbox_max_bytes / 2, |e| {
            e.bytes.saturating_add(e.id.len()).saturating_add(192)
        });
        let cut = page.is_none() && !window.is_whole();
        let page_entries = window.slice(&entries);
        let found: Vec<CachedItem> = if n.config.persist_items {
            self.load_items(store, &name, page_entries)?
        } else {
            n.last
                .iter()
                .filter(|_| !page_entries.is_empty())
                .map(|l| (**l).clone())
                .collect()
        };
        let mut s =
            String::with_capacity(160 + found.iter().map(|i| i.payload.len() + 64).sum::<usize>());
        let _ = write!(
            s,
            "<pubsub xmlns='{NS_PUBSUB}'><items node='{}'>",
            attr(&name)
        );
        for i in &found {
            s.push_str(&item_xml(i, true, n.config.itemreply_publisher));
        }
        s.push_str("</items>");
        if page.is_some() || cut {
            s.push_str(&window.set_xml(&ids));
        }
        s.push_str("</pubsub>");
        Ok(Some(s))
    }

    /// §5.6 the requester's subscriptions.
    fn own_subscriptions(&self, req: &Req, e: &Element) -> String {
        let only = e.attr("node");
        let mut s = format!("<pubsub xmlns='{NS_PUBSUB}'><subscriptions>");
        for (name, n) in &self.nodes {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            for sub in n.subs.iter().filter(|x| x.jid.bare() == req.bare) {
                s.push_str(&Self::subscription_xml(name, sub));
            }
        }
        s.push_str("</subscriptions></pubsub>");
        s
    }

    /// §5.7 the requester's affiliations.
    fn own_affiliations(&self, req: &Req, e: &Element) -> String {
        let only = e.attr("node");
        let mut s = format!("<pubsub xmlns='{NS_PUBSUB}'><affiliations>");
        for (name, n) in &self.nodes {
            if only.is_some_and(|o| o != name) || name.is_empty() {
                continue;
            }
            let a = self.affiliation(n, &req.bare);
            if a != Affiliation::None {
                let _ = write!(
                    s,
                    "<affiliation node='{}' affiliation='{}'/>",
                    attr(name),
                    a.as_str()
                );
            }
        }
        s.push_str("</affiliations></pubsub>");
        s
    }

    // ------------------------------------------------------------ owner namespace (§8)

    fn owner(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        p: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        let Some(first) = p.elements().next() else {
            return Err(PubSubError::BadRequest("empty pubsub element"));
        };
        if !first.ns.eq(NS_PUBSUB_OWNER) {
            return Err(PubSubError::BadRequest("unknown owner request"));
        }
        match (first.name.as_str(), set) {
            ("configure", _) => self.owner_configure(dir, store, req, first, set),
            ("default", false) => {
                // XEP-0248: `<default type='collection'/>` gives the collection defaults.
                let cfg = if first.attr("type") == Some("collection") {
                    NodeConfig::collection_default(&self.limits)
                } else {
                    self.default_config()
                };
                let mut s = String::new();
                Element::new("pubsub", NS_PUBSUB_OWNER)
                    .with_child(
                        Element::new("default", NS_PUBSUB_OWNER)
                            .with_child(cfg.to_form(FORM_NODE_CONFIG)),
                    )
                    .write_to(&mut s, NS_CLIENT);
                Ok(Some(s))
            }
            ("delete", true) => self.owner_delete(dir, store, req, first),
            ("purge", true) => self.owner_purge(dir, store, req, first),
            ("subscriptions", _) => self.owner_subscriptions(store, req, first, set),
            ("affiliations", _) => self.owner_affiliations(store, req, first, set),
            ("collection", true) => self.owner_collection(dir, store, req, first),
            _ => Err(PubSubError::BadRequest("unknown owner request")),
        }
    }

    /// §8.2 configure a node (get the form, or submit it). XEP-0248: `pubsub#node_type`
    /// (leaf → collection purges the items; collection → leaf is refused),
    /// `pubsub#collection` (the parents), `pubsub#children` (the children) and
    /// `pubsub#children_max` change the graph; both lists stay consistent because only
    /// the parents are stored. The root collection cannot be configured.
    fn owner_configure(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        c: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        if c.attr("node") == Some(dag::ROOT) {
            return Err(PubSubError::Dag(dag::DagError::Root));
        }
        let name = Self::node_attr(c)?.to_owned();
        let n = self.require_owner(&name, &req.bare)?;
        if !set {
            let mut cfg = n.config.clone();
            if cfg.kind == Kind::Collection {
                cfg.children = Some(
                    self.dag
                        .children(&name)
                        .iter()
                        .map(|c| c.to_string())
                        .collect(),
                );
            }
            let mut s = String::new();
            Element::new("pubsub", NS_PUBSUB_OWNER)
                .with_child(
                    Element::new("configure", NS_PUBSUB_OWNER)
                        .with_attr("node", name.as_str())
                        .with_child(cfg.to_form(FORM_NODE_CONFIG)),
                )
                .write_to(&mut s, NS_CLIENT);
            return Ok(Some(s));
        }
        let x = find_form(c).ok_or(PubSubError::BadForm("no data form".into()))?;
        if x.attr("type") == Some("cancel") {
            return Ok(None);
        }
        let mut cfg = n.config.clone();
        cfg.apply_form(x, FORM_NODE_CONFIG, &self.limits)?;
        self.check_forced(&name, &cfg)?;
        if self.pep_owner.is_some() && cfg.kind == Kind::Collection {
            // PEP services are flat.
            return Err(PubSubError::Unsupported("collections"));
        }
        let old_kind = n.config.kind;
        let graph_changed = cfg.kind != old_kind
            || cfg.parents != n.config.parents
            || cfg.children.is_some()
            || cfg.children_max != n.config.children_max;
        // The graph changes first (on a copy to restore if anything fails: configuring is
        // rare, and the copy is bounded by the node count).
        let backup = graph_changed.then(|| self.dag.clone());
        let mut events = Vec::new();
        if graph_changed {
            let parents = cfg.parents.clone();
            let children = cfg.children.take();
            let (kind, children_max, parents_changed, max_changed) = (
                cfg.kind,
                cfg.children_max,
                cfg.parents != n.config.parents,
                cfg.children_max != n.config.children_max,
            );
            let r = self.with_dag(&req.bare, |d, may| {
                d.set_kind(&name, kind)?;
                // On a leaf this is refused (not-allowed + invalid-options).
                if max_changed {
                    d.set_children_max(&name, children_max)?;
                }
                let mut ev = Vec::new();
                if parents_changed {
                    let ps: Vec<&str> = parents.iter().map(String::as_str).collect();
                    ev.extend(d.set_parents(&name, &ps, may)?);
                }
                if let Some(ch) = &children {
                    let ch: Vec<&str> = ch.iter().map(String::as_str).collect();
                    ev.extend(d.set_children(&name, &ch, may)?);
                }
                Ok(ev)
            });
            match r {
                Ok(ev) => events = ev,
                Err(e) => {
                    if let Some(b) = backup {
                        self.dag = b;
                    }
                    return Err(e);
                }
            }
        }
        cfg.children = None;
        cfg.parents = self.explicit_parents(&name);
        let Some(n) = self.nodes.get(&name) else {
            return Err(PubSubError::NodeNotFound);
        };
        let mut ops = Vec::new();
        let mut drop_seqs = Vec::new();
        // XEP-0248: a leaf that becomes a collection loses its items.
        let to_collection = old_kind == Kind::Leaf && cfg.kind == Kind::Collection;
        let now_transient = n.config.persist_items && !cfg.persist_items;
        if now_transient || to_collection {
            ops.push(PubsubOp::PurgeItems(name.clone()));
        } else if cfg.persist_items {
            let max = cfg.effective_max_items(&self.limits);
            let excess = n.items.len().saturating_sub(max);
            drop_seqs = n.items.iter().take(excess).map(|e| e.seq).collect();
            for s in &drop_seqs {
                ops.push(PubsubOp::DeleteItem(name.clone(), *s));
            }
        }
        let record = NodeRecord {
            created_ms: n.created_ms,
            creator: n.creator.clone(),
            config: cfg.to_pairs(),
        };
        ops.push(PubsubOp::PutNode(name.clone(), record));
        ops.extend(self.edge_ops(&events, &[name.as_str()]));
        if let Err(e) = self.commit(store, &ops) {
            if let Some(b) = backup {
                self.dag = b;
            }
            return Err(e);
        }
        let was_transient = !n.config.persist_items;
        let n = self.nodes.get_mut(&name).ok_or(PubSubError::NodeNotFound)?;
        n.config = cfg;
        if now_transient || to_collection {
            n.clear_items();
            n.last = None;
        } else if was_transient && n.config.persist_items {
            n.last = None;
        }
        n.remove_seqs(&drop_seqs);
        self.sync_parents(&events);
        if self
            .nodes
            .get(&name)
            .is_some_and(|n| n.config.notify_config)
        {
            let inner = format!("<configuration node='{}'/>", attr(&name));
            self.notify(dir, &name, &inner);
        }
        self.notify_edges(dir, &events);
        Ok(None)
    }

    /// §8.4 delete a node (notify subscribers, optional redirect). XEP-0248: the root
    /// cannot be deleted; a deleted collection's children that have no other parent go
    /// back to the root (the documented deletion policy), in the same commit.
    fn owner_delete(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        d: &Element,
    ) -> Result<Option<String>, PubSubError> {
        if d.attr("node") == Some(dag::ROOT) {
            return Err(PubSubError::Dag(dag::DagError::Root));
        }
        let name = Self::node_attr(d)?.to_owned();
        let n = self.require_owner(&name, &req.bare)?;
        let notify = n.config.notify_delete;
        let events = self.dag.plan_remove(&name).map_err(PubSubError::Dag)?;
        let mut ops = vec![PubsubOp::DeleteNode(name.clone())];
        for c in self.dag.children(&name) {
            if let Some(cn) = self.nodes.get(&**c) {
                let mut cfg = cn.config.clone();
                cfg.parents.retain(|p| p != &name);
                let mut rec = cn.record();
                rec.config = cfg.to_pairs();
                ops.push(PubsubOp::PutNode(c.to_string(), rec));
            }
        }
        self.commit(store, &ops)?;
        if notify {
            let mut inner = format!("<delete node='{}'", attr(&name));
            match d
                .child("redirect", NS_PUBSUB_OWNER)
                .and_then(|r| r.attr("uri"))
            {
                Some(uri) => {
                    let _ = write!(inner, "><redirect uri='{}'/></delete>", attr(uri));
                }
                None => inner.push_str("/>"),
            }
            self.notify(dir, &name, &inner);
        }
        if let Err(e) = self.dag.remove(&name) {
            tracing::error!(node = name, error = %e, "collection graph out of step on delete");
        }
        self.nodes.remove(&name);
        self.sync_parents(&events);
        self.notify_edges(dir, &events);
        Ok(None)
    }

    /// §8.5 purge every item (subscribers are notified unless
    /// `deliver_notifications` is off).
    fn owner_purge(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        p: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(p)?.to_owned();
        let n = self.node(&name)?;
        // §4.1: owners and publishers may purge (publish-only entities may not).
        if !matches!(
            self.affiliation(n, &req.bare),
            Affiliation::Owner | Affiliation::Publisher
        ) {
            return Err(PubSubError::Forbidden(
                "only owners and publishers may purge",
            ));
        }
        self.commit(store, &[PubsubOp::PurgeItems(name.clone())])?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.clear_items();
            n.last = None;
        }
        let inner = format!("<purge node='{}'/>", attr(&name));
        self.notify(dir, &name, &inner);
        self.notify_collections(dir, &name, &inner);
        Ok(None)
    }

    /// §8.8 manage subscriptions: list them (with state and SubID), or set states
    /// `subscribed` (approves pending ones, or creates one) and `none` (removes one by
    /// SubID, or every subscription of the JID).
    fn owner_subscriptions(
        &mut self,
        store: &Store,
        req: &Req,
        e: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(e)?.to_owned();
        let n = self.require_owner(&name, &req.bare)?;
        if !set {
            let mut s = format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><subscriptions node='{}'>",
                attr(&name)
            );
            for sub in &n.subs {
                let _ = write!(
                    s,
                    "<subscription jid='{}' subid='{}' subscription='{}'/>",
                    attr(sub.jid.as_str()),
                    attr(&sub.subid),
                    sub.state.as_str()
                );
            }
            s.push_str("</subscriptions></pubsub>");
            return Ok(Some(s));
        }
        let mut subs = n.subs.clone();
        let tempsub = n.config.tempsub;
        for s in e
            .elements()
            .filter(|x| x.is("subscription", NS_PUBSUB_OWNER))
        {
            let jid = s
                .attr("jid")
                .and_then(|j| Jid::parse(j).ok())
                .ok_or(PubSubError::BadRequest("subscription needs a valid jid"))?;
            let subid = s.attr("subid").filter(|x| !x.is_empty());
            let hit = |x: &Sub| x.jid == jid && subid.is_none_or(|id| id == x.subid);
            if subid.is_some() && !subs.iter().any(hit) {
                return Err(PubSubError::InvalidSubId);
            }
            match s.attr("subscription") {
                Some("subscribed") => {
                    if subs.iter().any(hit) {
                        for x in subs.iter_mut().filter(|x| hit(x)) {
                            x.state = SubState::Subscribed;
                        }
                    } else {
                        self.counter = self.counter.wrapping_add(1);
                        subs.push(Sub {
                            jid: jid.clone(),
                            subid: format!("{:x}-{:x}", req.now_ms, self.counter),
                            state: SubState::Subscribed,
                            opts: SubOptions {
                                temporary: tempsub,
                                ..SubOptions::default()
                            },
                        });
                    }
                }
                Some("none") => subs.retain(|x| !hit(x)),
                Some("pending" | "unconfigured") => {
                    return Err(PubSubError::BadRequest(
                        "an owner sets subscriptions to subscribed or none",
                    ));
                }
                _ => return Err(PubSubError::BadRequest("unknown subscription state")),
            }
        }
        if subs.len() > self.limits.pubsub_max_subscriptions_per_node {
            return Err(PubSubError::TooManySubscriptions);
        }
        let n = self.node(&name)?;
        let mut ops = Vec::new();
        let mut told: Vec<(Jid, String, &'static str)> = Vec::new();
        for old in &n.subs {
            if !subs
                .iter()
                .any(|x| x.subid == old.subid && x.jid == old.jid)
            {
                ops.push(old.delete(&name));
                told.push((old.jid.clone(), old.subid.clone(), "none"));
            }
        }
        for new in &subs {
            let before = n
                .subs
                .iter()
                .find(|x| x.subid == new.subid && x.jid == new.jid);
            if before.is_none_or(|b| b.state != new.state) {
                ops.push(new.put(&name));
                told.push((new.jid.clone(), new.subid.clone(), new.state.as_str()));
            }
        }
        self.commit(store, &ops)?;
        if let Some(n) = self.nodes.get_mut(&name) {
            subs.sort_by(|a, b| {
                (a.jid.as_str(), a.subid.as_str()).cmp(&(b.jid.as_str(), b.subid.as_str()))
            });
            n.subs = subs;
            n.subs_changed();
        }
        for (jid, subid, state) in told {
            self.subscription_changed(&name, &jid, &subid, state);
            self.notify_owners_sub(&name, &jid, &subid, state);
        }
        Ok(None)
    }

    /// §8.9 manage affiliations (all six).
    fn owner_affiliations(
        &mut self,
        store: &Store,
        req: &Req,
        e: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(e)?.to_owned();
        let n = self.require_owner(&name, &req.bare)?;
        if !set {
            let mut s = format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='{}'>",
                attr(&name)
            );
            for (j, a) in &n.affs {
                let _ = write!(
                    s,
                    "<affiliation jid='{}' affiliation='{}'/>",
                    attr(j),
                    a.as_str()
                );
            }
            s.push_str("</affiliations></pubsub>");
            return Ok(Some(s));
        }
        let mut affs = n.affs.clone();
        let mut changes: Vec<(String, Affiliation)> = Vec::new();
        for a in e
            .elements()
            .filter(|x| x.is("affiliation", NS_PUBSUB_OWNER))
        {
            let jid = a
                .attr("jid")
                .and_then(|j| Jid::parse(j).ok())
                .map(|j| j.bare())
                .ok_or(PubSubError::BadRequest("affiliation needs a valid jid"))?;
            let aff = a
                .attr("affiliation")
                .and_then(Affiliation::parse)
                .ok_or(PubSubError::BadRequest("unknown affiliation"))?;
            affs.retain(|(j, _)| j != jid.as_str());
            if aff != Affiliation::None {
                affs.push((jid.as_str().to_owned(), aff));
            }
            changes.push((jid.as_str().to_owned(), aff));
        }
        affs.sort_by(|a, b| a.0.cmp(&b.0));
        if !affs.iter().any(|(_, a)| *a == Affiliation::Owner) {
            return Err(PubSubError::BadRequest("a node keeps at least one owner"));
        }
        if affs.len() > self.limits.pubsub_max_subscriptions_per_node {
            return Err(PubSubError::BadRequest("too many affiliations"));
        }
        let mut ops = Vec::new();
        let mut dropped_subs: Vec<(Jid, String)> = Vec::new();
        let mut approved_subs: Vec<(Jid, String)> = Vec::new();
        for (jid, aff) in &changes {
            if *aff == Affiliation::None {
                ops.push(PubsubOp::DeleteAffiliation(name.clone(), jid.clone()));
            } else {
                ops.push(PubsubOp::PutAffiliation(
                    name.clone(),
                    jid.clone(),
                    aff.code(),
                ));
            }
            if *aff == Affiliation::Outcast {
                // An outcast loses its subscriptions, pending ones too (§8.7 note).
                for s in n.subs.iter().filter(|s| s.jid.bare().as_str() == jid) {
                    ops.push(s.delete(&name));
                    dropped_subs.push((s.jid.clone(), s.subid.clone()));
                }
            }
            if matches!(aff, Affiliation::Owner | Affiliation::Publisher) {
                // §8.7 note: their pending requests are approved.
                for s in n
                    .subs
                    .iter()
                    .filter(|s| s.jid.bare().as_str() == jid && s.state == SubState::Pending)
                {
                    let mut approved = s.clone();
                    approved.state = SubState::Subscribed;
                    ops.push(approved.put(&name));
                    approved_subs.push((s.jid.clone(), s.subid.clone()));
                }
            }
        }
        self.commit(store, &ops)?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.affs = affs;
            n.subs.retain(|s| {
                !dropped_subs
                    .iter()
                    .any(|(j, id)| *j == s.jid && *id == s.subid)
            });
            for s in &mut n.subs {
                if approved_subs
                    .iter()
                    .any(|(j, id)| *j == s.jid && *id == s.subid)
                {
                    s.state = SubState::Subscribed;
                }
            }
            n.subs_changed();
        }
        for (jid, subid) in dropped_subs {
            self.subscription_changed(&name, &jid, &subid, "none");
        }
        for (jid, subid) in approved_subs {
            self.subscription_changed(&name, &jid, &subid, "subscribed");
        }
        Ok(None)
    }
}

impl NodeConfig {
    fn access_model_str(&self) -> &'static str {
        match self.access_model {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
            AccessModel::Authorize => "authorize",
        }
    }
    fn publish_model_str(&self) -> &'static str {
        match self.publish_model {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }
}
