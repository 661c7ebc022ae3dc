//! Limits on login and signup: attempts per account and per IP address, and
//! how many argon2 hashes run at once. Attempts are GCRA buckets (the
//! `governor` crate): a burst, then a steady refill. One `Throttle` is shared by every
//! worker, so the limits hold for the whole process. Refusals are this module's
//! own types ([`TooMany`], [`HashingBusy`]); `error.rs` alone says which HTTP
//! answer each one becomes, so this module does not depend on it.

use std::{hash::Hash, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::AbuseLimits;

/// Past this many tracked keys, keys whose bucket is full again are dropped,
/// so a flood of distinct usernames or addresses cannot grow memory for long.
const PRUNE_ABOVE: usize = 10_000;
const MINUTE: Duration = Duration::from_secs(60);

struct Limiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `n` attempts at once, then one more every `refill`.
    fn burst(n: u32, refill: Duration) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(refill)
            .expect("refill period is not zero")
            .allow_burst(n);
        Self {
            inner: RateLimiter::keyed(quota),
        }
    }

    /// Takes one attempt from `key`'s bucket, or says how long until one is free.
    fn take(&self, key: &K) -> Result<(), Duration> {
        if self.inner.len() > PRUNE_ABOVE {
            self.inner.retain_recent();
        }
        self.inner
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

pub struct Throttle {
    login_account: Limiter<String>,
    login_ip: Limiter<IpAddr>,
    signup_ip: Limiter<IpAddr>,
    hashing: Arc<Semaphore>,
    hash_wait: Duration,
}

/// Refused for now; `retry_after_secs` goes into the `Retry-After` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany {
    pub retry_after_secs: u64,
}

/// Every hashing slot stayed busy for the configured wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingBusy;

impl From<Duration> for TooMany {
    fn from(wait: Duration) -> Self {
        // Rounded up: retrying after the advertised time must succeed.
        Self {
            retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
        }
    }
}

/// Account keys ignore case and surrounding space, so `Alice ` counts as `alice`.
fn account_key(username: &str) -> String {
    username.trim().to_lowercase()
}

impl Throttle {
    pub fn new(limits: &AbuseLimits) -> Self {
        Self {
            // An account gets its burst back at one attempt a minute: however slowly
            // they come, the attempt after the burst within a minute is refused.
            login_account: Limiter::burst(limits.login_per_account_per_min, MINUTE),
            // An address (maybe shared by many people) refills at the full rate.
            login_ip: Limiter::burst(
                limits.login_per_ip_per_min,
                MINUTE / limits.login_per_ip_per_min.max(1),
            ),
            signup_ip: Limiter::burst(limits.signup_per_ip_per_min, MINUTE),
            hashing: Arc::new(Semaphore::new(limits.hash_concurrency.max(1))),
            hash_wait: Duration::from_secs(limits.hash_wait_secs),
        }
    }

    /// Counts a login attempt against the address and the account. Both are
    /// charged even when the first refuses, so a refused flood stays refused.
    pub fn login_attempt(&self, ip: IpAddr, username: &str) -> Result<(), TooMany> {
        let by_ip = self.login_ip.take(&ip);
        let by_account = self.login_account.take(&account_key(username));
        by_ip.and(by_account).map_err(TooMany::from)
    }

    /// Counts a signup against the address, and against the requested name as a login would.
    pub fn signup_attempt(&self, ip: IpAddr, username: &str) -> Result<(), TooMany> {
        let by_ip = self.signup_ip.take(&ip);
        let by_account = self.login_account.take(&account_key(username));
        by_ip.and(by_account).map_err(TooMany::from)
    }

    /// A slot to hash a password in. Waits up to the configured time, then
    /// gives up: a flood queues here instead of each holding ~19 MiB.
    pub async fn hashing_slot(&self) -> Result<OwnedSemaphorePermit, HashingBusy> {
        match tokio::time::timeout(self.hash_wait, self.hashing.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // `acquire_owned` fails only on a closed semaphore, and nothing closes
            // this one; were it closed, no slot would ever come, which is "busy".
            Ok(Err(_)) | Err(_) => Err(HashingBusy),
        }
    }

    /// Hashing slots free right now (for tests and metrics).
    pub fn free_hashing_slots(&self) -> usize {
        self.hashing.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_min: u32) -> AbuseLimits {
        AbuseLimits {
            login_per_account_per_min: per_min,
            login_per_ip_per_min: 1000,
            signup_per_ip_per_min: 2,
            hash_concurrency: 1,
            hash_wait_secs: 1,
        }
    }

    #[test]
    fn the_attempt_past_the_limit_is_refused_with_a_wait() {
        let t = Throttle::new(&limits(3));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(t.login_attempt(ip, "alice"), Ok(()));
        }
        let refused = t.login_attempt(ip, " ALICE ").unwrap_err();
        assert!((1..=60).contains(&refused.retry_after_secs), "{refused:?}");
        assert_eq!(
            t.login_attempt(ip, "bob"),
            Ok(()),
            "other accounts are unaffected"
        );
    }

    #[test]
    fn signups_are_limited_per_address() {
        let t = Throttle::new(&limits(100));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(t.signup_attempt(a, "u1").is_ok() && t.signup_attempt(a, "u2").is_ok());
        assert!(t.signup_attempt(a, "u3").is_err());
        assert!(t.signup_attempt(b, "u4").is_ok());
    }

    #[test]
    fn waits_round_up() {
        assert_eq!(TooMany::from(Duration::from_millis(1)).retry_after_secs, 1);
        assert_eq!(
            TooMany::from(Duration::from_millis(6000)).retry_after_secs,
            6
        );
        assert_eq!(
            TooMany::from(Duration::from_millis(6001)).retry_after_secs,
            7
        );
        assert_eq!(TooMany::from(Duration::ZERO).retry_after_secs, 1);
    }

    #[actix_rt::test]
    async fn hashing_slots_are_bounded() {
        let t = Throttle::new(&limits(10));
        let held = t.hashing_slot().await.unwrap();
        assert_eq!(t.free_hashing_slots(), 0);
        assert_eq!(t.hashing_slot().await.err(), Some(HashingBusy));
        drop(held);
        assert!(t.hashing_slot().await.is_ok());
    }
}
