//! The gRPC surface: one file per proto service (AdminService with the gate that admits its
//! callers), the bearer-token and API-key extraction, and
//! `status`, the one place where domain errors become `tonic::Status`.

mod admin_service;
mod auth_service;
mod convert;
mod limits;
mod metadata;
mod rate_limit;
mod status;

pub use admin_service::{AdminGate, AdminGrpc};
pub use auth_service::AuthGrpc;
pub use limits::{capped, oversize_message_is_resource_exhausted};
pub use metadata::{ApiKeys, ValidateCallers};
pub use rate_limit::PeerRateLimits;
