//! The XEP-0248 collection graph of one pub-sub service: which nodes are collections, which
//! collections contain which nodes, and the walks that notifications and collection item
//! retrieval need.
//!
//! This module owns the structure only: node ids, their kind (leaf or collection), the
//! parent/child edges, each collection's `children_max`, and the checks that keep the graph
//! a DAG. It does not own node configuration, affiliations, access models, subscriptions or
//! the store: association policy and access checks are callbacks the engine passes in, and
//! every change returns the [`Event`]s (edges added and removed) for the engine to persist
//! and notify.
//!
//! # Model
//!
//! * The service root ([`ROOT`], the empty node id) is a collection that always exists and
//!   cannot be deleted, configured or associated with a parent (XEP-0248, "Root Collection Node").
//! * Every other node has at least one parent. A node without an explicit parent is a child
//!   of the root; it leaves the root when it gets an explicit parent and returns to it when
//!   it loses its last one. So every node is reachable from the root, and a root subscriber
//!   with depth `all` sees the whole service.
//! * A node may have several parents (`pubsub#multi-collections`), at most
//!   `max_parents`. Only collections have children, at most their `children_max`.
//! * Deleting a collection re-parents each child that has no other parent to the root
//!   (the documented deletion policy; XEP-0248 leaves it to the implementation).
//! * Node ids with `/` may name implicit ancestors (`sensors/kitchen/temp` under
//!   `sensors/kitchen` under `sensors`), created on demand by [`Dag::create_with_path`].
//!
//! # Invariants (checked by the property test after every operation)
//!
//! 1. `p ∈ parents(c)` ⇔ `c ∈ children(p)`; both lists sorted, without duplicates.
//! 2. The root has no parents; every other node has between 1 and `max_parents` parents,
//!    and the root is a parent only as the sole parent.
//! 3. Only collections have children; a collection has at most `children_max` children
//!    unless its `children_max` was lowered after they were associated.
//! 4. No cycles; hence (with 2) every node is reachable from the root.
//! 5. At most `max_nodes` nodes besides the root.
//!
//! # Cost
//!
//! One node ≈ 110 B plus its id, and each edge 32 B (an `Rc<str>` in both lists, plus the
//! slack of the lists' capacity); ids are shared `Rc<str>`s, not copied. Measured by
//! [`Dag::heap_estimate`] (test `memory_figure`): 1024 nodes with 1831 edges ≈ 218 KiB. Every walk is a breadth-first search with a visited set,
//! so it is linear in the nodes and edges it reaches, and never loops.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::rc::Rc;

/// The node id of the service root collection.
pub const ROOT: &str = "";
/// Most `/`-separated segments in a node id whose implicit parents are auto-created. A
/// shape bound of a node id (whose length, 1023 bytes, already bounds its memory), not a
/// resource bound, so not in `[limits]`.
pub const MAX_PATH_SEGMENTS: usize = 16;

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

/// One node of the graph.
#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    /// Invariant: sorted, unique; empty only for the root.
    parents: Vec<Rc<str>>,
    /// Invariant: sorted, unique; empty for leaves.
    children: Vec<Rc<str>>,
    /// `None`: no per-collection bound (the service's `max_nodes` still applies).
    children_max: Option<usize>,
}

impl Entry {
    fn new(kind: Kind) -> Entry {
        Entry {
            kind,
            parents: Vec::new(),
            children: Vec::new(),
            children_max: None,
        }
    }
}

/// Insert into a sorted vector; false if present.
fn sorted_insert(v: &mut Vec<Rc<str>>, x: &Rc<str>) -> bool {
    match v.binary_search(x) {
        Ok(_) => false,
        Err(i) => {
            v.insert(i, x.clone());
            true
        }
    }
}

/// Remove from a sorted vector; false if absent.
fn sorted_remove(v: &mut Vec<Rc<str>>, x: &str) -> bool {
    match v.binary_search_by(|e| (**e).cmp(x)) {
        Ok(i) => {
            v.remove(i);
            true
        }
        Err(_) => false,
    }
}

/// The implicit ancestors of a `/`-separated node id, outermost first:
/// `sensors/kitchen/temp` → `["sensors", "sensors/kitchen"]`. `None` if a segment is empty
/// (`a//b`, `/a`, `a/`) or there are more than [`MAX_PATH_SEGMENTS`] segments; an id without
/// `/` has no implicit ancestors.
pub fn implicit_parents(id: &str) -> Option<Vec<&str>> {
    if id.is_empty() {
        return Some(Vec::new());
    }
    let segments = id.split('/').count();
    if segments > MAX_PATH_SEGMENTS || id.split('/').any(str::is_empty) {
        return None;
    }
    Some(
        id.match_indices('/')
            .map(|(i, _)| &id[..i])
            .collect::<Vec<_>>(),
    )
}

/// The collection graph of one service.
#[derive(Clone, Debug)]
pub struct Dag {
    nodes: HashMap<Rc<str>, Entry>,
    /// Most nodes besides the root.
    max_nodes: usize,
    /// Most parents of one node.
    max_parents: usize,
}

impl Dag {
    /// A graph holding only the root, bounded to `max_nodes` other nodes with at most
    /// `max_parents` (≥ 1) parents each.
    pub fn new(max_nodes: usize, max_parents: usize) -> Dag {
        let mut nodes = HashMap::new();
        nodes.insert(Rc::from(ROOT), Entry::new(Kind::Collection));
        Dag {
            nodes,
            max_nodes,
            max_parents: max_parents.max(1),
        }
    }

