//! Rosters (RFC 6121 §2): roster IQs, pushes, and roster changes made durable through the
//! group commit before anyone hears of them.

use super::*;

/// Longest roster item name or group name accepted, in bytes (RFC 6121 §2.1.2.4 leaves it to policy).
const MAX_ROSTER_TEXT: usize = crate::storage::MAX_ROSTER_NAME_BYTES;
/// Most groups on one roster item.
const MAX_ROSTER_GROUPS: usize = crate::storage::MAX_ROSTER_GROUPS;

/// A roster change being worked out ([`Router::roster_transaction`]): its writes, which
/// later reads of the same request see, and every stanza it produced, sent only once the
/// writes are on disk.
#[derive(Default)]
pub(super) struct RosterTxn {
    /// The writes, in order, and whether each goes to disk (not for anonymous accounts).
    pub(super) writes: Vec<(RosterWrite, bool)>,
    pub(super) out: Vec<(Rc<Outbox>, Stanza, Lane)>,
}

impl RosterTxn {
    /// The item as this transaction left it: `Some(None)` if it removed it, `None` if it
    /// did not touch it.
    fn item(&self, user: &str, jid: &str) -> Option<Option<RosterItem>> {
        self.writes
            .iter()
            .rev()
            .find(|(w, _)| w.user() == user && w.jid() == jid)
            .map(|(w, _)| match w {
                RosterWrite::Put(_, i) => Some(i.clone()),
                RosterWrite::Remove(..) => None,
            })
    }
}

/// A roster change staged for the group commit: applied to memory and its stanzas sent
/// when the commit of `generation` is on disk; refused if it fails.
pub(super) struct RosterPending {
    generation: u64,
    writes: Vec<RosterWrite>,
    out: Vec<(Rc<Outbox>, Stanza, Lane)>,
    /// The request, to answer with an error if the commit fails.
    from: Jid,
    request: Element,
}

impl Router {
    /// After the database was reopened, the rosters in memory are read from it again, as
    /// the pub-sub state is: a commit whose fsync failed may still have reached the disk
    /// (redb keeps it if its commit record did), although its requests were refused, and
    /// memory must equal the disk, or a restart would bring back a change that the
    /// running broker does not show.
    pub(super) fn rosters_reload(&mut self) {
        for (user, account) in self.im.accounts.iter_mut().filter(|(_, a)| !a.anonymous) {
            match self.store.roster_get(user) {
                Ok(roster) => account.roster = roster,
                Err(e) => {
                    tracing::error!(user = %user, error = %e, "roster not reloaded after reopening the database")
                }
            }
        }
    }

    /// The item `contact` of `user`'s roster: as the roster change being worked out left
    /// it, else as committed (cached while the account is online, else from the store).
    pub(super) fn roster_item(&self, user: &str, contact: &Jid) -> Option<RosterItem> {
        self.im.roster_item(&*self.store, user, contact)
    }
}

impl Im {
    /// [`Router::roster_item`].
    pub(super) fn roster_item(
        &self,
        store: &dyn Storage,
        user: &str,
        contact: &Jid,
    ) -> Option<RosterItem> {
        if let Some(t) = self.roster_txn.borrow().as_ref() {
            if let Some(item) = t.item(user, contact.as_str()) {
                return item;
            }
        }
        if let Some(acc) = self.accounts.get(user) {
            return acc
                .roster
                .iter()
                .find(|i| i.jid == contact.as_str())
                .cloned();
        }
        match store.roster_get(user) {
            Ok(items) => items.into_iter().find(|i| i.jid == contact.as_str()),
            Err(e) => {
                tracing::error!(user, error = %e, "cannot read roster");
                None
            }
        }
    }
}

impl Router {
    /// Save an item and push it to the user's interested resources (both once the change
    /// is on disk, see [`Router::roster_transaction`]).
    pub(super) fn roster_save(&mut self, user: &str, item: RosterItem) {
        let before = Jid::parse(&item.jid)
            .ok()
            .and_then(|c| self.roster_item(user, &c))
            .map(|i| (i.subscription.has_from(), i.groups));
        let after = Some((item.subscription.has_from(), item.groups.clone()));
        let contact = item.jid.clone();
        self.roster_save_inner(user, item);
        self.pep_roster_hook(user, &contact, before, after);
    }

    /// Records a write in the roster change being worked out.
    fn roster_record(&self, write: RosterWrite) {
        let persist = !self
            .im
            .accounts
            .get(write.user())
            .is_some_and(|a| a.anonymous);
        match self.im.roster_txn.borrow_mut().as_mut() {
            Some(t) => t.writes.push((write, persist)),
            // Invariant: every roster change runs inside `roster_transaction`.
            None => tracing::error!(
                user = write.user(),
                "bug: roster change outside a transaction; not saved"
            ),
        }
    }

