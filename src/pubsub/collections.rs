//! XEP-0248 collection nodes on the generic service: the glue between the engine's nodes
//! and the graph of [`super::dag`]. This module owns loading the graph from the node
//! records, the association permission check, persisting edge changes (each node's
//! parents are stored in its own `pubsub#collection` pairs; children are derived), node
//! events (`<collection><associate/></collection>`), the fan-out of leaf events to
//! collection subscribers (SHIM `Collection` header, one message per subscriber), the
//! `<collection/>` owner requests, and item retrieval on a collection.
//!
//! Security: a leaf's event reaches a collection subscriber only if the subscriber passes
//! the access model of the collection it subscribed to *and* that of the leaf
//! (intermediate collections are not checked).

use std::collections::{BinaryHeap, HashSet};

use super::*;
use dag::{DagError, Event, ROOT};

/// Whether `bare` may associate `child` with collection `parent`: the parent's
/// `children_association_policy` admits it, and it owns or publishes to `child` (so nobody
/// pulls someone else's node into a collection). Nodes not yet in `nodes` are being
/// created by `bare` in the same request, so `bare` owns them.
pub(super) fn may_associate(
    nodes: &BTreeMap<String, Node>,
    admins: &[String],
    bare: &Jid,
    parent: &str,
    child: &str,
) -> bool {
    let aff = |n: &Node| {
        if admins.iter().any(|a| a == bare.as_str()) {
            return Affiliation::Owner;
        }
        n.affs
            .iter()
            .find(|(j, _)| j == bare.as_str())
            .map_or(Affiliation::None, |(_, a)| *a)
    };
    let parent_ok = parent == ROOT
        || nodes.get(parent).is_none_or(|p| {
            let whitelisted = p
                .config
                .association_whitelist
                .iter()
                .any(|j| j == bare.as_str());
            p.config
                .association_policy
                .permits(aff(p) == Affiliation::Owner, whitelisted)
        });
    let child_ok = nodes
        .get(child)
        .is_none_or(|c| matches!(aff(c), Affiliation::Owner | Affiliation::Publisher));
    parent_ok && child_ok
}

