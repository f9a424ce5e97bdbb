//! Crash safety of the pub-sub store (DESIGN.md "Durability"): several clients publish
//! concurrently with a window of outstanding IQs, the daemon is killed with SIGKILL in the
//! middle of the load, restarted on the same data, and every item whose publish result
//! arrived must be there with its exact payload. Also: with `store.flush_interval`, a clean
//! SIGTERM flushes what is pending.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kinglet::xml::Element;

use super::client::Client;
use super::{Daemon, Options, bin};

const PS: &str = "http://jabber.org/protocol/pubsub";
const RSM: &str = "http://jabber.org/protocol/rsm";
const USERS: &[(&str, &str)] = &[("p0", "pw"), ("p1", "pw"), ("p2", "pw"), ("p3", "pw")];
/// Outstanding publishes per client.
const WINDOW: usize = 16;
/// Most publishes per client and round (never reached: the kill comes first).
const MAX_PER_CLIENT: usize = 20_000;
/// Rounds of load and SIGKILL.
const ROUNDS: usize = 3;

pub(super) fn options(extra: &'static str) -> Options {
    Options {
        tls: false,
        direct_tls: false,
        anonymous: "never",
        extra,
        users: USERS,
        accounts: Vec::new(),
        account_iterations: 0,
    }
}

pub(super) fn login(port: u16, user: &str) -> Client {
    let mut c = Client::connect(port);
    c.open_stream();
    let r = c.plain(user, "pw");
    assert_eq!(r.name, "success", "{r:?}");
    let b = c.bind(Some("crash"));
    assert_eq!(b.attr("type"), Some("result"), "{b:?}");
    c
}

fn payload(node: &str, n: usize) -> String {
    format!("{node}/{n}/{}", "x".repeat(n % 97))
}

