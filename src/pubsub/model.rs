//! The data model of a pub-sub service: affiliations (§4.1), subscription states and
//! options (§4.2, §6.3), subscriptions, item index entries and leaf/collection nodes.

use super::*;

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
    pub(super) fn parse(s: &str) -> Option<Self> {
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
    pub(super) fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Owner => 1,
            Self::Publisher => 2,
            Self::PublishOnly => 3,
            Self::Member => 4,
            Self::Outcast => 5,
        }
    }
    pub(super) fn from_code(c: u8) -> Self {
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
pub(super) struct IndexEntry {
    pub(super) seq: u64,
    pub(super) id: String,
    pub(super) published_ms: u64,
    /// Payload length in bytes (to size replies before reading payloads).
    pub(super) bytes: usize,
    /// The publisher's bare JID (for `purge_offline`).
    pub(super) publisher: Rc<str>,
    /// What the item counts against `store.max_bytes` ([`item_cost`]).
    pub(super) stored: u64,
}

/// Bytes an item counts against the store budget: payload, id, publisher and about 48
/// bytes of key and record overhead.
pub(super) fn item_cost(payload: usize, id: &str, publisher: &str) -> u64 {
    (payload + id.len() + publisher.len() + 48) as u64
}

/// A fully loaded item.
#[derive(Clone, Debug)]
pub(super) struct CachedItem {
    pub(super) id: String,
    pub(super) publisher: String,
    pub(super) published_ms: u64,
    /// The payload element as XML text (namespace declared on it); empty when none.
    pub(super) payload: String,
}

impl CachedItem {
    /// The index entry a transient node's last item stands as (not stored: `seq` and
    /// `stored` 0).
    pub(super) fn transient_entry(&self) -> IndexEntry {
        IndexEntry {
            seq: 0,
            id: self.id.clone(),
            published_ms: self.published_ms,
            bytes: self.payload.len(),
            stored: 0,
            publisher: Rc::from(self.publisher.as_str()),
        }
    }
}

/// The `pubsub#show-values` values, in bit order of [`SubOptions::show`].
pub(super) const SHOWS: [&str; 5] = ["away", "chat", "dnd", "online", "xa"];
/// Bit of [`SubOptions::show`] saying the option is set at all.
pub(super) const SHOW_SET: u8 = 0x80;

/// A subscription's state (§4.2; `none` is the absence of a subscription).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SubState {
    /// Awaiting an owner's approval (authorize access model).
    Pending,
    /// Subscribed.
    Subscribed,
}

impl SubState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Subscribed => "subscribed",
        }
    }
}

/// XEP-0248 `pubsub#subscription_type`: which events of a collection a subscription takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SubType {
    /// Node events (associations, dissociations): the default.
    Nodes,
    /// Item events of the leaves below.
    Items,
    /// Both.
    All,
}

impl SubType {
    pub(super) fn code(self) -> u8 {
        match self {
            Self::Nodes => 0,
            Self::Items => 1,
            Self::All => 2,
        }
    }
    pub(super) fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Items,
            2 => Self::All,
            _ => Self::Nodes,
        }
    }
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Nodes => "nodes",
            Self::Items => "items",
            Self::All => "all",
        }
    }
    pub(super) fn items(self) -> bool {
        self != Self::Nodes
    }
    pub(super) fn nodes(self) -> bool {
        self != Self::Items
    }
}

/// Subscription options (`pubsub#subscribe_options`, §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SubOptions {
    pub(super) deliver: bool,
    pub(super) include_body: bool,
    /// `expire` = `presence` (§12.4), or forced by the node's `tempsub`.
    pub(super) temporary: bool,
    /// [`SHOW_SET`] plus one bit per [`SHOWS`] value; 0 = any presence.
    pub(super) show: u8,
    /// Lease end (§12.18), ms since the epoch; 0 = none.
    pub(super) expire_ms: u64,
    /// XEP-0248 `pubsub#subscription_type` (meaningful on collections only).
    pub(super) sub_type: SubType,
    /// XEP-0248 `pubsub#subscription_depth` (meaningful on collections only).
    pub(super) depth: Depth,
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
    pub(super) fn show_ok(&self, show: &str) -> bool {
        self.show & SHOW_SET == 0
            || SHOWS
                .iter()
                .position(|s| *s == show)
                .is_some_and(|i| self.show & (1 << i) != 0)
    }
}

/// One subscription (several per JID and node, told apart by SubID).
#[derive(Clone, Debug)]
pub(super) struct Sub {
    pub(super) jid: Jid,
    pub(super) subid: String,
    pub(super) state: SubState,
    pub(super) opts: SubOptions,
}

