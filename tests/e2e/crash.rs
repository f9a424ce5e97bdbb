//! Crash safety of the pub-sub store (docs/architecture.md, "An IQ result means durable"): several clients publish
//! concurrently with a window of outstanding IQs, the daemon is killed with SIGKILL in the
//! middle of the load, restarted on the same data, and every item whose publish result
//! arrived must be there with its exact payload. Also: with `store.flush_interval`, a clean
//! SIGTERM flushes what is pending.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kinglet::xml::Element;

use super::client::{Client, node_config};
use super::{Daemon, Options};

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
        ..Options::default()
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

/// SIGKILLs the daemon once `acks` reaches `kill_at`, or after `limit` at the latest.
fn kill_after(d: &mut Daemon, acks: &AtomicUsize, kill_at: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while acks.load(Ordering::Relaxed) < kill_at && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = d.child.kill();
    let _ = d.child.wait();
}

fn payload(node: &str, n: usize) -> String {
    format!("{node}/{n}/{}", "x".repeat(n % 97))
}

pub(super) fn create(c: &mut Client, node: &str) {
    let r = c.create_node("c", node, &[("pubsub#max_items", "max")]);
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
        let r = c.iq_ok(
            &id,
            &format!(
                "<iq type='get' id='{id}' to='pubsub.localhost'><pubsub xmlns='{PS}'><items node='{node}'/>{set}</pubsub></iq>"
            ),
        );
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
    d.restart(log);
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

/// docs/architecture.md, "An IQ result means durable": a publish result means the item is durable, under concurrent
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
        kill_after(&mut d, &acks, 1000 + 1500 * round, Duration::from_secs(10));
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

const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// Rounds of mixed load and SIGKILL.
const MIXED_ROUNDS: usize = 2;
/// Outstanding requests per client in the mixed load.
const MIXED_WINDOW: usize = 8;
/// Roster contacts each client cycles through.
const CONTACTS: usize = 5;

/// A durable value the mixed load changes: one key is changed by one client only, so its
/// requests are handled (and answered) in the order they were sent.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    /// Subscribed to the node or not.
    Sub(bool),
    /// Roster item name, or no item.
    Roster(Option<String>),
    /// Node configuration: (`pubsub#max_items`, `pubsub#title`), set by one request.
    Config(String, String),
}

/// How a request ended before the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    Refused,
    Unanswered,
}

/// The requests one client sent on one key, in order.
type Histories = BTreeMap<String, (Val, Vec<(Val, Outcome)>)>;

/// The values a key may hold after the crash: the last acknowledged one (or the initial
/// one), or any sent after it and never answered (a commit may have carried it just
/// before the kill). A half-applied request (a configure with its max_items but not its
/// title) matches none.
fn allowed(initial: &Val, ops: &[(Val, Outcome)]) -> Vec<Val> {
    let mut ok = vec![initial.clone()];
    for (v, o) in ops {
        match o {
            Outcome::Acked => ok = vec![v.clone()],
            Outcome::Unanswered => ok.push(v.clone()),
            Outcome::Refused => {}
        }
    }
    ok
}

fn config_form(max_items: &str, title: &str) -> String {
    node_config(&[("pubsub#max_items", max_items), ("pubsub#title", title)])
}

