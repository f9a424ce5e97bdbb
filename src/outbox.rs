//! The per-connection outbox: the only way the router hands bytes to a connection.
//!
//! The router never awaits a connection (docs/architecture.md, "Slow readers never block
//! anyone"). It calls [`Outbox::push`], which either queues a shared, already-serialised
//! stanza or, when the queue would exceed its bounds, marks the connection as overflowed
//! so that its task closes the stream with `<policy-violation/>`. The connection task waits on [`Outbox::ready`].
//!
//! Memory: an empty outbox is one `VecDeque` header with no allocation (about 80 bytes in
//! all). A full one holds at most `outbox_max_stanzas` [`Stanza`] handles (48 bytes each)
//! and pins at most `outbox_max_bytes` of stanza text. The text is shared: a broadcast is
//! one `Rc<str>` for all its recipients, and a pub-sub notification shares its event
//! payload (the item, serialised once per publish) between every subscriber, only the
//! envelope (`<message to=…>`) being each recipient's own. The byte bound counts the full
//! length of every queued stanza (what the socket will be written), so it is conservative.
//!
//! # Pub-sub output and its backlog
//!
//! Pub-sub replies and notifications are released in bursts: one group commit can make
//! thousands of them deliverable at once, far more than a reader that keeps up has room
//! for at that instant. They are therefore *offered* ([`Outbox::offer`]) rather than
//! pushed: an offer takes at most half of the outbox (the other half stays free for
//! messages, presence and roster pushes, which keep the overflow policy above), and what
//! does not fit waits in the outbox's *backlog*, in order, until the connection task has
//! written what is queued ([`Outbox::drain_into`] refills the queue from the backlog). A
//! backlog never closes the connection: a reader that keeps reading gets all of it. A
//! reader that stops reading is closed when its writes stay blocked for
//! `write_timeout_secs`, and its backlog is dropped.
//!
//! Backlogs are bounded together, not per connection: every outbox charges its backlog
//! (text plus [`BACKLOG_ENTRY_BYTES`] per entry) to one process-wide [`Backlog`]. The
//! pub-sub engine counts that total with its held outputs against
//! `limits.pubsub_backlog_bytes` and, above it, stops taking new requests: back-pressure
//! goes to the publishers (their requests wait, their sessions stop being read), never to
//! the readers. So the bytes in all backlogs stay below about that bound plus one commit's
//! release.
//!
//! # Stream management (XEP-0198)
//!
//! Once the client enables stream management ([`Outbox::sm_enable`]), every stanza that
//! leaves the outbox is counted (the server's outbound `h`) and kept, shared, until the
//! client acknowledges it (`<a h/>`, [`Outbox::sm_ack`]). At most [`SmBounds`] of them are
//! unacknowledged at once: beyond that the send window is closed, stanzas wait in the
//! queue (where the bounds above apply as for a client that does not read), and the
//! session asks for an acknowledgement ([`Outbox::sm_request_due`]).
//!
//! When the connection drops, a resumable session is *detached* ([`Outbox::sm_detach`]):
//! its outbox stays with its resource in the router and keeps collecting what is sent to
//! it, unacknowledged and queued stanzas together within the detached bounds; a stanza
//! beyond them kicks the outbox, which ends the detached session. A resuming connection
//! takes everything the client did not acknowledge ([`Outbox::sm_take_pending`],
//! [`Outbox::sm_resume`]); a session that ends hands the same to the router, which
//! delivers messages elsewhere or offline (XEP-0198 §4).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::proto::StreamCondition;

mod sm;
use sm::SmOut;
pub use sm::{HandledTooHigh, SmBounds};

/// Why the connection must close, as decided outside the connection task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// The outbox bounds were exceeded: a slow consumer.
    Overflow,
    /// Closed with this stream condition (e.g. `conflict` when a new session took the resource).
    Stream(StreamCondition),
}

/// A serialised stanza as queued: `head`, then the `shared` middle part if any, then
/// `tail`. A whole stanza is just `head`; a notification is its recipient's envelope
/// around text shared by every recipient (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    head: Rc<str>,
    shared: Option<(Rc<str>, Cow<'static, str>)>,
}

