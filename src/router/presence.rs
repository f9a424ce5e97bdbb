//! Presence (RFC 6121 §4): availability broadcasts, initial probes, directed presence,
//! XEP-0115 caps and PEP hooks, and subscription states (RFC 6121 §3).

use super::roster::new_item;
use super::*;

impl Router {
    pub(super) fn route_presence(&mut self, from: &Jid, p: Presence) {
        if p.to().is_some_and(|t| self.is_pubsub(t)) {
            // Directed presence to the service carries no meaning here.
            return;
        }
        let ty = p.ty();
        match (p.to().cloned(), ty) {
            (None, PresenceType::Available) => self.presence_available(from, p.into_element()),
            (None, PresenceType::Unavailable) => self.presence_unavailable(from, p.into_element()),
            (None, _) => {}
            (Some(to), t) if t.subscription().is_some() => {
                let kind = t.subscription().unwrap_or_default();
                self.roster_transaction(from, &p, |r| r.subscription(from, &to.bare(), kind))
            }
            (Some(to), PresenceType::Probe) => self.probe(from, &to),
            (Some(to), PresenceType::Available | PresenceType::Unavailable) => {
                self.directed_presence(from, &to, p.into_element(), ty == PresenceType::Available)
            }
            (Some(_), PresenceType::Error) => {}
            (Some(_), _) => self.bounce(
                &p,
                StanzaError::new(Condition::BadRequest).with_text("unknown presence type"),
            ),
        }
    }

