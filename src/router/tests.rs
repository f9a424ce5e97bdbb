//! Issue 10, "an acknowledged roster change is lost when a store write fails": roster
//! changes go through the group commit like pub-sub changes. A roster result (and every
//! roster push and presence the change causes) goes out only once the change is on disk;
//! if the commit fails the request gets an error and nothing changes, in memory or on disk.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Router;
use crate::config::Config;
use crate::jid::Jid;
use crate::outbox::Outbox;
use crate::store::{CommitMode, OfflineMessage, RosterItem, RosterWrite, Store, Subscription};
use crate::system::SystemEnv;
use crate::test_support::{TempDir, bind, drained, group_router};
use crate::xml::Element;

/// A router in group-commit mode (as the daemon runs it) over a store whose disk fills up
/// when `fail` is set; `alice`, `bob` and `dave` have accounts.
/// A fresh data dir `tag` with a [`router`] over it, its disk not full yet.
fn fresh(tag: &str) -> (TempDir, Arc<AtomicBool>, Router, Rc<Store>) {
    let dir = TempDir::new(tag);
    let fail = Arc::new(AtomicBool::new(false));
    let (r, store) = router(&dir, &fail);
    (dir, fail, r, store)
}

fn router(dir: &TempDir, fail: &Arc<AtomicBool>) -> (Router, Rc<Store>) {
    {
        let store = Store::open(&dir.0, 0).expect("store");
        for u in ["alice", "bob", "dave"] {
            if !store.user_exists(u).expect("read") {
                store.user_add(u, b"creds").expect("add");
            }
        }
    }
    let store = Rc::new(Store::open_with_faults(&dir.0, fail.clone()).expect("store"));
    (group_router(&dir.0, &store, |_| {}), store)
}

/// What is on disk: the store of `dir` opened again once the router and its store are gone.
fn reopened(dir: &TempDir, r: Router, store: Rc<Store>) -> Store {
    drop((r, store));
    Store::open(&dir.0, 0).expect("reopen")
}

/// `user`'s offline messages on disk ([`reopened`]).
fn offline_on_disk(dir: &TempDir, r: Router, store: Rc<Store>, user: &str) -> Vec<OfflineMessage> {
    reopened(dir, r, store).offline_get(user).expect("read")
}

/// Binds `user/resource`, sends its initial presence and clears its outbox.
fn online(r: &mut Router, user: &str, resource: &str, conn: u64) -> (Jid, Rc<Outbox>) {
    let (jid, ob) = bind(r, user, resource, conn);
    r.route(&jid, stanza(&jid, "<presence/>"));
    drained(&ob);
    (jid, ob)
}

/// What the committer task does: take the pending batch, write it, report.
fn commit(r: &mut Router, store: &Store) {
    if let Some(batch) = store.pubsub_take() {
        let res = batch.write();
        r.pubsub_committed(batch.generation(), res);
    }
}

fn stanza(from: &Jid, xml: &str) -> Element {
    let mut e = Element::parse(xml).expect("test stanza parses");
    e.set_attr("from", from.as_str());
    e
}

fn roster_get(r: &mut Router, who: &Jid, ob: &Outbox, id: &str) -> Vec<Element> {
    r.route(
        who,
        stanza(
            who,
            &format!("<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"),
        ),
    );
    let reply = drained(ob)
        .into_iter()
        .find(|e| e.attr("id") == Some(id))
        .expect("roster result");
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    reply
        .child("query", "jabber:iq:roster")
        .map(|q| q.elements().cloned().collect())
        .unwrap_or_default()
}

fn roster_set(r: &mut Router, who: &Jid, id: &str, contact: &str) {
    r.route(
        who,
        stanza(
            who,
            &format!(
                "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{contact}' name='C'/></query></iq>"
            ),
        ),
    );
}

/// The reply to the roster set `id` in `out` is `not-allowed`, its text naming the limit
/// of 521 items.
fn assert_roster_full(out: &Outbox, id: &str) {
    let reply = error_reply(&drained(out), id);
    assert_eq!(condition(&reply), "not-allowed", "{reply:?}");
    assert!(
        reply.to_string_in_stream().contains("at most 521 items"),
        "{reply:?}"
    );
}

/// The reply to `id` among `out`, which must be a stanza error (an error reply, not just a
/// log line).
fn error_reply(out: &[Element], id: &str) -> Element {
    let reply = out
        .iter()
        .find(|e| e.attr("id") == Some(id))
        .unwrap_or_else(|| panic!("no reply to {id}: {out:?}"));
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    reply.clone()
}

