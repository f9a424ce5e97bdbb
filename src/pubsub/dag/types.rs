//! The vocabulary of the collection graph: node kinds, association policies, subscription
//! depths, the [`Event`]s a change returns, [`DagError`] and the [`Route`] a fan-out walk
//! yields. Re-exported by `dag`.

use std::fmt;
use std::rc::Rc;

/// Whether a node holds items or other nodes (`pubsub#node_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Holds items.
    Leaf,
    /// Holds nodes, never items.
    Collection,
}

impl Kind {
    /// The `pubsub#node_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Leaf => "leaf",
            Kind::Collection => "collection",
        }
    }

    /// Parse a `pubsub#node_type` value.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "leaf" => Some(Kind::Leaf),
            "collection" => Some(Kind::Collection),
            _ => None,
        }
    }
}

/// Who may associate a child with a collection (`pubsub#children_association_policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AssociationPolicy {
    /// Anyone.
    All,
    /// Owners of the collection (the default here: the safe one).
    #[default]
    Owners,
    /// Entities on `pubsub#children_association_whitelist`.
    Whitelist,
}

impl AssociationPolicy {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            AssociationPolicy::All => "all",
            AssociationPolicy::Owners => "owners",
            AssociationPolicy::Whitelist => "whitelist",
        }
    }

    /// Parse a form value.
    pub fn parse(s: &str) -> Option<AssociationPolicy> {
        match s {
            "all" => Some(AssociationPolicy::All),
            "owners" => Some(AssociationPolicy::Owners),
            "whitelist" => Some(AssociationPolicy::Whitelist),
            _ => None,
        }
    }

    /// Whether a requester may associate a child: owners always may; others per policy.
    pub fn permits(self, is_owner: bool, whitelisted: bool) -> bool {
        match self {
            AssociationPolicy::All => true,
            AssociationPolicy::Owners => is_owner,
            AssociationPolicy::Whitelist => is_owner || whitelisted,
        }
    }
}

/// How far below a collection a subscription reaches (`pubsub#subscription_depth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Nodes at most this many edges below (≥ 1; `1` = direct children, the default).
    Levels(u32),
    /// Every descendant.
    All,
}

impl Default for Depth {
    fn default() -> Self {
        Depth::Levels(1)
    }
}

impl Depth {
    /// Parse `all` or a positive integer.
    pub fn parse(s: &str) -> Option<Depth> {
        if s == "all" {
            return Some(Depth::All);
        }
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => Some(Depth::Levels(n)),
            _ => None,
        }
    }

    /// Whether a node `distance` edges below is covered.
    pub fn covers(self, distance: u32) -> bool {
        match self {
            Depth::All => true,
            Depth::Levels(n) => distance <= n,
        }
    }
}

impl fmt::Display for Depth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Depth::All => f.write_str("all"),
            Depth::Levels(n) => write!(f, "{n}"),
        }
    }
}

/// An edge change, for the engine to persist (the child's `pubsub#collection`) and to
/// notify (XEP-0248 `<collection><associate/></collection>` events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `child` became a child of `parent`.
    Associated {
        /// The collection.
        parent: Rc<str>,
        /// The node.
        child: Rc<str>,
    },
    /// `child` stopped being a child of `parent`.
    Dissociated {
        /// The collection.
        parent: Rc<str>,
        /// The node.
        child: Rc<str>,
    },
}

/// Why a graph change was refused. Nothing changes when an operation fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DagError {
    /// No such node.
    NotFound(String),
    /// A node with that id exists.
    Exists(String),
    /// The would-be parent is a leaf.
    NotACollection(String),
    /// The association would make a collection its own ancestor.
    Cycle {
        /// The collection.
        parent: String,
        /// The node.
        child: String,
    },
    /// The collection has `children_max` children already.
    ChildrenMax(String),
    /// The node would have more than `max_parents` parents.
    TooManyParents(String),
    /// The service would have more than `max_nodes` nodes.
    TooManyNodes,
    /// The root cannot be deleted, re-typed or given parents.
    Root,
    /// The association policy (the engine's callback) refused the association.
    Forbidden {
        /// The collection.
        parent: String,
        /// The node.
        child: String,
    },
    /// The edge to dissociate does not exist.
    NotAssociated {
        /// The collection.
        parent: String,
        /// The node.
        child: String,
    },
    /// A collection cannot become a leaf (XEP-0248 forbids changing a collection's type).
    CollectionToLeaf(String),
    /// A `/` path with an empty segment, or too many segments, for auto-creation.
    InvalidPath(String),
}

impl fmt::Display for DagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DagError::NotFound(n) => write!(f, "node {n:?} does not exist"),
            DagError::Exists(n) => write!(f, "node {n:?} exists"),
            DagError::NotACollection(n) => write!(f, "node {n:?} is not a collection"),
            DagError::Cycle { parent, child } => {
                write!(
                    f,
                    "associating {child:?} with {parent:?} would make a cycle"
                )
            }
            DagError::ChildrenMax(n) => write!(f, "collection {n:?} has its maximum of children"),
            DagError::TooManyParents(n) => write!(f, "node {n:?} has its maximum of parents"),
            DagError::TooManyNodes => f.write_str("the service has its maximum of nodes"),
            DagError::Root => f.write_str("the root collection cannot be changed that way"),
            DagError::Forbidden { parent, child } => {
                write!(f, "associating {child:?} with {parent:?} is not permitted")
            }
            DagError::NotAssociated { parent, child } => {
                write!(f, "{child:?} is not a child of {parent:?}")
            }
            DagError::CollectionToLeaf(n) => write!(f, "collection {n:?} cannot become a leaf"),
            DagError::InvalidPath(n) => write!(f, "node id {n:?} is not a usable path"),
        }
    }
}

impl std::error::Error for DagError {}

impl DagError {
    /// The stanza error condition and `pubsub#errors` application condition it maps to.
    pub fn condition(&self) -> (&'static str, Option<&'static str>) {
        match self {
            DagError::NotFound(_) => ("item-not-found", None),
            DagError::Exists(_) => ("conflict", None),
            DagError::NotACollection(_) | DagError::CollectionToLeaf(_) => ("not-allowed", None),
            DagError::Cycle { .. } | DagError::Root => ("not-allowed", None),
            DagError::ChildrenMax(_) => ("conflict", Some("max-nodes-exceeded")),
            DagError::TooManyParents(_) => ("not-acceptable", None),
            DagError::TooManyNodes => ("not-allowed", Some("max-nodes-exceeded")),
            DagError::Forbidden { .. } => ("forbidden", None),
            DagError::NotAssociated { .. } => ("item-not-found", None),
            DagError::InvalidPath(_) => ("not-acceptable", None),
        }
    }
}

/// A collection subscriber reached from a leaf (or a node event), with the collection it
/// came through: the nearest one that covers it, for the SHIM `Collection` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<S> {
    /// The subscriber, as the engine's lookup named it.
    pub subscriber: S,
    /// The collection through which it is reached.
    pub collection: Rc<str>,
    /// Edges between that collection and the event's node.
    pub distance: u32,
}
