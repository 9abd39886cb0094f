//! The AuthService use cases, independent of gRPC and of the database engine.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::{
    AuthError, DisplayName, Email, FieldViolation, Keyring, Password, PasswordHasher,
    PasswordPolicy, Revocations, Standing, Verdict, VerifiedToken,
    audit::{AuditEvent, AuditKind, Auditor, Caller},
    chrono_duration,
    input::Violations,
    refresh::{RefreshKey, new_refresh_token, refresh_token_hash},
    sha256_hex,
};
use crate::store::{
    Admission, AuditRecord, NewSession, NewUser, RevokeReason, Rotation, SessionRecord,
    SessionStore, StoreError, ThrottleRule, ThrottleStore, UserRecord, UserStore,
};

/// The role of self-registered accounts.
pub const DEFAULT_ROLE: &str = "user";

/// A session's tokens, as handed to the client.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
    /// Refresh-token lifetime in seconds.
    pub refresh_expires_in: i64,
}

/// A user and fresh tokens: what Register, Login and Refresh return.
#[derive(Debug)]
pub struct Authenticated {
    pub user: UserRecord,
    pub tokens: TokenPair,
}

/// Why ValidateToken calls a token inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InactiveReason {
    Expired,
    Revoked,
    Invalid,
}

/// ValidateToken's answer (RFC 7662): claims only for an active token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    Active(Arc<VerifiedToken>),
    Inactive(InactiveReason),
}

/// Which session(s) Logout ends.
#[derive(Debug)]
pub enum LogoutTarget {
    /// The session holding this refresh token.
    RefreshToken(String),
    /// The session of this bearer access token.
    AccessToken(String),
}

/// The use cases of `auth.v1.AuthService`.
#[derive(Debug)]
pub struct Authenticator {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    /// Swapped whole when the key set changes (rotation); read on every validation.
    keyring: RwLock<Arc<Keyring>>,
    revocations: Arc<Revocations>,
    refresh_ttl: Duration,
    session_max_age: Duration,
    throttle: Arc<dyn ThrottleStore>,
    throttle_rule: ThrottleRule,
    auditor: Auditor,
    refresh_key: RefreshKey,
    refresh_reuse_grace: Duration,
}

/// What the [`Authenticator`] is built from.
#[derive(Debug)]
pub struct AuthenticatorParts {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub hasher: PasswordHasher,
    pub policy: PasswordPolicy,
    pub keyring: Keyring,
    pub revocations: Arc<Revocations>,
    pub refresh_ttl: Duration,
    /// Absolute session lifetime, however often it is refreshed.
    pub session_max_age: Duration,
    pub throttle: Arc<dyn ThrottleStore>,
    pub throttle_rule: ThrottleRule,
    pub auditor: Auditor,
    pub refresh_key: RefreshKey,
    /// How long a just-rotated refresh token still gets its successor back.
    pub refresh_reuse_grace: Duration,
}

impl Authenticator {
    pub fn new(parts: AuthenticatorParts) -> Self {
        let AuthenticatorParts {
            users,
            sessions,
            hasher,
            policy,
            keyring,
            revocations,
            refresh_ttl,
            session_max_age,
            throttle,
            throttle_rule,
            auditor,
            refresh_key,
            refresh_reuse_grace,
        } = parts;
        Self {
            users,
            sessions,
            hasher,
            policy,
            keyring: RwLock::new(Arc::new(keyring)),
            revocations,
            refresh_ttl,
            session_max_age,
            throttle,
            throttle_rule,
            auditor,
            refresh_key,
            refresh_reuse_grace,
        }
    }

    /// The public keys for GetJwks.
    pub fn public_keys(&self) -> Vec<super::PublicJwk> {
        self.keyring().public_keys().to_vec()
    }

    /// Installs a reloaded key set (after a rotation or retirement).
    pub fn replace_keyring(&self, mut keyring: Keyring) {
        let mut current = self.keyring.write().unwrap_or_else(PoisonError::into_inner);
        keyring.keep_verified_of(&current);
        *current = Arc::new(keyring);
    }

    fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Creates a user with the default role and starts its first session.
    pub async fn register(
        &self,
        caller: Caller,
        email: &str,
        password: String,
        name: &str,
    ) -> Result<Authenticated, AuthError> {
        let mut violations = Violations::default();
        let password = violations.check(Password::new_password(
            password,
            &self.policy,
            &[email, name],
        ));
        let email = violations.check(Email::parse(email));
        let name = violations.check(DisplayName::parse(name));
        let ((email, name), password) = violations.finish(email.zip(name).zip(password))?;
        // Cheap pre-check so a taken email costs no hash; the unique index still decides
        // races between concurrent registrations.
        if self.users.find_by_email(email.as_str()).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let password_hash = self.hasher.hash_new(&password).await?;
        let now = Utc::now();
        let user = NewUser {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            role: DEFAULT_ROLE.to_owned(),
            password_hash,
            created_at: now,
        };
        let (refresh_token, session) = self.new_session(user.id, now)?;
        let (session_id, refresh_expires_at) = (session.id, session.expires_at);
        let audit = self.audit_entry(
            caller,
            AuditKind::Register,
            "success",
            (Some(user.id), Some(session_id)),
            now,
        );
        let user = match self.users.create_with_session(user, session, &audit).await {
            Err(StoreError::Conflict) => return Err(AuthError::EmailTaken),
            other => other?,
        };
        self.auditor.log(&audit);
        let tokens =
            self.token_pair(&user, session_id, (refresh_token, refresh_expires_at), now)?;
        Ok(Authenticated { user, tokens })
    }

    /// Checks the password and starts a new session. Unknown email and wrong password are
    /// the same error and cost the same argon2 run.
    pub async fn login(
        &self,
        caller: Caller,
        email: &str,
        password: String,
    ) -> Result<Authenticated, AuthError> {
        let mut violations = Violations::default();
        let email = violations.check(Email::parse(email));
        let password = violations.check(Password::submitted(password));
        let (email, password) = violations.finish(email.zip(password))?;
        // Throttling comes first and is keyed on the submitted email whether or not an
        // account exists, so a throttled answer costs no hash and reveals nothing.
        let throttle_key = throttle_key(&email);
        let now_ms = Utc::now().timestamp_millis();
        let admission = self
            .throttle
            .admit_login(&throttle_key, &self.throttle_rule, now_ms)
            .await?;
        if let Admission::Throttled { until_ms } = admission {
            let wait = u64::try_from(until_ms.saturating_sub(now_ms))
                .unwrap_or(0)
                .max(1_000);
            self.audit(caller, AuditKind::Login, "throttled", None, None)
                .await;
            return Err(AuthError::LoginThrottled {
                retry_after: Duration::from_millis(wait),
            });
        }
        let user = self.users.find_by_email(email.as_str()).await?;
        let matches = self
            .hasher
            .verify(&password, user.as_ref().map(|u| &u.password_hash))
            .await?;
        let user_id = user.as_ref().map(|u| u.id);
        let Some(user) = user.filter(|_| matches) else {
            self.audit(
                caller,
                AuditKind::Login,
                "invalid_credentials",
                user_id,
                None,
            )
            .await;
            return Err(AuthError::InvalidCredentials);
        };
        self.throttle.reset_login_failures(&throttle_key).await?;
        // Only someone who knows the password learns that the account is deactivated.
        if !user.active {
            self.audit(
                caller,
                AuditKind::Login,
                "account_disabled",
                Some(user.id),
                None,
            )
            .await;
            return Err(AuthError::AccountDisabled);
        }
        if self.hasher.needs_rehash(&user.password_hash) {
            self.upgrade_hash(user.id, &password).await;
        }
        let now = Utc::now();
        let (refresh_token, session) = self.new_session(user.id, now)?;
        let (session_id, refresh_expires_at) = (session.id, session.expires_at);
        let audit = self.audit_entry(
            caller,
            AuditKind::Login,
            "success",
            (Some(user.id), Some(session_id)),
            now,
        );
        // Deactivated while the password was being checked: no session.
        if !self.sessions.create(session, &audit).await? {
            self.audit(
                caller,
                AuditKind::Login,
                "account_disabled",
                Some(user.id),
                None,
            )
            .await;
            return Err(AuthError::AccountDisabled);
        }
        tracing::info!(user_id = %user.id, session_id = %session_id, "login succeeded");
        self.auditor.log(&audit);
        let tokens =
            self.token_pair(&user, session_id, (refresh_token, refresh_expires_at), now)?;
        Ok(Authenticated { user, tokens })
    }

