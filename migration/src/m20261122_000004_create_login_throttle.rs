use sea_orm_migration::{prelude::*, schema::*};

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Consecutive failed logins per submitted email, whether or not an account exists.
        // `key` is the SHA-256 (hex) of the normalized email, so attacker-chosen strings
        // are not stored. `blocked_until` is Unix milliseconds (0: not blocked) because the
        // admission check does arithmetic on it in SQL, which must read the same on
        // SQLite, PostgreSQL and MySQL.
        once::create_table(
            manager,
            Table::create()
                .table(LoginThrottle::Table)
                .col(string_len(LoginThrottle::Key, 64).primary_key())
                .col(big_integer(LoginThrottle::Failures))
                .col(big_integer(LoginThrottle::BlockedUntil))
                .col(timestamp_with_time_zone(LoginThrottle::UpdatedAt)),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginThrottle::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LoginThrottle {
    Table,
    Key,
    Failures,
    BlockedUntil,
    UpdatedAt,
}
