//! XEP-0160 offline messages (RFC 6121 §8.5.2.2): keeping `chat` and `normal` messages
//! (and `normal` pub-sub notifications) for an account that has no available resource,
//! within the `limits.offline_*` bounds, and delivering them, with an XEP-0203 delay
//! stamp, when it next becomes available.
//!
//! The messages live in the store only ([`Storage::offline_stage`]: staged and written by
//! the next group commit, so they survive a restart); the router keeps a count and a byte
//! total per account that has any ([`OfflineState`]), to enforce the bounds and to skip the
//! disk at the initial presence of an account with nothing stored. If a commit that held
//! stored messages fails, their senders get an error ([`Router::offline_commit_failed`]):
//! a message is never lost without a word.

use std::time::Duration;

use super::*;
use crate::storage::OfflineUsage;

/// At most one log line per this interval about messages refused for a full offline
/// storage (a sender must not be able to flood the log).
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Most attributes on one element of a stored stanza when it is read back: the largest
/// accepted `limits.max_xml_attrs`, so lowering the limit never makes a stored message
/// unreadable.
const STORED_MAX_ATTRS: usize = 256;

/// What [`Router::offline_or_bounce`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OfflineOutcome {
    /// Kept for the account's next available presence.
    Stored,
    /// Dropped without a word (`headline`, `error`).
    Dropped,
    /// Refused: its sender got an error.
    Bounced,
}

/// The router's side of offline storage: what each account has stored.
pub(super) struct OfflineState {
    /// Per account with stored messages: how many and their stanza bytes, staged ones
    /// included. Memory: about 64 B plus the username per account with messages.
    usage: HashMap<String, OfflineUsage>,
    /// The sum of the `bytes` of `usage`, against `limits.offline_max_bytes`.
    total_bytes: u64,
    /// `usage` could not be read from the store (it is read again before use).
    stale: bool,
    /// Lines about messages refused because a storage is full.
    full_log: crate::guard::RateLog<Duration>,
}

impl OfflineState {
    /// The usage as stored in `store` (`stale`, and logged, if it cannot be read).
    pub(super) fn load(store: &dyn Storage) -> OfflineState {
        let mut s = OfflineState {
            usage: HashMap::new(),
            total_bytes: 0,
            stale: true,
            full_log: crate::guard::RateLog::new(FULL_LOG_EVERY),
        };
        if let Err(e) = s.reload(store) {
            tracing::error!(
                error = %e,
                "offline messages: the stored ones cannot be counted; new ones are refused \
                 and stored ones are not delivered until the database can be read"
            );
        }
        s
    }

    /// Reads the usage from the store again.
    fn reload(&mut self, store: &dyn Storage) -> Result<(), StoreError> {
        let rows = store.offline_usage()?;
        self.total_bytes = rows.iter().map(|(_, u)| u.bytes as u64).sum();
        self.usage = rows.into_iter().collect();
        self.stale = false;
        Ok(())
    }

    /// Counts one more stored message of `user`.
    fn add(&mut self, user: &str, bytes: usize) {
        let u = self.usage.entry(user.to_owned()).or_default();
        u.count += 1;
        u.bytes = u.bytes.saturating_add(bytes);
        self.total_bytes = self.total_bytes.saturating_add(bytes as u64);
    }

    /// Forgets every stored message of `user` (delivered).
    fn forget(&mut self, user: &str) {
        if let Some(u) = self.usage.remove(user) {
            self.total_bytes = self.total_bytes.saturating_sub(u.bytes as u64);
        }
    }
}

