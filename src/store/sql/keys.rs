//! Signing keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, sea_query::Expr};
use secrecy::{ExposeSecret, SecretBox};

use super::SqlStore;
use crate::store::{KeyRecord, KeyStore, StoreResult, entities::signing_keys};

#[async_trait]
impl KeyStore for SqlStore {
    async fn live_keys(&self, algorithms: &[&str]) -> StoreResult<Vec<KeyRecord>> {
        let algorithms: Vec<String> = algorithms.iter().map(|a| (*a).to_owned()).collect();
        self.detached(move |store| async move {
            let keys = signing_keys::Entity::find()
                .filter(signing_keys::Column::Algorithm.is_in(algorithms))
                .filter(signing_keys::Column::RetiredAt.is_null())
                .order_by_asc(signing_keys::Column::CreatedAt)
                .order_by_asc(signing_keys::Column::Kid)
                .all(&store.db)
                .await?;
            Ok(keys.into_iter().map(Into::into).collect())
        })
        .await
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let model = signing_keys::ActiveModel {
            kid: Set(key.kid.clone()),
            algorithm: Set(key.algorithm.clone()),
            private_key: Set(key.private_key.expose_secret().clone()),
            public_key: Set(key.public_key.clone()),
            created_at: Set(key.created_at),
            retired_at: Set(None),
        };
        self.detached(move |store| async move {
            signing_keys::Entity::insert(model)
                .exec_without_returning(&store.db)
                .await?;
            Ok(())
        })
        .await
    }

    async fn retire_key(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let kid = kid.to_owned();
        self.detached(move |store| async move {
            signing_keys::Entity::update_many()
                .col_expr(signing_keys::Column::RetiredAt, Expr::value(now))
                .filter(signing_keys::Column::Kid.eq(kid))
                .filter(signing_keys::Column::RetiredAt.is_null())
                .exec(&store.db)
                .await?;
            Ok(())
        })
        .await
    }
}

impl From<signing_keys::Model> for KeyRecord {
    fn from(m: signing_keys::Model) -> Self {
        Self {
            kid: m.kid,
            algorithm: m.algorithm,
            private_key: SecretBox::new(Box::new(m.private_key)),
            public_key: m.public_key,
            created_at: m.created_at,
        }
    }
}
