//! Pub-sub hosts as values: the generic service at `pubsub.<domain>` and one PEP service
//! per account (XEP-0163) are each a [`Service`]; a request is handled by a [`Host`], which
//! borrows the one service it is for, the engine-wide state ([`Common`]) and carries the
//! request's context (its time and the notifications it produces).
//!
//! This module owns the split between what belongs to one host (its JID, nodes, collection
//! graph, bounds and store-key prefix) and what the engine shares across hosts (the
//! configured limits, policies, id counters, and the node and byte totals that the
//! `pubsub_max_nodes` and `store.max_bytes` bounds count). The node total is brought up to
//! date as each request ends ([`Engine::host`]); the byte total where items are added and
//! dropped. No request recounts other hosts' nodes or bytes.

use super::*;

/// One pub-sub host: the generic service or one account's PEP service.
#[derive(Debug)]
pub(super) struct Service {
    /// The host's JID: `pubsub.<domain>`, or the account's bare JID for PEP.
    pub(super) jid: Jid,
    /// `jid` escaped for an attribute, once: it is the `from` of every notification.
    pub(super) jid_attr: String,
    /// This host's bounds. For PEP: `pubsub_max_items_per_node` is
    /// `pep_max_items_per_node` (what `max` means) and `pubsub_max_nodes` is
    /// `pep_max_nodes_per_account`; set once when the service is made, never changed.
    pub(super) limits: Rc<Limits>,
    /// Every node; for the generic service the root collection (`""`, never stored) too.
    pub(super) nodes: BTreeMap<String, Node>,
    /// The XEP-0248 graph: kinds and parent/child edges of `nodes` (flat for PEP).
    pub(super) dag: Dag,
    /// `pubsub.path_collections` (never for PEP).
    pub(super) path_collections: bool,
    /// The PEP account (its store keys are `01 owner 01 node`); `None` for the generic
    /// service, whose store keys are the node ids.
    pub(super) owner: Option<Jid>,
}

impl Service {
    /// The PEP service of `owner`, empty.
    pub(super) fn pep(owner: &Jid, common: &Common) -> Service {
        Service {
            jid: owner.clone(),
            jid_attr: escaped_attr(owner.as_str()),
            limits: common.pep_limits.clone(),
            nodes: BTreeMap::new(),
            dag: Dag::new(common.pep_limits.pubsub_max_nodes, 1),
            path_collections: false,
            owner: Some(owner.clone()),
        }
    }

    /// Number of nodes (the root collection is not counted).
    pub(super) fn node_count(&self) -> usize {
        self.nodes.len() - usize::from(self.nodes.contains_key(dag::ROOT))
    }

    /// Bytes the store holds for this host's items.
    pub(super) fn stored(&self) -> u64 {
        self.nodes.values().map(|n| n.stored).sum()
    }
}

/// `s` escaped for an attribute value.
pub(super) fn escaped_attr(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    crate::xml::escape_attr(s, &mut o);
    o
}

/// What the engine shares across its hosts.
#[derive(Debug)]
pub(super) struct Common {
    pub(super) domain: String,
    /// The configured limits (the generic service's bounds).
    pub(super) limits: Rc<Limits>,
    /// The PEP services' bounds (see [`Service::limits`]), shared by all of them.
    pub(super) pep_limits: Rc<Limits>,
    pub(super) create_policy: CreatePolicy,
    pub(super) admins: Vec<String>,
    /// `store.max_bytes` (0: none) and `store.full_policy`.
    pub(super) budget: u64,
    pub(super) full_policy: FullPolicy,
    /// PEP settings (`[pubsub] pep_force`, `limits.pep_*`).
    pub(super) pep_cfg: pep::PepConfig,
    /// The counter part of generated ids (items, SubIDs, instant nodes). It starts from a
    /// random value per process ([`Engine::seed_ids`]), so ids of another run differ even
    /// when the clock (the other part) stepped back, as on boards without an RTC; item
    /// ids are also checked against the node's items ([`Host::new_item_id`]).
    pub(super) counter: u64,
    /// The sequence of the next published item, engine-wide (item keys keep per-node
    /// order; one counter also orders items of different nodes).
    pub(super) next_item_seq: u64,
    /// Nodes of every host (roots not counted), for `pubsub_max_nodes`.
    pub(super) nodes_total: usize,
    /// Bytes of every host's items, for `store.max_bytes`: kept by the `Node` methods that
    /// add and drop items ([`Node::push_item`], `remove_seqs`, `clear_items`) and by node
    /// deletion, so no request sums it.
    pub(super) stored_total: u64,
}