    /// Re-hashes a password stored with weaker parameters than configured. A failure
    /// costs nothing but the upgrade, so it is logged, not returned.
    async fn upgrade_hash(&self, user_id: Uuid, password: &Password) {
        let result = async {
            let hash = self.hasher.hash(password).await?;
            self.users
                .update_password_hash(user_id, hash, Utc::now())
                .await?;
            Ok::<_, AuthError>(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(user_id = %user_id, "password hash upgraded"),
            Err(err) => {
                tracing::warn!(user_id = %user_id, error = %err, "password hash upgrade failed")
            }
        }
    }

    /// Rotates a refresh token: the presented one stops working and a new pair is issued.
    /// Presenting a token that was already rotated out is reuse: the session is revoked,
    /// unless it is the token rotated most recently and within the grace window, which
    /// gets the same successor again (see `refresh` module).
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
        let now = Utc::now();
        let Some(session) = self.sessions.find_by_refresh_hash(&old_hash).await? else {
            return self
                .refresh_rotated_token(caller, &old_hash, successor, now)
                .await;
        };
        let user = self.live_session_user(&session, now).await?;
        let expires_at = (now + chrono_duration(self.refresh_ttl)).min(self.session_end(&session));
        let audit = self.audit_entry(
            caller,
            AuditKind::Refresh,
            "success",
            (Some(user.id), Some(session.id)),
            now,
        );
        let rotated = self
            .sessions
            .rotate(
                Rotation {
                    session_id: session.id,
                    old_hash: &old_hash,
                    new_hash: &successor.1,
                    now,
                    expires_at,
                },
                &audit,
            )
            .await?;
        if !rotated {
            // A concurrent call rotated this token a moment ago. Within the grace window
            // it rotated to the very successor computed here, which is handed out again.
            let retried = self
                .retry_within_grace(session.id, &successor.1, now)
                .await?;
            let Some((session, user)) = retried else {
                tracing::info!(session_id = %session.id, "refresh lost a concurrent rotation");
                return Err(AuthError::RefreshTokenInvalid);
            };
            return self
                .refreshed_again(caller, user, &session, successor.0, now)
                .await;
        }
        self.auditor.log(&audit);
        // Answered from what was just committed: a read here could fail after the
        // rotation took effect, and turn a done rotation into an error.
        self.refreshed(user, session.id, (successor.0, expires_at), now)
    }

