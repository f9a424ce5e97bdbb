//! Pub-sub benchmarks against the real daemon (release build) over loopback sockets:
//!
//! * fan-out: one publisher, 1 / 100 / 1000 subscribers of one persistent node;
//!   notifications per second and server CPU (utime + stime from /proc/<pid>/stat) per
//!   notification;
//! * fan-in: 100 publishers, each with a window of outstanding publish IQs, durable
//!   (group commit), and one subscriber on every node that reads as fast as it can, at
//!   the default outbox limits: publishes per second, commits (fsyncs) per second, the
//!   batching factor (publishes per commit, from the daemon's "pub-sub committer stopped"
//!   line), and the notifications the subscriber got of those acknowledged (all of them,
//!   and it is not closed as a slow consumer however many one commit releases; issue 10);
//! * event-loop stall: ping round trips of an idle client during the fan-in load
//!   (p50 / p99 / max), against the same without load;
//! * PEP fan-out (XEP-0163): one account publishes tunes to its own PEP node; 100
//!   contacts with a presence subscription and `+notify` caps (XEP-0115, one disco#info
//!   query answered, the rest from the caps cache) receive them: notifications per second
//!   and server CPU per notification (recipients computed at send time from rosters and
//!   caps, nothing stored per contact).
//!
//! `cargo bench --bench pubsub -- [--subs 1,100,1000] [--publishers 100] [--window 8]
//! [--secs 3] [--flush-interval 0] [--pep-contacts 100]`. Prints a table and one JSON line. Bounded: at most
//! 5000 subscribers, 1000 publishers, 30 s of load; every wait has a timeout.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_io::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

const PS: &str = "http://jabber.org/protocol/pubsub";
const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
                      xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

#[path = "../tests/support/daemon.rs"]
mod daemon;

use daemon::Daemon;

/// Bench-specific measurements of the daemon.
trait Measure {
    /// utime + stime of the daemon, in microseconds.
    fn cpu_us(&self) -> u64;
    /// SIGTERM, wait, and the committer totals (commits, ops) from the daemon's log.
    fn stop(self) -> (u64, u64);
}

fn start_server(tag: &str, extra: &str) -> Daemon {
    Daemon::start_in(
        daemon::TempDir::new(&format!("pubsub-{tag}")),
        &format!(
            "log_level = \"info\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\nallow_anonymous = \"loopback\"\n{extra}"
        ),
    )
}

impl Measure for Daemon {
    /// utime + stime of the daemon, in microseconds.
    fn cpu_us(&self) -> u64 {
        let s =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = s.rsplit(')').next().unwrap_or("");
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 of proc(5), counted after the command name; ticks of 1/100 s
        // (USER_HZ is 100 on Linux).
        (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10_000
    }

    /// SIGTERM, wait for exit, and return the committer's totals (commits, ops).
    fn stop(mut self) -> (u64, u64) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let field = |line: &str, key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        log.lines()
            .find(|l| l.contains("pub-sub committer stopped"))
            .map(|l| (field(l, "commits="), field(l, "ops=")))
            .unwrap_or((0, 0))
    }
}

/// Reads from `s` until `buf` contains `pat`; returns the text up to and including it and
/// keeps the rest in `buf`.
fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, pat: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = find(buf, pat.as_bytes()) {
            let rest = buf.split_off(i + pat.len());
            let head = std::mem::replace(buf, rest);
            return String::from_utf8_lossy(&head).into_owned();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {pat}");
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) => panic!("server closed while waiting for {pat}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn find(hay: &[u8], pat: &[u8]) -> Option<usize> {
    hay.windows(pat.len()).position(|w| w == pat)
}

fn count(hay: &[u8], pat: &[u8]) -> usize {
    hay.windows(pat.len()).filter(|w| *w == pat).count()
}

