use sea_orm_migration::{prelude::*, schema::*};

use crate::{m20261122_000001_create_users::Users, once};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per login. `refresh_hash` is the SHA-256 (hex) of the session's current
        // refresh token; the token itself is never stored.
        once::create_table(
            manager,
            Table::create()
                .table(Sessions::Table)
                .col(uuid(Sessions::Id).primary_key())
                .col(uuid(Sessions::UserId))
                .col(string_len_uniq(Sessions::RefreshHash, 64))
                .col(big_integer(Sessions::Generation))
                .col(timestamp_with_time_zone(Sessions::CreatedAt))
                .col(timestamp_with_time_zone(Sessions::LastUsedAt))
                .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                .col(timestamp_with_time_zone_null(Sessions::RotatedAt))
                .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
                .col(string_len_null(Sessions::RevokedReason, 32))
                .foreign_key(
                    ForeignKey::create()
                        .from(Sessions::Table, Sessions::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                ),
        )
        .await?;
        // Logout of all sessions and deactivation look sessions up by user.
        once::create_index(
            manager,
            Sessions::Table,
            "idx_sessions_user_id",
            [Sessions::UserId],
        )
        .await?;
        // Every replica polls for recently revoked sessions (see auth::revocation).
        once::create_index(
            manager,
            Sessions::Table,
            "idx_sessions_revoked_at",
            [Sessions::RevokedAt],
        )
        .await?;

        // Refresh tokens that were rotated out. Presenting one again is reuse, which revokes
        // its session; keeping every spent hash (not just the last) catches the replay of
        // any older token of the chain.
        once::create_table(
            manager,
            Table::create()
                .table(SpentRefreshTokens::Table)
                .col(string_len(SpentRefreshTokens::TokenHash, 64).primary_key())
                .col(uuid(SpentRefreshTokens::SessionId))
                .col(timestamp_with_time_zone(SpentRefreshTokens::SpentAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(SpentRefreshTokens::Table, SpentRefreshTokens::SessionId)
                        .to(Sessions::Table, Sessions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                ),
        )
        .await?;
        once::create_index(
            manager,
            SpentRefreshTokens::Table,
            "idx_spent_refresh_tokens_session_id",
            [SpentRefreshTokens::SessionId],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SpentRefreshTokens::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Sessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    RefreshHash,
    Generation,
    CreatedAt,
    LastUsedAt,
    ExpiresAt,
    RotatedAt,
    RevokedAt,
    RevokedReason,
}

#[derive(DeriveIden)]
enum SpentRefreshTokens {
    Table,
    TokenHash,
    SessionId,
    SpentAt,
}
