//! XEP-0114 stream (handshake, errors) and component-mode routing (remote JIDs out through
//! the connection's outbox, remote presence for presence-based delivery).

use std::rc::Rc;

use super::*;
use crate::config::ComponentCfg;
use crate::outbox::Outbox;
use crate::store::Store;
use crate::test_support::{TempDir, drained, group_router};

const SERVER_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
     xmlns:stream='http://etherx.jabber.org/streams' from='ps.example.net' id='3BF96D75'>";

fn router(dir: &TempDir) -> (Router, Rc<Store>) {
    let store = Rc::new(Store::open(&dir.0, 0).expect("store"));
    let r = group_router(&dir.0, &store, |c| {
        c.domain = "kinglet.invalid".into();
        c.c2s.listen.clear();
        c.pubsub.create_nodes = crate::config::CreatePolicy::Anyone;
        c.component = Some(ComponentCfg {
            server: "127.0.0.1:5347".into(),
            jid: "ps.example.net".into(),
            secret_file: "secret".into(),
            reconnect_max_secs: 60,
        });
        c.validate().expect("valid component config");
    });
    (r, store)
}

fn commit(r: &mut Router, store: &Store) {
    if let Some(batch) = store.pubsub_take() {
        let res = batch.write();
        r.pubsub_committed(batch.generation(), res);
    }
}

/// A router in component mode and a new component stream with `secret` (no handshake
/// yet); the temp dir lives as long as they do.
fn unlinked(tag: &str, secret: &str) -> (TempDir, Router, ComponentStream) {
    let dir = TempDir::new(tag);
    let (r, _store) = router(&dir);
    let s = ComponentStream::new("ps.example.net", secret, XmlLimits::default());
    (dir, r, s)
}

/// A stream through the handshake, its outbox attached to the router as the shell does.
fn ready(r: &mut Router) -> (ComponentStream, Rc<Outbox>) {
    let mut s = ComponentStream::new("ps.example.net", "secret", XmlLimits::default());
    let mut out = Vec::new();
    s.open(&mut out);
    assert_eq!(
        s.receive(SERVER_HEADER.as_bytes(), r, &mut out),
        Event::Continue
    );
    assert_eq!(s.receive(b"<handshake/>", r, &mut out), Event::Ready);
    assert!(s.is_ready());
    let ob = Outbox::new(64, 1 << 20);
    r.component_attach(ob.clone());
    (s, ob)
}

#[test]
fn handshake_digest_is_lowercase_hex_sha1_of_id_and_secret() {
    // sha1("3BF96D75" + "secret"), computed independently.
    assert_eq!(
        handshake_digest("3BF96D75", "secret"),
        "20631b4b87b2d6381daeb556438f05036e09ad66"
    );
}

#[test]
fn opens_with_component_header_and_answers_the_stream_id() {
    let (_dir, mut r, mut s) = unlinked("comp-hs", "secret");
    let mut out = Vec::new();
    s.open(&mut out);
    let header = String::from_utf8(out.clone()).expect("utf-8");
    assert!(
        header.contains("xmlns='jabber:component:accept'"),
        "{header}"
    );
    assert!(header.contains("to='ps.example.net'"), "{header}");
    assert!(
        header.starts_with("<?xml version='1.0'?><stream:stream "),
        "{header}"
    );
    assert!(header.ends_with("'>"), "{header}");
    out.clear();
    assert_eq!(
        s.receive(SERVER_HEADER.as_bytes(), &mut r, &mut out),
        Event::Continue
    );
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "<handshake>20631b4b87b2d6381daeb556438f05036e09ad66</handshake>"
    );
    assert!(!s.is_ready());
}

#[test]
fn a_refused_secret_is_reported_as_auth_failure() {
    let (_dir, mut r, mut s) = unlinked("comp-refused", "wrong");
    let mut out = Vec::new();
    s.open(&mut out);
    s.receive(SERVER_HEADER.as_bytes(), &mut r, &mut out);
    let err = b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
        </stream:error></stream:stream>";
    match s.receive(err, &mut r, &mut out) {
        Event::Closed { reason, auth } => {
            assert!(auth);
            assert!(reason.contains("not-authorized"), "{reason}");
        }
        e => panic!("expected Closed, got {e:?}"),
    }
}

#[test]
fn a_client_stream_header_is_refused() {
    let (_dir, mut r, mut s) = unlinked("comp-ns", "secret");
    let mut out = Vec::new();
    let client = b"<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='x'>";
    assert!(matches!(
        s.receive(client, &mut r, &mut out),
        Event::Closed { .. }
    ));
    assert!(
        String::from_utf8(out)
            .expect("utf-8")
            .contains("<stream:error>")
    );
}

