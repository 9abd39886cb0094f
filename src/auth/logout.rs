//! Logout: ends one session, or every session of its user.

use super::{
    AuthError, Authenticator,
    audit::{AuditKind, AuditOutcome, Caller},
    refresh_token::refresh_token_hash,
};
use crate::store::RevokeReason;

/// Which session(s) Logout ends.
#[derive(Debug)]
pub enum LogoutTarget {
    /// The session holding this refresh token.
    RefreshToken(String),
    /// The session of this bearer access token.
    AccessToken(String),
}

impl Authenticator {
    /// Ends the target's session, or with `all_sessions` every session of its user.
    pub async fn logout(
        &self,
        caller: Caller,
        target: LogoutTarget,
        all_sessions: bool,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let (session_id, user_id) = match target {
            LogoutTarget::RefreshToken(token) => {
                let hash = refresh_token_hash(&token).ok_or(AuthError::RefreshTokenInvalid)?;
                let session = match self.sessions.find_by_refresh_hash(&hash).await? {
                    Some(session) => session,
                    // A spent token still names its session, and whoever holds it wants
                    // that session over: end it rather than refuse.
                    None => {
                        let id = self
                            .sessions
                            .find_spent(&hash)
                            .await?
                            .ok_or(AuthError::RefreshTokenInvalid)?;
                        self.sessions
                            .find(id)
                            .await?
                            .ok_or(AuthError::RefreshTokenInvalid)?
                    }
                };
                (session.id, session.user_id)
            }
            LogoutTarget::AccessToken(token) => {
                let verified = self.authenticate(&token)?;
                (verified.session_id, verified.user_id)
            }
        };
        let outcome = if all_sessions {
            AuditOutcome::AllSessions
        } else {
            AuditOutcome::Success
        };
        let audit = self.audit_entry(
            &caller,
            (AuditKind::Logout, outcome),
            (Some(user_id), Some(session_id)),
            now,
        );
        let ended = if all_sessions {
            self.sessions
                .revoke_all_for_user(user_id, RevokeReason::Logout, now, &audit)
                .await?
        } else {
            self.sessions
                .revoke(session_id, RevokeReason::Logout, now, &audit)
                .await?;
            vec![session_id]
        };
        for id in &ended {
            self.revocations.revoke(*id, now);
        }
        self.auditor.log(&audit);
        Ok(())
    }
}
