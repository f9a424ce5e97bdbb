//! The engine's side of the group commit: replies and notifications held until the
//! changes they announce are on disk, released (or failed) when the commit ends.
//!
//! The engine validates a request and applies it to memory at once; its changes are
//! staged in the store ([`Storage::pubsub_stage`]). In [`CommitMode::Group`] every output
//! produced while changes are staged or being committed (the IQ reply, notifications,
//! last-item deliveries) is held here with the generation of the batch it waits for
//! ([`Storage::pubsub_hold_generation`]); so a client never sees an item that a crash could
//! still lose, and one client's outputs keep their order. The committer
//! (`net::committer`) calls [`committed`] when a batch is on disk (release every output
//! up to that generation) or failed (every held request gets `internal-server-error`,
//! notifications are dropped, and the engine is reloaded from the file so that memory
//! equals disk again).
//!
//! Bounds and back-pressure: at most about `limits.pubsub_backlog_bytes` (default 8 MiB)
//! of held outputs and of
//! released outputs still waiting in the outboxes' backlogs (readers that have not yet
//! made room for them, see `outbox`), together. Beyond it (publishers outrun the disk or
//! the readers), new pub-sub requests are *deferred*: kept unprocessed, in arrival order,
//! and handled ([`Engine::resume`]) when a commit releases held outputs or readers take
//! their backlog; other traffic is not affected. The router stops reading a session whose
//! request was deferred until none is left, so a pipelining publisher waits in its socket
//! rather than in memory. At most `limits.pubsub_deferred_requests` requests and
//! `limits.pubsub_deferred_bytes` of parsed stanzas are deferred; beyond that a request is
//! refused with `resource-constraint` (wait).

use std::collections::VecDeque;
use std::rc::Rc;

use super::{Delivery, Directory, Engine};
use crate::config::Config;
use crate::jid::Jid;
use crate::outbox::{Backlog, Stanza};
use crate::proto::{self, Condition, StanzaError};
use crate::storage::{Storage, StoreError};
use crate::xml::{Element, NS_CLIENT};

/// The request a held reply answers, to build its error if the commit fails.
#[derive(Debug)]
struct Request {
    from: Jid,
    id: String,
    to: String,
    /// The request and its time, if handling it staged nothing (a read, or a request
    /// refused): after a failed commit it is handled again, against the state reloaded
    /// from the disk, rather than refused (its reply may show changes that were lost).
    retry: Option<(Element, u64)>,
}

/// Outputs waiting for the commit of `generation`.
#[derive(Debug)]
struct Waiting {
    generation: u64,
    request: Option<Request>,
    out: Vec<Delivery>,
    bytes: usize,
}

/// A request not yet handled (back-pressure).
#[derive(Debug)]
struct Deferred {
    from: Jid,
    iq: Element,
    now_ms: u64,
    bytes: usize,
}

/// Outputs held for pending commits, oldest first, and deferred requests.
#[derive(Debug)]
pub(super) struct Held {
    queue: VecDeque<Waiting>,
    bytes: usize,
    deferred: VecDeque<Deferred>,
    deferred_bytes: usize,
    /// What the outboxes' backlogs hold (the router's account; a private one until
    /// [`Engine::set_backlog`]).
    backlog: Rc<Backlog>,
    /// The bound of held outputs and backlogs together (`limits.pubsub_backlog_bytes`).
    max_bytes: usize,
}

impl Held {
    /// Nothing held; outputs and backlogs bounded by `max_bytes`
    /// (`limits.pubsub_backlog_bytes`) until [`Engine::set_backlog`].
    pub(super) fn new(max_bytes: usize) -> Held {
        Held {
            queue: VecDeque::new(),
            bytes: 0,
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            backlog: Backlog::new(),
            max_bytes,
        }
    }
}

impl Engine {
    /// Handles an IQ addressed to the service (or one of its nodes). `from` is the
    /// sender's full JID; the reply comes first in the returned list, notifications after.
    /// In [`CommitMode::Group`], while changes are not yet on disk, the list is empty and
    /// the outputs come from [`committed`] instead.
    pub fn handle_iq(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        from: &Jid,
        iq: &Element,
        now_ms: u64,
    ) -> Vec<Delivery> {
        if self.over_bound() || !self.held.deferred.is_empty() {
            return self.defer(from, iq, now_ms);
        }
        self.handle_iq_held(dir, store, from, iq, now_ms)
    }

