//! Routing messages (RFC 6121 §8.5.2, §8.5.3): to full JIDs, to bare JIDs by priority,
//! and to the pub-sub service.

use super::*;

impl Router {
    pub(super) fn route_message(&mut self, from: &Jid, msg: Message) {
        let to = msg.to().cloned().unwrap_or_else(|| from.bare());
        let ty = msg.ty();
        if self.is_pubsub(&to) {
            // The service takes approval forms (XEP-0060 §8.6); errors (bounced
            // notifications) are dropped; anything else bounces.
            if msg.child("x", "jabber:x:data").is_some() && ty != MessageType::Error {
                let now = self.now_ms();
                if let (Some(engine), dir) = self.engine_and_dir() {
                    let out = engine.handle_message(&dir, dir.store, from, &msg, now);
                    self.pubsub_deliver(out);
                } else {
                    self.bounce(&msg, crate::pubsub::unavailable_error(&*self.store));
                }
            } else if !matches!(ty, MessageType::Error | MessageType::Headline) {
                self.bounce(&msg, StanzaError::new(Condition::ServiceUnavailable));
            }
            return;
        }
        match self.classify(&to) {
            Target::Remote => self.bounce(
                &msg,
                StanzaError::new(Condition::RemoteServerNotFound)
                    .with_text("no server-to-server support"),
            ),
            Target::Domain => {
                if !matches!(ty, MessageType::Error | MessageType::Headline) {
                    self.bounce(&msg, StanzaError::new(Condition::ServiceUnavailable));
                }
            }
            Target::Local(user) => {
                if to.is_full() {
                    if let Some(ob) = self.resource_outbox(&to) {
                        self.send(ob, &Rc::from(msg.to_string_in_stream()));
                        return;
                    }
                    // RFC 6121 §8.5.3.2.1: no such resource.
                    match ty {
                        MessageType::Normal | MessageType::Chat | MessageType::Headline => {}
                        MessageType::Error => return,
                        MessageType::Groupchat | MessageType::Unknown => {
                            self.bounce(&msg, StanzaError::new(Condition::ServiceUnavailable));
                            return;
                        }
                    }
                }
                self.message_to_bare(&user, ty, &msg);
            }
        }
    }

    /// RFC 6121 §8.5.2: a message to a bare JID of ours (or to a full JID whose resource
    /// is gone, §8.5.3.2.1): to the available resources by priority, else to offline
    /// storage ([`Router::offline_or_bounce`]).
    pub(super) fn message_to_bare(&mut self, user: &str, ty: MessageType, msg: &Element) {
        if ty == MessageType::Error {
            return;
        }
        if ty == MessageType::Groupchat || !self.account_exists(user) {
            if ty != MessageType::Headline {
                self.bounce(msg, StanzaError::new(Condition::ServiceUnavailable));
            }
            return;
        }
        let candidates: Vec<&Resource> = self
            .im
            .accounts
            .get(user)
            .map(|a| {
                a.resources
                    .iter()
                    .filter(|r| {
                        r.presence.is_some() && r.priority >= 0 && !r.outbox.sm_overflowed()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            // §8.5.2.2: offline storage (XEP-0160), or the sender is told.
            self.offline_or_bounce(user, ty, msg);
            return;
        }
        let s: Rc<str> = Rc::from(msg.to_string_in_stream());
        if ty == MessageType::Headline {
            for r in candidates {
                self.send(&r.outbox, &s);
            }
        } else {
            // normal and chat: the highest-priority resources.
            let top = candidates.iter().map(|r| r.priority).max().unwrap_or(0);
            for r in candidates.iter().filter(|r| r.priority == top) {
                self.send(&r.outbox, &s);
            }
        }
    }
}
