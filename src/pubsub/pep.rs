//! XEP-0163 Personal Eventing Protocol: every account's bare JID is a virtual pub-sub
//! service. This module owns the per-account services (their nodes and how they are
//! keyed in the store), swapping one in so that the XEP-0060 handlers serve it unchanged,
//! the PEP defaults and operator-forced configuration, the implicit recipients of PEP
//! notifications (`+notify` interest from XEP-0115 caps, presence subscriptions), the
//! last-item rule (sent only when a node becomes of interest), and access recalculation
//! when a roster changes.
//!
//! # Store keys
//!
//! A PEP node is stored in the ordinary pub-sub tables under the node id
//! `01 owner-bare-jid 01 node` (U+0001 can occur neither in an XML node id nor in a JID),
//! so generic nodes keep their keys: nothing to migrate, and every row of an account is
//! the key range of the prefix `01 owner 01`.

use std::collections::HashSet;

use super::*;

/// Separator of PEP store keys (not an XML character, so in no node id or JID).
const SEP: char = '\u{1}';

/// The `http://jabber.org/protocol/pubsub#…` features of a PEP service (XEP-0163 §6),
/// each implemented (collections are not: PEP services are flat).
pub const PEP_FEATURES: &[&str] = &[
    "access-open",
    "access-presence",
    "access-roster",
    "access-whitelist",
    "auto-create",
    "auto-subscribe",
    "config-node",
    "create-and-configure",
    "create-nodes",
    "delete-items",
    "delete-nodes",
    "filtered-notifications",
    "item-ids",
    "last-published",
    "multi-items",
    "persistent-items",
    "publish",
    "publish-options",
    "purge-nodes",
    "retract-items",
    "retrieve-items",
    "retrieve-subscriptions",
    "subscribe",
    "rsm",
];

/// The forced `(field, values)` of one node.
pub(super) type Forced = Vec<(String, Vec<String>)>;

/// PEP settings from the configuration.
#[derive(Debug, Clone)]
pub(super) struct PepConfig {
    /// `limits.pep_max_nodes_per_account`.
    pub(super) max_nodes: usize,
    /// `limits.pep_max_items_per_node`: what `max` means on a PEP node.
    pub(super) max_items: usize,
    /// `[pubsub.pep_force]`: node name → (field, values), applied at creation and kept.
    pub(super) force: Vec<(String, Forced)>,
}

impl PepConfig {
    pub(super) fn from_config(config: &Config) -> PepConfig {
        PepConfig {
            max_nodes: config.limits.pep_max_nodes_per_account,
            max_items: config.limits.pep_max_items_per_node,
            force: config
                .pubsub
                .pep_force
                .iter()
                .map(|(node, fields)| {
                    (
                        node.clone(),
                        fields
                            .iter()
                            .map(|(k, v)| (format!("pubsub#{k}"), vec![v.clone()]))
                            .collect(),
                    )
                })
                .collect(),
        }
    }
}

/// The store node id of PEP node `node` of `owner`.
pub(super) fn store_key(owner: &str, node: &str) -> String {
    format!("{SEP}{owner}{SEP}{node}")
}

/// `(owner, node)` of a PEP store node id.
fn parse_store_key(k: &str) -> Option<(&str, &str)> {
    let rest = k.strip_prefix(SEP)?;
    rest.split_once(SEP)
}

/// `ops` with every node id turned into `owner`'s store key.
pub(super) fn store_ops(owner: &Jid, ops: &[PubsubOp]) -> Vec<PubsubOp> {
    let k = |n: &String| store_key(owner.as_str(), n);
    ops.iter()
        .map(|op| match op {
            PubsubOp::PutNode(n, r) => PubsubOp::PutNode(k(n), r.clone()),
            PubsubOp::DeleteNode(n) => PubsubOp::DeleteNode(k(n)),
            PubsubOp::PutItem(n, s, r) => PubsubOp::PutItem(k(n), *s, r.clone()),
            PubsubOp::DeleteItem(n, s) => PubsubOp::DeleteItem(k(n), *s),
            PubsubOp::PurgeItems(n) => PubsubOp::PurgeItems(k(n)),
            PubsubOp::PutSubscription(n, j, r) => {
                PubsubOp::PutSubscription(k(n), j.clone(), r.clone())
            }
            PubsubOp::DeleteSubscription(n, j) => PubsubOp::DeleteSubscription(k(n), j.clone()),
            PubsubOp::DeleteSubscriptionId(n, j, s) => {
                PubsubOp::DeleteSubscriptionId(k(n), j.clone(), s.clone())
            }
            PubsubOp::PutAffiliation(n, j, a) => PubsubOp::PutAffiliation(k(n), j.clone(), *a),
            PubsubOp::DeleteAffiliation(n, j) => PubsubOp::DeleteAffiliation(k(n), j.clone()),
        })
        .collect()
}

