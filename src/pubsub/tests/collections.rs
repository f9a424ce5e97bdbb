//! XEP-0248 collection nodes.

use super::*;

/// The SHIM `Collection` header of a notification, if any.
fn collection_header(m: &Element) -> Option<String> {
    m.child("headers", NS_SHIM).and_then(|h| {
        h.elements()
            .find(|e| e.attr("name") == Some("Collection"))
            .map(Element::text)
    })
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
    let f = w.get_form(ALICE, NS_PUBSUB_OWNER, "<default type='collection'/>");
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
        w.ps_err(
            ALICE,
            "set",
            NS_PUBSUB,
            &format!("<publish node='blogs'><item>{P}</item></publish>")
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
    let coll = event_child(ev[0], "collection");
    assert_eq!(coll.attr("node"), Some("c"));
    assert_eq!(event_attr(coll, "associate", "node"), Some("n"));
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
    assert_eq!(
        w.ps_err(
            ALICE,
            "set",
            NS_PUBSUB_OWNER,
            "<collection node='c'><dissociate node='n'/></collection>"
        )
        .0,
        "bad-request"
    );
    // Unknown nodes: item-not-found.
    assert_eq!(
        w.ps_err(
            ALICE,
            "set",
            NS_PUBSUB_OWNER,
            "<collection node='c'><associate node='nope'/></collection>"
        )
        .0,
        "item-not-found"
    );
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
    let f = w.get_form(
        CAROL,
        NS_PUBSUB,
        &format!("<options node='a' jid='{CAROL}'/>"),
    );
    assert_eq!(f["pubsub#subscription_type"], vec!["items"]);
    assert_eq!(f["pubsub#subscription_depth"], vec!["2"]);
    // Persisted with the subscription.
    w.restart();
    w.publish_notifies_only(ALICE, "deep", CAROL);
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
    w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<affiliations node='secret'><affiliation jid='bob@localhost' affiliation='member'/></affiliations>");
    let (_, out) = w.publish(ALICE, "secret", None, P);
    assert_eq!(out.len(), 1);
    // Items retrieval on the collection leaves out leaves the requester cannot read.
    w.publish(ALICE, "secret", Some("s"), P);
    let (r, _) = w.pubsub_ok(CAROL, "get", NS_PUBSUB, "<items node='c'/>");
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
    w.pubsub_ok(BOB, "set", NS_PUBSUB, &format!("<subscribe jid='{BOB}'/>"));
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
    w.collection_with_leaves(ALICE, "c", &["x", "y"]);
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
    let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB, "<items node='c'/>");
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
    let (r, _) = w.pubsub_ok(
        BOB,
        "get",
        NS_PUBSUB,
        &format!("<items node='c'/><set xmlns='{NS_RSM}'><max>2</max></set>"),
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
    let (r, _) = w.pubsub_ok(
        BOB,
        "get",
        NS_PUBSUB,
        &format!("<items node='c'/><set xmlns='{NS_RSM}'><max>2</max><after>{last}</after></set>"),
    );
    assert_eq!(
        runs(&r),
        vec![
            ("y".to_owned(), vec!["y1".to_owned()]),
            ("x".to_owned(), vec!["x1".to_owned()]),
        ]
    );
    // max_items on a collection: the newest n overall.
    let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB, "<items node='c' max_items='1'/>");
    assert_eq!(runs(&r), vec![("x".to_owned(), vec!["x2".to_owned()])]);
    let (c, _) = w.items_after_err(BOB, "c", "nope");
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
    let mut w = World::with_node("n", &[]);
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
        let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB, "<items node='c' max_items='2'/>");
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
