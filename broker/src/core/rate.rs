//! A token bucket: `rate` events per second with bursts of up to `rate`.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate: f32,
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate as f32,
            tokens: rate as f32,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
