//! XEP-0115 Entity Capabilities, sans IO: what PEP (XEP-0163 §4.2 "Notification Filtering")
//! needs to know which node names each available resource wants notifications for.
//!
//! This module owns:
//! - parsing the `<c xmlns='http://jabber.org/protocol/caps'/>` element of a presence
//!   ([`parse_caps`]);
//! - the verification string of a disco#info result (XEP-0115 §5.1, [`verification_string`])
//!   and its SHA-1 / base64 form ([`ver_sha1`]), with the §5.4 ill-formedness rules;
//! - [`CapsTable`]: a bounded cache `(hash, ver) → interests`, the table of disco#info
//!   queries under way (one query per unknown `ver`, whatever the number of resources that
//!   advertise it), and the current interests of every available full JID.
//!
//! "Interests" are the `+notify` features of a disco#info result stripped to node names
//! (`urn:xmpp:avatar:metadata+notify` → `urn:xmpp:avatar:metadata`), sorted, shared as
//! [`Interests`] (`Rc<[Rc<str>]>`) between the cache and every resource that advertises them;
//! node names are interned so a thousand clients of the same software cost one copy.
//!
//! It does not own presence routing, the disco#info reply of the server, or any clock or
//! socket: the router feeds it presences, disco#info results and the current time, and sends
//! the [`DiscoQuery`]s it returns. Legacy caps (no `hash` attribute, XEP-0115 §1.2 "legacy
//! format") are ignored: such a resource gets no interests. Only `sha-1` results are
//! verified and cached; a resource advertising another hash is asked directly and its answer
//! applies to it alone (§5.4 rule 3).
//!
//! # Bounds and memory
//!
//! | what | bound | cost |
//! |---|---|---|
//! All bounds come from `[limits]` through [`CapsLimits::from_limits`]:
//!
//! | what | bound | cost |
//! |---|---|---|
//! | cache entries | [`CapsLimits::cache_entries`] (`limits.caps_cache_entries`, default 256), least recently used evicted | ≈ 100 B + 16 B per interest each, node names interned and shared |
//! | interests per `ver` | [`CapsLimits::max_interests`] (`limits.caps_max_interests`, default 64) | extra `+notify` features are dropped, sorted order kept |
//! | caps attributes | [`CapsLimits::max_attr_bytes`] (`limits.caps_max_attr_bytes`, default 256) | longer `hash`/`node`/`ver` count as no caps, so keys stay small |
//! | interned names | ≤ (`cache_entries` + `max_jids`) × `max_interests`; a name is dropped when nothing holds it | ≈ 40 B + the name |
//! | tracked full JIDs | [`CapsLimits::max_jids`] (`limits.max_connections`; default of the struct 4096) | ≈ 200 B each (JID, caps, a share of the interests); beyond it a resource gets no interests (the caller logs it) |
//! | queries under way | [`CapsLimits::max_pending`] (`limits.caps_max_pending`, default 64) | ≈ 150 B each; beyond it no query is sent and the resource waits for its next presence |
//! | waiters | each tracked JID waits for at most one query, so ≤ `max_jids` in total | one JID each |
//!
//! Measured by [`CapsTable::heap_estimate`] (test `memory_figure`): 256 cached `ver`s of 12
//! interests each plus 256 resources ≈ 123 KiB when the versions share their node names (the
//! usual case: they are the common XEPs), ≈ 203 KiB when half the names of every version are
//! unique to it.
//!
//! A query not answered within [`QUERY_TIMEOUT_MS`] is given up by [`CapsTable::expire`]; the
//! next resource that advertises the same `ver` is asked instead.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

use crate::jid::Jid;
use crate::limits::Limits;
use crate::proto::NS_DISCO_INFO;
use crate::sasl::base64_encode;
use crate::xml::{Element, NS_CLIENT};

/// XEP-0115 namespace.
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0004 data forms namespace (the XEP-0128 extended info forms).
const NS_DATA: &str = "jabber:x:data";
/// The one hash function this table verifies and caches (XEP-0115 §5.1, IANA name).
pub const HASH_SHA1: &str = "sha-1";
/// Suffix of a disco feature that asks for PEP notifications of a node (XEP-0163 §4.2).
pub const NOTIFY_SUFFIX: &str = "+notify";
/// How long a disco#info query may stay unanswered before [`CapsTable::expire`] gives up
/// on it, in milliseconds.
pub const QUERY_TIMEOUT_MS: u64 = 30_000;

/// Node names a resource wants notifications for, sorted, without duplicates.
pub type Interests = Rc<[Rc<str>]>;

/// The caps advertised in one presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceCaps {
    /// No `<c/>` element.
    Absent,
    /// A `<c/>` without `hash` (pre-1.4 legacy format): ignored.
    Legacy,
    /// A `<c/>` with `hash`, `node` and `ver`.
    Hashed(Caps),
}

/// A hashed caps element (XEP-0115 §4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caps {
    /// Hash function name (`sha-1`).
    pub hash: Box<str>,
    /// The software's URI.
    pub node: Box<str>,
    /// Base64 of the hash of the verification string.
    pub ver: Box<str>,
}

/// Why a disco#info result gives no verification string (XEP-0115 §5.4 rule 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapsError {
    /// The stanza has no `<query xmlns='http://jabber.org/protocol/disco#info'/>`.
    NoQuery,
    /// An identity lacks `category` or `type` (required by XEP-0030).
    IdentityIncomplete,
    /// Two identities with the same category/type/lang/name (§5.4 4c).
    DuplicateIdentity,
    /// A feature without `var`.
    FeatureIncomplete,
    /// Two features with the same `var` (§5.4 4d).
    DuplicateFeature,
    /// Two extended info forms with the same FORM_TYPE (§5.4 4e).
    DuplicateFormType,
    /// A FORM_TYPE field with several different values (§5.4 4e).
    FormTypeConflict,
}

impl fmt::Display for CapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            CapsError::NoQuery => "no disco#info query element",
            CapsError::IdentityIncomplete => "identity without category or type",
            CapsError::DuplicateIdentity => "duplicate identity",
            CapsError::FeatureIncomplete => "feature without var",
            CapsError::DuplicateFeature => "duplicate feature",
            CapsError::DuplicateFormType => "duplicate extended form FORM_TYPE",
            CapsError::FormTypeConflict => "FORM_TYPE with several different values",
        };
        f.write_str(s)
    }
}

impl std::error::Error for CapsError {}

