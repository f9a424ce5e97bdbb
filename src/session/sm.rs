//! XEP-0198 stream management, the session's part: `<enable/>`, `<r/>`/`<a/>` both ways
//! and `<resume/>`. The counts and the unacknowledged stanzas live in the outbox
//! ([`crate::outbox`], "Stream management"), the resumable sessions in the router
//! ([`crate::router::Router::sm_resume`]).

use std::time::Instant;

use super::{Action, Session, Stage};
use crate::outbox::HandledTooHigh;
use crate::proto::{self, NS_SM, NS_STANZAS, StreamCondition};
use crate::router::{ResumeError, Router};
use crate::xml::{Element, Writer};

/// `<r xmlns='urn:xmpp:sm:3'/>`: the server asks for an acknowledgement.
pub(super) fn ack_request() -> String {
    crate::xml::build(|w| {
        w.start("r").ns(NS_SM).end();
    })
}

/// A count (`h`) or a duration (`max`) from the client: decimal digits only, within
/// `u32` / `u64` (no sign, no spaces; at most 20 digits are looked at).
fn parse_count<T: std::str::FromStr>(v: Option<&str>) -> Option<T> {
    let v = v?;
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// `<failed xmlns='urn:xmpp:sm:3'>` with the stanza error condition `cond` and, for
/// `handled-count-too-high`, the XEP-0198 element that says by how much.
fn failed(cond: &str, h: Option<u32>, too_high: Option<HandledTooHigh>) -> String {
    crate::xml::build(|w| {
        w.start("failed").ns(NS_SM);
        if let Some(h) = h {
            w.attr_fmt("h", h);
        }
        w.start(cond).ns(NS_STANZAS).end();
        if let Some(e) = too_high {
            handled_count_too_high(w, e);
        }
        w.end();
    })
}

fn handled_count_too_high(w: &mut Writer<'_, '_>, e: HandledTooHigh) {
    w.start("handled-count-too-high")
        .ns(NS_SM)
        .attr_fmt("h", e.h)
        .attr_fmt("send-count", e.sent)
        .end();
}

impl Session {
    /// A stanza the session itself answers (not through the router): once stream
    /// management is on it goes through the outbox, so that it is counted in order.
    pub(super) fn send_stanza(&self, text: String, out: &mut Vec<u8>) {
        if self.outbox.sm_enabled() {
            self.outbox.push(text);
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }

    /// After stanzas left the outbox: ask for an acknowledgement when the window says so
    /// ([`crate::outbox::Outbox::sm_request_due`]).
    pub(super) fn request_ack_if_due(&mut self, out: &mut Vec<u8>) {
        if self.outbox.sm_request_due() {
            out.extend_from_slice(ack_request().as_bytes());
            self.ack_asked.get_or_insert(self.clock);
        }
    }

    /// The connection task found the outbox ready at `now`: move what may go into `out`
    /// (with an acknowledgement request when due). Returns whether backlog bytes were
    /// released (see [`crate::outbox::Outbox::drain_into`]).
    pub fn flush_outbox(&mut self, out: &mut Vec<u8>, now: Instant) -> bool {
        self.clock = now;
        let released = self.outbox.drain_into(out);
        self.request_ack_if_due(out);
        released
    }

    /// An element of the stream-management namespace (XEP-0198 §3-§5).
    pub(super) fn on_sm(&mut self, el: &Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        let enabled = self.outbox.sm_enabled();
        match (el.name.as_str(), &self.stage) {
            ("enable", Stage::Bound { .. }) if !enabled => self.sm_enable(el, router, out),
            ("resume", Stage::ExpectBind { .. }) => self.sm_resume(el, router, out),
            ("r", Stage::Bound { .. }) if enabled => {
                let a = crate::xml::build(|w| {
                    w.start("a")
                        .ns(NS_SM)
                        .attr_fmt("h", self.outbox.sm_handled())
                        .end();
                });
                out.extend_from_slice(a.as_bytes());
                Action::Continue
            }
            ("a", Stage::Bound { .. }) if enabled => self.sm_ack(el, router, out),
            ("enable" | "resume" | "r" | "a", _) => {
                // §3: before binding, twice, or without stream management enabled.
                tracing::debug!(conn = self.conn, element = %el.name, "unexpected stream-management element");
                out.extend_from_slice(failed("unexpected-request", None, None).as_bytes());
                Action::Continue
            }
            _ => self.unsupported(el, out, router),
        }
    }

    fn sm_enable(&mut self, el: &Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        let Stage::Bound { jid } = &self.stage else {
            return Action::Continue;
        };
        let jid = jid.clone();
        let resume = matches!(el.attr("resume"), Some("true" | "1"));
        let max = parse_count::<u64>(el.attr("max"));
        // What was queued before `<enabled/>` is not counted.
        self.outbox.take_queue_into(out);
        self.outbox.sm_enable(router.config().sm_window());
        let resumable = router.sm_enable(&jid, self.conn, resume, max);
        let reply = crate::xml::build(|w| {
            w.start("enabled").ns(NS_SM);
            if let Some(r) = &resumable {
                w.attr("id", &r.id)
                    .attr("resume", "true")
                    .attr_fmt("max", r.max_secs);
            }
            w.end();
        });
        out.extend_from_slice(reply.as_bytes());
        tracing::debug!(conn = self.conn, jid = %jid, resumable = resumable.is_some(), "stream management enabled");
        Action::Continue
    }

    fn sm_resume(&mut self, el: &Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        let Stage::ExpectBind { user, .. } = &self.stage else {
            return Action::Continue;
        };
        let user = user.clone();
        let (Some(previd), Some(h)) = (el.attr("previd"), parse_count::<u32>(el.attr("h"))) else {
            out.extend_from_slice(failed("bad-request", None, None).as_bytes());
            return Action::Continue;
        };
        match router.sm_resume(&user, previd, h, self.conn, &self.outbox) {
            Ok(jid) => {
                let reply = crate::xml::build(|w| {
                    w.start("resumed")
                        .ns(NS_SM)
                        .attr("previd", previd)
                        .attr_fmt("h", self.outbox.sm_handled())
                        .end();
                });
                out.extend_from_slice(reply.as_bytes());
                self.bound = Some(jid.clone());
                self.stage = Stage::Bound { jid };
                // The redelivered stanzas follow (handle_frames takes the queue).
            }
            Err(ResumeError::NotFound) => {
                tracing::info!(
                    conn = self.conn,
                    user,
                    "stream resumption failed: no such session"
                );
                out.extend_from_slice(failed("item-not-found", None, None).as_bytes());
            }
            Err(ResumeError::HandledTooHigh(e)) => {
                tracing::info!(
                    conn = self.conn,
                    user,
                    h = e.h,
                    sent = e.sent,
                    "stream resumption failed: h above the stanzas sent"
                );
                out.extend_from_slice(failed("undefined-condition", None, Some(e)).as_bytes());
            }
        }
        Action::Continue
    }

    fn sm_ack(&mut self, el: &Element, router: &mut Router, out: &mut Vec<u8>) -> Action {
        let Some(h) = parse_count::<u32>(el.attr("h")) else {
            tracing::info!(conn = self.conn, "invalid h in <a/>");
            let why = Some("an ack needs h, a count of 0 to 4294967295");
            return self.stream_error(StreamCondition::BadFormat, why, out, router);
        };
        match self.outbox.sm_ack(h) {
            Ok(_) => {
                self.ack_asked = None;
                Action::Continue
            }
            Err(e) => {
                // §4: the stream ends; what was not acknowledged is delivered elsewhere.
                tracing::info!(
                    conn = self.conn,
                    h = e.h,
                    sent = e.sent,
                    "client acknowledged more stanzas than were sent"
                );
                self.leave(router, false);
                if !self.header_sent {
                    let domain = router.domain().to_owned();
                    self.write_header(out, None, &domain, router);
                }
                let app = crate::xml::build(|w| handled_count_too_high(w, e));
                out.extend_from_slice(
                    proto::stream_error_with(StreamCondition::UndefinedCondition, None, Some(&app))
                        .as_bytes(),
                );
                self.stage = Stage::Closed;
                Action::Close
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts_are_digits_within_range() {
        assert_eq!(parse_count::<u32>(Some("0")), Some(0));
        assert_eq!(parse_count::<u32>(Some("4294967295")), Some(u32::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "4294967296",
            "0x10",
            "1e3",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_count::<u32>(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(parse_count::<u32>(None), None);
        assert_eq!(parse_count::<u64>(Some("300")), Some(300));
    }
}
