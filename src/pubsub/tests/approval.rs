//! Subscription approval and pending subscriptions (XEP-0060 §8.6, §8.7).

use super::*;

/// The approval form of a message, as field map.
fn approval_fields(m: &Element) -> HashMap<String, Vec<String>> {
    assert_eq!(m.name, "message", "{m:?}");
    let x = find_form(m).expect("approval form");
    form_fields(x).into_iter().collect()
}

/// The owner's answer to an approval form.
fn approval_answer(f: &HashMap<String, Vec<String>>, allow: bool) -> String {
    let v = |k: &str| f[k][0].clone();
    format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{FORM_SUBSCRIBE_AUTH}</value></field><field var='pubsub#subid'><value>{}</value></field><field var='pubsub#node'><value>{}</value></field><field var='pubsub#subscriber_jid'><value>{}</value></field><field var='pubsub#allow'><value>{}</value></field></x>",
        v("pubsub#subid"),
        v("pubsub#node"),
        v("pubsub#subscriber_jid"),
        if allow { "true" } else { "false" }
    )
}

#[test]
fn xep0060_8_6_authorize_pending_approval_form_allow_and_deny() {
    let mut w = World::with_node("n", &[("pubsub#access_model", "authorize")]);
    // A second owner gets the form too.
    w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<affiliations node='n'><affiliation jid='dave@localhost' affiliation='owner'/></affiliations>");
    let (r, forms) = w.ps_ok(
        BOB,
        "set",
        NS_PUBSUB,
        &format!("<subscribe node='n' jid='{BOB}'/>"),
    );
    let sub = r.child("subscription", NS_PUBSUB).expect("subscription");
    assert_eq!(sub.attr("subscription"), Some("pending"));
    let mut to: Vec<&str> = forms.iter().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, vec!["alice@localhost", "dave@localhost"]);
    let f = approval_fields(&forms[0].1);
    assert_eq!(f["FORM_TYPE"], vec![FORM_SUBSCRIBE_AUTH.to_owned()]);
    assert_eq!(f["pubsub#node"], vec!["n".to_owned()]);
    assert_eq!(f["pubsub#subscriber_jid"], vec![BOB.to_owned()]);
    assert_eq!(f["pubsub#allow"], vec!["false".to_owned()]);
    assert_eq!(
        f["pubsub#subid"],
        vec![sub.attr("subid").expect("subid").to_owned()]
    );
    // While pending: no items (§6.5.9.3: pending is not subscribed), no second request
    // (§6.1.3.7), no notifications.
    assert_eq!(
        w.ps_err(BOB, "get", NS_PUBSUB, "<items node='n'/>"),
        ("not-authorized".into(), "not-subscribed".into())
    );
    assert_eq!(
        w.ps_err(
            BOB,
            "set",
            NS_PUBSUB,
            &format!("<subscribe node='n' jid='{BOB}'/>")
        ),
        ("not-authorized".into(), "pending-subscription".into())
    );
    assert_eq!(
        w.ps_err(CAROL, "get", NS_PUBSUB, "<items node='n'/>"),
        ("not-authorized".into(), "not-subscribed".into())
    );
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.is_empty(), "pending subscribers get nothing");
    // Only an owner's answer counts; a cancelled form leaves the request pending.
    assert!(w.message(CAROL, &approval_answer(&f, true)).is_empty());
    let cancelled = approval_answer(&f, true).replace("type='submit'", "type='cancel'");
    assert!(w.message(ALICE, &cancelled).is_empty());
    assert_eq!(
        forms[0].1.attr("id"),
        Some(format!("approve-{}", f["pubsub#subid"][0]).as_str())
    );
    let out = w.message(ALICE, &approval_answer(&f, true));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, BOB);
    let s = subscription_notice(&out[0].1);
    assert_eq!(s.attr("subscription"), Some("subscribed"));
    w.publish_notifies_only(ALICE, "n", BOB);
    assert_eq!(w.item_ids(BOB, "n", "").len(), 2);
    // Denied: the subscription is gone and the subscriber told `none`.
    let (_, forms) = w.pubsub_ok(
        CAROL,
        "set",
        NS_PUBSUB,
        &format!("<subscribe node='n' jid='{CAROL}'/>"),
    );
    let f = approval_fields(&forms[0].1);
    let out = w.message("dave@localhost/d", &approval_answer(&f, false));
    let s = subscription_notice(&out[0].1);
    assert_eq!(
        (out[0].0.as_str(), s.attr("subscription")),
        (CAROL, Some("none"))
    );
    assert_eq!(
        w.ps_err(CAROL, "get", NS_PUBSUB, "<items node='n'/>"),
        ("not-authorized".into(), "not-subscribed".into())
    );
    // Becoming a publisher approves a pending request (§8.7 note).
    let (_, forms) = w.ok(
        "frank@localhost/f",
        "set",
        &format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' jid='frank@localhost'/></pubsub>"
        ),
    );
    assert_eq!(forms.len(), 2);
    let (_, told) = w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<affiliations node='n'><affiliation jid='frank@localhost' affiliation='publisher'/></affiliations>");
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].0, "frank@localhost");
    let (_, notes) = w.publish(ALICE, "n", None, P);
    assert!(notes.iter().any(|(t, _)| t == "frank@localhost"));
    // Members skip approval.
    w.pubsub_ok(ALICE, "set", NS_PUBSUB_OWNER, "<affiliations node='n'><affiliation jid='carol@localhost' affiliation='member'/></affiliations>");
    let s = w.subscribe_with(CAROL, "n", &[]);
    assert_eq!(s.attr("subscription"), Some("subscribed"));
}

