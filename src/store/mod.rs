//! The user, session and signing-key store.
//!
//! The domain (`crate::auth`) talks only to the traits and record types defined here; the
//! one implementation, [`SqlStore`], maps them onto sea-orm and runs on SQLite, PostgreSQL
//! and MySQL/MariaDB alike. Every database error becomes a [`StoreError`] in one place
//! (`sql::errors`), which is where "the database is down", "it is full" and "that key is
//! taken" are told apart from bugs.
//!
//! A method that changes state and has an audit event to go with it takes the event and
//! stores it in the same transaction: the change and its record are kept or lost together.

mod entities;
mod sql;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{SecretBox, SecretString};
use uuid::Uuid;

pub use sql::{DatabaseHealth, QueryCounter, SqlStore, connect, migrate, migrate_then};

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

/// A stored user.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    /// PHC string; kept secret so it never appears in a Debug print.
    pub password_hash: SecretString,
    pub active: bool,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user to insert.
#[derive(Debug)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub password_hash: SecretString,
    pub created_at: DateTime<Utc>,
}

/// A stored session (one per login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 (hex) of the current refresh token.
    pub refresh_hash: String,
    /// How many times the refresh token was rotated.
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// When the current refresh token stops working unless rotated before.
    pub expires_at: DateTime<Utc>,
    /// When the refresh token was last rotated.
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A session to insert, with the hash of its first refresh token.
#[derive(Debug)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub refresh_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One refresh-token rotation, applied only if the session still holds `old_hash`.
#[derive(Debug)]
pub struct Rotation<'a> {
    pub session_id: Uuid,
    pub old_hash: &'a str,
    pub new_hash: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Why a session ended, as recorded in `sessions.revoked_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    RefreshReuse,
    Deactivated,
}

impl RevokeReason {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::RefreshReuse => "refresh_reuse",
            Self::Deactivated => "deactivated",
        }
    }
}

/// A stored signing key.
#[derive(Debug)]
pub struct KeyRecord {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER for Ed25519, the raw secret for HMAC.
    pub private_key: SecretBox<Vec<u8>>,
    /// Raw public key (Ed25519); `None` for HMAC.
    pub public_key: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

impl KeyRecord {
    /// The same key with its private part in another form (sealed or opened).
    pub fn with_private_key(&self, private_key: Vec<u8>) -> Self {
        Self {
            kid: self.kid.clone(),
            algorithm: self.algorithm.clone(),
            private_key: SecretBox::new(Box::new(private_key)),
            public_key: self.public_key.clone(),
            created_at: self.created_at,
        }
    }
}

/// Users.
#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Inserts a user; [`StoreError::Conflict`] if the email is taken.
    async fn create(&self, user: NewUser, audit: &AuditRecord) -> StoreResult<UserRecord>;
    /// Inserts a user and its first session in one transaction.
    async fn create_with_session(
        &self,
        user: NewUser,
        session: NewSession,
        audit: &AuditRecord,
    ) -> StoreResult<UserRecord>;
    async fn find_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn find_by_id(&self, id: Uuid) -> StoreResult<Option<UserRecord>>;
    /// Replaces a user's password hash.
    async fn update_password_hash(
        &self,
        id: Uuid,
        password_hash: SecretString,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Activates or deactivates a user. Deactivation revokes every live session of the
    /// user in the same transaction; the revoked session ids are returned. `None` if no
    /// such user.
    async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>>;
}

/// Sessions and their refresh tokens.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Starts a session only if its user is active at that moment, serialized with
    /// [`UserStore::set_active`]: a deactivation either comes first (false: nothing is
    /// stored) or finds the new session and ends it.
    async fn create(&self, session: NewSession, audit: &AuditRecord) -> StoreResult<bool>;
    async fn find(&self, id: Uuid) -> StoreResult<Option<SessionRecord>>;
    /// The session whose current refresh token has this hash.
    async fn find_by_refresh_hash(&self, hash: &str) -> StoreResult<Option<SessionRecord>>;
    /// The session a rotated-out refresh token belonged to.
    async fn find_spent(&self, hash: &str) -> StoreResult<Option<Uuid>>;
    /// Compare-and-swap in the database: replaces the refresh hash only if the session is
    /// live and still holds `old_hash`, and records `old_hash` as spent, in one
    /// transaction. Exactly one of several concurrent calls with the same `old_hash`
    /// returns true, on any number of replicas.
    /// The audit event is stored only with a rotation that happened.
    async fn rotate(&self, rotation: Rotation<'_>, audit: &AuditRecord) -> StoreResult<bool>;
    /// Revokes one live session; false if it was already revoked or does not exist.
    async fn revoke(
        &self,
        id: Uuid,
        reason: RevokeReason,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Revokes every live session of a user and returns their ids.
    async fn revoke_all_for_user(
        &self,
        user_id: Uuid,
        reason: RevokeReason,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Vec<Uuid>>;
    /// Sessions revoked at or after `since`, with when.
    async fn revoked_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(Uuid, DateTime<Utc>)>>;
}

/// When repeated login failures slow an email down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Consecutive failures allowed before the first wait.
    pub max_failures: i64,
    /// The first wait; each further failure adds as much again.
    pub base_window_ms: i64,
    /// The longest wait.
    pub max_window_ms: i64,
}

/// Whether a login attempt may check its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Refused until this Unix time in milliseconds.
    Throttled {
        until_ms: i64,
    },
}

/// Per-email login failure counters.
#[async_trait]
pub trait ThrottleStore: Send + Sync + std::fmt::Debug {
    /// Counts an attempt for `key` before its password is checked, in one atomic
    /// statement, and says whether it may go ahead. Counting first is what makes the
    /// limit race-free: however many attempts arrive at once, at most the allowed number
    /// are admitted.
    async fn admit_login(
        &self,
        key: &str,
        rule: &ThrottleRule,
        now_ms: i64,
    ) -> StoreResult<Admission>;
    /// Clears the counter after a successful login.
    async fn reset_login_failures(&self, key: &str) -> StoreResult<()>;
}

/// One security-relevant event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// The client's address, or `None` for the command line.
    pub peer: Option<String>,
}

/// The audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    async fn record(&self, event: &AuditRecord) -> StoreResult<()>;
}

/// Removing what can no longer matter, a batch at a time (each call deletes at most
/// `batch` rows and says how many it did), so a purge never holds long locks.
#[async_trait]
pub trait PurgeStore: Send + Sync + std::fmt::Debug {
    /// Spent refresh tokens of sessions that ended (revoked, or past their refresh expiry)
    /// before `ended_before`. A long session leaves thousands: they go in batches of their
    /// own before their sessions do.
    async fn purge_spent_tokens(&self, ended_before: DateTime<Utc>, batch: u64)
    -> StoreResult<u64>;
    /// Sessions that ended before `ended_before` (and any spent tokens left with them).
    async fn purge_sessions(&self, ended_before: DateTime<Utc>, batch: u64) -> StoreResult<u64>;
    /// Login failure counters untouched since `idle_since` and not blocking now.
    async fn purge_login_throttle(
        &self,
        idle_since: DateTime<Utc>,
        now_ms: i64,
        batch: u64,
    ) -> StoreResult<u64>;
    /// Audit events older than `before`.
    async fn purge_audit_events(&self, before: DateTime<Utc>, batch: u64) -> StoreResult<u64>;
}

/// Signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Keys of this algorithm that are not retired, oldest first.
    async fn live_keys(&self, algorithm: &str) -> StoreResult<Vec<KeyRecord>>;
    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()>;
    /// Stops a key from verifying anything.
    async fn retire_key(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()>;
}
