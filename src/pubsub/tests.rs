//! Transcript tests of the engine: stanzas in, stanzas out, no sockets. Each test is named
//! after the XEP-0060 (1.30) section it checks.

use std::collections::HashMap;
use std::path::PathBuf;

use super::*;
use crate::store::Store;

/// A temporary data directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "kinglet-pubsub-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
        let mut v: Vec<Jid> = self
            .0
            .iter()
            .filter(|((o, _), (from, _))| o == owner.as_str() && *from)
            .filter_map(|((_, c), _)| Jid::parse(c).ok())
            .collect();
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        v
    }

    fn presence_subscriptions(&self, contact: &Jid) -> Vec<Jid> {
        let mut v: Vec<Jid> = self
            .0
            .iter()
            .filter(|((_, c), (from, _))| c == contact.as_str() && *from)
            .filter_map(|((o, _), _)| Jid::parse(o).ok())
            .collect();
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        v
    }
}

struct World {
    _dir: TempDir,
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

    fn with_config(config: Config) -> World {
        let dir = TempDir::new("w");
        let store = Store::open(&dir.0, 0).expect("store");
        let engine = Engine::load(&config, &store).expect("engine");
        World {
            _dir: dir,
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
    fn iq(&mut self, from: &str, ty: &str, body: &str) -> Vec<(String, Element)> {
        self.n += 1;
        self.now += 1000;
        let xml = format!(
            "<iq type='{ty}' id='q{}' from='{from}' to='pubsub.localhost'>{body}</iq>",
            self.n
        );
        let iq = Element::parse(&xml).expect("test stanza parses");
        let from = Jid::parse(from).expect("jid");
        let out = self
            .engine
            .handle_iq(&self.rosters, &self.store, &from, &iq, self.now);
        out.into_iter()
            .map(|d| {
                let e = Element::parse(&d.stanza.to_text()).unwrap_or_else(|e| {
                    panic!("engine output does not parse: {e}: {}", d.stanza.to_text())
                });
                (d.to.as_str().to_owned(), e)
            })
            .collect()
    }

    /// The reply (first delivery), asserting it is a result.
    fn ok(&mut self, from: &str, ty: &str, body: &str) -> (Element, Vec<(String, Element)>) {
        let mut out = self.iq(from, ty, body);
        assert!(!out.is_empty(), "no reply");
        let (_, reply) = out.remove(0);
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
        (reply, out)
    }

    /// The reply's (condition, pubsub#errors condition), asserting it is an error.
    fn err(&mut self, from: &str, ty: &str, body: &str) -> (String, String) {
        let out = self.iq(from, ty, body);
        let reply = &out[0].1;
        assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
        assert_eq!(out.len(), 1, "no notifications on error");
        let e = reply.child("error", NS_CLIENT).expect("error child");
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

    fn subscribe(&mut self, from: &str, node: &str, jid: &str) -> Vec<(String, Element)> {
        self.ok(
            from,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub>"),
        )
        .1
    }

    fn item_ids(&mut self, from: &str, node: &str, extra: &str) -> Vec<String> {
        let (r, _) = self.ok(
            from,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='{node}'{extra}/></pubsub>"),
        );
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

#[test]
fn xep0060_5_1_disco_info_advertises_exactly_the_implemented_features() {
    let mut w = World::new();
    let (r, _) = w.ok(
        ALICE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    let q = r.child("query", NS_DISCO_INFO).expect("query");
    let id = q.child("identity", NS_DISCO_INFO).expect("identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("pubsub"), Some("service"))
    );
    let feats: Vec<&str> = q
        .elements()
        .filter(|e| e.name == "feature")
        .filter_map(|e| e.attr("var"))
        .collect();
    assert!(feats.contains(&NS_PUBSUB));
    assert!(feats.contains(&NS_RSM));
    assert!(feats.contains(&NS_COMMANDS));
    assert_eq!(feats.len(), 5 + FEATURES.len());
    for f in [
        "access-authorize",
        "multi-subscribe",
        "leased-subscription",
        "get-pending",
        "presence-notifications",
    ] {
        assert!(feats.contains(&format!("{NS_PUBSUB}#{f}").as_str()), "{f}");
    }
    for f in ["collections", "multi-collections", "multi-collection"] {
        assert!(feats.contains(&format!("{NS_PUBSUB}#{f}").as_str()), "{f}");
    }
    // Not implemented, so not advertised.
    for f in ["filtered-notifications", "auto-subscribe"] {
        assert!(!feats.contains(&format!("{NS_PUBSUB}#{f}").as_str()), "{f}");
    }
}

#[test]
fn xep0060_5_2_and_5_5_disco_items_of_service_and_node() {
    let mut w = World::new();
    w.create(ALICE, "n1", &[("pubsub#title", "One")]);
    w.create(ALICE, "n2", &[]);
    w.publish(ALICE, "n1", Some("i1"), P);
    let (r, _) = w.ok(
        BOB,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    let q = r.child("query", NS_DISCO_ITEMS).expect("query");
    let nodes: Vec<(&str, Option<&str>)> = q
        .elements()
        .map(|i| (i.attr("node").unwrap_or(""), i.attr("name")))
        .collect();
    assert_eq!(nodes, vec![("n1", Some("One")), ("n2", None)]);
    let (r, _) = w.ok(
        BOB,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items' node='n1'/>",
    );
    let q = r.child("query", NS_DISCO_ITEMS).expect("query");
    let names: Vec<&str> = q.elements().filter_map(|i| i.attr("name")).collect();
    assert_eq!(names, vec!["i1"]);
    assert_eq!(
        w.err(
            BOB,
            "get",
            "<query xmlns='http://jabber.org/protocol/disco#items' node='nope'/>"
        )
        .0,
        "item-not-found"
    );
}

#[test]
fn xep0060_5_4_node_meta_data() {
    let mut w = World::new();
    w.create(
        ALICE,
        "n",
        &[("pubsub#title", "T"), ("pubsub#type", "urn:t")],
    );
    w.subscribe(BOB, "n", "bob@localhost");
    let (r, _) = w.ok(
        BOB,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info' node='n'/>",
    );
    let q = r.child("query", NS_DISCO_INFO).expect("query");
    let id = q.child("identity", NS_DISCO_INFO).expect("identity");
    assert_eq!(id.attr("type"), Some("leaf"));
    let x = q.child("x", NS_DATA).expect("meta-data form");
    let f: HashMap<String, Vec<String>> = form_fields(x).into_iter().collect();
    assert_eq!(f["FORM_TYPE"], vec![FORM_META_DATA.to_owned()]);
    assert_eq!(f["pubsub#title"], vec!["T".to_owned()]);
    assert_eq!(f["pubsub#type"], vec!["urn:t".to_owned()]);
    assert_eq!(f["pubsub#owner"], vec!["alice@localhost".to_owned()]);
    assert_eq!(f["pubsub#creator"], vec!["alice@localhost".to_owned()]);
    assert_eq!(f["pubsub#num_subscribers"], vec!["1".to_owned()]);
    assert_eq!(f["pubsub#access_model"], vec!["open".to_owned()]);
    assert_eq!(f["pubsub#max_items"], vec!["20".to_owned()]);
    assert!(f["pubsub#creation_date"][0].ends_with('Z'));
    assert_eq!(f["pubsub#node_type"], vec!["leaf".to_owned()]);
    // All 13 meta-data fields (XEP-0060 §16.4.3), pubsub#node_type (XEP-0248), FORM_TYPE.
    assert_eq!(f.len(), 15, "{:?}", f.keys());
    assert!(f.contains_key("pubsub#contact") && f.contains_key("pubsub#language"));
}

#[test]
fn xep0060_5_6_and_5_7_own_subscriptions_and_affiliations() {
    let mut w = World::new();
    w.create(ALICE, "a", &[]);
    w.create(ALICE, "b", &[]);
    w.subscribe(BOB, "a", "bob@localhost");
    w.subscribe(BOB, "b", BOB);
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscriptions/></pubsub>"),
    );
    let subs = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("subscriptions", NS_PUBSUB))
        .expect("subscriptions");
    let got: Vec<(&str, &str)> = subs
        .elements()
        .map(|s| (s.attr("node").unwrap_or(""), s.attr("jid").unwrap_or("")))
        .collect();
    assert_eq!(got, vec![("a", "bob@localhost"), ("b", BOB)]);
    let (r, _) = w.ok(
        ALICE,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><affiliations node='b'/></pubsub>"),
    );
    let affs = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("affiliations", NS_PUBSUB))
        .expect("affiliations");
    let got: Vec<(&str, &str)> = affs
        .elements()
        .map(|s| {
            (
                s.attr("node").unwrap_or(""),
                s.attr("affiliation").unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got, vec![("b", "owner")]);
}

#[test]
fn xep0060_6_1_subscribe_bare_and_full_and_invalid_jid() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    let out = w.subscribe(BOB, "n", "bob@localhost");
    assert!(out.is_empty(), "no last item to send");
    w.subscribe(BOB, "n", BOB);
    // Subscribing again is idempotent.
    w.subscribe(BOB, "n", BOB);
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='alice@localhost'/></pubsub>"
            )
        ),
        ("bad-request".into(), "invalid-jid".into())
    );
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='x' jid='bob@localhost'/></pubsub>"
            )
        )
        .0,
        "item-not-found"
    );
    // XEP-0248: without a node, the subscription is to the root collection (of type
    // `nodes` by default, so it takes no item notifications).
    let (r, _) = w.ok(
        BOB,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe jid='bob@localhost'/></pubsub>"),
    );
    let sub = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("subscription", NS_PUBSUB))
        .expect("subscription");
    assert_eq!(sub.attr("node"), Some(""));
    let (_, notes) = w.publish(ALICE, "n", Some("i"), P);
    let mut to: Vec<&str> = notes.iter().map(|(t, _)| t.as_str()).collect();
    to.sort();
    assert_eq!(to, vec!["bob@localhost", BOB]);
}

#[test]
fn xep0060_6_1_3_access_models_and_outcast() {
    let mut w = World::new();
    w.create(ALICE, "pres", &[("pubsub#access_model", "presence")]);
    w.create(
        ALICE,
        "rost",
        &[
            ("pubsub#access_model", "roster"),
            ("pubsub#roster_groups_allowed", "friends"),
        ],
    );
    w.create(ALICE, "wl", &[("pubsub#access_model", "whitelist")]);
    w.create(ALICE, "open", &[]);
    let sub = |node: &str, jid: &str| {
        format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub>")
    };
    assert_eq!(
        w.err(BOB, "set", &sub("pres", "bob@localhost")),
        (
            "not-authorized".into(),
            "presence-subscription-required".into()
        )
    );
    assert_eq!(
        w.err(BOB, "set", &sub("rost", "bob@localhost")),
        ("not-authorized".into(), "not-in-roster-group".into())
    );
    assert_eq!(
        w.err(BOB, "set", &sub("wl", "bob@localhost")),
        ("not-allowed".into(), "closed-node".into())
    );
    // Items retrieval follows the same rules (§6.5.9).
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='wl'/></pubsub>")
        ),
        ("not-allowed".into(), "closed-node".into())
    );
    w.rosters.0.insert(
        ("alice@localhost".into(), "bob@localhost".into()),
        (true, vec!["friends".into()]),
    );
    w.subscribe(BOB, "pres", "bob@localhost");
    w.subscribe(BOB, "rost", "bob@localhost");
    w.rosters.0.insert(
        ("alice@localhost".into(), "carol@localhost".into()),
        (true, vec!["work".into()]),
    );
    assert_eq!(
        w.err(CAROL, "set", &sub("rost", "carol@localhost")).1,
        "not-in-roster-group"
    );
    // Outcast: always refused, and its subscriptions are gone.
    w.subscribe(CAROL, "open", "carol@localhost");
    w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='open'><affiliation jid='carol@localhost' affiliation='outcast'/></affiliations></pubsub>"),
    );
    assert_eq!(
        w.err(CAROL, "set", &sub("open", "carol@localhost")).0,
        "forbidden"
    );
    let (_, notes) = w.publish(ALICE, "open", None, P);
    assert!(notes.is_empty(), "the outcast lost its subscription");
}

#[test]
fn xep0060_6_1_7_last_published_item_on_subscribe_with_delay() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#send_last_published_item", "on_sub")]);
    w.publish(ALICE, "n", Some("old"), P);
    w.publish(ALICE, "n", Some("last"), "<t xmlns='urn:t'>2</t>");
    let out = w.subscribe(BOB, "n", BOB);
    assert_eq!(out.len(), 1);
    let (to, m) = &out[0];
    assert_eq!(to, BOB);
    let item = event(m)
        .child("items", NS_PUBSUB_EVENT)
        .and_then(|i| i.child("item", NS_PUBSUB_EVENT))
        .expect("item");
    assert_eq!(item.attr("id"), Some("last"));
    assert_eq!(
        item.child("t", "urn:t").map(Element::text),
        Some("2".into())
    );
    let delay = m.child("delay", NS_DELAY).expect("XEP-0203 delay");
    assert_eq!(delay.attr("stamp"), Some(xep0082(w.now - 1000).as_str()));
    // Resubscribing sends it again (ejabberd #4479).
    assert_eq!(w.subscribe(BOB, "n", BOB).len(), 1);
}

#[test]
fn xep0060_6_1_7_on_sub_and_presence_sends_on_initial_presence() {
    let mut w = World::new();
    w.create(
        ALICE,
        "n",
        &[("pubsub#send_last_published_item", "on_sub_and_presence")],
    );
    w.subscribe(BOB, "n", "bob@localhost");
    w.publish(ALICE, "n", Some("x"), P);
    let out = w.engine.on_available(&Jid::parse(BOB).expect("jid"), w.now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to.as_str(), BOB);
    assert!(out[0].stanza.to_text().contains("urn:xmpp:delay"));
    let none = w
        .engine
        .on_available(&Jid::parse(CAROL).expect("jid"), w.now);
    assert!(none.is_empty());
}

#[test]
fn xep0060_6_2_unsubscribe() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    let unsub = |jid: &str| {
        format!("<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='n' jid='{jid}'/></pubsub>")
    };
    assert_eq!(
        w.err(BOB, "set", &unsub("bob@localhost")),
        ("unexpected-request".into(), "not-subscribed".into())
    );
    w.subscribe(BOB, "n", "bob@localhost");
    assert_eq!(
        w.err(BOB, "set", &unsub("alice@localhost")),
        ("bad-request".into(), "invalid-jid".into())
    );
    w.ok(BOB, "set", &unsub("bob@localhost"));
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty());
}

#[test]
fn xep0060_6_3_subscription_options_deliver() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.subscribe(BOB, "n", BOB);
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><options node='n' jid='{BOB}'/></pubsub>"),
    );
    let x = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("options", NS_PUBSUB))
        .and_then(find_form)
        .expect("form");
    let f: HashMap<String, Vec<String>> = form_fields(x).into_iter().collect();
    assert_eq!(f["pubsub#deliver"], vec!["1".to_owned()]);
    w.ok(
        BOB,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><options node='n' jid='{BOB}'>{}</options></pubsub>",
            form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#deliver", "false")])
        ),
    );
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty(), "deliver=0 stops notifications");
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><options node='n' jid='{BOB}'>{}</options></pubsub>",
                form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#digest", "1")])
            )
        ),
        ("not-acceptable".into(), "unsupported".into()),
        "digest is declined, never ignored"
    );
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><options node='n' jid='{BOB}'>{}</options></pubsub>",
                form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#bogus", "1")])
            )
        ),
        ("bad-request".into(), "invalid-options".into())
    );
    assert_eq!(
        w.err(
            CAROL,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><options node='n' jid='{CAROL}'/></pubsub>")
        ),
        ("unexpected-request".into(), "not-subscribed".into())
    );
    // Subscribe with options in one request (§6.3.7).
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
        form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#deliver", "0")])
    );
    w.ok(CAROL, "set", &body);
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty());
}

#[test]
fn xep0060_6_4_default_subscription_options() {
    let mut w = World::new();
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><default/></pubsub>"),
    );
    let x = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("default", NS_PUBSUB))
        .and_then(find_form)
        .expect("form");
    assert!(form_fields(x).iter().any(|(v, _)| v == "pubsub#deliver"));
}

#[test]
fn xep0060_6_5_items_all_by_id_and_newest_n() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    for i in 1..=4 {
        w.publish(ALICE, "n", Some(&format!("i{i}")), P);
    }
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["i1", "i2", "i3", "i4"]);
    assert_eq!(w.item_ids(BOB, "n", " max_items='2'"), vec!["i3", "i4"]);
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'><item id='i2'/><item id='zz'/></items></pubsub>"),
    );
    assert_eq!(items_of(&r), vec!["i2"]);
    let item = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("items", NS_PUBSUB))
        .and_then(|i| i.child("item", NS_PUBSUB))
        .expect("item");
    assert_eq!(item.attr("publisher"), Some("alice@localhost"));
    assert_eq!(
        item.child("t", "urn:t").map(Element::text),
        Some("1".into())
    );
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items/></pubsub>")
        ),
        ("bad-request".into(), "nodeid-required".into())
    );
}

#[test]
fn xep0060_7_1_publish_with_generated_id() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.subscribe(BOB, "n", BOB);
    let (r, notes) = w.publish(ALICE, "n", None, P);
    let id = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("publish", NS_PUBSUB))
        .and_then(|p| p.child("item", NS_PUBSUB))
        .and_then(|i| i.attr("id"))
        .expect("generated id")
        .to_owned();
    assert!(!id.is_empty());
    assert_eq!(notes.len(), 1);
    let item = event(&notes[0].1)
        .child("items", NS_PUBSUB_EVENT)
        .and_then(|i| i.child("item", NS_PUBSUB_EVENT))
        .expect("item");
    assert_eq!(item.attr("id"), Some(id.as_str()));
    assert_eq!(notes[0].1.attr("type"), Some("headline"));
    assert_eq!(notes[0].1.attr("from"), Some("pubsub.localhost"));
    // Two publishes never share an id.
    let (r2, _) = w.publish(ALICE, "n", None, P);
    assert_ne!(format!("{r:?}"), format!("{r2:?}"));
}

