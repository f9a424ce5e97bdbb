//! End-to-end behaviour of the broker core over real sockets.

use std::time::Duration;

use kinglet::sasl::ScramHash;
use kinglet::xml::Element;

use super::client::{Client, condition};
use super::{Daemon, Options, PING, get, kinglet};

const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

/// Whether the features `f` mark the STARTTLS they offer (asserted) as required.
fn starttls_required(f: &Element) -> bool {
    let st = f.child("starttls", TLS).expect("starttls offered");
    st.child("required", TLS).is_some()
}

fn ca(d: &Daemon) -> std::path::PathBuf {
    d.cert.clone().expect("daemon has a cert")
}

const ROSTER: &str = "jabber:iq:roster";
const DISCO_INFO: &str = "<query xmlns='http://jabber.org/protocol/disco#info'/>";
const ANONYMOUS: &str = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>";

/// Asserts the error condition of the reply to a get of `payload` sent to `to`.
#[track_caller]
fn get_fails(c: &mut Client, id: &str, to: &str, payload: &str, want: &str) {
    assert_eq!(condition(&get(c, id, to, payload)), want);
}

/// Pings `to`, asserting a result, which it returns.
#[track_caller]
fn ping_ok(c: &mut Client, id: &str, to: &str) -> Element {
    let r = get(c, id, to, PING);
    assert_eq!(r.attr("type"), Some("result"));
    r
}

/// The reply to a roster get.
fn roster_get(c: &mut Client, id: &str) -> Element {
    let get = format!("<iq type='get' id='{id}'><query xmlns='{ROSTER}'/></iq>");
    c.iq(id, &get)
}

/// The first roster item of a roster result or push.
fn first_item(r: &Element) -> Element {
    let q = r.child("query", ROSTER).unwrap();
    q.elements().next().unwrap().clone()
}

/// Waits for a roster push and returns its first item.
fn roster_push(c: &mut Client, what: &str) -> Element {
    let push = c.wait_for(what, |e| e.name == "iq" && e.attr("type") == Some("set"));
    first_item(&push)
}

/// alice/desk and bob/phone logged in to `d`, both available.
fn available_alice_and_bob(d: &Daemon) -> (Client, Client) {
    let ca = ca(d);
    let mut alice = Client::login(d.port, &ca, "alice", "alice-pw", "desk");
    let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "phone");
    bob.send("<presence/>");
    alice.send("<presence/>");
    (alice, bob)
}

/// Waits for a stream error and returns its condition.
fn stream_error(c: &mut Client) -> String {
    condition(&c.wait_for("stream error", |e| e.name == "error"))
}

/// A client on `port` whose stream is open.
fn opened(port: u16) -> Client {
    let mut c = Client::connect(port);
    c.open_stream();
    c
}

/// A client of `d` whose stream is open again after STARTTLS.
fn over_tls(d: &Daemon) -> Client {
    let mut c = opened(d.port);
    c.starttls(&ca(d));
    c.open_stream();
    c
}

