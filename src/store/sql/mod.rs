//! The sea-orm implementation of the store traits.

mod errors;
mod health;
mod setup;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait as _,
    Select, Set, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sea_query::{Expr, ExprTrait as _},
};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use uuid::Uuid;

use self::health::{Look, WriteHealth};
pub use self::{
    health::DatabaseHealth,
    setup::{connect, migrate, migrate_then},
};
use super::{
    Admission, AuditRecord, AuditStore, KeyRecord, KeyStore, NewSession, NewUser, PurgeStore,
    RevokeReason, Rotation, SessionRecord, SessionStore, StoreError, StoreResult, ThrottleRule,
    ThrottleStore, UserRecord, UserStore, entities::*,
};
use crate::config::DatabaseConfig;

/// The store on a sea-orm connection pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    queries: QueryCounter,
    writes: Arc<WriteHealth>,
    /// How long a store call may take before it is given up (AUTHD_DB_STATEMENT_TIMEOUT):
    /// a database that stopped answering must not hold a call, a pool connection or
    /// shutdown for ever.
    call_limit: Duration,
}

/// How many SQL statements the store has run: proof of which RPCs touch the database
/// (ValidateToken must not).
#[derive(Debug, Clone, Default)]
pub struct QueryCounter(Arc<AtomicU64>);

impl QueryCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl SqlStore {
    /// The store on `db`, the pool opened from `config`.
    pub fn new(mut db: DatabaseConnection, config: &DatabaseConfig) -> Self {
        let queries = QueryCounter::default();
        let counter = Arc::clone(&queries.0);
        db.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let writes = Arc::new(WriteHealth::new(
            setup::database_name(config),
            setup::sqlite_directory(config),
        ));
        Self {
            db,
            queries,
            writes,
            // The server's own limits come first, so that a call stopped for time is one
            // whose answer arrived, and its connection is clean.
            call_limit: config.statement_timeout + CALL_MARGIN,
        }
    }

    /// Counts every statement run from now on, transactions included.
    pub fn query_counter(&self) -> QueryCounter {
        self.queries.clone()
    }

    /// The underlying pool, for migrations and shutdown.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Whether the database serves: it answers, and takes writes (see `health`), within
    /// the statement timeout.
    pub async fn check(&self) -> DatabaseHealth {
        let limit = self.call_limit;
        let store = self.clone();
        // On a task of its own, as every store call (see `detached`).
        let check = tokio::spawn(async move {
            tokio::time::timeout(limit, store.check_now())
                .await
                .unwrap_or_else(|_| DatabaseHealth::Unreachable(timed_out(limit)))
        });
        check.await.unwrap_or_else(|err| {
            DatabaseHealth::Unreachable(StoreError::Other(anyhow::anyhow!(
                "health check task failed: {err}"
            )))
        })
    }

    async fn check_now(&self) -> DatabaseHealth {
        if let Err(err) = self.db.ping().await {
            return DatabaseHealth::Unreachable(self.error()(err));
        }
        let refusals = match self.writes.look() {
            Look::Known(health) => return health,
            Look::Probe(refusals) => refusals,
        };
        if !self.writes.room_on_disk() {
            return DatabaseHealth::RefusingWrites;
        }
        // Mapped without `error()`: the probe's own refusal is no news to count.
        match health::probe_write(&self.db)
            .await
            .map_err(errors::map_db_err)
        {
            Ok(()) => self.writes.probed(refusals),
            Err(StoreError::Full(_) | StoreError::WritesFailing(_)) => {
                DatabaseHealth::RefusingWrites
            }
            Err(err) => DatabaseHealth::Unreachable(err),
        }
    }