pub(super) fn create(c: &mut Client, node: &str) {
    let r = c.iq(
        "c",
        &format!(
            "<iq type='set' id='c' to='pubsub.localhost'><pubsub xmlns='{PS}'><create node='{node}'/>\
             <configure><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PS}#node_config</value></field>\
             <field var='pubsub#max_items'><value>max</value></field>\
             </x></configure></pubsub></iq>"
        ),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

/// Publishes to `node` until `stop`, the count bound or the connection's end; returns the
/// acknowledged item numbers (and counts them in `acks` as they arrive).
fn publish_load(mut c: Client, node: &str, stop: Instant, acks: &AtomicUsize) -> Vec<usize> {
    let mut acked = Vec::new();
    let mut sent = 0;
    let mut outstanding = 0;
    loop {
        while outstanding < WINDOW && sent < MAX_PER_CLIENT && Instant::now() < stop {
            c.send_bytes_lossy(
                format!(
                    "<iq type='set' id='p{sent}' to='pubsub.localhost'><pubsub xmlns='{PS}'>\
                     <publish node='{node}'><item id='i{sent}'><v xmlns='urn:crash'>{}</v></item>\
                     </publish></pubsub></iq>",
                    payload(node, sent)
                )
                .as_bytes(),
            );
            sent += 1;
            outstanding += 1;
        }
        if outstanding == 0 {
            return acked;
        }
        match c.try_next(Duration::from_secs(5)) {
            Some(e) if e.name == "iq" => {
                outstanding -= 1;
                let n = e.attr("id").and_then(|i| i.strip_prefix('p'));
                if let (Some(n), Some("result")) = (n.and_then(|n| n.parse().ok()), e.attr("type"))
                {
                    acked.push(n);
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(_) => {}
            // Killed: the connection ends (or stays silent).
            None => return acked,
        }
    }
}

/// Every item of `node` as id → payload text, paged with RSM.
pub(super) fn all_items(c: &mut Client, node: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut after = String::new();
    for page in 0..1000 {
        let set = if after.is_empty() {
            format!("<set xmlns='{RSM}'><max>200</max></set>")
        } else {
            format!("<set xmlns='{RSM}'><max>200</max><after>{after}</after></set>")
        };
        let id = format!("g{page}");
        let r = c.iq(
            &id,
            &format!(
                "<iq type='get' id='{id}' to='pubsub.localhost'><pubsub xmlns='{PS}'><items node='{node}'/>{set}</pubsub></iq>"
            ),
        );
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        let pubsub = r.child("pubsub", PS).expect("pubsub");
        let items = pubsub.child("items", PS).expect("items");
        let mut last = None;
        for it in items.elements().filter(|e| e.name == "item") {
            let id = it.attr("id").expect("item id").to_owned();
            let text = it.child("v", "urn:crash").map(Element::text);
            out.insert(id.clone(), text.unwrap_or_default());
            last = Some(id);
        }
        match last {
            Some(l) => after = l,
            None => return out,
        }
    }
    panic!("more than 1000 pages");
}

/// Starts the daemon again on the same configuration and data; asserts it comes up.
pub(super) fn restart(d: &mut Daemon, log: &str) {
    let _ = d.child.kill();
    let _ = d.child.wait();
    let mut child = Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(&d.config)
        .env("KINGLET_PRINT_PORTS", "1")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(d.dir.0.join(log)).expect("log file"),
        ))
        .spawn()
        .expect("spawn kinglet");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no ports after restart");
        let line = match lines.next() {
            Some(Ok(l)) => l,
            _ => panic!(
                "daemon did not restart: {}",
                std::fs::read_to_string(d.dir.0.join(log)).unwrap_or_default()
            ),
        };
        if let Some(rest) = line.strip_prefix("LISTENING c2s ") {
            d.port = rest
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    d.child = child;
}

/// Checks that every acknowledged item of every node is stored with its exact payload;
/// returns how many items were checked.
fn verify(d: &Daemon, acked: &BTreeMap<String, Vec<usize>>, log: &str) -> usize {
    let text = std::fs::read_to_string(d.dir.0.join(log)).unwrap_or_default();
    assert!(
        !text.contains("pub-sub service disabled") && !text.contains("ERROR"),
        "the store did not load cleanly after the crash:\n{text}"
    );
    let mut c = login(d.port, USERS[0].0);
    let mut checked = 0;
    for (node, ns) in acked {
        let stored = all_items(&mut c, node);
        for n in ns {
            let got = stored.get(&format!("i{n}"));
            assert_eq!(
                got.map(String::as_str),
                Some(payload(node, *n).as_str()),
                "acknowledged item i{n} of {node} is missing or damaged after kill -9 \
                 ({} of {} acknowledged items stored)",
                ns.iter()
                    .filter(|n| stored.contains_key(&format!("i{n}")))
                    .count(),
                ns.len()
            );
            checked += 1;
        }
    }
    checked
}

/// DESIGN.md "Durability": a publish result means the item is durable, under concurrent
/// load and a SIGKILL at an arbitrary moment, round after round on the same file.
#[test]
fn kill_9_under_concurrent_publish_load_loses_no_acknowledged_item() {
    let mut d = Daemon::start(options(
        "[store]\nmax_bytes = 0\n[limits]\npubsub_max_items_per_node = 100000\n",
    ));
    let mut acked: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut clients = Vec::new();
        for (i, (user, _)) in USERS.iter().enumerate() {
            let mut c = login(d.port, user);
            let node = format!("r{round}-{i}");
            create(&mut c, &node);
            clients.push((c, node));
        }
        let start = Arc::new(Barrier::new(clients.len() + 1));
        let acks = Arc::new(AtomicUsize::new(0));
        let stop = Instant::now() + Duration::from_secs(20);
        let threads: Vec<_> = clients
            .into_iter()
            .map(|(c, node)| {
                let (start, acks) = (start.clone(), acks.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let a = publish_load(c, &node, stop, &acks);
                    (node, a)
                })
            })
            .collect();
        start.wait();
        // Kill in the middle of the load, after a different number of results each round
        // (whatever the machine's speed), or after 10 s at the latest.
        let kill_at = 1000 + 1500 * round;
        let deadline = Instant::now() + Duration::from_secs(10);
        while acks.load(Ordering::Relaxed) < kill_at && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = d.child.kill();
        let _ = d.child.wait();
        let mut round_acked = 0;
        for t in threads {
            let (node, a) = t.join().expect("publisher thread");
            round_acked += a.len();
            acked.insert(node, a);
        }
        assert!(round_acked > 0, "round {round}: nothing was acknowledged");
        eprintln!("round {round}: {round_acked} publishes acknowledged before kill -9");
        assert!(
            acked.values().all(|a| a.len() < MAX_PER_CLIENT),
            "round {round}: a client finished before the kill"
        );
        let log = format!("stderr-{round}.log");
        restart(&mut d, &log);
        // Every acknowledged item of this round and of the earlier ones.
        let checked = verify(&d, &acked, &log);
        assert!(checked >= round_acked);
    }
}

/// `store.flush_interval`: replies go out before the flush, and a clean SIGTERM commits
/// what is pending, so nothing acknowledged is lost on a clean stop.
#[test]
fn flush_interval_sigterm_flushes_pending_items() {
    let mut d = Daemon::start(options(
        "[store]\nmax_bytes = 0\nflush_interval = \"1m\"\n[limits]\npubsub_max_items_per_node = 100000\n",
    ));
    let mut c = login(d.port, USERS[0].0);
    create(&mut c, "term");
    let acks = AtomicUsize::new(0);
    let a = publish_load(
        c,
        "term",
        Instant::now() + Duration::from_millis(500),
        &acks,
    );
    assert!(!a.is_empty());
    let st = Command::new("kill")
        .args(["-s", "TERM", &d.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = d.child.try_wait() {
            assert!(
                status.success(),
                "exit after SIGTERM: {status:?}\n{}",
                d.log()
            );
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    restart(&mut d, "stderr-term.log");
    let mut acked = BTreeMap::new();
    acked.insert("term".to_owned(), a);
    verify(&d, &acked, "stderr-term.log");
}
