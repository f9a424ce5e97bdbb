//! Owner use cases (XEP-0060 §8.2–§8.5, §8.8, §8.9).

use super::*;

#[test]
fn xep0060_8_2_configure_round_trips_every_field() {
    let mut w = World::with_node("n", &[]);
    let fields: &[(&str, &str)] = &[
        ("pubsub#title", "Title"),
        ("pubsub#description", "Desc"),
        ("pubsub#type", "urn:t"),
        ("pubsub#node_type", "leaf"),
        ("pubsub#collection", ""),
        ("pubsub#max_items", "max"),
        ("pubsub#persist_items", "1"),
        ("pubsub#access_model", "roster"),
        ("pubsub#roster_groups_allowed", "g1"),
        ("pubsub#publish_model", "subscribers"),
        ("pubsub#subscribe", "1"),
        ("pubsub#deliver_payloads", "0"),
        ("pubsub#deliver_notifications", "1"),
        ("pubsub#notify_retract", "0"),
        ("pubsub#notify_delete", "0"),
        ("pubsub#notify_config", "1"),
        ("pubsub#send_last_published_item", "on_sub_and_presence"),
        ("pubsub#notification_type", "normal"),
        ("pubsub#max_payload_size", "1000"),
        ("pubsub#item_expire", "3600"),
        ("pubsub#publish_node_full", "discard-oldest"),
        ("pubsub#presence_based_delivery", "1"),
        ("pubsub#notify_sub", "1"),
        ("pubsub#tempsub", "1"),
        ("pubsub#purge_offline", "1"),
        ("pubsub#itemreply", "none"),
        ("pubsub#contact", "admin@localhost"),
        ("pubsub#language", "en"),
    ];
    // A leaf's form leaves out the four collection-only fields (XEP-0248).
    assert_eq!(fields.len(), config::FIELDS.len() - 4);
    w.configure_ok(ALICE, "n", fields);
    for round in 0..2 {
        let got = w.get_form(ALICE, NS_PUBSUB_OWNER, "<configure node='n'/>");
        for (k, v) in fields {
            assert_eq!(got[*k], vec![(*v).to_owned()], "{k} (round {round})");
        }
        w.restart();
    }
    // Unknown field and bad values: not-acceptable, nothing changed.
    for bad in [
        ("pubsub#bogus", "1"),
        ("pubsub#max_items", "0"),
        ("pubsub#max_items", "1000001"),
        ("pubsub#deliver_payloads", "maybe"),
        ("pubsub#node_type", "tree"),
        ("pubsub#body_xslt", "http://example.org/x.xsl"),
        ("pubsub#itemreply", "owner"),
        ("pubsub#contact", "not a jid@@"),
    ] {
        let (c, _) = w.configure_err(ALICE, "n", &[bad]);
        assert_eq!(c, "not-acceptable", "{bad:?}");
    }
    assert_eq!(
        w.configure_err(ALICE, "n", &[("pubsub#dataform_xslt", "http://x/y.xsl")]),
        ("not-acceptable".into(), "unsupported".into())
    );
    // XEP-0248: a leaf has no children, so no children_max.
    assert_eq!(
        w.configure_err(ALICE, "n", &[("pubsub#children_max", "3")]),
        ("not-allowed".into(), "invalid-options".into())
    );
    // Non-owners may not configure; nodeid is required.
    assert_eq!(
        w.ps_err(BOB, "get", NS_PUBSUB_OWNER, "<configure node='n'/>")
            .0,
        "forbidden"
    );
    assert_eq!(
        w.ps_err(ALICE, "get", NS_PUBSUB_OWNER, "<configure/>"),
        nodeid_required()
    );
}

#[test]
fn xep0060_8_2_notify_config_and_notification_type_normal() {
    let mut w = World::new();
    w.create(
        ALICE,
        "n",
        &[
            ("pubsub#notify_config", "1"),
            ("pubsub#notification_type", "normal"),
        ],
    );
    w.subscribe(BOB, "n", BOB);
    let (_, notes) = w.configure_ok(ALICE, "n", &[("pubsub#title", "new")]);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1.attr("type"), Some("normal"));
    assert!(
        event(&notes[0].1)
            .child("configuration", NS_PUBSUB_EVENT)
            .is_some()
    );
}

