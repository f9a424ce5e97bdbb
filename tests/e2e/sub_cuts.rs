//! `kinglet sub` never misses an item across reconnects (issue 12, item 3; docs/cli.md,
//! "Reconnecting"): the real binary subscribes through a loopback TCP proxy that the test
//! cuts while items are being published, and later the daemon is killed (`kill -9`) and
//! restarted; the subscriber's stdout must hold every item exactly once, in publish order.
//! Without XEP-0198 on the server, after the restart, or when more was published during a
//! cut than a detached session may queue, this is the catch-up's work; with it, after a
//! short cut, the resumption's.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::bin;
pub(super) use super::chaos::proxy::Proxy;
use super::cli::{Sub, cli, finished, login_args, ok, plain_daemon, with};

/// The payload of item `i` and its line in `sub`'s output.
fn payload(i: u32) -> String {
    format!("<n xmlns='urn:x'>{i}</n>")
}

fn line(i: u32) -> String {
    format!("<n xmlns=\"urn:x\">{i}</n>")
}

/// Items `from..=to`, one per line, for `pub --lines`.
fn batch(from: u32, to: u32) -> String {
    (from..=to).map(|i| payload(i) + "\n").collect()
}

/// Publishes items `from..=to` (each acknowledged, so durable, when this returns).
fn publish(login: &[String], node: &str, from: u32, to: u32) {
    ok(cli(
        &with(login, &["pub", "--node", node, "--lines"]),
        Some(&batch(from, to)),
    ));
}

