//! Issue 10, "a subscriber reading at full speed is disconnected as a slow consumer when
//! many devices publish at once": a reader that keeps up is never closed, whatever the
//! group commit batches together; the publishers wait instead. A reader that stops
//! reading its socket is still closed. Loopback only; every run is bounded in count and
//! time (the load generator's own deadlines, and the waits below).

use std::time::{Duration, Instant};

use super::client::Client;
use super::{Daemon, Options};

const PS: &str = "http://jabber.org/protocol/pubsub";

/// The log lines worth showing when a test fails (warnings and errors).
fn warnings(log: &str) -> String {
    let v: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .take(40)
        .collect();
    v.join("\n")
}

use super::loadgen::r#gen;

/// `u0` (the subscriber) and the publishers `p0..p<n-1>`, password `pw`.
fn accounts(publishers: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..publishers).map(|p| format!("p{p}")).collect();
    v.push("u0".into());
    v.push("u1".into());
    v
}

fn daemon(publishers: usize, extra: &'static str) -> Daemon {
    Daemon::start(Options {
        tls: false,
        direct_tls: false,
        users: &[],
        accounts: accounts(publishers),
        extra,
        ..Options::default()
    })
}

/// A fan-in run with `o` against `d`, and `d`'s log after it; panics (with the log's
/// warnings) if the run fails.
fn fanin(d: &Daemon, o: &r#gen::Opts) -> (r#gen::FlowReport, String) {
    let r = r#gen::fanin(o);
    let log = d.log();
    let r = r.unwrap_or_else(|e| panic!("fan-in failed: {e}\n{}", warnings(&log)));
    (r, log)
}

fn opts(d: &Daemon, publishers: usize, items: usize, window: usize) -> r#gen::Opts {
    r#gen::Opts {
        name: "kinglet".into(),
        server: format!("127.0.0.1:{}", d.port),
        pid: Some(d.child.id()),
        count: publishers,
        items,
        window,
        secs: 60,
        // PLAIN on loopback: SCRAM's key derivation costs about 0.1 s per login in a
        // debug build, 20 s for 200 publishers.
        plain: true,
        ..r#gen::Opts::default()
    }
}

/// The fan-in of the issue: `publishers` accounts publish `items` each to their own node,
/// `window` requests in flight each; one subscriber on every node reads as fast as it can.
fn fanin_reader_keeps_up(
    publishers: usize,
    items: usize,
    window: usize,
    extra: &'static str,
) -> String {
    let t0 = Instant::now();
    let d = daemon(publishers, extra);
    let (r, log) = fanin(&d, &opts(&d, publishers, items, window));
    let expected = (publishers * items) as u64;
    eprintln!(
        "fan-in {publishers} publishers x {items} items (window {window}): {} of {expected} notifications, {} acked, {} refused, {:.1} s flow, {:.1} s in all",
        r.notifications,
        r.acked,
        r.refused,
        r.secs,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        !log.contains("slow consumer"),
        "a reader that keeps up was closed:\n{}",
        warnings(&log)
    );
    assert_eq!(r.acked, expected, "{r:?}");
    assert_eq!(r.refused, 0, "{r:?}");
    assert_eq!(r.notifications, expected, "{r:?}");
    assert!(r.exactly_once(), "{r:?}");
    log
}

#[test]
fn reader_keeping_up_with_100_publishers_gets_every_notification() {
    fanin_reader_keeps_up(100, 50, 10, "");
}

#[test]
fn reader_keeping_up_with_200_publishers_gets_every_notification() {
    fanin_reader_keeps_up(200, 50, 10, "");
}

/// One client pipelining 500 publishes in one write (the issue saw it with 250): neither
/// it nor its subscriber is closed, and every item arrives.
#[test]
fn pipelined_publishes_close_neither_publisher_nor_subscriber() {
    fanin_reader_keeps_up(1, 500, 500, "");
}

/// The same over the smallest `pubsub_backlog_bytes`: the publisher's requests are
/// deferred, its connection is not read meanwhile (the rest of its pipeline waits in the
/// session's buffer and the socket), and it resumes where it stopped: nothing refused,
/// nothing lost.
#[test]
fn pipelining_publisher_waits_at_the_backlog_bound_and_resumes() {
    let log = fanin_reader_keeps_up(1, 500, 500, "[limits]\npubsub_backlog_bytes = 65536\n");
    assert!(
        log.lines()
            .any(|l| l.contains("pub-sub back-pressure") && l.contains("p0@localhost")),
        "the publisher was never held back"
    );
}

