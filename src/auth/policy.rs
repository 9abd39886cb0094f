//! The password policy (NIST SP 800-63B, OWASP ASVS 6.2): length counted in Unicode code
//! points after NFKC normalization, any character allowed, no composition rules, and a
//! refusal of passwords that are common or built from the user's own email or name.
//!
//! Guessability comes from zxcvbn, offline: its bundled frequency lists hold the most
//! common passwords of public breaches, and it matches the user's own inputs, keyboard
//! walks, repeats, sequences and dates. A password zxcvbn rates as crackable within
//! 10^8 guesses is refused, with the reason in words a user understands.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization as _;
use zxcvbn::{Score, feedback::Warning};

use super::{BelowFloor, FieldViolation};

/// The longest password accepted, in code points; well above the 64 NIST asks to allow.
pub(crate) const PASSWORD_MAX_CHARS: usize = 256;
/// Checked on the raw bytes before anything else, so a huge password costs nothing.
pub(crate) const PASSWORD_MAX_BYTES: usize = 1024;
/// Below this, a configured minimum is refused (ASVS 6.2.1).
pub const PASSWORD_MIN_CHARS_FLOOR: usize = 8;
/// zxcvbn's score below which a password is refused: crackable in under 10^8 guesses.
const MIN_SCORE: Score = Score::Three;

/// The rules a new password must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    min_chars: usize,
}

/// NFKC, so the same password typed on different keyboards or input methods is the same
/// string before it is measured or hashed.
pub(crate) fn normalize(raw: &str) -> Cow<'_, str> {
    if unicode_normalization::is_nfkc_quick(raw.chars()) == unicode_normalization::IsNormalized::Yes
    {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(raw.nfkc().collect())
    }
}

/// How much of a password the strength estimate looks at. zxcvbn's cost grows fast with
/// length on crafted input (runs of characters that each stand for several letters cost
/// it ~0.2 s at 100 characters); a prefix can only judge a password weaker than it is,
/// never stronger, since more characters never make one easier to guess.
const STRENGTH_CHECKED_CHARS: usize = 64;

impl PasswordPolicy {
    /// Passwords of at least `min_chars` code points; never fewer than
    /// [`PASSWORD_MIN_CHARS_FLOOR`].
    pub fn new(min_chars: usize) -> Result<Self, BelowFloor> {
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        BelowFloor::check(wide(min_chars), wide(PASSWORD_MIN_CHARS_FLOOR))?;
        Ok(Self { min_chars })
    }

    /// The cheap rules, checked where the request is validated: length, and not built
    /// from the account's own email or name (`user_inputs`). The strength estimate is
    /// [`Self::check_strength`], run on the hash pool.
    pub(crate) fn check(&self, password: &str, user_inputs: &[&str]) -> Result<(), FieldViolation> {
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(violation(format!(
                "password must be at least {} characters",
                self.min_chars
            )));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(violation(format!(
                "password must be at most {PASSWORD_MAX_CHARS} characters"
            )));
        }
        // However strong it looks, a password that is mostly the user's own email or name
        // is the first thing an attacker who knows the account tries.
        let inputs = expand_user_inputs(user_inputs);
        if covered_by(password, &inputs) * 2 >= chars {
            return Err(violation(
                "password must not be built from your email address or name",
            ));
        }
        Ok(())
    }

    /// zxcvbn's verdict on the first [`STRENGTH_CHECKED_CHARS`] characters: seconds of CPU
    /// on crafted input if run whole, so it runs off the async workers.
    pub(crate) fn check_strength(
        &self,
        password: &str,
        user_inputs: &[&str],
    ) -> Result<(), FieldViolation> {
        let checked: String = password.chars().take(STRENGTH_CHECKED_CHARS).collect();
        let inputs = expand_user_inputs(user_inputs);
        let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let rated = zxcvbn::zxcvbn(&checked, &input_refs);
        if rated.score() >= MIN_SCORE {
            return Ok(());
        }
        let warning = rated.feedback().and_then(|f| f.warning());
        Err(violation(match warning {
            Some(
                Warning::ThisIsATop10Password
                | Warning::ThisIsATop100Password
                | Warning::ThisIsACommonPassword
                | Warning::ThisIsSimilarToACommonlyUsedPassword,
            ) => "password is too common: it appears in lists of leaked passwords".to_owned(),
            Some(warning) => format!("password is too easy to guess: {warning}"),
            None => {
                "password is too easy to guess: use a longer phrase of uncommon words".to_owned()
            }
        }))
    }
}

