//! Transcript tests of the engine: stanzas in, stanzas out, no sockets. Each test is named
//! after the XEP-0060 (1.30) section it checks.
//!
//! This file holds the shared harness (`World`, `Rosters`, stanza helpers; `TempDir` is
//! `crate::test_support`'s); the tests are split by use case, like the engine
//! (`src/pubsub/*.rs`).

use std::collections::HashMap;

use super::*;
use crate::store::Store;

mod access;
mod approval;
mod collections;
mod create;
mod date;
mod disco;
mod errors;
mod expiry;
mod items;
mod notify;
mod numbers;
mod owner;
mod pep;
mod publish;
mod retract;
mod subscribe;

use crate::test_support::TempDir;

/// Rosters for the access models: owner → contact → (from subscription, groups); the
/// available resources of each bare JID with their `<show/>`; and the `+notify` interests
/// of each full JID (XEP-0115 caps, for PEP).
#[derive(Default)]
struct Rosters(
    HashMap<(String, String), (bool, Vec<String>)>,
    HashMap<String, Vec<(String, String)>>,
    HashMap<String, Vec<String>>,
);

impl Directory for Rosters {
    fn roster_entry(&self, owner: &Jid, contact: &Jid) -> Option<(bool, Vec<String>)> {
        self.0
            .get(&(
                owner.as_str().to_owned(),
                contact.bare().as_str().to_owned(),
            ))
            .cloned()
    }