/// The defined condition of a stanza error.
fn condition(e: &Element) -> String {
    e.elements()
        .find(|c| c.name == "error")
        .and_then(|err| err.elements().find(|c| c.name != "text"))
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn is_push_of(e: &Element, contact: &str) -> bool {
    e.name == "iq"
        && e.attr("type") == Some("set")
        && e.child("query", "jabber:iq:roster")
            .and_then(|q| q.elements().next())
            .is_some_and(|i| i.attr("jid") == Some(contact))
}

/// Disk full: the roster set gets an error (not `result`), no resource gets a push, the
/// roster in memory is unchanged, and after a restart the roster on disk is too.
#[test]
fn roster_set_not_acked_when_commit_fails() {
    let (dir, fail, mut r, store) = fresh("router-set-fails");
    let (a, oa) = bind(&mut r, "alice", "a", 1);
    let (b, ob) = bind(&mut r, "alice", "b", 2);
    assert!(roster_get(&mut r, &a, &oa, "g1").is_empty());
    assert!(roster_get(&mut r, &b, &ob, "g2").is_empty());
    fail.store(true, Ordering::SeqCst);
    roster_set(&mut r, &a, "s1", "carol@localhost");
    commit(&mut r, &store);
    let out_a = drained(&oa);
    let reply = error_reply(&out_a, "s1");
    assert_eq!(condition(&reply), "resource-constraint", "{reply:?}");
    let out_b = drained(&ob);
    assert!(
        !out_a
            .iter()
            .chain(&out_b)
            .any(|e| is_push_of(e, "carol@localhost")),
        "a roster push for a change that was not saved: {out_a:?} {out_b:?}"
    );
    assert!(
        roster_get(&mut r, &b, &ob, "g3").is_empty(),
        "the roster in memory changed"
    );
    let store = reopened(&dir, r, store);
    assert!(store.roster_get("alice").expect("read").is_empty());
}

/// The happy path: the roster result and the push go out only once the change is on disk,
/// and a roster get sent right after the set is answered after it, with the new item.
#[test]
fn roster_result_only_after_commit() {
    let (dir, _fail, mut r, store) = fresh("router-set-ok");
    let (a, oa) = bind(&mut r, "alice", "a", 1);
    assert!(roster_get(&mut r, &a, &oa, "g1").is_empty());
    roster_set(&mut r, &a, "s1", "carol@localhost");
    r.route(
        &a,
        stanza(
            &a,
            "<iq type='get' id='g2'><query xmlns='jabber:iq:roster'/></iq>",
        ),
    );
    assert!(oa.is_empty(), "nothing before the commit");
    assert!(
        Store::open(&dir.0, 0).is_err(),
        "the store is still open (locked), nothing read behind its back"
    );
    commit(&mut r, &store);
    let out = drained(&oa);
    let ids: Vec<(&str, &str)> = out
        .iter()
        .map(|e| (e.attr("id").unwrap_or(""), e.attr("type").unwrap_or("")))
        .collect();
    assert!(
        out.iter().any(|e| is_push_of(e, "carol@localhost")),
        "{out:?}"
    );
    let pos = |id: &str| ids.iter().position(|(i, _)| *i == id).expect("reply");
    assert_eq!(ids[pos("s1")].1, "result");
    assert!(pos("s1") < pos("g2"), "{ids:?}");
    let get = &out[pos("g2")];
    let items: Vec<&Element> = get
        .child("query", "jabber:iq:roster")
        .map(|q| q.elements().collect())
        .unwrap_or_default();
    assert_eq!(items.len(), 1, "{get:?}");
    assert_eq!(items[0].attr("jid"), Some("carol@localhost"));
    let store = reopened(&dir, r, store);
    let roster = store.roster_get("alice").expect("read");
    assert_eq!(roster.len(), 1);
    assert_eq!(roster[0].name.as_deref(), Some("C"));
}

/// The `ask='subscribe'` state a client was shown is the state that survives a restart: a
/// subscription request saved before the disk filled up is still pending after it, and one
/// that could not be saved was never shown (error, no push) and is gone.
#[test]
fn subscription_ask_state_survives_restart() {
    let (dir, fail, mut r, store) = fresh("router-ask");
    let (a, oa) = bind(&mut r, "alice", "a", 1);
    roster_get(&mut r, &a, &oa, "g1");
    r.route(
        &a,
        stanza(&a, "<presence type='subscribe' to='bob@localhost'/>"),
    );
    assert!(oa.is_empty(), "the push waits for the commit");
    commit(&mut r, &store);
    let out = drained(&oa);
    let push = out
        .iter()
        .find(|e| is_push_of(e, "bob@localhost"))
        .expect("a push for bob");
    let item = push
        .child("query", "jabber:iq:roster")
        .and_then(|q| q.elements().next())
        .expect("item");
    assert_eq!(item.attr("ask"), Some("subscribe"), "{push:?}");
    // The disk fills up: the next subscription request is not saved.
    fail.store(true, Ordering::SeqCst);
    r.route(
        &a,
        stanza(&a, "<presence type='subscribe' to='dave@localhost'/>"),
    );
    commit(&mut r, &store);
    let out = drained(&oa);
    assert!(
        !out.iter().any(|e| is_push_of(e, "dave@localhost")),
        "shown ask='subscribe' for a change that was not saved: {out:?}"
    );
    assert!(
        out.iter()
            .any(|e| e.name == "presence" && e.attr("type") == Some("error")),
        "the sender is told: {out:?}"
    );
    let items = roster_get(&mut r, &a, &oa, "g2");
    let jids: Vec<Option<&str>> = items.iter().map(|i| i.attr("jid")).collect();
    assert_eq!(jids, [Some("bob@localhost")]);
    drop((r, store));
    fail.store(false, Ordering::SeqCst);
    let (mut r, store) = router(&dir, &fail);
    let (a, oa) = bind(&mut r, "alice", "a", 1);
    let items = roster_get(&mut r, &a, &oa, "g3");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].attr("jid"), Some("bob@localhost"));
    assert_eq!(items[0].attr("ask"), Some("subscribe"));
    // bob sees the pending request in his roster row (pending_in) as before.
    let bob = store.roster_get("bob").expect("read");
    assert!(
        bob.iter()
            .any(|i| i.jid == "alice@localhost" && i.pending_in)
    );
    assert!(store.roster_get("dave").expect("read").is_empty());
}

