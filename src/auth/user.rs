//! A user as the use cases hand it out: the stored record without its password hash.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::UserRecord;

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub active: bool,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a session was last started by Register or Login.
    pub last_login_at: Option<DateTime<Utc>>,
}

impl From<UserRecord> for User {
    fn from(record: UserRecord) -> Self {
        let UserRecord {
            id,
            email,
            name,
            role,
            password_hash: _,
            active,
            email_verified,
            created_at,
            updated_at,
            last_login_at,
        } = record;
        Self {
            id,
            email,
            name,
            role,
            active,
            email_verified,
            created_at,
            updated_at,
            last_login_at,
        }
    }
}