/// Asserts that a `kinglet` command succeeded, showing its stderr if not.
#[track_caller]
fn succeeded(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn login_scram_sha256_and_sha1_over_starttls() {
    let d = Daemon::start(Options::default());
    for hash in [ScramHash::Sha256, ScramHash::Sha1] {
        let mut c = Client::connect(d.port);
        let f = c.open_stream();
        // Loopback peer: STARTTLS offered but not required, so mechanisms are listed too.
        assert!(!starttls_required(&f));
        assert!(
            f.child("limits", "urn:xmpp:stream-limits:0").is_some(),
            "XEP-0478 limits advertised"
        );
        c.starttls(&ca(&d));
        c.open_stream();
        let mechs = c.mechanisms();
        assert_eq!(&mechs[..2], &["SCRAM-SHA-256", "SCRAM-SHA-1"]);
        assert!(mechs.contains(&"PLAIN".to_string()));
        let r = c.scram(hash, "alice", "alice-pw");
        assert_eq!(r.name, "success", "{r:?}");
        let b = c.bind(None);
        assert_eq!(b.attr("type"), Some("result"));
        let jid = c.jid.clone().unwrap();
        assert!(
            jid.starts_with("alice@localhost/"),
            "server-generated resource: {jid}"
        );
        // Legacy session element still answered.
        let session = "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>";
        let s = c.iq("s1", &format!("<iq type='set' id='s1'>{session}</iq>"));
        assert_eq!(s.attr("type"), Some("result"));
    }
}

#[test]
fn login_over_direct_tls() {
    let d = Daemon::start(Options::default());
    let mut c = Client::connect_direct_tls(d.tls_port.unwrap(), &ca(&d));
    let f = c.open_stream();
    assert!(f.child("starttls", TLS).is_none(), "no STARTTLS inside TLS");
    let r = c.scram(ScramHash::Sha256, "bob", "bob-pw");
    assert_eq!(r.name, "success");
    assert_eq!(c.bind(Some("phone")).attr("type"), Some("result"));
    assert_eq!(c.jid.as_deref(), Some("bob@localhost/phone"));
}

#[test]
fn wrong_password_fails_then_stream_closes_after_three_attempts() {
    let d = Daemon::start(Options::default());
    let mut c = over_tls(&d);
    for _ in 0..2 {
        let r = c.scram(ScramHash::Sha256, "alice", "wrong");
        assert_eq!(r.name, "failure");
        assert_eq!(condition(&r), "not-authorized");
    }
    // unknown user: same answer as a wrong password (no account enumeration)
    let r = c.scram(ScramHash::Sha256, "nobody", "x");
    assert_eq!(condition(&r), "not-authorized");
    let e = c.next();
    assert_eq!(e.name, "error");
    assert_eq!(condition(&e), "policy-violation");
    assert!(c.wait_closed(Duration::from_secs(5)));
}

#[test]
fn plain_works_over_tls_and_anonymous_on_loopback() {
    let d = Daemon::start(Options::default());
    let mut c = over_tls(&d);
    assert_eq!(c.plain("alice", "alice-pw").name, "success");
    assert_eq!(c.bind(None).attr("type"), Some("result"));

    let mut a = opened(d.port);
    assert!(a.mechanisms().contains(&"ANONYMOUS".to_string()));
    a.send(ANONYMOUS);
    let r = a.next();
    assert_eq!(r.name, "success");
    // restart
    a.bind(None);
    assert!(a.jid.as_deref().unwrap().starts_with("anon-"));
}

#[test]
fn anonymous_refused_when_disabled() {
    let d = Daemon::start(Options {
        anonymous: "never",
        ..Options::default()
    });
    let mut a = opened(d.port);
    assert!(!a.mechanisms().contains(&"ANONYMOUS".to_string()));
    a.send(ANONYMOUS);
    let r = a.next();
    assert_eq!(r.name, "failure");
    assert_eq!(condition(&r), "invalid-mechanism");
}

#[test]
fn message_and_iq_routing_between_accounts() {
    let d = Daemon::start(Options::default());
    let (mut alice, mut bob) = available_alice_and_bob(&d);
    // message to bare JID reaches the available resource, `from` stamped with the full JID
    alice.send(
        "<message to='bob@localhost' type='chat' id='m1'><body>hi &amp; bye</body></message>",
    );
    let m = bob.wait_for("message", |e| e.name == "message");
    assert_eq!(m.attr("from"), Some("alice@localhost/desk"));
    assert_eq!(m.child("body", "jabber:client").unwrap().text(), "hi & bye");
    // a spoof-free from: the client's own bare JID is accepted and replaced
    alice.send("<message from='alice@localhost' to='bob@localhost/phone'><body>2</body></message>");
    let m = bob.wait_for("message 2", |e| e.name == "message");
    assert_eq!(m.attr("from"), Some("alice@localhost/desk"));
    // iq to a full JID is routed, and its result comes back
    alice.send(&format!(
        "<iq type='get' id='p1' to='bob@localhost/phone'>{PING}</iq>"
    ));
    let q = bob.wait_for("routed iq", |e| e.name == "iq");
    assert_eq!(q.attr("from"), Some("alice@localhost/desk"));
    bob.send("<iq type='result' id='p1' to='alice@localhost/desk'/>");
    let r = alice.wait_for("iq result", |e| {
        e.name == "iq" && e.attr("id") == Some("p1")
    });
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("from"), Some("bob@localhost/phone"));
    // iq to an offline resource: service-unavailable (RFC 6121 §8.5.3.2.3)
    get_fails(
        &mut alice,
        "p2",
        "bob@localhost/gone",
        PING,
        "service-unavailable",
    );
    // iq to a non-existent account: service-unavailable (§8.5.1)
    get_fails(
        &mut alice,
        "p3",
        "nobody@localhost",
        DISCO_INFO,
        "service-unavailable",
    );
    // message to a non-existent account: error back
    alice.send("<message to='nobody@localhost' id='m3'><body>x</body></message>");
    let e = alice.wait_for("message error", |e| {
        e.name == "message" && e.attr("id") == Some("m3")
    });
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(condition(&e), "service-unavailable");
    // remote domain: no s2s
    get_fails(
        &mut alice,
        "p4",
        "example.org",
        PING,
        "remote-server-not-found",
    );
    // spoofed from: stream error invalid-from
    alice.send("<message from='bob@localhost/phone' to='bob@localhost'><body>x</body></message>");
    assert_eq!(stream_error(&mut alice), "invalid-from");
}