impl Host<'_> {
    /// Builds the graph from the loaded nodes (the root, added before by
    /// [`Engine::insert_root`], is implicit in it). Edges the graph cannot keep are logged;
    /// the returned ops rewrite the affected records.
    pub(super) fn load_graph(&mut self) -> Vec<PubsubOp> {
        let max = self.svc.limits.pubsub_max_nodes.max(self.svc.nodes.len());
        let (dag, dropped) = Dag::load(
            max,
            self.svc.limits.pubsub_max_parents,
            self.svc
                .nodes
                .iter()
                .filter(|(id, _)| !id.is_empty())
                .map(|(id, n)| {
                    (
                        id.as_str(),
                        n.config.kind,
                        n.config.parents.iter().map(String::as_str).collect(),
                        n.config.children_max,
                    )
                }),
        );
        self.svc.dag = dag;
        let mut ops = Vec::new();
        let mut fixed: Vec<String> = Vec::new();
        for (parent, child, why) in dropped {
            tracing::warn!(parent, child, error = %why, "pub-sub collection edge dropped at start");
            if !fixed.contains(&child) {
                fixed.push(child);
            }
        }
        for child in fixed {
            let parents = self.explicit_parents(&child);
            if let Some(n) = self.svc.nodes.get_mut(&child) {
                n.config.parents = parents;
                ops.push(PubsubOp::PutNode(child.clone(), n.record()));
            }
        }
        ops
    }

    /// Adds the root collection (never stored; its subscriptions are).
    pub(super) fn insert_root(&mut self) {
        let root = Node::new(
            0,
            String::new(),
            NodeConfig::collection_default(&self.svc.limits),
            Vec::new(),
        );
        self.svc.nodes.insert(ROOT.to_owned(), root);
    }

    /// The parents of `id` as its `pubsub#collection` stores them (the root left out).
    pub(super) fn explicit_parents(&self, id: &str) -> Vec<String> {
        self.svc
            .dag
            .parents(id)
            .iter()
            .filter(|p| &***p != ROOT)
            .map(|p| p.to_string())
            .collect()
    }

    /// The node records to rewrite for `events` (every child whose parents changed, as
    /// the graph now has them), leaving out `skip` (nodes the caller writes itself).
    pub(super) fn edge_ops(&self, events: &[Event], skip: &[&str]) -> Vec<PubsubOp> {
        let mut done: Vec<&str> = Vec::new();
        let mut ops = Vec::new();
        for e in events {
            let (Event::Associated { child, .. } | Event::Dissociated { child, .. }) = e;
            let child: &str = child;
            if skip.contains(&child) || done.contains(&child) {
                continue;
            }
            done.push(child);
            if let Some(n) = self.svc.nodes.get(child) {
                let mut rec = n.record();
                let mut cfg = n.config.clone();
                cfg.parents = self.explicit_parents(child);
                rec.config = cfg.to_pairs();
                ops.push(PubsubOp::PutNode(child.to_owned(), rec));
            }
        }
        ops
    }

    /// After the commit of `events`: each child's `config.parents` follows the graph.
    pub(super) fn sync_parents(&mut self, events: &[Event]) {
        for e in events {
            let (Event::Associated { child, .. } | Event::Dissociated { child, .. }) = e;
            let parents = self.explicit_parents(child);
            if let Some(n) = self.svc.nodes.get_mut(&**child) {
                n.config.parents = parents;
            }
        }
    }

    /// Active subscriptions of collection `c` that take `items` (or node) events, with
    /// their depth, kept only when the subscriber passes `c`'s access model and, for item
    /// events, the leaf's too.
    fn collection_subs(&self, c: &str, items: bool, leaf: Option<&Node>) -> Vec<(Jid, Depth)> {
        let Some(n) = self.svc.nodes.get(c) else {
            return Vec::new();
        };
        let now = self.now_ms;
        n.subs
            .iter()
            .filter(|s| s.active(now))
            .filter(|s| {
                if items {
                    s.opts.sub_type.items()
                } else {
                    s.opts.sub_type.nodes()
                }
            })
            .filter(|s| {
                let bare = s.jid.bare();
                self.check_access(n, &bare).is_ok()
                    && leaf.is_none_or(|l| self.check_access(l, &bare).is_ok())
            })
            .map(|s| (s.jid.clone(), s.opts.depth))
            .collect()
    }

    /// Forwards an item event of `leaf` (`inner`, the `<items node='leaf'>` text the leaf's
    /// subscribers got) to the subscribers of the collections above it whose depth reaches
    /// it: one message per subscriber JID, none to a JID the leaf itself notified.
    pub(super) fn notify_collections(&mut self, leaf: &str, inner: &str) {
        let Some(n) = self.svc.nodes.get(leaf) else {
            return;
        };
        if !n.config.deliver_notifications {
            return;
        }
        let now = self.now_ms;
        let mut seen: HashSet<Jid> = n
            .subs
            .iter()
            .filter(|s| s.active(now))
            .map(|s| s.jid.clone())
            .collect();
        let hops = self.svc.dag.ancestors(leaf);
        let routes = self.svc.dag.fan_out(hops, &mut seen, &mut |c| {
            self.collection_subs(c, true, Some(n))
        });
        let headline = n.config.headline;
        let keep = super::notify::keeps_offline(&n.config);
        let inner: Rc<str> = Rc::from(inner); // shared by every forwarded message
        let mut msgs: Vec<Delivery> = routes
            .iter()
            .map(|r| {
                let via = [("Collection", &*r.collection)];
                self.message_ext(&r.subscriber, headline, &inner, None, &via, None)
            })
            .collect();
        super::notify::mark_offline(&mut msgs, keep);
        self.out.extend(msgs);
    }

    /// Node events for `events`: `<collection node='P'><associate node='N'/></collection>`
    /// (or `dissociate`) to the `nodes` subscribers of `P` and of the collections above it
    /// within their depth (with a `Collection` header when reached through another one).
    pub(super) fn notify_edges(&mut self, events: &[Event]) {
        let mut msgs = Vec::new();
        for e in events {
            let (verb, parent, child) = match e {
                Event::Associated { parent, child } => ("associate", parent, child),
                Event::Dissociated { parent, child } => ("dissociate", parent, child),
            };
            let mut seen: HashSet<Jid> = HashSet::new();
            let hops = self.svc.dag.with_ancestors(parent);
            let routes = self.svc.dag.fan_out(hops, &mut seen, &mut |c| {
                self.collection_subs(c, false, None)
            });
            if routes.is_empty() {
                continue;
            }
            let inner: Rc<str> = Rc::from(crate::xml::build(|w| {
                w.start("collection").attr("node", parent);
                w.start(verb).attr("node", child).end_all();
            }));
            let parent_config = self.svc.nodes.get(&**parent).map(|n| &n.config);
            let headline = parent_config.is_none_or(|c| c.headline);
            let keep = parent_config.is_some_and(super::notify::keeps_offline);
            let first = msgs.len();
            for r in routes {
                let via: &[(&str, &str)] = if r.collection == *parent {
                    &[]
                } else {
                    &[("Collection", &r.collection)]
                };
                msgs.push(self.message_ext(&r.subscriber, headline, &inner, None, via, None));
            }
            super::notify::mark_offline(&mut msgs[first..], keep);
        }
        self.out.extend(msgs);
    }

    /// Runs a graph change with the association policy of the requester `bare`.
    pub(super) fn with_dag<T>(
        &mut self,
        bare: &Jid,
        f: impl FnOnce(&mut Dag, &mut dyn FnMut(&str, &str) -> bool) -> Result<T, DagError>,
    ) -> Result<T, PubSubError> {
        let (Service { dag, nodes, .. }, admins) = (&mut *self.svc, &self.eng.admins);
        let mut may = |p: &str, c: &str| may_associate(nodes, admins, bare, p, c);
        f(dag, &mut may).map_err(PubSubError::Dag)
    }

    /// XEP-0248 associate and dissociate requests (owner namespace):
    /// `<collection node='P'><associate node='N'/></collection>`. Association follows
    /// `P`'s association policy (and the requester must own or publish to `N`);
    /// dissociation needs ownership of `P` or `N`.
    pub(super) fn owner_collection(&mut self, req: &Req, c: &Element) -> Reply {
        let parent = c.attr("node").unwrap_or(ROOT).to_owned();
        let mut kids = c.elements();
        let (Some(op), None) = (kids.next(), kids.next()) else {
            return Err(PubSubError::BadRequest(
                "collection takes one associate or dissociate",
            ));
        };
        let child = Self::node_attr(op)?.to_owned();
        self.node(&parent)?;
        self.node(&child)?;
        let events = match op.name.as_str() {
            "associate" => self.with_dag(&req.bare, |d, may| d.associate(&parent, &child, may))?,
            // `disassociate` is the spelling of XEP-0060 1.x.
            "dissociate" | "disassociate" => {
                let owns = |name: &str| {
                    self.svc
                        .nodes
                        .get(name)
                        .is_some_and(|n| self.affiliation(n, &req.bare) == Affiliation::Owner)
                };
                if !owns(&parent) && !owns(&child) {
                    return Err(PubSubError::Forbidden(
                        "only owners of the collection or the node may dissociate",
                    ));
                }
                self.svc
                    .dag
                    .dissociate(&parent, &child)
                    .map_err(PubSubError::Dag)?
            }
            _ => return Err(PubSubError::BadRequest("unknown collection request")),
        };
        let ops = self.edge_ops(&events, &[]);
        if let Err(e) = self.commit(&ops) {
            self.svc.dag.revert(&events);
            return Err(e);
        }
        self.sync_parents(&events);
        self.notify_edges(&events);
        Ok(None)
    }

    /// XEP-0248 items retrieval on collection `name`: the items of every leaf below it
    /// that `req` may read, newest first (at most `limits.collection_max_items`: the aggregate is built in memory), one `<items/>`
    /// element per run of items of the same leaf, paged with XEP-0059 (the RSM ids are
    /// `published-seq-leaf`).
    pub(super) fn collection_items(
        &self,
        req: &Req,
        name: &str,
        max: Option<usize>,
        rsm: Option<&Page>,
    ) -> Reply {
        let leaves: Vec<(&str, &Node)> = self
            .svc
            .dag
            .leaves_under(name, Depth::All)
            .iter()
            .filter_map(|(id, _)| self.svc.nodes.get_key_value(&**id))
            .filter(|(_, n)| self.check_access(n, &req.bare).is_ok())
            .map(|(k, n)| (k.as_str(), n))
            .collect();
        // Each leaf's candidate entries, oldest first; transient leaves offer their last.
        let transient: Vec<Option<IndexEntry>> = leaves
            .iter()
            .map(|(_, n)| {
                (!n.config.persist_items)
                    .then(|| n.last.as_ref().map(|l| l.transient_entry()))
                    .flatten()
            })
            .collect();
        let lists: Vec<Vec<&IndexEntry>> = leaves
            .iter()
            .zip(&transient)
            .map(|((_, n), t)| {
                let all: Vec<&IndexEntry> = if n.config.persist_items {
                    n.items.iter().collect()
                } else {
                    t.iter().collect()
                };
                all.into_iter()
                    .filter(|e| !n.expired(e.published_ms, req.now_ms))
                    .collect()
            })
            .collect();
        // k-way merge, newest first: (published, seq, leaf index, position).
        let cap = max
            .unwrap_or(usize::MAX)
            .min(self.svc.limits.collection_max_items);
        let mut heap: BinaryHeap<(u64, u64, std::cmp::Reverse<usize>, usize)> = lists
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.last()
                    .map(|e| (e.published_ms, e.seq, std::cmp::Reverse(i), l.len() - 1))
            })
            .collect();
        let mut merged: Vec<(usize, &IndexEntry)> = Vec::new();
        while merged.len() < cap {
            let Some((_, _, std::cmp::Reverse(i), pos)) = heap.pop() else {
                break;
            };
            merged.push((i, lists[i][pos]));
            if pos > 0 {
                let e = lists[i][pos - 1];
                heap.push((e.published_ms, e.seq, std::cmp::Reverse(i), pos - 1));
            }
        }
        let uids: Vec<String> = merged
            .iter()
            .map(|(i, e)| format!("{:x}-{:x}-{}", e.published_ms, e.seq, leaves[*i].0))
            .collect();
        let keys: Vec<&str> = uids.iter().map(String::as_str).collect();
        // The RSM window over `merged`, cut to half an outbox by the estimated reply bytes
        // of each item: payload, id, leaf name, publisher and markup.
        let window = match rsm {
            None => Window::all(keys.len()),
            Some(p) => p.window(&keys)?,
        }
        .fit(
            &merged,
            self.svc.limits.outbox_max_bytes / 2,
            |(leaf, e)| {
                let leaf_name = leaves.get(*leaf).map_or(0, |(name, _)| name.len());
                e.bytes
                    .saturating_add(e.id.len())
                    .saturating_add(leaf_name)
                    .saturating_add(224)
            },
        );
        let cut = rsm.is_none() && !window.is_whole();
        let page = window.slice(&merged);
        let mut s = String::with_capacity(256);
        let mut w = Writer::new(&mut s);
        w.start("pubsub").ns(NS_PUBSUB);
        let mut run_start = 0;
        while run_start < page.len() {
            let leaf = page[run_start].0;
            let mut run_end = run_start;
            while run_end < page.len() && page[run_end].0 == leaf {
                run_end += 1;
            }
            let (leaf_name, n) = leaves[leaf];
            let entries: Vec<&IndexEntry> = page[run_start..run_end].iter().map(|p| p.1).collect();
            let found: Vec<CachedItem> = if n.config.persist_items {
                self.load_items(leaf_name, &entries)?
            } else {
                n.last.iter().map(|l| (**l).clone()).collect()
            };
            w.start("items").attr("node", leaf_name);
            for i in &found {
                write_item(&mut w, i, true, n.config.itemreply_publisher);
            }
            w.end();
            run_start = run_end;
        }
        if page.is_empty() {
            w.start("items").attr("node", name).end();
        }
        if rsm.is_some() || cut {
            window.write_set(&mut w, &keys);
        }
        w.end();
        Ok(Some(s))
    }
}
