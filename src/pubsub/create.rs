//! Creating nodes (XEP-0060 §8.1, instant nodes §8.1.2) and generating ids.

use super::*;

impl Engine {
    /// Starts the counter of generated ids at `seed`: the router gives a random value per
    /// process (and per reload), so that ids from different runs differ.
    pub fn seed_ids(&mut self, seed: u64) {
        self.common.counter = seed;
    }

    /// The counter of generated ids, to carry over to an engine reloaded in this process.
    pub(crate) fn id_counter(&self) -> u64 {
        self.common.counter
    }
}

impl Host<'_> {
    pub(super) fn new_id(&mut self, now_ms: u64) -> String {
        self.eng.counter = self.eng.counter.wrapping_add(1);
        format!("{now_ms:x}-{:x}", self.eng.counter)
    }

    /// §8.1 create (named, instant, create-and-configure).
    pub(super) fn create(&mut self, req: &Req, c: &Element, configure: Option<&Element>) -> Reply {
        if !self.may_create(&req.bare) {
            return Err(PubSubError::Forbidden("you may not create nodes"));
        }
        let instant = c.attr("node").is_none_or(str::is_empty);
        let name = match c.attr("node") {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => loop {
                let id = format!("instant-{}", self.new_id(req.now_ms));
                if !self.svc.nodes.contains_key(&id) {
                    break id;
                }
            },
        };
        let mut cfg = self.default_config();
        if let Some(x) = configure.and_then(find_form) {
            cfg.apply_form(x, FORM_NODE_CONFIG, &self.svc.limits)?;
        }
        // PEP: the operator's forced fields win at creation; one the form contradicts
        // is refused rather than overridden.
        self.check_forced_form(&name, &cfg)?;
        self.apply_forced(&name, &mut cfg)?;
        self.create_node(req, &name, cfg, Vec::new())?;
        if instant {
            Ok(Some(crate::xml::build(|w| {
                w.start("pubsub").ns(NS_PUBSUB);
                w.start("create").attr("node", &name).end_all();
            })))
        } else {
            Ok(None)
        }
    }

    /// Validates and commits a new node (plus `extra` ops in the same transaction). The
    /// node joins the collection graph under its `pubsub#collection` parents (or, with
    /// `path_collections`, under the collections its `/` path names, created here as
    /// well); the graph changes first and is reverted if the commit fails.
    pub(super) fn create_node(
        &mut self,
        req: &Req,
        name: &str,
        mut cfg: NodeConfig,
        extra: Vec<PubsubOp>,
    ) -> Result<(), PubSubError> {
        if name.len() > MAX_NODE_ID_BYTES {
            return Err(PubSubError::BadRequest("node id too long"));
        }
        if self.svc.nodes.contains_key(name) {
            return Err(PubSubError::NodeExists);
        }
        if self.svc.node_count() >= self.node_cap() {
            return Err(PubSubError::MaxNodes);
        }
        let parents = std::mem::take(&mut cfg.parents);
        let children = cfg.children.take();
        let kind = cfg.kind;
        if self.svc.owner.is_some() && (kind == Kind::Collection || !parents.is_empty()) {
            // PEP services are flat (XEP-0163 leaves collections out).
            return Err(PubSubError::Unsupported("collections"));
        }
        // A clean `/` path whose existing ancestors are collections; anything else
        // (URIs with `//`, a leaf on the way) is created flat, as XEP-0060 nodes always were.
        let path = self.svc.path_collections
            && parents.is_empty()
            && dag::implicit_parents(name).is_some_and(|a| {
                !a.is_empty() && a.iter().all(|p| self.svc.dag.kind(p) != Some(Kind::Leaf))
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
        let undo = |h: &mut Host<'_>, events: &[dag::Event]| {
            h.svc.dag.revert(events);
            for c in created.iter().rev() {
                let _ = h.svc.dag.remove(c);
            }
        };
        if kind == Kind::Collection {
            let r = self
                .svc
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
                NodeConfig::collection_default(&self.svc.limits)
            };
            c.parents = self.explicit_parents(id);
            let node = Node::new(
                req.now_ms,
                req.bare.as_str().to_owned(),
                c,
                vec![(req.bare.as_str().to_owned(), Affiliation::Owner)],
            );
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
        if let Err(e) = self.commit(&ops) {
            undo(self, &events);
            return Err(e);
        }
        self.svc.nodes.extend(nodes);
        self.sync_parents(&events);
        self.notify_edges(&events);
        Ok(())
    }
}
