//! The sea-orm implementation of the store traits.

use std::{
    str::FromStr as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    RuntimeErr, Set, SqlErr, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait as _},
    sqlx,
};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use uuid::Uuid;

use super::{
    Admission, AuditRecord, AuditStore, KeyRecord, KeyStore, NewSession, NewUser, RevokeReason,
    Rotation, SessionRecord, SessionStore, StoreError, StoreResult, ThrottleRule, ThrottleStore,
    UserRecord, UserStore, entities::*,
};
use crate::config::DatabaseConfig;

/// How long SQLite waits for the write lock before answering "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the connection pool. Statement logging is off: sqlx would log bound values,
/// and those include password hashes and refresh-token hashes.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<DatabaseConnection> {
    let default_pool = match config.backend() {
        // SQLite has one writer; one connection means no "database is locked" at all.
        "sqlite" => 1,
        "postgres" | "postgresql" | "mysql" => 10,
        _ => anyhow::bail!(
            "AUTHD_DATABASE_URL: expected a URL starting with sqlite:, postgres: or mysql:"
        ),
    };
    let max_connections = config
        .max_connections
        .map_or(default_pool, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    open(config, max_connections).await
}

/// Applies the pending migrations to `db`, the pool opened from `config`. Replicas started
/// together on an empty database would race to create the same tables, so the run holds
/// a lock on the whole database for its length; a replica that waited for it finds the
/// work done and applies nothing.
pub async fn migrate(db: &DatabaseConnection, config: &DatabaseConfig) -> anyhow::Result<()> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Sqlite {
        let _lock = lock_sqlite_directory(config).await?;
        return Migrator::up(db, None)
            .await
            .context("running database migrations");
    }
    // PostgreSQL's and MySQL's locks belong to a session: one connection runs it all.
    let session = open(config, 1).await?;
    lock_server_database(&session, backend).await?;
    let applied = Migrator::up(&session, None)
        .await
        .context("running database migrations");
    // Closing the session releases the lock.
    session
        .close()
        .await
        .context("closing the migration connection")?;
    applied
}

/// Locks the directory of an on-disk SQLite database against other processes migrating
/// it. The directory rather than the file: closing a descriptor of the database file
/// would drop the POSIX locks SQLite holds on it in this process. An in-memory database
/// belongs to one process and needs none.
async fn lock_sqlite_directory(config: &DatabaseConfig) -> anyhow::Result<Option<std::fs::File>> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(config.url.expose_secret())
        .context("AUTHD_DATABASE_URL: not a SQLite URL")?;
    let path = options.get_filename();
    if !path.is_file() {
        return Ok(None);
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    tokio::task::spawn_blocking(move || {
        let lock = std::fs::File::open(&directory)?;
        lock.lock()?;
        std::io::Result::Ok(Some(lock))
    })
    .await
    .context("locking the SQLite directory")?
    .context("locking the SQLite directory for migrations")
}

/// How long a starting replica waits for another one's migrations before it gives up.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(600);

/// PostgreSQL's advisory locks are per database; this key is "authd_mg" in ASCII.
const POSTGRES_MIGRATION_LOCK: i64 = 0x6175_7468_645f_6d67;

async fn lock_server_database(db: &DatabaseConnection, backend: DbBackend) -> anyhow::Result<()> {
    let try_lock = match backend {
        DbBackend::Postgres => {
            format!(
                "SELECT CAST(CAST(pg_try_advisory_lock({POSTGRES_MIGRATION_LOCK}) AS INTEGER) AS BIGINT)"
            )
        }
        // MySQL's named locks are server-wide: the name carries the database's, hashed to
        // stay within the 64 characters a lock name may have.
        _ => "SELECT GET_LOCK(CONCAT('authd-migrate-', MD5(DATABASE())), 0)".to_owned(),
    };
    let deadline = Instant::now() + MIGRATION_LOCK_WAIT;
    let mut announced = false;
    loop {
        let row = db
            .query_one_raw(Statement::from_string(backend, try_lock.clone()))
            .await
            .context("taking the migration lock")?
            .context("taking the migration lock: no answer")?;
        let taken: Option<i64> = row
            .try_get_by_index(0)
            .context("taking the migration lock")?;
        match taken {
            Some(1) => return Ok(()),
            Some(_) => {}
            None => anyhow::bail!("taking the migration lock: the database answered NULL"),
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "another authd has been migrating this database for {MIGRATION_LOCK_WAIT:?}; \
             is one stuck?"
        );
        if !announced {
            tracing::info!("waiting for another authd to finish migrating the database");
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open(config: &DatabaseConfig, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    let url = config.url.expose_secret();
    let backend = config.backend();
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_timeout(config.acquire_timeout)
        .sqlx_logging(false)
        .record_stmt_in_spans(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
        });
    Database::connect(options)
        .await
        .with_context(|| format!("AUTHD_DATABASE_URL: cannot open the {backend} database"))
}

/// The one place database errors are classified.
fn map_db_err(err: DbErr) -> StoreError {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
        return StoreError::Conflict;
    }
    let unreachable = match &err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => {
            matches!(
                **e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::WorkerCrashed
            )
        }
        _ => false,
    };
    if unreachable {
        StoreError::Unavailable(err.into())
    } else {
        StoreError::Other(err.into())
    }
}

