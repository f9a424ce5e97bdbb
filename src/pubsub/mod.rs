//! The XEP-0060 publish-subscribe service at `pubsub.<domain>`: a sans-IO engine.
//!
//! The router hands it every IQ addressed to the service JID ([`Engine::handle_iq`]) and
//! every initial presence ([`Engine::on_available`]), together with a [`Directory`] (roster
//! and account lookups), the store ([`Storage`]) and the current time. It answers with a list of
//! [`Delivery`]s: already-serialised stanzas and their recipients. It never touches a
//! socket or a clock.
//!
//! # State and durability
//!
//! Nodes, their configuration, subscriptions, affiliations and an index of their items
//! (sequence, id, time) live in memory, loaded at start; item payloads live in redb, except
//! the last item of every node, which is cached. Every change is one store batch
//! ([`crate::storage::PubsubOp`]) staged ([`Storage::pubsub_stage`], which checks it) *before*
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

mod access;
mod approval;
mod collections;
mod commit;
mod config;
mod create;
pub mod dag;
mod date;
mod disco;
mod error;
mod expiry;
mod items;
mod load;
mod model;
mod notify;
mod owner;
mod pep;
mod publish;
mod retract;
mod rsm;
mod service;
mod subscribe;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

pub use commit::{committed, restore, save_failed_error, unavailable_error};
pub use config::{AccessModel, NodeConfig, NodeFull, PublishModel, SendLast};
pub use date::{parse_xep0082, xep0082};
pub use error::PubSubError;
pub use model::Affiliation;
pub use pep::PEP_FEATURES;
use service::{Common, Cx, Host, Nobody, Req, Service};

use crate::config::{Config, CreatePolicy, FullPolicy};
use crate::jid::Jid;
use crate::limits::Limits;
use crate::outbox::Stanza;
use crate::proto::{self, NS_DISCO_INFO, NS_DISCO_ITEMS};
use crate::storage::{
    DEPTH_ALL, ItemRecord, NodeRecord, PubsubOp, Storage, StoreError, SubscriptionRecord,
};
#[cfg(test)]
use crate::xml::NS_CLIENT; // for the tests' `use super::*`
use crate::xml::{Element, Raw, Writer};
use config::{
    FORM_META_DATA, FORM_NODE_CONFIG, FORM_PUBLISH_OPTIONS, FORM_SUBSCRIBE_OPTIONS, NS_DATA,
    find_form, form_fields, hidden_form_type,
};
use dag::{Dag, Depth, Kind};
use model::{
    CachedItem, IndexEntry, Node, SHOW_SET, SHOWS, Sub, SubOptions, SubState, SubType, item_cost,
};
use rsm::{Page, Window, parse_len};
use std::borrow::Cow;
use wire::{body_text, flag, item_xml, serialise_payload, write_item};

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
    /// XEP-0160: kept in offline storage when the recipient (a bare JID of a local
    /// account) has no available resource. Set for event notifications of nodes with
    /// `pubsub#notification_type = normal` and without `presence_based_delivery`; never
    /// for replies or headline notifications.
    pub keep_offline: bool,
}

/// XEP-0131 SHIM headers.
pub const NS_SHIM: &str = "http://jabber.org/protocol/shim";
/// XEP-0050 ad-hoc commands.
pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
/// The `get-pending` command node (§8.7).
pub const CMD_GET_PENDING: &str = "http://jabber.org/protocol/pubsub#get-pending";
/// `FORM_TYPE` of the subscription approval form (§8.6).
pub const FORM_SUBSCRIBE_AUTH: &str = "http://jabber.org/protocol/pubsub#subscribe_authorization";

/// What a request handler answers: the payload of the IQ result (`None`: an empty
/// result), or the error to reply with.
type Reply = Result<Option<String>, PubSubError>;

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

/// The pub-sub engine: the generic service, every account's PEP service, and what they
/// share (see `service.rs`); plus the timer state and the outputs held for the disk.
#[derive(Debug)]
pub struct Engine {
    common: Common,
    /// The XEP-0060 service at `pubsub.<domain>`.
    generic: Service,
    /// XEP-0163: the PEP service of every account that has PEP nodes, by bare JID.
    pep: std::collections::HashMap<String, Service>,
    /// The deadline last handed to the timer ([`Engine::arm`]).
    armed: Option<u64>,
    /// After a failed timer commit: no retry before this time (ms).
    retry_at: u64,
    /// Outputs waiting for a group commit.
    held: commit::Held,
}

impl Engine {
    /// The service JID.
    pub fn service(&self) -> &Jid {
        &self.generic.jid
    }

    /// Number of nodes of the generic service (the root collection is not counted).
    pub fn node_count(&self) -> usize {
        self.generic.node_count()
    }

    /// [`Engine::handle_iq`], without holding the outputs.
    fn handle_iq_now(&mut self, cx: Cx<'_>, from: &Jid, iq: &Element) -> Vec<Delivery> {
        let ty = iq.attr("type").unwrap_or("");
        if !matches!(ty, "get" | "set") {
            return Vec::new();
        }
        // XEP-0163: an IQ to an account's bare JID (or without `to`: the sender's own)
        // is for that account's PEP service (the router sends only those here).
        let target = match iq.attr("to") {
            None => Some(from.bare()),
            Some(t) => Jid::parse(t).ok().map(|j| j.bare()),
        };
        let owner = target.filter(|t| *t != self.generic.jid);
        self.host(owner.as_ref(), cx, |h| h.handle_iq(from, iq, ty == "set"))
    }
}

