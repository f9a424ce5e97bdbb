//! Publishing items (XEP-0060 §7.1) with publish-options, generated item ids, and the
//! evictions it causes (`max_items`, `store.max_bytes`).

use super::*;

impl Host<'_> {
    /// A generated id for a new item of `node` that no item of the node has: a publish
    /// must never overwrite an item by an id the client did not choose.
    pub(super) fn new_item_id(&mut self, node: &str, now_ms: u64) -> String {
        let taken = |e: &Self, id: &str| {
            e.svc
                .nodes
                .get(node)
                .is_some_and(|n| n.items.iter().any(|i| i.id == id))
        };
        // Each try has a new counter value; at most one try per item can fail.
        let tries = self.svc.nodes.get(node).map_or(0, |n| n.items.len()) + 1;
        let mut id = self.new_id(now_ms);
        for _ in 1..tries {
            if !taken(self, &id) {
                break;
            }
            id = self.new_id(now_ms);
        }
        id
    }

    /// §7.1 publish, with §7.1.5 publish-options and auto-create.
    pub(super) fn publish(&mut self, req: &Req, p: &Element, options: Option<&Element>) -> Reply {
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
        let exists = self.svc.nodes.contains_key(&name);
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
                    .apply_form(x, FORM_PUBLISH_OPTIONS, &self.svc.limits)
                    .map_err(|e| PubSubError::PreconditionNotMet(e.to_string()))?;
                // `max` equals the cap it stands for (XEP-0402 asks for `max`).
                let mut have = n.config.clone();
                for c in [&mut wanted, &mut have] {
                    c.max_items = Some(c.effective_max_items(&self.svc.limits));
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
                cfg.apply_form(x, FORM_PUBLISH_OPTIONS, &self.svc.limits)
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
        if payload_xml.len()
            > cfg
                .max_payload_size
                .min(self.svc.limits.pubsub_max_item_bytes)
        {
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
        let (seq, mut evicted, full) = match self.svc.nodes.get(&name) {
            Some(n) => {
                let (gone, full) = Self::evictions(
                    n,
                    &id,
                    cfg.effective_max_items(&self.svc.limits),
                    req.now_ms,
                );
                (self.eng.next_item_seq.max(n.next_seq), gone, full)
            }
            None => (self.eng.next_item_seq, Vec::new(), Vec::new()),
        };
        // Sequences are service-wide, so that items of different nodes published in the
        // same millisecond still have one order (collection items, newest first).
        self.eng.next_item_seq = seq + 1;
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
            self.commit(&ops)?;
        } else {
            self.create_node(req, &name, cfg.clone(), ops)?;
        }
        for (node, seq) in elsewhere.iter().filter(|(n, _)| n != &name) {
            if let Some(n) = self.svc.nodes.get_mut(node) {
                n.remove_seqs(&[*seq], &mut self.eng.stored_total);
            }
        }
        let Some(n) = self.svc.nodes.get_mut(&name) else {
            return Err(PubSubError::Internal);
        };
        if cfg.persist_items {
            n.remove_seqs(&evicted, &mut self.eng.stored_total);
            n.push_item(
                IndexEntry {
                    seq,
                    id: id.clone(),
                    published_ms: req.now_ms,
                    bytes: cached.payload.len(),
                    stored: cost,
                    publisher: Rc::from(req.bare.as_str()),
                },
                &mut self.eng.stored_total,
            );
            n.next_seq = seq + 1;
        }
        // PEP: a large last item (an avatar) is read from the store when needed instead
        // of being cached for every account (`limits.pep_cache_payload_bytes`).
        let pep_big = self.svc.owner.is_some()
            && cfg.persist_items
            && cached.payload.len() > self.svc.limits.pep_cache_payload_bytes;
        n.last = (!pep_big).then(|| cached.clone());
        // Fan-out: the item is serialised once, the envelope per subscriber.
        let shared = self.items_event(
            &name,
            &item_xml(&cached, cfg.deliver_payloads, cfg.itemreply_publisher),
        );
        // The text rendering costs a parse of the payload: only when someone wants it.
        let body = self
            .svc
            .nodes
            .get(&name)
            .is_some_and(|n| n.subs.iter().any(|s| s.opts.include_body))
            .then(|| body_text(&name, &cached));
        self.notify_items(&name, &shared, body.as_deref());
        self.notify_collections(&name, &shared);
        if cfg.persist_items && cfg.node_full == NodeFull::RetractOldest && cfg.notify_retract {
            for (_, old) in &full {
                let inner = self.items_event(&name, &Self::retract_xml(old));
                self.notify_items(&name, &inner, None);
                self.notify_collections(&name, &inner);
            }
        }
        Ok(Some(crate::xml::build(|w| {
            w.start("pubsub").ns(NS_PUBSUB);
            w.start("publish").attr("node", &name);
            w.start("item").attr("id", &id).end_all();
        })))
    }

    /// Items to delete before inserting item `id`: first those replaced or expired (an
    /// item with the same id, §7.1.2, and items older than `item_expire`), then the
    /// oldest beyond `max` as `(seq, id)` (what `publish_node_full` governs).
    pub(super) fn evictions(
        n: &Node,
        id: &str,
        max: usize,
        now_ms: u64,
    ) -> (Vec<u64>, Vec<(u64, String)>) {
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

    /// Items to delete so that an item costing `cost` fits `self.store.max_bytes`, oldest
    /// first across every node, as `(node, seq)`; `skip` are items of `node` this publish
    /// deletes anyway. Under the `reject` policy a full budget is an error instead.
    pub(super) fn budget_evictions(
        &self,
        node: &str,
        skip: &[u64],
        cost: u64,
    ) -> Result<Vec<(String, u64)>, PubSubError> {
        if self.eng.budget == 0 {
            return Ok(Vec::new());
        }
        let total = self.eng.stored_total;
        let freed: u64 = self
            .svc
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
        let mut over = (total - freed + cost).saturating_sub(self.eng.budget);
        if over == 0 {
            return Ok(Vec::new());
        }
        if cost > self.eng.budget || self.eng.full_policy == FullPolicy::Reject {
            return Err(PubSubError::StoreFull);
        }
        // Merge the per-node queues (each oldest first) by publication time.
        let mut cursors: Vec<(&String, &Node, usize)> =
            self.svc.nodes.iter().map(|(k, n)| (k, n, 0)).collect();
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
}