    /// Runs `work` on a task of its own, to its end even if its caller goes away (a
    /// client's deadline, the request timeout). The drivers are not safe to stop in the
    /// middle of a conversation: a BEGIN whose answer never arrives leaves the server inside
    /// a transaction the PostgreSQL and MySQL drivers do not count, and a MySQL connection
    /// stopped mid-transaction can hang its next use for good. Every store method runs this
    /// way. The work is given up only past the statement timeout and a margin, when the
    /// server has not answered even its own limit (a dead or black-holed server); the pool
    /// then discards the connection (see `setup::open`).
    async fn detached<T, F>(&self, work: impl FnOnce(SqlStore) -> F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = StoreResult<T>> + Send + 'static,
    {
        let limit = self.call_limit;
        let work = tokio::time::timeout(limit, work(self.clone()));
        match tokio::spawn(work).await {
            Ok(Ok(done)) => done,
            Ok(Err(_)) => Err(timed_out(limit)),
            Err(err) => Err(StoreError::Other(anyhow::anyhow!(
                "store task failed: {err}"
            ))),
        }
    }

    /// One row, or none, read on a task of its own (see [`Self::detached`]).
    async fn find_one<E>(&self, select: Select<E>) -> StoreResult<Option<E::Model>>
    where
        E: EntityTrait,
        E::Model: Send + 'static,
    {
        self.detached(
            move |store| async move { select.one(&store.db).await.map_err(store.error()) },
        )
        .await
    }

    /// A write transaction. On SQLite it takes the write lock at BEGIN (IMMEDIATE): what
    /// it reads cannot change before it writes, even from another process (the command
    /// line), and it never fails half-way for a stale snapshot.
    async fn begin(&self) -> StoreResult<DatabaseTransaction> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.db
            .begin_with_options(options)
            .await
            .map_err(self.error())
    }

    /// Stores the audit event of the change `txn` made, and commits both.
    async fn commit_with(&self, txn: DatabaseTransaction, audit: &AuditRecord) -> StoreResult<()> {
        insert_audit(&txn, audit).await.map_err(self.error())?;
        txn.commit().await.map_err(self.error())
    }

    /// Maps a database error as the domain sees it, noting a refused write for
    /// [`Self::check`].
    fn error(&self) -> impl Fn(DbErr) -> StoreError + '_ {
        |err| {
            let err = errors::map_db_err(err);
            self.writes.observe(&err);
            err
        }
    }

    /// Revokes `ids`, whose rows the transaction has locked.
    async fn revoke_ids(
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

    /// Locking read: on MySQL it sees the latest committed rows, not the transaction's
    /// snapshot.
    async fn live_session_ids(
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
}

/// The time to stamp a revocation with, once its rows are locked: the call's `now`, or
/// later if the call waited for the locks. Every token issued from the session came from
/// a transaction that held them before, so `revoked_at` is never older than the youngest
/// token: the moment every replica may forget the revocation (`revoked_at` + the token
/// lifetime) comes after that token expires, however long the wait was.
fn revoked_at(now: DateTime<Utc>) -> DateTime<Utc> {
    Ord::max(now, Utc::now())
}

/// How long past the statement timeout a store call waits for the server's own verdict.
const CALL_MARGIN: Duration = Duration::from_secs(1);

fn timed_out(limit: Duration) -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!(
        "the database did not answer within {}",
        humantime::format_duration(limit)
    ))
}

async fn insert_audit(db: &impl ConnectionTrait, event: &AuditRecord) -> Result<(), DbErr> {
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

fn user_model(user: NewUser) -> users::ActiveModel {
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
    }
}

fn session_model(session: NewSession) -> sessions::ActiveModel {
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
        }
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
        }
    }
}

