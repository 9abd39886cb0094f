//! Sessions, their refresh tokens and their revocation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait as _},
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::{SqlStore, users::locked_user};
use crate::store::{
    AuditRecord, NewSession, RevokeReason, Rotation, SessionRecord, SessionStart, SessionStore,
    StoreResult,
    entities::{sessions, spent_refresh_tokens, users},
};

#[async_trait]
impl SessionStore for SqlStore {
    async fn create(
        &self,
        session: NewSession,
        checked_hash: SecretString,
        audit: &AuditRecord,
    ) -> StoreResult<SessionStart> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            // The user's row, locked: a deactivation or password change in progress is
            // waited for.
            let Some(user) = locked_user(&txn, session.user_id)
                .await?
                .filter(|user| user.active)
            else {
                return Ok(SessionStart::UserInactive);
            };
            if user.password_hash != checked_hash.expose_secret() {
                return Ok(SessionStart::PasswordChanged);
            }
            let (user_id, started) = (session.user_id, session.created_at);
            sessions::Entity::insert(session_model(session))
                .exec_without_returning(&txn)
                .await?;
            users::Entity::update_many()
                .col_expr(users::Column::LastLoginAt, Expr::value(started))
                .filter(users::Column::Id.eq(user_id))
                .exec(&txn)
                .await?;
            store.commit_with(txn, &audit).await?;
            Ok(SessionStart::Started)
        })
        .await
    }

    async fn live_for_user(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.detached(move |store| async move {
            let sessions = sessions::Entity::find()
                .filter(sessions::Column::UserId.eq(user_id))
                .filter(sessions::Column::RevokedAt.is_null())
                .filter(sessions::Column::ExpiresAt.gt(now))
                .order_by_desc(sessions::Column::CreatedAt)
                .order_by_desc(sessions::Column::Id)
                .limit(limit)
                .all(&store.db)
                .await?;
            Ok(sessions.into_iter().map(Into::into).collect())
        })
        .await
    }

    async fn find(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        Ok(self
            .find_one(sessions::Entity::find_by_id(id))
            .await?
            .map(Into::into))
    }

    async fn find_by_refresh_hash(&self, hash: &str) -> StoreResult<Option<SessionRecord>> {
        let select = sessions::Entity::find().filter(sessions::Column::RefreshHash.eq(hash));
        Ok(self.find_one(select).await?.map(Into::into))
    }

    async fn find_spent(&self, hash: &str) -> StoreResult<Option<Uuid>> {
        let select = spent_refresh_tokens::Entity::find_by_id(hash.to_owned());
        Ok(self.find_one(select).await?.map(|spent| spent.session_id))
    }

    async fn rotate(&self, rotation: Rotation<'_>, audit: &AuditRecord) -> StoreResult<bool> {
        let audit = audit.clone();
        let (old_hash, new_hash) = (rotation.old_hash.to_owned(), rotation.new_hash.to_owned());
        let (session_id, now, expires_at) =
            (rotation.session_id, rotation.now, rotation.expires_at);
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            // The WHERE clause is the compare-and-swap: of several concurrent rotations of the
            // same token, the database lets exactly one UPDATE match the old hash.
            let updated = sessions::Entity::update_many()
                .col_expr(sessions::Column::RefreshHash, Expr::value(new_hash))
                .col_expr(
                    sessions::Column::Generation,
                    Expr::col(sessions::Column::Generation).add(1),
                )
                .col_expr(sessions::Column::LastUsedAt, Expr::value(now))
                .col_expr(sessions::Column::RotatedAt, Expr::value(now))
                .col_expr(sessions::Column::ExpiresAt, Expr::value(expires_at))
                .filter(sessions::Column::Id.eq(session_id))
                .filter(sessions::Column::RefreshHash.eq(old_hash.as_str()))
                .filter(sessions::Column::RevokedAt.is_null())
                .filter(sessions::Column::ExpiresAt.gt(now))
                .exec(&txn)
                .await?;
            if updated.rows_affected != 1 {
                return Ok(false);
            }
            spent_refresh_tokens::Entity::insert(spent_refresh_tokens::ActiveModel {
                token_hash: Set(old_hash),
                session_id: Set(session_id),
                spent_at: Set(now),
            })
            .exec_without_returning(&txn)
            .await?;
            // All writes or none: a crash here leaves the old token current and the new one
            // unknown, never both valid.
            store.commit_with(txn, &audit).await?;
            Ok(true)
        })
        .await
    }

    async fn revoke(
        &self,
        id: Uuid,
        reason: RevokeReason,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            // Locked first, so that the stamp below comes after any refresh that held it.
            let live: Option<Uuid> = sessions::Entity::find_by_id(id)
                .select_only()
                .column(sessions::Column::Id)
                .filter(sessions::Column::RevokedAt.is_null())
                .lock_exclusive()
                .into_tuple()
                .one(&txn)
                .await?;
            let ids = Vec::from_iter(live);
            revoke_ids(&txn, &ids, reason, now).await?;
            store.commit_with(txn, &audit).await?;
            Ok(!ids.is_empty())
        })
        .await
    }

    async fn revoke_all_for_user(
        &self,
        user_id: Uuid,
        reason: RevokeReason,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Vec<Uuid>> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let ids = live_session_ids(&txn, user_id).await?;
            revoke_ids(&txn, &ids, reason, now).await?;
            store.commit_with(txn, &audit).await?;
            Ok(ids)
        })
        .await
    }

    async fn revoked_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(Uuid, DateTime<Utc>)>> {
        self.detached(move |store| async move {
            Ok(sessions::Entity::find()
                .select_only()
                .column(sessions::Column::Id)
                .column(sessions::Column::RevokedAt)
                .filter(sessions::Column::RevokedAt.gte(since))
                .into_tuple()
                .all(&store.db)
                .await?)
        })
        .await
    }
}

