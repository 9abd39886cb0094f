//! The audit trail.

use async_trait::async_trait;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::SqlStore;
use crate::store::{
    AuditRecord, AuditStore, StoreResult, StoredAuditEvent, entities::audit_events,
};

#[async_trait]
impl AuditStore for SqlStore {
    async fn record(&self, event: &AuditRecord) -> StoreResult<()> {
        let event = event.clone();
        self.detached(move |store| async move { Ok(insert_audit(&store.db, &event).await?) })
            .await
    }

    async fn list(
        &self,
        user_id: Option<Uuid>,
        before: Option<Uuid>,
        limit: u64,
    ) -> StoreResult<Vec<StoredAuditEvent>> {
        self.detached(move |store| async move {
            // Ids are UUIDv7: id order is time order, and a keyset on it is stable while
            // events are added (they land before the first page).
            let mut select = audit_events::Entity::find()
                .order_by_desc(audit_events::Column::Id)
                .limit(limit);
            if let Some(user_id) = user_id {
                select = select.filter(audit_events::Column::UserId.eq(user_id));
            }
            if let Some(before) = before {
                select = select.filter(audit_events::Column::Id.lt(before));
            }
            let rows = select.all(&store.db).await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
        .await
    }
}

impl From<audit_events::Model> for StoredAuditEvent {
    fn from(m: audit_events::Model) -> Self {
        Self {
            id: m.id,
            occurred_at: m.occurred_at,
            kind: m.kind,
            outcome: m.outcome,
            user_id: m.user_id,
            session_id: m.session_id,
            peer: m.peer,
            actor: m.actor,
            request_id: m.request_id,
        }
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
        actor: Set(event.actor.clone()),
        request_id: Set(event.request_id.clone()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}
