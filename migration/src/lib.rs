//! authd's database schema. Every change is a new `mYYYYMMDD_HHMMSS_name.rs` file, run in
//! order by `authd serve` (and `authd migrate up`) and by the test suite.
//!
//! Every migration can run again over its own partial work (tables and indexes through
//! [`once`]): MySQL commits DDL statement by statement, so a process killed mid-migration
//! leaves what it made without the migration's record, and the next start runs it again.

// `MigrationTrait` is an async_trait whose `SchemaManager` lifetime must stay elided.
#![allow(elided_lifetimes_in_paths)]

pub use sea_orm_migration::prelude::*;

mod once;

mod m20261122_000001_create_users;
mod m20261122_000002_create_sessions;
mod m20261122_000003_create_signing_keys;
mod m20261122_000004_create_login_throttle;
mod m20261122_000005_create_audit_events;
mod m20261202_000001_create_write_probe;
mod m20261202_000002_email_binary_collation;
mod m20261202_000003_purge_indexes;
mod m20261202_000004_email_nfc;
mod m20261203_000001_session_client_and_last_login;
mod m20261203_000002_account_codes;
mod m20261204_000001_administration;
mod m20261204_000002_revocation_notices;
mod m20261205_000001_audit_request_id;

/// All of authd's migrations, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_sessions::Migration),
            Box::new(m20261122_000003_create_signing_keys::Migration),
            Box::new(m20261122_000004_create_login_throttle::Migration),
            Box::new(m20261122_000005_create_audit_events::Migration),
            Box::new(m20261202_000001_create_write_probe::Migration),
            Box::new(m20261202_000002_email_binary_collation::Migration),
            Box::new(m20261202_000003_purge_indexes::Migration),
            Box::new(m20261202_000004_email_nfc::Migration),
            Box::new(m20261203_000001_session_client_and_last_login::Migration),
            Box::new(m20261203_000002_account_codes::Migration),
            Box::new(m20261204_000001_administration::Migration),
            Box::new(m20261204_000002_revocation_notices::Migration),
            Box::new(m20261205_000001_audit_request_id::Migration),
        ]
    }
}
