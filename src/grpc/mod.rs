//! The gRPC surface: one file per proto service, the bearer-token extraction, and
//! `status`, the one place where domain errors become `tonic::Status`.

mod auth_service;
mod metadata;
mod status;

pub use auth_service::AuthGrpc;
pub use metadata::ApiKeys;
