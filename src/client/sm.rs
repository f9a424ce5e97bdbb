//! XEP-0198 Stream Management (version 1.6, `urn:xmpp:sm:3`) on the client side, sans IO:
//! the counters of one stream, the nonzas the client writes, and the checks of every number
//! the server sends. [`super::conn::Conn`] drives it: `kinglet sub` enables it after binding
//! and resumes the session after a cut; the other commands never enable it.
//!
//! * `h` of the client counts the stanzas received from the server after `<enabled/>`,
//!   wrapping at 2^32 (§4, "h ... MUST be reset to zero" past 2^32 - 1). §4 has the client
//!   initialise it when it sends `<enable/>` and the server count what it sends after its
//!   `<enabled/>`: a stanza the server wrote before it read `<enable/>` (a notification to a
//!   full JID subscribed before it bound, say) reaches the client after its `<enable/>` but
//!   before `<enabled/>`, and the server never counts it; the client does not either, so
//!   the two counts stay equal ([`StreamMgmt::on_enabled`]). The count of stanzas sent
//!   starts at `<enable/>`, as §4 says (the server reads none of them before it). A stanza
//!   counts once it is complete and taken off the wire: from then on the client holds it in
//!   memory (the connection's queue is carried over a reconnect), so it is handled.
//! * The server's `h` (in `<a/>`, `<resumed/>`, `<failed/>`) is parsed strictly
//!   ([`parse_u32`]) and must not acknowledge more stanzas than the client sent since the
//!   last acknowledgement (wrap-aware); otherwise the client closes the stream with
//!   `undefined-condition` and `<handled-count-too-high/>` (§6) and reports a protocol error.
//! * The client does not retransmit its own unacknowledged stanzas after a resumption: they
//!   are IQ requests (a ping, a subscription) whose callers already failed with the lost
//!   connection. It forgets them instead ([`StreamMgmt::on_resumed`] sets its sent count to
//!   the server's `h`), so later acknowledgements stay in step.
//! * `max` (the server's longest resumption time, seconds) is parsed strictly and kept: a
//!   resumption is not attempted once that much time has passed since the cut. `location`
//!   (a preferred address for resuming) is ignored: the client reconnects where it was told.

use std::time::Duration;

use crate::proto::NS_STREAMS;
use crate::xml::{Element, Writer};

/// XEP-0198 namespace (version 3 of the protocol, XEP-0198 1.6), the server's constant.
pub use crate::proto::NS_SM;
/// Longest resumption id accepted from the server, in bytes; a longer one is not kept (the
/// session is then treated as not resumable).
pub const MAX_SM_ID_BYTES: usize = 1024;

/// Parses an `xs:unsignedInt` as XEP-0198 sends it (`h`, `max`): optional surrounding XML
/// whitespace, an optional `+`, then ASCII digits only, at most `u32::MAX`. `None` for
/// anything else (empty, a sign, a fraction, an overflow).
pub fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim_matches([' ', '\t', '\n', '\r']);
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.bytes().try_fold(0u32, |n, b| {
        n.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Whether the stream features offer XEP-0198 (`<sm xmlns='urn:xmpp:sm:3'/>`, §2).
pub fn offered(features: &Element) -> bool {
    features.child("sm", NS_SM).is_some()
}

/// `<enable xmlns='urn:xmpp:sm:3' resume='true'/>` (or without `resume`), §3.
pub fn enable_request(resume: bool) -> String {
    crate::xml::build(|w| {
        w.start("enable").ns(NS_SM);
        if resume {
            w.attr("resume", "true");
        }
        w.end();
    })
}

/// The defined condition of a `<failed/>` (§3, §5): its first child element, or
/// `undefined-condition` when it has none.
pub fn failed_condition(failed: &Element) -> String {
    failed
        .elements()
        .next()
        .map_or_else(|| "undefined-condition".to_owned(), |c| c.name.clone())
}

/// A violation of XEP-0198 by the server; the connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmError {
    /// An `h` or `max` that is not an `xs:unsignedInt`, or a missing `h`.
    BadNumber(String),
    /// The server acknowledged more stanzas than were sent (§6 `handled-count-too-high`):
    /// its `h` and the client's count of stanzas sent.
    HandledTooHigh {
        /// The server's `h`.
        h: u32,
        /// Stanzas the client sent since enabling (wrapping).
        sent: u32,
    },
}

impl std::fmt::Display for SmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmError::BadNumber(m) => write!(f, "XEP-0198: {m}"),
            SmError::HandledTooHigh { h, sent } => write!(
                f,
                "XEP-0198: the server acknowledged {h} stanzas but only {sent} were sent \
                 (handled-count-too-high)"
            ),
        }
    }
}