impl Router {
    /// RFC 6121 §8.5.2.2 and XEP-0160: `msg`, a message of type `ty` for the local account
    /// `user`, reaches none of its resources: it has no available resource with a
    /// non-negative priority ([`Router::message_to_bare`] establishes that, for messages
    /// to the bare JID, to a gone resource, and those a stream-managed session did not
    /// acknowledge before it ended, which `sm.rs` routes again). A caller that knows the
    /// account is offline may call it directly. It decides what becomes of the message:
    ///
    /// - `chat` and `normal`: stored for the account's next available presence, unless
    ///   the account is anonymous (it ends with its sessions), offline storage is off
    ///   (`limits.offline_max_per_account = 0`), a bound (`limits.offline_max_*`) would be
    ///   exceeded, or the store refuses it; then the sender gets `service-unavailable`
    ///   (`resource-constraint`, wait, when the pending commit batch is full);
    /// - `headline` and `error`: dropped;
    /// - `groupchat` and unknown types: `service-unavailable`.
    ///
    /// A stored message is written by the next group commit; if that commit fails its
    /// sender gets `service-unavailable` then ([`Router::offline_commit_failed`]).
    pub(super) fn offline_or_bounce(
        &mut self,
        user: &str,
        ty: MessageType,
        msg: &Element,
    ) -> OfflineOutcome {
        match ty {
            MessageType::Error | MessageType::Headline => return OfflineOutcome::Dropped,
            MessageType::Groupchat | MessageType::Unknown => {
                self.bounce(msg, StanzaError::new(Condition::ServiceUnavailable));
                return OfflineOutcome::Bounced;
            }
            MessageType::Normal | MessageType::Chat => {}
        }
        match self.offline_keep(user, &msg.to_string_in_stream()) {
            Ok(()) => OfflineOutcome::Stored,
            Err(err) => {
                self.bounce(msg, err);
                OfflineOutcome::Bounced
            }
        }
    }

    /// Pub-sub output marked [`crate::pubsub::Delivery::keep_offline`] for a bare JID with
    /// no available resource: kept if it is a local account within the bounds; else
    /// dropped, as a notification to an offline subscriber was before (the service gets no
    /// error).
    pub(super) fn offline_notification(&mut self, to: &Jid, stanza: &Stanza) {
        let Some(user) = to.local().filter(|_| to.domain() == self.config.domain) else {
            return;
        };
        if let Err(e) = self.offline_keep(user, &stanza.to_text()) {
            tracing::debug!(to = %to, error = ?e.text, "pub-sub notification not kept offline");
        }
    }

    /// Stores `stanza` for `user` within the bounds, or says why not (the error its
    /// sender gets).
    fn offline_keep(&mut self, user: &str, stanza: &str) -> Result<(), StanzaError> {
        let offline = || {
            StanzaError::new(Condition::ServiceUnavailable).with_text("the recipient is offline")
        };
        let l = &self.config.limits;
        let (max_count, max_bytes, max_total) = (
            l.offline_max_per_account,
            l.offline_max_bytes_per_account,
            l.offline_max_bytes,
        );
        if max_count == 0 || self.im.accounts.get(user).is_some_and(|a| a.anonymous) {
            return Err(offline());
        }
        // Only an account in the store (which its deletion cleans up) keeps messages.
        if !self.store.user_exists(user).unwrap_or(false) {
            return Err(offline());
        }
        if !self.offline_ready() {
            return Err(offline().with_text(
                "the recipient is offline, and its offline storage cannot be read now",
            ));
        }
        let len = stanza.len();
        let used = self.offline.usage.get(user).copied().unwrap_or_default();
        let over = if used.count >= max_count {
            Some("limits.offline_max_per_account")
        } else if used.bytes.saturating_add(len) > max_bytes {
            Some("limits.offline_max_bytes_per_account")
        } else if self.offline.total_bytes.saturating_add(len as u64) > max_total {
            Some("limits.offline_max_bytes")
        } else {
            None
        };
        if let Some(limit) = over {
            let now = self.env.monotonic();
            if let Some(refused) = self.offline.full_log.hit(now) {
                tracing::warn!(
                    user,
                    limit,
                    refused,
                    "offline storage full: messages to offline accounts bounced (at most one \
                     line a minute; `refused` counts them since the last line); raise the \
                     limit, or have the account come online"
                );
            } else {
                tracing::debug!(user, limit, "offline storage full: message bounced");
            }
            return Err(StanzaError::new(Condition::ServiceUnavailable)
                .with_text("the recipient is offline and its offline storage is full"));
        }
        match self.store.offline_stage(user, self.now_ms(), stanza) {
            Ok(_) => {
                self.offline.add(user, len);
                Ok(())
            }
            Err(StoreError::LimitReached { .. }) => {
                Err(StanzaError::new(Condition::ResourceConstraint).with_text(
                    "the recipient is offline and too many changes wait for the disk; retry later",
                ))
            }
            Err(e) => {
                if matches!(e, StoreError::Invalid(_)) {
                    tracing::info!(user, error = %e, "offline message refused by the store");
                } else {
                    self.storage_failed(&e);
                }
                Err(offline()
                    .with_text("the recipient is offline, and the message could not be stored"))
            }
        }
    }

