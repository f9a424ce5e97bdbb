//! Unit tests of the group-commit holding of pub-sub replies and notifications (`crate::pubsub::commit`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;
use crate::limits::Limits;
use crate::outbox::Outbox;
use crate::router::Router;
use crate::store::{CommitMode, Store};
use crate::test_support::{TempDir, bind, group_router, stored_item_ids};

const PS: &str = "http://jabber.org/protocol/pubsub";
const ALICE: &str = "alice@localhost/a";
const NOW: u64 = 1_700_000_000_000;

struct NoRoster;
impl Directory for NoRoster {
    fn roster_entry(&self, _: &Jid, _: &Jid) -> Option<(bool, Vec<String>)> {
        None
    }
    fn presences(&self, _: &Jid) -> Vec<(Jid, String)> {
        Vec::new()
    }
}

fn iq(from: &str, id: &str, ty: &str, to: &str, body: &str) -> Element {
    Element::parse(&format!(
        "<iq type='{ty}' id='{id}' from='{from}' to='{to}'>{body}</iq>"
    ))
    .expect("test stanza parses")
}

fn create(node: &str) -> String {
    format!("<pubsub xmlns='{PS}'><create node='{node}'/></pubsub>")
}

fn subscribe(node: &str) -> String {
    format!("<pubsub xmlns='{PS}'><subscribe node='{node}' jid='{ALICE}'/></pubsub>")
}

fn publish(node: &str, id: &str, text: &str) -> String {
    format!(
        "<pubsub xmlns='{PS}'><publish node='{node}'><item id='{id}'><t xmlns='u'>{text}</t></item></publish></pubsub>"
    )
}

fn items(node: &str) -> String {
    format!("<pubsub xmlns='{PS}'><items node='{node}'/></pubsub>")
}

struct Service {
    config: Config,
    store: Store,
    engine: Option<Engine>,
}

impl Service {
    fn new(dir: &TempDir, mode: CommitMode) -> Service {
        let config = Config::default();
        let store = Store::open(&dir.0, 0).expect("store");
        store.pubsub_set_mode(mode);
        let engine = Some(Engine::load(&config, &store).expect("engine"));
        Service {
            config,
            store,
            engine,
        }
    }

    fn send(&mut self, id: &str, ty: &str, body: &str) -> Vec<String> {
        let from = Jid::parse(ALICE).expect("jid");
        let e = self.engine.as_mut().expect("service enabled");
        let stanza = iq(ALICE, id, ty, "pubsub.localhost", body);
        summary(&e.handle_iq(&NoRoster, &self.store, &from, &stanza, NOW))
    }

    fn finish(&mut self, result: Result<(), StoreError>) -> Vec<String> {
        let batch = self.store.pubsub_take().expect("a batch to commit");
        if result.is_ok() {
            batch.write().expect("write");
        }
        let generation = batch.generation();
        summary(&self.committed(generation, result))
    }

    fn committed(&mut self, generation: u64, result: Result<(), StoreError>) -> Vec<Delivery> {
        let (engine, out) = committed(
            self.engine.take(),
            &self.config,
            &self.store,
            generation,
            result,
        );
        self.engine = engine;
        let mut out = out;
        if let Some(e) = self.engine.as_mut() {
            out.extend(e.resume(&NoRoster, &self.store));
        }
        out
    }
}

/// `name:id:type`, or `message:<item ids>` for notifications.
fn summary(out: &[Delivery]) -> Vec<String> {
    out.iter()
        .map(|d| {
            let e = Element::parse(&d.stanza.to_text()).expect("output parses");
            if e.name == "message" {
                format!("message:{}", d.stanza.to_text().contains("<item id="))
            } else {
                format!(
                    "{}:{}:{}",
                    e.name,
                    e.attr("id").unwrap_or(""),
                    e.attr("type").unwrap_or("")
                )
            }
        })
        .collect()
}