/// Issue 10, "`new_anonymous_user` loops forever on a store error": a store error ends the
/// search at once (one lookup), and collisions are retried a bounded number of times.
#[test]
fn anonymous_user_search_is_bounded() {
    use super::{ANON_USER_ATTEMPTS, AnonUserError, pick_anonymous_user};
    let mut lookups = 0;
    let r = pick_anonymous_user(
        ANON_USER_ATTEMPTS,
        || "AbC+/dEf012345678".to_owned(),
        |_| {
            lookups += 1;
            Err(crate::store::StoreError::Full)
        },
    );
    assert!(matches!(r, Err(AnonUserError::Store(_))), "{r:?}");
    assert_eq!(lookups, 1, "a store error is not retried");

    let mut lookups = 0;
    let r = pick_anonymous_user(
        ANON_USER_ATTEMPTS,
        || crate::sasl::random_nonce(&SystemEnv::new()),
        |_| {
            lookups += 1;
            Ok(true)
        },
    );
    assert!(matches!(r, Err(AnonUserError::Collisions(n)) if n == ANON_USER_ATTEMPTS));
    assert_eq!(lookups, ANON_USER_ATTEMPTS);

    // A collision, then a free name: the second one is used.
    let mut names = Vec::new();
    let r = pick_anonymous_user(
        ANON_USER_ATTEMPTS,
        || crate::sasl::random_nonce(&SystemEnv::new()),
        |u| {
            names.push(u.to_owned());
            Ok(names.len() == 1)
        },
    );
    let user = r.expect("second name is free");
    assert_eq!(names.len(), 2);
    assert_eq!(user, names[1]);
    assert!(user.starts_with("anon-") && user.len() == 15, "{user}");
    assert_eq!(
        pick_anonymous_user(1, || "AbC+/dEf012345678".to_owned(), |_| Ok(false)).ok(),
        Some("anon-abcdef0123".to_owned())
    );

    // Through the router: a fresh name that no account has.
    let (_dir, _fail, mut r, store) = fresh("router-anon");
    let user = r.new_anonymous_user().expect("a fresh name");
    assert!(!store.user_exists(&user).expect("read"));
}