impl SmError {
    /// The stream error the client sends before closing for this violation (§6): for a
    /// count too high, `undefined-condition` with `<handled-count-too-high h send-count/>`.
    pub fn stream_error(&self) -> String {
        let mut s = String::with_capacity(200);
        let mut w = Writer::new(&mut s);
        w.start("stream:error");
        w.start("undefined-condition").ns(NS_STREAMS).end();
        if let SmError::HandledTooHigh { h, sent } = self {
            w.start("handled-count-too-high")
                .ns(NS_SM)
                .attr_fmt("h", h)
                .attr_fmt("send-count", sent)
                .end();
        }
        w.end().close("stream:stream");
        s
    }
}

/// What the server said when stream management was enabled (`<enabled/>`, §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumable {
    /// The `id` to send as `previd` when resuming.
    pub id: String,
    /// The server's longest resumption time (`max`), if it gave one.
    pub max: Option<Duration>,
}

/// The XEP-0198 state of one stream (and, after a cut, of the session to resume).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMgmt {
    /// Stanzas handled from the server: the client's `h` (wrapping).
    handled: u32,
    /// Stanzas sent to the server since enabling (wrapping).
    sent: u32,
    /// The last `h` the server acknowledged.
    acked: u32,
    /// Whether `<enabled/>` has arrived.
    enabled: bool,
    /// Resumption id and window, when the server allows resumption.
    resume: Option<Resumable>,
}

impl Default for StreamMgmt {
    fn default() -> Self {
        StreamMgmt::new()
    }
}

impl StreamMgmt {
    /// The state right after `<enable/>` is sent: both counts zero (the handled count
    /// starts again at [`StreamMgmt::on_enabled`]).
    pub fn new() -> StreamMgmt {
        StreamMgmt {
            handled: 0,
            sent: 0,
            acked: 0,
            enabled: false,
            resume: None,
        }
    }

    /// The client's `h`: stanzas handled from the server (wrapping at 2^32).
    pub fn handled(&self) -> u32 {
        self.handled
    }

    /// Stanzas sent since enabling (wrapping at 2^32).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// The last `h` the server acknowledged.
    pub fn acked(&self) -> u32 {
        self.acked
    }

    /// Whether `<enabled/>` (or `<resumed/>`) arrived.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The resumption id and window, if the session can be resumed.
    pub fn resumable(&self) -> Option<&Resumable> {
        self.resume.as_ref()
    }

