//! Glue to the XEP-0060 engine and its PEP services (XEP-0163): IQs, group-commit results,
//! back-pressure, the timer, delivery, and the `Directory` view of rosters and presence.

use super::roster::roster_failure;
use super::*;

impl Router {
    /// Whether `jid` is the pub-sub service (or one of its full JIDs).
    pub(super) fn is_pubsub(&self, jid: &Jid) -> bool {
        jid.local().is_none() && jid.domain() == self.pubsub.service.domain()
    }

    /// Hands an IQ to the pub-sub engine and delivers what it returns (while the engine
    /// is down after a storage fault: an error, see [`crate::pubsub::unavailable_error`]).
    pub(super) fn pubsub_iq(&mut self, from: &Jid, iq: &Iq) {
        let now = self.now_ms();
        let (Some(engine), dir) = self.engine_and_dir() else {
            if iq.ty().is_request() {
                self.bounce(iq, crate::pubsub::unavailable_error(&*self.store));
            }
            return;
        };
        let deferred = engine.deferred_count();
        let out = engine.handle_iq(&dir, dir.store, from, iq, now);
        let deferred_more = engine.deferred_count() > deferred;
        if deferred_more {
            // Back-pressure: the request waits for the disk or for readers; its sender is
            // not read until the deferred requests have been handled.
            let ob = self
                .resource_outbox(from)
                .or_else(|| self.component_outbox(from));
            if let Some(ob) = ob {
                if !ob.reading_paused() {
                    tracing::debug!(jid = %from, "pub-sub back-pressure: request deferred, session not read until it is handled");
                    ob.pause_reading();
                    self.pubsub.paused.push(ob.clone());
                }
            }
        }
        self.pubsub_deliver(out);
    }

    /// The pub-sub engine (if it is up) and, beside it, the view of the IM and caps
    /// siblings it reads: disjoint borrows of the broker's fields.
    pub(super) fn engine_and_dir(&mut self) -> (Option<&mut crate::pubsub::Engine>, Dir<'_>) {
        (
            self.pubsub.engine.as_mut(),
            Dir {
                domain: &self.config.domain,
                im: &self.im,
                caps: &self.caps,
                store: &*self.store,
                remote: &self.component,
            },
        )
    }

    /// A pub-sub group commit of `generation` ended (called by the committer task):
    /// delivers the outputs it released, or the errors of the requests it failed.
    pub fn pubsub_committed(
        &mut self,
        generation: u64,
        result: Result<(), crate::storage::StoreError>,
    ) {
        let roster_failure = result.as_ref().err().map(roster_failure);
        if result.is_err() {
            // Before the store drops what the failed commit held.
            self.offline_commit_failed();
        }
        match &result {
            Ok(()) => self.storage_ok(),
            // Logged already if the committer reported it ([`Router::storage_write_failed`]).
            Err(e) if self.outage.is_none() => self.storage_failed(e),
            Err(_) => {}
        }
        let (engine, out) = crate::pubsub::committed(
            self.pubsub.engine.take(),
            &self.config,
            &*self.store,
            generation,
            result,
        );
        self.pubsub.engine = engine;
        if roster_failure.is_some() {
            self.offline_reload();
        }
        self.pubsub_deliver(out);
        self.roster_committed(generation, roster_failure);
        self.pubsub_relieve();
    }

    /// Backlog bytes went out to a reader (called by the connection task).
    pub fn pubsub_backlog_released(&mut self) {
        self.pubsub_relieve();
    }

    /// Handles the deferred pub-sub requests while the held outputs and the backlogs are
    /// below their bound; once none is left, the paused sessions are read again.
    pub(super) fn pubsub_relieve(&mut self) {
        if let (Some(engine), dir) = self.engine_and_dir() {
            if engine.deferred_count() > 0 {
                let out = engine.resume(&dir, dir.store);
                self.pubsub_deliver(out);
            }
        }
        if self
            .pubsub
            .engine
            .as_ref()
            .is_none_or(|e| e.deferred_count() == 0)
        {
            for ob in self.pubsub.paused.drain(..) {
                ob.resume_reading();
            }
        }
    }

    /// A resource went unavailable: temporary subscriptions and `purge_offline` (XEP-0060).
    pub(super) fn pubsub_unavailable(&mut self, full: &Jid) {
        let now = self.now_ms();
        let (Some(engine), dir) = self.engine_and_dir() else {
            return;
        };
        let offline = crate::pubsub::Directory::presences(&dir, &full.bare()).is_empty();
        let out = engine.on_unavailable(&dir, dir.store, full, offline, now);
        self.pubsub_deliver(out);
    }

    /// Sets how the router wakes the shell's pub-sub timer: called when the engine's next
    /// deadline moved earlier, so that the timer calls [`Router::pubsub_tick`] sooner.
    pub fn set_pubsub_waker(&mut self, wake: Box<dyn Fn()>) {
        self.pubsub.wake = Some(wake);
    }

