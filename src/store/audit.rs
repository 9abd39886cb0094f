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
}

/// The audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    async fn record(&self, event: &AuditRecord) -> StoreResult<()>;
}
