//! The gRPC surface: one file per proto service (AdminService with the gate that admits its
//! callers, ExtAuthz answering Envoy's external authorization), the bearer-token and API-key
//! extraction, gRPC-Web's CORS policy, and
//! `status`, the one place where domain errors become `tonic::Status`.

mod access_log;
mod admin_service;
mod auth_service;
mod convert;
mod ext_authz;
mod limits;
mod metadata;
pub(crate) mod observe;
mod proxies;
mod rate_limit;
mod status;
mod web;
mod well_known;

pub use access_log::{AccessLogLayer, CallInfo, REQUEST_ID_MAX_BYTES, RequestId};
pub use admin_service::{AdminGate, AdminGrpc};
pub use auth_service::AuthGrpc;
pub use ext_authz::ExtAuthz;
pub use limits::{capped, oversize_message_is_resource_exhausted};
pub use metadata::{ApiKeys, ValidateCallers};
pub use proxies::TrustedProxies;
pub use rate_limit::PeerRateLimits;
pub use web::cors_layer;
pub use well_known::{JWKS_PATH, JwksLayer};