    /// Runs the pub-sub expiry that is due and returns the next deadline (ms since the
    /// epoch) the timer task sleeps until.
    pub fn pubsub_tick(&mut self) -> Option<u64> {
        let now = self.now_ms();
        let (Some(engine), dir) = self.engine_and_dir() else {
            return None;
        };
        let out = engine.on_tick(&dir, dir.store, now);
        let next = engine.arm();
        self.pubsub_deliver(out);
        next
    }

    /// Delivers engine output: to one resource (full JID) or to every available resource
    /// of a local account (bare JID), or through the component connection to a remote JID
    /// (component mode); a notification marked `keep_offline` for an account
    /// with no available resource goes to offline storage (XEP-0160).
    pub(super) fn pubsub_deliver(&mut self, out: Vec<crate::pubsub::Delivery>) {
        if let (Some(e), Some(wake)) = (&self.pubsub.engine, &self.pubsub.wake) {
            if e.needs_rearm() {
                wake();
            }
        }
        for d in out {
            if d.to.domain() != self.config.domain {
                // Component mode: the service's output to remote JIDs, through the server.
                if let Some(ob) = self.component_outbox_for(&d.to, &d.stanza) {
                    self.send_via(ob, d.stanza, Lane::PubSub);
                }
            } else if d.to.is_full() {
                if let Some(ob) = self.resource_outbox(&d.to) {
                    self.send_via(ob, d.stanza, Lane::PubSub);
                }
            } else if d.keep_offline && !self.has_available(&d.to) {
                self.offline_notification(&d.to, &d.stanza);
            } else {
                self.deliver_to_available_via(&d.to, &d.stanza, Lane::PubSub);
            }
        }
    }
}

/// What pub-sub reads of IM and caps (`crate::pubsub::Directory`): rosters (as the roster
/// change being worked out leaves them), presences and `+notify` interests.
pub(super) struct Dir<'a> {
    domain: &'a str,
    im: &'a Im,
    caps: &'a crate::caps::CapsTable,
    pub(super) store: &'a dyn Storage,
    /// Component mode: presences remote users sent to the service.
    remote: &'a super::component::ComponentLink,
}

impl crate::pubsub::Directory for Dir<'_> {
    fn roster_entry(&self, owner: &Jid, contact: &Jid) -> Option<(bool, Vec<String>)> {
        if owner.domain() != self.domain {
            return None;
        }
        let item = self
            .im
            .roster_item(self.store, owner.local()?, &contact.bare())?;
        Some((item.subscription.has_from(), item.groups))
    }

    fn presences(&self, bare: &Jid) -> Vec<(Jid, String)> {
        if bare.domain() != self.domain {
            return self.remote.presences(bare);
        }
        let acc = match bare.local() {
            Some(user) if bare.domain() == self.domain => self.im.accounts.get(user),
            _ => None,
        };
        acc.map(|a| {
            a.resources
                .iter()
                .filter_map(|r| {
                    let p = r.presence.as_ref()?;
                    let show = p.child("show", NS_CLIENT).map(|s| s.text());
                    let show = show.as_deref().map(str::trim).filter(|s| !s.is_empty());
                    Some((r.jid.clone(), show.unwrap_or("online").to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
    }

    fn wants(&self, full: &Jid, node: &str) -> bool {
        self.caps.wants(full, node)
    }

    fn presence_subscribers(&self, owner: &Jid) -> Vec<Jid> {
        self.roster_jids(owner, Subscription::has_from)
    }

    fn presence_subscriptions(&self, contact: &Jid) -> Vec<Jid> {
        self.roster_jids(contact, Subscription::has_to)
    }
}

impl Dir<'_> {
    /// The JIDs in `bare`'s roster whose subscription state passes `state`.
    fn roster_jids(&self, bare: &Jid, state: fn(&Subscription) -> bool) -> Vec<Jid> {
        self.roster_of(bare)
            .into_iter()
            .filter(|i| state(&i.subscription))
            .filter_map(|i| Jid::parse(&i.jid).ok())
            .collect()
    }

    /// The roster of a local account (cached while online, else read from the store).
    fn roster_of(&self, bare: &Jid) -> Vec<RosterItem> {
        let Some(user) = bare.local().filter(|_| bare.domain() == self.domain) else {
            return Vec::new();
        };
        let mut roster = match self.im.accounts.get(user) {
            Some(acc) => acc.roster.clone(),
            None => self.store.roster_get(user).unwrap_or_else(|e| {
                tracing::error!(user, error = %e, "cannot read roster");
                Vec::new()
            }),
        };
        // The roster change being worked out, if it touches this roster.
        if let Some(t) = self.im.roster_txn.borrow().as_ref() {
            for (w, _) in t.writes.iter().filter(|(w, _)| w.user() == user) {
                roster.retain(|i| i.jid != w.jid());
                if let RosterWrite::Put(_, item) = w {
                    roster.push(item.clone());
                }
            }
        }
        roster
    }
}