/// docs/architecture.md, "An IQ result means durable": a publish result and its
/// notifications go out only once the item is on disk; a read in between sees the
/// staged item; outputs keep their order.
#[test]
fn group_commit_holds_outputs_until_their_batch_is_on_disk() {
    let dir = TempDir::new("commit-hold");
    let mut s = Service::new(&dir, CommitMode::Group);
    assert!(s.send("c", "set", &create("n")).is_empty());
    assert!(s.send("s", "set", &subscribe("n")).is_empty());
    let first = s.store.pubsub_take().expect("first batch");
    // While the first batch is in flight: a publish and a read, both held.
    assert!(s.send("p", "set", &publish("n", "i1", "one")).is_empty());
    assert!(s.send("r", "get", &items("n")).is_empty());
    assert_eq!(s.engine.as_ref().map(Engine::held_count), Some(4));
    first.write().expect("write");
    let out = s.committed(first.generation(), Ok(()));
    assert_eq!(summary(&out), ["iq:c:result", "iq:s:result"]);
    // The publish is not on disk yet: nothing about it was sent.
    assert!(s.store.pubsub_load().expect("load").items.is_empty());
    let out = s.finish(Ok(()));
    assert_eq!(out, ["iq:p:result", "message:true", "iq:r:result"]);
    assert_eq!(s.store.pubsub_load().expect("load").items.len(), 1);
    // Nothing staged: replies go out at once.
    assert_eq!(s.send("r2", "get", &items("n")), ["iq:r2:result"]);
}

/// A failed commit: every held request gets internal-server-error, no notification is
/// sent, and the engine forgets what the disk does not have.
#[test]
fn failed_commit_refuses_held_requests_and_reloads_from_disk() {
    let dir = TempDir::new("commit-fail");
    let mut s = Service::new(&dir, CommitMode::Group);
    s.send("c", "set", &create("n"));
    s.send("s", "set", &subscribe("n"));
    assert_eq!(s.finish(Ok(())), ["iq:c:result", "iq:s:result"]);
    assert!(s.send("p", "set", &publish("n", "i1", "one")).is_empty());
    assert!(s.send("m", "set", &create("m")).is_empty());
    let out = s.finish(Err(StoreError::Full));
    assert_eq!(out, ["iq:p:error", "iq:m:error"]);
    assert_eq!(s.engine.as_ref().map(Engine::held_count), Some(0));
    // Memory equals disk: no item i1, no node m.
    assert_eq!(s.send("r", "get", &items("n")), ["iq:r:result"]);
    assert_eq!(s.send("r2", "get", &items("m")), ["iq:r2:error"]);
    let out = s.send("r3", "get", &items("n"));
    assert_eq!(out.len(), 1);
    assert_eq!(s.store.pubsub_load().expect("load").nodes.len(), 1);
}

/// Back-pressure: once the held outputs pass `pubsub_backlog_bytes`, requests wait
/// unhandled (in order) until a commit releases outputs; a full deferred queue refuses with
/// resource-constraint.
#[test]
fn requests_are_deferred_while_held_outputs_are_at_their_bound() {
    let dir = TempDir::new("commit-defer");
    let mut s = Service::new(&dir, CommitMode::Group);
    s.send("c", "set", &create("n"));
    s.finish(Ok(()));
    for i in 0..1000 {
        let who = format!("u{i}@localhost/r");
        let from = Jid::parse(&who).expect("jid");
        let body = format!("<pubsub xmlns='{PS}'><subscribe node='n' jid='{who}'/></pubsub>");
        let stanza = iq(&who, "s", "set", "pubsub.localhost", &body);
        let e = s.engine.as_mut().expect("engine");
        e.handle_iq(&NoRoster, &s.store, &from, &stanza, NOW);
    }
    s.finish(Ok(()));
    // 1000 notifications of about 9 KiB: one publish fills the bound.
    let big = "x".repeat(9000);
    assert!(s.send("p1", "set", &publish("n", "i1", &big)).is_empty());
    assert!(s.send("p2", "set", &publish("n", "i2", &big)).is_empty());
    assert!(s.send("r", "get", &items("n")).is_empty());
    let e = s.engine.as_ref().expect("engine");
    assert_eq!((e.held_count(), e.deferred_count()), (1, 2));
    let out = s.finish(Ok(()));
    // p1 released (reply and 1000 notifications), p2 handled and held, r after it.
    assert_eq!(out.len(), 1001);
    assert_eq!(out[0], "iq:p1:result");
    let e = s.engine.as_ref().expect("engine");
    assert_eq!((e.held_count(), e.deferred_count()), (1, 1));
    for i in 0..Limits::default().pubsub_deferred_requests - 1 {
        assert!(s.send(&format!("d{i}"), "get", &items("n")).is_empty());
    }
    assert_eq!(s.send("over", "get", &items("n")), ["iq:over:error"]);
    let out = s.finish(Ok(()));
    assert_eq!(out[0], "iq:p2:result");
    assert_eq!(out[1001], "iq:r:result");
    assert_eq!(
        out.len(),
        1002 + Limits::default().pubsub_deferred_requests - 1
    );
    assert_eq!(s.engine.as_ref().map(Engine::deferred_count), Some(0));
}

