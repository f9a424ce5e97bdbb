//! The timer: item expiry and leased subscriptions (XEP-0060 §12.18).

use super::*;

#[test]
fn xep0060_item_expire_hides_and_evicts_old_items() {
    let mut w = World::with_node("n", &[("pubsub#item_expire", "5")]);
    w.publish(ALICE, "n", Some("old"), P);
    w.now += 10_000;
    w.publish(ALICE, "n", Some("new"), P);
    assert_eq!(w.item_ids(BOB, "n", ""), vec!["new"]);
    w.restart();
    assert_eq!(
        w.engine.generic.nodes["n"].items.len(),
        1,
        "evicted from the store"
    );
}

#[test]
fn xep0060_12_18_leased_subscription_expires_on_the_timer() {
    let mut w = World::with_node("n", &[("pubsub#notify_sub", "1")]);
    assert_eq!(w.engine.next_deadline(), None);
    let end = w.now + 10_000;
    let s = w.subscribe_with(BOB, "n", &[("pubsub#expire", &xep0082(end))]);
    let subid = s.attr("subid").expect("subid").to_owned();
    assert_eq!(w.engine.next_deadline(), Some(end));
    assert!(w.engine.needs_rearm());
    assert_eq!(w.engine.arm(), Some(end));
    assert!(!w.engine.needs_rearm());
    // The options form shows the lease.
    let f = w.get_form(BOB, NS_PUBSUB, &format!("<options node='n' jid='{BOB}'/>"));
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
fn xep0060_12_x_item_expire_deletes_items_on_the_timer() {
    let mut w = World::with_node("n", &[("pubsub#item_expire", "10")]);
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