    /// Rebuild a graph from stored nodes `(id, kind, parents, children_max)` in any order.
    /// Edges that cannot be kept (unknown or leaf parent, a cycle, over a bound) are dropped
    /// and returned as `(parent, child, reason)` for the caller to log and re-persist; nodes
    /// beyond `max_nodes` are dropped too (reason [`DagError::TooManyNodes`], empty parent).
    pub fn load<'a>(
        max_nodes: usize,
        max_parents: usize,
        stored: impl IntoIterator<Item = (&'a str, Kind, Vec<&'a str>, Option<usize>)>,
    ) -> (Dag, Vec<(String, String, DagError)>) {
        let mut dag = Dag::new(max_nodes, max_parents);
        let mut dropped = Vec::new();
        let mut edges = Vec::new();
        for (id, kind, parents, children_max) in stored {
            if id == ROOT || dag.nodes.contains_key(id) {
                continue;
            }
            if dag.len() >= dag.max_nodes {
                dropped.push((String::new(), id.to_owned(), DagError::TooManyNodes));
                continue;
            }
            let key: Rc<str> = Rc::from(id);
            let mut e = Entry::new(kind);
            e.children_max = children_max.filter(|_| kind == Kind::Collection);
            dag.nodes.insert(key.clone(), e);
            edges.push((key, parents));
        }
        // Sorted so the outcome does not depend on the store's order.
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        for (child, parents) in &edges {
            let mut parents: Vec<&str> = parents.iter().copied().filter(|p| *p != ROOT).collect();
            parents.sort_unstable();
            parents.dedup();
            for p in parents {
                let res = dag.check_edge(p, child).and_then(|()| {
                    if dag.explicit_parents(child) >= dag.max_parents {
                        Err(DagError::TooManyParents(child.to_string()))
                    } else {
                        Ok(())
                    }
                });
                match res {
                    Ok(()) => {
                        let mut ev = Vec::new();
                        dag.link(p, child, &mut ev);
                    }
                    Err(e) => dropped.push((p.to_owned(), child.to_string(), e)),
                }
            }
        }
        for (child, _) in &edges {
            if dag.nodes.get(child).is_some_and(|e| e.parents.is_empty()) {
                let mut ev = Vec::new();
                dag.link(ROOT, child, &mut ev);
            }
        }
        (dag, dropped)
    }

    /// Nodes besides the root.
    pub fn len(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Whether only the root exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` exists (the root always does).
    pub fn contains(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }

    /// The kind of `id`.
    pub fn kind(&self, id: &str) -> Option<Kind> {
        self.nodes.get(id).map(|e| e.kind)
    }

    /// The parents of `id`, sorted (`[ROOT]` for a node without explicit parents; empty for
    /// the root and unknown ids).
    pub fn parents(&self, id: &str) -> &[Rc<str>] {
        self.nodes.get(id).map_or(&[], |e| &e.parents)
    }

    /// The explicit parents of `id`: what its `pubsub#collection` field shows (the root is
    /// shown too: XEP-0248 says orphan nodes attached to the root MUST show it).
    pub fn collection_field(&self, id: &str) -> Vec<&str> {
        self.parents(id).iter().map(|p| &**p).collect()
    }

    /// The children of `id`, sorted (what its `pubsub#children` field shows).
    pub fn children(&self, id: &str) -> &[Rc<str>] {
        self.nodes.get(id).map_or(&[], |e| &e.children)
    }

    /// The `children_max` of a collection.
    pub fn children_max(&self, id: &str) -> Option<usize> {
        self.nodes.get(id).and_then(|e| e.children_max)
    }

    /// Parents of `id` other than the root.
    fn explicit_parents(&self, id: &str) -> usize {
        self.parents(id).iter().filter(|p| &***p != ROOT).count()
    }

    /// The shared id of an existing node.
    fn key(&self, id: &str) -> Result<Rc<str>, DagError> {
        self.nodes
            .get_key_value(id)
            .map(|(k, _)| k.clone())
            .ok_or_else(|| DagError::NotFound(id.to_owned()))
    }

    /// Whether `ancestor` is `node` or one of its ancestors.
    fn is_ancestor_or_self(&self, ancestor: &str, node: &str) -> bool {
        if ancestor == node {
            return true;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> = VecDeque::from([node]);
        while let Some(n) = queue.pop_front() {
            for p in self.parents(n) {
                if &**p == ancestor {
                    return true;
                }
                if seen.insert(p) {
                    queue.push_back(p);
                }
            }
        }
        false
    }

    /// Structural checks for a new edge `parent → child` (not the parent-count bound, which
    /// depends on the other edges of the same operation).
    fn check_edge(&self, parent: &str, child: &str) -> Result<(), DagError> {
        if child == ROOT {
            return Err(DagError::Root);
        }
        let p = self
            .nodes
            .get(parent)
            .ok_or_else(|| DagError::NotFound(parent.to_owned()))?;
        if !self.nodes.contains_key(child) {
            return Err(DagError::NotFound(child.to_owned()));
        }
        if p.kind != Kind::Collection {
            return Err(DagError::NotACollection(parent.to_owned()));
        }
        if parent != ROOT
            && p.children_max.is_some_and(|max| p.children.len() >= max)
            && p.children.binary_search_by(|c| (**c).cmp(child)).is_err()
        {
            return Err(DagError::ChildrenMax(parent.to_owned()));
        }
        if self.is_ancestor_or_self(child, parent) {
            return Err(DagError::Cycle {
                parent: parent.to_owned(),
                child: child.to_owned(),
            });
        }
        Ok(())
    }

    /// Add the edge (checked by the caller), taking the child out of the root if the new
    /// parent is a real one.
    fn link(&mut self, parent: &str, child: &Rc<str>, ev: &mut Vec<Event>) {
        let Ok(pk) = self.key(parent) else { return };
        let Some(c) = self.nodes.get_mut(child) else {
            return;
        };
        if !sorted_insert(&mut c.parents, &pk) {
            return;
        }
        let leave_root = parent != ROOT && sorted_remove(&mut c.parents, ROOT);
        if let Some(p) = self.nodes.get_mut(parent) {
            sorted_insert(&mut p.children, child);
        }
        ev.push(Event::Associated {
            parent: pk,
            child: child.clone(),
        });
        if leave_root {
            if let Some(r) = self.nodes.get_mut(ROOT) {
                sorted_remove(&mut r.children, child);
            }
            ev.push(Event::Dissociated {
                parent: Rc::from(ROOT),
                child: child.clone(),
            });
        }
    }

    /// Remove the edge, returning the child to the root if it was its last parent.
    fn unlink(&mut self, parent: &str, child: &Rc<str>, ev: &mut Vec<Event>) {
        let Ok(pk) = self.key(parent) else { return };
        let Some(c) = self.nodes.get_mut(child) else {
            return;
        };
        if !sorted_remove(&mut c.parents, parent) {
            return;
        }
        let orphan = c.parents.is_empty();
        if let Some(p) = self.nodes.get_mut(parent) {
            sorted_remove(&mut p.children, child);
        }
        ev.push(Event::Dissociated {
            parent: pk,
            child: child.clone(),
        });
        if orphan && parent != ROOT {
            self.link(ROOT, child, ev);
        }
    }

    /// Create `id` with `parents` (none: under the root). Each association is checked
    /// structurally, then by `may(parent, child)` (the association policy).
    ///
    /// # Errors
    /// [`DagError::Exists`], [`DagError::TooManyNodes`], [`DagError::TooManyParents`], and
    /// any error of [`Dag::associate`].
    pub fn create(
        &mut self,
        id: &str,
        kind: Kind,
        parents: &[&str],
        may: &mut dyn FnMut(&str, &str) -> bool,
    ) -> Result<Vec<Event>, DagError> {
        if self.nodes.contains_key(id) {
            return Err(DagError::Exists(id.to_owned()));
        }
        if self.len() >= self.max_nodes {
            return Err(DagError::TooManyNodes);
        }
        let mut parents: Vec<&str> = parents.iter().copied().filter(|p| *p != ROOT).collect();
        parents.sort_unstable();
        parents.dedup();
        if parents.len() > self.max_parents {
            return Err(DagError::TooManyParents(id.to_owned()));
        }
        // Check against a graph where the node exists (a new node cannot close a cycle, but
        // check_edge wants both ends).
        let key: Rc<str> = Rc::from(id);
        self.nodes.insert(key.clone(), Entry::new(kind));
        let checked = parents.iter().try_for_each(|p| {
            self.check_edge(p, id)?;
            if may(p, id) {
                Ok(())
            } else {
                Err(DagError::Forbidden {
                    parent: (*p).to_owned(),
                    child: id.to_owned(),
                })
            }
        });
        if let Err(e) = checked {
            self.nodes.remove(id);
            return Err(e);
        }
        let mut ev = Vec::new();
        if parents.is_empty() {
            self.link(ROOT, &key, &mut ev);
        }
        for p in parents {
            self.link(p, &key, &mut ev);
        }
        Ok(ev)
    }

    /// Create `id` and every missing implicit ancestor of its `/` path as collections
    /// (`a/b/c` under `a/b` under `a` under the root); existing ancestors must be
    /// collections. Returns the ids created, outermost first and `id` last, and the events.
    ///
    /// # Errors
    /// [`DagError::InvalidPath`], [`DagError::NotACollection`] for an existing leaf
    /// ancestor, [`DagError::TooManyNodes`] if all of them do not fit, and the errors of
    /// [`Dag::create`] for the first association with an existing ancestor. Atomic.
    pub fn create_with_path(
        &mut self,
        id: &str,
        kind: Kind,
        may: &mut dyn FnMut(&str, &str) -> bool,
    ) -> Result<(Vec<Rc<str>>, Vec<Event>), DagError> {
        if self.nodes.contains_key(id) {
            return Err(DagError::Exists(id.to_owned()));
        }
        let ancestors = implicit_parents(id).ok_or_else(|| DagError::InvalidPath(id.to_owned()))?;
        let missing: Vec<&str> = ancestors
            .iter()
            .copied()
            .filter(|a| !self.nodes.contains_key(*a))
            .collect();
        if let Some(leaf) = ancestors.iter().find(|a| self.kind(a) == Some(Kind::Leaf)) {
            return Err(DagError::NotACollection((*leaf).to_owned()));
        }
        if self.len() + missing.len() + 1 > self.max_nodes {
            return Err(DagError::TooManyNodes);
        }
        // Each missing element is created under the previous path element; an existing one
        // is used as it is (it keeps whatever parents it has).
        let mut created: Vec<Rc<str>> = Vec::new();
        let mut ev = Vec::new();
        let mut parent: Option<&str> = None;
        let chain: Vec<(&str, Kind)> = ancestors
            .iter()
            .map(|a| (*a, Kind::Collection))
            .chain([(id, kind)])
            .collect();
        for (node, k) in chain {
            if self.nodes.contains_key(node) {
                parent = Some(node);
                continue;
            }
            let ps: Vec<&str> = parent.into_iter().collect();
            match self.create(node, k, &ps, may) {
                Ok(mut e) => {
                    ev.append(&mut e);
                    created.push(self.key(node)?);
                }
                Err(e) => {
                    // Roll back what this call created, innermost first.
                    for c in created.iter().rev() {
                        let _ = self.remove(c);
                    }
                    return Err(e);
                }
            }
            parent = Some(node);
        }
        Ok((created, ev))
    }

    /// Associate `child` with collection `parent` (`<collection><associate/></collection>`,
    /// or one added `pubsub#collection` value). A no-op if already associated.
    ///
    /// # Errors
    /// [`DagError::NotFound`], [`DagError::NotACollection`], [`DagError::Root`] (the root
    /// as child, or as an explicit parent of a node that has others),
    /// [`DagError::ChildrenMax`], [`DagError::TooManyParents`], [`DagError::Cycle`],
    /// [`DagError::Forbidden`].
    pub fn associate(
        &mut self,
        parent: &str,
        child: &str,
        may: &mut dyn FnMut(&str, &str) -> bool,
    ) -> Result<Vec<Event>, DagError> {
        let ck = self.key(child)?;
        if self.parents(child).iter().any(|p| &**p == parent) {
            return Ok(Vec::new());
        }
        if parent == ROOT {
            // The root is only ever an implicit, sole parent.
            return Err(DagError::Root);
        }
        self.check_edge(parent, child)?;
        if self.explicit_parents(child) >= self.max_parents {
            return Err(DagError::TooManyParents(child.to_owned()));
        }
        if !may(parent, child) {
            return Err(DagError::Forbidden {
                parent: parent.to_owned(),
                child: child.to_owned(),
            });
        }
        let mut ev = Vec::new();
        self.link(parent, &ck, &mut ev);
        Ok(ev)
    }

    /// Dissociate `child` from `parent`; a node left without parents returns to the root.
    ///
    /// # Errors
    /// [`DagError::NotFound`], [`DagError::NotAssociated`], [`DagError::Root`] (dissociating
    /// from the root: give the node another parent instead).
    pub fn dissociate(&mut self, parent: &str, child: &str) -> Result<Vec<Event>, DagError> {
        let ck = self.key(child)?;
        self.key(parent)?;
        if !self.parents(child).iter().any(|p| &**p == parent) {
            return Err(DagError::NotAssociated {
                parent: parent.to_owned(),
                child: child.to_owned(),
            });
        }
        if parent == ROOT {
            return Err(DagError::Root);
        }
        let mut ev = Vec::new();
        self.unlink(parent, &ck, &mut ev);
        Ok(ev)
    }

    /// Replace the parents of `child` (a configured `pubsub#collection`; empty or `[""]`:
    /// under the root). Atomic: every new association is checked before anything changes.
    ///
    /// # Errors
    /// As [`Dag::associate`].
    pub fn set_parents(
        &mut self,
        child: &str,
        parents: &[&str],
        may: &mut dyn FnMut(&str, &str) -> bool,
    ) -> Result<Vec<Event>, DagError> {
        let ck = self.key(child)?;
        if child == ROOT {
            return Err(DagError::Root);
        }
        let mut want: Vec<&str> = parents.iter().copied().filter(|p| *p != ROOT).collect();
        want.sort_unstable();
        want.dedup();
        if want.len() > self.max_parents {
            return Err(DagError::TooManyParents(child.to_owned()));
        }
        let have: Vec<Rc<str>> = self.parents(child).to_vec();
        let added: Vec<&str> = want
            .iter()
            .copied()
            .filter(|p| !have.iter().any(|h| &**h == *p))
            .collect();
        for p in &added {
            self.check_edge(p, child)?;
            if !may(p, child) {
                return Err(DagError::Forbidden {
                    parent: (*p).to_owned(),
                    child: child.to_owned(),
                });
            }
        }
        let mut ev = Vec::new();
        // Add first so the node never passes through the root needlessly.
        for p in added {
            self.link(p, &ck, &mut ev);
        }
        for h in have {
            if &*h != ROOT && !want.contains(&&*h) {
                self.unlink(&h, &ck, &mut ev);
            }
        }
        Ok(ev)
    }

    /// Replace the children of collection `parent` (a configured `pubsub#children`).
    /// Removed children left without parents return to the root. Atomic.
    ///
    /// # Errors
    /// [`DagError::ChildrenMax`] if the new list is longer than `children_max`, and the
    /// errors of [`Dag::associate`] for each added child.
    pub fn set_children(
        &mut self,
        parent: &str,
        children: &[&str],
        may: &mut dyn FnMut(&str, &str) -> bool,
    ) -> Result<Vec<Event>, DagError> {
        self.key(parent)?;
        if parent == ROOT {
            return Err(DagError::Root);
        }
        if self.kind(parent) != Some(Kind::Collection) {
            return Err(DagError::NotACollection(parent.to_owned()));
        }
        let mut want: Vec<&str> = children.to_vec();
        want.sort_unstable();
        want.dedup();
        if self
            .children_max(parent)
            .is_some_and(|max| want.len() > max)
        {
            return Err(DagError::ChildrenMax(parent.to_owned()));
        }
        let have: Vec<Rc<str>> = self.children(parent).to_vec();
        let added: Vec<&str> = want
            .iter()
            .copied()
            .filter(|c| !have.iter().any(|h| &**h == *c))
            .collect();
        for c in &added {
            // children_max is checked on the final list above, not per edge.
            let max = self
                .nodes
                .get_mut(parent)
                .and_then(|e| e.children_max.take());
            let r = self.check_edge(parent, c);
            if let Some(e) = self.nodes.get_mut(parent) {
                e.children_max = max;
            }
            r?;
            if self.explicit_parents(c) >= self.max_parents {
                return Err(DagError::TooManyParents((*c).to_owned()));
            }
            if !may(parent, c) {
                return Err(DagError::Forbidden {
                    parent: parent.to_owned(),
                    child: (*c).to_owned(),
                });
            }
        }
        let mut ev = Vec::new();
        for h in have {
            if !want.contains(&&*h) {
                self.unlink(parent, &h, &mut ev);
            }
        }
        for c in added {
            let ck = self.key(c)?;
            self.link(parent, &ck, &mut ev);
        }
        Ok(ev)
    }

    /// Set the `children_max` of a collection. Lowering it below the current number of
    /// children keeps them and refuses new ones.
    ///
    /// # Errors
    /// [`DagError::NotFound`], [`DagError::NotACollection`], [`DagError::Root`].
    pub fn set_children_max(&mut self, id: &str, max: Option<usize>) -> Result<(), DagError> {
        if id == ROOT {
            return Err(DagError::Root);
        }
        let e = self
            .nodes
            .get_mut(id)
            .ok_or_else(|| DagError::NotFound(id.to_owned()))?;
        if e.kind != Kind::Collection {
            return Err(DagError::NotACollection(id.to_owned()));
        }
        e.children_max = max;
        Ok(())
    }

    /// Change the kind of `id`: leaf → collection is allowed (the engine purges its items,
    /// XEP-0248); collection → leaf is refused.
    ///
    /// # Errors
    /// [`DagError::NotFound`], [`DagError::Root`], [`DagError::CollectionToLeaf`].
    pub fn set_kind(&mut self, id: &str, kind: Kind) -> Result<(), DagError> {
        if id == ROOT {
            return Err(DagError::Root);
        }
        let e = self
            .nodes
            .get_mut(id)
            .ok_or_else(|| DagError::NotFound(id.to_owned()))?;
        match (e.kind, kind) {
            (Kind::Collection, Kind::Leaf) => Err(DagError::CollectionToLeaf(id.to_owned())),
            _ => {
                e.kind = kind;
                Ok(())
            }
        }
    }

    /// Delete `id`. Its parents lose it; each child that had no other parent returns to the
    /// root (the documented deletion policy). Returns every edge change.
    ///
    /// # Errors
    /// [`DagError::Root`], [`DagError::NotFound`].
    pub fn remove(&mut self, id: &str) -> Result<Vec<Event>, DagError> {
        if id == ROOT {
            return Err(DagError::Root);
        }
        let key = self.key(id)?;
        let mut ev = Vec::new();
        for c in self.children(id).to_vec() {
            self.unlink(id, &c, &mut ev);
        }
        for p in self.parents(id).to_vec() {
            // Direct removal: the node is going, it must not return to the root.
            if let Some(pe) = self.nodes.get_mut(&p) {
                sorted_remove(&mut pe.children, id);
            }
            ev.push(Event::Dissociated {
                parent: p,
                child: key.clone(),
            });
        }
        self.nodes.remove(id);
        Ok(ev)
    }

    /// The events [`Dag::remove`] would return, without changing anything: the engine
    /// builds its store batch from them, commits, and only then removes.
    ///
    /// # Errors
    /// As [`Dag::remove`].
    pub fn plan_remove(&self, id: &str) -> Result<Vec<Event>, DagError> {
        if id == ROOT {
            return Err(DagError::Root);
        }
        let key = self.key(id)?;
        let mut ev = Vec::new();
        for c in self.children(id) {
            ev.push(Event::Dissociated {
                parent: key.clone(),
                child: c.clone(),
            });
            if self.parents(c).len() == 1 {
                ev.push(Event::Associated {
                    parent: Rc::from(ROOT),
                    child: c.clone(),
                });
            }
        }
        for p in self.parents(id) {
            ev.push(Event::Dissociated {
                parent: p.clone(),
                child: key.clone(),
            });
        }
        Ok(ev)
    }

    /// Undo the edge changes `events` of a successful associate/dissociate/set/create call
    /// (newest first), e.g. when the store commit that was to persist them failed. Edges to
    /// nodes that no longer exist are skipped. To undo a [`Dag::create`], revert its events
    /// and then [`Dag::remove`] the node (it is left without parents in between).
    pub fn revert(&mut self, events: &[Event]) {
        for e in events.iter().rev() {
            let (parent, child, add) = match e {
                Event::Associated { parent, child } => (parent, child, false),
                Event::Dissociated { parent, child } => (parent, child, true),
            };
            if !self.nodes.contains_key(&**parent) || !self.nodes.contains_key(&**child) {
                continue;
            }
            if let Some(c) = self.nodes.get_mut(&**child) {
                if add {
                    sorted_insert(&mut c.parents, parent);
                } else {
                    sorted_remove(&mut c.parents, parent);
                }
            }
            if let Some(p) = self.nodes.get_mut(&**parent) {
                if add {
                    sorted_insert(&mut p.children, child);
                } else {
                    sorted_remove(&mut p.children, child);
                }
            }
        }
    }

    /// Approximate heap bytes held (entries, ids, edge lists), for the memory figures in
    /// the docs. Map overhead is counted as one entry-sized slot per node.
    pub fn heap_estimate(&self) -> usize {
        let rc = std::mem::size_of::<Rc<str>>();
        self.nodes
            .iter()
            .map(|(k, e)| {
                rc + std::mem::size_of::<Entry>()
                    + 2 * std::mem::size_of::<usize>()
                    + k.len()
                    + rc * (e.parents.capacity() + e.children.capacity())
            })
            .sum()
    }

    /// Breadth-first walk upward from `starts` (each at distance `d0`): every ancestor once,
    /// with its shortest distance, nearest first (ties in id order).
    fn upward(&self, starts: &[Rc<str>], d0: u32) -> Vec<(Rc<str>, u32)> {
        let mut out: Vec<(Rc<str>, u32)> = Vec::new();
        let mut seen: HashSet<Rc<str>> = HashSet::new();
        let mut queue: VecDeque<(Rc<str>, u32)> = VecDeque::new();
        for s in starts {
            if seen.insert(s.clone()) {
                queue.push_back((s.clone(), d0));
            }
        }
        while let Some((n, d)) = queue.pop_front() {
            for p in self.parents(&n) {
                if seen.insert(p.clone()) {
                    queue.push_back((p.clone(), d.saturating_add(1)));
                }
            }
            out.push((n, d));
        }
        out
    }

    /// Every collection above `id` with its shortest distance (1 = a parent), nearest first,
    /// the root included: what `subscription_depth` is compared with.
    pub fn ancestors(&self, id: &str) -> Vec<(Rc<str>, u32)> {
        let parents = self.parents(id).to_vec();
        self.upward(&parents, 1)
    }

    fn route<S, I>(
        &self,
        hops: Vec<(Rc<str>, u32)>,
        seen: &mut HashSet<S>,
        lookup: &mut dyn FnMut(&str) -> I,
    ) -> Vec<Route<S>>
    where
        S: Eq + Hash + Clone,
        I: IntoIterator<Item = (S, Depth)>,
    {
        let mut out = Vec::new();
        for (collection, distance) in hops {
            for (s, depth) in lookup(&collection) {
                if depth.covers(distance) && !seen.contains(&s) {
                    seen.insert(s.clone());
                    out.push(Route {
                        subscriber: s,
                        collection: collection.clone(),
                        distance,
                    });
                }
            }
        }
        out
    }

    /// The collection subscribers an item published to `leaf` reaches, each once, with the
    /// nearest collection through which its `subscription_depth` reaches the leaf.
    ///
    /// `lookup(collection)` yields the subscribers (of type `items`) of a collection with
    /// their depth, already filtered by access (the engine must check the subscriber
    /// against both the collection's and the leaf's access model). Subscribers already in
    /// `seen` (e.g. the leaf's own subscribers) are skipped, and every subscriber routed is
    /// added to it.
    pub fn fan_out<S, I>(
        &self,
        leaf: &str,
        seen: &mut HashSet<S>,
        lookup: &mut dyn FnMut(&str) -> I,
    ) -> Vec<Route<S>>
    where
        S: Eq + Hash + Clone,
        I: IntoIterator<Item = (S, Depth)>,
    {
        self.route(self.ancestors(leaf), seen, lookup)
    }

    /// The subscribers (of type `nodes`) an edge change under collection `parent` reaches:
    /// `parent`'s own at distance 1, its ancestors' further up.
    pub fn fan_out_node_event<S, I>(
        &self,
        parent: &str,
        seen: &mut HashSet<S>,
        lookup: &mut dyn FnMut(&str) -> I,
    ) -> Vec<Route<S>>
    where
        S: Eq + Hash + Clone,
        I: IntoIterator<Item = (S, Depth)>,
    {
        let Ok(pk) = self.key(parent) else {
            return Vec::new();
        };
        self.route(self.upward(&[pk], 1), seen, lookup)
    }

    /// The leaves under `collection` within `depth`, each once with its shortest distance,
    /// nearest first: the nodes whose items a collection items request aggregates.
    pub fn leaves_under(&self, collection: &str, depth: Depth) -> Vec<(Rc<str>, u32)> {
        let mut out = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<(&str, u32)> = VecDeque::from([(collection, 0)]);
        seen.insert(collection);
        while let Some((n, d)) = queue.pop_front() {
            for c in self.children(n) {
                let dc = d.saturating_add(1);
                if !depth.covers(dc) || !seen.insert(c) {
                    continue;
                }
                match self.kind(c) {
                    Some(Kind::Leaf) => out.push((c.clone(), dc)),
                    Some(Kind::Collection) => queue.push_back((c, dc)),
                    None => {}
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default `limits.pubsub_max_parents`.
    fn max_parents() -> usize {
        crate::limits::Limits::default().pubsub_max_parents
    }

    fn yes(_: &str, _: &str) -> bool {
        true
    }

    fn ids(v: &[Rc<str>]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    fn assoc(p: &str, c: &str) -> Event {
        Event::Associated {
            parent: p.into(),
            child: c.into(),
        }
    }

    fn dissoc(p: &str, c: &str) -> Event {
        Event::Dissociated {
            parent: p.into(),
            child: c.into(),
        }
    }

    /// Root, collections a, b, c (c under a and b), leaves x (under c) and y (under a).
    fn diamond() -> Dag {
        let mut d = Dag::new(100, max_parents());
        d.create("a", Kind::Collection, &[], &mut yes).expect("a");
        d.create("b", Kind::Collection, &[], &mut yes).expect("b");
        d.create("c", Kind::Collection, &["a", "b"], &mut yes)
            .expect("c");
        d.create("x", Kind::Leaf, &["c"], &mut yes).expect("x");
        d.create("y", Kind::Leaf, &["a"], &mut yes).expect("y");
        d
    }

    #[test]
    fn xep0248_2_3_root_is_a_collection_that_cannot_be_deleted() {
        let mut d = Dag::new(10, 2);
        assert_eq!(d.kind(ROOT), Some(Kind::Collection));
        assert_eq!(d.remove(ROOT), Err(DagError::Root));
        assert_eq!(d.set_kind(ROOT, Kind::Leaf), Err(DagError::Root));
        let ev = d.create("n", Kind::Leaf, &[], &mut yes).expect("n");
        assert_eq!(ev, [assoc(ROOT, "n")]);
        assert_eq!(d.collection_field("n"), [ROOT]);
        assert_eq!(d.associate(ROOT, "n", &mut yes), Ok(vec![]));
        assert_eq!(d.dissociate(ROOT, "n"), Err(DagError::Root));
        assert_eq!(
            d.associate("n", ROOT, &mut yes),
            Err(DagError::Root),
            "the root gets no parent"
        );
    }

    #[test]
    fn xep0248_5_multi_collection_association_leaves_and_returns_to_root() {
        let mut d = Dag::new(10, max_parents());
        d.create("p", Kind::Collection, &[], &mut yes).expect("p");
        d.create("q", Kind::Collection, &[], &mut yes).expect("q");
        d.create("n", Kind::Leaf, &[], &mut yes).expect("n");
        let ev = d.associate("p", "n", &mut yes).expect("assoc");
        assert_eq!(ev, [assoc("p", "n"), dissoc(ROOT, "n")]);
        let ev = d.associate("q", "n", &mut yes).expect("assoc");
        assert_eq!(ev, [assoc("q", "n")]);
        assert_eq!(ids(d.parents("n")), ["p", "q"]);
        assert_eq!(ids(d.children("p")), ["n"]);
        assert_eq!(ids(d.children(ROOT)), ["p", "q"]);
        assert_eq!(d.dissociate("p", "n"), Ok(vec![dissoc("p", "n")]));
        assert_eq!(
            d.dissociate("q", "n"),
            Ok(vec![dissoc("q", "n"), assoc(ROOT, "n")])
        );
        assert_eq!(
            d.dissociate("q", "n"),
            Err(DagError::NotAssociated {
                parent: "q".into(),
                child: "n".into()
            })
        );
    }

    #[test]
    fn xep0248_dag_rejects_cycles() {
        let mut d = diamond();
        // a → c; c may not become a's parent, nor its own.
        let e = d.associate("c", "a", &mut yes).expect_err("cycle");
        assert!(matches!(e, DagError::Cycle { .. }));
        assert_eq!(e.condition(), ("not-allowed", None));
        assert!(matches!(
            d.associate("c", "c", &mut yes),
            Err(DagError::Cycle { .. })
        ));
        assert!(matches!(
            d.set_parents("a", &["c"], &mut yes),
            Err(DagError::Cycle { .. })
        ));
        assert!(matches!(
            d.set_children("c", &["x", "b"], &mut yes),
            Err(DagError::Cycle { .. })
        ));
        assert_eq!(ids(d.children("c")), ["x"], "nothing changed");
        // A leaf cannot be a parent.
        assert_eq!(
            d.associate("x", "y", &mut yes),
            Err(DagError::NotACollection("x".into()))
        );
    }

    #[test]
    fn xep0248_children_max_is_enforced() {
        let mut d = Dag::new(10, max_parents());
        d.create("p", Kind::Collection, &[], &mut yes).expect("p");
        d.set_children_max("p", Some(1)).expect("max");
        d.create("a", Kind::Leaf, &["p"], &mut yes).expect("a");
        let e = d
            .create("b", Kind::Leaf, &["p"], &mut yes)
            .expect_err("full");
        assert_eq!(e, DagError::ChildrenMax("p".into()));
        assert_eq!(e.condition(), ("conflict", Some("max-nodes-exceeded")));
        assert!(!d.contains("b"), "a failed create leaves nothing");
        d.create("b", Kind::Leaf, &[], &mut yes).expect("b");
        assert!(d.associate("p", "b", &mut yes).is_err());
        assert!(d.set_children("p", &["a", "b"], &mut yes).is_err());
        // Swapping the one child is fine.
        let ev = d.set_children("p", &["b"], &mut yes).expect("swap");
        assert_eq!(
            ev,
            [
                dissoc("p", "a"),
                assoc(ROOT, "a"),
                assoc("p", "b"),
                dissoc(ROOT, "b")
            ]
        );
        assert_eq!(
            d.set_children_max("b", Some(3)),
            Err(DagError::NotACollection("b".into()))
        );
    }

    #[test]
    fn xep0248_association_policy_callback_and_max_parents() {
        let mut d = Dag::new(20, 2);
        for p in ["p1", "p2", "p3"] {
            d.create(p, Kind::Collection, &[], &mut yes).expect("p");
        }
        d.create("n", Kind::Leaf, &[], &mut yes).expect("n");
        let mut only_p1 = |p: &str, _: &str| p == "p1";
        assert!(matches!(
            d.set_parents("n", &["p1", "p2"], &mut only_p1),
            Err(DagError::Forbidden { .. })
        ));
        assert_eq!(d.collection_field("n"), [ROOT], "atomic");
        d.set_parents("n", &["p1", "p2"], &mut yes).expect("two");
        assert_eq!(
            d.associate("p3", "n", &mut yes),
            Err(DagError::TooManyParents("n".into()))
        );
        assert_eq!(
            d.set_parents("n", &["p1", "p2", "p3"], &mut yes),
            Err(DagError::TooManyParents("n".into()))
        );
        let ev = d.set_parents("n", &["p3", "p2"], &mut yes).expect("swap");
        assert_eq!(ev, [assoc("p3", "n"), dissoc("p1", "n")]);
        let ev = d.set_parents("n", &[], &mut yes).expect("to root");
        assert_eq!(ev, [dissoc("p2", "n"), dissoc("p3", "n"), assoc(ROOT, "n")]);
        assert!(AssociationPolicy::Whitelist.permits(false, true));
        assert!(!AssociationPolicy::Owners.permits(false, true));
        assert!(AssociationPolicy::All.permits(false, false));
        assert_eq!(
            AssociationPolicy::parse("whitelist"),
            Some(AssociationPolicy::Whitelist)
        );
    }

    #[test]
    fn xep0248_7_deleting_a_collection_reparents_orphans_to_root() {
        let mut d = diamond();
        d.create("z", Kind::Leaf, &["c"], &mut yes).expect("z");
        d.associate("b", "z", &mut yes).expect("z also under b");
        let ev = d.remove("c").expect("remove");
        assert_eq!(
            ev,
            [
                dissoc("c", "x"),
                assoc(ROOT, "x"),
                dissoc("c", "z"),
                dissoc("a", "c"),
                dissoc("b", "c"),
            ]
        );
        assert!(!d.contains("c"));
        assert_eq!(d.collection_field("x"), [ROOT]);
        assert_eq!(d.collection_field("z"), ["b"], "kept its other parent");
        assert_eq!(ids(d.children("a")), ["y"]);
    }

    #[test]
    fn xep0248_6_kind_changes() {
        let mut d = diamond();
        d.set_kind("y", Kind::Collection)
            .expect("leaf to collection");
        assert_eq!(
            d.set_kind("c", Kind::Leaf),
            Err(DagError::CollectionToLeaf("c".into()))
        );
        assert_eq!(Kind::parse("collection"), Some(Kind::Collection));
        assert_eq!(Kind::Leaf.as_str(), "leaf");
    }

    #[test]
    fn xep0248_subscription_depth_and_deduplicated_fan_out() {
        let d = diamond();
        // x is under c (1), a and b (2), root (3).
        assert_eq!(
            d.ancestors("x")
                .iter()
                .map(|(n, k)| (&**n, *k))
                .collect::<Vec<_>>(),
            [("c", 1), ("a", 2), ("b", 2), (ROOT, 3)]
        );
        // s1 on a and b (depth all): once, through a. s2 on a with depth 1: not reached.
        // s3 on root (all) and c (1): once, through c. s4 on b with depth 2: through b.
        // s5 is a direct leaf subscriber, so skipped.
        let subs = |n: &str| -> Vec<(&'static str, Depth)> {
            match n {
                "a" => vec![("s1", Depth::All), ("s2", Depth::Levels(1))],
                "b" => vec![
                    ("s1", Depth::All),
                    ("s4", Depth::Levels(2)),
                    ("s5", Depth::All),
                ],
                "c" => vec![("s3", Depth::Levels(1))],
                ROOT => vec![("s3", Depth::All)],
                _ => vec![],
            }
        };
        let mut seen: HashSet<&str> = HashSet::from(["s5"]);
        let routes = d.fan_out("x", &mut seen, &mut |n| subs(n));
        let got: Vec<(&str, &str, u32)> = routes
            .iter()
            .map(|r| (r.subscriber, &*r.collection, r.distance))
            .collect();
        assert_eq!(got, [("s3", "c", 1), ("s1", "a", 2), ("s4", "b", 2)]);
        assert!(!seen.contains("s2"));
        // Node events under a: a's subscribers at distance 1.
        let mut seen = HashSet::new();
        let routes = d.fan_out_node_event("a", &mut seen, &mut |n| subs(n));
        let got: Vec<&str> = routes.iter().map(|r| r.subscriber).collect();
        assert_eq!(got, ["s1", "s2", "s3"]);
        assert_eq!(Depth::parse("all"), Some(Depth::All));
        assert_eq!(Depth::parse("3"), Some(Depth::Levels(3)));
        assert_eq!(Depth::parse("0"), None);
        assert_eq!(Depth::default().to_string(), "1");
    }

    #[test]
    fn xep0248_items_retrieval_leaves_under_a_collection() {
        let d = diamond();
        let leaves = |c: &str, depth| {
            d.leaves_under(c, depth)
                .iter()
                .map(|(n, k)| (n.to_string(), *k))
                .collect::<Vec<_>>()
        };
        assert_eq!(leaves("a", Depth::Levels(1)), [("y".into(), 1)]);
        assert_eq!(
            leaves("a", Depth::All),
            [("y".to_string(), 1), ("x".to_string(), 2)]
        );
        // x reached through a and b from the root, listed once.
        assert_eq!(
            leaves(ROOT, Depth::All),
            [("y".to_string(), 2), ("x".to_string(), 3)]
        );
        assert!(leaves("x", Depth::All).is_empty());
    }

    #[test]
    fn slash_paths_create_implicit_collections() {
        assert_eq!(
            implicit_parents("sensors/kitchen/temp"),
            Some(vec!["sensors", "sensors/kitchen"])
        );
        assert_eq!(implicit_parents("flat"), Some(vec![]));
        for bad in ["a//b", "/a", "a/"] {
            assert_eq!(implicit_parents(bad), None, "{bad}");
        }
        let deep = vec!["s"; MAX_PATH_SEGMENTS + 1].join("/");
        assert_eq!(implicit_parents(&deep), None);

        let mut d = Dag::new(10, max_parents());
        let (created, ev) = d
            .create_with_path("sensors/kitchen/temp", Kind::Leaf, &mut yes)
            .expect("path");
        assert_eq!(
            ids(&created),
            ["sensors", "sensors/kitchen", "sensors/kitchen/temp"]
        );
        assert_eq!(
            ev,
            [
                assoc(ROOT, "sensors"),
                assoc("sensors", "sensors/kitchen"),
                assoc("sensors/kitchen", "sensors/kitchen/temp")
            ]
        );
        let (created, _) = d
            .create_with_path("sensors/hall/temp", Kind::Leaf, &mut yes)
            .expect("sibling");
        assert_eq!(ids(&created), ["sensors/hall", "sensors/hall/temp"]);
        let all: Vec<String> = d
            .leaves_under("sensors", Depth::All)
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(all, ["sensors/hall/temp", "sensors/kitchen/temp"]);
        // A leaf in the path: refused, nothing created.
        assert_eq!(
            d.create_with_path("sensors/kitchen/temp/x", Kind::Leaf, &mut yes),
            Err(DagError::NotACollection("sensors/kitchen/temp".into()))
        );
        // Not enough room for all of them: refused, nothing created.
        let before = d.len();
        assert_eq!(
            d.create_with_path("a/b/c/d/e/f", Kind::Leaf, &mut yes),
            Err(DagError::TooManyNodes)
        );
        assert_eq!(d.len(), before);
        // A policy refusal midway rolls back what was created.
        let mut no_deep = |p: &str, _: &str| !p.contains('/');
        assert!(matches!(
            d.create_with_path("m/n/o", Kind::Leaf, &mut no_deep),
            Err(DagError::Forbidden { .. })
        ));
        assert_eq!(d.len(), before);
        // An existing middle element (made by hand, under the root) is used as it is.
        d.create("m2/n", Kind::Collection, &[], &mut yes)
            .expect("by hand");
        let (created, _) = d
            .create_with_path("m2/n/o", Kind::Leaf, &mut yes)
            .expect("mixed");
        assert_eq!(ids(&created), ["m2", "m2/n/o"]);
        assert_eq!(d.collection_field("m2/n/o"), ["m2/n"]);
        assert_eq!(d.collection_field("m2/n"), [ROOT], "kept its parents");
        assert_eq!(
            d.create_with_path("x//y", Kind::Leaf, &mut yes),
            Err(DagError::InvalidPath("x//y".into()))
        );
    }

    #[test]
    fn revert_undoes_a_create_and_an_association() {
        let mut d = diamond();
        let ev = d.create("n", Kind::Leaf, &["a", "b"], &mut yes).expect("n");
        d.revert(&ev);
        assert!(d.parents("n").is_empty());
        assert_eq!(ids(d.children("a")), ["c", "y"]);
        d.remove("n").expect("remove");
        check_invariants(&d);
        let ev = d.associate("b", "y", &mut yes).expect("assoc");
        d.revert(&ev);
        assert_eq!(d.collection_field("y"), ["a"]);
        assert_eq!(ids(d.children("b")), ["c"]);
        check_invariants(&d);
    }

    #[test]
    fn memory_figure() {
        // 1024 nodes: 32 collections `site/room` under 8 sites, 4 sensors per room, each
        // sensor also in one of 8 `kind` collections (multi-parent).
        let mut d = Dag::new(2048, max_parents());
        for k in 0..8 {
            d.create(&format!("kind{k}"), Kind::Collection, &[], &mut yes)
                .expect("kind");
        }
        let mut n = 8;
        'fill: for site in 0..8 {
            for room in 0..31 {
                for sensor in 0..4 {
                    let id = format!("site{site}/room{room}/sensor{sensor}");
                    d.create_with_path(&id, Kind::Leaf, &mut yes).expect("path");
                    d.associate(&format!("kind{sensor}"), &id, &mut yes)
                        .expect("kind");
                    n = d.len();
                    if n >= 1024 {
                        break 'fill;
                    }
                }
            }
        }
        let bytes = d.heap_estimate();
        println!(
            "dag: {n} nodes ({} edges with multi-parent leaves) ~ {} KiB",
            d.nodes.values().map(|e| e.parents.len()).sum::<usize>(),
            bytes / 1024
        );
        assert!(bytes > n * std::mem::size_of::<Entry>());
    }

    #[test]
    fn max_nodes_bound() {
        let mut d = Dag::new(2, 1);
        d.create("a", Kind::Leaf, &[], &mut yes).expect("a");
        d.create("b", Kind::Leaf, &[], &mut yes).expect("b");
        assert_eq!(
            d.create("c", Kind::Leaf, &[], &mut yes),
            Err(DagError::TooManyNodes)
        );
        assert_eq!(
            d.create("a", Kind::Leaf, &[], &mut yes),
            Err(DagError::Exists("a".into()))
        );
        d.remove("a").expect("remove");
        d.create("c", Kind::Leaf, &[], &mut yes)
            .expect("room again");
    }

    #[test]
    fn load_drops_bad_edges_and_is_order_independent() {
        let stored = vec![
            ("x", Kind::Leaf, vec!["c"], None),
            ("c", Kind::Collection, vec!["a", "b"], Some(5)),
            ("a", Kind::Collection, vec!["c"], None), // cycle: a → c → a
            ("b", Kind::Collection, vec![], None),
            ("y", Kind::Leaf, vec!["x", "ghost"], None), // leaf parent, unknown parent
        ];
        let (d, dropped) = Dag::load(10, 8, stored.clone());
        let mut reversed = stored;
        reversed.reverse();
        let (d2, dropped2) = Dag::load(10, 8, reversed);
        assert_eq!(dropped, dropped2);
        for n in ["a", "b", "c", "x", "y", ROOT] {
            assert_eq!(d.parents(n), d2.parents(n), "{n}");
        }
        assert_eq!(dropped.len(), 3, "{dropped:?}");
        assert_eq!(d.collection_field("y"), [ROOT]);
        assert_eq!(d.children_max("c"), Some(5));
        check_invariants(&d);
    }

    /// Every invariant of the module docs.
    fn check_invariants(d: &Dag) {
        for (id, e) in &d.nodes {
            assert!(
                e.parents.windows(2).all(|w| w[0] < w[1]),
                "{id}: parents sorted"
            );
            assert!(
                e.children.windows(2).all(|w| w[0] < w[1]),
                "{id}: children sorted"
            );
            if &**id == ROOT {
                assert!(e.parents.is_empty());
                assert_eq!(e.kind, Kind::Collection);
            } else {
                assert!(!e.parents.is_empty(), "{id}: has a parent");
                assert!(e.parents.len() <= d.max_parents, "{id}: parents bound");
                assert!(
                    e.parents.len() == 1 || !e.parents.iter().any(|p| &**p == ROOT),
                    "{id}: root only as sole parent"
                );
            }
            if e.kind == Kind::Leaf {
                assert!(e.children.is_empty(), "{id}: leaf without children");
            }
            for p in &e.parents {
                let pe = d.nodes.get(p).expect("parent exists");
                assert_eq!(pe.kind, Kind::Collection);
                assert!(pe.children.contains(id), "{p} lists {id}");
            }
            for c in &e.children {
                assert!(d.nodes.get(c).expect("child exists").parents.contains(id));
            }
        }
        assert!(d.len() <= d.max_nodes);
        // Acyclic and reachable: Kahn's algorithm from the root visits every node.
        let mut indeg: HashMap<&str, usize> = d
            .nodes
            .iter()
            .map(|(k, e)| (&**k, e.parents.len()))
            .collect();
        let mut queue: Vec<&str> = vec![ROOT];
        let mut visited = 0;
        while let Some(n) = queue.pop() {
            visited += 1;
            for c in d.children(n) {
                let k = indeg.get_mut(&**c).expect("indeg");
                *k -= 1;
                if *k == 0 {
                    queue.push(c);
                }
            }
        }
        assert_eq!(
            visited,
            d.nodes.len(),
            "acyclic and all reachable from root"
        );
    }

    fn edge_set(d: &Dag) -> HashSet<(String, String)> {
        d.nodes
            .iter()
            .flat_map(|(c, e)| {
                e.parents
                    .iter()
                    .map(move |p| (p.to_string(), c.to_string()))
            })
            .collect()
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn property_random_operations_keep_invariants_and_events_match_edges() {
        let (mut ok, mut total, mut multi_parent, mut deepest, mut cycles) = (0, 0, 0, 0, 0);
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut d = Dag::new(24, 3);
            let names: Vec<String> = (0..30).map(|i| format!("n{i}")).collect();
            // Mostly existing nodes (collections as parents), sometimes any name, so both
            // the successful and the refused paths are exercised.
            let pick = |rng: &mut Rng, d: &Dag, collection: bool| -> String {
                let mut pool: Vec<&Rc<str>> = d
                    .nodes
                    .iter()
                    .filter(|(_, e)| !collection || e.kind == Kind::Collection)
                    .map(|(k, _)| k)
                    .collect();
                pool.sort();
                if pool.is_empty() || rng.below(6) == 0 {
                    names[rng.below(names.len())].clone()
                } else {
                    pool[rng.below(pool.len())].to_string()
                }
            };
            for step in 0..400 {
                let before = edge_set(&d);
                let snapshot = d.clone();
                let mut may = |p: &str, c: &str| (p.len() + c.len() + step) % 11 != 0;
                let op = rng.below(9);
                let a = if op <= 1 {
                    names[rng.below(names.len())].clone()
                } else {
                    pick(&mut rng, &d, op == 7 || op == 8)
                };
                let b = pick(&mut rng, &d, op != 7);
                let c = pick(&mut rng, &d, op != 7);
                let res = match op {
                    0 | 1 => {
                        let kind = if rng.below(2) == 0 {
                            Kind::Leaf
                        } else {
                            Kind::Collection
                        };
                        d.create(
                            &a,
                            kind,
                            &[b.as_str(), c.as_str()][..rng.below(3)],
                            &mut may,
                        )
                    }
                    2 | 3 => d.associate(&a, &b, &mut may),
                    4 => d.dissociate(&a, &b),
                    5 => {
                        let plan = d.plan_remove(&a);
                        let done = d.remove(&a);
                        assert_eq!(plan, done, "plan_remove predicts remove");
                        done
                    }
                    6 => d.set_parents(&a, &[b.as_str(), c.as_str()][..rng.below(3)], &mut may),
                    7 => d.set_children(&a, &[b.as_str(), c.as_str()][..rng.below(3)], &mut may),
                    _ => d
                        .set_children_max(&a, [None, Some(1), Some(3)][rng.below(3)])
                        .map(|()| Vec::new()),
                };
                check_invariants(&d);
                let after = edge_set(&d);
                total += 1;
                multi_parent += d.nodes.values().filter(|e| e.parents.len() > 1).count();
                for k in d.nodes.keys() {
                    deepest = deepest.max(d.ancestors(k).iter().map(|a| a.1).max().unwrap_or(0));
                }
                match res {
                    Ok(events) => {
                        ok += 1;
                        let events_copy = events.clone();
                        let before_copy = before.clone();
                        // Replaying the events on the old edge set gives the new one.
                        let mut replay = before;
                        for e in events {
                            match e {
                                Event::Associated { parent, child } => {
                                    assert!(replay.insert((parent.to_string(), child.to_string())));
                                }
                                Event::Dissociated { parent, child } => {
                                    assert!(
                                        replay.remove(&(parent.to_string(), child.to_string()))
                                    );
                                }
                            }
                        }
                        assert_eq!(replay, after, "seed {seed} step {step}");
                        // Reverting an edge-only change restores the old edges exactly.
                        if op >= 2 && op != 5 && step % 3 == 0 {
                            let mut undone = d.clone();
                            undone.revert(&events_copy);
                            assert_eq!(edge_set(&undone), before_copy, "revert: seed {seed}");
                            check_invariants(&undone);
                        }
                    }
                    Err(e) => {
                        cycles += usize::from(matches!(e, DagError::Cycle { .. }));
                        assert_eq!(
                            before, after,
                            "failed op changed edges: seed {seed} step {step}"
                        );
                        assert_eq!(snapshot.len(), d.len());
                        for (k, e) in &snapshot.nodes {
                            assert_eq!(d.kind(k), Some(e.kind));
                            assert_eq!(d.children_max(k), e.children_max);
                        }
                    }
                }
                // Fan-out reaches each subscriber at most once.
                if let Some(leaf) = d.nodes.keys().find(|k| d.kind(k) == Some(Kind::Leaf)) {
                    let mut seen = HashSet::new();
                    let routes = d.fan_out(leaf, &mut seen, &mut |n: &str| {
                        vec![(n.len() % 3, Depth::All), (7, Depth::Levels(1))]
                    });
                    let mut subs: Vec<usize> = routes.iter().map(|r| r.subscriber).collect();
                    let n = subs.len();
                    subs.sort_unstable();
                    subs.dedup();
                    assert_eq!(subs.len(), n);
                    // `ancestors` gives shortest distances: check against a relaxation over
                    // every edge, independent of the breadth-first walk.
                    let mut dist: HashMap<String, u32> = HashMap::new();
                    for p in d.parents(leaf) {
                        dist.insert(p.to_string(), 1);
                    }
                    for _ in 0..d.nodes.len() {
                        for (c, e) in &d.nodes {
                            if let Some(dc) = dist.get(&**c).copied() {
                                for p in &e.parents {
                                    let slot = dist.entry(p.to_string()).or_insert(u32::MAX);
                                    *slot = (*slot).min(dc + 1);
                                }
                            }
                        }
                    }
                    let got: HashMap<String, u32> = d
                        .ancestors(leaf)
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect();
                    assert_eq!(got, dist);
                    // Each route uses the nearest covering collection; subscriber 7
                    // (depth 1) is reached exactly when the leaf has a parent.
                    for r in &routes {
                        assert_eq!(dist[&*r.collection], r.distance);
                        if r.subscriber != 7 {
                            let nearest = dist
                                .iter()
                                .filter(|(k, _)| k.len() % 3 == r.subscriber)
                                .map(|(_, v)| *v)
                                .min();
                            assert_eq!(nearest, Some(r.distance));
                        }
                    }
                    assert!(routes.iter().any(|r| r.subscriber == 7));
                }
            }
        }
        // The generator must reach the interesting shapes, or the test proves little.
        println!(
            "dag property: {ok}/{total} ops succeeded, {cycles} cycles refused, deepest {deepest}"
        );
        assert!(ok * 4 > total, "{ok}/{total} operations succeeded");
        assert!(multi_parent > 0 && deepest >= 4 && cycles > 0);
    }
}