    fn presences(&self, bare: &Jid) -> Vec<(Jid, String)> {
        self.1
            .get(bare.as_str())
            .map(|v| {
                v.iter()
                    .filter_map(|(j, s)| Some((Jid::parse(j).ok()?, s.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wants(&self, full: &Jid, node: &str) -> bool {
        self.2
            .get(full.as_str())
            .is_some_and(|v| v.iter().any(|n| n == node))
    }

    fn presence_subscribers(&self, owner: &Jid) -> Vec<Jid> {
        self.picked_with_from(|o, c| (o == owner.as_str()).then_some(c))
    }

    fn presence_subscriptions(&self, contact: &Jid) -> Vec<Jid> {
        self.picked_with_from(|o, c| (c == contact.as_str()).then_some(o))
    }
}

impl Rosters {
    /// The sorted JIDs `pick` chooses from the (owner, contact) pairs with a `from` subscription.
    fn picked_with_from<'a>(
        &'a self,
        pick: impl Fn(&'a str, &'a str) -> Option<&'a str>,
    ) -> Vec<Jid> {
        let mut v: Vec<Jid> = self
            .0
            .iter()
            .filter(|(_, (from, _))| *from)
            .filter_map(|((o, c), _)| pick(o, c))
            .filter_map(|j| Jid::parse(j).ok())
            .collect();
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        v
    }
}

/// What the engine sent for one request: (recipient, stanza) pairs, parsed.
type Replies = Vec<(String, Element)>;

struct World {
    store: Store,
    config: Config,
    engine: Engine,
    rosters: Rosters,
    now: u64,
    n: u64,
}

const ALICE: &str = "alice@localhost/a";

const BOB: &str = "bob@localhost/b";

const CAROL: &str = "carol@localhost/c";

const EVE: &str = "eve@elsewhere/e";

impl World {
    fn new() -> World {
        Self::with_config(Config::default())
    }

    /// A world over a store in memory (redb's in-memory backend): no file, no fsync.
    fn with_config(config: Config) -> World {
        Self::with_store(config, Store::open_in_memory().expect("store"))
    }

    /// A world with a node `node` of alice's, configured with `fields`.
    fn with_node(node: &str, fields: &[(&str, &str)]) -> World {
        let mut w = Self::new();
        w.create(ALICE, node, fields);
        w
    }

    /// [`World::with_node`] (default configuration) with bob subscribed.
    fn with_subscriber(node: &str) -> World {
        let mut w = Self::with_node(node, &[]);
        w.subscribe(BOB, node, BOB);
        w
    }

    /// A world with small stanza (4 KiB) and outbox (8 KiB) limits.
    fn with_small_outbox() -> World {
        let mut cfg = Config::default();
        cfg.limits.max_stanza_bytes = 4096;
        cfg.limits.outbox_max_bytes = 8192;
        Self::with_config(cfg)
    }

    fn with_store(config: Config, store: Store) -> World {
        let engine = Engine::load(&config, &store).expect("engine");
        World {
            store,
            config,
            engine,
            rosters: Rosters::default(),
            now: 1_700_000_000_000,
            n: 0,
        }
    }

    /// Reload the engine from the store, as a daemon restart does.
    fn restart(&mut self) {
        self.engine = Engine::load(&self.config, &self.store).expect("reload");
    }

    /// Send `<iq type=ty>` with `body` from `from`; returns every delivery, parsed.
    fn iq(&mut self, from: &str, ty: &str, body: &str) -> Replies {
        self.send_iq('q', from, " to='pubsub.localhost'", ty, body)
    }

    /// Send `<iq type=ty id={prefix}{n}{to}>` with `body` from `from` a second after the
    /// previous one; returns every delivery, parsed.
    fn send_iq(&mut self, prefix: char, from: &str, to: &str, ty: &str, body: &str) -> Replies {
        self.n += 1;
        self.now += 1000;
        let xml = format!(
            "<iq type='{ty}' id='{prefix}{}' from='{from}'{to}>{body}</iq>",
            self.n
        );
        let iq = Element::parse(&xml).expect("test stanza parses");
        let from = Jid::parse(from).expect("jid");
        let out = self
            .engine
            .handle_iq(&self.rosters, &self.store, &from, &iq, self.now);
        self.engine.check_totals();
        parse_out(out)
    }

    /// The reply (first delivery), asserting it is a result.
    fn ok(&mut self, from: &str, ty: &str, body: &str) -> (Element, Vec<(String, Element)>) {
        let mut out = self.iq(from, ty, body);
        assert!(!out.is_empty(), "no reply");
        let (_, reply) = out.remove(0);
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
        (reply, out)
    }

    /// [`World::ok`] for `<pubsub xmlns='{ns}'>{inner}</pubsub>`.
    fn pubsub_ok(&mut self, from: &str, ty: &str, ns: &str, inner: &str) -> Reply {
        self.ok(from, ty, &format!("<pubsub xmlns='{ns}'>{inner}</pubsub>"))
    }

    /// [`World::err`] for `<pubsub xmlns='{ns}'>{inner}</pubsub>`.
    fn ps_err(&mut self, from: &str, ty: &str, ns: &str, inner: &str) -> Errors {
        self.err(from, ty, &format!("<pubsub xmlns='{ns}'>{inner}</pubsub>"))
    }

    /// Configures `node` with the form `fields` ([`World::pubsub_ok`]).
    fn configure_ok(&mut self, from: &str, node: &str, fields: &[(&str, &str)]) -> Reply {
        let inner = configure_form(node, fields);
        self.pubsub_ok(from, "set", NS_PUBSUB_OWNER, &inner)
    }

    /// [`World::configure_ok`], expecting an error ([`World::err`]).
    fn configure_err(&mut self, from: &str, node: &str, fields: &[(&str, &str)]) -> Errors {
        let inner = configure_form(node, fields);
        self.ps_err(from, "set", NS_PUBSUB_OWNER, &inner)
    }

    /// Sets the subscription options of `jid` on `node` to `fields` ([`World::pubsub_ok`]).
    fn options_ok(&mut self, from: &str, node: &str, jid: &str, fields: &[(&str, &str)]) -> Reply {
        let inner = options_form(node, jid, fields);
        self.pubsub_ok(from, "set", NS_PUBSUB, &inner)
    }

    /// The reply to a `<pubsub/>` get of `inner` ([`World::pubsub_ok`]).
    fn get_ok(&mut self, from: &str, inner: &str) -> Element {
        self.pubsub_ok(from, "get", NS_PUBSUB, inner).0
    }

    /// [`World::options_ok`], expecting an error ([`World::err`]).
    fn options_err(
        &mut self,
        from: &str,
        node: &str,
        jid: &str,
        fields: &[(&str, &str)],
    ) -> Errors {
        let inner = options_form(node, jid, fields);
        self.ps_err(from, "set", NS_PUBSUB, &inner)
    }

    /// [`World::pubsub_ok`], returning the `<pubsub/>` of the reply (not the reply) and
    /// the other deliveries.
    fn ps_ok(&mut self, from: &str, ty: &str, ns: &str, inner: &str) -> Reply {
        let (r, out) = self.pubsub_ok(from, ty, ns, inner);
        (
            r.child("pubsub", ns).expect("a <pubsub/> reply").clone(),
            out,
        )
    }

    /// The reply's (condition, pubsub#errors condition), asserting it is an error.
    fn err(&mut self, from: &str, ty: &str, body: &str) -> (String, String) {
        let out = self.iq(from, ty, body);
        let conditions = error_of(&out);
        assert_eq!(out.len(), 1, "no notifications on error");
        conditions
    }

    fn create(&mut self, from: &str, node: &str, fields: &[(&str, &str)]) {
        let body = if fields.is_empty() {
            format!("<pubsub xmlns='{NS_PUBSUB}'><create node='{node}'/></pubsub>")
        } else {
            format!(
                "<pubsub xmlns='{NS_PUBSUB}'><create node='{node}'/><configure>{}</configure></pubsub>",
                form(FORM_NODE_CONFIG, fields)
            )
        };
        self.ok(from, "set", &body);
    }

    fn publish(
        &mut self,
        from: &str,
        node: &str,
        id: Option<&str>,
        payload: &str,
    ) -> (Element, Vec<(String, Element)>) {
        let id = id.map(|i| format!(" id='{i}'")).unwrap_or_default();
        self.ok(
            from,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'><item{id}>{payload}</item></publish></pubsub>"),
        )
    }

    /// Publishes [`P`] to `node` as `from` and asserts that exactly `to` is notified.
    #[track_caller]
    fn publish_notifies_only(&mut self, from: &str, node: &str, to: &str) {
        let (_, notes) = self.publish(from, node, None, P);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].0, to);
    }

    fn subscribe(&mut self, from: &str, node: &str, jid: &str) -> Replies {
        self.ok(
            from,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub>"),
        )
        .1
    }

    /// An items request on `node` paged after the unknown id `after`, expecting an error.
    fn items_after_err(&mut self, from: &str, node: &str, after: &str) -> Errors {
        let inner =
            format!("<items node='{node}'/><set xmlns='{NS_RSM}'><after>{after}</after></set>");
        self.ps_err(from, "get", NS_PUBSUB, &inner)
    }

    fn item_ids(&mut self, from: &str, node: &str, extra: &str) -> Vec<String> {
        let r = self.get_ok(from, &format!("<items node='{node}'{extra}/>"));
        items_of(&r)
    }
}

fn form(form_type: &str, fields: &[(&str, &str)]) -> String {
    let mut s = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    );
    for (k, v) in fields {
        s.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    s.push_str("</x>");
    s
}

fn items_of(r: &Element) -> Vec<String> {
    r.child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("items", NS_PUBSUB))
        .map(|i| {
            i.elements()
                .filter_map(|e| e.attr("id").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn event(m: &Element) -> &Element {
    assert_eq!(m.name, "message", "{m:?}");
    m.child("event", NS_PUBSUB_EVENT).expect("event")
}

const P: &str = "<t xmlns='urn:t'>1</t>";

/// The `<{name}/>` directly in a notification's `<event/>`.
fn event_child<'a>(m: &'a Element, name: &str) -> &'a Element {
    event(m).child(name, NS_PUBSUB_EVENT).expect(name)
}

/// The `attr` of the `<{name}/>` event child of `e`.
fn event_attr<'a>(e: &'a Element, name: &str, attr: &str) -> Option<&'a str> {
    e.child(name, NS_PUBSUB_EVENT).and_then(|c| c.attr(attr))
}

/// The `<{name}/>` (item or retract) in a notification's `<items/>`.
fn event_items_child<'a>(m: &'a Element, name: &str) -> &'a Element {
    event(m)
        .child("items", NS_PUBSUB_EVENT)
        .and_then(|i| i.child(name, NS_PUBSUB_EVENT))
        .expect(name)
}