/// An anonymous session with a bound resource: its socket and full JID.
fn login(port: u16) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = Vec::new();
    s.write_all(HEADER.as_bytes()).expect("write");
    read_until(&mut s, &mut buf, "</stream:features>");
    s.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>")
        .expect("write");
    let r = read_until(&mut s, &mut buf, ">");
    assert!(r.contains("<success"), "anonymous login failed: {r}");
    if !r.ends_with("/>") {
        read_until(&mut s, &mut buf, "</success>");
    }
    buf.clear();
    s.write_all(HEADER.as_bytes()).expect("write");
    read_until(&mut s, &mut buf, "</stream:features>");
    s.write_all(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .expect("write");
    let r = read_until(&mut s, &mut buf, "</iq>");
    let jid = r
        .split("<jid>")
        .nth(1)
        .and_then(|t| t.split("</jid>").next())
        .expect("bound jid")
        .to_owned();
    (s, jid)
}

/// Sends an IQ with id `id` and waits for its reply (which must be a result).
fn iq(s: &mut TcpStream, id: &str, body: &str) -> String {
    s.write_all(body.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let mut r = read_until(s, &mut buf, &format!("id='{id}'"));
    r.push_str(&read_until(s, &mut buf, ">"));
    if !r.ends_with("/>") {
        r.push_str(&read_until(s, &mut buf, "</iq>"));
    }
    assert!(r.contains("type='result'"), "request failed: {r}");
    r
}

fn create(s: &mut TcpStream, node: &str, max_items: usize) {
    iq(
        s,
        "c",
        &format!(
            "<iq type='set' id='c' to='pubsub.localhost'><pubsub xmlns='{PS}'><create node='{node}'/>\
             <configure><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PS}#node_config</value></field>\
             <field var='pubsub#max_items'><value>{max_items}</value></field>\
             </x></configure></pubsub></iq>"
        ),
    );
}

fn publish(node: &str, n: u64) -> String {
    format!(
        "<iq type='set' id='p{n}' to='pubsub.localhost'><pubsub xmlns='{PS}'><publish node='{node}'>\
         <item><temp xmlns='urn:example:sensor' unit='C'>{}.{}</temp></item></publish></pubsub></iq>",
        20 + n % 10,
        n % 7
    )
}

/// Publishes `total` items to `node` with `window` outstanding IQs, on a blocking socket.
fn publish_window(s: &mut TcpStream, node: &str, total: u64, window: u64) {
    let mut sent = 0;
    let mut done = 0;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(120);
    while done < total {
        let mut out = String::new();
        while sent < total && sent - done < window {
            out.push_str(&publish(node, sent));
            sent += 1;
        }
        if !out.is_empty() {
            s.write_all(out.as_bytes()).expect("write");
        }
        assert!(Instant::now() < deadline, "publishing timed out");
        match s.read(&mut chunk) {
            Ok(0) => panic!("server closed the publisher"),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = find(&buf, b"type=\"error\"").or(find(&buf, b"type='error'")) {
                    let end = (i + 400).min(buf.len());
                    panic!("publish failed: {}", String::from_utf8_lossy(&buf[i..end]));
                }
                let k = count(&buf, b"</iq>");
                done += k as u64;
                let keep = buf.len().saturating_sub(5);
                if k > 0 {
                    buf.clear();
                } else {
                    buf.drain(..keep);
                }
            }
            Err(_) => {}
        }
    }
}

/// Reads from every subscriber until each has counted `want` notifications; returns
/// when all are done (or after `timeout`). Runs on its own thread.
fn drain_subscribers(subs: Vec<TcpStream>, want: usize, timeout: Duration) -> usize {
    let ex = smol::LocalExecutor::new();
    let complete = Rc::new(std::cell::Cell::new(0usize));
    let n = subs.len();
    let mut tasks = Vec::new();
    for s in subs {
        s.set_nonblocking(true).expect("nonblocking");
        let mut s = Async::new(s).expect("async");
        let complete = complete.clone();
        tasks.push(ex.spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut carry: Vec<u8> = Vec::new();
            let mut got = 0;
            while got < want {
                let k = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => k,
                };
                carry.extend_from_slice(&buf[..k]);
                got += count(&carry, b"</message>");
                let keep = carry.len().saturating_sub(9);
                carry.drain(..keep);
            }
            if got >= want {
                complete.set(complete.get() + 1);
            }
        }));
    }
    smol::block_on(ex.run(async {
        let all = async {
            for t in tasks {
                t.await;
            }
        };
        smol::future::or(all, async {
            async_io::Timer::after(timeout).await;
        })
        .await;
    }));
    let done = complete.get();
    assert_eq!(
        done, n,
        "only {done} of {n} subscribers got every notification"
    );
    done
}