impl Stanza {
    /// `head`, then `shared` (not copied), then `tail` (usually a constant closing tag
    /// sequence, so no allocation).
    pub fn wrapped(head: &str, shared: &Rc<str>, tail: Cow<'static, str>) -> Stanza {
        Stanza {
            head: Rc::from(head),
            shared: Some((shared.clone(), tail)),
        }
    }

    /// The first part: the whole stanza, or a notification's envelope up to the shared
    /// part (its start tag, with `from` and `to`, is always in it).
    pub fn head(&self) -> &str {
        &self.head
    }

    /// Length in bytes of the serialised stanza.
    pub fn len(&self) -> usize {
        self.head.len() + self.shared.as_ref().map_or(0, |(m, t)| m.len() + t.len())
    }

    /// Whether the stanza is empty (never, for a real stanza).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the serialised stanza to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head.as_bytes());
        if let Some((m, t)) = &self.shared {
            out.extend_from_slice(m.as_bytes());
            out.extend_from_slice(t.as_bytes());
        }
    }

    /// Whether both stanzas carry the same shared part (the same allocation, not a copy).
    pub fn shares_payload_with(&self, other: &Stanza) -> bool {
        match (&self.shared, &other.shared) {
            (Some((a, _)), Some((b, _))) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The stanza as one string (a copy; for tests and logs, not for sending).
    pub fn to_text(&self) -> String {
        let mut v = Vec::with_capacity(self.len());
        self.write_to(&mut v);
        String::from_utf8(v).expect("invariant: the parts are str")
    }
}

impl From<Rc<str>> for Stanza {
    fn from(head: Rc<str>) -> Stanza {
        Stanza { head, shared: None }
    }
}

impl From<&str> for Stanza {
    fn from(s: &str) -> Stanza {
        Stanza::from(Rc::<str>::from(s))
    }
}

impl From<String> for Stanza {
    fn from(s: String) -> Stanza {
        Stanza::from(Rc::<str>::from(s))
    }
}

/// Bookkeeping charged per backlog entry on top of its text (the `Stanza` handle and the
/// queue slot, rounded up).
pub const BACKLOG_ENTRY_BYTES: usize = 64;

/// The bytes waiting in the backlogs of every outbox of the process (see the module
/// documentation). Shared (`Rc`) by the outboxes, which charge it, and the router, which
/// reads it for back-pressure.
#[derive(Debug, Default)]
pub struct Backlog {
    bytes: Cell<usize>,
}

impl Backlog {
    /// A new, empty account.
    pub fn new() -> Rc<Backlog> {
        Rc::new(Backlog::default())
    }

    /// Bytes charged by all backlogs together.
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    fn charge(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n);
    }

    fn release(&self, n: usize) {
        // Invariant: every release matches an earlier charge.
        debug_assert!(n <= self.bytes.get());
        self.bytes.set(self.bytes.get().saturating_sub(n));
    }
}

fn charge_of(s: &Stanza) -> usize {
    s.len() + BACKLOG_ENTRY_BYTES
}

/// A bounded queue of serialised stanzas for one connection, with a backlog for pub-sub
/// output (see the module documentation).
pub struct Outbox {
    /// Invariant: `bytes` is the sum of the lengths of the queued stanzas.
    queue: RefCell<VecDeque<Stanza>>,
    bytes: Cell<usize>,
    max_stanzas: usize,
    max_bytes: usize,
    /// Pub-sub output that did not fit, oldest first. Invariant: `backlog_charge` is the
    /// sum of [`charge_of`] over it, and is charged to `pool`.
    backlog: RefCell<VecDeque<Stanza>>,
    backlog_charge: Cell<usize>,
    pool: Rc<Backlog>,
    /// The router asked the connection task not to read more input for now.
    paused: Cell<bool>,
    kick: Cell<Option<Kick>>,
    waker: Cell<Option<Waker>>,
    /// XEP-0198 state, once the client enabled stream management.
    sm: RefCell<Option<SmOut>>,
    /// Called after a kick while the session is detached (the router's signal).
    on_kick: RefCell<Option<Rc<dyn Fn()>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.queue.borrow().len())
            .field("bytes", &self.bytes.get())
            .field("backlog", &self.backlog.borrow().len())
            .field("paused", &self.paused.get())
            .field("kick", &self.kick.get())
            .finish()
    }
}

