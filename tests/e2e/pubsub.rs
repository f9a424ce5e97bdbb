//! End-to-end XEP-0060: the real daemon, two clients, and a restart.

use std::time::Duration;

use kinglet::xml::Element;

use super::client::{Client, condition};
use super::interop::run_slixmpp;
use super::{Daemon, Options, PING, get};

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

fn login(d: &Daemon, user: &str, pass: &str, res: &str) -> Client {
    let mut c = Client::login(d.port, d.cert.as_ref().expect("cert"), user, pass, res);
    c.send("<presence/>");
    c
}

fn ok(r: &Element) {
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

fn app_error(r: &Element) -> String {
    r.child("error", "jabber:client")
        .and_then(|e| e.elements().find(|c| c.ns == ERRORS))
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn event(c: &mut Client) -> Element {
    let m = c.wait_for("pubsub event", |e| {
        e.name == "message" && e.child("event", EVENT).is_some()
    });
    m.child("event", EVENT).expect("event").clone()
}

/// The ids of the items in an items reply (none if it holds no `<items/>`).
fn item_ids(r: &Element) -> Vec<String> {
    let items = r.child("pubsub", PS).and_then(|p| p.child("items", PS));
    let ids = items.into_iter().flat_map(|i| i.elements());
    ids.filter_map(|e| e.attr("id").map(str::to_owned))
        .collect()
}

/// The id of the item a publish reply names (the service's generated id).
fn published_id(r: &Element) -> String {
    let publish = r.child("pubsub", PS).and_then(|p| p.child("publish", PS));
    let item = publish.and_then(|p| p.child("item", PS));
    item.and_then(|i| i.attr("id"))
        .expect("generated id")
        .to_owned()
}

const SERVICE: &str = "pubsub.localhost";
const INFO: &str = "http://jabber.org/protocol/disco#info";
const ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// A `<pubsub/>` set of `inner` to the service, as [`Client::pubsub`].
fn set(c: &mut Client, id: &str, inner: &str) -> Element {
    c.pubsub(id, "set", PS, inner)
}

/// The reply to a disco query of namespace `ns` to `to`.
fn disco(c: &mut Client, id: &str, to: &str, ns: &str) -> Element {
    get(c, id, to, &format!("<query xmlns='{ns}'/>"))
}

/// The disco#info of `node` of the service.
fn node_info(c: &mut Client, id: &str, node: &str) -> Element {
    get(
        c,
        id,
        SERVICE,
        &format!("<query xmlns='{INFO}' node='{node}'/>"),
    )
}

/// Publishes `item` (the whole `<item/>`) to `node` of the service.
fn publish(c: &mut Client, id: &str, node: &str, item: &str) -> Element {
    set(c, id, &format!("<publish node='{node}'>{item}</publish>"))
}

/// Creates `node` on the service with the `<configure/>` form `x`.
fn create_with(c: &mut Client, id: &str, node: &str, x: &str) -> Element {
    set(
        c,
        id,
        &format!("<create node='{node}'/><configure>{x}</configure>"),
    )
}

/// Publishes `item` to the caller's own PEP `node`.
fn pep_publish(c: &mut Client, id: &str, node: &str, item: &str) -> Element {
    c.iq(
        id,
        &format!(
            "<iq type='set' id='{id}'><pubsub xmlns='{PS}'><publish node='{node}'>{item}</publish></pubsub></iq>"
        ),
    )
}

/// Asserts the error `condition` and pub-sub application condition `app` of `r`.
#[track_caller]
fn fails(r: &Element, condition_: &str, app: &str) {
    assert_eq!(condition(r), condition_, "{r:?}");
    assert_eq!(app_error(r), app, "{r:?}");
}

/// An anonymous, bound client of `d`.
fn anonymous(d: &Daemon) -> Client {
    let mut a = Client::connect(d.port);
    a.open_stream();
    a.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>");
    assert_eq!(a.next().name, "success");
    a.bind(None);
    a
}

/// The wall clock in milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Kill the daemon and start it again on the same configuration and data.
fn restart(d: &mut Daemon) {
    d.restart("stderr2.log");
}

#[test]
fn pubsub_lifecycle_two_clients_and_restart() {
    let mut d = Daemon::start(Options::default());
    let mut alice = login(&d, "alice", "alice-pw", "pub");
    let mut bob = login(&d, "bob", "bob-pw", "sub");

    // Discovery: the domain lists the service, the service is pubsub/service.
    let r = disco(&mut alice, "d1", "localhost", ITEMS);
    let q = r.elements().next().expect("query");
    assert!(
        q.elements()
            .any(|i| i.attr("jid") == Some("pubsub.localhost")),
        "{r:?}"
    );
    let r = disco(&mut alice, "d2", SERVICE, INFO);
    let q = r.elements().next().expect("query");
    let id = q
        .elements()
        .find(|e| e.name == "identity")
        .expect("identity");
    assert_eq!(id.attr("category"), Some("pubsub"));
    assert_eq!(id.attr("type"), Some("service"));

    // Create and configure.
    ok(&alice.create_node(
        "c1",
        "sensors",
        &[
            ("pubsub#title", "Sensors"),
            ("pubsub#max_items", "2"),
            ("pubsub#send_last_published_item", "on_sub"),
        ],
    ));
    let r = set(&mut alice, "c2", "<create node='sensors'/>");
    assert_eq!(condition(&r), "conflict");

    // Publish before anyone subscribes; bob gets it on subscribe, with a delay stamp.
    let t0 = "<item id='t0'><temp xmlns='urn:example:t'>20</temp></item>";
    ok(&publish(&mut alice, "p0", "sensors", t0));
    ok(&set(
        &mut bob,
        "s1",
        "<subscribe node='sensors' jid='bob@localhost'/>",
    ));
    let m = bob.wait_for("last item", |e| e.name == "message");
    assert!(m.child("delay", "urn:xmpp:delay").is_some(), "{m:?}");

    // Subscribing someone else's JID is invalid-jid.
    let r = set(
        &mut bob,
        "s2",
        "<subscribe node='sensors' jid='alice@localhost'/>",
    );
    fails(&r, "bad-request", "invalid-jid");

    // Publish with a generated id: the result carries it, bob gets the payload.
    let r = publish(
        &mut alice,
        "p1",
        "sensors",
        "<item><temp xmlns='urn:example:t'>21</temp></item>",
    );
    ok(&r);
    let gen_id = published_id(&r);
    let ev = event(&mut bob);
    let item = ev
        .child("items", EVENT)
        .and_then(|i| i.child("item", EVENT))
        .expect("item");
    assert_eq!(item.attr("id"), Some(gen_id.as_str()));
    assert_eq!(
        item.child("temp", "urn:example:t").map(|t| t.text()),
        Some("21".into())
    );

    // A third publish evicts the oldest (max_items = 2).
    let t2 = "<item id='t2'><temp xmlns='urn:example:t'>22</temp></item>";
    ok(&publish(&mut alice, "p2", "sensors", t2));
    event(&mut bob);
    let r = bob.pubsub("i1", "get", PS, "<items node='sensors'/>");
    ok(&r);
    let ids = item_ids(&r);
    assert_eq!(ids, vec![gen_id.clone(), "t2".to_owned()]);

    // Bob may not publish (publishers model): forbidden.
    let r = publish(&mut bob, "p3", "sensors", "<item><x xmlns='u'/></item>");
    assert_eq!(condition(&r), "forbidden");

    // Restart: node, items, subscription and affiliation survive.
    drop(alice);
    drop(bob);
    restart(&mut d);
    let mut alice = login(&d, "alice", "alice-pw", "pub");
    let mut bob = login(&d, "bob", "bob-pw", "sub");
    let r = bob.pubsub("i2", "get", PS, "<items node='sensors' max_items='1'/>");
    ok(&r);
    let items = r
        .child("pubsub", PS)
        .and_then(|p| p.child("items", PS))
        .expect("items")
        .clone();
    let only: Vec<&Element> = items.elements().collect();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].attr("id"), Some("t2"));
    assert_eq!(
        only[0].child("temp", "urn:example:t").map(|t| t.text()),
        Some("22".into())
    );
    let r = bob.pubsub("sub", "get", PS, "<subscriptions/>");
    assert!(format!("{r:?}").contains("sensors"), "{r:?}");
    let r = alice.pubsub("aff", "get", PS, "<affiliations/>");
    assert!(format!("{r:?}").contains("owner"), "{r:?}");

    // Retract with notify, purge, delete with redirect: each notifies bob.
    let retract = "<retract node='sensors' notify='true'><item id='t2'/></retract>";
    ok(&set(&mut alice, "r1", retract));
    let ev = event(&mut bob);
    let retract = ev
        .child("items", EVENT)
        .and_then(|i| i.child("retract", EVENT))
        .expect("retract");
    assert_eq!(retract.attr("id"), Some("t2"));
    let r = set(
        &mut alice,
        "r2",
        "<retract node='sensors'><item id='nope'/></retract>",
    );
    assert_eq!(condition(&r), "item-not-found");
    ok(&alice.pubsub("pg", "set", OWNER, "<purge node='sensors'/>"));
    assert!(event(&mut bob).child("purge", EVENT).is_some());
    let r = bob.pubsub("dl0", "set", OWNER, "<delete node='sensors'/>");
    assert_eq!(condition(&r), "forbidden");
    ok(&alice.pubsub(
        "dl",
        "set",
        OWNER,
        "<delete node='sensors'><redirect uri='xmpp:pubsub.localhost?;node=other'/></delete>",
    ));
    let ev = event(&mut bob);
    let del = ev.child("delete", EVENT).expect("delete");
    assert_eq!(
        del.child("redirect", EVENT).and_then(|r| r.attr("uri")),
        Some("xmpp:pubsub.localhost?;node=other")
    );
    let r = bob.pubsub("i3", "get", PS, "<items node='sensors'/>");
    assert_eq!(condition(&r), "item-not-found");

    // Deleted stays deleted across a restart.
    drop(alice);
    drop(bob);
    restart(&mut d);
    let mut bob = login(&d, "bob", "bob-pw", "sub");
    let r = bob.pubsub("i4", "get", PS, "<items node='sensors'/>");
    assert_eq!(condition(&r), "item-not-found");
}