    /// A presented token that is no session's current one.
    async fn refresh_rotated_token(
        &self,
        caller: Caller,
        hash: &str,
        (successor, successor_hash): (SecretString, String),
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        let Some(session_id) = self.sessions.find_spent(hash).await? else {
            return Err(AuthError::RefreshTokenInvalid);
        };
        if let Some((session, user)) = self
            .retry_within_grace(session_id, &successor_hash, now)
            .await?
        {
            return self
                .refreshed_again(caller, user, &session, successor, now)
                .await;
        }
        let audit = self.audit_entry(
            caller,
            AuditKind::RefreshReuse,
            "session_revoked",
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
        session_id: Uuid,
        successor_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionRecord, UserRecord)>, AuthError> {
        // Zero turns the window off. (It must be checked on its own: a concurrent call
        // that started a moment before the winning rotation has `now < rotated_at`.)
        if self.refresh_reuse_grace.is_zero() {
            return Ok(None);
        }
        let Some(session) = self.sessions.find(session_id).await? else {
            return Ok(None);
        };
        let in_window = session
            .rotated_at
            .is_some_and(|at| now < at + chrono_duration(self.refresh_reuse_grace));
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
    ) -> Result<UserRecord, AuthError> {
        if session.revoked_at.is_some() {
            return Err(AuthError::SessionRevoked);
        }
        if session.expires_at <= now || self.session_end(session) <= now {
            return Err(AuthError::RefreshTokenExpired);
        }
        self.users
            .find_by_id(session.user_id)
            .await?
            .filter(|user| user.active)
            .ok_or(AuthError::SessionRevoked)
    }

    /// When a session ends however often it is refreshed.
    fn session_end(&self, session: &SessionRecord) -> DateTime<Utc> {
        session.created_at + chrono_duration(self.session_max_age)
    }

    /// A rotated session's answer: its new refresh token, and when that expires.
    fn refreshed(
        &self,
        user: UserRecord,
        session_id: Uuid,
        refresh: (SecretString, DateTime<Utc>),
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        let tokens = self.token_pair(&user, session_id, refresh, now)?;
        Ok(Authenticated { user, tokens })
    }

    /// The answer to a retry within the grace window: the rotation it repeats is stored
    /// already, so only the event is.
    async fn refreshed_again(
        &self,
        caller: Caller,
        user: UserRecord,
        session: &SessionRecord,
        refresh_token: SecretString,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        self.audit(
            caller,
            AuditKind::Refresh,
            "success",
            Some(user.id),
            Some(session.id),
        )
        .await;
        self.refreshed(user, session.id, (refresh_token, session.expires_at), now)
    }

    /// Ends one session, or every session of its user.
    pub async fn logout(
        &self,
        caller: Caller,
        target: LogoutTarget,
        all_sessions: bool,
    ) -> Result<(), AuthError> {
        let now = Utc::now();
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
            "all_sessions"
        } else {
            "success"
        };
        let audit = self.audit_entry(
            caller,
            AuditKind::Logout,
            outcome,
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

    /// The caller's user record, read fresh from the store.
    pub async fn me(&self, access_token: &str) -> Result<UserRecord, AuthError> {
        let verified = self.authenticate(access_token)?;
        // The store is the authority here (this call reads it anyway), so a revocation
        // made on another replica counts even before the next sync.
        let session = self.sessions.find(verified.session_id).await?;
        if session.is_none_or(|s| s.revoked_at.is_some()) {
            return Err(AuthError::SessionRevoked);
        }
        self.users
            .find_by_id(verified.user_id)
            .await?
            .filter(|user| user.active)
            .ok_or(AuthError::SessionRevoked)
    }

    /// Introspects an access token in memory (RFC 7662): no database round-trip.
    pub fn validate(&self, token: &str) -> Result<Introspection, AuthError> {
        if token.is_empty() {
            return Err(AuthError::InvalidInput(vec![FieldViolation::new(
                "token",
                "token is required",
            )]));
        }
        let now = Utc::now();
        // The read guard, not a clone of the Arc: two atomic operations fewer per call.
        let verdict = self
            .keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .verify(token, now);
        Ok(match verdict {
            Verdict::Invalid => Introspection::Inactive(InactiveReason::Invalid),
            Verdict::Expired => Introspection::Inactive(InactiveReason::Expired),
            Verdict::Valid(verified) => match self.revocations.standing(verified.session_id, now) {
                Standing::NotRevoked => Introspection::Active(verified),
                Standing::Revoked => Introspection::Inactive(InactiveReason::Revoked),
                Standing::Unknown => return Err(AuthError::RevocationStale),
            },
        })
    }

    /// An event to store with the change it describes.
    fn audit_entry(
        &self,
        caller: Caller,
        kind: AuditKind,
        outcome: &'static str,
        (user_id, session_id): (Option<Uuid>, Option<Uuid>),
        now: DateTime<Utc>,
    ) -> AuditRecord {
        let event = AuditEvent {
            kind,
            outcome,
            user_id,
            session_id,
        };
        self.auditor.entry(caller, event, now)
    }

    /// Stores an event that comes with no change of its own.
    async fn audit(
        &self,
        caller: Caller,
        kind: AuditKind,
        outcome: &'static str,
        user_id: Option<Uuid>,
        session_id: Option<Uuid>,
    ) {
        let event = AuditEvent {
            kind,
            outcome,
            user_id,
            session_id,
        };
        self.auditor.record(caller, event).await;
    }

    /// A bearer token that must be active, for RPCs that act as its user.
    fn authenticate(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
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

    fn new_session(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(SecretString, NewSession), AuthError> {
        let (token, hash) = new_refresh_token()?;
        let expires_at = now + chrono_duration(self.refresh_ttl.min(self.session_max_age));
        let session = NewSession {
            id: Uuid::now_v7(),
            user_id,
            refresh_hash: hash,
            created_at: now,
            expires_at,
        };
        Ok((token, session))
    }

    /// The pair handed to the client: a new access token and the session's refresh token
    /// with the moment it expires.
    fn token_pair(
        &self,
        user: &UserRecord,
        session_id: Uuid,
        (refresh_token, refresh_expires_at): (SecretString, DateTime<Utc>),
        now: DateTime<Utc>,
    ) -> Result<TokenPair, AuthError> {
        let keyring = self.keyring();
        let access_token = keyring.issue(user.id, session_id, &user.email, &user.role, now)?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: keyring.access_ttl_secs(),
            refresh_expires_in: (refresh_expires_at - now).num_seconds(),
        })
    }
}

/// Account administration for operators (the `authd user` commands).
#[derive(Debug)]
pub struct Accounts {
    users: Arc<dyn UserStore>,
    auditor: Auditor,
}

/// An account an operator creates.
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub password: String,
}

impl Accounts {
    pub fn new(users: Arc<dyn UserStore>, auditor: Auditor) -> Self {
        Self { users, auditor }
    }

