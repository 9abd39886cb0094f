use sea_orm::prelude::Uuid;
use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};
use unicode_normalization::UnicodeNormalization as _;

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// Users read per statement while filling `name_key`.
const PAGE: u64 = 1000;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Who acted, for administrative events: a user id or an API key's digest prefix.
        once::add_column(
            manager,
            AuditEvents::Table,
            &mut string_len_null(AuditEvents::Actor, 80),
        )
        .await?;
        // Listing the audit trail of one user, newest first, pages by (user_id, id).
        once::create_index(
            manager,
            AuditEvents::Table,
            "idx_audit_events_user_id_id",
            [AuditEvents::UserId, AuditEvents::Id],
        )
        .await?;

        // The lowercased name, for ListUsers' case-insensitive prefix search by index.
        once::add_column(
            manager,
            Users::Table,
            string_len(Users::NameKey, 400).default(""),
        )
        .await?;
        // Prefix search is a range scan (`key >= q AND key < q'`), which matches exactly
        // the keys starting with q only under a bytewise order: MySQL's binary collation,
        // PostgreSQL's "C" (its default follows the locale). SQLite compares bytes already.
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::MySql => {
                db.execute_unprepared(
                    "ALTER TABLE users MODIFY name_key VARCHAR(400) \
                     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT ''",
                )
                .await?;
            }
            DbBackend::Postgres => {
                for statement in [
                    r#"ALTER TABLE users ALTER COLUMN email TYPE VARCHAR(254) COLLATE "C""#,
                    r#"ALTER TABLE users ALTER COLUMN name_key TYPE VARCHAR(400) COLLATE "C""#,
                ] {
                    db.execute_unprepared(statement).await?;
                }
            }
            _ => {}
        }
        fill_name_keys(db).await?;
        once::create_index(
            manager,
            Users::Table,
            "idx_users_name_key",
            [Users::NameKey],
        )
        .await?;

        // Users whose role or email changed, or who were deleted: every replica polls this
        // to update what ValidateToken reports for tokens issued before the change. No
        // foreign key: a deleted user's row must outlive the user.
        once::create_table(
            manager,
            Table::create()
                .table(UserChanges::Table)
                .col(uuid(UserChanges::Id).primary_key())
                .col(uuid(UserChanges::UserId))
                .col(timestamp_with_time_zone(UserChanges::ChangedAt)),
        )
        .await?;
        once::create_index(
            manager,
            UserChanges::Table,
            "idx_user_changes_changed_at",
            [UserChanges::ChangedAt],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UserChanges::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_users_name_key")
                    .table(Users::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_audit_events_user_id_id")
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (Users::Table.into_iden(), Users::NameKey.into_iden()),
            (
                AuditEvents::Table.into_iden(),
                AuditEvents::Actor.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The search key of a display name: lowercased, NFC (as the store writes it).
fn name_key(name: &str) -> String {
    name.to_lowercase().nfc().collect()
}

/// Fills `name_key` for users stored before it existed, by id: MySQL's default collation
/// would match a name in another case or accent.
async fn fill_name_keys(db: &SchemaManagerConnection<'_>) -> Result<(), DbErr> {
    let mut after: Option<Uuid> = None;
    loop {
        let mut page = Query::select()
            .columns([Users::Id, Users::Name])
            .from(Users::Table)
            .and_where(Expr::col(Users::NameKey).eq(""))
            .order_by(Users::Id, Order::Asc)
            .limit(PAGE)
            .to_owned();
        if let Some(after) = after {
            page.and_where(Expr::col(Users::Id).gt(after));
        }
        let rows = db.query_all(&page).await?;
        for row in &rows {
            let id: Uuid = row.try_get("", "id")?;
            after = Some(id);
            let name: String = row.try_get("", "name")?;
            let update = Query::update()
                .table(Users::Table)
                .value(Users::NameKey, name_key(&name))
                .and_where(Expr::col(Users::Id).eq(id))
                .to_owned();
            db.execute(&update).await?;
        }
        if (rows.len() as u64) < PAGE {
            return Ok(());
        }
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    UserId,
    Id,
    Actor,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Name,
    NameKey,
}

#[derive(DeriveIden)]
enum UserChanges {
    Table,
    Id,
    UserId,
    ChangedAt,
}
