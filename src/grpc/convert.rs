//! Conversions the services share: domain values to proto messages, and the caller of a
//! request.

use chrono::{DateTime, Utc};
use tonic::Request;

use crate::{
    auth::{self, Caller},
    proto::auth::v1 as pb,
};

/// Where a request came from.
pub(super) fn caller<T>(request: &Request<T>) -> Caller {
    let user_agent = request
        .metadata()
        .get("user-agent")
        .and_then(|value| value.to_str().ok());
    Caller::new(request.remote_addr(), user_agent)
}

pub(super) fn user_to_proto(user: &auth::User) -> pb::User {
    pb::User {
        id: user.id.hyphenated().to_string(),
        email: user.email.clone(),
        name: user.name.clone(),
        role: user.role.clone(),
        active: user.active,
        email_verified: user.email_verified,
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
        last_login_at: user.last_login_at.map(timestamp),
    }
}

pub(super) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
