//! Unit tests of the client's pure parts: settings, payloads, requests, output formats, JSON.

use crate::cli::ConnectArgs;
use crate::xml::Element;

use super::json;
use super::pubsub::{self, Format, Item, NS_JSON};
use super::settings::{Auth, Settings, TlsMode, parse_server};
use super::{ClientError, EX_DATAERR, EX_NOPERM, EX_UNAVAILABLE, EX_USAGE};

#[test]
fn settings_default_to_the_local_broker_anonymously() {
    let s = Settings::resolve(&ConnectArgs::default()).expect("defaults");
    assert_eq!((s.host.as_str(), s.port), ("localhost", 5222));
    assert_eq!(s.domain, "localhost");
    assert_eq!(s.service, "pubsub.localhost");
    assert_eq!(s.auth, Auth::Anonymous);
    assert_eq!(s.tls, TlsMode::Auto);
    assert!(s.resource.starts_with("kinglet-"));
}

#[test]
fn settings_from_jid_server_and_flags() {
    let a = ConnectArgs {
        jid: Some("Alice@Example.ORG/phone".into()),
        password_env: Some("KINGLET_TEST_PW_UNIT".into()),
        tls: Some("direct".into()),
        ..ConnectArgs::default()
    };
    // No test sets this variable; PATH below is always set.
    let missing = Settings::resolve(&a).expect_err("variable not set");
    assert_eq!(missing.exit_code(), EX_USAGE);
    let a = ConnectArgs {
        password_env: Some("PATH".into()),
        ..a
    };
    let s = Settings::resolve(&a).expect("resolves");
    assert_eq!((s.host.as_str(), s.port), ("example.org", 5223));
    assert_eq!(s.domain, "example.org");
    assert_eq!(s.service, "pubsub.example.org");
    assert_eq!(s.resource, "phone");
    assert!(matches!(&s.auth, Auth::Password { user, .. } if user == "alice"));
    // An IP server with no JID or --domain: the domain is localhost.
    let s = Settings::resolve(&ConnectArgs {
        server: Some("127.0.0.1:15222".into()),
        ..ConnectArgs::default()
    })
    .expect("ip");
    assert_eq!((s.domain.as_str(), s.port), ("localhost", 15222));
    let s = Settings::resolve(&ConnectArgs {
        server: Some("broker.lan".into()),
        service: Some("ps.broker.lan".into()),
        ..ConnectArgs::default()
    })
    .expect("host");
    assert_eq!(
        (s.domain.as_str(), s.service.as_str()),
        ("broker.lan", "ps.broker.lan")
    );
}

#[test]
fn settings_usage_errors() {
    type Setter = fn(&mut ConnectArgs);
    let cases: [Setter; 10] = [
        |a| a.jid = Some("alice@localhost".into()),
        |a| (a.jid, a.password_env) = (Some("localhost".into()), Some("PATH".into())),
        |a| a.password_env = Some("PATH".into()),
        |a| a.tls = Some("maybe".into()),
        |a| a.timeout = Some(0),
        |a| (a.insecure, a.ca_file) = (true, Some("/x".into())),
        |a| (a.tls, a.insecure) = (Some("off".into()), true),
        |a| a.server = Some("host:0".into()),
        |a| a.server = Some(":5222".into()),
        |a| a.resource = Some(String::new()),
    ];
    for set in cases {
        let mut a = ConnectArgs::default();
        set(&mut a);
        let e = Settings::resolve(&a).expect_err("usage error");
        assert_eq!(e.exit_code(), EX_USAGE, "{a:?}: {e}");
    }
}

