//! Opening, migrating and keeping healthy the connection pool.

use std::{
    path::PathBuf,
    str::FromStr as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{
    ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection, DbBackend, DbErr,
    Statement, TransactionTrait as _,
    sqlx::{self, Row as _},
};
use secrecy::ExposeSecret as _;

use super::{
    errors::{is_sqlite_busy, is_sqlite_cannot_open, sqlx_error},
    settings::{Backend, DatabaseSettings, SqliteSync},
};

/// The database could not be opened (the edge names the setting that says where it is),
/// and why, said once: the driver's own error repeats its cause down its source chain.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the {database}: {cause}")]
pub struct CannotOpen {
    database: String,
    cause: String,
}

impl CannotOpen {
    fn new(config: &DatabaseSettings, err: &DbErr) -> Self {
        let cause = match sqlx_error(err) {
            Some(err) => why_not(config, err),
            // sea-orm's own messages can quote the URL, password and all.
            None => "it cannot be opened (the details are not shown: they may quote the \
                     URL and its password)"
                .to_owned(),
        };
        Self {
            database: database_name(config),
            cause,
        }
    }
}

/// What an operator can act on in the driver's error.
fn why_not(config: &DatabaseSettings, err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the server running, on that host and port?)".to_owned()
        }
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => format!(
            "no connection within {} (AUTHD_DB_ACQUIRE_TIMEOUT)",
            humantime::format_duration(config.acquire_timeout)
        ),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::Database(db) if is_sqlite_cannot_open(db.as_ref()) => {
            sqlite_file_problem(config).unwrap_or_else(|| db.message().to_owned())
        }
        // The server's message, without the driver's additions (PostgreSQL's source line).
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// Why SQLite cannot create or open its file: a missing directory, or one (or the file)
/// that is not writable.
fn sqlite_file_problem(config: &DatabaseSettings) -> Option<String> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(config.url.expose_secret()).ok()?;
    let file = options.get_filename();
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    if !directory.is_dir() {
        return Some(format!(
            "the directory of {} ({}) does not exist",
            file.display(),
            directory.display()
        ));
    }
    let written = if file.exists() { file } else { directory };
    match rustix::fs::access(written, rustix::fs::Access::WRITE_OK) {
        Err(err) => Some(format!("{} is not writable ({err})", written.display())),
        Ok(()) => None,
    }
}

/// PostgreSQL sends a NOTICE for every `CREATE ... IF NOT EXISTS` that finds its table,
/// which the driver logs at INFO: several lines at every start and command. Warnings and
/// errors still come.
fn quiet_notices(options: sqlx::postgres::PgConnectOptions) -> sqlx::postgres::PgConnectOptions {
    options.options([("client_min_messages", "warning")])
}

/// One connection straight to a database server, before the pool opens: the pool retries
/// a refused connection until its acquire timeout, then says only that it timed out.
async fn reach_server(config: &DatabaseSettings) -> Result<(), sqlx::Error> {
    use sqlx::{ConnectOptions as _, Connection as _};
    let url = config.url.expose_secret();
    let attempt = async {
        match config.backend {
            Backend::Postgres => {
                let options = quiet_notices(sqlx::postgres::PgConnectOptions::from_str(url)?);
                options.connect().await?.close().await
            }
            Backend::MySql => {
                let options = sqlx::mysql::MySqlConnectOptions::from_str(url)?;
                options.connect().await?.close().await
            }
            Backend::Sqlite => Ok(()),
        }
    };
    tokio::time::timeout(config.acquire_timeout, attempt)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// How long SQLite waits for the write lock before answering "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the connection pool. Statement logging is off: sqlx would log bound values,
/// and those include password hashes and refresh-token hashes.
pub async fn connect(config: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let default_pool = match config.backend {
        // SQLite has one writer; one connection means no "database is locked" at all.
        Backend::Sqlite => 1,
        Backend::Postgres | Backend::MySql => 10,
    };
    open(config, config.max_connections.unwrap_or(default_pool)).await
}

/// Every migration by name, and whether it is applied, without changing anything: a
/// SQLite file that does not exist yet is not made, nor is the migrations table.
pub async fn migration_status(config: &DatabaseSettings) -> anyhow::Result<Vec<(String, bool)>> {
    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|migration| migration.name().to_owned())
        .collect();
    if config.backend == Backend::Sqlite && sqlite_directory(config).is_none() {
        return Ok(names.into_iter().map(|name| (name, false)).collect());
    }
    let db = if config.backend == Backend::Sqlite {
        // Read-only, and no switch to WAL (which the pool makes, and which would stay).
        let mut options = ConnectOptions::new(config.url.expose_secret().to_owned());
        options
            .max_connections(1)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|opts| opts.read_only(true).create_if_missing(false));
        Database::connect(options)
            .await
            .map_err(|err| anyhow::Error::from(CannotOpen::new(config, &err)))?
    } else {
        open(config, 1).await?
    };
    let applied = applied_migrations(&db).await;
    db.close().await.context("closing the database pool")?;
    let applied = applied.context("reading the applied migrations")?;
    Ok(names
        .into_iter()
        .map(|name| {
            let done = applied.contains(&name);
            (name, done)
        })
        .collect())
}

