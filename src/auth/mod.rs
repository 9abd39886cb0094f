//! The domain: accounts, passwords, sessions and tokens.
//!
//! Nothing here knows about gRPC or SQL. [`Authenticator`] implements the use cases of
//! `auth.v1.AuthService` on top of the `crate::store` traits; the validated input types
//! ([`Email`], [`DisplayName`], [`Password`]) can only be built valid; every failure is an
//! [`AuthError`] variant.

mod audit;
mod error;
mod hasher;
mod input;
mod policy;
mod purge;
mod refresh;
mod revocation;
mod sealing;
mod service;
mod tokens;
mod verified_cache;

pub use audit::{AuditEvent, AuditKind, Auditor, Caller};
pub use error::{AuthError, FieldViolation};
pub use hasher::PasswordHasher;
pub use input::{DisplayName, Email, NewPassword, Password};
pub use policy::{PASSWORD_MIN_CHARS_FLOOR, PasswordPolicy};
pub use purge::{Purged, Purger, Retention};
pub use refresh::RefreshKey;
pub use revocation::{Revocations, Standing};
pub use sealing::KeySealer;
pub use service::{
    Accounts, Authenticated, Authenticator, AuthenticatorParts, DEFAULT_ROLE, InactiveReason,
    Introspection, LogoutTarget, NewAccount, TokenPair,
};
pub use tokens::{AccessClaims, Keyring, PublicJwk, Verdict, VerifiedToken};

/// How far apart replicas' clocks may be (NTP keeps them far closer): revocations,
/// key retirement and the purge all allow for it.
pub const CLOCK_SKEW_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes from the OS CSPRNG, for salts, keys and refresh tokens.
pub(crate) fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("reading the OS random source: {e}"))?;
    Ok(bytes)
}

/// A std duration as chrono's, saturating (config durations can exceed chrono's range).
pub(crate) fn chrono_duration(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Lowercase hex SHA-256, the stored form of refresh tokens and throttle keys.
pub(crate) fn sha256_hex(input: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(input.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