#[test]
fn stanzas_before_the_handshake_are_not_routed() {
    let (_dir, mut r, mut s) = unlinked("comp-early", "secret");
    let mut out = Vec::new();
    s.receive(SERVER_HEADER.as_bytes(), &mut r, &mut out);
    let iq = b"<iq type='get' id='1' from='alice@example.net/a' to='ps.example.net'>\
        <query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
    assert!(matches!(
        s.receive(iq, &mut r, &mut out),
        Event::Closed { auth: true, .. }
    ));
}

/// A router in component mode, its store, and a component stream through its handshake
/// whose outbox gets what the service sends to the server.
struct Linked {
    r: Router,
    store: Rc<Store>,
    s: ComponentStream,
    ob: Rc<Outbox>,
    _dir: TempDir,
}

fn linked(tag: &str) -> Linked {
    let dir = TempDir::new(tag);
    let (mut r, store) = router(&dir);
    let (s, ob) = ready(&mut r);
    Linked {
        r,
        store,
        s,
        ob,
        _dir: dir,
    }
}

impl Linked {
    /// The server sends `xml` over the stream; the group commit runs; what the service
    /// sent back to the server. The stream itself writes nothing.
    fn server_sends(&mut self, xml: &str) -> Vec<Element> {
        let mut out = Vec::new();
        let ev = self.s.receive(xml.as_bytes(), &mut self.r, &mut out);
        assert_eq!(ev, Event::Continue, "{xml}");
        assert!(out.is_empty(), "the stream itself wrote {out:?}");
        self.commit();
        drained(&self.ob)
    }

    fn commit(&mut self) {
        commit(&mut self.r, &self.store);
    }
}

const PS: &str = "http://jabber.org/protocol/pubsub";

/// An XEP-0199 ping from `from` to `to`.
fn ping(from: &str, to: &str) -> String {
    format!("<iq type='get' id='p' from='{from}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
}

/// `<iq type='set'>` from `from` to the service with the pub-sub payload `inner`.
fn pubsub_set(id: &str, from: &str, inner: &str) -> String {
    format!(
        "<iq type='set' id='{id}' from='{from}' to='ps.example.net'><pubsub xmlns='{PS}'>{inner}</pubsub></iq>"
    )
}

#[test]
fn remote_users_create_subscribe_publish_and_get_notified_through_the_component() {
    let mut l = linked("comp-route");
    // ejabberd names the component namespace on each stanza; Prosody does not.
    let got = l.server_sends(
        "<iq xmlns='jabber:component:accept' type='set' id='c1' \
         from='alice@example.net/a' to='ps.example.net'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='n'/></pubsub></iq>",
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].attr("type"), Some("result"));
    assert_eq!(got[0].attr("to"), Some("alice@example.net/a"));
    assert_eq!(got[0].attr("from"), Some("ps.example.net"));
    let subscribe = "<subscribe node='n' jid='bob@other.example'/>";
    let got = l.server_sends(&pubsub_set("s1", "bob@other.example/b", subscribe));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].attr("type"), Some("result"), "{got:?}");
    let publish = "<publish node='n'><item id='i1'><t xmlns='urn:x'>1</t></item></publish>";
    let got = l.server_sends(&pubsub_set("p1", "alice@example.net/a", publish));
    // One notification, to the subscriber, from the service.
    let notes: Vec<(Option<&str>, Option<&str>)> = got
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| (e.attr("to"), e.attr("from")))
        .collect();
    assert_eq!(notes, [(Some("bob@other.example"), Some("ps.example.net"))]);
    assert!(
        got.iter()
            .any(|e| e.name == "iq" && e.attr("type") == Some("result"))
    );
}

#[test]
fn stanzas_not_for_the_service_or_claiming_our_domain_are_refused() {
    let mut l = linked("comp-refuse");
    // To another JID at the component: service-unavailable back to the sender.
    let got = l.server_sends(&ping("alice@example.net/a", "someone@ps.example.net"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].attr("type"), Some("error"));
    assert!(got[0].to_string_in_stream().contains("service-unavailable"));
    // Claiming Kinglet's own domain: dropped, nothing answered.
    let got = l.server_sends(&ping("admin@kinglet.invalid/a", "ps.example.net"));
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn presence_to_the_service_is_remembered_and_subscriptions_approved() {
    let mut l = linked("comp-presence");
    l.server_sends(
        "<presence from='bob@other.example/b' to='ps.example.net'><show>away</show></presence>",
    );
    let bob = crate::jid::Jid::parse("bob@other.example").expect("jid");
    let p = l.r.directory_presences(&bob);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].1, "away");
    l.server_sends("<presence type='unavailable' from='bob@other.example/b' to='ps.example.net'/>");
    assert!(l.r.directory_presences(&bob).is_empty());
    let got =
        l.server_sends("<presence type='subscribe' from='bob@other.example' to='ps.example.net'/>");
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].attr("type"), Some("subscribed"));
    assert_eq!(got[0].attr("to"), Some("bob@other.example"));
    assert_eq!(got[0].attr("from"), Some("ps.example.net"));
    assert_eq!(got[1].attr("type"), None);
    assert_eq!(got[2].attr("type"), Some("subscribe"));
}

