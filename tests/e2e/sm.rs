//! XEP-0198 over real sockets: resumption after STARTTLS and over direct TLS, presence
//! kept while detached, and the window's end.

use std::path::Path;
use std::time::{Duration, Instant};

use kinglet::sasl::ScramHash;
use kinglet::xml::Element;

use super::client::Client;
use super::{Daemon, Options};

const SM: &str = "urn:xmpp:sm:3";

fn daemon() -> Daemon {
    Daemon::start(Options {
        c2s_extra: "resume_timeout_secs = 3\n",
        ..Options::default()
    })
}

/// Authenticated (SCRAM) over `c`, stream restarted: ready for bind or resume.
fn authenticated(mut c: Client, ca: &Path, starttls: bool, user: &str, pass: &str) -> Client {
    c.open_stream();
    if starttls {
        c.starttls(ca);
        c.open_stream();
    }
    let r = c.scram(ScramHash::Sha256, user, pass);
    assert_eq!(r.name, "success", "{r:?}");
    let f = c.open_stream();
    assert!(f.child("sm", SM).is_some(), "<sm/> offered: {f:?}");
    c
}

/// Binds `resource` on the restarted stream of `c` (no new stream header).
fn bind_here(c: &mut Client, resource: &str) -> Element {
    c.iq(
        "bind",
        &format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
    )
}

/// Messages' bodies among what `c` receives within `wait`, until `n` arrived.
fn bodies(c: &mut Client, n: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Some(e) = c.try_next(Duration::from_millis(100)) {
            if let Some(b) = e.child("body", "jabber:client") {
                got.push(b.text());
            }
        }
    }
    got
}

fn chat(c: &mut Client, to: &str, body: &str) {
    c.send(&format!(
        "<message type='chat' to='{to}' id='{body}'><body>{body}</body></message>"
    ));
}

/// Whether `c` receives an unavailable presence from `from` within `wait`.
fn saw_unavailable(c: &mut Client, from: &str, wait: Duration) -> Option<Element> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(e) = c.try_next(Duration::from_millis(100)) {
            if e.name == "presence"
                && e.attr("type") == Some("unavailable")
                && e.attr("from") == Some(from)
            {
                return Some(e);
            }
        }
    }
    None
}