#[test]
fn xep0060_7_1_2_same_id_overwrites_and_notifies_again() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.subscribe(BOB, "n", BOB);
    w.publish(ALICE, "n", Some("x"), P);
    w.publish(ALICE, "n", Some("y"), P);
    let (_, notes) = w.publish(ALICE, "n", Some("x"), "<t xmlns='urn:t'>new</t>");
    assert_eq!(notes.len(), 1);
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["y", "x"]);
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'><item id='x'/></items></pubsub>"),
    );
    assert!(format!("{r:?}").contains("new"));
}

#[test]
fn xep0060_7_1_max_items_evicts_oldest_first() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#max_items", "3")]);
    for i in 1..=5 {
        w.publish(ALICE, "n", Some(&format!("i{i}")), P);
    }
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["i3", "i4", "i5"]);
    // Lowering max_items evicts at once.
    w.ok(
        ALICE,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(FORM_NODE_CONFIG, &[("pubsub#max_items", "1")])
        ),
    );
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["i5"]);
    w.restart();
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["i5"]);
}

#[test]
fn xep0060_7_1_3_publish_errors() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#max_payload_size", "40")]);
    let publish = |item: &str| {
        format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='n'>{item}</publish></pubsub>")
    };
    // §7.1.3.1 insufficient privileges.
    assert_eq!(
        w.err(BOB, "set", &publish(&format!("<item>{P}</item>"))).0,
        "forbidden"
    );
    // §7.1.3.3 no such node (bob may create, so this auto-creates; eve may not).
    let missing = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><publish node='zz'><item>{P}</item></publish></pubsub>"
    );
    assert_eq!(w.err(EVE, "set", &missing).0, "item-not-found");
    // §7.1.3.4 payload too big.
    let big = format!("<item><t xmlns='urn:t'>{}</t></item>", "x".repeat(64));
    assert_eq!(
        w.err(ALICE, "set", &publish(&big)),
        ("not-acceptable".into(), "payload-too-big".into())
    );
    // §7.1.3.5 two payloads.
    assert_eq!(
        w.err(ALICE, "set", &publish(&format!("<item>{P}{P}</item>"))),
        ("bad-request".into(), "invalid-payload".into())
    );
    // §7.1.3.6 item and payload required on a persistent payload node.
    assert_eq!(
        w.err(ALICE, "set", &publish("")),
        ("bad-request".into(), "item-required".into())
    );
    assert_eq!(
        w.err(ALICE, "set", &publish("<item id='e'/>")),
        ("bad-request".into(), "payload-required".into())
    );
    // Transient notification-only node: an item is forbidden.
    w.create(
        ALICE,
        "t",
        &[
            ("pubsub#persist_items", "0"),
            ("pubsub#deliver_payloads", "0"),
        ],
    );
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><publish node='t'><item id='a'/></publish></pubsub>"
            )
        ),
        ("bad-request".into(), "item-forbidden".into())
    );
    w.subscribe(BOB, "t", BOB);
    let (_, notes) = w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='t'/></pubsub>"),
    );
    assert_eq!(notes.len(), 1);
    // §7.1.3.6 nodeid required.
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><publish><item>{P}</item></publish></pubsub>")
        ),
        ("bad-request".into(), "nodeid-required".into())
    );
    assert_eq!(w.item_ids(BOB, "n", ""), Vec::<String>::new());
}

#[test]
fn xep0060_7_1_5_publish_options_preconditions() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#access_model", "whitelist")]);
    let body = |fields: &[(&str, &str)]| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB}'><publish node='n'><item>{P}</item></publish><publish-options>{}</publish-options></pubsub>",
            form(FORM_PUBLISH_OPTIONS, fields)
        )
    };
    w.ok(ALICE, "set", &body(&[("pubsub#access_model", "whitelist")]));
    // Normalised comparison: booleans as true/1.
    w.ok(ALICE, "set", &body(&[("pubsub#persist_items", "true")]));
    assert_eq!(
        w.err(ALICE, "set", &body(&[("pubsub#access_model", "open")])),
        ("conflict".into(), "precondition-not-met".into())
    );
    assert_eq!(
        w.err(ALICE, "set", &body(&[("pubsub#unknown", "1")])),
        ("conflict".into(), "precondition-not-met".into())
    );
    assert_eq!(w.item_ids(ALICE, "n", "").len(), 2);
}

#[test]
fn xep0060_7_1_5_auto_create_applies_options_atomically() {
    let mut w = World::new();
    let body = |node: &str, fields: &[(&str, &str)]| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'><item id='1'>{P}</item></publish><publish-options>{}</publish-options></pubsub>",
            form(FORM_PUBLISH_OPTIONS, fields)
        )
    };
    assert_eq!(
        w.err(
            BOB,
            "set",
            &body("auto", &[("pubsub#access_model", "bogus")])
        )
        .1,
        "precondition-not-met"
    );
    assert_eq!(w.engine.node_count(), 0, "no node left behind");
    // A payload too big for the new node also leaves nothing behind.
    assert_eq!(
        w.err(
            BOB,
            "set",
            &body("auto", &[("pubsub#max_payload_size", "5")])
        )
        .1,
        "payload-too-big"
    );
    assert_eq!(w.engine.node_count(), 0);
    w.ok(
        BOB,
        "set",
        &body("auto", &[("pubsub#access_model", "whitelist")]),
    );
    assert_eq!(
        w.err(
            CAROL,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='auto'/></pubsub>")
        )
        .1,
        "closed-node"
    );
    w.restart();
    assert_eq!(w.item_ids(BOB, "auto", ""), vec!["1"]);
}

#[test]
fn xep0060_7_2_retract_with_notify() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#notify_retract", "0")]);
    w.subscribe(BOB, "n", BOB);
    w.publish(ALICE, "n", Some("a"), P);
    w.publish(ALICE, "n", Some("b"), P);
    let retract = |id: &str, notify: &str| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB}'><retract node='n'{notify}><item id='{id}'/></retract></pubsub>"
        )
    };
    let (_, notes) = w.ok(ALICE, "set", &retract("a", ""));
    assert!(notes.is_empty(), "notify_retract off, no notify attribute");
    let (_, notes) = w.ok(ALICE, "set", &retract("b", " notify='1'"));
    assert_eq!(notes.len(), 1);
    let r = event(&notes[0].1)
        .child("items", NS_PUBSUB_EVENT)
        .and_then(|i| i.child("retract", NS_PUBSUB_EVENT))
        .expect("retract");
    assert_eq!(r.attr("id"), Some("b"));
    assert_eq!(w.err(ALICE, "set", &retract("b", "")).0, "item-not-found");
    assert_eq!(w.err(BOB, "set", &retract("b", "")).0, "item-not-found");
    w.publish(ALICE, "n", Some("c"), P);
    assert_eq!(w.err(BOB, "set", &retract("c", "")).0, "forbidden");
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><retract node='n'/></pubsub>")
        ),
        ("bad-request".into(), "item-required".into())
    );
    assert!(w.item_ids(BOB, "n", "") == vec!["c"]);
}

#[test]
fn xep0060_8_1_create_named_instant_and_policy() {
    let mut w = World::new();
    let (r, _) = w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><create/></pubsub>"),
    );
    let node = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("create", NS_PUBSUB))
        .and_then(|c| c.attr("node"))
        .expect("instant node id")
        .to_owned();
    assert!(w.engine.nodes.contains_key(&node));
    let (r, _) = w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='named'/></pubsub>"),
    );
    assert!(r.elements().next().is_none(), "named create: empty result");
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='named'/></pubsub>")
        )
        .0,
        "conflict"
    );
    // Remote entities may not create under the default `local` policy.
    assert_eq!(
        w.err(
            EVE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='e'/></pubsub>")
        )
        .0,
        "forbidden"
    );
    // `admins` policy.
    let mut cfg = Config::default();
    cfg.pubsub.create_nodes = CreatePolicy::Admins;
    cfg.pubsub.admins = vec!["carol@localhost".into()];
    let mut w = World::with_config(cfg);
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='x'/></pubsub>")
        )
        .0,
        "forbidden"
    );
    w.create(CAROL, "x", &[]);
    // An admin owns every node.
    w.ok(
        CAROL,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='x'/></pubsub>"),
    );
}

#[test]
fn xep0060_8_1_max_nodes_limit() {
    let mut cfg = Config::default();
    cfg.limits.pubsub_max_nodes = 2;
    let mut w = World::with_config(cfg);
    w.create(ALICE, "a", &[]);
    w.create(ALICE, "b", &[]);
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='c'/></pubsub>")
        ),
        ("not-allowed".into(), "max-nodes-exceeded".into())
    );
}

#[test]
fn xep0060_8_2_configure_round_trips_every_field() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    let fields: &[(&str, &str)] = &[
        ("pubsub#title", "Title"),
        ("pubsub#description", "Desc"),
        ("pubsub#type", "urn:t"),
        ("pubsub#node_type", "leaf"),
        ("pubsub#collection", ""),
        ("pubsub#max_items", "max"),
        ("pubsub#persist_items", "1"),
        ("pubsub#access_model", "roster"),
        ("pubsub#roster_groups_allowed", "g1"),
        ("pubsub#publish_model", "subscribers"),
        ("pubsub#subscribe", "1"),
        ("pubsub#deliver_payloads", "0"),
        ("pubsub#deliver_notifications", "1"),
        ("pubsub#notify_retract", "0"),
        ("pubsub#notify_delete", "0"),
        ("pubsub#notify_config", "1"),
        ("pubsub#send_last_published_item", "on_sub_and_presence"),
        ("pubsub#notification_type", "normal"),
        ("pubsub#max_payload_size", "1000"),
        ("pubsub#item_expire", "3600"),
        ("pubsub#publish_node_full", "discard-oldest"),
        ("pubsub#presence_based_delivery", "1"),
        ("pubsub#notify_sub", "1"),
        ("pubsub#tempsub", "1"),
        ("pubsub#purge_offline", "1"),
        ("pubsub#itemreply", "none"),
        ("pubsub#contact", "admin@localhost"),
        ("pubsub#language", "en"),
    ];
    // A leaf's form leaves out the four collection-only fields (XEP-0248).
    assert_eq!(fields.len(), config::FIELDS.len() - 4);
    w.ok(
        ALICE,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(FORM_NODE_CONFIG, fields)
        ),
    );
    for round in 0..2 {
        let (r, _) = w.ok(
            ALICE,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'/></pubsub>"),
        );
        let x = r
            .child("pubsub", NS_PUBSUB_OWNER)
            .and_then(|p| p.child("configure", NS_PUBSUB_OWNER))
            .and_then(find_form)
            .expect("form");
        let got: HashMap<String, Vec<String>> = form_fields(x).into_iter().collect();
        for (k, v) in fields {
            assert_eq!(got[*k], vec![(*v).to_owned()], "{k} (round {round})");
        }
        w.restart();
    }
    // Unknown field and bad values: not-acceptable, nothing changed.
    for bad in [
        ("pubsub#bogus", "1"),
        ("pubsub#max_items", "0"),
        ("pubsub#max_items", "1000001"),
        ("pubsub#deliver_payloads", "maybe"),
        ("pubsub#node_type", "tree"),
        ("pubsub#body_xslt", "http://example.org/x.xsl"),
        ("pubsub#itemreply", "owner"),
        ("pubsub#contact", "not a jid@@"),
    ] {
        let (c, _) = w.err(
            ALICE,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
                form(FORM_NODE_CONFIG, &[bad])
            ),
        );
        assert_eq!(c, "not-acceptable", "{bad:?}");
    }
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
                form(
                    FORM_NODE_CONFIG,
                    &[("pubsub#dataform_xslt", "http://x/y.xsl")]
                )
            )
        ),
        ("not-acceptable".into(), "unsupported".into())
    );
    // XEP-0248: a leaf has no children, so no children_max.
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
                form(FORM_NODE_CONFIG, &[("pubsub#children_max", "3")])
            )
        ),
        ("not-allowed".into(), "invalid-options".into())
    );
    // Non-owners may not configure; nodeid is required.
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'/></pubsub>")
        )
        .0,
        "forbidden"
    );
    assert_eq!(
        w.err(
            ALICE,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure/></pubsub>")
        ),
        ("bad-request".into(), "nodeid-required".into())
    );
}

#[test]
fn xep0060_8_2_notify_config_and_notification_type_normal() {
    let mut w = World::new();
    w.create(
        ALICE,
        "n",
        &[
            ("pubsub#notify_config", "1"),
            ("pubsub#notification_type", "normal"),
        ],
    );
    w.subscribe(BOB, "n", BOB);
    let (_, notes) = w.ok(
        ALICE,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(FORM_NODE_CONFIG, &[("pubsub#title", "new")])
        ),
    );
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1.attr("type"), Some("normal"));
    assert!(
        event(&notes[0].1)
            .child("configuration", NS_PUBSUB_EVENT)
            .is_some()
    );
}

#[test]
fn xep0060_8_3_default_configuration() {
    let mut w = World::new();
    let (r, _) = w.ok(
        ALICE,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><default/></pubsub>"),
    );
    let x = r
        .child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.child("default", NS_PUBSUB_OWNER))
        .and_then(find_form)
        .expect("form");
    let got: HashMap<String, Vec<String>> = form_fields(x).into_iter().collect();
    assert_eq!(got["FORM_TYPE"], vec![FORM_NODE_CONFIG.to_owned()]);
    assert_eq!(got["pubsub#access_model"], vec!["open".to_owned()]);
    assert_eq!(got["pubsub#persist_items"], vec!["1".to_owned()]);
}

#[test]
fn xep0060_8_4_delete_with_redirect() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.subscribe(BOB, "n", BOB);
    w.publish(ALICE, "n", Some("a"), P);
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><delete node='n'/></pubsub>")
        )
        .0,
        "forbidden"
    );
    let (_, notes) = w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><delete node='n'><redirect uri='xmpp:pubsub.localhost?;node=m'/></delete></pubsub>"),
    );
    assert_eq!(notes.len(), 1);
    let d = event(&notes[0].1)
        .child("delete", NS_PUBSUB_EVENT)
        .expect("delete");
    assert_eq!(d.attr("node"), Some("n"));
    assert_eq!(
        d.child("redirect", NS_PUBSUB_EVENT)
            .and_then(|r| r.attr("uri")),
        Some("xmpp:pubsub.localhost?;node=m")
    );
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><delete node='n'/></pubsub>")
        )
        .0,
        "item-not-found"
    );
    w.restart();
    assert_eq!(w.engine.node_count(), 0);
    // The same id can be created again, empty.
    w.create(ALICE, "n", &[]);
    assert!(w.item_ids(ALICE, "n", "").is_empty());
}

#[test]
fn xep0060_8_5_purge_with_notification() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.subscribe(BOB, "n", BOB);
    w.publish(ALICE, "n", Some("a"), P);
    w.publish(ALICE, "n", Some("b"), P);
    let (_, notes) = w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='n'/></pubsub>"),
    );
    assert_eq!(notes.len(), 1);
    assert!(event(&notes[0].1).child("purge", NS_PUBSUB_EVENT).is_some());
    assert!(w.item_ids(BOB, "n", "").is_empty());
    w.restart();
    assert!(w.item_ids(BOB, "n", "").is_empty());
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='n'/></pubsub>")
        )
        .0,
        "forbidden"
    );
}

#[test]
fn xep0060_8_8_manage_subscriptions() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.subscribe(BOB, "n", "bob@localhost");
    let set = |jid: &str, state: &str| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><subscriptions node='n'><subscription jid='{jid}' subscription='{state}'/></subscriptions></pubsub>"
        )
    };
    let (_, told) = w.ok(ALICE, "set", &set(CAROL, "subscribed"));
    assert_eq!(told.len(), 1, "§12.13 subscription state notification");
    assert_eq!(told[0].0, CAROL);
    let sub = told[0]
        .1
        .child("event", NS_PUBSUB_EVENT)
        .and_then(|p| p.child("subscription", NS_PUBSUB_EVENT))
        .expect("subscription");
    assert_eq!(sub.attr("subscription"), Some("subscribed"));
    let (_, told) = w.ok(ALICE, "set", &set("bob@localhost", "none"));
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].0, "bob@localhost");
    // No change, no notification.
    let (_, told) = w.ok(ALICE, "set", &set("bob@localhost", "none"));
    assert!(told.is_empty());
    let (r, _) = w.ok(
        ALICE,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><subscriptions node='n'/></pubsub>"),
    );
    let subs: Vec<String> = r
        .child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.child("subscriptions", NS_PUBSUB_OWNER))
        .map(|s| {
            s.elements()
                .filter_map(|e| e.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(subs, vec![CAROL.to_owned()]);
    assert_eq!(w.err(BOB, "get", &set(BOB, "subscribed")).0, "forbidden");
    w.restart();
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, CAROL);
}

#[test]
fn xep0060_8_9_manage_affiliations_all_six() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    let set = |jid: &str, aff: &str| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'><affiliation jid='{jid}' affiliation='{aff}'/></affiliations></pubsub>"
        )
    };
    // publisher may publish and retract any item.
    w.ok(ALICE, "set", &set("bob@localhost", "publisher"));
    w.publish(BOB, "n", Some("b1"), P);
    w.publish(ALICE, "n", Some("a1"), P);
    w.ok(
        BOB,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><retract node='n'><item id='a1'/></retract></pubsub>"
        ),
    );
    // publish-only may publish and retract its own items, but not read.
    w.ok(ALICE, "set", &set("carol@localhost", "publish-only"));
    w.publish(CAROL, "n", Some("c1"), P);
    w.ok(
        CAROL,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><retract node='n'><item id='c1'/></retract></pubsub>"
        ),
    );
    assert_eq!(
        w.err(
            CAROL,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><retract node='n'><item id='b1'/></retract></pubsub>"
            )
        )
        .0,
        "forbidden"
    );
    assert_eq!(
        w.err(
            CAROL,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>")
        )
        .0,
        "forbidden"
    );
    // A second owner may configure; the last owner cannot be removed.
    w.ok(ALICE, "set", &set("bob@localhost", "owner"));
    w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'/></pubsub>"),
    );
    w.ok(BOB, "set", &set("alice@localhost", "none"));
    assert_eq!(
        w.err(BOB, "set", &set("bob@localhost", "member")).0,
        "bad-request"
    );
    w.ok(BOB, "set", &set("alice@localhost", "member"));
    assert_eq!(
        w.err(ALICE, "set", &set("alice@localhost", "owner")).0,
        "forbidden"
    );
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'/></pubsub>"),
    );
    let mut got: Vec<(String, String)> = r
        .child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.child("affiliations", NS_PUBSUB_OWNER))
        .map(|s| {
            s.elements()
                .map(|e| {
                    (
                        e.attr("jid").unwrap_or("").to_owned(),
                        e.attr("affiliation").unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    got.sort();
    let want = vec![
        ("alice@localhost".to_owned(), "member".to_owned()),
        ("bob@localhost".to_owned(), "owner".to_owned()),
        ("carol@localhost".to_owned(), "publish-only".to_owned()),
    ];
    assert_eq!(got, want);
    w.restart();
    let (r2, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'/></pubsub>"),
    );
    assert_eq!(format!("{:?}", r2.children), format!("{:?}", r.children));
}

#[test]
fn xep0060_4_publish_model_subscribers_and_open() {
    let mut w = World::new();
    w.create(ALICE, "s", &[("pubsub#publish_model", "subscribers")]);
    w.create(ALICE, "o", &[("pubsub#publish_model", "open")]);
    let body = |n: &str| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB}'><publish node='{n}'><item>{P}</item></publish></pubsub>"
        )
    };
    assert_eq!(w.err(BOB, "set", &body("s")).0, "forbidden");
    w.subscribe(BOB, "s", BOB);
    w.ok(BOB, "set", &body("s"));
    w.ok(EVE, "set", &body("o"));
}

#[test]
fn xep0060_transient_node_keeps_only_the_last_item_in_memory() {
    let mut w = World::new();
    w.create(ALICE, "t", &[("pubsub#persist_items", "0")]);
    w.publish(ALICE, "t", Some("a"), P);
    w.publish(ALICE, "t", Some("b"), P);
    assert_eq!(w.item_ids(BOB, "t", ""), vec!["b"]);
    w.restart();
    assert!(
        w.item_ids(BOB, "t", "").is_empty(),
        "transient items are not stored"
    );
    assert_eq!(w.engine.node_count(), 1, "the node itself is");
}

#[test]
fn xep0060_deliver_payloads_off_sends_notifications_without_payload() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#deliver_payloads", "0")]);
    w.subscribe(BOB, "n", BOB);
    let (_, notes) = w.publish(ALICE, "n", Some("a"), P);
    let item = event(&notes[0].1)
        .child("items", NS_PUBSUB_EVENT)
        .and_then(|i| i.child("item", NS_PUBSUB_EVENT))
        .expect("item");
    assert_eq!(item.attr("id"), Some("a"));
    assert!(item.elements().next().is_none());
    // Retrieval still returns the stored payload.
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>"),
    );
    assert!(format!("{r:?}").contains("urn:t"));
}

