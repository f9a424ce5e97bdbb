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
    assert!(w.engine.generic.nodes.contains_key(&node));
    let (r, _) = w.pubsub_ok(ALICE, "set", NS_PUBSUB, "<create node='named'/>");
    assert!(r.elements().next().is_none(), "named create: empty result");
    assert_eq!(
        w.ps_err(BOB, "set", NS_PUBSUB, "<create node='named'/>").0,
        "conflict"
    );
    // Remote entities may not create under the default `local` policy.
    assert_eq!(
        w.ps_err(EVE, "set", NS_PUBSUB, "<create node='e'/>").0,
        "forbidden"
    );
    // `admins` policy.
    let mut cfg = Config::default();
    cfg.pubsub.create_nodes = CreatePolicy::Admins;
    cfg.pubsub.admins = vec!["carol@localhost".into()];
    let mut w = World::with_config(cfg);
    assert_eq!(
        w.ps_err(ALICE, "set", NS_PUBSUB, "<create node='x'/>").0,
        "forbidden"
    );
    w.create(CAROL, "x", &[]);
    // An admin owns every node.
    w.pubsub_ok(CAROL, "set", NS_PUBSUB_OWNER, "<purge node='x'/>");
}

#[test]
fn xep0060_8_1_max_nodes_limit() {
    let mut cfg = Config::default();
    cfg.limits.pubsub_max_nodes = 2;
    let mut w = World::with_config(cfg);
    w.create(ALICE, "a", &[]);
    w.create(ALICE, "b", &[]);
    assert_eq!(
        w.ps_err(ALICE, "set", NS_PUBSUB, "<create node='c'/>"),
        ("not-allowed".into(), "max-nodes-exceeded".into())
    );
}
