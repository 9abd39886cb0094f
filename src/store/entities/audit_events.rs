use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    pub(crate) occurred_at: DateTimeUtc,
    pub(crate) kind: String,
    pub(crate) outcome: String,
    pub(crate) user_id: Option<Uuid>,
    pub(crate) session_id: Option<Uuid>,
    pub(crate) peer: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) request_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