#[test]
fn xep0060_item_expire_hides_and_evicts_old_items() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#item_expire", "5")]);
    w.publish(ALICE, "n", Some("old"), P);
    w.now += 10_000;
    w.publish(ALICE, "n", Some("new"), P);
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["new"]);
    w.restart();
    assert_eq!(w.engine.nodes["n"].items.len(), 1, "evicted from the store");
}

#[test]
fn xep0060_fan_out_shares_one_serialised_item() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    let subs = [
        "a@localhost",
        "b@localhost/x",
        "c@localhost",
        "d@localhost/y",
    ];
    for s in subs {
        w.subscribe(s, "n", s);
    }
    let payload = "<t xmlns='urn:t'>a &amp; b</t>";
    let (_, notes) = w.publish(ALICE, "n", Some("i"), payload);
    assert_eq!(notes.len(), subs.len());
    let bodies: Vec<String> = notes
        .iter()
        .map(|(_, m)| {
            let mut s = String::new();
            event(m).write_to(&mut s, NS_CLIENT);
            s
        })
        .collect();
    assert!(
        bodies.windows(2).all(|p| p[0] == p[1]),
        "identical event bodies"
    );
    for ((to, m), s) in notes.iter().zip(subs) {
        assert_eq!(to, s);
        assert_eq!(m.attr("to"), Some(s));
    }
}

#[test]
fn xep0060_errors_map_to_stanza_and_app_conditions() {
    let cases = [
        (
            PubSubError::PayloadTooBig,
            "not-acceptable",
            Some("payload-too-big"),
        ),
        (PubSubError::ClosedNode, "not-allowed", Some("closed-node")),
        (
            PubSubError::Unsupported("x"),
            "feature-not-implemented",
            Some("unsupported"),
        ),
        (PubSubError::NodeExists, "conflict", None),
        (PubSubError::Internal, "internal-server-error", None),
    ];
    for (e, cond, app) in cases {
        let s = e.to_stanza_error();
        assert_eq!(s.condition.as_str(), cond);
        assert_eq!(s.app.as_ref().map(|a| a.name.as_str()), app);
        assert!(s.text.is_some());
    }
}

#[test]
fn xep0082_timestamps() {
    assert_eq!(xep0082(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(xep0082(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(xep0082(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
}

#[test]
fn unknown_payloads_and_iq_types_are_refused_or_ignored() {
    let mut w = World::new();
    let out = w.iq(ALICE, "get", "<query xmlns='urn:nothing'/>");
    assert_eq!(out.len(), 1);
    assert!(format!("{:?}", out[0].1).contains("service-unavailable"));
    assert!(w.iq(ALICE, "result", "").is_empty());
    let (c, _) = w.err(ALICE, "get", &format!("<pubsub xmlns='{NS_PUBSUB}'/>"));
    assert_eq!(c, "bad-request");
}

/// An RSM `<set/>` as (first, first's index, last, count).
type RsmSummary = (Option<String>, Option<String>, Option<String>, String);

fn rsm_of(r: &Element) -> Option<RsmSummary> {
    let set = r.child("pubsub", NS_PUBSUB)?.child("set", NS_RSM)?;
    let first = set.child("first", NS_RSM);
    Some((
        first.map(Element::text),
        first.and_then(|f| f.attr("index").map(str::to_owned)),
        set.child("last", NS_RSM).map(Element::text),
        set.child("count", NS_RSM)
            .map(Element::text)
            .unwrap_or_default(),
    ))
}

#[test]
fn xep0060_6_5_4_items_paged_with_rsm() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    for i in 1..=5 {
        w.publish(ALICE, "n", Some(&format!("i{i}")), P);
    }
    let page = |w: &mut World, set: &str| {
        let (r, _) = w.ok(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/><set xmlns='{NS_RSM}'>{set}</set></pubsub>"),
        );
        (items_of(&r), rsm_of(&r).expect("set"))
    };
    let (ids, set) = page(&mut w, "<max>2</max>");
    assert_eq!(ids, vec!["i1", "i2"]);
    assert_eq!(
        set,
        (
            Some("i1".into()),
            Some("0".into()),
            Some("i2".into()),
            "5".into()
        )
    );
    let (ids, set) = page(&mut w, "<max>2</max><after>i2</after>");
    assert_eq!(ids, vec!["i3", "i4"]);
    assert_eq!(set.1, Some("2".into()));
    let (ids, _) = page(&mut w, "<max>2</max><before/>");
    assert_eq!(ids, vec!["i4", "i5"]);
    let (ids, _) = page(&mut w, "<max>2</max><before>i4</before>");
    assert_eq!(ids, vec!["i2", "i3"]);
    let (ids, set) = page(&mut w, "<max>2</max><after>i5</after>");
    assert!(ids.is_empty());
    assert_eq!(set, (None, None, None, "5".into()));
    let (c, _) = w.err(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/><set xmlns='{NS_RSM}'><after>gone</after></set></pubsub>"),
    );
    assert_eq!(c, "item-not-found");
}

#[test]
fn xep0060_6_5_items_never_silently_truncated() {
    let mut cfg = Config::default();
    cfg.limits.max_stanza_bytes = 4096;
    cfg.limits.outbox_max_bytes = 8192;
    let mut w = World::with_config(cfg);
    w.create(ALICE, "n", &[]);
    let big = format!("<t xmlns='urn:t'>{}</t>", "x".repeat(1000));
    for i in 1..=10 {
        w.publish(ALICE, "n", Some(&format!("i{i}")), &big);
    }
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>"),
    );
    let ids = items_of(&r);
    assert!(ids.len() < 10 && !ids.is_empty(), "{ids:?}");
    let (first, index, last, count) = rsm_of(&r).expect("a cut reply carries an RSM set");
    assert_eq!(count, "10");
    assert_eq!(first.as_deref(), Some("i1"));
    assert_eq!(index.as_deref(), Some("0"));
    assert_eq!(last.as_deref(), ids.last().map(String::as_str));
    // The client pages on from `last`.
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><items node='n'/><set xmlns='{NS_RSM}'><after>{}</after></set></pubsub>",
            ids.last().expect("last")
        ),
    );
    assert_eq!(
        items_of(&r).first().map(String::as_str),
        Some(format!("i{}", ids.len() + 1).as_str())
    );
    // Small results carry no set.
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n' max_items='1'/></pubsub>"),
    );
    assert!(rsm_of(&r).is_none());
}

#[test]
fn xep0060_7_1_publish_node_full_three_behaviours() {
    let mut w = World::new();
    for (node, mode) in [
        ("r", "retract-oldest"),
        ("d", "discard-oldest"),
        ("x", "reject"),
    ] {
        w.create(
            ALICE,
            node,
            &[
                ("pubsub#max_items", "2"),
                ("pubsub#publish_node_full", mode),
            ],
        );
        w.subscribe(BOB, node, BOB);
        w.publish(ALICE, node, Some("a"), P);
        w.publish(ALICE, node, Some("b"), P);
    }
    // retract-oldest: the new item and a retraction of the oldest.
    let (_, notes) = w.publish(ALICE, "r", Some("c"), P);
    assert_eq!(notes.len(), 2);
    let retract = event(&notes[1].1)
        .child("items", NS_PUBSUB_EVENT)
        .and_then(|i| i.child("retract", NS_PUBSUB_EVENT))
        .expect("retract");
    assert_eq!(retract.attr("id"), Some("a"));
    assert_eq!(w.item_ids(BOB, "r", ""), vec!["b", "c"]);
    // discard-oldest: silently.
    let (_, notes) = w.publish(ALICE, "d", Some("c"), P);
    assert_eq!(notes.len(), 1);
    assert_eq!(w.item_ids(BOB, "d", ""), vec!["b", "c"]);
    // reject: conflict + node-full; overwriting an existing id is still allowed.
    let (c, app) = w.err(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='x'><item id='c'>{P}</item></publish></pubsub>"),
    );
    assert_eq!((c.as_str(), app.as_str()), ("conflict", "node-full"));
    w.publish(ALICE, "x", Some("b"), P);
    assert_eq!(w.item_ids(BOB, "x", ""), vec!["a", "b"]);
}

#[test]
fn xep0060_error_types_follow_the_examples() {
    use crate::proto::ErrorType;
    assert_eq!(
        PubSubError::NotSubscribed.to_stanza_error().kind,
        ErrorType::Cancel
    );
    assert_eq!(
        PubSubError::Forbidden("x").to_stanza_error().kind,
        ErrorType::Auth
    );
    assert_eq!(
        PubSubError::InvalidJid.to_stanza_error().kind,
        ErrorType::Modify
    );
    assert_eq!(
        PubSubError::NodeFull.to_stanza_error().kind,
        ErrorType::Cancel
    );
    assert_eq!(
        PubSubError::TooManySubscriptions.to_stanza_error().kind,
        ErrorType::Wait
    );
}

fn total_stored(w: &World) -> u64 {
    w.engine.nodes.values().map(|n| n.stored).sum()
}

#[test]
fn store_budget_evicts_oldest_across_nodes() {
    let mut cfg = Config::default();
    cfg.store.max_bytes = 65_536;
    let mut w = World::with_config(cfg);
    w.create(ALICE, "a", &[("pubsub#max_items", "max")]);
    w.create(ALICE, "b", &[("pubsub#max_items", "max")]);
    let big = format!("<t xmlns='urn:t'>{}</t>", "x".repeat(10_000));
    for i in 0..10 {
        let node = if i % 2 == 0 { "a" } else { "b" };
        w.publish(ALICE, node, Some(&format!("i{i}")), &big);
        assert!(total_stored(&w) <= 65_536, "over budget after {i}");
    }
    // Six items of ~10 KB fit; the four oldest went, from both nodes.
    assert_eq!(w.item_ids(BOB, "a", ""), vec!["i4", "i6", "i8"]);
    assert_eq!(w.item_ids(BOB, "b", ""), vec!["i5", "i7", "i9"]);
    let before = total_stored(&w);
    w.restart();
    assert_eq!(total_stored(&w), before, "accounting survives a restart");
    // An item larger than the whole budget is refused.
    let huge = format!("<t xmlns='urn:t'>{}</t>", "y".repeat(65_536));
    let mut cfg = Config::default();
    cfg.store.max_bytes = 65_536;
    cfg.limits.pubsub_max_item_bytes = 100_000;
    let mut w2 = World::with_config(cfg);
    w2.create(ALICE, "a", &[]);
    assert_eq!(
        w2.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='a'><item>{huge}</item></publish></pubsub>")
        )
        .0,
        "resource-constraint"
    );
}

#[test]
fn store_budget_reject_policy() {
    let mut cfg = Config::default();
    cfg.store.max_bytes = 65_536;
    cfg.store.full_policy = crate::config::FullPolicy::Reject;
    let mut w = World::with_config(cfg);
    w.create(ALICE, "a", &[("pubsub#max_items", "max")]);
    let big = format!("<t xmlns='urn:t'>{}</t>", "x".repeat(10_000));
    for i in 0..6 {
        w.publish(ALICE, "a", Some(&format!("i{i}")), &big);
    }
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><publish node='a'><item id='i6'>{big}</item></publish></pubsub>"
    );
    assert_eq!(w.err(ALICE, "set", &body).0, "resource-constraint");
    // Overwriting an item in place still fits.
    w.publish(ALICE, "a", Some("i5"), &big);
    // Retracting frees room.
    w.ok(
        ALICE,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><retract node='a'><item id='i0'/></retract></pubsub>"
        ),
    );
    w.ok(ALICE, "set", &body);
}

#[test]
fn store_budget_keeps_the_file_from_growing() {
    let mut cfg = Config::default();
    cfg.store.max_bytes = 256 * 1024;
    let mut w = World::with_config(cfg);
    w.create(ALICE, "a", &[("pubsub#max_items", "max")]);
    let big = format!("<t xmlns='urn:t'>{}</t>", "x".repeat(8_000));
    let path = w.store.path().to_path_buf();
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut sizes = Vec::new();
    for round in 0..6 {
        for i in 0..100 {
            w.publish(ALICE, "a", Some(&format!("r{round}-{i}")), &big);
        }
        sizes.push(size());
    }
    eprintln!("redb file size after each 100 publishes: {sizes:?}");
    // 600 items of 8 KB (4.8 MB) went through a 256 KiB budget.
    assert!(total_stored(&w) <= 256 * 1024);
    let plateau = sizes[1];
    assert!(
        sizes.iter().skip(1).all(|s| *s <= plateau + plateau / 4),
        "the file keeps growing: {sizes:?}"
    );
    assert!(sizes[5] < 4 * 1024 * 1024, "{sizes:?}");
}

/// Figures, not a timed test: `cargo test --release --lib pubsub_figures -- --ignored
/// --nocapture`. Engine only (no outbox, no sockets).
#[test]
#[ignore = "prints benchmark figures"]
fn pubsub_figures() {
    use std::time::Instant;
    for subs in [1usize, 100, 1000] {
        let mut cfg = Config::default();
        cfg.limits.pubsub_max_subscriptions_per_node = 2000;
        let mut w = World::with_config(cfg);
        w.create(ALICE, "t", &[("pubsub#persist_items", "0")]);
        for i in 0..subs {
            let j = format!("u{i}@localhost");
            w.subscribe(&j, "t", &j);
        }
        let payload = "<reading xmlns='urn:example:sensor'><t>21.5</t><h>40</h></reading>";
        let rounds = 200;
        let iq = Element::parse(&format!(
            "<iq type='set' id='p' from='{ALICE}' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'><publish node='t'><item>{payload}</item></publish></pubsub></iq>"
        ))
        .expect("iq");
        let from = Jid::parse(ALICE).expect("jid");
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..rounds {
            n += w
                .engine
                .handle_iq(&w.rosters, &w.store, &from, &iq, w.now)
                .len()
                - 1;
        }
        let el = start.elapsed();
        eprintln!(
            "transient publish to {subs} subscribers: {:.0} notifications/s, {:.2} µs CPU per notification",
            n as f64 / el.as_secs_f64(),
            el.as_secs_f64() * 1e6 / n as f64
        );
    }
    let mut w = World::new();
    w.create(ALICE, "p", &[("pubsub#max_items", "max")]);
    let from = Jid::parse(ALICE).expect("jid");
    let start = Instant::now();
    let rounds = 200;
    for i in 0..rounds {
        let iq = Element::parse(&format!(
            "<iq type='set' id='p' from='{ALICE}' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'><publish node='p'><item id='i{i}'><r xmlns='urn:x'>{i}</r></item></publish></pubsub></iq>"
        ))
        .expect("iq");
        w.engine.handle_iq(&w.rosters, &w.store, &from, &iq, w.now);
    }
    let el = start.elapsed();
    eprintln!(
        "durable publishes (one fsync each, {}): {:.0}/s",
        std::env::temp_dir().display(),
        f64::from(rounds) / el.as_secs_f64()
    );
}

#[test]
fn xep0060_5_2_disco_items_paged_and_bounded() {
    let mut cfg = Config::default();
    cfg.limits.max_stanza_bytes = 4096;
    cfg.limits.outbox_max_bytes = 8192;
    let mut w = World::with_config(cfg);
    for i in 0..100 {
        w.create(ALICE, &format!("node-{i:03}"), &[]);
    }
    let (r, _) = w.ok(
        BOB,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    let q = r.child("query", NS_DISCO_ITEMS).expect("query");
    let shown = q.elements().filter(|e| e.name == "item").count();
    assert!(shown < 100 && shown > 10, "{shown}");
    let set = q.child("set", NS_RSM).expect("a cut listing says so");
    assert_eq!(
        set.child("count", NS_RSM).map(Element::text),
        Some("100".into())
    );
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<query xmlns='http://jabber.org/protocol/disco#items'><set xmlns='{NS_RSM}'><max>3</max><after>node-010</after></set></query>"),
    );
    let q = r.child("query", NS_DISCO_ITEMS).expect("query");
    let nodes: Vec<&str> = q.elements().filter_map(|e| e.attr("node")).collect();
    assert_eq!(nodes, vec!["node-011", "node-012", "node-013"]);
}

