//! Smoke run of the load generator (`examples/loadgen`, issue 5) against the real daemon, so
//! the benchmark tool cannot rot: a small fan-out and fan-in must deliver every acknowledged
//! item to every subscriber exactly once (XEP-0060 §7.1 publish, §7.1.2.1 notifications).

use super::{Daemon, Options};

#[path = "../../examples/loadgen/gen.rs"]
pub(super) mod r#gen;

const USERS: &[(&str, &str)] = &[
    ("u0", "pw"),
    ("u1", "pw"),
    ("u2", "pw"),
    ("u3", "pw"),
    ("u4", "pw"),
    ("u5", "pw"),
    ("u6", "pw"),
    ("u7", "pw"),
    ("u8", "pw"),
    ("u9", "pw"),
    ("p0", "pw"),
    ("p1", "pw"),
    ("p2", "pw"),
];

fn opts(d: &Daemon, count: usize, items: usize) -> r#gen::Opts {
    r#gen::Opts {
        name: "kinglet".into(),
        server: format!("127.0.0.1:{}", d.port),
        pid: Some(d.child.id()),
        count,
        items,
        window: 8,
        secs: 60,
        ..r#gen::Opts::default()
    }
}

/// A daemon with the [`USERS`] accounts.
fn daemon() -> Daemon {
    Daemon::start(Options {
        users: USERS,
        ..Options::default()
    })
}

#[test]
fn xep0060_7_1_loadgen_fanout_every_subscriber_gets_every_item_once() {
    let r = r#gen::fanout(&opts(&daemon(), 10, 50)).expect("fanout run");
    assert_eq!(r.acked, 50, "{r:?}");
    assert_eq!(r.refused, 0, "{r:?}");
    assert_eq!(r.notifications, 500, "{r:?}");
    assert!(r.exactly_once(), "{r:?}");
}

#[test]
fn xep0060_7_1_loadgen_fanin_one_subscriber_gets_every_item_once() {
    let r = r#gen::fanin(&opts(&daemon(), 3, 20)).expect("fanin run");
    assert_eq!(r.acked, 60, "{r:?}");
    assert_eq!(r.notifications, 60, "{r:?}");
    assert!(r.exactly_once(), "{r:?}");
}

/// XEP-0198 §5 through the load generator's `resume` scenario (the benchmark of issue 12):
/// five subscribers made resumable, their sockets cut without a stream close, ten items
/// published while they are detached; after reconnection every session is resumed and
/// gets each item exactly once.
#[test]
fn xep0198_5_loadgen_resume_every_detached_session_gets_its_queued_items_once() {
    let d = daemon();
    let r = r#gen::resume_run(&opts(&d, 5, 10)).expect("resume run");
    assert_eq!(r.sessions, 5, "{r:?}");
    assert!(
        r.detach_secs.is_some(),
        "the server closed the cut sockets: {r:?}"
    );
    assert_eq!((r.resumed, r.failed), (5, 0), "{r:?}");
    assert_eq!(r.notifications, 50, "{r:?}");
    assert_eq!((r.missing, r.duplicates), (0, 0), "{r:?}");
    assert!(r.exactly_once(), "{r:?}");
}
