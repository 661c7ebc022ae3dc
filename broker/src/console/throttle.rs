//! Throttling of console token guesses, per client address.
//!
//! Every wrong token offered (login form or `Authorization: Bearer`) takes one
//! token from its address's bucket of `failed_logins_per_minute`, refilling at
//! that rate. With the bucket empty, every attempt from that address is answered
//! 429 with `Retry-After`, whether its token is right or not (otherwise the
//! throttle would still tell a right guess apart). Session cookies are not
//! counted: their ids are random and 256 bits long, and an expired one must not
//! lock its own page out.
//!
//! The address is the TCP peer's, counted as [`counted_as`] does for connection
//! limits (no forwarded headers, which any client can write). Behind a reverse
//! proxy every client shares the proxy's address, so guesses through the proxy
//! throttle everyone using it; the operator can still log in through
//! `metrics_addr` or from another address.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::core::{ip_limit::counted_as, rate::TokenBucket};

/// Addresses tracked at most; past this, addresses not yet tracked share one bucket
/// (so many addresses cannot grow the table, nor guess faster than one address).
const MAX_ADDRESSES: usize = 10_000;

/// Where addresses that do not fit in the table are counted together.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[derive(Debug)]
pub struct LoginThrottle {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl LoginThrottle {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `peer` has no failures left; `peer` is `None` for a
    /// connection without an IP address (counted with the overflow).
    pub fn check(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        let key = key_in(&buckets, peer);
        match buckets.get_mut(&key).and_then(|b| b.wait(now)) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a wrong token offered from `peer`.
    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_ADDRESSES {
            // Full buckets say nothing: forgetting them makes room.
            buckets.retain(|_, b| !b.is_full(now));
        }
        let key = key_in(&buckets, peer);
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::per_minute(self.per_minute, now))
            .take(now);
    }
}

/// The bucket `peer` is counted in.
fn key_in(buckets: &HashMap<IpAddr, TokenBucket>, peer: Option<IpAddr>) -> IpAddr {
    match peer.map(counted_as) {
        Some(ip) if buckets.contains_key(&ip) || buckets.len() < MAX_ADDRESSES => ip,
        _ => OVERFLOW,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_out_of_failures_waits_and_others_do_not() {
        let t = LoginThrottle::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check(ip("192.0.2.1"), t0), Ok(()));
            t.failed(ip("192.0.2.1"), t0);
        }
        let wait = t.check(ip("192.0.2.1"), t0).unwrap_err();
        assert!((19.0..=21.0).contains(&wait.as_secs_f32()), "{wait:?}");
        assert_eq!(t.check(ip("192.0.2.2"), t0), Ok(()), "another address");
        assert_eq!(
            t.check(ip("192.0.2.1"), t0 + Duration::from_secs(21)),
            Ok(()),
            "one more try after 60/3 s"
        );
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let t = LoginThrottle::new(1);
        let t0 = Instant::now();
        t.failed(ip("2001:db8:1:2::1"), t0);
        assert!(t.check(ip("2001:db8:1:2::ffff"), t0).is_err());
        assert!(t.check(ip("2001:db8:1:3::1"), t0).is_ok());
    }

    #[test]
    fn past_the_table_size_new_addresses_share_one_bucket() {
        let t = LoginThrottle::new(2);
        let t0 = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 {
            t.failed(Some(IpAddr::V4(i.into())), t0);
        }
        let (a, b) = (ip("203.0.113.1"), ip("203.0.113.2"));
        t.failed(a, t0);
        t.failed(b, t0);
        assert!(t.check(a, t0).is_err() && t.check(b, t0).is_err());
        assert!(
            t.check(Some(IpAddr::V4(7.into())), t0).is_ok(),
            "tracked addresses keep their own"
        );
        // Once the tracked buckets are full again, they are forgotten to make room.
        let later = t0 + Duration::from_secs(61);
        t.failed(a, later);
        assert!(t.check(b, later).is_ok(), "b is no longer counted with a");
    }
}