    fn roster_save_inner(&mut self, user: &str, item: RosterItem) {
        let push = item.in_roster;
        self.roster_record(RosterWrite::Put(user.to_owned(), item.clone()));
        if push {
            self.roster_push(user, &item, false);
        }
    }

    pub(super) fn roster_delete(&mut self, user: &str, contact: &str) {
        let before = Jid::parse(contact)
            .ok()
            .and_then(|c| self.roster_item(user, &c))
            .map(|i| (i.subscription.has_from(), i.groups));
        self.roster_delete_inner(user, contact);
        self.pep_roster_hook(user, contact, before, None);
    }

    fn roster_delete_inner(&mut self, user: &str, contact: &str) {
        let existing = Jid::parse(contact)
            .ok()
            .and_then(|c| self.roster_item(user, &c));
        let Some(item) = existing else {
            return;
        };
        self.roster_record(RosterWrite::Remove(user.to_owned(), contact.to_owned()));
        if item.in_roster {
            self.roster_push(user, &item, true);
        }
    }

    /// Handles a roster request (roster IQ, subscription presence) as one change: `f` works
    /// it out against the durable rosters, its writes ([`Router::roster_record`]) are
    /// staged for the group commit, and everything it sends (reply, roster pushes,
    /// presence) waits in the transaction. Once the commit is on disk the rosters in
    /// memory change and the stanzas go out ([`Router::roster_committed`]); if the commit
    /// fails the request gets an error and nothing changes. A change that writes nothing
    /// (a roster get, an anonymous account's roster) is answered at once. While a change
    /// waits for its commit, later roster requests wait too, in order.
    pub(super) fn roster_transaction(
        &mut self,
        from: &Jid,
        request: &Element,
        f: impl FnOnce(&mut Self),
    ) {
        if !self.im.roster_pending.is_empty()
            || (!self.im.roster_deferred.is_empty() && !self.im.roster_replaying)
        {
            self.roster_defer(from, request);
            return;
        }
        *self.im.roster_txn.borrow_mut() = Some(RosterTxn::default());
        f(self);
        let Some(txn) = self.im.roster_txn.borrow_mut().take() else {
            return;
        };
        let persist: Vec<RosterWrite> = txn
            .writes
            .iter()
            .filter(|(_, p)| *p)
            .map(|(w, _)| w.clone())
            .collect();
        let writes: Vec<RosterWrite> = txn.writes.into_iter().map(|(w, _)| w).collect();
        match self.store.roster_stage(&persist) {
            Ok(None) => {
                // Nothing to wait for: on disk already, or nothing to save.
                self.roster_apply(&writes);
                self.roster_flush(txn.out);
            }
            Ok(Some(generation)) => self.im.roster_pending.push_back(RosterPending {
                generation,
                writes,
                out: txn.out,
                from: from.clone(),
                request: request.clone(),
            }),
            Err(StoreError::LimitReached { max, .. }) => {
                // A full roster (the contact's, for a subscription request): the client's
                // doing, not the server's trouble.
                tracing::info!(
                    user = from.local().unwrap_or(""),
                    max,
                    "roster change refused: the roster is full"
                );
                self.roster_refuse(from, request, Condition::NotAllowed, &roster_full_text(max));
            }
            Err(e) => {
                let (condition, text) = roster_failure(&e);
                if matches!(e, StoreError::Invalid(_)) {
                    tracing::info!(user = from.local().unwrap_or(""), error = %e, "roster change refused, nothing changed");
                } else {
                    // A storage fault: logged once, then rate-limited.
                    self.storage_failed(&e);
                }
                self.roster_refuse(from, request, condition, text);
            }
        }
    }

    /// Keeps a roster request until the change before it is on disk; refuses it with
    /// `resource-constraint` (wait) beyond `limits.roster_deferred_requests` and
    /// `limits.roster_deferred_bytes`.
    fn roster_defer(&mut self, from: &Jid, request: &Element) {
        let bytes = request.heap_size() + 64;
        let l = &self.config.limits;
        if self.im.roster_deferred.len() >= l.roster_deferred_requests
            || self.im.roster_deferred_bytes + bytes > l.roster_deferred_bytes
        {
            tracing::warn!(from = %from, "roster request refused: too many roster requests wait for the disk");
            self.bounce(
                request,
                StanzaError::new(Condition::ResourceConstraint)
                    .with_text("too many roster changes are waiting for the disk; retry later"),
            );
            return;
        }
        self.im.roster_deferred_bytes += bytes;
        self.im
            .roster_deferred
            .push_back((from.clone(), request.clone()));
    }