    /// RFC 6121 §4.2 (initial) and §4.4 (update) presence.
    fn presence_available(&mut self, from: &Jid, mut p: Element) {
        p.remove_attr("to");
        let priority = p
            .child("priority", NS_CLIENT)
            .and_then(|e| e.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let Some(res) = self.resource_mut(from) else {
            return;
        };
        let initial = res.presence.is_none();
        // Whether messages to the bare JID reached it already (RFC 6121 §8.5.2.1).
        let reachable = !initial && res.priority >= 0;
        res.presence = Some(p.clone());
        res.priority = priority;
        let user = from.local().unwrap_or("").to_owned();
        self.broadcast_presence(&user, from, &p);
        if initial {
            self.initial_presence_probe(&user, from);
            let now = self.now_ms();
            if let (Some(engine), dir) = self.engine_and_dir() {
                let out = engine.on_available(&dir, dir.store, from, now);
                self.pubsub_deliver(out);
            }
        }
        if !reachable && priority >= 0 {
            // XEP-0160 §3: what was kept while the account was offline.
            self.offline_deliver(from);
        }
        // XEP-0115/0163: interests from caps; only newly interesting nodes get their
        // last item (an unchanged presence update changes nothing).
        let now = self.now_ms();
        let mut ev = self.caps.expire(now);
        let more = self.caps.on_presence(from, &p, true, now);
        ev.queries.extend(more.queries);
        ev.updates.extend(more.updates);
        ev.overloaded |= more.overloaded;
        self.caps_events(ev);
    }

    /// Sends the caps disco#info queries and hands new PEP interests to the engine.
    pub(super) fn caps_events(&mut self, ev: crate::caps::CapsEvents) {
        if ev.overloaded {
            tracing::warn!("caps table full: a resource gets no PEP notifications");
        }
        if let Ok(domain) = Jid::parse(&self.config.domain) {
            for q in &ev.queries {
                if let Some(ob) = self.resource_outbox(&q.to) {
                    self.send(ob, &Rc::from(q.to_element(&domain).to_string_in_stream()));
                }
            }
        }
        for u in ev.updates.into_iter().filter(|u| !u.added.is_empty()) {
            let now = self.now_ms();
            let (Some(engine), dir) = self.engine_and_dir() else {
                return;
            };
            let out = engine.pep_interest_added(&dir, dir.store, &u.jid, &u.added, now);
            self.pubsub_deliver(out);
        }
    }

    /// XEP-0163 §7.1: `user`'s roster item for `contact` changed from `before` to
    /// `after` (presence subscription `from`, groups): PEP access is recalculated.
    pub(super) fn pep_roster_hook(
        &mut self,
        user: &str,
        contact: &str,
        before: Option<(bool, Vec<String>)>,
        after: Option<(bool, Vec<String>)>,
    ) {
        if before == after {
            return;
        }
        let (Ok(owner), Ok(contact)) = (
            Jid::parse(&format!("{user}@{}", self.config.domain)),
            Jid::parse(contact),
        ) else {
            return;
        };
        let gained = after.as_ref().is_some_and(|a| a.0) && !before.as_ref().is_some_and(|b| b.0);
        let now = self.now_ms();
        let (Some(engine), dir) = self.engine_and_dir() else {
            return;
        };
        let out = engine.pep_roster_changed(&dir, dir.store, &owner, &contact, gained, now);
        self.pubsub_deliver(out);
    }

    /// Broadcast a presence of `from` to its contacts with a `from` subscription and to the
    /// account's other available resources (RFC 6121 §4.2.2, §4.4.2).
    fn broadcast_presence(&self, user: &str, from: &Jid, p: &Element) {
        let Some(acc) = self.im.accounts.get(user) else {
            return;
        };
        for item in acc.roster.iter().filter(|i| i.subscription.has_from()) {
            let Ok(contact) = Jid::parse(&item.jid) else {
                continue;
            };
            let mut copy = p.clone();
            copy.set_attr("to", contact.as_str());
            self.deliver_to_available(&contact, &Rc::from(copy.to_string_in_stream()));
        }
        let mut own = p.clone();
        own.set_attr("to", from.bare().as_str());
        let s: Rc<str> = Rc::from(own.to_string_in_stream());
        for r in acc
            .resources
            .iter()
            .filter(|r| &r.jid != from && r.presence.is_some())
        {
            self.send(&r.outbox, &s);
        }
    }

    /// After initial presence: the user gets its contacts' presence (the server answers the
    /// probes locally, §4.3) and its own other resources' presence, plus any pending
    /// subscription requests (§3.1.3).
    fn initial_presence_probe(&self, user: &str, to: &Jid) {
        let Some(acc) = self.im.accounts.get(user) else {
            return;
        };
        let Some(ob) = acc
            .resources
            .iter()
            .find(|r| &r.jid == to)
            .map(|r| r.outbox.clone())
        else {
            return;
        };
        for item in &acc.roster {
            let Ok(contact) = Jid::parse(&item.jid) else {
                continue;
            };
            if item.subscription.has_to() {
                self.send_presence_of(&contact, to, &ob);
            }
            if item.pending_in {
                let s = presence_xml("subscribe", contact.as_str(), to.bare().as_str());
                self.send(&ob, &Rc::from(s));
            }
        }
        for r in acc.resources.iter().filter(|r| &r.jid != to) {
            if let Some(p) = &r.presence {
                let mut copy = p.clone();
                copy.set_attr("to", to.as_str());
                self.send(&ob, &Rc::from(copy.to_string_in_stream()));
            }
        }
    }

    /// Send the current presence of every available resource of `contact` to one outbox.
    fn send_presence_of(&self, contact: &Jid, to: &Jid, ob: &Rc<Outbox>) {
        let Some(acc) = contact.local().and_then(|l| self.im.accounts.get(l)) else {
            return;
        };
        if contact.domain() != self.config.domain {
            return;
        }
        for s in presences_to(acc, to) {
            self.send(ob, &s);
        }
    }

    fn presence_unavailable(&mut self, from: &Jid, p: Element) {
        let Some(res) = self.resource_mut(from) else {
            return;
        };
        if res.presence.is_none() {
            return;
        }
        res.presence = None;
        let directed = std::mem::take(&mut res.directed);
        self.caps.remove(from);
        let mut p = p;
        p.remove_attr("to");
        let user = from.local().unwrap_or("").to_owned();
        self.broadcast_presence(&user, from, &p);
        for d in directed {
            let mut copy = p.clone();
            copy.set_attr("to", d.as_str());
            self.deliver_to_available(&d, &Rc::from(copy.to_string_in_stream()));
        }
        self.pubsub_unavailable(from);
    }

    /// Unavailable presence on behalf of a resource that went away.
    pub(super) fn broadcast_unavailable(&self, res: &Resource) {
        let p = Element::new("presence", NS_CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", res.jid.as_str());
        if let Some(user) = res.jid.local() {
            self.broadcast_presence(user, &res.jid, &p);
        }
        for d in &res.directed {
            let mut copy = p.clone();
            copy.set_attr("to", d.as_str());
            self.deliver_to_available(d, &Rc::from(copy.to_string_in_stream()));
        }
    }

    /// RFC 6121 §4.6 directed presence.
    fn directed_presence(&mut self, from: &Jid, to: &Jid, p: Element, available: bool) {
        match self.classify(to) {
            Target::Local(user) => {
                if !self.account_exists(&user) {
                    return;
                }
                let s: Rc<str> = Rc::from(p.to_string_in_stream());
                self.deliver_to_available(to, &s);
                let subscribed = self
                    .roster_item(from.local().unwrap_or(""), &to.bare())
                    .is_some_and(|i| i.subscription.has_from());
                // Directed-presence targets remembered per resource (RFC 6121 §4.6);
                // beyond the bound the oldest is forgotten.
                let max_directed = self.config.limits.directed_presence_max;
                if let Some(res) = self.resource_mut(from) {
                    if available && !subscribed && res.presence.is_some() {
                        if !res.directed.contains(to) {
                            if res.directed.len() >= max_directed {
                                res.directed.remove(0);
                            }
                            res.directed.push(to.clone());
                        }
                    } else if !available {
                        res.directed.retain(|d| d != to);
                    }
                }
            }
            Target::Domain => {}
            Target::Remote => self.bounce(&p, StanzaError::new(Condition::RemoteServerNotFound)),
        }
    }

    /// A client probe (§4.3): answered from local state if the prober is subscribed.
    fn probe(&self, from: &Jid, to: &Jid) {
        let Some(user) = from.local() else { return };
        let allowed = from.bare() == to.bare()
            || self
                .roster_item(user, &to.bare())
                .is_some_and(|i| i.subscription.has_to());
        if !allowed {
            return;
        }
        if let Some(ob) = self.resource_outbox(from) {
            self.send_presence_of(to, from, ob);
        }
    }

    /// Outbound subscription stanza from `from` about `contact`.
    fn subscription(&mut self, from: &Jid, contact: &Jid, ty: &str) {
        let user = from.local().unwrap_or("").to_owned();
        let me = from.bare();
        if contact == &me {
            return;
        }
        if matches!(self.classify(contact), Target::Remote | Target::Domain) {
            if ty == "subscribe" {
                let p = Element::new("presence", NS_CLIENT)
                    .with_attr("type", ty)
                    .with_attr("from", from.as_str())
                    .with_attr("to", contact.as_str());
                self.bounce(
                    &p,
                    StanzaError::new(Condition::RemoteServerNotFound)
                        .with_text("no server-to-server support"),
                );
            }
            return;
        }
        let mut item = self
            .roster_item(&user, contact)
            .unwrap_or_else(|| new_item(contact));
        let before = item.clone();
        match ty {
            "subscribe" => {
                if !item.subscription.has_to() {
                    item.ask_out = true;
                }
                item.in_roster = true;
            }
            "subscribed" => {
                if !item.pending_in {
                    // No pre-approval support (RFC 6121 §3.4): nothing to approve.
                    return;
                }
                item.pending_in = false;
                item.subscription = add_from(item.subscription);
                item.in_roster = true;
            }
            "unsubscribe" => {
                item.ask_out = false;
                item.subscription = drop_to(item.subscription);
            }
            _ => {
                item.pending_in = false;
                item.subscription = drop_from(item.subscription);
            }
        }
        if item != before {
            self.roster_save(&user, item);
        }
        self.inbound_subscription(&me, contact, ty);
        match ty {
            // §3.1.5: the contact's available resources send their presence.
            "subscribed" => self.send_presence_to_contact(&user, contact),
            // §3.2.3: the user's resources send unavailable presence to the contact.
            "unsubscribed" => self.send_unavailable_to(&user, contact),
            _ => {}
        }
    }

    /// Inbound processing at the contact's side (the contact is local).
    pub(super) fn inbound_subscription(&mut self, from: &Jid, contact: &Jid, ty: &str) {
        let Some(cuser) = contact.local().map(str::to_owned) else {
            return;
        };
        if !self.account_exists(&cuser) {
            if ty == "subscribe" {
                // §3.1.3: an unknown contact auto-replies unsubscribed.
                self.inbound_subscription(contact, from, "unsubscribed");
            }
            return;
        }
        let existing = self.roster_item(&cuser, from);
        let mut item = existing.clone().unwrap_or_else(|| {
            let mut i = new_item(from);
            i.in_roster = false;
            i
        });
        let deliver = match ty {
            "subscribe" => {
                if item.subscription.has_from() {
                    // §3.1.3: already approved: auto-reply subscribed, with the contact's presence.
                    self.inbound_subscription(contact, from, "subscribed");
                    self.send_presence_to_contact(&cuser, from);
                    false
                } else {
                    item.pending_in = true;
                    true
                }
            }
            "subscribed" => {
                if !item.ask_out {
                    return;
                }
                item.ask_out = false;
                item.subscription = add_to(item.subscription);
                true
            }
            "unsubscribe" => {
                let had = item.subscription.has_from() || item.pending_in;
                item.pending_in = false;
                item.subscription = drop_from(item.subscription);
                had
            }
            _ => {
                let had = item.subscription.has_to() || item.ask_out;
                item.ask_out = false;
                item.subscription = drop_to(item.subscription);
                had
            }
        };
        if existing.as_ref() != Some(&item) {
            if !item.in_roster
                && item.subscription == Subscription::None
                && !item.pending_in
                && !item.ask_out
            {
                if existing.is_some() {
                    self.roster_delete(&cuser, from.as_str());
                }
            } else {
                self.roster_save(&cuser, item);
            }
        }
        if deliver {
            let s = presence_xml(ty, from.as_str(), contact.as_str());
            self.deliver_to_available(contact, &Rc::from(s));
        }
    }

    /// The user's available resources send their presence to a contact that just got a subscription.
    fn send_presence_to_contact(&self, user: &str, contact: &Jid) {
        let Some(acc) = self.im.accounts.get(user) else {
            return;
        };
        for s in presences_to(acc, contact) {
            self.deliver_to_available(contact, &s);
        }
    }

    pub(super) fn send_unavailable_to(&self, user: &str, contact: &Jid) {
        let Some(acc) = self.im.accounts.get(user) else {
            return;
        };
        for r in acc.resources.iter().filter(|r| r.presence.is_some()) {
            let s = presence_xml("unavailable", r.jid.as_str(), contact.as_str());
            self.deliver_to_available(contact, &Rc::from(s));
        }
    }
}

/// The presences of `acc`'s available resources, each addressed to `to` and serialised.
fn presences_to<'a>(acc: &'a Account, to: &'a Jid) -> impl Iterator<Item = Rc<str>> + 'a {
    acc.resources
        .iter()
        .filter_map(|r| r.presence.as_ref())
        .map(move |p| {
            let mut copy = p.clone();
            copy.set_attr("to", to.as_str());
            Rc::from(copy.to_string_in_stream())
        })
}

/// The subscription state in which presence flows to the user (`to`) and from the user
/// (`from`).
fn sub_state(to: bool, from: bool) -> Subscription {
    match (to, from) {
        (false, false) => Subscription::None,
        (true, false) => Subscription::To,
        (false, true) => Subscription::From,
        (true, true) => Subscription::Both,
    }
}
fn add_from(s: Subscription) -> Subscription {
    sub_state(s.has_to(), true)
}
fn add_to(s: Subscription) -> Subscription {
    sub_state(true, s.has_from())
}
fn drop_from(s: Subscription) -> Subscription {
    sub_state(s.has_to(), false)
}
fn drop_to(s: Subscription) -> Subscription {
    sub_state(false, s.has_from())
}

/// `<presence type='…' from='…' to='…'/>`: a presence the server writes itself.
fn presence_xml(ty: &str, from: &str, to: &str) -> String {
    crate::xml::build(|w| {
        w.start("presence")
            .attr("type", ty)
            .attr("from", from)
            .attr("to", to)
            .end();
    })
}
