//! Account administration: the use cases of `auth.v1.AdminService` and of the `authd user`
//! commands. Every change is audited with its actor (the [`Caller`]'s), in the
//! transaction that makes it.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::{
    AuthError, Clock, CurrentClaims, DisplayName, Email, FieldViolation, Password, PasswordHasher,
    PasswordPolicy, Revocations, Roles, User,
    audit::{AuditEvent, AuditKind, AuditOutcome, Auditor, Caller},
    codes::new_code,
    hasher::check_importable_hash,
    input::Violations,
};
use crate::store::{
    AuditStore, CodeKind, CodeStore, Issued, NewUser, RevokeReason, SessionStore, StoreError,
    StoredAuditEvent, UserFilter, UserRecord, UserStore, UserUpdate,
};

/// Most users one import may carry.
pub const IMPORT_MAX_USERS: usize = 1000;

/// The stores administration works on.
#[derive(Debug, Clone)]
pub struct AccountStores {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub codes: Arc<dyn CodeStore>,
    pub audit: Arc<dyn AuditStore>,
}

/// The rules administration applies: passwords, roles, reset codes.
#[derive(Debug, Clone)]
pub struct AccountRules {
    pub hasher: PasswordHasher,
    pub policy: PasswordPolicy,
    pub roles: Roles,
    /// How long an issued password-reset code lives.
    pub reset_ttl: Duration,
}

/// Account administration.
#[derive(Debug)]
pub struct Accounts {
    stores: AccountStores,
    rules: AccountRules,
    auditor: Auditor,
    /// Told of every revocation and role change made here, so this replica's
    /// ValidateToken knows at once.
    revocations: Arc<Revocations>,
    clock: Arc<dyn Clock>,
}

/// A user an administrator creates.
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub name: &'a str,
    /// Empty: the default role.
    pub role: &'a str,
    /// Empty: no password; the user must reset it before logging in.
    pub password: SecretString,
    pub email_verified: bool,
}

/// A user to import with a password hash from another system.
#[derive(Debug, Clone)]
pub struct ImportedAccount {
    pub email: String,
    pub name: String,
    /// Empty: the default role.
    pub role: String,
    /// bcrypt or an argon2 PHC string; empty: no password.
    pub password_hash: SecretString,
    pub email_verified: bool,
    pub active: bool,
}

/// How a user is named in an administrator's request.
#[derive(Debug, Clone, Copy)]
pub enum UserRef<'a> {
    Id(Uuid),
    Email(&'a str),
}

/// An administrator's change of a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct AccountChange<'a> {
    pub name: Option<&'a str>,
    pub role: Option<&'a str>,
    pub email_verified: Option<bool>,
}

/// Which users to list: `query` is a case-insensitive prefix of the email or the name.
#[derive(Debug, Default)]
pub struct UserQuery<'a> {
    pub query: &'a str,
    pub role: &'a str,
    pub active: Option<bool>,
}

