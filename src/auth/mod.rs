//! The domain: accounts, passwords, sessions and tokens.
//!
//! Nothing here knows about gRPC or SQL. [`Authenticator`] implements the use cases of
//! `auth.v1.AuthService` on top of the `crate::store` traits, one file per use case
//! (`signup`, `refresh`, `logout`, `introspection`, `profile`, `password`, `email`, `reset`,
//! `own_sessions`; `accounts` for AdminService and the operator's commands); the validated input types ([`Email`], [`DisplayName`], [`Password`]) can only
//! be built valid; every failure is an [`AuthError`] variant; the time comes from a
//! [`Clock`].

mod accounts;
mod audit;
mod authenticator;
mod clock;
mod codes;
mod email;
mod error;
mod hasher;
mod input;
mod introspection;
mod logout;
mod mail;
mod own_sessions;
mod paging;
mod password;
mod policy;
mod profile;
mod purge;
mod refresh;
mod refresh_token;
mod reset;
mod revocation;
mod roles;
mod rotation;
mod sealing;
mod signup;
mod tokens;
mod user;
mod verified_cache;

pub use accounts::{
    AccountChange, AccountRules, AccountStores, Accounts, IMPORT_MAX_USERS, ImportedAccount,
    NewAccount, UserQuery, UserRef,
};
pub use audit::{
    Actor, AuditEvent, AuditKind, AuditOutcome, Auditor, Caller, USER_AGENT_MAX_CHARS,
};
pub use authenticator::{
    AccountMail, Authenticated, Authenticator, Credentials, SessionPolicy, Stores, TokenKeys,
    TokenPair, Vitals,
};
pub use clock::{Clock, SystemClock};
pub use codes::CodePolicy;
pub use error::{AuthError, BelowFloor, FieldViolation};
pub use hasher::{CostBelowFloor, HashCost, PasswordHasher, UnusableHash, check_importable_hash};
pub use input::{DisplayName, Email, NewPassword, Password};
pub use introspection::{InactiveReason, Introspection};
pub use logout::LogoutTarget;
pub use mail::{Letter, Mailer};
pub use own_sessions::{SESSIONS_LISTED, SessionView};
pub use paging::PageTokens;
pub use policy::{PASSWORD_MIN_CHARS_FLOOR, PasswordPolicy};
pub use purge::{Purged, Purger, Retention};
pub use refresh_token::RefreshKey;
pub use revocation::{CurrentClaims, Revocations, Standing};
pub use roles::Roles;
pub use rotation::{HmacSecret, KeySource, RotationSchedule};
pub use sealing::{KeySealer, SealError};
pub use tokens::{
    AccessClaims, Keyring, PublicJwk, SigningAlgorithm, TokenSettings, Verdict, VerifiedToken,
};
pub use user::User;

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

/// Lowercase hex SHA-256, the stored form of refresh tokens, one-time codes and throttle
/// keys.
pub(crate) fn sha256_hex(input: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(input.as_bytes()))
}
