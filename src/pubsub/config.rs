//! Node configuration (`pubsub#node_config`, XEP-0060 §16.4.4) and the XEP-0004 forms that
//! carry it: rendering, parsing a submitted form, and the `(var, value)` pairs the store keeps.
//!
//! Every field listed in [`FIELDS`] round-trips: what a form returns is what a submit of the
//! same values sets. A field this service does not implement is refused (never silently
//! ignored): `not-acceptable` for configuration, `precondition-not-met` for publish-options.

use crate::limits::Limits;
use crate::xml::Element;

use super::dag::{AssociationPolicy, Kind};
use super::error::PubSubError;

/// XEP-0004 data forms.
pub const NS_DATA: &str = "jabber:x:data";
/// `FORM_TYPE` of node configuration forms.
pub const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// `FORM_TYPE` of publish-options forms.
pub const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// `FORM_TYPE` of the node meta-data form.
pub const FORM_META_DATA: &str = "http://jabber.org/protocol/pubsub#meta-data";
/// `FORM_TYPE` of subscription options forms.
pub const FORM_SUBSCRIBE_OPTIONS: &str = "http://jabber.org/protocol/pubsub#subscribe_options";

/// `as_str` and `parse` of a form-value enum, from one table of variant → value; `parse`
/// refuses anything else with `unknown {what} "…"`.
macro_rules! form_values {
    ($ty:ident, $what:literal, $($variant:ident => $value:literal,)+) => {
        impl $ty {
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
            fn parse(s: &str) -> Result<Self, PubSubError> {
                match s {
                    $($value => Ok(Self::$variant),)+
                    _ => Err(PubSubError::BadForm(format!(
                        concat!("unknown ", $what, " {:?}"),
                        s
                    ))),
                }
            }
        }
    };
}

/// Who may subscribe and retrieve items (§4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessModel {
    /// Anyone (except outcasts).
    Open,
    /// Entities with a presence subscription (`from`/`both`) to an owner.
    Presence,
    /// Entities in one of `roster_groups_allowed` of an owner's roster.
    Roster,
    /// Only members, publishers and owners.
    Whitelist,
    /// Anyone may ask; an owner approves each subscription (§4.5, §8.6).
    Authorize,
}

form_values! {
    AccessModel, "access model",
    Open => "open",
    Presence => "presence",
    Roster => "roster",
    Whitelist => "whitelist",
    Authorize => "authorize",
}

/// Who may publish (§16.4.4 `pubsub#publish_model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishModel {
    /// Owners and publishers (and publish-only).
    Publishers,
    /// Also subscribers.
    Subscribers,
    /// Anyone.
    Open,
}

form_values! {
    PublishModel, "publish model",
    Publishers => "publishers",
    Subscribers => "subscribers",
    Open => "open",
}

/// When the last published item is sent (§16.4.4 `pubsub#send_last_published_item`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLast {
    /// Never.
    Never,
    /// When an entity subscribes.
    OnSub,
    /// When an entity subscribes and when a subscriber sends initial presence.
    OnSubAndPresence,
}

form_values! {
    SendLast, "send_last_published_item",
    Never => "never",
    OnSub => "on_sub",
    OnSubAndPresence => "on_sub_and_presence",
}

/// What a publish to a full node does (`pubsub#publish_node_full`, XEP-0060 1.25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeFull {
    /// Delete the oldest items and send retractions (if `notify_retract`).
    RetractOldest,
    /// Delete the oldest items silently.
    DiscardOldest,
    /// Refuse the publish with `conflict` + `node-full`.
    Reject,
}

form_values! {
    NodeFull, "publish_node_full",
    RetractOldest => "retract-oldest",
    DiscardOldest => "discard-oldest",
    Reject => "reject",
}

