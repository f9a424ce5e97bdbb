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

/// A `<pubsub/>` request in namespace `ns` around `inner`.
fn ps(ns: &str, inner: &str) -> String {
    format!("<pubsub xmlns='{ns}'>{inner}</pubsub>")
}

/// Create `node` with the configuration form `config`.
fn create_body(node: &str, config: &str) -> String {
    ps(
        NS_PUBSUB,
        &format!("<create node='{node}'/><configure>{config}</configure>"),
    )
}

/// Create `node` as a child of every collection in `parents`.
fn create_in(w: &mut World, node: &str, parents: &[&str]) {
    w.ok(
        ALICE,
        "set",
        &create_body(node, &config_form(&multi("pubsub#collection", parents))),
    );
}

/// The owner request that associates `child` with `collection`.
fn associate(collection: &str, child: &str) -> String {
    ps(
        NS_PUBSUB_OWNER,
        &format!("<collection node='{collection}'><associate node='{child}'/></collection>"),
    )
}

/// Asserts that `body`, set by `from`, fails with `condition` and the application
/// condition `app`.
#[track_caller]
fn refused(w: &mut World, from: &str, body: &str, condition: &str, app: &str) {
    assert_eq!(w.err(from, "set", body), (condition.into(), app.into()));
}

/// Asserts the type of the answer to Alice configuring `node` with `config`.
#[track_caller]
fn configured(w: &mut World, node: &str, config: &str, ty: &str) {
    let out = w.configure(ALICE, node, config);
    assert_eq!(out[0].1.attr("type"), Some(ty), "{out:?}");
}

/// Alice's collections `(node, parent)`, in order; a parent `""` is the root.
fn collections(w: &mut World, tree: &[(&str, &str)]) {
    for (node, parent) in tree {
        if parent.is_empty() {
            w.collection(ALICE, node, &[]);
        } else {
            w.collection(ALICE, node, &[("pubsub#collection", parent)]);
        }
    }
}

/// The stanzas of `out` addressed to `to`.
fn sent_to<'a>(out: &'a [(String, Element)], to: &str) -> Vec<&'a Element> {
    out.iter()
        .filter(|(t, _)| t == to)
        .map(|(_, m)| m)
        .collect()
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
    let body = create_body(
        "x",
        &form(FORM_NODE_CONFIG, &[("pubsub#collection", "musings")]),
    );
    refused(&mut w, ALICE, &body, "not-allowed", "invalid-options");
}

#[test]
fn xep0248_collection_and_children_kept_consistent_both_ways() {
    let mut w = World::new();
    w.collection(ALICE, "c1", &[]);
    w.collection(ALICE, "c2", &[]);
    create_in(&mut w, "n", &["c1", "c2"]);
    assert_eq!(w.config_of(ALICE, "c1")["pubsub#children"], vec!["n"]);
    assert_eq!(w.config_of(ALICE, "c2")["pubsub#children"], vec!["n"]);
    assert_eq!(
        w.config_of(ALICE, "n")["pubsub#collection"],
        vec!["c1", "c2"]
    );
    // Emptying c2's children removes c2 from n's parents.
    configured(
        &mut w,
        "c2",
        &config_form(&multi("pubsub#children", &[])),
        "result",
    );
    assert_eq!(w.config_of(ALICE, "n")["pubsub#collection"], vec!["c1"]);
    // Setting n's parents to none attaches it to the root, which the form shows.
    configured(
        &mut w,
        "n",
        &config_form(&multi("pubsub#collection", &[""])),
        "result",
    );
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
    let ev = sent_to(&out[1..], BOB);
    assert_eq!(ev.len(), 1, "{out:?}");
    let coll = event_child(ev[0], "collection");
    assert_eq!(coll.attr("node"), Some("c"));
    assert_eq!(event_attr(coll, "associate", "node"), Some("n"));
    assert_eq!(w.config_of(ALICE, "n")["pubsub#collection"], vec!["c"]);
    let out = w.assoc(ALICE, "dissociate", "c", "n");
    assert_eq!(out[0].1.attr("type"), Some("result"));
    let m = sent_to(&out, BOB);
    assert!(
        event(m.first().expect("dissociate event"))
            .child("collection", NS_PUBSUB_EVENT)
            .and_then(|c| c.child("dissociate", NS_PUBSUB_EVENT))
            .is_some()
    );
    // Node is not associated: bad-request.
    let out = w.assoc(ALICE, "dissociate", "c", "n");
    assert_eq!(out[0].1.attr("type"), Some("error"));
    let dissociate = "<collection node='c'><dissociate node='n'/></collection>";
    let (condition, _) = w.ps_err(ALICE, "set", NS_PUBSUB_OWNER, dissociate);
    assert_eq!(condition, "bad-request");
    // Unknown nodes: item-not-found.
    assert_eq!(
        w.err(ALICE, "set", &associate("c", "nope")).0,
        "item-not-found"
    );
}

#[test]
fn xep0248_cycle_not_allowed() {
    let mut w = World::new();
    collections(&mut w, &[("a", ""), ("b", "a"), ("c", "b")]);
    refused(
        &mut w,
        ALICE,
        &associate("c", "a"),
        "not-allowed",
        "invalid-options",
    );
    let got = w.configure_err(ALICE, "a", &[("pubsub#collection", "c")]);
    assert_eq!(got, ("not-allowed".into(), "invalid-options".into()));
    // Nothing changed.
    assert_eq!(w.config_of(ALICE, "a")["pubsub#collection"], vec![""]);
    assert_eq!(w.config_of(ALICE, "a")["pubsub#children"], vec!["b"]);
}

