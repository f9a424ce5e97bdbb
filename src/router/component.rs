//! XEP-0114 component mode: the pub-sub service served to the users of another XMPP server
//! through one component connection (`[component]`).
//!
//! Stanzas from that connection are trusted as the server asserts them: their `from`
//! (any domain but ours) is the requester. What the service sends to a JID outside our
//! domain (replies, notifications, errors) leaves through the connection
//! (`pubsub_deliver`, `deliver_reply`); nothing else does, since the server accepts only
//! stanzas from the component's domain (a PEP notification of a local account to a remote
//! contact is dropped, as without the component). Presence sent to the service is remembered (bounded by
//! `limits.component_max_presences`) and is what presence-based delivery sees
//! ([`Dir::presences`](super::pubsub::Dir)); rosters of remote users are not visible.

use super::*;

/// The component side of the broker.
#[derive(Default)]
pub(super) struct ComponentLink {
    /// The connection's outbox while the server has accepted the handshake.
    outbox: Option<Rc<Outbox>>,
    /// Available remote resources that sent presence to the service, by bare JID, with
    /// their `<show/>` (`online` without one).
    presences: HashMap<Jid, Vec<(Jid, String)>>,
    /// Resources in `presences`.
    count: usize,
    /// ` from='<service>'`: how the service's stanzas name their sender (see
    /// [`Router::component_outbox_for`]).
    from_attr: String,
}

impl ComponentLink {
    /// The remote resources of `bare` known to be available.
    pub(super) fn presences(&self, bare: &Jid) -> Vec<(Jid, String)> {
        self.presences.get(bare).cloned().unwrap_or_default()
    }
}

impl Router {
    /// The component connection's outbox, for a JID outside our domain (component mode,
    /// while connected).
    pub(super) fn component_outbox(&self, jid: &Jid) -> Option<&Rc<Outbox>> {
        if jid.domain() == self.config.domain || self.is_pubsub(jid) {
            return None;
        }
        self.component.outbox.as_ref()
    }

    /// The component connection was accepted by the server: remote JIDs are reached
    /// through `outbox` until [`Router::component_detach`].
    pub fn component_attach(&mut self, outbox: Rc<Outbox>) {
        self.component.outbox = Some(outbox);
        // The service's JID is a validated domain: written as is (nothing to escape).
        self.component.from_attr = format!(" from='{}'", self.pubsub.service.as_str());
    }

    /// The component connection's outbox for a serialised stanza to remote `to`, if the
    /// stanza is the service's (its start tag says `from` the service): the server
    /// refuses any other sender.
    pub(super) fn component_outbox_for(&self, to: &Jid, s: &Stanza) -> Option<&Rc<Outbox>> {
        let ob = self.component_outbox(to)?;
        let head = s.head();
        let tag = &head[..head.find('>').unwrap_or(head.len())];
        if tag.contains(self.component.from_attr.as_str()) {
            Some(ob)
        } else {
            tracing::debug!(%to, "component: not the service's stanza; not sent to a remote JID");
            None
        }
    }

    /// The component connection's outbox for a reply (an element) to remote `to`, if it is
    /// from the component's domain (the reply to a stanza that came through it).
    pub(super) fn component_reply_outbox(&self, reply: &Element, to: &Jid) -> Option<&Rc<Outbox>> {
        let from = reply.attr("from").and_then(|f| Jid::parse(f).ok())?;
        if from.domain() != self.pubsub.service.domain() {
            return None;
        }
        self.component_outbox(to)
    }

    /// The component connection ended: remote JIDs are unreachable, and the presences
    /// learnt through it are forgotten (users are unavailable to presence-based delivery
    /// until they send presence again). The engine is not told that they went
    /// unavailable: a dropped link must not end temporary subscriptions or run
    /// `purge_offline`.
    pub fn component_detach(&mut self) {
        self.component.outbox = None;
        self.component.presences.clear();
        self.component.count = 0;
    }

