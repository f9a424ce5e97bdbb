//! Unit tests of `crate::outbox`.

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

fn drained(o: &Outbox) -> String {
    let mut v = Vec::new();
    o.drain_into(&mut v);
    String::from_utf8(v).expect("utf-8")
}

/// Issue 10: pub-sub output beyond the outbox's room waits in the backlog, in order,
/// charged to the shared account, and never closes the connection; each drain hands
/// out at most half an outbox of it, leaving room for direct stanzas.
#[test]
fn offers_beyond_the_room_wait_in_the_backlog_in_order() {
    let pool = Backlog::new();
    let o = Outbox::with_backlog(4, 1000, pool.clone());
    for i in 0..10 {
        assert!(o.offer(Stanza::from(format!("<m{i}/>"))));
    }
    assert_eq!(o.kicked(), None);
    assert_eq!((o.len(), o.backlog_len()), (10, 8));
    assert_eq!(pool.bytes(), 8 * (5 + BACKLOG_ENTRY_BYTES));
    // The other half of the outbox is free for direct stanzas.
    assert!(o.push(Stanza::from("<d1/>")));
    assert!(o.push(Stanza::from("<d2/>")));
    assert_eq!(drained(&o), "<m0/><m1/><d1/><d2/>");
    let mut all = String::new();
    for _ in 0..10 {
        all.push_str(&drained(&o));
    }
    assert_eq!(all, "<m2/><m3/><m4/><m5/><m6/><m7/><m8/><m9/>");
    assert!(o.is_empty());
    assert_eq!(pool.bytes(), 0);
}

