//! Protocol vocabulary shared by the session and the router: namespaces (each citing its
//! spec), stream error conditions (RFC 6120 §4.9.3), stanza errors (RFC 6120 §8.3) and small
//! builders for the replies the server generates. Pure data and XML; no IO, no state.

use crate::xml::{Element, NS_CLIENT};

/// RFC 6120 §4.9.3 stream error namespace.
pub const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3 stanza error namespace.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 6120 §5 STARTTLS.
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6 SASL.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 §7 resource binding.
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 §3 session establishment (kept for old clients, advertised as optional per RFC 6121 appendix E).
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6121 §2 roster.
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// XEP-0030 service discovery, info.
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030 service discovery, items.
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199 XMPP ping.
pub const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0478 stream limits advertisement.
pub const NS_STREAM_LIMITS: &str = "urn:xmpp:stream-limits:0";
/// XEP-0092 software version.
pub const NS_VERSION: &str = "jabber:iq:version";
/// XEP-0198 stream management (version 3 of the namespace).
pub const NS_SM: &str = "urn:xmpp:sm:3";
/// XEP-0160 §5: the disco#info feature of a server that stores messages for offline
/// accounts (`msgoffline`, registered as a feature, not a namespace).
pub const FEATURE_MSGOFFLINE: &str = "msgoffline";

/// Stream error conditions of RFC 6120 §4.9.3 that this server emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCondition {
    /// §4.9.3.1
    BadFormat,
    /// §4.9.3.3 another session with the same full JID replaced this one
    Conflict,
    /// §4.9.3.4 idle timeout
    ConnectionTimeout,
    /// §4.9.3.6 `to` names a domain we do not serve
    HostUnknown,
    /// §4.9.3.9 the server failed
    InternalServerError,
    /// §4.9.3.10 `from` does not match the authenticated JID
    InvalidFrom,
    /// §4.9.3.11 wrong stream or content namespace
    InvalidNamespace,
    /// §4.9.3.12
    InvalidXml,
    /// §4.9.3.13 stanza before authentication/binding
    NotAuthorized,
    /// §4.9.3.14
    NotWellFormed,
    /// §4.9.3.15 a limit was exceeded (size, rate, slow consumer)
    PolicyViolation,
    /// §4.9.3.17 the server lacks the resources to serve the stream (for example: too much
    /// buffered by unauthenticated connections)
    ResourceConstraint,
    /// §4.9.3.18 DTD, comment, PI, entity reference
    RestrictedXml,
    /// §4.9.3.19 the server is shutting down
    SystemShutdown,
    /// §4.9.3.20 a condition named by an application-specific element (XEP-0198
    /// `handled-count-too-high`)
    UndefinedCondition,
    /// §4.9.3.21
    UnsupportedEncoding,
    /// §4.9.3.23 unknown top-level element
    UnsupportedStanzaType,
    /// §4.9.3.25 version other than 1.x
    UnsupportedVersion,
}

impl StreamCondition {
    /// The element name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFormat => "bad-format",
            Self::Conflict => "conflict",
            Self::ConnectionTimeout => "connection-timeout",
            Self::HostUnknown => "host-unknown",
            Self::InternalServerError => "internal-server-error",
            Self::InvalidFrom => "invalid-from",
            Self::InvalidNamespace => "invalid-namespace",
            Self::InvalidXml => "invalid-xml",
            Self::NotAuthorized => "not-authorized",
            Self::NotWellFormed => "not-well-formed",
            Self::PolicyViolation => "policy-violation",
            Self::ResourceConstraint => "resource-constraint",
            Self::RestrictedXml => "restricted-xml",
            Self::SystemShutdown => "system-shutdown",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnsupportedEncoding => "unsupported-encoding",
            Self::UnsupportedStanzaType => "unsupported-stanza-type",
            Self::UnsupportedVersion => "unsupported-version",
        }
    }

    /// Map an XML layer error to its condition: the one mapping of `XmlError` to the wire.
    pub fn from_xml_error(e: &crate::xml::XmlError) -> StreamCondition {
        match e.condition() {
            "restricted-xml" => Self::RestrictedXml,
            "policy-violation" => Self::PolicyViolation,
            "invalid-namespace" => Self::InvalidNamespace,
            "unsupported-encoding" => Self::UnsupportedEncoding,
            "bad-format" => Self::BadFormat,
            "invalid-xml" => Self::InvalidXml,
            _ => Self::NotWellFormed,
        }
    }
}