#[test]
fn pubsub_access_models_and_errors() {
    let d = Daemon::start(Options::default());
    let mut alice = login(&d, "alice", "alice-pw", "a");
    let mut bob = login(&d, "bob", "bob-pw", "b");
    let access = |a| [("pubsub#access_model", a)];
    ok(&alice.create_node("w", "wl", &access("whitelist")));
    let r = set(&mut bob, "s", "<subscribe node='wl' jid='bob@localhost'/>");
    fails(&r, "not-allowed", "closed-node");
    // Make bob a member: now he may subscribe.
    ok(&alice.pubsub("m", "set", OWNER, "<affiliations node='wl'><affiliation jid='bob@localhost' affiliation='member'/></affiliations>"));
    ok(&set(
        &mut bob,
        "s2",
        "<subscribe node='wl' jid='bob@localhost/b'/>",
    ));
    // Presence model without a presence subscription.
    ok(&alice.create_node("p", "pres", &access("presence")));
    let r = set(
        &mut bob,
        "s3",
        "<subscribe node='pres' jid='bob@localhost'/>",
    );
    fails(&r, "not-authorized", "presence-subscription-required");
    // A registered field this service cannot honour: not-acceptable + unsupported.
    let x = |var: &str, value: &str| {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='{var}'><value>{value}</value></field></x>"
        )
    };
    let xslt = x("pubsub#body_xslt", "http://example.org/b.xsl");
    fails(
        &create_with(&mut alice, "a", "auth", &xslt),
        "not-acceptable",
        "unsupported",
    );
    // Unknown config field: not-acceptable, and no node left behind.
    let r = create_with(&mut alice, "u", "auth", &x("pubsub#bogus", "1"));
    assert_eq!(condition(&r), "not-acceptable");
    assert_eq!(
        condition(&node_info(&mut alice, "u2", "auth")),
        "item-not-found"
    );
    // Auto-create with a failing precondition leaves nothing behind.
    let opts = format!(
        "<publish node='auto'><item><x xmlns='u'/></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PS}#publish-options</value></field><field var='pubsub#nonsense'><value>1</value></field></x></publish-options>"
    );
    let r = set(&mut alice, "ac", &opts);
    fails(&r, "conflict", "precondition-not-met");
    assert_eq!(
        condition(&node_info(&mut alice, "ac2", "auto")),
        "item-not-found"
    );
    // Unsubscribe when not subscribed.
    let unsubscribe = "<unsubscribe node='pres' jid='bob@localhost'/>";
    let r = set(&mut bob, "un", unsubscribe);
    fails(&r, "unexpected-request", "not-subscribed");
}