/// Print a Markdown table's title, header row and alignment row: the first `text`
/// columns left-aligned, the figures after them right-aligned.
fn table(title: &str, header: &str, text: usize) {
    println!("{title}");
    println!("{header}");
    let columns = header.matches('|').count().saturating_sub(1);
    let mut align = String::from("|");
    for c in 0..columns {
        align.push_str(if c < text { "---|" } else { "---:|" });
    }
    println!("{align}");
}

/// Print one result row of a [`table`] and append it to `json` as an object. Each cell is
/// (JSON key, value as JSON: a number, `true`/`false`, or a quoted string, printed in the
/// table without its quotes).
fn row(json: &mut String, cells: &[(&str, String)]) {
    let mut line = String::from("|");
    json.push('{');
    for (i, (key, value)) in cells.iter().enumerate() {
        let _ = write!(line, " {} |", value.trim_matches('"'));
        let _ = write!(json, "{}\"{key}\":{value}", if i > 0 { "," } else { "" });
    }
    json.push('}');
    println!("{line}");
}

/// One fan-out run: `subs` subscribers (or PEP contacts) each got every one of
/// `publishes` notifications.
struct FanOut {
    subs: usize,
    publishes: u64,
    notifications_per_s: f64,
    publishes_per_s: f64,
    cpu_us_per_notification: f64,
}

impl FanOut {
    /// The figures of a run that started at `t0` with the server's CPU time at `cpu0`,
    /// whose publishes were all answered after `published` and whose subscribers have now
    /// got every notification. Stops the server.
    fn measured(
        server: Daemon,
        subs: usize,
        publishes: u64,
        cpu0: u64,
        t0: Instant,
        published: Duration,
    ) -> FanOut {
        let secs = t0.elapsed().as_secs_f64();
        let cpu = server.cpu_us().saturating_sub(cpu0) as f64;
        drop(server);
        let notes = publishes as f64 * subs as f64;
        FanOut {
            subs,
            publishes,
            notifications_per_s: notes / secs,
            publishes_per_s: publishes as f64 / published.as_secs_f64(),
            cpu_us_per_notification: cpu / notes,
        }
    }
}

/// A server for `clients` connections with outboxes big enough for a burst, and the
/// `[limits]` line `key = value` the run needs.
fn fan_server(kind: &str, clients: usize, key: &str, value: usize, extra: &str) -> Daemon {
    start_server(
        &format!("{kind}{clients}"),
        &format!(
            "[limits]\nmax_connections = {}\noutbox_max_stanzas = 65536\noutbox_max_bytes = 16777216\n\
             {key} = {value}\n{extra}",
            clients + 64,
        ),
    )
}

fn fan_out(subs: usize, extra: &str) -> FanOut {
    let publishes: u64 = (400_000 / subs as u64).clamp(400, 20_000);
    let per_node = subs.max(1024);
    let server = fan_server(
        "fanout",
        subs,
        "pubsub_max_subscriptions_per_node",
        per_node,
        extra,
    );
    let (mut p, _) = login(server.port);
    create(&mut p, "fan", 16);
    let mut sockets = Vec::with_capacity(subs);
    for _ in 0..subs {
        let (mut s, jid) = login(server.port);
        iq(
            &mut s,
            "s",
            &format!(
                "<iq type='set' id='s' to='pubsub.localhost'><pubsub xmlns='{PS}'><subscribe node='fan' jid='{jid}'/></pubsub></iq>"
            ),
        );
        sockets.push(s);
    }
    let want = publishes as usize;
    let reader =
        std::thread::spawn(move || drain_subscribers(sockets, want, Duration::from_secs(120)));
    let cpu0 = server.cpu_us();
    let t0 = Instant::now();
    publish_window(&mut p, "fan", publishes, 64);
    let published = t0.elapsed();
    reader.join().expect("subscriber thread");
    FanOut::measured(server, subs, publishes, cpu0, t0, published)
}

