//! Event notifications (XEP-0060 §4.3, §7.1.2): message envelopes, fan-out to
//! subscribers, subscription-state notices, and presence: last items on available,
//! temporary subscriptions (§12.4) and `purge_offline` on unavailable.

use super::*;

impl Engine {
    /// [`Engine::on_available`], without holding the outputs.
    pub(super) fn on_available_now(&mut self, cx: Cx<'_>, full: &Jid) -> Vec<Delivery> {
        self.host(None, cx, |h| h.on_available(full, cx.2))
    }

    /// `full` went unavailable (`account_offline`: it was the account's last available
    /// resource). Temporary subscriptions (§12.4, `tempsub`) of that resource, or of the
    /// bare JID when the account is now offline, end; nodes with `purge_offline` whose
    /// stored items were all published by entities now offline are purged.
    pub fn on_unavailable(
        &mut self,
        dir: &dyn Directory,
        store: &dyn Storage,
        full: &Jid,
        account_offline: bool,
        now_ms: u64,
    ) -> Vec<Delivery> {
        self.host(None, (dir, store, now_ms), |h| {
            h.on_unavailable(full, account_offline)
        })
    }
}

impl Host<'_> {
    /// [`Engine::on_available`] on the generic service.
    fn on_available(&mut self, full: &Jid, now_ms: u64) -> Vec<Delivery> {
        let bare = full.bare();
        let mut out = Vec::new();
        for (name, n) in &self.svc.nodes {
            if n.config.send_last != SendLast::OnSubAndPresence {
                continue;
            }
            let Some(last) = &n.last else { continue };
            if n.expired(last.published_ms, now_ms) {
                continue;
            }
            let subscribed = n
                .subs
                .iter()
                .any(|s| s.active(now_ms) && (s.jid == bare || &s.jid == full));
            if subscribed {
                let inner = self.items_event(
                    name,
                    &item_xml(
                        last,
                        n.config.deliver_payloads,
                        n.config.itemreply_publisher,
                    ),
                );
                out.push(self.message(full, n.config.headline, &inner, Some(last.published_ms)));
            }
        }
        out
    }

    /// `full` went unavailable (`account_offline`: it was the account's last available
    /// resource). Temporary subscriptions (§12.4, `tempsub`) of that resource, or of the
    /// bare JID when the account is now offline, end; nodes with `purge_offline` whose
    /// stored items were all published by entities now offline are purged.
    pub(super) fn on_unavailable(&mut self, full: &Jid, account_offline: bool) -> Vec<Delivery> {
        let bare = full.bare();
        let mut ops = Vec::new();
        let mut ended: Vec<(String, Sub)> = Vec::new();
        let mut purged: Vec<String> = Vec::new();
        for (name, n) in &self.svc.nodes {
            let temp = |s: &Sub| s.opts.temporary || n.config.tempsub;
            for s in n
                .subs
                .iter()
                .filter(|s| temp(s) && (s.jid == *full || (account_offline && s.jid == bare)))
            {
                ops.push(s.delete(name));
                ended.push((name.clone(), s.clone()));
            }
            // Who published what the node holds (a transient node: its last item).
            let publishers: Vec<&str> = if n.config.persist_items {
                n.items.iter().map(|e| &*e.publisher).collect()
            } else {
                n.last.iter().map(|l| l.publisher.as_str()).collect()
            };
            if account_offline && n.config.purge_offline && publishers.contains(&bare.as_str()) {
                let mut others: Vec<&str> = publishers
                    .into_iter()
                    .filter(|p| *p != bare.as_str())
                    .collect();
                others.sort_unstable();
                others.dedup();
                let online = others
                    .iter()
                    .filter_map(|p| Jid::parse(p).ok())
                    .any(|p| !self.dir.presences(&p).is_empty());
                if !online {
                    ops.push(PubsubOp::PurgeItems(name.clone()));
                    purged.push(name.clone());
                }
            }
        }
        if ops.is_empty() || self.commit(&ops).is_err() {
            return Vec::new();
        }
        for (name, sub) in &ended {
            self.remove_sub(name, sub);
            self.notify_owners_sub(name, &sub.jid, &sub.subid, "none");
        }
        for name in &purged {
            if let Some(n) = self.svc.nodes.get_mut(name) {
                n.clear_items(&mut self.eng.stored_total);
                n.last = None;
            }
            let inner = Self::node_event_xml("purge", name);
            self.notify(name, &inner);
        }
        std::mem::take(&mut self.out)
    }

    /// One notification: the per-subscriber envelope around the shared `inner` text.
    pub(super) fn message(
        &self,
        to: &Jid,
        headline: bool,
        inner: &str,
        delay_ms: Option<u64>,
    ) -> Delivery {
        self.message_ext(to, headline, &Rc::from(inner), delay_ms, &[], None)
    }

    /// [`Engine::message`] around a shared `inner`, with XEP-0131 SHIM headers
    /// (`(name, value)`: `SubID`, `Collection`) and an optional `<body/>`.
    pub(super) fn message_ext(
        &self,
        to: &Jid,
        headline: bool,
        inner: &Rc<str>,
        delay_ms: Option<u64>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Delivery {
        // The envelope is the recipient's own; `inner` (the event payload, with the item)
        // is shared by every recipient of one notification, never copied per subscriber.
        let mut head = String::with_capacity(96 + self.svc.jid_attr.len());
        let mut w = Writer::new(&mut head);
        w.start("message")
            .attr_raw("from", Raw(&self.svc.jid_attr))
            .attr("to", to.as_str())
            .attr("type", if headline { "headline" } else { "normal" });
        w.start("event").ns(NS_PUBSUB_EVENT);
        w.leave_open();
        if body.is_none() && headers.is_empty() && delay_ms.is_none() {
            return Delivery {
                to: to.clone(),
                stanza: Stanza::wrapped(
                    &head,
                    inner,
                    Cow::Borrowed(crate::xml::writer::EVENT_MESSAGE_CLOSE),
                ),
                keep_offline: false,
            };
        }
        let mut tail = String::with_capacity(64);
        let mut w = Writer::new(&mut tail);
        w.close("event");
        if let Some(b) = body {
            w.text_elem("body", b);
        }
        if !headers.is_empty() {
            w.start("headers").ns(NS_SHIM);
            for (name, value) in headers {
                w.start("header").attr("name", name).text(value).end();
            }
            w.end();
        }
        if let Some(ms) = delay_ms {
            w.start("delay")
                .ns(NS_DELAY)
                .attr_raw("from", Raw(&self.svc.jid_attr))
                .attr_fmt("stamp", xep0082(ms))
                .end();
        }
        w.close("message");
        Delivery {
            to: to.clone(),
            stanza: Stanza::wrapped(&head, inner, Cow::Owned(tail)),
            keep_offline: false,
        }
    }

    pub(super) fn items_event(&self, node: &str, body: &str) -> String {
        let mut s = String::with_capacity(32 + node.len() + body.len());
        let mut w = Writer::new(&mut s);
        w.start("items").attr("node", node).raw(Raw(body)).end();
        s
    }

    /// `<retract id='…'/>`, the body of an [`Engine::items_event`] for a retraction.
    pub(super) fn retract_xml(id: &str) -> String {
        crate::xml::build(|w| {
            w.start("retract").attr("id", id).end();
        })
    }

    /// `<verb node='…'/>`: a node event (`purge`, `configuration`) inside `<event/>`.
    pub(super) fn node_event_xml(verb: &str, node: &str) -> String {
        crate::xml::build(|w| {
            w.start(verb).attr("node", node).end();
        })
    }

    /// Queues `inner` (inside `<event/>`) for every subscriber of `node` that takes
    /// notifications.
    pub(super) fn notify(&mut self, node: &str, inner: &str) {
        self.notify_body(node, inner, None, false);
    }

    /// [`Engine::notify`] for item publications and retractions: these carry SHIM
    /// `SubID` headers (§12.5; configuration, purge and delete notifications do not).
    pub(super) fn notify_items(&mut self, node: &str, inner: &str, body: Option<&str>) {
        self.notify_body(node, inner, body, true);
    }

    /// [`Engine::notify`], with `body` as the `<body/>` for subscriptions with
    /// `include_body`. One message per JID: with `shim`, a JID with several subscriptions
    /// gets one message carrying the SubIDs as SHIM headers (§12.5). Subscriptions with
    /// `show-values` go to the account's available resources whose `<show/>` matches.
    pub(super) fn notify_body(&mut self, node: &str, inner: &str, body: Option<&str>, shim: bool) {
        let Some(n) = self.svc.nodes.get(node) else {
            return;
        };
        if !n.config.deliver_notifications {
            return;
        }
        let headline = n.config.headline;
        let keep = keeps_offline(&n.config);
        let now = self.now_ms;
        // Serialised once; every recipient's message shares it.
        let inner: Rc<str> = Rc::from(inner);
        let inner = &inner;
        let mut msgs = Vec::new();
        let mut i = 0;
        while i < n.subs.len() {
            let jid = &n.subs[i].jid;
            let mut j = i;
            while j < n.subs.len() && &n.subs[j].jid == jid {
                j += 1;
            }
            let group = &n.subs[i..j];
            i = j;
            // Fast path: one plain subscription (no allocation per subscriber).
            if let [s] = group {
                if !n.config.presence_based && s.opts.show & SHOW_SET == 0 {
                    if s.active(now) {
                        let b = body.filter(|_| s.opts.include_body);
                        msgs.push(self.message_ext(jid, headline, inner, None, &[], b));
                    }
                    continue;
                }
            }
            let active: Vec<&Sub> = group.iter().filter(|s| s.active(now)).collect();
            if active.is_empty() {
                continue;
            }
            // presence_based_delivery: a full JID must be available (a bare JID reaches
            // only available resources anyway).
            if n.config.presence_based
                && jid.is_full()
                && !self
                    .dir
                    .presences(&jid.bare())
                    .iter()
                    .any(|(r, _)| r == jid)
            {
                continue;
            }
            let several = shim && group.len() > 1;
            let send = |to: &Jid, subs: &[&Sub], msgs: &mut Vec<Delivery>| {
                let ids: Vec<(&str, &str)> = if several {
                    subs.iter().map(|s| ("SubID", s.subid.as_str())).collect()
                } else {
                    Vec::new()
                };
                let b = body.filter(|_| subs.iter().any(|s| s.opts.include_body));
                msgs.push(self.message_ext(to, headline, inner, None, &ids, b));
            };
            // A remote bare JID (component mode, docs/component.md): its server would
            // deliver whatever the presence, so presence-based delivery addresses the
            // resources known to be available one by one, as for `show-values`.
            let remote_bare =
                n.config.presence_based && jid.is_bare() && jid.domain() != self.eng.domain;
            if !remote_bare && active.iter().all(|s| s.opts.show & SHOW_SET == 0) {
                send(jid, &active, &mut msgs);
                continue;
            }
            for (res, show) in self.dir.presences(&jid.bare()) {
                if jid.is_full() && &res != jid {
                    continue;
                }
                let subs: Vec<&Sub> = active
                    .iter()
                    .copied()
                    .filter(|s| s.opts.show_ok(&show))
                    .collect();
                if !subs.is_empty() {
                    send(&res, &subs, &mut msgs);
                }
            }
        }
        mark_offline(&mut msgs, keep);
        self.out.extend(msgs);
        self.notify_pep(node, inner);
    }

    /// §12.13 (impl-subchange): tells `jid` that its subscription `subid` changed to
    /// `state`, with an `<event/>` holding one `<subscription/>`.
    pub(super) fn subscription_changed(&mut self, node: &str, jid: &Jid, subid: &str, state: &str) {
        let s = crate::xml::build(|w| {
            w.start("message")
                .attr("from", self.svc.jid.as_str())
                .attr("to", jid.as_str());
            w.start("event").ns(NS_PUBSUB_EVENT);
            w.start("subscription")
                .attr("node", node)
                .attr("jid", jid.as_str())
                .attr("subid", subid)
                .attr("subscription", state)
                .end_all();
        });
        self.out.push(Delivery {
            to: jid.clone(),
            stanza: Stanza::from(s),
            keep_offline: false,
        });
    }

    /// `notify_sub`: tells every owner of `node` that `jid`'s subscription `subid` is now
    /// `state` (an event notification carrying the `<subscription/>`).
    pub(super) fn notify_owners_sub(&mut self, node: &str, jid: &Jid, subid: &str, state: &str) {
        let Some(n) = self.svc.nodes.get(node) else {
            return;
        };
        if !n.config.notify_sub {
            return;
        }
        let inner = crate::xml::build(|w| {
            w.start("subscription")
                .attr("node", node)
                .attr("jid", jid.as_str())
                .attr("subid", subid)
                .attr("subscription", state)
                .end();
        });
        let msgs: Vec<Delivery> = n
            .affs
            .iter()
            .filter(|(_, a)| *a == Affiliation::Owner)
            .filter_map(|(j, _)| Jid::parse(j).ok())
            .map(|o| self.message(&o, n.config.headline, &inner, None))
            .collect();
        self.out.extend(msgs);
    }
}

/// XEP-0160: whether `config`'s event notifications are kept in offline storage for a
/// subscriber that is offline: `normal` ones (not `headline`, which RFC 6121 §8.5.2.2
/// says not to store) of a node that does not deliver by presence.
pub(super) fn keeps_offline(config: &NodeConfig) -> bool {
    !config.headline && !config.presence_based
}

/// Marks the messages to bare JIDs in `msgs` as kept offline (`keep`): a full-JID
/// subscription names one session, and is never stored.
pub(super) fn mark_offline(msgs: &mut [Delivery], keep: bool) {
    for d in msgs {
        d.keep_offline = keep && d.to.is_bare();
    }
}
