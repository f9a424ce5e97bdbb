//! Retrieving items and own subscriptions/affiliations (XEP-0060 §5.6, §5.7, §6.5).

use super::*;

#[test]
fn xep0060_5_6_and_5_7_own_subscriptions_and_affiliations() {
    let mut w = World::with_node("a", &[]);
    w.create(ALICE, "b", &[]);
    w.subscribe(BOB, "a", "bob@localhost");
    w.subscribe(BOB, "b", BOB);
    let (r, _) = w.ps_ok(BOB, "get", NS_PUBSUB, "<subscriptions/>");
    let subs = r.child("subscriptions", NS_PUBSUB).expect("subscriptions");
    let got: Vec<(&str, &str)> = subs
        .elements()
        .map(|s| (s.attr("node").unwrap_or(""), s.attr("jid").unwrap_or("")))
        .collect();
    assert_eq!(got, vec![("a", "bob@localhost"), ("b", BOB)]);
    let (r, _) = w.ps_ok(ALICE, "get", NS_PUBSUB, "<affiliations node='b'/>");
    let affs = r.child("affiliations", NS_PUBSUB).expect("affiliations");
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
fn xep0060_6_5_items_all_by_id_and_newest_n() {
    let mut w = World::with_node("n", &[]);
    for i in 1..=4 {
        w.publish(ALICE, "n", Some(&format!("i{i}")), P);
    }
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["i1", "i2", "i3", "i4"]);
    assert_eq!(w.item_ids(BOB, "n", " max_items='2'"), vec!["i3", "i4"]);
    let r = w.get_ok(
        BOB,
        "<items node='n'><item id='i2'/><item id='zz'/></items>",
    );
    assert_eq!(items_of(&r), vec!["i2"]);
    let item = r
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("items", NS_PUBSUB))
        .and_then(|i| i.child("item", NS_PUBSUB))
        .expect("item");
    assert_eq!(item.attr("publisher"), Some("alice@localhost"));
    assert_eq!(payload_text(item), Some("1".into()));
    assert_eq!(
        w.ps_err(BOB, "get", NS_PUBSUB, "<items/>"),
        nodeid_required()
    );
}

#[test]
fn xep0060_6_5_4_items_paged_with_rsm() {
    let mut w = World::with_node("n", &[]);
    for i in 1..=5 {
        w.publish(ALICE, "n", Some(&format!("i{i}")), P);
    }
    let page = |w: &mut World, set: &str| {
        let (r, _) = w.pubsub_ok(
            BOB,
            "get",
            NS_PUBSUB,
            &format!("<items node='n'/><set xmlns='{NS_RSM}'>{set}</set>"),
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
    let (c, _) = w.items_after_err(BOB, "n", "gone");
    assert_eq!(c, "item-not-found");
}

#[test]
fn xep0060_6_5_items_never_silently_truncated() {
    let mut w = World::with_small_outbox();
    w.create(ALICE, "n", &[]);
    let big = format!("<t xmlns='urn:t'>{}</t>", "x".repeat(1000));
    for i in 1..=10 {
        w.publish(ALICE, "n", Some(&format!("i{i}")), &big);
    }
    let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB, "<items node='n'/>");
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
    let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB, "<items node='n' max_items='1'/>");
    assert!(rsm_of(&r).is_none());
}
