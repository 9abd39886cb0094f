//! The sea-orm implementation of the store traits.

mod audit;
mod codes;
mod errors;
mod health;
mod keys;
mod notices;
mod purge;
mod sessions;
mod settings;
mod setup;
mod throttle;
mod users;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, EntityTrait, Select, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use tracing::{Instrument as _, Span};

use self::health::{Look, WriteHealth};
pub use self::{
    health::DatabaseHealth,
    notices::{LISTENER_NAME, Notice, RevocationNotices},
    settings::{Backend, DatabaseSettings, SqliteSync},
    setup::{CannotOpen, connect, migrate, migrate_then, migration_status},
};
use super::{AuditRecord, StoreError, StoreResult};
use crate::telemetry::traces;

/// The store on a sea-orm connection pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    queries: QueryCounter,
    writes: Arc<WriteHealth>,
    /// How long a store call may take before it is given up (the statement timeout):
    /// a database that stopped answering must not hold a call, a pool connection or
    /// shutdown for ever.
    call_limit: Duration,
    /// Revocations pushed by the database, where it can (PostgreSQL).
    notices: Option<RevocationNotices>,
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
    pub fn new(mut db: DatabaseConnection, config: &DatabaseSettings) -> Self {
        let queries = QueryCounter::default();
        let counter = Arc::clone(&queries.0);
        let system = config.backend.system_name();
        db.set_metric_callback(move |statement| {
            counter.fetch_add(1, Ordering::Relaxed);
            if traces::exporting() {
                traces::database_statement(
                    system,
                    &statement.statement.sql,
                    statement.elapsed,
                    statement.failed,
                );
            }
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
            notices: RevocationNotices::of(config),
        }
    }

    /// Notices of revocations committed by any replica, if the database pushes them.
    pub fn revocation_notices(&self) -> Option<RevocationNotices> {
        self.notices.clone()
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
            let err = StoreError::from(err);
            self.writes.observe(&err);
            return DatabaseHealth::Unreachable(err);
        }
        let refusals = match self.writes.look() {
            Look::Known(health) => return health,
            Look::Probe(refusals) => refusals,
        };
        if !self.writes.room_on_disk() {
            return DatabaseHealth::RefusingWrites;
        }
        // Not observed: the probe's own refusal is no news to count.
        match health::probe_write(&self.db)
            .await
            .map_err(StoreError::from)
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
    /// then discards the connection (see `setup::open`). A refused write is noted here for
    /// [`Self::check`]: every store call's error passes this way.
    async fn detached<T, F>(&self, work: impl FnOnce(SqlStore) -> F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = StoreResult<T>> + Send + 'static,
    {
        let limit = self.call_limit;
        let writes = Arc::clone(&self.writes);
        let work = tokio::time::timeout(limit, work(self.clone()));
        // Observed on the task, so a refusal counts even when the caller is gone.
        let observed = async move {
            let result = work.await.unwrap_or_else(|_| Err(timed_out(limit)));
            if let Err(err) = &result {
                writes.observe(err);
            }
            result
        };
        // In the caller's span: its log lines and statements belong to the call.
        match tokio::spawn(observed.instrument(Span::current())).await {
            Ok(result) => result,
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
        self.detached(move |store| async move { Ok(select.one(&store.db).await?) })
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
        Ok(self.db.begin_with_options(options).await?)
    }

    /// Stores the audit event of the change `txn` made, and commits both.
    async fn commit_with(&self, txn: DatabaseTransaction, audit: &AuditRecord) -> StoreResult<()> {
        audit::insert_audit(&txn, audit).await?;
        Ok(txn.commit().await?)
    }
}

/// How long past the statement timeout a store call waits for the server's own verdict.
const CALL_MARGIN: Duration = Duration::from_secs(1);

fn timed_out(limit: Duration) -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!(
        "the database did not answer within {}",
        humantime::format_duration(limit)
    ))
}
