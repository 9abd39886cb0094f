//! Domain errors to gRPC status codes, in one place and exhaustively (no `_` arm: a new
//! error variant must be decided here). Messages are fixed strings: they never carry a
//! password, a token, SQL, or a cause chain; internal causes are logged instead.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

use crate::auth::AuthError;

/// How long a client is told to wait when the hash queue is full.
const BUSY_RETRY_DELAY: Duration = Duration::from_secs(1);

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        let message = err.to_string();
        match err {
            AuthError::InvalidInput(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| v.description.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {summary}"),
                    details,
                )
            }
            AuthError::EmailTaken => Status::already_exists(message),
            AuthError::InvalidCredentials
            | AuthError::AccessTokenMissing
            | AuthError::AccessTokenInvalid
            | AuthError::AccessTokenExpired
            | AuthError::SessionRevoked
            | AuthError::RefreshTokenInvalid
            | AuthError::RefreshTokenExpired
            | AuthError::RefreshTokenReused
            | AuthError::CallerUnauthenticated
            | AuthError::AdminUnauthenticated
            | AuthError::CodeInvalid => Status::unauthenticated(message),
            AuthError::AccountDisabled | AuthError::AdminRoleRequired => {
                Status::permission_denied(message)
            }
            AuthError::UserNotFound | AuthError::SessionNotFound => Status::not_found(message),
            AuthError::MailNotConfigured
            | AuthError::EmailAlreadyVerified
            | AuthError::UserInactive => Status::failed_precondition(message),
            AuthError::LoginThrottled { retry_after }
            | AuthError::RateLimited { retry_after }
            | AuthError::CodeLimitReached { retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            AuthError::HashingBusy => Status::with_error_details(
                Code::ResourceExhausted,
                "server busy: too many password checks in progress, retry later",
                ErrorDetails::with_retry_info(Some(BUSY_RETRY_DELAY)),
            ),
            AuthError::RevocationStale => {
                tracing::warn!("token validation refused: revocation state is stale");
                Status::unavailable("cannot vouch for tokens right now, retry later")
            }
            AuthError::Unavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "database unavailable");
                Status::unavailable("database unavailable, retry later")
            }
            // The store has logged which database and why, once; the client learns only
            // that it is worth retrying later (RESOURCE_EXHAUSTED, as gRPC names a full
            // file system).
            AuthError::StorageFull(_) => {
                Status::resource_exhausted("the database is out of space, retry later")
            }
            AuthError::Unexpected(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// One malformed field: INVALID_ARGUMENT, as [`AuthError::InvalidInput`].
impl From<crate::auth::FieldViolation> for Status {
    fn from(violation: crate::auth::FieldViolation) -> Self {
        AuthError::InvalidInput(vec![violation]).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::FieldViolation as DomainViolation;

    #[test]
    fn invalid_input_carries_bad_request_field_violations() {
        let status = Status::from(AuthError::InvalidInput(vec![
            DomainViolation::new("email", "email is not a valid address"),
            DomainViolation::new("name", "name is required"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status
            .get_details_bad_request()
            .expect("BadRequest details");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "name"]);
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(AuthError::Unexpected(anyhow::anyhow!(
            "SELECT secret FROM users failed"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn busy_hash_pool_is_resource_exhausted_with_retry_info() {
        let status = Status::from(AuthError::HashingBusy);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .get_details_retry_info()
                .is_some_and(|r| r.retry_delay.is_some())
        );
    }
}