#[test]
fn xep0060_8_3_default_configuration() {
    let mut w = World::new();
    let got = w.get_form(ALICE, NS_PUBSUB_OWNER, "<default/>");
    assert_eq!(got["FORM_TYPE"], vec![FORM_NODE_CONFIG.to_owned()]);
    assert_eq!(got["pubsub#access_model"], vec!["open".to_owned()]);
    assert_eq!(got["pubsub#persist_items"], vec!["1".to_owned()]);
}

#[test]
fn xep0060_8_4_delete_with_redirect() {
    let mut w = World::with_subscriber("n");
    w.publish(ALICE, "n", Some("a"), P);
    assert_eq!(
        w.ps_err(BOB, "set", NS_PUBSUB_OWNER, "<delete node='n'/>")
            .0,
        "forbidden"
    );
    let (_, notes) = w.pubsub_ok(
        ALICE,
        "set",
        NS_PUBSUB_OWNER,
        "<delete node='n'><redirect uri='xmpp:pubsub.localhost?;node=m'/></delete>",
    );
    assert_eq!(notes.len(), 1);
    let d = event_child(&notes[0].1, "delete");
    assert_eq!(d.attr("node"), Some("n"));
    assert_eq!(
        event_attr(d, "redirect", "uri"),
        Some("xmpp:pubsub.localhost?;node=m")
    );
    assert_eq!(
        w.ps_err(ALICE, "set", NS_PUBSUB_OWNER, "<delete node='n'/>")
            .0,
        "item-not-found"
    );
    w.restart();
    assert_eq!(w.engine.node_count(), 0);
    // The same id can be created again, empty.
    w.create(ALICE, "n", &[]);
    assert!(w.item_ids(ALICE, "n", "").is_empty());
}

#[test]
fn xep0060_8_5_purge_with_notification() {
    let mut w = World::with_subscriber("n");
    w.publish(ALICE, "n", Some("a"), P);
    w.publish(ALICE, "n", Some("b"), P);
    let (_, notes) = w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<purge node='n'/>");
    assert_eq!(notes.len(), 1);
    assert!(event(&notes[0].1).child("purge", NS_PUBSUB_EVENT).is_some());
    assert!(w.item_ids(BOB, "n", "").is_empty());
    w.restart();
    assert!(w.item_ids(BOB, "n", "").is_empty());
    assert_eq!(
        w.ps_err(BOB, "set", NS_PUBSUB_OWNER, "<purge node='n'/>").0,
        "forbidden"
    );
}

