//! Removing what can no longer matter.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// Removing what can no longer matter, a batch at a time (each call deletes at most
/// `batch` rows and says how many it did), so a purge never holds long locks.
#[async_trait]
pub trait PurgeStore: Send + Sync + std::fmt::Debug {
    /// Spent refresh tokens of sessions that ended (revoked, or past their refresh expiry)
    /// before `ended_before`. A long session leaves thousands: they go in batches of their
    /// own before their sessions do.
    async fn purge_spent_tokens(&self, ended_before: DateTime<Utc>, batch: u64)
    -> StoreResult<u64>;
    /// Sessions that ended before `ended_before` (and any spent tokens left with them).
    async fn purge_sessions(&self, ended_before: DateTime<Utc>, batch: u64) -> StoreResult<u64>;
    /// Login failure counters untouched since `idle_since` and not blocking now.
    async fn purge_login_throttle(
        &self,
        idle_since: DateTime<Utc>,
        now_ms: i64,
        batch: u64,
    ) -> StoreResult<u64>;
    /// One-time codes that expired before `expired_before`.
    async fn purge_account_codes(
        &self,
        expired_before: DateTime<Utc>,
        batch: u64,
    ) -> StoreResult<u64>;
    /// Records of changed or deleted users made before `before`.
    async fn purge_user_changes(&self, before: DateTime<Utc>, batch: u64) -> StoreResult<u64>;
    /// Audit events older than `before`.
    async fn purge_audit_events(&self, before: DateTime<Utc>, batch: u64) -> StoreResult<u64>;
}