/// The configuration of one (leaf) node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// `pubsub#title`.
    pub title: String,
    /// `pubsub#description`.
    pub description: String,
    /// `pubsub#type`: the payload type (usually its namespace).
    pub payload_type: String,
    /// `pubsub#max_items`; `None` is `max` (= `limits.pubsub_max_items_per_node`).
    pub max_items: Option<usize>,
    /// `pubsub#persist_items`: items go to the store; otherwise only the last item is kept,
    /// in memory.
    pub persist_items: bool,
    /// `pubsub#access_model`.
    pub access_model: AccessModel,
    /// `pubsub#roster_groups_allowed` (for the roster access model).
    pub roster_groups_allowed: Vec<String>,
    /// `pubsub#publish_model`.
    pub publish_model: PublishModel,
    /// `pubsub#subscribe`: whether subscriptions are allowed.
    pub subscribe: bool,
    /// `pubsub#deliver_payloads`.
    pub deliver_payloads: bool,
    /// `pubsub#deliver_notifications`.
    pub deliver_notifications: bool,
    /// `pubsub#notify_retract`.
    pub notify_retract: bool,
    /// `pubsub#notify_delete`.
    pub notify_delete: bool,
    /// `pubsub#notify_config`.
    pub notify_config: bool,
    /// `pubsub#send_last_published_item`.
    pub send_last: SendLast,
    /// `pubsub#notification_type`: `headline` (true) or `normal`.
    pub headline: bool,
    /// `pubsub#max_payload_size`, bytes.
    pub max_payload_size: usize,
    /// `pubsub#publish_node_full`.
    pub node_full: NodeFull,
    /// `pubsub#item_expire` in seconds; `None` is `max` (never). Expired items are never
    /// returned and are deleted when next touched.
    pub item_expire: Option<u64>,
    /// `pubsub#presence_based_delivery`: notify only available subscribers. A bare-JID
    /// subscriber with no available resource gets nothing either way, but without it the
    /// notifications of a `normal` node are kept in its offline storage (XEP-0160; see
    /// `docs/pubsub.md`).
    pub presence_based: bool,
    /// `pubsub#notify_sub`: owners are told of subscribes and unsubscribes.
    pub notify_sub: bool,
    /// `pubsub#tempsub`: every subscription is temporary (ends with the subscriber's
    /// presence, §12.4).
    pub tempsub: bool,
    /// `pubsub#purge_offline`: items are purged when the last of their publishers goes
    /// offline.
    pub purge_offline: bool,
    /// `pubsub#itemreply`: `publisher` (items carry a `publisher` attribute, the
    /// default) or `none` (they do not). `owner` is refused (`unsupported`).
    pub itemreply_publisher: bool,
    /// `pubsub#contact`: JIDs to contact with questions (meta-data).
    pub contact: Vec<String>,
    /// `pubsub#language`: the node's default language (meta-data).
    pub language: String,
    /// `pubsub#node_type` (XEP-0248): leaf or collection. Stored only for collections.
    pub kind: Kind,
    /// `pubsub#collection` (XEP-0248): the explicit parents, sorted (empty: under the
    /// root). The one stored copy of the graph's edges; the engine keeps it equal to the
    /// DAG's parents of the node.
    pub parents: Vec<String>,
    /// `pubsub#children` of a submitted form (XEP-0248), for the engine to apply; `None`
    /// when the form did not carry it. Never stored: children are derived from the
    /// parents of every node, and the engine fills this in from the DAG to render a form.
    pub children: Option<Vec<String>>,
    /// `pubsub#children_max` (XEP-0248): `None` is `max` (bounded by
    /// `limits.pubsub_max_nodes`).
    pub children_max: Option<usize>,
    /// `pubsub#children_association_policy` (XEP-0248): who may associate children.
    pub association_policy: AssociationPolicy,
    /// `pubsub#children_association_whitelist` (XEP-0248): bare JIDs the `whitelist`
    /// policy admits, at most `limits.pubsub_max_whitelist`.
    pub association_whitelist: Vec<String>,
}

/// Fields that only make sense for a collection (hidden from leaf forms).
const COLLECTION_FIELDS: &[&str] = &[
    "pubsub#children",
    "pubsub#children_max",
    "pubsub#children_association_policy",
    "pubsub#children_association_whitelist",
];

