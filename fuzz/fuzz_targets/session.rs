//! A c2s `Session` and its `Router`, driven without sockets as tests/negotiation.rs does:
//! a valid stream header, optionally SASL ANONYMOUS + restart + bind (so that the bytes
//! reach the router, pub-sub and roster code), then the fuzz input, in chunks.
//!
//! Input: byte 0: bit 0 = authenticate and bind first; bit 1 = loopback peer; bits 2..8 =
//! chunk length (0 = whole input at once). The rest is the peer's bytes.
//!
//! Each iteration gets a fresh in-memory store (`Store::open_in_memory`), so that a crash
//! reproduces from its input alone.
#![no_main]

use std::rc::Rc;
use std::time::{Duration, Instant};

use kinglet::config::Config;
use kinglet::env::FakeEnv;
use kinglet::outbox::Outbox;
use kinglet::router::Router;
use kinglet::session::{Action, PasswordVerdict, Session, Transport};
use kinglet::store::Store;
use kinglet::xml::XmlLimits;
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const LOGIN: &[u8] = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>";
const RESTART: &[u8] = b"<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const BIND: &[u8] = b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>";

/// Feeds `bytes` in `chunk`-sized pieces (0: at once); false once the session closed.
fn feed(
    s: &mut Session,
    r: &mut Router,
    bytes: &[u8],
    chunk: usize,
    now: Instant,
    out: &mut Vec<u8>,
) -> bool {
    let n = if chunk == 0 { bytes.len().max(1) } else { chunk };
    for piece in bytes.chunks(n) {
        let mut a = s.receive(piece, r, out, now);
        // A password check (PBKDF2, on a blocking thread in the daemon): every account is
        // unknown in this empty store, so it fails; answering without running it keeps the
        // fuzzer fast.
        while a == Action::VerifyPassword {
            let _ = s.take_password_check();
            a = s.on_password_verdict(PasswordVerdict::Invalid, r, out);
            if a == Action::Continue {
                a = s.resume(r, out);
            }
        }
        match a {
            Action::Close => return false,
            Action::StartTls => s.tls_established(),
            Action::Continue | Action::VerifyPassword => {}
        }
        // Back-pressure: the connection task drains the outbox and resumes.
        while s.outbox().reading_paused() {
            s.outbox().take_queue_into(out);
            out.clear();
            s.outbox().resume_reading();
            if s.resume(r, out) == Action::Close {
                return false;
            }
        }
        out.clear();
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let login = mode & 1 != 0;
    let loopback = mode & 2 != 0 || login;
    let chunk = usize::from(mode >> 2);

    let cfg = Config::default();
    let store = Store::open_in_memory().expect("store");
    let mut router = Router::new(Rc::new(cfg), Rc::new(store), Rc::new(FakeEnv::default())).expect("router");
    let now = Instant::now();
    let transport = Transport {
        tls_active: false,
        tls_available: false,
        loopback,
    };
    let mut session = Session::new(1, transport, XmlLimits::default(), Outbox::new(64, 1 << 20), now);
    let mut out = Vec::new();
    let mut alive = feed(&mut session, &mut router, HEADER, 0, now, &mut out);
    if alive && login {
        for step in [LOGIN, RESTART, BIND] {
            alive = alive && feed(&mut session, &mut router, step, 0, now, &mut out);
        }
        assert!(alive && session.jid().is_some(), "the login preamble binds");
    }
    if alive {
        alive = feed(&mut session, &mut router, input, chunk, now, &mut out);
    }
    if alive {
        let later = now + Duration::from_secs(3600);
        let _ = session.deadline(&router);
        let _ = session.on_deadline(&mut router, &mut out, later);
    }
    session.on_disconnect(&mut router);
});
