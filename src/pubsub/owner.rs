//! Owner use cases (XEP-0060 §8): configure, delete, purge, and managing subscriptions
//! and affiliations.

use super::*;

impl Host<'_> {
    /// §8.2 configure a node (get the form, or submit it). XEP-0248: `pubsub#node_type`
    /// (leaf → collection purges the items; collection → leaf is refused),
    /// `pubsub#collection` (the parents), `pubsub#children` (the children) and
    /// `pubsub#children_max` change the graph; both lists stay consistent because only
    /// the parents are stored. The root collection cannot be configured.
    pub(super) fn owner_configure(&mut self, req: &Req, c: &Element, set: bool) -> Reply {
        if c.attr("node") == Some(dag::ROOT) {
            return Err(PubSubError::Dag(dag::DagError::Root));
        }
        let (name, n) = self.owned_node(c, req)?;
        if !set {
            let mut cfg = n.config.clone();
            if cfg.kind == Kind::Collection {
                cfg.children = Some(
                    self.svc
                        .dag
                        .children(&name)
                        .iter()
                        .map(|c| c.to_string())
                        .collect(),
                );
            }
            return Ok(Some(
                Element::new("pubsub", NS_PUBSUB_OWNER)
                    .with_child(
                        Element::new("configure", NS_PUBSUB_OWNER)
                            .with_attr("node", name.as_str())
                            .with_child(cfg.to_form(FORM_NODE_CONFIG)),
                    )
                    .to_string_in_stream(),
            ));
        }
        let x = find_form(c).ok_or(PubSubError::BadForm("no data form".into()))?;
        if x.attr("type") == Some("cancel") {
            return Ok(None);
        }
        let mut cfg = n.config.clone();
        cfg.apply_form(x, FORM_NODE_CONFIG, &self.svc.limits)?;
        self.check_forced(&name, &cfg)?;
        if self.svc.owner.is_some() && cfg.kind == Kind::Collection {
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
        let backup = graph_changed.then(|| self.svc.dag.clone());
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
                        self.svc.dag = b;
                    }
                    return Err(e);
                }
            }
        }
        cfg.children = None;
        cfg.parents = self.explicit_parents(&name);
        let Some(n) = self.svc.nodes.get(&name) else {
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
            let max = cfg.effective_max_items(&self.svc.limits);
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
        if let Err(e) = self.commit(&ops) {
            if let Some(b) = backup {
                self.svc.dag = b;
            }
            return Err(e);
        }
        let was_transient = !n.config.persist_items;
        let total = &mut self.eng.stored_total;
        let n = self
            .svc
            .nodes
            .get_mut(&name)
            .ok_or(PubSubError::NodeNotFound)?;
        n.config = cfg;
        if now_transient || to_collection {
            n.clear_items(total);
            n.last = None;
        } else if was_transient && n.config.persist_items {
            n.last = None;
        }
        n.remove_seqs(&drop_seqs, total);
        self.sync_parents(&events);
        if self
            .svc
            .nodes
            .get(&name)
            .is_some_and(|n| n.config.notify_config)
        {
            let inner = Self::node_event_xml("configuration", &name);
            self.notify(&name, &inner);
        }
        self.notify_edges(&events);
        Ok(None)
    }

    /// §8.4 delete a node (notify subscribers, optional redirect). XEP-0248: the root
    /// cannot be deleted; a deleted collection's children that have no other parent go
    /// back to the root (the documented deletion policy), in the same commit.
    pub(super) fn owner_delete(&mut self, req: &Req, d: &Element) -> Reply {
        if d.attr("node") == Some(dag::ROOT) {
            return Err(PubSubError::Dag(dag::DagError::Root));
        }
        let (name, n) = self.owned_node(d, req)?;
        let notify = n.config.notify_delete;
        let events = self.svc.dag.plan_remove(&name).map_err(PubSubError::Dag)?;
        let mut ops = vec![PubsubOp::DeleteNode(name.clone())];
        for c in self.svc.dag.children(&name) {
            if let Some(cn) = self.svc.nodes.get(&**c) {
                let mut cfg = cn.config.clone();
                cfg.parents.retain(|p| p != &name);
                let mut rec = cn.record();
                rec.config = cfg.to_pairs();
                ops.push(PubsubOp::PutNode(c.to_string(), rec));
            }
        }
        self.commit(&ops)?;
        if notify {
            let mut inner = String::with_capacity(64);
            let mut w = Writer::new(&mut inner);
            w.start("delete").attr("node", &name);
            if let Some(uri) = d
                .child("redirect", NS_PUBSUB_OWNER)
                .and_then(|r| r.attr("uri"))
            {
                w.start("redirect").attr("uri", uri).end();
            }
            w.end();
            self.notify(&name, &inner);
        }
        if let Err(e) = self.svc.dag.remove(&name) {
            tracing::error!(node = name, error = %e, "collection graph out of step on delete");
        }
        if let Some(n) = self.svc.nodes.remove(&name) {
            self.eng.stored_total = self.eng.stored_total.saturating_sub(n.stored);
        }
        self.sync_parents(&events);
        self.notify_edges(&events);
        Ok(None)
    }

    /// §8.5 purge every item (subscribers are notified unless
    /// `deliver_notifications` is off).
    pub(super) fn owner_purge(&mut self, req: &Req, p: &Element) -> Reply {
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
        self.commit(&[PubsubOp::PurgeItems(name.clone())])?;
        if let Some(n) = self.svc.nodes.get_mut(&name) {
            n.clear_items(&mut self.eng.stored_total);
            n.last = None;
        }
        let inner = Self::node_event_xml("purge", &name);
        self.notify(&name, &inner);
        self.notify_collections(&name, &inner);
        Ok(None)
    }

    /// §8.8 manage subscriptions: list them (with state and SubID), or set states
    /// `subscribed` (approves pending ones, or creates one) and `none` (removes one by
    /// SubID, or every subscription of the JID).
    pub(super) fn owner_subscriptions(&mut self, req: &Req, e: &Element, set: bool) -> Reply {
        let (name, n) = self.owned_node(e, req)?;
        if !set {
            return Ok(Some(owner_list("subscriptions", &name, |w| {
                for sub in &n.subs {
                    w.start("subscription")
                        .attr("jid", sub.jid.as_str())
                        .attr("subid", &sub.subid)
                        .attr("subscription", sub.state.as_str())
                        .end();
                }
            })));
        }
        let mut subs = n.subs.clone();
        let tempsub = n.config.tempsub;
        for s in e.children_named("subscription", NS_PUBSUB_OWNER) {
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
                        self.eng.counter = self.eng.counter.wrapping_add(1);
                        subs.push(Sub {
                            jid: jid.clone(),
                            subid: format!("{:x}-{:x}", req.now_ms, self.eng.counter),
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
        if subs.len() > self.svc.limits.pubsub_max_subscriptions_per_node {
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
        self.commit(&ops)?;
        if let Some(n) = self.svc.nodes.get_mut(&name) {
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
    pub(super) fn owner_affiliations(&mut self, req: &Req, e: &Element, set: bool) -> Reply {
        let (name, n) = self.owned_node(e, req)?;
        if !set {
            return Ok(Some(owner_list("affiliations", &name, |w| {
                for (j, a) in &n.affs {
                    w.start("affiliation")
                        .attr("jid", j)
                        .attr("affiliation", a.as_str())
                        .end();
                }
            })));
        }
        let mut affs = n.affs.clone();
        let mut changes: Vec<(String, Affiliation)> = Vec::new();
        for a in e.children_named("affiliation", NS_PUBSUB_OWNER) {
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
        if affs.len() > self.svc.limits.pubsub_max_subscriptions_per_node {
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
        self.commit(&ops)?;
        if let Some(n) = self.svc.nodes.get_mut(&name) {
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

/// `<pubsub xmlns='…#owner'><{list} node='{node}'>…</{list}></pubsub>`, the entries written
/// by `entries` (§8.8 and §8.9 retrieval).
fn owner_list<'n>(
    list: &'n str,
    node: &str,
    entries: impl for<'o> FnOnce(&mut Writer<'o, 'n>),
) -> String {
    crate::xml::build(|w| {
        w.start("pubsub").ns(NS_PUBSUB_OWNER);
        w.start(list).attr("node", node);
        entries(w);
        w.end_all();
    })
}
