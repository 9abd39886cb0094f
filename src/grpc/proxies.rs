//! Which address a call came from when it came through a proxy (AUTHD_TRUSTED_PROXIES).
//!
//! Only a direct peer inside a trusted network may say who its client was; anyone else's
//! `x-forwarded-for` is the client's own claim, and ignored. Each proxy appends the address
//! it saw to `x-forwarded-for`, so the list is read from the right: the first hop that is
//! not a trusted proxy is the client (everything left of it is the client's to write).
//! That holds only if every trusted proxy appends to the list (or, for Envoy's
//! `x-envoy-external-address`, sets it and drops the client's): a trusted proxy that passes
//! a client's headers on untouched lets the client name any address.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The networks whose peers' forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks.iter().any(|net| net.contains(&address))
    }

    /// The client's address: the direct `peer` unless it is a trusted proxy, in which case
    /// the right-most untrusted hop of `x-forwarded-for`, else Envoy's
    /// `x-envoy-external-address`, else the peer itself.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .collect::<Vec<_>>();
        let forwarded = !hops.is_empty();
        let mut client = peer;
        while let Some(hop) = hops.pop() {
            // Whatever a hop we cannot read says, the proxy that passed it on is the
            // last address known.
            let Some(address) = parse_ip(hop) else {
                return client;
            };
            client = address;
            if !self.trusts(address) {
                return client;
            }
        }
        if forwarded {
            return client;
        }
        headers
            .get("x-envoy-external-address")
            .and_then(|value| parse_ip(value.as_bytes()))
            .unwrap_or(peer)
    }
}

/// An address as proxies write it: bare, or with the port some gateways add
/// (`192.0.2.1:4711`, `[2001:db8::1]:443`).
fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let address = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<std::net::SocketAddr>().map(|addr| addr.ip()))
        .ok()?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|net| net.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let spoofed = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-envoy-external-address", "5.6.7.8"),
        ]);
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &spoofed),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_right_most_untrusted_hop() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.1/32"]);
        // The client wrote 6.6.6.6 itself; 198.51.100.7 is what the first proxy saw.
        let forwarded = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")]);
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &forwarded),
            ip("198.51.100.7")
        );
        // Several header lines are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7,10.9.9.9"),
        ]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &split), ip("198.51.100.7"));
    }

    #[test]
    fn envoys_external_address_counts_only_without_a_forwarded_list() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let envoy = headers(&[("x-envoy-external-address", "198.51.100.7")]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &envoy), ip("198.51.100.7"));
        let both = headers(&[
            ("x-forwarded-for", "198.51.100.8"),
            ("x-envoy-external-address", "198.51.100.7"),
        ]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &both), ip("198.51.100.8"));
    }

    #[test]
    fn unreadable_hops_stop_at_the_proxy_that_passed_them() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let garbage = headers(&[("x-forwarded-for", "198.51.100.7, not-an-ip, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &garbage), ip("10.0.0.2"));
        // Only trusted hops: the farthest one is as near the client as can be known.
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &all_trusted), ip("10.0.0.3"));
    }

    #[test]
    fn hops_with_ports_name_their_address() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let ported = headers(&[("x-forwarded-for", "198.51.100.7:4711, [2001:db8::1]:443")]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &ported), ip("2001:db8::1"));
        let v4 = headers(&[("x-forwarded-for", "198.51.100.7:4711")]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &v4), ip("198.51.100.7"));
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_match_ipv4_networks() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.1"), &forwarded),
            ip("198.51.100.7")
        );
    }
}
