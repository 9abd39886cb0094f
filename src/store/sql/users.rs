//! Users.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Set, sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    SqlStore,
    codes::{insert_code, issued_since, spend_codes},
    sessions::{is_live_session, live_session_ids, revoke_ids, session_model},
};
use crate::store::{
    AuditRecord, EmailChange, EmailChanged, NewSession, NewUser, PasswordChange, RevokeReason,
    StoreResult, UserRecord, UserStore,
    entities::{sessions, users},
};

#[async_trait]
impl UserStore for SqlStore {
    async fn create(&self, user: NewUser, audit: &AuditRecord) -> StoreResult<UserRecord> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let model = user_model(user).insert(&txn).await?;
            store.commit_with(txn, &audit).await?;
            Ok(model.into())
        })
        .await
    }

    async fn create_with_session(
        &self,
        user: NewUser,
        session: NewSession,
        audit: &AuditRecord,
    ) -> StoreResult<UserRecord> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let mut model = user_model(user);
            model.last_login_at = Set(Some(session.created_at));
            let model = model.insert(&txn).await?;
            sessions::Entity::insert(session_model(session))
                .exec_without_returning(&txn)
                .await?;
            store.commit_with(txn, &audit).await?;
            Ok(model.into())
        })
        .await
    }

    async fn find_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let select = users::Entity::find().filter(users::Column::Email.eq(email));
        Ok(self.find_one(select).await?.map(Into::into))
    }

    async fn find_by_id(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        Ok(self
            .find_one(users::Entity::find_by_id(id))
            .await?
            .map(Into::into))
    }

    async fn update_password_hash(
        &self,
        id: Uuid,
        old: SecretString,
        new: SecretString,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.detached(move |store| async move {
            // The WHERE clause is the compare-and-swap: a reset or change committed since
            // the old hash was read is kept.
            let updated = users::Entity::update_many()
                .col_expr(
                    users::Column::PasswordHash,
                    Expr::value(new.expose_secret().to_owned()),
                )
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(id))
                .filter(users::Column::PasswordHash.eq(old.expose_secret()))
                .exec(&store.db)
                .await?;
            Ok(updated.rows_affected == 1)
        })
        .await
    }

    async fn update_name(
        &self,
        id: Uuid,
        name: &str,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<UserRecord>> {
        let (name, audit) = (name.to_owned(), audit.clone());
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            users::Entity::update_many()
                .col_expr(users::Column::Name, Expr::value(name))
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(id))
                .exec(&txn)
                .await?;
            // Read back in the transaction: the answer is what was committed. (MySQL
            // counts only changed rows, so an unchanged name reads back too.)
            let Some(user) = users::Entity::find_by_id(id).one(&txn).await? else {
                return Ok(None);
            };
            store.commit_with(txn, &audit).await?;
            Ok(Some(user.into()))
        })
        .await
    }

    async fn change_password(
        &self,
        change: PasswordChange,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let audit = audit.clone();
        let PasswordChange {
            user_id,
            caller_session,
            password_hash,
            session,
            now,
        } = change;
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            if !signed_in(&txn, user_id, caller_session).await? {
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
            revoke_ids(&txn, &ended, RevokeReason::PasswordChanged, now).await?;
            spend_codes(&txn, user_id, None, now).await?;
            sessions::Entity::insert(session_model(session))
                .exec_without_returning(&txn)
                .await?;
            store.commit_with(txn, &audit).await?;
            Ok(Some(ended))
        })
        .await
    }

    async fn change_email(
        &self,
        change: EmailChange,
        audit: &AuditRecord,
    ) -> StoreResult<EmailChanged> {
        let audit = audit.clone();
        let EmailChange {
            user_id,
            caller_session,
            email,
            now,
            verification,
        } = change;
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            if !signed_in(&txn, user_id, caller_session).await? {
                return Ok(EmailChanged::SignedOut);
            }
            // Counted under the user's lock, as for RequestEmailVerification: each change
            // sends a message, to an address of the caller's choosing.
            if let Some((code, limit)) = &verification
                && issued_since(&txn, user_id, code.kind, limit.since).await? >= limit.max
            {
                return Ok(EmailChanged::LimitReached);
            }
            // A taken address fails here on the unique index, whatever its letter case.
            users::Entity::update_many()
                .col_expr(users::Column::Email, Expr::value(email))
                .col_expr(users::Column::EmailVerified, Expr::value(false))
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(user_id))
                .exec(&txn)
                .await?;
            // Codes sent to the old address must not verify the new one, nor reset the
            // password through the old mailbox.
            spend_codes(&txn, user_id, None, now).await?;
            if let Some((code, _)) = verification {
                insert_code(&txn, code).await?;
            }
            let Some(user) = users::Entity::find_by_id(user_id).one(&txn).await? else {
                return Ok(EmailChanged::SignedOut);
            };
            store.commit_with(txn, &audit).await?;
            Ok(EmailChanged::Changed(user.into()))
        })
        .await
    }

    async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            // Existence is checked with a read (MySQL counts only rows an UPDATE changed),
            // locking the row first thing: a session being started for the user is waited
            // for, and then found below.
            let exists = locked_user(&txn, id).await?.is_some();
            if !exists {
                return Ok(None);
            }
            users::Entity::update_many()
                .col_expr(users::Column::Active, Expr::value(active))
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(id))
                .exec(&txn)
                .await?;
            let mut revoked = Vec::new();
            if !active {
                revoked = live_session_ids(&txn, id).await?;
                revoke_ids(&txn, &revoked, RevokeReason::Deactivated, now).await?;
                // A deactivated account's outstanding codes must not outlive it.
                spend_codes(&txn, id, None, now).await?;
            }
            store.commit_with(txn, &audit).await?;
            Ok(Some(revoked))
        })
        .await
    }
}

/// The user's row, locked for the rest of the transaction (the first thing every change of
/// a user takes, so no two changes wait for each other the other way round). A locking
/// read: on MySQL it sees the latest committed row, not the transaction's snapshot.
pub(super) async fn locked_user(
    txn: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<users::Model>, DbErr> {
    users::Entity::find_by_id(id)
        .lock_exclusive()
        .one(txn)
        .await
}

/// Locks the user's row and tells whether the user is active and `session` one of their
/// live sessions: a change made by a signed-in caller waits for, and then yields to, a
/// reset, password change or deactivation that ended the session meanwhile.
async fn signed_in(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
    session: Uuid,
) -> Result<bool, DbErr> {
    let active = locked_user(txn, user_id)
        .await?
        .is_some_and(|user| user.active);
    Ok(active && is_live_session(txn, session, user_id).await?)
}

pub(super) fn user_model(user: NewUser) -> users::ActiveModel {
    users::ActiveModel {
        id: Set(user.id),
        email: Set(user.email),
        name: Set(user.name),
        role: Set(user.role),
        password_hash: Set(user.password_hash.expose_secret().to_owned()),
        active: Set(true),
        email_verified: Set(false),
        created_at: Set(user.created_at),
        updated_at: Set(user.created_at),
        last_login_at: Set(None),
    }
}

impl From<users::Model> for UserRecord {
    fn from(m: users::Model) -> Self {
        Self {
            id: m.id,
            email: m.email,
            name: m.name,
            role: m.role,
            password_hash: SecretString::from(m.password_hash),
            active: m.active,
            email_verified: m.email_verified,
            created_at: m.created_at,
            updated_at: m.updated_at,
            last_login_at: m.last_login_at,
        }
    }
}