/// Issue 10: one commit releases more outputs for a session than its outbox holds (50
/// publishes in one batch, outboxes of 8 stanzas). Neither the subscriber nor the
/// publisher is closed: what does not fit waits for the reader, and every notification
/// and result arrives, in order.
#[test]
fn release_after_commit_respects_each_outbox_room() {
    let dir = TempDir::new("commit-room");
    let store = Rc::new(Store::open(&dir.0, 0).expect("store"));
    let mut router = group_router(&dir.0, &store, |_| {});
    let (ob_a, ob_b) = (Outbox::new(8, 1 << 20), Outbox::new(8, 1 << 20));
    let alice = router
        .bind("alice", false, Some("a"), 1, ob_a.clone())
        .expect("bind");
    let bob = router
        .bind("bob", false, Some("b"), 2, ob_b.clone())
        .expect("bind");
    let commit = |router: &mut Router| {
        let batch = store.pubsub_take().expect("a batch");
        let r = batch.write();
        router.pubsub_committed(batch.generation(), r);
    };
    let drain_all = |ob: &Outbox| {
        let mut all = String::new();
        for _ in 0..1000 {
            let mut v = Vec::new();
            ob.drain_into(&mut v);
            if v.is_empty() && ob.is_empty() {
                break;
            }
            all.push_str(&String::from_utf8(v).expect("utf-8"));
        }
        all
    };
    let ps = |router: &mut Router, from: &Jid, id: &str, body: &str| {
        router.route(from, iq(from.as_str(), id, "set", "pubsub.localhost", body));
    };
    ps(&mut router, &alice, "c", &create("n"));
    commit(&mut router);
    let sub = format!("<pubsub xmlns='{PS}'><subscribe node='n' jid='{bob}'/></pubsub>");
    ps(&mut router, &bob, "s", &sub);
    commit(&mut router);
    drain_all(&ob_a);
    drain_all(&ob_b);
    for i in 0..50 {
        ps(
            &mut router,
            &alice,
            &format!("p{i}"),
            &publish("n", &format!("i{i}"), "x"),
        );
    }
    assert!(ob_a.is_empty() && ob_b.is_empty(), "held until the commit");
    commit(&mut router);
    assert_eq!(ob_a.kicked(), None, "the publisher was closed");
    assert_eq!(ob_b.kicked(), None, "the subscriber was closed");
    let results = drain_all(&ob_a);
    let notes = drain_all(&ob_b);
    let order = |text: &str, pat: &str| -> Vec<usize> {
        text.match_indices(pat)
            .map(|(at, _)| {
                let rest = &text[at + pat.len()..];
                let end = rest.find(['"', '\'']).unwrap_or(rest.len());
                rest[..end].parse().expect("a number")
            })
            .collect()
    };
    let want: Vec<usize> = (0..50).collect();
    // Notifications in publish order (the node keeps 20 items: retractions between).
    assert_eq!(order(&notes, "<item id='i"), want);
    assert_eq!(order(&results, "id='p"), want);
    assert_eq!(ob_a.kicked().or(ob_b.kicked()), None);
}

/// A router over a store whose writes fail with ENOSPC while `fail` is set, with
/// alice bound, node `n` created and item `i1` published (committed).
fn faulty_router(
    dir: &TempDir,
    fail: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Router, Rc<Store>, Jid, Rc<Outbox>) {
    let config = Config {
        data_dir: dir.0.clone(),
        ..Config::default()
    };
    let store = Rc::new(Store::open_with_faults(&dir.0, fail.clone()).expect("store"));
    store.pubsub_set_mode(CommitMode::Group);
    let mut router = Router::new(
        Rc::new(config),
        store.clone(),
        Rc::new(crate::system::SystemEnv::new()),
    )
    .expect("router");
    let ob = Outbox::new(64, 1 << 20);
    let alice = router
        .bind("alice", false, Some("a"), 1, ob.clone())
        .expect("bind");
    send(&mut router, &alice, "c", "set", &create("n"));
    assert!(commit(&mut router, &store).is_ok());
    send(&mut router, &alice, "p1", "set", &publish("n", "i1", "one"));
    assert!(commit(&mut router, &store).is_ok());
    drain(&ob);
    (router, store, alice, ob)
}

fn send(router: &mut Router, from: &Jid, id: &str, ty: &str, body: &str) {
    router.route(from, iq(from.as_str(), id, ty, "pubsub.localhost", body));
}

