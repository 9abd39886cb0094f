use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An email is an identity: after authd's own normalization (trimmed, lowercased,
        // NFC) it must compare byte for byte. MySQL's and MariaDB's default collations
        // ignore accents, so "álice@example.com" found alice's account, and the unique
        // index agreed. SQLite and PostgreSQL (deterministic collations) compare bytes
        // already. Re-running it changes nothing.
        if manager.get_database_backend() == DbBackend::MySql {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE users MODIFY email VARCHAR(254) \
                     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE users MODIFY email VARCHAR(254) \
                     CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL",
                )
                .await?;
        }
        Ok(())
    }
}
