//! Where the domain reads the time. A use case takes its `now` at its start and passes it
//! down, so its steps agree on one moment (reading it again only after a wait that must
//! count, such as a password hash); tests move a clock of their own instead of waiting
//! for expiries.

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
