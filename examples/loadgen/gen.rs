//! The load generator's engine: raw XMPP (RFC 6120 + XEP-0060) and MQTT 3.1.1 clients and
//! the benchmark scenarios (`idle`, `login`, `fanout`, `fanin`, `soak`, `resume`). It is a
//! benchmark program, not part of the daemon: `examples/loadgen/main.rs` is its command line,
//! and the end-to-end smoke test includes this file with `#[path]`.
//!
//! Logins are blocking (one socket at a time, 10 s timeout per read); the measured phases run
//! every connection on one thread with smol, and scan notifications with a byte search
//! instead of a full XML parse, so that the load generator is not the bottleneck.
//! Every loop is bounded: by a count (sessions, items) and by a wall-clock deadline.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinglet::sasl::{ScramClient, ScramHash, base64_decode, base64_encode};
use kinglet::xml::{Element, Frame, Framer, XmlLimits};
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// Result type of the load generator: errors are messages.
pub type Res<T> = Result<T, String>;

/// Wire protocol spoken to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// XMPP c2s with XEP-0060 pub-sub.
    Xmpp,
    /// MQTT 3.1.1.
    Mqtt,
}

/// Options shared by all scenarios.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Label of the server in the output (`kinglet`, `prosody`, ...).
    pub name: String,
    /// Protocol.
    pub proto: Proto,
    /// `host:port` of the plaintext (and STARTTLS) listener.
    pub server: String,
    /// `host:port` of the MQTT TLS listener (XMPP uses STARTTLS on `server`).
    pub tls_server: Option<String>,
    /// XMPP domain.
    pub domain: String,
    /// XMPP pub-sub service JID.
    pub pubsub: String,
    /// Server process id, for /proc figures.
    pub pid: Option<u32>,
    /// Password of every account.
    pub password: String,
    /// CA certificate (PEM) for TLS.
    pub ca: Option<PathBuf>,
    /// Sessions (idle), subscribers (fanout), publishers (fanin).
    pub count: usize,
    /// Items per publisher.
    pub items: usize,
    /// Outstanding publish requests per publisher.
    pub window: usize,
    /// Payload bytes per item (approximate).
    pub payload: usize,
    /// Wall-clock budget of the measured phase, in seconds.
    pub secs: u64,
    /// Use TLS (idle).
    pub tls: bool,
    /// Node name prefix (so reruns against one server do not collide).
    pub tag: String,
    /// Log in with SASL PLAIN instead of SCRAM-SHA-1: no client-side key derivation, for
    /// runs that log in hundreds of accounts from a debug build (the end-to-end tests).
    pub plain: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            name: "server".into(),
            proto: Proto::Xmpp,
            server: "127.0.0.1:5222".into(),
            tls_server: None,
            domain: "localhost".into(),
            pubsub: "pubsub.localhost".into(),
            pid: None,
            password: "pw".into(),
            ca: None,
            count: 10,
            items: 100,
            window: 32,
            payload: 200,
            secs: 20,
            tls: false,
            tag: "b".into(),
            plain: false,
        }
    }
}

/// Bound of one blocking read during logins.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most latency samples kept per run (beyond that, every k-th sample).
const MAX_SAMPLES: usize = 2_000_000;

// ---------------------------------------------------------------------------------------------
// /proc figures

/// Resident set size of `pid` in KiB (0 if unknown).
pub fn rss_kib(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of `pid`, in microseconds (clock ticks of 10 ms).
pub fn cpu_us(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After ")": state is field 3; utime is field 14, stime 15 (man 5 proc).
    (t(11) + t(12)) * 10_000
}

// ---------------------------------------------------------------------------------------------
// Blocking streams (logins)

/// A plaintext or TLS socket.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn tls_config(ca: &Option<PathBuf>) -> Res<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = ca.as_ref().ok_or("TLS needs --ca")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn tls_wrap(tcp: TcpStream, cfg: &Arc<rustls::ClientConfig>) -> Res<Stream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

fn tcp(addr: &str) -> Res<TcpStream> {
    let t = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    t.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    t.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(t)
}

/// A blocking XMPP client connection.
pub struct Xc {
    s: Stream,
    framer: Framer,
}

impl Xc {
    fn connect(addr: &str) -> Res<Xc> {
        Ok(Xc {
            s: Stream::Plain(tcp(addr)?),
            framer: Framer::new(XmlLimits {
                max_stanza_bytes: 1 << 20,
                ..XmlLimits::default()
            }),
        })
    }

    /// Sends raw XML.
    pub fn send(&mut self, x: &str) -> Res<()> {
        self.s
            .write_all(x.as_bytes())
            .and_then(|_| self.s.flush())
            .map_err(|e| format!("send: {e}"))
    }

    fn frame(&mut self) -> Res<Frame> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(f) = self
                .framer
                .next_frame()
                .map_err(|e| format!("bad XML: {e}"))?
            {
                return Ok(f);
            }
            if Instant::now() > deadline {
                return Err("timeout".into());
            }
            let n = self.s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            self.framer
                .push(&buf[..n])
                .map_err(|e| format!("bad XML: {e}"))?;
        }
    }

    /// Next stanza (stream headers skipped).
    pub fn next(&mut self) -> Res<Element> {
        loop {
            match self.frame()? {
                Frame::Stanza(e) => return Ok(e),
                Frame::Header(_) => continue,
                Frame::Close => return Err("stream closed".into()),
            }
        }
    }

    fn open(&mut self, domain: &str) -> Res<Element> {
        self.framer.reset();
        self.send(&format!("<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"))?;
        loop {
            let e = self.next()?;
            if e.name == "features" {
                return Ok(e);
            }
        }
    }

    /// Sends an IQ and waits for the reply with `id` (other stanzas are skipped).
    pub fn iq(&mut self, id: &str, xml: &str) -> Res<Element> {
        self.send(xml)?;
        for _ in 0..10_000 {
            let e = self.next()?;
            if e.name == "iq" && e.attr("id") == Some(id) {
                return Ok(e);
            }
        }
        Err(format!("no reply to iq {id}"))
    }

    fn starttls(&mut self, o: &Opts) -> Res<()> {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")?;
        let p = self.next()?;
        if p.name != "proceed" {
            return Err(format!("starttls refused: {}", p.name));
        }
        let cfg = tls_config(&o.ca)?;
        let s = std::mem::replace(&mut self.s, Stream::Plain(tcp_placeholder()?));
        let Stream::Plain(t) = s else {
            return Err("already TLS".into());
        };
        self.s = tls_wrap(t, &cfg)?;
        Ok(())
    }

    /// Connects, optionally STARTTLS, SCRAM-SHA-1 login, binds `resource`.
    pub fn login(o: &Opts, user: &str, resource: &str, tls: bool) -> Res<Xc> {
        Xc::authenticate(o, user, tls)?.bind_session(o, resource, user)
    }

    /// Connects, optionally STARTTLS, SCRAM-SHA-1 (or PLAIN with `o.plain`) login; returns
    /// at SASL success, before the stream restart.
    pub fn authenticate(o: &Opts, user: &str, tls: bool) -> Res<Xc> {
        let mut c = Xc::connect(&o.server)?;
        c.open(&o.domain)?;
        if tls {
            c.starttls(o)?;
            c.open(&o.domain)?;
        }
        if o.plain {
            let msg = format!("\0{user}\0{}", o.password);
            c.send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                base64_encode(msg.as_bytes())
            ))?;
            let res = c.next()?;
            if res.name != "success" {
                return Err(format!("{user}: SASL {}", res.name));
            }
            return Ok(c);
        }
        let mut sc = ScramClient::new(
            ScramHash::Sha1,
            user,
            &o.password,
            &kinglet::sasl::random_nonce(&kinglet::system::SystemEnv::new()),
        );
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
            base64_encode(&sc.client_first())
        ))?;
        let ch = c.next()?;
        if ch.name != "challenge" {
            return Err(format!("{user}: SASL {}", ch.name));
        }
        let sf = base64_decode(&ch.text()).ok_or("challenge base64")?;
        let cf = sc
            .handle_server_first(&sf)
            .map_err(|e| format!("{user}: {e:?}"))?;
        c.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            base64_encode(&cf)
        ))?;
        let res = c.next()?;
        if res.name != "success" {
            return Err(format!("{user}: SASL {}", res.name));
        }
        Ok(c)
    }

    /// After SASL success: restarts the stream, binds `resource`, legacy session.
    fn bind_session(mut self, o: &Opts, resource: &str, user: &str) -> Res<Xc> {
        let c = &mut self;
        let f = c.open(&o.domain)?;
        if f.child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .is_none()
        {
            return Err("no bind feature".into());
        }
        let b = c.iq("bind", &format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"))?;
        if b.attr("type") != Some("result") {
            return Err(format!("{user}: bind failed"));
        }
        // Legacy session establishment (RFC 3921), harmless where it is optional.
        if f.child("session", "urn:ietf:params:xml:ns:xmpp-session")
            .is_some()
        {
            c.iq("sess", "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")?;
        }
        Ok(self)
    }

    /// The plaintext socket, for the asynchronous phase.
    fn into_async(self) -> Res<Async<TcpStream>> {
        Ok(self.into_async_framed()?.0)
    }

    /// The plaintext socket and the parser with what it already read, for an
    /// asynchronous phase that goes on parsing the same stream.
    fn into_async_framed(self) -> Res<(Async<TcpStream>, Framer)> {
        match self.s {
            Stream::Plain(t) => {
                t.set_read_timeout(None).map_err(|e| e.to_string())?;
                Ok((Async::new(t).map_err(|e| e.to_string())?, self.framer))
            }
            Stream::Tls(_) => Err("asynchronous phase is plaintext only".into()),
        }
    }
}

