use sea_orm_migration::{prelude::*, schema::*};

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // What a user sees of their own sessions: the client that started each one, and
        // when they last logged in. Nullable: sessions and users from before have none.
        once::add_column(
            manager,
            Sessions::Table,
            &mut string_len_null(Sessions::UserAgent, 256),
        )
        .await?;
        once::add_column(
            manager,
            Sessions::Table,
            &mut string_len_null(Sessions::Peer, 64),
        )
        .await?;
        once::add_column(
            manager,
            Users::Table,
            &mut timestamp_with_time_zone_null(Users::LastLoginAt),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in [
            (Sessions::Table.into_iden(), Sessions::UserAgent.into_iden()),
            (Sessions::Table.into_iden(), Sessions::Peer.into_iden()),
            (Users::Table.into_iden(), Users::LastLoginAt.into_iden()),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    UserAgent,
    Peer,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    LastLoginAt,
}