impl NodeConfig {
    /// The PEP defaults (XEP-0163 §5): presence access, one item, last item on
    /// subscription and presence. Items pushed out by `max_items` go silently
    /// (`discard-oldest`): a retraction after every new tune or avatar would tell clients
    /// the data was withdrawn.
    pub fn pep_default(limits: &Limits) -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Presence,
            max_items: Some(1),
            send_last: SendLast::OnSubAndPresence,
            node_full: NodeFull::DiscardOldest,
            ..NodeConfig::default_for(limits)
        }
    }
}

impl Engine {
    /// Moves the loaded PEP nodes (store keys `01 owner 01 node`) to their services.
    pub(super) fn split_pep(&mut self) {
        let keys: Vec<String> = self
            .generic
            .nodes
            .keys()
            .filter(|k| k.starts_with(SEP))
            .cloned()
            .collect();
        for k in keys {
            let Some(n) = self.generic.nodes.remove(&k) else {
                continue;
            };
            let Some((owner, node)) = parse_store_key(&k) else {
                tracing::warn!(key = k, "unreadable PEP node key ignored");
                continue;
            };
            let Ok(owner_jid) = Jid::parse(owner) else {
                tracing::warn!(key = k, "PEP node of an unreadable account JID ignored");
                continue;
            };
            let common = &self.common;
            let svc = self
                .pep
                .entry(owner.to_owned())
                .or_insert_with(|| Service::pep(&owner_jid, common));
            let mut may = |_: &str, _: &str| true;
            if svc.dag.create(node, Kind::Leaf, &[], &mut may).is_err() {
                tracing::warn!(owner, node, "PEP node beyond the per-account bound ignored");
                continue;
            }
            svc.nodes.insert(node.to_owned(), n);
        }
    }
}