/// A [`Directory`] that knows nobody: for work on the service's own state, such as
/// building the collection graph at load.
pub(super) struct Nobody;

impl Directory for Nobody {
    fn roster_entry(&self, _: &Jid, _: &Jid) -> Option<(bool, Vec<String>)> {
        None
    }

    fn presences(&self, _: &Jid) -> Vec<(Jid, String)> {
        Vec::new()
    }
}

/// The request being handled.
pub(super) struct Req {
    pub(super) bare: Jid,
    pub(super) now_ms: u64,
}

/// What a request runs with besides the host: the rosters and presences, the store, and the
/// time (ms since the epoch); what [`Engine::host`] puts into the [`Host`].
pub(super) type Cx<'a> = (&'a dyn Directory, &'a dyn Storage, u64);

/// One host, borrowed for one request (or event), with the request's context (the `Ctx`
/// of the design): its time, the rosters and presences it may read, the store, and the
/// notifications it produces (sent after its reply).
pub(super) struct Host<'a> {
    pub(super) svc: &'a mut Service,
    pub(super) eng: &'a mut Common,
    /// Rosters and presences of the accounts (the router's IM side).
    pub(super) dir: &'a dyn Directory,
    /// The database.
    pub(super) store: &'a dyn Storage,
    /// Time of the request being handled (ms since the epoch).
    pub(super) now_ms: u64,
    /// Notifications produced by the request; sent after its reply.
    pub(super) out: Vec<Delivery>,
    /// Nodes of the other hosts when the request started.
    nodes_elsewhere: usize,
}

impl Host<'_> {
    /// Most nodes this host may have now: its own bound, and for PEP also what is left of
    /// `pubsub_max_nodes` after every other host's nodes.
    pub(super) fn node_cap(&self) -> usize {
        match self.svc.owner {
            None => self.svc.limits.pubsub_max_nodes,
            Some(_) => self.svc.limits.pubsub_max_nodes.min(
                self.eng
                    .limits
                    .pubsub_max_nodes
                    .saturating_sub(self.nodes_elsewhere),
            ),
        }
    }

    /// The store node id of `name` on this host.
    pub(super) fn store_key(&self, name: &str) -> String {
        match &self.svc.owner {
            None => name.to_owned(),
            Some(o) => pep::store_key(o.as_str(), name),
        }
    }
}

impl Engine {
    /// Runs `f` on the host `owner` names (`None`: the generic service; a PEP service is
    /// made if the account has none) at `now_ms`, then brings the engine's node and byte
    /// totals up to date and drops a PEP service left without nodes.
    pub(super) fn host<T>(
        &mut self,
        owner: Option<&Jid>,
        cx: Cx<'_>,
        f: impl FnOnce(&mut Host<'_>) -> T,
    ) -> T {
        let (dir, store, now_ms) = cx;
        let Engine {
            common,
            generic,
            pep,
            ..
        } = self;
        let svc = match owner {
            None => generic,
            Some(o) => pep
                .entry(o.as_str().to_owned())
                .or_insert_with(|| Service::pep(o, common)),
        };
        let nodes_before = svc.node_count();
        let mut host = Host {
            nodes_elsewhere: common.nodes_total.saturating_sub(nodes_before),
            svc,
            eng: common,
            dir,
            store,
            now_ms,
            out: Vec::new(),
        };
        let r = f(&mut host);
        let Host { svc, eng, .. } = host;
        // (Saturating: while the engine loads, the totals are counted only at the end.)
        eng.nodes_total = (eng.nodes_total + svc.node_count()).saturating_sub(nodes_before);
        if let Some(o) = owner {
            if svc.nodes.is_empty() {
                pep.remove(o.as_str());
            }
        }
        r
    }
}

#[cfg(test)]
impl Engine {
    /// Panics unless the engine's node and byte totals equal a recount of every host (the
    /// transcript tests check this after each request).
    pub(super) fn check_totals(&self) {
        let hosts = || std::iter::once(&self.generic).chain(self.pep.values());
        let nodes: usize = hosts().map(Service::node_count).sum();
        assert_eq!(self.common.nodes_total, nodes, "node total out of step");
        let stored: u64 = hosts().map(Service::stored).sum();
        assert_eq!(self.common.stored_total, stored, "byte total out of step");
        assert!(
            self.pep.values().all(|s| !s.nodes.is_empty()),
            "an empty PEP service is kept"
        );
    }
}