#[test]
fn disco_and_ping_on_the_domain() {
    let d = Daemon::start(Options::default());
    let mut c = Client::login(d.port, &ca(&d), "alice", "alice-pw", "r");
    let r = get(&mut c, "d1", "localhost", DISCO_INFO);
    assert_eq!(r.attr("type"), Some("result"));
    let q = r
        .child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let id = q
        .child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("server"), Some("im"))
    );
    let feats: Vec<&str> = q.elements().filter_map(|e| e.attr("var")).collect();
    assert!(feats.contains(&"urn:xmpp:ping"));
    let items = "<query xmlns='http://jabber.org/protocol/disco#items'/>";
    assert_eq!(
        get(&mut c, "d2", "localhost", items).attr("type"),
        Some("result")
    );
    let r = ping_ok(&mut c, "p1", "localhost");
    assert_eq!(r.attr("from"), Some("localhost"));
    let unknown = "<query xmlns='urn:example:unknown'/>";
    get_fails(&mut c, "u1", "localhost", unknown, "service-unavailable");
    let r = c.iq("u2", "<iq type='get' id='u2' to='localhost'/>");
    assert_eq!(condition(&r), "bad-request");
}

#[test]
fn roster_and_presence_subscription_handshake_persist() {
    let mut d = Daemon::start(Options::default());
    let ca = ca(&d);
    {
        let mut alice = Client::login(d.port, &ca, "alice", "alice-pw", "desk");
        let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "phone");
        let r = roster_get(&mut alice, "r0");
        assert_eq!(r.child("query", ROSTER).unwrap().elements().count(), 0);
        roster_get(&mut bob, "r0");
        alice.send("<presence><priority>1</priority></presence>");
        bob.send("<presence/>");
        // roster set → result + push
        alice.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>");
        let item = roster_push(&mut alice, "roster push");
        assert_eq!(item.attr("jid"), Some("bob@localhost"));
        assert_eq!(item.attr("subscription"), Some("none"));
        alice.wait_for("roster set result", |e| e.attr("id") == Some("r1"));
        // subscribe → bob sees the request; alice's item gets ask='subscribe'
        alice.send("<presence to='bob@localhost' type='subscribe'/>");
        let req = bob.wait_presence("subscribe", "subscribe");
        assert_eq!(req.attr("from"), Some("alice@localhost"));
        let item = roster_push(&mut alice, "ask push");
        assert_eq!(item.attr("ask"), Some("subscribe"));
        // bob approves → alice gets subscribed + bob's presence; subscription to/from
        bob.send("<presence to='alice@localhost' type='subscribed'/>");
        alice.wait_presence("subscribed", "subscribed");
        let p = alice.wait_for("bob's presence", |e| {
            e.name == "presence" && e.attr("type").is_none()
        });
        assert_eq!(p.attr("from"), Some("bob@localhost/phone"));
        // and the other direction
        bob.subscribe_presence("bob@localhost", &mut alice, "alice@localhost");
        let item = first_item(&roster_get(&mut alice, "r2"));
        assert_eq!(item.attr("subscription"), Some("both"));
        assert_eq!(item.attr("name"), Some("Bob"));
        assert_eq!(item.child("group", ROSTER).unwrap().text(), "Friends");
        // a presence update from alice reaches bob; her going offline sends unavailable
        alice.send("<presence><show>away</show></presence>");
        let p = bob.wait_for("update", |e| {
            e.name == "presence" && e.child("show", "jabber:client").is_some()
        });
        assert_eq!(p.attr("from"), Some("alice@localhost/desk"));
        alice.send("</stream:stream>");
        let p = bob.wait_presence("unavailable", "unavailable");
        assert_eq!(p.attr("from"), Some("alice@localhost/desk"));
    }
    // restart: the roster survives
    let _ = d.child.kill();
    let _ = d.child.wait();
    d.restart("stderr2.log");
    let d2 = &d;
    let mut alice = Client::login(d2.port, &ca, "alice", "alice-pw", "desk");
    let item = first_item(&roster_get(&mut alice, "r3"));
    assert_eq!(
        (item.attr("jid"), item.attr("subscription")),
        (Some("bob@localhost"), Some("both"))
    );
    // removal pushes subscription='remove' and cancels both directions
    alice.send("<iq type='set' id='r4'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    let item = roster_push(&mut alice, "remove push");
    assert_eq!(item.attr("subscription"), Some("remove"));
    let out = kinglet(&["user", "list"], &d2.config);
    assert_eq!(
        out.status.code(),
        Some(75),
        "locked while running: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
}

#[test]
fn resource_conflict_replaces_the_old_session() {
    let d = Daemon::start(Options::default());
    let ca = ca(&d);
    let mut first = Client::login(d.port, &ca, "alice", "alice-pw", "same");
    let _second = Client::login(d.port, &ca, "alice", "alice-pw", "same");
    let e = first.wait_for("conflict", |e| e.name == "error");
    assert_eq!(condition(&e), "conflict");
    assert!(first.wait_closed(Duration::from_secs(5)));
}

#[test]
fn bad_xml_gets_the_right_stream_error() {
    let d = Daemon::start(Options::default());
    let cases: &[(&str, &str)] = &[
        ("<!DOCTYPE lol [<!ENTITY lol 'lol'>]>", "restricted-xml"),
        ("<!-- hi -->", "restricted-xml"),
        ("<message><body>&lol;</body></message>", "restricted-xml"),
        ("<message><body></body></foo>", "not-well-formed"),
        ("<?pi x?>", "restricted-xml"),
    ];
    for (input, want) in cases {
        let mut c = opened(d.port);
        c.send(input);
        assert_eq!(&stream_error(&mut c), want, "input {input}");
        assert!(c.wait_closed(Duration::from_secs(5)));
    }
    // oversized stanza: policy-violation, before the whole thing is buffered
    let mut c = opened(d.port);
    let big = format!("<message><body>{}</body></message>", "x".repeat(70_000));
    c.send_bytes_lossy(big.as_bytes());
    assert_eq!(stream_error(&mut c), "policy-violation");
    // invalid UTF-8
    let mut c = opened(d.port);
    c.send_bytes_lossy(b"<message><body>\xff\xfe</body></message>");
    assert_eq!(stream_error(&mut c), "not-well-formed");
    // wrong stream namespace / unknown host
    let mut c = Client::connect(d.port);
    c.send("<stream:stream to='elsewhere.example' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
    assert_eq!(stream_error(&mut c), "host-unknown");
    // stanza before auth
    let mut c = opened(d.port);
    c.send("<message to='bob@localhost'><body>x</body></message>");
    assert_eq!(stream_error(&mut c), "not-authorized");
    // the daemon is still alive and serving
    let _ok = Client::login(d.port, &ca(&d), "alice", "alice-pw", "still-here");
    assert!(
        d.log().contains("XML error from peer"),
        "violations are logged"
    );
}

/// `<message><body></message>` (issue 10): the mismatched end tag is a `not-well-formed`
/// stream error at once, not a wedged stream that swallows the next stanzas; other sessions
/// carry on.
#[test]
fn mismatched_end_tag_closes_the_stream_at_once() {
    let d = Daemon::start(Options::default());
    let ca = ca(&d);
    let mut alice = Client::login(d.port, &ca, "alice", "alice-pw", "bad");
    let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "good");
    let sent = std::time::Instant::now();
    alice.send("<message to='bob@localhost/good'><body>x</message>");
    // Nothing else is sent: the error must not wait for a later close tag.
    assert_eq!(stream_error(&mut alice), "not-well-formed");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "stream error took {:?}",
        sent.elapsed()
    );
    assert!(alice.wait_closed(Duration::from_secs(5)));
    // The same from an anonymous session, before any stanza was routed.
    let mut anon = opened(d.port);
    anon.send(ANONYMOUS);
    assert_eq!(anon.next().name, "success");
    anon.bind(None);
    anon.send("<message><body></message>");
    assert_eq!(stream_error(&mut anon), "not-well-formed");
    assert!(anon.wait_closed(Duration::from_secs(5)));
    // Bob got nothing from the broken stanza and was not affected.
    assert!(
        bob.try_next(Duration::from_millis(300))
            .is_none_or(|e| e.name != "message")
    );
    ping_ok(&mut bob, "alive", "localhost");
    assert!(d.log().contains("XML error from peer"));
}

