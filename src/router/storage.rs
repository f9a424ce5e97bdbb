//! Storage faults: rate-limited logging while writes fail, and recovery once the
//! database is reopened (the pub-sub service and the rosters reloaded from it).

use super::*;

/// A storage fault in progress (writes fail), for the log: one ERROR line when it starts,
/// then at most one WARN line per [`OUTAGE_LOG_EVERY`], and one INFO line when it ends.
///
/// Its times are the router's monotonic clock ([`Env::monotonic`]).
pub(super) struct Outage {
    since: std::time::Duration,
    /// Failed commits and reopenings since the fault started.
    failures: u64,
    /// The lines after the first one (armed by the first failure).
    log: crate::guard::RateLog<std::time::Duration>,
}

/// At most one log line per this interval while a storage fault lasts.
const OUTAGE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Router {
    /// Whether the store or the pub-sub service needs recovery after a failed write: the
    /// committer (`net::committer`) reopens the database (`Store::reopen_begin`) and
    /// hands the outcome to [`Router::storage_reopened`], with a growing pause between
    /// attempts.
    pub fn storage_needs_recovery(&self) -> bool {
        self.store.faulted() || self.pubsub.engine.is_none()
    }

    /// The shell reopened the database (or failed to) after a failed write: on success the
    /// rosters are reloaded, and the pub-sub service too if it was down. Returns whether
    /// everything works again.
    pub fn storage_reopened(&mut self, reopened: Result<(), StoreError>) -> bool {
        if let Err(e) = reopened {
            self.storage_failed_to(&e.to_string(), "reopen the database");
            return false;
        }
        self.rosters_reload();
        self.offline_reload();
        self.pubsub_restore()
    }

    /// Reloads the pub-sub service after a storage fault took it down; true if it is up.
    pub fn pubsub_restore(&mut self) -> bool {
        if self.pubsub.engine.is_some() {
            return true;
        }
        match crate::pubsub::restore(&self.config, &*self.store) {
            Ok(mut engine) => {
                engine.set_backlog(
                    self.pubsub.backlog.clone(),
                    self.config.limits.pubsub_backlog_bytes,
                );
                engine.seed_ids(random_u64(&*self.env));
                self.pubsub.engine = Some(engine);
                tracing::info!(
                    data = %self.store.location(),
                    "publish-subscribe service available again: the database was reopened \
                     and the service's state reloaded from it"
                );
                if let Some(wake) = &self.pubsub.wake {
                    wake();
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
    pub(super) fn storage_ok(&mut self) {
        if let Some(o) = self.outage.take() {
            let now = self.env.monotonic();
            tracing::info!(
                failures = o.failures,
                secs = now.saturating_sub(o.since).as_secs(),
                data = %self.store.location(),
                "storage recovered: writes succeed again"
            );
        }
    }

    /// A commit failed (or the database could not be reopened): logged once when the
    /// fault starts, then at most once per [`OUTAGE_LOG_EVERY`].
    pub(super) fn storage_failed(&mut self, e: &StoreError) {
        self.storage_failed_to(&e.to_string(), "write to the database");
    }

    fn storage_failed_to(&mut self, e: &str, what: &str) {
        let now = self.env.monotonic();
        let data = self.store.location();
        let Some(o) = self.outage.as_mut() else {
            let mut log = crate::guard::RateLog::new(OUTAGE_LOG_EVERY);
            // The ERROR line below stands for this first failure.
            let _ = log.hit(now);
            self.outage = Some(Outage {
                since: now,
                failures: 1,
                log,
            });
            let lost = match self.store.pubsub_mode() {
                crate::storage::CommitMode::Interval(_) => {
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
        if let Some(unlogged) = o.log.hit(now) {
            tracing::warn!(
                error = e,
                data,
                failures = unlogged,
                since_secs = now.saturating_sub(o.since).as_secs(),
                "storage fault continues: could not {what} ({unlogged} more failures since the \
                 last line); writes get an error until space is freed or the disk is fixed"
            );
        } else {
            tracing::debug!(error = e, "storage fault continues: could not {what}");
        }
    }
}
