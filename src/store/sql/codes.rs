//! One-time codes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait as _, QueryFilter,
    QuerySelect, Set, sea_query::Expr,
};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use super::{
    SqlStore,
    sessions::{live_session_ids, revoke_ids},
    users::locked_user,
};
use crate::store::{
    AuditRecord, CodeKind, CodeRecord, CodeReset, CodeStore, IssueLimit, Issued, NewCode,
    RevokeReason, StoreResult, UserRecord,
    entities::{account_codes, users},
};

#[async_trait]
impl CodeStore for SqlStore {
    async fn find_code(&self, code_hash: &str) -> StoreResult<Option<CodeRecord>> {
        let select =
            account_codes::Entity::find().filter(account_codes::Column::CodeHash.eq(code_hash));
        Ok(self.find_one(select).await?.map(Into::into))
    }

    async fn issue_code(
        &self,
        code: NewCode,
        limit: Option<IssueLimit>,
        audit: &AuditRecord,
    ) -> StoreResult<Issued> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let Some(user) = locked_user(&txn, code.user_id)
                .await?
                .filter(|user| user.active)
            else {
                return Ok(Issued::NoActiveUser);
            };
            // Counted under the user's lock: two requests at once cannot both pass.
            if let Some(IssueLimit { max, since }) = limit
                && issued_since(&txn, code.user_id, code.kind, since).await? >= max
            {
                return Ok(Issued::LimitReached);
            }
            spend_codes(&txn, code.user_id, Some(code.kind), code.created_at).await?;
            insert_code(&txn, code).await?;
            store.commit_with(txn, &audit).await?;
            Ok(Issued::Stored(user.into()))
        })
        .await
    }

    async fn reset_password(
        &self,
        reset: CodeReset,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let audit = audit.clone();
        let CodeReset {
            code_id,
            user_id,
            password_hash,
            now,
        } = reset;
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let active = locked_user(&txn, user_id)
                .await?
                .is_some_and(|user| user.active);
            if !active || !spend_code(&txn, code_id, now).await? {
                return Ok(None);
            }
            users::Entity::update_many()
                .col_expr(
                    users::Column::PasswordHash,
                    Expr::value(password_hash.expose_secret().to_owned()),
                )
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(user_id))
                .exec(&txn)
                .await?;
            let ended = live_session_ids(&txn, user_id).await?;
            revoke_ids(&txn, &ended, RevokeReason::PasswordReset, now).await?;
            spend_codes(&txn, user_id, None, now).await?;
            store.commit_with(txn, &audit).await?;
            Ok(Some(ended))
        })
        .await
    }

    async fn verify_email(
        &self,
        code_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<UserRecord>> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let active = locked_user(&txn, user_id)
                .await?
                .is_some_and(|user| user.active);
            if !active || !spend_code(&txn, code_id, now).await? {
                return Ok(None);
            }
            // The address is verified: no other code needs to verify it again.
            spend_codes(&txn, user_id, Some(CodeKind::EmailVerification), now).await?;
            users::Entity::update_many()
                .col_expr(users::Column::EmailVerified, Expr::value(true))
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(user_id))
                .exec(&txn)
                .await?;
            let Some(user) = users::Entity::find_by_id(user_id).one(&txn).await? else {
                return Ok(None);
            };
            store.commit_with(txn, &audit).await?;
            Ok(Some(user.into()))
        })
        .await
    }
}

/// How many codes of `kind` the user was issued after `since`.
pub(super) async fn issued_since(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
    kind: CodeKind,
    since: DateTime<Utc>,
) -> Result<u32, DbErr> {
    use account_codes::Column;
    let issued = account_codes::Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Kind.eq(kind.as_str()))
        .filter(Column::CreatedAt.gt(since))
        .count(txn)
        .await?;
    Ok(u32::try_from(issued).unwrap_or(u32::MAX))
}

/// Spends one code if it is unspent and unexpired at `now`; false if it was not (another
/// transaction spent it first: the row lock makes this one wait and then see that).
async fn spend_code(
    txn: &impl ConnectionTrait,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    use account_codes::Column;
    let spent = account_codes::Entity::update_many()
        .col_expr(Column::SpentAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::SpentAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
        .exec(txn)
        .await?;
    Ok(spent.rows_affected == 1)
}

/// Spends a user's unspent codes: of one kind (a newer one supersedes them), or all (the
/// password or the email changed). The caller holds the user's row lock, which every
/// insert of a code for the user takes too, so a plain read finds them all; they are then
/// updated by primary key. (An UPDATE filtered on `user_id` would, on MySQL, lock the gap
/// of the index where the user has no codes, shared with the neighbouring users, and two
/// of them inserting their first codes at once would deadlock.)
pub(super) async fn spend_codes(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
    kind: Option<CodeKind>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    use account_codes::Column;
    let mut unspent = account_codes::Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::UserId.eq(user_id))
        .filter(Column::SpentAt.is_null());
    if let Some(kind) = kind {
        unspent = unspent.filter(Column::Kind.eq(kind.as_str()));
    }
    let ids: Vec<Uuid> = unspent.into_tuple().all(txn).await?;
    if ids.is_empty() {
        return Ok(());
    }
    account_codes::Entity::update_many()
        .col_expr(Column::SpentAt, Expr::value(now))
        .filter(Column::Id.is_in(ids))
        .filter(Column::SpentAt.is_null())
        .exec(txn)
        .await?;
    Ok(())
}

pub(super) async fn insert_code(txn: &impl ConnectionTrait, code: NewCode) -> Result<(), DbErr> {
    account_codes::Entity::insert(account_codes::ActiveModel {
        id: Set(code.id),
        user_id: Set(code.user_id),
        kind: Set(code.kind.as_str().to_owned()),
        code_hash: Set(code.code_hash),
        created_at: Set(code.created_at),
        expires_at: Set(code.expires_at),
        spent_at: Set(None),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

impl From<account_codes::Model> for CodeRecord {
    fn from(m: account_codes::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            kind: m.kind,
            created_at: m.created_at,
            expires_at: m.expires_at,
            spent_at: m.spent_at,
        }
    }
}
