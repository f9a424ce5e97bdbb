//! One client-to-server XML stream, as a sans-IO state machine (RFC 6120 §4-§7).
//!
//! The connection task feeds it bytes ([`Session::receive`]) and the current time, asks for
//! its next deadline, and reads what it wrote into the output buffer. The session owns the
//! XML framer and the negotiation state (stream header, STARTTLS, SASL, resource binding);
//! once bound, every stanza is stamped with the session's full JID and handed to the
//! [`Router`]. It never touches a socket or a clock.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::jid::Jid;
use crate::outbox::{Kick, Outbox};
use crate::proto::{
    self, Condition, NS_BIND, NS_PING, NS_SASL, NS_SESSION, NS_SM, NS_STREAM_LIMITS, NS_TLS,
    StanzaError, StreamCondition,
};
use crate::router::{ConnId, Router};
use crate::sasl::{self, SaslFailure, ScramHash, ScramServer};
use crate::xml::{
    Element, Frame, Framer, NS_CLIENT, NS_STREAM, STREAM_CLOSE, StreamHeader, Writer, XmlError,
    XmlLimits,
};

mod auth;
mod sm;

/// What the connection task must do after a call into the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep going.
    Continue,
    /// Flush the output (which ends with `<proceed/>`), then start TLS and call
    /// [`Session::tls_established`].
    StartTls,
    /// Flush the output, then close the connection.
    Close,
    /// A SASL PLAIN password must be checked (one PBKDF2 run, blocking): take it with
    /// [`Session::take_password_check`], run it off the event loop, and hand the outcome to
    /// [`Session::on_password_verdict`]. Until then the session handles no input (the shell
    /// stops reading); its deadline still applies.
    VerifyPassword,
}

/// The outcome of a [`sasl::PasswordCheck`] run by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordVerdict {
    /// The password is right.
    Valid,
    /// The password is wrong or the account does not exist.
    Invalid,
    /// The check could not run (the verification queue is full): SASL
    /// `temporary-auth-failure`, the client may retry.
    Unavailable,
}

/// An authentication outcome for the shell's per-address bookkeeping, taken with
/// [`Session::take_auth_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthEvent {
    /// Wrong credentials or unknown account (SASL `not-authorized`, PLAIN or SCRAM).
    Failed,
    /// SASL success; `anonymous` for SASL ANONYMOUS.
    Succeeded {
        /// Whether the login was anonymous (it proves nothing about the address).
        anonymous: bool,
    },
}

/// Facts about the transport that negotiation depends on.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    /// The stream is already inside TLS (direct TLS, XEP-0368).
    pub tls_active: bool,
    /// The server has a certificate, so STARTTLS can be offered.
    pub tls_available: bool,
    /// The peer connected from a loopback address.
    pub loopback: bool,
}

/// The negotiation stage, named after what the session waits for.
enum Stage {
    /// Before TLS/SASL: expecting `<starttls/>` or `<auth/>`.
    ExpectAuth,
    /// SCRAM: `<auth/>` had no initial response; waiting for the client-first message.
    ExpectScramFirst(ScramHash),
    /// SCRAM: server-first sent; waiting for client-final.
    ExpectScramFinal(Box<ScramServer>),
    /// PLAIN: the password check runs in the shell; no input is handled until its verdict.
    VerifyingPlain { user: String },
    /// Authenticated (stream restarted): expecting the bind IQ.
    ExpectBind { user: String, anonymous: bool },
    /// Resource bound: stanzas are routed.
    Bound { jid: Jid },
    /// A stream error or close was sent; everything else is ignored.
    Closed,
}

