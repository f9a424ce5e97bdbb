//! Routing messages (RFC 6121 §8.5.2, §8.5.3): to full JIDs, to bare JIDs by priority,
//! and to the pub-sub service.

use super::*;

impl Router {
    pub(super) fn route_message(&mut self, from: &Jid, to: Option<Jid>, msg: Element) {
        let to = to.unwrap_or_else(|| from.bare());
        let ty = msg.attr("type").unwrap_or("normal").to_owned();
        if self.is_pubsub(&to) {
            // The service takes approval forms (XEP-0060 §8.6); errors (bounced
            // notifications) are dropped; anything else bounces.
            if msg.child("x", "jabber:x:data").is_some() && ty != "error" {
                if let Some(mut engine) = self.pubsub.take() {
                    let out = engine.handle_message(&*self.store, from, &msg, self.now_ms());
                    self.pubsub = Some(engine);
                    self.pubsub_deliver(out);
                } else {
                    self.bounce(&msg, crate::pubsub::unavailable_error(&*self.store));
                }
            } else if ty != "error" && ty != "headline" {
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
                if ty != "error" && ty != "headline" {
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
                    match ty.as_str() {
                        "normal" | "chat" | "headline" => {}
                        "error" => return,
                        _ => {
                            self.bounce(&msg, StanzaError::new(Condition::ServiceUnavailable));
                            return;
                        }
                    }
                }
                self.message_to_bare(&user, &ty, &msg);
            }
        }
    }

    /// RFC 6121 §8.5.2: a message to a bare JID of ours.
    fn message_to_bare(&self, user: &str, ty: &str, msg: &Element) {
        if ty == "error" {
            return;
        }
        if ty == "groupchat" || !self.account_exists(user) {
            if ty != "headline" {
                self.bounce(msg, StanzaError::new(Condition::ServiceUnavailable));
            }
            return;
        }
        let candidates: Vec<&Resource> = self
            .accounts
            .get(user)
            .map(|a| {
                a.resources
                    .iter()
                    .filter(|r| r.presence.is_some() && r.priority >= 0)
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            // §8.5.2.2: no offline storage here; tell the sender instead of losing it silently.
            if ty != "headline" {
                self.bounce(
                    msg,
                    StanzaError::new(Condition::ServiceUnavailable)
                        .with_text("the recipient is offline"),
                );
            }
            return;
        }
        let s: Rc<str> = Rc::from(msg.to_string_in_stream());
        if ty == "headline" {
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