    /// Handles a request, holding its outputs if changes are waiting for the disk.
    fn handle_iq_held(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        from: &Jid,
        iq: &Element,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let staged = store.pubsub_staged_ops();
        let out = self.handle_iq_now(dir, store, from, iq, now_ms);
        if out.is_empty() {
            // An IQ result or error to the service: nothing to answer, nothing staged.
            return out;
        }
        let Some(generation) = store.pubsub_hold_generation() else {
            return out;
        };
        let request = Request {
            from: from.clone(),
            id: iq.attr("id").unwrap_or("").to_owned(),
            // No `to`: the sender's own account (PEP).
            to: iq
                .attr("to")
                .map_or_else(|| from.bare().as_str().to_owned(), str::to_owned),
            retry: (store.pubsub_staged_ops() == staged).then(|| (iq.clone(), now_ms)),
        };
        self.hold(generation, Some(request), out);
        Vec::new()
    }

    /// An entity became available (initial presence): nodes with
    /// `send_last_published_item = on_sub_and_presence` send it their last item (held,
    /// like [`Engine::handle_iq`]'s outputs, while earlier outputs wait for a commit).
    pub fn on_available(&mut self, full: &Jid, now_ms: u64) -> Vec<Delivery> {
        let out = self.on_available_now(full, now_ms);
        self.hold_if_waiting(out)
    }

    /// Outputs not caused by a request (presence, roster): held behind earlier outputs
    /// that wait for a commit, so they never overtake them.
    pub(super) fn hold_if_waiting(&mut self, out: Vec<Delivery>) -> Vec<Delivery> {
        match self.held.queue.back() {
            Some(w) if !out.is_empty() => {
                let generation = w.generation;
                self.hold(generation, None, out);
                Vec::new()
            }
            _ => out,
        }
    }

    /// Keeps a request for later ([`committed`] handles it), or refuses it when the
    /// deferred queue is full.
    fn defer(&mut self, from: &Jid, iq: &Element, now_ms: u64) -> Vec<Delivery> {
        let bytes = iq.heap_size() + 64;
        let (max_requests, max_bytes) = (
            self.common.limits.pubsub_deferred_requests,
            self.common.limits.pubsub_deferred_bytes,
        );
        let d = &mut self.held;
        if d.deferred.len() >= max_requests || d.deferred_bytes + bytes > max_bytes {
            tracing::warn!(from = %from, "pub-sub request refused: too many requests wait for the disk");
            let err = super::PubSubError::Backlog.to_stanza_error();
            return proto::error_reply(iq, &err)
                .map(|r| Delivery {
                    to: from.clone(),
                    stanza: Stanza::from(r.to_string_in_stream()),
                })
                .into_iter()
                .collect();
        }
        d.deferred_bytes += bytes;
        d.deferred.push_back(Deferred {
            from: from.clone(),
            iq: iq.clone(),
            now_ms,
            bytes,
        });
        Vec::new()
    }

    /// Counts the outboxes' backlogs (`backlog`, shared with every outbox) with the held
    /// outputs against `max_bytes` (`limits.pubsub_backlog_bytes`; the engine's own
    /// `limits` until this is called).
    pub fn set_backlog(&mut self, backlog: Rc<Backlog>, max_bytes: usize) {
        self.held.backlog = backlog;
        self.held.max_bytes = max_bytes;
    }

    /// Whether held outputs and backlogs together are above their bound.
    fn over_bound(&self) -> bool {
        self.held.bytes + self.held.backlog.bytes() > self.held.max_bytes
    }

    /// Handles deferred requests while the held outputs and the backlogs are below their
    /// bound (after a commit, or when readers took some of their backlog).
    pub fn resume(&mut self, dir: &dyn Directory, store: &dyn Storage) -> Vec<Delivery> {
        let mut out = Vec::new();
        while !self.over_bound() {
            let Some(d) = self.held.deferred.pop_front() else {
                break;
            };
            self.held.deferred_bytes -= d.bytes;
            out.extend(self.handle_iq_held(dir, store, &d.from, &d.iq, d.now_ms));
        }
        out
    }

    fn hold(&mut self, generation: u64, request: Option<Request>, out: Vec<Delivery>) {
        let kept = request
            .as_ref()
            .and_then(|r| r.retry.as_ref())
            .map_or(0, |(iq, _)| iq.heap_size() + 64);
        let bytes = kept
            + out
                .iter()
                .map(|d| d.stanza.len() + d.to.as_str().len() + 64)
                .sum::<usize>();
        self.held.bytes += bytes;
        self.held.queue.push_back(Waiting {
            generation,
            request,
            out,
            bytes,
        });
    }