    /// Whether the usage is known; reads it again if it was not.
    fn offline_ready(&mut self) -> bool {
        if self.offline.stale {
            if let Err(e) = self.offline.reload(&*self.store) {
                tracing::debug!(error = %e, "offline messages: the stored ones still cannot be counted");
            }
        }
        !self.offline.stale
    }

    /// XEP-0160 §3: `to` became available with a non-negative priority (its initial
    /// presence, or an update from a negative priority): it gets the account's stored
    /// messages, oldest first, each with an XEP-0203 `<delay from='domain' stamp='…'/>`
    /// (when it was stored), through the outbox's pub-sub lane (a long list waits in the
    /// backlog instead of closing the session); then their deletion is staged for the
    /// next commit. A deletion that does not reach the disk delivers them again next time.
    pub(super) fn offline_deliver(&mut self, to: &Jid) {
        let Some(user) = to.local() else {
            return;
        };
        if !self.offline_ready() || !self.offline.usage.contains_key(user) {
            return;
        }
        let msgs = match self.store.offline_get(user) {
            Ok(msgs) => msgs,
            Err(e) => {
                tracing::error!(user, error = %e, "offline messages not delivered: the store cannot be read; they stay stored");
                return;
            }
        };
        let Some(last) = msgs.last().map(|m| m.seq) else {
            self.offline.forget(user);
            return;
        };
        let Some(ob) = self.resource_outbox(to).cloned() else {
            return;
        };
        let domain = self.config.domain.clone();
        for m in &msgs {
            match Element::parse_within(&m.stanza, crate::limits::MAX_XML_DEPTH, STORED_MAX_ATTRS) {
                Ok(mut e) => {
                    // Stored for the account: one addressed to a resource that is gone
                    // (XEP-0198 §4, RFC 6121 §8.5.3.2.1) is delivered as to the bare JID.
                    if e.attr("to")
                        .and_then(|t| Jid::parse(t).ok())
                        .is_some_and(|t| t.is_full())
                    {
                        e.set_attr("to", to.bare().as_str());
                    }
                    e.push_child(
                        Element::new("delay", crate::pubsub::NS_DELAY)
                            .with_attr("from", domain.clone())
                            .with_attr("stamp", crate::pubsub::xep0082(m.stamp_ms)),
                    );
                    let s: Rc<str> = Rc::from(e.to_string_in_stream());
                    self.send_via(&ob, Stanza::from(s), Lane::PubSub);
                }
                Err(e) => tracing::warn!(
                    user,
                    seq = m.seq,
                    error = %e,
                    "a stored offline message cannot be read back; it is dropped"
                ),
            }
        }
        match self.store.offline_stage_delete(user, last) {
            Ok(()) => self.offline.forget(user),
            Err(e) => {
                tracing::warn!(user, error = %e, "delivered offline messages not deleted: they are delivered again at the next available presence");
            }
        }
    }

    /// A group commit failed (before the store drops what it staged): the offline
    /// messages it held are lost, so their senders get `service-unavailable` (notifications
    /// from the pub-sub service get nothing: errors to it are dropped). The counts are read
    /// again by [`Router::offline_reload`] once the staging is gone.
    pub(super) fn offline_commit_failed(&mut self) {
        for (user, m) in self.store.offline_unsaved() {
            let Ok(msg) =
                Element::parse_within(&m.stanza, crate::limits::MAX_XML_DEPTH, STORED_MAX_ATTRS)
            else {
                continue;
            };
            tracing::debug!(user, seq = m.seq, "offline message not saved: bounced");
            self.bounce(
                &msg,
                StanzaError::new(Condition::ServiceUnavailable).with_text(
                    "the recipient is offline, and the message could not be stored (storage error)",
                ),
            );
        }
    }

    /// Reads the per-account counts from the store again (after a failed commit or a
    /// reopened database: memory must say what the disk holds).
    pub(super) fn offline_reload(&mut self) {
        if let Err(e) = self.offline.reload(&*self.store) {
            self.offline.stale = true;
            tracing::debug!(error = %e, "offline messages: counts not reloaded yet");
        }
    }

    /// Whether the local account named by `bare` has an available resource (pub-sub
    /// delivery: any priority).
    pub(super) fn has_available(&self, bare: &Jid) -> bool {
        bare.domain() == self.config.domain
            && bare
                .local()
                .and_then(|u| self.im.accounts.get(u))
                .is_some_and(|a| a.resources.iter().any(|r| r.presence.is_some()))
    }
}
