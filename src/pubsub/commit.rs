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

use super::{Cx, Delivery, Directory, Engine};
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
        self.handle_iq_held((dir, store, now_ms), from, iq)
    }

    /// Handles a request, holding its outputs if changes are waiting for the disk.
    fn handle_iq_held(&mut self, cx: Cx<'_>, from: &Jid, iq: &Element) -> Vec<Delivery> {
        let (_, store, now_ms) = cx;
        let staged = store.pubsub_staged_ops();
        let out = self.handle_iq_now(cx, from, iq);
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
    pub fn on_available(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        full: &Jid,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let out = self.on_available_now((dir, store, now_ms), full);
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
                    keep_offline: false,
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
            out.extend(self.handle_iq_held((dir, store, d.now_ms), &d.from, &d.iq));
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
                    keep_offline: false,
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
                keep_offline: false,
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
mod tests;