impl Accounts {
    pub fn new(
        stores: AccountStores,
        rules: AccountRules,
        revocations: Arc<Revocations>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            auditor: Auditor::new(Arc::clone(&stores.audit)),
            stores,
            rules,
            revocations,
            clock,
        }
    }

    /// Creates an active user with any configured role. A password must meet the policy;
    /// without one the user must reset it before logging in.
    pub async fn create_user(
        &self,
        caller: &Caller,
        account: NewAccount<'_>,
    ) -> Result<User, AuthError> {
        let NewAccount {
            email,
            name,
            role,
            password,
            email_verified,
        } = account;
        let mut violations = Violations::default();
        // Empty: no password (checked as present, or as absent and so fine).
        let password = match password.expose_secret().is_empty() {
            true => Some(None),
            false => {
                let password = password.expose_secret().to_owned();
                let checked = Password::new_password(password, &self.rules.policy, &[email, name]);
                violations.check(checked).map(Some)
            }
        };
        let email = violations.check(Email::parse(email));
        let name = violations.check(DisplayName::parse(name));
        let role = violations.check(self.rules.roles.resolve("role", role));
        let (((email, name), role), password) =
            violations.finish(email.zip(name).zip(role).zip(password))?;
        let password_hash = match password {
            Some(password) => self.rules.hasher.hash_new(&password).await?,
            None => SecretString::from(String::new()),
        };
        let now = self.clock.now();
        let user = NewUser {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            role,
            password_hash,
            active: true,
            email_verified,
            created_at: now,
        };
        let audit = self.entry(caller, AuditKind::AdminCreateUser, Some(user.id), now);
        let user = match self.stores.users.create(user, &audit).await {
            Err(StoreError::Conflict) => return Err(AuthError::EmailTaken),
            other => other?,
        };
        self.auditor.log(&audit);
        Ok(user.into())
    }

    /// A user by id or by email.
    pub async fn get_user(&self, user: UserRef<'_>) -> Result<User, AuthError> {
        Ok(self.find(user).await?.into())
    }

    /// Up to `limit` users matching `query` after `after`, in creation order, and the last
    /// one's id when more may follow.
    pub async fn list_users(
        &self,
        query: &UserQuery<'_>,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<(Vec<User>, Option<Uuid>), AuthError> {
        let filter = user_filter(query);
        // One more than asked: whether another page exists, without a count.
        let mut users = self.stores.users.list(&filter, after, limit + 1).await?;
        let more = users.len() as u64 > limit;
        users.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = more.then(|| users.last().map(|user| user.id)).flatten();
        Ok((users.into_iter().map(User::from).collect(), next))
    }

    /// Changes a user's name, role or verified flag. A new role reaches ValidateToken for
    /// the user's existing tokens (at once here, within the revocation sync elsewhere); no
    /// session ends.
    pub async fn update_user(
        &self,
        caller: &Caller,
        user: UserRef<'_>,
        change: AccountChange<'_>,
    ) -> Result<User, AuthError> {
        let mut violations = Violations::default();
        let name = change
            .name
            .map(|name| violations.check(DisplayName::parse(name)));
        let role = change
            .role
            .map(|role| violations.check(self.rules.roles.check("role", role)));
        violations.finish(Some(()))?;
        let id = self.find(user).await?.id;
        let update = UserUpdate {
            name: name.flatten().map(|name| name.as_str().to_owned()),
            role: role.flatten(),
            email_verified: change.email_verified,
        };
        let now = self.clock.now();
        let audit = self.entry(caller, AuditKind::AdminUpdateUser, Some(id), now);
        let user = (self.stores.users)
            .update(id, update, now, &audit)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        self.auditor.log(&audit);
        self.revocations
            .user_changed(user.id, Some(CurrentClaims::of(&user)), now);
        Ok(user.into())
    }

    /// Activates or deactivates a user; deactivation ends every session and voids the
    /// user's codes. The user as now, and how many sessions ended.
    pub async fn set_active(
        &self,
        caller: &Caller,
        user: UserRef<'_>,
        active: bool,
    ) -> Result<(User, usize), AuthError> {
        let id = self.find(user).await?.id;
        let now = self.clock.now();
        let outcome = if active {
            AuditOutcome::Activated
        } else {
            AuditOutcome::Deactivated
        };
        let event = AuditEvent {
            kind: AuditKind::AdminSetUserActive,
            outcome,
            user_id: Some(id),
            session_id: None,
        };
        let audit = self.auditor.entry(caller, event, now);
        let ended = (self.stores.users)
            .set_active(id, active, now, &audit)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        for session in &ended {
            self.revocations.revoke(*session, now);
        }
        self.auditor.log(&audit);
        Ok((self.get_user(UserRef::Id(id)).await?, ended.len()))
    }

    /// Deletes a user with their sessions and codes; the email can be registered again and
    /// the audit trail stays.
    pub async fn delete_user(&self, caller: &Caller, user: UserRef<'_>) -> Result<(), AuthError> {
        let id = self.find(user).await?.id;
        let now = self.clock.now();
        let audit = self.entry(caller, AuditKind::AdminDeleteUser, Some(id), now);
        let ended = (self.stores.users)
            .delete(id, now, &audit)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        for session in ended {
            self.revocations.revoke(session, now);
        }
        self.revocations.user_changed(id, None, now);
        self.auditor.log(&audit);
        Ok(())
    }

    /// Ends every live session of a user; how many there were.
    pub async fn revoke_sessions(
        &self,
        caller: &Caller,
        user: UserRef<'_>,
    ) -> Result<usize, AuthError> {
        let id = self.find(user).await?.id;
        let now = self.clock.now();
        let audit = self.entry(caller, AuditKind::AdminRevokeUserSessions, Some(id), now);
        let ended = (self.stores.sessions)
            .revoke_all_for_user(id, RevokeReason::RevokedByAdmin, now, &audit)
            .await?;
        for session in &ended {
            self.revocations.revoke(*session, now);
        }
        self.auditor.log(&audit);
        Ok(ended.len())
    }

    /// A password-reset code for a service that delivers it itself, superseding the user's
    /// earlier ones; not counted against the hourly limit of codes sent by email.
    pub async fn issue_reset_code(
        &self,
        caller: &Caller,
        user: UserRef<'_>,
    ) -> Result<(SecretString, DateTime<Utc>), AuthError> {
        let user = self.find(user).await?;
        if !user.active {
            return Err(AuthError::UserInactive);
        }
        let now = self.clock.now();
        let kind = CodeKind::PasswordReset;
        let (code, record) = new_code(user.id, kind, self.rules.reset_ttl, now)?;
        let expires_at = record.expires_at;
        let audit = self.entry(caller, AuditKind::AdminIssueResetCode, Some(user.id), now);
        match self.stores.codes.issue_code(record, None, &audit).await? {
            Issued::Stored(_) => {}
            Issued::NoActiveUser => return Err(AuthError::UserInactive),
            Issued::LimitReached => {
                return Err(AuthError::Unexpected(anyhow::anyhow!(
                    "an unlimited code issue reached a limit"
                )));
            }
        }
        self.auditor.log(&audit);
        Ok((code, expires_at))
    }

    /// Imports users with password hashes from another system, each on its own: a row
    /// that is refused (why, in its place of the answer) stops no other. bcrypt hashes are
    /// replaced by argon2id at each user's first successful login.
    pub async fn import(
        &self,
        caller: &Caller,
        accounts: Vec<ImportedAccount>,
    ) -> Result<Vec<Result<Uuid, String>>, AuthError> {
        if accounts.len() > IMPORT_MAX_USERS {
            return Err(AuthError::InvalidInput(vec![FieldViolation::new(
                "users",
                format!("at most {IMPORT_MAX_USERS} users per import"),
            )]));
        }
        let now = self.clock.now();
        let mut seen = HashSet::new();
        let mut results: Vec<Result<Uuid, String>> = Vec::with_capacity(accounts.len());
        let mut rows = Vec::new();
        for account in accounts {
            match self.importable(account, now) {
                Ok(user) if !seen.insert(user.email.clone()) => {
                    results.push(Err("duplicate email in this import".to_owned()));
                }
                Ok(user) => {
                    results.push(Ok(user.id));
                    let audit = self.entry(caller, AuditKind::AdminImportUser, Some(user.id), now);
                    rows.push((user, audit));
                }
                Err(why) => results.push(Err(why)),
            }
        }
        let audits: Vec<_> = rows.iter().map(|(_, audit)| audit.clone()).collect();
        let created = self.stores.users.import(rows).await?;
        let mut created = created.into_iter().zip(audits);
        for result in &mut results {
            if result.is_ok()
                && let Some((inserted, audit)) = created.next()
            {
                if inserted {
                    self.auditor.log(&audit);
                } else {
                    *result = Err("email already taken".to_owned());
                }
            }
        }
        Ok(results)
    }

    /// The audit trail, of one user or of all, newest first: up to `limit` events before
    /// `before`, and the last one's id when more may follow.
    pub async fn audit_events(
        &self,
        user_id: Option<Uuid>,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<(Vec<StoredAuditEvent>, Option<Uuid>), AuthError> {
        let mut events = self.stores.audit.list(user_id, before, limit + 1).await?;
        let more = events.len() as u64 > limit;
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = more.then(|| events.last().map(|event| event.id)).flatten();
        Ok((events, next))
    }

    /// Records an administrative call that was refused (no or a bad credential, or a role
    /// that may not call it). Not stored with anything else, so best effort.
    pub async fn audit_refusal(&self, caller: &Caller, outcome: AuditOutcome) {
        let event = AuditEvent {
            kind: AuditKind::AdminAccess,
            outcome,
            user_id: None,
            session_id: None,
        };
        self.auditor.record(caller, event, self.clock.now()).await;
    }

    /// A row of an import, checked: the user to insert, or why not.
    fn importable(&self, account: ImportedAccount, now: DateTime<Utc>) -> Result<NewUser, String> {
        let email = Email::parse(&account.email).map_err(|v| v.description)?;
        let name = DisplayName::parse(&account.name).map_err(|v| v.description)?;
        let role = (self.rules.roles)
            .resolve("role", &account.role)
            .map_err(|v| v.description)?;
        let hash = account.password_hash.expose_secret();
        if !hash.is_empty() {
            check_importable_hash(hash).map_err(|why| why.to_string())?;
        }
        Ok(NewUser {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            role,
            password_hash: account.password_hash,
            active: account.active,
            email_verified: account.email_verified,
            created_at: now,
        })
    }

    async fn find(&self, user: UserRef<'_>) -> Result<UserRecord, AuthError> {
        let found = match user {
            UserRef::Id(id) => self.stores.users.find_by_id(id).await?,
            UserRef::Email(email) => {
                let email = Email::parse(email).map_err(|v| AuthError::InvalidInput(vec![v]))?;
                self.stores.users.find_by_email(email.as_str()).await?
            }
        };
        found.ok_or(AuthError::UserNotFound)
    }

    fn entry(
        &self,
        caller: &Caller,
        kind: AuditKind,
        user_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> crate::store::AuditRecord {
        let event = AuditEvent {
            kind,
            outcome: AuditOutcome::Success,
            user_id,
            session_id: None,
        };
        self.auditor.entry(caller, event, now)
    }
}

/// The store's filter for a query: the prefix normalized as emails and name keys are.
fn user_filter(query: &UserQuery<'_>) -> UserFilter {
    let prefix = crate::store::name_key(query.query.trim());
    UserFilter {
        prefix: (!prefix.is_empty()).then_some(prefix),
        role: (!query.role.trim().is_empty()).then(|| query.role.trim().to_owned()),
        active: query.active,
    }
}