/// The `<subscription/>` of a subscription-state notification.
fn subscription_notice(m: &Element) -> &Element {
    m.child("event", NS_PUBSUB_EVENT)
        .and_then(|p| p.child("subscription", NS_PUBSUB_EVENT))
        .expect("subscription notice")
}

/// The text of an item's `<t xmlns='urn:t'/>` payload.
fn payload_text(item: &Element) -> Option<String> {
    item.child("t", "urn:t").map(Element::text)
}

/// The error of a request that names no node.
fn nodeid_required() -> Errors {
    ("bad-request".into(), "nodeid-required".into())
}

/// An RSM `<set/>` as (first, first's index, last, count).
type RsmSummary = (Option<String>, Option<String>, Option<String>, String);

fn rsm_of(r: &Element) -> Option<RsmSummary> {
    Some(rsm_summary(
        r.child("pubsub", NS_PUBSUB)?.child("set", NS_RSM)?,
    ))
}

/// An RSM `<set/>` as (first, index, last, count).
fn rsm_summary(set: &Element) -> RsmSummary {
    let first = set.child("first", NS_RSM);
    (
        first.map(Element::text),
        first.and_then(|f| f.attr("index").map(str::to_owned)),
        set.child("last", NS_RSM).map(Element::text),
        set.child("count", NS_RSM)
            .map(Element::text)
            .unwrap_or_default(),
    )
}

