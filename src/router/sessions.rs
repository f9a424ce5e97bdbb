//! The session registry (RFC 6120 §7 resource binding): binding and unbinding resources,
//! classifying local addresses (RFC 6121 §8), and choosing anonymous usernames.

use super::*;

impl Router {
    /// A fresh, unused anonymous username: at most [`ANON_USER_ATTEMPTS`] random names are
    /// tried. A store error ends the attempt at once (the caller answers SASL
    /// `temporary-auth-failure`); it is never retried in a loop.
    ///
    /// # Errors
    ///
    /// [`AnonUserError::Store`] if the account table cannot be read,
    /// [`AnonUserError::Collisions`] if every name tried was taken.
    pub fn new_anonymous_user(&mut self) -> Result<String, AnonUserError> {
        let (accounts, store, env) = (&self.im.accounts, &*self.store, &*self.env);
        pick_anonymous_user(
            ANON_USER_ATTEMPTS,
            || crate::sasl::random_nonce(env),
            |user| Ok(accounts.contains_key(user) || store.user_exists(user)?),
        )
    }

    /// Number of bound resources (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.im.accounts.values().map(|a| a.resources.len()).sum()
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
                let n = self.random_nonce();
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
        if !self.im.accounts.contains_key(user) {
            let roster = if anonymous {
                Vec::new()
            } else {
                self.store.roster_get(user).map_err(|e| {
                    tracing::error!(user, error = %e, "cannot load roster");
                    StanzaError::new(Condition::InternalServerError)
                })?
            };
            self.im.accounts.insert(
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
            .im
            .accounts
            .get_mut(user)
            .expect("invariant: inserted above");
        let mut replaced = None;
        if let Some(i) = account.resources.iter().position(|r| r.jid == jid) {
            let old = account.resources.remove(i);
            tracing::info!(jid = %jid, "resource conflict: replacing the old session");
            old.outbox.kick(Kick::Stream(StreamCondition::Conflict));
            if old.presence.is_some() {
                self.broadcast_unavailable(&old);
            }
            replaced = Some(old);
        }
        let account = self
            .im
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
            sm_id: None,
        });
        if let Some(old) = replaced {
            // A stream-managed old session (detached, or still open): what it did not
            // acknowledge goes to the new session of the same full JID (XEP-0198 §4).
            self.sm_end(&old);
        }
        Ok(jid)
    }

    /// A session ended: broadcast its unavailable presence and forget it.
    pub fn unbind(&mut self, jid: &Jid, conn: ConnId) {
        let Some(user) = jid.local() else { return };
        let Some(account) = self.im.accounts.get_mut(user) else {
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
            self.im.accounts.remove(user);
        }
        if res.presence.is_some() {
            self.pubsub_unavailable(jid);
        }
        self.pubsub.paused.retain(|ob| !Rc::ptr_eq(ob, &res.outbox));
        self.sm_end(&res);
        self.pubsub_relieve();
        if anonymous_gone {
            // An anonymous account ends with its last session: so does its PEP service
            // (else its nodes would fill `pubsub_max_nodes` over time).
            if let Some(engine) = self.pubsub.engine.as_mut() {
                if let Err(e) = engine.pep_delete_account(&*self.store, &jid.bare()) {
                    tracing::warn!(jid = %jid, error = %e, "PEP nodes of an anonymous account not deleted");
                }
            }
        }
    }

    pub(super) fn classify(&self, jid: &Jid) -> Target {
        if jid.domain() != self.config.domain {
            return Target::Remote;
        }
        match jid.local() {
            None => Target::Domain,
            Some(l) => Target::Local(l.to_owned()),
        }
    }

    pub(super) fn account_exists(&self, user: &str) -> bool {
        self.im.accounts.contains_key(user) || self.store.user_exists(user).unwrap_or(false)
    }

    /// Send a stanza to one resource, given its full JID. A detached session whose queue
    /// overflowed is as good as gone (the timer task ends it): `None`, so that what is
    /// sent to it is routed as for a missing resource, not lost.
    pub(super) fn resource_outbox(&self, jid: &Jid) -> Option<&Rc<Outbox>> {
        let acc = self.im.accounts.get(jid.local()?)?;
        acc.resources
            .iter()
            .find(|r| &r.jid == jid)
            .map(|r| &r.outbox)
            .filter(|ob| !ob.sm_overflowed())
    }

    pub(super) fn resource_mut(&mut self, jid: &Jid) -> Option<&mut Resource> {
        let acc = self.im.accounts.get_mut(jid.local()?)?;
        acc.resources.iter_mut().find(|r| &r.jid == jid)
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
pub(super) fn pick_anonymous_user(
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