#[test]
fn server_addresses() {
    let ok = |s: &str| parse_server(s, 5222).expect(s);
    assert_eq!(ok("h"), ("h".to_owned(), 5222));
    assert_eq!(ok("h:1"), ("h".to_owned(), 1));
    assert_eq!(ok("[::1]:5"), ("::1".to_owned(), 5));
    assert_eq!(ok("[::1]"), ("::1".to_owned(), 5222));
    assert_eq!(ok("::1"), ("::1".to_owned(), 5222));
    for bad in ["", "h:", "h:x", "h:70000", "[::1", "[::1]x"] {
        assert!(parse_server(bad, 5222).is_err(), "{bad}");
    }
}

#[test]
fn xml_payloads_must_be_one_namespaced_element() {
    let p = pubsub::payload_from_xml("  <t xmlns='urn:x' unit='C'>21.5<sub/></t>\n").expect("ok");
    assert_eq!(p.ns, "urn:x");
    assert_eq!(p.attr("unit"), Some("C"));
    assert_eq!(
        p.child("sub", "urn:x").map(|s| s.name.as_str()),
        Some("sub")
    );
    for bad in [
        "<t>no ns</t>",
        "<t xmlns='urn:x'>",
        "21.5",
        "<a xmlns='urn:x'/><b xmlns='urn:x'/>",
        "<a xmlns='urn:x'/>tail",
        "<!-- c --><a xmlns='urn:x'/>",
        "",
    ] {
        let e = pubsub::payload_from_xml(bad).expect_err(bad);
        assert_eq!(e.exit_code(), EX_DATAERR, "{bad}");
    }
    // A prefixed payload keeps its namespace.
    let p = pubsub::payload_from_xml("<x:r xmlns:x='urn:y'/>").expect("prefixed");
    assert!(p.is("r", "urn:y"));
}

#[test]
fn xep0335_json_payloads() {
    let p = pubsub::payload_from_json(" {\"a\" : [1, 2.5e-3, \"x y\"]}\n").expect("json");
    assert!(p.is("json", NS_JSON));
    assert_eq!(p.text(), "{\"a\":[1,2.5e-3,\"x y\"]}");
    assert!(pubsub::payload_from_json("{a:1}").is_err());
}

#[test]
fn json_minify_accepts_rfc8259_and_rejects_the_rest() {
    for (input, want) in [
        ("0", "0"),
        ("-1.5E+10", "-1.5E+10"),
        (" true ", "true"),
        ("null", "null"),
        ("\"\\u00e9\\n\\\"\"", "\"\\u00e9\\n\\\"\""),
        ("[ ]", "[]"),
        ("{ }", "{}"),
        (
            "{\"a\": {\"b\": [false, \"é\"]}}",
            "{\"a\":{\"b\":[false,\"é\"]}}",
        ),
    ] {
        assert_eq!(json::minify(input).as_deref(), Ok(want), "{input}");
    }
    for bad in [
        "",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "[1,]",
        "{\"a\"}",
        "{\"a\":1,}",
        "[1 2]",
        "\"a",
        "\"\\x\"",
        "\"\\u12g4\"",
        "\"tab\there\"",
        "tru",
        "nul",
        "{1:2}",
        "[] []",
        "+1",
    ] {
        assert!(json::minify(bad).is_err(), "{bad:?} accepted");
    }
    let deep = "[".repeat(json::MAX_JSON_DEPTH + 2) + &"]".repeat(json::MAX_JSON_DEPTH + 2);
    assert!(json::minify(&deep).is_err());
    let ok_depth = "[".repeat(json::MAX_JSON_DEPTH) + &"]".repeat(json::MAX_JSON_DEPTH);
    assert!(json::minify(&ok_depth).is_ok());
}

#[test]
fn json_string_escaping() {
    let mut s = String::new();
    json::push_str("a\"b\\c\n\r\t\u{1}\u{8}\u{c}é\u{2028}", &mut s);
    assert_eq!(s, "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\b\\fé\\u2028\"");
    assert_eq!(json::minify(&s).as_deref(), Ok(s.as_str()));
}

