use sea_orm_migration::{prelude::*, schema::*};

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The request id of the call an event came from, as its log lines carry it.
        // Nullable: events from before, and from the command line, have none.
        once::add_column(
            manager,
            AuditEvents::Table,
            &mut string_len_null(AuditEvents::RequestId, 128),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .drop_column(AuditEvents::RequestId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    RequestId,
}