#[test]
fn slixmpp_xep0060_create_configure_publish_subscribe_retract_purge_delete() {
    let d = Daemon::start(Options::default());
    let what = "slixmpp pubsub interop";
    run_slixmpp(what, "slixmpp_pubsub.py", &d, d.port, &[], true);
}

/// XEP-0060 §8.6 and §12.18 against the daemon: a subscription to an `authorize` node is
/// pending until the owner answers the approval form by message, and its lease ends by
/// the daemon's own timer (no client traffic triggers it).
#[test]
fn pubsub_authorize_approval_and_leased_expiry() {
    let d = Daemon::start(Options::default());
    let mut alice = login(&d, "alice", "alice-pw", "pub");
    let mut bob = login(&d, "bob", "bob-pw", "sub");
    ok(&alice.create_node("c1", "gate", &[("pubsub#access_model", "authorize")]));
    let lease_end = now_ms() + 4000;
    let r = bob.iq(
        "s1",
        &format!(
            "<iq type='set' id='s1' to='pubsub.localhost'><pubsub xmlns='{PS}'><subscribe node='gate' jid='bob@localhost/sub'/>\
             <options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PS}#subscribe_options</value></field>\
             <field var='pubsub#expire'><value>{}</value></field>\
             </x></options></pubsub></iq>",
            kinglet::pubsub::xep0082(lease_end)
        ),
    );
    ok(&r);
    let sub = r
        .child("pubsub", PS)
        .and_then(|p| p.child("subscription", PS))
        .expect("subscription");
    assert_eq!(sub.attr("subscription"), Some("pending"));
    // The owner gets the approval form and answers it by message.
    let form = alice.wait_for("approval form", |e| {
        e.name == "message" && e.child("x", "jabber:x:data").is_some()
    });
    let x = form.child("x", "jabber:x:data").expect("form");
    let value = |var: &str| {
        x.elements()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.elements().next())
            .map(|v| v.text())
            .unwrap_or_default()
    };
    assert_eq!(value("pubsub#subscriber_jid"), "bob@localhost/sub");
    alice.send(&format!(
        "<message to='pubsub.localhost'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>{PS}#subscribe_authorization</value></field>\
         <field var='pubsub#subid'><value>{}</value></field>\
         <field var='pubsub#node'><value>gate</value></field>\
         <field var='pubsub#subscriber_jid'><value>bob@localhost/sub</value></field>\
         <field var='pubsub#allow'><value>true</value></field></x></message>",
        value("pubsub#subid")
    ));
    let state = |m: &Element| {
        m.child("event", EVENT)
            .and_then(|p| p.child("subscription", EVENT))
            .and_then(|s| s.attr("subscription"))
            .map(str::to_owned)
    };
    let m = bob.wait_for("approval", |e| e.name == "message" && state(e).is_some());
    assert_eq!(state(&m).as_deref(), Some("subscribed"));
    ok(&publish(
        &mut alice,
        "p1",
        "gate",
        "<item id='a'><v xmlns='urn:v'>1</v></item>",
    ));
    event(&mut bob);
    // The lease ends by the timer alone: bob is told, without sending anything.
    let m = bob.wait_for("lease end", |e| e.name == "message" && state(e).is_some());
    assert_eq!(state(&m).as_deref(), Some("none"));
    let ended = now_ms();
    assert!(ended >= lease_end, "not before the lease end");
    ok(&publish(
        &mut alice,
        "p2",
        "gate",
        "<item id='b'><v xmlns='urn:v'>2</v></item>",
    ));
    let r = bob.pubsub("i1", "get", PS, "<items node='gate'/>");
    fails(&r, "not-authorized", "not-subscribed"); // no subscription any more
}

