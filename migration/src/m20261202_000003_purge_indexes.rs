use sea_orm_migration::prelude::*;

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The purge finds sessions past their refresh expiry and idle login counters.
        once::create_index(
            manager,
            Sessions::Table,
            "idx_sessions_expires_at",
            [Sessions::ExpiresAt],
        )
        .await?;
        once::create_index(
            manager,
            LoginThrottle::Table,
            "idx_login_throttle_updated_at",
            [LoginThrottle::UpdatedAt],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, name) in [
            (Sessions::Table.into_iden(), "idx_sessions_expires_at"),
            (
                LoginThrottle::Table.into_iden(),
                "idx_login_throttle_updated_at",
            ),
        ] {
            manager
                .drop_index(Index::drop().table(table).name(name).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum LoginThrottle {
    Table,
    UpdatedAt,
}