    /// A stanza from the component connection (its namespace already read as
    /// `jabber:client`). Its `from` is trusted as the server asserts it, except that it
    /// may not claim our own domain or the service.
    pub fn route_component(&mut self, stanza: Element) {
        let Some(from) = stanza.attr("from").and_then(|f| Jid::parse(f).ok()) else {
            tracing::debug!(name = %stanza.name, "component: stanza without a valid from dropped");
            return;
        };
        if from.domain() == self.config.domain || self.is_pubsub(&from) {
            tracing::warn!(%from, "component: the server sent a stanza from our own domain; dropped");
            return;
        }
        let to_ok = stanza
            .attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .is_some_and(|t| self.is_pubsub(&t));
        if !to_ok {
            // Only the service lives at the component's JID.
            self.bounce(&stanza, StanzaError::new(Condition::ServiceUnavailable));
            return;
        }
        match crate::stanza::Stanza::parse(stanza) {
            Err(rejected) => self.bounce(&rejected.stanza, rejected.error),
            Ok(crate::stanza::Stanza::Iq(iq)) => self.pubsub_iq(&from, &iq),
            Ok(crate::stanza::Stanza::Message(msg)) => self.route_message(&from, msg),
            Ok(crate::stanza::Stanza::Presence(p)) => self.component_presence(&from, p),
        }
    }

    /// Presence to the service: availability is remembered for presence-based delivery;
    /// subscription requests are approved (and asked back), probes answered.
    fn component_presence(&mut self, from: &Jid, p: Presence) {
        match p.ty() {
            PresenceType::Available => {
                let show = p.child("show", NS_CLIENT).map(|s| s.text());
                let show = show.as_deref().map(str::trim).filter(|s| !s.is_empty());
                let show = show.unwrap_or("online").to_owned();
                let bare = from.bare();
                let max = self.config.limits.component_max_presences;
                let link = &mut self.component;
                if let Some(v) = link.presences.get_mut(&bare) {
                    if let Some(e) = v.iter_mut().find(|(j, _)| j == from) {
                        e.1 = show;
                        return;
                    }
                }
                if link.count >= max {
                    tracing::warn!(%from, max, "component: presence not recorded: limits.component_max_presences reached");
                    return;
                }
                link.presences
                    .entry(bare)
                    .or_default()
                    .push((from.clone(), show));
                link.count += 1;
            }
            PresenceType::Unavailable => {
                let bare = from.bare();
                let link = &mut self.component;
                let mut removed = false;
                if let Some(v) = link.presences.get_mut(&bare) {
                    let before = v.len();
                    // An unavailable presence from the bare JID ends all its resources.
                    v.retain(|(j, _)| !from.is_bare() && j != from);
                    removed = v.len() < before;
                    link.count -= before - v.len();
                    if v.is_empty() {
                        link.presences.remove(&bare);
                    }
                }
                if removed || from.is_full() {
                    self.pubsub_unavailable(from);
                }
            }
            PresenceType::Subscribe => {
                // Approved, and asked back: once the user approves in turn, the server
                // forwards the user's presence (RFC 6121 §3), which presence-based
                // delivery needs.
                self.component_send_presence(from, Some("subscribed"));
                self.component_send_presence(from, None);
                self.component_send_presence(from, Some("subscribe"));
            }
            PresenceType::Unsubscribe => self.component_send_presence(from, Some("unsubscribed")),
            PresenceType::Probe => self.component_send_presence(from, None),
            _ => {}
        }
    }

    /// What the pub-sub engine's `Directory` says of `bare`'s available resources (tests).
    #[cfg(test)]
    pub(crate) fn directory_presences(&mut self, bare: &Jid) -> Vec<(Jid, String)> {
        let (_, dir) = self.engine_and_dir();
        crate::pubsub::Directory::presences(&dir, bare)
    }

    /// Sends a presence of the service (`ty`, or available) to `to` over the connection.
    fn component_send_presence(&self, to: &Jid, ty: Option<&str>) {
        let Some(ob) = self.component_outbox(to) else {
            return;
        };
        let s = crate::xml::build(|w| {
            w.start("presence")
                .attr("from", self.pubsub.service.as_str())
                .attr("to", to.bare().as_str())
                .attr_opt("type", ty)
                .end();
        });
        self.send(ob, &Rc::<str>::from(s));
    }
}