/// Issue 10: the store capped a roster at 512 rows whatever `limits.max_roster_items` said,
/// and a roster at the limit got no useful error. Now the store enforces the configured
/// limit, and a roster set beyond it gets `not-allowed` with a text naming the limit, both
/// when the router sees it (items in the roster) and when only the store does (rows of
/// pending inbound requests count too).
#[test]
fn roster_limit_is_the_configured_one_and_refusals_name_it() {
    const MAX: usize = 521;
    let dir = TempDir::new("router-roster-limit");
    {
        let store = Store::open(&dir.0, 0).expect("store");
        for u in ["alice", "bob"] {
            store.user_add(u, b"creds").expect("add");
        }
        // One inline transaction each: alice has 520 contacts, bob 521 pending requests.
        let rows = |user: &str, n: usize, in_roster: bool| -> Vec<RosterWrite> {
            (0..n)
                .map(|i| {
                    RosterWrite::Put(
                        user.to_owned(),
                        RosterItem {
                            jid: format!("c{i:04}@example.org"),
                            name: None,
                            subscription: Subscription::None,
                            ask_out: false,
                            pending_in: !in_roster,
                            groups: Vec::new(),
                            in_roster,
                        },
                    )
                })
                .collect()
        };
        store
            .roster_stage(&rows("alice", MAX - 1, true))
            .expect("fill");
        store.roster_stage(&rows("bob", MAX, false)).expect("fill");
    }
    let store = Rc::new(Store::open(&dir.0, 0).expect("store"));
    let mut r = group_router(&dir.0, &store, |c| c.limits.max_roster_items = MAX);
    assert_eq!(store.max_roster_items(), MAX);
    let (a, oa) = bind(&mut r, "alice", "a", 1);
    assert_eq!(roster_get(&mut r, &a, &oa, "g1").len(), MAX - 1);
    // Item 521 fits (the store used to refuse item 513).
    roster_set(&mut r, &a, "s1", "new1@example.org");
    commit(&mut r, &store);
    let reply = drained(&oa)
        .into_iter()
        .find(|e| e.attr("id") == Some("s1"))
        .expect("reply");
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    // Item 522 does not: not-allowed, and the text says the limit.
    roster_set(&mut r, &a, "s2", "new2@example.org");
    commit(&mut r, &store);
    assert_roster_full(&oa, "s2");

    // Bob's roster shows nothing, but the store holds 521 rows: the store refuses.
    let (b, ob) = bind(&mut r, "bob", "b", 2);
    assert!(roster_get(&mut r, &b, &ob, "g2").is_empty());
    roster_set(&mut r, &b, "s3", "new3@example.org");
    commit(&mut r, &store);
    assert_roster_full(&ob, "s3");
}

/// Found by the model test (`src/model_tests.rs`): a commit whose fsync fails may still
/// have reached the disk (redb keeps a commit whose record was written). The roster set is
/// refused, the database is reopened and holds the change: the roster in memory must be
/// read again so that it equals the disk, as the pub-sub state is, instead of showing the
/// old roster until a restart brings the change back.
#[test]
fn roster_in_memory_equals_disk_after_reopen_when_a_failed_fsync_kept_the_change() {
    use crate::store::testing::{CrashDisk, Fault};
    let disk = CrashDisk::default();
    let store = Rc::new(Store::open_on(&disk, 0).expect("store"));
    store.pubsub_set_mode(CommitMode::Group);
    let mut r = Router::new(
        Rc::new(Config::default()),
        store.clone(),
        Rc::new(SystemEnv::new()),
    )
    .expect("router");
    let (a, oa) = bind(&mut r, "alice", "a", 1);
    roster_set(&mut r, &a, "s1", "carol@localhost");
    // What the committer does; the disk fills up just for the fsync of this commit.
    let batch = store.pubsub_take().expect("a batch");
    disk.fail_from(0, Fault::FullOnSync);
    let result = batch.write();
    assert!(disk.heal() > 0, "the fsync was refused");
    let generation = batch.generation();
    drop(batch);
    let e = result.as_ref().expect_err("the commit fails");
    r.storage_write_failed(e);
    let job = store.reopen_begin().expect("reopen");
    assert!(
        r.storage_reopened(store.reopen_end(job.run())),
        "the store recovered"
    );
    r.pubsub_committed(generation, result);
    // The roster set is refused all the same.
    error_reply(&drained(&oa), "s1");
    let on_disk: Vec<String> = store
        .roster_get("alice")
        .expect("read")
        .into_iter()
        .map(|i| i.jid)
        .collect();
    assert_eq!(on_disk, ["carol@localhost"], "redb kept the commit");
    let served: Vec<String> = roster_get(&mut r, &a, &oa, "g1")
        .iter()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect();
    assert_eq!(
        served, on_disk,
        "the roster in memory differs from the disk"
    );
}

