//! The router: every bound session, local addressing rules (RFC 6120 §10, RFC 6121 §8),
//! server-answered IQs (disco, ping, version), rosters and presence (RFC 6121 §2-§4).
//!
//! Roster changes are durable before anyone hears of them: they go through the group
//! commit, and their reply, pushes and presence wait for it (`Router::roster_transaction`).
//!
//! Single-threaded: the connection tasks call into it synchronously, never across an
//! `.await`. It reaches sessions only through their bounded [`Outbox`]es, so a slow client
//! can never stall routing. Stanzas are serialised once per recipient account (or once per
//! broadcast) and shared as `Rc<str>`.

use std::collections::HashMap;
use std::rc::Rc;

use crate::config::{AnonymousPolicy, Config};
use crate::jid::Jid;
use crate::limits::Limits;
use crate::outbox::{Backlog, Kick, Outbox, Stanza};
use crate::proto::{
    self, Condition, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_ROSTER, NS_VERSION, StanzaError,
    StreamCondition,
};
use std::cell::RefCell;
use std::collections::VecDeque;

use crate::store::{RosterItem, RosterWrite, Store, StoreError, Subscription};
use crate::xml::{Element, NS_CLIENT};

/// Connection identifier, unique for the life of the process.
pub type ConnId = u64;

/// Maximum number of directed-presence targets remembered per resource (RFC 6121 §4.6);
/// each costs one JID (~40 bytes). Beyond it the oldest is forgotten.
const MAX_DIRECTED: usize = 16;

/// Most roster requests (roster IQs, subscription presence) kept waiting while a roster
/// change is being committed; more are refused with `resource-constraint` (wait).
const MAX_ROSTER_DEFERRED: usize = 256;
/// Most bytes of such waiting requests (parsed stanzas).
const MAX_ROSTER_DEFERRED_BYTES: usize = 1024 * 1024;

/// Longest roster item name or group name accepted, in bytes (RFC 6121 §2.1.2.4 leaves it to policy).
const MAX_ROSTER_TEXT: usize = crate::store::MAX_ROSTER_NAME_BYTES;
/// Most groups on one roster item.
const MAX_ROSTER_GROUPS: usize = crate::store::MAX_ROSTER_GROUPS;

/// One bound resource.
struct Resource {
    jid: Jid,
    conn: ConnId,
    outbox: Rc<Outbox>,
    /// The last available presence it broadcast (without `to`), if it is available.
    presence: Option<Element>,
    priority: i8,
    /// Whether it asked for the roster (RFC 6121 §2.1.6: pushes go to interested resources).
    interested: bool,
    /// Entities it sent directed presence to (they get its unavailable presence).
    directed: Vec<Jid>,
}

/// An account with at least one bound resource.
struct Account {
    anonymous: bool,
    resources: Vec<Resource>,
    /// The roster as committed: loaded at first bind, changed when a roster change is on
    /// disk ([`Router::roster_transaction`]).
    roster: Vec<RosterItem>,
}

/// A roster change being worked out ([`Router::roster_transaction`]): its writes, which
/// later reads of the same request see, and every stanza it produced, sent only once the
/// writes are on disk.
#[derive(Default)]
struct RosterTxn {
    /// The writes, in order, and whether each goes to disk (not for anonymous accounts).
    writes: Vec<(RosterWrite, bool)>,
    out: Vec<(Rc<Outbox>, Stanza, Lane)>,
}

impl RosterTxn {
    /// The item as this transaction left it: `Some(None)` if it removed it, `None` if it
    /// did not touch it.
    fn item(&self, user: &str, jid: &str) -> Option<Option<RosterItem>> {
        self.writes
            .iter()
            .rev()
            .find(|(w, _)| w.user() == user && w.jid() == jid)
            .map(|(w, _)| match w {
                RosterWrite::Put(_, i) => Some(i.clone()),
                RosterWrite::Remove(..) => None,
            })
    }
}

/// A roster change staged for the group commit: applied to memory and its stanzas sent
/// when the commit of `generation` is on disk; refused if it fails.
struct RosterPending {
    generation: u64,
    writes: Vec<RosterWrite>,
    out: Vec<(Rc<Outbox>, Stanza, Lane)>,
    /// The request, to answer with an error if the commit fails.
    from: Jid,
    request: Element,
}

/// Router state.
pub struct Router {
    config: Rc<Config>,
    store: Store,
    /// Secret for SCRAM's fake credentials of unknown users (account enumeration defence).
    secret: [u8; 32],
    accounts: HashMap<String, Account>,
    push_counter: u64,
    /// The XEP-0060 service. `None` while its state cannot be reloaded after a failed
    /// write (the database could not be reopened yet, see [`Router::storage_reopened`]):
    /// the service stays listed and answers every request with
    /// [`crate::pubsub::unavailable_error`], rather than risk serving what the disk lost.
    pubsub: Option<crate::pubsub::Engine>,
    /// The service's JID (kept while `pubsub` is `None`).
    pubsub_service: Jid,
    /// The current storage fault, for rate-limited logging; `None` while writes work.
    outage: Option<Outage>,
    /// Wakes the pub-sub timer task when the engine's next deadline moved earlier.
    pubsub_wake: Option<smol::channel::Sender<()>>,
    /// XEP-0115 caps of the available resources: their PEP `+notify` interests.
    caps: crate::caps::CapsTable,
    /// What the outboxes' backlogs hold together (pub-sub back-pressure).
    backlog: Rc<Backlog>,
    /// Sessions not read while their pub-sub requests are deferred (back-pressure).
    paused: Vec<Rc<Outbox>>,
    /// The roster change being worked out, while a roster request is handled.
    roster_txn: RefCell<Option<RosterTxn>>,
    /// Roster changes waiting for their commit (at most one: see `roster_deferred`).
    roster_pending: VecDeque<RosterPending>,
    /// Roster requests that arrived while a change was waiting for its commit, handled in
    /// order once it is on disk (so each is worked out against what is durable).
    roster_deferred: VecDeque<(Jid, Element)>,
    roster_deferred_bytes: usize,
    /// Deferred roster requests are being handled (they are not deferred again).
    roster_replaying: bool,
}

/// A storage fault in progress (writes fail), for the log: one ERROR line when it starts,
/// then at most one WARN line per [`OUTAGE_LOG_EVERY`], and one INFO line when it ends.
struct Outage {
    since: std::time::Instant,
    /// Failed commits and reopenings since the fault started.
    failures: u64,
    /// Failures since the last line.
    unlogged: u64,
    last_log: std::time::Instant,
}

/// At most one log line per this interval while a storage fault lasts.
const OUTAGE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// How a stanza enters an outbox (see `outbox`'s module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Pushed within the outbox's bounds; overflow closes the session.
    Direct,
    /// Pub-sub output, released in bursts by the group commit: offered, waiting in the
    /// outbox's backlog for the room that the reader makes.
    PubSub,
}

/// What kind of local entity a JID names.
enum Target {
    /// The server itself.
    Domain,
    /// An account of ours: its username.
    Local(String),
    /// Another domain (no server-to-server support).
    Remote,
}

