//! Deleting an item from a node (XEP-0060 §7.2).

use super::*;

#[test]
fn xep0060_7_2_retract_with_notify() {
    let mut w = World::with_node("n", &[("pubsub#notify_retract", "0")]);
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
    let r = event_items_child(&notes[0].1, "retract");
    assert_eq!(r.attr("id"), Some("b"));
    assert_eq!(w.err(ALICE, "set", &retract("b", "")).0, "item-not-found");
    assert_eq!(w.err(BOB, "set", &retract("b", "")).0, "item-not-found");
    w.publish(ALICE, "n", Some("c"), P);
    assert_eq!(w.err(BOB, "set", &retract("c", "")).0, "forbidden");
    assert_eq!(
        w.ps_err(ALICE, "set", NS_PUBSUB, "<retract node='n'/>"),
        ("bad-request".into(), "item-required".into())
    );
    assert!(w.item_ids(BOB, "n", "") == vec!["c"]);
}
