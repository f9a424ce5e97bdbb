//! The engine's side of the group commit: replies and notifications held until the
//! changes they announce are on disk, released (or failed) when the commit ends.
//!
//! The engine validates a request and applies it to memory at once; its changes are
//! staged in the store ([`Store::pubsub_stage`]). In [`CommitMode::Group`] every output
//! produced while changes are staged or being committed (the IQ reply, notifications,
//! last-item deliveries) is held here with the generation of the batch it waits for
//! ([`Store::pubsub_hold_generation`]); so a client never sees an item that a crash could
//! still lose, and one client's outputs keep their order. The committer
//! (`net::committer`) calls [`committed`] when a batch is on disk (release every output
//! up to that generation) or failed (every held request gets `internal-server-error`,
//! notifications are dropped, and the engine is reloaded from the file so that memory
//! equals disk again).
//!
//! Bound: at most [`MAX_HELD_BYTES`] of held stanza text; beyond it, new changes are
//! refused with `resource-constraint` (wait) until a commit releases some.

use std::collections::VecDeque;
use std::rc::Rc;

use super::{Delivery, Directory, Engine};
use crate::config::Config;
use crate::jid::Jid;
use crate::proto::{self, Condition, StanzaError};
use crate::store::{CommitMode, Store, StoreError};
use crate::xml::{Element, NS_CLIENT};

/// Most bytes of stanza text held for pending commits.
pub const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// The request a held reply answers, to build its error if the commit fails.
#[derive(Debug)]
struct Request {
    from: Jid,
    id: String,
    to: String,
}

/// Outputs waiting for the commit of `generation`.
#[derive(Debug)]
struct Waiting {
    generation: u64,
    request: Option<Request>,
    out: Vec<Delivery>,
    bytes: usize,
}

/// Outputs held for pending commits, oldest first.
#[derive(Debug, Default)]
pub(super) struct Held {
    queue: VecDeque<Waiting>,
    bytes: usize,
}

impl Engine {
    /// Handles an IQ addressed to the service (or one of its nodes). `from` is the
    /// sender's full JID; the reply comes first in the returned list, notifications after.
    /// In [`CommitMode::Group`], while changes are not yet on disk, the list is empty and
    /// the outputs come from [`committed`] instead.
    pub fn handle_iq(
        &mut self,
        dir: &dyn Directory,
        store: &Store,
        from: &Jid,
        iq: &Element,
        now_ms: u64,
    ) -> Vec<Delivery> {
        store.pubsub_throttle(self.held.bytes > MAX_HELD_BYTES);
        let out = self.handle_iq_now(dir, store, from, iq, now_ms);
        let Some(generation) = store.pubsub_hold_generation() else {
            return out;
        };
        let request = Request {
            from: from.clone(),
            id: iq.attr("id").unwrap_or("").to_owned(),
            to: iq.attr("to").unwrap_or(self.service.as_str()).to_owned(),
        };
        self.hold(generation, Some(request), out);
        Vec::new()
    }

    /// An entity became available (initial presence): nodes with
    /// `send_last_published_item = on_sub_and_presence` send it their last item (held,
    /// like [`Engine::handle_iq`]'s outputs, while earlier outputs wait for a commit).
    pub fn on_available(&mut self, full: &Jid, now_ms: u64) -> Vec<Delivery> {
        let out = self.on_available_now(full, now_ms);
        match self.held.queue.back() {
            Some(w) if !out.is_empty() => {
                let generation = w.generation;
                self.hold(generation, None, out);
                Vec::new()
            }
            _ => out,
        }
    }

    fn hold(&mut self, generation: u64, request: Option<Request>, out: Vec<Delivery>) {
        let bytes = out.iter().map(|d| d.stanza.len()).sum();
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

    /// Every held request gets `internal-server-error`; notifications are dropped.
    fn fail_all(&mut self) -> Vec<Delivery> {
        let err = StanzaError::new(Condition::InternalServerError)
            .with_text("the change could not be saved; nothing was changed");
        let mut out = Vec::new();
        for w in self.held.queue.drain(..) {
            let Some(r) = w.request else { continue };
            let iq = Element::new("iq", NS_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", r.id.as_str())
                .with_attr("from", r.from.as_str())
                .with_attr("to", r.to.as_str());
            if let Some(reply) = proto::error_reply(&iq, &err) {
                out.push(Delivery {
                    to: r.from,
                    stanza: Rc::from(reply.to_string_in_stream()),
                });
            }
        }
        self.held.bytes = 0;
        out
    }
}

/// The commit of `generation` ended with `result`: returns the outputs to deliver. On
/// failure the pending changes are discarded and `engine` is reloaded from `store` (set
/// to `None`, service disabled, if even that fails).
pub fn committed(
    engine: &mut Option<Engine>,
    config: &Config,
    store: &Store,
    generation: u64,
    result: Result<(), StoreError>,
) -> Vec<Delivery> {
    store.pubsub_done(generation, result.is_ok());
    let Err(e) = result else {
        return engine
            .as_mut()
            .map(|e| e.release(generation))
            .unwrap_or_default();
    };
    let lost = match store.pubsub_mode() {
        CommitMode::Interval(_) => "changes acknowledged since the previous flush are lost",
        _ => "the waiting requests were refused with internal-server-error",
    };
    tracing::error!(
        error = %e,
        data = %store.path().display(),
        "pub-sub commit failed: {lost}; the service reloads its state from the database. \
         Check the disk (space, read-only remount, I/O errors in the kernel log) and restart \
         kinglet once it is fixed"
    );
    let out = engine.as_mut().map(Engine::fail_all).unwrap_or_default();
    match Engine::load(config, store) {
        Ok(fresh) => *engine = Some(fresh),
        Err(e) => {
            tracing::error!(error = %e, "pub-sub state cannot be reloaded: service disabled");
            *engine = None;
        }
    }
    out
}
