//! Subscribe, unsubscribe and subscription options (XEP-0060 §6.1–§6.4).

use super::*;

#[test]
fn xep0060_6_1_subscribe_bare_and_full_and_invalid_jid() {
    let mut w = World::with_node("n", &[]);
    let out = w.subscribe(BOB, "n", "bob@localhost");
    assert!(out.is_empty(), "no last item to send");
    w.subscribe(BOB, "n", BOB);
    // Subscribing again is idempotent.
    w.subscribe(BOB, "n", BOB);
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='alice@localhost'/></pubsub>"
            )
        ),
        ("bad-request".into(), "invalid-jid".into())
    );
    assert_eq!(
        w.err(
            BOB,
            "set",
            &format!(
                "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='x' jid='bob@localhost'/></pubsub>"
            )
        )
        .0,
        "item-not-found"
    );
    // XEP-0248: without a node, the subscription is to the root collection (of type
    // `nodes` by default, so it takes no item notifications).
    let (r, _) = w.ps_ok(BOB, "set", NS_PUBSUB, "<subscribe jid='bob@localhost'/>");
    let sub = r.child("subscription", NS_PUBSUB).expect("subscription");
    assert_eq!(sub.attr("node"), Some(""));
    let (_, notes) = w.publish(ALICE, "n", Some("i"), P);
    let mut to: Vec<&str> = notes.iter().map(|(t, _)| t.as_str()).collect();
    to.sort();
    assert_eq!(to, vec!["bob@localhost", BOB]);
}

#[test]
fn xep0060_6_1_7_last_published_item_on_subscribe_with_delay() {
    let mut w = World::with_node("n", &[("pubsub#send_last_published_item", "on_sub")]);
    w.publish(ALICE, "n", Some("old"), P);
    w.publish(ALICE, "n", Some("last"), "<t xmlns='urn:t'>2</t>");
    let out = w.subscribe(BOB, "n", BOB);
    assert_eq!(out.len(), 1);
    let (to, m) = &out[0];
    assert_eq!(to, BOB);
    let item = event_items_child(m, "item");
    assert_eq!(item.attr("id"), Some("last"));
    assert_eq!(payload_text(item), Some("2".into()));
    let delay = m.child("delay", NS_DELAY).expect("XEP-0203 delay");
    assert_eq!(delay.attr("stamp"), Some(xep0082(w.now - 1000).as_str()));
    // Resubscribing sends it again (ejabberd #4479).
    assert_eq!(w.subscribe(BOB, "n", BOB).len(), 1);
}

#[test]
fn xep0060_6_1_7_on_sub_and_presence_sends_on_initial_presence() {
    let mut w = World::new();
    w.create(
        ALICE,
        "n",
        &[("pubsub#send_last_published_item", "on_sub_and_presence")],
    );
    w.subscribe(BOB, "n", "bob@localhost");
    w.publish(ALICE, "n", Some("x"), P);
    let out = w
        .engine
        .on_available(&w.rosters, &w.store, &Jid::parse(BOB).expect("jid"), w.now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to.as_str(), BOB);
    assert!(out[0].stanza.to_text().contains("urn:xmpp:delay"));
    let none = w.engine.on_available(
        &w.rosters,
        &w.store,
        &Jid::parse(CAROL).expect("jid"),
        w.now,
    );
    assert!(none.is_empty());
}

#[test]
fn xep0060_6_2_unsubscribe() {
    let mut w = World::with_node("n", &[]);
    let unsub = |jid: &str| {
        format!("<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='n' jid='{jid}'/></pubsub>")
    };
    assert_eq!(
        w.err(BOB, "set", &unsub("bob@localhost")),
        ("unexpected-request".into(), "not-subscribed".into())
    );
    w.subscribe(BOB, "n", "bob@localhost");
    assert_eq!(
        w.err(BOB, "set", &unsub("alice@localhost")),
        ("bad-request".into(), "invalid-jid".into())
    );
    w.ok(BOB, "set", &unsub("bob@localhost"));
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty());
}

#[test]
fn xep0060_6_3_subscription_options_deliver() {
    let mut w = World::with_subscriber("n");
    let f = w.get_form(BOB, NS_PUBSUB, &format!("<options node='n' jid='{BOB}'/>"));
    assert_eq!(f["pubsub#deliver"], vec!["1".to_owned()]);
    w.options_ok(BOB, "n", BOB, &[("pubsub#deliver", "false")]);
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty(), "deliver=0 stops notifications");
    assert_eq!(
        w.options_err(BOB, "n", BOB, &[("pubsub#digest", "1")]),
        ("not-acceptable".into(), "unsupported".into()),
        "digest is declined, never ignored"
    );
    assert_eq!(
        w.options_err(BOB, "n", BOB, &[("pubsub#bogus", "1")]),
        ("bad-request".into(), "invalid-options".into())
    );
    assert_eq!(
        w.ps_err(
            CAROL,
            "get",
            NS_PUBSUB,
            &format!("<options node='n' jid='{CAROL}'/>")
        ),
        ("unexpected-request".into(), "not-subscribed".into())
    );
    // Subscribe with options in one request (§6.3.7).
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
        form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#deliver", "0")])
    );
    w.ok(CAROL, "set", &body);
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty());
}