/// Fields about items (hidden from collection forms: a collection holds no items, and
/// XEP-0248 applies the publishing leaf's delivery options).
const ITEM_FIELDS: &[&str] = &[
    "pubsub#max_items",
    "pubsub#persist_items",
    "pubsub#deliver_payloads",
    "pubsub#notify_retract",
    "pubsub#max_payload_size",
    "pubsub#item_expire",
    "pubsub#publish_node_full",
    "pubsub#purge_offline",
    "pubsub#itemreply",
];

/// Every configuration field this service implements, in form order.
pub const FIELDS: &[&str] = &[
    "pubsub#title",
    "pubsub#description",
    "pubsub#type",
    "pubsub#node_type",
    "pubsub#max_items",
    "pubsub#persist_items",
    "pubsub#access_model",
    "pubsub#roster_groups_allowed",
    "pubsub#publish_model",
    "pubsub#subscribe",
    "pubsub#deliver_payloads",
    "pubsub#deliver_notifications",
    "pubsub#notify_retract",
    "pubsub#notify_delete",
    "pubsub#notify_config",
    "pubsub#send_last_published_item",
    "pubsub#notification_type",
    "pubsub#max_payload_size",
    "pubsub#item_expire",
    "pubsub#publish_node_full",
    "pubsub#presence_based_delivery",
    "pubsub#notify_sub",
    "pubsub#tempsub",
    "pubsub#purge_offline",
    "pubsub#itemreply",
    "pubsub#contact",
    "pubsub#language",
    "pubsub#collection",
    "pubsub#children",
    "pubsub#children_max",
    "pubsub#children_association_policy",
    "pubsub#children_association_whitelist",
];

// Shape bounds of one form value, not in `[limits]`: their memory is within the node's
// stored configuration, which the store's record layout bounds (65536 bytes per value).
/// Most roster groups in `roster_groups_allowed`.
const MAX_GROUPS: usize = 64;
/// Longest text value (title, description, type, group), in bytes.
const MAX_TEXT: usize = 1024;

impl NodeConfig {
    /// The default configuration (§8.3) under `limits`.
    pub fn default_for(limits: &Limits) -> NodeConfig {
        NodeConfig {
            title: String::new(),
            description: String::new(),
            payload_type: String::new(),
            max_items: Some(20.min(limits.pubsub_max_items_per_node)),
            persist_items: true,
            access_model: AccessModel::Open,
            roster_groups_allowed: Vec::new(),
            publish_model: PublishModel::Publishers,
            subscribe: true,
            deliver_payloads: true,
            deliver_notifications: true,
            notify_retract: true,
            notify_delete: true,
            notify_config: false,
            send_last: SendLast::Never,
            headline: true,
            max_payload_size: limits.pubsub_max_item_bytes,
            node_full: NodeFull::RetractOldest,
            item_expire: None,
            presence_based: false,
            notify_sub: false,
            tempsub: false,
            purge_offline: false,
            itemreply_publisher: true,
            contact: Vec::new(),
            language: String::new(),
            kind: Kind::Leaf,
            parents: Vec::new(),
            children: None,
            children_max: None,
            association_policy: AssociationPolicy::Owners,
            association_whitelist: Vec::new(),
        }
    }

    /// The default configuration of a collection (`<default type='collection'/>`, and the
    /// collections `/` paths create).
    pub fn collection_default(limits: &Limits) -> NodeConfig {
        NodeConfig {
            kind: Kind::Collection,
            ..NodeConfig::default_for(limits)
        }
    }

    /// The effective item cap.
    pub fn effective_max_items(&self, limits: &Limits) -> usize {
        self.max_items
            .unwrap_or(limits.pubsub_max_items_per_node)
            .min(limits.pubsub_max_items_per_node)
    }

