//! XEP-0163 personal eventing, and the PEP profiles built on it (XEP-0223, XEP-0402,
//! XEP-0084).

use super::*;

const ALICE_B: &str = "alice@localhost/b";
/// The `to` of a request to alice's PEP service.
const AT_ALICE: Option<&str> = Some("alice@localhost");

const TUNE: &str = "http://jabber.org/protocol/tune";

const TUNE_P: &str =
    "<tune xmlns='http://jabber.org/protocol/tune'><title>Yesterday</title></tune>";

#[test]
fn xep0163_5_auto_create_defaults_and_6_disco_filtered() {
    let mut w = World::new();
    let out = w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    result(&out);
    assert_eq!(
        w.engine
            .pep_node_count(&Jid::parse("alice@localhost").expect("jid")),
        1
    );
    assert_eq!(w.engine.node_count(), 0, "not on the generic service");
    let c = w.pep_config(ALICE, TUNE);
    assert_eq!(c["pubsub#access_model"], vec!["presence"]);
    assert_eq!(c["pubsub#max_items"], vec!["1"]);
    assert_eq!(
        c["pubsub#send_last_published_item"],
        vec!["on_sub_and_presence"]
    );
    // disco#items on the account: only nodes the requester may read.
    let items = |w: &mut World, from: &str| -> Vec<String> {
        let out = w.pep_iq(
            from,
            AT_ALICE,
            "get",
            &format!("<query xmlns='{NS_DISCO_ITEMS}'/>"),
        );
        item_nodes(result(&out))
    };
    assert!(items(&mut w, BOB).is_empty());
    w.presence_sub("alice@localhost", "bob@localhost", true);
    assert_eq!(items(&mut w, BOB), vec![TUNE.to_owned()]);
    // Others may not publish, create or configure.
    let publish = |node: &str| format!("<publish node='{node}'><item>{TUNE_P}</item></publish>");
    let out = w.pep_pubsub(BOB, AT_ALICE, "set", &publish(TUNE));
    assert_eq!(error_of(&out).0, "forbidden");
    let out = w.pep_pubsub(BOB, AT_ALICE, "set", &publish("x"));
    assert_eq!(error_of(&out).0, "item-not-found");
    // PEP services are flat.
    let out = w.pep_pubsub(
        ALICE,
        None,
        "set",
        &format!(
            "<create node='c'/><configure>{}</configure>",
            form(FORM_NODE_CONFIG, &[("pubsub#node_type", "collection")])
        ),
    );
    assert_eq!(
        error_of(&out),
        ("feature-not-implemented".into(), "unsupported".into())
    );
    // Items retrieval by a contact with access, from the account's JID.
    let out = w.pep_pubsub(BOB, AT_ALICE, "get", &format!("<items node='{TUNE}'/>"));
    assert_eq!(items_of(result(&out)), vec!["t1"]);
    let out = w.pep_pubsub(CAROL, AT_ALICE, "get", &format!("<items node='{TUNE}'/>"));
    assert_eq!(
        error_of(&out),
        (
            "not-authorized".into(),
            "presence-subscription-required".into()
        )
    );
}

#[test]
fn xep0163_4_3_1_owner_resources_and_contacts_notified() {
    let mut w = World::new();
    w.interested(ALICE, &[TUNE]);
    w.interested(ALICE_B, &[TUNE]);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[TUNE]);
    // Carol has a subscription but no +notify; Dave wants it without a subscription.
    w.presence_sub("alice@localhost", "carol@localhost", true);
    w.online(CAROL, "online");
    w.interested("dave@localhost/d", &[TUNE]);
    let out = w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    result(&out);
    let mut to: Vec<&str> = out[1..].iter().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, vec![ALICE, ALICE_B, BOB]);
    for (_, m) in &out[1..] {
        assert_eq!(m.attr("from"), AT_ALICE, "from the owner's bare JID");
        assert_eq!(m.attr("type"), Some("headline"));
        assert_eq!(items_node(m).as_deref(), Some(TUNE));
    }
    // Retractions and purges reach the same set.
    let out = w.pep_pubsub(
        ALICE,
        None,
        "set",
        &format!("<retract node='{TUNE}' notify='1'><item id='t1'/></retract>"),
    );
    result(&out);
    assert_eq!(out.len(), 4);
    // An explicit subscription is not notified twice.
    w.pep_publish(ALICE, TUNE, "t2", TUNE_P, &[]);
    let out = w.pep_pubsub(
        BOB,
        AT_ALICE,
        "set",
        &format!("<subscribe node='{TUNE}' jid='{BOB}'/>"),
    );
    result(&out);
    let out = w.pep_publish(ALICE, TUNE, "t3", TUNE_P, &[]);
    assert_eq!(out.iter().filter(|(t, _)| t == BOB).count(), 1, "{out:?}");
}