/// Issue 11 (sans-IO core): the router's randomness comes from the `Env` it is given, not
/// from the operating system: two routers over the same deterministic `FakeEnv` seed pick
/// the same anonymous usernames and generated resources, another seed picks others.
#[test]
fn router_draws_anonymous_names_and_resources_from_its_env() {
    use crate::env::FakeEnv;
    let names = |seed: u64| {
        let store = Rc::new(Store::open_in_memory().expect("store"));
        let mut r = Router::new(
            Rc::new(Config::default()),
            store,
            Rc::new(FakeEnv::new(0, seed)),
        )
        .expect("router");
        let user = r.new_anonymous_user().expect("anonymous user");
        let jid = r
            .bind(&user, true, None, 1, Outbox::new(8, 1 << 16))
            .expect("bind");
        (user, jid.to_string())
    };
    let a = names(1);
    assert!(
        a.0.starts_with("anon-") && a.1.contains("/kinglet-"),
        "{a:?}"
    );
    assert_eq!(a, names(1));
    let b = names(2);
    assert_ne!(a.0, b.0);
    assert_ne!(a.1, b.1);
}

/// XEP-0160 in group-commit mode: a message stored for an offline account is in the next
/// commit and survives a restart; the account gets it (with its delay stamp) when it
/// next becomes available, and its deletion is committed too.
#[test]
fn offline_message_is_committed_and_survives_restart() {
    let (dir, fail, mut r, store) = fresh("router-offline-restart");
    let (a, oa) = online(&mut r, "alice", "a", 1);
    r.route(
        &a,
        stanza(
            &a,
            "<message type='chat' id='m1' to='bob@localhost'><body>kept</body></message>",
        ),
    );
    assert!(drained(&oa).is_empty(), "stored, not bounced");
    assert!(
        store.offline_usage().expect("read").is_empty(),
        "staged, not on disk before the commit"
    );
    commit(&mut r, &store);
    drop((r, store));
    let (mut r, store) = router(&dir, &fail);
    let (b, ob) = bind(&mut r, "bob", "b", 2);
    r.route(&b, stanza(&b, "<presence/>"));
    let got = drained(&ob);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].attr("id"), Some("m1"));
    assert!(got[0].child("delay", "urn:xmpp:delay").is_some(), "{got:?}");
    commit(&mut r, &store);
    assert!(
        offline_on_disk(&dir, r, store, "bob").is_empty(),
        "the deletion was committed"
    );
}

/// A message stored a moment ago is delivered even before its commit is on disk (reads
/// see staged changes); its storage and deletion then go to disk in one commit, and a
/// failure of that commit bounces nothing (it was delivered).
#[test]
fn offline_message_delivered_before_its_commit() {
    let (dir, fail, mut r, store) = fresh("router-offline-staged");
    let (a, oa) = online(&mut r, "alice", "a", 1);
    r.route(&a, stanza(&a, "<message id='m1' to='bob@localhost'/>"));
    let (b, ob) = bind(&mut r, "bob", "b", 2);
    r.route(&b, stanza(&b, "<presence/>"));
    let got = drained(&ob);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].attr("id"), Some("m1"));
    fail.store(true, Ordering::SeqCst);
    commit(&mut r, &store);
    assert!(drained(&oa).is_empty(), "no bounce for a delivered message");
    assert!(offline_on_disk(&dir, r, store, "bob").is_empty());
}

/// Disk full: a message stored for an offline account whose commit fails is not lost
/// without a word: its sender gets `service-unavailable`, and nothing is on disk.
#[test]
fn offline_message_bounced_when_its_commit_fails() {
    let (dir, fail, mut r, store) = fresh("router-offline-fails");
    let (a, oa) = online(&mut r, "alice", "a", 1);
    fail.store(true, Ordering::SeqCst);
    r.route(
        &a,
        stanza(
            &a,
            "<message type='chat' id='m1' to='bob@localhost'><body>x</body></message>",
        ),
    );
    assert!(drained(&oa).is_empty(), "nothing before the commit");
    commit(&mut r, &store);
    let bounce = error_reply(&drained(&oa), "m1");
    assert_eq!(condition(&bounce), "service-unavailable", "{bounce:?}");
    assert_eq!(bounce.attr("to"), Some("alice@localhost/a"));
    assert!(offline_on_disk(&dir, r, store, "bob").is_empty());
}