#[test]
fn xep0060_8_8_manage_subscriptions() {
    let mut w = World::with_node("n", &[]);
    w.subscribe(BOB, "n", "bob@localhost");
    let set = |jid: &str, state: &str| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><subscriptions node='n'><subscription jid='{jid}' subscription='{state}'/></subscriptions></pubsub>"
        )
    };
    let (_, told) = w.ok(ALICE, "set", &set(CAROL, "subscribed"));
    assert_eq!(told.len(), 1, "§12.13 subscription state notification");
    assert_eq!(told[0].0, CAROL);
    let sub = subscription_notice(&told[0].1);
    assert_eq!(sub.attr("subscription"), Some("subscribed"));
    let (_, told) = w.ok(ALICE, "set", &set("bob@localhost", "none"));
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].0, "bob@localhost");
    // No change, no notification.
    let (_, told) = w.ok(ALICE, "set", &set("bob@localhost", "none"));
    assert!(told.is_empty());
    let (r, _) = w.pubsub_ok(ALICE, "get", NS_PUBSUB_OWNER, "<subscriptions node='n'/>");
    let subs: Vec<String> = r
        .child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.child("subscriptions", NS_PUBSUB_OWNER))
        .map(|s| {
            s.elements()
                .filter_map(|e| e.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(subs, vec![CAROL.to_owned()]);
    assert_eq!(w.err(BOB, "get", &set(BOB, "subscribed")).0, "forbidden");
    w.restart();
    w.publish_notifies_only(ALICE, "n", CAROL);
}

#[test]
fn xep0060_8_9_manage_affiliations_all_six() {
    let mut w = World::with_node("n", &[]);
    let set = |jid: &str, aff: &str| {
        format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><affiliations node='n'><affiliation jid='{jid}' affiliation='{aff}'/></affiliations></pubsub>"
        )
    };
    // publisher may publish and retract any item.
    w.ok(ALICE, "set", &set("bob@localhost", "publisher"));
    w.publish(BOB, "n", Some("b1"), P);
    w.publish(ALICE, "n", Some("a1"), P);
    w.ok(
        BOB,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><retract node='n'><item id='a1'/></retract></pubsub>"
        ),
    );
    // publish-only may publish and retract its own items, but not read.
    w.ok(ALICE, "set", &set("carol@localhost", "publish-only"));
    w.publish(CAROL, "n", Some("c1"), P);
    w.ok(
        CAROL,
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><retract node='n'><item id='c1'/></retract></pubsub>"
        ),
    );
    assert_eq!(
        w.err(
            CAROL,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><retract node='n'><item id='b1'/></retract></pubsub>"
            )
        )
        .0,
        "forbidden"
    );
    assert_eq!(
        w.ps_err(CAROL, "get", NS_PUBSUB, "<items node='n'/>").0,
        "forbidden"
    );
    // A second owner may configure; the last owner cannot be removed.
    w.ok(ALICE, "set", &set("bob@localhost", "owner"));
    w.pubsub_ok(BOB, "get", NS_PUBSUB_OWNER, "<configure node='n'/>");
    w.ok(BOB, "set", &set("alice@localhost", "none"));
    assert_eq!(
        w.err(BOB, "set", &set("bob@localhost", "member")).0,
        "bad-request"
    );
    w.ok(BOB, "set", &set("alice@localhost", "member"));
    assert_eq!(
        w.err(ALICE, "set", &set("alice@localhost", "owner")).0,
        "forbidden"
    );
    let (r, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB_OWNER, "<affiliations node='n'/>");
    let mut got: Vec<(String, String)> = r
        .child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.child("affiliations", NS_PUBSUB_OWNER))
        .map(|s| {
            s.elements()
                .map(|e| {
                    (
                        e.attr("jid").unwrap_or("").to_owned(),
                        e.attr("affiliation").unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    got.sort();
    let want = vec![
        ("alice@localhost".to_owned(), "member".to_owned()),
        ("bob@localhost".to_owned(), "owner".to_owned()),
        ("carol@localhost".to_owned(), "publish-only".to_owned()),
    ];
    assert_eq!(got, want);
    w.restart();
    let (r2, _) = w.pubsub_ok(BOB, "get", NS_PUBSUB_OWNER, "<affiliations node='n'/>");
    assert_eq!(format!("{:?}", r2.children), format!("{:?}", r.children));
}

#[test]
fn xep0060_4_1_publishers_may_purge_publish_only_may_not() {
    let mut w = World::with_node("n", &[]);
    w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<affiliations node='n'><affiliation jid='bob@localhost' affiliation='publisher'/><affiliation jid='carol@localhost' affiliation='publish-only'/></affiliations>");
    w.publish(BOB, "n", Some("b"), P);
    let purge = format!("<pubsub xmlns='{NS_PUBSUB_OWNER}'><purge node='n'/></pubsub>");
    assert_eq!(w.err(CAROL, "set", &purge).0, "forbidden");
    assert_eq!(w.err(EVE, "set", &purge).0, "forbidden");
    assert_eq!(w.item_ids(ALICE, "n", "").len(), 1);
    w.ok(BOB, "set", &purge);
    assert!(w.item_ids(ALICE, "n", "").is_empty());
}
