//! Request values that can only be built valid (parse, don't validate).

use email_address::EmailAddress;
use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

use super::{
    FieldViolation,
    policy::{PASSWORD_MAX_BYTES, PasswordPolicy, normalize},
};

/// RFC 5321's limit on a forward path.
const EMAIL_MAX_LEN: usize = 254;
const NAME_MAX_CHARS: usize = 100;

/// A syntactically valid email address, trimmed, lowercased and in Unicode NFC, so the
/// same address in another letter case or another encoding of the same characters is the
/// same account. This is the identity: the store compares it byte for byte on every
/// database, and throttling keys on it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let email: String = raw.trim().to_lowercase().nfc().collect();
        if email.is_empty() {
            return Err(FieldViolation::new("email", "email is required"));
        }
        if email.len() > EMAIL_MAX_LEN {
            return Err(FieldViolation::new(
                "email",
                format!("email must be at most {EMAIL_MAX_LEN} characters"),
            ));
        }
        // Invisible characters would make an address that looks like another's.
        let invisible = |c: char| c.is_control() || c.general_category() == GeneralCategory::Format;
        if email.chars().any(invisible) || !EmailAddress::is_valid(&email) {
            return Err(FieldViolation::new("email", "email is not a valid address"));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1 to 100 characters, no control or format characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldViolation::new("name", "name is required"));
        }
        if name.chars().count() > NAME_MAX_CHARS {
            return Err(FieldViolation::new(
                "name",
                format!("name must be at most {NAME_MAX_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldViolation::new(
                "name",
                "name must not contain control characters",
            ));
        }
        // Format characters change how the text around them displays without showing
        // themselves: a right-to-left override or zero-width characters would let one name
        // render as another's. Line and paragraph separators break a line wherever the name
        // is shown, and the blank fillers look like nothing at all.
        if name.chars().any(is_invisible_formatting) {
            return Err(FieldViolation::new(
                "name",
                "name must not contain invisible formatting characters \
                 (direction overrides, zero-width characters, line separators, blank fillers)",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that display as nothing, or change how their neighbours display.
fn is_invisible_formatting(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || matches!(
        c,
        // Combining grapheme joiner, the Hangul fillers, and variation selectors.
        '\u{34F}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{FE00}'..='\u{FE0F}'
    )
}

/// A new password that met the policy's cheap rules, with what its strength estimate
/// needs; only [`super::PasswordHasher::hash_new`] can use it, and it runs the estimate.
#[derive(Debug, Clone)]
pub struct NewPassword {
    pub(super) password: Password,
    pub(super) policy: PasswordPolicy,
    pub(super) user_inputs: Vec<String>,
}

/// A password as submitted, NFKC-normalized (so it hashes the same however it was typed)
/// and kept in a secret so it never prints.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// A new password, checked against the policy's cheap rules; `user_inputs` are the
    /// account's email and name, which the password must not be built from. Its strength
    /// is judged where it is hashed ([`super::PasswordHasher::hash_new`]).
    pub fn new_password(
        raw: String,
        policy: &PasswordPolicy,
        user_inputs: &[&str],
    ) -> Result<NewPassword, FieldViolation> {
        let password = Self::submitted(raw)?;
        policy.check(password.0.expose_secret(), user_inputs)?;
        Ok(NewPassword {
            password,
            policy: *policy,
            user_inputs: user_inputs
                .iter()
                .map(|input| (*input).to_owned())
                .collect(),
        })
    }

    /// A password offered at login: only presence and the hard size cap are checked, so a
    /// password set under an older policy still works.
    pub fn submitted(raw: String) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new("password", "password is required"));
        }
        // Before normalization or hashing: a huge password must cost nothing.
        if raw.len() > PASSWORD_MAX_BYTES {
            return Err(FieldViolation::new(
                "password",
                format!("password must be at most {PASSWORD_MAX_BYTES} bytes"),
            ));
        }
        let normalized = normalize(&raw).into_owned();
        Ok(Self(SecretString::from(normalized)))
    }

    pub(crate) fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// Collects the violations of several fields, so one response names all of them.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<FieldViolation>);

impl Violations {
    /// The parsed value, or `None` with its violation recorded.
    pub(crate) fn check<T>(&mut self, parsed: Result<T, FieldViolation>) -> Option<T> {
        parsed.map_err(|violation| self.0.push(violation)).ok()
    }

    /// Records a violation of a rule checked outside a parser.
    pub(crate) fn require(&mut self, ok: bool, violation: impl FnOnce() -> FieldViolation) {
        if !ok {
            self.0.push(violation());
        }
    }

    /// The values if every field was valid, else every violation.
    pub(crate) fn finish<T>(self, values: Option<T>) -> Result<T, super::AuthError> {
        match values {
            Some(values) if self.0.is_empty() => Ok(values),
            _ => Err(super::AuthError::InvalidInput(self.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lowercased() {
        let email = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "alice@example.com");
    }

    #[test]
    fn email_without_at_sign_is_rejected() {
        assert_eq!(
            Email::parse("alice.example.com").unwrap_err().field,
            "email"
        );
    }

    #[test]
    fn email_longer_than_254_bytes_is_rejected() {
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).unwrap_err().description.contains("254"));
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
        assert!(DisplayName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn names_that_would_display_as_another_are_refused() {
        for name in [
            "Ada\u{202E}nomis",    // right-to-left override
            "\u{2067}Ada\u{2069}", // right-to-left isolate
            "A\u{200B}da",         // zero-width space
            "A\u{200D}da",         // zero-width joiner
            "A\u{AD}da",           // soft hyphen
            "Ada\u{2028}Admin",    // line separator
            "Ada\u{2029}Admin",    // paragraph separator
            "Ada\u{3164}",         // Hangul filler
            "A\u{34F}da",          // combining grapheme joiner
            "A\u{FE0F}da",         // variation selector
        ] {
            let violation = DisplayName::parse(name).unwrap_err();
            assert_eq!(violation.field, "name", "{name:?}");
            assert!(violation.description.contains("invisible"), "{name:?}");
        }
        for name in ["Zoë", "José Ramírez", "山田太郎", "Ada Lovelace", "محمد"] {
            assert!(DisplayName::parse(name).is_ok(), "{name:?}");
        }
    }

    fn policy() -> PasswordPolicy {
        PasswordPolicy::new(12).unwrap()
    }

    #[test]
    fn new_passwords_meet_the_policy() {
        assert!(Password::new_password("correct horse battery".into(), &policy(), &[]).is_ok());
        assert!(Password::new_password("short".into(), &policy(), &[]).is_err());
    }

    #[test]
    fn violation_never_echoes_the_password() {
        let err = Password::new_password("short1".into(), &policy(), &[]).unwrap_err();
        assert!(!err.description.contains("short1"));
    }

    #[test]
    fn submitted_passwords_are_nfkc_normalized() {
        let composed = Password::submitted("caf\u{e9} au lait".into()).unwrap();
        let decomposed = Password::submitted("cafe\u{301} au lait".into()).unwrap();
        assert_eq!(composed.0.expose_secret(), decomposed.0.expose_secret());
    }

    #[test]
    fn password_debug_print_is_redacted() {
        let password = Password::submitted("hunter2hunter2".into()).unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn submitted_password_over_the_byte_cap_is_rejected_before_hashing() {
        assert!(Password::submitted("x".repeat(PASSWORD_MAX_BYTES + 1)).is_err());
        assert!(Password::submitted("x".repeat(PASSWORD_MAX_BYTES)).is_ok());
    }
}