#[test]
fn xep0248_children_max_exceeded() {
    let mut w = World::new();
    w.collection(ALICE, "c", &[("pubsub#children_max", "1")]);
    w.create(ALICE, "n1", &[("pubsub#collection", "c")]);
    let body = create_body("n2", &form(FORM_NODE_CONFIG, &[("pubsub#collection", "c")]));
    // XEP-0248 "maximum number of children exceeded": not-allowed + max-nodes-exceeded.
    refused(&mut w, ALICE, &body, "not-allowed", "max-nodes-exceeded");
    w.create(ALICE, "n2", &[]);
    refused(
        &mut w,
        ALICE,
        &associate("c", "n2"),
        "not-allowed",
        "max-nodes-exceeded",
    );
    let children = config_form(&multi("pubsub#children", &["n1", "n2"]));
    configured(&mut w, "c", &children, "error");
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
    let body = associate;
    assert_eq!(w.err(BOB, "set", &body("c", "bobs")).0, "forbidden");
    assert_eq!(
        w.config_of(ALICE, "c")["pubsub#children_association_policy"],
        vec!["owner"]
    );
    // Whitelisted, he may.
    let whitelist = format!(
        "{}{}",
        multi("pubsub#children_association_policy", &["whitelist"]),
        multi("pubsub#children_association_whitelist", &["bob@localhost"])
    );
    configured(&mut w, "c", &config_form(&whitelist), "result");
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
    collections(&mut w, &[("top", ""), ("c1", "top"), ("c2", "top")]);
    create_in(&mut w, "leaf", &["c1", "c2"]);
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
    let bob = sent_to(&out, BOB);
    assert_eq!(bob.len(), 1, "one message per subscriber: {out:?}");
    assert_eq!(
        items_node(bob[0]).as_deref(),
        Some("leaf"),
        "the leaf's node attribute"
    );
    let via = collection_header(bob[0]).expect("Collection header");
    assert!(via == "c1" || via == "c2", "the nearest collection: {via}");
    let carol = sent_to(&out, CAROL);
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
        &ps(
            NS_PUBSUB,
            "<retract node='leaf' notify='1'><item id='i1'/></retract>",
        ),
    );
    let bob = sent_to(&out, BOB);
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
    collections(&mut w, &[("a", ""), ("b", "a")]);
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
    create_in(&mut w, "both", &["c", "other"]);
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

/// Asserts the `<items/>` of a collection's items reply `r`: (leaf, item ids), in order.
#[track_caller]
fn assert_runs(r: &Element, want: &[(&str, &[&str])]) {
    let runs: Vec<(String, Vec<String>)> = r
        .child("pubsub", NS_PUBSUB)
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
        .unwrap_or_default();
    let want: Vec<(String, Vec<String>)> = want
        .iter()
        .map(|(n, ids)| (n.to_string(), ids.iter().map(|i| i.to_string()).collect()))
        .collect();
    assert_eq!(runs, want);
}

#[test]
fn xep0248_items_on_collection_newest_first_rsm() {
    let mut w = World::new();
    w.collection_with_leaves(ALICE, "c", &["x", "y"]);
    w.publish(ALICE, "x", Some("x1"), P);
    w.publish(ALICE, "y", Some("y1"), P);
    w.publish(ALICE, "y", Some("y2"), P);
    w.publish(ALICE, "x", Some("x2"), P);
    let r = w.get_ok(BOB, "<items node='c'/>");
    // One <items/> per run of the same leaf, newest first.
    assert_runs(&r, &[("x", &["x2"]), ("y", &["y2", "y1"]), ("x", &["x1"])]);
    // RSM: two per page, then the rest after the last one.
    let r = w.get_ok(
        BOB,
        &format!("<items node='c'/><set xmlns='{NS_RSM}'><max>2</max></set>"),
    );
    assert_runs(&r, &[("x", &["x2"]), ("y", &["y2"])]);
    let rsm = rsm_of(&r).expect("rsm");
    assert_eq!(rsm.3, "4");
    let last = rsm.2.expect("last");
    let r = w.get_ok(
        BOB,
        &format!("<items node='c'/><set xmlns='{NS_RSM}'><max>2</max><after>{last}</after></set>"),
    );
    assert_runs(&r, &[("y", &["y1"]), ("x", &["x1"])]);
    // max_items on a collection: the newest n overall.
    let r = w.get_ok(BOB, "<items node='c' max_items='1'/>");
    assert_runs(&r, &[("x", &["x2"])]);
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
    let bob = sent_to(&out, BOB);
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
    let to_collection = form(FORM_NODE_CONFIG, &[("pubsub#node_type", "collection")]);
    configured(&mut w, "n", &to_collection, "result");
    assert_eq!(
        w.config_of(ALICE, "n")["pubsub#node_type"],
        vec!["collection"]
    );
    let got = w.configure_err(ALICE, "n", &[("pubsub#node_type", "leaf")]);
    assert_eq!(got, ("not-allowed".into(), "invalid-options".into()));
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
