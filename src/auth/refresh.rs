//! Refresh: a refresh token is rotated for a new pair. Presenting one that was already
//! rotated out is reuse and ends the session, unless it is the token rotated most recently
//! and within the grace window, which gets the same successor again (see `refresh_token`).

use chrono::{DateTime, Utc};

use super::{
    AuthError, Authenticated, Authenticator, FieldViolation, User,
    audit::{AuditKind, AuditOutcome, Caller},
    chrono_duration,
    refresh_token::{NewRefreshToken, refresh_token_hash},
};
use crate::store::{RevokeReason, Rotation, SessionRecord};

impl Authenticator {
    /// Rotates a refresh token: the presented one stops working and a new pair is issued.
    pub async fn refresh(
        &self,
        caller: Caller,
        refresh_token: &str,
    ) -> Result<Authenticated, AuthError> {
        if refresh_token.is_empty() {
            return Err(AuthError::InvalidInput(vec![FieldViolation::new(
                "refresh_token",
                "refresh_token is required",
            )]));
        }
        let old_hash = refresh_token_hash(refresh_token).ok_or(AuthError::RefreshTokenInvalid)?;
        let successor = self.refresh_key.successor(refresh_token)?;
        let now = self.clock.now();
        let Some(session) = self.sessions.find_by_refresh_hash(&old_hash).await? else {
            return self
                .refresh_rotated_token(&caller, &old_hash, successor, now)
                .await;
        };
        let user = self.live_session_user(&session, now).await?;
        let expires_at = self.session_policy.refresh_expiry(&session, now);
        let audit = self.audit_entry(
            &caller,
            (AuditKind::Refresh, AuditOutcome::Success),
            (Some(user.id), Some(session.id)),
            now,
        );
        let rotation = Rotation {
            session_id: session.id,
            old_hash: &old_hash,
            new_hash: &successor.hash,
            now,
            expires_at,
        };
        if !self.sessions.rotate(rotation, &audit).await? {
            // A concurrent call rotated this token a moment ago. Within the grace window
            // it rotated to the very successor computed here, which is handed out again.
            let retried = self
                .retry_within_grace(session.id, &successor.hash, now)
                .await?;
            let Some((session, user)) = retried else {
                tracing::info!(session_id = %session.id, "refresh lost a concurrent rotation");
                return Err(AuthError::RefreshTokenInvalid);
            };
            return self
                .refreshed_again(&caller, user, &session, successor, now)
                .await;
        }
        // Answered from what was just committed: a read here could fail after the
        // rotation took effect, and turn a done rotation into an error.
        let refresh = (successor.token, expires_at);
        self.authenticated(Some(&audit), user, session.id, refresh, now)
    }

    /// The answer to a retry within the grace window: the rotation it repeats is stored
    /// already, so only the event is.
    async fn refreshed_again(
        &self,
        caller: &Caller,
        user: User,
        session: &SessionRecord,
        successor: NewRefreshToken,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        let refresh = (AuditKind::Refresh, AuditOutcome::Success);
        self.audit(caller, refresh, (Some(user.id), Some(session.id)))
            .await;
        let tokens = (successor.token, session.expires_at);
        self.authenticated(None, user, session.id, tokens, now)
    }

    /// A presented token that is no session's current one.
    async fn refresh_rotated_token(
        &self,
        caller: &Caller,
        hash: &str,
        successor: NewRefreshToken,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        let Some(session_id) = self.sessions.find_spent(hash).await? else {
            return Err(AuthError::RefreshTokenInvalid);
        };
        if let Some((session, user)) = self
            .retry_within_grace(session_id, &successor.hash, now)
            .await?
        {
            return self
                .refreshed_again(caller, user, &session, successor, now)
                .await;
        }
        let audit = self.audit_entry(
            caller,
            (AuditKind::RefreshReuse, AuditOutcome::SessionRevoked),
            (None, Some(session_id)),
            now,
        );
        self.sessions
            .revoke(session_id, RevokeReason::RefreshReuse, now, &audit)
            .await?;
        self.revocations.revoke(session_id, now);
        tracing::warn!(session_id = %session_id, "refresh token reuse detected; session revoked");
        self.auditor.log(&audit);
        Err(AuthError::RefreshTokenReused)
    }

    /// The session and user if the token that was just rotated into `successor_hash` is
    /// presented again within the grace window, and the session is still live.
    async fn retry_within_grace(
        &self,
        session_id: uuid::Uuid,
        successor_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionRecord, User)>, AuthError> {
        let grace = self.session_policy.reuse_grace;
        // Zero turns the window off. (It must be checked on its own: a concurrent call
        // that started a moment before the winning rotation has `now < rotated_at`.)
        if grace.is_zero() {
            return Ok(None);
        }
        let Some(session) = self.sessions.find(session_id).await? else {
            return Ok(None);
        };
        let in_window = session
            .rotated_at
            .is_some_and(|at| now < at + chrono_duration(grace));
        if !in_window || session.refresh_hash != successor_hash {
            return Ok(None);
        }
        let user = self.live_session_user(&session, now).await?;
        Ok(Some((session, user)))
    }

    /// The session's user, if the session can still be refreshed.
    async fn live_session_user(
        &self,
        session: &SessionRecord,
        now: DateTime<Utc>,
    ) -> Result<User, AuthError> {
        if session.revoked_at.is_some() {
            return Err(AuthError::SessionRevoked);
        }
        if session.expires_at <= now || self.session_policy.end(session) <= now {
            return Err(AuthError::RefreshTokenExpired);
        }
        self.users
            .find_by_id(session.user_id)
            .await?
            .filter(|user| user.active)
            .map(User::from)
            .ok_or(AuthError::SessionRevoked)
    }
}