#[test]
fn detaching_makes_remote_jids_unreachable() {
    let mut l = linked("comp-detach");
    l.r.component_detach();
    let got = l.server_sends(
        "<iq type='get' id='d' from='alice@example.net/a' to='ps.example.net'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn presence_based_delivery_reaches_only_remote_resources_known_available() {
    let mut l = linked("comp-pbd");
    l.server_sends(&pubsub_set(
        "c",
        "alice@example.net/a",
        "<create node='p'/><configure>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field var='pubsub#presence_based_delivery'><value>1</value></field></x>\
         </configure>",
    ));
    for who in ["bob@other.example", "carol@other.example"] {
        let subscribe = format!("<subscribe node='p' jid='{who}'/>");
        l.server_sends(&pubsub_set("s", &format!("{who}/r"), &subscribe));
    }
    // Only bob's resource is known to be available.
    let got = l.server_sends("<presence from='bob@other.example/r' to='ps.example.net'/>");
    assert!(
        got.iter().all(|e| e.attr("type") == Some("result")),
        "{got:?}"
    );
    let publish = "<publish node='p'><item id='i'><t xmlns='urn:x'/></item></publish>";
    let notes: Vec<String> = l
        .server_sends(&pubsub_set("p", "alice@example.net/a", publish))
        .iter()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.attr("to").map(str::to_owned))
        .collect();
    // To the available full JID, not to the bare JIDs (the server would deliver those
    // whatever the presence).
    assert_eq!(notes, vec!["bob@other.example/r".to_owned()]);
}

#[test]
fn local_users_reach_remote_subscribers_only_through_the_service() {
    let mut l = linked("comp-mixed");
    l.store.user_add("dave", b"creds").expect("add user");
    let (dave, dave_ob) = crate::test_support::bind(&mut l.r, "dave", "d", 7);
    l.server_sends(&pubsub_set(
        "c",
        "alice@example.net/a",
        "<create node='n'/>",
    ));
    let subscribe = "<subscribe node='n' jid='bob@other.example'/>";
    l.server_sends(&pubsub_set("s", "bob@other.example/b", subscribe));
    // A local user's own stanza to a remote JID never leaves through the component (the
    // server would refuse its `from`): it bounces, as without s2s.
    let el = |xml: &str| Element::parse(xml).expect("parses");
    l.r.route(
        &dave,
        el("<message xmlns='jabber:client' from='dave@kinglet.invalid/d' to='bob@other.example' type='chat'><body>hi</body></message>"),
    );
    assert!(drained(&l.ob).is_empty(), "nothing to the component");
    let back = drained(&dave_ob);
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(
        back[0]
            .to_string_in_stream()
            .contains("remote-server-not-found")
    );
    // A local user's node, a remote subscriber: the notification goes out as the
    // service's, through the component.
    let local = |id: &str, inner: &str| {
        el(&format!(
            "<iq xmlns='jabber:client' type='set' id='{id}' from='dave@kinglet.invalid/d' \
             to='ps.example.net'><pubsub xmlns='{PS}'>{inner}</pubsub></iq>"
        ))
    };
    l.r.route(&dave, local("c2", "<create node='d'/>"));
    l.commit();
    let subscribe = "<subscribe node='d' jid='bob@other.example'/>";
    l.server_sends(&pubsub_set("s2", "bob@other.example/b", subscribe));
    drained(&dave_ob);
    let publish = "<publish node='d'><item id='x'><t xmlns='urn:x'/></item></publish>";
    l.r.route(&dave, local("p", publish));
    l.commit();
    let remote = drained(&l.ob);
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert_eq!(remote[0].name, "message");
    assert_eq!(remote[0].attr("to"), Some("bob@other.example"));
    assert_eq!(remote[0].attr("from"), Some("ps.example.net"));
    let local = drained(&dave_ob);
    assert!(local.iter().any(|e| e.attr("type") == Some("result")));
}
