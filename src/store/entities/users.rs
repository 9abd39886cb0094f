use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    #[sea_orm(unique)]
    pub(crate) email: String,
    pub(crate) name: String,
    /// `name` lowercased, for prefix search (see `store::name_key`).
    pub(crate) name_key: String,
    pub(crate) role: String,
    pub(crate) password_hash: String,
    pub(crate) active: bool,
    pub(crate) email_verified: bool,
    pub(crate) created_at: DateTimeUtc,
    pub(crate) updated_at: DateTimeUtc,
    pub(crate) last_login_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