/// `<stream:error>` followed by the closing tag, ready to send.
pub fn stream_error_bytes(cond: StreamCondition, text: Option<&str>) -> String {
    stream_error_with(cond, text, None)
}

/// [`stream_error_bytes`] with an application-specific condition element `app` (written
/// by [`crate::xml::Writer`]) after the text (RFC 6120 §4.9.4).
pub fn stream_error_with(cond: StreamCondition, text: Option<&str>, app: Option<&str>) -> String {
    let mut s = String::with_capacity(160 + app.map_or(0, str::len));
    let mut w = crate::xml::Writer::new(&mut s);
    w.start("stream:error");
    w.start(cond.as_str()).ns(NS_STREAMS).end();
    if let Some(t) = text {
        w.start("text").ns(NS_STREAMS).text(t).end();
    }
    if let Some(a) = app {
        w.raw(crate::xml::Raw(a));
    }
    w.end().close("stream:stream");
    s
}

/// Stanza error type (RFC 6120 §8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// retry after providing credentials
    Auth,
    /// do not retry
    Cancel,
    /// proceed (warning)
    Continue,
    /// retry after changing the data
    Modify,
    /// retry after waiting
    Wait,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Cancel => "cancel",
            Self::Continue => "continue",
            Self::Modify => "modify",
            Self::Wait => "wait",
        }
    }
}

/// Stanza error conditions of RFC 6120 §8.3.3, with their usual type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// §8.3.3.1
    BadRequest,
    /// §8.3.3.2
    Conflict,
    /// §8.3.3.3
    FeatureNotImplemented,
    /// §8.3.3.4
    Forbidden,
    /// §8.3.3.6
    InternalServerError,
    /// §8.3.3.7
    ItemNotFound,
    /// §8.3.3.8
    JidMalformed,
    /// §8.3.3.9
    NotAcceptable,
    /// §8.3.3.10
    NotAllowed,
    /// §8.3.3.11
    NotAuthorized,
    /// §8.3.3.12
    PolicyViolation,
    /// §8.3.3.13
    RecipientUnavailable,
    /// §8.3.3.15
    RemoteServerNotFound,
    /// §8.3.3.17
    ResourceConstraint,
    /// §8.3.3.18
    ServiceUnavailable,
    /// §8.3.3.19
    SubscriptionRequired,
    /// §8.3.3.21
    UnexpectedRequest,
}

