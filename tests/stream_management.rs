//! XEP-0198 stream management without sockets: sessions and the router driven with bytes,
//! several connections at once, the resumption window on a fake clock.

use std::rc::Rc;
use std::time::{Duration, Instant};

use kinglet::config::Config;
use kinglet::env::FakeEnv;
use kinglet::outbox::Outbox;
use kinglet::router::Router;
use kinglet::sasl::base64_encode;
use kinglet::session::{Action, Session, Transport};
use kinglet::xml::{Element, Frame, Framer, XmlLimits};

use crate::e2e::TempDir;
use crate::negotiation::{configured, settle_password_checks};

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const SM: &str = "urn:xmpp:sm:3";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

struct World {
    router: Router,
    env: Rc<FakeEnv>,
    next_conn: u64,
    now: Instant,
    _dir: TempDir,
}

/// One client connection: its session and what the server sent it, parsed.
struct Client {
    session: Session,
    outbox: Rc<Outbox>,
    parser: Framer,
    closed: bool,
}

impl World {
    fn new(tweak: impl FnOnce(&mut Config)) -> World {
        let env = Rc::new(FakeEnv::new(1_700_000_000_000, 42));
        let (dir, cfg, store) = configured("sm", tweak, &["alice", "bob"], &*env);
        let router = Router::new(Rc::new(cfg), Rc::new(store), env.clone()).expect("router");
        World {
            router,
            env,
            next_conn: 1,
            now: Instant::now(),
            _dir: dir,
        }
    }

    /// A new connection, authenticated as `user` (PLAIN on loopback) and restarted: ready
    /// for `<bind/>` or `<resume/>`.
    fn authenticated(&mut self, user: &str) -> Client {
        let outbox = Outbox::new(256, 1 << 20);
        let transport = Transport {
            tls_active: false,
            tls_available: false,
            loopback: true,
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        let mut c = Client {
            session: Session::new(
                conn,
                transport,
                XmlLimits::default(),
                outbox.clone(),
                self.now,
            ),
            outbox,
            parser: Framer::new(XmlLimits {
                max_stanza_bytes: 1 << 20,
                ..XmlLimits::default()
            }),
            closed: false,
        };
        self.send(&mut c, HEADER);
        let plain = base64_encode(format!("\0{user}\0secret").as_bytes());
        let got = self.send(
            &mut c,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
            ),
        );
        assert_eq!(got[0].name, "success", "{got:?}");
        let features = self.send(&mut c, HEADER);
        assert!(
            features[0].child("sm", SM).is_some(),
            "XEP-0198 §2: <sm/> offered after authentication"
        );
        c
    }

    /// [`World::authenticated`], bound to `resource`, available.
    fn online(&mut self, user: &str, resource: &str) -> Client {
        let mut c = self.authenticated(user);
        let got = self.send(
            &mut c,
            &format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
        );
        assert_eq!(got[0].attr("type"), Some("result"), "{got:?}");
        self.send(&mut c, "<presence/>");
        c
    }

    /// Feed `input` to `c`, as its connection task would (password checks run at once);
    /// returns every element the server wrote to it, including what other sessions'
    /// traffic queued for it.
    fn send(&mut self, c: &mut Client, input: &str) -> Vec<Element> {
        let mut out = Vec::new();
        let a = c
            .session
            .receive(input.as_bytes(), &mut self.router, &mut out, self.now);
        let a = settle_password_checks(&mut c.session, &mut self.router, &mut out, a);
        if a == Action::Close {
            c.closed = true;
        }
        parse(c, &out)
    }

    /// What the connection task of `c` would write now that its outbox is ready.
    fn flush(&mut self, c: &mut Client) -> Vec<Element> {
        let mut out = Vec::new();
        if let Some(k) = c.outbox.kicked() {
            if c.session.on_kick(k, &mut self.router, &mut out) == Action::Close {
                c.closed = true;
            }
        } else {
            c.session.flush_outbox(&mut out, self.now);
        }
        parse(c, &out)
    }

