use sea_orm_migration::{prelude::*, schema::*};

use crate::once;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Security-relevant events (ASVS 16.2): who, what, when, from where. Never a
        // password or token.
        once::create_table(
            manager,
            Table::create()
                .table(AuditEvents::Table)
                .col(uuid(AuditEvents::Id).primary_key())
                .col(timestamp_with_time_zone(AuditEvents::OccurredAt))
                .col(string_len(AuditEvents::Kind, 32))
                .col(string_len(AuditEvents::Outcome, 32))
                .col(uuid_null(AuditEvents::UserId))
                .col(uuid_null(AuditEvents::SessionId))
                .col(string_len_null(AuditEvents::Peer, 64)),
        )
        .await?;
        for (name, column) in [
            ("idx_audit_events_occurred_at", AuditEvents::OccurredAt),
            ("idx_audit_events_user_id", AuditEvents::UserId),
        ] {
            once::create_index(manager, AuditEvents::Table, name, [column]).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OccurredAt,
    Kind,
    Outcome,
    UserId,
    SessionId,
    Peer,
}