/// The caps element of `presence`, if any (XEP-0115 §4). Attributes longer than
/// `max_attr_bytes` (`limits.caps_max_attr_bytes`) count as absent caps, so a hostile
/// client cannot make the table store large keys.
pub fn parse_caps(presence: &Element, max_attr_bytes: usize) -> PresenceCaps {
    let Some(c) = presence.child("c", NS_CAPS) else {
        return PresenceCaps::Absent;
    };
    let Some(hash) = c.attr("hash") else {
        return PresenceCaps::Legacy;
    };
    let (Some(node), Some(ver)) = (c.attr("node"), c.attr("ver")) else {
        return PresenceCaps::Absent;
    };
    if [hash, node, ver]
        .iter()
        .any(|s| s.is_empty() || s.len() > max_attr_bytes)
    {
        return PresenceCaps::Absent;
    }
    PresenceCaps::Hashed(Caps {
        hash: hash.into(),
        node: node.into(),
        ver: ver.into(),
    })
}

/// The disco#info query of an IQ result, or the query itself.
fn disco_query(e: &Element) -> Option<&Element> {
    if e.is("query", NS_DISCO_INFO) {
        Some(e)
    } else {
        e.child("query", NS_DISCO_INFO)
    }
}

/// Text of every `<value/>` of a data form field.
fn field_values(field: &Element) -> Vec<String> {
    field
        .elements()
        .filter(|v| v.is("value", NS_DATA))
        .map(Element::text)
        .collect()
}

/// The XEP-0115 §5.1 verification string `S` of a disco#info result (`iq` or its `<query/>`).
///
/// Identities sorted field by field (category, type, xml:lang, name; octet order, as the
/// XEP words it; a generator that sorts the joined strings differs only when a field has a
/// character below `/`, and then its answer is simply not cached), each written
/// `category/type/lang/name<`; features sorted, each `var<`; then each XEP-0128 form with a
/// hidden FORM_TYPE, sorted by FORM_TYPE: `FORM_TYPE<`, then its other fields sorted by
/// `var`, each `var<` followed by its values sorted, each `value<`. Forms without FORM_TYPE
/// and forms whose FORM_TYPE is not `hidden` are skipped (§5.4 4f).
///
/// # Errors
/// The §5.4 ill-formedness rules: duplicate identities, features or FORM_TYPEs, a FORM_TYPE
/// with several different values, and identities or features without their required
/// attributes. An ill-formed result must not be cached.
pub fn verification_string(disco: &Element) -> Result<String, CapsError> {
    let q = disco_query(disco).ok_or(CapsError::NoQuery)?;
    let mut identities: Vec<[&str; 4]> = Vec::new();
    let mut features: Vec<&str> = Vec::new();
    let mut forms: Vec<(String, &Element)> = Vec::new();
    for e in q.elements() {
        if e.is("identity", NS_DISCO_INFO) {
            let (Some(cat), Some(ty)) = (e.attr("category"), e.attr("type")) else {
                return Err(CapsError::IdentityIncomplete);
            };
            let lang = e.attr("xml:lang").unwrap_or("");
            let name = e.attr("name").unwrap_or("");
            identities.push([cat, ty, lang, name]);
        } else if e.is("feature", NS_DISCO_INFO) {
            features.push(e.attr("var").ok_or(CapsError::FeatureIncomplete)?);
        } else if e.is("x", NS_DATA) {
            let Some(ft) = e
                .elements()
                .find(|f| f.is("field", NS_DATA) && f.attr("var") == Some("FORM_TYPE"))
            else {
                continue;
            };
            let mut values = field_values(ft);
            values.sort();
            values.dedup();
            if values.len() > 1 {
                return Err(CapsError::FormTypeConflict);
            }
            if ft.attr("type") != Some("hidden") {
                continue;
            }
            let value = values.pop().unwrap_or_default();
            forms.push((value, e));
        }
    }
    identities.sort_unstable();
    if identities.windows(2).any(|w| w[0] == w[1]) {
        return Err(CapsError::DuplicateIdentity);
    }
    features.sort_unstable();
    if features.windows(2).any(|w| w[0] == w[1]) {
        return Err(CapsError::DuplicateFeature);
    }
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(CapsError::DuplicateFormType);
    }
    let mut s = String::with_capacity(256);
    for [cat, ty, lang, name] in identities {
        for (i, part) in [cat, ty, lang, name].into_iter().enumerate() {
            if i > 0 {
                s.push('/');
            }
            s.push_str(part);
        }
        s.push('<');
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (form_type, form) in forms {
        s.push_str(&form_type);
        s.push('<');
        let mut fields: Vec<(&str, Vec<String>)> = form
            .elements()
            .filter(|f| f.is("field", NS_DATA))
            .filter_map(|f| f.attr("var").map(|v| (v, f)))
            .filter(|(v, _)| *v != "FORM_TYPE")
            .map(|(v, f)| {
                let mut vals = field_values(f);
                vals.sort();
                (v, vals)
            })
            .collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (var, vals) in fields {
            s.push_str(var);
            s.push('<');
            for v in vals {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    Ok(s)
}

/// The `sha-1` `ver` of a disco#info result: base64 of SHA-1 of [`verification_string`].
///
/// # Errors
/// As [`verification_string`].
pub fn ver_sha1(disco: &Element) -> Result<String, CapsError> {
    let s = verification_string(disco)?;
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes());
    Ok(base64_encode(d.as_ref()))
}

/// The node names of the `+notify` features of a disco#info result, sorted and
/// de-duplicated, at most `max` (`limits.caps_max_interests`). A bare `+notify` (empty
/// node) is skipped.
pub fn notify_nodes(disco: &Element, max: usize) -> Vec<&str> {
    let Some(q) = disco_query(disco) else {
        return Vec::new();
    };
    let mut nodes: Vec<&str> = q
        .elements()
        .filter(|e| e.is("feature", NS_DISCO_INFO))
        .filter_map(|e| e.attr("var")?.strip_suffix(NOTIFY_SUFFIX))
        .filter(|n| !n.is_empty())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes.truncate(max);
    nodes
}

/// Bounds of a [`CapsTable`] (see the module docs for their memory cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapsLimits {
    /// Most cached `(hash, ver)` entries.
    pub cache_entries: usize,
    /// Most full JIDs tracked (one per available resource).
    pub max_jids: usize,
    /// Most disco#info queries under way.
    pub max_pending: usize,
    /// Most interests kept per `ver`.
    pub max_interests: usize,
    /// Longest `hash`, `node` or `ver` attribute accepted, in bytes.
    pub max_attr_bytes: usize,
}

impl CapsLimits {
    /// The bounds of `[limits]`: `caps_*`, and one tracked JID per connection.
    pub fn from_limits(l: &Limits) -> CapsLimits {
        CapsLimits {
            cache_entries: l.caps_cache_entries,
            max_jids: l.max_connections,
            max_pending: l.caps_max_pending,
            max_interests: l.caps_max_interests,
            max_attr_bytes: l.caps_max_attr_bytes,
        }
    }
}

impl Default for CapsLimits {
    /// [`CapsLimits::from_limits`] of the default `[limits]`, with room for 4096 JIDs.
    fn default() -> Self {
        CapsLimits {
            max_jids: 4096,
            ..CapsLimits::from_limits(&Limits::default())
        }
    }
}

/// A disco#info query the router must send (XEP-0115 §6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoQuery {
    /// The resource to ask.
    pub to: Jid,
    /// The IQ id; the result is matched by it (and by `to`).
    pub id: String,
    /// The disco node, `node#ver`.
    pub node: String,
}

