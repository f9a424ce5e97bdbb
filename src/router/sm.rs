//! XEP-0198 stream management in the session registry: which sessions are resumable,
//! detaching them when their connection drops, resuming them on another connection, and
//! ending them when their window passes (their unacknowledged stanzas are delivered
//! elsewhere, XEP-0198 §4).
//!
//! A detached session is its [`Resource`] (still bound, its presence unchanged, so nobody
//! sees it go unavailable) and its [`Outbox`], which keeps collecting what is sent to it
//! within `c2s.detached_max_*`. The router holds no timer: the shell's task asks
//! [`Router::sm_tick`] when the next window ends, and the router wakes it
//! ([`Router::set_sm_waker`]) when a new window starts or a detached outbox overflows.

use std::time::Duration;

use super::*;
use crate::outbox::HandledTooHigh;

/// The resumable sessions.
#[derive(Default)]
pub(super) struct SmRegistry {
    by_id: HashMap<Rc<str>, SmEntry>,
    /// Wakes the shell's stream-management timer task.
    wake: Option<Rc<dyn Fn()>>,
}

/// One resumable session.
struct SmEntry {
    /// The account that enabled it: only the same account may resume it.
    user: String,
    jid: Jid,
    /// The connection that holds it now.
    conn: ConnId,
    /// Its resumption window (the `max` of `<enabled/>`).
    max: Duration,
    /// While detached: when the window ends, on the [`Env::monotonic`] clock.
    deadline: Option<Duration>,
}

/// Why a `<resume/>` failed (XEP-0198 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeError {
    /// No such resumable session of this account (unknown, expired, or ended):
    /// `item-not-found`.
    NotFound,
    /// The client acknowledged more than was sent: `undefined-condition` with
    /// `handled-count-too-high`.
    HandledTooHigh(HandledTooHigh),
}

/// What `<enable/>` got: the resumption id and window, when resumption is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumable {
    /// The `id` of `<enabled/>` (unguessable: 144 random bits).
    pub id: Rc<str>,
    /// The `max` of `<enabled/>`, in seconds.
    pub max_secs: u64,
}

impl Router {
    /// Sets how the router wakes the shell's stream-management timer task (which then
    /// calls [`Router::sm_tick`]).
    pub fn set_sm_waker(&mut self, wake: Rc<dyn Fn()>) {
        self.sm.wake = Some(wake);
    }

    fn sm_wake(&self) {
        if let Some(w) = &self.sm.wake {
            w();
        }
    }

    /// Number of resumable sessions (attached or detached) and of detached ones.
    pub fn sm_counts(&self) -> (usize, usize) {
        let detached = self
            .sm
            .by_id
            .values()
            .filter(|e| e.deadline.is_some())
            .count();
        (self.sm.by_id.len(), detached)
    }

    /// The session `jid` on `conn` enabled stream management (its outbox counts already).
    /// With `resume`, it becomes resumable when `c2s.resume_timeout_secs` is not 0, the
    /// account is not anonymous (a new anonymous login is another account) and fewer than
    /// `c2s.max_resumable_sessions` are; its window is the client's `max` if smaller than
    /// the configured one.
    pub fn sm_enable(
        &mut self,
        jid: &Jid,
        conn: ConnId,
        resume: bool,
        max: Option<u64>,
    ) -> Option<Resumable> {
        let c2s = &self.config.c2s;
        let user = jid.local()?.to_owned();
        let anonymous = self.im.accounts.get(&user).is_none_or(|a| a.anonymous);
        if !resume || c2s.resume_timeout_secs == 0 || anonymous {
            return None;
        }
        if self.sm.by_id.len() >= c2s.max_resumable_sessions {
            tracing::info!(jid = %jid, max = c2s.max_resumable_sessions, "stream resumption refused: c2s.max_resumable_sessions reached");
            return None;
        }
        let max_secs = max
            .filter(|m| *m > 0)
            .map_or(c2s.resume_timeout_secs, |m| m.min(c2s.resume_timeout_secs));
        let id: Rc<str> = Rc::from(self.random_nonce());
        let res = self.resource_mut(jid).filter(|r| r.conn == conn)?;
        res.sm_id = Some(id.clone());
        self.sm.by_id.insert(
            id.clone(),
            SmEntry {
                user,
                jid: jid.clone(),
                conn,
                max: Duration::from_secs(max_secs),
                deadline: None,
            },
        );
        Some(Resumable { id, max_secs })
    }

    /// The connection of session `jid` on `conn` is gone: keep the session resumable for
    /// its window. Returns false when it cannot be (resumption not enabled, or its outbox
    /// already holds more than `c2s.detached_max_*`): the caller then unbinds it.
    pub fn sm_detach(&mut self, jid: &Jid, conn: ConnId) -> bool {
        let bounds = self.config.sm_bounds();
        let now = self.env.monotonic();
        let wake = self.sm.wake.clone();
        let Some(res) = self.resource_mut(jid).filter(|r| r.conn == conn) else {
            return false;
        };
        let Some(id) = res.sm_id.clone() else {
            return false;
        };
        let hook: Rc<dyn Fn()> = match wake {
            Some(w) => w,
            None => Rc::new(|| {}),
        };
        if !res.outbox.sm_detach(bounds, hook) {
            tracing::info!(jid = %jid, "connection lost with more unacknowledged output than c2s.detached_max_*: ending the session");
            return false;
        }
        let pending = res.outbox.len() + res.outbox.sm_unacked();
        let Some(entry) = self.sm.by_id.get_mut(&id) else {
            return false;
        };
        entry.deadline = Some(now.saturating_add(entry.max));
        tracing::info!(jid = %jid, pending, window_secs = entry.max.as_secs(), "connection lost: session detached, resumable");
        self.sm_wake();
        true
    }