/// Revokes `ids`, whose rows the transaction has locked.
pub(super) async fn revoke_ids(
    txn: &impl ConnectionTrait,
    ids: &[Uuid],
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(revoked_at(now)))
        .col_expr(
            sessions::Column::RevokedReason,
            Expr::value(reason.as_str()),
        )
        .filter(sessions::Column::Id.is_in(ids.iter().copied()))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(txn)
        .await?;
    Ok(())
}

/// Whether `id` is a live session of `user_id`. A locking read: on MySQL it sees the latest
/// committed row, not the transaction's snapshot.
pub(super) async fn is_live_session(
    txn: &impl ConnectionTrait,
    id: Uuid,
    user_id: Uuid,
) -> Result<bool, DbErr> {
    let session = sessions::Entity::find_by_id(id)
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .lock_shared()
        .one(txn)
        .await?;
    Ok(session.is_some())
}

/// Locking read: on MySQL it sees the latest committed rows, not the transaction's
/// snapshot.
pub(super) async fn live_session_ids(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
) -> Result<Vec<Uuid>, DbErr> {
    sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .lock_exclusive()
        .into_tuple()
        .all(txn)
        .await
}

/// The time to stamp a revocation with, once its rows are locked: the call's `now`, or
/// later if the call waited for the locks. Every token issued from the session came from
/// a transaction that held them before, so `revoked_at` is never older than the youngest
/// token: the moment every replica may forget the revocation (`revoked_at` + the token
/// lifetime) comes after that token expires, however long the wait was.
pub(super) fn revoked_at(now: DateTime<Utc>) -> DateTime<Utc> {
    Ord::max(now, Utc::now())
}

pub(super) fn session_model(session: NewSession) -> sessions::ActiveModel {
    sessions::ActiveModel {
        id: Set(session.id),
        user_id: Set(session.user_id),
        refresh_hash: Set(session.refresh_hash),
        generation: Set(0),
        created_at: Set(session.created_at),
        last_used_at: Set(session.created_at),
        expires_at: Set(session.expires_at),
        rotated_at: Set(None),
        revoked_at: Set(None),
        revoked_reason: Set(None),
        user_agent: Set(session.user_agent),
        peer: Set(session.peer),
    }
}

impl From<sessions::Model> for SessionRecord {
    fn from(m: sessions::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            refresh_hash: m.refresh_hash,
            generation: m.generation,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            expires_at: m.expires_at,
            rotated_at: m.rotated_at,
            revoked_at: m.revoked_at,
            user_agent: m.user_agent,
            peer: m.peer,
        }
    }
}