fn violation(description: impl Into<String>) -> FieldViolation {
    FieldViolation::new("password", description)
}

/// How many characters of `password` (case-insensitively) lie inside an occurrence of
/// one of `parts`.
fn covered_by(password: &str, parts: &[String]) -> usize {
    let lower: Vec<char> = password.to_lowercase().chars().collect();
    let mut covered = vec![false; lower.len()];
    for part in parts {
        let part: Vec<char> = part.chars().collect();
        if part.is_empty() || part.len() > lower.len() {
            continue;
        }
        for start in 0..=lower.len() - part.len() {
            if lower[start..start + part.len()] == part[..] {
                covered[start..start + part.len()]
                    .iter_mut()
                    .for_each(|c| *c = true);
            }
        }
    }
    covered.into_iter().filter(|&c| c).count()
}

/// The email, its local part and the pieces of both and of the name, so that
/// "ada.lovelace1815" is caught as built from "Ada Lovelace" or "ada.lovelace@…".
fn expand_user_inputs(inputs: &[&str]) -> Vec<String> {
    let mut expanded = Vec::new();
    for input in inputs {
        let input = input.to_lowercase();
        let local = input.split('@').next().unwrap_or_default().to_owned();
        expanded.extend(
            local
                .split(|c: char| !c.is_alphanumeric())
                .chain(input.split(|c: char| !c.is_alphanumeric()))
                .filter(|part| part.chars().count() >= 3)
                .map(str::to_owned),
        );
        expanded.push(local);
        expanded.push(input);
    }
    expanded.sort();
    expanded.dedup();
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy { min_chars: 12 };

    #[test]
    fn a_minimum_below_the_floor_cannot_be_set() {
        assert!(PasswordPolicy::new(PASSWORD_MIN_CHARS_FLOOR - 1).is_err());
        assert_eq!(PasswordPolicy::new(12), Ok(POLICY));
    }

    /// Every rule, the cheap ones and the strength estimate.
    fn check(password: &str) -> Result<(), String> {
        let inputs = ["ada.lovelace@example.com", "Ada Lovelace"];
        let password = normalize(password);
        POLICY
            .check(&password, &inputs)
            .and_then(|()| POLICY.check_strength(&password, &inputs))
            .map_err(|v| v.description)
    }

    #[test]
    fn long_uncommon_passphrases_pass_whatever_their_characters() {
        assert_eq!(check("correct horse battery staple"), Ok(()));
        assert_eq!(check("ünïcödé wörds ärë fïnë hërë"), Ok(()));
        assert_eq!(check("日本語のパスフレーズも大丈夫です"), Ok(()));
        assert_eq!(check(&"tq7-Vz".repeat(42)[..250]), Ok(()));
    }

    #[test]
    fn length_is_counted_in_code_points_after_nfkc() {
        // "é" typed as e + combining acute: 22 code points raw, 11 after NFKC.
        let decomposed = "e\u{301}".repeat(11);
        assert_eq!(normalize(&decomposed).chars().count(), 11);
        assert!(check(&decomposed).unwrap_err().contains("at least 12"));
        // U+FB01 (the "fi" ligature) is one code point that NFKC makes two.
        assert_eq!(normalize("\u{FB01}").chars().count(), 2);
    }

    #[test]
    fn common_passwords_are_refused_as_common() {
        for password in ["password1234", "123456789012", "qwertyuiop123"] {
            let reason = check(password).unwrap_err();
            assert!(
                reason.contains("common") || reason.contains("easy"),
                "{password}: {reason}"
            );
        }
        assert!(check("password1234").unwrap_err().contains("common"));
    }

    #[test]
    fn passwords_built_from_the_email_or_name_are_refused() {
        for password in [
            "adalovelace1",
            "lovelace2024!",
            "ada.lovelace@example",
            "LOVELACE-ada-1815",
        ] {
            let reason = check(password).unwrap_err();
            assert!(
                reason.contains("email address or name"),
                "{password}: {reason}"
            );
        }
    }

    #[test]
    fn strength_is_judged_on_a_prefix_that_only_errs_towards_refusing() {
        // A weak start is refused however strong the rest; a strong start stays strong.
        let weak_start = format!("{}{}", "a".repeat(64), "tq7-Vz9#Lm");
        assert!(check(&weak_start).is_err());
        assert_eq!(check(&"tq7-Vz".repeat(40)), Ok(()));
    }

    #[test]
    fn too_long_is_refused() {
        assert!(
            check(&"x7Q!".repeat(65))
                .unwrap_err()
                .contains("at most 256")
        );
    }
}