    /// The values of field `var`, as they appear in a form.
    pub(super) fn values(&self, var: &str) -> Vec<String> {
        let b = |v: bool| if v { "1" } else { "0" }.to_owned();
        match var {
            "pubsub#title" => vec![self.title.clone()],
            "pubsub#description" => vec![self.description.clone()],
            "pubsub#type" => vec![self.payload_type.clone()],
            "pubsub#node_type" => vec![self.kind.as_str().to_owned()],
            // XEP-0248: a node attached to the root shows the root (an empty value).
            "pubsub#collection" if self.parents.is_empty() => vec![String::new()],
            "pubsub#collection" => self.parents.clone(),
            "pubsub#children" => self.children.clone().unwrap_or_default(),
            "pubsub#children_max" => vec![
                self.children_max
                    .map_or_else(|| "max".to_owned(), |n| n.to_string()),
            ],
            // XEP-0248 spells the owners-only policy `owner`.
            "pubsub#children_association_policy" => vec![
                match self.association_policy {
                    AssociationPolicy::Owners => "owner",
                    p => p.as_str(),
                }
                .to_owned(),
            ],
            "pubsub#children_association_whitelist" => self.association_whitelist.clone(),
            "pubsub#max_items" => vec![
                self.max_items
                    .map_or_else(|| "max".to_owned(), |n| n.to_string()),
            ],
            "pubsub#persist_items" => vec![b(self.persist_items)],
            "pubsub#access_model" => vec![self.access_model.as_str().to_owned()],
            "pubsub#roster_groups_allowed" => self.roster_groups_allowed.clone(),
            "pubsub#publish_model" => vec![self.publish_model.as_str().to_owned()],
            "pubsub#subscribe" => vec![b(self.subscribe)],
            "pubsub#deliver_payloads" => vec![b(self.deliver_payloads)],
            "pubsub#deliver_notifications" => vec![b(self.deliver_notifications)],
            "pubsub#notify_retract" => vec![b(self.notify_retract)],
            "pubsub#notify_delete" => vec![b(self.notify_delete)],
            "pubsub#notify_config" => vec![b(self.notify_config)],
            "pubsub#send_last_published_item" => vec![self.send_last.as_str().to_owned()],
            "pubsub#notification_type" => {
                vec![if self.headline { "headline" } else { "normal" }.to_owned()]
            }
            "pubsub#max_payload_size" => vec![self.max_payload_size.to_string()],
            "pubsub#publish_node_full" => vec![self.node_full.as_str().to_owned()],
            "pubsub#item_expire" => vec![
                self.item_expire
                    .map_or_else(|| "max".to_owned(), |n| n.to_string()),
            ],
            "pubsub#presence_based_delivery" => vec![b(self.presence_based)],
            "pubsub#notify_sub" => vec![b(self.notify_sub)],
            "pubsub#tempsub" => vec![b(self.tempsub)],
            "pubsub#purge_offline" => vec![b(self.purge_offline)],
            "pubsub#itemreply" => vec![
                if self.itemreply_publisher {
                    "publisher"
                } else {
                    "none"
                }
                .to_owned(),
            ],
            "pubsub#contact" => self.contact.clone(),
            "pubsub#language" => vec![self.language.clone()],
            _ => Vec::new(),
        }
    }

