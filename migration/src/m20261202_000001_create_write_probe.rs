use sea_orm_migration::{prelude::*, schema::*};

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Rows the health check writes, and deletes in the same transaction, while the
        // database refuses writes (out of space, read-only), to see when writes go through
        // again; a ping only reads.
        once::create_table(
            manager,
            Table::create()
                .table(WriteProbe::Table)
                .col(uuid(WriteProbe::Id).primary_key())
                .col(timestamp_with_time_zone(WriteProbe::WrittenAt))
                .col(blob(WriteProbe::Payload)),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WriteProbe::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WriteProbe {
    Table,
    Id,
    WrittenAt,
    Payload,
}
