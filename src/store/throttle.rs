//! Per-email login failure counters.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// When repeated login failures slow an email down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Consecutive failures allowed before the first wait.
    pub max_failures: i64,
    /// The first wait; each further failure adds as much again.
    pub base_window_ms: i64,
    /// The longest wait.
    pub max_window_ms: i64,
}

/// Whether a login attempt may check its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Refused until this Unix time in milliseconds.
    Throttled {
        until_ms: i64,
    },
}

/// Per-email login failure counters.
#[async_trait]
pub trait ThrottleStore: Send + Sync + std::fmt::Debug {
    /// Counts an attempt for `key` before its password is checked, in one atomic
    /// statement, and says whether it may go ahead. Counting first is what makes the
    /// limit race-free: however many attempts arrive at once, at most the allowed number
    /// are admitted.
    async fn admit_login(
        &self,
        key: &str,
        rule: &ThrottleRule,
        now_ms: i64,
    ) -> StoreResult<Admission>;
    /// Clears the counter after a successful login.
    async fn reset_login_failures(&self, key: &str, now: DateTime<Utc>) -> StoreResult<()>;
}