    /// One more stanza received and handled.
    pub fn count_received(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    /// One more stanza sent.
    pub fn count_sent(&mut self) {
        self.sent = self.sent.wrapping_add(1);
    }

    /// `<enabled id? resume? max?/>` (§3): resumption is allowed when `resume` is `true` or
    /// `1` and an `id` (at most [`MAX_SM_ID_BYTES`]) is given.
    ///
    /// # Errors
    ///
    /// A `max` that is not an `xs:unsignedInt`.
    pub fn on_enabled(&mut self, e: &Element) -> Result<(), SmError> {
        let max = match e.attr("max") {
            None => None,
            Some(m) => Some(parse_u32(m).ok_or_else(|| {
                SmError::BadNumber(format!("max='{}' of <enabled/> is not a number", clip(m)))
            })?),
        };
        let resume = matches!(e.attr("resume"), Some("true" | "1"));
        self.resume = match e.attr("id") {
            Some(id) if resume && !id.is_empty() && id.len() <= MAX_SM_ID_BYTES => {
                Some(Resumable {
                    id: id.to_owned(),
                    max: max.map(|m| Duration::from_secs(u64::from(m))),
                })
            }
            _ => None,
        };
        self.enabled = true;
        // The server counts from its <enabled/> on: what came before it is not counted
        // (see the module documentation).
        self.handled = 0;
        Ok(())
    }

    /// Checks an `h` from the server against the stanzas sent and records it.
    fn take_ack(&mut self, h: Option<&str>, what: &str) -> Result<(), SmError> {
        let text = h.ok_or_else(|| SmError::BadNumber(format!("<{what}/> without 'h'")))?;
        let h = parse_u32(text).ok_or_else(|| {
            SmError::BadNumber(format!("h='{}' of <{what}/> is not a number", clip(text)))
        })?;
        // Wrap-aware: the newly acknowledged stanzas (h - acked) are at most those sent and
        // not yet acknowledged (sent - acked), both modulo 2^32.
        if h.wrapping_sub(self.acked) > self.sent.wrapping_sub(self.acked) {
            return Err(SmError::HandledTooHigh { h, sent: self.sent });
        }
        self.acked = h;
        Ok(())
    }

    /// An `<a h/>` from the server (§4).
    ///
    /// # Errors
    ///
    /// A missing or malformed `h`, or one higher than the stanzas sent.
    pub fn on_ack(&mut self, a: &Element) -> Result<(), SmError> {
        self.take_ack(a.attr("h"), "a")
    }

    /// The answer to an `<r/>`: `<a xmlns='urn:xmpp:sm:3' h='…'/>` (§4).
    pub fn ack(&self) -> String {
        crate::xml::build(|w| {
            w.start("a").ns(NS_SM).attr_fmt("h", self.handled).end();
        })
    }

    /// `<resume xmlns='urn:xmpp:sm:3' previd='…' h='…'/>` (§5), if the session is resumable.
    pub fn resume_request(&self) -> Option<String> {
        let r = self.resume.as_ref()?;
        Some(crate::xml::build(|w| {
            w.start("resume")
                .ns(NS_SM)
                .attr("previd", &r.id)
                .attr_fmt("h", self.handled)
                .end();
        }))
    }

    /// `<resumed h previd/>` (§5): checks the server's `h` (and `previd`, when given) and
    /// forgets the stanzas the server did not handle (they are not sent again), so that the
    /// counts stay in step.
    ///
    /// # Errors
    ///
    /// A missing, malformed or too high `h`, or a `previd` naming another session.
    pub fn on_resumed(&mut self, e: &Element) -> Result<(), SmError> {
        if let (Some(previd), Some(r)) = (e.attr("previd"), &self.resume) {
            if previd != r.id {
                return Err(SmError::BadNumber(format!(
                    "previd='{}' of <resumed/> names another session",
                    clip(previd)
                )));
            }
        }
        self.take_ack(e.attr("h"), "resumed")?;
        self.sent = self.acked;
        self.enabled = true;
        Ok(())
    }

    /// The optional `h` of a `<failed/>` answering `<resume/>` (§5, XEP-0198 1.6): checked
    /// like any other when present.
    ///
    /// # Errors
    ///
    /// A malformed or too high `h`.
    pub fn on_resume_failed(&mut self, e: &Element) -> Result<(), SmError> {
        match e.attr("h") {
            None => Ok(()),
            h => self.take_ack(h, "failed"),
        }
    }
}

/// At most 40 bytes of a peer's text, for error messages.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