impl DiscoQuery {
    /// The `<iq type='get'/>` stanza, sent from `from` (the server's domain JID).
    pub fn to_element(&self, from: &Jid) -> Element {
        Element::new("iq", NS_CLIENT)
            .with_attr("type", "get")
            .with_attr("from", from.as_str())
            .with_attr("to", self.to.as_str())
            .with_attr("id", self.id.as_str())
            .with_child(Element::new("query", NS_DISCO_INFO).with_attr("node", self.node.as_str()))
    }
}

/// A resource whose interests became known or changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterestUpdate {
    /// The full JID.
    pub jid: Jid,
    /// Its interests now.
    pub interests: Interests,
    /// The node names it did not have before, sorted: the nodes whose last item PEP sends
    /// it (XEP-0163 §4.3.4: on initial presence, and only for newly interesting nodes).
    pub added: Vec<Rc<str>>,
}

/// What a [`CapsTable`] call asks the router to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapsEvents {
    /// disco#info queries to send.
    pub queries: Vec<DiscoQuery>,
    /// Resources whose interests are now known (or changed).
    pub updates: Vec<InterestUpdate>,
    /// Whether a bound was hit (a resource left without interests); the caller logs it.
    pub overloaded: bool,
}

/// Cache key: hash function and `ver`.
type Key = (Box<str>, Box<str>);

/// One cached result.
struct CacheEntry {
    interests: Interests,
    /// Logical time of the last use (LRU eviction).
    used: u64,
}

/// A disco#info query under way.
struct Pending {
    /// The resource asked.
    to: Jid,
    /// The caps being resolved.
    caps: Caps,
    /// Whether the answer may be cached (`sha-1` only).
    cacheable: bool,
    /// When it was sent.
    sent_ms: u64,
    /// Resources advertising the same caps, waiting for the answer (`to` included).
    /// Invariant: every waiter's [`JidState::caps`] equals `caps` and its `waiting` is set.
    waiters: Vec<Jid>,
}

/// What is known of one available resource.
struct JidState {
    /// Its current hashed caps, if any.
    caps: Option<Caps>,
    /// Its current interests (empty until known).
    interests: Interests,
    /// The id of the query it waits for, if any.
    waiting: Option<String>,
    /// Whether an answer for its current caps arrived (from the cache or a query). A
    /// resource whose query was refused (bound) or timed out is retried on its next
    /// presence, even with the same caps.
    resolved: bool,
}

/// The caps cache, the queries under way and the interests of every available resource.
pub struct CapsTable {
    limits: CapsLimits,
    cache: HashMap<Key, CacheEntry>,
    /// Queries under way by IQ id.
    pending: HashMap<String, Pending>,
    /// The query under way for each cacheable key (so a `ver` is asked once).
    pending_by_key: HashMap<Key, String>,
    jids: HashMap<Jid, JidState>,
    /// Interned node names. Invariant: every name held by the cache or a `JidState` is here.
    names: HashSet<Rc<str>>,
    /// LRU clock.
    tick: u64,
    /// Query id counter.
    next_id: u64,
}

fn empty() -> Interests {
    Rc::from(Vec::<Rc<str>>::new())
}

fn key_of(c: &Caps) -> Key {
    (c.hash.clone(), c.ver.clone())
}

/// Names in `new` that are not in `old` (both sorted).
fn added(old: &[Rc<str>], new: &[Rc<str>]) -> Vec<Rc<str>> {
    new.iter()
        .filter(|n| old.binary_search(n).is_err())
        .cloned()
        .collect()
}

impl CapsTable {
    /// An empty table with `limits`.
    pub fn new(limits: CapsLimits) -> CapsTable {
        CapsTable {
            limits,
            cache: HashMap::new(),
            pending: HashMap::new(),
            pending_by_key: HashMap::new(),
            jids: HashMap::new(),
            names: HashSet::new(),
            tick: 0,
            next_id: 0,
        }
    }

    /// Current interests of `full` (empty if unknown).
    pub fn interests(&self, full: &Jid) -> Interests {
        self.jids
            .get(full)
            .map_or_else(empty, |s| s.interests.clone())
    }

    /// Whether `full` wants notifications of `node`.
    pub fn wants(&self, full: &Jid, node: &str) -> bool {
        self.jids.get(full).is_some_and(|s| {
            s.interests
                .binary_search_by(|n| n.as_ref().cmp(node))
                .is_ok()
        })
    }

    /// Number of cached `ver`s.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Number of queries under way.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Number of tracked resources.
    pub fn tracked(&self) -> usize {
        self.jids.len()
    }

    /// Approximate heap bytes held (cache, queries, resources, interned names), for the
    /// memory figures in the docs.
    pub fn heap_estimate(&self) -> usize {
        let ptr = std::mem::size_of::<Rc<str>>();
        let rc_header = 2 * std::mem::size_of::<usize>();
        let key = |k: &Key| k.0.len() + k.1.len() + 2 * std::mem::size_of::<Box<str>>();
        let mut n = 0;
        for (k, e) in &self.cache {
            n += key(k) + std::mem::size_of::<CacheEntry>() + 1;
            // Only the cache's own allocation; resources share it.
            n += rc_header + ptr * e.interests.len();
        }
        for (id, p) in &self.pending {
            n += id.len() * 2 + std::mem::size_of::<Pending>() + p.to.as_str().len();
            n += p.caps.hash.len() + p.caps.node.len() + p.caps.ver.len();
            n += p.waiters.len() * std::mem::size_of::<Jid>();
        }
        for (j, s) in &self.jids {
            n += std::mem::size_of::<(Jid, JidState)>() + j.as_str().len() + 1;
            if let Some(c) = &s.caps {
                n += c.hash.len() + c.node.len() + c.ver.len();
            }
        }
        for name in &self.names {
            n += rc_header + name.len() + ptr + 1;
        }
        n
    }