const TUNE: &str = "http://jabber.org/protocol/tune";
const CAPS_VER: &str = "pep-bench-ver";

/// The disco#info a bench contact answers the caps query with (`tune+notify`).
fn tune_disco(node: &str) -> String {
    format!(
        "<query xmlns='http://jabber.org/protocol/disco#info' node='{node}'>\
         <identity category='client' type='bot' name='bench'/>\
         <feature var='{TUNE}+notify'/></query>"
    )
}

/// XEP-0163 fan-out: one publisher, `contacts` contacts with presence subscriptions and
/// `+notify` caps. The caps `ver` is not a real hash, so the server cannot cache it and
/// asks every contact once: each answers its own query.
fn pep_fan_out(contacts: usize, extra: &str) -> FanOut {
    let publishes: u64 = (200_000 / contacts as u64).clamp(200, 10_000);
    let server = fan_server("pep", contacts, "max_roster_items", contacts + 16, extra);
    let (mut p, pjid) = login(server.port);
    let owner = pjid.split('/').next().expect("bare").to_owned();
    p.write_all(b"<presence/>").expect("write");
    let mut pbuf = Vec::new();
    let mut sockets = Vec::with_capacity(contacts);
    for _ in 0..contacts {
        let (mut s, jid) = login(server.port);
        let bare = jid.split('/').next().expect("bare").to_owned();
        let mut buf = Vec::new();
        // Available first: the approval is delivered to available resources only.
        s.write_all(format!("<presence/><presence to='{owner}' type='subscribe'/>").as_bytes())
            .expect("write");
        // Subscription presences are written with single quotes, Element-built stanzas
        // (the caps query) with double ones.
        read_until(&mut p, &mut pbuf, "type='subscribe'");
        pbuf.clear();
        p.write_all(format!("<presence to='{bare}' type='subscribed'/>").as_bytes())
            .expect("write");
        read_until(&mut s, &mut buf, "type='subscribed'");
        buf.clear();
        // Caps presence; answer the server's disco#info query.
        s.write_all(
            format!(
                "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
                 node='https://kinglet.bench' ver='{CAPS_VER}'/></presence>"
            )
            .as_bytes(),
        )
        .expect("write");
        let q = read_until(&mut s, &mut buf, "</iq>");
        let id = q
            .rsplit("<iq")
            .next()
            .and_then(|t| t.split("id=\"").nth(1))
            .and_then(|t| t.split('"').next())
            .expect("query id")
            .to_owned();
        buf.clear();
        s.write_all(
            format!(
                "<iq type='result' id='{id}' to='localhost'>{}</iq>",
                tune_disco(&format!("https://kinglet.bench#{CAPS_VER}"))
            )
            .as_bytes(),
        )
        .expect("write");
        sockets.push(s);
    }
    // Let the last answers be processed (each contact's socket is its own task).
    std::thread::sleep(Duration::from_millis(300));
    // The first publish creates the node (PEP auto-create) and is not counted.
    iq(
        &mut p,
        "first",
        &format!(
            "<iq type='set' id='first'><pubsub xmlns='{PS}'><publish node='{TUNE}'><item id='current'>\
             <tune xmlns='{TUNE}'><title>warm-up</title></tune></item></publish></pubsub></iq>"
        ),
    );
    let want = publishes as usize + 1;
    let reader =
        std::thread::spawn(move || drain_subscribers(sockets, want, Duration::from_secs(120)));
    let cpu0 = server.cpu_us();
    let t0 = Instant::now();
    let mut sent = 0;
    let mut done = 0;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    while done < publishes {
        let mut out = String::new();
        while sent < publishes && sent - done < 64 {
            let _ = write!(
                out,
                "<iq type='set' id='t{sent}'><pubsub xmlns='{PS}'><publish node='{TUNE}'><item id='current'>\
                 <tune xmlns='{TUNE}'><title>track {sent}</title></tune></item></publish></pubsub></iq>"
            );
            sent += 1;
        }
        if !out.is_empty() {
            p.write_all(out.as_bytes()).expect("write");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "publishing timed out"
        );
        if let Ok(n) = p.read(&mut chunk) {
            assert!(n > 0, "server closed the publisher");
            buf.extend_from_slice(&chunk[..n]);
            if find(&buf, b"type='error'").is_some() {
                panic!("publish failed: {}", String::from_utf8_lossy(&buf));
            }
            let k = count(&buf, b"</iq>");
            done += k as u64;
            if k > 0 {
                buf.clear();
            } else {
                let keep = buf.len().saturating_sub(5);
                buf.drain(..keep);
            }
        }
    }
    reader.join().expect("contact thread");
    let published = t0.elapsed();
    FanOut::measured(server, contacts, publishes, cpu0, t0, published)
}

