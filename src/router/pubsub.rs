//! Glue to the XEP-0060 engine and its PEP services (XEP-0163): IQs, group-commit results,
//! back-pressure, the timer, delivery, and the `Directory` view of rosters and presence.

use super::roster::roster_failure;
use super::*;

impl Router {
    /// Whether `jid` is the pub-sub service (or one of its full JIDs).
    pub(super) fn is_pubsub(&self, jid: &Jid) -> bool {
        jid.local().is_none() && jid.domain() == self.pubsub_service.domain()
    }

    /// Hands an IQ to the pub-sub engine and delivers what it returns (while the engine
    /// is down after a storage fault: an error, see [`crate::pubsub::unavailable_error`]).
    pub(super) fn pubsub_iq(&mut self, from: &Jid, iq: &Iq) {
        let Some(mut engine) = self.pubsub.take() else {
            if iq.ty().is_request() {
                self.bounce(iq, crate::pubsub::unavailable_error(&*self.store));
            }
            return;
        };
        let deferred = engine.deferred_count();
        let out = engine.handle_iq(&*self, &*self.store, from, iq, self.now_ms());
        if engine.deferred_count() > deferred {
            // Back-pressure: the request waits for the disk or for readers; its sender is
            // not read until the deferred requests have been handled.
            if let Some(ob) = self.resource_outbox(from) {
                if !ob.reading_paused() {
                    tracing::debug!(jid = %from, "pub-sub back-pressure: request deferred, session not read until it is handled");
                    ob.pause_reading();
                    self.paused.push(ob.clone());
                }
            }
        }
        self.pubsub = Some(engine);
        self.pubsub_deliver(out);
    }

    /// A pub-sub group commit of `generation` ended (called by the committer task):
    /// delivers the outputs it released, or the errors of the requests it failed.
    pub fn pubsub_committed(
        &mut self,
        generation: u64,
        result: Result<(), crate::storage::StoreError>,
    ) {
        let roster_failure = result.as_ref().err().map(roster_failure);
        match &result {
            Ok(()) => self.storage_ok(),
            // Logged already if the committer reported it ([`Router::storage_write_failed`]).
            Err(e) if self.outage.is_none() => self.storage_failed(e),
            Err(_) => {}
        }
        let (engine, out) = crate::pubsub::committed(
            self.pubsub.take(),
            &self.config,
            &*self.store,
            generation,
            result,
        );
        self.pubsub = engine;
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
        if let Some(mut engine) = self.pubsub.take() {
            if engine.deferred_count() > 0 {
                let out = engine.resume(&*self, &*self.store);
                self.pubsub = Some(engine);
                self.pubsub_deliver(out);
            } else {
                self.pubsub = Some(engine);
            }
        }
        if self.pubsub.as_ref().is_none_or(|e| e.deferred_count() == 0) {
            for ob in self.paused.drain(..) {
                ob.resume_reading();
            }
        }
    }

    /// A resource went unavailable: temporary subscriptions and `purge_offline` (XEP-0060).
    pub(super) fn pubsub_unavailable(&mut self, full: &Jid) {
        let Some(mut engine) = self.pubsub.take() else {
            return;
        };
        let offline = crate::pubsub::Directory::presences(&*self, &full.bare()).is_empty();
        let out = engine.on_unavailable(&*self, &*self.store, full, offline, self.now_ms());
        self.pubsub = Some(engine);
        self.pubsub_deliver(out);
    }

    /// Sets how the router wakes the shell's pub-sub timer: called when the engine's next
    /// deadline moved earlier, so that the timer calls [`Router::pubsub_tick`] sooner.
    pub fn set_pubsub_waker(&mut self, wake: Box<dyn Fn()>) {
        self.pubsub_wake = Some(wake);
    }

    /// Runs the pub-sub expiry that is due and returns the next deadline (ms since the
    /// epoch) the timer task sleeps until.
    pub fn pubsub_tick(&mut self) -> Option<u64> {
        let mut engine = self.pubsub.take()?;
        let out = engine.on_tick(&*self, &*self.store, self.now_ms());
        let next = engine.arm();
        self.pubsub = Some(engine);
        self.pubsub_deliver(out);
        next
    }

    /// Delivers engine output: to one resource (full JID) or to every available resource
    /// of a local account (bare JID).
    pub(super) fn pubsub_deliver(&self, out: Vec<crate::pubsub::Delivery>) {
        if let (Some(e), Some(wake)) = (&self.pubsub, &self.pubsub_wake) {
            if e.needs_rearm() {
                wake();
            }
        }
        for d in out {
            if d.to.is_full() {
                if let Some(ob) = self.resource_outbox(&d.to) {
                    self.send_via(ob, d.stanza, Lane::PubSub);
                }
            } else {
                self.deliver_to_available_via(&d.to, &d.stanza, Lane::PubSub);
            }
        }
    }
}

impl crate::pubsub::Directory for Router {
    fn roster_entry(&self, owner: &Jid, contact: &Jid) -> Option<(bool, Vec<String>)> {
        if owner.domain() != self.config.domain {
            return None;
        }
        let item = self.roster_item(owner.local()?, &contact.bare())?;
        Some((item.subscription.has_from(), item.groups))
    }

    fn presences(&self, bare: &Jid) -> Vec<(Jid, String)> {
        let acc = match bare.local() {
            Some(user) if bare.domain() == self.config.domain => self.accounts.get(user),
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
        self.roster_of(owner)
            .into_iter()
            .filter(|i| i.subscription.has_from())
            .filter_map(|i| Jid::parse(&i.jid).ok())
            .collect()
    }

    fn presence_subscriptions(&self, contact: &Jid) -> Vec<Jid> {
        self.roster_of(contact)
            .into_iter()
            .filter(|i| i.subscription.has_to())
            .filter_map(|i| Jid::parse(&i.jid).ok())
            .collect()
    }
}

impl Router {
    /// The roster of a local account (cached while online, else read from the store).
    fn roster_of(&self, bare: &Jid) -> Vec<RosterItem> {
        let Some(user) = bare.local().filter(|_| bare.domain() == self.config.domain) else {
            return Vec::new();
        };
        let mut roster = match self.accounts.get(user) {
            Some(acc) => acc.roster.clone(),
            None => self.store.roster_get(user).unwrap_or_else(|e| {
                tracing::error!(user, error = %e, "cannot read roster");
                Vec::new()
            }),
        };
        // The roster change being worked out, if it touches this roster.
        if let Some(t) = self.roster_txn.borrow().as_ref() {
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