// ------------------------------------------------------------ authorize, multi-subscribe,
// subscription options, timers and presence

impl World {
    /// A message from `from` to the service (an approval form); returns the deliveries.
    fn message(&mut self, from: &str, body: &str) -> Vec<(String, Element)> {
        self.now += 1000;
        let xml = format!("<message from='{from}' to='pubsub.localhost'>{body}</message>");
        let m = Element::parse(&xml).expect("test stanza parses");
        let from = Jid::parse(from).expect("jid");
        let out = self.engine.handle_message(&self.store, &from, &m, self.now);
        parse_out(out)
    }

    /// Runs the timer at `self.now`.
    fn tick(&mut self) -> Vec<(String, Element)> {
        let out = self.engine.on_tick(&self.rosters, &self.store, self.now);
        parse_out(out)
    }

    /// `full` goes unavailable (the last resource of its account when `offline`).
    fn unavailable(&mut self, full: &str, offline: bool) -> Vec<(String, Element)> {
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

fn parse_out(out: Vec<Delivery>) -> Vec<(String, Element)> {
    out.into_iter()
        .map(|d| {
            let e = Element::parse(&d.stanza.to_text()).unwrap_or_else(|e| {
                panic!("engine output does not parse: {e}: {}", d.stanza.to_text())
            });
            (d.to.as_str().to_owned(), e)
        })
        .collect()
}

/// The SubID headers of a notification.
fn subid_headers(m: &Element) -> Vec<String> {
    m.child("headers", NS_SHIM)
        .map(|h| {
            h.elements()
                .filter(|e| e.attr("name") == Some("SubID"))
                .map(Element::text)
                .collect()
        })
        .unwrap_or_default()
}

/// The approval form of a message, as field map.
fn approval_fields(m: &Element) -> HashMap<String, Vec<String>> {
    assert_eq!(m.name, "message", "{m:?}");
    let x = find_form(m).expect("approval form");
    form_fields(x).into_iter().collect()
}

/// The owner's answer to an approval form.
fn approval_answer(f: &HashMap<String, Vec<String>>, allow: bool) -> String {
    let v = |k: &str| f[k][0].clone();
    format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{FORM_SUBSCRIBE_AUTH}</value></field><field var='pubsub#subid'><value>{}</value></field><field var='pubsub#node'><value>{}</value></field><field var='pubsub#subscriber_jid'><value>{}</value></field><field var='pubsub#allow'><value>{}</value></field></x>",
        v("pubsub#subid"),
        v("pubsub#node"),
        v("pubsub#subscriber_jid"),
        if allow { "true" } else { "false" }
    )
}

#[test]
fn xep0060_8_6_authorize_pending_approval_form_allow_and_deny() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    // A second owner gets the form too.
    w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'><affiliation jid='dave@localhost' affiliation='owner'/></affiliations></pubsub>"),
    );
    let (r, forms) = w.ok(
        BOB,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{BOB}'/></pubsub>"),
    );
    let sub = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("subscription", NS_PUBSUB))
        .expect("subscription");
    assert_eq!(sub.attr("subscription"), Some("pending"));
    let mut to: Vec<&str> = forms.iter().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, vec!["alice@localhost", "dave@localhost"]);
    let f = approval_fields(&forms[0].1);
    assert_eq!(f["FORM_TYPE"], vec![FORM_SUBSCRIBE_AUTH.to_owned()]);
    assert_eq!(f["pubsub#node"], vec!["n".to_owned()]);
    assert_eq!(f["pubsub#subscriber_jid"], vec![BOB.to_owned()]);
    assert_eq!(f["pubsub#allow"], vec!["false".to_owned()]);
    assert_eq!(
        f["pubsub#subid"],
        vec![sub.attr("subid").expect("subid").to_owned()]
    );
    // While pending: no items (§6.5.9.3: pending is not subscribed), no second request
    // (§6.1.3.7), no notifications.
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>")
        ),
        ("not-authorized".into(), "not-subscribed".into())
    );
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{BOB}'/></pubsub>")
        ),
        ("not-authorized".into(), "pending-subscription".into())
    );
    assert_eq!(
        w.err(
            CAROL,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>")
        ),
        ("not-authorized".into(), "not-subscribed".into())
    );
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty(), "pending subscribers get nothing");
    // Only an owner's answer counts; a cancelled form leaves the request pending.
    assert!(w.message(CAROL, &approval_answer(&f, true)).is_empty());
    let cancelled = approval_answer(&f, true).replace("type='submit'", "type='cancel'");
    assert!(w.message(ALICE, &cancelled).is_empty());
    assert_eq!(
        forms[0].1.attr("id"),
        Some(format!("approve-{}", f["pubsub#subid"][0]).as_str())
    );
    let out = w.message(ALICE, &approval_answer(&f, true));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, BOB);
    let s = out[0]
        .1
        .child("event", NS_PUBSUB_EVENT)
        .and_then(|p| p.child("subscription", NS_PUBSUB_EVENT))
        .expect("subscription notice");
    assert_eq!(s.attr("subscription"), Some("subscribed"));
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, BOB);
    assert_eq!(w.item_ids(BOB, "n", "").len(), 2);
    // Denied: the subscription is gone and the subscriber told `none`.
    let (_, forms) = w.ok(
        CAROL,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/></pubsub>"),
    );
    let f = approval_fields(&forms[0].1);
    let out = w.message("dave@localhost/d", &approval_answer(&f, false));
    let s = out[0]
        .1
        .child("event", NS_PUBSUB_EVENT)
        .and_then(|p| p.child("subscription", NS_PUBSUB_EVENT))
        .expect("subscription notice");
    assert_eq!(
        (out[0].0.as_str(), s.attr("subscription")),
        (CAROL, Some("none"))
    );
    assert_eq!(
        w.err(
            CAROL,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>")
        ),
        ("not-authorized".into(), "not-subscribed".into())
    );
    // Becoming a publisher approves a pending request (§8.7 note).
    let (_, forms) = w.ok(
        "frank@localhost/f",
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='frank@localhost'/></pubsub>"
        ),
    );
    assert_eq!(forms.len(), 2);
    let (_, told) = w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'><affiliation jid='frank@localhost' affiliation='publisher'/></affiliations></pubsub>"),
    );
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].0, "frank@localhost");
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.iter().any(|(t, _)| t == "frank@localhost"));
    // Members skip approval.
    w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'><affiliation jid='carol@localhost' affiliation='member'/></affiliations></pubsub>"),
    );
    let s = w.subscribe_with(CAROL, "n", &[]);
    assert_eq!(s.attr("subscription"), Some("subscribed"));
}

#[test]
fn xep0060_8_7_get_pending_via_ad_hoc_command_and_restart() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    w.create(ALICE, "quiet", &[("pubsub#access_model", "authorize")]);
    w.subscribe(BOB, "n", BOB);
    // Pending subscriptions survive a restart.
    w.restart();
    let (r, _) = w.ok(
        ALICE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>",
    );
    let q = r.child("query", NS_DISCO_ITEMS).expect("items");
    assert!(
        q.elements()
            .any(|i| i.attr("node") == Some(CMD_GET_PENDING))
    );
    let (r, _) = w.ok(
        ALICE,
        "get",
        &format!("<query xmlns='{NS_DISCO_INFO}' node='{CMD_GET_PENDING}'/>"),
    );
    let id = r
        .child("query", NS_DISCO_INFO)
        .and_then(|q| q.child("identity", NS_DISCO_INFO))
        .expect("identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("automation"), Some("command-node"))
    );
    let (r, _) = w.ok(
        ALICE,
        "set",
        &format!("<command xmlns='{NS_COMMANDS}' node='{CMD_GET_PENDING}' action='execute'/>"),
    );
    let c = r.child("command", NS_COMMANDS).expect("command");
    assert_eq!(c.attr("status"), Some("executing"));
    let x = find_form(c).expect("form");
    let field = x
        .elements()
        .find(|f| f.attr("var") == Some("pubsub#node"))
        .expect("node field");
    let options: Vec<String> = field
        .elements()
        .filter(|o| o.name == "option")
        .filter_map(|o| o.child("value", config::NS_DATA).map(Element::text))
        .collect();
    assert_eq!(
        options,
        vec!["n".to_owned()],
        "only nodes with pending subscriptions"
    );
    let session = c.attr("sessionid").expect("sessionid").to_owned();
    let submit = format!(
        "<command xmlns='{NS_COMMANDS}' node='{CMD_GET_PENDING}' sessionid='{session}'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#node'><value>n</value></field></x></command>"
    );
    let (r, forms) = w.ok(ALICE, "set", &submit);
    assert_eq!(
        r.child("command", NS_COMMANDS)
            .and_then(|c| c.attr("status")),
        Some("completed")
    );
    assert_eq!(forms.len(), 1);
    assert_eq!(forms[0].0, "alice@localhost");
    let f = approval_fields(&forms[0].1);
    assert_eq!(f["pubsub#subscriber_jid"], vec![BOB.to_owned()]);
    // Non-owners may not list a node's pending subscriptions.
    assert_eq!(w.err(BOB, "set", &submit).0, "forbidden");
    // The re-sent form approves the stored pending subscription.
    w.message(ALICE, &approval_answer(&f, true));
    w.restart();
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, BOB);
}

#[test]
fn xep0060_6_1_6_multiple_subscriptions() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    let a = w.subscribe_with(BOB, "n", &[]);
    let b = w.subscribe_with(BOB, "n", &[("pubsub#include_body", "1")]);
    let (ida, idb) = (
        a.attr("subid").expect("subid").to_owned(),
        b.attr("subid").expect("subid").to_owned(),
    );
    assert_ne!(ida, idb);
    // The same options again: the same subscription.
    let again = w.subscribe_with(BOB, "n", &[]);
    assert_eq!(again.attr("subid"), Some(ida.as_str()));
    // One message for the JID, with both SubIDs as SHIM headers (§12.5).
    let (_, notes) = w.publish(ALICE, "n", Some("i1"), P);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let mut h = subid_headers(&notes[0].1);
    h.sort();
    let mut want = vec![ida.clone(), idb.clone()];
    want.sort();
    assert_eq!(h, want);
    // Ambiguous unsubscribe/options: subid-required; unknown subid: invalid-subid.
    let unsub = |subid: &str| {
        format!("<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='n' jid='{BOB}'{subid}/></pubsub>")
    };
    assert_eq!(
        w.err(BOB, "set", &unsub("")),
        ("bad-request".into(), "subid-required".into())
    );
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><options node='n' jid='{BOB}'/></pubsub>")
        ),
        ("bad-request".into(), "subid-required".into())
    );
    assert_eq!(
        w.err(BOB, "set", &unsub(" subid='nope'")),
        ("not-acceptable".into(), "invalid-subid".into())
    );
    // §6.5.9.1/2: items retrieval names one of several subscriptions.
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>")
        ),
        ("bad-request".into(), "subid-required".into())
    );
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n' subid='nope'/></pubsub>")
        ),
        ("not-acceptable".into(), "invalid-subid".into())
    );
    assert_eq!(w.item_ids(BOB, "n", &format!(" subid='{ida}'")).len(), 1);
    // §6.3.4.3: options without a jid.
    assert_eq!(
        w.err(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><options node='n' subid='{ida}'/></pubsub>")
        ),
        ("bad-request".into(), "jid-required".into())
    );
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscriptions node='n'/></pubsub>"),
    );
    let listed = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("subscriptions", NS_PUBSUB))
        .map(|s| s.elements().count())
        .unwrap_or(0);
    assert_eq!(listed, 2);
    // Persisted with their SubIDs.
    w.restart();
    w.ok(BOB, "set", &unsub(&format!(" subid='{idb}'")));
    // Purge notifications carry no SubIDs (§12.5): one message, no headers.
    w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='n'/></pubsub>"),
    )
    .1
    .iter()
    .for_each(|(_, m)| assert!(subid_headers(m).is_empty(), "{m:?}"));
    // One subscription left: no headers, and no subid needed.
    let (_, notes) = w.publish(ALICE, "n", Some("i2"), P);
    assert_eq!(notes.len(), 1);
    assert!(subid_headers(&notes[0].1).is_empty());
    assert!(notes[0].1.child("body", NS_CLIENT).is_none());
    // Bounded per JID.
    for i in 0..MAX_SUBSCRIPTIONS_PER_JID - 1 {
        w.subscribe_with(CAROL, "n", &[("pubsub#show-values", SHOWS[i % 5])]);
        if i >= 4 {
            // Distinct options: vary include_body too.
            w.subscribe_with(
                CAROL,
                "n",
                &[
                    ("pubsub#show-values", SHOWS[i % 5]),
                    ("pubsub#include_body", "1"),
                ],
            );
        }
    }
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
        form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#deliver", "0")])
    );
    assert_eq!(
        w.err(CAROL, "set", &body),
        ("policy-violation".into(), "too-many-subscriptions".into())
    );
    w.ok(BOB, "set", &unsub(""));
}

#[test]
fn xep0060_12_18_leased_subscription_expires_on_the_timer() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#notify_sub", "1")]);
    assert_eq!(w.engine.next_deadline(), None);
    let end = w.now + 10_000;
    let s = w.subscribe_with(BOB, "n", &[("pubsub#expire", &xep0082(end))]);
    let subid = s.attr("subid").expect("subid").to_owned();
    assert_eq!(w.engine.next_deadline(), Some(end));
    assert!(w.engine.needs_rearm());
    assert_eq!(w.engine.arm(), Some(end));
    assert!(!w.engine.needs_rearm());
    // The options form shows the lease.
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><options node='n' jid='{BOB}'/></pubsub>"),
    );
    let x = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("options", NS_PUBSUB))
        .and_then(find_form)
        .expect("form");
    let f: HashMap<String, Vec<String>> = form_fields(x).into_iter().collect();
    assert_eq!(f["pubsub#expire"], vec![xep0082(end)]);
    // A lease in the past or a bad date is refused.
    for bad in [xep0082(w.now - 1000), "tomorrow".to_owned()] {
        let body = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
            form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#expire", &bad)])
        );
        assert_eq!(
            w.err(CAROL, "set", &body),
            ("bad-request".into(), "invalid-options".into())
        );
    }
    // Survives a restart; nothing happens before the deadline.
    w.restart();
    assert_eq!(w.engine.next_deadline(), Some(end));
    w.now = end - 1;
    assert!(w.tick().is_empty());
    w.now = end;
    let out = w.tick();
    let to_bob = out
        .iter()
        .find(|(t, _)| t == BOB)
        .and_then(|(_, m)| m.child("event", NS_PUBSUB_EVENT))
        .and_then(|p| p.child("subscription", NS_PUBSUB_EVENT))
        .expect("subscriber told");
    assert_eq!(to_bob.attr("subscription"), Some("none"));
    assert_eq!(to_bob.attr("subid"), Some(subid.as_str()));
    assert!(
        out.iter().any(|(t, m)| t == "alice@localhost"
            && m.child("event", NS_PUBSUB_EVENT)
                .and_then(|e| e.child("subscription", NS_PUBSUB_EVENT))
                .is_some()),
        "notify_sub tells the owner: {out:?}"
    );
    assert_eq!(w.engine.next_deadline(), None);
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.iter().all(|(t, _)| t != BOB));
    w.restart();
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(
        notes.iter().all(|(t, _)| t != BOB),
        "gone from the store too"
    );
}

#[test]
fn xep0060_12_4_temporary_subscriptions_end_with_presence() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.create(ALICE, "temp", &[("pubsub#tempsub", "1")]);
    w.online(BOB, "online");
    w.subscribe_with(BOB, "n", &[("pubsub#expire", "presence")]);
    w.subscribe(BOB, "temp", "bob@localhost");
    w.subscribe_with(CAROL, "n", &[]);
    // Temporary subscriptions do not outlive a restart (no presence session does).
    w.restart();
    let (_, notes) = w.publish(ALICE, "temp", None, P);
    assert!(notes.is_empty(), "{notes:?}");
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert_eq!(
        notes.len(),
        1,
        "only Carol's lasting subscription: {notes:?}"
    );
    w.subscribe_with(BOB, "n", &[("pubsub#expire", "presence")]);
    w.subscribe(BOB, "temp", "bob@localhost");
    // Another resource of Bob going away ends only full-JID temporary subscriptions.
    w.unavailable("bob@localhost/other", false);
    let (_, notes) = w.publish(ALICE, "temp", None, P);
    assert_eq!(notes.len(), 1);
    w.unavailable(BOB, true);
    let (_, notes) = w.publish(ALICE, "n", None, P);
    let to: Vec<&str> = notes.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(to, vec![CAROL]);
    let (_, notes) = w.publish(ALICE, "temp", None, P);
    assert!(
        notes.is_empty(),
        "tempsub made the bare subscription temporary"
    );
    w.restart();
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert_eq!(notes.len(), 1);
}

#[test]
fn xep0060_6_3_include_body_and_show_values() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.online("bob@localhost/desk", "online");
    w.online("bob@localhost/phone", "away");
    w.subscribe_with("bob@localhost/desk", "n", &[]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='bob@localhost'/><options>{}</options></pubsub>",
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#subscribe_options</value></field><field var='pubsub#show-values'><value>away</value><value>xa</value></field><field var='pubsub#include_body'><value>1</value></field></x>"
    );
    w.ok("bob@localhost/desk", "set", &body);
    let (_, notes) = w.publish(
        ALICE,
        "n",
        Some("w1"),
        "<weather xmlns='urn:w'><temp>21</temp> sunny</weather>",
    );
    let mut to: Vec<&str> = notes.iter().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    // The full-JID subscription goes to the desk; the bare one only to the away phone.
    assert_eq!(to, vec!["bob@localhost/desk", "bob@localhost/phone"]);
    let phone = &notes
        .iter()
        .find(|(t, _)| t == "bob@localhost/phone")
        .expect("phone")
        .1;
    let text = phone
        .child("body", NS_CLIENT)
        .map(Element::text)
        .expect("body");
    assert!(
        text.contains("w1") && text.contains("21") && text.contains("sunny"),
        "{text}"
    );
    let desk = &notes
        .iter()
        .find(|(t, _)| t == "bob@localhost/desk")
        .expect("desk")
        .1;
    assert!(desk.child("body", NS_CLIENT).is_none());
    // Unknown show value and bad collection options are refused.
    for (k, v, want) in [
        (
            "pubsub#show-values",
            "sleepy",
            ("bad-request", "invalid-options"),
        ),
        (
            "pubsub#subscription_type",
            "everything",
            ("bad-request", "invalid-options"),
        ),
        (
            "pubsub#subscription_depth",
            "-1",
            ("bad-request", "invalid-options"),
        ),
        (
            "pubsub#digest_frequency",
            "1000",
            ("not-acceptable", "unsupported"),
        ),
    ] {
        let body = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
            form(FORM_SUBSCRIBE_OPTIONS, &[(k, v)])
        );
        assert_eq!(
            w.err(CAROL, "set", &body),
            (want.0.into(), want.1.into()),
            "{k}"
        );
    }
}