async fn applied_migrations(
    db: &DatabaseConnection,
) -> Result<std::collections::HashSet<String>, DbErr> {
    let table = "seaql_migrations";
    if !migration::SchemaManager::new(db).has_table(table).await? {
        return Ok(Default::default());
    }
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT version FROM {table}"),
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String>("", "version"))
        .collect()
}

/// Applies the pending migrations to `db`, the pool opened from `config`.
pub async fn migrate(db: &DatabaseConnection, config: &DatabaseSettings) -> anyhow::Result<()> {
    migrate_then(db, config, async || Ok(())).await
}

/// Applies the pending migrations, then runs `then` (the first start's one-time set-up,
/// such as the first keys), all under one lock on the whole database: replicas started
/// together on an empty database would otherwise race to create the same tables and
/// each make keys of its own. A replica that waited for the lock finds the work done.
pub async fn migrate_then<T>(
    db: &DatabaseConnection,
    config: &DatabaseSettings,
    then: impl AsyncFnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Sqlite {
        let _lock = lock_sqlite_directory(config).await?;
        // SQLite's DDL is transactional: the pending migrations commit together or not at
        // all, so a process killed half-way never leaves a table without its migration
        // record, which the next start would trip over. (PostgreSQL runs each migration in
        // a transaction of its own; MySQL's DDL commits statement by statement, which the
        // migrations themselves allow for.)
        let txn = db.begin().await.context("running database migrations")?;
        Migrator::up(&txn, None)
            .await
            .context("running database migrations")?;
        txn.commit()
            .await
            .context("committing database migrations")?;
        return then().await;
    }
    // PostgreSQL's and MySQL's locks belong to a session: one connection, which the pool
    // must never replace, holds it while the migrations run on it and `then` on the pool.
    let session = open_session(config).await?;
    lock_server_database(&session, backend).await?;
    let done = match Migrator::up(&session, None).await {
        Ok(()) => then().await,
        Err(err) => Err(anyhow::Error::from(err).context("running database migrations")),
    };
    let released = unlock_server_database(&session, backend).await;
    let closed = session
        .close()
        .await
        .context("closing the migration connection");
    let done = done?;
    released?;
    closed?;
    Ok(done)
}

/// One connection for a session-scoped lock: never recycled for age or idleness, and
/// without the pool's checks, which would close it (and so drop the lock) on a doubt.
async fn open_session(config: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(config.url.expose_secret().to_owned());
    options
        .max_connections(1)
        .acquire_timeout(config.acquire_timeout)
        .connect_timeout(config.acquire_timeout)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(quiet_notices)
        .map_sqlx_postgres_pool_opts(|pool| pool.max_lifetime(None).idle_timeout(None))
        .map_sqlx_mysql_pool_opts(|pool| pool.max_lifetime(None).idle_timeout(None));
    Database::connect(options)
        .await
        .map_err(|err| CannotOpen::new(config, &err).into())
}

