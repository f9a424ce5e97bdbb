//! Access models (XEP-0060 §4.5, §6.1.3), publish models, and access lost on a roster
//! change.

use super::*;

#[test]
fn xep0060_6_1_3_access_models_and_outcast() {
    let mut w = World::with_node("pres", &[("pubsub#access_model", "presence")]);
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
        w.ps_err(BOB, "get", NS_PUBSUB, "<items node='wl'/>"),
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
    w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<affiliations node='open'><affiliation jid='carol@localhost' affiliation='outcast'/></affiliations>");
    assert_eq!(
        w.err(CAROL, "set", &sub("open", "carol@localhost")).0,
        "forbidden"
    );
    let (_, notes) = w.publish(ALICE, "open", None, P);
    assert!(notes.is_empty(), "the outcast lost its subscription");
}

#[test]
fn xep0060_4_publish_model_subscribers_and_open() {
    let mut w = World::with_node("s", &[("pubsub#publish_model", "subscribers")]);
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
fn xep0060_access_lost_on_roster_change_cancels_generic_subscription() {
    let mut w = World::with_node("pres", &[("pubsub#access_model", "presence")]);
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
