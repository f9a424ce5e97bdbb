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
use std::hash::Hash;
use std::rc::Rc;

mod types;

pub use types::{AssociationPolicy, DagError, Depth, Event, Kind, Route};

/// The association policy the engine passes in: may `parent` (first) take `child`?
pub type Policy<'a> = &'a mut dyn FnMut(&str, &str) -> bool;
/// What a change of the graph returns: the edge events to persist and notify, or why it
/// was refused (nothing changed then).
pub type Changes = Result<Vec<Event>, DagError>;

/// The node id of the service root collection.
pub const ROOT: &str = "";
/// Most `/`-separated segments in a node id whose implicit parents are auto-created. A
/// shape bound of a node id (whose length, 1023 bytes, already bounds its memory), not a
/// resource bound, so not in `[limits]`.
pub const MAX_PATH_SEGMENTS: usize = 16;

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

/// `v` sorted, without repeats.
fn sorted_set(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v.dedup();
    v
}

/// A new edge list `want` against the current one `have`: the members of `want` to add, in
/// `want`'s order, and the members of `have` to drop, in `have`'s order.
fn diff<'a>(want: &[&'a str], have: &[Rc<str>]) -> (Vec<&'a str>, Vec<Rc<str>>) {
    let added = want
        .iter()
        .copied()
        .filter(|w| !have.iter().any(|h| &**h == *w))
        .collect();
    let dropped = have
        .iter()
        .filter(|h| !want.contains(&&***h))
        .cloned()
        .collect();
    (added, dropped)
}

