//! Typed stanzas (RFC 6120 §8): the three kinds a bound session sends, checked once where
//! they enter the router, so that handlers match on types instead of attribute strings.
//!
//! This module owns the parse from an [`Element`] to an [`Iq`], a [`Message`] or a
//! [`Presence`]: the `to` address parsed, the `type` mapped to an enum, and for an IQ the
//! RFC 6120 §8.2.3 rules (an `id`, a known `type`, exactly one payload in a request). A
//! stanza that breaks them comes back as a [`Rejected`] with the error to bounce. Each typed
//! stanza still dereferences to its element, for the handlers that read its payload.

use std::ops::Deref;

use crate::jid::Jid;
use crate::proto::{Condition, StanzaError};
use crate::xml::Element;

/// The `type` of an IQ (RFC 6120 §8.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    /// A request for information.
    Get,
    /// A request that changes something.
    Set,
    /// A successful answer.
    Result,
    /// A failed answer.
    Error,
}

impl IqType {
    /// The type named by the attribute value; `None` for anything else.
    pub fn parse(value: &str) -> Option<IqType> {
        match value {
            "get" => Some(IqType::Get),
            "set" => Some(IqType::Set),
            "result" => Some(IqType::Result),
            "error" => Some(IqType::Error),
            _ => None,
        }
    }

    /// `get` or `set`: a request that must be answered.
    pub fn is_request(self) -> bool {
        matches!(self, IqType::Get | IqType::Set)
    }
}

/// The `type` of a message (RFC 6121 §5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// `normal`, also the type of a message without the attribute.
    Normal,
    /// `chat`.
    Chat,
    /// `groupchat`.
    Groupchat,
    /// `headline`: never answered with an error, never stored.
    Headline,
    /// `error`: never answered with an error.
    Error,
    /// A value RFC 6121 does not define.
    Unknown,
}

impl MessageType {
    fn parse(value: Option<&str>) -> MessageType {
        match value {
            None | Some("normal") => MessageType::Normal,
            Some("chat") => MessageType::Chat,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            Some("error") => MessageType::Error,
            Some(_) => MessageType::Unknown,
        }
    }
}

/// The `type` of a presence (RFC 6121 §4.7.1 and §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceType {
    /// No `type` attribute: the sender is available.
    Available,
    /// `unavailable`.
    Unavailable,
    /// `subscribe`, a subscription request.
    Subscribe,
    /// `subscribed`, a subscription approval.
    Subscribed,
    /// `unsubscribe`.
    Unsubscribe,
    /// `unsubscribed`, a subscription denial or cancellation.
    Unsubscribed,
    /// `probe`, a request for the current presence.
    Probe,
    /// `error`.
    Error,
    /// A value RFC 6121 does not define.
    Unknown,
}

impl PresenceType {
    fn parse(value: Option<&str>) -> PresenceType {
        match value {
            None | Some("available") => PresenceType::Available,
            Some("unavailable") => PresenceType::Unavailable,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some("probe") => PresenceType::Probe,
            Some("error") => PresenceType::Error,
            Some(_) => PresenceType::Unknown,
        }
    }

    /// The attribute value of a subscription type (`subscribe`, `subscribed`,
    /// `unsubscribe`, `unsubscribed`); `None` for the others.
    pub fn subscription(self) -> Option<&'static str> {
        match self {
            PresenceType::Subscribe => Some("subscribe"),
            PresenceType::Subscribed => Some("subscribed"),
            PresenceType::Unsubscribe => Some("unsubscribe"),
            PresenceType::Unsubscribed => Some("unsubscribed"),
            _ => None,
        }
    }
}

/// A stanza with its `type` (`T`) and addressee parsed: an [`Iq`], a [`Message`] or a
/// [`Presence`].
#[derive(Clone, Debug)]
pub struct Typed<T> {
    el: Element,
    ty: T,
    to: Option<Jid>,
}

impl<T: Copy> Typed<T> {
    /// The stanza's type.
    pub fn ty(&self) -> T {
        self.ty
    }

    /// The addressee, if the stanza names one (`None` for a broadcast presence).
    pub fn to(&self) -> Option<&Jid> {
        self.to.as_ref()
    }

    /// The element, as received.
    pub fn element(&self) -> &Element {
        &self.el
    }

    /// The element, to keep or forward.
    pub fn into_element(self) -> Element {
        self.el
    }
}

impl<T> Deref for Typed<T> {
    type Target = Element;
    fn deref(&self) -> &Element {
        &self.el
    }
}

/// An IQ whose `id`, `type` and (for a request) single payload are checked.
pub type Iq = Typed<IqType>;

impl Iq {
    /// The `id` attribute (present: checked at parse).
    pub fn id(&self) -> &str {
        self.el.attr("id").unwrap_or("")
    }

    /// The one payload of a request (`None` for a result without one).
    pub fn payload(&self) -> Option<&Element> {
        self.el.elements().next()
    }
}

/// A message with its type and addressee parsed.
pub type Message = Typed<MessageType>;

/// A presence with its type and addressee parsed.
pub type Presence = Typed<PresenceType>;

/// One stanza from a bound session.
#[derive(Clone, Debug)]
pub enum Stanza {
    /// `<iq/>`.
    Iq(Iq),
    /// `<message/>`.
    Message(Message),
    /// `<presence/>` (and, as RFC 6120 leaves nothing else for a bound session, any other
    /// element name the session let through).
    Presence(Presence),
}