    fn intern(&mut self, nodes: &[&str]) -> Interests {
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            match self.names.get(*n) {
                Some(rc) => out.push(rc.clone()),
                None => {
                    let rc: Rc<str> = Rc::from(*n);
                    self.names.insert(rc.clone());
                    out.push(rc);
                }
            }
        }
        Rc::from(out)
    }

    /// Drop interned names nobody else holds.
    fn prune_names(&mut self) {
        self.names.retain(|n| Rc::strong_count(n) > 1);
    }

    fn next_query_id(&mut self) -> String {
        self.next_id += 1;
        format!("caps{}", self.next_id)
    }

    /// Set the interests of `full` and report the change, if any.
    fn set_interests(&mut self, full: &Jid, interests: Interests, out: &mut CapsEvents) {
        let Some(st) = self.jids.get_mut(full) else {
            return;
        };
        st.resolved = true;
        let add = added(&st.interests, &interests);
        let changed = st.interests != interests;
        st.interests = interests.clone();
        if changed {
            out.updates.push(InterestUpdate {
                jid: full.clone(),
                interests,
                added: add,
            });
        }
    }

    /// Take `full` out of the waiters of the query it waits for, if any.
    fn stop_waiting(&mut self, full: &Jid) {
        let Some(id) = self.jids.get_mut(full).and_then(|s| s.waiting.take()) else {
            return;
        };
        if let Some(p) = self.pending.get_mut(&id) {
            p.waiters.retain(|w| w != full);
        }
        // A query nobody waits for any more stays until its answer or its timeout: the
        // answer is still worth caching, and forgetting it would let a client that flaps its
        // presence make us send a query per presence.
    }

    /// A presence from local resource `full` (XEP-0115 §6.1): `available` unless it is of
    /// type `unavailable`. Returns the queries to send and the interest changes; on the
    /// initial presence every interest is `added`, on an update only the new ones are.
    ///
    /// A presence without caps keeps the interests already known (clients omit the element
    /// on some updates); an initial presence without caps, or with legacy caps, leaves the
    /// resource without interests.
    pub fn on_presence(
        &mut self,
        full: &Jid,
        presence: &Element,
        available: bool,
        now_ms: u64,
    ) -> CapsEvents {
        let mut out = CapsEvents::default();
        if !available {
            self.remove(full);
            return out;
        }
        if !self.jids.contains_key(full) {
            if self.jids.len() >= self.limits.max_jids {
                out.overloaded = true;
                return out;
            }
            self.jids.insert(
                full.clone(),
                JidState {
                    caps: None,
                    interests: empty(),
                    waiting: None,
                    resolved: false,
                },
            );
        }
        let caps = match parse_caps(presence, self.limits.max_attr_bytes) {
            PresenceCaps::Hashed(c) => c,
            PresenceCaps::Absent | PresenceCaps::Legacy => return out,
        };
        if self
            .jids
            .get(full)
            .is_some_and(|s| s.caps.as_ref() == Some(&caps) && (s.resolved || s.waiting.is_some()))
        {
            return out; // unchanged: no query, no re-sent items
        }
        self.stop_waiting(full);
        if let Some(st) = self.jids.get_mut(full) {
            st.caps = Some(caps.clone());
            st.resolved = false;
        }
        let cacheable = &*caps.hash == HASH_SHA1;
        let key = key_of(&caps);
        if cacheable {
            self.tick += 1;
            if let Some(e) = self.cache.get_mut(&key) {
                e.used = self.tick;
                let interests = e.interests.clone();
                self.set_interests(full, interests, &mut out);
                return out;
            }
            if let Some(id) = self.pending_by_key.get(&key).cloned() {
                if let Some(p) = self.pending.get_mut(&id) {
                    p.waiters.push(full.clone());
                    if let Some(st) = self.jids.get_mut(full) {
                        st.waiting = Some(id);
                    }
                    return out;
                }
            }
        }
        if self.pending.len() >= self.limits.max_pending {
            out.overloaded = true;
            return out;
        }
        let q = self.start_query(full, caps, cacheable, vec![full.clone()], now_ms);
        out.queries.push(q);
        out
    }

    fn start_query(
        &mut self,
        to: &Jid,
        caps: Caps,
        cacheable: bool,
        waiters: Vec<Jid>,
        now_ms: u64,
    ) -> DiscoQuery {
        let id = self.next_query_id();
        let node = format!("{}#{}", caps.node, caps.ver);
        for w in &waiters {
            if let Some(st) = self.jids.get_mut(w) {
                st.waiting = Some(id.clone());
            }
        }
        if cacheable {
            self.pending_by_key.insert(key_of(&caps), id.clone());
        }
        self.pending.insert(
            id.clone(),
            Pending {
                to: to.clone(),
                caps,
                cacheable,
                sent_ms: now_ms,
                waiters,
            },
        );
        DiscoQuery {
            to: to.clone(),
            id,
            node,
        }
    }

    /// `full` went away (unavailable presence, or its session ended): forget it.
    pub fn remove(&mut self, full: &Jid) {
        self.stop_waiting(full);
        if self.jids.remove(full).is_some() {
            self.prune_names();
        }
    }

    /// Close a query: remove it and clear its waiters' `waiting`.
    fn finish(&mut self, id: &str) -> Option<Pending> {
        let p = self.pending.remove(id)?;
        if p.cacheable
            && self
                .pending_by_key
                .get(&key_of(&p.caps))
                .map(String::as_str)
                == Some(id)
        {
            self.pending_by_key.remove(&key_of(&p.caps));
        }
        for w in &p.waiters {
            if let Some(st) = self.jids.get_mut(w) {
                st.waiting = None;
            }
        }
        Some(p)
    }

    /// Re-ask the same caps of the first remaining waiter other than `skip`.
    fn requery(&mut self, p: Pending, skip: &Jid, now_ms: u64, out: &mut CapsEvents) {
        let waiters: Vec<Jid> = p.waiters.into_iter().filter(|w| w != skip).collect();
        let Some(next) = waiters.first().cloned() else {
            return;
        };
        let q = self.start_query(&next, p.caps, p.cacheable, waiters, now_ms);
        out.queries.push(q);
    }

    /// An IQ result or error from `from` with id `id`. Returns `None` if it answers no query
    /// of this table (the router then handles it as usual); otherwise the interest changes
    /// and any follow-up query.
    ///
    /// A result whose verification string matches the advertised `ver` is cached and given
    /// to every waiter (XEP-0115 §5.4 4h). A mismatching or ill-formed result is not cached:
    /// the answering resource still gets the interests it declared (they describe itself),
    /// and the next waiter is asked. An error result gives the asked resource no interests.
    pub fn on_disco_result(
        &mut self,
        from: &Jid,
        id: &str,
        iq: &Element,
        now_ms: u64,
    ) -> Option<CapsEvents> {
        if self.pending.get(id).is_none_or(|p| &p.to != from) {
            return None;
        }
        let mut out = CapsEvents::default();
        let p = self.finish(id)?;
        let is_result = iq.attr("type") == Some("result");
        let query = disco_query(iq).filter(|_| is_result);
        let Some(query) = query else {
            // It answered: asking it again on every presence would not help.
            if let Some(st) = self.jids.get_mut(from).filter(|_| p.waiters.contains(from)) {
                st.resolved = true;
            }
            self.requery(p, from, now_ms, &mut out);
            return Some(out);
        };
        let nodes = notify_nodes(query, self.limits.max_interests);
        let interests = self.intern(&nodes);
        let valid = p.cacheable && ver_sha1(query).is_ok_and(|v| *v == *p.caps.ver);
        if valid {
            self.tick += 1;
            self.insert_cache(key_of(&p.caps), interests.clone());
            for w in &p.waiters {
                self.set_interests(w, interests.clone(), &mut out);
            }
        } else {
            if p.waiters.contains(from) {
                self.set_interests(from, interests, &mut out);
            }
            self.requery(p, from, now_ms, &mut out);
        }
        self.prune_names();
        Some(out)
    }

    fn insert_cache(&mut self, key: Key, interests: Interests) {
        if self.limits.cache_entries == 0 {
            return;
        }
        if !self.cache.contains_key(&key) && self.cache.len() >= self.limits.cache_entries {
            // O(entries), but only once per newly learned `ver`.
            if let Some(old) = self
                .cache
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            {
                self.cache.remove(&old);
            }
        }
        self.cache.insert(
            key,
            CacheEntry {
                interests,
                used: self.tick,
            },
        );
    }

    /// Give up on queries older than [`QUERY_TIMEOUT_MS`]: the asked resource keeps no
    /// interests from it and the next waiter is asked. Call it from a periodic tick.
    pub fn expire(&mut self, now_ms: u64) -> CapsEvents {
        let mut out = CapsEvents::default();
        let mut late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.sent_ms) >= QUERY_TIMEOUT_MS)
            .map(|(id, _)| id.clone())
            .collect();
        late.sort();
        for id in late {
            if let Some(p) = self.finish(&id) {
                let to = p.to.clone();
                self.requery(p, &to, now_ms, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::parse_caps`] with the default `limits.caps_max_attr_bytes`.
    fn parse_caps(presence: &Element) -> PresenceCaps {
        super::parse_caps(presence, Limits::default().caps_max_attr_bytes)
    }

    /// [`super::notify_nodes`] with the default `limits.caps_max_interests`.
    fn notify_nodes(disco: &Element) -> Vec<&str> {
        super::notify_nodes(disco, Limits::default().caps_max_interests)
    }

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("test jid")
    }

    fn el(s: &str) -> Element {
        Element::parse(s).expect("test xml")
    }

    const SIMPLE: &str = "<iq type='result' from='romeo@montague.lit/orchard' id='disco1'>\
        <query xmlns='http://jabber.org/protocol/disco#info' \
               node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
        <identity category='client' name='Exodus 0.9.1' type='pc'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <feature var='http://jabber.org/protocol/muc'/>\
        </query></iq>";

    const COMPLEX: &str = "<iq type='result' from='benvolio@capulet.lit/241b' id='disco1'>\
        <query xmlns='http://jabber.org/protocol/disco#info' \
               node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
        <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
        <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <feature var='http://jabber.org/protocol/muc'/>\
        <x xmlns='jabber:x:data' type='result'>\
          <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
          <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>\
          <field var='os'><value>Mac</value></field>\
          <field var='os_version'><value>10.5.1</value></field>\
          <field var='software'><value>Psi</value></field>\
          <field var='software_version'><value>0.11</value></field>\
        </x></query></iq>";

    #[test]
    fn xep0115_5_2_simple_generation_example() {
        let iq = el(SIMPLE);
        assert_eq!(
            verification_string(&iq).expect("well-formed"),
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<\
             http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
             http://jabber.org/protocol/muc<"
        );
        assert_eq!(
            ver_sha1(&iq).expect("well-formed"),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
    }

    #[test]
    fn xep0115_5_3_complex_generation_example() {
        let iq = el(COMPLEX);
        assert_eq!(
            verification_string(&iq).expect("well-formed"),
            "client/pc/el/\u{3a8} 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<\
             http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
             http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<\
             ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<\
             software_version<0.11<"
        );
        assert_eq!(
            ver_sha1(&iq).expect("well-formed"),
            "q07IKJEyjvHSyhy//CH0CxmKi8w="
        );
    }

    #[test]
    fn xep0115_5_1_order_of_input_does_not_matter() {
        // The complex example with features, fields and values shuffled.
        let iq = el("<query xmlns='http://jabber.org/protocol/disco#info'>\
            <feature var='http://jabber.org/protocol/muc'/>\
            <x xmlns='jabber:x:data' type='result'>\
              <field var='software_version'><value>0.11</value></field>\
              <field var='ip_version'><value>ipv6</value><value>ipv4</value></field>\
              <field var='os'><value>Mac</value></field>\
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
              <field var='software'><value>Psi</value></field>\
              <field var='os_version'><value>10.5.1</value></field>\
            </x>\
            <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            </query>");
        assert_eq!(
            ver_sha1(&iq).expect("well-formed"),
            "q07IKJEyjvHSyhy//CH0CxmKi8w="
        );
    }

    #[test]
    fn xep0115_5_4_duplicates_are_ill_formed() {
        let q = |body: &str| el(&format!("<query xmlns='{NS_DISCO_INFO}'>{body}</query>"));
        assert_eq!(
            verification_string(&q("<identity category='client' type='pc' name='A'/>\
                                    <identity category='client' type='pc' name='A'/>")),
            Err(CapsError::DuplicateIdentity)
        );
        // Same category/type but different names: fine.
        assert!(
            verification_string(&q("<identity category='client' type='pc' name='A'/>\
                                     <identity category='client' type='pc' name='B'/>"))
            .is_ok()
        );
        assert_eq!(
            verification_string(&q("<feature var='a'/><feature var='b'/><feature var='a'/>")),
            Err(CapsError::DuplicateFeature)
        );
        let form = |ft: &str| {
            format!(
                "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>\
                 <value>{ft}</value></field></x>"
            )
        };
        assert_eq!(
            verification_string(&q(&format!("{}{}", form("urn:a"), form("urn:a")))),
            Err(CapsError::DuplicateFormType)
        );
        assert!(verification_string(&q(&format!("{}{}", form("urn:a"), form("urn:b")))).is_ok());
        assert_eq!(
            verification_string(&q("<x xmlns='jabber:x:data' type='result'>\
                <field var='FORM_TYPE' type='hidden'><value>urn:a</value><value>urn:b</value></field>\
                </x>")),
            Err(CapsError::FormTypeConflict)
        );
        assert_eq!(
            verification_string(&q("<identity type='pc'/>")),
            Err(CapsError::IdentityIncomplete)
        );
        assert_eq!(
            verification_string(&q("<feature/>")),
            Err(CapsError::FeatureIncomplete)
        );
        assert_eq!(
            verification_string(&el("<iq type='result'/>")),
            Err(CapsError::NoQuery)
        );
    }

    #[test]
    fn xep0115_5_4_form_type_not_hidden_is_ignored() {
        let with = el(&format!(
            "<query xmlns='{NS_DISCO_INFO}'><feature var='f'/>\
             <x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>\
             <value>urn:a</value></field><field var='x'><value>1</value></field></x>\
             <x xmlns='jabber:x:data' type='result'><field var='y'><value>2</value></field></x>\
             </query>"
        ));
        assert_eq!(verification_string(&with).expect("well-formed"), "f<");
    }

    #[test]
    fn xep0163_4_2_notify_features_become_interests() {
        let iq = el(&format!(
            "<iq type='result'><query xmlns='{NS_DISCO_INFO}'>\
             <feature var='urn:xmpp:avatar:metadata+notify'/>\
             <feature var='http://jabber.org/protocol/tune+notify'/>\
             <feature var='http://jabber.org/protocol/tune'/>\
             <feature var='+notify'/>\
             <feature var='urn:xmpp:bookmarks:1+notify'/></query></iq>"
        ));
        assert_eq!(
            notify_nodes(&iq),
            [
                "http://jabber.org/protocol/tune",
                "urn:xmpp:avatar:metadata",
                "urn:xmpp:bookmarks:1"
            ]
        );
    }

    #[test]
    fn interests_are_bounded() {
        let max_interests = Limits::default().caps_max_interests;
        let many: Vec<String> = (0..max_interests + 10)
            .map(|i| format!("n{i:03}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let (q, _) = client("Big", &many);
        let nodes = notify_nodes(&q);
        assert_eq!(nodes.len(), max_interests);
        assert_eq!(nodes[0], "n000");
        assert_eq!(
            nodes[max_interests - 1],
            format!("n{:03}", max_interests - 1)
        );
    }

    #[test]
    fn xep0115_4_parse_caps_variants() {
        let p = |c: &str| el(&format!("<presence>{c}</presence>"));
        assert_eq!(parse_caps(&p("")), PresenceCaps::Absent);
        assert_eq!(
            parse_caps(&p(&format!(
                "<c xmlns='{NS_CAPS}' node='http://x' ver='1.0' ext='a b'/>"
            ))),
            PresenceCaps::Legacy
        );
        assert_eq!(
            parse_caps(&p(&format!("<c xmlns='{NS_CAPS}' hash='sha-1' node='n'/>"))),
            PresenceCaps::Absent
        );
        let long = "v".repeat(Limits::default().caps_max_attr_bytes + 1);
        assert_eq!(
            parse_caps(&p(&format!(
                "<c xmlns='{NS_CAPS}' hash='sha-1' node='n' ver='{long}'/>"
            ))),
            PresenceCaps::Absent
        );
        assert_eq!(
            parse_caps(&p(&format!(
                "<c xmlns='{NS_CAPS}' hash='sha-1' node='http://x' ver='abc='/>"
            ))),
            PresenceCaps::Hashed(Caps {
                hash: "sha-1".into(),
                node: "http://x".into(),
                ver: "abc=".into()
            })
        );
    }

    /// A disco#info result advertising `notify` (node names) and its correct `ver`.
    fn client(name: &str, notify: &[&str]) -> (Element, String) {
        let mut q = Element::new("query", NS_DISCO_INFO).with_child(
            Element::new("identity", NS_DISCO_INFO)
                .with_attr("category", "client")
                .with_attr("type", "pc")
                .with_attr("name", name),
        );
        for n in notify {
            q.push_child(
                Element::new("feature", NS_DISCO_INFO).with_attr("var", format!("{n}+notify")),
            );
        }
        let ver = ver_sha1(&q).expect("well-formed");
        (q, ver)
    }

    fn presence(ver: &str) -> Element {
        Element::new("presence", NS_CLIENT).with_child(
            Element::new("c", NS_CAPS)
                .with_attr("hash", "sha-1")
                .with_attr("node", "http://client")
                .with_attr("ver", ver),
        )
    }

    fn result_from(to: &DiscoQuery, q: &Element) -> Element {
        Element::new("iq", NS_CLIENT)
            .with_attr("type", "result")
            .with_attr("from", to.to.as_str())
            .with_attr("id", to.id.as_str())
            .with_child(q.clone())
    }

    fn names(i: &[Rc<str>]) -> Vec<&str> {
        i.iter().map(|n| &**n).collect()
    }

    #[test]
    fn xep0115_6_2_one_query_per_unknown_ver_then_cache() {
        let mut t = CapsTable::new(CapsLimits::default());
        let (q, ver) = client("A", &["urn:xmpp:avatar:metadata", "urn:xmpp:nick"]);
        let a = jid("alice@x/phone");
        let b = jid("bob@x/laptop");
        let ev = t.on_presence(&a, &presence(&ver), true, 0);
        assert_eq!(ev.queries.len(), 1);
        let query = ev.queries[0].clone();
        assert_eq!(query.to, a);
        assert_eq!(query.node, format!("http://client#{ver}"));
        let xml = query.to_element(&jid("x")).to_string_in_stream();
        assert!(
            xml.contains("type=\"get\"") && xml.contains(&query.id),
            "{xml}"
        );
        // Same ver from another resource: no second query.
        let ev = t.on_presence(&b, &presence(&ver), true, 1);
        assert!(ev.queries.is_empty() && ev.updates.is_empty());
        assert_eq!(t.pending(), 1);
        // A result from someone else with that id is not ours.
        assert!(
            t.on_disco_result(&b, &query.id, &result_from(&query, &q), 2)
                .is_none()
        );
        let ev = t
            .on_disco_result(&a, &query.id, &result_from(&query, &q), 2)
            .expect("ours");
        assert_eq!(ev.updates.len(), 2);
        for u in &ev.updates {
            assert_eq!(
                names(&u.added),
                ["urn:xmpp:avatar:metadata", "urn:xmpp:nick"]
            );
        }
        assert!(t.wants(&a, "urn:xmpp:nick") && t.wants(&b, "urn:xmpp:avatar:metadata"));
        assert!(!t.wants(&a, "urn:xmpp:mood"));
        assert_eq!((t.cached(), t.pending()), (1, 0));
        // A third resource with a cached ver: interests at once, no query.
        let c = jid("carol@x/r");
        let ev = t.on_presence(&c, &presence(&ver), true, 3);
        assert!(ev.queries.is_empty());
        assert_eq!(ev.updates.len(), 1);
        assert_eq!(ev.updates[0].added.len(), 2);
    }

    #[test]
    fn xep0163_4_3_4_presence_update_sends_nothing_new() {
        let mut t = CapsTable::new(CapsLimits::default());
        let (q, ver) = client("A", &["n1", "n2"]);
        let a = jid("alice@x/phone");
        let query = t.on_presence(&a, &presence(&ver), true, 0).queries[0].clone();
        t.on_disco_result(&a, &query.id, &result_from(&query, &q), 1);
        // Same caps again (a status change): no update, so no last items re-sent.
        let ev = t.on_presence(&a, &presence(&ver), true, 2);
        assert_eq!(ev, CapsEvents::default());
        // Presence without caps keeps the interests.
        let ev = t.on_presence(&a, &Element::new("presence", NS_CLIENT), true, 3);
        assert_eq!(ev, CapsEvents::default());
        assert!(t.wants(&a, "n1"));
        // Caps change: only the new node is `added`.
        let (q2, ver2) = client("A2", &["n2", "n3"]);
        let query = t.on_presence(&a, &presence(&ver2), true, 4).queries[0].clone();
        let ev = t
            .on_disco_result(&a, &query.id, &result_from(&query, &q2), 5)
            .expect("ours");
        assert_eq!(names(&ev.updates[0].added), ["n3"]);
        assert!(!t.wants(&a, "n1") && t.wants(&a, "n3"));
        // Unavailable forgets the resource; the next initial presence gets everything again.
        t.on_presence(&a, &Element::new("presence", NS_CLIENT), false, 6);
        assert_eq!(t.tracked(), 0);
        let ev = t.on_presence(&a, &presence(&ver2), true, 7);
        assert_eq!(names(&ev.updates[0].added), ["n2", "n3"]);
    }

    #[test]
    fn xep0115_5_4_mismatching_result_is_not_cached_and_next_waiter_is_asked() {
        let mut t = CapsTable::new(CapsLimits::default());
        let (_, ver) = client("Real", &["n1"]);
        let (liar, _) = client("Liar", &["evil"]);
        let (honest, _) = client("Real", &["n1"]);
        let a = jid("mallory@x/r");
        let b = jid("bob@x/r");
        let qa = t.on_presence(&a, &presence(&ver), true, 0).queries[0].clone();
        t.on_presence(&b, &presence(&ver), true, 0);
        let ev = t
            .on_disco_result(&a, &qa.id, &result_from(&qa, &liar), 1)
            .expect("ours");
        // The liar gets what it declared for itself; bob is asked directly.
        assert_eq!(ev.updates.len(), 1);
        assert_eq!(ev.updates[0].jid, a);
        assert_eq!(ev.queries.len(), 1);
        let qb = ev.queries[0].clone();
        assert_eq!(qb.to, b);
        assert_eq!(t.cached(), 0);
        assert!(!t.wants(&b, "evil"));
        let ev = t
            .on_disco_result(&b, &qb.id, &result_from(&qb, &honest), 2)
            .expect("ours");
        assert_eq!(ev.updates.len(), 1);
        assert!(t.wants(&b, "n1"));
        assert_eq!(t.cached(), 1);
    }

    #[test]
    fn xep0115_5_4_error_result_and_timeout_ask_the_next_waiter() {
        let mut t = CapsTable::new(CapsLimits::default());
        let (q, ver) = client("A", &["n1"]);
        let (a, b, c) = (jid("a@x/r"), jid("b@x/r"), jid("c@x/r"));
        let qa = t.on_presence(&a, &presence(&ver), true, 0).queries[0].clone();
        t.on_presence(&b, &presence(&ver), true, 0);
        t.on_presence(&c, &presence(&ver), true, 0);
        let err = Element::new("iq", NS_CLIENT).with_attr("type", "error");
        let ev = t.on_disco_result(&a, &qa.id, &err, 1).expect("ours");
        assert!(ev.updates.is_empty());
        let qb = ev.queries[0].clone();
        assert_eq!(qb.to, b);
        // b never answers.
        assert!(t.expire(QUERY_TIMEOUT_MS).queries.is_empty());
        let ev = t.expire(1 + QUERY_TIMEOUT_MS);
        let qc = ev.queries[0].clone();
        assert_eq!(qc.to, c);
        // A late answer to the expired query is no longer ours.
        assert!(
            t.on_disco_result(&b, &qb.id, &result_from(&qb, &q), 2)
                .is_none()
        );
        let ev = t
            .on_disco_result(&c, &qc.id, &result_from(&qc, &q), 3)
            .expect("ours");
        // c was the only waiter left (a failed, b timed out and was dropped).
        assert_eq!(ev.updates.len(), 1);
        assert!(t.wants(&c, "n1") && !t.wants(&b, "n1") && !t.wants(&a, "n1"));
        // b timed out, so its next presence (same caps) is retried: the ver is cached now.
        let ev = t.on_presence(&b, &presence(&ver), true, 5);
        assert!(ev.queries.is_empty() && t.wants(&b, "n1"));
        assert_eq!(names(&ev.updates[0].added), ["n1"]);
        // a answered with an error: the same caps again sends no new query (it would not
        // help), but it is still not interested.
        let ev = t.on_presence(&a, &presence(&ver), true, 6);
        assert_eq!(ev, CapsEvents::default());
        assert!(!t.wants(&a, "n1"));
    }

    #[test]
    fn xep0115_5_4_3_unsupported_hash_applies_to_the_resource_only() {
        let mut t = CapsTable::new(CapsLimits::default());
        let (q, _) = client("A", &["n1"]);
        let p = Element::new("presence", NS_CLIENT).with_child(
            Element::new("c", NS_CAPS)
                .with_attr("hash", "sha-256")
                .with_attr("node", "http://client")
                .with_attr("ver", "whatever"),
        );
        let (a, b) = (jid("a@x/r"), jid("b@x/r"));
        let qa = t.on_presence(&a, &p, true, 0).queries[0].clone();
        // Not cacheable, so not shared: b is asked too.
        let qb = t.on_presence(&b, &p, true, 0).queries[0].clone();
        assert_ne!(qa.id, qb.id);
        t.on_disco_result(&a, &qa.id, &result_from(&qa, &q), 1);
        assert!(t.wants(&a, "n1") && !t.wants(&b, "n1"));
        assert_eq!(t.cached(), 0);
    }

    #[test]
    fn legacy_caps_are_ignored() {
        let mut t = CapsTable::new(CapsLimits::default());
        let p = el(&format!(
            "<presence><c xmlns='{NS_CAPS}' node='http://x' ver='1.0'/></presence>"
        ));
        let ev = t.on_presence(&jid("a@x/r"), &p, true, 0);
        assert_eq!(ev, CapsEvents::default());
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn bounds_cache_lru_pending_and_jids() {
        let limits = CapsLimits {
            cache_entries: 2,
            max_jids: 3,
            max_pending: 2,
            ..CapsLimits::default()
        };
        let mut t = CapsTable::new(limits);
        let clients: Vec<(Element, String)> = (0..3)
            .map(|i| client(&format!("C{i}"), &[&format!("node{i}")]))
            .collect();
        let learn = |t: &mut CapsTable, who: &Jid, i: usize, now: u64| {
            let ev = t.on_presence(who, &presence(&clients[i].1), true, now);
            if let Some(q) = ev.queries.first() {
                t.on_disco_result(who, &q.id, &result_from(q, &clients[i].0), now);
            }
        };
        let (a, b, c, d) = (jid("a@x/r"), jid("b@x/r"), jid("c@x/r"), jid("d@x/r"));
        learn(&mut t, &a, 0, 0);
        learn(&mut t, &b, 1, 1);
        // Touch ver 0 so ver 1 is the least recently used.
        t.remove(&a);
        learn(&mut t, &a, 0, 2);
        learn(&mut t, &c, 2, 3);
        assert_eq!(t.cached(), 2);
        // ver 1 was evicted, bob keeps his interests (shared Rc), ver 0 is still cached.
        assert!(t.wants(&b, "node1"));
        t.remove(&b);
        let ev = t.on_presence(&b, &presence(&clients[1].1), true, 4);
        assert_eq!(ev.queries.len(), 1, "ver 1 evicted: asked again");
        t.remove(&b);
        let ev = t.on_presence(&b, &presence(&clients[0].1), true, 5);
        assert!(ev.queries.is_empty(), "ver 0 still cached");
        // max_jids = 3: a, b, c tracked; d is refused.
        let ev = t.on_presence(&d, &presence(&clients[0].1), true, 6);
        assert!(ev.overloaded && !t.wants(&d, "node0"));
        // max_pending = 2.
        let mut t = CapsTable::new(limits);
        for (i, who) in [&a, &b].into_iter().enumerate() {
            assert_eq!(
                t.on_presence(who, &presence(&clients[i].1), true, 0)
                    .queries
                    .len(),
                1
            );
        }
        let ev = t.on_presence(&c, &presence(&clients[2].1), true, 0);
        assert!(ev.overloaded && ev.queries.is_empty());
        // Once a query finishes, c's next presence (same caps) is asked.
        let qa = t.on_presence(&a, &presence(&clients[0].1), true, 0);
        assert!(qa.queries.is_empty(), "a is waiting already");
        t.remove(&a);
        assert_eq!(
            t.pending(),
            2,
            "an orphan query stays until answered or expired"
        );
        t.expire(QUERY_TIMEOUT_MS);
        assert_eq!(t.pending(), 0);
        let ev = t.on_presence(&c, &presence(&clients[2].1), true, QUERY_TIMEOUT_MS);
        assert_eq!(ev.queries.len(), 1);
    }

    #[test]
    fn interned_names_are_shared_and_pruned() {
        let mut t = CapsTable::new(CapsLimits {
            cache_entries: 1,
            ..CapsLimits::default()
        });
        let (q0, v0) = client("C0", &["shared", "only0"]);
        let (q1, v1) = client("C1", &["shared", "only1"]);
        let (a, b) = (jid("a@x/r"), jid("b@x/r"));
        let qa = t.on_presence(&a, &presence(&v0), true, 0).queries[0].clone();
        t.on_disco_result(&a, &qa.id, &result_from(&qa, &q0), 0);
        let qb = t.on_presence(&b, &presence(&v1), true, 0).queries[0].clone();
        t.on_disco_result(&b, &qb.id, &result_from(&qb, &q1), 0);
        assert_eq!(t.names.len(), 3);
        assert!(
            Rc::ptr_eq(&t.interests(&a)[1], &t.interests(&b)[1]),
            "one `shared`"
        );
        // ver 0 was evicted; once alice leaves, `only0` has no holder left.
        t.remove(&a);
        assert_eq!(t.names.len(), 2);
        assert!(!t.names.contains("only0"));
    }

    /// 256 client versions with 12 interests each (`unique` of them unique to the version),
    /// one resource each: the heap estimate in bytes.
    fn figure(unique: usize) -> usize {
        let mut t = CapsTable::new(CapsLimits::default());
        for i in 0..256 {
            let own = (0..unique).map(|k| format!("urn:example:own:{i}:{k}"));
            let common = (unique..12).map(|k| format!("urn:xmpp:common:{k}"));
            let all: Vec<String> = own.chain(common).collect();
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let (q, ver) = client(&format!("C{i}"), &all);
            let who = jid(&format!("u{i}@example.org/res"));
            let qy = t.on_presence(&who, &presence(&ver), true, 0).queries[0].clone();
            t.on_disco_result(&who, &qy.id, &result_from(&qy, &q), 0);
        }
        assert_eq!(t.cached(), 256);
        assert_eq!(t.names.len(), 12 + 256 * unique - unique);
        t.heap_estimate()
    }

    #[test]
    fn memory_figure() {
        let shared = figure(0);
        let half = figure(6);
        println!(
            "caps table, 256 vers x 12 interests + 256 resources: {} KiB with shared node \
             names, {} KiB with 6 unique names per ver",
            shared / 1024,
            half / 1024
        );
        assert!(
            half > shared + 256 * 6 * 20,
            "unique names cost their bytes"
        );
    }
}
