//! Users.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait as _, Select, Set, Statement,
    TransactionTrait as _, sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    SqlStore,
    audit::insert_audit,
    codes::{insert_code, issued_since, spend_codes},
    sessions::{is_live_session, live_session_ids, revoke_ids, revoked_at, session_model},
};
use crate::store::{
    AuditRecord, ClaimsChange, EmailChange, EmailChanged, NewSession, NewUser, PasswordChange,
    RevokeReason, StoreError, StoreResult, UserFilter, UserRecord, UserStore, UserUpdate,
    entities::{sessions, user_changes, users},
    name_key,
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
                .col_expr(users::Column::NameKey, Expr::value(name_key(&name)))
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
            // Access tokens carry the email: ValidateToken reports the new one.
            record_claims_change(&txn, user_id, now).await?;
            let Some(user) = users::Entity::find_by_id(user_id).one(&txn).await? else {
                return Ok(EmailChanged::SignedOut);
            };
            store.commit_with(txn, &audit).await?;
            Ok(EmailChanged::Changed(user.into()))
        })
        .await
    }

    async fn import(&self, users: Vec<(NewUser, AuditRecord)>) -> StoreResult<Vec<bool>> {
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let mut inserted = Vec::with_capacity(users.len());
            for (user, audit) in users {
                // A savepoint per user: PostgreSQL aborts the whole transaction on a
                // unique violation unless it is rolled back to one.
                let row = txn.begin().await?;
                match user_model(user)
                    .insert(&row)
                    .await
                    .map_err(StoreError::from)
                {
                    Ok(_) => {
                        insert_audit(&row, &audit).await?;
                        row.commit().await?;
                        inserted.push(true);
                    }
                    Err(StoreError::Conflict) => {
                        row.rollback().await?;
                        inserted.push(false);
                    }
                    Err(err) => return Err(err),
                }
            }
            txn.commit().await?;
            Ok(inserted)
        })
        .await
    }

    async fn update(
        &self,
        id: Uuid,
        update: UserUpdate,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<UserRecord>> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let Some(before) = locked_user(&txn, id).await? else {
                return Ok(None);
            };
            let UserUpdate {
                name,
                role,
                email_verified,
            } = update;
            let role_changed = role.as_ref().is_some_and(|role| *role != before.role);
            let mut model = users::ActiveModel {
                updated_at: Set(now),
                ..Default::default()
            };
            if let Some(name) = name {
                model.name_key = Set(name_key(&name));
                model.name = Set(name);
            }
            if let Some(role) = role {
                model.role = Set(role);
            }
            if let Some(verified) = email_verified {
                model.email_verified = Set(verified);
            }
            users::Entity::update_many()
                .set(model)
                .filter(users::Column::Id.eq(id))
                .exec(&txn)
                .await?;
            if role_changed {
                record_claims_change(&txn, id, now).await?;
            }
            let Some(user) = users::Entity::find_by_id(id).one(&txn).await? else {
                return Ok(None);
            };
            store.commit_with(txn, &audit).await?;
            Ok(Some(user.into()))
        })
        .await
    }

    async fn delete(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            if locked_user(&txn, id).await?.is_none() {
                return Ok(None);
            }
            let ended = live_session_ids(&txn, id).await?;
            // Sessions, their spent refresh tokens and the user's codes go with the user
            // (ON DELETE CASCADE); every replica learns of it from `user_changes`, since no
            // session row is left to carry a revocation.
            users::Entity::delete_by_id(id).exec(&txn).await?;
            record_claims_change(&txn, id, now).await?;
            store.commit_with(txn, &audit).await?;
            Ok(Some(ended))
        })
        .await
    }

    async fn list(
        &self,
        filter: &UserFilter,
        after: Option<Uuid>,
        limit: u64,
    ) -> StoreResult<Vec<UserRecord>> {
        let select = listing(filter, after, limit);
        self.detached(move |store| async move {
            let rows = select.all(&store.db).await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
        .await
    }

    async fn changed_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<ClaimsChange>> {
        self.detached(move |store| async move {
            let changes: Vec<(Uuid, DateTime<Utc>)> = user_changes::Entity::find()
                .select_only()
                .column(user_changes::Column::UserId)
                .column(user_changes::Column::ChangedAt)
                .filter(user_changes::Column::ChangedAt.gte(since))
                .into_tuple()
                .all(&store.db)
                .await?;
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            // What the users are now (read after the changes: never older than them), each
            // once, a bounded number per statement (a bulk change can name thousands).
            let mut ids: Vec<Uuid> = changes.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut current = std::collections::HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(CHANGED_USERS_PER_QUERY) {
                let users: Vec<(Uuid, String, String, DateTime<Utc>)> = users::Entity::find()
                    .select_only()
                    .column(users::Column::Id)
                    .column(users::Column::Email)
                    .column(users::Column::Role)
                    .column(users::Column::UpdatedAt)
                    .filter(users::Column::Id.is_in(chunk.iter().copied()))
                    .into_tuple()
                    .all(&store.db)
                    .await?;
                for (id, email, role, updated_at) in users {
                    current.insert(id, (email, role, updated_at));
                }
            }
            Ok(changes
                .into_iter()
                .map(|(user_id, changed_at)| ClaimsChange {
                    user_id,
                    changed_at,
                    now: current.get(&user_id).cloned(),
                })
                .collect())
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

/// Records that a user's email or role changed, or that the user was deleted, for every
/// replica's view of access tokens (`auth::revocation`). Stamped once the user's row is
/// locked, as revocations are, so no token issued before the change outlives the
/// replicas' memory of it.
async fn record_claims_change(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    user_changes::Entity::insert(user_changes::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        changed_at: Set(revoked_at(now)),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// ListUsers' query: keyset order by id (UUIDv7, creation order), so pages stay put while
/// users are added.
fn listing(filter: &UserFilter, after: Option<Uuid>, limit: u64) -> Select<users::Entity> {
    let mut select = users::Entity::find()
        .order_by_asc(users::Column::Id)
        .limit(limit);
    if let Some(prefix) = &filter.prefix {
        // Range scans on the email and name-key indexes (bytewise collations, see the
        // migration), not LIKE, which no index serves on every database.
        select = select.filter(
            Condition::any()
                .add(prefix_range(users::Column::Email, prefix))
                .add(prefix_range(users::Column::NameKey, prefix)),
        );
    }
    if let Some(role) = &filter.role {
        select = select.filter(users::Column::Role.eq(role.as_str()));
    }
    if let Some(active) = filter.active {
        select = select.filter(users::Column::Active.eq(active));
    }
    if let Some(after) = after {
        select = select.filter(users::Column::Id.gt(after));
    }
    select
}

impl SqlStore {
    /// The database's plan for ListUsers' query with `filter`, one line per row of its
    /// EXPLAIN: whether a prefix search is served by the indexes. On PostgreSQL, with
    /// sequential scans priced out, as a small table would be scanned whatever its
    /// indexes.
    pub async fn explain_user_listing(&self, filter: &UserFilter) -> StoreResult<Vec<String>> {
        let select = listing(filter, None, 50);
        self.detached(move |store| async move {
            let backend = store.db.get_database_backend();
            let query = select.build(backend);
            let explain = match backend {
                DbBackend::Sqlite => "EXPLAIN QUERY PLAN",
                _ => "EXPLAIN",
            };
            let statement = Statement::from_sql_and_values(
                backend,
                format!("{explain} {}", query.sql),
                query.values.map(|values| values.0).unwrap_or_default(),
            );
            let txn = store.db.begin().await?;
            if backend == DbBackend::Postgres {
                txn.execute_unprepared("SET LOCAL enable_seqscan = off")
                    .await?;
            }
            let rows = txn.query_all_raw(statement).await?;
            txn.rollback().await?;
            Ok(rows
                .iter()
                .map(|row| {
                    let columns = row.column_names();
                    columns
                        .iter()
                        .map(|column| {
                            row.try_get::<Option<String>>("", column)
                                .ok()
                                .flatten()
                                .or_else(|| {
                                    row.try_get::<Option<i64>>("", column)
                                        .ok()
                                        .flatten()
                                        .map(|n| n.to_string())
                                })
                                .unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .collect())
        })
        .await
    }
}

/// Users read per statement by [`UserStore::changed_since`].
const CHANGED_USERS_PER_QUERY: usize = 500;

/// `column` starts with `prefix`, as a range an index serves: `prefix <= column < next`,
/// where `next` is the least string above every string starting with `prefix` (its last
/// character that can be raised, raised). Exact under a bytewise collation, where UTF-8
/// byte order is code point order.
fn prefix_range(column: users::Column, prefix: &str) -> Condition {
    let mut condition = Condition::all().add(column.gte(prefix));
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let raised = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(raised) = raised {
            chars.push(raised);
            let next: String = chars.into_iter().collect();
            condition = condition.add(column.lt(next));
            break;
        }
    }
    condition
}

pub(super) fn user_model(user: NewUser) -> users::ActiveModel {
    users::ActiveModel {
        id: Set(user.id),
        email: Set(user.email),
        name_key: Set(name_key(&user.name)),
        name: Set(user.name),
        role: Set(user.role),
        password_hash: Set(user.password_hash.expose_secret().to_owned()),
        active: Set(user.active),
        email_verified: Set(user.email_verified),
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
