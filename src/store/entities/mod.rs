//! sea-orm entities, one per table created in `migration/`.

pub(crate) mod account_codes;
pub(crate) mod audit_events;
pub(crate) mod login_throttle;
pub(crate) mod sessions;
pub(crate) mod signing_keys;
pub(crate) mod spent_refresh_tokens;
pub(crate) mod user_changes;
pub(crate) mod users;
pub(crate) mod write_probe;