impl Outbox {
    /// An empty outbox with the given bounds and a backlog account of its own.
    pub fn new(max_stanzas: usize, max_bytes: usize) -> Rc<Outbox> {
        Outbox::with_backlog(max_stanzas, max_bytes, Backlog::new())
    }

    /// An empty outbox with the given bounds whose backlog is charged to `pool`.
    pub fn with_backlog(max_stanzas: usize, max_bytes: usize, pool: Rc<Backlog>) -> Rc<Outbox> {
        Rc::new(Outbox {
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            max_stanzas,
            max_bytes,
            backlog: RefCell::new(VecDeque::new()),
            backlog_charge: Cell::new(0),
            pool,
            paused: Cell::new(false),
            kick: Cell::new(None),
            waker: Cell::new(None),
            sm: RefCell::new(None),
            on_kick: RefCell::new(None),
        })
    }

    /// Queue a stanza. Returns `false` (and marks the outbox overflowed) when a bound would be
    /// exceeded, or when the connection is already being closed.
    pub fn push(&self, stanza: impl Into<Stanza>) -> bool {
        let stanza = match self.admit(stanza.into()) {
            Ok(s) => s,
            Err(taken) => return taken,
        };
        let mut q = self.queue.borrow_mut();
        let new_bytes = self.bytes.get() + stanza.len();
        if q.len() >= self.max_stanzas || new_bytes > self.max_bytes {
            drop(q);
            self.kick(Kick::Overflow);
            return false;
        }
        q.push_back(stanza);
        self.bytes.set(new_bytes);
        drop(q);
        self.wake();
        true
    }

    /// Queue pub-sub output: into the queue while pub-sub output fills at most half of it
    /// and nothing older waits in the backlog, else at the end of the backlog. Never closes
    /// the connection; returns `false` only when it is already being closed.
    pub fn offer(&self, stanza: impl Into<Stanza>) -> bool {
        let stanza = match self.admit(stanza.into()) {
            Ok(s) => s,
            Err(taken) => return taken,
        };
        if self.backlog.borrow().is_empty() && self.fits_share(&stanza) {
            self.bytes.set(self.bytes.get() + stanza.len());
            self.queue.borrow_mut().push_back(stanza);
        } else {
            let c = charge_of(&stanza);
            self.pool.charge(c);
            self.backlog_charge.set(self.backlog_charge.get() + c);
            self.backlog.borrow_mut().push_back(stanza);
        }
        self.wake();
        true
    }

    /// What `push` and `offer` do first: a kicked outbox takes nothing (`Err(false)`); a
    /// detached one queues the stanza itself (`Err(true)`, see [`Outbox::push_detached`]);
    /// otherwise the stanza is for the caller to queue.
    fn admit(&self, stanza: Stanza) -> Result<Stanza, bool> {
        if self.kick.get().is_some() {
            return Err(false);
        }
        match self.detached_room(&stanza) {
            Some(room) => Err(self.push_detached(stanza, room)),
            None => Ok(stanza),
        }
    }

    /// Queue `stanza` in a detached outbox, and kick it if there was no `room`: a detached
    /// session that exceeds its bounds ends (see [`Outbox::sm_detach`]).
    ///
    /// The stanza that overflows is kept all the same (one beyond the bounds), so that
    /// the router delivers it elsewhere with the rest when it ends the session.
    fn push_detached(&self, stanza: Stanza, room: bool) -> bool {
        self.bytes.set(self.bytes.get() + stanza.len());
        self.queue.borrow_mut().push_back(stanza);
        if !room {
            self.kick(Kick::Overflow);
        }
        true
    }

    /// Whether `s` fits in the half of the queue that pub-sub output may use (an empty
    /// queue takes any one stanza).
    fn fits_share(&self, s: &Stanza) -> bool {
        let q = self.queue.borrow();
        q.is_empty()
            || (q.len() < (self.max_stanzas / 2).max(1)
                && self.bytes.get() + s.len() <= self.max_bytes / 2)
    }

    /// Ask the connection to close with a stream error. Its backlog is dropped.
    pub fn kick(&self, why: Kick) {
        let first = self.kick.get().is_none();
        if first {
            self.kick.set(Some(why));
        }
        self.discard_backlog();
        self.wake();
        if first {
            self.call_kick_hook();
        }
    }