/// One client's mixed load until `stop` or the kill: publishes to its own node, subscribe
/// and unsubscribe on the other clients' nodes, roster sets and removals, configure of its
/// own node (max_items and title together), with up to [`MIXED_WINDOW`] requests
/// outstanding. Returns the per-key histories and the acknowledged item numbers.
fn mixed_load(
    mut c: Client,
    user: &str,
    own: &str,
    others: &[String],
    round: usize,
    stop: Instant,
    acks: &AtomicUsize,
) -> (Histories, Vec<usize>) {
    let mut keys: Vec<String> = Vec::new();
    let mut sent_ops: Vec<(usize, Val)> = Vec::new();
    let mut hist: Histories = BTreeMap::new();
    let mut published = Vec::new();
    let mut subscribed: BTreeMap<String, bool> = BTreeMap::new();
    let mut outstanding: BTreeMap<String, Option<usize>> = BTreeMap::new();
    let mut k = 0usize;
    let key_index = |keys: &mut Vec<String>, key: String| -> usize {
        match keys.iter().position(|x| *x == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        }
    };
    loop {
        while outstanding.len() < MIXED_WINDOW && k < MAX_PER_CLIENT && Instant::now() < stop {
            let id = format!("q{k}");
            let (xml, op) = match k % 4 {
                0 => (
                    format!(
                        "<iq type='set' id='{id}' to='pubsub.localhost'><pubsub xmlns='{PS}'>\
                         <publish node='{own}'><item id='i{k}'><v xmlns='urn:crash'>{}</v></item>\
                         </publish></pubsub></iq>",
                        payload(own, k)
                    ),
                    None,
                ),
                1 => {
                    let node = &others[(k / 4) % others.len()];
                    let sub = !subscribed.get(node).copied().unwrap_or(false);
                    subscribed.insert(node.clone(), sub);
                    let verb = if sub { "subscribe" } else { "unsubscribe" };
                    let key = format!("sub {user} {node}");
                    hist.entry(key.clone())
                        .or_insert((Val::Sub(false), Vec::new()));
                    (
                        format!(
                            "<iq type='set' id='{id}' to='pubsub.localhost'><pubsub xmlns='{PS}'>\
                             <{verb} node='{node}' jid='{user}@localhost/crash'/></pubsub></iq>"
                        ),
                        Some((key, Val::Sub(sub))),
                    )
                }
                2 => {
                    let contact = format!("c{round}-{}@localhost", (k / 4) % CONTACTS);
                    let key = format!("roster {user} {contact}");
                    hist.entry(key.clone())
                        .or_insert((Val::Roster(None), Vec::new()));
                    if (k / 4) % 7 == 6 {
                        (
                            format!(
                                "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>\
                                 <item jid='{contact}' subscription='remove'/></query></iq>"
                            ),
                            Some((key, Val::Roster(None))),
                        )
                    } else {
                        let name = format!("n{k}");
                        (
                            format!(
                                "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>\
                                 <item jid='{contact}' name='{name}'/></query></iq>"
                            ),
                            Some((key, Val::Roster(Some(name)))),
                        )
                    }
                }
                _ => {
                    let (max, title) = ((20_000 + k).to_string(), format!("t{k}"));
                    let key = format!("config {own}");
                    hist.entry(key.clone())
                        .or_insert((Val::Config("50000".into(), "t-init".into()), Vec::new()));
                    (
                        format!(
                            "<iq type='set' id='{id}' to='pubsub.localhost'><pubsub xmlns='{OWNER}'>\
                             <configure node='{own}'>{}</configure></pubsub></iq>",
                            config_form(&max, &title)
                        ),
                        Some((key, Val::Config(max, title))),
                    )
                }
            };
            c.send_bytes_lossy(xml.as_bytes());
            let slot = op.map(|(key, val)| {
                let ki = key_index(&mut keys, key);
                sent_ops.push((ki, val));
                sent_ops.len() - 1
            });
            outstanding.insert(id, slot);
            k += 1;
        }
        if outstanding.is_empty() {
            break;
        }
        let e = match c.try_next(Duration::from_secs(5)) {
            Some(e) => e,
            // Killed: the connection ends (or stays silent).
            None => break,
        };
        if e.name != "iq" || !matches!(e.attr("type"), Some("result" | "error")) {
            continue; // notifications, roster pushes
        }
        let Some(id) = e.attr("id").map(str::to_owned) else {
            continue;
        };
        let Some(slot) = outstanding.remove(&id) else {
            continue;
        };
        let ok = e.attr("type") == Some("result");
        acks.fetch_add(usize::from(ok), Ordering::Relaxed);
        match slot {
            None if ok => {
                published.push(id[1..].parse().expect("publish number"));
            }
            None => {}
            Some(i) => {
                let (ki, val) = sent_ops[i].clone();
                let outcome = if ok { Outcome::Acked } else { Outcome::Refused };
                if let Some(h) = hist.get_mut(&keys[ki]) {
                    h.1.push((val, outcome));
                }
                sent_ops[i].1 = Val::Sub(false); // answered: not used again
                sent_ops[i].0 = usize::MAX;
            }
        }
    }
    // Requests never answered, in send order among each key's answered ones: a key's
    // requests are answered in order, so the unanswered ones come after every answer.
    for (ki, val) in sent_ops {
        if ki != usize::MAX {
            if let Some(h) = hist.get_mut(&keys[ki]) {
                h.1.push((val, Outcome::Unanswered));
            }
        }
    }
    (hist, published)
}

