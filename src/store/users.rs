//! Users: accounts and their password hashes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::{AuditRecord, IssueLimit, NewCode, NewSession, StoreResult};

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
    /// When a session was last started by Register or Login.
    pub last_login_at: Option<DateTime<Utc>>,
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

/// A password change: the new hash, and the session that replaces all the others.
#[derive(Debug)]
pub struct PasswordChange {
    pub user_id: Uuid,
    /// The session that asked; the change is made only while it is live (a reset or
    /// another change that ended it meanwhile wins).
    pub caller_session: Uuid,
    pub password_hash: SecretString,
    pub session: NewSession,
    pub now: DateTime<Utc>,
}

/// An email change: the new address, unverified, and the code that will verify it.
#[derive(Debug)]
pub struct EmailChange {
    pub user_id: Uuid,
    /// The session that asked; the change is made only while it is live.
    pub caller_session: Uuid,
    pub email: String,
    pub now: DateTime<Utc>,
    /// Sent to the new address, unless the user was sent the limit of verification codes
    /// already; `None` when email delivery is off.
    pub verification: Option<(NewCode, IssueLimit)>,
}

/// What became of an [`EmailChange`].
#[derive(Debug)]
pub enum EmailChanged {
    /// The user as committed.
    Changed(UserRecord),
    /// The user was sent the limit of verification codes: nothing changed.
    LimitReached,
    /// The user is gone or deactivated, or the caller's session ended: nothing changed.
    SignedOut,
}

/// Users.
#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Inserts a user; [`StoreError::Conflict`] if the email is taken.
    async fn create(&self, user: NewUser, audit: &AuditRecord) -> StoreResult<UserRecord>;
    /// Inserts a user and its first session in one transaction (its `last_login_at` is the
    /// session's start).
    async fn create_with_session(
        &self,
        user: NewUser,
        session: NewSession,
        audit: &AuditRecord,
    ) -> StoreResult<UserRecord>;
    async fn find_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn find_by_id(&self, id: Uuid) -> StoreResult<Option<UserRecord>>;
    /// Replaces a user's password hash with an equivalent one (the same password, hashed
    /// with stronger parameters), only if it is still `old`: false if the password was
    /// changed or reset meanwhile, which must not be undone.
    async fn update_password_hash(
        &self,
        id: Uuid,
        old: SecretString,
        new: SecretString,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Changes a user's display name; `None` if no such user.
    async fn update_name(
        &self,
        id: Uuid,
        name: &str,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<UserRecord>>;
    /// Replaces a user's password, ends every live session of the user, spends all the
    /// user's one-time codes and starts `session` in their place, in one transaction; the
    /// ended sessions' ids are returned. `None` (and nothing changed) if the user is gone or
    /// deactivated, or the caller's session has ended.
    async fn change_password(
        &self,
        change: PasswordChange,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>>;
    /// Changes a user's email, marks it unverified, spends all the user's one-time codes
    /// and stores the new verification code, in one transaction; the user as committed.
    /// [`StoreError::Conflict`] if the email is taken.
    async fn change_email(
        &self,
        change: EmailChange,
        audit: &AuditRecord,
    ) -> StoreResult<EmailChanged>;
    /// Activates or deactivates a user. Deactivation revokes every live session of the
    /// user and spends their one-time codes in the same transaction; the revoked session ids are returned. `None` if no
    /// such user.
    async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>>;
}
