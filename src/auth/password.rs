//! ChangePassword: the caller replaces their password, knowing the current one.

use secrecy::SecretString;

use super::{
    AuthError, Authenticator, Email, NewPassword, Password, TokenPair,
    audit::{AuditKind, AuditOutcome, Caller},
    input::Violations,
    introspection::SignedIn,
};
use crate::store::PasswordChange;

impl Authenticator {
    /// Checks the current password exactly as Login does (the same hash pool and the same
    /// per-account throttle, so a stolen access token is no password-guessing oracle),
    /// sets the new one under the Register policy, ends every session of the user (the
    /// caller's too) and returns the tokens of one new session.
    pub async fn change_password(
        &self,
        caller: Caller,
        access_token: &str,
        current: String,
        new: String,
    ) -> Result<TokenPair, AuthError> {
        let SignedIn {
            user: me,
            session_id: caller_session,
        } = self.signed_in(access_token).await?;
        let mut violations = Violations::default();
        let current = violations
            .check(Password::submitted(current).map_err(|v| v.for_field("current_password")));
        let new = violations.check(
            Password::new_password(new, &self.credentials.policy, &[&me.email, &me.name])
                .map_err(|v| v.for_field("new_password")),
        );
        let (current, new) = violations.finish(current.zip(new))?;
        let email = Email::parse(&me.email).map_err(|v| AuthError::InvalidInput(vec![v]))?;
        let user = self
            .checked_password(&caller, AuditKind::ChangePassword, &email, &current)
            .await?;
        if user.id != me.id {
            // The email moved to another account between the two reads.
            return Err(AuthError::SessionRevoked);
        }
        let password_hash = self.hash_new_password(&new).await?;
        let now = self.clock.now();
        let (refresh_token, session) = self.new_session(me.id, &caller, now)?;
        let (session_id, refresh_expires_at) = (session.id, session.expires_at);
        let audit = self.audit_entry(
            &caller,
            (AuditKind::ChangePassword, AuditOutcome::Success),
            (Some(me.id), Some(session_id)),
            now,
        );
        let change = PasswordChange {
            user_id: me.id,
            caller_session,
            password_hash,
            session,
            now,
        };
        let Some(ended) = self.users.change_password(change, &audit).await? else {
            return Err(AuthError::SessionRevoked);
        };
        for id in &ended {
            self.revocations.revoke(*id, now);
        }
        let refresh = (refresh_token, refresh_expires_at);
        Ok(self
            .authenticated(Some(&audit), me, session_id, refresh, now)?
            .tokens)
    }

    /// The hash of a new password, on the hash pool; a refusal names `new_password`.
    pub(super) async fn hash_new_password(
        &self,
        password: &NewPassword,
    ) -> Result<SecretString, AuthError> {
        self.credentials
            .hasher
            .hash_new(password)
            .await
            .map_err(|err| match err {
                AuthError::InvalidInput(violations) => AuthError::InvalidInput(
                    violations
                        .into_iter()
                        .map(|v| v.for_field("new_password"))
                        .collect(),
                ),
                other => other,
            })
    }
}