    /// Sets field `var` from its values. Unknown fields and bad values are errors.
    pub fn set(
        &mut self,
        var: &str,
        values: &[String],
        limits: &Limits,
    ) -> Result<(), PubSubError> {
        let one = || -> Result<&str, PubSubError> {
            match values {
                [v] => Ok(v.trim()),
                [] => Ok(""),
                _ => Err(PubSubError::BadForm(format!("{var} takes one value"))),
            }
        };
        let text = || -> Result<String, PubSubError> {
            let v = one()?;
            if v.len() > MAX_TEXT {
                return Err(PubSubError::BadForm(format!("{var} is too long")));
            }
            Ok(v.to_owned())
        };
        let boolean = || -> Result<bool, PubSubError> {
            match one()? {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                v => Err(PubSubError::BadForm(format!(
                    "{var}: {v:?} is not a boolean"
                ))),
            }
        };
        let number = |max: u64| -> Result<Option<u64>, PubSubError> {
            let v = one()?;
            if v == "max" {
                return Ok(None);
            }
            // Digits only, saturated: a value beyond u64 is "too large", not "not a number";
            // negative, empty and other text is refused (§8.2.4: not-acceptable).
            match super::rsm::parse_count(v) {
                Some(n) if n <= max => Ok(Some(n)),
                Some(_) => Err(PubSubError::BadForm(format!("{var}: {v} exceeds {max}"))),
                None => Err(PubSubError::BadForm(format!(
                    "{var}: {v:?} is not a non-negative integer"
                ))),
            }
        };
        match var {
            "pubsub#title" => self.title = text()?,
            "pubsub#description" => self.description = text()?,
            "pubsub#type" => self.payload_type = text()?,
            "pubsub#node_type" => {
                self.kind = match one()? {
                    "" => self.kind,
                    v => Kind::parse(v)
                        .ok_or_else(|| PubSubError::BadForm(format!("unknown node type {v:?}")))?,
                }
            }
            "pubsub#max_items" => {
                let cap = limits.pubsub_max_items_per_node as u64;
                self.max_items = match number(cap)? {
                    None => None,
                    Some(0) => {
                        return Err(PubSubError::BadForm("max_items must be at least 1".into()));
                    }
                    Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                };
            }
            "pubsub#persist_items" => self.persist_items = boolean()?,
            "pubsub#access_model" => self.access_model = AccessModel::parse(one()?)?,
            "pubsub#roster_groups_allowed" => {
                if values.len() > MAX_GROUPS || values.iter().any(|g| g.len() > MAX_TEXT) {
                    return Err(PubSubError::BadForm("too many or too long groups".into()));
                }
                let mut groups: Vec<String> = Vec::new();
                for g in values.iter().filter(|g| !g.is_empty()) {
                    if !groups.contains(g) {
                        groups.push(g.clone());
                    }
                }
                groups.sort();
                self.roster_groups_allowed = groups;
            }
            "pubsub#publish_model" => self.publish_model = PublishModel::parse(one()?)?,
            "pubsub#subscribe" => self.subscribe = boolean()?,
            "pubsub#deliver_payloads" => self.deliver_payloads = boolean()?,
            "pubsub#deliver_notifications" => self.deliver_notifications = boolean()?,
            "pubsub#notify_retract" => self.notify_retract = boolean()?,
            "pubsub#notify_delete" => self.notify_delete = boolean()?,
            "pubsub#notify_config" => self.notify_config = boolean()?,
            "pubsub#send_last_published_item" => self.send_last = SendLast::parse(one()?)?,
            "pubsub#notification_type" => {
                self.headline = match one()? {
                    "headline" => true,
                    "normal" => false,
                    v => {
                        return Err(PubSubError::BadForm(format!(
                            "unknown notification type {v:?}"
                        )));
                    }
                }
            }
            "pubsub#max_payload_size" => {
                let max = limits.pubsub_max_item_bytes as u64;
                match number(max)? {
                    Some(n) => self.max_payload_size = usize::try_from(n).unwrap_or(usize::MAX),
                    None => self.max_payload_size = limits.pubsub_max_item_bytes,
                }
            }
            "pubsub#publish_node_full" => self.node_full = NodeFull::parse(one()?)?,
            "pubsub#item_expire" => {
                self.item_expire = match number(u64::from(u32::MAX))? {
                    Some(0) | None => None,
                    Some(n) => Some(n),
                }
            }
            "pubsub#presence_based_delivery" => self.presence_based = boolean()?,
            "pubsub#notify_sub" => self.notify_sub = boolean()?,
            "pubsub#tempsub" => self.tempsub = boolean()?,
            "pubsub#purge_offline" => self.purge_offline = boolean()?,
            "pubsub#itemreply" => {
                self.itemreply_publisher = match one()? {
                    "publisher" => true,
                    "none" => false,
                    "owner" => return Err(PubSubError::UnsupportedValue("itemreply")),
                    v => return Err(PubSubError::BadForm(format!("unknown itemreply {v:?}"))),
                }
            }
            "pubsub#contact" => {
                if values.len() > MAX_GROUPS || values.iter().any(|g| g.len() > MAX_TEXT) {
                    return Err(PubSubError::BadForm("too many or too long contacts".into()));
                }
                let mut jids: Vec<String> = Vec::new();
                for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
                    let j = crate::jid::Jid::parse(v)
                        .map_err(|_| PubSubError::BadForm(format!("contact {v:?} is not a JID")))?;
                    if !jids.iter().any(|x| x == j.as_str()) {
                        jids.push(j.as_str().to_owned());
                    }
                }
                self.contact = jids;
            }
            "pubsub#language" => self.language = text()?,
            // Registered fields this service cannot honour: refused, never ignored.
            "pubsub#body_xslt" | "pubsub#dataform_xslt" => {
                return Err(PubSubError::UnsupportedValue("xslt"));
            }
            "pubsub#collection" => self.parents = node_list(var, values)?,
            "pubsub#children" => self.children = Some(node_list(var, values)?),
            "pubsub#children_max" => {
                self.children_max =
                    number(u64::from(u32::MAX))?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            }
            "pubsub#children_association_policy" => {
                // XEP-0248 spells it `owner`; `owners` (ejabberd's) is accepted too.
                self.association_policy = match one()? {
                    "owner" => AssociationPolicy::Owners,
                    v => AssociationPolicy::parse(v).ok_or_else(|| {
                        PubSubError::BadForm(format!("unknown association policy {v:?}"))
                    })?,
                }
            }
            "pubsub#children_association_whitelist" => {
                if values.len() > limits.pubsub_max_whitelist {
                    return Err(PubSubError::BadForm("too many whitelisted JIDs".into()));
                }
                let mut jids: Vec<String> = Vec::new();
                for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
                    let j = crate::jid::Jid::parse(v)
                        .map_err(|_| PubSubError::BadForm(format!("{v:?} is not a JID")))?;
                    let b = j.bare().as_str().to_owned();
                    if !jids.contains(&b) {
                        jids.push(b);
                    }
                }
                jids.sort();
                self.association_whitelist = jids;
            }
            _ => return Err(PubSubError::BadForm(format!("unsupported field {var:?}"))),
        }
        Ok(())
    }

    /// Applies a submitted form (`<x xmlns='jabber:x:data' type='submit'>`) whose
    /// `FORM_TYPE`, if present, is `form_type`. A `cancel` form changes nothing.
    pub fn apply_form(
        &mut self,
        x: &Element,
        form_type: &str,
        limits: &Limits,
    ) -> Result<(), PubSubError> {
        match x.attr("type") {
            Some("submit") | None => {}
            Some("cancel") => return Ok(()),
            Some(_) => {
                return Err(PubSubError::BadForm(
                    "the form must be of type submit".into(),
                ));
            }
        }
        for (var, values) in form_fields(x) {
            if var == "FORM_TYPE" {
                if values.first().map(String::as_str) != Some(form_type) {
                    return Err(PubSubError::BadForm(format!(
                        "FORM_TYPE must be {form_type}"
                    )));
                }
                continue;
            }
            self.set(&var, &values, limits)?;
        }
        Ok(())
    }

    /// The configuration as a form of type `form` (§8.2.1) with `FORM_TYPE` `form_type`.
    pub fn to_form(&self, form_type: &str) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", "form");
        x.push_child(hidden_form_type(form_type));
        for var in FIELDS {
            let hidden = match self.kind {
                Kind::Leaf => COLLECTION_FIELDS.contains(var),
                Kind::Collection => ITEM_FIELDS.contains(var),
            };
            if hidden {
                continue;
            }
            let (ty, options): (&str, &[&str]) = match *var {
                "pubsub#title"
                | "pubsub#description"
                | "pubsub#type"
                | "pubsub#max_items"
                | "pubsub#max_payload_size"
                | "pubsub#item_expire"
                | "pubsub#children_max"
                | "pubsub#language" => ("text-single", &[]),
                "pubsub#contact" | "pubsub#children_association_whitelist" => ("jid-multi", &[]),
                "pubsub#collection" | "pubsub#children" => ("text-multi", &[]),
                "pubsub#children_association_policy" => {
                    ("list-single", &["all", "owner", "whitelist"])
                }
                "pubsub#itemreply" => ("list-single", &["publisher", "none"]),
                "pubsub#node_type" => ("list-single", &["leaf", "collection"]),
                "pubsub#access_model" => (
                    "list-single",
                    &["open", "presence", "roster", "whitelist", "authorize"],
                ),
                "pubsub#roster_groups_allowed" => ("list-multi", &[]),
                "pubsub#publish_model" => ("list-single", &["publishers", "subscribers", "open"]),
                "pubsub#send_last_published_item" => {
                    ("list-single", &["never", "on_sub", "on_sub_and_presence"])
                }
                "pubsub#notification_type" => ("list-single", &["headline", "normal"]),
                "pubsub#publish_node_full" => (
                    "list-single",
                    &["retract-oldest", "discard-oldest", "reject"],
                ),
                _ => ("boolean", &[]),
            };
            let mut f = Element::new("field", NS_DATA)
                .with_attr("var", *var)
                .with_attr("type", ty);
            for o in options {
                f.push_child(
                    Element::new("option", NS_DATA)
                        .with_child(Element::new("value", NS_DATA).with_text(*o)),
                );
            }
            for v in self.values(var) {
                f.push_child(Element::new("value", NS_DATA).with_text(v));
            }
            x.push_child(f);
        }
        x
    }

    /// The `(var, value)` pairs the store keeps (every field, multi-valued ones repeated).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for var in FIELDS {
            // Leaves store what they always stored (records of older builds stay equal);
            // the collection fields only when they say something.
            let skip = match *var {
                "pubsub#node_type" => self.kind == Kind::Leaf,
                "pubsub#collection" => self.parents.is_empty(),
                "pubsub#children" => true,
                v => self.kind == Kind::Leaf && COLLECTION_FIELDS.contains(&v),
            };
            if skip {
                continue;
            }
            let vals = self.values(var);
            if vals.is_empty() {
                out.push(((*var).to_owned(), String::new()));
            }
            for v in vals {
                out.push(((*var).to_owned(), v));
            }
        }
        out
    }

    /// Rebuilds a configuration from stored pairs (fields a newer build wrote and this one
    /// does not know are an error: the file is from a newer schema).
    pub fn from_pairs(
        pairs: &[(String, String)],
        limits: &Limits,
    ) -> Result<NodeConfig, PubSubError> {
        let mut c = NodeConfig::default_for(limits);
        let mut i = 0;
        while i < pairs.len() {
            let var = &pairs[i].0;
            let mut values = Vec::new();
            while i < pairs.len() && &pairs[i].0 == var {
                let multi = matches!(
                    var.as_str(),
                    "pubsub#roster_groups_allowed" | "pubsub#children_association_whitelist"
                );
                if !pairs[i].1.is_empty() || !multi {
                    values.push(pairs[i].1.clone());
                }
                i += 1;
            }
            // Stored values may exceed limits lowered since; clamp rather than refuse.
            let relaxed = Limits {
                pubsub_max_items_per_node: usize::MAX >> 1,
                pubsub_max_item_bytes: usize::MAX >> 1,
                ..limits.clone()
            };
            c.set(var, &values, &relaxed)?;
        }
        c.max_payload_size = c.max_payload_size.min(limits.pubsub_max_item_bytes);
        Ok(c)
    }
}

