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
//! * On PostgreSQL the database also pushes: the revoking transaction's commit notifies
//!   every replica (LISTEN/NOTIFY, `store::sql::notices`), which polls at once, so a
//!   revocation is honoured everywhere within milliseconds. A notice only wakes the poll;
//!   one lost with a dropped connection delays a revocation to the next poll, and a
//!   replica that listens again polls at once.
//! * Polls overlap by [`CLOCK_SKEW_ALLOWANCE`], because `revoked_at` is written with the
//!   revoking replica's clock; replicas' clocks must agree within that (NTP does).
//! * `revoked_at` is stamped once the revoking transaction holds its rows' locks, so a
//!   revocation that waited on a lock held elsewhere is stamped when it got it; its
//!   transaction may still commit later (its audit insert can wait too). A poll only looks
//!   back the overlap, so one poll every [`RECONCILE_EVERY`] sync intervals re-reads every
//!   revocation whose tokens could still be unexpired, whenever it was stamped (counted in
//!   time, not polls, which pushes make more frequent). The bound: a revocation reaches
//!   every replica within one sync interval after its commit when it committed within the
//!   overlap of its stamp (the normal case), and within `RECONCILE_EVERY` sync intervals
//!   (and one) however late it committed.
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
//!
//! # Role and email changes, deletion
//!
//! An access token carries its user's email and role as they were when it was issued. When
//! an administrator changes a role, a user changes their email, or a user is deleted, the
//! store records the user in `user_changes` (stamped like a revocation), and the same poll
//! reads those rows with the user's current email and role. Until every token issued
//! before the change has expired, ValidateToken reports the current values instead of the
//! token's, and a deleted user's tokens as REVOKED: the same bound as a revocation, with
//! no database query on the hot path, and no one logged out by a role change.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{CLOCK_SKEW_ALLOWANCE, chrono_duration};
use crate::{
    store::{SessionStore, StoreResult, UserRecord, UserStore},
    sync,
};

/// Missed polls after which the revocation view is too old to vouch for a token.
pub(super) const STALE_AFTER_INTERVALS: u32 = 3;
/// Every this many sync intervals, a poll reads back the whole retention window.
pub(super) const RECONCILE_EVERY: u32 = 10;

#[derive(Debug)]
struct State {
    /// Revoked session id -> when it can be forgotten.
    revoked: HashMap<Uuid, DateTime<Utc>>,
    /// Start of the last successful poll; the next one reads from here (minus the skew).
    synced_at: Option<DateTime<Utc>>,
    /// Start of the last successful poll that read the whole retention window.
    reconciled_at: Option<DateTime<Utc>>,
    /// Users changed or deleted recently enough that tokens issued before may be unexpired.
    users: HashMap<Uuid, UserEntry>,
    /// Counts this replica's own user changes, so a poll that started before one does not
    /// overwrite it with what it read.
    local_changes: u64,
}

/// What a changed user's tokens are to be reported with.
#[derive(Debug)]
struct UserEntry {
    /// The user's email and role now; `None` once deleted.
    current: Option<Arc<CurrentClaims>>,
    forget_at: DateTime<Utc>,
    /// `local_changes` when this replica made the change; 0 when a poll read it.
    local: u64,
}

/// A user's email and role as they are now, when they differ from what older tokens carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentClaims {
    pub email: String,
    pub role: String,
    /// When the user was updated to these (the row's `updated_at`).
    pub as_of: DateTime<Utc>,
}

impl CurrentClaims {
    pub(super) fn of(user: &UserRecord) -> Self {
        Self {
            email: user.email.clone(),
            role: user.role.clone(),
            as_of: user.updated_at,
        }
    }
}

impl State {
    fn is_fresh(&self, now: DateTime<Utc>, stale_after: Duration) -> bool {
        self.synced_at
            .is_some_and(|at| (now - at).to_std().is_ok_and(|age| age <= stale_after) || at > now)
    }
}

