//! Console login sessions: what the login cookie holds instead of the token.
//!
//! A right token at `POST /console/login` opens a session: 32 random bytes from
//! the operating system's generator, hex-encoded, kept here with its expiry
//! (`session_secs` after the login). The cookie carries only that id, so a leaked
//! cookie is not the token, ends with its session, and `POST /console/logout`
//! revokes it on the broker, not just in the browser. At most `max_sessions` are
//! live; a login past that ends the oldest session, so a forgotten browser never
//! locks the operator out. A live feed opened with a session ends with it
//! ([`Ended`]). Sessions live in this process: a restart logs everyone out, and
//! each cluster node has its own.

use std::{
    collections::HashMap,
    fmt::Write,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use rand::{rngs::OsRng, RngCore};
use tokio::sync::watch;

/// Length of a session id as the cookie holds it (32 bytes, hex).
const ID_LEN: usize = 64;

#[derive(Debug)]
pub struct LoginSessions {
    lifetime: Duration,
    max: usize,
    live: Mutex<HashMap<String, Session>>,
}

#[derive(Debug)]
struct Session {
    expires: Instant,
    /// Dropped with the session (logout, eviction, expiry): what [`Ended`] waits for.
    alive: watch::Sender<()>,
}

/// Resolves when a session ends, for what it keeps open (a live feed).
pub struct Ended {
    expires: Instant,
    alive: watch::Receiver<()>,
}

impl Ended {
    pub async fn wait(&mut self) {
        tokio::select! {
            // Nothing is ever sent: this resolves only when the session is dropped.
            _ = self.alive.changed() => {}
            _ = tokio::time::sleep_until(self.expires.into()) => {}
        }
    }
}

impl LoginSessions {
    pub fn new(lifetime: Duration, max: usize) -> Self {
        Self {
            lifetime,
            max: max.max(1),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts (the cookie's `Max-Age`).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session and returns its id, ending the oldest one if `max` are live.
    pub fn open(&self, now: Instant) -> String {
        let mut bytes = [0u8; ID_LEN / 2];
        OsRng.fill_bytes(&mut bytes);
        let id = bytes
            .iter()
            .fold(String::with_capacity(ID_LEN), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
        let mut live = self.live.lock();
        live.retain(|_, s| s.expires > now);
        if live.len() >= self.max {
            // Every session lasts as long, so the first to expire is the oldest.
            let oldest = live
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                live.remove(&oldest);
            }
        }
        let session = Session {
            expires: now + self.lifetime,
            alive: watch::channel(()).0,
        };
        live.insert(id.clone(), session);
        id
    }

    /// For a session that is open and not expired: what resolves when it ends.
    pub fn ended(&self, id: &str, now: Instant) -> Option<Ended> {
        if id.len() != ID_LEN {
            return None;
        }
        let mut live = self.live.lock();
        match live.get(id) {
            Some(s) if s.expires > now => Some(Ended {
                expires: s.expires,
                alive: s.alive.subscribe(),
            }),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session (logout); unknown ids are ignored.
    pub fn close(&self, id: &str) {
        self.live.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl LoginSessions {
        fn is_live(&self, id: &str, now: Instant) -> bool {
            self.ended(id, now).is_some()
        }
    }

    #[test]
    fn ids_are_random_hex_and_live_until_closed_or_expired() {
        let s = LoginSessions::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        let (a, b) = (s.open(t0), s.open(t0));
        assert_ne!(a, b);
        assert_eq!(a.len(), ID_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(s.is_live(&a, t0) && s.is_live(&b, t0));
        s.close(&a);
        assert!(!s.is_live(&a, t0), "closed at logout");
        assert!(!s.is_live(&b, t0 + Duration::from_secs(10)), "expired");
        assert!(!s.is_live("", t0) && !s.is_live(&"0".repeat(ID_LEN), t0));
    }

    #[tokio::test]
    async fn what_a_session_keeps_open_ends_with_it() {
        let s = LoginSessions::new(Duration::from_secs(100), 8);
        let id = s.open(Instant::now());
        let mut ended = s.ended(&id, Instant::now()).unwrap();
        s.close(&id);
        tokio::time::timeout(Duration::from_secs(1), ended.wait())
            .await
            .expect("ends at logout");
        let short = LoginSessions::new(Duration::from_millis(50), 8);
        let id = short.open(Instant::now());
        let mut ended = short.ended(&id, Instant::now()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), ended.wait())
            .await
            .expect("ends at expiry");
    }

    #[test]
    fn past_max_the_oldest_session_ends() {
        let s = LoginSessions::new(Duration::from_secs(100), 2);
        let t0 = Instant::now();
        let first = s.open(t0);
        let second = s.open(t0 + Duration::from_secs(1));
        let third = s.open(t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(3);
        assert!(!s.is_live(&first, now));
        assert!(s.is_live(&second, now) && s.is_live(&third, now));
    }
}
