//! Schema changes that can run again over their own partial work (see the crate docs).

use sea_orm_migration::prelude::*;

/// CREATE TABLE IF NOT EXISTS.
pub(crate) async fn create_table(
    manager: &SchemaManager<'_>,
    table: &mut TableCreateStatement,
) -> Result<(), DbErr> {
    manager.create_table(table.if_not_exists().take()).await
}

/// CREATE INDEX `name` ON `table` (`columns`) unless it exists: MySQL has no IF NOT EXISTS
/// for indexes.
pub(crate) async fn create_index<C: IntoIndexColumn>(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    name: &str,
    columns: impl IntoIterator<Item = C>,
) -> Result<(), DbErr> {
    let table = table.into_iden();
    if manager.has_index(table.to_string(), name).await? {
        return Ok(());
    }
    let mut index = Index::create();
    index.name(name).table(table);
    for column in columns {
        index.col(column);
    }
    manager.create_index(index).await
}

/// ALTER TABLE `table` ADD `column` unless it exists: neither SQLite nor MySQL has ADD
/// COLUMN IF NOT EXISTS.
pub(crate) async fn add_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: &mut ColumnDef,
) -> Result<(), DbErr> {
    let table = table.into_iden();
    let name = column.get_column_name();
    if manager.has_column(table.to_string(), &name).await? {
        return Ok(());
    }
    manager
        .alter_table(Table::alter().table(table).add_column(column).to_owned())
        .await
}
