//! The one place database errors are classified: "that key is taken", "the database
//! cannot be reached", "it is out of space", "it refuses writes" are told apart here, on
//! each engine's own codes, and anything else is a bug.

use sea_orm::{
    DbErr, RuntimeErr, SqlErr,
    sqlx::{
        self, error::DatabaseError, mysql::MySqlDatabaseError, postgres::PgDatabaseError,
        sqlite::SqliteError,
    },
};

use crate::store::StoreError;

/// What an engine's error code says about the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Gone for now, or busy: a retry later may succeed.
    Unavailable,
    /// Out of disk or tablespace.
    Full,
    /// Refuses writes: read-only (a standby after a failover, a read-only file or mode),
    /// or its storage fails (I/O errors, which may also be a disk that filled up).
    WritesFailing,
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        map_db_err(err)
    }
}

fn map_db_err(err: DbErr) -> StoreError {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
        return StoreError::Conflict;
    }
    let class = match &err {
        DbErr::ConnectionAcquire(_) => Some(Class::Unavailable),
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e)) => classify_sqlx(e),
        DbErr::Conn(_) => Some(Class::Unavailable),
        _ => None,
    };
    match class {
        Some(Class::Unavailable) => StoreError::Unavailable(err.into()),
        Some(Class::Full) => StoreError::Full(err.into()),
        Some(Class::WritesFailing) => StoreError::WritesFailing(err.into()),
        None => StoreError::Other(err.into()),
    }
}

/// The driver's error inside `err`, if it came from the driver.
pub(super) fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
        _ => None,
    }
}

/// Whether `err` is SQLite's SQLITE_BUSY: the database is locked.
pub(super) fn is_sqlite_busy(err: &DbErr) -> bool {
    sqlite_code(err).is_some_and(|code| code & 0xff == 5)
}

/// Whether `db` is SQLite's SQLITE_CANTOPEN: the file cannot be created or opened.
pub(super) fn is_sqlite_cannot_open(db: &dyn DatabaseError) -> bool {
    db.try_downcast_ref::<SqliteError>().is_some()
        && db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 14)
}

fn sqlite_code(err: &DbErr) -> Option<i32> {
    let sqlx::Error::Database(db) = sqlx_error(err)? else {
        return None;
    };
    db.try_downcast_ref::<SqliteError>()?;
    db.code()?.parse::<i32>().ok()
}

fn classify_sqlx(err: &sqlx::Error) -> Option<Class> {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Some(Class::Unavailable),
        sqlx::Error::Database(db) => classify_database(db.as_ref()),
        _ => None,
    }
}

fn classify_database(err: &dyn DatabaseError) -> Option<Class> {
    if let Some(mysql) = err.try_downcast_ref::<MySqlDatabaseError>() {
        classify_mysql(mysql.number())
    } else if let Some(postgres) = err.try_downcast_ref::<PgDatabaseError>() {
        classify_postgres(postgres.code())
    } else if err.try_downcast_ref::<SqliteError>().is_some() {
        // The extended result code, which carries the primary one in its low byte.
        let code = err.code()?.parse::<i32>().ok()?;
        classify_sqlite(code & 0xff)
    } else {
        None
    }
}

/// <https://www.sqlite.org/rescode.html>
fn classify_sqlite(primary: i32) -> Option<Class> {
    match primary {
        // SQLITE_FULL: the disk (or the file system's quota) is full.
        13 => Some(Class::Full),
        // SQLITE_READONLY, SQLITE_IOERR (ENOSPC at fsync is one)
        8 | 10 => Some(Class::WritesFailing),
        // SQLITE_BUSY (the write lock stayed taken past the busy timeout), SQLITE_CANTOPEN
        5 | 14 => Some(Class::Unavailable),
        _ => None,
    }
}

/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
fn classify_postgres(sqlstate: &str) -> Option<Class> {
    match sqlstate {
        "53100" => Some(Class::Full),
        // read_only_sql_transaction; io_error (class 58: the server's own files)
        "25006" | "58030" => Some(Class::WritesFailing),
        // Connection exceptions; the server shutting down, restarting or terminating this
        // session (pg_terminate_backend); too many connections; out of memory; a
        // serialization failure or deadlock (the transaction was rolled back: retry it).
        s if s.starts_with("08") => Some(Class::Unavailable),
        // A statement cancelled by statement_timeout, a lock not granted in time.
        "57P01" | "57P02" | "57P03" | "53000" | "53200" | "53300" | "40001" | "40P01" | "57014"
        | "55P03" => Some(Class::Unavailable),
        _ => None,
    }
}

/// <https://mariadb.com/kb/en/mariadb-error-code-reference/>
fn classify_mysql(number: u16) -> Option<Class> {
    match number {
        // ER_DISK_FULL, ER_RECORD_FILE_FULL ("the table is full")
        1021 | 1114 => Some(Class::Full),
        // ER_OPTION_PREVENTS_STATEMENT (--read-only), ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION,
        // ER_READ_ONLY_MODE; EE_WRITE, ER_ERROR_ON_WRITE, ER_GET_ERRNO ("got error N from
        // storage engine", 28 being ENOSPC), ER_ERROR_DURING_COMMIT
        1290 | 1792 | 1836 | 3 | 1026 | 1030 | 1180 => Some(Class::WritesFailing),
        // ER_SERVER_SHUTDOWN, ER_CON_COUNT_ERROR, ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK,
        // ER_CONNECTION_KILLED, ER_QUERY_INTERRUPTED, MariaDB's ER_STATEMENT_TIMEOUT,
        // MySQL's ER_QUERY_TIMEOUT
        1053 | 1040 | 1205 | 1213 | 1927 | 1317 | 1969 | 3024 => Some(Class::Unavailable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_extended_codes_fall_in_their_primary_class() {
        // SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED, SQLITE_BUSY_SNAPSHOT
        assert_eq!(classify_sqlite(778 & 0xff), Some(Class::WritesFailing));
        assert_eq!(classify_sqlite(1032 & 0xff), Some(Class::WritesFailing));
        assert_eq!(classify_sqlite(517 & 0xff), Some(Class::Unavailable));
        assert_eq!(classify_sqlite(13), Some(Class::Full));
        // SQLITE_CONSTRAINT_CHECK and SQLITE_CORRUPT are bugs or damage, not outages.
        assert_eq!(classify_sqlite(275 & 0xff), None);
        assert_eq!(classify_sqlite(11), None);
    }

    #[test]
    fn postgres_sqlstates_are_classified_by_meaning() {
        assert_eq!(classify_postgres("53100"), Some(Class::Full));
        assert_eq!(classify_postgres("25006"), Some(Class::WritesFailing));
        assert_eq!(classify_postgres("08006"), Some(Class::Unavailable));
        assert_eq!(classify_postgres("57P01"), Some(Class::Unavailable));
        assert_eq!(classify_postgres("40001"), Some(Class::Unavailable));
        assert_eq!(classify_postgres("57014"), Some(Class::Unavailable));
        assert_eq!(classify_postgres("23503"), None);
        assert_eq!(classify_postgres("42P01"), None);
    }

    #[test]
    fn mysql_error_numbers_are_classified_by_meaning() {
        assert_eq!(classify_mysql(1114), Some(Class::Full));
        assert_eq!(classify_mysql(1290), Some(Class::WritesFailing));
        assert_eq!(classify_mysql(1180), Some(Class::WritesFailing));
        assert_eq!(classify_mysql(1927), Some(Class::Unavailable));
        assert_eq!(classify_mysql(1062), None);
    }
}
