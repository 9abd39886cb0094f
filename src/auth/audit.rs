//! The audit trail: every security-relevant event goes to the `audit_events` table and to
//! a structured log line (target `authd::audit`), with who, what, when and from where.
//! Nothing recorded here can hold a secret: the event's fields are ids, fixed names and
//! an address.

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{AuditRecord, AuditStore};

/// Where a call came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The client's address; `None` for the command line.
    pub peer: Option<IpAddr>,
    /// The client's `user-agent`, at most [`USER_AGENT_MAX_CHARS`] characters.
    pub user_agent: Option<String>,
    /// Who acted, for administrative calls (see [`Actor`]).
    pub actor: Option<Actor>,
    /// The call's request id, which its log lines carry too.
    pub request_id: Option<String>,
}

/// Who made an administrative call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user whose role is an admin role, by their access token.
    User(Uuid),
    /// A back-office service, by its API key: the first 8 hex digits of the key's digest.
    ApiKey(String),
    /// An operator at the command line.
    CommandLine,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(id) => write!(f, "{id}"),
            Self::ApiKey(prefix) => write!(f, "api-key:{prefix}"),
            Self::CommandLine => f.write_str("cli"),
        }
    }
}

/// What is kept of a client's `user-agent`.
pub const USER_AGENT_MAX_CHARS: usize = 256;

impl Caller {
    pub fn new(peer: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent
            .map(str::trim)
            .filter(|agent| !agent.is_empty())
            .map(|agent| agent.chars().take(USER_AGENT_MAX_CHARS).collect());
        Self {
            peer,
            user_agent,
            actor: None,
            request_id: None,
        }
    }

    /// The same call, known by this request id.
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self
    }

    /// The same call, made by `actor`.
    pub fn acting_as(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The client's IP address, as recorded.
    pub fn ip(&self) -> Option<String> {
        self.peer.map(|addr| addr.to_string())
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Register,
    Login,
    Refresh,
    RefreshReuse,
    Logout,
    UpdateMe,
    RevokeSession,
    ChangePassword,
    ChangeEmail,
    RequestPasswordReset,
    ResetPassword,
    RequestEmailVerification,
    VerifyEmail,
    /// An email with a one-time code, delivered or given up.
    MailDelivery,
    /// An AdminService call refused for its credentials.
    AdminAccess,
    AdminCreateUser,
    AdminUpdateUser,
    AdminSetUserActive,
    AdminDeleteUser,
    AdminRevokeUserSessions,
    AdminIssueResetCode,
    AdminImportUser,
}

impl AuditKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Login => "login",
            Self::Refresh => "refresh",
            Self::RefreshReuse => "refresh_reuse",
            Self::Logout => "logout",
            Self::UpdateMe => "update_me",
            Self::RevokeSession => "revoke_session",
            Self::ChangePassword => "change_password",
            Self::ChangeEmail => "change_email",
            Self::RequestPasswordReset => "request_password_reset",
            Self::ResetPassword => "reset_password",
            Self::RequestEmailVerification => "request_email_verification",
            Self::VerifyEmail => "verify_email",
            Self::MailDelivery => "mail_delivery",
            Self::AdminAccess => "admin.access",
            Self::AdminCreateUser => "admin.create_user",
            Self::AdminUpdateUser => "admin.update_user",
            Self::AdminSetUserActive => "admin.set_user_active",
            Self::AdminDeleteUser => "admin.delete_user",
            Self::AdminRevokeUserSessions => "admin.revoke_user_sessions",
            Self::AdminIssueResetCode => "admin.issue_password_reset_code",
            Self::AdminImportUser => "admin.import_user",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    /// A logout that ended every session of its user.
    AllSessions,
    InvalidCredentials,
    Throttled,
    AccountDisabled,
    SessionRevoked,
    Activated,
    Deactivated,
    /// No active account has the address asked about.
    NoAccount,
    /// The account's per-hour limit of codes was reached: nothing sent.
    LimitReached,
    /// A malformed, unknown, used, superseded, expired or wrong-kind code.
    InvalidCode,
    /// The mail server accepted the message.
    Sent,
    /// Every delivery attempt failed, or the mail server refused the message for good.
    GaveUp,
    /// The delivery queue was full: not attempted.
    Dropped,
    /// An administrative call with no credential, or an invalid one.
    Unauthenticated,
    /// An administrative call with a valid token of a role that may not make it.
    PermissionDenied,
}

impl AuditOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::AllSessions => "all_sessions",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Throttled => "throttled",
            Self::AccountDisabled => "account_disabled",
            Self::SessionRevoked => "session_revoked",
            Self::Activated => "activated",
            Self::Deactivated => "deactivated",
            Self::NoAccount => "no_account",
            Self::LimitReached => "limit_reached",
            Self::InvalidCode => "invalid_code",
            Self::Sent => "sent",
            Self::GaveUp => "gave_up",
            Self::Dropped => "dropped",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
        }
    }
}

/// One event to record.
#[derive(Debug, Clone, Copy)]
pub struct AuditEvent {
    pub kind: AuditKind,
    pub outcome: AuditOutcome,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
}

/// Writes audit events.
#[derive(Debug, Clone)]
pub struct Auditor {
    store: Arc<dyn AuditStore>,
}

impl Auditor {
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        Self { store }
    }

    /// The stored form of an event. A use case that changes state hands it to the store
    /// with the change, so the two commit together, then calls [`Self::log`].
    pub fn entry(&self, caller: &Caller, event: AuditEvent, now: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            id: Uuid::now_v7(),
            occurred_at: now,
            kind: event.kind.as_str(),
            outcome: event.outcome.as_str(),
            user_id: event.user_id,
            session_id: event.session_id,
            peer: caller.ip(),
            actor: caller.actor.as_ref().map(ToString::to_string),
            request_id: caller.request_id.clone(),
        }
    }

    /// The structured log line of a stored event.
    pub fn log(&self, record: &AuditRecord) {
        tracing::info!(
            target: "authd::audit",
            kind = record.kind,
            outcome = record.outcome,
            user_id = record.user_id.map(tracing::field::display),
            session_id = record.session_id.map(tracing::field::display),
            peer = record.peer.as_deref(),
            actor = record.actor.as_deref(),
            request_id = record.request_id.as_deref(),
            "audit"
        );
    }

    /// Stores and logs an event that comes with no change of its own (a refused login, a
    /// retried refresh). A failed write is logged as an error but does not fail the call
    /// it describes: the store being briefly unwritable must not lock every user out.
    pub async fn record(&self, caller: &Caller, event: AuditEvent, now: DateTime<Utc>) {
        let record = self.entry(caller, event, now);
        self.log(&record);
        if let Err(err) = self.store.record(&record).await {
            let err = anyhow::Error::from(err);
            tracing::error!(error = %format!("{err:#}"), kind = record.kind, "audit event not stored");
        }
    }
}