/// The store on a sea-orm connection pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    queries: QueryCounter,
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
    pub fn new(mut db: DatabaseConnection) -> Self {
        let queries = QueryCounter::default();
        let counter = Arc::clone(&queries.0);
        db.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        Self { db, queries }
    }

    /// Counts every statement run from now on, transactions included.
    pub fn query_counter(&self) -> QueryCounter {
        self.queries.clone()
    }

    /// The underlying pool, for migrations and shutdown.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// One round-trip to the database, for health checks.
    pub async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await.map_err(map_db_err)
    }

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
            .col_expr(sessions::Column::RevokedAt, Expr::value(now))
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

    async fn live_session_ids(
        txn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<Vec<Uuid>, DbErr> {
        sessions::Entity::find()
            .select_only()
            .column(sessions::Column::Id)
            .filter(sessions::Column::UserId.eq(user_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .into_tuple()
            .all(txn)
            .await
    }
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
    async fn create(&self, user: NewUser) -> StoreResult<UserRecord> {
        let model = user_model(user)
            .insert(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(model.into())
    }

    async fn create_with_session(
        &self,
        user: NewUser,
        session: NewSession,
    ) -> StoreResult<UserRecord> {
        let txn = self.db.begin().await.map_err(map_db_err)?;
        let model = user_model(user).insert(&txn).await.map_err(map_db_err)?;
        sessions::Entity::insert(session_model(session))
            .exec_without_returning(&txn)
            .await
            .map_err(map_db_err)?;
        txn.commit().await.map_err(map_db_err)?;
        Ok(model.into())
    }

    async fn find_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let found = users::Entity::find()
            .filter(users::Column::Email.eq(email))
            .one(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(found.map(Into::into))
    }

    async fn find_by_id(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        let found = users::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(found.map(Into::into))
    }

    async fn update_password_hash(
        &self,
        id: Uuid,
        password_hash: SecretString,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        users::Entity::update_many()
            .col_expr(
                users::Column::PasswordHash,
                Expr::value(password_hash.expose_secret().to_owned()),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(())
    }

    async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let txn = self.db.begin().await.map_err(map_db_err)?;
        // Existence is checked with a read: MySQL counts only rows an UPDATE changed.
        let exists = users::Entity::find_by_id(id)
            .one(&txn)
            .await
            .map_err(map_db_err)?
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
            .map_err(map_db_err)?;
        let mut revoked = Vec::new();
        if !active {
            revoked = Self::live_session_ids(&txn, id).await.map_err(map_db_err)?;
            Self::revoke_ids(&txn, &revoked, RevokeReason::Deactivated, now)
                .await
                .map_err(map_db_err)?;
        }
        txn.commit().await.map_err(map_db_err)?;
        Ok(Some(revoked))
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn create(&self, session: NewSession) -> StoreResult<()> {
        sessions::Entity::insert(session_model(session))
            .exec_without_returning(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(())
    }

    async fn find(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        let found = sessions::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(found.map(Into::into))
    }

    async fn find_by_refresh_hash(&self, hash: &str) -> StoreResult<Option<SessionRecord>> {
        let found = sessions::Entity::find()
            .filter(sessions::Column::RefreshHash.eq(hash))
            .one(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(found.map(Into::into))
    }

    async fn find_spent(&self, hash: &str) -> StoreResult<Option<Uuid>> {
        let found = spent_refresh_tokens::Entity::find_by_id(hash.to_owned())
            .one(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(found.map(|spent| spent.session_id))
    }

    async fn rotate(&self, rotation: Rotation<'_>) -> StoreResult<bool> {
        let txn = self.db.begin().await.map_err(map_db_err)?;
        // The WHERE clause is the compare-and-swap: of several concurrent rotations of the
        // same token, the database lets exactly one UPDATE match the old hash.
        let updated = sessions::Entity::update_many()
            .col_expr(
                sessions::Column::RefreshHash,
                Expr::value(rotation.new_hash),
            )
            .col_expr(
                sessions::Column::Generation,
                Expr::col(sessions::Column::Generation).add(1),
            )
            .col_expr(sessions::Column::LastUsedAt, Expr::value(rotation.now))
            .col_expr(sessions::Column::RotatedAt, Expr::value(rotation.now))
            .col_expr(
                sessions::Column::ExpiresAt,
                Expr::value(rotation.expires_at),
            )
            .filter(sessions::Column::Id.eq(rotation.session_id))
            .filter(sessions::Column::RefreshHash.eq(rotation.old_hash))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(rotation.now))
            .exec(&txn)
            .await
            .map_err(map_db_err)?;
        if updated.rows_affected != 1 {
            return Ok(false);
        }
        spent_refresh_tokens::Entity::insert(spent_refresh_tokens::ActiveModel {
            token_hash: Set(rotation.old_hash.to_owned()),
            session_id: Set(rotation.session_id),
            spent_at: Set(rotation.now),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(map_db_err)?;
        // Both writes or neither: a crash here leaves the old token current and the new one
        // unknown, never both valid.
        txn.commit().await.map_err(map_db_err)?;
        Ok(true)
    }

    async fn revoke(
        &self,
        id: Uuid,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let updated = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(now))
            .col_expr(
                sessions::Column::RevokedReason,
                Expr::value(reason.as_str()),
            )
            .filter(sessions::Column::Id.eq(id))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(updated.rows_affected == 1)
    }

    async fn revoke_all_for_user(
        &self,
        user_id: Uuid,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>> {
        let txn = self.db.begin().await.map_err(map_db_err)?;
        let ids = Self::live_session_ids(&txn, user_id)
            .await
            .map_err(map_db_err)?;
        Self::revoke_ids(&txn, &ids, reason, now)
            .await
            .map_err(map_db_err)?;
        txn.commit().await.map_err(map_db_err)?;
        Ok(ids)
    }

    async fn revoked_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(Uuid, DateTime<Utc>)>> {
        sessions::Entity::find()
            .select_only()
            .column(sessions::Column::Id)
            .column(sessions::Column::RevokedAt)
            .filter(sessions::Column::RevokedAt.gte(since))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(map_db_err)
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn live_keys(&self, algorithm: &str) -> StoreResult<Vec<KeyRecord>> {
        let keys = signing_keys::Entity::find()
            .filter(signing_keys::Column::Algorithm.eq(algorithm))
            .filter(signing_keys::Column::RetiredAt.is_null())
            .order_by_asc(signing_keys::Column::CreatedAt)
            .order_by_asc(signing_keys::Column::Kid)
            .all(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(keys.into_iter().map(Into::into).collect())
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        signing_keys::Entity::insert(signing_keys::ActiveModel {
            kid: Set(key.kid.clone()),
            algorithm: Set(key.algorithm.clone()),
            private_key: Set(key.private_key.expose_secret().clone()),
            public_key: Set(key.public_key.clone()),
            created_at: Set(key.created_at),
            retired_at: Set(None),
        })
        .exec_without_returning(&self.db)
        .await
        .map_err(map_db_err)?;
        Ok(())
    }

    async fn retire_key(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()> {
        signing_keys::Entity::update_many()
            .col_expr(signing_keys::Column::RetiredAt, Expr::value(now))
            .filter(signing_keys::Column::Kid.eq(kid))
            .filter(signing_keys::Column::RetiredAt.is_null())
            .exec(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(())
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
                .exec(&self.db)
                .await
                .map_err(map_db_err)?
                .rows_affected
                == 1
            {
                return Ok(Admission::Admitted);
            }
            let row = login_throttle::Entity::find_by_id(key.to_owned())
                .one(&self.db)
                .await
                .map_err(map_db_err)?;
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
            .exec_without_returning(&self.db)
            .await
            .map_err(map_db_err);
            match inserted {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "login throttle counter kept changing under concurrent attempts"
        )))
    }

    async fn reset_login_failures(&self, key: &str) -> StoreResult<()> {
        login_throttle::Entity::update_many()
            .col_expr(login_throttle::Column::Failures, Expr::value(0i64))
            .col_expr(login_throttle::Column::BlockedUntil, Expr::value(0i64))
            .col_expr(login_throttle::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(login_throttle::Column::Key.eq(key))
            .exec(&self.db)
            .await
            .map_err(map_db_err)?;
        Ok(())
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record(&self, event: &AuditRecord) -> StoreResult<()> {
        audit_events::Entity::insert(audit_events::ActiveModel {
            id: Set(event.id),
            occurred_at: Set(event.occurred_at),
            kind: Set(event.kind.to_owned()),
            outcome: Set(event.outcome.to_owned()),
            user_id: Set(event.user_id),
            session_id: Set(event.session_id),
            peer: Set(event.peer.clone()),
        })
        .exec_without_returning(&self.db)
        .await
        .map_err(map_db_err)?;
        Ok(())
    }
}
