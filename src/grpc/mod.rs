//! The gRPC surface: one file per proto service, the bearer-token extraction, and
//! `status`, the one place where domain errors become `tonic::Status`.

mod auth_service;
mod limits;
mod metadata;
mod rate_limit;
mod status;

pub use auth_service::AuthGrpc;
pub use limits::{capped, oversize_message_is_resource_exhausted};
pub use metadata::ValidateCallers;
pub use rate_limit::PeerRateLimits;
