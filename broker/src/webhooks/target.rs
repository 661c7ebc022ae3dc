//! Where a webhook may be sent: the optional refusal of private addresses.
//!
//! An operator whose app store is edited by tenants may not want the broker to
//! POST to its own network (a metadata service, an admin port on loopback). With
//! `[webhooks] deny_private_addresses` the URL's host is resolved here, every
//! address it resolves to is checked, and the request is made to a checked
//! address rather than letting the client resolve the name again: a name that
//! answers a public address to the check and a private one to the connect (DNS
//! rebinding) still reaches only the checked address. Redirects are never
//! followed (see `run_sender`), so a receiver cannot send the broker elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use awc::http::Uri;

/// Why a webhook URL was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("the URL has no host")]
    NoHost,
    #[error("the host could not be resolved: {0}")]
    Unresolved(String),
    #[error("the host resolves to {0}, a loopback, private or link-local address (deny_private_addresses is on)")]
    Private(IpAddr),
}

/// Loopback, private (RFC 1918, shared CGNAT space, IPv6 unique local),
/// link-local and unspecified addresses, IPv4 ones also when written as IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(v4),
            None => is_private_v6(v6),
        },
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10: carrier-grade NAT, an operator's network as much as 10/8.
        || (a == 100 && (b & 0xc0) == 64)
        // 0.0.0.0/8 reaches this host on Linux.
        || a == 0
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || ip.is_unique_local() || ip.is_unicast_link_local()
}

/// The host and port a webhook URL names (the port defaulted by its scheme).
fn host_port(uri: &Uri) -> Result<(&str, u16), TargetError> {
    let host = uri.host().ok_or(TargetError::NoHost)?;
    // `[::1]` comes back with its brackets; the resolver wants the bare address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Ok((host, port))
}

/// Resolves a webhook URL's host and picks the address to connect to, refusing
/// the URL when any address it resolves to is private: a name that answers both
/// kinds is as suspect as one that answers only private ones.
pub async fn checked_address(uri: &Uri) -> Result<SocketAddr, TargetError> {
    let (host, port) = host_port(uri)?;
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TargetError::Unresolved(e.to_string()))?
            .collect(),
    };
    pick(&addrs)
}

/// The first address, when none is private.
fn pick(addrs: &[SocketAddr]) -> Result<SocketAddr, TargetError> {
    if let Some(private) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(TargetError::Private(private.ip()));
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| TargetError::Unresolved("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges_are_recognised() {
        for private in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fc12::3",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip(private)), "{private} is private");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip(public)), "{public} is public");
        }
    }

    #[test]
    fn a_name_with_any_private_address_is_refused() {
        let public = SocketAddr::new(ip("93.184.216.34"), 80);
        let private = SocketAddr::new(ip("127.0.0.1"), 80);
        assert_eq!(pick(&[public]), Ok(public));
        assert_eq!(
            pick(&[public, private]),
            Err(TargetError::Private(private.ip()))
        );
        assert!(matches!(pick(&[]), Err(TargetError::Unresolved(_))));
    }

    #[tokio::test]
    async fn literal_and_resolved_hosts_are_checked() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            checked_address(&uri("http://10.0.0.7:9000/hook")).await,
            Err(TargetError::Private(ip("10.0.0.7")))
        );
        assert_eq!(
            checked_address(&uri("http://[::1]/hook")).await,
            Err(TargetError::Private(ip("::1")))
        );
        assert!(matches!(
            checked_address(&uri("http://localhost:8000/")).await,
            Err(TargetError::Private(_))
        ));
        assert_eq!(
            checked_address(&uri("https://93.184.216.34/hook")).await,
            Ok(SocketAddr::new(ip("93.184.216.34"), 443))
        );
    }
}
