//! Negotiation transcripts without sockets: the session state machine and router driven
//! directly with bytes, under every chunking (whole, 1-byte pieces, pseudo-random splits).

use std::rc::Rc;
use std::time::{Duration, Instant};

use kinglet::config::Config;
use kinglet::outbox::Outbox;
use kinglet::router::Router;
use kinglet::sasl::{ScramClient, ScramHash, StoredCredentials, base64_decode, base64_encode};
use kinglet::session::{Action, AuthEvent, PasswordVerdict, Session, Transport};
use kinglet::store::Store;
use kinglet::system::SystemEnv;
use kinglet::xml::{Element, Frame, Framer, XmlLimits};

use crate::e2e::TempDir;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

struct Harness {
    router: Router,
    session: Session,
    _dir: TempDir,
    /// Server output not yet consumed by `frames`.
    parser: Framer,
    closed: bool,
    now: Instant,
}

#[derive(Clone, Copy)]
enum Chunking {
    Whole,
    Bytes,
    Random(u64),
}

const CHUNKINGS: [Chunking; 4] = [
    Chunking::Whole,
    Chunking::Bytes,
    Chunking::Random(7),
    Chunking::Random(12345),
];

impl Harness {
    fn new(transport: Transport, tweak: impl FnOnce(&mut Config)) -> Harness {
        let (dir, cfg, store) = configured("neg", tweak, &["alice"], &SystemEnv::new());
        let now = Instant::now();
        let router =
            Router::new(Rc::new(cfg), Rc::new(store), Rc::new(SystemEnv::new())).expect("router");
        let session = Session::new(
            1,
            transport,
            XmlLimits::default(),
            Outbox::new(64, 1 << 20),
            now,
        );
        Harness {
            router,
            session,
            _dir: dir,
            parser: Framer::new(XmlLimits {
                max_stanza_bytes: 1 << 20,
                ..XmlLimits::default()
            }),
            closed: false,
            now,
        }
    }

