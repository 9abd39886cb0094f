//! The user, session, one-time code and signing-key store.
//!
//! The domain (`crate::auth`) talks only to the traits and record types defined here; the
//! one implementation, [`SqlStore`], maps them onto sea-orm and runs on SQLite, PostgreSQL
//! and MySQL/MariaDB alike. Every database error becomes a [`StoreError`] in one place
//! (`sql::errors`), which is where "the database is down", "it is full" and "that key is
//! taken" are told apart from bugs.
//!
//! A method that changes state and has an audit event to go with it takes the event and
//! stores it in the same transaction: the change and its record are kept or lost together.

mod audit;
mod codes;
mod entities;
mod keys;
mod purge;
mod sessions;
mod sql;
mod throttle;
mod users;

pub use audit::{AuditRecord, AuditStore, StoredAuditEvent};
pub use codes::{CodeKind, CodeRecord, CodeReset, CodeStore, IssueLimit, Issued, NewCode};
pub use keys::{KeyRecord, KeyStore};
pub use purge::PurgeStore;
pub use sessions::{NewSession, RevokeReason, Rotation, SessionRecord, SessionStart, SessionStore};
pub use sql::{
    Backend, CannotOpen, DatabaseHealth, DatabaseSettings, LISTENER_NAME, Notice, QueryCounter,
    RevocationNotices, SqlStore, SqliteSync, connect, migrate, migrate_then, migration_status,
};
pub use throttle::{Admission, ThrottleRule, ThrottleStore};
pub use users::{
    ClaimsChange, EmailChange, EmailChanged, NewUser, PasswordChange, UserFilter, UserRecord,
    UserStore, UserUpdate, name_key,
};

/// What can go wrong in the store, as the domain needs to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused, pool timeout, I/O error), or
    /// turned the call away for now (shutting down, deadlock): a retry may succeed.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The database is out of disk space: writes fail until some is freed.
    #[error("database out of space")]
    Full(#[source] anyhow::Error),
    /// The database refuses writes: read-only (a standby after a failover, a read-only
    /// file) or its storage failing (I/O errors).
    #[error("database refuses writes")]
    WritesFailing(#[source] anyhow::Error),
    /// A unique key is already taken.
    #[error("unique constraint violated")]
    Conflict,
    /// Anything else: a bug or a schema mismatch.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;