struct Rtt {
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    samples: usize,
}

/// Pings the server from an idle session until `stop`; round trips in microseconds.
fn ping_loop(port: u16, stop: Arc<AtomicBool>) -> Rtt {
    let (mut s, _) = login(port);
    let mut rtts = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && rtts.len() < 100_000 {
        n += 1;
        let t = Instant::now();
        s.write_all(
            format!(
                "<iq type='get' id='ping{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
            .as_bytes(),
        )
        .expect("write");
        read_until(&mut s, &mut buf, &format!("ping{n}"));
        read_until(&mut s, &mut buf, ">");
        rtts.push(t.elapsed().as_micros() as u64);
        std::thread::sleep(Duration::from_millis(2));
    }
    rtts.sort_unstable();
    let at = |q: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    Rtt {
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: rtts.last().copied().unwrap_or(0),
        samples: rtts.len(),
    }
}

struct FanIn {
    publishers: usize,
    window: u64,
    publishes: u64,
    publishes_per_s: f64,
    commits: u64,
    commits_per_s: f64,
    batching: f64,
    cpu_us_per_publish: f64,
    /// Notifications the subscriber on every node received (of `publishes`).
    notifications: u64,
    /// The server closed the subscriber.
    subscriber_closed: bool,
    idle: Rtt,
    loaded: Rtt,
}

fn fan_in(publishers: usize, window: u64, secs: u64, extra: &str) -> FanIn {
    let server = start_server(
        "fanin",
        &format!(
            "[limits]\nmax_connections = {}\npubsub_max_nodes = {}\n{extra}",
            publishers + 64,
            publishers + 64
        ),
    );
    // Baseline: ping round trips with no load.
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (port, stop) = (server.port, stop.clone());
        std::thread::spawn(move || ping_loop(port, stop))
    };
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let idle = pinger.join().expect("pinger");

    let mut sockets = Vec::with_capacity(publishers);
    for i in 0..publishers {
        let (mut s, _) = login(server.port);
        create(&mut s, &format!("in{i}"), 16);
        sockets.push(s);
    }
    // One subscriber on every node (the dashboard of many devices), at the default
    // outbox limits.
    let (mut sub, sub_jid) = login(server.port);
    for i in 0..publishers {
        iq(
            &mut sub,
            &format!("s{i}"),
            &format!(
                "<iq type='set' id='s{i}' to='pubsub.localhost'><pubsub xmlns='{PS}'><subscribe node='in{i}' jid='{sub_jid}'/></pubsub></iq>"
            ),
        );
    }
    let publishing = Arc::new(AtomicBool::new(true));
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let subscriber = {
        let (publishing, received, done) = (publishing.clone(), received.clone(), done.clone());
        std::thread::spawn(move || {
            // Reads until every acknowledged publish arrived (after the load), or 30 s
            // without progress; returns whether the server closed it.
            sub.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let mut buf = vec![0u8; 65536];
            let mut carry: Vec<u8> = Vec::new();
            let mut last = Instant::now();
            loop {
                let got = received.load(Ordering::Relaxed);
                if !publishing.load(Ordering::Relaxed) && got >= done.load(Ordering::Relaxed) {
                    return false;
                }
                if last.elapsed() > Duration::from_secs(30) {
                    return false;
                }
                match sub.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(k) => {
                        carry.extend_from_slice(&buf[..k]);
                        // Items, not messages: max_items 16 also sends retractions.
                        let n = count(&carry, b"<item ") as u64;
                        received.fetch_add(n, Ordering::Relaxed);
                        if n > 0 {
                            last = Instant::now();
                        }
                        let keep = carry.len().saturating_sub(5);
                        carry.drain(..keep);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return true,
                }
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (port, stop) = (server.port, stop.clone());
        std::thread::spawn(move || ping_loop(port, stop))
    };
    let cpu0 = server.cpu_us();
    let t0 = Instant::now();
    let load_for = Duration::from_secs(secs);
    let load = {
        let done = done.clone();
        std::thread::spawn(move || {
            let ex = smol::LocalExecutor::new();
            let mut tasks = Vec::new();
            for (i, s) in sockets.into_iter().enumerate() {
                s.set_nonblocking(true).expect("nonblocking");
                let mut s = Async::new(s).expect("async");
                let done = done.clone();
                tasks.push(ex.spawn(async move {
                    let node = format!("in{i}");
                    let (mut sent, mut acked) = (0u64, 0u64);
                    let mut buf = vec![0u8; 65536];
                    let mut carry = Vec::new();
                    loop {
                        let mut out = String::new();
                        while sent - acked < window && t0.elapsed() < load_for {
                            out.push_str(&publish(&node, sent));
                            sent += 1;
                        }
                        if !out.is_empty() && s.write_all(out.as_bytes()).await.is_err() {
                            break;
                        }
                        if acked == sent {
                            break;
                        }
                        let k = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => k,
                        };
                        carry.extend_from_slice(&buf[..k]);
                        let c = count(&carry, b"</iq>") as u64;
                        assert_eq!(count(&carry, b"type='error'"), 0, "a publish failed");
                        acked += c;
                        done.fetch_add(c, Ordering::Relaxed);
                        // Keep a possible partial `</iq>` (never a whole one).
                        let keep = carry.len().saturating_sub(4);
                        carry.drain(..keep);
                    }
                }));
            }
            smol::block_on(ex.run(async {
                for t in tasks {
                    t.await;
                }
            }));
        })
    };
    load.join().expect("load thread");
    let elapsed = t0.elapsed().as_secs_f64();
    publishing.store(false, Ordering::Relaxed);
    let subscriber_closed = subscriber.join().expect("subscriber thread");
    let cpu = server.cpu_us().saturating_sub(cpu0) as f64;
    stop.store(true, Ordering::Relaxed);
    let loaded = pinger.join().expect("pinger");
    let publishes = done.load(Ordering::Relaxed);
    let (commits, _ops) = server.stop();
    FanIn {
        publishers,
        window,
        publishes,
        publishes_per_s: publishes as f64 / elapsed,
        commits,
        commits_per_s: commits as f64 / elapsed,
        batching: publishes as f64 / commits.max(1) as f64,
        cpu_us_per_publish: cpu / publishes.max(1) as f64,
        notifications: received.load(Ordering::Relaxed),
        subscriber_closed,
        idle,
        loaded,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let subs: Vec<usize> = arg("--subs")
        .unwrap_or_else(|| "1,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(|n: usize| n.clamp(1, 5000))
        .collect();
    let publishers: usize = arg("--publishers")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .clamp(1, 1000);
    let window: u64 = arg("--window")
        .and_then(|v| v.parse().ok())
        .unwrap_or(8u64)
        .clamp(1, 256);
    let secs: u64 = arg("--secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3u64)
        .clamp(1, 30);
    let flush = arg("--flush-interval").unwrap_or_else(|| "0".into());
    let pep_contacts: usize = arg("--pep-contacts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .clamp(1, 1000);
    let extra = format!("[store]\nmax_bytes = 0\nflush_interval = \"{flush}\"\n");

    table(
        &format!(
            "Fan-out (one publisher, window 64, persistent node, store.flush_interval = {flush}):"
        ),
        "| subscribers | publishes | publishes/s | notifications/s | server CPU µs/notification |",
        0,
    );
    let mut json = String::from("{\"bench\":\"pubsub\",\"flush_interval\":\"");
    json.push_str(&flush);
    json.push_str("\",\"fan_out\":[");
    for (i, n) in subs.iter().enumerate() {
        let r = fan_out(*n, &extra);
        if i > 0 {
            json.push(',');
        }
        row(
            &mut json,
            &[
                ("subscribers", r.subs.to_string()),
                ("publishes", r.publishes.to_string()),
                ("publishes_per_s", format!("{:.0}", r.publishes_per_s)),
                (
                    "notifications_per_s",
                    format!("{:.0}", r.notifications_per_s),
                ),
                (
                    "cpu_us_per_notification",
                    format!("{:.3}", r.cpu_us_per_notification),
                ),
            ],
        );
    }
    let pep = pep_fan_out(pep_contacts, &extra);
    table(
        "\nPEP fan-out (XEP-0163: one account, contacts with presence subscriptions and +notify caps):",
        "| contacts | publishes | notifications/s | server CPU µs/notification |",
        0,
    );
    json.push_str("],\"pep_fan_out\":");
    row(
        &mut json,
        &[
            ("contacts", pep.subs.to_string()),
            ("publishes", pep.publishes.to_string()),
            (
                "notifications_per_s",
                format!("{:.0}", pep.notifications_per_s),
            ),
            (
                "cpu_us_per_notification",
                format!("{:.3}", pep.cpu_us_per_notification),
            ),
        ],
    );
    let r = fan_in(publishers, window, secs, &extra);
    table(
        &format!(
            "\nFan-in ({} publishers × window {}, {} s, own node each, max_items 16; one subscriber on every node, default outbox):",
            r.publishers, r.window, secs
        ),
        "| publishes | publishes/s | commits (fsyncs)/s | publishes per commit | server CPU µs/publish | notifications received | subscriber closed |",
        0,
    );
    json.push_str(",\"fan_in\":");
    row(
        &mut json,
        &[
            ("publishes", r.publishes.to_string()),
            ("publishes_per_s", format!("{:.0}", r.publishes_per_s)),
            ("commits", r.commits.to_string()),
            ("commits_per_s", format!("{:.0}", r.commits_per_s)),
            ("publishes_per_commit", format!("{:.1}", r.batching)),
            ("cpu_us_per_publish", format!("{:.2}", r.cpu_us_per_publish)),
            ("subscriber_notifications", r.notifications.to_string()),
            ("subscriber_closed", r.subscriber_closed.to_string()),
        ],
    );
    table(
        "\nPing round trip of an idle client (µs):",
        "| during | samples | p50 | p99 | max |",
        1,
    );
    json.push_str(",\"ping_us\":[");
    for (i, (what, x)) in [("no load", &r.idle), ("fan-in load", &r.loaded)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            json.push(',');
        }
        row(
            &mut json,
            &[
                ("during", format!("\"{what}\"")),
                ("samples", x.samples.to_string()),
                ("p50", x.p50_us.to_string()),
                ("p99", x.p99_us.to_string()),
                ("max", x.max_us.to_string()),
            ],
        );
    }
    json.push_str("]}");
    println!("{json}");
}
