//! authd: a gRPC authentication service.
//!
//! The layout follows the direction of dependency:
//!
//! * `main.rs` parses the command line ([`cli`]), sets up logging ([`telemetry`]) and
//!   runs a command; `serve` builds an [`startup::App`] from a [`config::Config`] and runs
//!   it until SIGINT or SIGTERM.
//! * [`startup`] wires the pieces together: database pool and migrations, keys,
//!   background tasks (health probe, revocation sync), health and reflection services.
//! * [`grpc`] is the gRPC surface: it translates proto messages to domain calls and maps
//!   domain errors to status codes in one place.
//! * [`auth`] is the domain: users, passwords, sessions, tokens. No tonic, no sea-orm.
//! * [`mail`] sends the domain's emails (one-time codes) over SMTP, off the request path.
//! * [`store`] is persistence: repository traits and their sea-orm implementation. The
//!   schema itself lives in the `migration` crate.
//! * [`proto`] is the code generated from `proto/auth/v1/auth.proto` and `admin.proto`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod mail;
pub mod metrics;
mod redacted;
pub mod startup;
pub mod store;
mod sync;
pub mod telemetry;

/// Code generated from `proto/` by `build.rs`.
pub mod proto {
    /// The `auth` proto package.
    pub mod auth {
        /// `auth.v1`: the public API.
        #[allow(
            missing_docs,
            unreachable_pub,
            missing_debug_implementations,
            clippy::all
        )]
        pub mod v1 {
            tonic::include_proto!("auth.v1");

            /// The encoded descriptor set of `auth.proto`, `admin.proto` and their imports,
            /// for reflection.
            pub const FILE_DESCRIPTOR_SET: &[u8] =
                include_bytes!(concat!(env!("OUT_DIR"), "/auth_descriptor.bin"));
        }
    }
}