/// Starts a publisher of the lines it is fed, in the background.
fn publisher(login: &[String], node: &str) -> Child {
    Command::new(bin())
        .args(with(login, &["pub", "--node", node, "--lines"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinglet pub")
}

/// Feeds items `from..=to` to a [`publisher`].
fn feed(publisher: &mut Child, from: u32, to: u32) {
    publisher
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(batch(from, to).as_bytes())
        .expect("feed the publisher");
}

/// Ends a [`publisher`]'s input and waits (30 s at most) for it to succeed.
fn finish(mut child: Child) {
    drop(child.stdin.take());
    let out = finished(child, Duration::from_secs(30), "the publisher");
    assert!(
        out.status.success(),
        "pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (60 s at most) until `sub` has said `needle` on stderr `n` times.
pub(super) fn wait_said(sub: &Sub, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sub.err().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "sub never said {needle:?} {n} times; stderr: {}",
            sub.err()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `sub`'s next `n` lines into `got`.
fn read_lines(sub: &Sub, got: &mut Vec<String>, n: usize) {
    for _ in 0..n {
        got.push(sub.line());
    }
}

/// Asserts that `got` is items `1..=n`, each once, in order (naming the first difference).
#[track_caller]
fn assert_exactly_once_in_order(got: &[String], n: u32, err: &str) {
    let want: Vec<String> = (1..=n).map(line).collect();
    if let Some(i) = (0..want.len().max(got.len())).find(|i| got.get(*i) != want.get(*i)) {
        panic!(
            "line {i}: got {:?}, want {:?} ({} lines, {n} items)\nstderr: {err}",
            got.get(i),
            want.get(i),
            got.len()
        );
    }
}

/// The logins of a publisher (alice, straight to `daemon`) and a subscriber (bob, through
/// the proxy on `proxy_port`), and `node` created by alice, open, keeping 1,000 items.
pub(super) fn feed_node(
    daemon: &super::Daemon,
    proxy_port: u16,
    node: &str,
) -> (Vec<String>, Vec<String>) {
    let direct = format!("127.0.0.1:{}", daemon.port);
    let via_proxy = format!("127.0.0.1:{proxy_port}");
    let alice = login_args(&daemon.dir.0, &direct, "alice", "alice-pw");
    let bob = login_args(&daemon.dir.0, &via_proxy, "bob", "bob-pw");
    let create = [
        "node",
        "create",
        node,
        "--set",
        "max_items=1000",
        "--set",
        "access_model=open",
    ];
    ok(cli(&with(&alice, &create), None));
    (alice, bob)
}

/// The link of a `sub` that has lost no connection yet is cut; once it says so, items
/// `from..=to` are published to `node` (with `login`); then the proxy forwards to `port`
/// again.
fn cut_and_publish(
    proxy: &Proxy,
    sub: &Sub,
    (login, node, from, to): (&[String], &str, u32, u32),
    port: u16,
) {
    proxy.cut();
    wait_said(sub, "connection lost", 1);
    publish(login, node, from, to);
    proxy.up(port);
}

#[test]
fn sub_gets_every_item_once_in_order_across_cuts_and_a_kill() {
    let mut daemon = plain_daemon();
    let proxy = Proxy::start(daemon.port);
    let (pub_login, sub_login) = feed_node(&daemon, proxy.port, "feed");
    let total: u32 = 260;
    let count = total.to_string();
    let sub = Sub::spawn(
        &with(
            &sub_login,
            &[
                "sub",
                "--node",
                "feed",
                "--count",
                &count,
                "--resource",
                "s",
                "--verbose",
            ],
        ),
        &daemon.dir.0,
    );
    sub.wait_stderr("subscribed to node");
    let mut got = Vec::new();

    // Live items.
    publish(&pub_login, "feed", 1, 10);
    read_lines(&sub, &mut got, 10);

    // A cut in the middle of a stream of items: the publisher goes on during the cut (its
    // second half is fed only then).
    let mut publisher = publisher(&pub_login, "feed");
    feed(&mut publisher, 11, 100);
    read_lines(&sub, &mut got, 5);
    proxy.cut();
    feed(&mut publisher, 101, 200);
    finish(publisher);
    wait_said(&sub, "connection lost", 1);
    proxy.up(daemon.port);
    wait_said(&sub, "kinglet: reconnected and", 1);
    read_lines(&sub, &mut got, 185);
    // Said before the items it printed.
    let after_cut = sub.err();
    assert!(
        after_cut.contains("caught up") || after_cut.contains("resumed the session"),
        "neither caught up nor resumed: {after_cut}"
    );
    publish(&pub_login, "feed", 201, 205);
    read_lines(&sub, &mut got, 5);

    // A short cut (fewer items than a detached session may queue): a server that granted
    // resumption must resume (the items come from its queue); without it, catch-up.
    let resumable = sub.err().contains("stream management enabled, resumable");
    let said = |needle: &str| sub.err().matches(needle).count();
    let (reconnects, catch_ups) = (said("kinglet: reconnected and"), said("caught up"));
    let resumptions = said("resumed the session");
    proxy.cut();
    wait_said(&sub, "connection lost", 2);
    publish(&pub_login, "feed", 206, 215);
    proxy.up(daemon.port);
    wait_said(&sub, "kinglet: reconnected and", reconnects + 1);
    read_lines(&sub, &mut got, 10);
    if resumable {
        assert_eq!(
            said("resumed the session"),
            resumptions + 1,
            "{}",
            sub.err()
        );
    } else {
        assert_eq!(said("caught up"), catch_ups + 1, "{}", sub.err());
    }

    // The daemon is killed (-9) and restarted: no session survives, the catch-up must
    // deliver what was published meanwhile.
    let (reconnects, catch_ups) = (said("kinglet: reconnected and"), said("caught up"));
    let subscribed = said("kinglet: reconnected and subscribed");
    proxy.cut();
    daemon.restart("stderr-2.log");
    let direct = format!("127.0.0.1:{}", daemon.port);
    let pub_login = login_args(&daemon.dir.0, &direct, "alice", "alice-pw");
    publish(&pub_login, "feed", 216, 250);
    wait_said(&sub, "connection lost", 3);
    proxy.up(daemon.port);
    wait_said(&sub, "kinglet: reconnected and", reconnects + 1);
    wait_said(&sub, "kinglet: reconnected and subscribed", subscribed + 1);
    wait_said(&sub, "caught up", catch_ups + 1);
    read_lines(&sub, &mut got, 35);
    publish(&pub_login, "feed", 251, total);
    read_lines(&sub, &mut got, 10);

    let mut sub = sub;
    assert!(sub.wait().success(), "{}", sub.err());
    // Nothing after the last item (a duplicate would have taken a place before it anyway).
    assert!(sub.lines.try_recv().is_err(), "extra output");
    assert_exactly_once_in_order(&got, total, &sub.err());
}

#[test]
fn sub_without_catch_up_misses_and_warns_when_the_last_item_rotated_out() {
    let d = plain_daemon();
    let direct = format!("127.0.0.1:{}", d.port);
    let proxy = Proxy::start(d.port);
    let via_proxy = format!("127.0.0.1:{}", proxy.port);
    let alice = login_args(&d.dir.0, &direct, "alice", "alice-pw");
    let bob = login_args(&d.dir.0, &via_proxy, "bob", "bob-pw");
    for (node, max) in [("plain", "100"), ("small", "3")] {
        ok(cli(
            &with(
                &alice,
                &["node", "create", node, "--set", &format!("max_items={max}")],
            ),
            None,
        ));
    }
    let subscribe = |node: &'static str, extra: &'static [&'static str], count: &'static str| {
        let mut args = vec!["sub", "--node", node, "--count", count, "--verbose"];
        args.extend_from_slice(extra);
        let sub = Sub::spawn(&with(&bob, &args), &d.dir.0);
        sub.wait_stderr("subscribed to node");
        sub
    };

    // --no-catch-up: what was published during the cut is not printed (--no-resume: a
    // server with XEP-0198 would otherwise deliver it through the resumed session).
    let mut sub = subscribe("plain", &["--no-catch-up", "--no-resume"], "4");
    publish(&alice, "plain", 1, 3);
    let mut got = Vec::new();
    read_lines(&sub, &mut got, 3);
    cut_and_publish(&proxy, &sub, (&alice, "plain", 4, 6), d.port);
    wait_said(&sub, "reconnected and subscribed", 1);
    publish(&alice, "plain", 7, 7);
    read_lines(&sub, &mut got, 1);
    assert_eq!(got, [line(1), line(2), line(3), line(7)], "{}", sub.err());
    assert!(sub.wait().success(), "{}", sub.err());
    assert!(!sub.err().contains("caught up"), "{}", sub.err());

    // max_items 3: the items printed before the cut were rotated out by those published
    // during it; the stored ones are printed, with a warning (--no-resume, so that the
    // catch-up does it whatever the server offers).
    let mut sub = subscribe("small", &["--no-resume"], "5");
    publish(&alice, "small", 1, 2);
    let mut got = Vec::new();
    read_lines(&sub, &mut got, 2);
    cut_and_publish(&proxy, &sub, (&alice, "small", 3, 8), d.port);
    read_lines(&sub, &mut got, 3);
    assert_eq!(
        got,
        [line(1), line(2), line(6), line(7), line(8)],
        "{}",
        sub.err()
    );
    assert!(sub.wait().success(), "{}", sub.err());
    let err = sub.err();
    assert!(
        err.contains("no longer stored") && err.contains("may have been missed"),
        "{err}"
    );
}
