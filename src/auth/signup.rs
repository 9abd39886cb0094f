//! Register and Login: the use cases that start a session from an email and a password.

use std::time::Duration;

use uuid::Uuid;

use super::{
    AuthError, Authenticated, Authenticator, DisplayName, Email, Password, User,
    audit::{AuditKind, AuditOutcome, Caller},
    input::Violations,
    sha256_hex,
};
use secrecy::SecretString;

use crate::store::{Admission, NewUser, SessionStart, StoreError, UserRecord};

impl Authenticator {
    /// Creates a user with the default role (AUTHD_DEFAULT_ROLE) and starts its first
    /// session.
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
            &self.credentials.policy,
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
        let password_hash = self.credentials.hasher.hash_new(&password).await?;
        let now = self.clock.now();
        let user = NewUser {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            role: self.credentials.default_role.clone(),
            password_hash,
            active: true,
            email_verified: false,
            created_at: now,
        };
        let (refresh_token, session) = self.new_session(user.id, &caller, now)?;
        let (session_id, refresh_expires_at) = (session.id, session.expires_at);
        let audit = self.audit_entry(
            &caller,
            (AuditKind::Register, AuditOutcome::Success),
            (Some(user.id), Some(session_id)),
            now,
        );
        let user = match self.users.create_with_session(user, session, &audit).await {
            Err(StoreError::Conflict) => return Err(AuthError::EmailTaken),
            other => other?,
        };
        let refresh = (refresh_token, refresh_expires_at);
        self.authenticated(Some(&audit), user.into(), session_id, refresh, now)
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
        let login = |outcome| (AuditKind::Login, outcome);
        let user = self
            .checked_password(&caller, AuditKind::Login, &email, &password)
            .await?;
        let hasher = &self.credentials.hasher;
        // Only someone who knows the password learns that the account is deactivated.
        let disabled = login(AuditOutcome::AccountDisabled);
        if !user.active {
            self.audit(&caller, disabled, (Some(user.id), None)).await;
            return Err(AuthError::AccountDisabled);
        }
        let mut checked_hash = user.password_hash.clone();
        if hasher.needs_rehash(&user.password_hash)
            && let Some(upgraded) = self.upgrade_hash(&user, &password).await
        {
            checked_hash = upgraded;
        }
        // The hash took time: the session starts now.
        let now = self.clock.now();
        let (refresh_token, session) = self.new_session(user.id, &caller, now)?;
        let (session_id, refresh_expires_at) = (session.id, session.expires_at);
        let audit = self.audit_entry(
            &caller,
            login(AuditOutcome::Success),
            (Some(user.id), Some(session_id)),
            now,
        );
        match self.sessions.create(session, checked_hash, &audit).await? {
            SessionStart::Started => {}
            // Deactivated while the password was being checked: no session.
            SessionStart::UserInactive => {
                self.audit(&caller, disabled, (Some(user.id), None)).await;
                return Err(AuthError::AccountDisabled);
            }
            // Reset or changed meanwhile: the password given is no longer the password.
            SessionStart::PasswordChanged => {
                let outcome = login(AuditOutcome::InvalidCredentials);
                self.audit(&caller, outcome, (Some(user.id), None)).await;
                return Err(AuthError::InvalidCredentials);
            }
        }
        tracing::info!(user_id = %user.id, session_id = %session_id, "login succeeded");
        // As committed with the session.
        let mut user = User::from(user);
        user.last_login_at = Some(now);
        let refresh = (refresh_token, refresh_expires_at);
        self.authenticated(Some(&audit), user, session_id, refresh, now)
    }

    /// The account of `email` if `password` is its password: throttled per email first,
    /// whether or not an account exists (so a throttled answer costs no hash and reveals
    /// nothing), and an unknown email costs the same argon2 run as a wrong password. A
    /// failure is audited as `kind`; a success clears the email's failure count.
    pub(super) async fn checked_password(
        &self,
        caller: &Caller,
        kind: AuditKind,
        email: &Email,
        password: &Password,
    ) -> Result<UserRecord, AuthError> {
        let throttle_key = throttle_key(email);
        let now = self.clock.now();
        let now_ms = now.timestamp_millis();
        let admission = self
            .throttle
            .admit_login(&throttle_key, &self.credentials.throttle, now_ms)
            .await?;
        if let Admission::Throttled { until_ms } = admission {
            let wait = u64::try_from(until_ms.saturating_sub(now_ms))
                .unwrap_or(0)
                .max(1_000);
            self.audit(caller, (kind, AuditOutcome::Throttled), (None, None))
                .await;
            return Err(AuthError::LoginThrottled {
                retry_after: Duration::from_millis(wait),
            });
        }
        let user = self.users.find_by_email(email.as_str()).await?;
        let matches = self
            .credentials
            .hasher
            .verify(password, user.as_ref().map(|u| &u.password_hash))
            .await?;
        let user_id = user.as_ref().map(|u| u.id);
        let Some(user) = user.filter(|_| matches) else {
            let outcome = (kind, AuditOutcome::InvalidCredentials);
            self.audit(caller, outcome, (user_id, None)).await;
            return Err(AuthError::InvalidCredentials);
        };
        self.throttle
            .reset_login_failures(&throttle_key, self.clock.now())
            .await?;
        Ok(user)
    }

    /// Clears the login failures of `email` (its owner just proved they hold the
    /// mailbox). A failure costs only that, so it is logged, not returned.
    pub(super) async fn clear_login_failures(&self, email: &Email) {
        let cleared = self
            .throttle
            .reset_login_failures(&throttle_key(email), self.clock.now())
            .await;
        if let Err(err) = cleared {
            let err = anyhow::Error::from(err);
            tracing::warn!(error = %format!("{err:#}"), "login failures not cleared");
        }
    }

    /// Re-hashes a password stored with weaker parameters than configured; the new hash if
    /// it replaced the old one. A failure costs nothing but the upgrade, so it is logged,
    /// not returned.
    async fn upgrade_hash(&self, user: &UserRecord, password: &Password) -> Option<SecretString> {
        let result = async {
            let hash = self.credentials.hasher.hash(password).await?;
            let old = user.password_hash.clone();
            let now = self.clock.now();
            let swapped = (self.users)
                .update_password_hash(user.id, old, hash.clone(), now)
                .await?;
            Ok::<_, AuthError>(swapped.then_some(hash))
        }
        .await;
        match result {
            Ok(Some(hash)) => {
                tracing::info!(user_id = %user.id, "password hash upgraded");
                Some(hash)
            }
            // The password changed meanwhile; the login then fails.
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(user_id = %user.id, error = %err, "password hash upgrade failed");
                None
            }
        }
    }
}

/// The stored form of an email's throttle counter: a hash, so that arbitrary submitted
/// strings are never stored.
fn throttle_key(email: &Email) -> String {
    sha256_hex(email.as_str())
}