impl Sub {
    pub(super) fn record(&self) -> SubscriptionRecord {
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
    pub(super) fn put(&self, node: &str) -> PubsubOp {
        PubsubOp::PutSubscription(node.to_owned(), self.jid.as_str().to_owned(), self.record())
    }
    pub(super) fn delete(&self, node: &str) -> PubsubOp {
        PubsubOp::DeleteSubscriptionId(
            node.to_owned(),
            self.jid.as_str().to_owned(),
            self.subid.clone(),
        )
    }
    /// Whether notifications go to it at `now_ms`.
    pub(super) fn active(&self, now_ms: u64) -> bool {
        self.state == SubState::Subscribed
            && self.opts.deliver
            && (self.opts.expire_ms == 0 || self.opts.expire_ms > now_ms)
    }
}

/// A leaf node.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) created_ms: u64,
    pub(super) creator: String,
    pub(super) config: NodeConfig,
    /// Persistent items, oldest first (empty for transient nodes).
    pub(super) items: VecDeque<IndexEntry>,
    pub(super) next_seq: u64,
    /// The last published item (the only one of a transient node).
    pub(super) last: Option<Rc<CachedItem>>,
    /// Subscriptions in `(jid, subid)` order.
    pub(super) subs: Vec<Sub>,
    /// Earliest lease end among `subs` (0: none); kept by [`Node::subs_changed`].
    pub(super) lease_min: u64,
    /// Bare JID → affiliation (never `None`).
    pub(super) affs: Vec<(String, Affiliation)>,
    /// Sum of `stored` over `items`.
    pub(super) stored: u64,
}

impl Node {
    /// A node with no items and no subscriptions.
    pub(super) fn new(
        created_ms: u64,
        creator: String,
        config: NodeConfig,
        affs: Vec<(String, Affiliation)>,
    ) -> Self {
        Self {
            created_ms,
            creator,
            config,
            items: VecDeque::new(),
            next_seq: 1,
            last: None,
            subs: Vec::new(),
            lease_min: 0,
            affs,
            stored: 0,
        }
    }
    /// Recomputes `lease_min` after `subs` changed.
    pub(super) fn subs_changed(&mut self) {
        self.lease_min = self
            .subs
            .iter()
            .map(|s| s.opts.expire_ms)
            .filter(|e| *e != 0)
            .min()
            .unwrap_or(0);
    }
    /// Removes the subscription with `sub`'s JID and SubID.
    pub(super) fn remove_sub(&mut self, sub: &Sub) {
        self.subs
            .retain(|s| !(s.jid == sub.jid && s.subid == sub.subid));
        self.subs_changed();
    }
    /// Inserts `sub` in `(jid, subid)` order.
    pub(super) fn insert_sub(&mut self, sub: Sub) {
        let pos = self.subs.partition_point(|s| {
            (s.jid.as_str(), s.subid.as_str()) < (sub.jid.as_str(), sub.subid.as_str())
        });
        self.subs.insert(pos, sub);
        self.subs_changed();
    }
    /// Number of approved subscriptions.
    pub(super) fn subscribed(&self) -> usize {
        self.subs
            .iter()
            .filter(|s| s.state == SubState::Subscribed)
            .count()
    }
    /// When the next item or lease of this node expires (ms since the epoch).
    pub(super) fn next_deadline(&self) -> Option<u64> {
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
    /// Appends an item; `total` (the engine's bytes of every host, for `store.max_bytes`)
    /// follows this node's count, as in [`Node::remove_seqs`] and [`Node::clear_items`].
    pub(super) fn push_item(&mut self, e: IndexEntry, total: &mut u64) {
        self.stored += e.stored;
        *total += e.stored;
        self.items.push_back(e);
    }
    pub(super) fn remove_seqs(&mut self, seqs: &[u64], total: &mut u64) {
        let mut freed = 0;
        self.items.retain(|e| {
            let gone = seqs.contains(&e.seq);
            if gone {
                freed += e.stored;
            }
            !gone
        });
        self.stored -= freed;
        *total = total.saturating_sub(freed);
        if self.config.persist_items && self.items.is_empty() {
            self.last = None;
        }
    }
    pub(super) fn clear_items(&mut self, total: &mut u64) {
        self.items.clear();
        *total = total.saturating_sub(self.stored);
        self.stored = 0;
    }
    pub(super) fn record(&self) -> NodeRecord {
        NodeRecord {
            created_ms: self.created_ms,
            creator: self.creator.clone(),
            config: self.config.to_pairs(),
        }
    }
    pub(super) fn expired(&self, published_ms: u64, now_ms: u64) -> bool {
        self.config
            .item_expire
            .is_some_and(|s| published_ms.saturating_add(s.saturating_mul(1000)) <= now_ms)
    }
}

impl NodeConfig {
    pub(super) fn access_model_str(&self) -> &'static str {
        match self.access_model {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
            AccessModel::Authorize => "authorize",
        }
    }
    pub(super) fn publish_model_str(&self) -> &'static str {
        match self.publish_model {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }
}
