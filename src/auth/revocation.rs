//! Which sessions are revoked, known in memory so ValidateToken never waits on the database.
//!
//! # How revocation reaches every replica
//!
//! Access tokens are stateless JWTs; what makes one REVOKED is its session (`sid`) being
//! ended: logout, refresh-token reuse, deactivation. Each replica keeps the ids of sessions
//! revoked recently enough that their access tokens could still be unexpired:
//!
//! * A revocation made by this replica is inserted here at once, before the RPC returns,
//!   so this replica answers REVOKED immediately.
//! * Every sync interval (1 s by default) a background task asks the database
//!   for sessions revoked since its previous poll (`sessions.revoked_at`, indexed), so a
//!   revocation made on any other replica, or by `authd user set-active`, is honoured here
//!   within one sync interval plus one query.
//! * Polls overlap by [`CLOCK_SKEW_ALLOWANCE`], because `revoked_at` is written with the
//!   revoking replica's clock; replicas' clocks must agree within that (NTP does).
//! * `revoked_at` is stamped once the revoking transaction holds its rows' locks, so a
//!   revocation that waited on a lock held elsewhere is stamped when it got it; its
//!   transaction may still commit later (its audit insert can wait too). A poll only looks
//!   back the overlap, so every [`RECONCILE_EVERY`]th poll re-reads every revocation whose
//!   tokens could still be unexpired, whenever it was stamped. The bound: a revocation
//!   reaches every replica within one sync interval after its commit when it committed
//!   within the overlap of its stamp (the normal case), and within `RECONCILE_EVERY` sync
//!   intervals however late it committed.
//! * An entry is forgotten once every access token of its session has expired
//!   (revoked_at + access TTL + leeway + skew), so memory is bounded by the revocation rate
//!   times the access-token lifetime, not by history.
//! * Fail closed: if no poll has succeeded for [`STALE_AFTER_INTERVALS`] intervals, this
//!   replica can no longer vouch that a token was not revoked elsewhere. ValidateToken
//!   then answers UNAVAILABLE for a token it would otherwise call active (a token it can
//!   judge EXPIRED or INVALID from the token alone still gets that answer), and says
//!   active again as soon as a poll succeeds.
//!
//! On start-up the first poll runs before the server accepts calls, reading back a whole
//! access-token lifetime, so a restarted replica forgets nothing that still matters.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{CLOCK_SKEW_ALLOWANCE, chrono_duration};
use crate::{
    store::{SessionStore, StoreResult},
    sync,
};

/// Missed polls after which the revocation view is too old to vouch for a token.
pub(super) const STALE_AFTER_INTERVALS: u32 = 3;
/// Every this many polls, one reads back the whole retention window.
pub(super) const RECONCILE_EVERY: u32 = 10;

#[derive(Debug)]
struct State {
    /// Revoked session id -> when it can be forgotten.
    revoked: HashMap<Uuid, DateTime<Utc>>,
    /// Start of the last successful poll; the next one reads from here (minus the skew).
    synced_at: Option<DateTime<Utc>>,
    /// Successful polls since the last one that read the whole retention window.
    since_reconciled: u32,
}

impl State {
    fn is_fresh(&self, now: DateTime<Utc>, stale_after: Duration) -> bool {
        self.synced_at
            .is_some_and(|at| (now - at).to_std().is_ok_and(|age| age <= stale_after) || at > now)
    }
}

/// What this replica knows of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Revoked,
    /// Not revoked as of a recent enough poll.
    NotRevoked,
    /// Not revoked here, but the view is too old to vouch for it (fail closed).
    Unknown,
}

/// The revoked sessions this replica knows of.
#[derive(Debug)]
pub struct Revocations {
    state: RwLock<State>,
    /// How long after revocation a session's access tokens may still be unexpired.
    retention: chrono::Duration,
    interval: Duration,
}

impl Revocations {
    /// `access_ttl` and `leeway` bound how long a revoked session's tokens stay
    /// unexpired; `interval` is the poll period.
    pub fn new(access_ttl: Duration, leeway: Duration, interval: Duration) -> Self {
        let retention = access_ttl + leeway + CLOCK_SKEW_ALLOWANCE;
        Self {
            state: RwLock::new(State {
                revoked: HashMap::new(),
                synced_at: None,
                since_reconciled: 0,
            }),
            retention: chrono_duration(retention),
            interval,
        }
    }

    /// How long after a revocation this replica must still know of it: its session's
    /// access tokens may be unexpired until then.
    pub fn retention(&self) -> Duration {
        self.retention.to_std().unwrap_or(Duration::MAX)
    }

    /// Records a revocation made by this replica.
    pub fn revoke(&self, session_id: Uuid, now: DateTime<Utc>) {
        let forget_at = now + self.retention;
        self.write().revoked.insert(session_id, forget_at);
    }

    /// What is known of a session, under one read lock (ValidateToken's hot path):
    /// revoked, vouched for by a recent enough poll, or unknown (fail closed).
    pub fn standing(&self, session_id: Uuid, now: DateTime<Utc>) -> Standing {
        let state = self.read();
        if state.revoked.contains_key(&session_id) {
            Standing::Revoked
        } else if state.is_fresh(now, self.interval * STALE_AFTER_INTERVALS) {
            Standing::NotRevoked
        } else {
            Standing::Unknown
        }
    }

    /// One poll of the database for sessions revoked since the previous one, or, on the
    /// first poll and every [`RECONCILE_EVERY`]th, within the whole retention window.
    pub async fn sync(&self, store: &dyn SessionStore, now: DateTime<Utc>) -> StoreResult<()> {
        let skew = chrono::Duration::from_std(CLOCK_SKEW_ALLOWANCE).unwrap_or_default();
        let (synced_at, since_reconciled) = {
            let state = self.read();
            (state.synced_at, state.since_reconciled)
        };
        let reconcile = synced_at.is_none() || since_reconciled + 1 >= RECONCILE_EVERY;
        let since = match synced_at {
            Some(at) if !reconcile => at - skew,
            _ => now - self.retention,
        };
        let revoked = store.revoked_since(since).await?;
        let mut state = self.write();
        for (session_id, revoked_at) in revoked {
            state
                .revoked
                .insert(session_id, revoked_at + self.retention);
        }
        state.revoked.retain(|_, forget_at| *forget_at > now);
        state.synced_at = Some(now);
        state.since_reconciled = if reconcile { 0 } else { since_reconciled + 1 };
        Ok(())
    }

    /// How often [`Self::sync`] is to run.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        sync::read(&self.state)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        sync::write(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocations() -> Revocations {
        Revocations::new(
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn a_local_revocation_is_seen_at_once() {
        let r = revocations();
        let sid = Uuid::now_v7();
        assert_ne!(r.standing(sid, Utc::now()), Standing::Revoked);
        r.revoke(sid, Utc::now());
        assert_eq!(r.standing(sid, Utc::now()), Standing::Revoked);
    }

    #[test]
    fn never_synced_is_not_fresh() {
        let never_synced = revocations().standing(Uuid::now_v7(), Utc::now());
        assert_eq!(never_synced, Standing::Unknown);
    }

    #[test]
    fn freshness_lapses_after_three_intervals() {
        let r = revocations();
        let now = Utc::now();
        r.write().synced_at = Some(now);
        let sid = Uuid::now_v7();
        let fresh = r.standing(sid, now + chrono::Duration::seconds(3));
        let stale = r.standing(sid, now + chrono::Duration::milliseconds(3_001));
        assert_eq!(fresh, Standing::NotRevoked);
        assert_eq!(stale, Standing::Unknown);
    }
}
