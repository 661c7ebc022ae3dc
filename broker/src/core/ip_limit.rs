//! How many connections one client address may hold at once, over every app
//! on this node: `max_connections_per_ip` (WebSocket connections and
//! HTTP-fallback sessions), and `[http_fallback] max_sessions_per_ip_percent`
//! (HTTP-fallback sessions).
//!
//! The address is the TCP peer's. `X-Forwarded-For` and similar headers are
//! never read: any client can write them. Behind a reverse proxy every
//! connection comes from the proxy, so limit per client at the proxy instead
//! (and leave `max_connections_per_ip` at 0, `max_sessions_per_ip_percent` at 100). IPv6 clients usually hold a whole /64, so IPv6
//! addresses are counted per /64; IPv4-mapped IPv6 addresses count as IPv4.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use dashmap::DashMap;

/// Open connections per client address.
#[derive(Debug)]
pub struct IpLimiter {
    max: usize,
    open: Arc<DashMap<IpAddr, usize>>,
}

/// One admitted connection's place in its address's count; dropping it frees the place.
#[derive(Debug)]
pub struct IpSlot {
    open: Arc<DashMap<IpAddr, usize>>,
    key: IpAddr,
}

impl IpLimiter {
    /// A limiter allowing `max` connections per address, or `None` when `max` is 0 (no limit).
    pub fn new(max: usize) -> Option<Self> {
        (max > 0).then(|| Self {
            max,
            open: Arc::new(DashMap::new()),
        })
    }

    /// Takes a place for a connection from `ip`; `None` when the address is at the limit.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let key = counted_as(ip);
        let mut count = self.open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            open: self.open.clone(),
            key,
        })
    }

    /// Connections one address may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Addresses holding at least one connection (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.open.len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        // Remove the entry at zero so the map holds only addresses with open connections.
        self.open.remove_if_mut(&self.key, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64 (also for console logins).
pub fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_max_places_and_dropping_one_frees_it() {
        let limiter = IpLimiter::new(2).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = limiter.try_acquire(ip).unwrap();
        let _b = limiter.try_acquire(ip).unwrap();
        assert!(
            limiter.try_acquire(ip).is_none(),
            "the third connection is refused"
        );
        assert!(
            limiter.try_acquire("192.0.2.8".parse().unwrap()).is_some(),
            "other addresses are counted apart"
        );
        drop(a);
        assert!(
            limiter.try_acquire(ip).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn entries_go_away_with_the_last_connection() {
        let limiter = IpLimiter::new(5).unwrap();
        let slot = limiter
            .try_acquire("198.51.100.1".parse().unwrap())
            .unwrap();
        assert_eq!(limiter.addresses(), 1);
        drop(slot);
        assert_eq!(limiter.addresses(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = IpLimiter::new(1).unwrap();
        let _a = limiter
            .try_acquire("2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        assert!(
            limiter
                .try_acquire("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_none(),
            "same /64"
        );
        assert!(
            limiter
                .try_acquire("2001:db8:1:3::1".parse().unwrap())
                .is_some(),
            "another /64"
        );
        let _v4 = limiter.try_acquire("203.0.113.5".parse().unwrap()).unwrap();
        assert!(
            limiter
                .try_acquire("::ffff:203.0.113.5".parse().unwrap())
                .is_none(),
            "mapped form of the same IPv4"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(IpLimiter::new(0).is_none());
    }
}
