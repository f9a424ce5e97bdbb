//! Building the engine at start: nodes, subscriptions, affiliations and item indexes
//! loaded from the store.

use super::*;

impl Engine {
    /// The engine for `config`, with every node loaded from `store`.
    ///
    /// # Errors
    ///
    /// A store failure or a stored node this build cannot read.
    pub fn load(config: &Config, store: &dyn Storage) -> Result<Engine, EngineError> {
        let service = Jid::parse(&config.pubsub_service()).map_err(|e| {
            EngineError::BadNode(
                String::new(),
                PubSubError::BadForm(format!("service JID: {e}")),
            )
        })?;
        let limits = Rc::new(config.limits.clone());
        let pep_cfg = pep::PepConfig::from_config(config);
        // The PEP services' bounds: what `max` means on a PEP node, and nodes per account.
        let pep_limits = Rc::new(Limits {
            pubsub_max_items_per_node: pep_cfg.max_items,
            pubsub_max_nodes: pep_cfg.max_nodes,
            ..config.limits.clone()
        });
        let mut engine = Engine {
            common: Common {
                domain: config.domain.clone(),
                limits: limits.clone(),
                pep_limits,
                create_policy: config.pubsub.create_nodes,
                admins: config.pubsub.admins.clone(),
                budget: config.store.max_bytes,
                full_policy: config.store.full_policy,
                pep_cfg,
                counter: 0,
                next_item_seq: 1,
                nodes_total: 0,
                stored_total: 0,
            },
            generic: Service {
                jid_attr: service::escaped_attr(service.as_str()),
                jid: service,
                limits,
                nodes: BTreeMap::new(),
                dag: Dag::new(
                    config.limits.pubsub_max_nodes,
                    config.limits.pubsub_max_parents,
                ),
                path_collections: config.pubsub.path_collections,
                owner: None,
            },
            pep: std::collections::HashMap::new(),
            armed: None,
            retry_at: 0,
            held: commit::Held::new(config.limits.pubsub_backlog_bytes),
        };
        let snap = store.pubsub_load().map_err(EngineError::Store)?;
        for (name, rec) in snap.nodes {
            let cfg = NodeConfig::from_pairs(&rec.config, &engine.common.limits)
                .map_err(|e| EngineError::BadNode(name.clone(), e))?;
            engine.generic.nodes.insert(
                name,
                Node::new(rec.created_ms, rec.creator, cfg, Vec::new()),
            );
        }
        engine.host(None, (&Nobody, store, 0), |h| h.insert_root());
        let mut migrate = Vec::new();
        for (name, seq, item, bytes) in snap.items {
            if let Some(n) = engine.generic.nodes.get_mut(&name) {
                n.next_seq = n.next_seq.max(seq + 1);
                engine.common.next_item_seq = engine.common.next_item_seq.max(seq + 1);
                let stored = item_cost(bytes, &item.id, &item.publisher);
                let publisher = Jid::parse(&item.publisher).map_or_else(
                    |_| Rc::from(item.publisher.as_str()),
                    |j| Rc::from(j.bare().as_str()),
                );
                n.push_item(
                    IndexEntry {
                        seq,
                        id: item.id,
                        published_ms: item.published_ms,
                        bytes,
                        stored,
                        publisher,
                    },
                    &mut engine.common.stored_total,
                );
            }
        }
        // Rows of the first format (no SubID) get one now, rewritten in one commit.
        for (name, jid, rec) in snap.subscriptions {
            let (Some(n), Ok(j)) = (engine.generic.nodes.get_mut(&name), Jid::parse(&jid)) else {
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
                engine.common.counter = engine.common.counter.wrapping_add(1);
                sub.subid = format!("{:x}-{:x}", rec.expire_ms, engine.common.counter);
                migrate.push(PubsubOp::DeleteSubscription(name.clone(), jid.clone()));
                migrate.push(sub.put(&name));
            }
            // The store yields rows in key order, which is `(jid, subid)` order; sorted
            // once per node below.
            n.subs.push(sub);
        }
        for n in engine.generic.nodes.values_mut() {
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
            if let Some(n) = engine.generic.nodes.get_mut(&name) {
                let a = Affiliation::from_code(code);
                if a != Affiliation::None {
                    n.affs.push((jid, a));
                }
            }
        }
        for (name, n) in &mut engine.generic.nodes {
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
        let repaired = engine.host(None, (&Nobody, store, 0), |h| h.load_graph());
        engine.common.nodes_total = engine.generic.node_count()
            + engine.pep.values().map(Service::node_count).sum::<usize>();
        if !repaired.is_empty() {
            store.pubsub_apply(&repaired).map_err(EngineError::Store)?;
        }
        Ok(engine)
    }
}
