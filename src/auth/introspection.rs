//! ValidateToken and GetMe: what an access token says, and whom it belongs to.

use std::sync::Arc;

use uuid::Uuid;

use super::{AuthError, Authenticator, FieldViolation, Standing, User, Verdict, VerifiedToken};
use crate::sync;

/// Why ValidateToken calls a token inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InactiveReason {
    Expired,
    Revoked,
    Invalid,
}

/// The caller of an RPC that acts as its user: who, and in which live session.
#[derive(Debug)]
pub(super) struct SignedIn {
    pub user: User,
    pub session_id: Uuid,
}

/// ValidateToken's answer (RFC 7662): claims only for an active token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    Active(Arc<VerifiedToken>),
    Inactive(InactiveReason),
}

impl Authenticator {
    /// Introspects an access token in memory (RFC 7662): no database round-trip.
    pub fn validate(&self, token: &str) -> Result<Introspection, AuthError> {
        if token.is_empty() {
            return Err(AuthError::InvalidInput(vec![FieldViolation::new(
                "token",
                "token is required",
            )]));
        }
        let now = self.clock.now();
        // The read guard, not a clone of the Arc: two atomic operations fewer per call.
        let verdict = sync::read(&self.keyring).verify(token, now);
        Ok(match verdict {
            Verdict::Invalid => Introspection::Inactive(InactiveReason::Invalid),
            Verdict::Expired => Introspection::Inactive(InactiveReason::Expired),
            Verdict::Valid(verified) => {
                match (self.revocations).standing(verified.session_id, verified.user_id, now) {
                    Standing::NotRevoked => Introspection::Active(verified),
                    // Issued before its user's role or email changed: reported as now.
                    Standing::Changed(current) => {
                        if verified.email == current.email && verified.role == current.role {
                            Introspection::Active(verified)
                        } else {
                            let mut token = VerifiedToken::clone(&verified);
                            token.email.clone_from(&current.email);
                            token.role.clone_from(&current.role);
                            Introspection::Active(Arc::new(token))
                        }
                    }
                    Standing::Revoked => Introspection::Inactive(InactiveReason::Revoked),
                    Standing::Unknown => return Err(AuthError::RevocationStale),
                }
            }
        })
    }

    /// The caller's user, read fresh from the store.
    pub async fn me(&self, access_token: &str) -> Result<User, AuthError> {
        Ok(self.signed_in(access_token).await?.user)
    }

    /// The caller's user and session, both read fresh from the store: the store is the
    /// authority here (these calls read it anyway), so a revocation made on another replica
    /// counts even before the next sync.
    pub(super) async fn signed_in(&self, access_token: &str) -> Result<SignedIn, AuthError> {
        let verified = self.authenticate(access_token)?;
        let session = self.sessions.find(verified.session_id).await?;
        if session.is_none_or(|s| s.revoked_at.is_some() || s.user_id != verified.user_id) {
            return Err(AuthError::SessionRevoked);
        }
        let user = self
            .users
            .find_by_id(verified.user_id)
            .await?
            .filter(|user| user.active)
            .map(User::from)
            .ok_or(AuthError::SessionRevoked)?;
        Ok(SignedIn {
            user,
            session_id: verified.session_id,
        })
    }

    /// A bearer token that must be active, for RPCs that act as its user.
    pub(super) fn authenticate(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::AccessTokenMissing);
        }
        match self.validate(token)? {
            Introspection::Active(verified) => Ok(verified),
            Introspection::Inactive(InactiveReason::Expired) => Err(AuthError::AccessTokenExpired),
            Introspection::Inactive(InactiveReason::Revoked) => Err(AuthError::SessionRevoked),
            Introspection::Inactive(InactiveReason::Invalid) => Err(AuthError::AccessTokenInvalid),
        }
    }
}