    /// Creates an active user with any role; the password must meet `policy`.
    pub async fn create_user(
        &self,
        account: NewAccount<'_>,
        hasher: &PasswordHasher,
        policy: &PasswordPolicy,
    ) -> Result<UserRecord, AuthError> {
        let NewAccount {
            email,
            name,
            role,
            password,
        } = account;
        let role = role.trim();
        let mut violations = Violations::default();
        let password = violations.check(Password::new_password(password, policy, &[email, name]));
        let email = violations.check(Email::parse(email));
        let name = violations.check(DisplayName::parse(name));
        violations.require(is_valid_role(role), || {
            FieldViolation::new(
                "role",
                "role must be 1 to 64 lowercase letters, digits, '_' or '-'",
            )
        });
        let ((email, name), password) = violations.finish(email.zip(name).zip(password))?;
        let password_hash = hasher.hash_new(&password).await?;
        let now = Utc::now();
        let user = NewUser {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            role: role.to_owned(),
            password_hash,
            created_at: now,
        };
        let event = AuditEvent {
            kind: AuditKind::AccountActivity,
            outcome: "created",
            user_id: Some(user.id),
            session_id: None,
        };
        let audit = self.auditor.entry(Caller::default(), event, now);
        let user = match self.users.create(user, &audit).await {
            Err(StoreError::Conflict) => return Err(AuthError::EmailTaken),
            other => other?,
        };
        self.auditor.log(&audit);
        Ok(user)
    }

    /// Activates or deactivates a user; deactivation ends all of the user's sessions.
    /// Returns how many sessions were ended.
    pub async fn set_active(&self, email: &str, active: bool) -> Result<usize, AuthError> {
        let email = Email::parse(email).map_err(|v| AuthError::InvalidInput(vec![v]))?;
        let user = self
            .users
            .find_by_email(email.as_str())
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let event = AuditEvent {
            kind: AuditKind::AccountActivity,
            outcome: if active { "activated" } else { "deactivated" },
            user_id: Some(user.id),
            session_id: None,
        };
        let now = Utc::now();
        let audit = self.auditor.entry(Caller::default(), event, now);
        let ended = self
            .users
            .set_active(user.id, active, now, &audit)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        self.auditor.log(&audit);
        Ok(ended.len())
    }
}

/// The stored form of an email's throttle counter: a hash, so that arbitrary submitted
/// strings are never stored.
fn throttle_key(email: &Email) -> String {
    sha256_hex(email.as_str())
}

fn is_valid_role(role: &str) -> bool {
    (1..=64).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
