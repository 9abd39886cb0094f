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
    /// A PHC string or a bcrypt hash; empty for none (the user must reset it).
    pub password_hash: SecretString,
    pub active: bool,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
}

/// An administrator's change of a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub role: Option<String>,
    pub email_verified: Option<bool>,
}

/// Which users ListUsers wants.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserFilter {
    /// A prefix of the email or of the name's [`name_key`].
    pub prefix: Option<String>,
    pub role: Option<String>,
    pub active: Option<bool>,
}

/// What a user's tokens must now be reported with, once their role or email changed or they
/// were deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsChange {
    pub user_id: Uuid,
    pub changed_at: DateTime<Utc>,
    /// The user's current email and role, and when the user was last updated; `None` once
    /// deleted.
    pub now: Option<(String, String, DateTime<Utc>)>,
}

/// The search key of a display name: lowercased, then NFC (as emails are normalized), so
/// ListUsers matches a name prefix in any letter case by index.
pub fn name_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    name.to_lowercase().nfc().collect()
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
    /// Inserts imported users in one transaction, each on its own: one whose email is
    /// taken is skipped (false in its place), the others are kept, each with its event.
    async fn import(&self, users: Vec<(NewUser, AuditRecord)>) -> StoreResult<Vec<bool>>;
    /// Applies an administrator's change; a changed role is recorded as a
    /// [`ClaimsChange`]. `None` if no such user.
    async fn update(
        &self,
        id: Uuid,
        update: UserUpdate,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<UserRecord>>;
    /// Deletes a user with their sessions and codes (the audit trail stays), recording the
    /// deletion as a [`ClaimsChange`]; the ids of the sessions that were live are returned.
    /// `None` if no such user.
    async fn delete(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>>;
    /// Up to `limit` users matching `filter` with ids above `after`, in id (creation)
    /// order.
    async fn list(
        &self,
        filter: &UserFilter,
        after: Option<Uuid>,
        limit: u64,
    ) -> StoreResult<Vec<UserRecord>>;
    /// Users whose role or email changed, or who were deleted, at or after `since`.
    async fn changed_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<ClaimsChange>>;
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
