//! XEP-0198 stream management on the outbound side of a connection: counting the stanzas
//! that leave the outbox, keeping them until the client acknowledges them, and holding a
//! session's output while it is detached (see the parent module's documentation, "Stream
//! management").
//!
//! The state lives in the [`Outbox`], not in the session, because the router needs it when
//! the session's connection is gone (a detached session is only its resource and its
//! outbox) and when another connection resumes it.

use std::collections::VecDeque;
use std::rc::Rc;

use super::{Outbox, Stanza};

/// Most stanzas and bytes a stream-managed outbox keeps: sent but not acknowledged while
/// attached (the send window), and unacknowledged plus queued while detached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmBounds {
    /// Most stanzas.
    pub stanzas: usize,
    /// Most bytes of stanza text.
    pub bytes: usize,
}

/// The outbound XEP-0198 state of a connection.
#[derive(Debug)]
pub(super) struct SmOut {
    /// Stanzas handed to the stream since `<enabled/>` (or the `h` the client resumed
    /// with), modulo 2^32: the server's outbound `h`.
    sent: u32,
    /// Stanzas handled from the client since `<enabled/>`, modulo 2^32: what `<a h/>`
    /// tells the client, kept here so that a resuming connection can read it.
    handled: u32,
    /// Sent and not yet acknowledged, oldest first. Invariant: `sent - acked` (mod 2^32)
    /// is its length, where `acked` is the last `h` the client sent.
    unacked: VecDeque<Stanza>,
    /// Invariant: the sum of the lengths of `unacked`.
    unacked_bytes: usize,
    bounds: SmBounds,
    /// An `<r/>` went out and no `<a/>` came back since.
    requested: bool,
    /// The connection is gone; the session waits for a resumption.
    detached: bool,
}

impl SmOut {
    fn new(bounds: SmBounds, sent: u32, handled: u32) -> SmOut {
        SmOut {
            sent,
            handled,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            bounds,
            requested: false,
            detached: false,
        }
    }

    /// Whether `s` may be sent now: the window holds fewer than `bounds` (any one stanza
    /// when nothing is unacknowledged, so that a large stanza cannot block the stream).
    pub(super) fn has_room(&self, s: &Stanza) -> bool {
        !self.detached
            && (self.unacked.is_empty()
                || (self.unacked.len() < self.bounds.stanzas
                    && self.unacked_bytes + s.len() <= self.bounds.bytes))
    }

    /// `s` was written to the stream.
    pub(super) fn record(&mut self, s: Stanza) {
        self.sent = self.sent.wrapping_add(1);
        self.unacked_bytes += s.len();
        self.unacked.push_back(s);
    }

    pub(super) fn detached(&self) -> bool {
        self.detached
    }

    fn acked(&self) -> u32 {
        // Invariant: the window never holds 2^32 stanzas (bounded by `bounds.stanzas`).
        self.sent.wrapping_sub(self.unacked.len() as u32)
    }
}

/// The client acknowledged more stanzas than were sent to it (XEP-0198 §4/§5,
/// `handled-count-too-high`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandledTooHigh {
    /// The `h` the client sent.
    pub h: u32,
    /// The stanzas the server sent (its outbound count).
    pub sent: u32,
}

impl Outbox {
    /// Turn on stream management: from now on every stanza that leaves the outbox is
    /// counted and kept until acknowledged, at most `bounds` at once (the rest waits in
    /// the queue, where the outbox's own bounds apply). The caller has taken the queue
    /// before (what was queued before `<enabled/>` is not counted).
    pub fn sm_enable(&self, bounds: SmBounds) {
        *self.sm.borrow_mut() = Some(SmOut::new(bounds, 0, 0));
    }

    /// Whether stream management is on.
    pub fn sm_enabled(&self) -> bool {
        self.sm.borrow().is_some()
    }

    /// Whether the session is detached (waiting for a resumption).
    pub fn sm_detached(&self) -> bool {
        self.sm.borrow().as_ref().is_some_and(SmOut::detached)
    }

    /// Whether the session is detached and its queue overflowed: it is ending, and
    /// nothing more should be sent to it.
    pub fn sm_overflowed(&self) -> bool {
        self.kick.get().is_some() && self.sm_detached()
    }

    /// One more stanza handled from the client; returns the new count.
    pub fn sm_handled_one(&self) -> u32 {
        let mut sm = self.sm.borrow_mut();
        match sm.as_mut() {
            Some(sm) => {
                sm.handled = sm.handled.wrapping_add(1);
                sm.handled
            }
            None => 0,
        }
    }

    /// Stanzas handled from the client (the `h` of `<a/>` and `<resumed/>`).
    pub fn sm_handled(&self) -> u32 {
        self.sm.borrow().as_ref().map_or(0, |sm| sm.handled)
    }

    /// Stanzas sent to the client since stream management began (its outbound `h`).
    pub fn sm_sent(&self) -> u32 {
        self.sm.borrow().as_ref().map_or(0, |sm| sm.sent)
    }

    /// Stanzas sent and not acknowledged.
    pub fn sm_unacked(&self) -> usize {
        self.sm.borrow().as_ref().map_or(0, |sm| sm.unacked.len())
    }