impl Condition {
    /// Element name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Conflict => "conflict",
            Self::FeatureNotImplemented => "feature-not-implemented",
            Self::Forbidden => "forbidden",
            Self::InternalServerError => "internal-server-error",
            Self::ItemNotFound => "item-not-found",
            Self::JidMalformed => "jid-malformed",
            Self::NotAcceptable => "not-acceptable",
            Self::NotAllowed => "not-allowed",
            Self::NotAuthorized => "not-authorized",
            Self::PolicyViolation => "policy-violation",
            Self::RecipientUnavailable => "recipient-unavailable",
            Self::RemoteServerNotFound => "remote-server-not-found",
            Self::ResourceConstraint => "resource-constraint",
            Self::ServiceUnavailable => "service-unavailable",
            Self::SubscriptionRequired => "subscription-required",
            Self::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 gives in its examples for this condition.
    pub fn default_type(self) -> ErrorType {
        match self {
            Self::BadRequest | Self::JidMalformed | Self::NotAcceptable | Self::PolicyViolation => {
                ErrorType::Modify
            }
            Self::NotAuthorized | Self::Forbidden | Self::SubscriptionRequired => ErrorType::Auth,
            Self::ResourceConstraint | Self::RecipientUnavailable | Self::UnexpectedRequest => {
                ErrorType::Wait
            }
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error: condition, type, optional text and optional application-specific condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    /// RFC 6120 defined condition.
    pub condition: Condition,
    /// Error type.
    pub kind: ErrorType,
    /// Human-readable text (English).
    pub text: Option<String>,
    /// Application-specific condition element, e.g. a `pubsub#errors` one.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    /// An error with the condition's default type.
    pub fn new(condition: Condition) -> Self {
        StanzaError {
            condition,
            kind: condition.default_type(),
            text: None,
            app: None,
        }
    }

    /// Add explanatory text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The `<error/>` element.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("error", NS_CLIENT).with_attr("type", self.kind.as_str());
        e.push_child(Element::new(self.condition.as_str(), NS_STANZAS));
        if let Some(t) = &self.text {
            e.push_child(
                Element::new("text", NS_STANZAS)
                    .with_attr("xml:lang", "en")
                    .with_text(t.clone()),
            );
        }
        if let Some(app) = &self.app {
            e.push_child((**app).clone());
        }
        e
    }
}

/// Build the error reply to `stanza` (RFC 6120 §8.3.1): same name and id, `from`/`to` swapped,
/// `type='error'`. The original payload is not echoed back (allowed by §8.3.1 and cheaper).
/// Returns `None` for stanzas of type `error`, which must never be answered with an error.
pub fn error_reply(stanza: &Element, err: &StanzaError) -> Option<Element> {
    if stanza.attr("type") == Some("error") {
        return None;
    }
    let mut reply = reply_to(stanza, &stanza.name, "error");
    reply.push_child(err.to_element());
    Some(reply)
}

/// A `<name type='ty'/>` answering `stanza`: its `id` copied, `from` and `to` swapped.
fn reply_to(stanza: &Element, name: &str, ty: &str) -> Element {
    let mut reply = Element::new(name, NS_CLIENT).with_attr("type", ty);
    for (from, to) in [("id", "id"), ("from", "to"), ("to", "from")] {
        if let Some(v) = stanza.attr(from) {
            reply.set_attr(to, v);
        }
    }
    reply
}

/// Build an IQ result for `iq` with an optional payload: `id` copied, addresses swapped.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut reply = reply_to(iq, "iq", "result");
    if let Some(p) = payload {
        reply.push_child(p);
    }
    reply
}

/// The first element child of an IQ (its payload), if any.
pub fn iq_payload(iq: &Element) -> Option<&Element> {
    iq.elements().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let iq = Element::new("iq", NS_CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "q1")
            .with_attr("from", "a@localhost/r")
            .with_attr("to", "nobody@localhost");
        let r = error_reply(&iq, &StanzaError::new(Condition::ServiceUnavailable)).expect("reply");
        assert_eq!(r.attr("to"), Some("a@localhost/r"));
        assert_eq!(r.attr("from"), Some("nobody@localhost"));
        assert_eq!(r.attr("id"), Some("q1"));
        assert_eq!(r.attr("type"), Some("error"));
        let err = r.child("error", NS_CLIENT).expect("error child");
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err.child("service-unavailable", NS_STANZAS).is_some());
    }

    #[test]
    fn never_answer_an_error_with_an_error() {
        let m = Element::new("message", NS_CLIENT).with_attr("type", "error");
        assert!(error_reply(&m, &StanzaError::new(Condition::BadRequest)).is_none());
    }

    #[test]
    fn stream_error_is_closed_and_namespaced() {
        let s = stream_error_bytes(StreamCondition::PolicyViolation, Some("a<b"));
        assert!(s.starts_with(
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        ));
        assert!(s.contains("a&lt;b"));
        assert!(s.ends_with("</stream:error></stream:stream>"));
    }
}