impl From<signing_keys::Model> for KeyRecord {
    fn from(m: signing_keys::Model) -> Self {
        Self {
            kid: m.kid,
            algorithm: m.algorithm,
            private_key: SecretBox::new(Box::new(m.private_key)),
            public_key: m.public_key,
            created_at: m.created_at,
        }
    }
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create(&self, user: NewUser, audit: &AuditRecord) -> StoreResult<UserRecord> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            let model = user_model(user).insert(&txn).await.map_err(store.error())?;
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
            let model = user_model(user).insert(&txn).await.map_err(store.error())?;
            sessions::Entity::insert(session_model(session))
                .exec_without_returning(&txn)
                .await
                .map_err(store.error())?;
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
        password_hash: SecretString,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.detached(move |store| async move {
            users::Entity::update_many()
                .col_expr(
                    users::Column::PasswordHash,
                    Expr::value(password_hash.expose_secret().to_owned()),
                )
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(id))
                .exec(&store.db)
                .await
                .map_err(store.error())?;
            Ok(())
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
            let exists = users::Entity::find_by_id(id)
                .lock_exclusive()
                .one(&txn)
                .await
                .map_err(store.error())?
                .is_some();
            if !exists {
                return Ok(None);
            }
            users::Entity::update_many()
                .col_expr(users::Column::Active, Expr::value(active))
                .col_expr(users::Column::UpdatedAt, Expr::value(now))
                .filter(users::Column::Id.eq(id))
                .exec(&txn)
                .await
                .map_err(store.error())?;
            let mut revoked = Vec::new();
            if !active {
                revoked = Self::live_session_ids(&txn, id)
                    .await
                    .map_err(store.error())?;
                Self::revoke_ids(&txn, &revoked, RevokeReason::Deactivated, now)
                    .await
                    .map_err(store.error())?;
            }
            store.commit_with(txn, &audit).await?;
            Ok(Some(revoked))
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn create(&self, session: NewSession, audit: &AuditRecord) -> StoreResult<bool> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let txn = store.begin().await?;
            // The user's row, locked: a deactivation in progress is waited for.
            let active = users::Entity::find_by_id(session.user_id)
                .lock_exclusive()
                .one(&txn)
                .await
                .map_err(store.error())?
                .is_some_and(|user| user.active);
            if !active {
                return Ok(false);
            }
            sessions::Entity::insert(session_model(session))
                .exec_without_returning(&txn)
                .await
                .map_err(store.error())?;
            store.commit_with(txn, &audit).await?;
            Ok(true)
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
                .await
                .map_err(store.error())?;
            if updated.rows_affected != 1 {
                return Ok(false);
            }
            spent_refresh_tokens::Entity::insert(spent_refresh_tokens::ActiveModel {
                token_hash: Set(old_hash),
                session_id: Set(session_id),
                spent_at: Set(now),
            })
            .exec_without_returning(&txn)
            .await
            .map_err(store.error())?;
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
                .await
                .map_err(store.error())?;
            let ids = Vec::from_iter(live);
            Self::revoke_ids(&txn, &ids, reason, now)
                .await
                .map_err(store.error())?;
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
            let ids = Self::live_session_ids(&txn, user_id)
                .await
                .map_err(store.error())?;
            Self::revoke_ids(&txn, &ids, reason, now)
                .await
                .map_err(store.error())?;
            store.commit_with(txn, &audit).await?;
            Ok(ids)
        })
        .await
    }

    async fn revoked_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(Uuid, DateTime<Utc>)>> {
        self.detached(move |store| async move {
            sessions::Entity::find()
                .select_only()
                .column(sessions::Column::Id)
                .column(sessions::Column::RevokedAt)
                .filter(sessions::Column::RevokedAt.gte(since))
                .into_tuple()
                .all(&store.db)
                .await
                .map_err(store.error())
        })
        .await
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn live_keys(&self, algorithm: &str) -> StoreResult<Vec<KeyRecord>> {
        let algorithm = algorithm.to_owned();
        self.detached(move |store| async move {
            let keys = signing_keys::Entity::find()
                .filter(signing_keys::Column::Algorithm.eq(algorithm))
                .filter(signing_keys::Column::RetiredAt.is_null())
                .order_by_asc(signing_keys::Column::CreatedAt)
                .order_by_asc(signing_keys::Column::Kid)
                .all(&store.db)
                .await
                .map_err(store.error())?;
            Ok(keys.into_iter().map(Into::into).collect())
        })
        .await
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let model = signing_keys::ActiveModel {
            kid: Set(key.kid.clone()),
            algorithm: Set(key.algorithm.clone()),
            private_key: Set(key.private_key.expose_secret().clone()),
            public_key: Set(key.public_key.clone()),
            created_at: Set(key.created_at),
            retired_at: Set(None),
        };
        self.detached(move |store| async move {
            signing_keys::Entity::insert(model)
                .exec_without_returning(&store.db)
                .await
                .map_err(store.error())?;
            Ok(())
        })
        .await
    }

    async fn retire_key(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let kid = kid.to_owned();
        self.detached(move |store| async move {
            signing_keys::Entity::update_many()
                .col_expr(signing_keys::Column::RetiredAt, Expr::value(now))
                .filter(signing_keys::Column::Kid.eq(kid))
                .filter(signing_keys::Column::RetiredAt.is_null())
                .exec(&store.db)
                .await
                .map_err(store.error())?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl ThrottleStore for SqlStore {
    async fn admit_login(
        &self,
        key: &str,
        rule: &ThrottleRule,
        now_ms: i64,
    ) -> StoreResult<Admission> {
        let (key, rule) = (key.to_owned(), *rule);
        self.detached(move |store| async move {
            let key = key.as_str();
            use login_throttle::Column;
            // One conditional UPDATE is the whole check: the WHERE clause admits the attempt
            // only below the limit or after the wait, and the SET counts it and, from the
            // limit on, starts the next (longer) wait at once, so concurrent attempts after
            // the window opens see it closed again. `blocked_until` is assigned before
            // `failures` because MySQL evaluates SET left to right with the new values.
            let failures = Expr::col(Column::Failures);
            let excess = failures.clone().add(2 - rule.max_failures);
            let window = Expr::case(
                excess
                    .clone()
                    .mul(rule.base_window_ms)
                    .gt(rule.max_window_ms),
                rule.max_window_ms,
            )
            .finally(excess.mul(rule.base_window_ms));
            let blocked_until = Expr::case(
                failures.clone().add(1).gte(rule.max_failures),
                Expr::val(now_ms).add(Into::<Expr>::into(window)),
            )
            .finally(0i64);
            let admit = || {
                login_throttle::Entity::update_many()
                    .col_expr(Column::BlockedUntil, blocked_until.clone().into())
                    .col_expr(Column::Failures, failures.clone().add(1))
                    .col_expr(Column::UpdatedAt, Expr::value(Utc::now()))
                    .filter(Column::Key.eq(key))
                    .filter(
                        Condition::any()
                            .add(Column::Failures.lt(rule.max_failures))
                            .add(Column::BlockedUntil.lte(now_ms)),
                    )
            };
            // Each round either admits, finds the counter closed, or sees it created or
            // reopened by a concurrent attempt since its UPDATE and tries again.
            for _ in 0..4 {
                if admit()
                    .exec(&store.db)
                    .await
                    .map_err(store.error())?
                    .rows_affected
                    == 1
                {
                    return Ok(Admission::Admitted);
                }
                let row = login_throttle::Entity::find_by_id(key.to_owned())
                    .one(&store.db)
                    .await
                    .map_err(store.error())?;
                if let Some(row) = row {
                    let closed = row.failures >= rule.max_failures && row.blocked_until > now_ms;
                    if closed {
                        return Ok(Admission::Throttled {
                            until_ms: row.blocked_until,
                        });
                    }
                    continue;
                }
                // First attempt for this key: create its counter (a concurrent first attempt
                // may win that race, which is fine) and try again.
                let inserted = login_throttle::Entity::insert(login_throttle::ActiveModel {
                    key: Set(key.to_owned()),
                    failures: Set(0),
                    blocked_until: Set(0),
                    updated_at: Set(Utc::now()),
                })
                .exec_without_returning(&store.db)
                .await
                .map_err(store.error());
                match inserted {
                    Ok(_) | Err(StoreError::Conflict) => {}
                    Err(err) => return Err(err),
                }
            }
            Err(StoreError::Other(anyhow::anyhow!(
                "login throttle counter kept changing under concurrent attempts"
            )))
        })
        .await
    }

    async fn reset_login_failures(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.detached(move |store| async move {
            login_throttle::Entity::update_many()
                .col_expr(login_throttle::Column::Failures, Expr::value(0i64))
                .col_expr(login_throttle::Column::BlockedUntil, Expr::value(0i64))
                .col_expr(login_throttle::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(login_throttle::Column::Key.eq(key))
                .exec(&store.db)
                .await
                .map_err(store.error())?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record(&self, event: &AuditRecord) -> StoreResult<()> {
        let event = event.clone();
        self.detached(move |store| async move {
            insert_audit(&store.db, &event).await.map_err(store.error())
        })
        .await
    }
}

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
            let keys: Vec<K> = select
                .into_tuple()
                .all(&store.db)
                .await
                .map_err(store.error())?;
            if keys.is_empty() {
                return Ok(0);
            }
            let mut delete = E::delete_many().filter(key.is_in(keys));
            if let Some(also) = also {
                delete = delete.filter(also);
            }
            let deleted = delete.exec(&store.db).await.map_err(store.error())?;
            Ok(deleted.rows_affected)
        })
        .await
    }
}
