//! Account administration for operators (the `authd user` commands).

use std::sync::Arc;

use uuid::Uuid;

use super::{
    AuthError, Clock, DisplayName, Email, FieldViolation, Password, PasswordHasher, PasswordPolicy,
    User,
    audit::{AuditEvent, AuditKind, AuditOutcome, Auditor, Caller},
    input::Violations,
};
use crate::store::{AuditStore, NewUser, StoreError, UserStore};

/// The operator's account commands.
#[derive(Debug)]
pub struct Accounts {
    users: Arc<dyn UserStore>,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
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
    pub fn new(
        users: Arc<dyn UserStore>,
        audit: Arc<dyn AuditStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            auditor: Auditor::new(audit),
            clock,
        }
    }

    /// Creates an active user with any role; the password must meet `policy`.
    pub async fn create_user(
        &self,
        account: NewAccount<'_>,
        hasher: &PasswordHasher,
        policy: &PasswordPolicy,
    ) -> Result<User, AuthError> {
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
        let now = self.clock.now();
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
            outcome: AuditOutcome::Created,
            user_id: Some(user.id),
            session_id: None,
        };
        let audit = self.auditor.entry(&Caller::default(), event, now);
        let user = match self.users.create(user, &audit).await {
            Err(StoreError::Conflict) => return Err(AuthError::EmailTaken),
            other => other?,
        };
        self.auditor.log(&audit);
        Ok(user.into())
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
            outcome: if active {
                AuditOutcome::Activated
            } else {
                AuditOutcome::Deactivated
            },
            user_id: Some(user.id),
            session_id: None,
        };
        let now = self.clock.now();
        let audit = self.auditor.entry(&Caller::default(), event, now);
        let ended = self
            .users
            .set_active(user.id, active, now, &audit)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        self.auditor.log(&audit);
        Ok(ended.len())
    }
}

fn is_valid_role(role: &str) -> bool {
    (1..=64).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
