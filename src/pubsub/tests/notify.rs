//! Presence-driven notifications and temporary subscriptions (XEP-0060 §12.4, §16.4.4).

use super::*;

#[test]
fn xep0060_12_4_temporary_subscriptions_end_with_presence() {
    let mut w = World::with_node("n", &[]);
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
    w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<purge node='n'/>");
    w.pubsub_ok(
        CAROL,
        "set",
        NS_PUBSUB,
        &format!("<unsubscribe node='n' jid='{CAROL}'/>"),
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
    let (_, out) = w.pubsub_ok(
        BOB,
        "set",
        NS_PUBSUB,
        &format!("<unsubscribe node='n' jid='{BOB}'/>"),
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
