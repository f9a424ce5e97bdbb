//! Issue 10, "model test": the pub-sub engine and the roster, with the store under them,
//! driven by random operations with random crashes and disk faults, and compared with a
//! plain in-memory model (redb's own approach to its crash safety).
//!
//! What runs: a [`Router`] (the engine, the roster code and their group commit, exactly as
//! the daemon runs them, minus the sockets) over a [`Store`] on a [`CrashDisk`]: redb on
//! shared bytes that can be killed (every completed write survives), lose power (a random
//! subset of the 4 KiB chunks written since the last fsync survives: torn writes), or fail
//! with ENOSPC from its `n`th next operation. Three accounts send pub-sub requests (create
//! with and without a configure form, configure `max_items` and `title`, publish with and
//! without an item id, to nodes at `max_items`, retract, subscribe, unsubscribe, purge,
//! delete, affiliation changes) and roster sets and removals, with small limits (6 items
//! per node, 3 roster items) so that they are reached. The test plays the committer task:
//! "commit" takes the pending batch, writes it and reports; "commit fails" arms ENOSPC a
//! random number of operations into the write, then (the disk has room again) reopens the
//! store and reports the failure, as `net::committer` does; "crash" kills the process or cuts the
//! power, at rest or a random number of disk operations into a commit, then opens a new
//! store and router on what survived (redb repairs on open) and binds the accounts again.
//!
//! The model ([`Model`]: nodes with their `max_items`/`title` and items in order,
//! subscriptions, affiliations, roster rows) changes only when a reply is `result`, which
//! the router sends only once the commit carrying the change is on disk. Checked:
//! - after every reopen (a restart, or the store's own after a failed commit), the store
//!   holds exactly the model plus, for each request still unanswered at the crash (or
//!   answered with an error by a failed commit: a failed fsync leaves it open whether the
//!   change reached the disk, and it sometimes did), either all of it or none
//!   of it: the state must equal the model with some subset of those requests applied in
//!   order. A half-done request (an item without its node, a subscription without the
//!   item eviction that came with it, a roster row without its version) matches no
//!   candidate. Requests that were refused for a reason of their own (not the disk) are
//!   never on disk: the model, which never has them, catches it;
//! - limits on disk: no node over its `max_items`, no roster over `max_roster_items`;
//! - what the engine and the router serve (items with payloads, each account's
//!   subscriptions, rosters) equals the model whenever no request is unanswered, including
//!   right after a failed commit and the store's recovery (without a restart);
//! - a crash never leaves a database that cannot be opened.
//!
//! Generator: a seeded PRNG (`fastrand`, already built for smol) rather than proptest. A
//! release build of proptest and its dependencies alone took 40 s on one core here (26 s
//! in debug), for 24 more crates; its shrinking would be the gain, and the log below
//! replaces it: a failure prints the seed and the operations that led to it, and
//! `KINGLET_MODEL_SEED=<seed>` replays that case. `KINGLET_MODEL_CASES=<n>` runs more
//! cases (default [`DEFAULT_CASES`], about 10 s in a release build, 2000 cases in 2 minutes ran clean); CI runs the
//! default as part of `cargo test --release`.
//!
//! Not modelled: the store's byte budget (`store.max_bytes`, off at its 32 MiB default
//! here), collections, PEP, item expiry, access models other than `open`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

use crate::config::Config;
use crate::jid::Jid;
use crate::outbox::Outbox;
use crate::router::Router;
use crate::store::testing::{CrashDisk, Fault};
use crate::store::{CommitMode, Store};
use crate::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const ROSTER: &str = "jabber:iq:roster";
/// Cases run by default (`KINGLET_MODEL_CASES` overrides): fewer in debug builds, where
/// redb is about ten times slower.
const DEFAULT_CASES: u64 = if cfg!(debug_assertions) { 8 } else { 160 };
/// Operations per case.
const STEPS: usize = 80;
/// `limits.pubsub_max_items_per_node` in the test: small, so that nodes fill up.
const MAX_ITEMS: usize = 6;
/// `limits.max_roster_items` in the test.
const MAX_ROSTER: usize = 3;
/// Unanswered requests before the generator commits (bounds the candidate states).
const MAX_OUTSTANDING: usize = 6;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const ITEM_IDS: [&str; 4] = ["i1", "i2", "i3", "i4"];
const CONTACTS: [&str; 5] = [
    "c1@localhost",
    "c2@localhost",
    "c3@localhost",
    "c4@elsewhere",
    "alice@localhost",
];

/// One node of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeM {
    /// `pubsub#max_items` as configured (`None`: the default, the limit).
    max_items: Option<usize>,
    title: String,
    /// `(id, payload token)`, oldest first.
    items: Vec<(String, String)>,
}

