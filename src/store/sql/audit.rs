//! The audit trail.

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set};

use super::SqlStore;
use crate::store::{AuditRecord, AuditStore, StoreResult, entities::audit_events};

#[async_trait]
impl AuditStore for SqlStore {
    async fn record(&self, event: &AuditRecord) -> StoreResult<()> {
        let event = event.clone();
        self.detached(move |store| async move { Ok(insert_audit(&store.db, &event).await?) })
            .await
    }
}

pub(super) async fn insert_audit(
    db: &impl ConnectionTrait,
    event: &AuditRecord,
) -> Result<(), DbErr> {
    audit_events::Entity::insert(audit_events::ActiveModel {
        id: Set(event.id),
        occurred_at: Set(event.occurred_at),
        kind: Set(event.kind.to_owned()),
        outcome: Set(event.outcome.to_owned()),
        user_id: Set(event.user_id),
        session_id: Set(event.session_id),
        peer: Set(event.peer.clone()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}