/// What the restarted daemon holds for `key`.
fn read_back(c: &mut Client, key: &str, n: usize) -> Val {
    let parts: Vec<&str> = key.split(' ').collect();
    match parts[..] {
        ["sub", _user, node] => {
            let r = c.pubsub_ok(&format!("s{n}"), "get", PS, "<subscriptions/>");
            let subs = r
                .child("pubsub", PS)
                .and_then(|p| p.child("subscriptions", PS));
            let any = subs.is_some_and(|s| {
                s.elements().any(|e| {
                    e.attr("node") == Some(node) && e.attr("subscription") == Some("subscribed")
                })
            });
            Val::Sub(any)
        }
        ["roster", _user, contact] => {
            let r = c.iq_ok(
                &format!("r{n}"),
                &format!("<iq type='get' id='r{n}'><query xmlns='jabber:iq:roster'/></iq>"),
            );
            let item = r.child("query", "jabber:iq:roster").and_then(|q| {
                q.elements()
                    .find(|i| i.attr("jid") == Some(contact))
                    .map(|i| i.attr("name").unwrap_or("").to_owned())
            });
            Val::Roster(item)
        }
        ["config", node] => {
            let inner = format!("<configure node='{node}'/>");
            let r = c.pubsub_ok(&format!("g{n}"), "get", OWNER, &inner);
            let x = r
                .child("pubsub", OWNER)
                .and_then(|p| p.child("configure", OWNER))
                .and_then(|c| c.child("x", "jabber:x:data"))
                .expect("configure form");
            let field = |var: &str| {
                x.elements()
                    .find(|f| f.attr("var") == Some(var))
                    .and_then(|f| f.elements().find(|v| v.name == "value"))
                    .map(Element::text)
                    .unwrap_or_default()
            };
            Val::Config(field("pubsub#max_items"), field("pubsub#title"))
        }
        _ => panic!("bad key {key}"),
    }
}

/// Issue 10, "crash test extension": kill -9 during mixed load (publish, subscribe and
/// unsubscribe, roster set and remove, node configure), at a different moment each round.
/// After the restart every acknowledged change is there (items with their payloads,
/// subscriptions listed, roster items with their names, configuration values), and every
/// key holds either its last acknowledged value or one sent after it and never answered:
/// no change is half there.
#[test]
fn kill_9_under_mixed_load_keeps_every_acknowledged_write() {
    let mut d = Daemon::start(options(
        "[store]\nmax_bytes = 0\n[limits]\npubsub_max_items_per_node = 100000\n",
    ));
    // key → (allowed values), across rounds: an earlier round's keys must keep the value
    // that was read back after its restart.
    let mut expect: BTreeMap<(String, String), Vec<Val>> = BTreeMap::new();
    let mut items: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for round in 0..MIXED_ROUNDS {
        let nodes: Vec<String> = (0..USERS.len()).map(|i| format!("mx{round}-{i}")).collect();
        let mut clients = Vec::new();
        for (i, (user, _)) in USERS.iter().enumerate() {
            let mut c = login(d.port, user);
            c.iq_ok(
                "c",
                &format!(
                    "<iq type='set' id='c' to='pubsub.localhost'><pubsub xmlns='{PS}'><create node='{}'/>\
                     <configure>{}</configure></pubsub></iq>",
                    nodes[i],
                    config_form("50000", "t-init")
                ),
            );
            clients.push(c);
        }
        let start = Arc::new(Barrier::new(clients.len() + 1));
        let acks = Arc::new(AtomicUsize::new(0));
        let stop = Instant::now() + Duration::from_secs(20);
        let threads: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let (start, acks) = (start.clone(), acks.clone());
                let user = USERS[i].0;
                let own = nodes[i].clone();
                let others: Vec<String> = nodes.iter().filter(|n| **n != own).cloned().collect();
                std::thread::spawn(move || {
                    start.wait();
                    let (h, p) = mixed_load(c, user, &own, &others, round, stop, &acks);
                    (user, own, h, p)
                })
            })
            .collect();
        start.wait();
        // Kill in the middle of the load, after a different number of results each round,
        // or after 8 s at the latest.
        kill_after(&mut d, &acks, 400 + 700 * round, Duration::from_secs(8));
        let mut counts = [0usize; 3];
        for t in threads {
            let (user, own, hist, published) = t.join().expect("client thread");
            counts[0] += published.len();
            for (key, (initial, ops)) in hist {
                counts[1] += ops.iter().filter(|(_, o)| *o == Outcome::Acked).count();
                counts[2] += ops
                    .iter()
                    .filter(|(_, o)| *o == Outcome::Unanswered)
                    .count();
                expect.insert((user.to_owned(), key), allowed(&initial, &ops));
            }
            items.insert(own, published);
        }
        eprintln!(
            "mixed round {round}: {} publishes and {} other changes acknowledged, {} unanswered at kill -9",
            counts[0], counts[1], counts[2]
        );
        assert!(
            counts[0] > 0 && counts[1] > 0,
            "round {round}: too little was acknowledged"
        );
        let log = format!("stderr-mixed-{round}.log");
        restart(&mut d, &log);
        verify(&d, &items, &log);
        let mut by_user: BTreeMap<String, Client> = BTreeMap::new();
        let mut n = 0;
        for ((user, key), ok) in expect.iter_mut() {
            let c = by_user
                .entry(user.clone())
                .or_insert_with(|| login(d.port, user));
            n += 1;
            let got = read_back(c, key, n);
            assert!(
                ok.contains(&got),
                "round {round}: {key} holds {got:?} after kill -9; allowed (last acknowledged, \
                 then unanswered): {ok:?}"
            );
            // Durable now: later rounds must find exactly this.
            *ok = vec![got];
        }
    }
}
