use crate::store::StoreError;

/// One invalid request field, in words a user understands. Never holds the rejected value
/// (it may be a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }

    /// The same violation, named after the request field it came from.
    pub(crate) fn for_field(self, field: &'static str) -> Self {
        Self { field, ..self }
    }
}

/// A setting below the least authd accepts; the edge that read it names the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected at least {floor}, got {got}")]
pub struct BelowFloor {
    pub floor: u64,
    pub got: u64,
}

impl BelowFloor {
    /// `got`, unless it is below `floor`.
    pub(crate) fn check<T: Into<u64> + Copy>(got: T, floor: T) -> Result<T, Self> {
        if got.into() < floor.into() {
            return Err(Self {
                floor: floor.into(),
                got: got.into(),
            });
        }
        Ok(got)
    }
}

/// Every way an authd operation can fail. The expected cases are variants; `grpc::status`
/// maps each to a status code, exhaustively.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request")]
    InvalidInput(Vec<FieldViolation>),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Unknown email or wrong password: deliberately one case.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("account is deactivated")]
    AccountDisabled,
    #[error("missing bearer access token")]
    AccessTokenMissing,
    #[error("invalid access token")]
    AccessTokenInvalid,
    #[error("access token expired")]
    AccessTokenExpired,
    #[error("session has ended")]
    SessionRevoked,
    /// Not one of the caller's sessions (or no session at all).
    #[error("session not found")]
    SessionNotFound,
    #[error("invalid refresh token")]
    RefreshTokenInvalid,
    #[error("refresh token expired")]
    RefreshTokenExpired,
    /// A rotated-out refresh token was presented again; its session is now revoked.
    #[error("refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// A ValidateToken caller without an accepted API key.
    #[error("ValidateToken requires a valid x-api-key")]
    CallerUnauthenticated,
    /// An AdminService call without an admin's access token or an accepted API key.
    #[error("AdminService requires an admin's bearer access token or a valid x-api-key")]
    AdminUnauthenticated,
    /// An AdminService call with a valid access token of a role that is not an admin role.
    #[error("this role may not call AdminService")]
    AdminRoleRequired,
    #[error("no such user")]
    UserNotFound,
    /// An administrator's action that needs an active user.
    #[error("the user is deactivated")]
    UserInactive,
    /// A password-reset or verification code that is malformed, unknown, used,
    /// superseded, expired or of the other kind: deliberately one case.
    #[error("invalid or expired code")]
    CodeInvalid,
    /// Too many codes of one kind sent to this account in the last hour.
    #[error("too many emails of this kind in the last hour, try again later")]
    CodeLimitReached { retry_after: std::time::Duration },
    #[error("email delivery is not configured")]
    MailNotConfigured,
    #[error("email is already verified")]
    EmailAlreadyVerified,
    /// Too many consecutive failed logins for this email; says nothing about whether the
    /// password was right or the account exists.
    #[error("too many failed login attempts, try again later")]
    LoginThrottled { retry_after: std::time::Duration },
    /// This client address made too many calls of this kind.
    #[error("too many requests from this address, slow down")]
    RateLimited { retry_after: std::time::Duration },
    /// The password-hashing queue is full.
    #[error("too many password checks in progress")]
    HashingBusy,
    /// Revocations could not be read for longer than the sync bound, so an active token
    /// cannot be vouched for.
    #[error("revocation state is stale")]
    RevocationStale,
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The database is out of space: nothing can be written until an operator frees some.
    #[error("database out of space")]
    StorageFull(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) | StoreError::WritesFailing(cause) => {
                Self::Unavailable(cause)
            }
            StoreError::Full(cause) => Self::StorageFull(cause),
            StoreError::Conflict => {
                Self::Unexpected(anyhow::anyhow!("unexpected unique-key conflict"))
            }
            StoreError::Other(cause) => Self::Unexpected(cause),
        }
    }
}
