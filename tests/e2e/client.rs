//! A small blocking XMPP client for tests: plain TCP, STARTTLS, direct TLS, SASL SCRAM and
//! PLAIN, resource binding. It parses the server's output with the crate's own framer, so a
//! framing bug on either side shows up as a test failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinglet::sasl::{ScramClient, ScramHash, base64_decode, base64_encode};
use kinglet::xml::{Element, Frame, Framer, XmlLimits};

pub enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

pub struct Client {
    io: Io,
    framer: Framer,
    pub features: Option<Element>,
    pub jid: Option<String>,
    pub closed: bool,
}

pub fn tls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TCP connection to 127.0.0.1:`port` bound to the source address `src`.
pub fn tcp_from(src: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType};
    use std::net::{Ipv4Addr, SocketAddrV4};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    rustix::net::bind(&fd, &SocketAddrV4::new(Ipv4Addr::from(src), 0))?;
    rustix::net::connect(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    Ok(TcpStream::from(fd))
}

fn tls_wrap(tcp: TcpStream, ca: &Path) -> Io {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls_config(ca), name).unwrap();
    Io::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

impl Client {
    fn raw(io: Io) -> Client {
        Client {
            io,
            framer: Framer::new(XmlLimits {
                max_stanza_bytes: 1 << 20,
                ..XmlLimits::default()
            }),
            features: None,
            jid: None,
            closed: false,
        }
    }

    pub fn connect(port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Client::raw(Io::Plain(tcp))
    }

    /// Plain TCP to 127.0.0.1:`port` from the loopback source address `src` (127.0.0.x), so
    /// a test can play several hosts.
    pub fn connect_from(src: [u8; 4], port: u16) -> Client {
        let tcp = tcp_from(src, port).expect("connect from a loopback source address");
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Client::raw(Io::Plain(tcp))
    }