#[test]
fn xep0060_8_7_get_pending_via_ad_hoc_command_and_restart() {
    let mut w = World::with_node("n", &[("pubsub#access_model", "authorize")]);
    w.create(ALICE, "quiet", &[("pubsub#access_model", "authorize")]);
    w.subscribe(BOB, "n", BOB);
    // Pending subscriptions survive a restart.
    w.restart();
    let (r, _) = w.ok(
        ALICE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>",
    );
    let q = r.child("query", NS_DISCO_ITEMS).expect("items");
    assert!(
        q.elements()
            .any(|i| i.attr("node") == Some(CMD_GET_PENDING))
    );
    let (r, _) = w.ok(
        ALICE,
        "get",
        &format!("<query xmlns='{NS_DISCO_INFO}' node='{CMD_GET_PENDING}'/>"),
    );
    let id = r
        .child("query", NS_DISCO_INFO)
        .and_then(|q| q.child("identity", NS_DISCO_INFO))
        .expect("identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("automation"), Some("command-node"))
    );
    let (r, _) = w.ok(
        ALICE,
        "set",
        &format!("<command xmlns='{NS_COMMANDS}' node='{CMD_GET_PENDING}' action='execute'/>"),
    );
    let c = r.child("command", NS_COMMANDS).expect("command");
    assert_eq!(c.attr("status"), Some("executing"));
    let x = find_form(c).expect("form");
    let field = x
        .elements()
        .find(|f| f.attr("var") == Some("pubsub#node"))
        .expect("node field");
    let options: Vec<String> = field
        .elements()
        .filter(|o| o.name == "option")
        .filter_map(|o| o.child("value", config::NS_DATA).map(Element::text))
        .collect();
    assert_eq!(
        options,
        vec!["n".to_owned()],
        "only nodes with pending subscriptions"
    );
    let session = c.attr("sessionid").expect("sessionid").to_owned();
    let submit = format!(
        "<command xmlns='{NS_COMMANDS}' node='{CMD_GET_PENDING}' sessionid='{session}'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#node'><value>n</value></field></x></command>"
    );
    let (r, forms) = w.ok(ALICE, "set", &submit);
    assert_eq!(
        r.child("command", NS_COMMANDS)
            .and_then(|c| c.attr("status")),
        Some("completed")
    );
    assert_eq!(forms.len(), 1);
    assert_eq!(forms[0].0, "alice@localhost");
    let f = approval_fields(&forms[0].1);
    assert_eq!(f["pubsub#subscriber_jid"], vec![BOB.to_owned()]);
    // Non-owners may not list a node's pending subscriptions.
    assert_eq!(w.err(BOB, "set", &submit).0, "forbidden");
    // The re-sent form approves the stored pending subscription.
    w.message(ALICE, &approval_answer(&f, true));
    w.restart();
    w.publish_notifies_only(ALICE, "n", BOB);
}
