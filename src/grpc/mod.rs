//! The gRPC surface: one file per proto service (AdminService with the gate that admits its
//! callers, ExtAuthz answering Envoy's external authorization), the bearer-token and API-key
//! extraction, gRPC-Web's CORS policy, and
//! `status`, the one place where domain errors become `tonic::Status`.

mod admin_service;
mod auth_service;
mod convert;
mod ext_authz;
mod limits;
mod metadata;
mod rate_limit;
mod status;
mod web;

pub use admin_service::{AdminGate, AdminGrpc};
pub use auth_service::AuthGrpc;
pub use ext_authz::ExtAuthz;
pub use limits::{capped, oversize_message_is_resource_exhausted};
pub use metadata::{ApiKeys, ValidateCallers};
pub use rate_limit::PeerRateLimits;
pub use web::cors_layer;
