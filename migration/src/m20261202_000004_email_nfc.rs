use sea_orm_migration::prelude::*;
use unicode_normalization::{IsNormalized, UnicodeNormalization as _, is_nfc_quick};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// Emails read per statement.
const PAGE: u64 = 1000;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Emails are compared in Unicode NFC from this release on; one stored decomposed
        // ("e" + U+0301 for "é") by an earlier one would no longer match its owner's
        // login. Each is rewritten in NFC, unless another account already holds that
        // spelling: both are then kept as they are, and named in the log for an operator.
        // Re-running it changes nothing.
        let db = manager.get_connection();
        let mut after = String::new();
        loop {
            let page = Query::select()
                .column(Users::Email)
                .from(Users::Table)
                .and_where(Expr::col(Users::Email).gt(after.as_str()))
                .order_by(Users::Email, Order::Asc)
                .limit(PAGE)
                .to_owned();
            let rows = db.query_all(&page).await?;
            let emails = rows
                .iter()
                .map(|row| row.try_get::<String>("", "email"))
                .collect::<Result<Vec<_>, _>>()?;
            for email in &emails {
                if is_nfc_quick(email.chars()) == IsNormalized::Yes {
                    continue;
                }
                let normalized: String = email.nfc().collect();
                if normalized == *email {
                    continue;
                }
                let taken = Query::select()
                    .expr(Expr::val(1))
                    .from(Users::Table)
                    .and_where(Expr::col(Users::Email).eq(normalized.as_str()))
                    .to_owned();
                if db.query_one(&taken).await?.is_some() {
                    tracing::warn!(
                        email = %email.escape_unicode(),
                        "an email's NFC spelling belongs to another account; left as it was"
                    );
                    continue;
                }
                let update = Query::update()
                    .table(Users::Table)
                    .value(Users::Email, normalized.as_str())
                    .and_where(Expr::col(Users::Email).eq(email.as_str()))
                    .to_owned();
                db.execute(&update).await?;
            }
            match emails.last() {
                Some(last) if emails.len() as u64 == PAGE => after.clone_from(last),
                _ => return Ok(()),
            }
        }
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // The NFC spelling is the same email: nothing to undo.
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Email,
}
