//! Numbers from peers (issue 10).
//!
//! Every number a peer sends (RSM `<max/>` and `<index/>`, `max_items`, numeric form fields,
//! XEP-0082 dates) either gets the protocol's error or a clamped result; none may panic or
//! wrap. One test per call site, named after what it protects.

use super::*;

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
    (rows, rsm_summary(set))
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
    w.collection_with_leaves(ALICE, "c", &["x", "y"]);
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

/// Bob's disco#items request with the RSM `<set/>` contents `set` (see `disco_items_rsm`):
/// its page (see `disco_page`).
fn disco(w: &mut World, node: Option<&str>, set: &str) -> (Vec<String>, RsmSummary) {
    disco_page(&w.ok(BOB, "get", &disco_items_rsm(node, set)).0)
}

/// Bob's items request on leaf `node` with the RSM `<set/>` contents `set`: (the item ids,
/// the RSM set).
fn leaf(w: &mut World, node: &str, set: &str) -> (Vec<String>, Option<RsmSummary>) {
    let r = w.ok(BOB, "get", &items_rsm(node, set)).0;
    (items_of(&r), rsm_of(&r))
}

/// [`leaf`] on collection `node`: the item ids of every `<items/>` of the reply.
fn coll(w: &mut World, node: &str, set: &str) -> (Vec<String>, Option<RsmSummary>) {
    let r = w.ok(BOB, "get", &items_rsm(node, set)).0;
    (all_item_ids(&r), rsm_of(&r))
}

/// The `<max/>` of the issue-10 repro alone.
const MAX_U64: &str = "<max>18446744073709551615</max>";

/// `u64::MAX`, one past it and one far past it.
const HUGE: [&str; 3] = [
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
];

/// An empty page of a set of three: no ids, and only the count.
fn empty_of_3() -> (Vec<String>, Option<RsmSummary>) {
    (Vec::new(), Some((None, None, None, "3".into())))
}

/// Asserts that the RSM `set` starts at index 1 of a set of three.
#[track_caller]
fn index_1_of_3(set: &RsmSummary) {
    assert_eq!((set.1.as_deref(), set.3.as_str()), (Some("1"), "3"));
}

#[test]
fn rsm_max_u64_does_not_panic_disco_items() {
    let mut w = paging_world(Config::default());
    let (rows, set) = disco(&mut w, None, RSM_U64_MAX);
    // The service lists n1, n2, n3 and c (x and y sit below c).
    assert_eq!(rows, vec!["n1", "n2", "n3"]);
    assert_eq!(set.1.as_deref(), Some("1"));
    assert_eq!(set.3, "4");
    // The same on a node's item list.
    let (rows, set) = disco(&mut w, Some("n1"), RSM_U64_MAX);
    assert_eq!(rows, vec!["i2", "i3"]);
    index_1_of_3(&set);
    // After the last row, and from the end, with the largest max.
    let after = format!("{MAX_U64}<after>i3</after>");
    assert_eq!(disco(&mut w, Some("n1"), &after).0, Vec::<String>::new());
    let before = format!("{MAX_U64}<before/>");
    assert_eq!(disco(&mut w, Some("n1"), &before).0, vec!["i1", "i2", "i3"]);
}

#[test]
fn rsm_max_u64_does_not_panic_items() {
    let mut w = paging_world(Config::default());
    let (ids, set) = leaf(&mut w, "n1", RSM_U64_MAX);
    index_1_of_3(&set.expect("set"));
    assert_eq!(ids, vec!["i2", "i3"]);
    let max = MAX_U64;
    for (set, want) in [
        (format!("{max}<after>i1</after>"), vec!["i2", "i3"]),
        (format!("{max}<before>i3</before>"), vec!["i1", "i2"]),
        (format!("{max}<before/>"), vec!["i1", "i2", "i3"]),
        (max.to_owned(), vec!["i1", "i2", "i3"]),
    ] {
        assert_eq!(leaf(&mut w, "n1", &set).0, want, "{set}");
    }
}

#[test]
fn rsm_max_u64_does_not_panic_collection_items() {
    let mut w = paging_world(Config::default());
    let (ids, set) = coll(&mut w, "c", RSM_U64_MAX);
    // Newest first: x2, y1, x1; index 1 starts at y1.
    assert_eq!(ids, vec!["y1", "x1"]);
    index_1_of_3(&set.expect("set"));
    let before = format!("{MAX_U64}<before/>");
    assert_eq!(coll(&mut w, "c", &before).0, vec!["x2", "y1", "x1"]);
}

/// XEP-0059 §2.6: an index at or past the end of the set is an empty page (with the count),
/// not an error.
#[test]
fn rsm_index_past_end_is_an_empty_page_at_every_call_site() {
    let mut w = paging_world(Config::default());
    let huge = ["18446744073709551615", "99999999999999999999999999"];
    for index in ["3", "4"].into_iter().chain(huge) {
        let set = format!("<index>{index}</index><max>2</max>");
        let (rows, s) = disco(&mut w, Some("n1"), &set);
        assert_eq!(
            (rows, s),
            (vec![], (None, None, None, "3".into())),
            "{index}"
        );
        // The service lists four nodes: index 3 is its last one.
        let (rows, s) = disco(&mut w, None, &set);
        let want = usize::from(index == "3");
        assert_eq!((rows.len(), s.3.as_str()), (want, "4"), "{index}");
        assert_eq!(leaf(&mut w, "n1", &set), empty_of_3(), "{index}");
        assert_eq!(coll(&mut w, "c", &set), empty_of_3(), "{index}");
    }
    // The last index still has its item.
    assert_eq!(leaf(&mut w, "n1", "<index>2</index>").0, vec!["i3"]);
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
    assert_eq!(leaf(&mut w, "n1", "<max>0</max>"), empty_of_3());
    assert_eq!(leaf(&mut w, "n1", "<max> +2 </max>").0, vec!["i1", "i2"]);
}

