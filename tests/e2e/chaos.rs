//! The chaos test of issue 12, item 4: the real `kinglet sub` subscribes through a
//! fault-injecting TCP proxy ([`proxy`]) while a publisher sends N items straight to the
//! daemon, and the proxy injects K faults at random points (holds, blackholes, resets and
//! closes, in either direction), chosen from a seeded RNG. Afterwards `sub`'s stdout must
//! hold every acknowledged item exactly once, in publish order.
//!
//! - Run 1 (`chaos_sub_resumes_across_random_faults`): the daemon keeps a generous
//!   XEP-0198 detached queue and window, so every reconnect must be a resumption (and
//!   there must be at least one).
//! - Run 2 (`chaos_sub_catches_up_after_kill_9`): the same with fewer faults, and the daemon
//!   killed (SIGKILL) and restarted on the same data mid-run; resumption then fails and the
//!   catch-up must deliver every acknowledged item.
//!
//! Silent faults are noticed as in the field: `sub --keepalive 1 --timeout 2` pings a
//! quiet server and gives up on a missing answer; the daemon probes a silent client after
//! `limits.idle_ping_secs = 1` and drops it after `idle_timeout_secs = 3`.
//!
//! Each run prints its counts on stderr, as a sentence and as one JSON line (`{"chaos":`).
//! The seed is printed too; `KINGLET_CHAOS_SEED=<seed>` replays the same fault plan (kinds,
//! directions, byte offsets, gaps); thread timing still varies from run to run.

pub(super) mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kinglet::client::conn::Conn;
use kinglet::client::pubsub::{payload_from_xml, publish_body};
use kinglet::client::settings::{Auth, Settings, TlsMode};

use self::proxy::{Dir, Dirs, Fault, Proxy};
use super::cli::{Sub, with};
use super::{Daemon, Options};

/// The node items are published to.
const NODE: &str = "chaos";

/// The daemon of both runs: no TLS (loopback), XEP-0198 with a detached queue large enough
/// for what is published during a fault (so that the first run resumes), a resumption
/// window longer than a run, and short idle limits so that a silent client is noticed in
/// seconds.
fn chaos_daemon() -> Daemon {
    Daemon::start(Options {
        tls: false,
        direct_tls: false,
        c2s_extra: "resume_timeout_secs = 300\ndetached_max_stanzas = 1000\n\
                    detached_max_bytes = 1048576\n",
        extra: "[limits]\nidle_ping_secs = 1\nidle_timeout_secs = 3\nwrite_timeout_secs = 5\n",
        ..Options::default()
    })
}