    /// Sends a SASL PLAIN `<auth/>` with the base64 `b64` (and `rest` after it) in one
    /// read, its output to `out`: the session's action.
    fn plain_auth(&mut self, b64: &str, rest: &str, out: &mut Vec<u8>) -> Action {
        let input = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{b64}</auth>{rest}"
        );
        self.session
            .receive(input.as_bytes(), &mut self.router, out, self.now)
    }

    /// A harness whose session allows 4096 bytes per element before authentication.
    fn preauth_4096() -> Harness {
        let mut h = Harness::new(loopback(), |_| {});
        h.session = Session::new(
            1,
            loopback(),
            XmlLimits::default(),
            Outbox::new(64, 1 << 20),
            h.now,
        )
        .with_preauth_stanza_bytes(4096);
        h
    }

    /// Sends a SASL `<response/>` with `data` (base64) split per `chunking`; the frames.
    fn sasl_response(&mut self, data: &[u8], chunking: Chunking) -> Vec<Element> {
        let xml = format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            base64_encode(data)
        );
        self.elements(&xml, chunking)
    }

    /// Feed `input` split per `chunking`; returns the server's frames produced.
    fn feed(&mut self, input: &[u8], chunking: Chunking) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut seed = match chunking {
            Chunking::Random(s) => s,
            _ => 0,
        };
        while pos < input.len() && !self.closed {
            let n = match chunking {
                Chunking::Whole => input.len(),
                Chunking::Bytes => 1,
                Chunking::Random(_) => {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    1 + (seed >> 33) as usize % 17
                }
            }
            .min(input.len() - pos);
            let a =
                self.session
                    .receive(&input[pos..pos + n], &mut self.router, &mut out, self.now);
            pos += n;
            let a = settle_password_checks(&mut self.session, &mut self.router, &mut out, a);
            match a {
                Action::Close => self.closed = true,
                Action::StartTls => {
                    self.session.tls_established();
                }
                Action::Continue | Action::VerifyPassword => {}
            }
        }
        self.parse(&out)
    }

    /// Parse server output; every new server stream header (which begins with our XML
    /// declaration) starts a fresh parse, as it does for a real client after a restart.
    fn parse(&mut self, out: &[u8]) -> Vec<Frame> {
        const DECL: &[u8] = b"<?xml version='1.0'?>";
        let mut starts: Vec<usize> = (0..out.len())
            .filter(|&i| out[i..].starts_with(DECL))
            .collect();
        if starts.first() != Some(&0) {
            starts.insert(0, 0);
        }
        starts.push(out.len());
        let mut frames = Vec::new();
        for w in starts.windows(2) {
            let seg = &out[w[0]..w[1]];
            if seg.starts_with(DECL) {
                self.parser.reset();
            }
            self.parser.push(seg).expect("server output is well-formed");
            while let Some(f) = self.parser.next_frame().expect("server output parses") {
                frames.push(f);
            }
        }
        frames
    }

    fn elements(&mut self, input: &str, chunking: Chunking) -> Vec<Element> {
        self.feed(input.as_bytes(), chunking)
            .into_iter()
            .filter_map(|f| match f {
                Frame::Stanza(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

/// A configuration (`tweak`ed) with its data in a new temp dir, and its store with the
/// accounts `users`, password `secret`.
pub(crate) fn configured(
    tag: &str,
    tweak: impl FnOnce(&mut Config),
    users: &[&str],
    env: &dyn kinglet::env::Env,
) -> (TempDir, Config, Store) {
    let dir = TempDir::new(tag);
    let mut cfg = Config {
        data_dir: dir.0.join("data"),
        ..Config::default()
    };
    tweak(&mut cfg);
    let store = Store::open(&cfg.data_dir, 1 << 20).unwrap();
    for user in users {
        let creds = StoredCredentials::derive(env, "secret", 4096);
        store.user_add(user, &creds.to_bytes()).unwrap();
    }
    (dir, cfg, store)
}

/// What the connection task does after an action `a`: while it asks for a password
/// check, runs it (on a blocking thread there), hands over the verdict, then the input that
/// waited for it. The final action.
pub(crate) fn settle_password_checks(
    session: &mut Session,
    router: &mut Router,
    out: &mut Vec<u8>,
    mut a: Action,
) -> Action {
    while a == Action::VerifyPassword {
        let check = session.take_password_check().expect("check");
        let verdict = if check.run() {
            PasswordVerdict::Valid
        } else {
            PasswordVerdict::Invalid
        };
        a = session.on_password_verdict(verdict, router, out);
        if a == Action::Continue {
            a = session.resume(router, out);
        }
    }
    a
}

fn loopback() -> Transport {
    Transport {
        tls_active: false,
        tls_available: false,
        loopback: true,
    }
}

fn remote(tls_available: bool) -> Transport {
    Transport {
        tls_active: false,
        tls_available,
        loopback: false,
    }
}

fn mechanisms(features: &Element) -> Vec<String> {
    features
        .child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
        .map(|m| m.elements().map(|e| e.text()).collect())
        .unwrap_or_default()
}

fn cond(e: &Element) -> String {
    e.elements()
        .find(|c| c.name != "text")
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// RFC 6120 §5.3.1: with TLS configured, a remote peer sees only a required STARTTLS.
#[test]
fn rfc6120_5_3_1_starttls_mandatory_for_remote_peers() {
    for ch in CHUNKINGS {
        let mut h = Harness::new(remote(true), |c| c.c2s.allow_plaintext_public = true);
        let els = h.elements(HEADER, ch);
        let f = &els[0];
        let st = f
            .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
            .expect("starttls");
        assert!(
            st.child("required", "urn:ietf:params:xml:ns:xmpp-tls")
                .is_some()
        );
        assert!(
            mechanisms(f).is_empty(),
            "no SASL before TLS for a remote peer"
        );
        let els = h.elements("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>", ch);
        assert_eq!(els[0].name, "failure");
        assert_eq!(cond(&els[0]), "encryption-required");
    }
}

/// RFC 6120 §6.4 and docs/protocol.md: PLAIN is never offered or accepted without TLS off loopback.
#[test]
fn plain_refused_without_tls_off_loopback() {
    let mut h = Harness::new(remote(false), |c| c.c2s.allow_plaintext_public = true);
    let els = h.elements(HEADER, Chunking::Whole);
    let m = mechanisms(&els[0]);
    assert!(m.contains(&"SCRAM-SHA-256".to_string()));
    assert!(!m.contains(&"PLAIN".to_string()), "{m:?}");
    assert!(
        !m.contains(&"ANONYMOUS".to_string()),
        "anonymous is loopback-only by default"
    );
    let els = h.elements("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>", Chunking::Whole);
    assert_eq!(cond(&els[0]), "encryption-required");
    // on loopback the same PLAIN succeeds
    let mut h = Harness::new(loopback(), |_| {});
    let els = h.elements(HEADER, Chunking::Whole);
    assert!(mechanisms(&els[0]).contains(&"PLAIN".to_string()));
    let els = h.elements("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>", Chunking::Whole);
    assert_eq!(els[0].name, "success");
}

/// The whole negotiation (SCRAM-SHA-256, restart, bind) under every chunking.
#[test]
fn rfc6120_6_scram_and_bind_under_every_chunking() {
    for ch in CHUNKINGS {
        let mut h = Harness::new(loopback(), |_| {});
        let els = h.elements(HEADER, ch);
        assert_eq!(els[0].name, "features");
        let mut c = ScramClient::new(
            ScramHash::Sha256,
            "alice",
            "secret",
            "fyko+d2lbbFgONRv9qkxdawL",
        );
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            base64_encode(&c.client_first())
        );
        let els = h.elements(&auth, ch);
        assert_eq!(els[0].name, "challenge");
        let cf = c
            .handle_server_first(&base64_decode(&els[0].text()).unwrap())
            .unwrap();
        let els = h.sasl_response(&cf, ch);
        assert_eq!(els[0].name, "success");
        c.verify_server_final(&base64_decode(&els[0].text()).unwrap())
            .unwrap();
        // restart: a new header and post-auth features
        let els = h.elements(HEADER, ch);
        assert!(
            els[0]
                .child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .is_some()
        );
        let els = h.elements("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r1</resource></bind></iq>", ch);
        assert_eq!(els[0].attr("type"), Some("result"));
        assert_eq!(
            h.session.jid().map(|j| j.as_str()),
            Some("alice@localhost/r1")
        );
        // a keepalive and a ping to the server
        let els = h.elements(
            " \n <iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
            ch,
        );
        assert_eq!(els.len(), 1);
        assert_eq!(els[0].attr("type"), Some("result"));
        assert_eq!(h.router.session_count(), 1);
    }
}

#[test]
fn scram_without_initial_response_gets_empty_challenge() {
    let mut h = Harness::new(loopback(), |_| {});
    h.elements(HEADER, Chunking::Whole);
    let els = h.elements(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'/>",
        Chunking::Whole,
    );
    assert_eq!(els[0].name, "challenge");
    let mut c = ScramClient::new(ScramHash::Sha1, "alice", "secret", "abcdefghijklmnop");
    let els = h.sasl_response(&c.client_first(), Chunking::Bytes);
    let cf = c
        .handle_server_first(&base64_decode(&els[0].text()).unwrap())
        .unwrap();
    let els = h.sasl_response(&cf, Chunking::Whole);
    assert_eq!(els[0].name, "success");
}

#[test]
fn sasl_errors() {
    let mut h = Harness::new(loopback(), |_| {});
    h.elements(HEADER, Chunking::Whole);
    for (input, condition) in [
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>",
            "invalid-mechanism",
        ),
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!notbase64</auth>",
            "incorrect-encoding",
        ),
        (
            "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            "aborted",
        ),
    ] {
        let els = h.elements(input, Chunking::Whole);
        assert_eq!(cond(&els[0]), condition, "{input}");
    }
    // third counted failure closes the stream with policy-violation
    let els = h.elements(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>",
        Chunking::Whole,
    );
    assert_eq!(cond(&els[0]), "not-authorized");
    assert_eq!(els[1].name, "error");
    assert_eq!(cond(&els[1]), "policy-violation");
    assert!(h.closed);
}

#[test]
fn stream_header_errors() {
    let cases = [
        (
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='urn:wrong'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            "unsupported-version",
        ),
        (
            "<stream:stream to='other.example' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            "host-unknown",
        ),
        (
            "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            "unsupported-encoding",
        ),
    ];
    for (input, want) in cases {
        for ch in CHUNKINGS {
            let mut h = Harness::new(loopback(), |_| {});
            let els = h.elements(input, ch);
            let err = els
                .iter()
                .find(|e| e.name == "error")
                .unwrap_or_else(|| panic!("no stream error for {input}"));
            assert_eq!(cond(err), want, "{input}");
            assert!(h.closed);
        }
    }
}

#[test]
fn attacks_are_stream_errors_not_allocations() {
    let laughs = "<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]><message>&lol2;</message>";
    let cases: Vec<(String, &str)> = vec![
        (laughs.to_string(), "restricted-xml"),
        (
            "<message><body>&ext;</body></message>".into(),
            "restricted-xml",
        ),
        ("<message><!-- c --></message>".into(), "restricted-xml"),
        (
            "<message><body>\u{1}</body></message>".into(),
            "not-well-formed",
        ),
        (
            format!("{}x{}", "<a>".repeat(100), "</a>".repeat(100)),
            "policy-violation",
        ),
        (
            format!(
                "<message {}/>",
                (0..200)
                    .map(|i| format!("a{i}='x'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            "policy-violation",
        ),
        (
            format!("<message><body>{}", "z".repeat(100_000)),
            "policy-violation",
        ),
        ("<message><body>text</body></foo>".into(), "not-well-formed"),
        (
            "<foo:message xmlns:foo='urn:x'/>".into(),
            "invalid-namespace",
        ),
        ("<stream:features/>".into(), "unsupported-stanza-type"),
    ];
    for (input, want) in &cases {
        for ch in [Chunking::Whole, Chunking::Bytes] {
            let mut h = Harness::new(loopback(), |_| {});
            h.elements(HEADER, Chunking::Whole);
            let els = h.elements(input, ch);
            let err = els
                .iter()
                .find(|e| e.name == "error")
                .unwrap_or_else(|| panic!("no stream error for {input}"));
            assert_eq!(&cond(err), want, "{input}");
            assert!(h.closed);
            assert!(h.session.buffered() <= 70_000, "bounded buffer");
        }
    }
    // invalid UTF-8 split across chunks
    let mut h = Harness::new(loopback(), |_| {});
    h.elements(HEADER, Chunking::Whole);
    let frames = h.feed(b"<message><body>\xe2\x82</body></message>", Chunking::Bytes);
    let err = frames.iter().find_map(|f| match f {
        Frame::Stanza(e) if e.name == "error" => Some(e.clone()),
        _ => None,
    });
    assert_eq!(cond(&err.expect("stream error")), "not-well-formed");
}

#[test]
fn negotiation_timeout_and_idle_ping() {
    let mut h = Harness::new(loopback(), |c| {
        c.limits.negotiation_timeout_secs = 5;
        c.limits.idle_ping_secs = 10;
        c.limits.idle_timeout_secs = 20;
    });
    h.elements(HEADER, Chunking::Whole);
    let mut out = Vec::new();
    let later = h.now + Duration::from_secs(6);
    assert_eq!(
        h.session.on_deadline(&mut h.router, &mut out, later),
        Action::Close
    );
    let els: Vec<_> = h
        .parse(&out)
        .into_iter()
        .filter_map(|f| {
            if let Frame::Stanza(e) = f {
                Some(e)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(cond(&els[0]), "connection-timeout");
}

/// Robustness: 300 seeded mutations (byte flips, truncations, duplications, inserted markup)
/// of a complete valid session never panic, and everything the server writes stays
/// well-formed XML that our own framer accepts.
#[test]
fn mutated_sessions_never_panic_and_output_stays_well_formed() {
    let mut c = ScramClient::new(ScramHash::Sha256, "alice", "secret", "0123456789abcdef");
    let first = base64_encode(&c.client_first());
    // A fixed server nonce is not available here, so the SCRAM final step is invalid in most
    // mutations anyway; PLAIN gives a complete bound session to mutate.
    let _ = c.handle_server_first(b"r=x,s=QSXCR+Q6sek8bf92,i=4096");
    let base = format!(
        "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>\
         <abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
         <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>{HEADER}\
         <iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>\
         <presence><priority>5</priority></presence>\
         <iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>\
         <iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='B'><group>g</group></item></query></iq>\
         <presence to='bob@localhost' type='subscribe'/>\
         <message to='alice@localhost' type='chat'><body>x &amp; y</body></message>\
         <iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>\
         <presence type='unavailable'/></stream:stream>"
    );
    let snippets: [&[u8]; 8] = [
        b"<",
        b">",
        b"'",
        b"&",
        b"</iq>",
        b"<stream:stream>",
        b"\xff",
        b"<!--",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for round in 0..300 {
        let mut input = base.clone().into_bytes();
        for _ in 0..(1 + next() % 4) {
            let at = next() % input.len();
            match next() % 4 {
                0 => input[at] = (next() % 256) as u8,
                1 => input.truncate(at.max(1)),
                2 => {
                    let s = snippets[next() % snippets.len()];
                    input.splice(at..at, s.iter().copied());
                }
                _ => {
                    let end = (at + next() % 64).min(input.len());
                    let dup = input[at..end].to_vec();
                    input.splice(end..end, dup);
                }
            }
        }
        let chunking = if round % 2 == 0 {
            Chunking::Whole
        } else {
            Chunking::Random(round as u64)
        };
        let mut h = Harness::new(loopback(), |_| {});
        // `feed` parses every byte the server writes; a malformed output panics there.
        let _ = h.feed(&input, chunking);
        let mut out = Vec::new();
        h.session.on_disconnect(&mut h.router);
        let _ = h
            .session
            .on_deadline(&mut h.router, &mut out, h.now + Duration::from_secs(3600));
        assert_eq!(
            h.router.session_count(),
            0,
            "round {round}: disconnect must unbind; input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

/// Issue 10 item 5: PLAIN's PBKDF2 does not run inside the session (so never on the event
/// loop): the session hands the check to the shell, handles no input until the verdict, and
/// reports the outcome for the per-address throttle.
#[test]
fn plain_check_is_handed_to_the_shell_and_input_waits_for_its_verdict() {
    let mut h = Harness::new(loopback(), |_| {});
    h.elements(HEADER, Chunking::Whole);
    let mut out = Vec::new();
    // Wrong password ("alice", "wrong"), then a pipelined <abort/>.
    let abort = "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
    let a = h.plain_auth("AGFsaWNlAHdyb25n", abort, &mut out);
    assert_eq!(a, Action::VerifyPassword);
    assert!(out.is_empty(), "no answer before the verdict");
    // More input meanwhile is buffered, not handled.
    let a = h.session.receive(b" ", &mut h.router, &mut out, h.now);
    assert_eq!(a, Action::Continue);
    assert!(out.is_empty());
    let check = h.session.take_password_check().expect("a check");
    assert!(check.known());
    assert!(h.session.take_password_check().is_none(), "taken once");
    assert!(!check.run());
    let a = h
        .session
        .on_password_verdict(PasswordVerdict::Invalid, &mut h.router, &mut out);
    assert_eq!(a, Action::Continue);
    assert_eq!(h.session.take_auth_event(), Some(AuthEvent::Failed));
    let els = h.parse(&out);
    assert_eq!(els.len(), 1);
    assert!(matches!(&els[0], Frame::Stanza(e) if cond(e) == "not-authorized"));
    // The buffered <abort/> is handled on resume.
    let mut out = Vec::new();
    assert_eq!(h.session.resume(&mut h.router, &mut out), Action::Continue);
    assert!(String::from_utf8_lossy(&out).contains("<aborted/>"));
    // An unknown account is checked all the same (equal cost) and fails.
    let mut out = Vec::new();
    let a = h.plain_auth("AG5vYm9keQBzZWNyZXQ=", "", &mut out);
    assert_eq!(a, Action::VerifyPassword);
    let check = h.session.take_password_check().expect("a check");
    assert!(!check.known());
    assert_eq!(
        check.iterations(),
        h.router.config().auth.scram_iterations,
        "the server's iteration count"
    );
    assert!(!check.run());
    // A full verification queue: temporary-auth-failure, not a throttled failure.
    let a = h
        .session
        .on_password_verdict(PasswordVerdict::Unavailable, &mut h.router, &mut out);
    assert_eq!(a, Action::Continue);
    assert!(String::from_utf8_lossy(&out).contains("<temporary-auth-failure/>"));
    assert_eq!(h.session.take_auth_event(), None);
    // The right password logs in.
    let mut out = Vec::new();
    let a = h.plain_auth("AGFsaWNlAHNlY3JldA==", "", &mut out);
    assert_eq!(a, Action::VerifyPassword);
    let ok = h.session.take_password_check().unwrap().run();
    assert!(ok);
    h.session
        .on_password_verdict(PasswordVerdict::Valid, &mut h.router, &mut out);
    assert!(String::from_utf8_lossy(&out).contains("<success"));
    assert_eq!(
        h.session.take_auth_event(),
        Some(AuthEvent::Succeeded { anonymous: false })
    );
    assert!(h.session.is_authenticated());
}

/// Issue 10 item 5: the negotiation deadline still applies while a password check runs.
#[test]
fn negotiation_deadline_applies_while_a_password_check_runs() {
    let mut h = Harness::new(loopback(), |_| {});
    h.elements(HEADER, Chunking::Whole);
    let mut out = Vec::new();
    let a = h.plain_auth("AGFsaWNlAHNlY3JldA==", "", &mut out);
    assert_eq!(a, Action::VerifyPassword);
    let late = h.session.deadline(&h.router);
    assert!(late <= h.now + Duration::from_secs(30));
    let a = h.session.on_deadline(&mut h.router, &mut out, late);
    assert_eq!(a, Action::Close);
    assert!(String::from_utf8_lossy(&out).contains("connection-timeout"));
    // A verdict arriving after the close changes nothing.
    let mut out = Vec::new();
    let a = h
        .session
        .on_password_verdict(PasswordVerdict::Valid, &mut h.router, &mut out);
    assert_eq!(a, Action::Close);
    assert!(out.is_empty());
    assert!(!h.session.is_authenticated());
}

/// Issue 10 item 6: before authentication elements are limited to the (small) pre-auth
/// size, advertised as such; after SASL success the full limit applies and is advertised.
#[test]
fn preauth_stanza_limit_is_small_and_lifted_after_authentication() {
    let mut h = Harness::preauth_4096();
    let els = h.elements(HEADER, Chunking::Whole);
    let max_bytes = |f: &Element| {
        f.child("limits", "urn:xmpp:stream-limits:0")
            .and_then(|l| l.child("max-bytes", "urn:xmpp:stream-limits:0"))
            .map(|m| m.text())
    };
    assert_eq!(max_bytes(&els[0]).as_deref(), Some("4096"));
    let els = h.elements(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
        Chunking::Whole,
    );
    assert_eq!(els[0].name, "success");
    let els = h.elements(HEADER, Chunking::Whole);
    assert_eq!(max_bytes(&els[0]).as_deref(), Some("65536"));
    // A 10 KB stanza is fine now.
    let big = format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{}</resource></bind></iq>",
        "r".repeat(10_000)
    );
    let els = h.elements(&big, Chunking::Whole);
    assert!(!h.closed, "{els:?}");
    // Before authentication, the same size is a policy violation.
    let mut h = Harness::preauth_4096();
    h.elements(HEADER, Chunking::Whole);
    let half = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}",
        "A".repeat(5000)
    );
    let els = h.elements(&half, Chunking::Whole);
    assert!(h.closed, "half-sent 5 KB element refused before auth");
    assert_eq!(cond(&els[0]), "policy-violation");
    assert!(h.session.buffered() <= 4096 + 5100);
}
