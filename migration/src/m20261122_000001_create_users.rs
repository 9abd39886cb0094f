use sea_orm_migration::{prelude::*, schema::*};

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Emails are stored normalized (trimmed, lowercased), so a plain unique index makes
        // the same address in another letter case the same account on every backend.
        once::create_table(
            manager,
            Table::create()
                .table(Users::Table)
                .col(uuid(Users::Id).primary_key())
                .col(string_len_uniq(Users::Email, 254))
                .col(string_len(Users::Name, 400))
                .col(string_len(Users::Role, 64))
                .col(string_len(Users::PasswordHash, 255))
                .col(boolean(Users::Active))
                .col(boolean(Users::EmailVerified))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .col(timestamp_with_time_zone(Users::UpdatedAt)),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub(crate) enum Users {
    Table,
    Id,
    Email,
    Name,
    Role,
    PasswordHash,
    Active,
    EmailVerified,
    CreatedAt,
    UpdatedAt,
}