/// A kicked or dropped outbox releases its backlog's charge.
#[test]
fn backlog_charge_is_released_on_kick_and_drop() {
    let pool = Backlog::new();
    let a = Outbox::with_backlog(2, 1000, pool.clone());
    let b = Outbox::with_backlog(2, 1000, pool.clone());
    for i in 0..5 {
        a.offer(Stanza::from(format!("<a{i}/>")));
        b.offer(Stanza::from(format!("<b{i}/>")));
    }
    assert_eq!(pool.bytes(), 8 * (5 + BACKLOG_ENTRY_BYTES));
    a.kick(Kick::Overflow);
    assert_eq!(pool.bytes(), 4 * (5 + BACKLOG_ENTRY_BYTES));
    assert!(!a.offer(Stanza::from("<late/>")));
    drop(b);
    assert_eq!(pool.bytes(), 0);
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

fn sent(o: &Outbox) -> String {
    let mut v = Vec::new();
    o.take_queue_into(&mut v);
    String::from_utf8(v).expect("utf-8")
}

const WINDOW: SmBounds = SmBounds {
    stanzas: 4,
    bytes: 1000,
};

/// An outbox with stream management on ([`WINDOW`]) and `<m0/>`…`<m{n-1}/>` queued.
fn managed_with(n: usize) -> Rc<Outbox> {
    let o = Outbox::new(64, 1 << 16);
    o.sm_enable(WINDOW);
    for i in 0..n {
        assert!(o.push(Stanza::from(format!("<m{i}/>"))));
    }
    o
}

/// XEP-0198: stanzas that leave are counted and kept until acknowledged; the window
/// holds at most its bound, the rest waits in the queue; an ack opens it again.
#[test]
fn sm_counts_keeps_and_windows_what_leaves() {
    let o = Outbox::new(64, 1 << 16);
    o.push(Stanza::from("<before/>"));
    assert_eq!(sent(&o), "<before/>", "not counted: before enable");
    o.sm_enable(WINDOW);
    for i in 0..6 {
        assert!(o.push(Stanza::from(format!("<m{i}/>"))));
    }
    assert_eq!(sent(&o), "<m0/><m1/><m2/><m3/>");
    assert_eq!((o.sm_sent(), o.sm_unacked(), o.len()), (4, 4, 2));
    assert!(o.sm_request_due(), "window full: ask for an ack");
    assert!(!o.sm_request_due(), "once per request");
    assert_eq!(sent(&o), "", "window closed");
    assert_eq!(o.sm_ack(3), Ok(3));
    assert_eq!(sent(&o), "<m4/><m5/>");
    assert_eq!((o.sm_sent(), o.sm_unacked()), (6, 3));
    // An ack of what was already acknowledged changes nothing; one beyond what was sent
    // is refused, changing nothing.
    assert_eq!(o.sm_ack(3), Ok(0));
    assert_eq!(o.sm_ack(7), Err(HandledTooHigh { h: 7, sent: 6 }));
    assert_eq!(
        o.sm_ack(2),
        Err(HandledTooHigh { h: 2, sent: 6 }),
        "h went backwards"
    );
    assert_eq!(o.sm_unacked(), 3);
    assert_eq!(o.sm_ack(6), Ok(3));
    assert_eq!(o.sm_unacked(), 0);
}

/// `h` wraps at 2^32 (XEP-0198 §5): a resumed count near the top goes on through zero.
#[test]
fn sm_h_wraps_at_2_pow_32() {
    let o = Outbox::new(64, 1 << 16);
    o.sm_resume(WINDOW, u32::MAX - 1, 0, Vec::new());
    for i in 0..3 {
        o.push(Stanza::from(format!("<m{i}/>")));
    }
    assert_eq!(sent(&o), "<m0/><m1/><m2/>");
    assert_eq!(o.sm_sent(), 1, "u32::MAX - 1 + 3 wraps to 1");
    assert_eq!(o.sm_ack(u32::MAX), Ok(1));
    assert_eq!(o.sm_ack(1), Ok(2));
    assert_eq!(o.sm_ack(2), Err(HandledTooHigh { h: 2, sent: 1 }));
    for _ in 0..3 {
        o.sm_handled_one();
    }
    assert_eq!(o.sm_handled(), 3);
}

/// A large stanza is never stuck behind the byte window: it goes alone.
#[test]
fn sm_window_lets_one_large_stanza_through() {
    let o = Outbox::new(64, 1 << 16);
    o.sm_enable(SmBounds {
        stanzas: 4,
        bytes: 8,
    });
    o.push(Stanza::from("<0123456789/>"));
    o.push(Stanza::from("<b/>"));
    assert_eq!(sent(&o), "<0123456789/>");
    assert!(o.sm_request_due());
    assert_eq!(o.sm_ack(1), Ok(1));
    assert_eq!(sent(&o), "<b/>");
}

/// Detached: nothing leaves; the backlog joins the queue; within the bounds stanzas are
/// kept, beyond them the outbox is kicked and the router's hook called; everything the
/// client did not acknowledge comes back in order.
#[test]
fn sm_detached_keeps_within_bounds_then_kicks() {
    let pool = Backlog::new();
    let o = Outbox::with_backlog(4, 1 << 16, pool.clone());
    o.sm_enable(WINDOW);
    o.push(Stanza::from("<u1/>"));
    o.push(Stanza::from("<u2/>"));
    assert_eq!(sent(&o), "<u1/><u2/>");
    for i in 0..4 {
        o.offer(Stanza::from(format!("<p{i}/>")));
    }
    assert!(o.backlog_len() > 0 && pool.bytes() > 0);
    let kicked = Rc::new(Cell::new(0));
    let k = kicked.clone();
    let bounds = SmBounds {
        stanzas: 7,
        bytes: 1000,
    };
    assert!(o.sm_detach(bounds, Rc::new(move || k.set(k.get() + 1))));
    assert!(o.sm_detached());
    assert_eq!(pool.bytes(), 0, "the backlog no longer holds anyone back");
    assert_eq!(sent(&o), "", "nothing leaves a detached outbox");
    assert!(o.push(Stanza::from("<d/>")), "7th of 7");
    assert_eq!(kicked.get(), 0);
    assert!(
        o.offer(Stanza::from("<over/>")),
        "kept, to be delivered elsewhere"
    );
    assert_eq!((o.kicked(), kicked.get()), (Some(Kick::Overflow), 1));
    assert!(o.sm_overflowed());
    assert!(!o.push(Stanza::from("<after/>")), "refused once kicked");
    let pending: Vec<String> = o.sm_take_pending().iter().map(Stanza::to_text).collect();
    assert_eq!(
        pending,
        [
            "<u1/>", "<u2/>", "<p0/>", "<p1/>", "<p2/>", "<p3/>", "<d/>", "<over/>"
        ]
    );
    assert!(o.is_empty());
}

/// A detach that would already exceed the bounds is refused and changes nothing.
#[test]
fn sm_detach_refused_over_bounds() {
    let o = managed_with(3);
    let tight = SmBounds {
        stanzas: 2,
        bytes: 1000,
    };
    assert!(!o.sm_detach(tight, Rc::new(|| {})));
    assert!(!o.sm_detached());
    assert_eq!(sent(&o), "<m0/><m1/><m2/>");
}

/// Resumption: the new outbox sends what the client did not acknowledge first, in order,
/// counting on from the client's `h`, then what was queued for it meanwhile.
#[test]
fn sm_resume_redelivers_unacked_first() {
    let old = managed_with(3);
    assert_eq!(sent(&old), "<m0/><m1/><m2/>");
    old.sm_handled_one();
    assert!(old.sm_detach(WINDOW, Rc::new(|| {})));
    old.push(Stanza::from("<late/>"));
    assert_eq!(old.sm_ack(1), Ok(1));
    let handled = old.sm_handled();
    let new = Outbox::new(64, 1 << 16);
    new.push(Stanza::from("<fresh/>"));
    new.sm_resume(WINDOW, 1, handled, old.sm_take_pending());
    assert_eq!(sent(&new), "<m1/><m2/><late/><fresh/>");
    assert_eq!((new.sm_sent(), new.sm_handled()), (5, 1));
    assert_eq!(new.sm_ack(5), Ok(4));
}
