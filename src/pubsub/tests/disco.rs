//! Service discovery (XEP-0060 §5.1–§5.5).

use super::*;

#[test]
fn xep0060_5_1_disco_info_advertises_exactly_the_implemented_features() {
    let mut w = World::new();
    let q = w.disco_info(ALICE, "");
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
    let mut w = World::with_node("n1", &[("pubsub#title", "One")]);
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
    let q = w.disco_info(BOB, " node='n'");
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
fn xep0060_5_2_disco_items_paged_and_bounded() {
    let mut w = World::with_small_outbox();
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
