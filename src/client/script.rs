//! A scripted XMPP server on loopback for the client's unit tests: each test plays the
//! server's side of a stream element by element (plaintext, SASL ANONYMOUS), so the client's
//! stream management, reconnects and catch-up run against exact transcripts. Every wait is
//! bounded ([`WAIT`]); a script that panics fails its test through [`Server::join`].

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cli::ConnectArgs;
use crate::xml::{Element, Frame, Framer, XmlLimits};

use super::settings::Settings;

/// Longest wait for a connection or an element.
pub const WAIT: Duration = Duration::from_secs(15);

/// Namespaces the scripts use.
pub const NS_SM: &str = "urn:xmpp:sm:3";
/// Stream features after authentication: binding only.
pub const BIND: &str = "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>";
/// Stream features after authentication: binding and XEP-0198.
pub const BIND_SM: &str =
    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/>";

/// The server's side of one connection.
pub struct Peer {
    tcp: TcpStream,
    framer: Framer,
}

impl Peer {
    /// Sends raw XML.
    pub fn send(&mut self, xml: &str) {
        self.tcp.write_all(xml.as_bytes()).expect("server write");
    }

    /// The next frame from the client.
    fn frame(&mut self) -> Frame {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.framer.next_frame().expect("client XML") {
                return f;
            }
            assert!(Instant::now() < deadline, "no frame from the client");
            match self.tcp.read(&mut buf) {
                Ok(0) => panic!("the client closed the connection"),
                Ok(n) => self.framer.push(&buf[..n]).expect("client XML"),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("server read: {e}"),
            }
        }
    }

    /// The next element from the client.
    pub fn recv(&mut self) -> Element {
        match self.frame() {
            Frame::Stanza(e) => e,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// The next element, which must be `name` in `ns`.
    pub fn expect(&mut self, name: &str, ns: &str) -> Element {
        let e = self.recv();
        assert!(e.is(name, ns), "expected <{name} xmlns='{ns}'/>, got {e:?}");
        e
    }

    /// The next element, an IQ request.
    pub fn expect_iq(&mut self) -> Element {
        let e = self.expect("iq", crate::xml::NS_CLIENT);
        assert!(matches!(e.attr("type"), Some("get" | "set")), "{e:?}");
        e
    }

    /// Answers `iq` with a result holding `inner`.
    pub fn result(&mut self, iq: &Element, inner: &str) {
        let id = iq.attr("id").expect("iq id");
        self.send(&format!("<iq type='result' id='{id}'>{inner}</iq>"));
    }

    /// Reads the client's stream header and answers with ours and `features`.
    fn open(&mut self, features: &str) {
        match self.frame() {
            Frame::Header(_) => {}
            other => panic!("expected a stream header, got {other:?}"),
        }
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='s' \
             version='1.0'><stream:features>{features}</stream:features>"
        ));
    }

    /// SASL ANONYMOUS, then the restarted stream with `features` (e.g. [`BIND_SM`]).
    pub fn login(&mut self, features: &str) {
        self.open(
            "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>ANONYMOUS</mechanism></mechanisms>",
        );
        self.expect("auth", "urn:ietf:params:xml:ns:xmpp-sasl");
        self.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        self.framer.reset();
        self.open(features);
    }

    /// Expects `<enable/>`, answers it with `answer` (an `<enabled/>` or `<failed/>`) and
    /// returns the request.
    pub fn enable(&mut self, answer: &str) -> Element {
        let enable = self.expect("enable", NS_SM);
        self.send(answer);
        enable
    }

    /// Expects `<resume/>` naming session `previd` with the client's handled count `h`, and
    /// resumes it acknowledging `acked` of the client's stanzas.
    pub fn resumed(&mut self, previd: &str, h: &str, acked: u32) {
        let resume = self.expect("resume", NS_SM);
        assert_eq!(
            (resume.attr("previd"), resume.attr("h")),
            (Some(previd), Some(h)),
            "{resume:?}"
        );
        self.send(&format!(
            "<resumed xmlns='{NS_SM}' previd='{previd}' h='{acked}'/>"
        ));
    }

    /// Answers the client's bind request with `jid`.
    pub fn bind(&mut self, jid: &str) {
        let iq = self.expect_iq();
        assert!(
            iq.child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .is_some(),
            "{iq:?}"
        );
        self.result(
            &iq,
            &format!("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{jid}</jid></bind>"),
        );
    }

    /// Waits for the client's `</stream:stream>` (skipping `skip` elements first, which
    /// must be XEP-0198 acks) and closes ours.
    pub fn expect_close(&mut self) {
        loop {
            match self.frame() {
                Frame::Close => break,
                Frame::Stanza(e) if e.is("a", NS_SM) => {}
                other => panic!("expected the stream close, got {other:?}"),
            }
        }
        self.send("</stream:stream>");
        self.cut();
    }

    /// Cuts the connection: no more output, then waits (bounded) until the client has
    /// closed its side, so nothing sent before is lost to a reset.
    pub fn cut(&mut self) {
        let _ = self.tcp.shutdown(Shutdown::Write);
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.tcp.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }
}

/// A loopback listener for one test's connections.
pub struct Listener(TcpListener);

impl Listener {
    /// The next connection (within [`WAIT`]).
    pub fn accept(&mut self) -> Peer {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.0.accept() {
                Ok((tcp, _)) => {
                    tcp.set_nonblocking(false).expect("blocking");
                    tcp.set_read_timeout(Some(Duration::from_millis(100)))
                        .expect("timeout");
                    return Peer {
                        tcp,
                        framer: Framer::new(XmlLimits::default()),
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the client never connected");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// The next connection, logged in ([`Peer::login`]) with `features`.
    pub fn accept_login(&mut self, features: &str) -> Peer {
        let mut p = self.accept();
        p.login(features);
        p
    }

    /// The next connection, logged in with `features` and bound to `anon@localhost/r`.
    pub fn accept_bound(&mut self, features: &str) -> Peer {
        let mut p = self.accept_login(features);
        p.bind("anon@localhost/r");
        p
    }

    /// The next connection, bound ([`Listener::accept_bound`]) with XEP-0198 offered, its
    /// `<enable/>` answered with `answer`.
    pub fn accept_enabled(&mut self, answer: &str) -> Peer {
        let mut p = self.accept_bound(BIND_SM);
        p.enable(answer);
        p
    }
}

/// A running script.
pub struct Server {
    /// The port it listens on.
    pub port: u16,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Runs `script` on a new loopback listener.
    pub fn run(script: impl FnOnce(&mut Listener) + Send + 'static) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let thread = std::thread::spawn(move || script(&mut Listener(l)));
        Server {
            port,
            thread: Some(thread),
        }
    }

    /// Client settings for this server: plaintext, anonymous, short timeout.
    pub fn settings(&self) -> Settings {
        Settings::resolve(&ConnectArgs {
            server: Some(format!("127.0.0.1:{}", self.port)),
            tls: Some("off".to_owned()),
            timeout: Some(5),
            resource: Some("r".to_owned()),
            ..ConnectArgs::default()
        })
        .expect("settings")
    }

    /// Waits for the script to end; a panic in it fails the test.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}
