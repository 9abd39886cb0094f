//! ListSessions and RevokeSession: a user's view of their own sessions.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    AuthError, Authenticator, FieldViolation,
    audit::{AuditKind, AuditOutcome, Caller},
};
use crate::store::{RevokeReason, SessionRecord};

/// The most sessions ListSessions answers with (the newest): a bound on the reply, however
/// many logins a client scripted.
pub const SESSIONS_LISTED: u64 = 100;

/// One of the caller's sessions, as they may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The last login or refresh.
    pub last_used_at: DateTime<Utc>,
    /// The earlier of the refresh expiry and the absolute lifetime.
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub peer: Option<String>,
    /// The session of the token that asked.
    pub current: bool,
}

impl SessionView {
    fn of(session: SessionRecord, current: Uuid) -> Self {
        Self {
            current: session.id == current,
            id: session.id,
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            expires_at: session.expires_at,
            user_agent: session.user_agent,
            peer: session.peer,
        }
    }
}

impl Authenticator {
    /// The caller's live sessions, newest first: at most [`SESSIONS_LISTED`] of them.
    pub async fn list_sessions(&self, access_token: &str) -> Result<Vec<SessionView>, AuthError> {
        let me = self.signed_in(access_token).await?;
        let sessions = self
            .sessions
            .live_for_user(me.user.id, self.clock.now(), SESSIONS_LISTED)
            .await?;
        Ok(sessions
            .into_iter()
            .map(|session| SessionView::of(session, me.session_id))
            .collect())
    }

    /// Ends one of the caller's own sessions (their current one included). Another
    /// user's session and an unknown id are alike: NOT_FOUND. One of theirs that already
    /// ended is answered OK, so that a retry is safe.
    pub async fn revoke_session(
        &self,
        caller: Caller,
        access_token: &str,
        session_id: &str,
    ) -> Result<(), AuthError> {
        // The store is the authority for the caller's own session too, as for GetMe.
        let me = self.signed_in(access_token).await?.user;
        let session_id = Uuid::parse_str(session_id.trim()).map_err(|_| {
            AuthError::InvalidInput(vec![FieldViolation::new(
                "session_id",
                "session_id must be a session's UUID",
            )])
        })?;
        let owned = self.sessions.find(session_id).await?;
        if owned.is_none_or(|session| session.user_id != me.id) {
            return Err(AuthError::SessionNotFound);
        }
        let now = self.clock.now();
        let audit = self.audit_entry(
            &caller,
            (AuditKind::RevokeSession, AuditOutcome::Success),
            (Some(me.id), Some(session_id)),
            now,
        );
        self.sessions
            .revoke(session_id, RevokeReason::RevokedByUser, now, &audit)
            .await?;
        self.revocations.revoke(session_id, now);
        self.auditor.log(&audit);
        Ok(())
    }
}