    /// The client handled `h` stanzas (`<a h/>`, or the `h` of `<resume/>`): forget the
    /// ones it acknowledged. Returns how many that was.
    ///
    /// # Errors
    ///
    /// [`HandledTooHigh`] if `h` acknowledges stanzas that were never sent (or that it
    /// acknowledged before); nothing changes then.
    pub fn sm_ack(&self, h: u32) -> Result<usize, HandledTooHigh> {
        let mut guard = self.sm.borrow_mut();
        let Some(sm) = guard.as_mut() else {
            return Ok(0);
        };
        let n = h.wrapping_sub(sm.acked()) as usize;
        if n > sm.unacked.len() {
            return Err(HandledTooHigh { h, sent: sm.sent });
        }
        for s in sm.unacked.drain(..n) {
            sm.unacked_bytes -= s.len();
        }
        if sm.unacked.capacity() > 64 && sm.unacked.is_empty() {
            sm.unacked = VecDeque::new();
        }
        sm.requested = false;
        drop(guard);
        if n > 0 {
            // The window opened: what waits may go.
            self.wake();
        }
        Ok(n)
    }

    /// Whether the server should ask the client for an acknowledgement (`<r/>`) now: half
    /// the window is in use, or it is full with stanzas waiting, and no request is
    /// outstanding. Returns `true` once per request (it then counts as sent).
    pub fn sm_request_due(&self) -> bool {
        let mut guard = self.sm.borrow_mut();
        let Some(sm) = guard.as_mut() else {
            return false;
        };
        if sm.requested || sm.detached || sm.unacked.is_empty() {
            return false;
        }
        let half = sm.unacked.len() * 2 >= sm.bounds.stanzas
            || sm.unacked_bytes * 2 >= sm.bounds.bytes
            || self.queue.borrow().front().is_some_and(|s| !sm.has_room(s));
        if half {
            sm.requested = true;
        }
        half
    }

    /// Ask for an acknowledgement regardless of the window (an idle stream's keepalive);
    /// returns false if one is already outstanding.
    pub fn sm_request_now(&self) -> bool {
        let mut guard = self.sm.borrow_mut();
        match guard.as_mut() {
            Some(sm) if !sm.requested && !sm.detached => {
                sm.requested = true;
                true
            }
            _ => false,
        }
    }

    /// The connection is gone and the session waits for a resumption. Nothing leaves the
    /// outbox any more; what waits in its backlog joins the queue; from now on the
    /// unacknowledged and queued stanzas together stay within `bounds`, and a stanza
    /// beyond them kicks the outbox ([`Kick::Overflow`]), calling `on_kick` (the router's
    /// signal to end the session). Returns false, changing nothing, if what the outbox
    /// holds already exceeds `bounds`.
    pub fn sm_detach(&self, bounds: SmBounds, on_kick: Rc<dyn Fn()>) -> bool {
        let mut guard = self.sm.borrow_mut();
        let Some(sm) = guard.as_mut() else {
            return false;
        };
        let backlog_bytes: usize = self.backlog.borrow().iter().map(Stanza::len).sum();
        let stanzas = sm.unacked.len() + self.queue.borrow().len() + self.backlog.borrow().len();
        let bytes = sm.unacked_bytes + self.bytes.get() + backlog_bytes;
        if self.kick.get().is_some() || stanzas > bounds.stanzas || bytes > bounds.bytes {
            return false;
        }
        let backlog = std::mem::take(&mut *self.backlog.borrow_mut());
        self.pool.release(self.backlog_charge.replace(0));
        self.bytes.set(self.bytes.get() + backlog_bytes);
        self.queue.borrow_mut().extend(backlog);
        sm.bounds = bounds;
        sm.detached = true;
        sm.requested = false;
        *self.on_kick.borrow_mut() = Some(on_kick);
        true
    }

    /// Whether `s` may join a detached outbox (see [`Outbox::sm_detach`]); `None` when
    /// the outbox is not detached.
    pub(super) fn detached_room(&self, s: &Stanza) -> Option<bool> {
        let guard = self.sm.borrow();
        let sm = guard.as_ref().filter(|sm| sm.detached)?;
        let stanzas = sm.unacked.len() + self.queue.borrow().len();
        let bytes = sm.unacked_bytes + self.bytes.get();
        Some(stanzas < sm.bounds.stanzas && bytes + s.len() <= sm.bounds.bytes)
    }

    /// Everything the client may not have handled, in order: the unacknowledged stanzas,
    /// then the queue, then the backlog. The outbox is left empty (its stream-management
    /// counters stay). For a resumption ([`Outbox::sm_resume`]) or, when the session
    /// ends, for the router to deliver elsewhere (XEP-0198 §4).
    pub fn sm_take_pending(&self) -> Vec<Stanza> {
        let mut all = Vec::new();
        if let Some(sm) = self.sm.borrow_mut().as_mut() {
            all.extend(sm.unacked.drain(..));
            sm.unacked_bytes = 0;
        }
        all.extend(self.queue.borrow_mut().drain(..));
        self.bytes.set(0);
        all.extend(self.backlog.borrow_mut().drain(..));
        self.pool.release(self.backlog_charge.replace(0));
        all
    }

    /// This (new) connection resumes a session: stream management continues with the
    /// client's count `h` as the stanzas sent, and `pending` (from the old outbox's
    /// [`Outbox::sm_take_pending`], after [`Outbox::sm_ack`] of `h`) goes out first, in
    /// order, counted again. `handled` is the old session's inbound count.
    pub fn sm_resume(&self, bounds: SmBounds, h: u32, handled: u32, pending: Vec<Stanza>) {
        *self.sm.borrow_mut() = Some(SmOut::new(bounds, h, handled));
        let mut q = self.queue.borrow_mut();
        let bytes: usize = pending.iter().map(Stanza::len).sum();
        let rest: Vec<Stanza> = q.drain(..).collect();
        q.extend(pending);
        q.extend(rest);
        drop(q);
        self.bytes.set(self.bytes.get() + bytes);
        self.wake();
    }

    /// Calls the hook [`Outbox::sm_detach`] installed (after a kick).
    pub(super) fn call_kick_hook(&self) {
        let hook = self.on_kick.borrow().clone();
        if let Some(f) = hook {
            f();
        }
    }
}