/// One XML stream's state.
pub struct Session {
    conn: ConnId,
    framer: Framer,
    stage: Stage,
    transport: Transport,
    /// Invariant: true between a received stream header and the next stream restart.
    header_received: bool,
    /// Whether our own stream header went out (a stream error must be preceded by it).
    header_sent: bool,
    auth_failures: u32,
    started: Instant,
    last_rx: Instant,
    ping_outstanding: bool,
    /// The latest time the shell passed in (receive, deadline, flush).
    clock: Instant,
    /// XEP-0198: when the server asked for an acknowledgement because its send window
    /// filled, until the client acknowledges (see [`Session::deadline`]).
    ack_asked: Option<Instant>,
    outbox: Rc<Outbox>,
    /// Invariant: `Some` exactly while this session holds a resource in the router, whatever
    /// the stage; [`Session::on_disconnect`] takes it, so every exit path unbinds once.
    bound: Option<Jid>,
    /// The element size limit after authentication (the framer holds the current one).
    max_stanza_bytes: usize,
    /// The PLAIN check for the shell, between [`Action::VerifyPassword`] and
    /// [`Session::take_password_check`].
    password_check: Option<sasl::PasswordCheck>,
    /// The last authentication outcome, until [`Session::take_auth_event`].
    auth_event: Option<AuthEvent>,
}

impl Session {
    /// A new session for connection `conn`.
    pub fn new(
        conn: ConnId,
        transport: Transport,
        limits: XmlLimits,
        outbox: Rc<Outbox>,
        now: Instant,
    ) -> Session {
        let max_stanza_bytes = limits.max_stanza_bytes;
        Session {
            conn,
            framer: Framer::new(limits),
            stage: Stage::ExpectAuth,
            transport,
            header_received: false,
            header_sent: false,
            auth_failures: 0,
            started: now,
            last_rx: now,
            ping_outstanding: false,
            clock: now,
            ack_asked: None,
            outbox,
            bound: None,
            max_stanza_bytes,
            password_check: None,
            auth_event: None,
        }
    }

    /// Limits top-level elements to `max` bytes (at most the `limits` given to
    /// [`Session::new`]) until SASL success; advertised in the pre-authentication features.
    pub fn with_preauth_stanza_bytes(mut self, max: usize) -> Session {
        if !self.is_authenticated() {
            self.framer
                .set_max_stanza_bytes(max.min(self.max_stanza_bytes));
        }
        self
    }

