//! IQs the server answers itself (RFC 6120 §8.2.3, RFC 6121 §8.5): disco, ping and
//! version for its own JID, and on an account's behalf for a bare JID.

use super::*;

impl Router {
    /// IQs to the server's own JID.
    pub(super) fn server_iq(&self, from: &Jid, iq: &Iq) {
        let Some(p) = iq.payload() else {
            return;
        };
        let get = iq.ty() == IqType::Get;
        let reply = if get && p.is("query", NS_DISCO_INFO) && p.attr("node").is_none() {
            let mut q = Element::new("query", NS_DISCO_INFO).with_child(
                Element::new("identity", NS_DISCO_INFO)
                    .with_attr("category", "server")
                    .with_attr("type", "im")
                    .with_attr("name", "Kinglet"),
            );
            for f in SERVER_FEATURES {
                q.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", *f));
            }
            Some(q)
        } else if get && p.is("query", NS_DISCO_ITEMS) && p.attr("node").is_none() {
            // Listed even while a storage fault keeps it from answering normally.
            let q = Element::new("query", NS_DISCO_ITEMS).with_child(
                Element::new("item", NS_DISCO_ITEMS)
                    .with_attr("jid", self.pubsub.service.as_str())
                    .with_attr("name", "Publish-subscribe service"),
            );
            Some(q)
        } else if get && p.is("ping", NS_PING) {
            None
        } else if get && p.is("query", NS_VERSION) {
            Some(
                Element::new("query", NS_VERSION)
                    .with_child(Element::new("name", NS_VERSION).with_text("Kinglet"))
                    .with_child(
                        Element::new("version", NS_VERSION).with_text(env!("CARGO_PKG_VERSION")),
                    ),
            )
        } else {
            self.bounce(iq, StanzaError::new(Condition::ServiceUnavailable));
            return;
        };
        let _ = from;
        self.deliver_reply(proto::iq_result(iq, reply));
    }

    /// IQs to a bare account JID, answered by the server on the account's behalf (RFC 6121 §8.5.2.1.3).
    pub(super) fn account_iq(&mut self, from: &Jid, user: &str, iq: &Iq) {
        if !self.account_exists(user) {
            self.bounce(iq, StanzaError::new(Condition::ServiceUnavailable));
            return;
        }
        let own = from.local() == Some(user);
        let Some(p) = iq.payload() else {
            return;
        };
        if p.is("query", NS_ROSTER) {
            if own {
                self.roster_transaction(from, iq, |r| r.roster_iq(from, iq, p));
            } else {
                // RFC 6121 §2.1.5: only the user may touch its roster.
                self.bounce(iq, StanzaError::new(Condition::Forbidden));
            }
            return;
        }
        let get = iq.ty() == IqType::Get;
        // XEP-0163: the account's PEP service (pub-sub requests, its nodes' disco).
        let pep = p.is("pubsub", crate::pubsub::NS_PUBSUB)
            || p.is("pubsub", crate::pubsub::NS_PUBSUB_OWNER)
            || (p.is("query", NS_DISCO_INFO) && p.attr("node").is_some())
            || p.is("query", NS_DISCO_ITEMS);
        if pep {
            self.pubsub_iq(from, iq);
            return;
        }
        if get && p.is("query", NS_DISCO_INFO) && p.attr("node").is_none() {
            let mut q = Element::new("query", NS_DISCO_INFO)
                .with_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "account")
                        .with_attr("type", "registered"),
                )
                .with_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO))
                .with_child(
                    Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_ITEMS),
                );
            {
                // XEP-0163 §6: the account is a virtual pub-sub service.
                q.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "pep"),
                );
                for f in crate::pubsub::PEP_FEATURES {
                    q.push_child(
                        Element::new("feature", NS_DISCO_INFO)
                            .with_attr("var", format!("{}#{f}", crate::pubsub::NS_PUBSUB)),
                    );
                }
            }
            self.deliver_reply(proto::iq_result(iq, Some(q)));
        } else if get && p.is("query", NS_DISCO_ITEMS) && p.attr("node").is_none() {
            self.deliver_reply(proto::iq_result(
                iq,
                Some(Element::new("query", NS_DISCO_ITEMS)),
            ));
        } else if get && p.is("ping", NS_PING) && own {
            self.deliver_reply(proto::iq_result(iq, None));
        } else {
            self.bounce(iq, StanzaError::new(Condition::ServiceUnavailable));
        }
    }
}

/// Features of the server JID: what `server_iq` answers, and XEP-0160 offline storage
/// (`router/offline.rs`).
const SERVER_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_VERSION,
    proto::FEATURE_MSGOFFLINE,
];