impl NodeM {
    fn effective_max(&self) -> usize {
        self.max_items.unwrap_or(MAX_ITEMS).min(MAX_ITEMS)
    }
    fn trim(&mut self) {
        let excess = self.items.len().saturating_sub(self.effective_max());
        self.items.drain(..excess);
    }
}

/// The reference: what the store must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    nodes: BTreeMap<String, NodeM>,
    /// `(node, full jid)` of `subscribed` subscriptions, sorted.
    subs: Vec<(String, String)>,
    /// `(node, bare jid)` → affiliation code (1 owner, 2 publisher, 4 member).
    affs: BTreeMap<(String, String), u8>,
    /// `(user, contact)` → roster item name.
    rosters: BTreeMap<(String, String), String>,
}

/// A request the test sent.
#[derive(Clone, Debug)]
enum Req {
    Create {
        node: String,
        max_items: Option<usize>,
        title: Option<String>,
    },
    Configure {
        node: String,
        max_items: Option<usize>,
        title: Option<String>,
    },
    Publish {
        node: String,
        id: Option<String>,
        token: String,
    },
    Retract {
        node: String,
        id: String,
    },
    Subscribe {
        node: String,
    },
    Unsubscribe {
        node: String,
    },
    Purge {
        node: String,
    },
    Delete {
        node: String,
    },
    Affiliate {
        node: String,
        jid: String,
        code: u8,
    },
    RosterSet {
        contact: String,
        name: String,
    },
    RosterRemove {
        contact: String,
    },
}

#[derive(Clone, Debug)]
struct Sent {
    id: String,
    user: usize,
    req: Req,
}

fn full(user: usize) -> String {
    format!("{}@localhost/r", USERS[user])
}

fn bare(user: usize) -> String {
    format!("{}@localhost", USERS[user])
}

fn form(max_items: Option<usize>, title: Option<&str>) -> String {
    let mut s = String::from(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>",
    );
    if let Some(m) = max_items {
        let _ = write!(
            s,
            "<field var='pubsub#max_items'><value>{m}</value></field>"
        );
    }
    if let Some(t) = title {
        let _ = write!(s, "<field var='pubsub#title'><value>{t}</value></field>");
    }
    s.push_str("</x>");
    s
}

impl Req {
    /// The IQ stanza.
    fn stanza(&self, user: usize, id: &str) -> Element {
        let from = full(user);
        // A set to the pub-sub service of `<pubsub xmlns='{ns}'>{inner}</pubsub>`.
        let set = |ns: &str, inner: String| {
            format!(
                "<iq type='set' id='{id}' from='{from}' to='pubsub.localhost'><pubsub xmlns='{ns}'>{inner}</pubsub></iq>"
            )
        };
        let xml = match self {
            Req::Create {
                node,
                max_items,
                title,
            } => {
                let conf = if max_items.is_some() || title.is_some() {
                    format!(
                        "<configure>{}</configure>",
                        form(*max_items, title.as_deref())
                    )
                } else {
                    String::new()
                };
                set(PS, format!("<create node='{node}'/>{conf}"))
            }
            Req::Configure {
                node,
                max_items,
                title,
            } => set(
                OWNER,
                format!(
                    "<configure node='{node}'>{}</configure>",
                    form(*max_items, title.as_deref())
                ),
            ),
            Req::Publish { node, id, token } => {
                let id = id
                    .as_ref()
                    .map(|i| format!(" id='{i}'"))
                    .unwrap_or_default();
                set(
                    PS,
                    format!(
                        "<publish node='{node}'><item{id}><t xmlns='urn:model'>{token}</t></item></publish>"
                    ),
                )
            }
            Req::Retract { node, id } => set(
                PS,
                format!("<retract node='{node}'><item id='{id}'/></retract>"),
            ),
            Req::Subscribe { node } => set(PS, format!("<subscribe node='{node}' jid='{from}'/>")),
            Req::Unsubscribe { node } => {
                set(PS, format!("<unsubscribe node='{node}' jid='{from}'/>"))
            }
            Req::Purge { node } => set(OWNER, format!("<purge node='{node}'/>")),
            Req::Delete { node } => set(OWNER, format!("<delete node='{node}'/>")),
            Req::Affiliate { node, jid, code } => {
                let aff = match code {
                    2 => "publisher",
                    4 => "member",
                    _ => "none",
                };
                set(
                    OWNER,
                    format!(
                        "<affiliations node='{node}'><affiliation jid='{jid}' affiliation='{aff}'/></affiliations>"
                    ),
                )
            }
            Req::RosterSet { contact, name } => format!(
                "<iq type='set' id='{id}' from='{from}'><query xmlns='{ROSTER}'><item jid='{contact}' name='{name}'/></query></iq>"
            ),
            Req::RosterRemove { contact } => format!(
                "<iq type='set' id='{id}' from='{from}'><query xmlns='{ROSTER}'><item jid='{contact}' subscription='remove'/></query></iq>"
            ),
        };
        Element::parse(&xml).expect("generated stanza parses")
    }
}

