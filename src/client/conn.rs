//! One blocking client-to-server XMPP stream (RFC 6120): TCP connect with a timeout,
//! STARTTLS or direct TLS (rustls), SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN over TLS only,
//! ANONYMOUS), resource binding, then IQ requests and incoming stanzas.
//!
//! Input goes through the crate's [`Framer`] with [`MAX_STANZA_BYTES`]; stanzas that arrive
//! while a request waits for its reply are queued (at most [`MAX_QUEUED`], oldest dropped).
//! Every wait is bounded by the configured timeout; reads wake up every [`READ_SLICE`] so
//! the caller can notice Ctrl-C. Incoming IQ requests are answered (XEP-0199 ping with a
//! result, anything else with `service-unavailable`), so the server's idle pings never
//! close a long `sub`.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::proto::{NS_BIND, NS_PING, NS_SASL, NS_SESSION, NS_STANZAS, NS_TLS};
use crate::pubsub::NS_PUBSUB_ERRORS;
use crate::sasl::{ScramClient, ScramHash, base64_decode, base64_encode, random_nonce};
use crate::xml::{
    Element, Frame, Framer, NS_CLIENT, NS_STREAM, Raw, STREAM_CLOSE, Writer, XmlLimits,
};

use super::settings::{Auth, Settings, TlsMode};
use super::sm::{self, NS_SM, SmError, StreamMgmt};
use super::{ClientError, StanzaError};

/// Largest stanza accepted from the server (an items reply can hold many items).
pub const MAX_STANZA_BYTES: usize = 4 * 1024 * 1024;
/// Most stanzas queued while waiting for a reply; the oldest is dropped beyond this.
pub const MAX_QUEUED: usize = 1024;
/// Longest single blocking read, so that a stop request is noticed quickly.
pub const READ_SLICE: Duration = Duration::from_millis(200);

/// The byte stream under the XML stream.
enum Io {
    /// TCP without TLS.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(t) => t,
            Io::Tls(t) => &t.sock,
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(t) => t.read(buf),
            Io::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(t) => t.write(buf),
            Io::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(t) => t.flush(),
            Io::Tls(t) => t.flush(),
        }
    }
}

/// An authenticated, bound XMPP stream.
pub struct Conn {
    /// The socket (TLS or not).
    io: Option<Io>,
    /// Input framer.
    framer: Framer,
    /// The full JID the server bound.
    jid: String,
    /// Reply timeout.
    timeout: Duration,
    /// Counter for request ids.
    next_id: u64,
    /// Stanzas received while waiting for a reply.
    queue: VecDeque<Element>,
    /// Whether TLS is in use.
    tls: bool,
    /// XEP-0198 state, from `<enable/>` (or a resumption) on; `None` without stream
    /// management.
    sm: Option<StreamMgmt>,
    /// Whether a queued stanza was dropped (said once).
    dropped: bool,
}

/// What is left of a lost stream ([`Conn::into_lost`]).
#[derive(Debug)]
pub struct Lost {
    /// Stanzas received (so counted as handled for XEP-0198) but not yet taken, oldest
    /// first: the caller handles them, since the server will not send them again.
    pub queued: VecDeque<Element>,
    /// The XEP-0198 session to resume, when the server allowed resumption.
    pub session: Option<Detached>,
}

/// A resumable XEP-0198 session whose connection was lost.
#[derive(Clone, Debug)]
pub struct Detached {
    /// Its counts and resumption id.
    sm: StreamMgmt,
    /// The full JID it had bound.
    jid: String,
    /// When the connection was lost.
    since: Instant,
}

impl Detached {
    /// The full JID of the session.
    pub fn jid(&self) -> &str {
        &self.jid
    }
}

/// How a stream for `sub` came up ([`Conn::connect_managed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The previous session was resumed (XEP-0198 §5): same full JID, its subscriptions
    /// kept; the server sends again what it had not seen acknowledged.
    Resumed,
    /// A new session with a freshly bound resource.
    New {
        /// Why the previous session could not be resumed, if there was one.
        resume_failed: Option<String>,
        /// Stream management on this stream.
        sm: SmStatus,
    },
}

