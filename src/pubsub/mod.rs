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

mod commit;
mod config;
pub mod dag;
mod error;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::rc::Rc;

pub use commit::{MAX_DEFERRED, MAX_DEFERRED_BYTES, MAX_HELD_BYTES, committed};
pub use config::{AccessModel, NodeConfig, NodeFull, PublishModel, SendLast};
pub use error::PubSubError;

use crate::config::{Config, CreatePolicy, FullPolicy};
use crate::jid::Jid;
use crate::limits::Limits;
use crate::proto::{self, NS_DISCO_INFO, NS_DISCO_ITEMS};
use crate::store::{ItemRecord, NodeRecord, PubsubOp, Store, StoreError, SubscriptionRecord};
use crate::xml::{Element, NS_CLIENT, escape_attr, escape_text};
use config::{
    FORM_META_DATA, FORM_NODE_CONFIG, FORM_PUBLISH_OPTIONS, FORM_SUBSCRIBE_OPTIONS, NS_DATA,
    find_form, form_fields, hidden_form_type,
};

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
    "access-open",                // check_access, AccessModel::Open (the default)
    "access-presence",            // check_access, AccessModel::Presence
    "access-roster",              // check_access, AccessModel::Roster
    "access-whitelist",           // check_access, AccessModel::Whitelist
    "auto-create",                // publish to a missing node
    "config-node",                // owner_configure
    "config-node-max",            // NodeConfig::set accepts `max`
    "create-and-configure",       // create with <configure><x/>
    "create-nodes",               // create
    "delete-items",               // retract
    "delete-nodes",               // owner_delete
    "instant-nodes",              // create without a node id
    "item-ids",                   // publish with an item id
    "last-published",             // send_last_published_item
    "manage-subscriptions",       // owner_subscriptions
    "member-affiliation",         // Affiliation::Member
    "meta-data",                  // disco#info of a node
    "modify-affiliations",        // owner_affiliations
    "multi-items",                // max_items > 1
    "outcast-affiliation",        // Affiliation::Outcast
    "persistent-items",           // persist_items
    "publish",                    // publish
    "publish-node-full",          // NodeFull: retract-oldest, discard-oldest, reject
    "publish-options",            // preconditions
    "publish-only-affiliation",   // Affiliation::PublishOnly
    "publisher-affiliation",      // Affiliation::Publisher
    "purge-nodes",                // owner_purge
    "retract-items",              // retract
    "retrieve-affiliations",      // own affiliations
    "retrieve-default",           // owner <default/>
    "retrieve-default-sub",       // <default/> subscription options
    "retrieve-items",             // items
    "retrieve-subscriptions",     // own subscriptions
    "rsm",                        // items: XEP-0059 paging (Rsm)
    "subscribe",                  // subscribe / unsubscribe
    "subscription-notifications", // subscription_changed (owner changes, §12.13)
    "subscription-options",       // options
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
}

/// A serialised stanza and its recipient: a full JID (one resource) or a bare JID (every
/// available resource of the account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Recipient.
    pub to: Jid,
    /// The stanza, ready for the outbox.
    pub stanza: Rc<str>,
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

/// One subscription (at most one per JID and node: no SubIDs).
#[derive(Clone, Debug)]
struct Sub {
    jid: Jid,
    deliver: bool,
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
    subs: Vec<Sub>,
    /// Bare JID → affiliation (never `None`).
    affs: Vec<(String, Affiliation)>,
    /// Sum of `stored` over `items`.
    stored: u64,
}

impl Node {
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
    nodes: BTreeMap<String, Node>,
    counter: u64,
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

/// An XEP-0059 request: `max`, and `after` or `before` (empty `before` = the last page).
struct Rsm {
    max: Option<usize>,
    after: Option<String>,
    before: Option<String>,
    index: Option<usize>,
}

impl Rsm {
    fn parse(set: &Element) -> Result<Rsm, PubSubError> {
        let num =
            |name: &str| -> Result<Option<usize>, PubSubError> {
                match set.child(name, NS_RSM) {
                    None => Ok(None),
                    Some(e) => e.text().trim().parse::<usize>().map(Some).map_err(|_| {
                        PubSubError::BadRequest("RSM numbers are non-negative integers")
                    }),
                }
            };
        Ok(Rsm {
            max: num("max")?,
            after: set.child("after", NS_RSM).map(Element::text),
            before: set.child("before", NS_RSM).map(Element::text),
            index: num("index")?,
        })
    }

