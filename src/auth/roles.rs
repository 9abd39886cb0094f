//! Roles: the names AUTHD_ROLES allows, and the one self-registered users get.

use super::FieldViolation;

/// The configured roles. Stored users may hold a role configured away since: they keep
/// it, but no new user is given one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    known: Vec<String>,
    default: String,
}

impl Roles {
    /// `known` roles, of which `default` is given to users who register themselves (or
    /// are created or imported without one).
    pub fn new(known: Vec<String>, default: String) -> anyhow::Result<Self> {
        let known: Vec<String> = known.iter().map(|r| r.trim().to_owned()).collect();
        anyhow::ensure!(!known.is_empty(), "AUTHD_ROLES: expected at least one role");
        if let Some(bad) = known.iter().find(|role| !is_well_formed(role)) {
            anyhow::bail!(
                "AUTHD_ROLES: {bad:?} is not a role name: expected 1 to 64 lowercase letters, \
                 digits, '_' or '-'"
            );
        }
        let default = default.trim().to_owned();
        anyhow::ensure!(
            known.contains(&default),
            "AUTHD_DEFAULT_ROLE: expected one of AUTHD_ROLES ({}), got {default:?}",
            known.join(", ")
        );
        Ok(Self { known, default })
    }

    /// The role of self-registered users.
    pub fn default_role(&self) -> &str {
        &self.default
    }

    /// Whether `role` is configured.
    pub fn contains(&self, role: &str) -> bool {
        self.known.iter().any(|known| known == role)
    }

    /// The role asked for in `field`: the default when empty, otherwise one of the
    /// configured roles.
    pub(super) fn resolve(
        &self,
        field: &'static str,
        role: &str,
    ) -> Result<String, FieldViolation> {
        if role.trim().is_empty() {
            return Ok(self.default.clone());
        }
        self.check(field, role)
    }

    /// The role asked for in `field`: one of the configured roles.
    pub(super) fn check(&self, field: &'static str, role: &str) -> Result<String, FieldViolation> {
        let role = role.trim();
        if self.contains(role) {
            Ok(role.to_owned())
        } else {
            Err(FieldViolation::new(
                field,
                format!("unknown role: expected one of {}", self.known.join(", ")),
            ))
        }
    }
}

impl Default for Roles {
    /// `user` and `admin`; users register as `user`.
    fn default() -> Self {
        Self {
            known: vec!["user".to_owned(), "admin".to_owned()],
            default: "user".to_owned(),
        }
    }
}

fn is_well_formed(role: &str) -> bool {
    (1..=64).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Roles {
        Roles::new(
            vec!["user".into(), "analyst".into(), "admin".into()],
            "user".into(),
        )
        .unwrap()
    }

    #[test]
    fn empty_is_the_default_and_unknown_roles_are_refused() {
        assert_eq!(roles().resolve("role", " ").unwrap(), "user");
        assert_eq!(roles().resolve("role", "analyst").unwrap(), "analyst");
        let refused = roles().resolve("role", "root").unwrap_err();
        assert_eq!(refused.field, "role");
        assert!(refused.description.contains("user, analyst, admin"));
    }

    #[test]
    fn the_default_must_be_a_configured_role() {
        let err = Roles::new(vec!["user".into()], "admin".into()).unwrap_err();
        assert!(err.to_string().contains("AUTHD_DEFAULT_ROLE"));
        let err = Roles::new(vec!["User".into()], "User".into()).unwrap_err();
        assert!(err.to_string().contains("AUTHD_ROLES"));
    }
}
