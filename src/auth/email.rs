//! ChangeEmail, RequestEmailVerification and VerifyEmail: the account's address and the
//! proof that its owner reads it.

use super::{
    AuthError, Authenticator, CurrentClaims, Email, FieldViolation, Password, User,
    audit::{AuditKind, AuditOutcome, Caller},
    codes::{LIMIT_WINDOW, check_code_field},
    input::Violations,
    introspection::SignedIn,
    mail::Letter,
};
use crate::store::{CodeKind, EmailChange, EmailChanged, Issued, StoreError};

impl Authenticator {
    /// Changes the caller's address after checking their password as Login does (the same
    /// hash pool and per-account throttle): the address becomes unverified, every code of
    /// the user is voided, and a verification code goes to the new address.
    pub async fn change_email(
        &self,
        caller: Caller,
        access_token: &str,
        new_email: &str,
        current_password: String,
    ) -> Result<User, AuthError> {
        let SignedIn {
            user: me,
            session_id: caller_session,
        } = self.signed_in(access_token).await?;
        let mut violations = Violations::default();
        let new_email =
            violations.check(Email::parse(new_email).map_err(|v| v.for_field("new_email")));
        let current = violations.check(
            Password::submitted(current_password).map_err(|v| v.for_field("current_password")),
        );
        if let Some(new_email) = &new_email {
            violations.require(new_email.as_str() != me.email, || {
                FieldViolation::new("new_email", "new_email is already the account's address")
            });
        }
        let (new_email, current) = violations.finish(new_email.zip(current))?;
        let email = Email::parse(&me.email).map_err(|v| AuthError::InvalidInput(vec![v]))?;
        let user = self
            .checked_password(&caller, AuditKind::ChangeEmail, &email, &current)
            .await?;
        if user.id != me.id {
            // The email moved to another account between the two reads.
            return Err(AuthError::SessionRevoked);
        }
        // Cheap pre-check; the unique index decides races.
        if self
            .users
            .find_by_email(new_email.as_str())
            .await?
            .is_some()
        {
            return Err(AuthError::EmailTaken);
        }
        let now = self.clock.now();
        let (code, verification) = match &self.mailer {
            Some(_) => {
                let (code, record) = self.new_code(me.id, CodeKind::EmailVerification, now)?;
                (Some(code), Some((record, self.code_limit(now))))
            }
            None => (None, None),
        };
        let audit = self.audit_entry(
            &caller,
            (AuditKind::ChangeEmail, AuditOutcome::Success),
            (Some(me.id), None),
            now,
        );
        let change = EmailChange {
            user_id: me.id,
            caller_session,
            email: new_email.as_str().to_owned(),
            now,
            verification,
        };
        let user = match self.users.change_email(change, &audit).await {
            Err(StoreError::Conflict) => return Err(AuthError::EmailTaken),
            Ok(EmailChanged::Changed(user)) => user,
            Ok(EmailChanged::LimitReached) => {
                let outcome = (AuditKind::ChangeEmail, AuditOutcome::LimitReached);
                self.audit(&caller, outcome, (Some(me.id), None)).await;
                return Err(AuthError::CodeLimitReached {
                    retry_after: LIMIT_WINDOW,
                });
            }
            Ok(EmailChanged::SignedOut) => return Err(AuthError::SessionRevoked),
            Err(err) => return Err(err.into()),
        };
        self.auditor.log(&audit);
        self.revocations
            .user_changed(user.id, Some(CurrentClaims::of(&user)), now);
        if let (Some(mailer), Some(code)) = (&self.mailer, code) {
            let letter = Letter {
                kind: CodeKind::EmailVerification,
                to: user.email.clone(),
                code,
                valid_for: self.code_policy.verify_ttl,
                user_id: user.id,
                caller,
            };
            mailer.post(letter).await;
        }
        Ok(user.into())
    }

    /// Sends a verification code to the caller's address, voiding their older ones; at
    /// most the per-hour limit of them (then RESOURCE_EXHAUSTED: the caller is signed in,
    /// so there is nothing to hide).
    pub async fn request_email_verification(
        &self,
        caller: Caller,
        access_token: &str,
    ) -> Result<(), AuthError> {
        let me = self.me(access_token).await?;
        let mailer = self.mailer()?;
        if me.email_verified {
            return Err(AuthError::EmailAlreadyVerified);
        }
        let request = |outcome| (AuditKind::RequestEmailVerification, outcome);
        let now = self.clock.now();
        let (code, record) = self.new_code(me.id, CodeKind::EmailVerification, now)?;
        let audit = self.audit_entry(
            &caller,
            request(AuditOutcome::Success),
            (Some(me.id), None),
            now,
        );
        let limit = self.code_limit(now);
        let user = match self.codes.issue_code(record, Some(limit), &audit).await? {
            Issued::Stored(user) => user,
            Issued::LimitReached => {
                let outcome = request(AuditOutcome::LimitReached);
                self.audit(&caller, outcome, (Some(me.id), None)).await;
                return Err(AuthError::CodeLimitReached {
                    retry_after: LIMIT_WINDOW,
                });
            }
            Issued::NoActiveUser => return Err(AuthError::SessionRevoked),
        };
        self.auditor.log(&audit);
        let letter = Letter {
            kind: CodeKind::EmailVerification,
            to: user.email,
            code,
            valid_for: self.code_policy.verify_ttl,
            user_id: user.id,
            caller,
        };
        mailer.post(letter).await;
        Ok(())
    }

    /// Marks the address a verification code was sent to as verified, spending the code.
    /// No token needed: the code is the proof. An email change since voided the code.
    pub async fn verify_email(&self, caller: Caller, code: &str) -> Result<User, AuthError> {
        check_code_field(code).map_err(|v| AuthError::InvalidInput(vec![v]))?;
        let verify = |outcome| (AuditKind::VerifyEmail, outcome);
        let now = self.clock.now();
        let Some(code) = self
            .redeemable_code(code, CodeKind::EmailVerification, now)
            .await?
        else {
            self.audit(&caller, verify(AuditOutcome::InvalidCode), (None, None))
                .await;
            return Err(AuthError::CodeInvalid);
        };
        let audit = self.audit_entry(
            &caller,
            verify(AuditOutcome::Success),
            (Some(code.user_id), None),
            now,
        );
        let Some(user) = self
            .codes
            .verify_email(code.id, code.user_id, now, &audit)
            .await?
        else {
            let outcome = verify(AuditOutcome::InvalidCode);
            self.audit(&caller, outcome, (Some(code.user_id), None))
                .await;
            return Err(AuthError::CodeInvalid);
        };
        self.auditor.log(&audit);
        Ok(user.into())
    }
}