#[test]
fn xep0163_4_3_4_last_item_on_initial_presence_only() {
    let mut w = World::new();
    w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[TUNE]);
    let bob = Jid::parse(BOB).expect("jid");
    // Initial presence: every interest is new, so the last item comes, with a delay stamp.
    let added: Vec<Rc<str>> = vec![Rc::from(TUNE)];
    let out = parse_out(
        w.engine
            .pep_interest_added(&w.rosters, &w.store, &bob, &added, w.now),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.attr("from"), AT_ALICE);
    assert!(out[0].1.child("delay", NS_DELAY).is_some());
    // A presence update with the same caps adds nothing: nothing is sent (no storm).
    let out = w
        .engine
        .pep_interest_added(&w.rosters, &w.store, &bob, &[], w.now);
    assert!(out.is_empty());
    // Without a presence subscription, nothing.
    let carol = Jid::parse(CAROL).expect("jid");
    w.interested(CAROL, &[TUNE]);
    let out = w
        .engine
        .pep_interest_added(&w.rosters, &w.store, &carol, &added, w.now);
    assert!(out.is_empty());
    // The owner's own new resource gets its own last item.
    w.interested(ALICE_B, &[TUNE]);
    let alice_b = Jid::parse(ALICE_B).expect("jid");
    let out = w
        .engine
        .pep_interest_added(&w.rosters, &w.store, &alice_b, &added, w.now);
    assert_eq!(out.len(), 1);
}

#[test]
fn xep0163_4_3_4_caps_change_sends_only_new_nodes() {
    let mut w = World::new();
    const MOOD: &str = "http://jabber.org/protocol/mood";
    w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    w.pep_publish(
        ALICE,
        MOOD,
        "m1",
        "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>",
        &[],
    );
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[TUNE, MOOD]);
    let out = interest_added(&mut w, BOB, MOOD);
    assert_eq!(out.len(), 1);
    assert_eq!(items_node(&out[0].1).as_deref(), Some(MOOD));
}