    /// Whether SASL succeeded on this stream (resource bound or not).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.stage, Stage::ExpectBind { .. } | Stage::Bound { .. })
    }

    /// The password check asked for by [`Action::VerifyPassword`] (once).
    pub fn take_password_check(&mut self) -> Option<sasl::PasswordCheck> {
        self.password_check.take()
    }

    /// The last authentication outcome, if one happened since the previous call.
    pub fn take_auth_event(&mut self) -> Option<AuthEvent> {
        self.auth_event.take()
    }

    /// The outcome of the password check of [`Action::VerifyPassword`]: SASL success or
    /// failure. Input buffered meanwhile is handled by the next [`Session::resume`].
    pub fn on_password_verdict(
        &mut self,
        verdict: PasswordVerdict,
        router: &mut Router,
        out: &mut Vec<u8>,
    ) -> Action {
        self.password_check = None;
        match self.stage {
            Stage::VerifyingPlain { .. } => {}
            // Closed meanwhile (deadline, kick): nothing to say.
            Stage::Closed => return Action::Close,
            _ => return Action::Continue,
        }
        let Stage::VerifyingPlain { user } = std::mem::replace(&mut self.stage, Stage::ExpectAuth)
        else {
            return Action::Continue;
        };
        match verdict {
            PasswordVerdict::Valid => {
                tracing::info!(conn = self.conn, user, "PLAIN login");
                self.authenticated(user, false, None, out)
            }
            PasswordVerdict::Invalid => {
                tracing::info!(conn = self.conn, "PLAIN authentication failed");
                self.sasl_failure(SaslFailure::NotAuthorized, None, router, out)
            }
            PasswordVerdict::Unavailable => self.sasl_failure(
                SaslFailure::TemporaryAuthFailure,
                Some("server busy: try again"),
                router,
                out,
            ),
        }
    }

    /// The shell closes the stream for a reason of its own (for example a memory budget):
    /// stream error `cond` with `text`, then close.
    pub fn refuse(
        &mut self,
        cond: StreamCondition,
        text: &str,
        router: &mut Router,
        out: &mut Vec<u8>,
    ) -> Action {
        if matches!(self.stage, Stage::Closed) {
            return Action::Close;
        }
        self.stream_error(cond, Some(text), out, router)
    }

    /// The bound full JID, once resource binding succeeded.
    pub fn jid(&self) -> Option<&Jid> {
        match &self.stage {
            Stage::Bound { jid } => Some(jid),
            _ => None,
        }
    }

    /// The outbox through which the router reaches this session.
    pub fn outbox(&self) -> &Rc<Outbox> {
        &self.outbox
    }

    /// Whether bytes received after the last complete element are still buffered; after
    /// `<starttls/>` that means the client pipelined plaintext, which must not survive the
    /// TLS upgrade (RFC 6120 §5.4.3.3).
    pub fn has_pending_input(&self) -> bool {
        self.framer.has_pending()
    }

    /// Bytes held by the framer (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }

    /// Bytes the framer holds for incomplete input, for memory budgets: its buffer's
    /// allocation while it holds any byte, else 0 (an empty buffer keeps at most 512 B, part
    /// of the fixed cost of a connection).
    pub fn held_bytes(&self) -> usize {
        if self.framer.buffered() == 0 {
            0
        } else {
            self.framer.buffer_capacity()
        }
    }

    /// TLS is up (after STARTTLS): the stream restarts.
    pub fn tls_established(&mut self) {
        self.transport.tls_active = true;
        self.restart_stream();
    }

    fn restart_stream(&mut self) {
        self.framer.reset();
        self.header_received = false;
    }

    /// Feed bytes from the peer. Output is appended to `out`.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        router: &mut Router,
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Action {
        if matches!(self.stage, Stage::Closed) {
            return Action::Close;
        }
        self.last_rx = now;
        self.clock = now;
        self.ping_outstanding = false;
        if let Err(e) = self.framer.push(bytes) {
            return self.xml_error(&e, router, out);
        }
        self.handle_frames(router, out)
    }

    /// Reading was paused (back-pressure, see [`Outbox::pause_reading`]) and resumed:
    /// handles the input buffered meanwhile.
    pub fn resume(&mut self, router: &mut Router, out: &mut Vec<u8>) -> Action {
        if matches!(self.stage, Stage::Closed) {
            return Action::Close;
        }
        self.handle_frames(router, out)
    }

    /// Handles the complete frames in the framer, until it needs more bytes or the router
    /// pauses reading (the rest stays buffered for [`Session::resume`]).
    fn handle_frames(&mut self, router: &mut Router, out: &mut Vec<u8>) -> Action {
        loop {
            if self.outbox.reading_paused() || matches!(self.stage, Stage::VerifyingPlain { .. }) {
                break;
            }
            let frame = match self.framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return self.xml_error(&e, router, out),
            };
            let action = match frame {
                Frame::Header(h) => self.on_header(&h, router, out),
                Frame::Stanza(el) => self.on_element(el, router, out),
                Frame::Close => {
                    tracing::debug!(conn = self.conn, "peer closed the stream");
                    self.close_stream(out, router)
                }
            };
            self.outbox.take_queue_into(out);
            self.request_ack_if_due(out);
            match action {
                Action::Continue => {}
                other => return other,
            }
        }
        Action::Continue
    }

    /// The instant at which [`Session::on_deadline`] must be called.
    pub fn deadline(&self, router: &Router) -> Instant {
        let l = router.limits();
        match self.stage {
            Stage::Bound { .. } => {
                let idle = if l.idle_ping_secs > 0 && !self.ping_outstanding {
                    self.last_rx + Duration::from_secs(l.idle_ping_secs)
                } else {
                    self.last_rx + Duration::from_secs(l.idle_timeout_secs)
                };
                // A client that reads but does not acknowledge holds its stream (and the
                // pub-sub backlog behind it) like one that does not read.
                match self.ack_asked {
                    Some(t) => idle.min(t + Duration::from_secs(l.write_timeout_secs)),
                    None => idle,
                }
            }
            _ => self.started + Duration::from_secs(l.negotiation_timeout_secs),
        }
    }

    /// A deadline passed: ping an idle client, or close a dead or slow one.
    pub fn on_deadline(&mut self, router: &mut Router, out: &mut Vec<u8>, now: Instant) -> Action {
        self.clock = now;
        if now < self.deadline(router) {
            return Action::Continue;
        }
        let l = router.limits();
        if self
            .ack_asked
            .is_some_and(|t| now >= t + Duration::from_secs(l.write_timeout_secs))
        {
            tracing::warn!(conn = self.conn, jid = ?self.jid().map(Jid::as_str), "slow consumer: no XEP-0198 acknowledgement within limits.write_timeout_secs while stanzas wait; closing");
            self.leave(router, true);
            self.write_stream_error(
                StreamCondition::PolicyViolation,
                Some("stanzas not acknowledged: acknowledging too slowly"),
                out,
                router,
            );
            return Action::Close;
        }
        match &self.stage {
            Stage::Bound { .. }
                if l.idle_ping_secs > 0 && !self.ping_outstanding && self.outbox.sm_enabled() =>
            {
                // XEP-0198: an ack request is the keepalive of a stream-managed session (it
                // also trims what the server keeps). Any traffic counts as life.
                self.ping_outstanding = true;
                self.outbox.sm_request_now();
                out.extend_from_slice(sm::ack_request().as_bytes());
                Action::Continue
            }
            Stage::Bound { jid } if l.idle_ping_secs > 0 && !self.ping_outstanding => {
                // XEP-0199 §4.2: server-to-client ping. Any traffic from the client counts as life.
                self.ping_outstanding = true;
                let mut s = String::with_capacity(128);
                let mut w = Writer::new(&mut s);
                w.start("iq")
                    .attr("type", "get")
                    .attr("id", "keepalive")
                    .attr("from", router.domain())
                    .attr("to", jid.as_str());
                w.start("ping").ns(NS_PING).end_all();
                out.extend_from_slice(s.as_bytes());
                Action::Continue
            }
            Stage::Bound { jid } => {
                tracing::info!(conn = self.conn, jid = %jid, "closing idle session");
                // The client may be alive behind a dead path: a resumable session waits
                // for it (detached), as if the connection had dropped.
                self.leave(router, true);
                self.write_stream_error(
                    StreamCondition::ConnectionTimeout,
                    Some("idle timeout"),
                    out,
                    router,
                );
                Action::Close
            }
            _ => {
                tracing::info!(conn = self.conn, "negotiation timed out");
                self.stream_error(
                    StreamCondition::ConnectionTimeout,
                    Some("authentication and resource binding took too long"),
                    out,
                    router,
                )
            }
        }
    }

    /// The router asked this connection to close (conflict, slow consumer, shutdown).
    pub fn on_kick(&mut self, kick: Kick, router: &mut Router, out: &mut Vec<u8>) -> Action {
        match kick {
            Kick::Overflow => {
                tracing::warn!(conn = self.conn, jid = ?self.jid().map(Jid::as_str), "outbox full: closing slow consumer");
                self.stream_error(
                    StreamCondition::PolicyViolation,
                    Some("too many stanzas queued: reading too slowly"),
                    out,
                    router,
                )
            }
            Kick::Stream(c) => self.stream_error(c, None, out, router),
        }
    }

    /// The transport went away: leave the router. A resumable session is detached (its
    /// resource stays bound for its resumption window, XEP-0198); any other is unbound
    /// (unavailable presence is broadcast).
    pub fn on_disconnect(&mut self, router: &mut Router) {
        self.leave(router, true);
    }

    /// Leave the router: detach the session if `detachable` and it is resumable, else
    /// unbind it. Once.
    fn leave(&mut self, router: &mut Router, detachable: bool) {
        self.stage = Stage::Closed;
        if let Some(jid) = self.bound.take() {
            if !(detachable && router.sm_detach(&jid, self.conn)) {
                router.unbind(&jid, self.conn);
            }
        }
    }

    fn xml_error(&mut self, e: &XmlError, router: &mut Router, out: &mut Vec<u8>) -> Action {
        tracing::info!(conn = self.conn, error = %e, "XML error from peer");
        self.stream_error(
            StreamCondition::from_xml_error(e),
            Some(&e.to_string()),
            out,
            router,
        )
    }

    /// Send a stream error, unbind, and close.
    fn stream_error(
        &mut self,
        cond: StreamCondition,
        text: Option<&str>,
        out: &mut Vec<u8>,
        router: &mut Router,
    ) -> Action {
        self.leave(router, false);
        self.write_stream_error(cond, text, out, router);
        Action::Close
    }

    fn write_stream_error(
        &mut self,
        cond: StreamCondition,
        text: Option<&str>,
        out: &mut Vec<u8>,
        router: &Router,
    ) {
        if !self.header_sent {
            self.write_header(out, None, "", router);
        }
        out.extend_from_slice(proto::stream_error_bytes(cond, text).as_bytes());
        self.stage = Stage::Closed;
    }

    fn close_stream(&mut self, out: &mut Vec<u8>, router: &mut Router) -> Action {
        // The client said goodbye: the session ends (XEP-0198 §5: no resumption).
        self.leave(router, false);
        if !self.header_sent {
            self.write_header(out, None, "", router);
        }
        out.extend_from_slice(STREAM_CLOSE.as_bytes());
        Action::Close
    }

    fn write_header(&mut self, out: &mut Vec<u8>, to: Option<&str>, domain: &str, router: &Router) {
        let mut s = String::with_capacity(256);
        let mut w = crate::xml::stream_header(&mut s);
        w.attr("xml:lang", "en")
            .attr("id", &router.random_nonce())
            .attr_opt("from", Some(domain).filter(|d| !d.is_empty()))
            .attr_opt("to", to);
        w.leave_open();
        out.extend_from_slice(s.as_bytes());
        self.header_sent = true;
    }

    fn on_header(&mut self, h: &StreamHeader, router: &mut Router, out: &mut Vec<u8>) -> Action {
        if self.header_received {
            return self.stream_error(
                StreamCondition::NotWellFormed,
                Some("second stream header"),
                out,
                router,
            );
        }
        self.header_received = true;
        let domain = router.domain().to_owned();
        // Echo the client's bare JID back as `to` only when it is well-formed (RFC 6120 §4.7.2).
        let to_echo = h
            .from
            .as_deref()
            .and_then(|f| Jid::parse(f).ok())
            .map(|j| j.as_str().to_owned());
        self.write_header(out, to_echo.as_deref(), &domain, router);
        match h.to.as_deref() {
            Some(to)
                if !to.eq_ignore_ascii_case(&domain)
                    && !to.trim_end_matches('.').eq_ignore_ascii_case(&domain) =>
            {
                tracing::info!(conn = self.conn, to, "stream to unknown host");
                return self.stream_error(
                    StreamCondition::HostUnknown,
                    Some("this server does not serve that domain"),
                    out,
                    router,
                );
            }
            _ => {}
        }
        match h.version.as_deref() {
            Some(v) if v.split('.').next() == Some("1") => {}
            _ => {
                return self.stream_error(
                    StreamCondition::UnsupportedVersion,
                    Some("XMPP 1.0 streams only"),
                    out,
                    router,
                );
            }
        }
        self.write_features(router, out);
        Action::Continue
    }

    fn starttls_required(&self) -> bool {
        self.transport.tls_available && !self.transport.tls_active && !self.transport.loopback
    }

    fn write_features(&self, router: &Router, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(512);
        let mut w = Writer::new(&mut s);
        w.start("stream:features");
        match self.stage {
            Stage::ExpectBind { .. } => {
                w.start("bind").ns(NS_BIND).end();
                w.start("session").ns(NS_SESSION);
                w.start("optional").end().end();
                w.start("sm").ns(NS_SM).end();
            }
            _ => {
                if self.transport.tls_available && !self.transport.tls_active {
                    w.start("starttls").ns(NS_TLS);
                    if self.starttls_required() {
                        w.start("required").end();
                    }
                    w.text("").end();
                }
                if !self.starttls_required() {
                    w.start("mechanisms").ns(NS_SASL);
                    for m in self.mechanisms(router) {
                        w.text_elem("mechanism", m);
                    }
                    w.text("").end();
                }
            }
        }
        let l = router.limits();
        w.start("limits").ns(NS_STREAM_LIMITS);
        w.start("max-bytes")
            .text_fmt(self.framer.max_stanza_bytes())
            .end();
        if l.idle_timeout_secs > 0 {
            w.start("idle-seconds").text_fmt(l.idle_timeout_secs).end();
        }
        w.end_all();
        out.extend_from_slice(s.as_bytes());
    }

    fn on_element(&mut self, el: Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        if !self.header_received {
            return self.stream_error(
                StreamCondition::NotWellFormed,
                Some("element before stream header"),
                out,
                router,
            );
        }
        if el.ns == NS_SM {
            return self.on_sm(&el, router, out);
        }
        match std::mem::replace(&mut self.stage, Stage::Closed) {
            Stage::Bound { jid } => {
                self.stage = Stage::Bound { jid };
                self.on_stanza(el, router, out)
            }
            Stage::ExpectBind { user, anonymous } => {
                self.stage = Stage::ExpectBind { user, anonymous };
                self.on_bind(el, router, out)
            }
            Stage::Closed => Action::Close,
            stage => {
                self.stage = stage;
                self.on_negotiation(el, router, out)
            }
        }
    }

    fn on_negotiation(&mut self, el: Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        if el.is("starttls", NS_TLS) {
            if !self.transport.tls_available
                || self.transport.tls_active
                || !matches!(self.stage, Stage::ExpectAuth)
            {
                // RFC 6120 §5.4.2.2: failure, then close.
                let mut s = String::with_capacity(80);
                Writer::new(&mut s)
                    .start("failure")
                    .ns(NS_TLS)
                    .end()
                    .close("stream:stream");
                out.extend_from_slice(s.as_bytes());
                self.stage = Stage::Closed;
                return Action::Close;
            }
            out.extend_from_slice(auth::sasl_element("proceed", NS_TLS, None).as_bytes());
            return Action::StartTls;
        }
        if el.ns == NS_SASL {
            return self.on_sasl(el, router, out);
        }
        if el.ns == NS_CLIENT && matches!(el.name.as_str(), "iq" | "message" | "presence") {
            // RFC 6120 §6.4.1/§7.1: no stanza before authentication.
            return self.stream_error(
                StreamCondition::NotAuthorized,
                Some("authenticate first"),
                out,
                router,
            );
        }
        self.unsupported(&el, out, router)
    }

    fn unsupported(&mut self, el: &Element, out: &mut Vec<u8>, router: &mut Router) -> Action {
        tracing::info!(conn = self.conn, name = %el.name, ns = %el.ns, "unsupported top-level element");
        if el.ns == NS_CLIENT || el.ns == NS_STREAM {
            self.stream_error(StreamCondition::UnsupportedStanzaType, None, out, router)
        } else {
            self.stream_error(StreamCondition::InvalidNamespace, None, out, router)
        }
    }

    fn on_bind(&mut self, el: Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        let Stage::ExpectBind { user, anonymous } = &self.stage else {
            return Action::Close;
        };
        if !el.is("iq", NS_CLIENT) {
            if el.ns == NS_CLIENT && matches!(el.name.as_str(), "message" | "presence") {
                return self.stream_error(
                    StreamCondition::NotAuthorized,
                    Some("bind a resource first"),
                    out,
                    router,
                );
            }
            return self.unsupported(&el, out, router);
        }
        let bind = el.child("bind", NS_BIND);
        if el.attr("type") != Some("set") || bind.is_none() {
            // RFC 6120 §7.1: no other stanza before binding.
            return self.stream_error(
                StreamCondition::NotAuthorized,
                Some("bind a resource first"),
                out,
                router,
            );
        }
        let requested = bind
            .and_then(|b| b.child("resource", NS_BIND))
            .map(|r| r.text());
        let (user, anonymous) = (user.clone(), *anonymous);
        match router.bind(
            &user,
            anonymous,
            requested.as_deref(),
            self.conn,
            self.outbox.clone(),
        ) {
            Ok(jid) => {
                tracing::info!(conn = self.conn, jid = %jid, "resource bound");
                let payload = Element::new("bind", NS_BIND)
                    .with_child(Element::new("jid", NS_BIND).with_text(jid.as_str()));
                let mut reply = Element::new("iq", NS_CLIENT).with_attr("type", "result");
                if let Some(id) = el.attr("id") {
                    reply.set_attr("id", id);
                }
                reply.push_child(payload);
                out.extend_from_slice(reply.to_string_in_stream().as_bytes());
                self.bound = Some(jid.clone());
                self.stage = Stage::Bound { jid };
            }
            Err(err) => {
                let mut el = el;
                el.remove_attr("from");
                el.remove_attr("to");
                if let Some(r) = proto::error_reply(&el, &err) {
                    out.extend_from_slice(r.to_string_in_stream().as_bytes());
                }
            }
        }
        Action::Continue
    }

    fn on_stanza(&mut self, mut el: Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        let Stage::Bound { jid } = &self.stage else {
            return Action::Close;
        };
        if el.ns != NS_CLIENT || !matches!(el.name.as_str(), "iq" | "message" | "presence") {
            return self.unsupported(&el, out, router);
        }
        // XEP-0198 §4: every stanza received counts as handled once it is taken in.
        self.outbox.sm_handled_one();
        // RFC 6120 §8.1.2.1: the server stamps `from`; a spoofed one is a stream error.
        if let Some(from) = el.attr("from") {
            let ok = Jid::parse(from).is_ok_and(|f| &f == jid || f == jid.bare());
            if !ok {
                tracing::info!(conn = self.conn, from, "spoofed from");
                return self.stream_error(StreamCondition::InvalidFrom, None, out, router);
            }
        }
        el.set_attr("from", jid.as_str());
        // Legacy session establishment (RFC 3921 §3), a no-op kept for old clients.
        if el.name == "iq"
            && el.attr("type") == Some("set")
            && el.child("session", NS_SESSION).is_some()
            && el.attr("to").is_none_or(|t| t == router.domain())
        {
            let r = proto::iq_result(&el, None);
            self.send_stanza(r.to_string_in_stream(), out);
            return Action::Continue;
        }
        if el.name == "iq" && el.child("bind", NS_BIND).is_some() {
            let err =
                StanzaError::new(Condition::NotAllowed).with_text("a resource is already bound");
            if let Some(r) = proto::error_reply(&el, &err) {
                self.send_stanza(r.to_string_in_stream(), out);
            }
            return Action::Continue;
        }
        let jid = jid.clone();
        router.route(&jid, el);
        Action::Continue
    }
}