#[test]
fn slow_consumer_is_closed_and_others_keep_going() {
    let d = Daemon::start(Options {
        extra: "[limits]\noutbox_max_stanzas = 64\noutbox_max_bytes = 140000\nwrite_timeout_secs = 2\n",
        ..Options::default()
    });
    let ca = ca(&d);
    let mut alice = Client::login(d.port, &ca, "alice", "alice-pw", "desk");
    let mut bob = Client::login(d.port, &ca, "bob", "bob-pw", "slow");
    bob.send("<presence/>");
    std::thread::sleep(Duration::from_millis(200));
    // bob never reads; alice floods him with ~8 MB of messages
    let body = "y".repeat(4000);
    for i in 0..2000 {
        alice.send(&format!("<message to='bob@localhost/slow' type='headline' id='f{i}'><body>{body}</body></message>"));
    }
    ping_ok(&mut alice, "alive", "localhost");
    // bob's session was closed for policy-violation
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !d.log().contains("slow consumer") {
        assert!(
            std::time::Instant::now() < deadline,
            "slow consumer not closed: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(bob.wait_closed(Duration::from_secs(15)));
}

#[test]
fn cli_user_management_and_check_config() {
    let dir = super::TempDir::new("cli");
    let cfg = dir.0.join("k.toml");
    std::fs::write(
        &cfg,
        format!("data_dir = \"{}\"\n", dir.0.join("data").display()),
    )
    .unwrap();
    let out = kinglet(
        &["user", "add", "carol@localhost", "--password", "pw1"],
        &cfg,
    );
    succeeded(&out);
    let out = kinglet(&["user", "add", "carol", "--password", "pw2"], &cfg);
    assert!(!out.status.success(), "duplicate add must fail");
    let out = kinglet(&["user", "list"], &cfg);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "carol@localhost"
    );
    let pwfile = dir.0.join("pw");
    std::fs::write(&pwfile, "pw3\n").unwrap();
    let out = kinglet(
        &[
            "user",
            "passwd",
            "carol",
            "--password-file",
            pwfile.to_str().unwrap(),
        ],
        &cfg,
    );
    succeeded(&out);
    let out = kinglet(
        &["user", "add", "dave@elsewhere.example", "--password", "x"],
        &cfg,
    );
    assert!(!out.status.success());
    // the clear password is nowhere in the database file
    let db = std::fs::read(dir.0.join("data").join("kinglet.redb")).unwrap();
    assert!(
        !db.windows(3).any(|w| w == b"pw3"),
        "password stored in clear"
    );
    let out = kinglet(&["user", "del", "carol"], &cfg);
    assert!(out.status.success());
    let out = kinglet(&["user", "list"], &cfg);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");

    let out = kinglet(&["check-config"], &cfg);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen"));
    std::fs::write(&cfg, "[c2s]\nlisten = [\"0.0.0.0:5222\"]\n").unwrap();
    let out = kinglet(&["check-config"], &cfg);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("c2s.listen"));
    std::fs::write(&cfg, "bogus_key = 1\n").unwrap();
    let out = kinglet(&["check-config"], &cfg);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));
    // `run` refuses the same invalid config with 78
    let out = std::process::Command::new(super::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

/// Issue 10: pub-sub state that cannot be loaded stops the start with exit 65 and says what
/// to do, instead of a broker that runs without its pub-sub service.
#[test]
fn unloadable_pubsub_state_is_fatal_at_start() {
    use kinglet::store::{NodeRecord, PubsubOp, Store};
    let dir = super::TempDir::new("bad-pubsub");
    let data = dir.0.join("data");
    {
        let store = Store::open(&data, 1 << 20).expect("store");
        let node = NodeRecord {
            created_ms: 0,
            creator: "alice@localhost".to_owned(),
            config: vec![("pubsub#max_items".to_owned(), "lots".to_owned())],
        };
        store
            .pubsub_apply(&[PubsubOp::PutNode("bad".to_owned(), node)])
            .expect("write the node");
    }
    let cfg = dir.0.join("kinglet.toml");
    std::fs::write(
        &cfg,
        format!(
            "domain = \"localhost\"\ndata_dir = \"{}\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let (status, stderr) =
        super::run_to_exit(&cfg, "kinglet kept running without its pub-sub state");
    assert_eq!(status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("pub-sub state cannot be loaded") && stderr.contains("\"bad\""),
        "{stderr}"
    );
    assert!(stderr.contains("restore it from a backup"), "{stderr}");
}

/// RFC 6121 §4.6: directed presence reaches a non-contact, and so does the unavailable
/// presence when the sender goes away.
#[test]
fn directed_presence_and_its_unavailable() {
    let d = Daemon::start(Options::default());
    let (mut alice, mut bob) = available_alice_and_bob(&d);
    alice.send("<presence to='bob@localhost'><status>hello</status></presence>");
    let p = bob.wait_for("directed presence", |e| {
        e.name == "presence" && e.attr("type").is_none()
    });
    assert_eq!(p.attr("from"), Some("alice@localhost/desk"));
    assert_eq!(
        p.child("status", "jabber:client")
            .map(|s| s.text())
            .as_deref(),
        Some("hello")
    );
    // bob is no contact of alice: a plain presence update does not reach him
    alice.send("<presence><show>dnd</show></presence>");
    ping_ok(&mut alice, "sync", "localhost");
    assert!(
        bob.try_next(std::time::Duration::from_millis(300))
            .is_none(),
        "broadcast must not reach a non-contact"
    );
    drop(alice);
    let p = bob.wait_presence("unavailable", "unavailable");
    assert_eq!(p.attr("from"), Some("alice@localhost/desk"));
}
