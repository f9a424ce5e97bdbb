//! `kinglet sub` across reconnects, sans IO: what was printed (the anchor of a catch-up, and
//! what a live event may repeat), and the catch-up itself, a planner fed with items replies.
//!
//! When a stream could not be resumed (XEP-0198 not offered, refused, or the server
//! restarted), `sub` subscribes again and then fetches the items it missed (XEP-0060 §6.5
//! with XEP-0059 RSM), paging **backwards from the newest** stored item (`<before/>`, then
//! `<before>first id of the page</before>`) until it meets an item it already printed (same
//! id and same payload). Paging backwards finds the last printed item in one request in the
//! usual case, needs no extra request when that item is gone (rotated out by `max_items`, or
//! retracted: an older printed one is used, or else the whole node is printed with a
//! warning), and keeps only the missed items in memory. A server that ignores RSM (its reply
//! has no `<set/>`) is taken to have sent all its items, oldest first, in one reply.
//!
//! Everything is bounded: [`RECENT_ITEMS`] remembered items, [`CATCH_UP_PAGE`] items asked
//! per request, [`MAX_CATCH_UP_PAGES`] requests and [`MAX_CATCH_UP_ITEMS`] items per
//! catch-up, duplicates suppressed for [`DEDUP_WINDOW`].

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::pubsub::{NS_PUBSUB, NS_RSM};
use crate::xml::Element;

use super::pubsub::{Item, items_from_result, one_line_xml};

/// Most printed items remembered (their id and a hash of their payload).
pub const RECENT_ITEMS: usize = 1024;
/// Items asked for in one catch-up request (RSM `<max/>`).
pub const CATCH_UP_PAGE: u32 = 100;
/// Most requests of one catch-up.
pub const MAX_CATCH_UP_PAGES: u32 = 100;
/// Most items one catch-up prints (the newest ones when more were missed).
pub const MAX_CATCH_UP_ITEMS: usize = 10_000;
/// How long an item printed from an items reply (catch-up, `--last`) suppresses the same
/// item arriving in an event.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(60);

/// A hash of an item's payload as printed (an item without payload hashes as empty).
fn payload_hash(item: &Item) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    item.payload
        .as_ref()
        .map(one_line_xml)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// One remembered item.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    payload: u64,
    /// Printed from an items reply at this time, so its event may still arrive; `None` once
    /// an event repeated it, and for items printed from events.
    fetched: Option<Instant>,
}

/// The items `sub` printed lately, newest last, at most [`RECENT_ITEMS`].
#[derive(Clone, Debug, Default)]
pub struct Recent {
    ring: VecDeque<Seen>,
    /// Whether a catch-up has a starting point: something was printed, or the node's newest
    /// item (or its emptiness) was noted when the subscription started.
    known: bool,
}

impl Recent {
    /// Nothing known yet (no catch-up possible until [`Recent::note_start`] or a print).
    pub fn new() -> Recent {
        Recent::default()
    }

    /// Whether a catch-up has a starting point.
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// How many items are remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is remembered (the node was empty when `sub` started, or nothing was
    /// printed).
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn push(&mut self, item: &Item, fetched: Option<Instant>) {
        if item.id.is_empty() {
            return;
        }
        if self.ring.len() >= RECENT_ITEMS {
            self.ring.pop_front();
        }
        self.ring.push_back(Seen {
            id: item.id.clone(),
            payload: payload_hash(item),
            fetched,
        });
        self.known = true;
    }

    /// Notes the node's state when the subscription started: its newest item (not
    /// printed), or `None` for an empty node. The starting point of a catch-up before
    /// anything is printed.
    pub fn note_start(&mut self, newest: Option<&Item>) {
        if let Some(item) = newest {
            self.push(item, None);
        }
        self.known = true;
    }

    /// Notes an item printed from an event.
    pub fn printed_live(&mut self, item: &Item) {
        self.push(item, None);
    }

    /// Notes an item printed from an items reply (`--last`, catch-up) at `now`: the same
    /// item arriving in an event within [`DEDUP_WINDOW`] is a duplicate.
    pub fn printed_fetched(&mut self, item: &Item, now: Instant) {
        self.push(item, Some(now));
    }

    /// Whether an item from an event repeats one printed from an items reply (same id and
    /// payload, within [`DEDUP_WINDOW`]); each printed item suppresses one event at most.
    pub fn is_duplicate(&mut self, item: &Item, now: Instant) -> bool {
        if item.id.is_empty() {
            return false;
        }
        let payload = payload_hash(item);
        let hit = self.ring.iter_mut().rev().find(|s| {
            s.id == item.id
                && s.payload == payload
                && s.fetched
                    .is_some_and(|at| now.saturating_duration_since(at) <= DEDUP_WINDOW)
        });
        match hit {
            Some(s) => {
                s.fetched = None;
                true
            }
            None => false,
        }
    }

    /// Whether `item` (from an items reply) is one already printed or noted: same id and
    /// same payload.
    fn contains(&self, item: &Item) -> bool {
        if item.id.is_empty() {
            return false;
        }
        let payload = payload_hash(item);
        self.ring
            .iter()
            .any(|s| s.id == item.id && s.payload == payload)
    }
}