    /// Whether the connection has been asked to close, and why.
    pub fn kicked(&self) -> Option<Kick> {
        self.kick.get()
    }

    /// Move every queued stanza into `out`, releasing the queue's allocation, then refill
    /// the queue from the backlog (up to the pub-sub share; the connection task takes it on
    /// its next round, after writing `out`). Returns whether backlog bytes were released.
    pub fn drain_into(&self, out: &mut Vec<u8>) -> bool {
        self.take_queue_into(out);
        let mut moved = 0;
        loop {
            let mut b = self.backlog.borrow_mut();
            let Some(next) = b.front() else { break };
            if !self.fits_share(next) {
                break;
            }
            let Some(s) = b.pop_front() else { break };
            drop(b);
            moved += charge_of(&s);
            self.bytes.set(self.bytes.get() + s.len());
            self.queue.borrow_mut().push_back(s);
        }
        if moved > 0 {
            self.backlog_charge.set(self.backlog_charge.get() - moved);
            self.pool.release(moved);
            if self.backlog.borrow().capacity() > 64 && self.backlog.borrow().is_empty() {
                *self.backlog.borrow_mut() = VecDeque::new();
            }
        }
        moved > 0
    }

    /// Move every queued stanza into `out`, leaving the backlog where it is (the session
    /// does this after each stanza it handles; the backlog goes out through
    /// [`Outbox::drain_into`], one share per write).
    ///
    /// With stream management on, stanzas leave only while the send window has room (the
    /// rest stays queued until the client acknowledges), each is counted and kept until
    /// acknowledged, and nothing leaves a detached outbox.
    pub fn take_queue_into(&self, out: &mut Vec<u8>) {
        let mut q = self.queue.borrow_mut();
        let mut sm = self.sm.borrow_mut();
        match sm.as_mut() {
            None => {
                for s in q.drain(..) {
                    s.write_to(out);
                }
                self.bytes.set(0);
            }
            Some(sm) => {
                while q.front().is_some_and(|s| sm.has_room(s)) {
                    let Some(s) = q.pop_front() else { break };
                    self.bytes.set(self.bytes.get() - s.len());
                    s.write_to(out);
                    sm.record(s);
                }
            }
        }
        if q.capacity() > 8 && q.is_empty() {
            *q = VecDeque::new();
        }
    }

    /// Whether the connection task has something to send now: a queued stanza the send
    /// window lets go, or backlog to refill an empty queue with.
    fn sendable(&self) -> bool {
        let q = self.queue.borrow();
        let sm = self.sm.borrow();
        match q.front() {
            Some(s) => sm.as_ref().is_none_or(|sm| sm.has_room(s)),
            None => {
                !self.backlog.borrow().is_empty() && sm.as_ref().is_none_or(|sm| !sm.detached())
            }
        }
    }

    /// Drop the backlog (the connection is closing) and release its charge.
    pub fn discard_backlog(&self) {
        let b = std::mem::take(&mut *self.backlog.borrow_mut());
        drop(b);
        self.pool.release(self.backlog_charge.replace(0));
    }

    /// Number of stanzas waiting: queued and in the backlog.
    pub fn len(&self) -> usize {
        self.queue.borrow().len() + self.backlog.borrow().len()
    }

    /// Whether nothing waits, neither queued nor in the backlog.
    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty() && self.backlog.borrow().is_empty()
    }

    /// Number of stanzas in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.borrow().len()
    }

    /// Stop reading the connection's input until [`Outbox::resume_reading`] (back-pressure
    /// on a client whose pub-sub requests wait).
    pub fn pause_reading(&self) {
        self.paused.set(true);
    }

    /// Read the connection's input again.
    pub fn resume_reading(&self) {
        if self.paused.replace(false) {
            self.wake();
        }
    }

    /// Whether reading is paused.
    pub fn reading_paused(&self) -> bool {
        self.paused.get()
    }

    /// Resolves when there is something to send (that the stream-management window lets
    /// go), the connection was kicked, or (if
    /// `paused`, the state the caller saw) reading was resumed.
    pub async fn ready(&self, paused: bool) {
        poll_fn(|cx| {
            if self.kick.get().is_some() || self.sendable() || (paused && !self.paused.get()) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.discard_backlog();
    }
}

#[cfg(test)]
mod tests;