#[test]
fn config_options() {
    let pairs = pubsub::parse_config(&[
        "max_items=5".into(),
        "pubsub#title=a=b".into(),
        "FORM_TYPE=x".into(),
    ])
    .expect("ok");
    assert_eq!(
        pairs,
        vec![
            ("pubsub#max_items".to_owned(), "5".to_owned()),
            ("pubsub#title".to_owned(), "a=b".to_owned()),
            ("FORM_TYPE".to_owned(), "x".to_owned()),
        ]
    );
    assert!(pubsub::parse_config(&["novalue".into()]).is_err());
    assert!(pubsub::parse_config(&["=v".into()]).is_err());
    let form = Element::parse(&pubsub::config_form(&pairs[..2])).expect("form parses");
    let fields: Vec<_> = form.elements().filter_map(|f| f.attr("var")).collect();
    assert_eq!(fields, ["FORM_TYPE", "pubsub#max_items", "pubsub#title"]);
}

/// XEP-0060 §7.1.1: the publish request carries the payload in its own namespace.
#[test]
fn xep0060_7_1_1_publish_request() {
    let payload = pubsub::payload_from_xml("<t xmlns='urn:x'>1 &lt; 2</t>").expect("payload");
    let body = pubsub::publish_body("n'&", Some("i<1"), &payload);
    let e = Element::parse(&body).expect("parses");
    let publish = e
        .child("publish", crate::pubsub::NS_PUBSUB)
        .expect("publish");
    assert_eq!(publish.attr("node"), Some("n'&"));
    let item = publish
        .child("item", crate::pubsub::NS_PUBSUB)
        .expect("item");
    assert_eq!(item.attr("id"), Some("i<1"));
    assert_eq!(
        item.child("t", "urn:x").map(Element::text),
        Some("1 < 2".to_owned())
    );
}

/// XEP-0060 §7.1.2.1: items of an event for our node, from the service, with the delay stamp.
#[test]
fn xep0060_7_1_2_1_event_items_and_formats() {
    let msg = Element::parse(
        "<message from='pubsub.localhost' to='a@localhost/r'>\
         <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'>\
         <item id='1' publisher='b@localhost'><t xmlns='urn:x'>line1\nline2</t></item>\
         <item id='2'><json xmlns='urn:xmpp:json:0'>{ \"v\": 1 }</json></item>\
         <item id='3'/></items></event>\
         <delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>",
    )
    .expect("parses");
    assert!(pubsub::items_from_event(&msg, "other.localhost", "n").is_empty());
    assert!(pubsub::items_from_event(&msg, "pubsub.localhost", "m").is_empty());
    let items: Vec<Item> = pubsub::items_from_event(&msg, "PUBSUB.localhost", "n");
    assert_eq!(items.len(), 3);
    assert_eq!(
        pubsub::format_item(&items[0], Format::Xml, Some(&msg)),
        "<t xmlns=\"urn:x\">line1&#10;line2</t>"
    );
    assert_eq!(
        pubsub::format_item(&items[0], Format::Json, Some(&msg)),
        "{\"node\":\"n\",\"id\":\"1\",\"publisher\":\"b@localhost\",\
         \"published\":\"2026-01-01T00:00:00Z\",\"payload\":\"<t xmlns=\\\"urn:x\\\">line1&#10;line2</t>\"}"
    );
    assert_eq!(
        pubsub::format_item(&items[1], Format::Json, Some(&msg)),
        "{\"node\":\"n\",\"id\":\"2\",\"publisher\":null,\
         \"published\":\"2026-01-01T00:00:00Z\",\"payload\":{\"v\":1}}"
    );
    assert!(pubsub::format_item(&items[2], Format::Json, None).ends_with("\"payload\":null}"));
    let raw = pubsub::format_item(&items[0], Format::Raw, Some(&msg));
    assert!(raw.starts_with("<message") && !raw.contains('\n'), "{raw}");
    assert_eq!(Element::parse(&raw.replace("&#10;", "\n")).ok(), Some(msg));
}

