//! A token bucket: `rate` events per second with bursts of up to `rate`, or
//! (for rarer events such as failed logins) `n` a minute with bursts of `n`.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f32,
    /// Most tokens held.
    burst: f32,
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32) -> Self {
        Self::with(rate as f32, rate as f32, Instant::now())
    }

    /// `n` a minute, with bursts of up to `n`, full at `now`.
    pub fn per_minute(n: u32, now: Instant) -> Self {
        Self::with(n as f32 / 60.0, n as f32, now)
    }

    fn with(rate: f32, burst: f32, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Without taking anything: `None` if a token is there, else how long until one is.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        (self.tokens < 1.0).then(|| {
            Duration::from_secs_f32((1.0 - self.tokens) / self.rate.max(f32::MIN_POSITIVE))
        })
    }

    /// Whether the bucket is full again (so forgetting it changes nothing).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(
            b.take(t0 + Duration::from_millis(400)),
            "0.4 s at 3/s refills one token"
        );
        assert!(!b.take(t0 + Duration::from_millis(400)));
    }

    #[test]
    fn per_minute_says_how_long_to_wait_without_taking() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(2, t0);
        assert_eq!(b.wait(t0), None);
        assert!(b.take(t0) && b.take(t0));
        let wait = b.wait(t0).expect("empty");
        assert!((29.9..=30.1).contains(&wait.as_secs_f32()), "{wait:?}");
        assert_eq!(b.wait(t0), Some(wait), "waiting takes nothing");
        assert_eq!(b.wait(t0 + Duration::from_secs(31)), None);
        assert!(!b.is_full(t0 + Duration::from_secs(31)));
        assert!(b.is_full(t0 + Duration::from_secs(61)));
    }
}