impl Host<'_> {
    /// The default configuration of a new node in the service swapped in.
    pub(super) fn default_config(&self) -> NodeConfig {
        if self.svc.owner.is_some() {
            NodeConfig::pep_default(&self.svc.limits)
        } else {
            NodeConfig::default_for(&self.svc.limits)
        }
    }

    /// The operator-forced fields of PEP node `name` (none on the generic service).
    fn forced(&self, name: &str) -> &[(String, Vec<String>)] {
        if self.svc.owner.is_none() {
            return &[];
        }
        self.eng
            .pep_cfg
            .force
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, f)| f.as_slice())
    }

    /// Applies the forced fields of `name` to a new node's configuration.
    pub(super) fn apply_forced(&self, name: &str, cfg: &mut NodeConfig) -> Result<(), PubSubError> {
        for (var, values) in self.forced(name) {
            cfg.set(var, values, &self.svc.limits)?;
        }
        Ok(())
    }

    /// Refuses a new node's configuration (create form or publish-options) that asks for
    /// another value of a forced field of `name` than the operator's.
    pub(super) fn check_forced_form(
        &self,
        name: &str,
        cfg: &NodeConfig,
    ) -> Result<(), PubSubError> {
        let base = self.default_config();
        for (var, values) in self.forced(name) {
            let mut forced = base.clone();
            forced.set(var, values, &self.svc.limits)?;
            let asked = cfg.values(var);
            if asked != base.values(var) && asked != forced.values(var) {
                return Err(PubSubError::BadForm(format!(
                    "{var} of this node is set by the server operator"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a configuration that changes a forced field of `name` (`not-acceptable`,
    /// naming the field: the operator's choice is never silently overridden).
    pub(super) fn check_forced(&self, name: &str, cfg: &NodeConfig) -> Result<(), PubSubError> {
        for (var, values) in self.forced(name) {
            let mut want = cfg.clone();
            want.set(var, values, &self.svc.limits)?;
            if want != *cfg {
                return Err(PubSubError::BadForm(format!(
                    "{var} of this node is set by the server operator"
                )));
            }
        }
        Ok(())
    }

    /// The implicit recipients of a PEP event on `node` (XEP-0163 §4.1, §4.2, §4.3.1):
    /// every available resource of the owner and of each contact with a presence
    /// subscription (that passes the node's access model) which advertised
    /// `node+notify`, except those an explicit subscription already reached.
    pub(super) fn notify_pep(&mut self, node: &str, inner: &str) {
        let Some(owner) = self.svc.owner.clone() else {
            return;
        };
        let Some(n) = self.svc.nodes.get(node) else {
            return;
        };
        if !n.config.deliver_notifications {
            return;
        }
        let now = self.now_ms;
        let covered: HashSet<&Jid> = n
            .subs
            .iter()
            .filter(|s| s.active(now))
            .map(|s| &s.jid)
            .collect();
        let mut seen: HashSet<Jid> = HashSet::new();
        let mut msgs = Vec::new();
        let shared: Rc<str> = Rc::from(inner); // one copy, shared by every recipient
        let mut accounts = vec![owner.clone()];
        accounts.extend(
            self.dir
                .presence_subscribers(&owner)
                .into_iter()
                .filter(|c| c != &owner && self.check_access(n, c).is_ok()),
        );
        for account in &accounts {
            if covered.contains(account) {
                continue;
            }
            for (full, _) in self.dir.presences(account) {
                if covered.contains(&full)
                    || !self.dir.wants(&full, node)
                    || !seen.insert(full.clone())
                {
                    continue;
                }
                msgs.push(self.message_ext(&full, n.config.headline, &shared, None, &[], None));
            }
        }
        self.out.extend(msgs);
    }

    /// The last item of `name` for `full` (with a delay stamp), if it has one to send.
    fn pep_last_item(&self, name: &str, full: &Jid) -> Option<Delivery> {
        let n = self.svc.nodes.get(name)?;
        if n.config.send_last == SendLast::Never {
            return None;
        }
        if self.check_access(n, &full.bare()).is_err() {
            return None;
        }
        let entry = n.items.back();
        let last: CachedItem = match (&n.last, entry) {
            (Some(l), _) => (**l).clone(),
            (None, Some(e)) => self.load_items(name, &[e]).ok()?.into_iter().next()?,
            (None, None) => return None,
        };
        if n.expired(last.published_ms, self.now_ms) {
            return None;
        }
        let inner = self.items_event(
            name,
            &item_xml(
                &last,
                n.config.deliver_payloads,
                n.config.itemreply_publisher,
            ),
        );
        Some(self.message(full, n.config.headline, &inner, Some(last.published_ms)))
    }
}

impl Engine {
    /// XEP-0163 §4.3.4: `full` newly advertised interest in `added` (its initial presence,
    /// or a caps change): the last item of each such node of its own account and of every
    /// account it has a presence subscription to. Never called for a presence update
    /// that changes no interest, so status changes send nothing.
    pub fn pep_interest_added(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        full: &Jid,
        added: &[Rc<str>],
        now_ms: u64,
    ) -> Vec<Delivery> {
        let bare = full.bare();
        let mut owners = vec![bare.clone()];
        owners.extend(dir.presence_subscriptions(&bare));
        let mut out = Vec::new();
        for o in owners {
            if !self.pep.contains_key(o.as_str()) {
                continue;
            }
            out.extend(self.host(Some(&o), (dir, store, now_ms), |h| {
                added
                    .iter()
                    .filter_map(|name| h.pep_last_item(name, full))
                    .collect::<Vec<_>>()
            }));
        }
        self.hold_if_waiting(out)
    }

    /// XEP-0163 §7.1 and §4.3.4: the roster of `owner` changed for `contact` (a presence
    /// subscription granted or cancelled, groups changed). Explicit subscriptions of the
    /// contact it may no longer use are cancelled (told with a subscription-state notice):
    /// to `owner`'s PEP nodes, and to generic nodes `owner` owns whose presence or roster
    /// access model depends on that roster. With `gained`, the contact's interested
    /// resources get the last item of the PEP nodes they may now read.
    pub fn pep_roster_changed(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        owner: &Jid,
        contact: &Jid,
        gained: bool,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let contact = contact.bare();
        let mut out = self.host(None, (dir, store, now_ms), |h| {
            h.cancel_lost_access(Some(owner), &contact);
            std::mem::take(&mut h.out)
        });
        if self.pep.contains_key(owner.as_str()) {
            out.extend(self.host(Some(owner), (dir, store, now_ms), |h| {
                h.cancel_lost_access(None, &contact);
                let mut out = std::mem::take(&mut h.out);
                if gained {
                    let names: Vec<String> = h.svc.nodes.keys().cloned().collect();
                    let mut fulls: Vec<Jid> = h
                        .dir
                        .presences(&contact)
                        .into_iter()
                        .map(|(f, _)| f)
                        .collect();
                    fulls.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                    fulls.dedup();
                    for full in fulls {
                        for name in &names {
                            if h.dir.wants(&full, name) {
                                out.extend(h.pep_last_item(name, &full));
                            }
                        }
                    }
                }
                out
            }));
        }
        self.hold_if_waiting(out)
    }

    /// Deletes every PEP node of `owner` (account deletion), in one commit.
    ///
    /// # Errors
    ///
    /// The store refused the batch.
    pub fn pep_delete_account(
        &mut self,
        store: &dyn Storage,
        owner: &Jid,
    ) -> Result<(), PubSubError> {
        let Some(svc) = self.pep.get(owner.as_str()) else {
            return Ok(());
        };
        let ops: Vec<PubsubOp> = svc
            .nodes
            .keys()
            .map(|n| PubsubOp::DeleteNode(store_key(owner.as_str(), n)))
            .collect();
        store
            .pubsub_stage(&ops)
            .map_err(|_| PubSubError::Internal)?;
        if let Some(svc) = self.pep.remove(owner.as_str()) {
            self.common.nodes_total = self.common.nodes_total.saturating_sub(svc.node_count());
            self.common.stored_total = self.common.stored_total.saturating_sub(svc.stored());
        }
        Ok(())
    }

    /// Number of PEP nodes of `owner` (for tests and metrics).
    pub fn pep_node_count(&self, owner: &Jid) -> usize {
        self.pep.get(owner.as_str()).map_or(0, |s| s.nodes.len())
    }
}

impl Host<'_> {
    /// Cancels the explicit subscriptions of `contact` (bare) to the nodes of the service
    /// swapped in that it may no longer read; with `owned_by`, only nodes that account owns
    /// with the presence or roster access model (the generic service). The contact gets a
    /// `subscription='none'` notice for each. Outputs go to `self.out`.
    fn cancel_lost_access(&mut self, owned_by: Option<&Jid>, contact: &Jid) {
        let mut ops = Vec::new();
        let mut lost: Vec<(String, Sub)> = Vec::new();
        for (name, n) in &self.svc.nodes {
            if let Some(o) = owned_by {
                let owns = n
                    .affs
                    .iter()
                    .any(|(j, a)| j == o.as_str() && *a == Affiliation::Owner);
                let roster_based = matches!(
                    n.config.access_model,
                    AccessModel::Presence | AccessModel::Roster
                );
                if !owns || !roster_based {
                    continue;
                }
            }
            if !n.subs.iter().any(|s| s.jid.bare() == *contact)
                || self.check_access(n, contact).is_ok()
            {
                continue;
            }
            for s in n.subs.iter().filter(|s| s.jid.bare() == *contact) {
                ops.push(s.delete(name));
                lost.push((name.clone(), s.clone()));
            }
        }
        if ops.is_empty() {
            return;
        }
        if let Err(err) = self.commit(&ops) {
            tracing::warn!(contact = %contact, error = %err, "subscriptions that lost access not cancelled");
            return;
        }
        for (name, sub) in &lost {
            self.remove_sub(name, sub);
            self.subscription_changed(name, &sub.jid, &sub.subid, "none");
        }
    }
}