/// Stream management on a new stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmStatus {
    /// Not asked for (`--no-resume`, or a command other than `sub`).
    Off,
    /// The server does not offer XEP-0198.
    NotOffered,
    /// Enabled; `resumable` when the server allows resumption.
    Enabled {
        /// Whether the session can be resumed after a cut.
        resumable: bool,
    },
    /// The server answered `<enable/>` with `<failed/>` (its condition).
    Failed(String),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("jid", &self.jid)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Whether `e` is a stanza (RFC 6120 §8), as XEP-0198 counts them.
fn is_stanza(e: &Element) -> bool {
    e.ns == NS_CLIENT && matches!(e.name.as_str(), "message" | "presence" | "iq")
}

/// Whether a stanza is an IQ request (get/set) that needs an answer.
fn is_iq_request(e: &Element) -> bool {
    e.is("iq", NS_CLIENT) && matches!(e.attr("type"), Some("get" | "set"))
}

impl Conn {
    /// Connects, negotiates TLS and SASL as `settings` say, and binds a resource.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the server cannot be reached or closes the stream,
    /// [`ClientError::Auth`] on SASL failure, [`ClientError::Protocol`] for TLS failures
    /// and protocol violations, [`ClientError::Timeout`].
    pub fn connect(settings: &mut Settings) -> Result<Conn, ClientError> {
        let (mut conn, features) = Conn::open(settings)?;
        conn.bind(&features, &settings.resource)?;
        Ok(conn)
    }

    /// [`Conn::connect`] for `sub`: resumes `previous` (XEP-0198 §5) when the server offers
    /// stream management, else binds a resource and, with `enable`, enables stream
    /// management with resumption (§3). `previous` is taken once the server has answered
    /// the resumption (resumed or failed); after a connection failure it is left for the
    /// next attempt.
    ///
    /// # Errors
    ///
    /// As [`Conn::connect`]; [`ClientError::Protocol`] when the server breaks XEP-0198 (a
    /// malformed or too high `h`).
    pub fn connect_managed(
        settings: &mut Settings,
        enable: bool,
        previous: &mut Option<Detached>,
    ) -> Result<(Conn, Start), ClientError> {
        let (mut conn, features) = Conn::open(settings)?;
        let mut resume_failed = None;
        if previous.is_some() {
            match conn.resume(&features, previous)? {
                None => return Ok((conn, Start::Resumed)),
                Some(why) => resume_failed = Some(why),
            }
        }
        conn.bind(&features, &settings.resource)?;
        let sm = if !enable {
            SmStatus::Off
        } else if !sm::offered(&features) {
            SmStatus::NotOffered
        } else {
            conn.enable_sm()?
        };
        Ok((conn, Start::New { resume_failed, sm }))
    }