#[test]
fn xep0060_8_4_2_delete_event_and_6_5_items_result() {
    let del = Element::parse(
        "<message from='pubsub.localhost'><event xmlns='http://jabber.org/protocol/pubsub#event'>\
         <delete node='n'/></event></message>",
    )
    .expect("parses");
    assert!(pubsub::is_delete_event(&del, "pubsub.localhost", "n"));
    assert!(!pubsub::is_delete_event(&del, "pubsub.localhost", "m"));
    let reply = Element::parse(
        "<iq type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n'>\
         <item id='a'><x xmlns='urn:x'/></item><item id='b'><y xmlns='urn:x'/></item>\
         </items></pubsub></iq>",
    )
    .expect("parses");
    let items = pubsub::items_from_result(&reply, "n");
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        pubsub::format_item(&items[0], Format::Raw, None),
        "<item xmlns=\"http://jabber.org/protocol/pubsub\" id=\"a\"><x xmlns=\"urn:x\"/></item>"
    );
}

#[test]
fn xep0060_8_2_config_form_fields() {
    let reply = Element::parse(
        "<iq type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>\
         <configure node='n'><x xmlns='jabber:x:data' type='form'>\
         <field var='FORM_TYPE' type='hidden'><value>x</value></field>\
         <field type='fixed'><value>note</value></field>\
         <field var='pubsub#max_items'><value>5</value></field>\
         <field var='pubsub#title'/>\
         <field var='pubsub#roster_groups_allowed' type='list-multi'><value>a</value><value>b</value></field>\
         </x></configure></pubsub></iq>",
    )
    .expect("parses");
    let fields = pubsub::config_fields(&reply);
    let want = [
        ("pubsub#max_items", "5"),
        ("pubsub#title", ""),
        ("pubsub#roster_groups_allowed", "a"),
        ("pubsub#roster_groups_allowed", "b"),
    ];
    assert_eq!(fields.len(), want.len());
    for ((k, v), (wk, wv)) in fields.iter().zip(want) {
        assert_eq!((k.as_str(), v.as_str()), (wk, wv));
    }
}

#[test]
fn disco_items_and_stanza_errors() {
    let reply = Element::parse(
        "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#items'>\
         <item jid='pubsub.localhost' node='a' name='A'/><item jid='pubsub.localhost'/>\
         <item jid='pubsub.localhost' node='b'/></query></iq>",
    )
    .expect("parses");
    let nodes: Vec<String> = pubsub::nodes_from_disco(&reply)
        .into_iter()
        .map(|n| n.0)
        .collect();
    assert_eq!(nodes, ["a", "b"]);
    let err = Element::parse(
        "<iq type='error' id='k1'><error type='modify'>\
         <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>why</text>\
         <unsupported xmlns='http://jabber.org/protocol/pubsub#errors' feature='x'/></error></iq>",
    )
    .expect("parses");
    let e = super::conn::stanza_error(&err, "publish");
    assert_eq!(
        e.to_string(),
        "publish: bad-request (unsupported feature=x): why"
    );
    let e = ClientError::Xmpp(e);
    assert_eq!(e.exit_code(), 1);
    assert!(!e.is_transient());
    assert!(ClientError::Unavailable(String::new()).is_transient());
    assert_eq!(ClientError::Auth(String::new()).exit_code(), EX_NOPERM);
    assert_eq!(
        ClientError::Unavailable(String::new()).exit_code(),
        EX_UNAVAILABLE
    );
}

#[test]
fn formats_parse() {
    assert_eq!(Format::parse(None).ok(), Some(Format::Xml));
    assert_eq!(Format::parse(Some("json")).ok(), Some(Format::Json));
    assert_eq!(Format::parse(Some("raw")).ok(), Some(Format::Raw));
    assert!(Format::parse(Some("yaml")).is_err());
}
