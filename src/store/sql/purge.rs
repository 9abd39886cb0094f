//! Removing what can no longer matter, a bounded batch per call.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, QueryTrait as _, Select,
};
use uuid::Uuid;

use super::SqlStore;
use crate::store::{
    PurgeStore, StoreResult,
    entities::{
        account_codes, audit_events, login_throttle, sessions, spent_refresh_tokens, user_changes,
    },
};

#[async_trait]
impl PurgeStore for SqlStore {
    async fn purge_spent_tokens(
        &self,
        ended_before: DateTime<Utc>,
        batch: u64,
    ) -> StoreResult<u64> {
        use spent_refresh_tokens::Column;
        let ended = sessions::Entity::find()
            .select_only()
            .column(sessions::Column::Id)
            .filter(session_ended(ended_before))
            .into_query();
        let select = spent_refresh_tokens::Entity::find()
            .select_only()
            .column(Column::TokenHash)
            .filter(Column::SessionId.in_subquery(ended))
            .limit(batch);
        self.purge_keys::<spent_refresh_tokens::Entity, String>(select, Column::TokenHash, None)
            .await
    }

    async fn purge_sessions(&self, ended_before: DateTime<Utc>, batch: u64) -> StoreResult<u64> {
        use sessions::Column;
        let select = sessions::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(session_ended(ended_before))
            .limit(batch);
        self.purge_keys::<sessions::Entity, Uuid>(select, Column::Id, None)
            .await
    }

    async fn purge_login_throttle(
        &self,
        idle_since: DateTime<Utc>,
        now_ms: i64,
        batch: u64,
    ) -> StoreResult<u64> {
        use login_throttle::Column;
        let idle = Condition::all()
            .add(Column::UpdatedAt.lt(idle_since))
            .add(Column::BlockedUntil.lte(now_ms));
        let select = login_throttle::Entity::find()
            .select_only()
            .column(Column::Key)
            .filter(idle.clone())
            .limit(batch);
        // The condition again on the delete: an attempt may have touched a counter since.
        self.purge_keys::<login_throttle::Entity, String>(select, Column::Key, Some(idle))
            .await
    }

    async fn purge_account_codes(
        &self,
        expired_before: DateTime<Utc>,
        batch: u64,
    ) -> StoreResult<u64> {
        use account_codes::Column;
        let select = account_codes::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::ExpiresAt.lt(expired_before))
            .limit(batch);
        self.purge_keys::<account_codes::Entity, Uuid>(select, Column::Id, None)
            .await
    }

    async fn purge_user_changes(&self, before: DateTime<Utc>, batch: u64) -> StoreResult<u64> {
        use user_changes::Column;
        let select = user_changes::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::ChangedAt.lt(before))
            .limit(batch);
        self.purge_keys::<user_changes::Entity, Uuid>(select, Column::Id, None)
            .await
    }

    async fn purge_audit_events(&self, before: DateTime<Utc>, batch: u64) -> StoreResult<u64> {
        use audit_events::Column;
        let select = audit_events::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::OccurredAt.lt(before))
            .limit(batch);
        self.purge_keys::<audit_events::Entity, Uuid>(select, Column::Id, None)
            .await
    }
}

/// Revoked, or past its refresh expiry, before `ended_before`.
fn session_ended(ended_before: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(sessions::Column::RevokedAt.lt(ended_before))
        .add(sessions::Column::ExpiresAt.lt(ended_before))
}

impl SqlStore {
    /// Deletes the rows whose keys `select` finds (a bounded batch), by key: MySQL takes
    /// no LIMIT in a subquery of a DELETE. `also` repeats a condition on the delete.
    async fn purge_keys<E, K>(
        &self,
        select: Select<E>,
        key: E::Column,
        also: Option<Condition>,
    ) -> StoreResult<u64>
    where
        E: EntityTrait,
        K: sea_orm::TryGetableMany + Into<sea_orm::Value> + Send + 'static,
    {
        self.detached(move |store| async move {
            let keys: Vec<K> = select.into_tuple().all(&store.db).await?;
            if keys.is_empty() {
                return Ok(0);
            }
            let mut delete = E::delete_many().filter(key.is_in(keys));
            if let Some(also) = also {
                delete = delete.filter(also);
            }
            let deleted = delete.exec(&store.db).await?;
            Ok(deleted.rows_affected)
        })
        .await
    }
}
