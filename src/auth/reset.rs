//! RequestPasswordReset and ResetPassword: a forgotten password replaced through a code
//! sent to the account's address.

use std::sync::Arc;

use super::{
    AuthError, Authenticator, Email, Password,
    audit::{AuditKind, AuditOutcome, Caller},
    codes::check_code_field,
    input::Violations,
    mail::{Letter, Mailer},
};
use crate::store::{CodeKind, CodeReset, Issued, UserRecord};

impl Authenticator {
    /// Answers the same, in the same time, whether or not `email` names an account: the
    /// request path validates, reads the account (one indexed lookup, found or not) and
    /// hands the rest to a background task, which issues the code and posts it for an
    /// active account and only audits otherwise. At most the configured number of codes
    /// per account per hour; requests beyond are answered alike and send nothing.
    pub async fn request_password_reset(
        self: &Arc<Self>,
        caller: Caller,
        email: &str,
    ) -> Result<(), AuthError> {
        let email = Email::parse(email).map_err(|v| AuthError::InvalidInput(vec![v]))?;
        let mailer = self.mailer()?;
        let user = self.users.find_by_email(email.as_str()).await?;
        let Ok(slot) = Arc::clone(&self.background).try_acquire_owned() else {
            // Bounded: a flood of requests must not grow memory; the caller's answer
            // cannot differ, so the request is only logged.
            tracing::warn!("password reset request dropped: too many being issued");
            return Ok(());
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.issue_reset_code(caller, user, mailer.as_ref()).await;
            drop(slot);
        });
        Ok(())
    }

    async fn issue_reset_code(
        &self,
        caller: Caller,
        user: Option<UserRecord>,
        mailer: &dyn Mailer,
    ) {
        let request = |outcome| (AuditKind::RequestPasswordReset, outcome);
        let user = match user {
            Some(user) if user.active => user,
            other => {
                let user_id = other.map(|user| user.id);
                self.audit(&caller, request(AuditOutcome::NoAccount), (user_id, None))
                    .await;
                return;
            }
        };
        let now = self.clock.now();
        let issued = async {
            let (code, record) = self.new_code(user.id, CodeKind::PasswordReset, now)?;
            let audit = self.audit_entry(
                &caller,
                request(AuditOutcome::Success),
                (Some(user.id), None),
                now,
            );
            let limit = self.code_limit(now);
            let issued = self.codes.issue_code(record, Some(limit), &audit).await?;
            if matches!(issued, Issued::Stored(_)) {
                self.auditor.log(&audit);
            }
            Ok::<_, AuthError>((code, issued))
        }
        .await;
        match issued {
            Ok((code, Issued::Stored(user))) => {
                let letter = Letter {
                    kind: CodeKind::PasswordReset,
                    to: user.email,
                    code,
                    valid_for: self.code_policy.reset_ttl,
                    user_id: user.id,
                    caller,
                };
                mailer.post(letter).await;
            }
            Ok((_, Issued::LimitReached)) => {
                let outcome = request(AuditOutcome::LimitReached);
                self.audit(&caller, outcome, (Some(user.id), None)).await;
            }
            Ok((_, Issued::NoActiveUser)) => {
                let outcome = request(AuditOutcome::NoAccount);
                self.audit(&caller, outcome, (Some(user.id), None)).await;
            }
            Err(err) => {
                let err = anyhow::Error::from(err);
                tracing::error!(user_id = %user.id, error = %format!("{err:#}"), "password reset code not issued");
            }
        }
    }

    /// Sets a new password with a reset code: the code is spent, every session of the
    /// user ends and every other code of the user is voided, in one transaction. Two calls
    /// with one code: exactly one succeeds.
    pub async fn reset_password(
        &self,
        caller: Caller,
        code: &str,
        new_password: String,
    ) -> Result<(), AuthError> {
        let reset = |outcome| (AuditKind::ResetPassword, outcome);
        let mut violations = Violations::default();
        if violations.check(check_code_field(code)).is_none() {
            // Reported with the code's violation; with no account, no personal context.
            let password = Password::new_password(new_password, &self.credentials.policy, &[]);
            violations.check(password.map_err(|v| v.for_field("new_password")));
            return violations.finish(None);
        }
        let now = self.clock.now();
        let Some(code) = self
            .redeemable_code(code, CodeKind::PasswordReset, now)
            .await?
        else {
            self.audit(&caller, reset(AuditOutcome::InvalidCode), (None, None))
                .await;
            return Err(AuthError::CodeInvalid);
        };
        let user = self
            .users
            .find_by_id(code.user_id)
            .await?
            .ok_or(AuthError::CodeInvalid)?;
        let password = Password::new_password(
            new_password,
            &self.credentials.policy,
            &[&user.email, &user.name],
        )
        .map_err(|v| AuthError::InvalidInput(vec![v.for_field("new_password")]))?;
        let password_hash = self.hash_new_password(&password).await?;
        let now = self.clock.now();
        let audit = self.audit_entry(
            &caller,
            reset(AuditOutcome::Success),
            (Some(user.id), None),
            now,
        );
        let change = CodeReset {
            code_id: code.id,
            user_id: user.id,
            password_hash,
            now,
        };
        let Some(ended) = self.codes.reset_password(change, &audit).await? else {
            let outcome = reset(AuditOutcome::InvalidCode);
            self.audit(&caller, outcome, (Some(user.id), None)).await;
            return Err(AuthError::CodeInvalid);
        };
        for id in &ended {
            self.revocations.revoke(*id, now);
        }
        self.auditor.log(&audit);
        // Whoever holds the mailbox may log in again at once.
        if let Ok(email) = Email::parse(&user.email) {
            self.clear_login_failures(&email).await;
        }
        Ok(())
    }

    /// The mailer, or FAILED_PRECONDITION when email delivery is not configured.
    pub(super) fn mailer(&self) -> Result<Arc<dyn Mailer>, AuthError> {
        self.mailer.clone().ok_or(AuthError::MailNotConfigured)
    }
}
