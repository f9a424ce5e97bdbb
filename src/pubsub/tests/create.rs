//! Creating nodes (XEP-0060 §8.1).

use super::*;

#[test]
fn xep0060_8_1_create_named_instant_and_policy() {
    let mut w = World::new();
    let (r, _) = w.ps_ok(ALICE, "set", NS_PUBSUB, "<create/>");
    let node = r
        .child("create", NS_PUBSUB)
        .and_then(|c| c.attr("node"))
        .expect("instant node id")
        .to_owned();
    assert!(w.engine.nodes.contains_key(&node));
    let (r, _) = w.ok(
        ALICE,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='named'/></pubsub>"),
    );
    assert!(r.elements().next().is_none(), "named create: empty result");
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='named'/></pubsub>")
        )
        .0,
        "conflict"
    );
    // Remote entities may not create under the default `local` policy.
    assert_eq!(
        w.err(
            EVE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='e'/></pubsub>")
        )
        .0,
        "forbidden"
    );
    // `admins` policy.
    let mut cfg = Config::default();
    cfg.pubsub.create_nodes = CreatePolicy::Admins;
    cfg.pubsub.admins = vec!["carol@localhost".into()];
    let mut w = World::with_config(cfg);
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='x'/></pubsub>")
        )
        .0,
        "forbidden"
    );
    w.create(CAROL, "x", &[]);
    // An admin owns every node.
    w.ok(
        CAROL,
        "set",
        &format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='x'/></pubsub>"),
    );
}

#[test]
fn xep0060_8_1_max_nodes_limit() {
    let mut cfg = Config::default();
    cfg.limits.pubsub_max_nodes = 2;
    let mut w = World::with_config(cfg);
    w.create(ALICE, "a", &[]);
    w.create(ALICE, "b", &[]);
    assert_eq!(
        w.err(
            ALICE,
            "set",
            &format!("<pubsub xmlns='{NS_PUBSUB}'><create node='c'/></pubsub>")
        ),
        ("not-allowed".into(), "max-nodes-exceeded".into())
    );
}
