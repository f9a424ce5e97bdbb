//! The per-connection outbox: the only way the router hands bytes to a connection.
//!
//! The router never awaits a connection (DESIGN.md, "Slow consumers"). It calls
//! [`Outbox::push`], which either queues a shared, already-serialised stanza or, when the
//! queue would exceed its bounds, marks the connection as overflowed so that its task closes
//! the stream with `<policy-violation/>`. The connection task waits on [`Outbox::ready`].
//!
//! Memory: an empty outbox is one `VecDeque` header with no allocation (about 80 bytes in
//! all). A full one holds at most `outbox_max_stanzas` [`Stanza`] handles (48 bytes each)
//! and pins at most `outbox_max_bytes` of stanza text. The text is shared: a broadcast is
//! one `Rc<str>` for all its recipients, and a pub-sub notification shares its event
//! payload (the item, serialised once per publish) between every subscriber, only the
//! envelope (`<message to=…>`) being each recipient's own. The byte bound counts the full
//! length of every queued stanza (what the socket will be written), so it is conservative.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::proto::StreamCondition;

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

/// A bounded queue of serialised stanzas for one connection.
pub struct Outbox {
    /// Invariant: `bytes` is the sum of the lengths of the queued stanzas.
    queue: RefCell<VecDeque<Stanza>>,
    bytes: Cell<usize>,
    max_stanzas: usize,
    max_bytes: usize,
    kick: Cell<Option<Kick>>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .field("bytes", &self.bytes.get())
            .field("kick", &self.kick.get())
            .finish()
    }
}

impl Outbox {
    /// An empty outbox with the given bounds.
    pub fn new(max_stanzas: usize, max_bytes: usize) -> Rc<Outbox> {
        Rc::new(Outbox {
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            max_stanzas,
            max_bytes,
            kick: Cell::new(None),
            waker: Cell::new(None),
        })
    }

    /// Queue a stanza. Returns `false` (and marks the outbox overflowed) when a bound would be
    /// exceeded, or when the connection is already being closed.
    pub fn push(&self, stanza: impl Into<Stanza>) -> bool {
        let stanza = stanza.into();
        if self.kick.get().is_some() {
            return false;
        }
        let mut q = self.queue.borrow_mut();
        let new_bytes = self.bytes.get() + stanza.len();
        if q.len() >= self.max_stanzas || new_bytes > self.max_bytes {
            drop(q);
            self.kick.set(Some(Kick::Overflow));
            self.wake();
            return false;
        }
        q.push_back(stanza);
        self.bytes.set(new_bytes);
        drop(q);
        self.wake();
        true
    }

    /// Ask the connection to close with a stream error.
    pub fn kick(&self, why: Kick) {
        if self.kick.get().is_none() {
            self.kick.set(Some(why));
        }
        self.wake();
    }

    /// Whether the connection has been asked to close, and why.
    pub fn kicked(&self) -> Option<Kick> {
        self.kick.get()
    }

    /// Move every queued stanza into `out`, releasing the queue's allocation.
    pub fn drain_into(&self, out: &mut Vec<u8>) {
        let mut q = self.queue.borrow_mut();
        for s in q.drain(..) {
            s.write_to(out);
        }
        if q.capacity() > 8 {
            *q = VecDeque::new();
        }
        self.bytes.set(0);
    }

    /// Number of queued stanzas.
    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Resolves when there is something to send or the connection was kicked.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            if self.kick.get().is_some() || !self.queue.borrow().is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_bytes() {
        let o = Outbox::new(2, 100);
        assert!(o.push(Rc::from("<a/>")));
        assert!(o.push(Rc::from("<b/>")));
        assert!(!o.push(Rc::from("<c/>")));
        assert_eq!(o.kicked(), Some(Kick::Overflow));
        let o = Outbox::new(10, 10);
        assert!(o.push(Rc::from("12345")));
        assert!(!o.push(Rc::from("123456")));
        assert_eq!(o.kicked(), Some(Kick::Overflow));
    }

    #[test]
    fn drain_concatenates_and_resets() {
        let o = Outbox::new(10, 100);
        o.push(Rc::from("<a/>"));
        o.push(Rc::from("<b/>"));
        let mut out = Vec::new();
        o.drain_into(&mut out);
        assert_eq!(out, b"<a/><b/>");
        assert!(o.is_empty());
        assert!(o.push(Rc::from("0123456789".repeat(9).as_str())));
    }
}
