//! Building the engine at start: nodes, subscriptions, affiliations and item indexes
//! loaded from the store.

use super::*;

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
            dag: Dag::new(
                config.limits.pubsub_max_nodes,
                config.limits.pubsub_max_parents,
            ),
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
            held: commit::Held::new(config.limits.pubsub_backlog_bytes),
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
}
