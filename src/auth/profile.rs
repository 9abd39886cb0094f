//! UpdateMe: the caller changes their own profile.

use super::{
    AuthError, Authenticator, DisplayName, User,
    audit::{AuditKind, AuditOutcome, Caller},
};

impl Authenticator {
    /// Changes the caller's display name, under the same rules as Register.
    pub async fn update_me(
        &self,
        caller: Caller,
        access_token: &str,
        name: &str,
    ) -> Result<User, AuthError> {
        let me = self.me(access_token).await?;
        let name = DisplayName::parse(name).map_err(|v| AuthError::InvalidInput(vec![v]))?;
        let now = self.clock.now();
        let audit = self.audit_entry(
            &caller,
            (AuditKind::UpdateMe, AuditOutcome::Success),
            (Some(me.id), None),
            now,
        );
        let user = self
            .users
            .update_name(me.id, name.as_str(), now, &audit)
            .await?
            .ok_or(AuthError::SessionRevoked)?;
        self.auditor.log(&audit);
        Ok(user.into())
    }
}