/// What a catch-up request asks for: the node's items before `before` (the newest ones
/// when `None`), [`CATCH_UP_PAGE`] at most.
pub fn request_body(node: &str, before: Option<&str>) -> String {
    crate::xml::build(|w| {
        w.start("pubsub").ns(NS_PUBSUB);
        w.start("items").attr("node", node).end();
        w.start("set").ns(NS_RSM);
        w.start("max").text_fmt(CATCH_UP_PAGE).end();
        w.text_elem("before", before.unwrap_or_default());
        w.end_all();
    })
}

/// The result of a catch-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The missed items, oldest first.
    pub items: Vec<Item>,
    /// Why some items may be missing (for stderr), if so.
    pub warning: Option<String>,
}

/// The next step of a catch-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this items request (an IQ get to the service) and feed its reply back.
    Request(String),
    /// Finished: print these items.
    Done(Outcome),
}

/// One catch-up in progress: the pages read so far, backwards from the newest item.
#[derive(Clone, Debug)]
pub struct CatchUp {
    node: String,
    /// Requests sent.
    pages: u32,
    /// Where the next page ends (the first id of the last page read).
    before: Option<String>,
    /// Missed items found so far, newest first.
    found: Vec<Item>,
}

impl CatchUp {
    /// A catch-up of `node`; its first step is [`CatchUp::start`].
    pub fn new(node: &str) -> CatchUp {
        CatchUp {
            node: node.to_owned(),
            pages: 0,
            before: None,
            found: Vec::new(),
        }
    }

    /// The first request.
    pub fn start(&mut self) -> Step {
        self.pages = 1;
        self.before = None;
        self.found.clear();
        Step::Request(request_body(&self.node, None))
    }

    /// Ends with what was found, oldest first, and `warning`.
    fn done(&mut self, warning: Option<String>) -> Step {
        let mut items = std::mem::take(&mut self.found);
        items.reverse();
        Step::Done(Outcome { items, warning })
    }

    /// The end of the node's items was reached without meeting a printed item.
    fn exhausted(&mut self, recent: &Recent) -> Step {
        if recent.is_empty() {
            // The node was empty when `sub` started: everything stored is new.
            return self.done(None);
        }
        let n = self.found.len();
        self.done(Some(format!(
            "the items printed before the connection was lost are no longer stored at \
             node '{}' (max_items rotated them out, or they were retracted); printing all \
             {n} stored items: some items may have been missed",
            self.node
        )))
    }

    /// Feeds the reply to the last request.
    pub fn on_reply(&mut self, reply: &Element, recent: &Recent) -> Step {
        let pubsub = reply.child("pubsub", NS_PUBSUB);
        let items_node = pubsub
            .and_then(|p| p.child("items", NS_PUBSUB))
            .and_then(|i| i.attr("node"));
        if items_node.is_some_and(|n| n != self.node) {
            // A collection answers with its leaves' items: nothing `sub` prints.
            return self.done(Some(format!(
                "node '{}' answered with the items of another node (a collection?): \
                 no catch-up",
                self.node
            )));
        }
        let page = items_from_result(reply, &self.node);
        let set = pubsub.and_then(|p| p.child("set", NS_RSM));
        for item in page.iter().rev() {
            if recent.contains(item) {
                return self.done(None);
            }
            if self.found.len() >= MAX_CATCH_UP_ITEMS {
                return self.done(Some(format!(
                    "more than {MAX_CATCH_UP_ITEMS} items were published at node '{}' while \
                     disconnected; printing the newest {MAX_CATCH_UP_ITEMS}",
                    self.node
                )));
            }
            self.found.push(item.clone());
        }
        let Some(set) = set else {
            // The server ignored RSM: this was all of it.
            return self.exhausted(recent);
        };
        let first = set.child("first", NS_RSM);
        let at_start = match first {
            None => true,
            Some(f) => f
                .attr("index")
                .is_some_and(|i| super::sm::parse_u32(i) == Some(0)),
        };
        if page.is_empty() || at_start {
            return self.exhausted(recent);
        }
        let next = first
            .map(Element::text)
            .filter(|f| !f.is_empty())
            .or_else(|| page.first().map(|i| i.id.clone()))
            .filter(|f| !f.is_empty());
        let Some(next) = next else {
            return self.done(Some(format!(
                "the server sent items without ids at node '{}': catch-up stopped",
                self.node
            )));
        };
        if self.before.as_deref() == Some(next.as_str()) {
            return self.done(Some(format!(
                "the server repeated a page of node '{}': catch-up stopped",
                self.node
            )));
        }
        if self.pages >= MAX_CATCH_UP_PAGES {
            return self.done(Some(format!(
                "more than {MAX_CATCH_UP_PAGES} pages of items at node '{}' since the \
                 connection was lost; printing the newest {}",
                self.node,
                self.found.len()
            )));
        }
        self.pages += 1;
        let body = request_body(&self.node, Some(&next));
        self.before = Some(next);
        Step::Request(body)
    }

    /// The last request failed with a stanza error whose condition is `condition`.
    /// `item-not-found` on a later page means its anchor went away meanwhile (rotated out
    /// by new items): the catch-up ends with what it has and a warning. `None` for an error
    /// the caller reports as it is (the first page: the node is gone, access was refused).
    pub fn on_error(&mut self, condition: &str) -> Option<Step> {
        if self.pages > 1 && condition == "item-not-found" {
            let n = self.found.len();
            return Some(self.done(Some(format!(
                "older items of node '{}' were removed while catching up; printing the \
                 {n} found: some items may have been missed",
                self.node
            ))));
        }
        None
    }
}

#[cfg(test)]
mod tests;