    /// Number of held requests and presence deliveries (for tests and metrics).
    pub fn held_count(&self) -> usize {
        self.held.queue.len()
    }

    /// Number of deferred requests (for tests and metrics).
    pub fn deferred_count(&self) -> usize {
        self.held.deferred.len()
    }

    /// Releases the outputs of every generation up to `generation`, in order.
    fn release(&mut self, generation: u64) -> Vec<Delivery> {
        let mut out = Vec::new();
        while self
            .held
            .queue
            .front()
            .is_some_and(|w| w.generation <= generation)
        {
            let Some(w) = self.held.queue.pop_front() else {
                break;
            };
            self.held.bytes -= w.bytes;
            out.extend(w.out);
        }
        out
    }

    /// After a failed commit: every held request that staged changes gets the error of
    /// `e` ([`save_failed_error`]); the others (reads) are returned, in order, to be
    /// handled again once the state is reloaded; notifications are dropped.
    fn fail_all(&mut self, e: &StoreError) -> (Vec<Delivery>, VecDeque<Deferred>) {
        let err = save_failed_error(e);
        let mut out = Vec::new();
        let mut again = VecDeque::new();
        for w in self.held.queue.drain(..) {
            let Some(r) = w.request else { continue };
            if let Some((iq, now_ms)) = r.retry {
                let bytes = iq.heap_size() + 64;
                again.push_back(Deferred {
                    from: r.from,
                    iq,
                    now_ms,
                    bytes,
                });
                continue;
            }
            let iq = Element::new("iq", NS_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", r.id.as_str())
                .with_attr("from", r.from.as_str())
                .with_attr("to", r.to.as_str());
            if let Some(reply) = proto::error_reply(&iq, &err) {
                out.push(Delivery {
                    to: r.from,
                    stanza: Stanza::from(reply.to_string_in_stream()),
                });
            }
        }
        self.held.bytes = 0;
        (out, again)
    }
}

/// The error a request gets when its change could not be saved: `resource-constraint`
/// for a full disk, `internal-server-error` otherwise; both of type `wait` (retrying
/// later may work: the service recovers by itself). The text does not claim that nothing
/// changed: a write that failed at its final fsync may still be on disk, and what the
/// service serves after it reloads is what the disk holds.
pub fn save_failed_error(e: &StoreError) -> StanzaError {
    let mut err = match e {
        StoreError::Full => StanzaError::new(Condition::ResourceConstraint).with_text(
            "the server's disk is full: the change could not be confirmed as saved; \
                 read it back before retrying",
        ),
        _ => StanzaError::new(Condition::InternalServerError).with_text(
            "the server could not confirm the change as saved (storage error); read it back \
             before retrying",
        ),
    };
    err.kind = proto::ErrorType::Wait;
    err
}

/// The error every pub-sub request gets while the service's state cannot be loaded
/// (the database could not be reopened after a failed write): `resource-constraint` if
/// the disk is full, else `internal-server-error`; type `wait`.
pub fn unavailable_error(store: &dyn Storage) -> StanzaError {
    let mut err = match store.closed_error() {
        StoreError::Full => StanzaError::new(Condition::ResourceConstraint).with_text(
            "the server's disk is full: the publish-subscribe service is unavailable until \
             space is freed; retry later",
        ),
        _ => StanzaError::new(Condition::InternalServerError).with_text(
            "the publish-subscribe service is recovering from a storage error; retry later",
        ),
    };
    err.kind = proto::ErrorType::Wait;
    err
}

/// Error replies with `err` to the requests in `requests`.
fn refuse(requests: VecDeque<Deferred>, err: &StanzaError) -> Vec<Delivery> {
    requests
        .into_iter()
        .filter_map(|d| {
            proto::error_reply(&d.iq, err).map(|r| Delivery {
                to: d.from,
                stanza: Stanza::from(r.to_string_in_stream()),
            })
        })
        .collect()
}

/// The commit of `generation` ended with `result`: returns the engine and the outputs to
/// deliver. The caller delivers them, then calls [`Engine::resume`] for the deferred
/// requests (so that the backlogs they may fill count).
///
/// On failure the pending changes are discarded; held requests that changed something get
/// [`save_failed_error`], and the engine is reloaded from `store`, so that memory equals
/// disk again; the other held requests (reads) and the deferred ones are handled again
/// against it. If the store is still [`Storage::faulted`] (not reopened: see
/// `net::committer`), or the reload fails, the engine is `None` and those requests get
/// [`unavailable_error`]: the service stays listed and answers, with errors, until
/// [`restore`] brings it back.
pub fn committed(
    engine: Option<Engine>,
    config: &Config,
    store: &dyn Storage,
    generation: u64,
    result: Result<(), StoreError>,
) -> (Option<Engine>, Vec<Delivery>) {
    store.pubsub_done(generation, result.is_ok());
    let Some(mut engine) = engine else {
        return (None, Vec::new());
    };
    let e = match result {
        Ok(()) => {
            let out = engine.release(generation);
            return (Some(engine), out);
        }
        Err(e) => e,
    };
    let (mut out, mut again) = engine.fail_all(&e);
    again.extend(std::mem::take(&mut engine.held.deferred));
    let (backlog, max_bytes) = (engine.held.backlog.clone(), engine.held.max_bytes);
    let ids = engine.id_counter();
    drop(engine);
    match restore(config, store) {
        Ok(mut fresh) => {
            fresh.set_backlog(backlog, max_bytes);
            fresh.seed_ids(ids);
            fresh.held.deferred_bytes = again.iter().map(|d| d.bytes).sum();
            fresh.held.deferred = again;
            (Some(fresh), out)
        }
        Err(_) => {
            out.extend(refuse(again, &unavailable_error(store)));
            (None, out)
        }
    }
}

/// The engine loaded from `store`, unless the store is [`Storage::faulted`] (then its
/// reads fail: redb refuses I/O after a failed write until reopened).
///
/// # Errors
///
/// The store is faulted, or [`Engine::load`] failed.
pub fn restore(config: &Config, store: &dyn Storage) -> Result<Engine, super::EngineError> {
    if store.faulted() {
        return Err(super::EngineError::Store(store.closed_error()));
    }
    Engine::load(config, store)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::limits::Limits;
    use crate::outbox::Outbox;
    use crate::router::Router;
    use crate::store::{CommitMode, Store};

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

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d =
                std::env::temp_dir().join(format!("kinglet-commit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
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
        fn new(dir: &Dir, mode: CommitMode) -> Service {
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
        let dir = Dir::new("hold");
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
        let dir = Dir::new("fail");
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
        let dir = Dir::new("defer");
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
        let dir = Dir::new("room");
        let config = Config {
            data_dir: dir.0.clone(),
            ..Config::default()
        };
        let store = Rc::new(Store::open(&dir.0, 0).expect("store"));
        store.pubsub_set_mode(CommitMode::Group);
        let mut router = Router::new(
            Rc::new(config),
            store.clone(),
            Rc::new(crate::system::SystemEnv::new()),
        )
        .expect("router");
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
        dir: &Dir,
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
        let dir = Dir::new("recover");
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
        let ids: Vec<String> = store
            .pubsub_load()
            .expect("load")
            .items
            .into_iter()
            .map(|(_, _, i, _)| i.id)
            .collect();
        assert_eq!(ids, ["i1", "i3"]);
    }

    /// A read held behind a write whose commit fails is not refused: it is handled again
    /// against the state reloaded from the disk (without the lost write).
    #[test]
    fn failed_commit_then_recovery_answers_held_reads_from_the_reloaded_state() {
        use std::sync::atomic::Ordering;
        let dir = Dir::new("reread");
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
        let dir = Dir::new("interval");
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
        let dir = Dir::new("stall");
        let config = Config {
            data_dir: dir.0.clone(),
            ..Config::default()
        };
        let store = Rc::new(Store::open(&dir.0, 0).expect("store"));
        store.pubsub_set_mode(CommitMode::Group);
        store.pubsub_test_delay(Duration::from_millis(600));
        let mut router = Router::new(
            Rc::new(config),
            store.clone(),
            Rc::new(crate::system::SystemEnv::new()),
        )
        .expect("router");
        let (ob_a, ob_b) = (Outbox::new(64, 1 << 20), Outbox::new(64, 1 << 20));
        let alice = router
            .bind("alice", false, Some("a"), 1, ob_a.clone())
            .expect("bind");
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
}