#[test]
fn xep0060_12_x_item_expire_deletes_items_on_the_timer() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#item_expire", "10")]);
    w.create(
        ALICE,
        "quiet",
        &[("pubsub#item_expire", "10"), ("pubsub#notify_retract", "0")],
    );
    w.subscribe(BOB, "n", BOB);
    w.subscribe(BOB, "quiet", BOB);
    let t0 = w.now + 1000;
    w.publish(ALICE, "n", Some("old"), P);
    w.publish(ALICE, "quiet", Some("q"), P);
    w.now += 5000;
    let t1 = w.now + 1000;
    w.publish(ALICE, "n", Some("new"), P);
    assert_eq!(w.engine.next_deadline(), Some(t0 + 10_000));
    w.now = t0 + 11_000; // both `old` and the quiet node's `q` (published 1 s later)
    let out = w.tick();
    let retracted: Vec<String> = out
        .iter()
        .filter_map(|(_, m)| m.child("event", NS_PUBSUB_EVENT))
        .filter_map(|e| e.child("items", NS_PUBSUB_EVENT))
        .filter_map(|i| i.child("retract", NS_PUBSUB_EVENT))
        .filter_map(|r| r.attr("id").map(str::to_owned))
        .collect();
    assert_eq!(
        retracted,
        vec!["old".to_owned()],
        "only notify_retract nodes: {out:?}"
    );
    assert_eq!(w.engine.next_deadline(), Some(t1 + 10_000));
    // Deleted from the store, not only hidden.
    w.restart();
    assert_eq!(w.store.pubsub_load().expect("load").items.len(), 1);
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["new".to_owned()]);
    assert!(w.item_ids(BOB, "quiet", "").is_empty());
}

#[test]
fn xep0060_16_4_4_notify_sub_purge_offline_and_presence_based_delivery() {
    let mut w = World::new();
    w.create(
        ALICE,
        "n",
        &[
            ("pubsub#notify_sub", "1"),
            ("pubsub#purge_offline", "1"),
            ("pubsub#presence_based_delivery", "1"),
            ("pubsub#publish_model", "open"),
        ],
    );
    // presence_based_delivery: Carol's full JID gets nothing until it is available.
    w.subscribe(CAROL, "n", CAROL);
    let (_, notes) = w.publish(ALICE, "n", Some("x"), P);
    assert!(notes.is_empty(), "{notes:?}");
    w.online(CAROL, "dnd");
    let (_, notes) = w.publish(ALICE, "n", Some("x"), P);
    assert_eq!(notes.len(), 1);
    w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='n'/></pubsub>"),
    );
    w.ok(
        CAROL,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='n' jid='{CAROL}'/></pubsub>"),
    );
    let out = w.subscribe(BOB, "n", BOB);
    let sub = out
        .iter()
        .find(|(t, _)| t == "alice@localhost")
        .and_then(|(_, m)| m.child("event", NS_PUBSUB_EVENT))
        .and_then(|e| e.child("subscription", NS_PUBSUB_EVENT))
        .expect("owner told of the subscription");
    assert_eq!(
        (sub.attr("jid"), sub.attr("subscription")),
        (Some(BOB), Some("subscribed"))
    );
    let (_, out) = w.ok(
        BOB,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='n' jid='{BOB}'/></pubsub>"),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "alice@localhost");
    w.subscribe(BOB, "n", BOB);
    // Two publishers online; the node is purged only when the last goes offline.
    w.online(ALICE, "online");
    w.online(BOB, "online");
    w.publish(ALICE, "n", Some("a"), P);
    w.publish(CAROL, "n", Some("c"), P);
    assert!(w.unavailable(ALICE, true).is_empty());
    assert_eq!(w.item_ids(BOB, "n", "").len(), 2);
    let out = w.unavailable(CAROL, true);
    assert!(
        out.iter()
            .filter_map(|(_, m)| m.child("event", NS_PUBSUB_EVENT))
            .any(|e| e.child("purge", NS_PUBSUB_EVENT).is_some()),
        "{out:?}"
    );
    w.restart();
    assert!(w.item_ids(BOB, "n", "").is_empty());
}

#[test]
fn subscription_rows_without_subid_get_one_at_start() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    // A row as the first format wrote it: key `node 00 jid`.
    w.store
        .pubsub_apply(&[PubsubOp::PutSubscription(
            "n".into(),
            BOB.into(),
            SubscriptionRecord {
                state: 3,
                deliver: true,
                ..SubscriptionRecord::default()
            },
        )])
        .expect("legacy row");
    w.restart();
    let snap = w.store.pubsub_load().expect("load");
    assert_eq!(snap.subscriptions.len(), 1);
    assert!(!snap.subscriptions[0].2.subid.is_empty());
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert_eq!(notes.len(), 1);
    w.restart();
    assert_eq!(w.store.pubsub_load().expect("load").subscriptions.len(), 1);
}

#[test]
fn xep0082_date_times_parse_and_round_trip() {
    for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_799_999] {
        assert_eq!(parse_xep0082(&xep0082(ms)), Some(ms));
    }
    assert_eq!(
        parse_xep0082("2024-02-29T12:00:00+02:00"),
        parse_xep0082("2024-02-29T10:00:00Z")
    );
    assert_eq!(
        parse_xep0082("2024-02-29T10:00:00.5Z"),
        parse_xep0082("2024-02-29T10:00:00Z").map(|m| m + 500)
    );
    for bad in [
        "",
        "2024-02-29",
        "2024-13-01T00:00:00Z",
        "2024-02-29T10:00:00",
        "x024-02-29T10:00:00Z",
        "2024-02-29T10:00:00.Z",
        "2024-02-29T10:00:00+0\u{e9}00",
        "2024-02-29T10:00:00\u{e9}",
        "2024-02-29\u{e9}10:00:00Z",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
    ] {
        assert_eq!(parse_xep0082(bad), None, "{bad}");
    }
}

#[test]
fn xep0060_4_1_publishers_may_purge_publish_only_may_not() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'><affiliation jid='bob@localhost' affiliation='publisher'/><affiliation jid='carol@localhost' affiliation='publish-only'/></affiliations></pubsub>"),
    );
    w.publish(BOB, "n", Some("b"), P);
    let purge = format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='n'/></pubsub>");
    assert_eq!(w.err(CAROL, "set", &purge).0, "forbidden");
    assert_eq!(w.err(EVE, "set", &purge).0, "forbidden");
    assert_eq!(w.item_ids(ALICE, "n", "").len(), 1);
    w.ok(BOB, "set", &purge);
    assert!(w.item_ids(ALICE, "n", "").is_empty());
}

#[test]
fn xep0060_12_9_itemreply_none_omits_the_publisher() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#itemreply", "none")]);
    w.create(ALICE, "p", &[]);
    w.subscribe(BOB, "n", BOB);
    w.subscribe(BOB, "p", BOB);
    let (_, notes) = w.publish(ALICE, "n", Some("i"), P);
    let item = |m: &Element| {
        event(m)
            .child("items", NS_PUBSUB_EVENT)
            .and_then(|i| i.child("item", NS_PUBSUB_EVENT))
            .expect("item")
            .clone()
    };
    assert_eq!(item(&notes[0].1).attr("publisher"), None);
    let (_, notes) = w.publish(ALICE, "p", Some("i"), P);
    assert_eq!(item(&notes[0].1).attr("publisher"), Some("alice@localhost"));
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='n'/></pubsub>"),
    );
    let it = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("items", NS_PUBSUB))
        .and_then(|i| i.child("item", NS_PUBSUB))
        .expect("item");
    assert_eq!(it.attr("publisher"), None);
}

// ---------------------------------------------------------------- XEP-0248 collections

/// The SHIM `Collection` header of a notification, if any.
fn collection_header(m: &Element) -> Option<String> {
    m.child("headers", NS_SHIM).and_then(|h| {
        h.elements()
            .find(|e| e.attr("name") == Some("Collection"))
            .map(Element::text)
    })
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
    fn config_of(&mut self, from: &str, node: &str) -> HashMap<String, Vec<String>> {
        let (r, _) = self.ok(
            from,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='{node}'/></pubsub>"),
        );
        let x = r
            .child("pubsub", NS_PUBSUB_OWNER)
            .and_then(|p| p.child("configure", NS_PUBSUB_OWNER))
            .and_then(find_form)
            .expect("form");
        form_fields(x).into_iter().collect()
    }

    fn configure(&mut self, from: &str, node: &str, body: &str) -> Vec<(String, Element)> {
        self.iq(
            from,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='{node}'>{body}</configure></pubsub>"
            ),
        )
    }

    fn assoc(
        &mut self,
        from: &str,
        verb: &str,
        parent: &str,
        child: &str,
    ) -> Vec<(String, Element)> {
        self.iq(
            from,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><collection node='{parent}'><{verb} node='{child}'/></collection></pubsub>"
            ),
        )
    }

    fn disco_children(&mut self, node: Option<&str>) -> Vec<String> {
        let n = node.map(|n| format!(" node='{n}'")).unwrap_or_default();
        let (r, _) = self.ok(
            ALICE,
            "get",
            &format!("<query xmlns='{NS_DISCO_ITEMS}'{n}/>"),
        );
        r.child("query", NS_DISCO_ITEMS)
            .map(|q| {
                q.elements()
                    .filter_map(|i| i.attr("node").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
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

fn config_form(fields: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{FORM_NODE_CONFIG}</value></field>{fields}</x>"
    )
}

#[test]
fn xep0248_create_collection_default_disco_and_publish_refused() {
    let mut w = World::new();
    w.collection(ALICE, "blogs", &[]);
    w.create(ALICE, "musings", &[("pubsub#collection", "blogs")]);
    // Owner use case "create a new collection node"; `<default type='collection'/>`.
    let (r, _) = w.ok(
        ALICE,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><default type='collection'/></pubsub>"),
    );
    let x = r
        .child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.child("default", NS_PUBSUB_OWNER))
        .and_then(find_form)
        .expect("default form");
    let f: HashMap<String, Vec<String>> = form_fields(x).into_iter().collect();
    assert_eq!(f["pubsub#node_type"], vec!["collection".to_owned()]);
    assert!(f.contains_key("pubsub#children_max"));
    assert!(!f.contains_key("pubsub#max_items"), "no item fields");
    // Discover nodes: the root lists first-level nodes, a collection its children.
    assert_eq!(w.disco_children(None), vec!["blogs".to_owned()]);
    assert_eq!(w.disco_children(Some("blogs")), vec!["musings".to_owned()]);
    let (r, _) = w.ok(
        ALICE,
        "get",
        &format!("<query xmlns='{NS_DISCO_INFO}' node='blogs'/>"),
    );
    let q = r.child("query", NS_DISCO_INFO).expect("query");
    let id = q.child("identity", NS_DISCO_INFO).expect("identity");
    assert_eq!(id.attr("type"), Some("collection"));
    let meta: HashMap<String, Vec<String>> = form_fields(q.child("x", NS_DATA).expect("meta"))
        .into_iter()
        .collect();
    assert_eq!(meta["pubsub#node_type"], vec!["collection".to_owned()]);
    // Preliminaries: a collection MUST NOT contain items.
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='blogs'><item>{P}</item></publish></pubsub>")
        ),
        ("feature-not-implemented".into(), "unsupported".into())
    );
    // Creating under a leaf: not-allowed + invalid-options.
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><create node='x'/><configure>{}</configure></pubsub>",
        form(FORM_NODE_CONFIG, &[("pubsub#collection", "musings")])
    );
    assert_eq!(
        w.err(ALICE, "set", &body),
        ("not-allowed".into(), "invalid-options".into())
    );
}

#[test]
fn xep0248_collection_and_children_kept_consistent_both_ways() {
    let mut w = World::new();
    w.collection(ALICE, "c1", &[]);
    w.collection(ALICE, "c2", &[]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><create node='n'/><configure>{}</configure></pubsub>",
        config_form(&multi("pubsub#collection", &["c1", "c2"]))
    );
    w.ok(ALICE, "set", &body);
    assert_eq!(w.config_of(ALICE, "c1")["pubsub#children"], vec!["n"]);
    assert_eq!(w.config_of(ALICE, "c2")["pubsub#children"], vec!["n"]);
    assert_eq!(
        w.config_of(ALICE, "n")["pubsub#collection"],
        vec!["c1", "c2"]
    );
    // Emptying c2's children removes c2 from n's parents.
    let out = w.configure(ALICE, "c2", &config_form(&multi("pubsub#children", &[])));
    assert_eq!(out[0].1.attr("type"), Some("result"));
    assert_eq!(w.config_of(ALICE, "n")["pubsub#collection"], vec!["c1"]);
    // Setting n's parents to none attaches it to the root, which the form shows.
    let out = w.configure(ALICE, "n", &config_form(&multi("pubsub#collection", &[""])));
    assert_eq!(out[0].1.attr("type"), Some("result"));
    assert_eq!(w.config_of(ALICE, "n")["pubsub#collection"], vec![""]);
    assert!(w.config_of(ALICE, "c1")["pubsub#children"].is_empty());
    // Children set on the collection side, persisted through a restart.
    w.configure(
        ALICE,
        "c2",
        &config_form(&multi("pubsub#children", &["n", "c1"])),
    );
    w.restart();
    assert_eq!(w.config_of(ALICE, "c2")["pubsub#children"], vec!["c1", "n"]);
    assert_eq!(w.config_of(ALICE, "n")["pubsub#collection"], vec!["c2"]);
    assert_eq!(w.disco_children(None), vec!["c2".to_owned()]);
}

#[test]
fn xep0248_associate_dissociate_requests_and_events() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[]);
    w.create(ALICE, "n", &[]);
    // A `nodes` subscriber (the default type) of c.
    w.subscribe(BOB, "c", BOB);
    let out = w.assoc(ALICE, "associate", "c", "n");
    assert_eq!(out[0].1.attr("type"), Some("result"));
    let ev: Vec<&Element> = out[1..]
        .iter()
        .filter(|(t, _)| t == BOB)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(ev.len(), 1, "{out:?}");
    let coll = event(ev[0])
        .child("collection", NS_PUBSUB_EVENT)
        .expect("collection");
    assert_eq!(coll.attr("node"), Some("c"));
    assert_eq!(
        coll.child("associate", NS_PUBSUB_EVENT)
            .and_then(|a| a.attr("node")),
        Some("n")
    );
    assert_eq!(w.config_of(ALICE, "n")["pubsub#collection"], vec!["c"]);
    let out = w.assoc(ALICE, "dissociate", "c", "n");
    assert_eq!(out[0].1.attr("type"), Some("result"));
    let m = &out
        .iter()
        .find(|(t, _)| t == BOB)
        .expect("dissociate event")
        .1;
    assert!(
        event(m)
            .child("collection", NS_PUBSUB_EVENT)
            .and_then(|c| c.child("dissociate", NS_PUBSUB_EVENT))
            .is_some()
    );
    // Node is not associated: bad-request.
    let out = w.assoc(ALICE, "dissociate", "c", "n");
    assert_eq!(out[0].1.attr("type"), Some("error"));
    assert_eq!(w.err(ALICE, "set", &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><collection node='c'><dissociate node='n'/></collection></pubsub>")).0, "bad-request");
    // Unknown nodes: item-not-found.
    assert_eq!(w.err(ALICE, "set", &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><collection node='c'><associate node='nope'/></collection></pubsub>")).0, "item-not-found");
}

#[test]
fn xep0248_cycle_not_allowed() {
    let mut w = World::new();
    w.collection(ALICE, "a", &[]);
    w.collection(ALICE, "b", &[("pubsub#collection", "a")]);
    w.collection(ALICE, "c", &[("pubsub#collection", "b")]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB_OWNER}'><collection node='c'><associate node='a'/></collection></pubsub>"
    );
    assert_eq!(
        w.err(ALICE, "set", &body),
        ("not-allowed".into(), "invalid-options".into())
    );
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='a'>{}</configure></pubsub>",
        form(FORM_NODE_CONFIG, &[("pubsub#collection", "c")])
    );
    assert_eq!(
        w.err(ALICE, "set", &body),
        ("not-allowed".into(), "invalid-options".into())
    );
    // Nothing changed.
    assert_eq!(w.config_of(ALICE, "a")["pubsub#collection"], vec![""]);
    assert_eq!(w.config_of(ALICE, "a")["pubsub#children"], vec!["b"]);
}

#[test]
fn xep0248_children_max_exceeded() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[("pubsub#children_max", "1")]);
    w.create(ALICE, "n1", &[("pubsub#collection", "c")]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><create node='n2'/><configure>{}</configure></pubsub>",
        form(FORM_NODE_CONFIG, &[("pubsub#collection", "c")])
    );
    // XEP-0248 "maximum number of children exceeded": not-allowed + max-nodes-exceeded.
    assert_eq!(
        w.err(ALICE, "set", &body),
        ("not-allowed".into(), "max-nodes-exceeded".into())
    );
    w.create(ALICE, "n2", &[]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB_OWNER}'><collection node='c'><associate node='n2'/></collection></pubsub>"
    );
    assert_eq!(
        w.err(ALICE, "set", &body),
        ("not-allowed".into(), "max-nodes-exceeded".into())
    );
    let out = w.configure(
        ALICE,
        "c",
        &config_form(&multi("pubsub#children", &["n1", "n2"])),
    );
    assert_eq!(out[0].1.attr("type"), Some("error"));
    assert_eq!(w.config_of(ALICE, "c")["pubsub#children"], vec!["n1"]);
    assert_eq!(w.config_of(ALICE, "c")["pubsub#children_max"], vec!["1"]);
}

