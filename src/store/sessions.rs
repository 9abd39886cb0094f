//! Sessions (one per login), their refresh tokens and their revocation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::{AuditRecord, StoreResult};

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
    /// The client that started it.
    pub user_agent: Option<String>,
    pub peer: Option<String>,
}

/// A session to insert, with the hash of its first refresh token.
#[derive(Debug)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub refresh_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub peer: Option<String>,
}

/// What [`SessionStore::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStart {
    Started,
    /// The user is gone or deactivated.
    UserInactive,
    /// The password changed after the login checked it.
    PasswordChanged,
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
    /// Ended by its user from another session.
    RevokedByUser,
    /// Ended by a change of its user's password.
    PasswordChanged,
    /// Ended by a password reset.
    PasswordReset,
    /// Ended by an administrator.
    RevokedByAdmin,
}

impl RevokeReason {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::RefreshReuse => "refresh_reuse",
            Self::Deactivated => "deactivated",
            Self::RevokedByUser => "revoked_by_user",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::RevokedByAdmin => "revoked_by_admin",
        }
    }
}

/// Sessions and their refresh tokens.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// A user's sessions not revoked and not expired at `now`, newest first, at most
    /// `limit` of them.
    async fn live_for_user(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Starts a session only if its user is active at that moment and their password hash
    /// is still `checked_hash`, the one the login checked; serialized with every change of
    /// the user: a deactivation, password change or reset either comes first (nothing is
    /// stored) or finds the new session and ends it. The user's `last_login_at` becomes the
    /// session's start, in the same transaction.
    async fn create(
        &self,
        session: NewSession,
        checked_hash: SecretString,
        audit: &AuditRecord,
    ) -> StoreResult<SessionStart>;
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
