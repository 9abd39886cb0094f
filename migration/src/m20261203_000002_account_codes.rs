use sea_orm_migration::{prelude::*, schema::*};

use crate::{m20261122_000001_create_users::Users, once};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Password-reset and email-verification codes. `code_hash` is the SHA-256 (hex) of
        // the code; the code itself is never stored. A spent code (used, superseded or
        // voided) keeps its row until the purge: the per-hour limit counts issued codes.
        once::create_table(
            manager,
            Table::create()
                .table(AccountCodes::Table)
                .col(uuid(AccountCodes::Id).primary_key())
                .col(uuid(AccountCodes::UserId))
                .col(string_len(AccountCodes::Kind, 32))
                .col(string_len_uniq(AccountCodes::CodeHash, 64))
                .col(timestamp_with_time_zone(AccountCodes::CreatedAt))
                .col(timestamp_with_time_zone(AccountCodes::ExpiresAt))
                .col(timestamp_with_time_zone_null(AccountCodes::SpentAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(AccountCodes::Table, AccountCodes::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                ),
        )
        .await?;
        // Superseding, voiding and the per-hour count look codes up by user and kind.
        once::create_index(
            manager,
            AccountCodes::Table,
            "idx_account_codes_user_kind",
            [AccountCodes::UserId, AccountCodes::Kind],
        )
        .await?;
        once::create_index(
            manager,
            AccountCodes::Table,
            "idx_account_codes_expires_at",
            [AccountCodes::ExpiresAt],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AccountCodes::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AccountCodes {
    Table,
    Id,
    UserId,
    Kind,
    CodeHash,
    CreatedAt,
    ExpiresAt,
    SpentAt,
}