/// The seed: `KINGLET_CHAOS_SEED`, else the clock.
fn seed() -> u64 {
    match std::env::var("KINGLET_CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("KINGLET_CHAOS_SEED={s:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// One step of a run's plan.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A fault, armed to fire after `after` bytes in direction `at` (or after
    /// [`FIRE_BY`], whichever comes first). `early`: armed on the next connection as soon
    /// as it is accepted (so that it may cut a login or a resumption), else `gap` after
    /// `sub` is back in session.
    Fault {
        fault: Fault,
        at: Dir,
        after: u64,
        gap: Duration,
        early: bool,
    },
    /// `kill -9` of the daemon, `gap` after `sub` is back in session, and a restart.
    Kill { gap: Duration },
}

/// A fault that did not fire by its byte count fires after this.
const FIRE_BY: Duration = Duration::from_millis(1000);

/// A random fault plan: `faults` faults, and a kill at a random place among them if
/// `kill`.
fn plan(rng: &mut fastrand::Rng, faults: usize, kill: bool) -> Vec<Event> {
    let dirs = |rng: &mut fastrand::Rng| match rng.u8(0..3) {
        0 => Dirs::Up,
        1 => Dirs::Down,
        _ => Dirs::Both,
    };
    let mut events: Vec<Event> = (0..faults)
        .map(|i| {
            // Every kind at least once when there are four faults or more.
            let kind = if i < 4 { i as u8 } else { rng.u8(0..4) };
            let fault = match kind {
                0 => Fault::Hold {
                    dirs: dirs(rng),
                    hold: Duration::from_millis(rng.u64(200..4000)),
                },
                1 => Fault::Drop { dirs: dirs(rng) },
                2 => match rng.u8(0..3) {
                    0 => Fault::Reset {
                        client: true,
                        server: false,
                    },
                    1 => Fault::Reset {
                        client: false,
                        server: true,
                    },
                    _ => Fault::Reset {
                        client: true,
                        server: true,
                    },
                },
                _ => Fault::Close,
            };
            // Most output goes down (notifications); up carries acks and pings.
            let (at, after) = if rng.bool() {
                (Dir::Down, rng.u64(0..2000))
            } else {
                (Dir::Up, rng.u64(0..80))
            };
            Event::Fault {
                fault,
                at,
                after,
                gap: Duration::from_millis(rng.u64(0..700)),
                early: rng.u8(0..5) == 0,
            }
        })
        .collect();
    rng.shuffle(&mut events);
    if kill {
        let at = rng.usize(1..=events.len());
        events.insert(
            at,
            Event::Kill {
                gap: Duration::from_millis(rng.u64(0..700)),
            },
        );
    }
    events
}

/// The daemon's log in `dir` without its debug lines, before and after a restart.
fn daemon_log(dir: &Path) -> String {
    ["stderr.log", "stderr-2.log"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| !l.contains(" DEBUG "))
                .map(|l| format!("{l}\n"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A run's time budget and what a failure prints; every wait checks it.
struct Budget {
    start: Instant,
    limit: Duration,
    /// The run's name and seed.
    what: String,
    /// The daemon's directory (its logs).
    dir: PathBuf,
}

impl Budget {
    /// Fails the run if its time is up or `sub` has exited.
    #[track_caller]
    fn check(&self, waiting_for: &str, sub: &mut Sub) {
        if let Some(status) = sub.exited() {
            panic!(
                "{}: sub exited ({status}) while waiting for {waiting_for}\n{}",
                self.what,
                self.context(sub)
            );
        }
        assert!(
            self.start.elapsed() < self.limit,
            "{}: still waiting for {waiting_for} after {:?}\n{}",
            self.what,
            self.limit,
            self.context(sub)
        );
    }

    /// What a failure prints: `sub`'s stderr and the daemon's log.
    fn context(&self, sub: &Sub) -> String {
        format!(
            "{}\nsub stderr:\n{}\ndaemon log:\n{}",
            self.what,
            sub.err(),
            daemon_log(&self.dir)
        )
    }
}

/// The lines `sub` says on stderr about its connection, in the order said.
const MARKERS: [&str; 4] = [
    "kinglet: subscribed to node",
    "kinglet: reconnected and",
    "kinglet: connection lost",
    "kinglet: reconnect failed",
];

/// Whether `sub` is in session: the last thing it said about its connection is that it
/// subscribed or reconnected.
fn in_session(err: &str) -> bool {
    MARKERS
        .iter()
        .filter_map(|m| err.rfind(m).map(|at| (at, *m)))
        .max()
        .is_some_and(|(_, m)| m == MARKERS[0] || m == MARKERS[1])
}

/// What the publisher did.
#[derive(Default)]
struct Published {
    /// Items `1..=n` tried (each once).
    sent: u32,
    /// The ids whose publish was acknowledged (a result: durable).
    acked: Vec<u32>,
    /// Errors that are not a lost connection (a failure of the test).
    errors: Vec<String>,
    /// Reconnects of the publisher (after the kill).
    reconnects: u32,
}

/// The payload of item `i`, and its line in `sub`'s output.
fn payload(i: u32) -> String {
    format!("<n xmlns='urn:x'>{i}</n>")
}

fn item_of_line(line: &str) -> Option<u32> {
    line.strip_prefix("<n xmlns=\"urn:x\">")?
        .strip_suffix("</n>")?
        .parse()
        .ok()
}

/// Client settings for alice, straight to the daemon on `port`.
fn publisher_settings(port: u16) -> Settings {
    Settings {
        host: "127.0.0.1".to_owned(),
        port,
        domain: "localhost".to_owned(),
        service: "pubsub.localhost".to_owned(),
        auth: Auth::Password {
            user: "alice".to_owned(),
            password: "alice-pw".to_owned(),
        },
        resource: "chaos-pub".to_owned(),
        tls: TlsMode::Off,
        ca_file: None,
        insecure: false,
        timeout: Duration::from_secs(5),
        tls_config: None,
    }
}

/// Connects to the daemon at `port` (re-read on each try, since a restart moves it),
/// retrying for 30 s at most.
/// The publisher's request `what` failed with `e`: a transient error reconnects (`true`:
/// go on; that publish is not acknowledged), another ends the publisher with the error
/// recorded (`false`).
fn recover(
    e: kinglet::client::ClientError,
    what: &str,
    conn: &mut Conn,
    port: &AtomicU16,
    published: &mut Published,
) -> bool {
    if !e.is_transient() {
        published.errors.push(format!("{what}: {e}"));
        return false;
    }
    published.reconnects += 1;
    match publisher_connect(port, published) {
        Some(c) => {
            *conn = c;
            true
        }
        None => false,
    }
}

fn publisher_connect(port: &AtomicU16, published: &mut Published) -> Option<Conn> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Conn::connect(&mut publisher_settings(port.load(Ordering::SeqCst))) {
            Ok(c) => return Some(c),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                // The daemon is being restarted: try again shortly.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                published
                    .errors
                    .push(format!("publisher cannot connect: {e}"));
                return None;
            }
        }
    }
}

/// Publishes items `1..=items` to [`NODE`], one at a time, each waiting for its
/// acknowledgement, at most one per `pace`; item `i` waits until `done` events of the plan
/// (of `events`) have happened so that the items are spread over the whole plan. A lost
/// connection leaves the item unacknowledged (it is not sent again) and reconnects.
fn publisher(
    port: Arc<AtomicU16>,
    items: u32,
    events: usize,
    done: Arc<AtomicUsize>,
    pace: Duration,
) -> JoinHandle<Published> {
    std::thread::spawn(move || {
        let mut published = Published::default();
        let Some(mut conn) = publisher_connect(&port, &mut published) else {
            return published;
        };
        for i in 1..=items {
            let segment = (i as usize - 1) * (events + 1) / items as usize;
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::SeqCst) < segment {
                if Instant::now() > deadline {
                    published
                        .errors
                        .push(format!("item {i}: the fault plan stalled"));
                    return published;
                }
                // Reading meanwhile answers the daemon's idle pings, which would otherwise
                // close this quiet stream after `idle_timeout_secs`.
                if let Err(e) = conn.next_stanza(Instant::now() + Duration::from_millis(10)) {
                    if !recover(e, "publisher", &mut conn, &port, &mut published) {
                        return published;
                    }
                }
            }
            let next = Instant::now() + pace;
            let body = publish_body(
                NODE,
                Some(&format!("i{i}")),
                &payload_from_xml(&payload(i)).expect("payload"),
            );
            published.sent = i;
            match conn.iq("set", Some("pubsub.localhost"), &body, "publish") {
                Ok(_) => published.acked.push(i),
                Err(e) => {
                    let what = format!("publish item {i}");
                    if !recover(e, &what, &mut conn, &port, &mut published) {
                        return published;
                    }
                }
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        conn.close();
        published
    })
}

/// The counts of one run.
#[derive(Default)]
struct Counts {
    faults: BTreeMap<String, u32>,
    sent: u32,
    acked: usize,
    received: usize,
    duplicates: usize,
    missing: Vec<u32>,
    out_of_order: usize,
    unacked_received: usize,
    reconnects: usize,
    resumptions: usize,
    catch_ups: usize,
    failed_resumptions: usize,
    lost: usize,
    reconnect_failures: usize,
    connections: usize,
    publisher_reconnects: u32,
}

/// One chaos run: `items` items, `faults` faults, and a `kill -9` if `kill`.
fn chaos_run(name: &str, seed: u64, items: u32, faults: usize, kill: bool) -> Counts {
    let mut rng = fastrand::Rng::with_seed(seed);
    let events = plan(&mut rng, faults, kill);
    eprintln!(
        "chaos {name}: seed {seed} (KINGLET_CHAOS_SEED={seed} replays this plan): {events:?}"
    );

    let mut daemon = chaos_daemon();
    let proxy = Proxy::start(daemon.port);
    let (_alice, bob) = super::sub_cuts::feed_node(&daemon, proxy.port, NODE);
    let mut sub = Sub::spawn(
        &with(
            &bob,
            &[
                "sub",
                "--node",
                NODE,
                "--resource",
                "s",
                "--verbose",
                "--keepalive",
                "1",
                "--timeout",
                "2",
            ],
        ),
        &daemon.dir.0,
    );
    let budget = Budget {
        start: Instant::now(),
        limit: Duration::from_secs(90),
        what: format!("chaos {name}, seed {seed} (KINGLET_CHAOS_SEED={seed} replays its plan)"),
        dir: daemon.dir.0.clone(),
    };
    while !sub.err().contains("kinglet: subscribed to node") {
        budget.check("the first subscription", &mut sub);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sub.err().contains("stream management enabled, resumable"),
        "{}",
        budget.context(&sub)
    );

    let port = Arc::new(AtomicU16::new(daemon.port));
    let done = Arc::new(AtomicUsize::new(0));
    let pub_thread = publisher(
        port.clone(),
        items,
        events.len(),
        done.clone(),
        Duration::from_millis(30),
    );
    let mut counts = Counts::default();
    let mut killed_at = None;

    for ev in &events {
        match *ev {
            Event::Fault {
                fault,
                at,
                after,
                gap,
                early,
            } => {
                let link = loop {
                    budget.check(&format!("a connection to fault with {fault:?}"), &mut sub);
                    if early || in_session(&sub.err()) {
                        if let Some(l) = proxy.fresh() {
                            break l;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                proxy.close_stale();
                if !early {
                    // The random point in time (the byte offset below is the other half).
                    std::thread::sleep(gap);
                }
                if link.arm(fault, at, after) {
                    let armed = Instant::now();
                    while !link.fired() && armed.elapsed() < FIRE_BY {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let by_bytes = link.fired();
                    link.fire();
                    *counts.faults.entry(fault.kind()).or_default() += 1;
                    eprintln!(
                        "chaos {name}: {:.1} s: {} {}",
                        budget.start.elapsed().as_secs_f64(),
                        fault.kind(),
                        if by_bytes {
                            format!("after {after} bytes {at:?}")
                        } else {
                            "by time".to_owned()
                        }
                    );
                }
            }
            Event::Kill { gap } => {
                while !in_session(&sub.err()) {
                    budget.check("the session before the kill", &mut sub);
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::thread::sleep(gap);
                killed_at = Some(sub.err().len());
                daemon.restart("stderr-2.log");
                port.store(daemon.port, Ordering::SeqCst);
                proxy.retarget(daemon.port);
                *counts.faults.entry("kill-9".to_owned()).or_default() += 1;
                eprintln!(
                    "chaos {name}: {:.1} s: kill -9 and restart",
                    budget.start.elapsed().as_secs_f64()
                );
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
    }

    // The plan is over: `sub` reconnects one last time, and the rest is published.
    while !(in_session(&sub.err()) && proxy.fresh().is_some()) {
        budget.check("the session after the last fault", &mut sub);
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy.close_stale();
    let published = loop {
        budget.check("the publisher", &mut sub);
        if pub_thread.is_finished() {
            break pub_thread.join().expect("publisher thread");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(published.errors.is_empty(), "{:?}", published.errors);
    // `sub`'s stdout, until the last acknowledged item (items come in order, or the
    // checks below fail).
    let last = *published.acked.last().expect("some item acknowledged");
    let mut received: Vec<String> = Vec::new();
    while !received.iter().any(|l| item_of_line(l) == Some(last)) {
        budget.check(&format!("item {last} from sub"), &mut sub);
        if let Ok(l) = sub.lines.recv_timeout(Duration::from_millis(100)) {
            received.push(l);
        }
    }
    // Anything printed after the last item would be a duplicate: give it a moment to show.
    let quiet = Instant::now() + Duration::from_millis(500);
    while let Ok(l) = sub
        .lines
        .recv_timeout(quiet.saturating_duration_since(Instant::now()))
    {
        received.push(l);
    }
    let err = sub.err();
    let failure = budget.context(&sub);
    drop(sub);

    // The counts.
    let said = |needle: &str| err.matches(needle).count();
    counts.sent = published.sent;
    counts.acked = published.acked.len();
    counts.received = received.len();
    counts.reconnects = said("kinglet: reconnected and");
    counts.resumptions = said("kinglet: reconnected and resumed the session");
    counts.catch_ups = said("kinglet: caught up");
    counts.failed_resumptions = said("kinglet: could not resume the session");
    counts.lost = said("kinglet: connection lost");
    counts.reconnect_failures = said("kinglet: reconnect failed");
    counts.connections = proxy.forwarded();
    counts.publisher_reconnects = published.reconnects;
    let mut seen = std::collections::BTreeSet::new();
    let mut prev = 0;
    let mut bad_lines = Vec::new();
    for l in &received {
        let Some(i) = item_of_line(l) else {
            bad_lines.push(l.clone());
            continue;
        };
        if !seen.insert(i) {
            counts.duplicates += 1;
        } else if i < prev {
            counts.out_of_order += 1;
        }
        prev = prev.max(i);
    }
    let acked: std::collections::BTreeSet<u32> = published.acked.iter().copied().collect();
    counts.missing = acked.difference(&seen).copied().collect();
    counts.unacked_received = seen.difference(&acked).count();
    let faults_json: Vec<String> = counts
        .faults
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let cuts: u32 = counts.faults.values().sum();
    eprintln!(
        "chaos {name}: seed {seed}: {cuts} cuts ({faults:?}), {sent} items sent, {acked} \
         acknowledged, {received} received, {dup} duplicates, {missing} missing, {ooo} out of \
         order, {ur} unacknowledged but received; sub: {lost} connections lost, {rc} \
         reconnects ({res} resumptions, {cu} catch-ups, {fr} failed resumptions), {rf} failed \
         attempts, {conns} TCP connections; publisher reconnects: {pr}; {secs:.1} s",
        faults = counts.faults,
        sent = counts.sent,
        acked = counts.acked,
        received = counts.received,
        dup = counts.duplicates,
        missing = counts.missing.len(),
        ooo = counts.out_of_order,
        ur = counts.unacked_received,
        lost = counts.lost,
        rc = counts.reconnects,
        res = counts.resumptions,
        cu = counts.catch_ups,
        fr = counts.failed_resumptions,
        rf = counts.reconnect_failures,
        conns = counts.connections,
        pr = counts.publisher_reconnects,
        secs = budget.start.elapsed().as_secs_f64(),
    );
    eprintln!(
        "{{\"chaos\":\"{name}\",\"seed\":{seed},\"cuts\":{cuts},\"faults\":{{{}}},\
         \"sent\":{},\"acked\":{},\"received\":{},\"duplicates\":{},\"missing\":{},\
         \"out_of_order\":{},\"unacked_received\":{},\"lost\":{},\"reconnects\":{},\
         \"resumptions\":{},\"catch_ups\":{},\"failed_resumptions\":{},\
         \"failed_attempts\":{},\"connections\":{},\"publisher_reconnects\":{},\
         \"secs\":{:.1}}}",
        faults_json.join(","),
        counts.sent,
        counts.acked,
        counts.received,
        counts.duplicates,
        counts.missing.len(),
        counts.out_of_order,
        counts.unacked_received,
        counts.lost,
        counts.reconnects,
        counts.resumptions,
        counts.catch_ups,
        counts.failed_resumptions,
        counts.reconnect_failures,
        counts.connections,
        counts.publisher_reconnects,
        budget.start.elapsed().as_secs_f64(),
    );

    assert!(
        bad_lines.is_empty(),
        "lines that are no item: {bad_lines:?}\n{}",
        failure
    );
    assert_eq!(counts.sent, items, "{}", failure);
    assert_eq!(counts.duplicates, 0, "items printed twice\n{}", failure);
    assert_eq!(counts.out_of_order, 0, "items out of order\n{}", failure);
    assert!(
        counts.missing.is_empty(),
        "acknowledged items never printed: {:?}\n{}",
        counts.missing,
        failure
    );
    assert!(
        seen.iter().all(|i| *i <= items),
        "an item that was never sent\n{}",
        failure
    );
    if let Some(at) = killed_at {
        let after = &err[at..];
        assert!(
            after.contains("kinglet: could not resume the session")
                && after.contains("kinglet: caught up"),
            "after the kill -9, sub did not fail to resume and catch up\n{}",
            failure
        );
    }
    counts
}

/// Run 1: N = 500 items, K = 8 faults of every kind; no item lost or doubled, and the
/// session resumed at least once.
#[test]
fn chaos_sub_resumes_across_random_faults() {
    let seed = seed();
    let c = chaos_run("resume", seed, 500, 8, false);
    assert_eq!(c.acked, 500, "every publish is acknowledged (no kill)");
    assert!(
        c.resumptions >= 1,
        "seed {seed}: no reconnect was a resumption"
    );
    // The detached queue holds every item and the window outlasts the run: no resumption
    // may fail, so no reconnect needs a catch-up.
    assert_eq!(
        (c.resumptions, c.failed_resumptions, c.catch_ups),
        (c.reconnects, 0, 0),
        "seed {seed}: every reconnect is a resumption"
    );
}

/// Run 2: N = 300 items, K = 4 faults and a `kill -9` of the daemon with a restart; the
/// catch-up delivers every acknowledged item once, in order.
#[test]
fn chaos_sub_catches_up_after_kill_9() {
    let seed = seed();
    let c = chaos_run("kill", seed, 300, 4, true);
    assert!(c.catch_ups >= 1, "seed {seed}: no catch-up");
}
