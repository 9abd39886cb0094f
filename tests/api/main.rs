//! authd end to end: the real server over real gRPC on 127.0.0.1:0, against the database
//! AUTHD_TEST_DATABASE_URL names (SQLite when unset). Logs stay silent unless TEST_LOG is set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod access;
mod account;
mod admin;
mod audit;
mod cli;
mod crash;
mod durability;
mod examples;
mod faults;
mod gateway;
mod get_me;
mod health;
mod helpers;
mod keys;
mod lifecycle;
mod limits;
mod login;
mod logout;
mod mail_sink;
mod metrics;
mod outage;
mod purge;
mod recovery;
mod refresh;
mod register;
mod replicas;
mod throttle;
mod tls;
mod traces;
mod upgrade;
mod validate;
mod verification;
mod workload;