/// The node ids of a `pubsub#collection` / `pubsub#children` field: sorted, without
/// duplicates and without the empty value (the root). At most 1024 values.
fn node_list(var: &str, values: &[String]) -> Result<Vec<String>, PubSubError> {
    if values.len() > 1024 || values.iter().any(|v| v.len() > super::MAX_NODE_ID_BYTES) {
        return Err(PubSubError::BadForm(format!(
            "{var}: too many or too long node ids"
        )));
    }
    let mut out: Vec<String> = values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The hidden `FORM_TYPE` field.
pub fn hidden_form_type(form_type: &str) -> Element {
    Element::new("field", NS_DATA)
        .with_attr("var", "FORM_TYPE")
        .with_attr("type", "hidden")
        .with_child(Element::new("value", NS_DATA).with_text(form_type))
}

/// The `(var, values)` of every field of a form, in order.
pub fn form_fields(x: &Element) -> Vec<(String, Vec<String>)> {
    x.elements()
        .filter(|f| f.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?.to_owned();
            let values = f
                .elements()
                .filter(|v| v.is("value", NS_DATA))
                .map(Element::text)
                .collect();
            Some((var, values))
        })
        .collect()
}

/// The data form child of `parent`, if any.
pub fn find_form(parent: &Element) -> Option<&Element> {
    parent.child("x", NS_DATA)
}