/// XEP-0248 with `/` paths: an operator subscribes to `sensors` (items, depth all); a
/// device publishes to `sensors/kitchen/temp`, which creates the collections on the way;
/// the operator gets the reading with the leaf's node and a SHIM `Collection` header.
/// A restart keeps the graph and the subscription.
#[test]
fn pubsub_collections_sensor_tree_and_restart() {
    let mut d = Daemon::start(Options {
        users: &[("device", "device-pw"), ("operator", "operator-pw")],
        ..Options::default()
    });
    let mut device = login(&d, "device", "device-pw", "d");
    let mut operator = login(&d, "operator", "operator-pw", "o");
    let publish = |c: &mut Client, id: &str, node: &str, v: &str| {
        let item = format!("<item id='{id}'><r xmlns='urn:sensor'>{v}</r></item>");
        ok(&publish(c, id, node, &item));
    };
    // The first reading creates sensors and sensors/kitchen.
    publish(&mut device, "p1", "sensors/kitchen/temp", "20");
    let subscribe = format!(
        "<iq type='set' id='s1' to='pubsub.localhost'><pubsub xmlns='{PS}'>\
         <subscribe node='sensors' jid='operator@localhost'/><options>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{PS}#subscribe_options</value></field>\
         <field var='pubsub#subscription_type'><value>items</value></field>\
         <field var='pubsub#subscription_depth'><value>all</value></field>\
         </x></options></pubsub></iq>"
    );
    ok(&operator.iq("s1", &subscribe));
    let check = |operator: &mut Client, node: &str, v: &str| {
        let m = operator.wait_for("collection event", |e| {
            e.name == "message" && e.child("event", EVENT).is_some()
        });
        let items = m
            .child("event", EVENT)
            .and_then(|e| e.child("items", EVENT))
            .expect("items");
        assert_eq!(items.attr("node"), Some(node), "{m:?}");
        assert!(format!("{m:?}").contains(v), "{m:?}");
        let header = m
            .child("headers", "http://jabber.org/protocol/shim")
            .and_then(|h| h.elements().find(|x| x.attr("name") == Some("Collection")))
            .map(Element::text);
        assert_eq!(header.as_deref(), Some("sensors"), "{m:?}");
    };
    publish(&mut device, "p2", "sensors/kitchen/temp", "21");
    check(&mut operator, "sensors/kitchen/temp", "21");
    // Items of different leaves are ordered by publication time in milliseconds.
    std::thread::sleep(Duration::from_millis(5));
    publish(&mut device, "p3", "sensors/garage/temp", "9");
    check(&mut operator, "sensors/garage/temp", "9");
    // disco#items walks the tree.
    let query = format!("<query xmlns='{ITEMS}' node='sensors'/>");
    let r = get(&mut operator, "d1", SERVICE, &query);
    let mut kids: Vec<String> = r
        .elements()
        .next()
        .map(|q| {
            q.elements()
                .filter_map(|i| i.attr("node").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    kids.sort();
    assert_eq!(kids, vec!["sensors/garage", "sensors/kitchen"]);

    restart(&mut d);
    let mut device = login(&d, "device", "device-pw", "d");
    let mut operator = login(&d, "operator", "operator-pw", "o");
    std::thread::sleep(Duration::from_millis(5));
    publish(&mut device, "p4", "sensors/kitchen/temp", "22");
    check(&mut operator, "sensors/kitchen/temp", "22");
    // Items on the collection: newest first across the leaves.
    let r = operator.pubsub("i1", "get", PS, "<items node='sensors' max_items='2'/>");
    let ids: Vec<String> = r
        .elements()
        .next()
        .map(|p| {
            p.elements()
                .flat_map(|i| i.elements().filter_map(|e| e.attr("id").map(str::to_owned)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, vec!["p4", "p3"]);
}

const CAPS: &str = "http://jabber.org/protocol/caps";
const TUNE: &str = "http://jabber.org/protocol/tune";

/// The disco#info a test client answers with: a pc client wanting tune notifications.
fn tune_disco() -> Element {
    let xml = format!(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='client' type='pc' name='kinglet-test'/>\
         <feature var='http://jabber.org/protocol/disco#info'/>\
         <feature var='{TUNE}+notify'/></query>"
    );
    Element::parse(&xml).expect("disco xml")
}

/// The `<item id='current'/>` of a tune titled `title`.
fn tune(title: &str) -> String {
    format!("<item id='current'><tune xmlns='{TUNE}'><title>{title}</title></tune></item>")
}

/// A presence carrying XEP-0115 caps for [`tune_disco`].
fn caps_presence(show: &str) -> String {
    let ver = kinglet::caps::ver_sha1(&tune_disco()).expect("ver");
    format!(
        "<presence><show>{show}</show><c xmlns='{CAPS}' hash='sha-1' node='https://kinglet.test' ver='{ver}'/></presence>"
    )
}

/// Answers the server's caps disco#info query, if one comes; returns whether it did.
fn answer_caps_query(c: &mut Client) -> bool {
    let Some(q) = c.try_next(Duration::from_secs(3)) else {
        return false;
    };
    if !(q.name == "iq" && q.attr("type") == Some("get")) {
        panic!("expected a disco#info query, got {q:?}");
    }
    let node = q
        .elements()
        .next()
        .and_then(|e| e.attr("node"))
        .expect("caps node")
        .to_owned();
    let mut disco = tune_disco();
    disco.set_attr("node", node);
    let mut body = String::new();
    disco.write_to(&mut body, "jabber:client");
    c.send(&format!(
        "<iq type='result' id='{}' to='{}'>{body}</iq>",
        q.attr("id").unwrap_or(""),
        q.attr("from").unwrap_or("")
    ));
    true
}

/// XEP-0163 with XEP-0115 caps against the daemon: filtered notifications to several
/// resources, the last item only when a node becomes of interest (not on a status update),
/// one disco#info query per unknown `ver`, notifications from the owner's bare JID.
#[test]
fn pep_caps_notifications_several_resources() {
    let d = Daemon::start(Options::default());
    let ca = d.cert.as_ref().expect("cert").clone();
    let mut a1 = login(&d, "alice", "alice-pw", "a1");
    let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "phone");
    bob.send("<presence/>");
    // Bob gets a presence subscription to Alice.
    bob.subscribe_presence("bob@localhost", &mut a1, "alice@localhost");
    // The account is a PEP service.
    let r = disco(&mut bob, "i0", "alice@localhost", INFO);
    let q = r.elements().next().expect("query");
    assert!(
        q.elements()
            .any(|e| e.name == "identity" && e.attr("type") == Some("pep")),
        "{r:?}"
    );
    // Alice publishes a tune (auto-create, PEP defaults).
    ok(&pep_publish(&mut a1, "p1", TUNE, &tune("First")));
    // Bob's caps: one query, then the last item (delayed) from alice@localhost.
    bob.send(&caps_presence("chat"));
    assert!(
        answer_caps_query(&mut bob),
        "the server asks for the unknown ver"
    );
    let m = bob.wait_for("last tune", |e| {
        e.name == "message" && e.child("event", EVENT).is_some()
    });
    assert_eq!(m.attr("from"), Some("alice@localhost"));
    assert!(m.child("delay", "urn:xmpp:delay").is_some(), "{m:?}");
    assert!(format!("{m:?}").contains("First"));
    // A status update with the same caps: no query, no second copy (no storm).
    bob.send(&caps_presence("away"));
    let quiet = bob.try_next(Duration::from_millis(700));
    assert!(
        quiet.as_ref().is_none_or(|e| e.name == "presence"),
        "nothing but presence after a status update: {quiet:?}"
    );
    // Alice's second resource with the same (now cached) caps: no query, her own last item.
    let mut a2 = Client::login(d.port, &ca, "alice", "alice-pw", "a2");
    a2.send(&caps_presence("online"));
    let first = a2.wait_for("own last tune", |e| {
        (e.name == "message" && e.child("event", EVENT).is_some())
            || (e.name == "iq" && e.attr("type") == Some("get"))
    });
    assert_eq!(first.name, "message", "cached ver: no query: {first:?}");
    // A new tune reaches both interested resources once; a1 (no caps) gets none.
    ok(&pep_publish(&mut a1, "p2", TUNE, &tune("Second")));
    for c in [&mut bob, &mut a2] {
        let m = c.wait_for("new tune", |e| {
            e.name == "message" && format!("{e:?}").contains("Second")
        });
        assert_eq!(m.attr("from"), Some("alice@localhost"));
        assert!(m.child("delay", "urn:xmpp:delay").is_none());
    }
    let stray = a1.try_next(Duration::from_millis(500));
    assert!(
        stray
            .as_ref()
            .is_none_or(|e| e.child("event", EVENT).is_none()),
        "a resource without +notify gets no event: {stray:?}"
    );
    // Bob loses his subscription: no more tunes.
    a1.send("<presence to='bob@localhost' type='unsubscribed'/>");
    ok(&pep_publish(&mut a1, "p3", TUNE, &tune("Third")));
    a2.wait_for("third tune", |e| {
        e.name == "message" && format!("{e:?}").contains("Third")
    });
    let late = bob.try_next(Duration::from_millis(700));
    assert!(
        late.as_ref()
            .is_none_or(|e| !format!("{e:?}").contains("Third")),
        "{late:?}"
    );
}

/// XEP-0163 interop: slixmpp's xep_0115/0163/0118/0084 plugins; one client publishes a tune
/// and an avatar, the other (a contact with `+notify` caps) receives them
/// (`tests/interop/slixmpp_pep.py`).
#[test]
fn slixmpp_xep0163_tune_and_avatar_to_a_contact_with_caps() {
    let d = Daemon::start(Options::default());
    run_slixmpp(
        "slixmpp PEP interop",
        "slixmpp_pep.py",
        &d,
        d.port,
        &[],
        true,
    );
}

/// An anonymous account's PEP nodes end with its last session, so anonymous users cannot
/// use up `pubsub_max_nodes` over time.
#[test]
fn pep_nodes_of_anonymous_accounts_end_with_them() {
    let d = Daemon::start(Options {
        extra: "[limits]\npubsub_max_nodes = 2\n",
        ..Options::default()
    });
    let anon = || anonymous(&d);
    let publish = |c: &mut Client, id: &str, node: &str| {
        pep_publish(c, id, node, "<item><x xmlns='urn:x'/></item>")
    };
    let mut a = anon();
    ok(&publish(&mut a, "a1", "urn:one"));
    ok(&publish(&mut a, "a2", "urn:two"));
    let mut b = anon();
    let r = publish(&mut b, "b1", "urn:one");
    assert_eq!(app_error(&r), "max-nodes-exceeded", "{r:?}");
    a.send("</stream:stream>");
    assert!(a.wait_closed(Duration::from_secs(5)));
    // The session end is processed (and its deletion staged) before b's next request.
    std::thread::sleep(Duration::from_millis(300));
    ok(&publish(&mut b, "b2", "urn:one"));
}

/// Issue 10 ("one stanza kills the daemon"): an anonymous disco#items with RSM
/// `<index>1</index>` and `<max>` = u64::MAX wrapped the paging arithmetic and the release
/// build aborted on a slice index. The daemon must answer it and keep answering.
#[test]
fn rsm_u64_max_disco_items_does_not_kill_the_daemon() {
    const SET: &str = "<set xmlns='http://jabber.org/protocol/rsm'><index>1</index><max>18446744073709551615</max></set>";
    let mut d = Daemon::start(Options::default());
    // The wrap needs a listing with at least one row: two nodes.
    let mut alice = login(&d, "alice", "alice-pw", "owner");
    for n in ["a", "b"] {
        ok(&set(&mut alice, n, &format!("<create node='{n}'/>")));
    }
    let mut anon = anonymous(&d);
    // The stanza exactly as reported. It has no id, which RFC 6120 requires, so the router
    // answers `bad-request` before pub-sub sees it.
    anon.send(&format!(
        "<iq type='get' to='pubsub.localhost'><query xmlns='{ITEMS}'>{SET}</query></iq>"
    ));
    let r = anon.wait_for("an answer to the id-less repro", |e| e.name == "iq");
    assert_eq!(r.attr("type"), Some("error"), "{r:?}");
    // With an id, as every client library sends it, the request reaches the paging code.
    let r = get(
        &mut anon,
        "rsm1",
        SERVICE,
        &format!("<query xmlns='{ITEMS}'>{SET}</query>"),
    );
    ok(&r);
    let q = r.elements().next().expect("query");
    let nodes: Vec<&str> = q.elements().filter_map(|i| i.attr("node")).collect();
    assert_eq!(nodes, vec!["b"], "{r:?}");
    // Still alive: a ping and a plain disco#items are answered, by the same connection and
    // by a new one.
    ok(&get(&mut anon, "ping1", "localhost", PING));
    ok(&disco(&mut alice, "d1", SERVICE, ITEMS));
    let mut again = login(&d, "bob", "bob-pw", "late");
    ok(&get(&mut again, "ping2", "localhost", PING));
    assert!(
        d.child.try_wait().expect("try_wait").is_none(),
        "the daemon exited:\n{}",
        d.log()
    );
}