#[test]
fn xep0248_association_policy_and_whitelist() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[]);
    w.create(BOB, "bobs", &[]);
    w.create(ALICE, "alices", &[]);
    // Default policy `owner`: Bob may not put his node into Alice's collection.
    let body = |c: &str, n: &str| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><collection node='{c}'><associate node='{n}'/></collection></pubsub>"
        )
    };
    assert_eq!(w.err(BOB, "set", &body("c", "bobs")).0, "forbidden");
    assert_eq!(
        w.config_of(ALICE, "c")["pubsub#children_association_policy"],
        vec!["owner"]
    );
    // Whitelisted, he may.
    let out = w.configure(
        ALICE,
        "c",
        &config_form(&format!(
            "{}{}",
            multi("pubsub#children_association_policy", &["whitelist"]),
            multi("pubsub#children_association_whitelist", &["bob@localhost"])
        )),
    );
    assert_eq!(out[0].1.attr("type"), Some("result"));
    w.ok(BOB, "set", &body("c", "bobs"));
    // But never someone else's node, even under policy `all`.
    w.collection(BOB, "bc", &[("pubsub#children_association_policy", "all")]);
    assert_eq!(w.err(CAROL, "set", &body("bc", "alices")).0, "forbidden");
    assert_eq!(w.err(BOB, "set", &body("bc", "alices")).0, "forbidden");
    w.ok(ALICE, "set", &body("bc", "alices"));
}

#[test]
fn xep0248_fanout_dedup_two_paths() {
    let mut w = World::new();
    w.collection(ALICE, "top", &[]);
    w.collection(ALICE, "c1", &[("pubsub#collection", "top")]);
    w.collection(ALICE, "c2", &[("pubsub#collection", "top")]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><create node='leaf'/><configure>{}</configure></pubsub>",
        config_form(&multi("pubsub#collection", &["c1", "c2"]))
    );
    w.ok(ALICE, "set", &body);
    let opts = [
        ("pubsub#subscription_type", "items"),
        ("pubsub#subscription_depth", "all"),
    ];
    w.subscribe_with(BOB, "top", &opts);
    w.subscribe_with(BOB, "c1", &[("pubsub#subscription_type", "items")]);
    w.subscribe_with(BOB, "c2", &[("pubsub#subscription_type", "items")]);
    // Carol subscribes to the leaf itself and to top: the leaf's own message only.
    w.subscribe(CAROL, "leaf", CAROL);
    w.subscribe_with(CAROL, "top", &opts);
    let (_, out) = w.publish(ALICE, "leaf", Some("i1"), P);
    let bob: Vec<&Element> = out
        .iter()
        .filter(|(t, _)| t == BOB)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(bob.len(), 1, "one message per subscriber: {out:?}");
    assert_eq!(
        items_node(bob[0]).as_deref(),
        Some("leaf"),
        "the leaf's node attribute"
    );
    let via = collection_header(bob[0]).expect("Collection header");
    assert!(via == "c1" || via == "c2", "the nearest collection: {via}");
    let carol: Vec<&Element> = out
        .iter()
        .filter(|(t, _)| t == CAROL)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(carol.len(), 1);
    assert_eq!(
        collection_header(carol[0]),
        None,
        "the leaf's own notification"
    );
    // Retractions travel the same way.
    let out = w.iq(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><retract node='leaf' notify='1'><item id='i1'/></retract></pubsub>"),
    );
    let bob: Vec<&Element> = out
        .iter()
        .filter(|(t, _)| t == BOB)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(bob.len(), 1);
    assert!(
        event(bob[0])
            .child("items", NS_PUBSUB_EVENT)
            .and_then(|i| i.child("retract", NS_PUBSUB_EVENT))
            .is_some()
    );
    // A second items subscription to the same collection: conflict.
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='top' jid='{BOB}'/><options>{}</options></pubsub>",
        form(
            FORM_SUBSCRIBE_OPTIONS,
            &[("pubsub#subscription_type", "items")]
        )
    );
    assert_eq!(w.err(BOB, "set", &body).0, "conflict");
}

#[test]
fn xep0248_subscription_depth_and_type() {
    let mut w = World::new();
    w.collection(ALICE, "a", &[]);
    w.collection(ALICE, "b", &[("pubsub#collection", "a")]);
    w.create(ALICE, "deep", &[("pubsub#collection", "b")]);
    w.create(ALICE, "near", &[("pubsub#collection", "a")]);
    w.subscribe_with(BOB, "a", &[("pubsub#subscription_type", "items")]);
    w.subscribe_with(
        CAROL,
        "a",
        &[
            ("pubsub#subscription_type", "items"),
            ("pubsub#subscription_depth", "2"),
        ],
    );
    // A `nodes` subscriber takes no item events.
    w.subscribe("dave@localhost/d", "a", "dave@localhost/d");
    let (_, out) = w.publish(ALICE, "near", None, P);
    let mut to: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, vec![BOB, CAROL]);
    let (_, out) = w.publish(ALICE, "deep", None, P);
    let to: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(to, vec![CAROL], "depth 1 does not reach two levels down");
    assert_eq!(collection_header(&out[0].1).as_deref(), Some("a"));
    // The options form shows the collection options.
    let (r, _) = w.ok(
        CAROL,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><options node='a' jid='{CAROL}'/></pubsub>"),
    );
    let x = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("options", NS_PUBSUB))
        .and_then(find_form)
        .expect("form");
    let f: HashMap<String, Vec<String>> = form_fields(x).into_iter().collect();
    assert_eq!(f["pubsub#subscription_type"], vec!["items"]);
    assert_eq!(f["pubsub#subscription_depth"], vec!["2"]);
    // Persisted with the subscription.
    w.restart();
    let (_, out) = w.publish(ALICE, "deep", None, P);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, CAROL);
}

#[test]
fn xep0248_security_leaf_access_also_checked() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[]);
    w.create(
        ALICE,
        "secret",
        &[
            ("pubsub#collection", "c"),
            ("pubsub#access_model", "whitelist"),
        ],
    );
    w.create(ALICE, "public", &[("pubsub#collection", "c")]);
    w.subscribe_with(BOB, "c", &[("pubsub#subscription_type", "items")]);
    let (_, out) = w.publish(ALICE, "secret", None, P);
    assert!(out.is_empty(), "Bob may not read the leaf: {out:?}");
    let (_, out) = w.publish(ALICE, "public", None, P);
    assert_eq!(out.len(), 1);
    // Made a member of the leaf, he gets it.
    w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='secret'><affiliation jid='bob@localhost' affiliation='member'/></affiliations></pubsub>"),
    );
    let (_, out) = w.publish(ALICE, "secret", None, P);
    assert_eq!(out.len(), 1);
    // Items retrieval on the collection leaves out leaves the requester cannot read.
    w.publish(ALICE, "secret", Some("s"), P);
    let (r, _) = w.ok(
        CAROL,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c'/></pubsub>"),
    );
    let nodes: Vec<&str> = r
        .child("pubsub", NS_PUBSUB)
        .map(|p| p.elements().filter_map(|i| i.attr("node")).collect())
        .unwrap_or_default();
    assert_eq!(nodes, vec!["public"]);
}

#[test]
fn xep0248_delete_collection_reparents_to_root() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[]);
    w.collection(ALICE, "other", &[]);
    w.create(ALICE, "only", &[("pubsub#collection", "c")]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><create node='both'/><configure>{}</configure></pubsub>",
        config_form(&multi("pubsub#collection", &["c", "other"]))
    );
    w.ok(ALICE, "set", &body);
    // A root subscriber of type nodes hears that `only` went back to the root.
    w.ok(
        BOB,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe jid='{BOB}'/></pubsub>"),
    );
    let out = w.iq(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><delete node='c'/></pubsub>"),
    );
    assert_eq!(out[0].1.attr("type"), Some("result"));
    let assoc: Vec<String> = out
        .iter()
        .filter(|(t, _)| t == BOB)
        .filter_map(|(_, m)| {
            let c = event(m).child("collection", NS_PUBSUB_EVENT)?;
            let a = c.child("associate", NS_PUBSUB_EVENT)?;
            Some(format!("{}<-{}", c.attr("node")?, a.attr("node")?))
        })
        .collect();
    assert_eq!(assoc, vec!["<-only".to_owned()]);
    assert_eq!(w.config_of(ALICE, "only")["pubsub#collection"], vec![""]);
    assert_eq!(
        w.config_of(ALICE, "both")["pubsub#collection"],
        vec!["other"]
    );
    w.restart();
    assert_eq!(w.config_of(ALICE, "only")["pubsub#collection"], vec![""]);
    let mut top = w.disco_children(None);
    top.sort();
    assert_eq!(top, vec!["only".to_owned(), "other".to_owned()]);
    // The root collection: not deletable, not configurable.
    for body in [
        format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><delete node=''/></pubsub>"),
        format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node=''/></pubsub>"),
    ] {
        assert_eq!(w.err("admin@localhost/x", "set", &body).0, "not-allowed");
    }
}

#[test]
fn xep0248_items_on_collection_newest_first_rsm() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[]);
    w.create(ALICE, "x", &[("pubsub#collection", "c")]);
    w.create(ALICE, "y", &[("pubsub#collection", "c")]);
    w.publish(ALICE, "x", Some("x1"), P);
    w.publish(ALICE, "y", Some("y1"), P);
    w.publish(ALICE, "y", Some("y2"), P);
    w.publish(ALICE, "x", Some("x2"), P);
    let runs = |r: &Element| -> Vec<(String, Vec<String>)> {
        r.child("pubsub", NS_PUBSUB)
            .map(|p| {
                p.elements()
                    .filter(|e| e.name == "items")
                    .map(|i| {
                        (
                            i.attr("node").unwrap_or("").to_owned(),
                            i.elements()
                                .filter_map(|e| e.attr("id").map(str::to_owned))
                                .collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c'/></pubsub>"),
    );
    // One <items/> per run of the same leaf, newest first.
    assert_eq!(
        runs(&r),
        vec![
            ("x".to_owned(), vec!["x2".to_owned()]),
            ("y".to_owned(), vec!["y2".to_owned(), "y1".to_owned()]),
            ("x".to_owned(), vec!["x1".to_owned()]),
        ]
    );
    // RSM: two per page, then the rest after the last one.
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c'/><set xmlns='{NS_RSM}'><max>2</max></set></pubsub>"),
    );
    assert_eq!(
        runs(&r),
        vec![
            ("x".to_owned(), vec!["x2".to_owned()]),
            ("y".to_owned(), vec!["y2".to_owned()]),
        ]
    );
    let rsm = rsm_of(&r).expect("rsm");
    assert_eq!(rsm.3, "4");
    let last = rsm.2.expect("last");
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c'/><set xmlns='{NS_RSM}'><max>2</max><after>{last}</after></set></pubsub>"),
    );
    assert_eq!(
        runs(&r),
        vec![
            ("y".to_owned(), vec!["y1".to_owned()]),
            ("x".to_owned(), vec!["x1".to_owned()]),
        ]
    );
    // max_items on a collection: the newest n overall.
    let (r, _) = w.ok(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c' max_items='1'/></pubsub>"),
    );
    assert_eq!(runs(&r), vec![("x".to_owned(), vec!["x2".to_owned()])]);
    let (c, _) = w.err(
        BOB,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c'/><set xmlns='{NS_RSM}'><after>nope</after></set></pubsub>"),
    );
    assert_eq!(c, "item-not-found");
}

#[test]
fn xep0248_path_ids_create_parent_collections() {
    let mut w = World::new();
    // Operator subscribes to `sensors` once it exists; the device's first publish
    // creates sensors and sensors/kitchen.
    w.publish(DEVICE, "sensors/kitchen/temp", Some("t1"), P);
    assert_eq!(
        w.config_of(DEVICE, "sensors")["pubsub#node_type"],
        vec!["collection"]
    );
    assert_eq!(
        w.config_of(DEVICE, "sensors/kitchen/temp")["pubsub#collection"],
        vec!["sensors/kitchen"]
    );
    w.subscribe_with(
        BOB,
        "sensors",
        &[
            ("pubsub#subscription_type", "items"),
            ("pubsub#subscription_depth", "all"),
        ],
    );
    let (_, out) = w.publish(DEVICE, "sensors/garage/temp", Some("t2"), P);
    let bob: Vec<&Element> = out
        .iter()
        .filter(|(t, _)| t == BOB)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(bob.len(), 1, "{out:?}");
    assert_eq!(items_node(bob[0]).as_deref(), Some("sensors/garage/temp"));
    assert_eq!(collection_header(bob[0]).as_deref(), Some("sensors"));
    // Another account may not grow Alice's... the device's tree (owner policy).
    let body = format!("<pubsub xmlns='{NS_PUBSUB}'><create node='sensors/evil'/></pubsub>");
    assert_eq!(w.err(CAROL, "set", &body).0, "forbidden");
    // URIs (an empty segment) and paths through a leaf are created flat.
    w.create(ALICE, "http://jabber.org/protocol/tune", &[]);
    w.create(ALICE, "plain", &[]);
    w.create(ALICE, "plain/sub", &[]);
    let mut top = w.disco_children(None);
    top.sort();
    assert_eq!(
        top,
        vec![
            "http://jabber.org/protocol/tune",
            "plain",
            "plain/sub",
            "sensors"
        ]
    );
    // Off: flat.
    let mut config = Config::default();
    config.pubsub.path_collections = false;
    let mut w = World::with_config(config);
    w.create(ALICE, "a/b", &[]);
    assert_eq!(w.disco_children(None), vec!["a/b".to_owned()]);
}

#[test]
fn xep0248_node_type_change_and_root_items_subscription() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.publish(ALICE, "n", Some("i"), P);
    // Leaf → collection purges the items; collection → leaf is refused.
    let out = w.configure(
        ALICE,
        "n",
        &form(FORM_NODE_CONFIG, &[("pubsub#node_type", "collection")]),
    );
    assert_eq!(out[0].1.attr("type"), Some("result"));
    assert_eq!(
        w.config_of(ALICE, "n")["pubsub#node_type"],
        vec!["collection"]
    );
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
        form(FORM_NODE_CONFIG, &[("pubsub#node_type", "leaf")])
    );
    assert_eq!(
        w.err(ALICE, "set", &body),
        ("not-allowed".into(), "invalid-options".into())
    );
    w.create(ALICE, "leaf", &[("pubsub#collection", "n")]);
    // A root subscriber with type items and depth all sees every leaf of the service.
    w.ok(
        BOB,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe jid='{BOB}'/><options>{}</options></pubsub>",
            form(
                FORM_SUBSCRIBE_OPTIONS,
                &[
                    ("pubsub#subscription_type", "items"),
                    ("pubsub#subscription_depth", "all")
                ]
            )
        ),
    );
    let (_, out) = w.publish(ALICE, "leaf", None, P);
    assert_eq!(out.len(), 1);
    assert_eq!(collection_header(&out[0].1).as_deref(), Some(""));
    w.restart();
    let (_, out) = w.publish(ALICE, "leaf", None, P);
    assert_eq!(out.len(), 1, "the root subscription survives a restart");
}

const DEVICE: &str = "device@localhost/d";

// ---------------------------------------------------------------- XEP-0163 PEP

const ALICE_B: &str = "alice@localhost/b";
const TUNE: &str = "http://jabber.org/protocol/tune";
const TUNE_P: &str =
    "<tune xmlns='http://jabber.org/protocol/tune'><title>Yesterday</title></tune>";

impl World {
    /// An IQ to `to` (an account's bare JID; `None`: no `to`, the sender's own account).
    fn pep_iq(
        &mut self,
        from: &str,
        to: Option<&str>,
        ty: &str,
        body: &str,
    ) -> Vec<(String, Element)> {
        self.n += 1;
        self.now += 1000;
        let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
        let xml = format!(
            "<iq type='{ty}' id='p{}' from='{from}'{to}>{body}</iq>",
            self.n
        );
        let iq = Element::parse(&xml).expect("test stanza parses");
        let from = Jid::parse(from).expect("jid");
        let out = self
            .engine
            .handle_iq(&self.rosters, &self.store, &from, &iq, self.now);
        parse_out(out)
    }