#[test]
fn xep0060_6_4_default_subscription_options() {
    let mut w = World::new();
    let f = w.get_form(BOB, NS_PUBSUB, "<default/>");
    assert!(f.contains_key("pubsub#deliver"));
}

/// The SubID headers of a notification.
fn subid_headers(m: &Element) -> Vec<String> {
    m.child("headers", NS_SHIM)
        .map(|h| {
            h.elements()
                .filter(|e| e.attr("name") == Some("SubID"))
                .map(Element::text)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn xep0060_6_1_6_multiple_subscriptions() {
    let mut w = World::with_node("n", &[]);
    let a = w.subscribe_with(BOB, "n", &[]);
    let b = w.subscribe_with(BOB, "n", &[("pubsub#include_body", "1")]);
    let (ida, idb) = (
        a.attr("subid").expect("subid").to_owned(),
        b.attr("subid").expect("subid").to_owned(),
    );
    assert_ne!(ida, idb);
    // The same options again: the same subscription.
    let again = w.subscribe_with(BOB, "n", &[]);
    assert_eq!(again.attr("subid"), Some(ida.as_str()));
    // One message for the JID, with both SubIDs as SHIM headers (§12.5).
    let (_, notes) = w.publish(ALICE, "n", Some("i1"), P);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let mut h = subid_headers(&notes[0].1);
    h.sort();
    let mut want = vec![ida.clone(), idb.clone()];
    want.sort();
    assert_eq!(h, want);
    // Ambiguous unsubscribe/options: subid-required; unknown subid: invalid-subid.
    let unsub = |subid: &str| {
        format!("<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='n' jid='{BOB}'{subid}/></pubsub>")
    };
    assert_eq!(
        w.err(BOB, "set", &unsub("")),
        ("bad-request".into(), "subid-required".into())
    );
    assert_eq!(
        w.ps_err(
            BOB,
            "get",
            NS_PUBSUB,
            &format!("<options node='n' jid='{BOB}'/>")
        ),
        ("bad-request".into(), "subid-required".into())
    );
    assert_eq!(
        w.err(BOB, "set", &unsub(" subid='nope'")),
        ("not-acceptable".into(), "invalid-subid".into())
    );
    // §6.5.9.1/2: items retrieval names one of several subscriptions.
    assert_eq!(
        w.ps_err(BOB, "get", NS_PUBSUB, "<items node='n'/>"),
        ("bad-request".into(), "subid-required".into())
    );
    assert_eq!(
        w.ps_err(BOB, "get", NS_PUBSUB, "<items node='n' subid='nope'/>"),
        ("not-acceptable".into(), "invalid-subid".into())
    );
    assert_eq!(w.item_ids(BOB, "n", &format!(" subid='{ida}'")).len(), 1);
    // §6.3.4.3: options without a jid.
    assert_eq!(
        w.ps_err(
            BOB,
            "get",
            NS_PUBSUB,
            &format!("<options node='n' subid='{ida}'/>")
        ),
        ("bad-request".into(), "jid-required".into())
    );
    let (r, _) = w.ps_ok(BOB, "get", NS_PUBSUB, "<subscriptions node='n'/>");
    let listed = r
        .child("subscriptions", NS_PUBSUB)
        .map(|s| s.elements().count())
        .unwrap_or(0);
    assert_eq!(listed, 2);
    // Persisted with their SubIDs.
    w.restart();
    w.ok(BOB, "set", &unsub(&format!(" subid='{idb}'")));
    // Purge notifications carry no SubIDs (§12.5): one message, no headers.
    w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<purge node='n'/>")
        .1
        .iter()
        .for_each(|(_, m)| assert!(subid_headers(m).is_empty(), "{m:?}"));
    // One subscription left: no headers, and no subid needed.
    let (_, notes) = w.publish(ALICE, "n", Some("i2"), P);
    assert_eq!(notes.len(), 1);
    assert!(subid_headers(&notes[0].1).is_empty());
    assert!(notes[0].1.child("body", NS_CLIENT).is_none());
    // Bounded per JID.
    for i in 0..Limits::default().subscriptions_per_jid - 1 {
        w.subscribe_with(CAROL, "n", &[("pubsub#show-values", SHOWS[i % 5])]);
        if i >= 4 {
            // Distinct options: vary include_body too.
            w.subscribe_with(
                CAROL,
                "n",
                &[
                    ("pubsub#show-values", SHOWS[i % 5]),
                    ("pubsub#include_body", "1"),
                ],
            );
        }
    }
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
        form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#deliver", "0")])
    );
    assert_eq!(
        w.err(CAROL, "set", &body),
        ("policy-violation".into(), "too-many-subscriptions".into())
    );
    w.ok(BOB, "set", &unsub(""));
}

#[test]
fn xep0060_6_3_include_body_and_show_values() {
    let mut w = World::with_node("n", &[]);
    w.online("bob@localhost/desk", "online");
    w.online("bob@localhost/phone", "away");
    w.subscribe_with("bob@localhost/desk", "n", &[]);
    let body = format!(
        "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='bob@localhost'/><options>{}</options></pubsub>",
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#subscribe_options</value></field><field var='pubsub#show-values'><value>away</value><value>xa</value></field><field var='pubsub#include_body'><value>1</value></field></x>"
    );
    w.ok("bob@localhost/desk", "set", &body);
    let (_, notes) = w.publish(
        ALICE,
        "n",
        Some("w1"),
        "<weather xmlns='urn:w'><temp>21</temp> sunny</weather>",
    );
    let mut to: Vec<&str> = notes.iter().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    // The full-JID subscription goes to the desk; the bare one only to the away phone.
    assert_eq!(to, vec!["bob@localhost/desk", "bob@localhost/phone"]);
    let phone = &notes
        .iter()
        .find(|(t, _)| t == "bob@localhost/phone")
        .expect("phone")
        .1;
    let text = phone
        .child("body", NS_CLIENT)
        .map(Element::text)
        .expect("body");
    assert!(
        text.contains("w1") && text.contains("21") && text.contains("sunny"),
        "{text}"
    );
    let desk = &notes
        .iter()
        .find(|(t, _)| t == "bob@localhost/desk")
        .expect("desk")
        .1;
    assert!(desk.child("body", NS_CLIENT).is_none());
    // Unknown show value and bad collection options are refused.
    for (k, v, want) in [
        (
            "pubsub#show-values",
            "sleepy",
            ("bad-request", "invalid-options"),
        ),
        (
            "pubsub#subscription_type",
            "everything",
            ("bad-request", "invalid-options"),
        ),
        (
            "pubsub#subscription_depth",
            "-1",
            ("bad-request", "invalid-options"),
        ),
        (
            "pubsub#digest_frequency",
            "1000",
            ("not-acceptable", "unsupported"),
        ),
    ] {
        let body = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
            form(FORM_SUBSCRIBE_OPTIONS, &[(k, v)])
        );
        assert_eq!(
            w.err(CAROL, "set", &body),
            (want.0.into(), want.1.into()),
            "{k}"
        );
    }
}

#[test]
fn subscription_rows_without_subid_get_one_at_start() {
    let mut w = World::with_node("n", &[]);
    // A row as the first format wrote it: key `node 00 jid`.
    w.store
        .pubsub_apply(&[PubsubOp::PutSubscription(
            "n".into(),
            BOB.into(),
            SubscriptionRecord {
                state: 3,
                deliver: true,
                ..SubscriptionRecord::default()
            },
        )])
        .expect("legacy row");
    w.restart();
    let snap = w.store.pubsub_load().expect("load");
    assert_eq!(snap.subscriptions.len(), 1);
    assert!(!snap.subscriptions[0].2.subid.is_empty());
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert_eq!(notes.len(), 1);
    w.restart();
    assert_eq!(w.store.pubsub_load().expect("load").subscriptions.len(), 1);
}

/// `pubsub#expire` at the far edge: a lease in year 9999 is accepted and its deadline is
/// exact; impossible dates are `bad-request` + `invalid-options`.
#[test]
fn subscription_expire_at_the_edges() {
    let mut w = World::with_node("n", &[]);
    let far = "9999-12-31T23:59:59.999Z";
    w.subscribe_with(BOB, "n", &[("pubsub#expire", far)]);
    assert_eq!(w.engine.next_deadline(), Some(253_402_300_799_999));
    assert!(w.tick().is_empty());
    for bad in [
        "0000-00-00T00:00:00Z",
        "99999-12-31T00:00:00Z",
        "2024-13-01T00:00:00Z",
    ] {
        let body = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='{CAROL}'/><options>{}</options></pubsub>",
            form(FORM_SUBSCRIBE_OPTIONS, &[("pubsub#expire", bad)])
        );
        assert_eq!(
            w.err(CAROL, "set", &body),
            ("bad-request".into(), "invalid-options".into()),
            "{bad}"
        );
    }
}