impl World {
    /// A message from `from` to the service (an approval form); returns the deliveries.
    fn message(&mut self, from: &str, body: &str) -> Replies {
        self.now += 1000;
        let xml = format!("<message from='{from}' to='pubsub.localhost'>{body}</message>");
        let m = Element::parse(&xml).expect("test stanza parses");
        let from = Jid::parse(from).expect("jid");
        let out = self
            .engine
            .handle_message(&self.rosters, &self.store, &from, &m, self.now);
        parse_out(out)
    }

    /// Runs the timer at `self.now`.
    fn tick(&mut self) -> Replies {
        let out = self.engine.on_tick(&self.rosters, &self.store, self.now);
        parse_out(out)
    }

    /// `full` goes unavailable (the last resource of its account when `offline`).
    fn unavailable(&mut self, full: &str, offline: bool) -> Replies {
        let j = Jid::parse(full).expect("jid");
        if offline {
            self.rosters.1.remove(j.bare().as_str());
        }
        let out = self
            .engine
            .on_unavailable(&self.rosters, &self.store, &j, offline, self.now);
        parse_out(out)
    }

    fn online(&mut self, full: &str, show: &str) {
        let j = Jid::parse(full).expect("jid");
        self.rosters
            .1
            .entry(j.bare().as_str().to_owned())
            .or_default()
            .push((full.to_owned(), show.to_owned()));
    }

    /// Subscribes with options; returns the `<subscription/>` of the reply.
    fn subscribe_with(&mut self, from: &str, node: &str, opts: &[(&str, &str)]) -> Element {
        let body = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{from}'/><options>{}</options></pubsub>",
            form(FORM_SUBSCRIBE_OPTIONS, opts)
        );
        let (r, _) = self.ok(from, "set", &body);
        r.child("pubsub", NS_PUBSUB)
            .and_then(|p| p.child("subscription", NS_PUBSUB))
            .expect("subscription")
            .clone()
    }
}