/// One group commit as `net::committer` runs it, reopening the store first if the
/// write failed. Returns the write's outcome (as text).
fn commit(router: &mut Router, store: &Store) -> Result<(), String> {
    let batch = store.pubsub_take().expect("a batch");
    let generation = batch.generation();
    let result = batch.write();
    drop(batch);
    let outcome = result.as_ref().map(|_| ()).map_err(ToString::to_string);
    if let Err(e) = &result {
        router.storage_write_failed(e);
        let job = store.reopen_begin().expect("no other handle");
        router.storage_reopened(store.reopen_end(job.run()));
    }
    router.pubsub_committed(generation, result);
    outcome
}

fn drain(ob: &Outbox) -> String {
    let mut v = Vec::new();
    ob.drain_into(&mut v);
    String::from_utf8(v).expect("utf-8")
}

/// The reply to request `id` in `text`, up to the end of its `</iq>`.
fn reply<'a>(text: &'a str, id: &str) -> &'a str {
    let at = text
        .find(&format!("id='{id}'"))
        .or_else(|| text.find(&format!("id=\"{id}\"")))
        .unwrap_or_else(|| panic!("no reply to {id} in {text}"));
    let start = text[..at].rfind("<iq").expect("iq start");
    let end = text[at..].find("</iq>").map_or(text.len(), |e| at + e + 5);
    &text[start..end]
}

/// Issue 10, item 4: a failed commit whose reopening fails too (the disk still
/// refuses writes) leaves the service listed and answering, with errors, never
/// `remote-server-not-found`; once the disk works again the committer's retry
/// reopens the store, reads and writes work without a restart, and nothing
/// acknowledged is lost.
#[test]
fn failed_commit_then_recovery_keeps_the_service_and_loses_nothing_acknowledged() {
    use std::sync::atomic::Ordering;
    let dir = TempDir::new("commit-recover");
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut router, store, alice, ob) = faulty_router(&dir, &fail);
    fail.store(true, Ordering::SeqCst);
    // Nothing staged: a read is answered at once, from the file.
    send(&mut router, &alice, "r0", "get", &items("n"));
    let out = drain(&ob);
    assert!(
        reply(&out, "r0").contains("result") && out.contains("i1"),
        "{out}"
    );
    // A write fails; so does reopening (redb's repair must write).
    send(&mut router, &alice, "p2", "set", &publish("n", "i2", "two"));
    assert!(commit(&mut router, &store).is_err());
    assert!(router.storage_needs_recovery());
    let out = drain(&ob);
    let p2 = reply(&out, "p2");
    assert!(
        p2.contains("type='error'") || p2.contains("type=\"error\""),
        "{p2}"
    );
    assert!(
        p2.contains("resource-constraint") && p2.contains("wait"),
        "{p2}"
    );
    // The service is down but listed, and answers with an error that says why.
    send(&mut router, &alice, "r1", "get", &items("n"));
    let out = drain(&ob);
    let r1 = reply(&out, "r1");
    assert!(r1.contains("resource-constraint"), "{r1}");
    assert!(!r1.contains("remote-server-not-found"), "{r1}");
    let disco = "<query xmlns='http://jabber.org/protocol/disco#items'/>";
    router.route(&alice, iq(alice.as_str(), "d", "get", "localhost", disco));
    let out = drain(&ob);
    assert!(out.contains("pubsub.localhost"), "{out}");
    // Still failing: a retry changes nothing.
    let job = store.reopen_begin().expect("closed store");
    assert!(!router.storage_reopened(store.reopen_end(job.run())));
    // Space returns: the next retry brings everything back.
    fail.store(false, Ordering::SeqCst);
    let job = store.reopen_begin().expect("closed store");
    assert!(router.storage_reopened(store.reopen_end(job.run())));
    assert!(!router.storage_needs_recovery());
    send(&mut router, &alice, "r2", "get", &items("n"));
    let out = drain(&ob);
    let r2 = reply(&out, "r2");
    assert!(r2.contains("i1") && !r2.contains("i2"), "{r2}");
    send(
        &mut router,
        &alice,
        "p3",
        "set",
        &publish("n", "i3", "three"),
    );
    assert!(commit(&mut router, &store).is_ok());
    let out = drain(&ob);
    assert!(reply(&out, "p3").contains("result"), "{out}");
    drop((router, store));
    let store = Store::open(&dir.0, 0).expect("reopen");
    assert_eq!(stored_item_ids(&store), ["i1", "i3"]);
}