    /// Connects, negotiates TLS and authenticates; the stream features after SASL.
    fn open(settings: &mut Settings) -> Result<(Conn, Element), ClientError> {
        let tcp = tcp_connect(&settings.host, settings.port, settings.timeout)?;
        let loopback = tcp
            .peer_addr()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false);
        tcp.set_read_timeout(Some(READ_SLICE))
            .and_then(|()| tcp.set_write_timeout(Some(settings.timeout)))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| ClientError::Unavailable(format!("socket: {e}")))?;
        let mut conn = Conn {
            io: Some(Io::Plain(tcp)),
            framer: Framer::new(XmlLimits {
                max_stanza_bytes: MAX_STANZA_BYTES,
                ..XmlLimits::default()
            }),
            jid: String::new(),
            timeout: settings.timeout,
            next_id: 0,
            queue: VecDeque::new(),
            tls: false,
            sm: None,
            dropped: false,
        };
        if settings.tls == TlsMode::Direct {
            conn.start_tls(settings)?;
        }
        let mut features = conn.open_stream(&settings.domain)?;
        if !conn.tls {
            let offered = features.child("starttls", NS_TLS);
            let required = offered.is_some_and(|s| s.child("required", NS_TLS).is_some());
            match (settings.tls, offered.is_some()) {
                (TlsMode::Off, _) if required => {
                    return Err(ClientError::Protocol(
                        "the server requires TLS but --tls off was given".to_owned(),
                    ));
                }
                (TlsMode::Off, _) => {}
                (_, true) => {
                    conn.send(&one_element("starttls", NS_TLS, &[], None))?;
                    let reply = conn.next_nonza()?;
                    if !reply.is("proceed", NS_TLS) {
                        return Err(ClientError::Protocol("the server refused STARTTLS".into()));
                    }
                    conn.start_tls(settings)?;
                    features = conn.open_stream(&settings.domain)?;
                }
                (TlsMode::StartTls, false) => {
                    return Err(ClientError::Protocol(
                        "the server does not offer STARTTLS (--tls starttls)".to_owned(),
                    ));
                }
                (_, false) if !loopback => {
                    return Err(ClientError::Protocol(format!(
                        "{}:{} offers no TLS; refusing plaintext to a non-loopback server \
                         (use --tls direct, or --tls off to allow plaintext)",
                        settings.host, settings.port
                    )));
                }
                (_, false) => {}
            }
        }
        conn.authenticate(&features, &settings.auth)?;
        let features = conn.open_stream(&settings.domain)?;
        Ok((conn, features))
    }

    /// Tries to resume `previous` (XEP-0198 §5); `Ok(None)` when resumed, else why not
    /// (then `previous` is gone: that session cannot be resumed any more).
    fn resume(
        &mut self,
        features: &Element,
        previous: &mut Option<Detached>,
    ) -> Result<Option<String>, ClientError> {
        let Some(prev) = previous.as_ref() else {
            return Ok(Some("no session to resume".to_owned()));
        };
        if !sm::offered(features) {
            *previous = None;
            return Ok(Some(
                "the server no longer offers stream management (XEP-0198)".to_owned(),
            ));
        }
        let (Some(request), Some(window)) =
            (prev.sm.resume_request(), prev.sm.resumable().map(|r| r.max))
        else {
            *previous = None;
            return Ok(Some("the session was not resumable".to_owned()));
        };
        if let Some(max) = window.filter(|m| prev.since.elapsed() > *m) {
            *previous = None;
            return Ok(Some(format!(
                "the server keeps a lost session {} s at most",
                max.as_secs()
            )));
        }
        self.send(&request)?;
        let reply = self.next_nonza()?;
        let Some(prev) = previous.take() else {
            return Ok(Some("no session to resume".to_owned()));
        };
        let mut state = prev.sm;
        if reply.is("resumed", NS_SM) {
            if let Err(e) = state.on_resumed(&reply) {
                return Err(self.sm_violation(e));
            }
            self.sm = Some(state);
            self.jid = prev.jid;
            Ok(None)
        } else if reply.is("failed", NS_SM) {
            if let Err(e) = state.on_resume_failed(&reply) {
                return Err(self.sm_violation(e));
            }
            Ok(Some(format!(
                "the server refused to resume the session: {}",
                sm::failed_condition(&reply)
            )))
        } else {
            Err(ClientError::Protocol(format!(
                "unexpected <{}/> in answer to <resume/>",
                reply.name
            )))
        }
    }

    /// Enables stream management with resumption (XEP-0198 §3) and waits for the answer;
    /// stanzas arriving meanwhile are queued (and counted).
    fn enable_sm(&mut self) -> Result<SmStatus, ClientError> {
        // §4: the count of stanzas sent starts with <enable/>; that of stanzas handled
        // starts again at <enabled/> (`on_enabled`): the server does not count what it
        // sent before it.
        self.sm = Some(StreamMgmt::new());
        self.send(&sm::enable_request(true))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let Some(e) = self.read_element(deadline)? else {
                return Err(ClientError::Timeout(
                    "waiting for the answer to <enable/> (XEP-0198)".into(),
                ));
            };
            if e.is("enabled", NS_SM) {
                let outcome = match self.sm.as_mut() {
                    Some(state) => state.on_enabled(&e).map(|()| state.resumable().is_some()),
                    None => Ok(false),
                };
                return match outcome {
                    Ok(resumable) => Ok(SmStatus::Enabled { resumable }),
                    Err(err) => Err(self.sm_violation(err)),
                };
            }
            if e.is("failed", NS_SM) {
                self.sm = None;
                return Ok(SmStatus::Failed(sm::failed_condition(&e)));
            }
            self.dispatch(e)?;
        }
    }

    /// Closes the stream after a XEP-0198 violation by the server (§6), as a protocol
    /// error.
    fn sm_violation(&mut self, e: SmError) -> ClientError {
        let _ = self.send(&e.stream_error());
        if let Some(io) = self.io.take() {
            let _ = io.tcp().shutdown(std::net::Shutdown::Both);
        }
        self.sm = None;
        ClientError::Protocol(e.to_string())
    }

    /// The XEP-0198 state of this stream, if stream management is on.
    pub fn stream_management(&self) -> Option<&StreamMgmt> {
        self.sm.as_ref()
    }

    /// Ends a lost connection: its stanzas not yet taken, and its XEP-0198 session if the
    /// server allowed resumption.
    pub fn into_lost(mut self) -> Lost {
        if let Some(io) = self.io.take() {
            let _ = io.tcp().shutdown(std::net::Shutdown::Both);
        }
        let session = self
            .sm
            .take()
            .filter(|s| s.is_enabled() && s.resumable().is_some())
            .map(|sm| Detached {
                sm,
                jid: std::mem::take(&mut self.jid),
                since: Instant::now(),
            });
        Lost {
            queued: std::mem::take(&mut self.queue),
            session,
        }
    }

    /// Says on stderr (once per connection) that a queued stanza was dropped: more than
    /// [`MAX_QUEUED`] arrived while a reply was awaited. A lost item is never silent.
    fn warn_dropped(&mut self) {
        if !self.dropped {
            self.dropped = true;
            eprintln!(
                "kinglet: warning: more than {MAX_QUEUED} stanzas arrived while waiting for a \
                 reply; the oldest were dropped (items may have been missed)"
            );
        }
    }

    /// Puts stanzas back in front of the queue (oldest first), e.g. those a lost stream
    /// left, so that they are taken before anything newer.
    pub fn requeue_front(&mut self, stanzas: VecDeque<Element>) {
        for e in stanzas.into_iter().rev() {
            if self.queue.len() >= MAX_QUEUED {
                self.queue.pop_back();
                self.warn_dropped();
            }
            self.queue.push_front(e);
        }
    }

    /// The bound full JID.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// How many stanzas are queued (received while a reply was awaited).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Wraps the TCP stream in TLS and completes the handshake.
    fn start_tls(&mut self, settings: &mut Settings) -> Result<(), ClientError> {
        let config = match &settings.tls_config {
            Some(c) => c.clone(),
            None => {
                let c = super::tls::client_config(settings.ca_file.as_deref(), settings.insecure)?;
                settings.tls_config = Some(c.clone());
                c
            }
        };
        let name = ServerName::try_from(settings.domain.clone())
            .map_err(|e| ClientError::Usage(format!("domain '{}': {e}", settings.domain)))?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| ClientError::Protocol(format!("TLS: {e}")))?;
        let Some(Io::Plain(tcp)) = self.io.take() else {
            return Err(ClientError::Protocol("TLS started twice".to_owned()));
        };
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let deadline = Instant::now() + self.timeout;
        while stream.conn.is_handshaking() {
            match stream.conn.complete_io(&mut stream.sock) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
                Err(e) if is_timeout(&e) => {
                    return Err(ClientError::Timeout("TLS handshake".to_owned()));
                }
                Err(e) => {
                    return Err(ClientError::Protocol(format!(
                        "TLS handshake with {}: {e}",
                        settings.domain
                    )));
                }
            }
        }
        self.io = Some(Io::Tls(Box::new(stream)));
        self.tls = true;
        self.framer.reset();
        Ok(())
    }

    /// Sends a stream header and returns the `<stream:features/>` that follow.
    fn open_stream(&mut self, domain: &str) -> Result<Element, ClientError> {
        let mut header = String::with_capacity(160);
        let mut w = crate::xml::stream_header(&mut header);
        w.attr("to", domain).leave_open();
        self.framer.reset();
        self.send(&header)?;
        let deadline = Instant::now() + self.timeout;
        match self.read_frame(deadline)? {
            Some(Frame::Header(_)) => {}
            Some(_) => return Err(ClientError::Protocol("expected a stream header".into())),
            None => return Err(ClientError::Timeout("waiting for the stream header".into())),
        }
        let features = self.next_nonza()?;
        if !features.is("features", NS_STREAM) {
            return Err(ClientError::Protocol(format!(
                "expected <stream:features/>, got <{}/>",
                features.name
            )));
        }
        Ok(features)
    }

    /// Resource binding (RFC 6120 §7) and, if the server still requires it, the legacy
    /// session establishment (RFC 3921 §3).
    fn bind(&mut self, features: &Element, resource: &str) -> Result<(), ClientError> {
        if features.child("bind", NS_BIND).is_none() {
            return Err(ClientError::Protocol(
                "the server offers no resource binding".into(),
            ));
        }
        let body = crate::xml::build(|w| {
            w.start("bind")
                .ns(NS_BIND)
                .text_elem("resource", resource)
                .end();
        });
        let reply = self.iq("set", None, &body, "bind a resource")?;
        self.jid = reply
            .child("bind", NS_BIND)
            .and_then(|b| b.child("jid", NS_BIND))
            .map(Element::text)
            .filter(|j| !j.is_empty())
            .ok_or_else(|| ClientError::Protocol("bind result without a JID".to_owned()))?;
        if let Some(s) = features.child("session", NS_SESSION) {
            if s.child("optional", NS_SESSION).is_none() {
                self.iq(
                    "set",
                    None,
                    &one_element("session", NS_SESSION, &[], None),
                    "establish a session",
                )?;
            }
        }
        Ok(())
    }

    /// Sends raw XML.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the connection is gone.
    pub fn send(&mut self, xml: &str) -> Result<(), ClientError> {
        let io = self
            .io
            .as_mut()
            .ok_or_else(|| ClientError::Unavailable("connection closed".to_owned()))?;
        io.write_all(xml.as_bytes())
            .and_then(|()| io.flush())
            .map_err(|e| {
                if is_timeout(&e) {
                    ClientError::Timeout("sending to the server".to_owned())
                } else {
                    ClientError::Unavailable(format!("connection lost: {e}"))
                }
            })
    }

    /// Reads until one frame is complete or `deadline` passes (`Ok(None)`).
    fn read_frame(&mut self, deadline: Instant) -> Result<Option<Frame>, ClientError> {
        let mut buf = [0u8; 8192];
        loop {
            match self.framer.next_frame() {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(format!("server sent bad XML: {e}"))),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let io = self
                .io
                .as_mut()
                .ok_or_else(|| ClientError::Unavailable("connection closed".to_owned()))?;
            match io.read(&mut buf) {
                Ok(0) => {
                    self.io = None;
                    return Err(ClientError::Unavailable(
                        "the server closed the connection".to_owned(),
                    ));
                }
                Ok(n) => self
                    .framer
                    .push(&buf[..n])
                    .map_err(|e| ClientError::Protocol(format!("server sent bad XML: {e}")))?,
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.io = None;
                    return Err(ClientError::Unavailable(format!("connection lost: {e}")));
                }
            }
        }
    }

    /// The next top-level element before `deadline`; stream errors and the stream close
    /// become errors. With stream management on, `<r/>` is answered and `<a/>` checked
    /// here (neither is returned), and every stanza returned is counted as handled.
    fn read_element(&mut self, deadline: Instant) -> Result<Option<Element>, ClientError> {
        loop {
            let Some(e) = self.read_element_raw(deadline)? else {
                return Ok(None);
            };
            let Some(state) = self.sm.as_mut() else {
                return Ok(Some(e));
            };
            if e.is("r", NS_SM) {
                let a = state.ack();
                self.send(&a)?;
                continue;
            }
            if e.is("a", NS_SM) {
                if let Err(err) = state.on_ack(&e) {
                    return Err(self.sm_violation(err));
                }
                continue;
            }
            if is_stanza(&e) {
                state.count_received();
            }
            return Ok(Some(e));
        }
    }

    /// [`Conn::read_element`] without stream management.
    fn read_element_raw(&mut self, deadline: Instant) -> Result<Option<Element>, ClientError> {
        match self.read_frame(deadline)? {
            None => Ok(None),
            Some(Frame::Stanza(e)) if e.is("error", NS_STREAM) => {
                let condition = e
                    .elements()
                    .find(|c| c.name != "text")
                    .map_or("undefined-condition", |c| c.name.as_str());
                let text = e
                    .elements()
                    .find(|c| c.name == "text")
                    .map(|t| format!(": {}", t.text()))
                    .unwrap_or_default();
                let msg = format!("stream error from the server: {condition}{text}");
                self.io = None;
                if matches!(
                    condition,
                    "system-shutdown" | "connection-timeout" | "reset"
                ) {
                    Err(ClientError::Unavailable(msg))
                } else {
                    Err(ClientError::Protocol(msg))
                }
            }
            Some(Frame::Stanza(e)) => Ok(Some(e)),
            Some(Frame::Close) => {
                self.io = None;
                Err(ClientError::Unavailable(
                    "the server closed the stream".to_owned(),
                ))
            }
            Some(Frame::Header(_)) => Err(ClientError::Protocol("unexpected stream header".into())),
        }
    }

    /// The next element during negotiation (timeout is an error).
    fn next_nonza(&mut self) -> Result<Element, ClientError> {
        let deadline = Instant::now() + self.timeout;
        self.read_element(deadline)?
            .ok_or_else(|| ClientError::Timeout("waiting for the server during login".into()))
    }

    /// Answers an IQ request from the server: a result to a ping, `service-unavailable`
    /// to anything else (RFC 6120 §8.2.3).
    fn answer_iq(&mut self, iq: &Element) -> Result<(), ClientError> {
        let mut s = String::with_capacity(160);
        let mut w = Writer::new(&mut s);
        let ping = iq.attr("type") == Some("get") && iq.child("ping", NS_PING).is_some();
        w.start("iq")
            .attr("type", if ping { "result" } else { "error" })
            .attr_opt("to", iq.attr("from"))
            .attr("id", iq.attr("id").unwrap_or_default());
        if !ping {
            w.start("error").attr("type", "cancel");
            w.start("service-unavailable").ns(NS_STANZAS).end().end();
        }
        w.end();
        self.send_stanza(&s)
    }

    /// Sends a stanza, counted for stream management.
    fn send_stanza(&mut self, xml: &str) -> Result<(), ClientError> {
        self.send(xml)?;
        if let Some(state) = self.sm.as_mut() {
            state.count_sent();
        }
        Ok(())
    }

    /// Sends an IQ of `kind` (`get`/`set`) with `body` to `to` (the account when `None`) and
    /// waits for its reply; other stanzas are queued for [`Conn::next_stanza`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Xmpp`] for an error reply (with `what` as its context), connection
    /// errors, [`ClientError::Timeout`].
    pub fn iq(
        &mut self,
        kind: &str,
        to: Option<&str>,
        body: &str,
        what: &str,
    ) -> Result<Element, ClientError> {
        self.next_id += 1;
        let id = format!("k{}", self.next_id);
        let mut s = String::with_capacity(64 + body.len());
        let mut w = Writer::new(&mut s);
        // `body` was written by the client's own request builders (`client::pubsub`).
        w.start("iq")
            .attr("type", kind)
            .attr("id", &id)
            .attr_opt("to", to)
            .text("")
            .raw(Raw(body))
            .end();
        self.send_stanza(&s)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let Some(e) = self.read_element(deadline)? else {
                return Err(ClientError::Timeout(format!("no reply to: {what}")));
            };
            if e.is("iq", NS_CLIENT)
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result" | "error"))
            {
                if e.attr("type") == Some("error") {
                    return Err(ClientError::Xmpp(stanza_error(&e, what)));
                }
                return Ok(e);
            }
            self.dispatch(e)?;
        }
    }

    /// Handles an element that is not the awaited reply: answers IQ requests, queues the
    /// rest.
    fn dispatch(&mut self, e: Element) -> Result<(), ClientError> {
        if is_iq_request(&e) {
            return self.answer_iq(&e);
        }
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
            self.warn_dropped();
        }
        self.queue.push_back(e);
        Ok(())
    }

    /// The next incoming stanza (queued ones first), or `Ok(None)` once `deadline` passes.
    ///
    /// # Errors
    ///
    /// Connection and protocol errors.
    pub fn next_stanza(&mut self, deadline: Instant) -> Result<Option<Element>, ClientError> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            let Some(e) = self.read_element(deadline)? else {
                return Ok(None);
            };
            if is_iq_request(&e) {
                self.answer_iq(&e)?;
                continue;
            }
            return Ok(Some(e));
        }
    }

    /// Closes the stream politely: sends `</stream:stream>` and waits briefly for the
    /// server's close. Errors are ignored (the process is about to exit).
    pub fn close(mut self) {
        // XEP-0198 §4: say what was handled before closing, so nothing is sent again.
        if let Some(a) = self.sm.as_ref().map(StreamMgmt::ack) {
            let _ = self.send(&a);
        }
        if self.send(STREAM_CLOSE).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1).min(self.timeout);
        while let Ok(Some(_)) = self.read_element(deadline) {}
        if let Some(io) = self.io.take() {
            let _ = io.tcp().shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Parses the `<error/>` of an error reply.
pub fn stanza_error(iq: &Element, what: &str) -> StanzaError {
    let err = iq.child("error", NS_CLIENT);
    let condition = err
        .and_then(|e| {
            e.elements()
                .find(|c| c.ns == NS_STANZAS && c.name != "text")
        })
        .map_or_else(|| "undefined-condition".to_owned(), |c| c.name.clone());
    let app_condition = err
        .and_then(|e| e.elements().find(|c| c.ns != NS_STANZAS))
        .map(|c| {
            if c.ns == NS_PUBSUB_ERRORS {
                match c.attr("feature") {
                    Some(f) => format!("{} feature={f}", c.name),
                    None => c.name.clone(),
                }
            } else {
                c.name.clone()
            }
        });
    let text = err
        .and_then(|e| e.child("text", NS_STANZAS))
        .map(Element::text)
        .filter(|t| !t.is_empty());
    StanzaError {
        condition,
        app_condition,
        text,
        context: what.to_owned(),
    }
}

/// Whether an I/O error is a read/write timeout.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Resolves `host` and connects to the first address that accepts within `timeout`.
fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Unavailable(format!("{host}: {e}")))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(ClientError::Unavailable(
        last.unwrap_or_else(|| format!("{host}: no address")),
    ))
}

/// `<name xmlns='ns' attrs…>text</name>` (or empty without text): the one-element
/// negotiation requests (STARTTLS, SASL, session).
fn one_element(name: &str, ns: &str, attrs: &[(&str, &str)], text: Option<&str>) -> String {
    let mut s = String::with_capacity(96 + text.map_or(0, str::len));
    let mut w = Writer::new(&mut s);
    w.start(name).ns(ns);
    for (k, v) in attrs {
        w.attr(k, v);
    }
    if let Some(t) = text {
        w.text(t);
    }
    w.end();
    s
}

mod auth;
#[cfg(test)]
mod tests;
