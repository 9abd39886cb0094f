//! Per-client-address token buckets for Register and Login (ASVS 2.4.1), so one address
//! cannot flood account creation or spread password guesses over many accounts.
//!
//! The key is the client's address (the TCP peer's, or behind AUTHD_TRUSTED_PROXIES the
//! one they forward); for IPv6 its network prefix (a /64 by default): one host commonly
//! holds a whole /64, and keying on full addresses would give it 2^64 buckets.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};
use tonic::Request;

use super::convert::client_ip;
use crate::auth::AuthError;

/// The Register and Login buckets.
#[derive(Debug)]
pub struct PeerRateLimits {
    login: DefaultKeyedRateLimiter<IpAddr>,
    register: DefaultKeyedRateLimiter<IpAddr>,
    /// How many leading bits of an IPv6 address name one client.
    ipv6_prefix: u8,
}

/// Which bucket a call draws from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bucket {
    Login,
    Register,
}

impl PeerRateLimits {
    /// Buckets that hold (and refill) this many calls per minute per client: an IPv4
    /// address, or an IPv6 network of `ipv6_prefix` bits.
    pub fn per_minute(login: NonZeroU32, register: NonZeroU32, ipv6_prefix: u8) -> Self {
        Self {
            login: DefaultKeyedRateLimiter::keyed(Quota::per_minute(login)),
            register: DefaultKeyedRateLimiter::keyed(Quota::per_minute(register)),
            ipv6_prefix,
        }
    }

    pub(super) fn check<T>(&self, bucket: Bucket, request: &Request<T>) -> Result<(), AuthError> {
        // No address (not TCP): nothing to key on, and nothing outside can reach it.
        let Some(peer) = client_ip(request) else {
            return Ok(());
        };
        let peer = client_key(peer, self.ipv6_prefix);
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

/// The bucket key of an address: IPv4 as it is (an IPv4-mapped IPv6 address included),
/// a 6to4 address (2002::/16) as the IPv4 address it embeds, since whoever holds that one
/// IPv4 address holds all 2^80 of them, and any other IPv6 address with all but its first
/// `prefix` bits cleared.
fn client_key(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.segments()[0] == 0x2002 => {
                let [_, _, a, b, c, d, ..] = v6.octets();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            None => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(address: &str, prefix: u8) -> String {
        client_key(address.parse().unwrap(), prefix).to_string()
    }

    #[test]
    fn ipv6_clients_are_keyed_on_their_network() {
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64),
            "2001:db8:1:2::"
        );
        assert_ne!(key("2001:db8:1:3::1", 64), key("2001:db8:1:2::1", 64));
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8::1", 128), "2001:db8::1");
    }

    #[test]
    fn ipv4_clients_are_keyed_on_their_address_mapped_or_not() {
        assert_eq!(key("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_ne!(key("192.0.2.7", 64), key("192.0.2.8", 64));
    }

    #[test]
    fn six_to_four_clients_are_keyed_on_the_ipv4_address_they_embed() {
        assert_eq!(key("2002:c000:207:1::1", 64), "192.0.2.7");
        assert_eq!(key("2002:c000:207:ffff:1:2:3:4", 64), "192.0.2.7");
        assert_ne!(key("2002:c000:208::1", 64), "192.0.2.7");
    }
}