/// Releases the migration lock, and says so if it was lost on the way (the session's
/// connection dropped): the work done meanwhile ran unguarded.
async fn unlock_server_database(db: &DatabaseConnection, backend: DbBackend) -> anyhow::Result<()> {
    let unlock = match backend {
        DbBackend::Postgres => format!(
            "SELECT CAST(CAST(pg_advisory_unlock({POSTGRES_MIGRATION_LOCK}) AS INTEGER) AS BIGINT)"
        ),
        _ => "SELECT RELEASE_LOCK(CONCAT('authd-migrate-', MD5(DATABASE())))".to_owned(),
    };
    let held: Option<i64> = db
        .query_one_raw(Statement::from_string(backend, unlock))
        .await
        .context("releasing the migration lock")?
        .context("releasing the migration lock: no answer")?
        .try_get_by_index(0)
        .context("releasing the migration lock")?;
    anyhow::ensure!(
        held == Some(1),
        "the migration lock was lost while migrating (the database connection dropped); \
         another replica may have migrated at the same time: check the logs and restart"
    );
    Ok(())
}

/// Locks the directory of an on-disk SQLite database against other processes migrating
/// it. The directory rather than the file: closing a descriptor of the database file
/// would drop the POSIX locks SQLite holds on it in this process. An in-memory database
/// belongs to one process and needs none.
async fn lock_sqlite_directory(config: &DatabaseSettings) -> anyhow::Result<Option<std::fs::File>> {
    let Some(directory) = sqlite_directory(config) else {
        return Ok(None);
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

/// The directory of an on-disk SQLite database; `None` for other databases, and for a
/// SQLite database in memory or not made yet.
pub(super) fn sqlite_directory(config: &DatabaseSettings) -> Option<PathBuf> {
    if config.backend != Backend::Sqlite {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(config.url.expose_secret()).ok()?;
    let path = options.get_filename();
    if !path.is_file() {
        return None;
    }
    Some(match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    })
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

/// Opens a pool that hands a connection out only if no transaction is left open on it:
/// the one guard for every transaction authd runs (the store's, the migrations', the
/// command line's), so it sits in the pool rather than at each call site.
///
/// A transaction dropped without a commit is rolled back before its connection returns to
/// the pool. If that rollback fails too, the connection still counts itself inside a
/// transaction, and SQLite shows why that must never be reused: after a COMMIT that fails
/// with SQLITE_FULL or SQLITE_IOERR, SQLite may already have rolled the transaction back,
/// so the ROLLBACK fails ("no transaction is active") and the driver keeps its depth at
/// one. Its next BEGIN becomes a SAVEPOINT, which can leave a real transaction open that
/// every later "commit" only releases a savepoint inside: calls answered OK whose writes
/// never reach the file.
///
/// On SQLite the driver's count is exact: one worker thread runs BEGIN, COMMIT and
/// ROLLBACK in order, and rolls back a BEGIN whose caller went away. PostgreSQL's and
/// MySQL's drivers count a BEGIN only once its answer arrives, so a call cut off in
/// between leaves the server inside a transaction the driver does not count; the store
/// runs its calls to the end (`SqlStore::detached`), and the pool asks the server too.
async fn open(
    config: &DatabaseSettings,
    max_connections: u32,
) -> anyhow::Result<DatabaseConnection> {
    let url = config.url.expose_secret();
    let synchronous = match config.sqlite_sync {
        SqliteSync::EveryCommit => sqlx::sqlite::SqliteSynchronous::Full,
        SqliteSync::AtCheckpoints => sqlx::sqlite::SqliteSynchronous::Normal,
    };
    let statement_timeout = config.statement_timeout;
    let statement_timeout_ms = statement_timeout.as_millis();
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .acquire_timeout(config.acquire_timeout)
        // No idle or lifetime reaper: sqlx 0.9.0's can read the idle count while a release
        // has queued a connection but not yet counted it (it wraps below zero) and then
        // loop without yielding, holding a runtime worker and shutdown for ever. Broken
        // connections are found before use instead (below).
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_timeout(config.acquire_timeout)
        .sqlx_logging(false)
        .record_stmt_in_spans(false)
        .map_sqlx_sqlite_opts(move |opts| {
            opts.create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
        })
        // The server gives up on a statement past the timeout too, releasing its locks.
        // (The session pool that migrates does not: a migration may take longer.)
        .map_sqlx_postgres_opts(move |opts| {
            quiet_notices(opts).options([("statement_timeout", statement_timeout_ms.to_string())])
        })
        // MySQL has no statement_timeout: lock waits, where a statement spends its time,
        // are bounded instead, and MariaDB bounds whole statements too.
        .map_sqlx_mysql_pool_opts(move |pool| {
            pool.after_connect(move |conn, _| {
                Box::pin(async move { limit_mysql_session(conn, statement_timeout).await })
            })
        })
        .map_sqlx_sqlite_before_acquire(|conn, _| {
            Box::pin(async { Ok(reusable(outside_transaction(conn))) })
        })
        .map_sqlx_postgres_before_acquire(|conn, _| {
            Box::pin(async {
                // Doubles as the liveness check the pool would otherwise make. The two
                // times are equal only in a statement's own implicit transaction; it must
                // go as one simple-protocol message (raw_sql), since with the extended
                // protocol each message restarts the statement's clock.
                let outside = outside_transaction(conn)
                    && sqlx::raw_sql("SELECT statement_timestamp() = transaction_timestamp()")
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get::<bool, _>(0)?;
                Ok(reusable(outside))
            })
        })
        .map_sqlx_mysql_before_acquire(|conn, _| {
            Box::pin(async {
                if !reusable(outside_transaction(conn)) {
                    return Ok(false);
                }
                // Ends a transaction the driver does not count, and is the liveness check.
                sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
                Ok(true)
            })
        });
    if config.backend != Backend::Sqlite {
        // The checks above reach the server: the pool's own ping would be a second trip.
        options.test_before_acquire(false);
    }
    reach_server(config).await.map_err(|err| CannotOpen {
        database: database_name(config),
        cause: why_not(config, &err),
    })?;
    // The first connection to a new SQLite file switches it to WAL, a change SQLite
    // refuses at once (SQLITE_BUSY, without waiting) while another pool or process opens
    // the same new file: tried again until the busy timeout.
    let started = Instant::now();
    loop {
        match Database::connect(options.clone()).await {
            Err(err)
                if config.backend == Backend::Sqlite
                    && is_sqlite_busy(&err)
                    && started.elapsed() < SQLITE_BUSY_TIMEOUT =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            opened => {
                return opened.map_err(|err| CannotOpen::new(config, &err).into());
            }
        }
    }
}

/// Sets the server-side limits of a new MySQL connection: a lock wait (whole seconds, at
/// least one) and, on MariaDB, any statement, gives up at `timeout`, before the store's own
/// limit stops waiting for the answer.
async fn limit_mysql_session(
    conn: &mut sqlx::MySqlConnection,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    let version: String = sqlx::raw_sql("SELECT VERSION()")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let lock_wait = timeout.as_secs_f64().ceil().max(1.0);
    let mut limits = format!("SET SESSION innodb_lock_wait_timeout = {lock_wait}");
    if version.contains("MariaDB") {
        let seconds = timeout.as_secs_f64();
        limits.push_str(&format!(", max_statement_time = {seconds}"));
    }
    // Only numbers formatted here.
    sqlx::raw_sql(sqlx::AssertSqlSafe(limits))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whether the driver counts no transaction open on `conn`.
fn outside_transaction<C: sqlx::Connection>(conn: &mut C) -> bool {
    !conn.is_in_transaction()
}

/// The pool's verdict on a connection: reuse it, or close it (which rolls back whatever it
/// holds) and open a fresh one.
fn reusable(outside_transaction: bool) -> bool {
    if !outside_transaction {
        tracing::warn!("discarding a database connection left inside a transaction");
    }
    outside_transaction
}

/// The database a URL names, for log lines: the SQLite file, or the server and database
/// name, never the user or password.
pub(super) fn database_name(config: &DatabaseSettings) -> String {
    let url = config.url.expose_secret();
    let named = match config.backend {
        Backend::Sqlite => sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map(|o| format!("SQLite database {}", o.get_filename().display())),
        Backend::MySql => sqlx::mysql::MySqlConnectOptions::from_str(url).map(|o| {
            let name = o.get_database().unwrap_or_default();
            format!("MySQL database {name} on {}:{}", o.get_host(), o.get_port())
        }),
        Backend::Postgres => sqlx::postgres::PgConnectOptions::from_str(url).map(|o| {
            let name = o.get_database().unwrap_or_default();
            format!(
                "PostgreSQL database {name} on {}:{}",
                o.get_host(),
                o.get_port()
            )
        }),
    };
    named.unwrap_or_else(|_| format!("{} database", config.backend()))
}
