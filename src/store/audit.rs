//! The audit trail.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// One security-relevant event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// The client's address, or `None` for the command line.
    pub peer: Option<String>,
    /// Who acted, for administrative events: a user id, `api-key:` and a digest prefix,
    /// or `cli`.
    pub actor: Option<String>,
    /// The request id of the call, which its log lines carry too.
    pub request_id: Option<String>,
}

/// An event as read back from the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEvent {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub kind: String,
    pub outcome: String,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub peer: Option<String>,
    pub actor: Option<String>,
    pub request_id: Option<String>,
}

/// The audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    async fn record(&self, event: &AuditRecord) -> StoreResult<()>;
    /// Up to `limit` events, of one user or of all, with ids below `before`, newest first.
    async fn list(
        &self,
        user_id: Option<Uuid>,
        before: Option<Uuid>,
        limit: u64,
    ) -> StoreResult<Vec<StoredAuditEvent>>;
}