impl Model {
    /// Applies an acknowledged request. `published`: the id of an item published without
    /// one (from the result, or from the store for a request never answered).
    fn apply(&mut self, user: usize, req: &Req, published: Option<String>) {
        match req {
            Req::Create {
                node,
                max_items,
                title,
            } => {
                self.nodes.insert(
                    node.clone(),
                    NodeM {
                        max_items: *max_items,
                        title: title.clone().unwrap_or_default(),
                        items: Vec::new(),
                    },
                );
                self.affs.insert((node.clone(), bare(user)), 1);
            }
            Req::Configure {
                node,
                max_items,
                title,
            } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    if max_items.is_some() {
                        n.max_items = *max_items;
                    }
                    if let Some(t) = title {
                        n.title = t.clone();
                    }
                    n.trim();
                }
            }
            Req::Publish { node, id, token } => {
                if !self.nodes.contains_key(node) {
                    // Auto-create: the publisher owns the new node.
                    self.apply(
                        user,
                        &Req::Create {
                            node: node.clone(),
                            max_items: None,
                            title: None,
                        },
                        None,
                    );
                }
                let id = id.clone().or(published).unwrap_or_default();
                if let Some(n) = self.nodes.get_mut(node) {
                    n.items.retain(|(i, _)| *i != id);
                    n.items.push((id, token.clone()));
                    n.trim();
                }
            }
            Req::Retract { node, id } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.items.retain(|(i, _)| i != id);
                }
            }
            Req::Subscribe { node } => {
                let key = (node.clone(), full(user));
                if !self.subs.contains(&key) {
                    self.subs.push(key);
                    self.subs.sort();
                }
            }
            Req::Unsubscribe { node } => {
                self.subs.retain(|(n, j)| !(n == node && *j == full(user)))
            }
            Req::Purge { node } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.items.clear();
                }
            }
            Req::Delete { node } => {
                self.nodes.remove(node);
                self.subs.retain(|(n, _)| n != node);
                self.affs.retain(|(n, _), _| n != node);
            }
            Req::Affiliate { node, jid, code } => {
                let key = (node.clone(), jid.clone());
                if *code == 0 {
                    self.affs.remove(&key);
                } else {
                    self.affs.insert(key, *code);
                }
            }
            Req::RosterSet { contact, name } => {
                self.rosters
                    .insert((USERS[user].to_owned(), contact.clone()), name.clone());
            }
            Req::RosterRemove { contact } => {
                self.rosters
                    .remove(&(USERS[user].to_owned(), contact.clone()));
            }
        }
    }

    /// Disk limits that hold whatever the model says.
    fn check_limits(&self) -> Result<(), String> {
        for (name, n) in &self.nodes {
            if n.items.len() > n.effective_max() {
                return Err(format!(
                    "node {name} holds {} items, max_items {}",
                    n.items.len(),
                    n.effective_max()
                ));
            }
        }
        for u in USERS {
            let rows = self.rosters.keys().filter(|(o, _)| o == u).count();
            if rows > MAX_ROSTER {
                return Err(format!("roster of {u} has {rows} rows, max {MAX_ROSTER}"));
            }
        }
        Ok(())
    }
}

/// The text of a payload `<t xmlns='urn:model'>token</t>` as stored or served.
fn token_of(payload: &str) -> String {
    Element::parse(payload)
        .map(|e| e.text())
        .unwrap_or_else(|_| format!("?{payload}"))
}

/// Everything the store holds, as a [`Model`].
fn read_store(store: &Store) -> Result<Model, String> {
    let snap = store
        .pubsub_load()
        .map_err(|e| format!("pubsub_load: {e}"))?;
    let mut m = Model::default();
    for (name, rec) in &snap.nodes {
        let get = |var: &str| {
            rec.config
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
        };
        let max_items = get("pubsub#max_items").and_then(|v| v.parse().ok());
        m.nodes.insert(
            name.clone(),
            NodeM {
                max_items,
                title: get("pubsub#title").unwrap_or_default(),
                items: Vec::new(),
            },
        );
    }
    for (node, seq, item, _) in &snap.items {
        let Some(n) = m.nodes.get_mut(node) else {
            return Err(format!("item {} of missing node {node}", item.id));
        };
        let full = store
            .pubsub_items(node, &[*seq])
            .map_err(|e| format!("pubsub_items: {e}"))?;
        let Some(Some(rec)) = full.into_iter().next() else {
            return Err(format!("item {node}/{seq} listed but not readable"));
        };
        n.items.push((item.id.clone(), token_of(&rec.payload)));
    }
    for (node, jid, rec) in &snap.subscriptions {
        if rec.state != 3 {
            return Err(format!("subscription {node} {jid} in state {}", rec.state));
        }
        m.subs.push((node.clone(), jid.clone()));
    }
    m.subs.sort();
    for (node, jid, code) in &snap.affiliations {
        m.affs.insert((node.clone(), jid.clone()), *code);
    }
    for u in USERS {
        for item in store
            .roster_get(u)
            .map_err(|e| format!("roster_get: {e}"))?
        {
            if item.in_roster {
                m.rosters.insert(
                    (u.to_owned(), item.jid.clone()),
                    item.name.unwrap_or_default(),
                );
            }
        }
    }
    Ok(m)
}