/// A session enabled after STARTTLS is resumed over direct TLS after its socket is cut:
/// the contact never sees it go unavailable, and the messages sent before and during the
/// cut arrive once, in order. Then it is cut again and the window passes: the contact sees
/// it go unavailable.
#[test]
fn resumed_over_direct_tls_after_a_cut_and_ended_by_the_window() {
    let d = daemon();
    let ca = d.cert.clone().expect("cert");
    let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "phone");
    bob.send("<presence/>");
    let mut alice = authenticated(Client::connect(d.port), &ca, true, "alice", "alice-pw");
    let b = bind_here(&mut alice, "desk");
    assert_eq!(b.attr("type"), Some("result"));
    alice.send("<presence/>");
    // A round trip on her stream: her initial presence is handled before bob's request
    // (a request that races an initial presence waits for her next one, RFC 6121 §3.1.3).
    alice.iq(
        "sync",
        "<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    bob.subscribe_presence("bob@localhost", &mut alice, "alice@localhost");
    alice.send(&format!("<enable xmlns='{SM}' resume='true'/>"));
    let enabled = alice.wait_for("enabled", |e| e.name == "enabled");
    let id = enabled.attr("id").expect("id").to_owned();
    assert_eq!(enabled.attr("max"), Some("3"));
    // What arrives after <enabled/> counts: the presence traffic of the subscription.
    let mut stale = Vec::new();
    while let Some(e) = alice.try_next(Duration::from_millis(300)) {
        stale.push(e);
    }
    let already = stale.iter().filter(|e| e.ns == "jabber:client").count() as u32;
    alice.send(&format!("<a xmlns='{SM}' h='{already}'/>"));
    for i in 0..3 {
        chat(&mut bob, "alice@localhost/desk", &format!("m{i}"));
    }
    assert_eq!(
        bodies(&mut alice, 3, Duration::from_secs(5)),
        ["m0", "m1", "m2"]
    );
    // She handled m0 only; the link dies without a word.
    drop(alice);
    std::thread::sleep(Duration::from_millis(300));
    chat(&mut bob, "alice@localhost/desk", "n0");
    assert!(
        saw_unavailable(&mut bob, "alice@localhost/desk", Duration::from_millis(500)).is_none(),
        "XEP-0198: no unavailable presence while resumable"
    );
    let tls_port = d.tls_port.expect("direct tls");
    let mut again = authenticated(
        Client::connect_direct_tls(tls_port, &ca),
        &ca,
        false,
        "alice",
        "alice-pw",
    );
    let h = already + 1;
    again.send(&format!("<resume xmlns='{SM}' previd='{id}' h='{h}'/>"));
    let r = again.wait_for("resumed", |e| e.name == "resumed" || e.name == "failed");
    assert_eq!(r.name, "resumed", "{r:?}");
    assert_eq!(
        bodies(&mut again, 3, Duration::from_secs(5)),
        ["m1", "m2", "n0"]
    );
    assert!(
        bodies(&mut again, 1, Duration::from_millis(300)).is_empty(),
        "once each"
    );
    // The session is hers: a ping round trip works.
    let p = again.iq(
        "p",
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(p.attr("type"), Some("result"));
    // Cut again and let the 3 s window pass: now the contact sees her go.
    drop(again);
    let gone = saw_unavailable(&mut bob, "alice@localhost/desk", Duration::from_secs(10));
    assert!(gone.is_some(), "unavailable when the window ended");
}

/// Resumption refused after STARTTLS for another account's id, and a fresh bind works.
#[test]
fn resume_is_bound_to_the_account() {
    let d = daemon();
    let ca = d.cert.clone().expect("cert");
    let mut alice = authenticated(Client::connect(d.port), &ca, true, "alice", "alice-pw");
    bind_here(&mut alice, "desk");
    alice.send(&format!("<enable xmlns='{SM}' resume='true'/>"));
    let id = alice
        .wait_for("enabled", |e| e.name == "enabled")
        .attr("id")
        .expect("id")
        .to_owned();
    drop(alice);
    let mut bob = authenticated(Client::connect(d.port), &ca, true, "bob", "bob-pw");
    bob.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    let f = bob.wait_for("failed", |e| e.name == "failed" || e.name == "resumed");
    assert_eq!(f.name, "failed");
    assert!(
        f.child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas")
            .is_some()
    );
    let b = bind_here(&mut bob, "phone");
    assert_eq!(b.attr("type"), Some("result"), "bind after a failed resume");
}

/// XEP-0198 §4 with XEP-0160: a notification of a `normal` node left unacknowledged in a
/// session whose window ends, with no other session of the account available, is kept
/// offline and delivered (with a delay stamp) at the account's next available presence;
/// one published while it was detached likewise.
#[test]
fn unacknowledged_notifications_of_an_ended_session_are_kept_offline() {
    let d = daemon();
    let ca = d.cert.clone().expect("cert");
    let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "phone");
    let r = bob.create_node("c", "alerts", &[("pubsub#notification_type", "normal")]);
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let mut alice = authenticated(Client::connect(d.port), &ca, true, "alice", "alice-pw");
    bind_here(&mut alice, "desk");
    alice.send("<presence/>");
    let ps = "http://jabber.org/protocol/pubsub";
    alice.pubsub_ok(
        "s",
        "set",
        ps,
        "<subscribe node='alerts' jid='alice@localhost'/>",
    );
    alice.send(&format!("<enable xmlns='{SM}' resume='true'/>"));
    alice.wait_for("enabled", |e| e.name == "enabled");
    let publish = |bob: &mut Client, id: &str| {
        bob.pubsub_ok(
            id,
            "set",
            ps,
            &format!("<publish node='alerts'><item id='{id}'><alert xmlns='urn:example'>{id}</alert></item></publish>"),
        );
    };
    publish(&mut bob, "a1");
    alice.wait_for("a1", |e| e.name == "message");
    // Never acknowledged; the link dies, a second alert comes while detached.
    drop(alice);
    std::thread::sleep(Duration::from_millis(300));
    publish(&mut bob, "a2");
    // The 3 s window passes; then alice comes back with a fresh session.
    std::thread::sleep(Duration::from_secs(4));
    let mut back = Client::login(d.port, &ca, "alice", "alice-pw", "laptop");
    back.send("<presence/>");
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids.len() < 2 && Instant::now() < deadline {
        if let Some(e) = back.try_next(Duration::from_millis(100)) {
            let items = e
                .child("event", "http://jabber.org/protocol/pubsub#event")
                .and_then(|ev| ev.child("items", "http://jabber.org/protocol/pubsub#event"));
            if let Some(items) = items {
                assert!(e.child("delay", "urn:xmpp:delay").is_some(), "{e:?}");
                assert_eq!(e.attr("to"), Some("alice@localhost"), "to the account");
                ids.extend(
                    items
                        .elements()
                        .filter_map(|i| i.attr("id").map(str::to_owned)),
                );
            }
        }
    }
    assert_eq!(ids, ["a1", "a2"], "kept offline, in order, once");
}