    /// The commit of `generation` ended (`failure`: how it failed, for the error replies).
    /// Roster changes it carried are applied and their stanzas sent, or refused; then the
    /// roster requests that waited are handled.
    pub(super) fn roster_committed(
        &mut self,
        generation: u64,
        failure: Option<(Condition, &'static str)>,
    ) {
        while self
            .im
            .roster_pending
            .front()
            .is_some_and(|p| p.generation <= generation || failure.is_some())
        {
            let Some(p) = self.im.roster_pending.pop_front() else {
                break;
            };
            match failure {
                None => {
                    self.roster_apply(&p.writes);
                    self.roster_flush(p.out);
                }
                Some((condition, text)) => {
                    // The storage fault itself is logged (rate-limited) by `storage_failed`.
                    tracing::debug!(
                        user = p.from.local().unwrap_or(""),
                        "roster change not saved: the client got an error and nothing changed"
                    );
                    self.roster_refuse(&p.from, &p.request, condition, text);
                }
            }
        }
        if !self.im.roster_pending.is_empty() || self.im.roster_replaying {
            return;
        }
        self.im.roster_replaying = true;
        while self.im.roster_pending.is_empty() {
            let Some((from, stanza)) = self.im.roster_deferred.pop_front() else {
                break;
            };
            self.im.roster_deferred_bytes -= stanza.heap_size() + 64;
            self.route(&from, stanza);
        }
        self.im.roster_replaying = false;
    }

    /// Applies committed roster writes to the rosters in memory (accounts online).
    fn roster_apply(&mut self, writes: &[RosterWrite]) {
        for w in writes {
            let Some(acc) = self.im.accounts.get_mut(w.user()) else {
                continue;
            };
            match w {
                RosterWrite::Put(_, item) => {
                    match acc.roster.iter_mut().find(|i| i.jid == item.jid) {
                        Some(slot) => *slot = item.clone(),
                        None => acc.roster.push(item.clone()),
                    }
                }
                RosterWrite::Remove(_, jid) => acc.roster.retain(|i| &i.jid != jid),
            }
        }
    }

    /// Sends the stanzas of a committed roster change.
    fn roster_flush(&self, out: Vec<(Rc<Outbox>, Stanza, Lane)>) {
        for (ob, s, lane) in out {
            self.send_via(&ob, s, lane);
        }
    }

    /// Answers a roster request whose change was not saved.
    fn roster_refuse(&self, from: &Jid, request: &Element, condition: Condition, text: &str) {
        let Some(reply) = proto::error_reply(request, &StanzaError::new(condition).with_text(text))
        else {
            return;
        };
        if let Some(ob) = self.resource_outbox(from) {
            self.send(ob, &Rc::from(reply.to_string_in_stream()));
        }
    }

    /// RFC 6121 §2.1.6 roster push to every interested resource.
    fn roster_push(&mut self, user: &str, item: &RosterItem, removed: bool) {
        self.im.push_counter += 1;
        let n = self.im.push_counter;
        let Some(acc) = self.im.accounts.get(user) else {
            return;
        };
        for r in acc.resources.iter().filter(|r| r.interested) {
            let iq = Element::new("iq", NS_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("push{n}"))
                .with_attr("to", r.jid.as_str())
                .with_child(
                    Element::new("query", NS_ROSTER).with_child(roster_item_element(item, removed)),
                );
            self.send(&r.outbox, &Rc::from(iq.to_string_in_stream()));
        }
    }

    pub(super) fn roster_iq(&mut self, from: &Jid, iq: &Iq, q: &Element) {
        let user = from.local().unwrap_or("").to_owned();
        if iq.ty() == IqType::Get {
            if let Some(r) = self.resource_mut(from) {
                r.interested = true;
            }
            let mut query = Element::new("query", NS_ROSTER);
            if let Some(acc) = self.im.accounts.get(&user) {
                for item in acc.roster.iter().filter(|i| i.in_roster) {
                    query.push_child(roster_item_element(item, false));
                }
            }
            self.deliver_reply(proto::iq_result(iq, Some(query)));
            return;
        }
        // roster set: exactly one item (§2.3.3)
        let items: Vec<&Element> = q.elements().filter(|e| e.is("item", NS_ROSTER)).collect();
        if items.len() != 1 || q.elements().count() != 1 {
            self.bounce(
                iq,
                StanzaError::new(Condition::BadRequest)
                    .with_text("a roster set carries exactly one item"),
            );
            return;
        }
        let it = items[0];
        let Some(contact) = it
            .attr("jid")
            .and_then(|j| Jid::parse(j).ok())
            .map(|j| j.bare())
        else {
            self.bounce(
                iq,
                StanzaError::new(Condition::BadRequest).with_text("item needs a valid jid"),
            );
            return;
        };
        match it.attr("subscription") {
            Some("remove") => {
                self.roster_remove(&user, &contact);
                self.deliver_reply(proto::iq_result(iq, None));
                return;
            }
            None | Some("none" | "to" | "from" | "both") => {}
            Some(_) => {
                self.bounce(
                    iq,
                    StanzaError::new(Condition::BadRequest)
                        .with_text("invalid subscription attribute"),
                );
                return;
            }
        }
        let name = it.attr("name").map(str::to_owned).filter(|n| !n.is_empty());
        let mut groups: Vec<String> = Vec::new();
        for g in it.elements().filter(|e| e.is("group", NS_ROSTER)) {
            let g = g.text();
            if g.is_empty() || g.len() > MAX_ROSTER_TEXT {
                self.bounce(
                    iq,
                    StanzaError::new(Condition::NotAcceptable)
                        .with_text("group names must be 1 to 255 bytes"),
                );
                return;
            }
            if groups.contains(&g) {
                self.bounce(
                    iq,
                    StanzaError::new(Condition::BadRequest).with_text("duplicate group"),
                );
                return;
            }
            groups.push(g);
        }
        if name.as_ref().is_some_and(|n| n.len() > MAX_ROSTER_TEXT)
            || groups.len() > MAX_ROSTER_GROUPS
        {
            self.bounce(
                iq,
                StanzaError::new(Condition::NotAcceptable).with_text("name or groups too long"),
            );
            return;
        }
        let existing = self.roster_item(&user, &contact);
        let visible = self
            .im
            .accounts
            .get(&user)
            .map(|a| a.roster.iter().filter(|i| i.in_roster).count())
            .unwrap_or(0);
        if existing.as_ref().is_none_or(|i| !i.in_roster)
            && visible >= self.config.limits.max_roster_items
        {
            self.bounce(
                iq,
                StanzaError::new(Condition::NotAllowed)
                    .with_text(roster_full_text(self.config.limits.max_roster_items)),
            );
            return;
        }
        let mut item = existing.unwrap_or_else(|| new_item(&contact));
        item.name = name;
        item.groups = groups;
        item.in_roster = true;
        self.roster_save(&user, item);
        self.deliver_reply(proto::iq_result(iq, None));
    }

    /// §2.5.2: removing an item also cancels subscriptions in both directions.
    fn roster_remove(&mut self, user: &str, contact: &Jid) {
        let Some(item) = self.roster_item(user, contact) else {
            return;
        };
        let me = Jid::new(Some(user), &self.config.domain.clone(), None);
        if let Ok(me) = me {
            if item.subscription.has_to() || item.ask_out {
                self.inbound_subscription(&me, contact, "unsubscribe");
            }
            if item.subscription.has_from() || item.pending_in {
                self.inbound_subscription(&me, contact, "unsubscribed");
                self.send_unavailable_to(user, contact);
            }
        }
        self.roster_delete(user, contact.as_str());
    }
}

/// The text of the `not-allowed` error for a roster at its limit.
fn roster_full_text(max: usize) -> String {
    format!("the roster is full: at most {max} items (limits.max_roster_items)")
}

/// The error a roster request gets when its change cannot be saved: a full disk is
/// `resource-constraint` (wait: it may work once space is freed), anything else
/// `internal-server-error`.
pub(super) fn roster_failure(e: &StoreError) -> (Condition, &'static str) {
    match e {
        StoreError::Full => (
            Condition::ResourceConstraint,
            "the server's disk is full: the roster change could not be confirmed as saved; get the roster before retrying",
        ),
        StoreError::LimitReached { .. } => (Condition::NotAllowed, "the roster is full"),
        StoreError::Invalid(_) => (Condition::NotAcceptable, "the roster item cannot be stored"),
        _ => (
            Condition::InternalServerError,
            "the roster change could not be confirmed as saved (storage error); get the roster before retrying",
        ),
    }
}

pub(super) fn new_item(contact: &Jid) -> RosterItem {
    RosterItem {
        jid: contact.as_str().to_owned(),
        name: None,
        subscription: Subscription::None,
        ask_out: false,
        pending_in: false,
        groups: Vec::new(),
        in_roster: true,
    }
}

/// The `<item/>` of a roster result or push.
fn roster_item_element(item: &RosterItem, removed: bool) -> Element {
    let mut e = Element::new("item", NS_ROSTER).with_attr("jid", item.jid.clone());
    if removed {
        e.set_attr("subscription", "remove");
        return e;
    }
    if let Some(n) = &item.name {
        e.set_attr("name", n.clone());
    }
    e.set_attr("subscription", item.subscription.as_str());
    if item.ask_out {
        e.set_attr("ask", "subscribe");
    }
    for g in &item.groups {
        e.push_child(Element::new("group", NS_ROSTER).with_text(g.clone()));
    }
    e
}