    /// The requested window `[lo, hi)` over `entries`, and whether a size cut should keep
    /// its end (paging backwards) rather than its start. An unknown `after`/`before` id is
    /// `item-not-found` (XEP-0059 §2.5).
    fn window(&self, ids: &[&str]) -> Result<(usize, usize, bool), PubSubError> {
        let pos = |id: &str| {
            ids.iter()
                .position(|e| *e == id)
                .ok_or(PubSubError::ItemNotFound)
        };
        let n = ids.len();
        let max = self.max.unwrap_or(n);
        if let Some(b) = &self.before {
            let hi = if b.is_empty() { n } else { pos(b)? };
            return Ok((hi.saturating_sub(max), hi, true));
        }
        let lo = match (&self.after, self.index) {
            (Some(a), _) => pos(a)? + 1,
            (None, Some(i)) => i.min(n),
            (None, None) => 0,
        };
        Ok((lo, (lo + max).min(n), false))
    }
}

/// Shrinks the window `[lo, hi)` so that the summed `cost` of its rows stays within
/// `budget` (always keeping one row), from its start, or from its end when paging backwards.
fn fit(
    lo: usize,
    hi: usize,
    from_end: bool,
    budget: usize,
    cost: impl Fn(usize) -> usize,
) -> (usize, usize) {
    let mut used = 0;
    let mut kept = 0;
    while kept < hi - lo {
        let i = if from_end { hi - kept - 1 } else { lo + kept };
        if kept > 0 && used + cost(i) > budget {
            break;
        }
        used += cost(i);
        kept += 1;
    }
    if from_end {
        (hi - kept, hi)
    } else {
        (lo, lo + kept)
    }
}

/// The XEP-0059 `<set/>` of a page starting at `index` with keys `page` out of `count`.
fn rsm_set(index: usize, page: &[&str], count: usize) -> String {
    let mut s = format!("<set xmlns='{NS_RSM}'>");
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        let _ = write!(
            s,
            "<first index='{index}'>{}</first><last>{}</last>",
            text(first),
            text(last)
        );
    }
    let _ = write!(s, "<count>{count}</count></set>");
    s
}

/// `s` escaped for an attribute value.
fn attr(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    escape_attr(s, &mut o);
    o
}

/// XEP-0082 date-time (UTC, milliseconds) for `ms` since the epoch.
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