/// A connected socket that stands in while the real one moves into TLS.
fn tcp_placeholder() -> Res<TcpStream> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let a = l.local_addr().map_err(|e| e.to_string())?;
    TcpStream::connect(a).map_err(|e| e.to_string())
}

/// XEP-0077 in-band registration of `user` (for servers whose accounts are made that way).
pub fn register(o: &Opts, user: &str) -> Res<()> {
    let mut c = Xc::connect(&o.server)?;
    c.open(&o.domain)?;
    let r = c.iq("reg", &format!("<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{}</password></query></iq>", o.password))?;
    match r.attr("type") {
        Some("result") => Ok(()),
        _ if format!("{r:?}").contains("conflict") => Ok(()),
        _ => Err(format!("register {user}: {r:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1 (hand-written: CONNECT, SUBSCRIBE, PUBLISH QoS 1, PUBACK)

fn mqtt_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn mqtt_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![kind];
    mqtt_len(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn mqtt_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One complete MQTT packet at the start of `b`: (first byte, body range, total length).
fn mqtt_parse(b: &[u8]) -> Option<(u8, std::ops::Range<usize>)> {
    let mut len = 0usize;
    let mut mul = 1usize;
    let mut i = 1;
    loop {
        let d = *b.get(i)?;
        len += (d & 0x7f) as usize * mul;
        mul *= 128;
        i += 1;
        if d & 0x80 == 0 || i > 4 {
            break;
        }
    }
    if b.len() < i + len {
        return None;
    }
    Some((b[0], i..i + len))
}

/// A blocking MQTT connection: CONNECT, then CONNACK.
pub fn mqtt_connect(o: &Opts, client_id: &str, tls: bool) -> Res<Stream> {
    Ok(mqtt_connect_session(o, client_id, tls, true)?.0)
}

/// CONNECT flags: clean session (`clean`) or a persistent one; keepalive 0.
fn mqtt_connect_packet(client_id: &str, clean: bool) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str("MQTT", &mut body);
    body.extend_from_slice(&[4, if clean { 0x02 } else { 0 }, 0, 0]); // level 4, flags, keepalive 0
    mqtt_str(client_id, &mut body);
    mqtt_packet(0x10, &body)
}

/// A blocking MQTT connection with a clean (`clean`) or persistent session: CONNECT, then
/// CONNACK. Returns the stream and the CONNACK's session-present flag.
pub fn mqtt_connect_session(
    o: &Opts,
    client_id: &str,
    tls: bool,
    clean: bool,
) -> Res<(Stream, bool)> {
    let addr = if tls {
        o.tls_server
            .as_deref()
            .ok_or("MQTT TLS needs --tls-server")?
    } else {
        &o.server
    };
    let t = tcp(addr)?;
    let mut s = if tls {
        tls_wrap(t, &tls_config(&o.ca)?)?
    } else {
        Stream::Plain(t)
    };
    s.write_all(&mqtt_connect_packet(client_id, clean))
        .map_err(|e| e.to_string())?;
    let p = mqtt_read(&mut s)?;
    if p.first() != Some(&0x20) || p.get(3) != Some(&0) {
        return Err(format!("CONNACK refused: {p:?}"));
    }
    let present = p.get(2).is_some_and(|f| f & 1 == 1);
    Ok((s, present))
}

fn mqtt_read(s: &mut Stream) -> Res<Vec<u8>> {
    let mut b = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some((_, r)) = mqtt_parse(&b) {
            b.truncate(r.end);
            return Ok(b);
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".into());
        }
        b.extend_from_slice(&buf[..n]);
    }
}

/// SUBSCRIBE to `topic` at QoS `qos` and wait for SUBACK.
pub fn mqtt_subscribe(s: &mut Stream, topic: &str, qos: u8) -> Res<()> {
    let mut body = vec![0, 1];
    mqtt_str(topic, &mut body);
    body.push(qos);
    s.write_all(&mqtt_packet(0x82, &body))
        .map_err(|e| e.to_string())?;
    let p = mqtt_read(s)?;
    if p.first() != Some(&0x90) {
        return Err("no SUBACK".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Latency samples in microseconds.
#[derive(Default)]
pub struct Samples {
    v: Vec<u32>,
    seen: u64,
}

impl Samples {
    fn add(&mut self, us: u64) {
        self.seen += 1;
        if self.v.len() < MAX_SAMPLES {
            self.v.push(us.min(u32::MAX as u64) as u32);
        }
    }
    /// (p50, p99) in microseconds.
    pub fn p50_p99(&mut self) -> (u32, u32) {
        if self.v.is_empty() {
            return (0, 0);
        }
        self.v.sort_unstable();
        let n = self.v.len();
        (self.v[n / 2], self.v[(n * 99 / 100).min(n - 1)])
    }
}

/// Result of a publish/subscribe run.
#[derive(Debug, Default, Clone)]
pub struct FlowReport {
    /// Publish requests acknowledged.
    pub acked: u64,
    /// Publish requests refused (IQ error).
    pub refused: u64,
    /// Notifications received (all subscribers).
    pub notifications: u64,
    /// Subscriber-item pairs never received.
    pub missing: u64,
    /// Notifications received more than once.
    pub duplicates: u64,
    /// Subscribers the server disconnected before they had every item (e.g. closed as
    /// slow consumers).
    pub closed: u64,
    /// Seconds from the first publish to the last notification (or the last ack).
    pub secs: f64,
    /// Publish acknowledgement latency (p50, p99), microseconds.
    pub pub_lat: (u32, u32),
    /// End-to-end latency (p50, p99), microseconds.
    pub e2e_lat: (u32, u32),
    /// Server CPU over the run, microseconds.
    pub cpu_us: u64,
    /// Server RSS at the end, KiB.
    pub rss_kib: u64,
}

impl FlowReport {
    /// Every subscriber got every acknowledged item exactly once.
    pub fn exactly_once(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.closed == 0 && self.acked > 0
    }

    /// The count fields of a JSON line: `"acked":…,"refused":…,"notifications":…,"secs":…`.
    fn counts_json(&self) -> String {
        format!(
            "\"acked\":{},\"refused\":{},\"notifications\":{},\"secs\":{:.3}",
            self.acked, self.refused, self.notifications, self.secs
        )
    }

    /// The latency fields of a JSON line: `"pub_p50_us":…,…,"e2e_p99_us":…`.
    fn latency_json(&self) -> String {
        format!(
            "\"pub_p50_us\":{},\"pub_p99_us\":{},\"e2e_p50_us\":{},\"e2e_p99_us\":{}",
            self.pub_lat.0, self.pub_lat.1, self.e2e_lat.0, self.e2e_lat.1
        )
    }

    /// The delivery fields that end a JSON line: `"missing":…,…,"exactly_once":…`.
    fn delivery_json(&self) -> String {
        format!(
            "\"missing\":{},\"duplicates\":{},\"subscribers_closed\":{},\"exactly_once\":{}",
            self.missing,
            self.duplicates,
            self.closed,
            self.exactly_once()
        )
    }

    /// The latencies for the human summary line.
    fn latency_text(&self) -> String {
        format!(
            "pub p50/p99 {}/{} us  e2e p50/p99 {}/{} us",
            self.pub_lat.0, self.pub_lat.1, self.e2e_lat.0, self.e2e_lat.1
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Byte scanning (notifications and acknowledgements)

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Value of attribute `name` in the start tag `tag` (either quote style).
fn attr<'a>(tag: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(p) = find(&tag[from..], name) {
        let at = from + p;
        let before_ok = at > 0 && tag[at - 1].is_ascii_whitespace();
        let rest = &tag[at + name.len()..];
        if before_ok && rest.first() == Some(&b'=') {
            let q = *rest.get(1)?;
            let v = &rest[2..];
            let end = v.iter().position(|&c| c == q)?;
            return Some(&v[..end]);
        }
        from = at + 1;
    }
    None
}

/// Item ids are `i<publisher>_<seq>`; payloads carry `<t>micros</t>`.
fn parse_item_id(id: &[u8]) -> Option<(usize, usize)> {
    let s = std::str::from_utf8(id).ok()?.strip_prefix('i')?;
    let (p, q) = s.split_once('_')?;
    Some((p.parse().ok()?, q.parse().ok()?))
}

fn num(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// What subscribers record.
struct SubState {
    /// seen[publisher][seq] counts, per subscriber.
    seen: Vec<Vec<u8>>,
    got: u64,
    /// The server closed the connection before every item arrived.
    closed: bool,
}

struct Shared {
    t0: Instant,
    e2e: RefCell<Samples>,
    publ: RefCell<Samples>,
    notifications: Cell<u64>,
    /// Items acknowledged per publisher, final once `pubs_done` equals the publisher count.
    acked: RefCell<Vec<usize>>,
    refused: Cell<u64>,
    pubs_done: Cell<usize>,
    last_rx: Cell<Instant>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
}

fn payload(o: &Opts, t: u64) -> String {
    let pad = o.payload.saturating_sub(60).max(1);
    format!(
        "<entry xmlns='urn:kinglet:bench'><t>{t}</t><p>{}</p></entry>",
        "x".repeat(pad)
    )
}

fn publish_xml(o: &Opts, node: &str, p: usize, seq: usize, t: u64) -> String {
    format!(
        "<iq type='set' id='p{p}_{seq}' to='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item id='i{p}_{seq}'>{}</item></publish></pubsub></iq>",
        o.pubsub,
        payload(o, t)
    )
}

fn mqtt_publish(o: &Opts, p: usize, seq: usize, t: u64, pid: u16) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(&format!("bench/{}/{p}", o.tag), &mut body);
    body.extend_from_slice(&pid.to_be_bytes());
    let pad = o.payload.saturating_sub(30).max(1);
    body.extend_from_slice(format!("i{p}_{seq} {t} {}", "x".repeat(pad)).as_bytes());
    mqtt_packet(0x32, &body)
}

/// Reads what `s` has into `buf`; `None` if nothing came within `tick` (the caller's loop
/// then looks at its deadlines again).
async fn read_within(
    s: &mut Async<TcpStream>,
    buf: &mut [u8],
    tick: Duration,
) -> Res<Option<usize>> {
    smol::future::or(
        async { s.read(buf).await.map(Some).map_err(|e| e.to_string()) },
        async {
            smol::Timer::after(tick).await;
            Ok(None)
        },
    )
    .await
}

/// Publisher task: `items` publishes with at most `window` outstanding, until `deadline`.
async fn publisher(
    o: Rc<Opts>,
    sh: Rc<Shared>,
    mut s: Async<TcpStream>,
    node: String,
    p: usize,
    deadline: Instant,
) -> Res<()> {
    let mut sent_at: Vec<u64> = Vec::with_capacity(o.items.min(1 << 20));
    let mut outstanding = 0usize;
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<u8> = Vec::new();
    let hard = deadline + Duration::from_secs(30);
    loop {
        let stop = Instant::now() >= deadline;
        let mut out: Vec<u8> = Vec::new();
        while !stop && outstanding < o.window && sent_at.len() < o.items {
            let seq = sent_at.len();
            let t = sh.now_us();
            match o.proto {
                Proto::Xmpp => out.extend_from_slice(publish_xml(&o, &node, p, seq, t).as_bytes()),
                Proto::Mqtt => out.extend(mqtt_publish(&o, p, seq, t, (seq % 65535 + 1) as u16)),
            }
            sent_at.push(t);
            outstanding += 1;
        }
        if !out.is_empty() {
            s.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        if outstanding == 0 && (stop || sent_at.len() >= o.items) {
            break;
        }
        if Instant::now() > hard {
            return Err(format!(
                "publisher {p}: {outstanding} publishes never acknowledged"
            ));
        }
        let Some(n) = read_within(&mut s, &mut buf, Duration::from_millis(500)).await? else {
            continue;
        };
        if n == 0 {
            return Err(format!("publisher {p}: server closed"));
        }
        pending.extend_from_slice(&buf[..n]);
        let now = sh.now_us();
        let mut used = 0;
        match o.proto {
            Proto::Xmpp => {
                while let Some(a) = find(&pending[used..], b"<iq ") {
                    let start = used + a;
                    let Some(e) = pending[start..].iter().position(|&c| c == b'>') else {
                        break;
                    };
                    let tag = &pending[start..start + e];
                    used = start + e;
                    let Some(id) = attr(tag, b"id") else { continue };
                    let Some(seq) = id.strip_prefix(format!("p{p}_").as_bytes()).and_then(num)
                    else {
                        continue;
                    };
                    let Some(&t) = sent_at.get(seq as usize) else {
                        continue;
                    };
                    outstanding = outstanding.saturating_sub(1);
                    if attr(tag, b"type") == Some(b"result") {
                        sh.acked.borrow_mut()[p] += 1;
                        sh.publ.borrow_mut().add(now - t);
                    } else {
                        sh.refused.set(sh.refused.get() + 1);
                    }
                }
                // Keep a possibly cut tag for the next read.
                let keep_from = pending[used..]
                    .iter()
                    .rposition(|&c| c == b'<')
                    .map(|i| used + i)
                    .unwrap_or(pending.len());
                pending.drain(..keep_from.max(used));
            }
            Proto::Mqtt => {
                while let Some((kind, r)) = mqtt_parse(&pending[used..]) {
                    let body = &pending[used + r.start..used + r.end];
                    if kind == 0x40 && body.len() >= 2 {
                        // PUBACK: packet ids are issued in order, so the oldest outstanding one.
                        let pid = u16::from_be_bytes([body[0], body[1]]) as usize;
                        let base = sent_at.len() - outstanding;
                        let seq = (base..sent_at.len()).find(|&q| q % 65535 + 1 == pid);
                        if let Some(q) = seq {
                            outstanding -= 1;
                            sh.acked.borrow_mut()[p] += 1;
                            sh.publ.borrow_mut().add(now - sent_at[q]);
                        }
                    }
                    used += r.end;
                }
                pending.drain(..used);
            }
        }
    }
    sh.pubs_done.set(sh.pubs_done.get() + 1);
    Ok(())
}

/// Subscriber task: counts notifications until every acknowledged item arrived or `deadline`.
async fn subscriber(
    o: Rc<Opts>,
    sh: Rc<Shared>,
    mut s: Async<TcpStream>,
    pubs: usize,
    deadline: Instant,
) -> Res<SubState> {
    let mut st = SubState {
        seen: vec![Vec::new(); pubs],
        got: 0,
        closed: false,
    };
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if sh.pubs_done.get() == pubs {
            let acked = sh.acked.borrow();
            let done = (0..pubs).all(|p| {
                st.seen[p].len() >= acked[p] && st.seen[p][..acked[p]].iter().all(|&c| c > 0)
            });
            if done {
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        let Some(n) = read_within(&mut s, &mut buf, Duration::from_millis(200)).await? else {
            continue;
        };
        if n == 0 {
            // Counted (FlowReport::closed) rather than an error: what it got until then
            // is part of the figures.
            st.closed = true;
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let now = sh.now_us();
        let mut used = 0;
        let record = |st: &mut SubState, p: usize, q: usize, t: Option<u64>| {
            if p >= pubs || q > 1 << 24 {
                return;
            }
            let v = &mut st.seen[p];
            if v.len() <= q {
                v.resize(q + 1, 0);
            }
            v[q] = v[q].saturating_add(1);
            st.got += 1;
            sh.notifications.set(sh.notifications.get() + 1);
            if let Some(t) = t {
                sh.e2e.borrow_mut().add(now.saturating_sub(t));
            }
        };
        match o.proto {
            Proto::Xmpp => {
                while let Some(a) = find(&pending[used..], b"<item ") {
                    let start = used + a;
                    let Some(e) = find(&pending[start..], b"</t>") else {
                        break;
                    };
                    let unit = &pending[start..start + e];
                    used = start + e + 4;
                    let tag_end = unit.iter().position(|&c| c == b'>').unwrap_or(unit.len());
                    let Some((p, q)) = attr(&unit[..tag_end], b"id").and_then(parse_item_id) else {
                        continue;
                    };
                    let t = find(unit, b"<t>").and_then(|i| num(&unit[i + 3..]));
                    record(&mut st, p, q, t);
                }
                // Keep any partial "<item ..." for the next read; drop what was scanned.
                let keep = pending[used..]
                    .windows(6)
                    .rposition(|w| w == b"<item ")
                    .map(|i| used + i)
                    .unwrap_or(pending.len().saturating_sub(5).max(used));
                pending.drain(..keep);
            }
            Proto::Mqtt => {
                let mut acks: Vec<u8> = Vec::new();
                while let Some((kind, r)) = mqtt_parse(&pending[used..]) {
                    let body = &pending[used + r.start..used + r.end];
                    if kind & 0xf0 == 0x30 && body.len() >= 2 {
                        let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
                        let qos = (kind >> 1) & 3;
                        let mut off = 2 + tl;
                        if qos > 0 && body.len() >= off + 2 {
                            acks.extend(mqtt_packet(0x40, &body[off..off + 2]));
                            off += 2;
                        }
                        let pl = body.get(off..).unwrap_or(&[]);
                        let mut it = pl.split(|&c| c == b' ');
                        if let Some((p, q)) = it.next().and_then(parse_item_id) {
                            let t = it.next().and_then(num);
                            record(&mut st, p, q, t);
                        }
                    }
                    used += r.end;
                }
                pending.drain(..used);
                if !acks.is_empty() {
                    s.write_all(&acks).await.map_err(|e| e.to_string())?;
                }
            }
        }
        sh.last_rx.set(Instant::now());
    }
    Ok(st)
}

// ---------------------------------------------------------------------------------------------
// Scenario set-up

/// Creates a persistent node `node` owned by `c` (an existing node is reused).
fn create_node(o: &Opts, c: &mut Xc, node: &str, max_items: usize) -> Res<()> {
    let form = format!(
        "<configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field var='pubsub#persist_items'><value>1</value></field>\
         <field var='pubsub#max_items'><value>{max_items}</value></field>\
         <field var='pubsub#notify_retract'><value>0</value></field>\
         <field var='pubsub#access_model'><value>open</value></field></x></configure>"
    );
    let r = c.iq("cr", &format!("<iq type='set' id='cr' to='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='{node}'/>{form}</pubsub></iq>", o.pubsub))?;
    if r.attr("type") == Some("result") || format!("{r:?}").contains("conflict") {
        return Ok(());
    }
    // A server that refuses part of the form: plain create (its defaults are persistent).
    let r = c.iq("cr2", &format!("<iq type='set' id='cr2' to='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='{node}'/></pubsub></iq>", o.pubsub))?;
    if r.attr("type") == Some("result") || format!("{r:?}").contains("conflict") {
        return Ok(());
    }
    Err(format!("create node {node}: {r:?}"))
}

fn subscribe_node(o: &Opts, c: &mut Xc, user: &str, node: &str, k: usize) -> Res<()> {
    let id = format!("s{k}");
    let r = c.iq(&id, &format!("<iq type='set' id='{id}' to='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='{node}' jid='{user}@{}'/></pubsub></iq>", o.pubsub, o.domain))?;
    if r.attr("type") != Some("result") {
        return Err(format!("subscribe {user} to {node}: {r:?}"));
    }
    Ok(())
}

/// An XMPP subscriber session (`u<i>`), or an MQTT client subscribed to the topics.
fn open_subscriber(o: &Opts, i: usize, nodes: &[String]) -> Res<Async<TcpStream>> {
    match o.proto {
        Proto::Xmpp => {
            let user = format!("u{i}");
            let mut c = Xc::login(o, &user, "sub", false)?;
            c.send("<presence/>")?;
            for (k, n) in nodes.iter().enumerate() {
                subscribe_node(o, &mut c, &user, n, k)?;
            }
            c.into_async()
        }
        Proto::Mqtt => {
            let mut s = mqtt_connect(o, &format!("{}-s{i}", o.tag), false)?;
            for p in 0..nodes.len() {
                mqtt_subscribe(&mut s, &format!("bench/{}/{p}", o.tag), 0)?;
            }
            match s {
                Stream::Plain(t) => {
                    t.set_read_timeout(None).map_err(|e| e.to_string())?;
                    Async::new(t).map_err(|e| e.to_string())
                }
                Stream::Tls(_) => Err("plaintext only".into()),
            }
        }
    }
}

fn open_publisher(o: &Opts, p: usize, node: &str) -> Res<Async<TcpStream>> {
    match o.proto {
        Proto::Xmpp => {
            let user = format!("p{p}");
            let mut c = Xc::login(o, &user, "pub", false)?;
            create_node(o, &mut c, node, 1000)?;
            c.into_async()
        }
        Proto::Mqtt => match mqtt_connect(o, &format!("{}-p{p}", o.tag), false)? {
            Stream::Plain(t) => {
                t.set_read_timeout(None).map_err(|e| e.to_string())?;
                Async::new(t).map_err(|e| e.to_string())
            }
            Stream::Tls(_) => Err("plaintext only".into()),
        },
    }
}

/// Runs `pubs` publishers (node per publisher) and `subs` subscribers (each on every node).
pub fn flow(o: &Opts, pubs: usize, subs: usize) -> Res<FlowReport> {
    let nodes: Vec<String> = (0..pubs).map(|p| format!("{}{p}", o.tag)).collect();
    let mut pub_socks = Vec::new();
    for (p, n) in nodes.iter().enumerate() {
        pub_socks.push(open_publisher(o, p, n)?);
    }
    let mut sub_socks = Vec::new();
    for i in 0..subs {
        sub_socks.push(open_subscriber(o, i, &nodes)?);
    }
    let sh = Rc::new(Shared {
        t0: Instant::now(),
        e2e: RefCell::new(Samples::default()),
        publ: RefCell::new(Samples::default()),
        notifications: Cell::new(0),
        acked: RefCell::new(vec![0; pubs]),
        refused: Cell::new(0),
        pubs_done: Cell::new(0),
        last_rx: Cell::new(Instant::now()),
    });
    let orc = Rc::new(o.clone());
    let cpu0 = cpu_us(o.pid);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(o.secs);
    let drain = deadline + Duration::from_secs(30);
    let ex = smol::LocalExecutor::new();
    let (states, perrs) = smol::block_on(ex.run(async {
        let mut ph = Vec::new();
        for (p, s) in pub_socks.into_iter().enumerate() {
            ph.push(ex.spawn(publisher(
                orc.clone(),
                sh.clone(),
                s,
                nodes[p].clone(),
                p,
                deadline,
            )));
        }
        let mut sh_ = Vec::new();
        for s in sub_socks {
            sh_.push(ex.spawn(subscriber(orc.clone(), sh.clone(), s, pubs, drain)));
        }
        let mut perrs = Vec::new();
        for h in ph {
            if let Err(e) = h.await {
                perrs.push(e);
            }
        }
        let mut states = Vec::new();
        for h in sh_ {
            states.push(h.await);
        }
        (states, perrs)
    }));
    let end = if subs > 0 {
        sh.last_rx.get()
    } else {
        Instant::now()
    };
    let cpu = cpu_us(o.pid).saturating_sub(cpu0);
    if let Some(e) = perrs.first() {
        return Err(e.clone());
    }
    let acked = sh.acked.borrow().clone();
    let mut r = FlowReport {
        acked: acked.iter().sum::<usize>() as u64,
        refused: sh.refused.get(),
        notifications: sh.notifications.get(),
        secs: end.duration_since(t0).as_secs_f64().max(1e-6),
        pub_lat: sh.publ.borrow_mut().p50_p99(),
        e2e_lat: sh.e2e.borrow_mut().p50_p99(),
        cpu_us: cpu,
        rss_kib: rss_kib(o.pid),
        ..FlowReport::default()
    };
    for st in states {
        let st = st?;
        r.closed += u64::from(st.closed);
        for (p, &a) in acked.iter().enumerate() {
            let v = &st.seen[p];
            for q in 0..a {
                match v.get(q).copied().unwrap_or(0) {
                    0 => r.missing += 1,
                    1 => {}
                    _ => r.duplicates += 1,
                }
            }
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Scenarios with output

fn kind(o: &Opts) -> &'static str {
    match o.proto {
        Proto::Xmpp => "xmpp",
        Proto::Mqtt => "mqtt",
    }
}

/// `fanout`: one publisher, `o.count` subscribers. Prints a JSON line; returns the report.
pub fn fanout(o: &Opts) -> Res<FlowReport> {
    let mut o2 = o.clone();
    o2.tag = format!("{}fo{}n", o.tag, o.count);
    let r = flow(&o2, 1, o.count)?;
    let rate = r.notifications as f64 / r.secs;
    let cpu_per = r.cpu_us as f64 / r.notifications.max(1) as f64;
    println!(
        "{{\"bench\":\"fanout\",\"server\":\"{}\",\"proto\":\"{}\",\"subs\":{},\"window\":{},\"payload\":{},{},\"notif_per_s\":{:.0},{},\"cpu_us_per_notif\":{:.2},\"rss_kib\":{},{}}}",
        o.name,
        kind(o),
        o.count,
        o.window,
        o.payload,
        r.counts_json(),
        rate,
        r.latency_json(),
        cpu_per,
        r.rss_kib,
        r.delivery_json()
    );
    eprintln!(
        "  fanout {:>9} subs={:<5} {:>9.0} notif/s  {}  {:.2} us CPU/notif  exactly-once={}",
        o.name,
        o.count,
        rate,
        r.latency_text(),
        cpu_per,
        r.exactly_once()
    );
    Ok(r)
}

/// `fanin`: `o.count` publishers on their own nodes, one subscriber.
pub fn fanin(o: &Opts) -> Res<FlowReport> {
    let mut o2 = o.clone();
    o2.tag = format!("{}fi", o.tag);
    let r = flow(&o2, o.count, 1)?;
    let rate = r.acked as f64 / r.secs;
    println!(
        "{{\"bench\":\"fanin\",\"server\":\"{}\",\"proto\":\"{}\",\"publishers\":{},\"window\":{},{},\"pub_per_s\":{:.0},{},\"cpu_us_per_pub\":{:.2},{}}}",
        o.name,
        kind(o),
        o.count,
        o.window,
        r.counts_json(),
        rate,
        r.latency_json(),
        r.cpu_us as f64 / r.acked.max(1) as f64,
        r.delivery_json()
    );
    eprintln!(
        "  fanin  {:>9} pubs={:<4} {:>9.0} pub/s  {}  exactly-once={}",
        o.name,
        o.count,
        rate,
        r.latency_text(),
        r.exactly_once()
    );
    Ok(r)
}

/// An open idle session.
enum Sess {
    X(Box<Xc>),
    M(Stream),
}

/// One idle session: logged in, initial presence (XMPP) or one subscription (MQTT).
fn idle_session(o: &Opts, i: usize) -> Res<Sess> {
    match o.proto {
        Proto::Xmpp => {
            let mut c = Xc::login(o, &format!("u{i}"), "idle", o.tls)?;
            c.send("<presence/>")?;
            Ok(Sess::X(Box::new(c)))
        }
        Proto::Mqtt => {
            let mut s = mqtt_connect(o, &format!("{}-idle{i}", o.tag), o.tls)?;
            mqtt_subscribe(&mut s, &format!("idle/{i}"), 1)?;
            Ok(Sess::M(s))
        }
    }
}

/// `idle`: `o.count` sessions; server RSS per session.
pub fn idle(o: &Opts) -> Res<f64> {
    // Warm-up session, so lazily built state (TLS config, caches) is in the baseline.
    drop(idle_session(o, 0)?);
    std::thread::sleep(Duration::from_millis(300));
    let base = rss_kib(o.pid);
    let t0 = Instant::now();
    let mut v = Vec::with_capacity(o.count);
    for i in 0..o.count {
        v.push(idle_session(o, i)?);
    }
    let secs = t0.elapsed().as_secs_f64();
    // A round trip on the last session so the server processed everything before.
    if let Some(Sess::X(c)) = v.last_mut() {
        c.iq(
            "sync",
            &format!(
                "<iq type='get' id='sync' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                o.domain
            ),
        )?;
    }
    std::thread::sleep(Duration::from_millis(1000));
    let after = rss_kib(o.pid);
    let per = after.saturating_sub(base) as f64 * 1024.0 / o.count.max(1) as f64;
    let mode = if o.tls { "tls" } else { "plain" };
    println!(
        "{{\"bench\":\"idle\",\"server\":\"{}\",\"proto\":\"{}\",\"mode\":\"{mode}\",\"sessions\":{},\"rss_base_kib\":{base},\"rss_after_kib\":{after},\"bytes_per_session\":{per:.0},\"login_secs\":{secs:.2}}}",
        o.name,
        kind(o),
        o.count
    );
    eprintln!(
        "  idle   {:>9} {mode:<5} n={:<5} base {base} KiB, after {after} KiB: {:.1} KiB/session",
        o.name,
        o.count,
        per / 1024.0
    );
    drop(v);
    Ok(per)
}

/// `login`: sequential SCRAM-SHA-1 logins for `o.secs` seconds (at most `o.count`).
pub fn login(o: &Opts) -> Res<f64> {
    if o.proto != Proto::Xmpp {
        return Err("login is an XMPP SCRAM scenario".into());
    }
    let cpu0 = cpu_us(o.pid);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(o.secs);
    let mut n = 0usize;
    while n < o.count && Instant::now() < deadline {
        let mut c = Xc::login(o, &format!("u{}", n % 1000), "login", false)?;
        c.send("</stream:stream>")?;
        n += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_us(o.pid).saturating_sub(cpu0);
    let rate = n as f64 / secs;
    println!(
        "{{\"bench\":\"login\",\"server\":\"{}\",\"proto\":\"xmpp\",\"logins\":{n},\"secs\":{secs:.3},\"logins_per_s\":{rate:.1},\"cpu_us_per_login\":{:.0}}}",
        o.name,
        cpu as f64 / n.max(1) as f64
    );
    eprintln!(
        "  login  {:>9} {rate:.0} logins/s, {:.0} us server CPU per login",
        o.name,
        cpu as f64 / n.max(1) as f64
    );
    Ok(rate)
}

/// `soak`: `o.secs` seconds of rounds, each a small fan-out (1 publisher, `o.count`
/// subscribers, `o.items` items) plus 20 sessions connected and dropped; RSS per round.
pub fn soak(o: &Opts) -> Res<()> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(o.secs);
    let mut series = Vec::new();
    let mut round = 0usize;
    let mut ok = true;
    while Instant::now() < deadline && round < 10_000 {
        let mut o2 = o.clone();
        o2.tag = format!("{}so{}n", o.tag, round % 4);
        o2.secs = 10;
        let r = flow(&o2, 1, o.count)?;
        ok &= r.exactly_once();
        for k in 0..20 {
            drop(idle_session(o, 1000 + (round * 20 + k) % 1000)?);
        }
        round += 1;
        series.push((t0.elapsed().as_secs(), rss_kib(o.pid)));
    }
    let s: Vec<String> = series.iter().map(|(t, r)| format!("[{t},{r}]")).collect();
    let max = series.iter().map(|x| x.1).max().unwrap_or(0);
    let last = series.last().map(|x| x.1).unwrap_or(0);
    println!(
        "{{\"bench\":\"soak\",\"server\":\"{}\",\"proto\":\"{}\",\"rounds\":{round},\"secs\":{:.0},\"rss_max_kib\":{max},\"rss_last_kib\":{last},\"exactly_once\":{ok},\"rss_series\":[{}]}}",
        o.name,
        kind(o),
        t0.elapsed().as_secs_f64(),
        s.join(",")
    );
    eprintln!(
        "  soak   {:>9} {round} rounds, RSS max {max} KiB, last {last} KiB, exactly-once={ok}",
        o.name
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resumption: XEP-0198 (XMPP) or persistent sessions (MQTT)

/// XEP-0198 namespace.
const SM: &str = "urn:xmpp:sm:3";
/// XEP-0060 event namespace.
const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Bound of each waiting phase of `resume` (detach, resumption).
const RESUME_WAIT: Duration = Duration::from_secs(120);

/// Result of a `resume` run.
#[derive(Debug, Default, Clone)]
pub struct ResumeReport {
    /// Sessions that went through the whole first phase (log in, subscribe, resumable).
    pub sessions: usize,
    /// Items published while they were detached.
    pub items: usize,
    /// Server RSS (KiB): before the sessions, with them connected, detached, detached
    /// with the items queued, and after the resumption.
    pub rss: [u64; 5],
    /// Seconds until the server had closed every cut socket (None: it had not within
    /// [`RESUME_WAIT`]).
    pub detach_secs: Option<f64>,
    /// Reconnections that authenticated (XMPP: SASL; MQTT: TCP connect only).
    pub authenticated: usize,
    /// Sessions resumed (`<resumed/>`; MQTT: CONNACK with session present).
    pub resumed: usize,
    /// Sessions that could not be resumed (refused, failed authentication, timeout).
    pub failed: usize,
    /// The first failure, for the log.
    pub first_failure: Option<String>,
    /// Notifications received (all sessions, duplicates included).
    pub notifications: u64,
    /// Session-item pairs never received.
    pub missing: u64,
    /// Notifications received more than once.
    pub duplicates: u64,
    /// Other stanzas redelivered after resumption (neither notifications nor our ping).
    pub other_stanzas: u64,
    /// Wall-clock seconds and server CPU (microseconds) of the reconnect-and-authenticate
    /// part and of the resume-and-redeliver part.
    pub auth_secs: f64,
    /// See `auth_secs`.
    pub resume_secs: f64,
    /// See `auth_secs`.
    pub cpu_auth_us: u64,
    /// See `auth_secs`.
    pub cpu_resume_us: u64,
}

impl ResumeReport {
    /// Every session was resumed and got every item exactly once.
    pub fn exactly_once(&self) -> bool {
        self.sessions > 0
            && self.resumed == self.sessions
            && self.missing == 0
            && self.duplicates == 0
    }

    /// RSS growth per session (bytes) from the baseline to sample `k` of [`Self::rss`].
    fn per_session(&self, k: usize) -> f64 {
        self.rss[k].saturating_sub(self.rss[0]) as f64 * 1024.0 / self.sessions.max(1) as f64
    }
}

/// Number of open file descriptors of `pid` (0 if unknown).
fn fd_count(pid: Option<u32>) -> usize {
    let Some(pid) = pid else { return 0 };
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// An XMPP stanza (what XEP-0198 counts), not a nonza.
fn is_stanza(e: &Element) -> bool {
    e.ns == "jabber:client" && matches!(e.name.as_str(), "iq" | "message" | "presence")
}

/// The sequence numbers of the bench items (`i<p>_<seq>`) in a pub-sub notification.
fn notified_seqs(e: &Element) -> Vec<usize> {
    let Some(items) = e
        .child("event", NS_PUBSUB_EVENT)
        .and_then(|ev| ev.child("items", NS_PUBSUB_EVENT))
    else {
        return Vec::new();
    };
    items
        .children_named("item", NS_PUBSUB_EVENT)
        .filter_map(|i| parse_item_id(i.attr("id")?.as_bytes()))
        .map(|(_, q)| q)
        .collect()
}

/// A session parked for resumption: XMPP (the socket, the `<enabled/>` id, and `h`, the
/// stanzas it handled) or MQTT (the socket and its client id).
struct Parked {
    sock: Sess,
    id: String,
    h: u32,
}

/// Logs `u<i>` in, sends presence, subscribes to `node`, enables XEP-0198 with resumption,
/// and counts what arrives after `<enabled/>` until a ping's result (that is `h`).
fn park_xmpp(o: &Opts, i: usize, node: &str) -> Res<Parked> {
    let user = format!("u{i}");
    let mut c = Xc::login(o, &user, "rs", false)?;
    c.send("<presence/>")?;
    subscribe_node(o, &mut c, &user, node, 0)?;
    c.send(&format!("<enable xmlns='{SM}' resume='true'/>"))?;
    let mut id = None;
    for _ in 0..10_000 {
        let e = c.next()?;
        if e.is("failed", SM) {
            return Err(format!("{user}: <enable/> failed: {e:?}"));
        }
        if e.is("enabled", SM) {
            if !matches!(e.attr("resume"), Some("true" | "1")) {
                return Err(format!(
                    "{user}: stream management without resumption: {e:?}"
                ));
            }
            id = e.attr("id").map(str::to_owned);
            break;
        }
    }
    let id = id.ok_or_else(|| format!("{user}: no <enabled/> with an id"))?;
    c.send(&format!(
        "<iq type='get' id='smsync' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
        o.domain
    ))?;
    let mut h = 0u32;
    for _ in 0..10_000 {
        let e = c.next()?;
        if e.is("r", SM) {
            c.send(&format!("<a xmlns='{SM}' h='{h}'/>"))?;
            continue;
        }
        if is_stanza(&e) {
            h = h.wrapping_add(1);
            if e.name == "iq" && e.attr("id") == Some("smsync") {
                return Ok(Parked {
                    sock: Sess::X(Box::new(c)),
                    id,
                    h,
                });
            }
        }
    }
    Err(format!("{user}: no ping result after <enabled/>"))
}

/// Connects MQTT client `id` with a persistent session and subscribes to `topic` at QoS 1.
fn park_mqtt(o: &Opts, id: &str, topic: &str) -> Res<Parked> {
    let (mut s, _) = mqtt_connect_session(o, id, false, false)?;
    mqtt_subscribe(&mut s, topic, 1)?;
    Ok(Parked {
        sock: Sess::M(s),
        id: id.to_owned(),
        h: 0,
    })
}

/// What one resumption got.
struct Resumed {
    ok: bool,
    failure: Option<String>,
    /// Notifications per item sequence number.
    seen: Vec<u32>,
    other: u64,
    /// The socket, still open (closed after the measured phase), and `h` (XMPP).
    sock: Option<Async<TcpStream>>,
    h: u32,
}

impl Resumed {
    /// The figures of a resumption under way: nothing seen yet of `items`.
    fn started(items: usize) -> Resumed {
        let mut r = Resumed::failed(String::new());
        r.failure = None;
        r.seen = vec![0; items];
        r
    }

    fn failed(why: String) -> Resumed {
        Resumed {
            ok: false,
            failure: Some(why),
            seen: Vec::new(),
            other: 0,
            sock: None,
            h: 0,
        }
    }

    /// The deadline passed: a failure saying how far `self` got (`state` names what `ok`
    /// means: resumed, session present), keeping what was seen.
    fn timed_out(self, state: &str, items: usize) -> Resumed {
        let got = self.seen.iter().filter(|&&c| c > 0).count();
        let mut f = Resumed::failed(format!(
            "timeout ({state} {}, {got} of {items} items)",
            self.ok
        ));
        f.seen = self.seen;
        f
    }
}

/// Writes `out` (if any) for a resuming session.
async fn resume_write(s: &mut Async<TcpStream>, out: &[u8]) -> Result<(), Resumed> {
    if out.is_empty() {
        return Ok(());
    }
    s.write_all(out)
        .await
        .map_err(|e| Resumed::failed(format!("write: {e}")))
}

/// One read for a resuming session within half a second: the bytes read (`Some(0)` never:
/// a closed connection is an error), or `None` when nothing came.
async fn resume_read(s: &mut Async<TcpStream>, buf: &mut [u8]) -> Result<Option<usize>, Resumed> {
    match read_within(s, buf, Duration::from_millis(500)).await {
        Ok(Some(0)) => Err(Resumed::failed("server closed the connection".into())),
        Ok(n) => Ok(n),
        Err(e) => Err(Resumed::failed(format!("read: {e}"))),
    }
}

/// XEP-0198 §5 on an authenticated stream: `<resume/>`, then reads until every item
/// arrived and a ping sent after that is answered (whatever the server redelivers comes
/// before it, so duplicates are seen), or until `deadline`.
async fn resume_xmpp(
    o: Rc<Opts>,
    mut s: Async<TcpStream>,
    mut framer: Framer,
    previd: String,
    h: u32,
    deadline: Instant,
) -> Resumed {
    let mut r = Resumed::started(o.items);
    r.h = h;
    let mut out = format!("<resume xmlns='{SM}' previd='{previd}' h='{h}'/>");
    let mut pinged = false;
    let mut buf = vec![0u8; 16384];
    loop {
        if let Err(f) = resume_write(&mut s, out.as_bytes()).await {
            return f;
        }
        out.clear();
        loop {
            let f = match framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Resumed::failed(format!("bad XML: {e}")),
            };
            let e = match f {
                Frame::Stanza(e) => e,
                Frame::Header(_) => continue,
                Frame::Close => return Resumed::failed("stream closed".into()),
            };
            if e.is("failed", SM) {
                return Resumed::failed(format!("<failed/>: {e:?}"));
            }
            if e.is("resumed", SM) {
                r.ok = true;
                continue;
            }
            if e.is("r", SM) {
                out.push_str(&format!("<a xmlns='{SM}' h='{}'/>", r.h));
                continue;
            }
            if e.ns == "http://etherx.jabber.org/streams" && e.name == "error" {
                return Resumed::failed(format!("stream error: {e:?}"));
            }
            if !is_stanza(&e) {
                continue;
            }
            r.h = r.h.wrapping_add(1);
            if e.name == "iq" && e.attr("id") == Some("rsync") {
                r.sock = Some(s);
                return r;
            }
            let seqs = notified_seqs(&e);
            if seqs.is_empty() {
                r.other += 1;
            }
            for q in seqs {
                if let Some(c) = r.seen.get_mut(q) {
                    *c += 1;
                }
            }
        }
        if r.ok && !pinged && r.seen.iter().all(|&c| c > 0) {
            pinged = true;
            out.push_str(&format!(
                "<iq type='get' id='rsync' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                o.domain
            ));
        }
        if !out.is_empty() {
            continue;
        }
        if Instant::now() > deadline {
            return r.timed_out("resumed", o.items);
        }
        match resume_read(&mut s, &mut buf).await {
            Ok(Some(n)) => {
                if let Err(e) = framer.push(&buf[..n]) {
                    return Resumed::failed(format!("bad XML: {e}"));
                }
            }
            Ok(None) => {}
            Err(f) => return f,
        }
    }
}

/// MQTT: CONNECT with the persistent session `client_id` on the connected socket `s`; its
/// queued QoS 1 messages are acknowledged as they come. Then PINGREQ once every item
/// arrived; done at PINGRESP (what the server sends again comes before it).
async fn resume_mqtt(
    o: Rc<Opts>,
    mut s: Async<TcpStream>,
    client_id: String,
    deadline: Instant,
) -> Resumed {
    let mut r = Resumed::started(o.items);
    let mut out = mqtt_connect_packet(&client_id, false);
    let mut pinged = false;
    let mut buf = vec![0u8; 16384];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if let Err(f) = resume_write(&mut s, &out).await {
            return f;
        }
        out.clear();
        let mut used = 0;
        while let Some((kind, range)) = mqtt_parse(&pending[used..]) {
            let body = &pending[used + range.start..used + range.end];
            match kind & 0xf0 {
                0x20 => {
                    if body.get(1) != Some(&0) {
                        return Resumed::failed(format!("CONNACK refused: {body:?}"));
                    }
                    if body.first().is_none_or(|f| f & 1 == 0) {
                        return Resumed::failed("CONNACK without session present".into());
                    }
                    r.ok = true;
                }
                0x30 if body.len() >= 2 => {
                    let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut off = 2 + tl;
                    if (kind >> 1) & 3 > 0 && body.len() >= off + 2 {
                        out.extend(mqtt_packet(0x40, &body[off..off + 2]));
                        off += 2;
                    }
                    let pl = body.get(off..).unwrap_or(&[]);
                    match pl.split(|&c| c == b' ').next().and_then(parse_item_id) {
                        Some((_, q)) => {
                            if let Some(c) = r.seen.get_mut(q) {
                                *c += 1;
                            }
                        }
                        None => r.other += 1,
                    }
                }
                0xd0 => {
                    r.sock = Some(s);
                    return r;
                }
                _ => r.other += 1,
            }
            used += range.end;
        }
        pending.drain(..used);
        if r.ok && !pinged && r.seen.iter().all(|&c| c > 0) {
            pinged = true;
            out.extend_from_slice(&[0xc0, 0]);
        }
        if !out.is_empty() {
            continue;
        }
        if Instant::now() > deadline {
            return r.timed_out("session present", o.items);
        }
        match resume_read(&mut s, &mut buf).await {
            Ok(Some(n)) => pending.extend_from_slice(&buf[..n]),
            Ok(None) => {}
            Err(f) => return f,
        }
    }
}

/// Publishes `o.items` items on `node` (XMPP, as `p0`) or topic `bench/<tag>/0` (MQTT, QoS
/// 1), each acknowledged before the next, then a round trip.
fn publish_items(o: &Opts, publisher: &mut Sess, node: &str) -> Res<()> {
    let t0 = Instant::now();
    match publisher {
        Sess::X(c) => {
            for seq in 0..o.items {
                let t = t0.elapsed().as_micros() as u64;
                let r = c.iq(&format!("p0_{seq}"), &publish_xml(o, node, 0, seq, t))?;
                if r.attr("type") != Some("result") {
                    return Err(format!("publish {seq}: {r:?}"));
                }
            }
            c.iq(
                "pubsync",
                &format!(
                    "<iq type='get' id='pubsync' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                    o.domain
                ),
            )?;
        }
        Sess::M(s) => {
            for seq in 0..o.items {
                let t = t0.elapsed().as_micros() as u64;
                let pid = (seq % 65535 + 1) as u16;
                s.write_all(&mqtt_publish(o, 0, seq, t, pid))
                    .map_err(|e| e.to_string())?;
                let mut acked = false;
                for _ in 0..100 {
                    let p = mqtt_read(s)?;
                    if p.first() == Some(&0x40) && p.get(2..4) == Some(&pid.to_be_bytes()[..]) {
                        acked = true;
                        break;
                    }
                }
                if !acked {
                    return Err(format!("publish {seq}: no PUBACK"));
                }
            }
        }
    }
    Ok(())
}

/// The plaintext socket of a blocking MQTT stream, for the asynchronous phase.
fn mqtt_into_async(s: Stream) -> Res<Async<TcpStream>> {
    match s {
        Stream::Plain(t) => {
            t.set_read_timeout(None).map_err(|e| e.to_string())?;
            Async::new(t).map_err(|e| e.to_string())
        }
        Stream::Tls(_) => Err("plaintext only".into()),
    }
}

/// The `resume` run; prints nothing (see [`resume`]).
pub fn resume_run(o: &Opts) -> Res<ResumeReport> {
    if o.items == 0 || o.items > 1000 {
        return Err("resume needs --items between 1 and 1000".into());
    }
    let mut o = o.clone();
    // A fresh node or topic per run: a reused node's last item could be sent on subscribe.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 1_000_000);
    o.tag = format!("{}rs{}n{stamp}", o.tag, o.count);
    let node = o.tag.clone();
    let topic = format!("bench/{}/0", o.tag);
    let mut rep = ResumeReport {
        items: o.items,
        ..ResumeReport::default()
    };
    // The publisher (and its node) first, so the baseline includes them.
    let mut publisher = match o.proto {
        Proto::Xmpp => {
            let mut c = Xc::login(&o, "p0", "pub", false)?;
            create_node(&o, &mut c, &node, 1000)?;
            Sess::X(Box::new(c))
        }
        Proto::Mqtt => Sess::M(mqtt_connect(&o, &format!("{}-p", o.tag), false)?),
    };
    // Settled like the other samples: the node's creation may free memory for a while.
    std::thread::sleep(Duration::from_millis(1000));
    rep.rss[0] = rss_kib(o.pid);
    let fds0 = fd_count(o.pid);

    // 1. Sessions: logged in, subscribed, resumable.
    let mut parked = Vec::with_capacity(o.count);
    for i in 0..o.count {
        parked.push(match o.proto {
            Proto::Xmpp => park_xmpp(&o, i, &node)?,
            Proto::Mqtt => park_mqtt(&o, &format!("{}-s{i}", o.tag), &topic)?,
        });
    }
    rep.sessions = parked.len();
    std::thread::sleep(Duration::from_millis(1000));
    rep.rss[1] = rss_kib(o.pid);

    // 2. Every socket cut: no stream close, no DISCONNECT. Detached once the server closed
    // them all (its descriptor count is back to the baseline).
    let (ids, socks): (Vec<(String, u32)>, Vec<Sess>) =
        parked.into_iter().map(|p| ((p.id, p.h), p.sock)).unzip();
    let t_cut = Instant::now();
    drop(socks);
    while Instant::now() < t_cut + RESUME_WAIT {
        if fd_count(o.pid) <= fds0 + 8 {
            rep.detach_secs = Some(t_cut.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    rep.rss[2] = rss_kib(o.pid);

    // 3. The items, queued for every detached session.
    publish_items(&o, &mut publisher, &node)?;
    std::thread::sleep(Duration::from_millis(1000));
    rep.rss[3] = rss_kib(o.pid);

    // 4. Reconnect and authenticate every session (MQTT: TCP connect; its CONNECT is the
    // resumption), then resume them all at once.
    let cpu0 = cpu_us(o.pid);
    let t0 = Instant::now();
    let mut ready = Vec::with_capacity(ids.len());
    let mut failures = Vec::new();
    for (i, (id, h)) in ids.into_iter().enumerate() {
        let conn = match o.proto {
            Proto::Xmpp => Xc::authenticate(&o, &format!("u{i}"), false).and_then(|mut c| {
                let f = c.open(&o.domain)?;
                if f.child("sm", SM).is_none() {
                    return Err("no <sm/> feature after authentication".into());
                }
                let (s, framer) = c.into_async_framed()?;
                Ok((s, Some(framer)))
            }),
            Proto::Mqtt => {
                tcp(&o.server).and_then(|t| Ok((mqtt_into_async(Stream::Plain(t))?, None)))
            }
        };
        match conn {
            Ok((s, framer)) => ready.push((s, framer, id, h)),
            Err(e) => failures.push(format!("session {i}: {e}")),
        }
    }
    rep.authenticated = ready.len();
    let cpu1 = cpu_us(o.pid);
    let t1 = Instant::now();
    let orc = Rc::new(o.clone());
    let deadline = t1 + RESUME_WAIT;
    let ex = smol::LocalExecutor::new();
    let results: Vec<Resumed> = smol::block_on(ex.run(async {
        let mut hs = Vec::new();
        for (s, framer, id, h) in ready {
            hs.push(match framer {
                Some(f) => ex.spawn(resume_xmpp(orc.clone(), s, f, id, h, deadline)),
                None => ex.spawn(resume_mqtt(orc.clone(), s, id, deadline)),
            });
        }
        let mut v = Vec::new();
        for h in hs {
            v.push(h.await);
        }
        v
    }));
    let cpu2 = cpu_us(o.pid);
    rep.auth_secs = t1.duration_since(t0).as_secs_f64();
    rep.resume_secs = t1.elapsed().as_secs_f64();
    rep.cpu_auth_us = cpu1.saturating_sub(cpu0);
    rep.cpu_resume_us = cpu2.saturating_sub(cpu1);

    // 5. Counts, then a clean end for every session (outside the measured phase).
    rep.failed = failures.len();
    rep.first_failure = failures.into_iter().next();
    let mut open = Vec::new();
    for r in results {
        if r.ok && r.failure.is_none() {
            rep.resumed += 1;
        } else {
            rep.failed += 1;
            if rep.first_failure.is_none() {
                rep.first_failure = r.failure.clone();
            }
        }
        rep.other_stanzas += r.other;
        rep.missing += o.items.saturating_sub(r.seen.len()) as u64;
        for &c in &r.seen {
            rep.notifications += u64::from(c);
            match c {
                0 => rep.missing += 1,
                1 => {}
                _ => rep.duplicates += u64::from(c - 1),
            }
        }
        if let Some(s) = r.sock {
            open.push((s, r.h));
        }
    }
    // Sessions that never got to the resumption miss every item.
    rep.missing += ((rep.sessions - rep.authenticated.min(rep.sessions)) * o.items) as u64;
    std::thread::sleep(Duration::from_millis(1000));
    rep.rss[4] = rss_kib(o.pid);
    smol::block_on(async {
        for (mut s, h) in open {
            let bye: Vec<u8> = match o.proto {
                Proto::Xmpp => format!("<a xmlns='{SM}' h='{h}'/></stream:stream>").into_bytes(),
                Proto::Mqtt => vec![0xe0, 0],
            };
            let _ = s.write_all(&bye).await;
        }
    });
    drop(publisher);
    Ok(rep)
}

/// `resume`: `o.count` sessions subscribed to one node (topic) and made resumable, their
/// sockets cut, `o.items` items published while they are detached, then every session
/// reconnected and resumed. Prints a JSON line; returns the report.
pub fn resume(o: &Opts) -> Res<ResumeReport> {
    let r = resume_run(o)?;
    let n = r.resumed.max(1) as f64;
    let detach = r
        .detach_secs
        .map_or_else(|| "null".to_owned(), |s| format!("{s:.2}"));
    let (name, proto) = (&o.name, kind(o));
    let (sessions, items) = (r.sessions, r.items);
    let [base, connected, detached, queued, resumed_kib] = r.rss;
    let (resumed, failed) = (r.resumed, r.failed);
    let (notifications, missing, duplicates) = (r.notifications, r.missing, r.duplicates);
    let (auth_secs, resume_secs) = (r.auth_secs, r.resume_secs);
    let (cpu_auth, cpu_resume) = (r.cpu_auth_us, r.cpu_resume_us);
    let auth_per = cpu_auth as f64 / n;
    let resume_per = cpu_resume as f64 / n;
    let with_auth_per = (cpu_auth + cpu_resume) as f64 / n;
    let per = |i: usize| r.per_session(i);
    let first_failure = r
        .first_failure
        .as_deref()
        .unwrap_or("")
        .replace(['"', '\\'], "'")
        .chars()
        .take(300)
        .collect::<String>();
    println!(
        "{{\"bench\":\"resume\",\"server\":\"{name}\",\"proto\":\"{proto}\",\"sessions\":{sessions},\"items\":{items},\"rss_base_kib\":{base},\"rss_connected_kib\":{connected},\"rss_detached_kib\":{detached},\"rss_queued_kib\":{queued},\"rss_resumed_kib\":{resumed_kib},\"bytes_per_session_connected\":{:.0},\"bytes_per_session_detached\":{:.0},\"bytes_per_session_queued\":{:.0},\"detach_secs\":{detach},\"authenticated\":{},\"resumed\":{resumed},\"failed\":{failed},\"notifications\":{notifications},\"missing\":{missing},\"duplicates\":{duplicates},\"other_stanzas\":{},\"exactly_once\":{},\"auth_secs\":{auth_secs:.3},\"resume_secs\":{resume_secs:.3},\"cpu_auth_us\":{cpu_auth},\"cpu_resume_us\":{cpu_resume},\"cpu_us_per_resume\":{resume_per:.0},\"cpu_us_per_resume_with_auth\":{with_auth_per:.0},\"first_failure\":\"{first_failure}\"}}",
        per(1),
        per(2),
        per(3),
        r.authenticated,
        r.other_stanzas,
        r.exactly_once(),
    );
    eprintln!(
        "  resume {name:>9} n={sessions} items={items}: RSS base {base} connected {connected} detached {detached} queued {queued} KiB ({:.1} KiB/detached session with its items); resumed {resumed} failed {failed}; notifications {notifications} missing {missing} duplicates {duplicates}; auth {auth_secs:.2} s {auth_per:.0} us CPU/session, resume {resume_secs:.2} s {resume_per:.0} us CPU/session",
        per(3) / 1024.0,
    );
    if let Some(f) = &r.first_failure {
        eprintln!("  resume {:>9} first failure: {f}", o.name);
    }
    Ok(r)
}
