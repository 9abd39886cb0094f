//! Per-email login failure counters.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait as _},
};

use super::SqlStore;
use crate::store::{
    Admission, StoreError, StoreResult, ThrottleRule, ThrottleStore, entities::login_throttle,
};

#[async_trait]
impl ThrottleStore for SqlStore {
    async fn admit_login(
        &self,
        key: &str,
        rule: &ThrottleRule,
        now_ms: i64,
    ) -> StoreResult<Admission> {
        let (key, rule) = (key.to_owned(), *rule);
        let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
        self.detached(move |store| async move {
            let key = key.as_str();
            use login_throttle::Column;
            // One conditional UPDATE is the whole check: the WHERE clause admits the attempt
            // only below the limit or after the wait, and the SET counts it and, from the
            // limit on, starts the next (longer) wait at once, so concurrent attempts after
            // the window opens see it closed again. `blocked_until` is assigned before
            // `failures` because MySQL evaluates SET left to right with the new values.
            let failures = Expr::col(Column::Failures);
            let excess = failures.clone().add(2 - rule.max_failures);
            let window = Expr::case(
                excess
                    .clone()
                    .mul(rule.base_window_ms)
                    .gt(rule.max_window_ms),
                rule.max_window_ms,
            )
            .finally(excess.mul(rule.base_window_ms));
            let blocked_until = Expr::case(
                failures.clone().add(1).gte(rule.max_failures),
                Expr::val(now_ms).add(Into::<Expr>::into(window)),
            )
            .finally(0i64);
            let admit = || {
                login_throttle::Entity::update_many()
                    .col_expr(Column::BlockedUntil, blocked_until.clone().into())
                    .col_expr(Column::Failures, failures.clone().add(1))
                    .col_expr(Column::UpdatedAt, Expr::value(now))
                    .filter(Column::Key.eq(key))
                    .filter(
                        Condition::any()
                            .add(Column::Failures.lt(rule.max_failures))
                            .add(Column::BlockedUntil.lte(now_ms)),
                    )
            };
            // Each round either admits, finds the counter closed, or sees it created or
            // reopened by a concurrent attempt since its UPDATE and tries again.
            for _ in 0..4 {
                if admit().exec(&store.db).await?.rows_affected == 1 {
                    return Ok(Admission::Admitted);
                }
                let row = login_throttle::Entity::find_by_id(key.to_owned())
                    .one(&store.db)
                    .await?;
                if let Some(row) = row {
                    let closed = row.failures >= rule.max_failures && row.blocked_until > now_ms;
                    if closed {
                        return Ok(Admission::Throttled {
                            until_ms: row.blocked_until,
                        });
                    }
                    continue;
                }
                // First attempt for this key: create its counter (a concurrent first attempt
                // may win that race, which is fine) and try again.
                let inserted = login_throttle::Entity::insert(login_throttle::ActiveModel {
                    key: Set(key.to_owned()),
                    failures: Set(0),
                    blocked_until: Set(0),
                    updated_at: Set(now),
                })
                .exec_without_returning(&store.db)
                .await
                .map_err(StoreError::from);
                match inserted {
                    Ok(_) | Err(StoreError::Conflict) => {}
                    Err(err) => return Err(err),
                }
            }
            Err(StoreError::Other(anyhow::anyhow!(
                "login throttle counter kept changing under concurrent attempts"
            )))
        })
        .await
    }

    async fn reset_login_failures(&self, key: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let key = key.to_owned();
        self.detached(move |store| async move {
            login_throttle::Entity::update_many()
                .col_expr(login_throttle::Column::Failures, Expr::value(0i64))
                .col_expr(login_throttle::Column::BlockedUntil, Expr::value(0i64))
                .col_expr(login_throttle::Column::UpdatedAt, Expr::value(now))
                .filter(login_throttle::Column::Key.eq(key))
                .exec(&store.db)
                .await?;
            Ok(())
        })
        .await
    }
}