    /// Connection `conn`, authenticated as `user`, resumes session `previd` (XEP-0198
    /// §5): the client handled `h` of the stanzas sent to it. On success the session's
    /// resource is this connection's, `outbox` holds what the client has not handled (to
    /// go out first, in order) and continues the counts, and the old connection, if it is
    /// still there, is closed with `conflict`. Returns the session's full JID.
    ///
    /// # Errors
    ///
    /// [`ResumeError`]; nothing changes then.
    pub fn sm_resume(
        &mut self,
        user: &str,
        previd: &str,
        h: u32,
        conn: ConnId,
        outbox: &Rc<Outbox>,
    ) -> Result<Jid, ResumeError> {
        let window = self.config.sm_window();
        let entry = self
            .sm
            .by_id
            .get(previd)
            .filter(|e| e.user == user)
            .ok_or(ResumeError::NotFound)?;
        let (jid, old_conn) = (entry.jid.clone(), entry.conn);
        let Some(res) = self.resource_mut(&jid).filter(|r| r.conn == old_conn) else {
            // Invariant: an entry's resource exists; if not, forget the entry.
            self.sm.by_id.remove(previd);
            return Err(ResumeError::NotFound);
        };
        let old = res.outbox.clone();
        if old.kicked().is_some() {
            // Overflowed while detached: the timer task ends it.
            return Err(ResumeError::NotFound);
        }
        old.sm_ack(h).map_err(ResumeError::HandledTooHigh)?;
        let handled = old.sm_handled();
        let pending = old.sm_take_pending();
        let redelivered = pending.len();
        if !old.sm_detached() {
            // RFC 6120 §7.7.2.2-like takeover: the old stream is still open.
            old.kick(Kick::Stream(StreamCondition::Conflict));
        }
        outbox.sm_resume(window, h, handled, pending);
        res.conn = conn;
        res.outbox = outbox.clone();
        if let Some(e) = self.sm.by_id.get_mut(previd) {
            e.conn = conn;
            e.deadline = None;
        }
        self.pubsub.paused.retain(|ob| !Rc::ptr_eq(ob, &old));
        tracing::info!(jid = %jid, conn, redelivered, "session resumed");
        Ok(jid)
    }

    /// Ends the detached sessions whose window passed or whose outbox overflowed, and
    /// returns how long until the next window ends (`None`: no detached session).
    pub fn sm_tick(&mut self) -> Option<Duration> {
        let now = self.env.monotonic();
        let mut ended = Vec::new();
        let mut next: Option<Duration> = None;
        for (id, e) in &self.sm.by_id {
            let Some(deadline) = e.deadline else { continue };
            let overflowed = self
                .resource_outbox(&e.jid)
                .is_none_or(|ob| ob.kicked().is_some());
            if deadline <= now || overflowed {
                ended.push((id.clone(), e.jid.clone(), e.conn, overflowed));
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        for (id, jid, conn, overflowed) in ended {
            if overflowed {
                tracing::info!(jid = %jid, "detached session ended: more queued than c2s.detached_max_*");
            } else {
                tracing::info!(jid = %jid, "detached session ended: resumption window passed");
            }
            self.sm.by_id.remove(&id);
            self.unbind(&jid, conn);
        }
        next.map(|d| d.saturating_sub(now))
    }

    /// A stream-managed session `res` ended: forget its resumption entry and deliver what
    /// it did not acknowledge elsewhere.
    pub(super) fn sm_end(&mut self, res: &Resource) {
        if let Some(id) = &res.sm_id {
            self.sm.by_id.remove(id);
        }
        if !res.outbox.sm_enabled() {
            return;
        }
        let pending = res.outbox.sm_take_pending();
        if !pending.is_empty() {
            self.redeliver(&res.jid, pending);
        }
    }

    /// XEP-0198 §4: the stanzas a session that ended did not acknowledge. Messages are
    /// routed again as if just sent (RFC 6121 §8.5.3.2.1: to the account's other
    /// resources, else offline storage, else bounced); pub-sub notifications, which other
    /// available resources get on their own, are kept offline when none is left (unless
    /// `headline`); requests are answered with `service-unavailable` (RFC 6120
    /// §10.5.3.1); results, errors and presence are dropped.
    fn redeliver(&mut self, jid: &Jid, pending: Vec<crate::outbox::Stanza>) {
        let (mut rerouted, mut kept, mut bounced, mut dropped) = (0usize, 0usize, 0usize, 0usize);
        for s in pending {
            let Ok(el) = Element::parse(&s.to_text()) else {
                // Invariant: the outbox holds what the server serialised.
                dropped += 1;
                continue;
            };
            let from = el.attr("from").and_then(|f| Jid::parse(f).ok());
            match (el.name.as_str(), el.attr("type"), from) {
                ("message", ty, _)
                    if el.child("event", crate::pubsub::NS_PUBSUB_EVENT).is_some() =>
                {
                    // The account's other available sessions get notifications on their
                    // own; with none left, a `normal` one is kept offline (XEP-0160), a
                    // headline one is not.
                    if ty != Some("headline") && !self.has_available(&jid.bare()) {
                        kept += 1;
                        self.offline_notification(&jid.bare(), &s);
                    } else {
                        dropped += 1;
                    }
                }
                ("message", _, Some(from)) => {
                    rerouted += 1;
                    self.route(&from, el);
                }
                ("iq", Some("get" | "set"), Some(_)) => {
                    bounced += 1;
                    self.bounce(&el, StanzaError::new(Condition::ServiceUnavailable));
                }
                _ => dropped += 1,
            }
        }
        tracing::info!(jid = %jid, rerouted, kept, bounced, dropped, "unacknowledged stanzas of an ended session");
    }
}