/// A `<max/>` above `limits.pubsub_max_page_items` (or none) gets a page of that size,
/// which XEP-0059 allows; the client pages on with `<after/>`.
#[test]
fn rsm_max_is_clamped_to_the_page_limit() {
    let mut cfg = Config::default();
    cfg.limits.pubsub_max_page_items = 2;
    let mut w = paging_world(cfg);
    for set in ["<max>3</max>", "<max>99999999999999999999999</max>", ""] {
        assert_eq!(leaf(&mut w, "n1", set).0, vec!["i1", "i2"], "{set:?}");
        let (rows, s) = disco(&mut w, None, set);
        assert_eq!((rows.len(), s.3.as_str()), (2, "4"), "{set:?}");
        assert_eq!(coll(&mut w, "c", set).0, vec!["x2", "y1"], "{set:?}");
    }
    let before = "<max>5</max><before/>";
    assert_eq!(leaf(&mut w, "n1", before).0, vec!["i2", "i3"]);
    let after = "<max>5</max><after>i2</after>";
    assert_eq!(leaf(&mut w, "n1", after).0, vec!["i3"]);
}

/// `<items max_items='…'/>`: any size is the newest that many (never a wrap, the same on
/// 32-bit targets); negative or non-numeric is `bad-request`.
#[test]
fn items_max_items_u64_max_does_not_panic() {
    let mut w = paging_world(Config::default());
    for m in HUGE {
        let max_items = format!(" max_items='{m}'");
        let all = vec!["i1", "i2", "i3"];
        assert_eq!(w.item_ids(BOB, "n1", &max_items), all, "{m}");
        let c = format!("<items node='c'{max_items}/>");
        let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB, &c);
        assert_eq!(all_item_ids(&r), vec!["x2", "y1", "x1"], "{m}");
        // With RSM on top.
        let items = format!("<items node='n1'{max_items}/>");
        let rsm = format!("<set xmlns='{NS_RSM}'>{RSM_U64_MAX}</set>");
        let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB, &format!("{items}{rsm}"));
        assert_eq!(items_of(&r), vec!["i2", "i3"], "{m}");
    }
    for m in ["-1", "", "two", "1.0", "-18446744073709551615"] {
        for node in ["n1", "c"] {
            let items = format!("<items node='{node}' max_items='{m}'/>");
            let body = format!("<pubsub xmlns='{NS_PUBSUB}'>{items}</pubsub>");
            assert_eq!(w.err(BOB, "get", &body).0, "bad-request", "{m:?} on {node}");
        }
    }
}

/// Numeric configuration fields (XEP-0060 §8.2.4): huge, negative, empty or non-numeric
/// values are `not-acceptable`, at configure and at create-and-configure, and change nothing.
#[test]
fn config_numbers_huge_or_negative_are_not_acceptable() {
    let mut w = World::with_node("n", &[("pubsub#max_items", "5")]);
    w.collection(ALICE, "c", &[]);
    let odd = ["-1", "-18446744073709551616", "", "lots", "1e9"];
    let huge: Vec<&str> = HUGE.into_iter().chain(odd).collect();
    for field in [
        "pubsub#max_items",
        "pubsub#max_payload_size",
        "pubsub#item_expire",
    ] {
        for &v in &huge {
            let (c, _) = w.configure_err(ALICE, "n", &[(field, v)]);
            assert_eq!(c, "not-acceptable", "{field} = {v:?}");
            let configure = form(FORM_NODE_CONFIG, &[(field, v)]);
            let create = "<create node='new'/>";
            let body = format!(
                "<pubsub xmlns='{NS_PUBSUB}'>{create}<configure>{configure}</configure></pubsub>"
            );
            let (c, _) = w.err(ALICE, "set", &body);
            assert_eq!(c, "not-acceptable", "create with {field} = {v:?}");
        }
    }
    for v in huge {
        let (c, _) = w.configure_err(ALICE, "c", &[("pubsub#children_max", v)]);
        assert_eq!(c, "not-acceptable", "children_max = {v:?}");
    }
    let max_items = |w: &mut World| w.config_of(ALICE, "n")["pubsub#max_items"].clone();
    assert_eq!(max_items(&mut w), vec!["5".to_owned()]);
    assert!(!w.engine.generic.nodes.contains_key("new"));
    // `max` stays the word for the cap.
    let cap = form(FORM_NODE_CONFIG, &[("pubsub#max_items", "max")]);
    w.configure(ALICE, "n", &cap);
    assert_eq!(max_items(&mut w), vec!["max".to_owned()]);
}
