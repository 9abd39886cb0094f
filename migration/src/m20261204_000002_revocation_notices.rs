use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// On PostgreSQL, every statement that revokes sessions or records a user's change
/// notifies `authd_revocations` when its transaction commits (NOTIFY waits for the commit,
/// and a rolled-back one sends nothing), so other replicas sync at once instead of at
/// their next poll. Statement triggers: one revocation of many sessions is one notice.
/// Other databases keep polling; there is nothing to make.
const UP: &[&str] = &[
    "CREATE OR REPLACE FUNCTION authd_notify_revocation() RETURNS trigger \
     LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('authd_revocations', ''); RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS authd_sessions_revoked ON sessions",
    "CREATE TRIGGER authd_sessions_revoked AFTER UPDATE OF revoked_at ON sessions \
     FOR EACH STATEMENT EXECUTE FUNCTION authd_notify_revocation()",
    "DROP TRIGGER IF EXISTS authd_user_changed ON user_changes",
    "CREATE TRIGGER authd_user_changed AFTER INSERT ON user_changes \
     FOR EACH STATEMENT EXECUTE FUNCTION authd_notify_revocation()",
];

const DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS authd_user_changed ON user_changes",
    "DROP TRIGGER IF EXISTS authd_sessions_revoked ON sessions",
    "DROP FUNCTION IF EXISTS authd_notify_revocation()",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, DOWN).await
    }
}

async fn run_on_postgres(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}