/// `<item id='…' publisher='…'>payload</item>` (or without payload).
fn item_xml(it: &CachedItem, with_payload: bool) -> String {
    let mut s = String::with_capacity(48 + it.id.len() + it.payload.len());
    let _ = write!(
        s,
        "<item id='{}' publisher='{}'",
        attr(&it.id),
        attr(&it.publisher)
    );
    if with_payload && !it.payload.is_empty() {
        s.push('>');
        s.push_str(&it.payload);
        s.push_str("</item>");
    } else {
        s.push_str("/>");
    }
    s
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
            counter: 0,
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
                    affs: Vec::new(),
                },
            );
        }
        for (name, seq, item, bytes) in snap.items {
            if let Some(n) = engine.nodes.get_mut(&name) {
                n.next_seq = n.next_seq.max(seq + 1);
                let stored = item_cost(bytes, &item.id, &item.publisher);
                n.push_item(IndexEntry {
                    seq,
                    id: item.id,
                    published_ms: item.published_ms,
                    bytes,
                    stored,
                });
            }
        }
        for (name, jid, rec) in snap.subscriptions {
            if let (Some(n), Ok(j)) = (engine.nodes.get_mut(&name), Jid::parse(&jid)) {
                if rec.state == 3 {
                    n.subs.push(Sub {
                        jid: j,
                        deliver: rec.deliver,
                    });
                }
            }
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
        Ok(engine)
    }

    /// The service JID.
    pub fn service(&self) -> &Jid {
        &self.service
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
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
        let ty = iq.attr("type").unwrap_or("");
        if !matches!(ty, "get" | "set") {
            return Vec::new();
        }
        let req = Req {
            bare: from.bare(),
            now_ms,
        };
        let result = match proto::iq_payload(iq) {
            Some(p) if p.is("query", NS_DISCO_INFO) && ty == "get" => self.disco_info(&req, p),
            Some(p) if p.is("query", NS_DISCO_ITEMS) && ty == "get" => self.disco_items(&req, p),
            Some(p) if p.is("pubsub", NS_PUBSUB) => self.pubsub(dir, store, &req, p, ty == "set"),
            Some(p) if p.is("pubsub", NS_PUBSUB_OWNER) => self.owner(store, &req, p, ty == "set"),
            _ => {
                let err =
                    crate::proto::StanzaError::new(crate::proto::Condition::ServiceUnavailable);
                let mut v = Vec::new();
                if let Some(r) = proto::error_reply(iq, &err) {
                    v.push(Delivery {
                        to: from.clone(),
                        stanza: Rc::from(r.to_string_in_stream()),
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
                    stanza: Rc::from(s),
                });
                v.append(&mut self.out);
            }
            Err(e) => {
                self.out.clear();
                if let Some(r) = proto::error_reply(iq, &e.to_stanza_error()) {
                    v.push(Delivery {
                        to: from.clone(),
                        stanza: Rc::from(r.to_string_in_stream()),
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
                .any(|s| s.deliver && (s.jid == bare || &s.jid == full));
            if subscribed {
                let inner = self.items_event(name, &item_xml(last, n.config.deliver_payloads));
                out.push(self.message(full, n.config.headline, &inner, Some(last.published_ms)));
            }
        }
        out
    }

    // ------------------------------------------------------------ helpers

    /// One notification: the per-subscriber envelope around the shared `inner` text.
    fn message(&self, to: &Jid, headline: bool, inner: &str, delay_ms: Option<u64>) -> Delivery {
        let mut s = String::with_capacity(120 + self.service_attr.len() + inner.len());
        s.push_str("<message from='");
        s.push_str(&self.service_attr);
        s.push_str("' to='");
        escape_attr(to.as_str(), &mut s);
        s.push_str(if headline {
            "' type='headline'>"
        } else {
            "' type='normal'>"
        });
        s.push_str("<event xmlns='");
        s.push_str(NS_PUBSUB_EVENT);
        s.push_str("'>");
        s.push_str(inner);
        s.push_str("</event>");
        if let Some(ms) = delay_ms {
            let _ = write!(
                s,
                "<delay xmlns='{NS_DELAY}' from='{}' stamp='{}'/>",
                attr(self.service.as_str()),
                xep0082(ms)
            );
        }
        s.push_str("</message>");
        Delivery {
            to: to.clone(),
            stanza: Rc::from(s),
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
    fn notify(&mut self, node: &str, inner: &str) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        if !n.config.deliver_notifications {
            return;
        }
        let headline = n.config.headline;
        let msgs: Vec<Delivery> = n
            .subs
            .iter()
            .filter(|s| s.deliver)
            .map(|s| self.message(&s.jid, headline, inner, None))
            .collect();
        self.out.extend(msgs);
    }

    /// §12.13: tells `jid` that an owner changed its subscription to `state`.
    fn subscription_changed(&mut self, node: &str, jid: &Jid, state: &str) {
        let s = format!(
            "<message from='{}' to='{}'><pubsub xmlns='{NS_PUBSUB}'><subscription node='{}' jid='{}' subscription='{state}'/></pubsub></message>",
            attr(self.service.as_str()),
            attr(jid.as_str()),
            attr(node),
            attr(jid.as_str())
        );
        self.out.push(Delivery {
            to: jid.clone(),
            stanza: Rc::from(s),
        });
    }

    /// Stages `ops` (one request's changes) for the next commit, or commits them at once
    /// in [`crate::store::CommitMode::Inline`]; call before changing memory.
    fn commit(store: &Store, ops: &[PubsubOp]) -> Result<(), PubSubError> {
        store.pubsub_stage(ops).map_err(|e| match e {
            StoreError::LimitReached { .. } => PubSubError::Backlog,
            e => {
                tracing::error!(error = %e, "pub-sub store commit failed");
                PubSubError::Internal
            }
        })
    }

    fn affiliation(&self, node: &Node, bare: &Jid) -> Affiliation {
        if self.admins.iter().any(|a| a == bare.as_str()) {
            return Affiliation::Owner;
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
        }
    }

    fn new_id(&mut self, now_ms: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        format!("{now_ms:x}-{:x}", self.counter)
    }

    fn node_attr(e: &Element) -> Result<&str, PubSubError> {
        match e.attr("node") {
            Some(n) if !n.is_empty() => Ok(n),
            _ => Err(PubSubError::NodeIdRequired),
        }
    }

    /// Reads items of `node` by index entries (payloads from the store).
    fn load_items(
        store: &Store,
        name: &str,
        entries: &[&IndexEntry],
    ) -> Result<Vec<CachedItem>, PubSubError> {
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        let got = store.pubsub_items(name, &seqs).map_err(|e| {
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

    fn disco_info(&self, _req: &Req, q: &Element) -> Result<Option<String>, PubSubError> {
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
                for f in [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PUBSUB, NS_RSM] {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
                }
                for f in FEATURES {
                    out.push_child(
                        Element::new("feature", NS_DISCO_INFO)
                            .with_attr("var", format!("{NS_PUBSUB}#{f}")),
                    );
                }
            }
            Some(name) => {
                let n = self.node(name)?;
                out.set_attr("node", name);
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "leaf"),
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
        field("pubsub#title", "text-single", vec![n.config.title.clone()]);
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
            vec![n.subs.len().to_string()],
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
    fn disco_items(&self, req: &Req, q: &Element) -> Result<Option<String>, PubSubError> {
        let svc = attr(self.service.as_str());
        let rsm = q.child("set", NS_RSM).map(Rsm::parse).transpose()?;
        // (key, fragment) in order.
        let (head, rows): (String, Vec<(&str, String)>) = match q.attr("node") {
            None => (
                format!("<query xmlns='{NS_DISCO_ITEMS}'>"),
                self.nodes
                    .iter()
                    .map(|(name, n)| {
                        let mut f = format!("<item jid='{svc}' node='{}'", attr(name));
                        if !n.config.title.is_empty() {
                            let _ = write!(f, " name='{}'", attr(&n.config.title));
                        }
                        f.push_str("/>");
                        (name.as_str(), f)
                    })
                    .collect(),
            ),
            Some(name) => {
                let n = self.node(name)?;
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
        let (lo, hi, from_end) = match &rsm {
            None => (0, rows.len(), false),
            Some(r) => r.window(&keys)?,
        };
        let (lo, hi) = fit(lo, hi, from_end, self.limits.outbox_max_bytes / 2, |i| {
            rows[i].1.len()
        });
        let mut s = head;
        for (_, f) in &rows[lo..hi] {
            s.push_str(f);
        }
        if rsm.is_some() || hi - lo < rows.len() {
            s.push_str(&rsm_set(lo, &keys[lo..hi], rows.len()));
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
            ("create", true) => self.create(store, req, first, sibling("configure")),
            ("publish", true) => self.publish(store, req, first, sibling("publish-options")),
            ("retract", true) => self.retract(store, req, first),
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
        let mut cfg = NodeConfig::default_for(&self.limits);
        if let Some(x) = configure.and_then(find_form) {
            cfg.apply_form(x, FORM_NODE_CONFIG, &self.limits)?;
        }
        self.create_node(store, req, &name, cfg, Vec::new())?;
        if instant {
            Ok(Some(format!(
                "<pubsub xmlns='{NS_PUBSUB}'><create node='{}'/></pubsub>",
                attr(&name)
            )))
        } else {
            Ok(None)
        }
    }

    /// Validates and commits a new node (plus `extra` ops in the same transaction).
    fn create_node(
        &mut self,
        store: &Store,
        req: &Req,
        name: &str,
        cfg: NodeConfig,
        extra: Vec<PubsubOp>,
    ) -> Result<(), PubSubError> {
        if name.len() > MAX_NODE_ID_BYTES {
            return Err(PubSubError::BadRequest("node id too long"));
        }
        if self.nodes.contains_key(name) {
            return Err(PubSubError::NodeExists);
        }
        if self.nodes.len() >= self.limits.pubsub_max_nodes {
            return Err(PubSubError::MaxNodes);
        }
        let node = Node {
            created_ms: req.now_ms,
            creator: req.bare.as_str().to_owned(),
            config: cfg,
            items: VecDeque::new(),
            stored: 0,
            next_seq: 1,
            last: None,
            subs: Vec::new(),
            affs: vec![(req.bare.as_str().to_owned(), Affiliation::Owner)],
        };
        let mut ops = vec![
            PubsubOp::PutNode(name.to_owned(), node.record()),
            PubsubOp::PutAffiliation(
                name.to_owned(),
                req.bare.as_str().to_owned(),
                Affiliation::Owner.code(),
            ),
        ];
        ops.extend(extra);
        Self::commit(store, &ops)?;
        self.nodes.insert(name.to_owned(), node);
        Ok(())
    }

    /// §7.1 publish, with §7.1.5 publish-options and auto-create.
    fn publish(
        &mut self,
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
            let allowed = match self.affiliation(n, &req.bare) {
                Affiliation::Owner | Affiliation::Publisher | Affiliation::PublishOnly => true,
                Affiliation::Outcast => false,
                Affiliation::Member | Affiliation::None => match n.config.publish_model {
                    PublishModel::Open => true,
                    PublishModel::Subscribers => n.subs.iter().any(|s| s.jid.bare() == req.bare),
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
                if wanted != n.config {
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
            let mut cfg = NodeConfig::default_for(&self.limits);
            if let Some(x) = options_form {
                cfg.apply_form(x, FORM_PUBLISH_OPTIONS, &self.limits)
                    .map_err(|e| PubSubError::PreconditionNotMet(e.to_string()))?;
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
            None => self.new_id(req.now_ms),
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
                (n.next_seq, gone, full)
            }
            None => (1, Vec::new(), Vec::new()),
        };
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
            Self::commit(store, &ops)?;
        } else {
            self.create_node(store, req, &name, cfg.clone(), ops)?;
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
            });
            n.next_seq = seq + 1;
        }
        n.last = Some(cached.clone());
        // Fan-out: the item is serialised once, the envelope per subscriber.
        let shared = self.items_event(&name, &item_xml(&cached, cfg.deliver_payloads));
        self.notify(&name, &shared);
        if cfg.persist_items && cfg.node_full == NodeFull::RetractOldest && cfg.notify_retract {
            for (_, old) in &full {
                let inner = self.items_event(&name, &format!("<retract id='{}'/>", attr(old)));
                self.notify(&name, &inner);
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
        let total: u64 = self.nodes.values().map(|n| n.stored).sum();
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
                _ => Self::load_items(store, &name, &[e])?
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
            Self::commit(store, &[PubsubOp::DeleteItem(name.clone(), seq)])?;
        }
        let new_last = {
            let n = self.node(&name)?;
            let rest: Vec<&IndexEntry> = n.items.iter().filter(|e| e.id != id).collect();
            match rest.last() {
                Some(e) if n.last.as_ref().is_some_and(|l| l.id == id) => {
                    Self::load_items(store, &name, &[e])
                        .ok()
                        .and_then(|v| v.into_iter().next())
                        .map(Rc::new)
                }
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
        if notify {
            let inner = self.items_event(&name, &format!("<retract id='{}'/>", attr(&id)));
            self.notify(&name, &inner);
        }
        Ok(None)
    }

    /// The `jid` attribute of a subscribe/unsubscribe/options request, which must be the
    /// requester's bare or full JID (§6.1.3.1).
    fn sub_jid(req: &Req, e: &Element) -> Result<Jid, PubSubError> {
        let j = e
            .attr("jid")
            .and_then(|j| Jid::parse(j).ok())
            .ok_or(PubSubError::InvalidJid)?;
        if j.bare() != req.bare {
            return Err(PubSubError::InvalidJid);
        }
        Ok(j)
    }

    /// §6.1 subscribe.
    fn subscribe(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        req: &Req,
        s: &Element,
        options: Option<&Element>,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(s)?.to_owned();
        let jid = Self::sub_jid(req, s)?;
        let n = self.node(&name)?;
        self.check_access(dir, n, &req.bare)?;
        if !n.config.subscribe {
            return Err(PubSubError::SubscriptionsDisabled);
        }
        let mut deliver = true;
        if let Some(x) = options.and_then(find_form) {
            deliver = Self::parse_sub_options(x, deliver)?;
        }
        let existing = n.subs.iter().position(|x| x.jid == jid);
        if existing.is_none() && n.subs.len() >= self.limits.pubsub_max_subscriptions_per_node {
            return Err(PubSubError::TooManySubscriptions);
        }
        let changed = existing.is_none_or(|i| n.subs[i].deliver != deliver);
        if changed {
            Self::commit(
                store,
                &[PubsubOp::PutSubscription(
                    name.clone(),
                    jid.as_str().to_owned(),
                    SubscriptionRecord { state: 3, deliver },
                )],
            )?;
        }
        let n = self.nodes.get_mut(&name).ok_or(PubSubError::NodeNotFound)?;
        match existing {
            Some(i) => n.subs[i].deliver = deliver,
            None => {
                // Kept in JID order, the order the store loads them in.
                let pos = n.subs.partition_point(|s| s.jid.as_str() < jid.as_str());
                n.subs.insert(
                    pos,
                    Sub {
                        jid: jid.clone(),
                        deliver,
                    },
                );
            }
        }
        // §6.1.7: the last published item, with a delay stamp.
        if n.config.send_last != SendLast::Never {
            if let Some(last) = n.last.clone() {
                if !n.expired(last.published_ms, req.now_ms) {
                    let payloads = n.config.deliver_payloads;
                    let headline = n.config.headline;
                    let inner = self.items_event(&name, &item_xml(&last, payloads));
                    let d = self.message(&jid, headline, &inner, Some(last.published_ms));
                    self.out.push(d);
                }
            }
        }
        Ok(Some(format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscription node='{}' jid='{}' subscription='subscribed'/></pubsub>",
            attr(&name),
            attr(jid.as_str())
        )))
    }

    /// §6.2 unsubscribe.
    fn unsubscribe(
        &mut self,
        store: &Store,
        req: &Req,
        u: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(u)?.to_owned();
        let jid = Self::sub_jid(req, u)?;
        let n = self.node(&name)?;
        let i = n
            .subs
            .iter()
            .position(|s| s.jid == jid)
            .ok_or(PubSubError::NotSubscribed)?;
        Self::commit(
            store,
            &[PubsubOp::DeleteSubscription(
                name.clone(),
                jid.as_str().to_owned(),
            )],
        )?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.subs.remove(i);
        }
        Ok(None)
    }

    fn parse_sub_options(x: &Element, mut deliver: bool) -> Result<bool, PubSubError> {
        for (var, values) in form_fields(x) {
            match var.as_str() {
                "FORM_TYPE" => {
                    if values.first().map(String::as_str) != Some(FORM_SUBSCRIBE_OPTIONS) {
                        return Err(PubSubError::InvalidOptions("wrong FORM_TYPE".into()));
                    }
                }
                "pubsub#deliver" => {
                    deliver = match values.first().map(|v| v.trim()) {
                        Some("1" | "true") => true,
                        Some("0" | "false") => false,
                        _ => {
                            return Err(PubSubError::InvalidOptions(
                                "pubsub#deliver is a boolean".into(),
                            ));
                        }
                    }
                }
                other => {
                    return Err(PubSubError::InvalidOptions(format!(
                        "unsupported option {other:?}"
                    )));
                }
            }
        }
        Ok(deliver)
    }

    fn sub_options_form(deliver: bool, ty: &str) -> Element {
        Element::new("x", NS_DATA)
            .with_attr("type", ty)
            .with_child(hidden_form_type(FORM_SUBSCRIBE_OPTIONS))
            .with_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", "pubsub#deliver")
                    .with_attr("type", "boolean")
                    .with_attr("label", "Enable delivery?")
                    .with_child(Element::new("value", NS_DATA).with_text(if deliver {
                        "1"
                    } else {
                        "0"
                    })),
            )
    }

    /// §6.4 default subscription options.
    fn default_sub_options(d: &Element) -> String {
        let mut e = Element::new("default", NS_PUBSUB);
        if let Some(n) = d.attr("node") {
            e.set_attr("node", n);
        }
        e.push_child(Self::sub_options_form(true, "form"));
        let p = Element::new("pubsub", NS_PUBSUB).with_child(e);
        let mut s = String::new();
        p.write_to(&mut s, NS_CLIENT);
        s
    }

    /// §6.3 subscription options (get and set).
    fn options(
        &mut self,
        store: &Store,
        req: &Req,
        o: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(o)?.to_owned();
        let jid = Self::sub_jid(req, o)?;
        let n = self.node(&name)?;
        let i = n
            .subs
            .iter()
            .position(|s| s.jid == jid)
            .ok_or(PubSubError::NotSubscribed)?;
        if !set {
            let e = Element::new("options", NS_PUBSUB)
                .with_attr("node", name.as_str())
                .with_attr("jid", jid.as_str())
                .with_child(Self::sub_options_form(n.subs[i].deliver, "form"));
            let mut s = String::new();
            Element::new("pubsub", NS_PUBSUB)
                .with_child(e)
                .write_to(&mut s, NS_CLIENT);
            return Ok(Some(s));
        }
        let x = find_form(o).ok_or(PubSubError::InvalidOptions("no form".into()))?;
        let deliver = Self::parse_sub_options(x, n.subs[i].deliver)?;
        Self::commit(
            store,
            &[PubsubOp::PutSubscription(
                name.clone(),
                jid.as_str().to_owned(),
                SubscriptionRecord { state: 3, deliver },
            )],
        )?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.subs[i].deliver = deliver;
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
        self.check_access(dir, n, &req.bare)?;
        let wanted: Vec<&str> = it
            .elements()
            .filter(|e| e.is("item", NS_PUBSUB))
            .filter_map(|e| e.attr("id"))
            .collect();
        let max = match it.attr("max_items") {
            None => None,
            Some(m) => Some(
                m.trim()
                    .parse::<usize>()
                    .map_err(|_| PubSubError::BadRequest("max_items is not a number"))?,
            ),
        };
        let rsm = rsm.map(Rsm::parse).transpose()?;
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
        let count = entries.len();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        // The RSM window [lo, hi) over `entries`, and which end a size cut keeps.
        let (lo, hi, from_end) = match &rsm {
            None => (0, count, false),
            Some(r) => r.window(&ids)?,
        };
        // Estimated reply bytes of one item: payload, id, publisher and markup.
        let (lo, hi) = fit(lo, hi, from_end, self.limits.outbox_max_bytes / 2, |i| {
            entries[i].bytes + entries[i].id.len() + 192
        });
        let cut = rsm.is_none() && hi - lo < count;
        let page = &entries[lo..hi];
        let found: Vec<CachedItem> = if n.config.persist_items {
            Self::load_items(store, &name, page)?
        } else {
            n.last
                .iter()
                .filter(|_| !page.is_empty())
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
            s.push_str(&item_xml(i, true));
        }
        s.push_str("</items>");
        if rsm.is_some() || cut {
            s.push_str(&rsm_set(lo, &ids[lo..hi], count));
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
                let _ = write!(
                    s,
                    "<subscription node='{}' jid='{}' subscription='subscribed'/>",
                    attr(name),
                    attr(sub.jid.as_str())
                );
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
            if only.is_some_and(|o| o != name) {
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
            ("configure", _) => self.owner_configure(store, req, first, set),
            ("default", false) => {
                let cfg = NodeConfig::default_for(&self.limits);
                let mut s = String::new();
                Element::new("pubsub", NS_PUBSUB_OWNER)
                    .with_child(
                        Element::new("default", NS_PUBSUB_OWNER)
                            .with_child(cfg.to_form(FORM_NODE_CONFIG)),
                    )
                    .write_to(&mut s, NS_CLIENT);
                Ok(Some(s))
            }
            ("delete", true) => self.owner_delete(store, req, first),
            ("purge", true) => self.owner_purge(store, req, first),
            ("subscriptions", _) => self.owner_subscriptions(store, req, first, set),
            ("affiliations", _) => self.owner_affiliations(store, req, first, set),
            _ => Err(PubSubError::BadRequest("unknown owner request")),
        }
    }

    /// §8.2 configure a node (get the form, or submit it).
    fn owner_configure(
        &mut self,
        store: &Store,
        req: &Req,
        c: &Element,
        set: bool,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(c)?.to_owned();
        let n = self.require_owner(&name, &req.bare)?;
        if !set {
            let mut s = String::new();
            Element::new("pubsub", NS_PUBSUB_OWNER)
                .with_child(
                    Element::new("configure", NS_PUBSUB_OWNER)
                        .with_attr("node", name.as_str())
                        .with_child(n.config.to_form(FORM_NODE_CONFIG)),
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
        let mut ops = Vec::new();
        let mut drop_seqs = Vec::new();
        let now_transient = n.config.persist_items && !cfg.persist_items;
        if now_transient {
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
        Self::commit(store, &ops)?;
        let was_transient = !n.config.persist_items;
        let n = self.nodes.get_mut(&name).ok_or(PubSubError::NodeNotFound)?;
        n.config = cfg;
        if now_transient {
            n.clear_items();
        } else if was_transient && n.config.persist_items {
            n.last = None;
        }
        n.remove_seqs(&drop_seqs);
        if n.config.notify_config {
            let inner = format!("<configuration node='{}'/>", attr(&name));
            self.notify(&name, &inner);
        }
        Ok(None)
    }

    /// §8.4 delete a node (notify subscribers, optional redirect).
    fn owner_delete(
        &mut self,
        store: &Store,
        req: &Req,
        d: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(d)?.to_owned();
        let n = self.require_owner(&name, &req.bare)?;
        let notify = n.config.notify_delete;
        Self::commit(store, &[PubsubOp::DeleteNode(name.clone())])?;
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
            self.notify(&name, &inner);
        }
        self.nodes.remove(&name);
        Ok(None)
    }

    /// §8.5 purge every item (subscribers are notified unless
    /// `deliver_notifications` is off).
    fn owner_purge(
        &mut self,
        store: &Store,
        req: &Req,
        p: &Element,
    ) -> Result<Option<String>, PubSubError> {
        let name = Self::node_attr(p)?.to_owned();
        self.require_owner(&name, &req.bare)?;
        Self::commit(store, &[PubsubOp::PurgeItems(name.clone())])?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.clear_items();
            n.last = None;
        }
        let inner = format!("<purge node='{}'/>", attr(&name));
        self.notify(&name, &inner);
        Ok(None)
    }

    /// §8.8 manage subscriptions (states `subscribed` and `none`).
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
                    "<subscription jid='{}' subscription='subscribed'/>",
                    attr(sub.jid.as_str())
                );
            }
            s.push_str("</subscriptions></pubsub>");
            return Ok(Some(s));
        }
        let mut changes: Vec<(Jid, bool)> = Vec::new();
        for s in e
            .elements()
            .filter(|x| x.is("subscription", NS_PUBSUB_OWNER))
        {
            let jid = s
                .attr("jid")
                .and_then(|j| Jid::parse(j).ok())
                .ok_or(PubSubError::BadRequest("subscription needs a valid jid"))?;
            let on = match s.attr("subscription") {
                Some("subscribed") => true,
                Some("none") => false,
                Some("pending" | "unconfigured") => {
                    return Err(PubSubError::Unsupported("subscription-options"));
                }
                _ => return Err(PubSubError::BadRequest("unknown subscription state")),
            };
            changes.push((jid, on));
        }
        let mut count = n.subs.len();
        let mut ops = Vec::new();
        for (jid, on) in &changes {
            let has = n.subs.iter().any(|s| &s.jid == jid);
            if *on && !has {
                count += 1;
                ops.push(PubsubOp::PutSubscription(
                    name.clone(),
                    jid.as_str().to_owned(),
                    SubscriptionRecord {
                        state: 3,
                        deliver: true,
                    },
                ));
            } else if !*on && has {
                count -= 1;
                ops.push(PubsubOp::DeleteSubscription(
                    name.clone(),
                    jid.as_str().to_owned(),
                ));
            }
        }
        if count > self.limits.pubsub_max_subscriptions_per_node {
            return Err(PubSubError::TooManySubscriptions);
        }
        Self::commit(store, &ops)?;
        let mut told = Vec::new();
        if let Some(n) = self.nodes.get_mut(&name) {
            for (jid, on) in changes {
                let has = n.subs.iter().any(|s| s.jid == jid);
                if on && !has {
                    let pos = n.subs.partition_point(|s| s.jid.as_str() < jid.as_str());
                    n.subs.insert(
                        pos,
                        Sub {
                            jid: jid.clone(),
                            deliver: true,
                        },
                    );
                    told.push((jid, "subscribed"));
                } else if !on && has {
                    n.subs.retain(|s| s.jid != jid);
                    told.push((jid, "none"));
                }
            }
        }
        for (jid, state) in told {
            self.subscription_changed(&name, &jid, state);
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
        let mut dropped_subs: Vec<Jid> = Vec::new();
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
                // §8.9.2.? an outcast loses its subscriptions.
                for s in n.subs.iter().filter(|s| s.jid.bare().as_str() == jid) {
                    ops.push(PubsubOp::DeleteSubscription(
                        name.clone(),
                        s.jid.as_str().to_owned(),
                    ));
                    dropped_subs.push(s.jid.clone());
                }
            }
        }
        Self::commit(store, &ops)?;
        if let Some(n) = self.nodes.get_mut(&name) {
            n.affs = affs;
            n.subs.retain(|s| !dropped_subs.contains(&s.jid));
        }
        for jid in dropped_subs {
            self.subscription_changed(&name, &jid, "none");
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
