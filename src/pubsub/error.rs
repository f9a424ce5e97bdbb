//! Every way a pub-sub request can fail, and the one mapping of those failures to the
//! wire: a stanza error condition plus, where XEP-0060 defines one, an application condition
//! in the `http://jabber.org/protocol/pubsub#errors` namespace.

use std::fmt;

use crate::proto::{Condition, ErrorType, StanzaError};
use crate::xml::Element;

use super::NS_PUBSUB_ERRORS;
use super::dag::DagError;

/// A failed pub-sub request. Each variant names the XEP-0060 section that defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubSubError {
    /// The node does not exist (§6.1.3.12, §7.1.3.3, §8.2.3.3 …): `item-not-found`.
    NodeNotFound,
    /// A requested item does not exist (§7.2.3.3): `item-not-found`.
    ItemNotFound,
    /// A node with that id exists (§8.1.3): `conflict`.
    NodeExists,
    /// The requester lacks the affiliation the action needs (§7.1.3.1, §8.x): `forbidden`.
    Forbidden(&'static str),
    /// The requester is an outcast (§6.1.3.8): `forbidden`.
    Outcast,
    /// The request needs a node id (§8.2.3.4): `bad-request` + `nodeid-required`.
    NodeIdRequired,
    /// The retract names no item (§7.2.3.4): `bad-request` + `item-required`.
    ItemRequired,
    /// A publish to a node that needs a payload has none (§7.1.3.6): `bad-request` +
    /// `payload-required`.
    PayloadRequired,
    /// More than one payload element (§7.1.3.5): `bad-request` + `invalid-payload`.
    InvalidPayload,
    /// A notification-only, transient node got an item (§7.1.3.6): `bad-request` +
    /// `item-forbidden`.
    ItemForbidden,
    /// The payload is larger than `max_payload_size` (§7.1.3.4): `not-acceptable` +
    /// `payload-too-big`.
    PayloadTooBig,
    /// The `jid` does not match the requester's bare JID (§6.1.3.1, §6.2.3.3):
    /// `bad-request` + `invalid-jid`.
    InvalidJid,
    /// The entity is not subscribed (§6.2.3.2, §6.3.4.2): `unexpected-request` +
    /// `not-subscribed`.
    NotSubscribed,
    /// Publish-options precondition failed (§7.1.5): `conflict` + `precondition-not-met`.
    PreconditionNotMet(String),
    /// Presence access model, no presence subscription (§6.1.3.2): `not-authorized` +
    /// `presence-subscription-required`.
    PresenceSubscriptionRequired,
    /// Roster access model, not in an allowed group (§6.1.3.3): `not-authorized` +
    /// `not-in-roster-group`.
    NotInRosterGroup,
    /// Whitelist access model, not on the list (§6.1.3.4): `not-allowed` + `closed-node`.
    ClosedNode,
    /// A feature this service does not implement (§6.1.3.x …): `feature-not-implemented` +
    /// `unsupported feature='…'`.
    Unsupported(&'static str),
    /// A configuration value this service does not support, e.g. an access model
    /// (§8.2.3.x): `not-acceptable` + `unsupported feature='…'`.
    UnsupportedValue(&'static str),
    /// A data form that cannot be accepted (§8.2.5.3): `not-acceptable`, with the reason.
    BadForm(String),
    /// Invalid subscription options (§6.3.5): `bad-request` + `invalid-options`.
    InvalidOptions(String),
    /// A malformed request: `bad-request`, with the reason.
    BadRequest(&'static str),
    /// `store.max_bytes` is reached under the `reject` policy, or the item alone is
    /// larger than the budget: `resource-constraint` (wait).
    StoreFull,
    /// The node is full and `publish_node_full` is `reject`: `conflict` + `node-full`.
    NodeFull,
    /// Too many nodes (`limits.pubsub_max_nodes`): `not-allowed` + `max-nodes-exceeded`.
    MaxNodes,
    /// Too many subscriptions on the node (§6.1.3.10): `policy-violation` (wait) +
    /// `too-many-subscriptions`.
    TooManySubscriptions,
    /// The node does not accept subscriptions (`pubsub#subscribe = 0`): `not-allowed`.
    SubscriptionsDisabled,
    /// The store failed: `internal-server-error` (details are logged, not sent).
    Internal,
    /// Too many changes are waiting for the disk (the group commit's bounds):
    /// `resource-constraint` (wait); retrying later works.
    Backlog,
    /// Authorize access model: the requester has no approved subscription (§6.5.9.5):
    /// `not-authorized` + `not-subscribed`. A subscribe request turns it into a pending
    /// subscription instead.
    AuthorizationRequired,
    /// The requester's subscription awaits approval (§6.1.3.7): `not-authorized` +
    /// `pending-subscription`.
    PendingSubscription,
    /// The entity has several subscriptions and named none (§6.2.3.1): `bad-request` +
    /// `subid-required`.
    SubIdRequired,
    /// The SubID is not one of the entity's (§6.2.3.5): `not-acceptable` + `invalid-subid`.
    InvalidSubId,
    /// The request names no subscriber JID (§6.3.4.3): `bad-request` + `jid-required`.
    JidRequired,
    /// A change of the collection graph was refused (XEP-0248).
    Dag(DagError),
    /// A second subscription of the same type to one collection (XEP-0248: `conflict`).
    CollectionSubscribed,
}

impl fmt::Display for PubSubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeNotFound => f.write_str("no such node"),
            Self::ItemNotFound => f.write_str("no such item"),
            Self::NodeExists => f.write_str("a node with that id exists"),
            Self::Forbidden(why) => write!(f, "forbidden: {why}"),
            Self::Outcast => f.write_str("you are an outcast of this node"),
            Self::NodeIdRequired => f.write_str("a node id is required"),
            Self::ItemRequired => f.write_str("an item id is required"),
            Self::PayloadRequired => f.write_str("this node needs a payload"),
            Self::InvalidPayload => f.write_str("an item carries exactly one payload element"),
            Self::ItemForbidden => f.write_str("this node does not take items"),
            Self::PayloadTooBig => f.write_str("the payload is too big"),
            Self::InvalidJid => f.write_str("the jid does not match your JID"),
            Self::NotSubscribed => f.write_str("not subscribed"),
            Self::PreconditionNotMet(why) => write!(f, "precondition not met: {why}"),
            Self::PresenceSubscriptionRequired => {
                f.write_str("a presence subscription to an owner is required")
            }
            Self::NotInRosterGroup => f.write_str("not in an allowed roster group"),
            Self::ClosedNode => f.write_str("the node is on a whitelist"),
            Self::Unsupported(feat) => write!(f, "unsupported feature {feat}"),
            Self::UnsupportedValue(feat) => write!(f, "unsupported value ({feat})"),
            Self::BadForm(why) => write!(f, "form not acceptable: {why}"),
            Self::InvalidOptions(why) => write!(f, "invalid options: {why}"),
            Self::BadRequest(why) => write!(f, "bad request: {why}"),
            Self::NodeFull => f.write_str("the node is full"),
            Self::StoreFull => f.write_str("the item store is full"),
            Self::MaxNodes => f.write_str("the service has too many nodes"),
            Self::TooManySubscriptions => f.write_str("the node has too many subscriptions"),
            Self::SubscriptionsDisabled => f.write_str("the node does not allow subscriptions"),
            Self::Internal => f.write_str("internal error"),
            Self::Backlog => f.write_str("too many changes are waiting for the disk"),
            Self::AuthorizationRequired => {
                f.write_str("an owner must approve your subscription first")
            }
            Self::PendingSubscription => f.write_str("your subscription awaits approval"),
            Self::SubIdRequired => f.write_str("you have several subscriptions: name a subid"),
            Self::InvalidSubId => f.write_str("no subscription with that subid"),
            Self::JidRequired => f.write_str("the request needs a jid"),
            Self::Dag(e) => write!(f, "{e}"),
            Self::CollectionSubscribed => {
                f.write_str("already subscribed to this collection with that subscription type")
            }
        }
    }
}

