//! One-time codes sent by email: password reset and email verification.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::{AuditRecord, StoreResult, UserRecord};

/// What a code is for, as recorded in `account_codes.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    PasswordReset,
    EmailVerification,
}

impl CodeKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }
}

/// A stored code. Spent once used, superseded by a newer code of its kind, or voided by a
/// change of its user's password or email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The stored form of the kind ([`CodeKind::as_str`]).
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub spent_at: Option<DateTime<Utc>>,
}

/// A code to store, as the hash of the code the user is sent.
#[derive(Debug, Clone)]
pub struct NewCode {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: CodeKind,
    pub code_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// At most `max` codes of a kind issued to one user since `since`.
#[derive(Debug, Clone, Copy)]
pub struct IssueLimit {
    pub max: u32,
    pub since: DateTime<Utc>,
}

/// What [`CodeStore::issue_code`] did.
#[derive(Debug, Clone)]
pub enum Issued {
    /// Stored, and the user's older codes of its kind spent. The user as it was then.
    Stored(UserRecord),
    /// The user has had the limit of codes of this kind: nothing stored.
    LimitReached,
    /// No such user, or not active: nothing stored.
    NoActiveUser,
}

/// A password reset by code.
#[derive(Debug)]
pub struct CodeReset {
    pub code_id: Uuid,
    pub user_id: Uuid,
    pub password_hash: SecretString,
    pub now: DateTime<Utc>,
}

/// One-time codes.
///
/// Every change here locks the user's row first, as every other change of a user does, so
/// that no two of them wait for each other's locks the other way round.
#[async_trait]
pub trait CodeStore: Send + Sync + std::fmt::Debug {
    /// The code with this hash, spent or not.
    async fn find_code(&self, code_hash: &str) -> StoreResult<Option<CodeRecord>>;
    /// Stores a code for its (active) user, spending the user's older codes of its kind,
    /// unless `limit` codes of the kind were already issued to the user; in one
    /// transaction with `audit`.
    async fn issue_code(
        &self,
        code: NewCode,
        limit: Option<IssueLimit>,
        audit: &AuditRecord,
    ) -> StoreResult<Issued>;
    /// Spends the reset code, sets the password, ends every live session of the user and
    /// spends all the user's codes, in one transaction; the ended sessions' ids are
    /// returned. `None`, and nothing changed, if the code is no longer unspent and
    /// unexpired at `now` (another call used it first) or the user was deactivated.
    async fn reset_password(
        &self,
        reset: CodeReset,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Vec<Uuid>>>;
    /// Spends the verification code and marks the user's email verified, in one
    /// transaction; the user as committed. `None`, and nothing changed, if the code is no
    /// longer unspent and unexpired at `now`.
    async fn verify_email(
        &self,
        code_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> StoreResult<Option<UserRecord>>;
}