impl Router {
    /// A router over `store`, with the pub-sub service loaded from it.
    ///
    /// # Errors
    ///
    /// The pub-sub state cannot be loaded (a store failure, or a stored node this build
    /// cannot read). The broker does not start then: running without pub-sub would look
    /// healthy while refusing its main service.
    pub fn new(config: Rc<Config>, store: Store) -> Result<Router, crate::pubsub::EngineError> {
        let mut secret = [0u8; 32];
        // With no randomness the fake-credential defence degrades to a fixed salt per user; log it.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).is_err() {
            tracing::warn!("no system randomness for the SCRAM secret");
        }
        store.set_max_roster_items(config.limits.max_roster_items);
        let backlog = Backlog::new();
        let mut pubsub = crate::pubsub::Engine::load(&config, &store)?;
        pubsub.set_backlog(backlog.clone(), config.limits.pubsub_backlog_bytes);
        pubsub.seed_ids(random_u64());
        let pubsub_service = pubsub.service().clone();
        let pubsub = Some(pubsub);
        let caps = crate::caps::CapsTable::new(crate::caps::CapsLimits {
            max_jids: config.limits.max_connections,
            ..crate::caps::CapsLimits::default()
        });
        Ok(Router {
            config,
            store,
            secret,
            accounts: HashMap::new(),
            push_counter: 0,
            caps,
            pubsub,
            pubsub_service,
            outage: None,
            pubsub_wake: None,
            backlog,
            paused: Vec::new(),
            roster_txn: RefCell::new(None),
            roster_pending: VecDeque::new(),
            roster_deferred: VecDeque::new(),
            roster_deferred_bytes: 0,
            roster_replaying: false,
        })
    }

    /// The account of the outboxes' backlogs: every session's outbox charges it
    /// ([`Outbox::with_backlog`]).
    pub fn backlog(&self) -> Rc<Backlog> {
        self.backlog.clone()
    }

    /// The served domain.
    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// Effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Effective limits.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The store (accounts, rosters).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What SCRAM needs to look credentials up.
    pub fn auth_lookup(&self) -> (&[u8], &Store) {
        (&self.secret, &self.store)
    }

    /// Whether SASL ANONYMOUS may be offered to a peer.
    pub fn anonymous_allowed(&self, loopback: bool) -> bool {
        match self.config.c2s.allow_anonymous {
            AnonymousPolicy::Never => false,
            AnonymousPolicy::Loopback => loopback,
            AnonymousPolicy::Always => true,
        }
    }

    /// A fresh, unused anonymous username: at most [`ANON_USER_ATTEMPTS`] random names are
    /// tried. A store error ends the attempt at once (the caller answers SASL
    /// `temporary-auth-failure`); it is never retried in a loop.
    ///
    /// # Errors
    ///
    /// [`AnonUserError::Store`] if the account table cannot be read,
    /// [`AnonUserError::Collisions`] if every name tried was taken.
    pub fn new_anonymous_user(&mut self) -> Result<String, AnonUserError> {
        let (accounts, store) = (&self.accounts, &self.store);
        pick_anonymous_user(ANON_USER_ATTEMPTS, crate::sasl::random_nonce, |user| {
            Ok(accounts.contains_key(user) || store.user_exists(user)?)
        })
    }

    /// Number of bound resources (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.accounts.values().map(|a| a.resources.len()).sum()
    }

    /// Bind a resource for `user` (RFC 6120 §7). A resource already in use is taken over:
    /// the old session is closed with a `conflict` stream error (§7.7.2.2, "override").
    pub fn bind(
        &mut self,
        user: &str,
        anonymous: bool,
        requested: Option<&str>,
        conn: ConnId,
        outbox: Rc<Outbox>,
    ) -> Result<Jid, StanzaError> {
        let domain = self.config.domain.clone();
        let resource = match requested.map(str::trim) {
            Some(r) if !r.is_empty() => r.to_owned(),
            _ => {
                let n = crate::sasl::random_nonce();
                format!(
                    "kinglet-{}",
                    n.chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .take(12)
                        .collect::<String>()
                )
            }
        };
        let jid = Jid::new(Some(user), &domain, Some(&resource)).map_err(|e| {
            StanzaError::new(Condition::BadRequest).with_text(format!("invalid resource: {e}"))
        })?;
        if !self.accounts.contains_key(user) {
            let roster = if anonymous {
                Vec::new()
            } else {
                self.store.roster_get(user).map_err(|e| {
                    tracing::error!(user, error = %e, "cannot load roster");
                    StanzaError::new(Condition::InternalServerError)
                })?
            };
            self.accounts.insert(
                user.to_owned(),
                Account {
                    anonymous,
                    resources: Vec::new(),
                    roster,
                },
            );
        }
        let max = self.config.limits.max_resources_per_account;
        let account = self
            .accounts
            .get_mut(user)
            .expect("invariant: inserted above");
        if let Some(i) = account.resources.iter().position(|r| r.jid == jid) {
            let old = account.resources.remove(i);
            tracing::info!(jid = %jid, "resource conflict: replacing the old session");
            old.outbox.kick(Kick::Stream(StreamCondition::Conflict));
            if old.presence.is_some() {
                self.broadcast_unavailable(&old);
            }
        }
        let account = self
            .accounts
            .get_mut(user)
            .expect("invariant: inserted above");
        if account.resources.len() >= max {
            return Err(StanzaError::new(Condition::ResourceConstraint)
                .with_text("too many resources bound for this account"));
        }
        account.resources.push(Resource {
            jid: jid.clone(),
            conn,
            outbox,
            presence: None,
            priority: 0,
            interested: false,
            directed: Vec::new(),
        });
        Ok(jid)
    }

    /// A session ended: broadcast its unavailable presence and forget it.
    pub fn unbind(&mut self, jid: &Jid, conn: ConnId) {
        let Some(user) = jid.local() else { return };
        let Some(account) = self.accounts.get_mut(user) else {
            return;
        };
        let Some(i) = account.resources.iter().position(|r| r.conn == conn) else {
            return;
        };
        let res = account.resources.remove(i);
        // Nothing more reaches this session: its backlog no longer holds anyone back.
        res.outbox.discard_backlog();
        let empty = account.resources.is_empty();
        let anonymous_gone = empty && account.anonymous;
        self.caps.remove(jid);
        if res.presence.is_some() {
            self.broadcast_unavailable(&res);
        }
        if empty {
            self.accounts.remove(user);
        }
        if res.presence.is_some() {
            self.pubsub_unavailable(jid);
        }
        self.paused.retain(|ob| !Rc::ptr_eq(ob, &res.outbox));
        self.pubsub_relieve();
        if anonymous_gone {
            // An anonymous account ends with its last session: so does its PEP service
            // (else its nodes would fill `pubsub_max_nodes` over time).
            if let Some(engine) = self.pubsub.as_mut() {
                if let Err(e) = engine.pep_delete_account(&self.store, &jid.bare()) {
                    tracing::warn!(jid = %jid, error = %e, "PEP nodes of an anonymous account not deleted");
                }
            }
        }
    }

    fn classify(&self, jid: &Jid) -> Target {
        if jid.domain() != self.config.domain {
            return Target::Remote;
        }
        match jid.local() {
            None => Target::Domain,
            Some(l) => Target::Local(l.to_owned()),
        }
    }

    fn account_exists(&self, user: &str) -> bool {
        self.accounts.contains_key(user) || self.store.user_exists(user).unwrap_or(false)
    }

    /// Send a stanza to one resource, given its full JID.
    fn resource_outbox(&self, jid: &Jid) -> Option<&Rc<Outbox>> {
        let acc = self.accounts.get(jid.local()?)?;
        acc.resources
            .iter()
            .find(|r| &r.jid == jid)
            .map(|r| &r.outbox)
    }

    /// Queue a stanza for one session. A full outbox closes that (slow) session; the
    /// sender is not affected.
    fn send<S: Clone + Into<Stanza>>(&self, outbox: &Rc<Outbox>, s: &S) {
        self.send_via(outbox, s.clone().into(), Lane::Direct);
    }

    fn send_via(&self, outbox: &Rc<Outbox>, s: Stanza, lane: Lane) {
        if let Some(txn) = self.roster_txn.borrow_mut().as_mut() {
            // Part of a roster change: sent once the change is on disk.
            txn.out.push((outbox.clone(), s, lane));
            return;
        }
        match lane {
            Lane::Direct => {
                let _ = outbox.push(s);
            }
            Lane::PubSub => {
                let _ = outbox.offer(s);
            }
        }
    }

    /// Reply to `stanza`'s sender with an error (never to an error).
    fn bounce(&self, stanza: &Element, err: StanzaError) {
        let Some(reply) = proto::error_reply(stanza, &err) else {
            return;
        };
        self.deliver_reply(reply);
    }

    /// Deliver a server-generated stanza whose `to` is a local full JID.
    fn deliver_reply(&self, reply: Element) {
        let Some(to) = reply.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return;
        };
        if let Some(ob) = self.resource_outbox(&to) {
            self.send(ob, &Rc::from(reply.to_string_in_stream()));
        }
    }

    /// Route a stanza from a bound session (its `from` is already stamped).
    pub fn route(&mut self, from: &Jid, stanza: Element) {
        let to = match stanza.attr("to") {
            None => None,
            Some(t) => match Jid::parse(t) {
                Ok(j) => Some(j),
                Err(_) => {
                    self.bounce(&stanza, StanzaError::new(Condition::JidMalformed));
                    return;
                }
            },
        };
        match stanza.name.as_str() {
            "iq" => self.route_iq(from, to, stanza),
            "message" => self.route_message(from, to, stanza),
            _ => self.route_presence(from, to, stanza),
        }
    }

    // ---------------------------------------------------------------- IQ

    fn route_iq(&mut self, from: &Jid, to: Option<Jid>, iq: Element) {
        let ty = iq.attr("type").unwrap_or("");
        if !matches!(ty, "get" | "set" | "result" | "error") || iq.attr("id").is_none() {
            self.bounce(
                &iq,
                StanzaError::new(Condition::BadRequest)
                    .with_text("iq needs an id and a valid type"),
            );
            return;
        }
        let request = matches!(ty, "get" | "set");
        if request && iq.elements().count() != 1 {
            // RFC 6120 §8.2.3: exactly one payload.
            self.bounce(
                &iq,
                StanzaError::new(Condition::BadRequest)
                    .with_text("an iq get/set carries exactly one child"),
            );
            return;
        }
        let to = to.unwrap_or_else(|| from.bare());
        if self.is_pubsub(&to) {
            self.pubsub_iq(from, &iq);
            return;
        }
        match self.classify(&to) {
            Target::Remote => {
                if request {
                    self.bounce(
                        &iq,
                        StanzaError::new(Condition::RemoteServerNotFound)
                            .with_text("no server-to-server support"),
                    );
                }
            }
            Target::Domain => {
                if request {
                    self.server_iq(from, &iq);
                } else {
                    // XEP-0115: the answer to a caps disco#info query of ours.
                    let id = iq.attr("id").unwrap_or("").to_owned();
                    if let Some(ev) = self.caps.on_disco_result(from, &id, &iq, now_ms()) {
                        self.caps_events(ev);
                    }
                }
            }
            Target::Local(user) => {
                if to.is_full() {
                    if let Some(ob) = self.resource_outbox(&to) {
                        self.send(ob, &Rc::from(iq.to_string_in_stream()));
                    } else if request {
                        // RFC 6121 §8.5.3.2.3 (no such resource) and §8.5.1 (no such account).
                        self.bounce(&iq, StanzaError::new(Condition::ServiceUnavailable));
                    }
                } else if request {
                    self.account_iq(from, &user, &iq);
                }
            }
        }
    }

    /// IQs to the server's own JID.
    fn server_iq(&self, from: &Jid, iq: &Element) {
        let Some(p) = proto::iq_payload(iq) else {
            return;
        };
        let get = iq.attr("type") == Some("get");
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
                    .with_attr("jid", self.pubsub_service.as_str())
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
    fn account_iq(&mut self, from: &Jid, user: &str, iq: &Element) {
        if !self.account_exists(user) {
            self.bounce(iq, StanzaError::new(Condition::ServiceUnavailable));
            return;
        }
        let own = from.local() == Some(user);
        let Some(p) = proto::iq_payload(iq) else {
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
        let get = iq.attr("type") == Some("get");
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

    // ---------------------------------------------------------------- pub-sub (XEP-0060)

    /// Whether `jid` is the pub-sub service (or one of its full JIDs).
    fn is_pubsub(&self, jid: &Jid) -> bool {
        jid.local().is_none() && jid.domain() == self.pubsub_service.domain()
    }

    /// Hands an IQ to the pub-sub engine and delivers what it returns (while the engine
    /// is down after a storage fault: an error, see [`crate::pubsub::unavailable_error`]).
    fn pubsub_iq(&mut self, from: &Jid, iq: &Element) {
        let Some(mut engine) = self.pubsub.take() else {
            if matches!(iq.attr("type"), Some("get" | "set")) {
                self.bounce(iq, crate::pubsub::unavailable_error(&self.store));
            }
            return;
        };
        let deferred = engine.deferred_count();
        let out = engine.handle_iq(&*self, &self.store, from, iq, now_ms());
        if engine.deferred_count() > deferred {
            // Back-pressure: the request waits for the disk or for readers; its sender is
            // not read until the deferred requests have been handled.
            if let Some(ob) = self.resource_outbox(from) {
                if !ob.reading_paused() {
                    tracing::debug!(jid = %from, "pub-sub back-pressure: request deferred, session not read until it is handled");
                    ob.pause_reading();
                    self.paused.push(ob.clone());
                }
            }
        }
        self.pubsub = Some(engine);
        self.pubsub_deliver(out);
    }

    /// A pub-sub group commit of `generation` ended (called by the committer task):
    /// delivers the outputs it released, or the errors of the requests it failed.
    pub fn pubsub_committed(
        &mut self,
        generation: u64,
        result: Result<(), crate::store::StoreError>,
    ) {
        let roster_failure = result.as_ref().err().map(roster_failure);
        match &result {
            Ok(()) => self.storage_ok(),
            // Logged already if the committer reported it ([`Router::storage_write_failed`]).
            Err(e) if self.outage.is_none() => self.storage_failed(e),
            Err(_) => {}
        }
        let (engine, out) = crate::pubsub::committed(
            self.pubsub.take(),
            &self.config,
            &self.store,
            generation,
            result,
        );
        self.pubsub = engine;
        self.pubsub_deliver(out);
        self.roster_committed(generation, roster_failure);
        self.pubsub_relieve();
    }

    /// Whether the store or the pub-sub service needs recovery after a failed write: the
    /// committer (`net::committer`) reopens the database ([`Store::reopen_begin`]) and
    /// hands the outcome to [`Router::storage_reopened`], with a growing pause between
    /// attempts.
    pub fn storage_needs_recovery(&self) -> bool {
        self.store.faulted() || self.pubsub.is_none()
    }

    /// The database was reopened (or not) after a failed write: on success the pub-sub
    /// service is reloaded from it if it was down. Returns whether everything works again.
    pub fn storage_reopened(&mut self, reopened: crate::store::Reopened) -> bool {
        if let Err(e) = self.store.reopen_end(reopened) {
            self.storage_failed_to(&e.to_string(), "reopen the database");
            return false;
        }
        self.rosters_reload();
        self.pubsub_restore()
    }

    /// After the database was reopened, the rosters in memory are read from it again, as
    /// the pub-sub state is: a commit whose fsync failed may still have reached the disk
    /// (redb keeps it if its commit record did), although its requests were refused, and
    /// memory must equal the disk, or a restart would bring back a change that the
    /// running broker does not show.
    fn rosters_reload(&mut self) {
        for (user, account) in self.accounts.iter_mut().filter(|(_, a)| !a.anonymous) {
            match self.store.roster_get(user) {
                Ok(roster) => account.roster = roster,
                Err(e) => {
                    tracing::error!(user = %user, error = %e, "roster not reloaded after reopening the database")
                }
            }
        }
    }

    /// Reloads the pub-sub service after a storage fault took it down; true if it is up.
    pub fn pubsub_restore(&mut self) -> bool {
        if self.pubsub.is_some() {
            return true;
        }
        match crate::pubsub::restore(&self.config, &self.store) {
            Ok(mut engine) => {
                engine.set_backlog(
                    self.backlog.clone(),
                    self.config.limits.pubsub_backlog_bytes,
                );
                engine.seed_ids(random_u64());
                self.pubsub = Some(engine);
                tracing::info!(
                    data = %self.store.path().display(),
                    "publish-subscribe service available again: the database was reopened \
                     and the service's state reloaded from it"
                );
                if let Some(w) = &self.pubsub_wake {
                    let _ = w.try_send(());
                }
                true
            }
            Err(e) => {
                self.storage_failed_to(&e.to_string(), "reload the publish-subscribe state");
                false
            }
        }
    }

    /// A group commit failed (called by the committer before it reopens the database and
    /// calls [`Router::pubsub_committed`]): the store is marked faulted, and the fault
    /// logged (rate-limited).
    pub fn storage_write_failed(&mut self, e: &StoreError) {
        self.store.set_faulted();
        self.storage_failed(e);
    }

    /// A write succeeded: a storage fault in progress is over.
    fn storage_ok(&mut self) {
        if let Some(o) = self.outage.take() {
            tracing::info!(
                failures = o.failures,
                secs = o.since.elapsed().as_secs(),
                data = %self.store.path().display(),
                "storage recovered: writes succeed again"
            );
        }
    }

    /// A commit failed (or the database could not be reopened): logged once when the
    /// fault starts, then at most once per [`OUTAGE_LOG_EVERY`].
    fn storage_failed(&mut self, e: &StoreError) {
        self.storage_failed_to(&e.to_string(), "write to the database");
    }

    fn storage_failed_to(&mut self, e: &str, what: &str) {
        let now = std::time::Instant::now();
        let data = self.store.path().display().to_string();
        let Some(o) = self.outage.as_mut() else {
            self.outage = Some(Outage {
                since: now,
                failures: 1,
                unlogged: 0,
                last_log: now,
            });
            let lost = match self.store.pubsub_mode() {
                crate::store::CommitMode::Interval(_) => {
                    "pub-sub changes acknowledged since the previous flush are lost (store.flush_interval)"
                }
                _ => {
                    "the requests waiting for it got an error: their changes were not confirmed (a write that failed at its final sync may still be on disk; what clients read afterwards is what the disk holds)"
                }
            };
            tracing::error!(
                error = e,
                data,
                "storage fault: could not {what}; {lost}. Kinglet reopens the database and \
                 goes on: reads keep working, writes get an error (resource-constraint if \
                 the disk is full) until the fault is fixed. Free space on the disk of the \
                 data directory, or check for a read-only remount or I/O errors in the \
                 kernel log; no restart is needed"
            );
            return;
        };
        o.failures += 1;
        o.unlogged += 1;
        if now.duration_since(o.last_log) >= OUTAGE_LOG_EVERY {
            tracing::warn!(
                error = e,
                data,
                failures = o.unlogged,
                since_secs = o.since.elapsed().as_secs(),
                "storage fault continues: could not {what} ({} more failures since the last \
                 line); writes get an error until space is freed or the disk is fixed",
                o.unlogged
            );
            o.unlogged = 0;
            o.last_log = now;
        } else {
            tracing::debug!(error = e, "storage fault continues: could not {what}");
        }
    }

    /// Backlog bytes went out to a reader (called by the connection task).
    pub fn pubsub_backlog_released(&mut self) {
        self.pubsub_relieve();
    }

    /// Handles the deferred pub-sub requests while the held outputs and the backlogs are
    /// below their bound; once none is left, the paused sessions are read again.
    fn pubsub_relieve(&mut self) {
        if let Some(mut engine) = self.pubsub.take() {
            if engine.deferred_count() > 0 {
                let out = engine.resume(&*self, &self.store);
                self.pubsub = Some(engine);
                self.pubsub_deliver(out);
            } else {
                self.pubsub = Some(engine);
            }
        }
        if self.pubsub.as_ref().is_none_or(|e| e.deferred_count() == 0) {
            for ob in self.paused.drain(..) {
                ob.resume_reading();
            }
        }
    }

    /// A resource went unavailable: temporary subscriptions and `purge_offline` (XEP-0060).
    fn pubsub_unavailable(&mut self, full: &Jid) {
        let Some(mut engine) = self.pubsub.take() else {
            return;
        };
        let offline = crate::pubsub::Directory::presences(&*self, &full.bare()).is_empty();
        let out = engine.on_unavailable(&*self, &self.store, full, offline, now_ms());
        self.pubsub = Some(engine);
        self.pubsub_deliver(out);
    }

    /// The pub-sub timer's channel: the router sends on it when the engine's next
    /// deadline moved earlier (see [`Router::pubsub_tick`]).
    pub fn pubsub_timer(&mut self) -> smol::channel::Receiver<()> {
        let (tx, rx) = smol::channel::bounded(1);
        self.pubsub_wake = Some(tx);
        rx
    }

    /// Runs the pub-sub expiry that is due and returns the next deadline (ms since the
    /// epoch) the timer task sleeps until.
    pub fn pubsub_tick(&mut self) -> Option<u64> {
        let mut engine = self.pubsub.take()?;
        let out = engine.on_tick(&*self, &self.store, now_ms());
        let next = engine.arm();
        self.pubsub = Some(engine);
        self.pubsub_deliver(out);
        next
    }

    /// Delivers engine output: to one resource (full JID) or to every available resource
    /// of a local account (bare JID).
    fn pubsub_deliver(&self, out: Vec<crate::pubsub::Delivery>) {
        if let (Some(e), Some(w)) = (&self.pubsub, &self.pubsub_wake) {
            if e.needs_rearm() {
                let _ = w.try_send(());
            }
        }
        for d in out {
            if d.to.is_full() {
                if let Some(ob) = self.resource_outbox(&d.to) {
                    self.send_via(ob, d.stanza, Lane::PubSub);
                }
            } else {
                self.deliver_to_available_via(&d.to, &d.stanza, Lane::PubSub);
            }
        }
    }

    // ---------------------------------------------------------------- messages

    fn route_message(&mut self, from: &Jid, to: Option<Jid>, msg: Element) {
        let to = to.unwrap_or_else(|| from.bare());
        let ty = msg.attr("type").unwrap_or("normal").to_owned();
        if self.is_pubsub(&to) {
            // The service takes approval forms (XEP-0060 §8.6); errors (bounced
            // notifications) are dropped; anything else bounces.
            if msg.child("x", "jabber:x:data").is_some() && ty != "error" {
                if let Some(mut engine) = self.pubsub.take() {
                    let out = engine.handle_message(&self.store, from, &msg, now_ms());
                    self.pubsub = Some(engine);
                    self.pubsub_deliver(out);
                } else {
                    self.bounce(&msg, crate::pubsub::unavailable_error(&self.store));
                }
            } else if ty != "error" && ty != "headline" {
                self.bounce(&msg, StanzaError::new(Condition::ServiceUnavailable));
            }
            return;
        }
        match self.classify(&to) {
            Target::Remote => self.bounce(
                &msg,
                StanzaError::new(Condition::RemoteServerNotFound)
                    .with_text("no server-to-server support"),
            ),
            Target::Domain => {
                if ty != "error" && ty != "headline" {
                    self.bounce(&msg, StanzaError::new(Condition::ServiceUnavailable));
                }
            }
            Target::Local(user) => {
                if to.is_full() {
                    if let Some(ob) = self.resource_outbox(&to) {
                        self.send(ob, &Rc::from(msg.to_string_in_stream()));
                        return;
                    }
                    // RFC 6121 §8.5.3.2.1: no such resource.
                    match ty.as_str() {
                        "normal" | "chat" | "headline" => {}
                        "error" => return,
                        _ => {
                            self.bounce(&msg, StanzaError::new(Condition::ServiceUnavailable));
                            return;
                        }
                    }
                }
                self.message_to_bare(&user, &ty, &msg);
            }
        }
    }

    /// RFC 6121 §8.5.2: a message to a bare JID of ours.
    fn message_to_bare(&self, user: &str, ty: &str, msg: &Element) {
        if ty == "error" {
            return;
        }
        if ty == "groupchat" || !self.account_exists(user) {
            if ty != "headline" {
                self.bounce(msg, StanzaError::new(Condition::ServiceUnavailable));
            }
            return;
        }
        let candidates: Vec<&Resource> = self
            .accounts
            .get(user)
            .map(|a| {
                a.resources
                    .iter()
                    .filter(|r| r.presence.is_some() && r.priority >= 0)
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            // §8.5.2.2: no offline storage here; tell the sender instead of losing it silently.
            if ty != "headline" {
                self.bounce(
                    msg,
                    StanzaError::new(Condition::ServiceUnavailable)
                        .with_text("the recipient is offline"),
                );
            }
            return;
        }
        let s: Rc<str> = Rc::from(msg.to_string_in_stream());
        if ty == "headline" {
            for r in candidates {
                self.send(&r.outbox, &s);
            }
        } else {
            // normal and chat: the highest-priority resources.
            let top = candidates.iter().map(|r| r.priority).max().unwrap_or(0);
            for r in candidates.iter().filter(|r| r.priority == top) {
                self.send(&r.outbox, &s);
            }
        }
    }

    // ---------------------------------------------------------------- presence

    fn route_presence(&mut self, from: &Jid, to: Option<Jid>, p: Element) {
        if to.as_ref().is_some_and(|t| self.is_pubsub(t)) {
            // Directed presence to the service carries no meaning here.
            return;
        }
        let ty = p.attr("type").unwrap_or("available").to_owned();
        match (to, ty.as_str()) {
            (None, "available") => self.presence_available(from, p),
            (None, "unavailable") => self.presence_unavailable(from, p),
            (None, _) => {}
            (Some(to), "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed") => {
                self.roster_transaction(from, &p, |r| r.subscription(from, &to.bare(), &ty))
            }
            (Some(to), "probe") => self.probe(from, &to),
            (Some(to), "available" | "unavailable") => {
                self.directed_presence(from, &to, p, ty == "available")
            }
            (Some(_), "error") => {}
            (Some(_), _) => self.bounce(
                &p,
                StanzaError::new(Condition::BadRequest).with_text("unknown presence type"),
            ),
        }
    }

    fn resource_mut(&mut self, jid: &Jid) -> Option<&mut Resource> {
        let acc = self.accounts.get_mut(jid.local()?)?;
        acc.resources.iter_mut().find(|r| &r.jid == jid)
    }

    /// RFC 6121 §4.2 (initial) and §4.4 (update) presence.
    fn presence_available(&mut self, from: &Jid, mut p: Element) {
        p.remove_attr("to");
        let priority = p
            .child("priority", NS_CLIENT)
            .and_then(|e| e.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let Some(res) = self.resource_mut(from) else {
            return;
        };
        let initial = res.presence.is_none();
        res.presence = Some(p.clone());
        res.priority = priority;
        let user = from.local().unwrap_or("").to_owned();
        self.broadcast_presence(&user, from, &p);
        if initial {
            self.initial_presence_probe(&user, from);
            if let Some(ps) = self.pubsub.as_mut() {
                let out = ps.on_available(from, now_ms());
                self.pubsub_deliver(out);
            }
        }
        // XEP-0115/0163: interests from caps; only newly interesting nodes get their
        // last item (an unchanged presence update changes nothing).
        let now = now_ms();
        let mut ev = self.caps.expire(now);
        let more = self.caps.on_presence(from, &p, true, now);
        ev.queries.extend(more.queries);
        ev.updates.extend(more.updates);
        ev.overloaded |= more.overloaded;
        self.caps_events(ev);
    }

    /// Sends the caps disco#info queries and hands new PEP interests to the engine.
    fn caps_events(&mut self, ev: crate::caps::CapsEvents) {
        if ev.overloaded {
            tracing::warn!("caps table full: a resource gets no PEP notifications");
        }
        if let Ok(domain) = Jid::parse(&self.config.domain) {
            for q in &ev.queries {
                if let Some(ob) = self.resource_outbox(&q.to) {
                    self.send(ob, &Rc::from(q.to_element(&domain).to_string_in_stream()));
                }
            }
        }
        for u in ev.updates.into_iter().filter(|u| !u.added.is_empty()) {
            let Some(mut engine) = self.pubsub.take() else {
                return;
            };
            let out = engine.pep_interest_added(&*self, &self.store, &u.jid, &u.added, now_ms());
            self.pubsub = Some(engine);
            self.pubsub_deliver(out);
        }
    }

    /// XEP-0163 §7.1: `user`'s roster item for `contact` changed from `before` to
    /// `after` (presence subscription `from`, groups): PEP access is recalculated.
    fn pep_roster_hook(
        &mut self,
        user: &str,
        contact: &str,
        before: Option<(bool, Vec<String>)>,
        after: Option<(bool, Vec<String>)>,
    ) {
        if before == after {
            return;
        }
        let (Ok(owner), Ok(contact)) = (
            Jid::parse(&format!("{user}@{}", self.config.domain)),
            Jid::parse(contact),
        ) else {
            return;
        };
        let gained = after.as_ref().is_some_and(|a| a.0) && !before.as_ref().is_some_and(|b| b.0);
        let Some(mut engine) = self.pubsub.take() else {
            return;
        };
        let out =
            engine.pep_roster_changed(&*self, &self.store, &owner, &contact, gained, now_ms());
        self.pubsub = Some(engine);
        self.pubsub_deliver(out);
    }

    /// Broadcast a presence of `from` to its contacts with a `from` subscription and to the
    /// account's other available resources (RFC 6121 §4.2.2, §4.4.2).
    fn broadcast_presence(&self, user: &str, from: &Jid, p: &Element) {
        let Some(acc) = self.accounts.get(user) else {
            return;
        };
        for item in acc.roster.iter().filter(|i| i.subscription.has_from()) {
            let Ok(contact) = Jid::parse(&item.jid) else {
                continue;
            };
            let mut copy = p.clone();
            copy.set_attr("to", contact.as_str());
            self.deliver_to_available(&contact, &Rc::from(copy.to_string_in_stream()));
        }
        let mut own = p.clone();
        own.set_attr("to", from.bare().as_str());
        let s: Rc<str> = Rc::from(own.to_string_in_stream());
        for r in acc
            .resources
            .iter()
            .filter(|r| &r.jid != from && r.presence.is_some())
        {
            self.send(&r.outbox, &s);
        }
    }

    /// After initial presence: the user gets its contacts' presence (the server answers the
    /// probes locally, §4.3) and its own other resources' presence, plus any pending
    /// subscription requests (§3.1.3).
    fn initial_presence_probe(&self, user: &str, to: &Jid) {
        let Some(acc) = self.accounts.get(user) else {
            return;
        };
        let Some(ob) = acc
            .resources
            .iter()
            .find(|r| &r.jid == to)
            .map(|r| r.outbox.clone())
        else {
            return;
        };
        for item in &acc.roster {
            let Ok(contact) = Jid::parse(&item.jid) else {
                continue;
            };
            if item.subscription.has_to() {
                self.send_presence_of(&contact, to, &ob);
            }
            if item.pending_in {
                let s = format!(
                    "<presence type='subscribe' from='{}' to='{}'/>",
                    attr(contact.as_str()),
                    attr(to.bare().as_str())
                );
                self.send(&ob, &Rc::from(s));
            }
        }
        for r in acc.resources.iter().filter(|r| &r.jid != to) {
            if let Some(p) = &r.presence {
                let mut copy = p.clone();
                copy.set_attr("to", to.as_str());
                self.send(&ob, &Rc::from(copy.to_string_in_stream()));
            }
        }
    }

    /// Send the current presence of every available resource of `contact` to one outbox.
    fn send_presence_of(&self, contact: &Jid, to: &Jid, ob: &Rc<Outbox>) {
        let Some(acc) = contact.local().and_then(|l| self.accounts.get(l)) else {
            return;
        };
        if contact.domain() != self.config.domain {
            return;
        }
        for r in &acc.resources {
            if let Some(p) = &r.presence {
                let mut copy = p.clone();
                copy.set_attr("to", to.as_str());
                self.send(ob, &Rc::from(copy.to_string_in_stream()));
            }
        }
    }

    /// Deliver to every available resource of a local bare JID (or one full JID).
    fn deliver_to_available<S: Clone + Into<Stanza>>(&self, to: &Jid, s: &S) {
        self.deliver_to_available_via(to, &s.clone().into(), Lane::Direct);
    }

    fn deliver_to_available_via(&self, to: &Jid, s: &Stanza, lane: Lane) {
        if to.domain() != self.config.domain {
            return;
        }
        let Some(acc) = to.local().and_then(|l| self.accounts.get(l)) else {
            return;
        };
        for r in &acc.resources {
            if r.presence.is_some() && (to.is_bare() || &r.jid == to) {
                self.send_via(&r.outbox, s.clone(), lane);
            }
        }
    }

    fn presence_unavailable(&mut self, from: &Jid, p: Element) {
        let Some(res) = self.resource_mut(from) else {
            return;
        };
        if res.presence.is_none() {
            return;
        }
        res.presence = None;
        let directed = std::mem::take(&mut res.directed);
        self.caps.remove(from);
        let mut p = p;
        p.remove_attr("to");
        let user = from.local().unwrap_or("").to_owned();
        self.broadcast_presence(&user, from, &p);
        for d in directed {
            let mut copy = p.clone();
            copy.set_attr("to", d.as_str());
            self.deliver_to_available(&d, &Rc::from(copy.to_string_in_stream()));
        }
        self.pubsub_unavailable(from);
    }

    /// Unavailable presence on behalf of a resource that went away.
    fn broadcast_unavailable(&self, res: &Resource) {
        let p = Element::new("presence", NS_CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", res.jid.as_str());
        if let Some(user) = res.jid.local() {
            self.broadcast_presence(user, &res.jid, &p);
        }
        for d in &res.directed {
            let mut copy = p.clone();
            copy.set_attr("to", d.as_str());
            self.deliver_to_available(d, &Rc::from(copy.to_string_in_stream()));
        }
    }

    /// RFC 6121 §4.6 directed presence.
    fn directed_presence(&mut self, from: &Jid, to: &Jid, p: Element, available: bool) {
        match self.classify(to) {
            Target::Local(user) => {
                if !self.account_exists(&user) {
                    return;
                }
                let s: Rc<str> = Rc::from(p.to_string_in_stream());
                self.deliver_to_available(to, &s);
                let subscribed = self
                    .roster_item(from.local().unwrap_or(""), &to.bare())
                    .is_some_and(|i| i.subscription.has_from());
                if let Some(res) = self.resource_mut(from) {
                    if available && !subscribed && res.presence.is_some() {
                        if !res.directed.contains(to) {
                            if res.directed.len() >= MAX_DIRECTED {
                                res.directed.remove(0);
                            }
                            res.directed.push(to.clone());
                        }
                    } else if !available {
                        res.directed.retain(|d| d != to);
                    }
                }
            }
            Target::Domain => {}
            Target::Remote => self.bounce(&p, StanzaError::new(Condition::RemoteServerNotFound)),
        }
    }

    /// A client probe (§4.3): answered from local state if the prober is subscribed.
    fn probe(&self, from: &Jid, to: &Jid) {
        let Some(user) = from.local() else { return };
        let allowed = from.bare() == to.bare()
            || self
                .roster_item(user, &to.bare())
                .is_some_and(|i| i.subscription.has_to());
        if !allowed {
            return;
        }
        if let Some(ob) = self.resource_outbox(from) {
            self.send_presence_of(to, from, ob);
        }
    }

    // ---------------------------------------------------------------- roster storage

    /// The item `contact` of `user`'s roster: as the roster change being worked out left
    /// it, else as committed (cached while the account is online, else from the store).
    fn roster_item(&self, user: &str, contact: &Jid) -> Option<RosterItem> {
        if let Some(t) = self.roster_txn.borrow().as_ref() {
            if let Some(item) = t.item(user, contact.as_str()) {
                return item;
            }
        }
        if let Some(acc) = self.accounts.get(user) {
            return acc
                .roster
                .iter()
                .find(|i| i.jid == contact.as_str())
                .cloned();
        }
        match self.store.roster_get(user) {
            Ok(items) => items.into_iter().find(|i| i.jid == contact.as_str()),
            Err(e) => {
                tracing::error!(user, error = %e, "cannot read roster");
                None
            }
        }
    }

    /// Save an item and push it to the user's interested resources (both once the change
    /// is on disk, see [`Router::roster_transaction`]).
    fn roster_save(&mut self, user: &str, item: RosterItem) {
        let before = Jid::parse(&item.jid)
            .ok()
            .and_then(|c| self.roster_item(user, &c))
            .map(|i| (i.subscription.has_from(), i.groups));
        let after = Some((item.subscription.has_from(), item.groups.clone()));
        let contact = item.jid.clone();
        self.roster_save_inner(user, item);
        self.pep_roster_hook(user, &contact, before, after);
    }

    /// Records a write in the roster change being worked out.
    fn roster_record(&self, write: RosterWrite) {
        let persist = !self.accounts.get(write.user()).is_some_and(|a| a.anonymous);
        match self.roster_txn.borrow_mut().as_mut() {
            Some(t) => t.writes.push((write, persist)),
            // Invariant: every roster change runs inside `roster_transaction`.
            None => tracing::error!(
                user = write.user(),
                "bug: roster change outside a transaction; not saved"
            ),
        }
    }

    fn roster_save_inner(&mut self, user: &str, item: RosterItem) {
        let push = item.in_roster;
        self.roster_record(RosterWrite::Put(user.to_owned(), item.clone()));
        if push {
            self.roster_push(user, &item, false);
        }
    }

    fn roster_delete(&mut self, user: &str, contact: &str) {
        let before = Jid::parse(contact)
            .ok()
            .and_then(|c| self.roster_item(user, &c))
            .map(|i| (i.subscription.has_from(), i.groups));
        self.roster_delete_inner(user, contact);
        self.pep_roster_hook(user, contact, before, None);
    }

    fn roster_delete_inner(&mut self, user: &str, contact: &str) {
        let existing = Jid::parse(contact)
            .ok()
            .and_then(|c| self.roster_item(user, &c));
        let Some(item) = existing else {
            return;
        };
        self.roster_record(RosterWrite::Remove(user.to_owned(), contact.to_owned()));
        if item.in_roster {
            self.roster_push(user, &item, true);
        }
    }

    /// Handles a roster request (roster IQ, subscription presence) as one change: `f` works
    /// it out against the durable rosters, its writes ([`Router::roster_record`]) are
    /// staged for the group commit, and everything it sends (reply, roster pushes,
    /// presence) waits in the transaction. Once the commit is on disk the rosters in
    /// memory change and the stanzas go out ([`Router::roster_committed`]); if the commit
    /// fails the request gets an error and nothing changes. A change that writes nothing
    /// (a roster get, an anonymous account's roster) is answered at once. While a change
    /// waits for its commit, later roster requests wait too, in order.
    fn roster_transaction(&mut self, from: &Jid, request: &Element, f: impl FnOnce(&mut Self)) {
        if !self.roster_pending.is_empty()
            || (!self.roster_deferred.is_empty() && !self.roster_replaying)
        {
            self.roster_defer(from, request);
            return;
        }
        *self.roster_txn.borrow_mut() = Some(RosterTxn::default());
        f(self);
        let Some(txn) = self.roster_txn.borrow_mut().take() else {
            return;
        };
        let persist: Vec<RosterWrite> = txn
            .writes
            .iter()
            .filter(|(_, p)| *p)
            .map(|(w, _)| w.clone())
            .collect();
        let writes: Vec<RosterWrite> = txn.writes.into_iter().map(|(w, _)| w).collect();
        match self.store.roster_stage(&persist) {
            Ok(None) => {
                // Nothing to wait for: on disk already, or nothing to save.
                self.roster_apply(&writes);
                self.roster_flush(txn.out);
            }
            Ok(Some(generation)) => self.roster_pending.push_back(RosterPending {
                generation,
                writes,
                out: txn.out,
                from: from.clone(),
                request: request.clone(),
            }),
            Err(StoreError::LimitReached { max, .. }) => {
                // A full roster (the contact's, for a subscription request): the client's
                // doing, not the server's trouble.
                tracing::info!(
                    user = from.local().unwrap_or(""),
                    max,
                    "roster change refused: the roster is full"
                );
                self.roster_refuse(from, request, Condition::NotAllowed, &roster_full_text(max));
            }
            Err(e) => {
                let (condition, text) = roster_failure(&e);
                if matches!(e, StoreError::Invalid(_)) {
                    tracing::info!(user = from.local().unwrap_or(""), error = %e, "roster change refused, nothing changed");
                } else {
                    // A storage fault: logged once, then rate-limited.
                    self.storage_failed(&e);
                }
                self.roster_refuse(from, request, condition, text);
            }
        }
    }

    /// Keeps a roster request until the change before it is on disk.
    fn roster_defer(&mut self, from: &Jid, request: &Element) {
        let bytes = request.heap_size() + 64;
        if self.roster_deferred.len() >= MAX_ROSTER_DEFERRED
            || self.roster_deferred_bytes + bytes > MAX_ROSTER_DEFERRED_BYTES
        {
            tracing::warn!(from = %from, "roster request refused: too many roster requests wait for the disk");
            self.bounce(
                request,
                StanzaError::new(Condition::ResourceConstraint)
                    .with_text("too many roster changes are waiting for the disk; retry later"),
            );
            return;
        }
        self.roster_deferred_bytes += bytes;
        self.roster_deferred
            .push_back((from.clone(), request.clone()));
    }

    /// The commit of `generation` ended (`failure`: how it failed, for the error replies).
    /// Roster changes it carried are applied and their stanzas sent, or refused; then the
    /// roster requests that waited are handled.
    fn roster_committed(&mut self, generation: u64, failure: Option<(Condition, &'static str)>) {
        while self
            .roster_pending
            .front()
            .is_some_and(|p| p.generation <= generation || failure.is_some())
        {
            let Some(p) = self.roster_pending.pop_front() else {
                break;
            };
            match failure {
                None => {
                    self.roster_apply(&p.writes);
                    self.roster_flush(p.out);
                }
                Some((condition, text)) => {
                    // The storage fault itself is logged (rate-limited) by `storage_failed`.
                    tracing::debug!(
                        user = p.from.local().unwrap_or(""),
                        "roster change not saved: the client got an error and nothing changed"
                    );
                    self.roster_refuse(&p.from, &p.request, condition, text);
                }
            }
        }
        if !self.roster_pending.is_empty() || self.roster_replaying {
            return;
        }
        self.roster_replaying = true;
        while self.roster_pending.is_empty() {
            let Some((from, stanza)) = self.roster_deferred.pop_front() else {
                break;
            };
            self.roster_deferred_bytes -= stanza.heap_size() + 64;
            self.route(&from, stanza);
        }
        self.roster_replaying = false;
    }

    /// Applies committed roster writes to the rosters in memory (accounts online).
    fn roster_apply(&mut self, writes: &[RosterWrite]) {
        for w in writes {
            let Some(acc) = self.accounts.get_mut(w.user()) else {
                continue;
            };
            match w {
                RosterWrite::Put(_, item) => {
                    match acc.roster.iter_mut().find(|i| i.jid == item.jid) {
                        Some(slot) => *slot = item.clone(),
                        None => acc.roster.push(item.clone()),
                    }
                }
                RosterWrite::Remove(_, jid) => acc.roster.retain(|i| &i.jid != jid),
            }
        }
    }

    /// Sends the stanzas of a committed roster change.
    fn roster_flush(&self, out: Vec<(Rc<Outbox>, Stanza, Lane)>) {
        for (ob, s, lane) in out {
            self.send_via(&ob, s, lane);
        }
    }

    /// Answers a roster request whose change was not saved.
    fn roster_refuse(&self, from: &Jid, request: &Element, condition: Condition, text: &str) {
        let Some(reply) = proto::error_reply(request, &StanzaError::new(condition).with_text(text))
        else {
            return;
        };
        if let Some(ob) = self.resource_outbox(from) {
            self.send(ob, &Rc::from(reply.to_string_in_stream()));
        }
    }

    /// RFC 6121 §2.1.6 roster push to every interested resource.
    fn roster_push(&mut self, user: &str, item: &RosterItem, removed: bool) {
        self.push_counter += 1;
        let n = self.push_counter;
        let Some(acc) = self.accounts.get(user) else {
            return;
        };
        for r in acc.resources.iter().filter(|r| r.interested) {
            let iq = Element::new("iq", NS_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("push{n}"))
                .with_attr("to", r.jid.as_str())
                .with_child(
                    Element::new("query", NS_ROSTER).with_child(roster_item_element(item, removed)),
                );
            self.send(&r.outbox, &Rc::from(iq.to_string_in_stream()));
        }
    }

    // ---------------------------------------------------------------- roster IQs (RFC 6121 §2)

    fn roster_iq(&mut self, from: &Jid, iq: &Element, q: &Element) {
        let user = from.local().unwrap_or("").to_owned();
        if iq.attr("type") == Some("get") {
            if let Some(r) = self.resource_mut(from) {
                r.interested = true;
            }
            let mut query = Element::new("query", NS_ROSTER);
            if let Some(acc) = self.accounts.get(&user) {
                for item in acc.roster.iter().filter(|i| i.in_roster) {
                    query.push_child(roster_item_element(item, false));
                }
            }
            self.deliver_reply(proto::iq_result(iq, Some(query)));
            return;
        }
        // roster set: exactly one item (§2.3.3)
        let items: Vec<&Element> = q.elements().filter(|e| e.is("item", NS_ROSTER)).collect();
        if items.len() != 1 || q.elements().count() != 1 {
            self.bounce(
                iq,
                StanzaError::new(Condition::BadRequest)
                    .with_text("a roster set carries exactly one item"),
            );
            return;
        }
        let it = items[0];
        let Some(contact) = it
            .attr("jid")
            .and_then(|j| Jid::parse(j).ok())
            .map(|j| j.bare())
        else {
            self.bounce(
                iq,
                StanzaError::new(Condition::BadRequest).with_text("item needs a valid jid"),
            );
            return;
        };
        match it.attr("subscription") {
            Some("remove") => {
                self.roster_remove(&user, &contact);
                self.deliver_reply(proto::iq_result(iq, None));
                return;
            }
            None | Some("none" | "to" | "from" | "both") => {}
            Some(_) => {
                self.bounce(
                    iq,
                    StanzaError::new(Condition::BadRequest)
                        .with_text("invalid subscription attribute"),
                );
                return;
            }
        }
        let name = it.attr("name").map(str::to_owned).filter(|n| !n.is_empty());
        let mut groups: Vec<String> = Vec::new();
        for g in it.elements().filter(|e| e.is("group", NS_ROSTER)) {
            let g = g.text();
            if g.is_empty() || g.len() > MAX_ROSTER_TEXT {
                self.bounce(
                    iq,
                    StanzaError::new(Condition::NotAcceptable)
                        .with_text("group names must be 1 to 255 bytes"),
                );
                return;
            }
            if groups.contains(&g) {
                self.bounce(
                    iq,
                    StanzaError::new(Condition::BadRequest).with_text("duplicate group"),
                );
                return;
            }
            groups.push(g);
        }
        if name.as_ref().is_some_and(|n| n.len() > MAX_ROSTER_TEXT)
            || groups.len() > MAX_ROSTER_GROUPS
        {
            self.bounce(
                iq,
                StanzaError::new(Condition::NotAcceptable).with_text("name or groups too long"),
            );
            return;
        }
        let existing = self.roster_item(&user, &contact);
        let visible = self
            .accounts
            .get(&user)
            .map(|a| a.roster.iter().filter(|i| i.in_roster).count())
            .unwrap_or(0);
        if existing.as_ref().is_none_or(|i| !i.in_roster)
            && visible >= self.config.limits.max_roster_items
        {
            self.bounce(
                iq,
                StanzaError::new(Condition::NotAllowed)
                    .with_text(roster_full_text(self.config.limits.max_roster_items)),
            );
            return;
        }
        let mut item = existing.unwrap_or_else(|| new_item(&contact));
        item.name = name;
        item.groups = groups;
        item.in_roster = true;
        self.roster_save(&user, item);
        self.deliver_reply(proto::iq_result(iq, None));
    }

    /// §2.5.2: removing an item also cancels subscriptions in both directions.
    fn roster_remove(&mut self, user: &str, contact: &Jid) {
        let Some(item) = self.roster_item(user, contact) else {
            return;
        };
        let me = Jid::new(Some(user), &self.config.domain.clone(), None);
        if let Ok(me) = me {
            if item.subscription.has_to() || item.ask_out {
                self.inbound_subscription(&me, contact, "unsubscribe");
            }
            if item.subscription.has_from() || item.pending_in {
                self.inbound_subscription(&me, contact, "unsubscribed");
                self.send_unavailable_to(user, contact);
            }
        }
        self.roster_delete(user, contact.as_str());
    }

    // ---------------------------------------------------------------- subscriptions (RFC 6121 §3)

    /// Outbound subscription stanza from `from` about `contact`.
    fn subscription(&mut self, from: &Jid, contact: &Jid, ty: &str) {
        let user = from.local().unwrap_or("").to_owned();
        let me = from.bare();
        if contact == &me {
            return;
        }
        if matches!(self.classify(contact), Target::Remote | Target::Domain) {
            if ty == "subscribe" {
                let p = Element::new("presence", NS_CLIENT)
                    .with_attr("type", ty)
                    .with_attr("from", from.as_str())
                    .with_attr("to", contact.as_str());
                self.bounce(
                    &p,
                    StanzaError::new(Condition::RemoteServerNotFound)
                        .with_text("no server-to-server support"),
                );
            }
            return;
        }
        let mut item = self
            .roster_item(&user, contact)
            .unwrap_or_else(|| new_item(contact));
        let before = item.clone();
        match ty {
            "subscribe" => {
                if !item.subscription.has_to() {
                    item.ask_out = true;
                }
                item.in_roster = true;
            }
            "subscribed" => {
                if !item.pending_in {
                    // No pre-approval support (RFC 6121 §3.4): nothing to approve.
                    return;
                }
                item.pending_in = false;
                item.subscription = add_from(item.subscription);
                item.in_roster = true;
            }
            "unsubscribe" => {
                item.ask_out = false;
                item.subscription = drop_to(item.subscription);
            }
            _ => {
                item.pending_in = false;
                item.subscription = drop_from(item.subscription);
            }
        }
        if item != before {
            self.roster_save(&user, item);
        }
        self.inbound_subscription(&me, contact, ty);
        match ty {
            // §3.1.5: the contact's available resources send their presence.
            "subscribed" => self.send_presence_to_contact(&user, contact),
            // §3.2.3: the user's resources send unavailable presence to the contact.
            "unsubscribed" => self.send_unavailable_to(&user, contact),
            _ => {}
        }
    }

    /// Inbound processing at the contact's side (the contact is local).
    fn inbound_subscription(&mut self, from: &Jid, contact: &Jid, ty: &str) {
        let Some(cuser) = contact.local().map(str::to_owned) else {
            return;
        };
        if !self.account_exists(&cuser) {
            if ty == "subscribe" {
                // §3.1.3: an unknown contact auto-replies unsubscribed.
                self.inbound_subscription(contact, from, "unsubscribed");
            }
            return;
        }
        let existing = self.roster_item(&cuser, from);
        let mut item = existing.clone().unwrap_or_else(|| {
            let mut i = new_item(from);
            i.in_roster = false;
            i
        });
        let deliver = match ty {
            "subscribe" => {
                if item.subscription.has_from() {
                    // §3.1.3: already approved: auto-reply subscribed, with the contact's presence.
                    self.inbound_subscription(contact, from, "subscribed");
                    self.send_presence_to_contact(&cuser, from);
                    false
                } else {
                    item.pending_in = true;
                    true
                }
            }
            "subscribed" => {
                if !item.ask_out {
                    return;
                }
                item.ask_out = false;
                item.subscription = add_to(item.subscription);
                true
            }
            "unsubscribe" => {
                let had = item.subscription.has_from() || item.pending_in;
                item.pending_in = false;
                item.subscription = drop_from(item.subscription);
                had
            }
            _ => {
                let had = item.subscription.has_to() || item.ask_out;
                item.ask_out = false;
                item.subscription = drop_to(item.subscription);
                had
            }
        };
        if existing.as_ref() != Some(&item) {
            if !item.in_roster
                && item.subscription == Subscription::None
                && !item.pending_in
                && !item.ask_out
            {
                if existing.is_some() {
                    self.roster_delete(&cuser, from.as_str());
                }
            } else {
                self.roster_save(&cuser, item);
            }
        }
        if deliver {
            let s = format!(
                "<presence type='{}' from='{}' to='{}'/>",
                ty,
                attr(from.as_str()),
                attr(contact.as_str())
            );
            self.deliver_to_available(contact, &Rc::from(s));
        }
    }

    /// The user's available resources send their presence to a contact that just got a subscription.
    fn send_presence_to_contact(&self, user: &str, contact: &Jid) {
        let Some(acc) = self.accounts.get(user) else {
            return;
        };
        for r in &acc.resources {
            if let Some(p) = &r.presence {
                let mut copy = p.clone();
                copy.set_attr("to", contact.as_str());
                self.deliver_to_available(contact, &Rc::from(copy.to_string_in_stream()));
            }
        }
    }

    fn send_unavailable_to(&self, user: &str, contact: &Jid) {
        let Some(acc) = self.accounts.get(user) else {
            return;
        };
        for r in acc.resources.iter().filter(|r| r.presence.is_some()) {
            let s = format!(
                "<presence type='unavailable' from='{}' to='{}'/>",
                attr(r.jid.as_str()),
                attr(contact.as_str())
            );
            self.deliver_to_available(contact, &Rc::from(s));
        }
    }
}

impl crate::pubsub::Directory for Router {
    fn roster_entry(&self, owner: &Jid, contact: &Jid) -> Option<(bool, Vec<String>)> {
        if owner.domain() != self.config.domain {
            return None;
        }
        let item = self.roster_item(owner.local()?, &contact.bare())?;
        Some((item.subscription.has_from(), item.groups))
    }

    fn presences(&self, bare: &Jid) -> Vec<(Jid, String)> {
        let acc = match bare.local() {
            Some(user) if bare.domain() == self.config.domain => self.accounts.get(user),
            _ => None,
        };
        acc.map(|a| {
            a.resources
                .iter()
                .filter_map(|r| {
                    let p = r.presence.as_ref()?;
                    let show = p.child("show", NS_CLIENT).map(|s| s.text());
                    let show = show.as_deref().map(str::trim).filter(|s| !s.is_empty());
                    Some((r.jid.clone(), show.unwrap_or("online").to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
    }

    fn wants(&self, full: &Jid, node: &str) -> bool {
        self.caps.wants(full, node)
    }

    fn presence_subscribers(&self, owner: &Jid) -> Vec<Jid> {
        self.roster_of(owner)
            .into_iter()
            .filter(|i| i.subscription.has_from())
            .filter_map(|i| Jid::parse(&i.jid).ok())
            .collect()
    }

    fn presence_subscriptions(&self, contact: &Jid) -> Vec<Jid> {
        self.roster_of(contact)
            .into_iter()
            .filter(|i| i.subscription.has_to())
            .filter_map(|i| Jid::parse(&i.jid).ok())
            .collect()
    }
}

impl Router {
    /// The roster of a local account (cached while online, else read from the store).
    fn roster_of(&self, bare: &Jid) -> Vec<RosterItem> {
        let Some(user) = bare.local().filter(|_| bare.domain() == self.config.domain) else {
            return Vec::new();
        };
        let mut roster = match self.accounts.get(user) {
            Some(acc) => acc.roster.clone(),
            None => self.store.roster_get(user).unwrap_or_else(|e| {
                tracing::error!(user, error = %e, "cannot read roster");
                Vec::new()
            }),
        };
        // The roster change being worked out, if it touches this roster.
        if let Some(t) = self.roster_txn.borrow().as_ref() {
            for (w, _) in t.writes.iter().filter(|(w, _)| w.user() == user) {
                roster.retain(|i| i.jid != w.jid());
                if let RosterWrite::Put(_, item) = w {
                    roster.push(item.clone());
                }
            }
        }
        roster
    }
}

/// Random anonymous usernames tried before an anonymous login fails (10 random
/// alphanumerics: a single collision is already unlikely, several mean something is wrong).
pub const ANON_USER_ATTEMPTS: usize = 4;

/// Why no anonymous username could be chosen.
#[derive(Debug)]
pub enum AnonUserError {
    /// Reading the account table failed.
    Store(StoreError),
    /// Every name tried was already taken.
    Collisions(usize),
}

impl std::fmt::Display for AnonUserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnonUserError::Store(e) => write!(f, "account lookup failed: {e}"),
            AnonUserError::Collisions(n) => write!(f, "{n} random usernames were all taken"),
        }
    }
}

/// `anon-` and ten lower-case alphanumerics of `nonce()`, retried up to `attempts` times
/// while `taken` says the name exists; a `taken` error ends the search.
fn pick_anonymous_user(
    attempts: usize,
    mut nonce: impl FnMut() -> String,
    mut taken: impl FnMut(&str) -> Result<bool, StoreError>,
) -> Result<String, AnonUserError> {
    for _ in 0..attempts {
        let n = nonce();
        let user: String = format!(
            "anon-{}",
            n.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(10)
                .collect::<String>()
        )
        .to_lowercase();
        if !taken(&user).map_err(AnonUserError::Store)? {
            return Ok(user);
        }
    }
    Err(AnonUserError::Collisions(attempts))
}

/// The text of the `not-allowed` error for a roster at its limit.
fn roster_full_text(max: usize) -> String {
    format!("the roster is full: at most {max} items (limits.max_roster_items)")
}

/// The error a roster request gets when its change cannot be saved: a full disk is
/// `resource-constraint` (wait: it may work once space is freed), anything else
/// `internal-server-error`.
fn roster_failure(e: &StoreError) -> (Condition, &'static str) {
    match e {
        StoreError::Full => (
            Condition::ResourceConstraint,
            "the server's disk is full: the roster change could not be confirmed as saved; get the roster before retrying",
        ),
        StoreError::LimitReached { .. } => (Condition::NotAllowed, "the roster is full"),
        StoreError::Invalid(_) => (Condition::NotAcceptable, "the roster item cannot be stored"),
        _ => (
            Condition::InternalServerError,
            "the roster change could not be confirmed as saved (storage error); get the roster before retrying",
        ),
    }
}

/// A random value (the seed of generated pub-sub ids); 0 without system randomness, when
/// item ids are still unique within their node (checked against its items).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        tracing::warn!("no system randomness for the seed of generated pub-sub ids");
    }
    // 48 bits: ids stay short (at most 12 hex digits after the time) and runs still differ.
    u64::from_le_bytes(b) >> 16
}

/// Milliseconds since the Unix epoch (the pub-sub engine's clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Features of the server JID, derived from what `server_iq` answers.
const SERVER_FEATURES: &[&str] = &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION];

fn attr(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    crate::xml::escape_attr(s, &mut o);
    o
}

fn new_item(contact: &Jid) -> RosterItem {
    RosterItem {
        jid: contact.as_str().to_owned(),
        name: None,
        subscription: Subscription::None,
        ask_out: false,
        pending_in: false,
        groups: Vec::new(),
        in_roster: true,
    }
}

fn add_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::From,
        Subscription::To | Subscription::Both => Subscription::Both,
    }
}
fn add_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::To,
        Subscription::From | Subscription::Both => Subscription::Both,
    }
}
fn drop_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::None,
        Subscription::To | Subscription::Both => Subscription::To,
    }
}
fn drop_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::None,
        Subscription::From | Subscription::Both => Subscription::From,
    }
}

/// The `<item/>` of a roster result or push.
fn roster_item_element(item: &RosterItem, removed: bool) -> Element {
    let mut e = Element::new("item", NS_ROSTER).with_attr("jid", item.jid.clone());
    if removed {
        e.set_attr("subscription", "remove");
        return e;
    }
    if let Some(n) = &item.name {
        e.set_attr("name", n.clone());
    }
    e.set_attr("subscription", item.subscription.as_str());
    if item.ask_out {
        e.set_attr("ask", "subscribe");
    }
    for g in &item.groups {
        e.push_child(Element::new("group", NS_ROSTER).with_text(g.clone()));
    }
    e
}

#[cfg(test)]
mod tests;