/// A stanza that breaks RFC 6120 §8: the element and the error to answer it with (the
/// caller bounces it unless it is itself of type `error`).
#[derive(Debug)]
pub struct Rejected {
    /// The stanza as received.
    pub stanza: Element,
    /// What is wrong with it.
    pub error: StanzaError,
}

impl Stanza {
    /// Checks and types `el`, a stanza from a bound session.
    ///
    /// # Errors
    ///
    /// A malformed `to` (`jid-malformed`); an IQ without an `id` or a known `type`, or a
    /// request without exactly one payload (`bad-request`).
    pub fn parse(el: Element) -> Result<Stanza, Box<Rejected>> {
        let to = match el.attr("to").map(Jid::parse) {
            None => None,
            Some(Ok(j)) => Some(j),
            Some(Err(_)) => {
                return Err(Box::new(Rejected {
                    stanza: el,
                    error: StanzaError::new(Condition::JidMalformed),
                }));
            }
        };
        match el.name.as_str() {
            "iq" => {
                let Some(ty) = el
                    .attr("type")
                    .and_then(IqType::parse)
                    .filter(|_| el.attr("id").is_some())
                else {
                    return Err(Box::new(Rejected {
                        stanza: el,
                        error: StanzaError::new(Condition::BadRequest)
                            .with_text("iq needs an id and a valid type"),
                    }));
                };
                if ty.is_request() && el.elements().count() != 1 {
                    // RFC 6120 §8.2.3: exactly one payload.
                    return Err(Box::new(Rejected {
                        stanza: el,
                        error: StanzaError::new(Condition::BadRequest)
                            .with_text("an iq get/set carries exactly one child"),
                    }));
                }
                Ok(Stanza::Iq(Iq { el, ty, to }))
            }
            "message" => {
                let ty = MessageType::parse(el.attr("type"));
                Ok(Stanza::Message(Message { el, ty, to }))
            }
            _ => {
                let ty = PresenceType::parse(el.attr("type"));
                Ok(Stanza::Presence(Presence { el, ty, to }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<Stanza, Box<Rejected>> {
        Stanza::parse(Element::parse(xml).expect("test xml"))
    }

    fn rejected(xml: &str) -> Condition {
        match parse(xml) {
            Err(r) => r.error.condition,
            Ok(s) => panic!("accepted: {s:?}"),
        }
    }

    #[test]
    fn iq_rules_of_rfc6120_8_2_3() {
        let Ok(Stanza::Iq(iq)) =
            parse("<iq xmlns='jabber:client' type='get' id='a' to='x@y/z'><q xmlns='urn:q'/></iq>")
        else {
            panic!("a valid iq");
        };
        assert_eq!(iq.ty(), IqType::Get);
        assert_eq!(iq.id(), "a");
        assert_eq!(iq.to().map(Jid::as_str), Some("x@y/z"));
        assert_eq!(iq.payload().map(|p| p.name.as_str()), Some("q"));
        assert!(matches!(
            parse("<iq xmlns='jabber:client' type='result' id='a'/>"),
            Ok(Stanza::Iq(i)) if i.ty() == IqType::Result && i.payload().is_none()
        ));
        for bad in [
            "<iq xmlns='jabber:client' type='get'><q xmlns='urn:q'/></iq>",
            "<iq xmlns='jabber:client' type='fetch' id='a'><q xmlns='urn:q'/></iq>",
            "<iq xmlns='jabber:client' id='a'><q xmlns='urn:q'/></iq>",
            "<iq xmlns='jabber:client' type='set' id='a'/>",
            "<iq xmlns='jabber:client' type='set' id='a'><q xmlns='urn:q'/><r xmlns='urn:r'/></iq>",
        ] {
            assert_eq!(rejected(bad), Condition::BadRequest, "{bad}");
        }
        assert_eq!(
            rejected("<iq xmlns='jabber:client' type='get' id='a' to='@'><q xmlns='urn:q'/></iq>"),
            Condition::JidMalformed
        );
    }

    #[test]
    fn message_and_presence_types() {
        let ty = |xml: &str| match parse(xml) {
            Ok(Stanza::Message(m)) => format!("{:?}", m.ty()),
            Ok(Stanza::Presence(p)) => format!("{:?}", p.ty()),
            other => panic!("{other:?}"),
        };
        assert_eq!(ty("<message xmlns='jabber:client'/>"), "Normal");
        assert_eq!(ty("<message xmlns='jabber:client' type='chat'/>"), "Chat");
        assert_eq!(
            ty("<message xmlns='jabber:client' type='headline'/>"),
            "Headline"
        );
        assert_eq!(ty("<message xmlns='jabber:client' type='x'/>"), "Unknown");
        assert_eq!(ty("<presence xmlns='jabber:client'/>"), "Available");
        assert_eq!(
            ty("<presence xmlns='jabber:client' type='probe'/>"),
            "Probe"
        );
        assert_eq!(ty("<presence xmlns='jabber:client' type='x'/>"), "Unknown");
        assert_eq!(PresenceType::Subscribed.subscription(), Some("subscribed"));
        assert_eq!(PresenceType::Probe.subscription(), None);
    }
}