/// A result and the other deliveries it caused.
type Reply = (Element, Vec<(String, Element)>);

/// An error's (condition, pubsub#errors condition).
type Errors = (String, String);

/// The first delivery's (condition, pubsub#errors condition), asserting it is an error.
fn error_of(out: &[(String, Element)]) -> (String, String) {
    let r = &out[0].1;
    assert_eq!(r.attr("type"), Some("error"), "{r:?}");
    let e = r.child("error", NS_CLIENT).expect("error child");
    let cond = e
        .elements()
        .find(|c| c.ns == crate::proto::NS_STANZAS && c.name != "text")
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let app = e
        .elements()
        .find(|c| c.ns == NS_PUBSUB_ERRORS)
        .map(|c| c.name.clone())
        .unwrap_or_default();
    (cond, app)
}

fn parse_out(out: Vec<Delivery>) -> Replies {
    out.into_iter()
        .map(|d| {
            let e = Element::parse(&d.stanza.to_text()).unwrap_or_else(|e| {
                panic!("engine output does not parse: {e}: {}", d.stanza.to_text())
            });
            (d.to.as_str().to_owned(), e)
        })
        .collect()
}

/// The node attribute of the `<items/>` of an event notification.
fn items_node(m: &Element) -> Option<String> {
    event(m)
        .child("items", NS_PUBSUB_EVENT)
        .and_then(|i| i.attr("node").map(str::to_owned))
}

impl World {
    fn collection(&mut self, from: &str, node: &str, extra: &[(&str, &str)]) {
        let mut f = vec![("pubsub#node_type", "collection")];
        f.extend_from_slice(extra);
        self.create(from, node, &f);
    }

    /// The configuration form of `node` as a map.
    /// A collection `node` with a leaf (no options) for each of `leaves`.
    fn collection_with_leaves(&mut self, from: &str, node: &str, leaves: &[&str]) {
        self.collection(from, node, &[]);
        for leaf in leaves {
            self.create(from, leaf, &[("pubsub#collection", node)]);
        }
    }

    fn config_of(&mut self, from: &str, node: &str) -> HashMap<String, Vec<String>> {
        self.get_form(
            from,
            NS_PUBSUB_OWNER,
            &format!("<configure node='{node}'/>"),
        )
    }

    /// Gets `<pubsub xmlns='{ns}'>{inner}</pubsub>` (a result) and returns the data form
    /// in the reply's element named like `inner`'s (`configure`, `options`, `default`), as
    /// a map.
    fn get_form(&mut self, from: &str, ns: &str, inner: &str) -> HashMap<String, Vec<String>> {
        let (r, _) = self.ok(
            from,
            "get",
            &format!("<pubsub xmlns='{ns}'>{inner}</pubsub>"),
        );
        let name = inner[1..]
            .split([' ', '/', '>'])
            .next()
            .expect("element name");
        let x = r
            .child("pubsub", ns)
            .and_then(|p| p.child(name, ns))
            .and_then(find_form)
            .expect("form");
        form_fields(x).into_iter().collect()
    }

    fn configure(&mut self, from: &str, node: &str, body: &str) -> Replies {
        self.iq(
            from,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='{node}'>{body}</configure></pubsub>"
            ),
        )
    }

    fn assoc(&mut self, from: &str, verb: &str, parent: &str, child: &str) -> Replies {
        self.iq(
            from,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><collection node='{parent}'><{verb} node='{child}'/></collection></pubsub>"
            ),
        )
    }

    /// The `<query/>` of a disco#info result for the service (`attrs`: ` node='…'`).
    fn disco_info(&mut self, from: &str, attrs: &str) -> Element {
        let (r, _) = self.ok(
            from,
            "get",
            &format!("<query xmlns='{NS_DISCO_INFO}'{attrs}/>"),
        );
        r.child("query", NS_DISCO_INFO).expect("query").clone()
    }

    fn disco_children(&mut self, node: Option<&str>) -> Vec<String> {
        let n = node.map(|n| format!(" node='{n}'")).unwrap_or_default();
        let (r, _) = self.ok(
            ALICE,
            "get",
            &format!("<query xmlns='{NS_DISCO_ITEMS}'{n}/>"),
        );
        item_nodes(&r)
    }
}