/// `Ok` if `may` allows the edge `parent` → `child`, else [`DagError::Forbidden`].
fn permit(may: Policy<'_>, parent: &str, child: &str) -> Result<(), DagError> {
    if may(parent, child) {
        Ok(())
    } else {
        Err(DagError::Forbidden {
            parent: parent.to_owned(),
            child: child.to_owned(),
        })
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

    /// The entry of an existing node other than the root, to change it.
    fn non_root_entry_mut(&mut self, id: &str) -> Result<&mut Entry, DagError> {
        if id == ROOT {
            return Err(DagError::Root);
        }
        self.nodes
            .get_mut(id)
            .ok_or_else(|| DagError::NotFound(id.to_owned()))
    }

    /// [`Dag::key`], refusing the root ([`DagError::Root`]) after checking that `id` exists.
    fn non_root_key(&self, id: &str) -> Result<Rc<str>, DagError> {
        let key = self.key(id)?;
        if id == ROOT {
            return Err(DagError::Root);
        }
        Ok(key)
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
        self.check_edge_with(parent, child, true)
    }

    /// [`Dag::check_edge`]; the parent's `children_max` only if `per_edge_max` (not when
    /// the caller checks it on a whole new list).
    fn check_edge_with(
        &self,
        parent: &str,
        child: &str,
        per_edge_max: bool,
    ) -> Result<(), DagError> {
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
            && per_edge_max
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

    /// The checks of one added association, in the order their errors are reported:
    /// [`Dag::check_edge_with`], the child's bound on parents, then the policy `may`.
    fn check_association(
        &self,
        parent: &str,
        child: &str,
        per_edge_max: bool,
        may: Policy<'_>,
    ) -> Result<(), DagError> {
        self.check_edge_with(parent, child, per_edge_max)?;
        if self.explicit_parents(child) >= self.max_parents {
            return Err(DagError::TooManyParents(child.to_owned()));
        }
        permit(may, parent, child)
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
    pub fn create(&mut self, id: &str, kind: Kind, parents: &[&str], may: Policy<'_>) -> Changes {
        if self.nodes.contains_key(id) {
            return Err(DagError::Exists(id.to_owned()));
        }
        if self.len() >= self.max_nodes {
            return Err(DagError::TooManyNodes);
        }
        let parents = sorted_set(parents.iter().copied().filter(|p| *p != ROOT).collect());
        if parents.len() > self.max_parents {
            return Err(DagError::TooManyParents(id.to_owned()));
        }
        // Check against a graph where the node exists (a new node cannot close a cycle, but
        // check_edge wants both ends).
        let key: Rc<str> = Rc::from(id);
        self.nodes.insert(key.clone(), Entry::new(kind));
        let checked = parents.iter().try_for_each(|p| {
            self.check_edge(p, id)?;
            permit(may, p, id)
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
        may: Policy<'_>,
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
    pub fn associate(&mut self, parent: &str, child: &str, may: Policy<'_>) -> Changes {
        let ck = self.key(child)?;
        if self.parents(child).iter().any(|p| &**p == parent) {
            return Ok(Vec::new());
        }
        if parent == ROOT {
            // The root is only ever an implicit, sole parent.
            return Err(DagError::Root);
        }
        self.check_association(parent, child, true, may)?;
        let mut ev = Vec::new();
        self.link(parent, &ck, &mut ev);
        Ok(ev)
    }

    /// Dissociate `child` from `parent`; a node left without parents returns to the root.
    ///
    /// # Errors
    /// [`DagError::NotFound`], [`DagError::NotAssociated`], [`DagError::Root`] (dissociating
    /// from the root: give the node another parent instead).
    pub fn dissociate(&mut self, parent: &str, child: &str) -> Changes {
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
    pub fn set_parents(&mut self, child: &str, parents: &[&str], may: Policy<'_>) -> Changes {
        let ck = self.non_root_key(child)?;
        let want = sorted_set(parents.iter().copied().filter(|p| *p != ROOT).collect());
        if want.len() > self.max_parents {
            return Err(DagError::TooManyParents(child.to_owned()));
        }
        let (added, dropped) = diff(&want, self.parents(child));
        for p in &added {
            self.check_edge(p, child)?;
            permit(may, p, child)?;
        }
        let mut ev = Vec::new();
        // Add first so the node never passes through the root needlessly; the root itself is
        // left by `link`, never dropped here (that would orphan a node with no new parent).
        for p in added {
            self.link(p, &ck, &mut ev);
        }
        for h in dropped.iter().filter(|h| &***h != ROOT) {
            self.unlink(h, &ck, &mut ev);
        }
        Ok(ev)
    }

    /// Replace the children of collection `parent` (a configured `pubsub#children`).
    /// Removed children left without parents return to the root. Atomic.
    ///
    /// # Errors
    /// [`DagError::ChildrenMax`] if the new list is longer than `children_max`, and the
    /// errors of [`Dag::associate`] for each added child.
    pub fn set_children(&mut self, parent: &str, children: &[&str], may: Policy<'_>) -> Changes {
        self.non_root_key(parent)?;
        if self.kind(parent) != Some(Kind::Collection) {
            return Err(DagError::NotACollection(parent.to_owned()));
        }
        let want = sorted_set(children.to_vec());
        if self
            .children_max(parent)
            .is_some_and(|max| want.len() > max)
        {
            return Err(DagError::ChildrenMax(parent.to_owned()));
        }
        let (added, dropped) = diff(&want, self.children(parent));
        for c in &added {
            // children_max is checked on the final list above, not per edge.
            self.check_association(parent, c, false, may)?;
        }
        let mut ev = Vec::new();
        for h in &dropped {
            self.unlink(parent, h, &mut ev);
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
        let e = self.non_root_entry_mut(id)?;
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
        let e = self.non_root_entry_mut(id)?;
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
    pub fn remove(&mut self, id: &str) -> Changes {
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
    pub fn plan_remove(&self, id: &str) -> Changes {
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

    /// `collection` itself at distance 1 and every collection above it further up: the
    /// hops a node event (an edge change under `collection`) travels. Empty when
    /// `collection` is not in the graph.
    pub fn with_ancestors(&self, collection: &str) -> Vec<(Rc<str>, u32)> {
        match self.key(collection) {
            Ok(k) => self.upward(&[k], 1),
            Err(_) => Vec::new(),
        }
    }

    /// The subscribers the `hops` (collection, distance) reach, each once, with the nearest
    /// collection through which its `subscription_depth` reaches the origin.
    ///
    /// For an item published to a leaf the hops are [`Dag::ancestors`] of the leaf (type
    /// `items` subscribers); for a node event under a collection they are
    /// [`Dag::with_ancestors`] of it (type `nodes`). `lookup(collection)` yields the
    /// subscribers of a collection with their depth, already filtered by access (the engine
    /// must check the subscriber against both the collection's and the leaf's access
    /// model). Subscribers already in `seen` (e.g. the leaf's own subscribers) are skipped,
    /// and every subscriber routed is added to it.
    pub fn fan_out<S, I>(
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
mod tests;