#[test]
fn xep0163_7_1_access_lost_cancels_subscription() {
    let mut w = World::new();
    w.pep_publish(ALICE, TUNE, "t1", TUNE_P, &[]);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    let out = w.pep_pubsub(
        BOB,
        AT_ALICE,
        "set",
        &format!("<subscribe node='{TUNE}' jid='bob@localhost'/>"),
    );
    result(&out);
    // Alice cancels Bob's presence subscription.
    w.presence_sub("alice@localhost", "bob@localhost", false);
    let owner = Jid::parse("alice@localhost").expect("jid");
    let contact = Jid::parse("bob@localhost").expect("jid");
    let out = parse_out(
        w.engine
            .pep_roster_changed(&w.rosters, &w.store, &owner, &contact, false, w.now),
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let sub = event_child(&out[0].1, "subscription");
    assert_eq!(sub.attr("subscription"), Some("none"));
    w.online(BOB, "online");
    let out = w.pep_publish(ALICE, TUNE, "t2", TUNE_P, &[]);
    assert_eq!(out.len(), 1, "no notification to Bob: {out:?}");
    // Gaining access again sends the last item to interested resources.
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.rosters.2.insert(BOB.to_owned(), vec![TUNE.to_owned()]);
    let out = parse_out(
        w.engine
            .pep_roster_changed(&w.rosters, &w.store, &owner, &contact, true, w.now),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, BOB);
    // The cancellation survived a restart.
    w.restart();
    let out = w.pep_pubsub(BOB, AT_ALICE, "get", "<subscriptions/>");
    let r = result(&out);
    assert_eq!(
        r.child("pubsub", NS_PUBSUB)
            .and_then(|p| p.child("subscriptions", NS_PUBSUB))
            .map(|s| s.elements().count()),
        Some(0)
    );
}

#[test]
fn xep0223_private_storage_whitelist() {
    let mut w = World::new();
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#access_model", "whitelist"),
    ];
    let out = w.pep_publish(ALICE, "eu:siacs:conversations:private", "current", P, &opts);
    result(&out);
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &["eu:siacs:conversations:private"]);
    w.interested(ALICE_B, &["eu:siacs:conversations:private"]);
    let out = w.pep_publish(ALICE, "eu:siacs:conversations:private", "current", P, &opts);
    let to: Vec<&str> = out[1..].iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(to, vec![ALICE_B], "only the owner's resources");
    let out = w.pep_pubsub(
        BOB,
        AT_ALICE,
        "get",
        "<items node='eu:siacs:conversations:private'/>",
    );
    assert_eq!(error_of(&out).0, "not-allowed");
    // XEP-0222 public storage: open.
    let microblog = |w: &mut World, model: &str| {
        w.pep_publish(
            ALICE,
            "urn:xmpp:microblog:0",
            "p",
            P,
            &[("pubsub#access_model", model)],
        )
    };
    result(&microblog(&mut w, "open"));
    let out = w.pep_pubsub(
        CAROL,
        AT_ALICE,
        "get",
        "<items node='urn:xmpp:microblog:0'/>",
    );
    assert_eq!(items_of(result(&out)), vec!["p"]);
    // A precondition that does not match: conflict.
    assert_precondition_not_met(&microblog(&mut w, "presence"));
}

#[test]
fn forced_config_bookmarks_whitelist() {
    let mut w = World::new();
    const BM: &str = "urn:xmpp:bookmarks:1";
    let bm = "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'/>";
    // Auto-create without options: forced whitelist.
    result(&w.pep_publish(ALICE, BM, "room@muc", bm, &[]));
    assert_eq!(
        w.pep_config(ALICE, BM)["pubsub#access_model"],
        vec!["whitelist"]
    );
    // Changing it is refused, naming the field.
    let out = w.pep_iq(
        ALICE,
        None,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='{BM}'>{}</configure></pubsub>",
            form(FORM_NODE_CONFIG, &[("pubsub#access_model", "open")])
        ),
    );
    assert_eq!(error_of(&out).0, "not-acceptable");
    // Auto-create asking for open: precondition-not-met, nothing created.
    let out = w.pep_publish(
        "carol@localhost/c",
        "storage:bookmarks",
        "current",
        P,
        &[("pubsub#access_model", "open")],
    );
    assert_precondition_not_met(&out);
    assert_eq!(
        w.engine
            .pep_node_count(&Jid::parse("carol@localhost").expect("jid")),
        0
    );
    // The operator's table replaces the default.
    let mut config = Config::default();
    config.pubsub.pep_force.clear();
    let mut w = World::with_config(config);
    result(&w.pep_publish(ALICE, BM, "room@muc", bm, &[]));
    assert_eq!(
        w.pep_config(ALICE, BM)["pubsub#access_model"],
        vec!["presence"]
    );
}

#[test]
fn xep0402_max_items_max() {
    let mut w = World::new();
    const BM: &str = "urn:xmpp:bookmarks:1";
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ];
    for room in ["a@muc", "b@muc", "c@muc"] {
        let out = w.pep_publish(
            ALICE,
            BM,
            room,
            "<conference xmlns='urn:xmpp:bookmarks:1'/>",
            &opts,
        );
        result(&out);
    }
    let out = w.pep_pubsub(ALICE, None, "get", &format!("<items node='{BM}'/>"));
    assert_eq!(items_of(result(&out)).len(), 3, "max is the PEP cap, not 1");
    // `max` compares equal to the cap it stands for, and the cap bounds explicit values.
    let mut config = Config::default();
    config.limits.pep_max_items_per_node = 2;
    let mut w = World::with_config(config);
    let out = w.pep_publish(ALICE, "n", "i", P, &[("pubsub#max_items", "5")]);
    assert_precondition_not_met(&out);
    result(&w.pep_publish(ALICE, "n", "i1", P, &[("pubsub#max_items", "2")]));
    result(&w.pep_publish(ALICE, "n", "i2", P, &[("pubsub#max_items", "max")]));
}