impl Host<'_> {
    /// A request to this host: the reply first, then the notifications it caused.
    fn handle_iq(&mut self, from: &Jid, iq: &Element, set: bool) -> Vec<Delivery> {
        let now_ms = self.now_ms;
        let ty = if set { "set" } else { "get" };
        let req = Req {
            bare: from.bare(),
            now_ms,
        };
        let result = match proto::iq_payload(iq) {
            Some(p) if p.is("query", NS_DISCO_INFO) && ty == "get" => self.disco_info(&req, p),
            Some(p) if p.is("query", NS_DISCO_ITEMS) && ty == "get" => self.disco_items(&req, p),
            Some(p) if p.is("pubsub", NS_PUBSUB) => self.pubsub(&req, p, ty == "set"),
            Some(p) if p.is("pubsub", NS_PUBSUB_OWNER) => self.owner(&req, p, ty == "set"),
            Some(p) if p.is("command", NS_COMMANDS) && ty == "set" => self.command(&req, p),
            _ => {
                let err =
                    crate::proto::StanzaError::new(crate::proto::Condition::ServiceUnavailable);
                let mut v = Vec::new();
                if let Some(r) = proto::error_reply(iq, &err) {
                    v.push(Delivery {
                        to: from.clone(),
                        stanza: Stanza::from(r.to_string_in_stream()),
                        keep_offline: false,
                    });
                }
                return v;
            }
        };
        let mut v = Vec::with_capacity(1 + self.out.len());
        match result {
            Ok(payload) => {
                let mut s = String::with_capacity(96 + payload.as_ref().map_or(0, String::len));
                let mut w = Writer::new(&mut s);
                w.start("iq")
                    .attr("type", "result")
                    .attr("id", iq.attr("id").unwrap_or(""))
                    .attr("to", from.as_str())
                    .attr("from", iq.attr("to").unwrap_or(self.svc.jid.as_str()));
                if let Some(p) = &payload {
                    w.raw(Raw(p));
                }
                w.end();
                v.push(Delivery {
                    to: from.clone(),
                    stanza: Stanza::from(s),
                    keep_offline: false,
                });
                v.append(&mut self.out);
            }
            Err(e) => {
                self.out.clear();
                if let Some(r) = proto::error_reply(iq, &e.to_stanza_error()) {
                    v.push(Delivery {
                        to: from.clone(),
                        stanza: Stanza::from(r.to_string_in_stream()),
                        keep_offline: false,
                    });
                }
            }
        }
        v
    }

    /// Stages `ops` (one request's changes) for the next commit, or commits them at once
    /// in [`crate::store::CommitMode::Inline`]; call before changing memory.
    fn commit(&self, ops: &[PubsubOp]) -> Result<(), PubSubError> {
        let mapped;
        let ops = match &self.svc.owner {
            None => ops,
            Some(o) => {
                mapped = pep::store_ops(o, ops);
                &mapped
            }
        };
        self.store.pubsub_stage(ops).map_err(|e| match e {
            StoreError::LimitReached { .. } => PubSubError::Backlog,
            e => {
                tracing::error!(error = %e, "pub-sub store commit failed");
                PubSubError::Internal
            }
        })
    }

    fn node_attr(e: &Element) -> Result<&str, PubSubError> {
        match e.attr("node") {
            Some(n) if !n.is_empty() => Ok(n),
            _ => Err(PubSubError::NodeIdRequired),
        }
    }

    fn pubsub(&mut self, req: &Req, p: &Element, set: bool) -> Reply {
        let mut children = p.elements();
        let Some(first) = children.next() else {
            return Err(PubSubError::BadRequest("empty pubsub element"));
        };
        let rest: Vec<&Element> = children.collect();
        let sibling = |name: &str| rest.iter().copied().find(|e| e.is(name, NS_PUBSUB));
        match (first.name.as_str(), set) {
            ("create", true) => self.create(req, first, sibling("configure")),
            ("publish", true) => self.publish(req, first, sibling("publish-options")),
            ("retract", true) => self.retract(req, first),
            ("subscribe", true) => self.subscribe(req, first, sibling("options")),
            ("unsubscribe", true) => self.unsubscribe(req, first),
            ("options", _) => self.options(req, first, set),
            ("items", false) => {
                let rsm = rest.iter().copied().find(|e| e.is("set", NS_RSM));
                self.items(req, first, rsm)
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

    fn owner(&mut self, req: &Req, p: &Element, set: bool) -> Reply {
        let Some(first) = p.elements().next() else {
            return Err(PubSubError::BadRequest("empty pubsub element"));
        };
        if !first.ns.eq(NS_PUBSUB_OWNER) {
            return Err(PubSubError::BadRequest("unknown owner request"));
        }
        match (first.name.as_str(), set) {
            ("configure", _) => self.owner_configure(req, first, set),
            ("default", false) => {
                // XEP-0248: `<default type='collection'/>` gives the collection defaults.
                let cfg = if first.attr("type") == Some("collection") {
                    NodeConfig::collection_default(&self.svc.limits)
                } else {
                    self.default_config()
                };
                Ok(Some(
                    Element::new("pubsub", NS_PUBSUB_OWNER)
                        .with_child(
                            Element::new("default", NS_PUBSUB_OWNER)
                                .with_child(cfg.to_form(FORM_NODE_CONFIG)),
                        )
                        .to_string_in_stream(),
                ))
            }
            ("delete", true) => self.owner_delete(req, first),
            ("purge", true) => self.owner_purge(req, first),
            ("subscriptions", _) => self.owner_subscriptions(req, first, set),
            ("affiliations", _) => self.owner_affiliations(req, first, set),
            ("collection", true) => self.owner_collection(req, first),
            _ => Err(PubSubError::BadRequest("unknown owner request")),
        }
    }
}
