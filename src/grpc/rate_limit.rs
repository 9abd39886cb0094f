//! Per-client-address token buckets for Register and Login (ASVS 2.4.1), so one address
//! cannot flood account creation or spread password guesses over many accounts.
//!
//! The key is the TCP peer address. Behind a proxy every call shares the proxy's address,
//! so set the rates for the proxy's whole traffic there, or rate-limit at the proxy.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};
use tonic::Request;

use crate::auth::AuthError;

/// The Register and Login buckets.
#[derive(Debug)]
pub struct PeerRateLimits {
    login: DefaultKeyedRateLimiter<IpAddr>,
    register: DefaultKeyedRateLimiter<IpAddr>,
}

/// Which bucket a call draws from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bucket {
    Login,
    Register,
}

impl PeerRateLimits {
    /// Buckets that hold (and refill) this many calls per minute per address.
    pub fn per_minute(login: NonZeroU32, register: NonZeroU32) -> Self {
        Self {
            login: DefaultKeyedRateLimiter::keyed(Quota::per_minute(login)),
            register: DefaultKeyedRateLimiter::keyed(Quota::per_minute(register)),
        }
    }

    pub(super) fn check<T>(&self, bucket: Bucket, request: &Request<T>) -> Result<(), AuthError> {
        // No address (not TCP): nothing to key on, and nothing outside can reach it.
        let Some(peer) = request.remote_addr().map(|addr| addr.ip()) else {
            return Ok(());
        };
        let limiter = match bucket {
            Bucket::Login => &self.login,
            Bucket::Register => &self.register,
        };
        limiter.check_key(&peer).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            AuthError::RateLimited {
                retry_after: wait.max(Duration::from_millis(1)),
            }
        })
    }

    /// Forgets addresses whose buckets are full again, bounding memory.
    pub fn forget_idle(&self) {
        self.login.retain_recent();
        self.register.retain_recent();
    }
}