    pub fn connect_direct_tls(port: u16, ca: &Path) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Client::raw(tls_wrap(tcp, ca))
    }

    pub fn send(&mut self, s: &str) {
        let r = match &mut self.io {
            Io::Plain(t) => t.write_all(s.as_bytes()).and_then(|_| t.flush()),
            Io::Tls(t) => t.write_all(s.as_bytes()).and_then(|_| t.flush()),
            Io::Gone => panic!("send on closed client"),
        };
        r.expect("send");
    }

    /// Send raw bytes, ignoring errors (the server may already have closed).
    pub fn send_bytes_lossy(&mut self, b: &[u8]) {
        let _ = match &mut self.io {
            Io::Plain(t) => t.write_all(b),
            Io::Tls(t) => t.write_all(b),
            Io::Gone => Ok(()),
        };
    }

    fn read_some(&mut self) -> Option<usize> {
        let mut buf = [0u8; 8192];
        let r = match &mut self.io {
            Io::Plain(t) => t.read(&mut buf),
            Io::Tls(t) => t.read(&mut buf),
            Io::Gone => return Some(0),
        };
        match r {
            Ok(0) => {
                self.closed = true;
                Some(0)
            }
            Ok(n) => {
                self.framer.push(&buf[..n]).expect("server sent bad XML");
                Some(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(_) => {
                self.closed = true;
                Some(0)
            }
        }
    }

    /// Next frame within `timeout`, or None.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.framer.next_frame() {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("server sent bad XML: {e}"),
            }
            if self.closed || Instant::now() >= deadline {
                return None;
            }
            self.read_some();
        }
    }

    /// Next top-level element (stream headers are skipped).
    pub fn next(&mut self) -> Element {
        self.try_next(Duration::from_secs(10))
            .expect("expected a stanza from the server")
    }

    pub fn try_next(&mut self, timeout: Duration) -> Option<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left)? {
                Frame::Stanza(e) => return Some(e),
                Frame::Header(_) => continue,
                Frame::Close => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// Wait for an element matching `pred`, skipping others (presence noise, pings).
    pub fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Element) -> bool) -> Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next(left) {
                Some(e) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Whether the server closed the stream (after a stream error, say) within `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.next_frame(Duration::from_millis(200)) {
                Some(Frame::Close) => return true,
                Some(_) => {}
                None if self.closed => return true,
                None => {}
            }
        }
        self.closed
    }

    pub fn open_stream(&mut self) -> Element {
        self.framer.reset();
        self.send("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
        match self.next_frame(Duration::from_secs(10)) {
            Some(Frame::Header(_)) => {}
            _ => panic!("no stream header"),
        }
        let f = self.next();
        assert_eq!(f.name, "features", "expected stream features, got {f:?}");
        self.features = Some(f.clone());
        f
    }

    pub fn mechanisms(&self) -> Vec<String> {
        let Some(f) = &self.features else {
            return vec![];
        };
        f.child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
            .map(|m| m.elements().map(|e| e.text()).collect())
            .unwrap_or_default()
    }

    pub fn starttls(&mut self, ca: &Path) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        let p = self.next();
        assert_eq!(p.name, "proceed", "{p:?}");
        let io = std::mem::replace(&mut self.io, Io::Gone);
        let Io::Plain(tcp) = io else {
            panic!("already TLS")
        };
        self.io = tls_wrap(tcp, ca);
        self.framer.reset();
    }

    /// SCRAM login; returns the final SASL element (success or failure).
    pub fn scram(&mut self, hash: ScramHash, user: &str, pass: &str) -> Element {
        let mech = match hash {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        };
        let mut c = ScramClient::new(
            hash,
            user,
            pass,
            &kinglet::sasl::random_nonce(&kinglet::system::SystemEnv::new()),
        );
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{}</auth>",
            base64_encode(&c.client_first())
        ));
        let ch = self.next();
        if ch.name != "challenge" {
            return ch;
        }
        let sf = base64_decode(&ch.text()).expect("challenge base64");
        let cf = c.handle_server_first(&sf).expect("server-first");
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            base64_encode(&cf)
        ));
        let res = self.next();
        if res.name == "success" {
            let fin = base64_decode(&res.text()).expect("success base64");
            c.verify_server_final(&fin)
                .expect("server signature must verify");
            self.framer.reset();
        }
        res
    }

    pub fn plain(&mut self, user: &str, pass: &str) -> Element {
        let msg = format!("\0{user}\0{pass}");
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            base64_encode(msg.as_bytes())
        ));
        let res = self.next();
        if res.name == "success" {
            self.framer.reset();
        }
        res
    }

    pub fn bind(&mut self, resource: Option<&str>) -> Element {
        let f = self.open_stream();
        assert!(
            f.child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .is_some(),
            "bind feature missing: {f:?}"
        );
        let r = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{r}</bind></iq>"));
        let res = self.next();
        if res.attr("type") == Some("result") {
            let jid = res
                .child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .and_then(|b| b.child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
                .map(|j| j.text());
            self.jid = jid;
        }
        res
    }

    /// STARTTLS + SCRAM-SHA-256 + bind, asserting success.
    pub fn login(port: u16, ca: &Path, user: &str, pass: &str, resource: &str) -> Client {
        let mut c = Client::connect(port);
        c.open_stream();
        c.starttls(ca);
        c.open_stream();
        let r = c.scram(ScramHash::Sha256, user, pass);
        assert_eq!(r.name, "success", "{r:?}");
        let b = c.bind(Some(resource));
        assert_eq!(b.attr("type"), Some("result"), "{b:?}");
        c
    }

    /// Send an iq and wait for its result/error by id.
    pub fn iq(&mut self, id: &str, xml: &str) -> Element {
        self.send(xml);
        let id = id.to_owned();
        self.wait_for(&format!("iq reply {id}"), |e| {
            e.name == "iq"
                && e.attr("id") == Some(&id)
                && matches!(e.attr("type"), Some("result" | "error"))
        })
    }

    /// Waits for a `<presence/>` of type `ty`, as [`Client::wait_for`].
    pub fn wait_presence(&mut self, what: &str, ty: &str) -> Element {
        self.wait_for(what, |e| e.name == "presence" && e.attr("type") == Some(ty))
    }

    /// RFC 6121 §3.1: `self` (bare JID `own`) asks for `contact`'s (bare JID `contact_jid`)
    /// presence, and `contact` approves; waits for both sides to see it.
    pub fn subscribe_presence(&mut self, own: &str, contact: &mut Client, contact_jid: &str) {
        self.send(&format!("<presence to='{contact_jid}' type='subscribe'/>"));
        contact.wait_presence("subscribe", "subscribe");
        contact.send(&format!("<presence to='{own}' type='subscribed'/>"));
        self.wait_presence("subscribed", "subscribed");
    }

    /// Sends an iq as [`Client::iq`] and asserts its reply is a result.
    pub fn iq_ok(&mut self, id: &str, xml: &str) -> Element {
        let r = self.iq(id, xml);
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        r
    }

    /// [`Client::pubsub`], asserting the reply is a result.
    pub fn pubsub_ok(&mut self, id: &str, ty: &str, ns: &str, inner: &str) -> Element {
        let r = self.pubsub(id, ty, ns, inner);
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        r
    }

    /// Creates pub-sub `node` configured with the node-config form of `fields` (var,
    /// value) and waits for the reply, as [`Client::iq`].
    pub fn create_node(&mut self, id: &str, node: &str, fields: &[(&str, &str)]) -> Element {
        let form = node_config(fields);
        self.pubsub(
            id,
            "set",
            PS,
            &format!("<create node='{node}'/><configure>{form}</configure>"),
        )
    }

    /// Sends `<pubsub xmlns='{ns}'>{inner}</pubsub>` to the pub-sub service in an
    /// `<iq type='{ty}' id='{id}'>` and waits for the reply, as [`Client::iq`].
    pub fn pubsub(&mut self, id: &str, ty: &str, ns: &str, inner: &str) -> Element {
        self.iq(
            id,
            &format!(
                "<iq type='{ty}' id='{id}' to='pubsub.localhost'><pubsub xmlns='{ns}'>{inner}</pubsub></iq>"
            ),
        )
    }
}

const PS: &str = "http://jabber.org/protocol/pubsub";

/// A submitted node-config data form (XEP-0060 §8.2) with `fields` as (var, value).
pub fn node_config(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{PS}#node_config</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x.push_str("</x>");
    x
}

/// The defined condition of an `<error/>` in a stanza, or of a SASL failure / stream error.
pub fn condition(e: &Element) -> String {
    let err = e.child("error", "jabber:client").unwrap_or(e);
    err.elements()
        .find(|c| c.name != "text")
        .map(|c| c.name.clone())
        .unwrap_or_default()
}
