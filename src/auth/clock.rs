//! Where the domain reads the time. A use case takes its `now` once, at its start, and
//! passes it down, so one call sees one moment; tests move a clock of their own instead
//! of waiting for expiries.

use chrono::{DateTime, Utc};

/// The current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