/// Compares two models by effective `max_items` (a node's configured value and the
/// default may be stored either way).
fn same(model: &Model, actual: &Model) -> bool {
    let norm = |m: &Model| {
        let mut m = m.clone();
        for n in m.nodes.values_mut() {
            n.max_items = Some(n.effective_max());
        }
        m
    };
    norm(model) == norm(actual)
}

/// Counts of what happened, to show that the cases reach the interesting states.
#[derive(Debug, Default)]
struct Stats {
    acked: u64,
    refused: u64,
    commits: u64,
    failed_commits: u64,
    crashes: u64,
    torn_crashes: u64,
    crashes_mid_commit: u64,
    unacked_present_after_crash: u64,
    unacked_absent_after_crash: u64,
    error_replies_found_on_disk: u64,
    full_nodes: u64,
    full_rosters: u64,
    open_time: std::time::Duration,
}

struct World {
    seed: u64,
    rng: fastrand::Rng,
    config: Rc<Config>,
    cache: usize,
    disk: CrashDisk,
    router: Router,
    /// The store under `router` (the shell's side: group commits, reopening).
    store: Rc<Store>,
    outboxes: Vec<(Jid, Rc<Outbox>)>,
    model: Model,
    /// Sent, not yet answered, in send order.
    outstanding: Vec<Sent>,
    /// Answered with an error after a failed commit: on disk or not, until a restart tells.
    ambiguous: Vec<Sent>,
    next_id: u64,
    log: Vec<String>,
    stats: Stats,
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut config = Config::default();
        config.limits.pubsub_max_items_per_node = MAX_ITEMS;
        config.limits.max_roster_items = MAX_ROSTER;
        let config = Rc::new(config);
        // No page cache (every page goes to the backend at once, the most interleavings)
        // or a small one (writes batched at commit, as in the daemon).
        let cache = if rng.bool() { 0 } else { 256 * 1024 };
        let disk = CrashDisk::default();
        let (router, store) = Self::open(&config, &disk, cache).expect("a fresh store opens");
        let mut w = World {
            seed,
            rng,
            config,
            cache,
            disk,
            router,
            store,
            outboxes: Vec::new(),
            model: Model::default(),
            outstanding: Vec::new(),
            ambiguous: Vec::new(),
            next_id: 0,
            log: Vec::new(),
            stats: Stats::default(),
        };
        w.bind_all();
        w
    }

    fn open(
        config: &Rc<Config>,
        disk: &CrashDisk,
        cache: usize,
    ) -> Result<(Router, Rc<Store>), String> {
        let store = Rc::new(Store::open_on(disk, cache).map_err(|e| format!("store: {e}"))?);
        store.pubsub_set_mode(CommitMode::Group);
        let router = Router::new(
            config.clone(),
            store.clone(),
            Rc::new(crate::system::SystemEnv::new()),
        )
        .map_err(|e| format!("router: {e}"))?;
        Ok((router, store))
    }

    fn bind_all(&mut self) {
        self.outboxes.clear();
        for (i, u) in USERS.iter().enumerate() {
            let ob = Outbox::new(100_000, 64 << 20);
            let jid = self
                .router
                .bind(u, false, Some("r"), i as u64 + 1, ob.clone())
                .expect("bind");
            self.outboxes.push((jid, ob));
        }
    }

    /// Fails the case with the seed and the operations that led here.
    fn fail(&self, what: &str) -> ! {
        let tail = self.log.len().saturating_sub(120);
        panic!(
            "model test failed (replay: KINGLET_MODEL_SEED={}): {what}\noperations:\n{}",
            self.seed,
            self.log[tail..].join("\n")
        );
    }

    /// The stanzas waiting in `user`'s outbox.
    fn drain(&self, user: usize) -> Vec<Element> {
        let ob = &self.outboxes[user].1;
        let mut out = Vec::new();
        for _ in 0..1000 {
            let mut v = Vec::new();
            ob.drain_into(&mut v);
            if v.is_empty() {
                break;
            }
            let text = String::from_utf8(v).expect("utf-8 output");
            let wrapped = format!("<w xmlns='jabber:client'>{text}</w>");
            let Ok(e) = Element::parse(&wrapped) else {
                self.fail(&format!("output does not parse: {text}"));
            };
            out.extend(e.elements().cloned());
        }
        if ob.kicked().is_some() {
            self.fail(&format!("{} was disconnected", USERS[user]));
        }
        out
    }

    /// Reads every outbox and settles the requests answered since, in the order they were
    /// sent (the order the engine handled them in; replies to several accounts come from
    /// different outboxes).
    fn collect(&mut self) {
        let mut replies = Vec::new();
        for user in 0..USERS.len() {
            for e in self.drain(user) {
                if e.name != "iq" || !matches!(e.attr("type"), Some("result" | "error")) {
                    continue;
                }
                let id = e.attr("id").unwrap_or("");
                let Some(at) = self
                    .outstanding
                    .iter()
                    .position(|s| s.id == id && s.user == user)
                else {
                    self.fail(&format!("reply to no outstanding request: {e:?}"));
                };
                replies.push((at, e));
            }
        }
        replies.sort_by_key(|(at, _)| *at);
        let mut sent_list: Vec<Option<Sent>> = self.outstanding.drain(..).map(Some).collect();
        for (at, e) in &replies {
            let Some(sent) = sent_list[*at].take() else {
                self.fail(&format!("two replies to one request: {e:?}"));
            };
            let id = sent.id.as_str();
            if e.attr("type") == Some("result") {
                let published = e
                    .child("pubsub", PS)
                    .and_then(|p| p.child("publish", PS))
                    .and_then(|p| p.child("item", PS))
                    .and_then(|i| i.attr("id"))
                    .map(str::to_owned);
                if matches!(sent.req, Req::Publish { id: None, .. }) && published.is_none() {
                    self.fail(&format!("publish result without the item id: {e:?}"));
                }
                self.log.push(format!("  {id}: result"));
                self.stats.acked += 1;
                self.model.apply(sent.user, &sent.req, published);
                if let Err(why) = self.model.check_limits() {
                    self.fail(&format!("model over a limit after {id}: {why}"));
                }
            } else {
                let text = e
                    .elements()
                    .find(|c| c.name == "error")
                    .map(|c| {
                        c.elements()
                            .map(|x| {
                                if x.name == "text" {
                                    x.text()
                                } else {
                                    x.name.clone()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                self.log.push(format!("  {id}: error {text}"));
                self.stats.refused += 1;
                if text.contains("not-allowed") && matches!(sent.req, Req::RosterSet { .. }) {
                    self.stats.full_rosters += 1;
                }
                if text.contains("internal-server-error") || text.contains("resource-constraint") {
                    // A commit failed: on disk or not, the restart will tell.
                    self.ambiguous.push(sent);
                }
            }
        }
        self.outstanding = sent_list.into_iter().flatten().collect();
    }

    fn random_req(&mut self) -> (usize, Req) {
        let r = &mut self.rng;
        let node = NODES[r.usize(..NODES.len())].to_owned();
        // Mostly the node's owner (so that nodes fill up and owner requests succeed),
        // sometimes anyone (refused for lack of rights).
        let owner = self
            .model
            .affs
            .iter()
            .find(|((n, _), code)| *n == node && **code == 1)
            .and_then(|((_, j), _)| (0..USERS.len()).find(|u| bare(*u) == *j));
        let user = match owner {
            Some(o) if r.u32(..4) > 0 => o,
            _ => r.usize(..USERS.len()),
        };
        self.next_id += 1;
        let n = self.next_id;
        let max_items = |r: &mut fastrand::Rng| r.bool().then(|| r.usize(1..=MAX_ITEMS - 2));
        let title = |r: &mut fastrand::Rng| r.bool().then(|| format!("T{n}"));
        let req = match r.u32(..100) {
            0..6 => Req::Create {
                node,
                max_items: max_items(r),
                title: title(r),
            },
            6..14 => Req::Configure {
                node,
                max_items: max_items(r),
                title: title(r),
            },
            14..48 => Req::Publish {
                node,
                id: (r.u32(..5) > 1).then(|| ITEM_IDS[r.usize(..ITEM_IDS.len())].to_owned()),
                token: format!("p{n}"),
            },
            48..54 => Req::Retract {
                node,
                id: ITEM_IDS[r.usize(..ITEM_IDS.len())].to_owned(),
            },
            54..64 => Req::Subscribe { node },
            64..69 => Req::Unsubscribe { node },
            69..72 => Req::Purge { node },
            72..75 => Req::Delete { node },
            75..81 => Req::Affiliate {
                node,
                jid: bare(r.usize(..USERS.len())),
                code: [0, 2, 4][r.usize(..3)],
            },
            81..97 => Req::RosterSet {
                contact: CONTACTS[r.usize(..CONTACTS.len())].to_owned(),
                name: format!("N{n}"),
            },
            _ => Req::RosterRemove {
                contact: CONTACTS[r.usize(..CONTACTS.len())].to_owned(),
            },
        };
        (user, req)
    }

    fn send(&mut self) {
        let (user, req) = self.random_req();
        let id = format!("m{}", self.next_id);
        self.log
            .push(format!("send {id} from {}: {req:?}", USERS[user]));
        let stanza = req.stanza(user, &id);
        let from = self.outboxes[user].0.clone();
        if let Req::Publish { node, .. } = &req {
            if self
                .model
                .nodes
                .get(node)
                .is_some_and(|n| n.items.len() == n.effective_max())
            {
                self.stats.full_nodes += 1;
            }
        }
        self.outstanding.push(Sent { id, user, req });
        self.router.route(&from, stanza);
        self.collect();
    }

    /// What the committer task does, with an optional ENOSPC `fault` some operations in.
    /// Returns whether a commit failed.
    fn commit(&mut self, fault: Option<u64>) -> bool {
        let Some(batch) = self.store.pubsub_take() else {
            self.log.push("commit: nothing to take".into());
            return false;
        };
        if let Some(k) = fault {
            self.disk.fail_from(k, Fault::Full);
        }
        let result = batch.write();
        let failed_ops = self.disk.heal();
        let generation = batch.generation();
        self.log.push(format!(
            "commit gen {generation} ({} ops){}: {}",
            batch.len(),
            fault
                .map(|k| format!(" ENOSPC after {k} disk ops"))
                .unwrap_or_default(),
            match &result {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("failed ({failed_ops} disk ops refused): {e}"),
            }
        ));
        drop(batch);
        let failed = result.is_err();
        self.stats.commits += 1;
        self.stats.failed_commits += u64::from(failed);
        if let Err(e) = &result {
            // What the committer task does (`net::committer`): the disk has room again
            // (the fault is healed), the store reopens the file, then the failure is
            // reported.
            self.router.storage_write_failed(e);
            let job = match self.store.reopen_begin() {
                Ok(job) => job,
                Err(e) => self.fail(&format!("the store cannot start reopening: {e}")),
            };
            if !self
                .router
                .storage_reopened(self.store.reopen_end(job.run()))
            {
                self.fail("the store did not recover after a failed commit");
            }
        }
        self.router.pubsub_committed(generation, result);
        self.collect();
        if failed {
            // The failed batch is on disk or not (an fsync error says nothing), all or
            // nothing; the reopened store tells which.
            let undecided = std::mem::take(&mut self.ambiguous);
            self.resolve(undecided, "after a failed commit and reopen");
        }
        failed
    }

    /// After a failed commit and the store's recovery: the requests still waiting (a
    /// roster change deferred behind the failed one) are committed, and what is served
    /// equals the model (the service works again without a restart; nothing the disk
    /// refused is served).
    fn after_failure(&mut self) {
        for _ in 0..10 {
            if self.outstanding.is_empty() {
                break;
            }
            self.commit(None);
        }
        if !self.outstanding.is_empty() {
            self.fail("requests never answered after a failed commit");
        }
        self.check_served("after a failed commit");
    }

    /// Commits until nothing waits, then compares what is served with the model.
    fn settle(&mut self) {
        for _ in 0..20 {
            if self.outstanding.is_empty() {
                break;
            }
            if self.commit(None) {
                self.after_failure();
                return;
            }
        }
        if !self.outstanding.is_empty() {
            self.fail(&format!(
                "requests never answered: {:?}",
                self.outstanding.iter().map(|s| &s.id).collect::<Vec<_>>()
            ));
        }
        self.check_served("at rest");
    }

    /// Sends a read as `user` and returns its result.
    fn read(&mut self, user: usize, body: &str, ns_roster: bool) -> Element {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let from = full(user);
        let xml = if ns_roster {
            format!("<iq type='get' id='{id}' from='{from}'>{body}</iq>")
        } else {
            format!("<iq type='get' id='{id}' from='{from}' to='pubsub.localhost'>{body}</iq>")
        };
        let jid = self.outboxes[user].0.clone();
        self.router
            .route(&jid, Element::parse(&xml).expect("read parses"));
        let reply = self
            .drain(user)
            .into_iter()
            .find(|e| e.attr("id") == Some(id.as_str()));
        match reply {
            Some(r) => r,
            None => self.fail(&format!("no immediate reply to read {body}")),
        }
    }

    /// What the engine and the router serve equals the model (no request outstanding).
    fn check_served(&mut self, when: &str) {
        for node in NODES {
            let r = self.read(
                0,
                &format!("<pubsub xmlns='{PS}'><items node='{node}'/></pubsub>"),
                false,
            );
            match self.model.nodes.get(node) {
                None => {
                    if r.attr("type") != Some("error") {
                        self.fail(&format!(
                            "{when}: items of deleted/absent node {node} served: {r:?}"
                        ));
                    }
                }
                Some(n) => {
                    let mut got: Vec<(String, String)> = r
                        .child("pubsub", PS)
                        .and_then(|p| p.child("items", PS))
                        .map(|items| {
                            items
                                .elements()
                                .map(|i| {
                                    let token =
                                        i.elements().next().map(Element::text).unwrap_or_default();
                                    (i.attr("id").unwrap_or("").to_owned(), token)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut want = n.items.clone();
                    got.sort();
                    want.sort();
                    if got != want {
                        self.fail(&format!(
                            "{when}: items of {node} served {got:?}, model {want:?} ({r:?})"
                        ));
                    }
                }
            }
        }
        for (user, name) in USERS.iter().enumerate() {
            let r = self.read(
                user,
                &format!("<pubsub xmlns='{PS}'><subscriptions/></pubsub>"),
                false,
            );
            let subs = r
                .child("pubsub", PS)
                .and_then(|p| p.child("subscriptions", PS));
            let mut got: Vec<(String, String)> = attr_pairs(subs, "node", "jid");
            got.sort();
            let want: Vec<(String, String)> = self
                .model
                .subs
                .iter()
                .filter(|(_, j)| *j == full(user))
                .cloned()
                .collect();
            if got != want {
                self.fail(&format!(
                    "{when}: subscriptions of {} served {got:?}, model {want:?}",
                    name
                ));
            }
            let r = self.read(user, &format!("<query xmlns='{ROSTER}'/>"), true);
            let got: BTreeMap<String, String> = attr_pairs(r.child("query", ROSTER), "jid", "name");
            let want: BTreeMap<String, String> = self
                .model
                .rosters
                .iter()
                .filter(|((o, _), _)| o == *name)
                .map(|((_, c), n)| (c.clone(), n.clone()))
                .collect();
            if got != want {
                self.fail(&format!(
                    "{when}: roster of {} served {got:?}, model {want:?}",
                    name
                ));
            }
        }
    }

    /// The process dies or the power goes (`torn`), `mid_commit` disk operations into a
    /// commit of the pending batch if given; then a new store and router are opened on
    /// what survived and checked against the model.
    fn restart(&mut self, mid_commit: Option<u64>, torn: bool) {
        let mut wrote = String::new();
        if let Some(k) = mid_commit {
            if let Some(batch) = self.store.pubsub_take() {
                self.disk.fail_from(k, Fault::Dead);
                let r = batch.write();
                self.stats.crashes_mid_commit += u64::from(r.is_err());
                wrote = format!(
                    ", {} disk ops into the commit of gen {} ({})",
                    k,
                    batch.generation(),
                    if r.is_ok() {
                        "it completed"
                    } else {
                        "interrupted"
                    }
                );
            }
        }
        self.stats.crashes += 1;
        self.stats.torn_crashes += u64::from(torn);
        let unsynced = self.disk.unsynced_bytes();
        let disk = if torn {
            self.disk.crash(Some(&mut self.rng))
        } else {
            self.disk.crash(None)
        };
        self.log.push(format!(
            "{}{wrote}; {unsynced} bytes unsynced, file {} bytes",
            if torn { "POWER CUT" } else { "KILL -9" },
            disk.len()
        ));
        // The dead process's database must not write its clean-shutdown state on the way
        // out (it would be lost anyway; it also costs a second per crash in debug builds).
        std::mem::replace(&mut self.disk, disk).fail_from(0, Fault::Dead);
        let t0 = std::time::Instant::now();
        let opened = Self::open(&self.config, &self.disk, self.cache);
        self.stats.open_time += t0.elapsed();
        (self.router, self.store) = match opened {
            Ok(r) => r,
            Err(e) => self.fail(&format!("the database does not open after the crash: {e}")),
        };
        self.bind_all();
        let undecided: Vec<Sent> = self
            .ambiguous
            .drain(..)
            .chain(self.outstanding.drain(..))
            .collect();
        self.resolve(undecided, "after the restart");
        self.check_served("after the restart");
    }

    /// Compares the store with the model plus every subset of the `undecided` requests
    /// (applied in order): exactly one must match (all or nothing per request); the model
    /// becomes that state, since it is durable now.
    fn resolve(&mut self, undecided: Vec<Sent>, when: &str) {
        let actual = match read_store(&self.store) {
            Ok(m) => m,
            Err(e) => self.fail(&format!("{when}: the database does not read: {e}")),
        };
        // Candidates: the model with a subset of the undecided requests applied, in order.
        assert!(undecided.len() < 16, "bounded by MAX_OUTSTANDING");
        let mut found = None;
        for mask in 0u32..(1 << undecided.len()) {
            let mut m = self.model.clone();
            for (i, s) in undecided.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    // A publish without id that reached the disk: its id is in the store.
                    let published = match &s.req {
                        Req::Publish {
                            node,
                            id: None,
                            token,
                        } => actual
                            .nodes
                            .get(node)
                            .and_then(|n| n.items.iter().find(|(_, t)| t == token))
                            .map(|(i, _)| i.clone()),
                        _ => None,
                    };
                    m.apply(s.user, &s.req, published);
                }
            }
            if same(&m, &actual) {
                found = Some((mask, m));
                break;
            }
        }
        let Some((mask, m)) = found else {
            self.fail(&format!(
                "{when}: the store matches neither the acknowledged state nor it plus \
                 any subset of the {} undecided requests ({:?})\nstore: {actual:#?}\nmodel: {:#?}",
                undecided.len(),
                undecided.iter().map(|s| &s.id).collect::<Vec<_>>(),
                self.model
            ));
        };
        let present = mask.count_ones() as u64;
        self.stats.unacked_present_after_crash += present;
        self.stats.unacked_absent_after_crash += undecided.len() as u64 - present;
        for (i, s) in undecided.iter().enumerate() {
            if mask & (1 << i) != 0
                && self
                    .log
                    .iter()
                    .any(|l| l.starts_with(&format!("  {}: error", s.id)))
            {
                self.stats.error_replies_found_on_disk += 1;
                self.log
                    .push(format!("  {} (answered error) is on disk {when}", s.id));
            }
        }
        self.model = m;
        if let Err(why) = actual.check_limits() {
            self.fail(&format!("{when}: over a limit on disk: {why}"));
        }
    }

    fn step(&mut self) {
        if self.outstanding.len() >= MAX_OUTSTANDING {
            if self.commit(None) {
                self.after_failure();
            }
            return;
        }
        match self.rng.u32(..100) {
            0..70 => self.send(),
            70..88 => {
                if self.commit(None) {
                    self.after_failure();
                }
            }
            88..92 => {
                let k = self.rng.u64(..16);
                if self.commit(Some(k)) {
                    self.after_failure();
                }
            }
            92..96 => self.settle(),
            _ => {
                let mid = (!self.outstanding.is_empty()).then(|| self.rng.u64(..12));
                let torn = self.rng.bool();
                self.restart(mid, torn);
            }
        }
    }
}

fn run_case(seed: u64) -> Stats {
    let mut w = World::new(seed);
    for _ in 0..STEPS {
        w.step();
    }
    w.settle();
    w.restart(None, true);
    if std::env::var_os("KINGLET_MODEL_LOG").is_some() {
        eprintln!("seed {seed}:\n{}", w.log.join("\n"));
    }
    w.stats
}

/// Random operations, crashes and disk faults on the engine, the roster and the store
/// against the model: every acknowledged write survives, unacknowledged ones are all or
/// nothing, limits hold, and what is served equals what is stored.
#[test]
fn model_every_acknowledged_write_survives_crashes_and_disk_faults() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("KINGLET_MODEL_SEED") {
        Some(s) => vec![s],
        None => {
            let base = fastrand::u64(..);
            (0..env("KINGLET_MODEL_CASES").unwrap_or(DEFAULT_CASES))
                .map(|i| base.wrapping_add(i))
                .collect()
        }
    };
    // Too few cases (a replay, a debug run) may miss a state by chance.
    let single = seeds.len() < 32;
    let mut total = Stats::default();
    for seed in seeds {
        let s = run_case(seed);
        macro_rules! add {
            ($($field:ident),*) => { $(total.$field += s.$field;)* };
        }
        add!(
            acked,
            refused,
            commits,
            failed_commits,
            crashes,
            torn_crashes,
            crashes_mid_commit,
            unacked_present_after_crash,
            unacked_absent_after_crash,
            error_replies_found_on_disk,
            full_nodes,
            full_rosters,
            open_time
        );
    }
    eprintln!("model test: {total:?}");
    if single {
        return;
    }
    // The cases must reach the states they are about, or the test proves nothing.
    assert!(total.acked > 0 && total.refused > 0, "{total:?}");
    assert!(
        total.crashes_mid_commit > 0 && total.failed_commits > 0,
        "{total:?}"
    );
    assert!(total.full_nodes > 0 && total.full_rosters > 0, "{total:?}");
}

/// The (`a`, `b`) attribute pairs of the children of `parent` (empty strings for missing
/// attributes; nothing without a parent).
fn attr_pairs<C: FromIterator<(String, String)> + Default>(
    parent: Option<&Element>,
    a: &str,
    b: &str,
) -> C {
    parent
        .map(|p| {
            p.elements()
                .map(|e| {
                    (
                        e.attr(a).unwrap_or("").to_owned(),
                        e.attr(b).unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