#[test]
fn pep_nodes_stored_apart_and_old_rows_load() {
    let mut w = World::new();
    // A generic node written as before PEP existed, and a PEP node of the same name.
    w.create(ALICE, TUNE, &[]);
    w.publish(ALICE, TUNE, Some("g1"), P);
    result(&w.pep_publish(ALICE, TUNE, "p1", TUNE_P, &[]));
    let snap = w.store.pubsub_load().expect("load");
    let names: Vec<&str> = snap.nodes.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&TUNE), "generic key unchanged: {names:?}");
    assert!(names.contains(&format!("\u{1}alice@localhost\u{1}{TUNE}").as_str()));
    w.restart();
    assert_eq!(w.item_ids(BOB, TUNE, ""), vec!["g1"]);
    let out = w.pep_pubsub(ALICE, None, "get", &format!("<items node='{TUNE}'/>"));
    assert_eq!(items_of(result(&out)), vec!["p1"]);
    assert_eq!(w.engine.node_count(), 1);
    // Account deletion removes the PEP rows in one commit.
    let owner = Jid::parse("alice@localhost").expect("jid");
    w.engine
        .pep_delete_account(&w.store, &owner)
        .expect("delete");
    w.store.pubsub_flush().expect("flush");
    w.restart();
    assert_eq!(w.engine.pep_node_count(&owner), 0);
    assert_eq!(w.engine.node_count(), 1);
}

#[test]
fn xep0084_large_pep_items_not_cached_but_sent() {
    let mut w = World::new();
    const DATA: &str = "urn:xmpp:avatar:data";
    let big = format!(
        "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
        "A".repeat(20_000)
    );
    result(&w.pep_publish(ALICE, DATA, "sha", &big, &[]));
    let owner = Jid::parse("alice@localhost").expect("jid");
    let cached = w
        .engine
        .pep
        .get(owner.as_str())
        .and_then(|s| s.nodes.get(DATA))
        .map(|n| n.last.is_some());
    assert_eq!(cached, Some(false), "a 20 KB avatar is not kept in memory");
    // Yet the last item still reaches a newly interested contact, from the store.
    w.presence_sub("alice@localhost", "bob@localhost", true);
    w.interested(BOB, &[DATA]);
    let out = interest_added(&mut w, BOB, DATA);
    assert_eq!(out.len(), 1);
    assert!(format!("{:?}", out[0].1).contains("AAAA"));
    // And on an explicit subscription (§6.1.7).
    let out = w.pep_pubsub(
        BOB,
        AT_ALICE,
        "set",
        &format!("<subscribe node='{DATA}' jid='{BOB}'/>"),
    );
    result(&out);
    assert_eq!(out.len(), 2, "reply and the last item");
    // A small item (the metadata) is cached.
    result(&w.pep_publish(
        ALICE,
        "urn:xmpp:avatar:metadata",
        "sha",
        "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
        &[],
    ));
    let cached = w
        .engine
        .pep
        .get(owner.as_str())
        .and_then(|s| s.nodes.get("urn:xmpp:avatar:metadata"))
        .map(|n| n.last.is_some());
    assert_eq!(cached, Some(true));
}

/// What the engine sends when `who` newly shows interest in `node`.
fn interest_added(w: &mut World, who: &str, node: &str) -> Vec<(String, Element)> {
    let who = Jid::parse(who).expect("jid");
    parse_out(
        w.engine
            .pep_interest_added(&w.rosters, &w.store, &who, &[Rc::from(node)], w.now),
    )
}

/// Asserts that `out` is a `conflict` error with the `precondition-not-met` condition.
#[track_caller]
fn assert_precondition_not_met(out: &[(String, Element)]) {
    assert_eq!(
        error_of(out),
        ("conflict".into(), "precondition-not-met".into())
    );
}