/// `<configure/>` of `node` holding the node-config form with `fields`.
fn configure_form(node: &str, fields: &[(&str, &str)]) -> String {
    let form = form(FORM_NODE_CONFIG, fields);
    format!("<configure node='{node}'>{form}</configure>")
}

/// `<options/>` of `jid` on `node` holding the subscribe-options form with `fields`.
fn options_form(node: &str, jid: &str, fields: &[(&str, &str)]) -> String {
    let form = form(FORM_SUBSCRIBE_OPTIONS, fields);
    format!("<options node='{node}' jid='{jid}'>{form}</options>")
}

/// The node attributes of the items of a disco#items reply.
fn item_nodes(r: &Element) -> Vec<String> {
    r.child("query", NS_DISCO_ITEMS)
        .map(|q| {
            q.elements()
                .filter_map(|i| i.attr("node").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A `text-multi` field with several values.
fn multi(var: &str, values: &[&str]) -> String {
    let mut s = format!("<field var='{var}'>");
    for v in values {
        s.push_str(&format!("<value>{v}</value>"));
    }
    s.push_str("</field>");
    s
}

impl World {
    /// An IQ to `to` (an account's bare JID; `None`: no `to`, the sender's own account).
    fn pep_iq(&mut self, from: &str, to: Option<&str>, ty: &str, body: &str) -> Replies {
        let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
        self.send_iq('p', from, &to, ty, body)
    }

    /// [`World::pep_iq`] with `inner` in a `<pubsub/>` element.
    fn pep_pubsub(&mut self, from: &str, to: Option<&str>, ty: &str, inner: &str) -> Replies {
        self.pep_iq(
            from,
            to,
            ty,
            &format!("<pubsub xmlns='{NS_PUBSUB}'>{inner}</pubsub>"),
        )
    }

    /// The owner publishes to its own PEP node (no `to`), with optional publish-options.
    fn pep_publish(
        &mut self,
        from: &str,
        node: &str,
        id: &str,
        payload: &str,
        options: &[(&str, &str)],
    ) -> Replies {
        let opts = if options.is_empty() {
            String::new()
        } else {
            format!(
                "<publish-options>{}</publish-options>",
                form(FORM_PUBLISH_OPTIONS, options)
            )
        };
        self.pep_iq(
            from,
            None,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'><item id='{id}'>{payload}</item></publish>{opts}</pubsub>"),
        )
    }

    /// `contact` has a presence subscription (`from`) to `owner`.
    fn presence_sub(&mut self, owner: &str, contact: &str, on: bool) {
        self.rosters
            .0
            .insert((owner.to_owned(), contact.to_owned()), (on, Vec::new()));
    }

    /// `full` is available and advertises `+notify` for `nodes`.
    fn interested(&mut self, full: &str, nodes: &[&str]) {
        self.online(full, "online");
        self.rosters.2.insert(
            full.to_owned(),
            nodes.iter().map(|n| (*n).to_owned()).collect(),
        );
    }

    fn pep_config(&mut self, owner_full: &str, node: &str) -> HashMap<String, Vec<String>> {
        let out = self.pep_iq(
            owner_full,
            None,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='{node}'/></pubsub>"),
        );
        let x = out[0]
            .1
            .child("pubsub", NS_PUBSUB_OWNER)
            .and_then(|p| p.child("configure", NS_PUBSUB_OWNER))
            .and_then(find_form)
            .expect("form");
        form_fields(x).into_iter().collect()
    }
}

fn result(out: &[(String, Element)]) -> &Element {
    let r = &out[0].1;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    r
}
