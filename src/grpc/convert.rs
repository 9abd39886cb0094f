//! Conversions the services share: domain values to proto messages, and the caller of a
//! request.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use tonic::Request;

use super::access_log::CallInfo;
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
    let mut caller = Caller::new(client_ip(request), user_agent);
    if let Some(call) = request.extensions().get::<CallInfo>() {
        caller = caller.with_request_id(call.request_id.as_str());
    }
    caller
}

/// The client's address: behind trusted proxies, the one they name (see
/// [`super::access_log`]).
pub(super) fn client_ip<T>(request: &Request<T>) -> Option<IpAddr> {
    match request.extensions().get::<CallInfo>() {
        Some(call) => call.client,
        None => request.remote_addr().map(|addr| addr.ip()),
    }
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

/// A public key in GetJwks' message: the members RFC 7517 and RFC 7518 name, as the JWK
/// type (whose serde names are those members) writes them.
pub(super) fn jwk_to_proto(key: &auth::PublicJwk) -> pb::JsonWebKey {
    let json = serde_json::to_value(key.jwk()).unwrap_or_default();
    let member = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    pb::JsonWebKey {
        kid: key.kid().to_owned(),
        kty: member("kty").unwrap_or_default(),
        alg: member("alg").unwrap_or_default(),
        r#use: member("use").unwrap_or_default(),
        crv: member("crv"),
        x: member("x"),
        y: member("y"),
        n: member("n"),
        e: member("e"),
    }
}