/// A read held behind a write whose commit fails is not refused: it is handled again
/// against the state reloaded from the disk (without the lost write).
#[test]
fn failed_commit_then_recovery_answers_held_reads_from_the_reloaded_state() {
    use std::sync::atomic::Ordering;
    let dir = TempDir::new("commit-reread");
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut router, store, alice, ob) = faulty_router(&dir, &fail);
    send(&mut router, &alice, "p2", "set", &publish("n", "i2", "two"));
    send(&mut router, &alice, "r", "get", &items("n"));
    assert!(drain(&ob).is_empty(), "held behind the commit");
    fail.store(true, Ordering::SeqCst);
    let batch = store.pubsub_take().expect("a batch");
    let generation = batch.generation();
    let result = batch.write();
    drop(batch);
    assert!(matches!(result, Err(StoreError::Full)), "{result:?}");
    router.storage_write_failed(result.as_ref().unwrap_err());
    // The space came back before the committer reopened the file.
    fail.store(false, Ordering::SeqCst);
    let job = store.reopen_begin().expect("no other handle");
    assert!(router.storage_reopened(store.reopen_end(job.run())));
    router.pubsub_committed(generation, result);
    let out = drain(&ob);
    assert!(reply(&out, "p2").contains("resource-constraint"), "{out}");
    let r = reply(&out, "r");
    assert!(
        r.contains("result") && r.contains("i1") && !r.contains("i2"),
        "{r}"
    );
    assert!(!router.storage_needs_recovery());
}

/// `store.flush_interval`: replies at once, the item readable before the flush.
#[test]
fn interval_mode_replies_at_once_and_reads_staged_items() {
    let dir = TempDir::new("commit-interval");
    let mut s = Service::new(&dir, CommitMode::Interval(Duration::from_secs(5)));
    assert_eq!(s.send("c", "set", &create("n")), ["iq:c:result"]);
    assert_eq!(
        s.send("p", "set", &publish("n", "i1", "one")),
        ["iq:p:result"]
    );
    let from = Jid::parse(ALICE).expect("jid");
    let e = s.engine.as_mut().expect("engine");
    let out = e.handle_iq(
        &NoRoster,
        &s.store,
        &from,
        &iq(ALICE, "r", "get", "pubsub.localhost", &items("n")),
        NOW,
    );
    assert!(
        out[0].stanza.to_text().contains("<t xmlns=\"u\">one</t>"),
        "{:?}",
        out[0]
    );
    assert!(s.store.pubsub_load().expect("load").nodes.is_empty());
    assert_eq!(s.store.pubsub_flush().expect("flush"), 3);
    assert_eq!(s.store.pubsub_load().expect("load").items.len(), 1);
}

/// docs/architecture.md: the fsync runs off the protocol thread and must not stall
/// other clients. The commit is made slow (the writer sleeps 600 ms); meanwhile
/// another client's ping is answered at once, and the publisher's result arrives only
/// after the commit.
#[test]
fn slow_commit_does_not_stall_other_clients() {
    let dir = TempDir::new("commit-stall");
    let store = Rc::new(Store::open(&dir.0, 0).expect("store"));
    store.pubsub_test_delay(Duration::from_millis(600));
    let mut router = group_router(&dir.0, &store, |_| {});
    let (alice, ob_a) = bind(&mut router, "alice", "a", 1);
    let ob_b = Outbox::new(64, 1 << 20);
    let bob = router
        .bind("bob", true, Some("b"), 2, ob_b.clone())
        .expect("bind");
    let shared = crate::net::Shared::new(router, store, None);
    let ex = smol::LocalExecutor::new();
    let committer = ex.spawn(crate::net::committer(shared.clone()));
    let drained = |ob: &Outbox| {
        let mut v = Vec::new();
        ob.drain_into(&mut v);
        String::from_utf8(v).expect("utf-8")
    };
    smol::block_on(ex.run(async {
        let route = |from: &Jid, e: Element| shared.router.borrow_mut().route(from, e);
        route(
            &alice,
            iq(alice.as_str(), "c", "set", "pubsub.localhost", &create("n")),
        );
        // Let the committer take the batch and start its slow write.
        async_io::Timer::after(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        route(
            &bob,
            iq(
                bob.as_str(),
                "ping",
                "get",
                "localhost",
                "<ping xmlns='urn:xmpp:ping'/>",
            ),
        );
        let pong = drained(&ob_b);
        assert!(
            pong.contains("id=\"ping\"") && pong.contains("type=\"result\""),
            "{pong}"
        );
        assert!(t0.elapsed() < Duration::from_millis(100));
        assert!(ob_a.is_empty(), "the create result waits for the commit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while ob_a.is_empty() && Instant::now() < deadline {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        let res = drained(&ob_a);
        assert!(
            res.contains("id='c'") && res.contains("type='result'"),
            "{res}"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        shared.store.pubsub_close();
        committer.await;
    }));
}