    /// The owner publishes to its own PEP node (no `to`), with optional publish-options.
    fn pep_publish(
        &mut self,
        from: &str,
        node: &str,
        id: &str,
        payload: &str,
        options: &[(&str, &str)],
    ) -> Vec<(String, Element)> {
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

#[test]
fn xep0163_5_auto_create_defaults_and_6_disco_filtered() {
    let mut w = World::new();
    let out = w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    result(&out);
    assert_eq!(
        w.engine
            .pep_node_count(&Jid::parse("alice@localhost").expect("jid")),
        1
    );
    assert_eq!(w.engine.node_count(), 0, "not on the generic service");
    let c = w.pep_config(ALICE, TUNE);
    assert_eq!(c["pubsub#access_model"], vec!["presence"]);
    assert_eq!(c["pubsub#max_items"], vec!["1"]);
    assert_eq!(
        c["pubsub#send_last_published_item"],
        vec!["on_sub_and_presence"]
    );
    // disco#items on the account: only nodes the requester may read.
    let items = |w: &mut World, from: &str| -> Vec<String> {
        let out = w.pep_iq(
            from,
            Some("alice@localhost"),
            "get",
            &format!("<query xmlns='{NS_DISCO_ITEMS}'/>"),
        );
        let r = result(&out);
        r.child("query", NS_DISCO_ITEMS)
            .map(|q| {
                q.elements()
                    .filter_map(|i| i.attr("node").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(items(&mut w, BOB).is_empty());
    w.presence_sub("alice@localhost", "bob@localhost", true);
    assert_eq!(items(&mut w, BOB), vec![TUNE.to_owned()]);
    // Others may not publish, create or configure.
    let out = w.pep_iq(BOB, Some("alice@localhost"), "set", &format!("<pubsub xmlns='{NS_PUBSUB}'><publish node='{TUNE}'><item>{TUNE_P}</item></publish></pubsub>"));
    assert_eq!(error_of(&out).0, "forbidden");
    let out = w.pep_iq(
        BOB,
        Some("alice@localhost"),
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><publish node='x'><item>{TUNE_P}</item></publish></pubsub>"
        ),
    );
    assert_eq!(error_of(&out).0, "item-not-found");
    // PEP services are flat.
    let out = w.pep_iq(
        ALICE,
        None,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><create node='c'/><configure>{}</configure></pubsub>",
            form(FORM_NODE_CONFIG, &[("pubsub#node_type", "collection")])
        ),
    );
    assert_eq!(
        error_of(&out),
        ("feature-not-implemented".into(), "unsupported".into())
    );
    // Items retrieval by a contact with access, from the account's JID.
    let out = w.pep_iq(
        BOB,
        Some("alice@localhost"),
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='{TUNE}'/></pubsub>"),
    );
    assert_eq!(items_of(result(&out)), vec!["t1"]);
    let out = w.pep_iq(
        CAROL,
        Some("alice@localhost"),
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='{TUNE}'/></pubsub>"),
    );
    assert_eq!(
        error_of(&out),
        (
            "not-authorized".into(),
            "presence-subscription-required".into()
        )
    );
}

#[test]
fn xep0163_4_3_1_owner_resources_and_contacts_notified() {
    let mut w = World::new();
    w.interested(ALICE, &[TUNE]);
    w.interested(ALICE_B, &[TUNE]);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[TUNE]);
    // Carol has a subscription but no +notify; Dave wants it without a subscription.
    w.presence_sub("alice@localhost", "carol@localhost", true);
    w.online(CAROL, "online");
    w.interested("dave@localhost/d", &[TUNE]);
    let out = w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    result(&out);
    let mut to: Vec<&str> = out[1..].iter().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, vec![ALICE, ALICE_B, BOB]);
    for (_, m) in &out[1..] {
        assert_eq!(
            m.attr("from"),
            Some("alice@localhost"),
            "from the owner's bare JID"
        );
        assert_eq!(m.attr("type"), Some("headline"));
        assert_eq!(items_node(m).as_deref(), Some(TUNE));
    }
    // Retractions and purges reach the same set.
    let out = w.pep_iq(ALICE, None, "set", &format!("<pubsub xmlns='{NS_PUBSUB}'><retract node='{TUNE}' notify='1'><item id='t1'/></retract></pubsub>"));
    result(&out);
    assert_eq!(out.len(), 4);
    // An explicit subscription is not notified twice.
    w.pep_publish(ALICE, TUNE, "t2", TUNE_P, &[]);
    let out = w.pep_iq(
        BOB,
        Some("alice@localhost"),
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{TUNE}' jid='{BOB}'/></pubsub>"),
    );
    result(&out);
    let out = w.pep_publish(ALICE, TUNE, "t3", TUNE_P, &[]);
    assert_eq!(out.iter().filter(|(t, _)| t == BOB).count(), 1, "{out:?}");
}

#[test]
fn xep0163_4_3_4_last_item_on_initial_presence_only() {
    let mut w = World::new();
    w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[TUNE]);
    let bob = Jid::parse(BOB).expect("jid");
    // Initial presence: every interest is new, so the last item comes, with a delay stamp.
    let added: Vec<Rc<str>> = vec![Rc::from(TUNE)];
    let out = parse_out(
        w.engine
            .pep_interest_added(&w.rosters, &w.store, &bob, &added, w.now),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.attr("from"), Some("alice@localhost"));
    assert!(out[0].1.child("delay", NS_DELAY).is_some());
    // A presence update with the same caps adds nothing: nothing is sent (no storm).
    let out = w
        .engine
        .pep_interest_added(&w.rosters, &w.store, &bob, &[], w.now);
    assert!(out.is_empty());
    // Without a presence subscription, nothing.
    let carol = Jid::parse(CAROL).expect("jid");
    w.interested(CAROL, &[TUNE]);
    let out = w
        .engine
        .pep_interest_added(&w.rosters, &w.store, &carol, &added, w.now);
    assert!(out.is_empty());
    // The owner's own new resource gets its own last item.
    w.interested(ALICE_B, &[TUNE]);
    let alice_b = Jid::parse(ALICE_B).expect("jid");
    let out = w
        .engine
        .pep_interest_added(&w.rosters, &w.store, &alice_b, &added, w.now);
    assert_eq!(out.len(), 1);
}

#[test]
fn xep0163_4_3_4_caps_change_sends_only_new_nodes() {
    let mut w = World::new();
    const MOOD: &str = "http://jabber.org/protocol/mood";
    w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    w.pep_publish(
        ALICE,
        MOOD,
        "m1",
        "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>",
        &[],
    );
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[TUNE, MOOD]);
    let bob = Jid::parse(BOB).expect("jid");
    let out = parse_out(w.engine.pep_interest_added(
        &w.rosters,
        &w.store,
        &bob,
        &[Rc::from(MOOD)],
        w.now,
    ));
    assert_eq!(out.len(), 1);
    assert_eq!(items_node(&out[0].1).as_deref(), Some(MOOD));
}

#[test]
fn xep0163_7_1_access_lost_cancels_subscription() {
    let mut w = World::new();
    w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    let out = w.pep_iq(
        BOB,
        Some("alice@localhost"),
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{TUNE}' jid='bob@localhost'/></pubsub>"
        ),
    );
    result(&out);
    // Alice cancels Bob's presence subscription.
    w.presence_sub("alice@localhost", "bob@localhost", false);
    let owner = Jid::parse("alice@localhost").expect("jid");
    let contact = Jid::parse("bob@localhost").expect("jid");
    let out = parse_out(
        w.engine
            .pep_roster_changed(&w.rosters, &w.store, &owner, &contact, false, w.now),
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let sub = event(&out[0].1)
        .child("subscription", NS_PUBSUB_EVENT)
        .expect("subscription");
    assert_eq!(sub.attr("subscription"), Some("none"));
    w.online(BOB, "online");
    let out = w.pep_publish(ALICE, TUNE, "t2", TUNE_P, &[]);
    assert_eq!(out.len(), 1, "no notification to Bob: {out:?}");
    // Gaining access again sends the last item to interested resources.
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.rosters.2.insert(BOB.to_owned(), vec![TUNE.to_owned()]);
    let out = parse_out(
        w.engine
            .pep_roster_changed(&w.rosters, &w.store, &owner, &contact, true, w.now),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, BOB);
    // The cancellation survived a restart.
    w.restart();
    let out = w.pep_iq(
        BOB,
        Some("alice@localhost"),
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscriptions/></pubsub>"),
    );
    let r = result(&out);
    assert_eq!(
        r.child("pubsub", NS_PUBSUB)
            .and_then(|p| p.child("subscriptions", NS_PUBSUB))
            .map(|s| s.elements().count()),
        Some(0)
    );
}

#[test]
fn xep0223_private_storage_whitelist() {
    let mut w = World::new();
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#access_model", "whitelist"),
    ];
    let out = w.pep_publish(ALICE, "eu:siacs:conversations:private", "current", P, &opts);
    result(&out);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &["eu:siacs:conversations:private"]);
    w.interested(ALICE_B, &["eu:siacs:conversations:private"]);
    let out = w.pep_publish(ALICE, "eu:siacs:conversations:private", "current", P, &opts);
    let to: Vec<&str> = out[1..].iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(to, vec![ALICE_B], "only the owner's resources");
    let out = w.pep_iq(
        BOB,
        Some("alice@localhost"),
        "get",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><items node='eu:siacs:conversations:private'/></pubsub>"
        ),
    );
    assert_eq!(error_of(&out).0, "not-allowed");
    // XEP-0222 public storage: open.
    let out = w.pep_publish(
        ALICE,
        "urn:xmpp:microblog:0",
        "p",
        P,
        &[("pubsub#access_model", "open")],
    );
    result(&out);
    let out = w.pep_iq(
        CAROL,
        Some("alice@localhost"),
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='urn:xmpp:microblog:0'/></pubsub>"),
    );
    assert_eq!(items_of(result(&out)), vec!["p"]);
    // A precondition that does not match: conflict.
    let out = w.pep_publish(
        ALICE,
        "urn:xmpp:microblog:0",
        "p",
        P,
        &[("pubsub#access_model", "presence")],
    );
    assert_eq!(
        error_of(&out),
        ("conflict".into(), "precondition-not-met".into())
    );
}

#[test]
fn forced_config_bookmarks_whitelist() {
    let mut w = World::new();
    const BM: &str = "urn:xmpp:bookmarks:1";
    let bm = "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'/>";
    // Auto-create without options: forced whitelist.
    result(&w.pep_publish(ALICE, BM, "room@muc", bm, &[]));
    assert_eq!(
        w.pep_config(ALICE, BM)["pubsub#access_model"],
        vec!["whitelist"]
    );
    // Changing it is refused, naming the field.
    let out = w.pep_iq(
        ALICE,
        None,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='{BM}'>{}</configure></pubsub>",
            form(FORM_NODE_CONFIG, &[("pubsub#access_model", "open")])
        ),
    );
    assert_eq!(error_of(&out).0, "not-acceptable");
    // Auto-create asking for open: precondition-not-met, nothing created.
    let out = w.pep_publish(
        "carol@localhost/c",
        "storage:bookmarks",
        "current",
        P,
        &[("pubsub#access_model", "open")],
    );
    assert_eq!(
        error_of(&out),
        ("conflict".into(), "precondition-not-met".into())
    );
    assert_eq!(
        w.engine
            .pep_node_count(&Jid::parse("carol@localhost").expect("jid")),
        0
    );
    // The operator's table replaces the default.
    let mut config = Config::default();
    config.pubsub.pep_force.clear();
    let mut w = World::with_config(config);
    result(&w.pep_publish(ALICE, BM, "room@muc", bm, &[]));
    assert_eq!(
        w.pep_config(ALICE, BM)["pubsub#access_model"],
        vec!["presence"]
    );
}

#[test]
fn xep0402_max_items_max() {
    let mut w = World::new();
    const BM: &str = "urn:xmpp:bookmarks:1";
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ];
    for room in ["a@muc", "b@muc", "c@muc"] {
        let out = w.pep_publish(
            ALICE,
            BM,
            room,
            "<conference xmlns='urn:xmpp:bookmarks:1'/>",
            &opts,
        );
        result(&out);
    }
    let out = w.pep_iq(
        ALICE,
        None,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='{BM}'/></pubsub>"),
    );
    assert_eq!(items_of(result(&out)).len(), 3, "max is the PEP cap, not 1");
    // `max` compares equal to the cap it stands for, and the cap bounds explicit values.
    let mut config = Config::default();
    config.limits.pep_max_items_per_node = 2;
    let mut w = World::with_config(config);
    let out = w.pep_publish(ALICE, "n", "i", P, &[("pubsub#max_items", "5")]);
    assert_eq!(
        error_of(&out),
        ("conflict".into(), "precondition-not-met".into())
    );
    result(&w.pep_publish(ALICE, "n", "i1", P, &[("pubsub#max_items", "2")]));
    result(&w.pep_publish(ALICE, "n", "i2", P, &[("pubsub#max_items", "max")]));
}

#[test]
fn pep_nodes_stored_apart_and_old_rows_load() {
    let mut w = World::new();
    // A generic node written as before PEP existed, and a PEP node of the same name.
    w.create(ALICE, TUNE, &[]);
    w.publish(ALICE, TUNE, Some("g1"), P);
    result(&w.pep_publish(ALICE, TUNE, "p1", TUNE_P, &[]));
    let snap = w.store.pubsub_load().expect("load");
    let names: Vec<&str> = snap.nodes.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&TUNE), "generic key unchanged: {names:?}");
    assert!(names.contains(&format!("\u{1}alice@localhost\u{1}{TUNE}").as_str()));
    w.restart();
    assert_eq!(w.item_ids(BOB, TUNE, ""), vec!["g1"]);
    let out = w.pep_iq(
        ALICE,
        None,
        "get",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='{TUNE}'/></pubsub>"),
    );
    assert_eq!(items_of(result(&out)), vec!["p1"]);
    assert_eq!(w.engine.node_count(), 1);
    // Account deletion removes the PEP rows in one commit.
    let owner = Jid::parse("alice@localhost").expect("jid");
    w.engine
        .pep_delete_account(&w.store, &owner)
        .expect("delete");
    w.store.pubsub_flush().expect("flush");
    w.restart();
    assert_eq!(w.engine.pep_node_count(&owner), 0);
    assert_eq!(w.engine.node_count(), 1);
}

#[test]
fn xep0084_large_pep_items_not_cached_but_sent() {
    let mut w = World::new();
    const DATA: &str = "urn:xmpp:avatar:data";
    let big = format!(
        "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
        "A".repeat(20_000)
    );
    result(&w.pep_publish(ALICE, DATA, "sha", &big, &[]));
    let owner = Jid::parse("alice@localhost").expect("jid");
    let cached = w
        .engine
        .pep
        .get(owner.as_str())
        .and_then(|s| s.nodes.get(DATA))
        .map(|n| n.last.is_some());
    assert_eq!(cached, Some(false), "a 20 KB avatar is not kept in memory");
    // Yet the last item still reaches a newly interested contact, from the store.
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[DATA]);
    let bob = Jid::parse(BOB).expect("jid");
    let out = parse_out(w.engine.pep_interest_added(
        &w.rosters,
        &w.store,
        &bob,
        &[Rc::from(DATA)],
        w.now,
    ));
    assert_eq!(out.len(), 1);
    assert!(format!("{:?}", out[0].1).contains("AAAA"));
    // And on an explicit subscription (§6.1.7).
    let out = w.pep_iq(
        BOB,
        Some("alice@localhost"),
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{DATA}' jid='{BOB}'/></pubsub>"),
    );
    result(&out);
    assert_eq!(out.len(), 2, "reply and the last item");
    // A small item (the metadata) is cached.
    result(&w.pep_publish(
        ALICE,
        "urn:xmpp:avatar:metadata",
        "sha",
        "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
        &[],
    ));
    let cached = w
        .engine
        .pep
        .get(owner.as_str())
        .and_then(|s| s.nodes.get("urn:xmpp:avatar:metadata"))
        .map(|n| n.last.is_some());
    assert_eq!(cached, Some(true));
}

#[test]
fn xep0060_access_lost_on_roster_change_cancels_generic_subscription() {
    let mut w = World::new();
    w.create(ALICE, "pres", &[("pubsub#access_model", "presence")]);
    w.create(ALICE, "open", &[]);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.subscribe(BOB, "pres", BOB);
    w.subscribe(BOB, "open", BOB);
    w.presence_sub("alice@localhost", "bob@localhost", false);
    let owner = Jid::parse("alice@localhost").expect("jid");
    let contact = Jid::parse(BOB).expect("jid");
    let out = parse_out(
        w.engine
            .pep_roster_changed(&w.rosters, &w.store, &owner, &contact, false, w.now),
    );
    assert_eq!(
        out.len(),
        1,
        "only the presence node's subscription: {out:?}"
    );
    assert_eq!(
        event(&out[0].1)
            .child("subscription", NS_PUBSUB_EVENT)
            .and_then(|s| s.attr("node")),
        Some("pres")
    );
    let (_, notes) = w.publish(ALICE, "pres", None, P);
    assert!(notes.is_empty());
    let (_, notes) = w.publish(ALICE, "open", None, P);
    assert_eq!(notes.len(), 1);
}

/// Items of different leaves published in the same millisecond keep their publication
/// order in a collection's items (the item sequence is service-wide, not per node), also
/// after a restart.
#[test]
fn xep0248_items_on_collection_same_millisecond_keep_publication_order() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[]);
    w.create(ALICE, "a", &[("pubsub#collection", "c")]);
    w.create(ALICE, "b", &[("pubsub#collection", "c")]);
    w.publish(ALICE, "b", Some("b1"), P);
    w.publish(ALICE, "b", Some("b2"), P);
    w.now -= 1000; // the next publish lands in the same millisecond as b2
    w.publish(ALICE, "a", Some("a1"), P);
    let ids = |w: &mut World| -> Vec<String> {
        let (r, _) = w.ok(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c' max_items='2'/></pubsub>"),
        );
        r.child("pubsub", NS_PUBSUB)
            .map(|p| {
                p.elements()
                    .flat_map(|i| i.elements().filter_map(|e| e.attr("id").map(str::to_owned)))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&mut w), vec!["a1".to_owned(), "b2".to_owned()]);
    w.restart();
    assert_eq!(ids(&mut w), vec!["a1".to_owned(), "b2".to_owned()]);
}

/// The item is serialised once per publish: every subscriber's notification shares the
/// same event text (only the `<message to=…>` envelope is per subscriber), and the
/// stanza each one receives is still complete and well-formed.
#[test]
fn fan_out_shares_one_serialised_item_between_subscribers() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    w.subscribe(BOB, "n", "bob@localhost");
    w.subscribe(CAROL, "n", "carol@localhost");
    w.n += 1;
    w.now += 1000;
    let iq = Element::parse(&format!(
        "<iq type='set' id='p' from='{ALICE}' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'><publish node='n'><item id='i1'>{P}</item></publish></pubsub></iq>"
    ))
    .expect("stanza");
    let from = Jid::parse(ALICE).expect("jid");
    let out = w.engine.handle_iq(&w.rosters, &w.store, &from, &iq, w.now);
    let notes: Vec<_> = out
        .iter()
        .filter(|d| d.stanza.to_text().starts_with("<message"))
        .collect();
    assert_eq!(notes.len(), 2, "{out:?}");
    assert!(notes[0].stanza.shares_payload_with(&notes[1].stanza));
    for d in &notes {
        let e = Element::parse(&d.stanza.to_text()).expect("well-formed");
        assert_eq!(e.attr("to"), Some(d.to.as_str()));
        assert!(d.stanza.to_text().contains("<t xmlns=\"urn:t\">1</t>"));
    }
}

// ------------------------------------------------------------ numbers from peers (issue 10)
//
// Every number a peer sends (RSM `<max/>` and `<index/>`, `max_items`, numeric form fields,
// XEP-0082 dates) either gets the protocol's error or a clamped result; none may panic or
// wrap. One test per call site, named after what it protects.

/// The repro of issue 10: `<index>1</index>` and `<max>` = u64::MAX used to wrap
/// `lo + max` and then `hi - lo`, and the slice index panicked (abort in release).
const RSM_U64_MAX: &str = "<index>1</index><max>18446744073709551615</max>";

