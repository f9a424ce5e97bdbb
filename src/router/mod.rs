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
use crate::env::Env;
use crate::jid::Jid;
use crate::limits::Limits;
use crate::outbox::{Backlog, Kick, Outbox, Stanza};
use crate::proto::{
    self, Condition, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_ROSTER, NS_VERSION, StanzaError,
    StreamCondition,
};
use std::cell::RefCell;
use std::collections::VecDeque;

use crate::stanza::{Iq, IqType, Message, MessageType, Presence, PresenceType};
use crate::storage::{RosterItem, RosterWrite, Storage, StoreError, Subscription};
use crate::xml::{Element, NS_CLIENT};

mod component;
#[cfg(test)]
mod im_tests;
mod messages;
mod offline;
mod presence;
mod pubsub;
mod roster;
mod server_iq;
mod sessions;
mod sm;
mod storage;
#[cfg(test)]
mod tests;

use offline::OfflineState;
use roster::{RosterPending, RosterTxn};
#[cfg(test)]
use sessions::pick_anonymous_user;
pub use sessions::{ANON_USER_ATTEMPTS, AnonUserError};
pub use sm::{Resumable, ResumeError};
use storage::Outage;

/// Connection identifier, unique for the life of the process.
pub type ConnId = u64;

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
    /// Its XEP-0198 resumption id, when it is resumable.
    sm_id: Option<Rc<str>>,
}

/// An account with at least one bound resource.
struct Account {
    anonymous: bool,
    resources: Vec<Resource>,
    /// The roster as committed: loaded at first bind, changed when a roster change is on
    /// disk ([`Router::roster_transaction`]).
    roster: Vec<RosterItem>,
}

/// The broker: IM, caps and pub-sub side by side (`Broker { im, caps, pubsub }`), with
/// what they share (the configuration, the store, the clocks and randomness). IM never owns
/// pub-sub: each gets the others' state through borrows of sibling fields (pub-sub reads
/// rosters and presences through [`Dir`]).
pub struct Router {
    config: Rc<Config>,
    /// The database, through the core's storage contract (the shell's redb store).
    store: Rc<dyn Storage>,
    /// The clocks and the random number generator (passed in by the shell).
    env: Rc<dyn Env>,
    /// Secret for SCRAM's fake credentials of unknown users (account enumeration defence).
    secret: [u8; 32],
    /// RFC 6120/6121 IM: bound sessions, rosters and their group-committed changes.
    im: Im,
    /// XEP-0115 caps of the available resources: their PEP `+notify` interests.
    caps: crate::caps::CapsTable,
    /// XEP-0060/0163: the engine and what delivering its output needs.
    pubsub: PubSub,
    /// The current storage fault, for rate-limited logging; `None` while writes work.
    outage: Option<Outage>,
    /// XEP-0198: the resumable sessions.
    sm: sm::SmRegistry,
    /// XEP-0160: what each account has in offline storage.
    offline: OfflineState,
    /// XEP-0114 component mode: the connection to the server and what it told us.
    component: component::ComponentLink,
}

/// The IM side of the broker (RFC 6121): accounts with their bound resources and rosters.
struct Im {
    accounts: HashMap<String, Account>,
    push_counter: u64,
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

/// The pub-sub side of the broker.
struct PubSub {
    /// The XEP-0060 service. `None` while its state cannot be reloaded after a failed
    /// write (the database could not be reopened yet, see [`Router::storage_reopened`]):
    /// the service stays listed and answers every request with
    /// [`crate::pubsub::unavailable_error`], rather than risk serving what the disk lost.
    engine: Option<crate::pubsub::Engine>,
    /// The service's JID (kept while `engine` is `None`).
    service: Jid,
    /// Wakes the pub-sub timer task when the engine's next deadline moved earlier.
    wake: Option<Box<dyn Fn()>>,
    /// What the outboxes' backlogs hold together (pub-sub back-pressure).
    backlog: Rc<Backlog>,
    /// Sessions not read while their pub-sub requests are deferred (back-pressure).
    paused: Vec<Rc<Outbox>>,
}

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
    /// A router over `store`, with the pub-sub service loaded from it; `env` gives it the
    /// time and randomness (`system::SystemEnv` in the daemon).
    ///
    /// # Errors
    ///
    /// The pub-sub state cannot be loaded (a store failure, or a stored node this build
    /// cannot read). The broker does not start then: running without pub-sub would look
    /// healthy while refusing its main service.
    pub fn new(
        config: Rc<Config>,
        store: Rc<dyn Storage>,
        env: Rc<dyn Env>,
    ) -> Result<Router, crate::pubsub::EngineError> {
        let mut secret = [0u8; 32];
        // With no randomness the fake-credential defence degrades to a fixed salt per user; log it.
        if !env.fill_random(&mut secret) {
            secret = [0u8; 32];
            tracing::warn!("no system randomness for the SCRAM secret");
        }
        store.set_max_roster_items(config.limits.max_roster_items);
        let backlog = Backlog::new();
        let mut pubsub = crate::pubsub::Engine::load(&config, &*store)?;
        pubsub.set_backlog(backlog.clone(), config.limits.pubsub_backlog_bytes);
        pubsub.seed_ids(random_u64(&*env));
        let pubsub_service = pubsub.service().clone();
        let pubsub = Some(pubsub);
        let caps =
            crate::caps::CapsTable::new(crate::caps::CapsLimits::from_limits(&config.limits));
        let offline = OfflineState::load(&*store);
        Ok(Router {
            config,
            store,
            env,
            secret,
            im: Im {
                accounts: HashMap::new(),
                push_counter: 0,
                roster_txn: RefCell::new(None),
                roster_pending: VecDeque::new(),
                roster_deferred: VecDeque::new(),
                roster_deferred_bytes: 0,
                roster_replaying: false,
            },
            caps,
            pubsub: PubSub {
                engine: pubsub,
                service: pubsub_service,
                wake: None,
                backlog,
                paused: Vec::new(),
            },
            outage: None,
            sm: sm::SmRegistry::default(),
            offline,
            component: component::ComponentLink::default(),
        })
    }