impl std::error::Error for PubSubError {}

fn app(name: &str) -> Option<Box<Element>> {
    Some(Box::new(Element::new(name, NS_PUBSUB_ERRORS)))
}

fn unsupported(feature: &str) -> Option<Box<Element>> {
    Some(Box::new(
        Element::new("unsupported", NS_PUBSUB_ERRORS).with_attr("feature", feature),
    ))
}

impl PubSubError {
    /// The stanza error sent for this failure: condition, app condition and text.
    pub fn to_stanza_error(&self) -> StanzaError {
        use Condition as C;
        let (cond, app) = match self {
            Self::NodeNotFound | Self::ItemNotFound => (C::ItemNotFound, None),
            Self::NodeExists => (C::Conflict, None),
            Self::Forbidden(_) | Self::Outcast => (C::Forbidden, None),
            Self::NodeIdRequired => (C::BadRequest, app("nodeid-required")),
            Self::ItemRequired => (C::BadRequest, app("item-required")),
            Self::PayloadRequired => (C::BadRequest, app("payload-required")),
            Self::InvalidPayload => (C::BadRequest, app("invalid-payload")),
            Self::ItemForbidden => (C::BadRequest, app("item-forbidden")),
            Self::PayloadTooBig => (C::NotAcceptable, app("payload-too-big")),
            Self::InvalidJid => (C::BadRequest, app("invalid-jid")),
            Self::NotSubscribed => (C::UnexpectedRequest, app("not-subscribed")),
            Self::PreconditionNotMet(_) => (C::Conflict, app("precondition-not-met")),
            Self::PresenceSubscriptionRequired => {
                (C::NotAuthorized, app("presence-subscription-required"))
            }
            Self::NotInRosterGroup => (C::NotAuthorized, app("not-in-roster-group")),
            Self::ClosedNode => (C::NotAllowed, app("closed-node")),
            Self::Unsupported(f) => (C::FeatureNotImplemented, unsupported(f)),
            Self::UnsupportedValue(f) => (C::NotAcceptable, unsupported(f)),
            Self::BadForm(_) => (C::NotAcceptable, None),
            Self::InvalidOptions(_) => (C::BadRequest, app("invalid-options")),
            Self::BadRequest(_) => (C::BadRequest, None),
            Self::NodeFull => (C::Conflict, app("node-full")),
            Self::StoreFull => (C::ResourceConstraint, None),
            Self::MaxNodes => (C::NotAllowed, app("max-nodes-exceeded")),
            Self::TooManySubscriptions => (C::PolicyViolation, app("too-many-subscriptions")),
            Self::SubscriptionsDisabled => (C::NotAllowed, None),
            Self::Internal => (C::InternalServerError, None),
            Self::Backlog => (C::ResourceConstraint, None),
            Self::AuthorizationRequired => (C::NotAuthorized, app("not-subscribed")),
            Self::PendingSubscription => (C::NotAuthorized, app("pending-subscription")),
            Self::SubIdRequired => (C::BadRequest, app("subid-required")),
            Self::InvalidSubId => (C::NotAcceptable, app("invalid-subid")),
            Self::JidRequired => (C::BadRequest, app("jid-required")),
            Self::CollectionSubscribed => (C::Conflict, None),
            // The conditions of XEP-0248's examples.
            Self::Dag(e) => match e {
                DagError::NotFound(_) => (C::ItemNotFound, None),
                DagError::Exists(_) => (C::Conflict, None),
                DagError::NotACollection(_)
                | DagError::CollectionToLeaf(_)
                | DagError::Cycle { .. } => (C::NotAllowed, app("invalid-options")),
                DagError::Root => (C::NotAllowed, None),
                DagError::ChildrenMax(_) | DagError::TooManyNodes => {
                    (C::NotAllowed, app("max-nodes-exceeded"))
                }
                DagError::TooManyParents(_) | DagError::InvalidPath(_) => (C::NotAcceptable, None),
                DagError::Forbidden { .. } => (C::Forbidden, None),
                DagError::NotAssociated { .. } => (C::BadRequest, None),
            },
        };
        let mut e = StanzaError::new(cond).with_text(self.to_string());
        // The error types of XEP-0060's examples where they differ from RFC 6120's.
        match self {
            Self::NotSubscribed => e.kind = ErrorType::Cancel,
            Self::TooManySubscriptions => e.kind = ErrorType::Wait,
            _ => {}
        }
        e.app = app;
        e
    }
}