/// A disco#items request on the service (or `node`) with the RSM `<set/>` contents `set`.
fn disco_items_rsm(node: Option<&str>, set: &str) -> String {
    let node = node.map(|n| format!(" node='{n}'")).unwrap_or_default();
    format!("<query xmlns='{NS_DISCO_ITEMS}'{node}><set xmlns='{NS_RSM}'>{set}</set></query>")
}

/// An items request on `node` with the RSM `<set/>` contents `set`.
fn items_rsm(node: &str, set: &str) -> String {
    format!(
        "<pubsub xmlns='{NS_PUBSUB}'><items node='{node}'/><set xmlns='{NS_RSM}'>{set}</set></pubsub>"
    )
}

/// (node or name attributes of the items, the RSM set as (first, index, last, count)) of a
/// disco#items reply.
fn disco_page(r: &Element) -> (Vec<String>, RsmSummary) {
    let q = r.child("query", NS_DISCO_ITEMS).expect("query");
    let rows = q
        .elements()
        .filter(|e| e.name == "item")
        .filter_map(|e| e.attr("node").or(e.attr("name")).map(str::to_owned))
        .collect();
    let set = q.child("set", NS_RSM).expect("an RSM request gets a set");
    let first = set.child("first", NS_RSM);
    (
        rows,
        (
            first.map(Element::text),
            first.and_then(|f| f.attr("index").map(str::to_owned)),
            set.child("last", NS_RSM).map(Element::text),
            set.child("count", NS_RSM)
                .map(Element::text)
                .unwrap_or_default(),
        ),
    )
}

/// Three nodes `n1..n3` on the service; `n1` holds items `i1..i3`; collection `c` holds
/// leaves `x` (items x1, x2) and `y` (item y1).
fn paging_world(cfg: Config) -> World {
    let mut w = World::with_config(cfg);
    for n in ["n1", "n2", "n3"] {
        w.create(ALICE, n, &[]);
    }
    for i in 1..=3 {
        w.publish(ALICE, "n1", Some(&format!("i{i}")), P);
    }
    w.collection(ALICE, "c", &[]);
    w.create(ALICE, "x", &[("pubsub#collection", "c")]);
    w.create(ALICE, "y", &[("pubsub#collection", "c")]);
    w.publish(ALICE, "x", Some("x1"), P);
    w.publish(ALICE, "y", Some("y1"), P);
    w.publish(ALICE, "x", Some("x2"), P);
    w
}

/// The item ids of every `<items/>` of a (collection) items reply, in order.
fn all_item_ids(r: &Element) -> Vec<String> {
    r.child("pubsub", NS_PUBSUB)
        .map(|p| {
            p.elements()
                .filter(|e| e.name == "items")
                .flat_map(|i| i.elements().filter_map(|e| e.attr("id").map(str::to_owned)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rsm_max_u64_does_not_panic_disco_items() {
    let mut w = paging_world(Config::default());
    let (r, _) = w.ok(BOB, "get", &disco_items_rsm(None, RSM_U64_MAX));
    let (rows, set) = disco_page(&r);
    // The service lists n1, n2, n3 and c (x and y sit below c).
    assert_eq!(rows, vec!["n1", "n2", "n3"]);
    assert_eq!(set.1.as_deref(), Some("1"));
    assert_eq!(set.3, "4");
    // The same on a node's item list.
    let (r, _) = w.ok(BOB, "get", &disco_items_rsm(Some("n1"), RSM_U64_MAX));
    let (rows, set) = disco_page(&r);
    assert_eq!(rows, vec!["i2", "i3"]);
    assert_eq!((set.1.as_deref(), set.3.as_str()), (Some("1"), "3"));
    // After the last row, and from the end, with the largest max.
    let max = "<max>18446744073709551615</max>";
    let (r, _) = w.ok(
        BOB,
        "get",
        &disco_items_rsm(Some("n1"), &format!("{max}<after>i3</after>")),
    );
    assert_eq!(disco_page(&r).0, Vec::<String>::new());
    let (r, _) = w.ok(
        BOB,
        "get",
        &disco_items_rsm(Some("n1"), &format!("{max}<before/>")),
    );
    assert_eq!(disco_page(&r).0, vec!["i1", "i2", "i3"]);
}

#[test]
fn rsm_max_u64_does_not_panic_items() {
    let mut w = paging_world(Config::default());
    let (r, _) = w.ok(BOB, "get", &items_rsm("n1", RSM_U64_MAX));
    assert_eq!(items_of(&r), vec!["i2", "i3"]);
    let set = rsm_of(&r).expect("set");
    assert_eq!((set.1.as_deref(), set.3.as_str()), (Some("1"), "3"));
    let max = "<max>18446744073709551615</max>";
    for (set, want) in [
        (format!("{max}<after>i1</after>"), vec!["i2", "i3"]),
        (format!("{max}<before>i3</before>"), vec!["i1", "i2"]),
        (format!("{max}<before/>"), vec!["i1", "i2", "i3"]),
        (max.to_owned(), vec!["i1", "i2", "i3"]),
    ] {
        let (r, _) = w.ok(BOB, "get", &items_rsm("n1", &set));
        assert_eq!(items_of(&r), want, "{set}");
    }
}

#[test]
fn rsm_max_u64_does_not_panic_collection_items() {
    let mut w = paging_world(Config::default());
    let (r, _) = w.ok(BOB, "get", &items_rsm("c", RSM_U64_MAX));
    // Newest first: x2, y1, x1; index 1 starts at y1.
    assert_eq!(all_item_ids(&r), vec!["y1", "x1"]);
    let set = rsm_of(&r).expect("set");
    assert_eq!((set.1.as_deref(), set.3.as_str()), (Some("1"), "3"));
    let (r, _) = w.ok(
        BOB,
        "get",
        &items_rsm("c", "<max>18446744073709551615</max><before/>"),
    );
    assert_eq!(all_item_ids(&r), vec!["x2", "y1", "x1"]);
}

/// XEP-0059 §2.6: an index at or past the end of the set is an empty page (with the count),
/// not an error.
#[test]
fn rsm_index_past_end_is_an_empty_page_at_every_call_site() {
    let mut w = paging_world(Config::default());
    for index in [
        "3",
        "4",
        "18446744073709551615",
        "99999999999999999999999999",
    ] {
        let set = format!("<index>{index}</index><max>2</max>");
        let (r, _) = w.ok(BOB, "get", &disco_items_rsm(Some("n1"), &set));
        assert_eq!(
            disco_page(&r),
            (vec![], (None, None, None, "3".into())),
            "{index}"
        );
        // The service lists four nodes: index 3 is its last one.
        let (r, _) = w.ok(BOB, "get", &disco_items_rsm(None, &set));
        let (rows, s) = disco_page(&r);
        let want = usize::from(index == "3");
        assert_eq!((rows.len(), s.3.as_str()), (want, "4"), "{index}");
        let (r, _) = w.ok(BOB, "get", &items_rsm("n1", &set));
        assert_eq!(items_of(&r), Vec::<String>::new(), "{index}");
        assert_eq!(rsm_of(&r), Some((None, None, None, "3".into())), "{index}");
        let (r, _) = w.ok(BOB, "get", &items_rsm("c", &set));
        assert_eq!(all_item_ids(&r), Vec::<String>::new(), "{index}");
        assert_eq!(rsm_of(&r), Some((None, None, None, "3".into())), "{index}");
    }
    // The last index still has its item.
    let (r, _) = w.ok(BOB, "get", &items_rsm("n1", "<index>2</index>"));
    assert_eq!(items_of(&r), vec!["i3"]);
}

/// Negative, empty and non-numeric RSM numbers are `bad-request` at every call site.
#[test]
fn rsm_malformed_numbers_are_bad_request_at_every_call_site() {
    let mut w = paging_world(Config::default());
    for set in [
        "<max>-1</max>",
        "<max/>",
        "<max> </max>",
        "<max>ten</max>",
        "<max>1.5</max>",
        "<max>0x10</max>",
        "<max>--1</max>",
        "<index>-1</index>",
        "<index/>",
        "<index>1e3</index>",
        "<index>-18446744073709551616</index>",
    ] {
        for body in [
            disco_items_rsm(None, set),
            disco_items_rsm(Some("n1"), set),
            items_rsm("n1", set),
            items_rsm("c", set),
        ] {
            assert_eq!(w.err(BOB, "get", &body).0, "bad-request", "{body}");
        }
    }
    // `<max>0</max>` is the count alone (XEP-0059 §2.7); a `+` sign is an xs:int.
    let (r, _) = w.ok(BOB, "get", &items_rsm("n1", "<max>0</max>"));
    assert_eq!(items_of(&r), Vec::<String>::new());
    assert_eq!(rsm_of(&r), Some((None, None, None, "3".into())));
    let (r, _) = w.ok(BOB, "get", &items_rsm("n1", "<max> +2 </max>"));
    assert_eq!(items_of(&r), vec!["i1", "i2"]);
}

/// A `<max/>` above `limits.pubsub_max_page_items` (or none) gets a page of that size,
/// which XEP-0059 allows; the client pages on with `<after/>`.
#[test]
fn rsm_max_is_clamped_to_the_page_limit() {
    let mut cfg = Config::default();
    cfg.limits.pubsub_max_page_items = 2;
    let mut w = paging_world(cfg);
    for set in ["<max>3</max>", "<max>99999999999999999999999</max>", ""] {
        let (r, _) = w.ok(BOB, "get", &items_rsm("n1", set));
        assert_eq!(items_of(&r), vec!["i1", "i2"], "{set:?}");
        let (r, _) = w.ok(BOB, "get", &disco_items_rsm(None, set));
        let (rows, s) = disco_page(&r);
        assert_eq!((rows.len(), s.3.as_str()), (2, "4"), "{set:?}");
        let (r, _) = w.ok(BOB, "get", &items_rsm("c", set));
        assert_eq!(all_item_ids(&r), vec!["x2", "y1"], "{set:?}");
    }
    let (r, _) = w.ok(BOB, "get", &items_rsm("n1", "<max>5</max><before/>"));
    assert_eq!(items_of(&r), vec!["i2", "i3"]);
    let (r, _) = w.ok(
        BOB,
        "get",
        &items_rsm("n1", "<max>5</max><after>i2</after>"),
    );
    assert_eq!(items_of(&r), vec!["i3"]);
}

/// `<items max_items='…'/>`: any size is the newest that many (never a wrap, the same on
/// 32-bit targets); negative or non-numeric is `bad-request`.
#[test]
fn items_max_items_u64_max_does_not_panic() {
    let mut w = paging_world(Config::default());
    for m in [
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        assert_eq!(
            w.item_ids(BOB, "n1", &format!(" max_items='{m}'")),
            vec!["i1", "i2", "i3"],
            "{m}"
        );
        let (r, _) = w.ok(
            BOB,
            "get",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><items node='c' max_items='{m}'/></pubsub>"),
        );
        assert_eq!(all_item_ids(&r), vec!["x2", "y1", "x1"], "{m}");
        // With RSM on top.
        let (r, _) = w.ok(
            BOB,
            "get",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><items node='n1' max_items='{m}'/><set xmlns='{NS_RSM}'>{RSM_U64_MAX}</set></pubsub>"
            ),
        );
        assert_eq!(items_of(&r), vec!["i2", "i3"], "{m}");
    }
    for m in ["-1", "", "two", "1.0", "-18446744073709551615"] {
        for node in ["n1", "c"] {
            let body = format!(
                "<pubsub xmlns='{NS_PUBSUB}'><items node='{node}' max_items='{m}'/></pubsub>"
            );
            assert_eq!(w.err(BOB, "get", &body).0, "bad-request", "{m:?} on {node}");
        }
    }
}

/// Numeric configuration fields (XEP-0060 §8.2.4): huge, negative, empty or non-numeric
/// values are `not-acceptable`, at configure and at create-and-configure, and change nothing.
#[test]
fn config_numbers_huge_or_negative_are_not_acceptable() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#max_items", "5")]);
    w.collection(ALICE, "c", &[]);
    let huge = [
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "-1",
        "-18446744073709551616",
        "",
        "lots",
        "1e9",
    ];
    for field in [
        "pubsub#max_items",
        "pubsub#max_payload_size",
        "pubsub#item_expire",
    ] {
        for v in huge {
            let (c, _) = w.err(
                ALICE,
                "set",
                &format!(
                    "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='n'>{}</configure></pubsub>",
                    form(FORM_NODE_CONFIG, &[(field, v)])
                ),
            );
            assert_eq!(c, "not-acceptable", "{field} = {v:?}");
            let (c, _) = w.err(
                ALICE,
                "set",
                &format!(
                    "<pubsub xmlns='{NS_PUBSUB}'><create node='new'/><configure>{}</configure></pubsub>",
                    form(FORM_NODE_CONFIG, &[(field, v)])
                ),
            );
            assert_eq!(c, "not-acceptable", "create with {field} = {v:?}");
        }
    }
    for v in huge {
        let (c, _) = w.err(
            ALICE,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='c'>{}</configure></pubsub>",
                form(FORM_NODE_CONFIG, &[("pubsub#children_max", v)])
            ),
        );
        assert_eq!(c, "not-acceptable", "children_max = {v:?}");
    }
    assert_eq!(
        w.config_of(ALICE, "n")["pubsub#max_items"],
        vec!["5".to_owned()]
    );
    assert!(!w.engine.nodes.contains_key("new"));
    // `max` stays the word for the cap.
    w.configure(
        ALICE,
        "n",
        &form(FORM_NODE_CONFIG, &[("pubsub#max_items", "max")]),
    );
    assert_eq!(
        w.config_of(ALICE, "n")["pubsub#max_items"],
        vec!["max".to_owned()]
    );
}

/// XEP-0082 dates at the edges: impossible dates and offsets are refused, the largest
/// four-digit year works, nothing panics or wraps.
#[test]
fn xep0082_dates_at_the_edges() {
    for bad in [
        "0000-00-00T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "99999-01-01T00:00:00Z",
        "+9999-01-01T00:00:00Z",
        "-001-01-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-00-10T00:00:00Z",
        "2024-01-00T00:00:00Z",
        "2024-01-32T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "2024-01-01T00:00:61Z",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+99:99",
        "2024-01-01T00:00:00-00:60",
        "1970-01-01T00:00:00+00:01",
        "1969-12-31T23:59:59Z",
        "9999-99-99T99:99:99.999999999999999999999Z",
    ] {
        assert_eq!(parse_xep0082(bad), None, "{bad}");
    }
    assert_eq!(
        parse_xep0082("2024-02-29T00:00:00Z"),
        Some(1_709_164_800_000)
    );
    assert_eq!(parse_xep0082("2000-02-29T00:00:00Z"), Some(951_782_400_000));
    assert_eq!(parse_xep0082("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_xep0082("1970-01-01T00:00:00-23:59"), Some(86_340_000));
    let end = parse_xep0082("9999-12-31T23:59:59.999Z").expect("year 9999");
    assert_eq!(end, 253_402_300_799_999);
    assert_eq!(xep0082(end), "9999-12-31T23:59:59.999Z");
    // Many fraction digits: the first three count.
    assert_eq!(
        parse_xep0082("2024-02-29T00:00:00.1239999999999999999999999Z"),
        Some(1_709_164_800_123)
    );
    // Formatting never panics, whatever the clock says.
    for ms in [0, u64::MAX / 2, u64::MAX] {
        assert!(xep0082(ms).ends_with('Z'));
    }
}

/// `pubsub#expire` at the far edge: a lease in year 9999 is accepted and its deadline is
/// exact; impossible dates are `bad-request` + `invalid-options`.
#[test]
fn subscription_expire_at_the_edges() {
    let mut w = World::new();
    w.create(ALICE, "n", &[]);
    let far = "9999-12-31T23:59:59.999Z";
    w.subscribe_with(BOB, "n", &[("pubsub#expire", far)]);
    assert_eq!(w.engine.next_deadline(), Some(253_402_300_799_999));
    assert!(w.tick().is_empty());
    for bad in [
        "0000-00-00T00:00:00Z",
        "99999-12-31T00:00:00Z",
        "2024-13-01T00:00:00Z",
    ] {
        let body = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
            form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#expire", bad)])
        );
        assert_eq!(
            w.err(CAROL, "set", &body),
            ("bad-request".into(), "invalid-options".into()),
            "{bad}"
        );
    }
}

/// Issue 10, item 8: generated item ids came from a counter that restarts at every run
/// and the clock, so after a restart with the clock stepped back (a board without an
/// RTC) a publish without an id got the id of a stored item and silently replaced it.
/// Even with the same counter seed and the same clock, the new item gets a new id.
#[test]
fn generated_item_ids_do_not_collide_after_restart_with_clock_stepped_back() {
    let mut w = World::new();
    w.create(ALICE, "n", &[("pubsub#max_items", "10")]);
    let t0 = w.now;
    let (r1, _) = w.publish(ALICE, "n", None, "<a xmlns='x'/>");
    let id_of = |r: &Element| {
        r.child("pubsub", NS_PUBSUB)
            .and_then(|p| p.child("publish", NS_PUBSUB))
            .and_then(|p| p.child("item", NS_PUBSUB))
            .and_then(|i| i.attr("id"))
            .expect("generated id")
            .to_owned()
    };
    let first = id_of(&r1);
    w.restart();
    // The clock stepped back: the next request runs at the first publish's time.
    w.now = t0;
    let (r2, _) = w.publish(ALICE, "n", None, "<b xmlns='x'/>");
    let second = id_of(&r2);
    assert_ne!(first, second);
    let stored: Vec<String> = w
        .store
        .pubsub_load()
        .expect("load")
        .items
        .into_iter()
        .map(|(_, _, i, _)| i.id)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored.contains(&first) && stored.contains(&second),
        "{stored:?}"
    );
    // Different seeds (the router draws one per run) give different ids at the same time.
    let mut a = World::new();
    let mut b = World::new();
    a.engine.seed_ids(1 << 40);
    b.engine.seed_ids(7 << 40);
    for w in [&mut a, &mut b] {
        w.create(ALICE, "n", &[]);
    }
    let (ra, _) = a.publish(ALICE, "n", None, "<a xmlns='x'/>");
    let (rb, _) = b.publish(ALICE, "n", None, "<a xmlns='x'/>");
    assert_ne!(id_of(&ra), id_of(&rb));
}