    /// The account of the outboxes' backlogs: every session's outbox charges it
    /// ([`Outbox::with_backlog`]).
    pub fn backlog(&self) -> Rc<Backlog> {
        self.pubsub.backlog.clone()
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

    /// The clocks and the random number generator the router was given.
    pub fn env(&self) -> &dyn Env {
        &*self.env
    }

    /// A fresh random nonce from the router's [`Env`] (SCRAM server nonces, stream ids,
    /// generated resources and anonymous usernames): see [`crate::sasl::random_nonce`].
    ///
    /// # Panics
    ///
    /// If the `Env` has no randomness, as [`crate::sasl::random_nonce`].
    pub fn random_nonce(&self) -> String {
        crate::sasl::random_nonce(&*self.env)
    }

    /// Milliseconds since the Unix epoch, from the router's [`Env`] (the pub-sub engine's
    /// clock).
    fn now_ms(&self) -> u64 {
        self.env.now_ms()
    }

    /// The store (accounts, rosters, pub-sub), as the core sees it.
    pub fn storage(&self) -> &dyn Storage {
        &*self.store
    }

    /// What SCRAM needs to look credentials up.
    pub fn auth_lookup(&self) -> (&[u8], &dyn Storage) {
        (&self.secret, &*self.store)
    }

    /// Whether SASL ANONYMOUS may be offered to a peer.
    pub fn anonymous_allowed(&self, loopback: bool) -> bool {
        match self.config.c2s.allow_anonymous {
            AnonymousPolicy::Never => false,
            AnonymousPolicy::Loopback => loopback,
            AnonymousPolicy::Always => true,
        }
    }

    /// Queue a stanza for one session. A full outbox closes that (slow) session; the
    /// sender is not affected.
    fn send<S: Clone + Into<Stanza>>(&self, outbox: &Rc<Outbox>, s: &S) {
        self.send_via(outbox, s.clone().into(), Lane::Direct);
    }

    fn send_via(&self, outbox: &Rc<Outbox>, s: Stanza, lane: Lane) {
        if let Some(txn) = self.im.roster_txn.borrow_mut().as_mut() {
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

    /// Deliver a server-generated stanza whose `to` is a local full JID (or, in component
    /// mode, a remote JID whose stanza came through the component).
    fn deliver_reply(&self, reply: Element) {
        let Some(to) = reply.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return;
        };
        if let Some(ob) = self.resource_outbox(&to) {
            self.send(ob, &Rc::from(reply.to_string_in_stream()));
        } else if let Some(ob) = self.component_reply_outbox(&reply, &to) {
            // Component mode: the answer to a stanza that came through the component.
            self.send(ob, &Rc::from(reply.to_string_in_stream()));
        }
    }

    /// Route a stanza from a bound session (its `from` is already stamped): typed and
    /// checked once ([`crate::stanza::Stanza::parse`]), then handed to its kind's handler.
    pub fn route(&mut self, from: &Jid, stanza: Element) {
        match crate::stanza::Stanza::parse(stanza) {
            Err(rejected) => self.bounce(&rejected.stanza, rejected.error),
            Ok(crate::stanza::Stanza::Iq(iq)) => self.route_iq(from, iq),
            Ok(crate::stanza::Stanza::Message(msg)) => self.route_message(from, msg),
            Ok(crate::stanza::Stanza::Presence(p)) => self.route_presence(from, p),
        }
    }

    fn route_iq(&mut self, from: &Jid, iq: Iq) {
        let request = iq.ty().is_request();
        let to = iq.to().cloned().unwrap_or_else(|| from.bare());
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
                    if let Some(ev) = self.caps.on_disco_result(from, iq.id(), &iq, self.now_ms()) {
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

    /// Deliver to every available resource of a local bare JID (or one full JID).
    fn deliver_to_available<S: Clone + Into<Stanza>>(&self, to: &Jid, s: &S) {
        self.deliver_to_available_via(to, &s.clone().into(), Lane::Direct);
    }

    fn deliver_to_available_via(&self, to: &Jid, s: &Stanza, lane: Lane) {
        if to.domain() != self.config.domain {
            return;
        }
        let Some(acc) = to.local().and_then(|l| self.im.accounts.get(l)) else {
            return;
        };
        for r in &acc.resources {
            if r.presence.is_some() && (to.is_bare() || &r.jid == to) {
                self.send_via(&r.outbox, s.clone(), lane);
            }
        }
    }
}

/// A random value (the seed of generated pub-sub ids); 0 without randomness, when item
/// ids are still unique within their node (checked against its items).
fn random_u64(env: &dyn Env) -> u64 {
    let mut b = [0u8; 8];
    if !env.fill_random(&mut b) {
        b = [0u8; 8];
        tracing::warn!("no system randomness for the seed of generated pub-sub ids");
    }
    // 48 bits: ids stay short (at most 12 hex digits after the time) and runs still differ.
    u64::from_le_bytes(b) >> 16
}
