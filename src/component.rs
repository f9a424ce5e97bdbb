//! XEP-0114 (Jabber Component Protocol), sans-IO: the stream Kinglet opens to an XMPP
//! server as an external component, its `<handshake/>`, and the stanzas that then flow.
//!
//! The shell (`net::component`) owns the socket, the reconnect timer and the outbox; this
//! state machine takes the bytes read and returns the bytes to write and what happened.
//! Once the server accepted the handshake, every stanza goes to
//! [`Router::route_component`], with its `from` trusted as the server asserts it.

use crate::proto::StreamCondition;
use crate::router::Router;
use crate::xml::{Element, Frame, Framer, NS_CLIENT, NS_COMPONENT_ACCEPT, NS_STREAM, XmlLimits};

/// Where the component stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The header was sent; the server's header (with the stream id) is awaited.
    AwaitHeader,
    /// The handshake was sent; `<handshake/>` (accepted) or a stream error is awaited.
    AwaitHandshake,
    /// Accepted: stanzas flow both ways.
    Ready,
    /// Ended (closed by either side, or failed).
    Closed,
}

/// What one call to [`ComponentStream::receive`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing final: keep reading.
    Continue,
    /// The server accepted the handshake (returned once, before any stanza is routed).
    Ready,
    /// The stream ended; the text says why, for the operator's log. `auth` is true when
    /// the server refused the secret (reconnecting will not help until the secret is fixed).
    Closed {
        /// Why the stream ended.
        reason: String,
        /// The server refused the handshake (`not-authorized`, or an error before it).
        auth: bool,
    },
}

/// One XEP-0114 component stream (`jabber:component:accept`).
pub struct ComponentStream {
    jid: String,
    secret: String,
    framer: Framer,
    stage: Stage,
}

/// The XEP-0114 §3 handshake value: lower-case hex of SHA-1(stream id ‖ secret).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(stream_id.as_bytes());
    ctx.update(secret.as_bytes());
    let d = ctx.finish();
    let mut hex = String::with_capacity(40);
    for b in d.as_ref() {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    hex
}

/// Stanzas that name `jabber:component:accept` (as ejabberd writes them) are read as if
/// they were in `jabber:client`, the namespace the router and the engine speak.
pub fn normalize(el: &mut Element) {
    if el.ns == NS_COMPONENT_ACCEPT {
        NS_CLIENT.clone_into(&mut el.ns);
    }
    for c in el.children.iter_mut() {
        if let crate::xml::Node::Element(e) = c {
            normalize(e);
        }
    }
}

impl ComponentStream {
    /// A stream for component `jid` with shared `secret`; nothing is sent until
    /// [`ComponentStream::open`].
    pub fn new(jid: &str, secret: &str, limits: XmlLimits) -> ComponentStream {
        ComponentStream {
            jid: jid.to_owned(),
            secret: secret.to_owned(),
            framer: Framer::new_component(limits),
            stage: Stage::AwaitHeader,
        }
    }

    /// Writes the stream header (XEP-0114 §3: `to` is the component's JID).
    pub fn open(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(160);
        crate::xml::component_stream_header(&mut s, &self.jid).leave_open();
        out.extend_from_slice(s.as_bytes());
    }

    /// Whether the server accepted the handshake and the stream is up.
    pub fn is_ready(&self) -> bool {
        self.stage == Stage::Ready
    }

    /// Feeds bytes read from the server. Stanzas go to `router` once the stream is ready;
    /// replies the stream itself needs (the handshake, a closing stream error) go to `out`.
    pub fn receive(&mut self, bytes: &[u8], router: &mut Router, out: &mut Vec<u8>) -> Event {
        if self.stage == Stage::Closed {
            return self.closed("stream already closed", false);
        }
        if let Err(e) = self.framer.push(bytes) {
            return self.fail(out, StreamCondition::BadFormat, &format!("{e}"));
        }
        let mut event = Event::Continue;
        loop {
            let frame = match self.framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return event,
                Err(e) => return self.fail(out, StreamCondition::BadFormat, &format!("{e}")),
            };
            match (frame, self.stage) {
                (Frame::Header(h), Stage::AwaitHeader) => {
                    let Some(id) = h.id.filter(|id| !id.is_empty()) else {
                        return self.fail(out, StreamCondition::InvalidXml, "no stream id");
                    };
                    let digest = handshake_digest(&id, &self.secret);
                    let hs = crate::xml::build(|w| {
                        w.start("handshake").text(&digest).end();
                    });
                    out.extend_from_slice(hs.as_bytes());
                    self.stage = Stage::AwaitHandshake;
                }
                (Frame::Stanza(el), Stage::AwaitHandshake)
                    if el.name == "handshake" && el.ns == NS_CLIENT =>
                {
                    self.stage = Stage::Ready;
                    event = Event::Ready;
                }
                (Frame::Stanza(el), _) if el.ns == NS_STREAM && el.name == "error" => {
                    let auth = self.stage != Stage::Ready;
                    let cond = el
                        .children
                        .iter()
                        .find_map(|c| match c {
                            crate::xml::Node::Element(e) if e.name != "text" => {
                                Some(e.name.clone())
                            }
                            _ => None,
                        })
                        .unwrap_or_else(|| "undefined-condition".to_owned());
                    let text = el
                        .child("text", crate::proto::NS_STREAMS)
                        .map(|t| t.text())
                        .unwrap_or_default();
                    self.stage = Stage::Closed;
                    out.extend_from_slice(crate::xml::STREAM_CLOSE.as_bytes());
                    return self.closed(&format!("stream error {cond} {text}"), auth);
                }
                (Frame::Stanza(mut el), Stage::Ready) => {
                    normalize(&mut el);
                    router.route_component(el);
                }
                (Frame::Close, _) => {
                    let auth = self.stage != Stage::Ready;
                    self.stage = Stage::Closed;
                    out.extend_from_slice(crate::xml::STREAM_CLOSE.as_bytes());
                    return self.closed("the server closed the stream", auth);
                }
                (Frame::Header(_), _) => {
                    return self.fail(out, StreamCondition::BadFormat, "second stream header");
                }
                (Frame::Stanza(el), _) => {
                    let what = format!("<{}/> before the handshake was accepted", el.name);
                    return self.fail(out, StreamCondition::NotAuthorized, &what);
                }
            }
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, cond: StreamCondition, why: &str) -> Event {
        let auth = self.stage != Stage::Ready;
        self.stage = Stage::Closed;
        out.extend_from_slice(crate::proto::stream_error_bytes(cond, None).as_bytes());
        self.closed(why, auth && cond == StreamCondition::NotAuthorized)
    }

    fn closed(&self, reason: &str, auth: bool) -> Event {
        Event::Closed {
            reason: reason.to_owned(),
            auth,
        }
    }
}

#[cfg(test)]
mod tests;