    /// `c` (authenticated) binds `resource` and sends its initial presence; what it got
    /// (XEP-0160: the messages kept while the account was offline).
    fn back_online(&mut self, c: &mut Client, resource: &str) -> Vec<Element> {
        let got = self.send(
            c,
            &format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
        );
        assert_eq!(got[0].attr("type"), Some("result"), "{got:?}");
        let mut got = self.send(c, "<presence/>");
        got.extend(self.flush(c));
        got
    }

    /// The connection of `c` dropped (no `</stream:stream>`).
    fn cut(&mut self, mut c: Client) {
        c.session.on_disconnect(&mut self.router);
    }

    /// `n` chat messages from `from` to `to`, bodies `{tag}{i}`; what `from` got back
    /// meanwhile.
    fn chats(&mut self, from: &mut Client, to: &str, tag: &str, n: usize) -> Vec<Element> {
        let mut got = Vec::new();
        for i in 0..n {
            got.extend(self.send(
                from,
                &format!(
                    "<message type='chat' to='{to}' id='{tag}{i}'><body>{tag}{i}</body></message>"
                ),
            ));
        }
        got
    }
}

fn parse(c: &mut Client, out: &[u8]) -> Vec<Element> {
    const DECL: &[u8] = b"<?xml version='1.0'?>";
    let mut els = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let next = (1..rest.len())
            .find(|&i| rest[i..].starts_with(DECL))
            .unwrap_or(rest.len());
        if rest.starts_with(DECL) {
            c.parser.reset();
        }
        c.parser.push(&rest[..next]).expect("well-formed output");
        while let Some(f) = c.parser.next_frame().expect("output parses") {
            if let Frame::Stanza(e) = f {
                els.push(e);
            }
        }
        rest = &rest[next..];
    }
    els
}

fn bodies(els: &[Element]) -> Vec<String> {
    els.iter()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.child("body", "jabber:client").map(Element::text))
        .collect()
}

fn only<'a>(els: &'a [Element], name: &str) -> &'a Element {
    let v: Vec<&Element> = els.iter().filter(|e| e.name == name).collect();
    assert_eq!(v.len(), 1, "one <{name}/> in {els:?}");
    v[0]
}

/// A world with bob and alice online, alice's session resumable: its id.
fn resumable(tweak: impl FnOnce(&mut Config)) -> (World, Client, Client, String) {
    let mut w = World::new(tweak);
    let bob = w.online("bob", "b");
    let mut alice = w.online("alice", "a");
    let id = enable_resume(&mut w, &mut alice);
    (w, bob, alice, id)
}

/// [`resumable`], then chats `m0` and `m1` from bob reach alice, who reads them without
/// acknowledging, and her connection drops: her session is detached.
fn detached(tweak: impl FnOnce(&mut Config)) -> (World, Client, String) {
    let (mut w, mut bob, mut alice, id) = resumable(tweak);
    w.chats(&mut bob, "alice@localhost/a", "m", 2);
    assert_eq!(bodies(&w.flush(&mut alice)), ["m0", "m1"]);
    w.cut(alice);
    (w, bob, id)
}

/// `<resume/>` of session `id` with `h` on `c`: the server's answer.
fn resume(w: &mut World, c: &mut Client, id: &str, h: u32) -> Vec<Element> {
    w.send(
        c,
        &format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='{h}'/>"),
    )
}

/// Asserts that `got` is one `<failed/>` with the stanza error condition `cond`.
#[track_caller]
fn assert_failed(got: &[Element], cond: &str, why: &str) {
    let f = only(got, "failed");
    assert!(f.child(cond, STANZAS).is_some(), "{cond}: {why} {f:?}");
}

