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
mod tests;
