//! Tables that grow with traffic are purged on a schedule: what can no longer matter is
//! removed in small batches (ASVS: nothing grows for ever).
//!
//! - Sessions that ended (logged out, revoked, past their refresh expiry) once their last
//!   access token has expired and every replica's revocation view has forgotten them:
//!   the revocation retention after their end. Their spent refresh tokens go with them;
//!   the spent tokens of a live session stay, as they are how reuse is detected.
//! - Login failure counters untouched for a day (or the longest throttle wait, if longer)
//!   and not blocking anyone now.
//! - One-time codes an hour after they expired (the per-hour limit counts them until
//!   then).
//! - Records of a user's role or email change, or deletion, once every replica's view
//!   has forgotten them (as for an ended session).
//! - Audit events older than the audit retention.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::chrono_duration;
use crate::store::{PurgeStore, StoreError, StoreResult};

/// How long a one-time code is kept after it expired: the per-hour limit on issuing
/// counts the codes of the last hour.
const CODES_AFTER_EXPIRY: Duration = Duration::from_secs(3600);

/// Rows deleted per statement: small enough that no purge holds locks for long.
const BATCH: u64 = 500;
/// Between two batches of one kind.
const PAUSE: Duration = Duration::from_millis(20);

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// After a session ended: at least the revocation retention, with a margin for the
    /// clocks of the replica that revoked it and of the one purging.
    pub session_after_end: Duration,
    /// After a login failure counter was last touched.
    pub idle_login_throttle: Duration,
    pub audit_events: Duration,
}

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub spent_tokens: u64,
    pub sessions: u64,
    pub login_throttle: u64,
    pub account_codes: u64,
    pub user_changes: u64,
    pub audit_events: u64,
}

/// Runs purges.
#[derive(Debug)]
pub struct Purger {
    store: Arc<dyn PurgeStore>,
    retention: Retention,
}

impl Purger {
    pub fn new(store: Arc<dyn PurgeStore>, retention: Retention) -> Self {
        Self { store, retention }
    }

    /// Removes everything past its retention at `now`, a batch at a time, each kind on its
    /// own: one that fails (and is retried next time) keeps the others from nothing.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Purged, (Purged, StoreError)> {
        let mut purged = Purged::default();
        let mut failed = None;
        // Spent tokens before their sessions, so no one delete cascades into thousands.
        for kind in [
            Kind::SpentTokens,
            Kind::Sessions,
            Kind::LoginThrottle,
            Kind::AccountCodes,
            Kind::UserChanges,
            Kind::AuditEvents,
        ] {
            loop {
                match self.batch(kind, now).await {
                    Ok(deleted) => {
                        *purged.count(kind) += deleted;
                        if deleted < BATCH {
                            break;
                        }
                        // Room for the calls between batches.
                        tokio::time::sleep(PAUSE).await;
                    }
                    Err(err) => {
                        failed.get_or_insert(err);
                        break;
                    }
                }
            }
        }
        match failed {
            None => Ok(purged),
            Some(err) => Err((purged, err)),
        }
    }

    async fn batch(&self, kind: Kind, now: DateTime<Utc>) -> StoreResult<u64> {
        let before = |kept: Duration| now - chrono_duration(kept);
        let retention = &self.retention;
        let ended_before = before(retention.session_after_end);
        match kind {
            Kind::SpentTokens => self.store.purge_spent_tokens(ended_before, BATCH).await,
            Kind::Sessions => self.store.purge_sessions(ended_before, BATCH).await,
            Kind::LoginThrottle => {
                let idle_since = before(retention.idle_login_throttle);
                let now_ms = now.timestamp_millis();
                self.store
                    .purge_login_throttle(idle_since, now_ms, BATCH)
                    .await
            }
            Kind::AccountCodes => {
                let expired_before = before(CODES_AFTER_EXPIRY);
                self.store.purge_account_codes(expired_before, BATCH).await
            }
            // Tokens issued before a change expire within the revocation retention.
            Kind::UserChanges => self.store.purge_user_changes(ended_before, BATCH).await,
            Kind::AuditEvents => {
                let older = before(retention.audit_events);
                self.store.purge_audit_events(older, BATCH).await
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    SpentTokens,
    Sessions,
    LoginThrottle,
    AccountCodes,
    UserChanges,
    AuditEvents,
}

impl Purged {
    fn count(&mut self, kind: Kind) -> &mut u64 {
        match kind {
            Kind::SpentTokens => &mut self.spent_tokens,
            Kind::Sessions => &mut self.sessions,
            Kind::LoginThrottle => &mut self.login_throttle,
            Kind::AccountCodes => &mut self.account_codes,
            Kind::UserChanges => &mut self.user_changes,
            Kind::AuditEvents => &mut self.audit_events,
        }
    }
}