fn enable_resume(w: &mut World, c: &mut Client) -> String {
    let got = w.send(c, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let e = only(&got, "enabled");
    assert_eq!(e.attr("resume"), Some("true"));
    let max = w.router.config().c2s.resume_timeout_secs.to_string();
    assert_eq!(
        e.attr("max"),
        Some(max.as_str()),
        "c2s.resume_timeout_secs advertised"
    );
    e.attr("id").expect("resumption id").to_owned()
}

/// §3-§4: enable without resumption; both sides count stanzas and acknowledge them.
#[test]
fn xep0198_enable_and_acks_both_ways() {
    let mut w = World::new(|_| {});
    let mut bob = w.online("bob", "b");
    let mut alice = w.online("alice", "a");
    let got = w.send(&mut alice, "<enable xmlns='urn:xmpp:sm:3'/>");
    let e = only(&got, "enabled");
    assert_eq!((e.attr("id"), e.attr("resume")), (None, None));
    // Two stanzas from alice, then her <r/>: the server handled two.
    w.send(
        &mut alice,
        "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    w.send(&mut alice, "<presence><show>away</show></presence>");
    let got = w.send(&mut alice, "<r xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(only(&got, "a").attr("h"), Some("2"));
    // The server's own requests: at half the window (half of c2s.detached_max_stanzas 64).
    w.chats(&mut bob, "alice@localhost/a", "m", 20);
    let got = w.flush(&mut alice);
    assert_eq!(bodies(&got).len(), 20);
    assert_eq!(
        got.iter().filter(|e| e.name == "r").count(),
        1,
        "one request"
    );
    assert_eq!(
        alice.outbox.sm_unacked(),
        21,
        "the ping result and 20 messages"
    );
    // Beyond the window (32) stanzas wait for an acknowledgement.
    w.chats(&mut bob, "alice@localhost/a", "n", 20);
    assert_eq!(bodies(&w.flush(&mut alice)).len(), 11);
    let got = w.send(&mut alice, "<a xmlns='urn:xmpp:sm:3' h='21'/>");
    assert_eq!(bodies(&got).len(), 9, "the ack opened the window");
    w.send(&mut alice, "<a xmlns='urn:xmpp:sm:3' h='41'/>");
    assert_eq!(alice.outbox.sm_unacked(), 0);
    assert!(!alice.closed);
}

/// §3/§5: enable before binding or twice, resume after binding, r/a without stream
/// management: `<failed><unexpected-request/></failed>`, and the stream goes on.
#[test]
fn xep0198_misplaced_elements_fail_with_unexpected_request() {
    let mut w = World::new(|_| {});
    let mut c = w.authenticated("alice");
    for (input, why) in [
        ("<enable xmlns='urn:xmpp:sm:3'/>", "enable before bind"),
        ("<r xmlns='urn:xmpp:sm:3'/>", "r before enable"),
    ] {
        let got = w.send(&mut c, input);
        let f = only(&got, "failed");
        assert!(f.child("unexpected-request", STANZAS).is_some(), "{why}");
    }
    let got = w.send(
        &mut c,
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    );
    assert_eq!(got[0].attr("type"), Some("result"));
    w.send(&mut c, "<enable xmlns='urn:xmpp:sm:3'/>");
    for (input, why) in [
        ("<enable xmlns='urn:xmpp:sm:3'/>", "second enable"),
        (
            "<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>",
            "resume when bound",
        ),
    ] {
        let got = w.send(&mut c, input);
        let f = only(&got, "failed");
        assert!(f.child("unexpected-request", STANZAS).is_some(), "{why}");
    }
    assert!(!c.closed);
}

/// §5: a dropped connection is resumed; the stanzas the client did not handle come again,
/// in order, with those sent meanwhile; the resource stayed bound throughout.
#[test]
fn xep0198_resume_redelivers_in_order() {
    let (mut w, mut bob, mut alice, id) = resumable(|_| {});
    w.send(
        &mut alice,
        "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    w.chats(&mut bob, "alice@localhost/a", "m", 3);
    let got = w.flush(&mut alice);
    assert_eq!(bodies(&got), ["m0", "m1", "m2"]);
    // She handled the ping result and m0 only; then her link dies.
    w.cut(alice);
    assert_eq!(w.router.sm_counts(), (1, 1));
    assert_eq!(w.router.session_count(), 2, "the resource stays bound");
    w.chats(&mut bob, "alice@localhost/a", "n", 2);
    assert!(w.flush(&mut bob).is_empty(), "nothing bounced meanwhile");
    let mut again = w.authenticated("alice");
    let got = resume(&mut w, &mut again, &id, 2);
    let r = only(&got, "resumed");
    assert_eq!(r.attr("previd"), Some(id.as_str()));
    assert_eq!(r.attr("h"), Some("1"), "the server handled her ping");
    assert_eq!(bodies(&got), ["m1", "m2", "n0", "n1"]);
    assert_eq!(
        again.session.jid().map(|j| j.as_str()),
        Some("alice@localhost/a")
    );
    assert_eq!(w.router.sm_counts(), (1, 0));
    // The counts go on: she acknowledges all of it.
    w.send(&mut again, "<a xmlns='urn:xmpp:sm:3' h='6'/>");
    assert_eq!(again.outbox.sm_unacked(), 0);
    assert!(!again.closed);
    // And she can resume the resumed session again.
    w.cut(again);
    let mut third = w.authenticated("alice");
    let got = resume(&mut w, &mut third, &id, 6);
    assert_eq!(only(&got, "resumed").attr("h"), Some("1"));
    assert!(bodies(&got).is_empty());
}

/// §5: resuming an open session takes it over: the old stream gets `conflict`.
#[test]
fn xep0198_resume_takes_over_a_stream_still_open() {
    let (mut w, mut bob, mut alice, id) = resumable(|_| {});
    w.chats(&mut bob, "alice@localhost/a", "m", 2);
    assert_eq!(bodies(&w.flush(&mut alice)), ["m0", "m1"]);
    let mut again = w.authenticated("alice");
    let got = resume(&mut w, &mut again, &id, 0);
    only(&got, "resumed");
    assert_eq!(bodies(&got), ["m0", "m1"]);
    w.flush(&mut alice);
    assert!(alice.closed, "the old stream was closed");
    // Its end does not unbind the resumed session.
    w.cut(alice);
    assert_eq!(w.router.session_count(), 2);
    w.chats(&mut bob, "alice@localhost/a", "n", 1);
    assert_eq!(bodies(&w.flush(&mut again)), ["n0"]);
}

/// §5 failures: unknown id, another account's id, h above what was sent.
#[test]
fn xep0198_resume_failures() {
    let (mut w, _bob, id) = detached(|_| {});
    let mut c = w.authenticated("alice");
    let got = resume(&mut w, &mut c, "nope", 0);
    assert_failed(&got, "item-not-found", "unknown id");
    let mut b2 = w.authenticated("bob");
    let got = resume(&mut w, &mut b2, &id, 0);
    assert_failed(
        &got,
        "item-not-found",
        "bound to the account that enabled it",
    );
    let got = resume(&mut w, &mut c, &id, 3);
    let f = only(&got, "failed");
    assert!(f.child("undefined-condition", STANZAS).is_some());
    let too_high = f.child("handled-count-too-high", SM).expect("detail");
    assert_eq!(
        (too_high.attr("h"), too_high.attr("send-count")),
        (Some("3"), Some("2"))
    );
    let got = w.send(&mut c, "<resume xmlns='urn:xmpp:sm:3' previd='x' h='-1'/>");
    assert!(only(&got, "failed").child("bad-request", STANZAS).is_some());
    // After a failed resume the client may still bind; the session was not harmed.
    let got = resume(&mut w, &mut c, &id, 2);
    only(&got, "resumed");
}

/// §4: an `<a/>` acknowledging more than was sent ends the stream with
/// `undefined-condition` and `handled-count-too-high`.
#[test]
fn xep0198_ack_too_high_is_a_stream_error() {
    let mut w = World::new(|_| {});
    let mut bob = w.online("bob", "b");
    let mut alice = w.online("alice", "a");
    w.send(&mut alice, "<enable xmlns='urn:xmpp:sm:3'/>");
    w.chats(&mut bob, "alice@localhost/a", "m", 1);
    w.flush(&mut alice);
    let got = w.send(&mut alice, "<a xmlns='urn:xmpp:sm:3' h='5'/>");
    let e = only(&got, "error");
    assert!(
        e.child("undefined-condition", "urn:ietf:params:xml:ns:xmpp-streams")
            .is_some()
    );
    let d = e.child("handled-count-too-high", SM).expect("detail");
    assert_eq!((d.attr("h"), d.attr("send-count")), (Some("5"), Some("1")));
    assert!(alice.closed);
}

/// The window passes: the session ends, goes unavailable, and its unacknowledged chat
/// messages are routed again (here: kept in offline storage, XEP-0160, the account has no
/// other resource, and delivered in order at its next initial presence); a late resume
/// fails.
#[test]
fn xep0198_window_end_ends_the_session_and_reroutes_messages() {
    let (mut w, mut bob, id) = detached(|c| c.c2s.resume_timeout_secs = 60);
    w.chats(&mut bob, "alice@localhost/a", "n", 1);
    assert_eq!(w.router.sm_tick(), Some(Duration::from_secs(60)));
    w.env.advance(Duration::from_secs(59));
    assert_eq!(w.router.sm_tick(), Some(Duration::from_secs(1)));
    assert_eq!(w.router.session_count(), 2);
    w.env.advance(Duration::from_secs(1));
    assert_eq!(w.router.sm_tick(), None);
    assert_eq!(w.router.session_count(), 1, "unbound");
    assert_eq!(w.router.sm_counts(), (0, 0));
    let got = w.flush(&mut bob);
    assert!(
        !got.iter().any(|e| e.attr("type") == Some("error")),
        "kept offline, not bounced: {got:?}"
    );
    let mut late = w.authenticated("alice");
    let got = resume(&mut w, &mut late, &id, 0);
    assert_failed(&got, "item-not-found", "");
    let back = w.back_online(&mut late, "b2");
    assert_eq!(
        bodies(&back),
        ["m0", "m1", "n0"],
        "none silently lost: {back:?}"
    );
    // They were sent to alice@localhost/a, which is gone: kept for the account.
    for m in back.iter().filter(|e| e.name == "message") {
        assert_eq!(m.attr("to"), Some("alice@localhost"), "{m:?}");
        assert!(m.child("delay", "urn:xmpp:delay").is_some(), "{m:?}");
    }
}

/// While detached the queue is bounded (`c2s.detached_max_stanzas`): one more ends the
/// session cleanly, and what it held is routed again (kept offline here, XEP-0160).
#[test]
fn xep0198_detached_overflow_ends_the_session() {
    let (mut w, mut bob, alice, _id) = resumable(|c| c.c2s.detached_max_stanzas = 4);
    w.cut(alice);
    w.chats(&mut bob, "alice@localhost/a", "m", 4);
    assert_eq!(w.router.session_count(), 2);
    // The 5th overflows; the 6th, sent before the timer task ran, is routed as for a
    // missing resource (kept offline here). None is lost.
    let mut got = w.chats(&mut bob, "alice@localhost/a", "x", 2);
    w.router.sm_tick();
    assert_eq!(w.router.session_count(), 1, "ended by the overflow");
    got.extend(w.flush(&mut bob));
    assert!(
        !got.iter().any(|e| e.attr("type") == Some("error")),
        "kept offline, not bounced: {got:?}"
    );
    let mut alice = w.authenticated("alice");
    let mut kept = bodies(&w.back_online(&mut alice, "a"));
    kept.sort_unstable();
    assert_eq!(kept, ["m0", "m1", "m2", "m3", "x0", "x1"]);
}

/// Resumption is refused beyond `c2s.max_resumable_sessions`, off with
/// `resume_timeout_secs = 0`, and a client's smaller `max` is honoured.
#[test]
fn xep0198_resumption_bounds_and_max() {
    let mut w = World::new(|c| c.c2s.max_resumable_sessions = 1);
    let mut alice = w.online("alice", "a");
    let got = w.send(
        &mut alice,
        "<enable xmlns='urn:xmpp:sm:3' resume='true' max='60'/>",
    );
    assert_eq!(only(&got, "enabled").attr("max"), Some("60"));
    let mut bob = w.online("bob", "b");
    let got = w.send(&mut bob, "<enable xmlns='urn:xmpp:sm:3' resume='1'/>");
    assert_eq!(only(&got, "enabled").attr("resume"), None, "full");
    let mut w = World::new(|c| c.c2s.resume_timeout_secs = 0);
    let mut alice = w.online("alice", "a");
    let got = w.send(&mut alice, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    assert_eq!(only(&got, "enabled").attr("id"), None, "off");
    // A session without resumption ends at once when its connection drops.
    w.cut(alice);
    assert_eq!(w.router.session_count(), 0);
}

/// A client that gives up resuming and binds the same resource replaces the detached
/// session; its unacknowledged messages are routed again, not lost.
#[test]
fn xep0198_rebinding_replaces_a_detached_session() {
    let (mut w, _bob, _id) = detached(|_| {});
    let mut fresh = w.authenticated("alice");
    let bind = "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>a</resource></bind></iq>";
    let got = w.send(&mut fresh, bind);
    assert_eq!(got[0].attr("type"), Some("result"));
    assert_eq!(bodies(&got), ["m0", "m1"], "delivered to the new session");
    assert_eq!(w.router.sm_counts(), (0, 0));
    assert_eq!(w.router.session_count(), 2);
}

/// A clean `</stream:stream>` ends a resumable session at once (no detaching).
#[test]
fn xep0198_clean_close_is_not_resumable() {
    let mut w = World::new(|_| {});
    let mut alice = w.online("alice", "a");
    enable_resume(&mut w, &mut alice);
    w.send(&mut alice, "</stream:stream>");
    assert!(alice.closed);
    assert_eq!(w.router.sm_counts(), (0, 0));
    assert_eq!(w.router.session_count(), 0);
}

/// A client that reads but never acknowledges: once its window is full and the server's
/// request stays unanswered for `limits.write_timeout_secs`, it is closed as a slow
/// consumer (and, being resumable, detached: a client on a dead path can still resume).
#[test]
fn xep0198_unacknowledging_client_is_a_slow_consumer() {
    let (mut w, mut bob, mut alice, _id) = resumable(|c| c.c2s.detached_max_stanzas = 8);
    w.chats(&mut bob, "alice@localhost/a", "m", 6);
    let got = w.flush(&mut alice);
    assert_eq!(bodies(&got).len(), 4, "the window: half of 8");
    assert_eq!(got.iter().filter(|e| e.name == "r").count(), 1);
    let deadline = alice.session.deadline(&w.router);
    let write_timeout = Duration::from_secs(w.router.limits().write_timeout_secs);
    assert!(
        deadline <= w.now + write_timeout,
        "the ack deadline applies"
    );
    let mut out = Vec::new();
    let a = alice
        .session
        .on_deadline(&mut w.router, &mut out, w.now + write_timeout);
    assert_eq!(a, Action::Close);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("policy-violation"), "{text}");
    assert_eq!(w.router.sm_counts(), (1, 1), "detached, resumable");
}