/// What this replica knows of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The session was ended, or its user deleted.
    Revoked,
    /// Not revoked as of a recent enough poll.
    NotRevoked,
    /// Not revoked, but the user's email or role changed recently: report these.
    Changed(Arc<CurrentClaims>),
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
                reconciled_at: None,
                users: HashMap::new(),
                local_changes: 0,
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

    /// Records a change of a user made by this replica: their email and role now, or
    /// `None` when the user was deleted.
    pub fn user_changed(&self, user_id: Uuid, current: Option<CurrentClaims>, now: DateTime<Utc>) {
        let mut state = self.write();
        state.local_changes += 1;
        let local = state.local_changes;
        let forget_at = now + self.retention;
        if let Some(entry) = state.users.get_mut(&user_id) {
            entry.forget_at = entry.forget_at.max(forget_at);
            // A deletion is final; of two changes made here, the later committed wins
            // (two calls can return in the other order).
            let newer = match (&entry.current, &current) {
                (None, _) => false,
                (Some(known), Some(new)) if entry.local > 0 => new.as_of >= known.as_of,
                _ => true,
            };
            if newer {
                entry.current = current.map(Arc::new);
                entry.local = local;
            }
            return;
        }
        let entry = UserEntry {
            current: current.map(Arc::new),
            forget_at,
            local,
        };
        state.users.insert(user_id, entry);
    }

    /// What is known of a session of `user_id`, under one read lock (ValidateToken's hot
    /// path): revoked, vouched for by a recent enough poll (with its user's current claims
    /// if they changed), or unknown (fail closed).
    pub fn standing(&self, session_id: Uuid, user_id: Uuid, now: DateTime<Utc>) -> Standing {
        let state = self.read();
        let user = state.users.get(&user_id);
        if state.revoked.contains_key(&session_id) || user.is_some_and(|u| u.current.is_none()) {
            Standing::Revoked
        } else if !state.is_fresh(now, self.interval * STALE_AFTER_INTERVALS) {
            Standing::Unknown
        } else if let Some(current) = user.and_then(|u| u.current.as_ref()) {
            Standing::Changed(Arc::clone(current))
        } else {
            Standing::NotRevoked
        }
    }

    /// One poll of the database for sessions revoked since the previous one, or, on the
    /// first poll and once every [`RECONCILE_EVERY`] intervals, within the whole retention
    /// window.
    pub async fn sync(
        &self,
        sessions: &dyn SessionStore,
        users: &dyn UserStore,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let skew = chrono::Duration::from_std(CLOCK_SKEW_ALLOWANCE).unwrap_or_default();
        let (synced_at, reconciled_at, local_before) = {
            let state = self.read();
            (state.synced_at, state.reconciled_at, state.local_changes)
        };
        let reconcile_every = chrono_duration(self.interval * RECONCILE_EVERY);
        let reconcile = reconciled_at.is_none_or(|at| now - at >= reconcile_every);
        let since = match synced_at {
            Some(at) if !reconcile => at - skew,
            _ => now - self.retention,
        };
        let revoked = sessions.revoked_since(since).await?;
        let changed = users.changed_since(since).await?;
        let mut state = self.write();
        for (session_id, revoked_at) in revoked {
            state
                .revoked
                .insert(session_id, revoked_at + self.retention);
        }
        for change in changed {
            let forget_at = change.changed_at + self.retention;
            match state.users.get_mut(&change.user_id) {
                // Made here after this poll read the database: newer than what it read.
                Some(entry) if entry.local > local_before => {
                    entry.forget_at = entry.forget_at.max(forget_at);
                }
                // A deletion is final.
                Some(entry) if entry.current.is_none() => {
                    entry.forget_at = entry.forget_at.max(forget_at);
                }
                Some(entry) => {
                    entry.current = change.now.map(claims);
                    entry.forget_at = entry.forget_at.max(forget_at);
                    entry.local = 0;
                }
                None => {
                    let current = change.now.map(claims);
                    let entry = UserEntry {
                        current,
                        forget_at,
                        local: 0,
                    };
                    state.users.insert(change.user_id, entry);
                }
            }
        }
        state.revoked.retain(|_, forget_at| *forget_at > now);
        state.users.retain(|_, entry| entry.forget_at > now);
        state.synced_at = Some(now);
        if reconcile {
            state.reconciled_at = Some(now);
        }
        Ok(())
    }

    /// Whether the last poll is recent enough to vouch for sessions: past it
    /// [`Self::standing`] says `Unknown`, and ValidateToken answers UNAVAILABLE.
    pub fn is_current(&self, now: DateTime<Utc>) -> bool {
        self.read()
            .is_fresh(now, self.interval * STALE_AFTER_INTERVALS)
    }

    /// When the last poll of the database finished; `None` before the first.
    pub fn synced_at(&self) -> Option<DateTime<Utc>> {
        self.read().synced_at
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

fn claims((email, role, as_of): (String, String, DateTime<Utc>)) -> Arc<CurrentClaims> {
    Arc::new(CurrentClaims { email, role, as_of })
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
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        assert_ne!(r.standing(sid, uid, Utc::now()), Standing::Revoked);
        r.revoke(sid, Utc::now());
        assert_eq!(r.standing(sid, uid, Utc::now()), Standing::Revoked);
    }

    #[test]
    fn never_synced_is_not_fresh() {
        let never_synced = revocations().standing(Uuid::now_v7(), Uuid::now_v7(), Utc::now());
        assert_eq!(never_synced, Standing::Unknown);
    }

    #[test]
    fn freshness_lapses_after_three_intervals() {
        let r = revocations();
        let now = Utc::now();
        r.write().synced_at = Some(now);
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        let fresh = r.standing(sid, uid, now + chrono::Duration::seconds(3));
        let stale = r.standing(sid, uid, now + chrono::Duration::milliseconds(3_001));
        assert_eq!(fresh, Standing::NotRevoked);
        assert_eq!(stale, Standing::Unknown);
    }

    #[test]
    fn a_local_user_change_is_seen_at_once_and_forgotten_after_the_retention() {
        let r = revocations();
        let now = Utc::now();
        r.write().synced_at = Some(now);
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        let claims = |role: &str, as_of| CurrentClaims {
            email: "a@example.com".to_owned(),
            role: role.to_owned(),
            as_of,
        };
        let current = claims("admin", now);
        r.user_changed(uid, Some(current.clone()), now);
        assert_eq!(
            r.standing(sid, uid, now),
            Standing::Changed(Arc::new(current.clone()))
        );
        // An earlier change whose call returned later does not undo it.
        let earlier = now - chrono::Duration::milliseconds(5);
        r.user_changed(uid, Some(claims("user", earlier)), now);
        assert_eq!(
            r.standing(sid, uid, now),
            Standing::Changed(Arc::new(current))
        );
        r.user_changed(uid, None, now);
        assert_eq!(r.standing(sid, uid, now), Standing::Revoked);
        let later = now + chrono::Duration::seconds(80);
        r.write().users.retain(|_, entry| entry.forget_at > later);
        r.write().synced_at = Some(later);
        assert_eq!(r.standing(sid, uid, later), Standing::NotRevoked);
    }
}