/// The same through TLS: reading stops in the middle of what one TLS read decrypted, and
/// resumes from the plaintext the TLS session still holds, without new bytes arriving.
///
/// Whether the publisher is held back depends on how much the loopback socket buffers
/// absorb (the kernel sizes the server's send buffer from the loopback MSS, up to 4 MiB
/// with `tcp_wmem`'s default) and on how fast the disk commits. So the scenario runs in
/// rounds of growing size, each checked in full (every publish acknowledged, every
/// notification received, nobody closed), until the log shows the publisher held back;
/// the last round's notifications exceed what the buffers can take.
#[test]
fn paused_tls_publisher_resumes_from_buffered_input() {
    let d = Daemon::start(Options {
        accounts: accounts(1),
        users: &[],
        extra: "[limits]\npubsub_backlog_bytes = 65536\n",
        ..Options::default()
    });
    let ca = d.cert.clone().expect("a certificate");
    let mut publisher = Client::login(d.port, &ca, "p0", "pw", "pub");
    // (publishes, payload bytes): 0.6 MiB, 2 MiB, then 7 MiB of notifications. Payloads
    // stay below a TLS record (16 KiB), so one record holds several publishes.
    let rounds = [(300, 2000), (1000, 2000), (700, 10000)];
    for (round, &(n, pad)) in rounds.iter().enumerate() {
        let node = format!("tls{round}");
        create_node(&mut publisher, &node);
        let mut sub = Client::login(d.port, &ca, "u0", "pw", &format!("sub{round}"));
        sub.send("<presence/>");
        let subscribe = format!("<subscribe node='{node}' jid='u0@localhost/sub{round}'/>");
        sub.pubsub_ok("s1", "set", PS, &subscribe);
        // The subscriber reads nothing for the first second, so what the commits release
        // piles up in its socket buffers, its outbox and then the shared backlog.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut got = 0;
            while got < n && Instant::now() < deadline && !sub.closed {
                if let Some(e) = sub.try_next(Duration::from_millis(200)) {
                    if e.name == "message" {
                        got += 1;
                    }
                }
            }
            got
        });
        let payload = "x".repeat(pad);
        let mut all = String::new();
        for i in 0..n {
            all.push_str(&format!(
                "<iq type='set' id='p{round}-{i}' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item id='i{i}'><e xmlns='u'>{payload}</e></item></publish></pubsub></iq>"
            ));
        }
        publisher.send(&all);
        let deadline = Instant::now() + Duration::from_secs(40);
        let (mut ok, mut other) = (0, 0);
        while ok + other < n && Instant::now() < deadline && !publisher.closed {
            if let Some(e) = publisher.try_next(Duration::from_millis(200)) {
                if e.name == "iq" {
                    if e.attr("type") == Some("result") {
                        ok += 1;
                    } else {
                        other += 1;
                    }
                }
            }
        }
        let got = reader.join().expect("reader thread");
        let log = d.log();
        assert_eq!(
            (ok, other, got),
            (n, 0, n),
            "round {round}: {}",
            warnings(&log)
        );
        assert!(!log.contains("slow consumer"), "{}", warnings(&log));
        if log
            .lines()
            .any(|l| l.contains("pub-sub back-pressure") && l.contains("p0@localhost"))
        {
            return;
        }
        eprintln!(
            "round {round}: {n} publishes of {pad} bytes did not hold the publisher back; next round"
        );
    }
    panic!("the publisher was never held back");
}

fn create_node(c: &mut Client, node: &str) {
    let r = c.iq(
        "cr",
        &format!(
            "<iq type='set' id='cr' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='{node}'/>\
             <configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
             <field var='pubsub#persist_items'><value>1</value></field>\
             <field var='pubsub#max_items'><value>1000</value></field>\
             <field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub></iq>"
        ),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

/// A reader that stops reading its socket is still closed (after `write_timeout_secs`
/// with its writes blocked), its backlog is dropped, and the publisher, held back while
/// the backlog was at its bound, then finishes; the reader that keeps up gets everything.
#[test]
fn stalled_reader_is_still_closed() {
    let d = daemon(
        1,
        "[limits]\nwrite_timeout_secs = 2\npubsub_backlog_bytes = 1048576\n",
    );
    // The load generator names the publisher's node `bfi0` (tag `b`, fan-in).
    let node = "bfi0";
    let port = d.port;
    let login = |user: &str, res: &str| {
        let mut c = Client::connect(port);
        c.open_stream();
        let r = c.scram(kinglet::sasl::ScramHash::Sha256, user, "pw");
        assert_eq!(r.name, "success", "{r:?}");
        let b = c.bind(Some(res));
        assert_eq!(b.attr("type"), Some("result"), "{b:?}");
        c
    };
    let mut owner = login("p0", "setup");
    create_node(&mut owner, node);
    drop(owner);
    let mut stalled = login("u1", "stalled");
    stalled.send("<presence/>");
    let subscribe = format!("<subscribe node='{node}' jid='u1@localhost'/>");
    stalled.pubsub_ok("s1", "set", PS, &subscribe);
    // From here on `stalled` never reads. 400 items of about 40 KB: about 16 MB for it,
    // more than the kernel's socket buffers and the broker's backlog bound (1 MiB here)
    // together.
    let t0 = Instant::now();
    let o = r#gen::Opts {
        payload: 40_000,
        ..opts(&d, 1, 400, 10)
    };
    let (r, log) = fanin(&d, &o);
    eprintln!(
        "stalled reader: fast reader got {} of {} in {:.1} s",
        r.notifications,
        r.acked,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(r.acked, 400, "{r:?}");
    assert_eq!(r.notifications, 400, "{r:?}");
    assert!(r.exactly_once(), "{r:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("pub-sub back-pressure") && l.contains("p0@localhost")),
        "the publisher was never held back (the test does not reach the backlog bound):\n{}",
        warnings(&log)
    );
    let closed = log
        .lines()
        .any(|l| l.contains("slow consumer") && l.contains("u1@localhost/stalled"));
    assert!(
        closed,
        "the stalled reader was not closed:\n{}",
        warnings(&log)
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("slow consumer") && l.contains("u0@localhost")),
        "the reader that keeps up was closed:\n{}",
        warnings(&log)
    );
    assert!(stalled.wait_closed(Duration::from_secs(20)));
}
