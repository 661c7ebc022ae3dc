//! One app's channel history on this node: a bounded ring of kept event frames
//! per channel, each with its position, when it was kept and whom it excluded.
//!
//! Positions are assigned under the channel's ring lock, and the caller delivers
//! the event inside that same step ([`LocalHistory::keep`]), so subscribers
//! receive a channel's kept events in position order. Every ring has a random
//! epoch: a restarted node, or a ring that expired entirely, starts a new epoch,
//! and a client resuming with the old one is told its history was lost instead
//! of being given a gap.
//!
//! Bounds: `max_events` per channel, `max_age_secs` per event (a ring with no
//! publish for that long is dropped), and `max_bytes` of frames per app: over it
//! the oldest events of the least recently published channels are dropped
//! until the app is back under 90 % of it (resumes into them then fail with
//! `window_exceeded`).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytestring::ByteString;
use dashmap::DashMap;
use parking_lot::Mutex;
use protocol::{
    history::{
        plan, FailReason, HistoryConfig, HistoryQuery, HistoryRequest, Position, Rewind, Window,
    },
    ChannelName, SocketId,
};

/// One kept event.
#[derive(Clone, Debug)]
pub struct KeptEvent {
    pub position: Position,
    /// The frame exactly as live subscribers got it.
    pub frame: ByteString,
    /// The connection it was not sent to (the REST `socket_id`, or a client event's sender).
    pub except: Option<SocketId>,
    /// When it was kept, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl KeptEvent {
    /// Bytes this event holds in the store (its frame and bookkeeping).
    fn cost(&self) -> usize {
        self.frame.len() + std::mem::size_of::<Self>()
    }
}

/// What a subscriber gets: the events to replay, or why continuity cannot be proven.
#[derive(Clone, Debug)]
pub struct Replay {
    pub epoch: String,
    /// The channel's newest position: the client has it once `events` are delivered.
    pub newest: Position,
    /// Events to replay, oldest first (excluded ones already left out).
    pub events: Vec<KeptEvent>,
    pub failed: Option<FailReason>,
}

/// A REST page of a channel's history.
#[derive(Clone, Debug)]
pub struct Page {
    pub window: Window,
    /// In the order asked for.
    pub events: Vec<KeptEvent>,
}

#[derive(Debug)]
struct Ring {
    epoch: String,
    /// Position the next kept event gets.
    next: Position,
    events: VecDeque<KeptEvent>,
    bytes: usize,
    /// Last publish (or creation): rings idle for `max_age_secs` are dropped, and
    /// the memory bound evicts from the least recently published first.
    touched: Instant,
}

impl Ring {
    fn new(now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            next: 1,
            events: VecDeque::new(),
            bytes: 0,
            touched: now,
        }
    }

    fn window(&self) -> Window {
        Window {
            epoch: self.epoch.clone(),
            oldest: self.events.front().map_or(self.next, |e| e.position),
            newest: self.next - 1,
        }
    }

    /// Drops events past the count or age bound; returns the bytes freed.
    fn trim(&mut self, config: &HistoryConfig, now_ms: u64) -> usize {
        let oldest_kept = now_ms.saturating_sub(config.max_age_secs.saturating_mul(1000));
        let mut freed = 0;
        while let Some(front) = self.events.front() {
            if self.events.len() > config.max_events || front.at_ms < oldest_kept {
                freed += front.cost();
                self.events.pop_front();
            } else {
                break;
            }
        }
        self.bytes -= freed;
        freed
    }

    fn evict_oldest(&mut self) -> usize {
        let freed = self.events.pop_front().map_or(0, |e| e.cost());
        self.bytes -= freed;
        freed
    }
}

/// What a channel's ring costs before any event: the ring, its name and the map's entry.
fn ring_cost(channel: &ChannelName) -> usize {
    std::mem::size_of::<Ring>() + channel.as_str().len() + 64
}

/// A random epoch: 16 hex digits, unique per ring and process.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The kept channels of one app on this node.
#[derive(Debug, Default)]
pub struct LocalHistory {
    rings: DashMap<ChannelName, Arc<Mutex<Ring>>>,
    /// Bytes of every ring together (for `max_bytes`).
    bytes: AtomicUsize,
}

impl LocalHistory {
    fn ring(&self, channel: &ChannelName, now: Instant) -> Arc<Mutex<Ring>> {
        if let Some(r) = self.rings.get(channel) {
            return r.clone();
        }
        self.rings
            .entry(channel.clone())
            .or_insert_with(|| {
                // An empty ring costs too (subscribers can make them): it counts against `max_bytes`.
                self.bytes.fetch_add(ring_cost(channel), Ordering::Relaxed);
                Arc::new(Mutex::new(Ring::new(now)))
            })
            .clone()
    }

    /// Keeps an event and hands its position to `deliver`, which runs while the
    /// channel's ring is locked: events reach subscribers in position order.
    pub fn keep<T>(
        &self,
        config: &HistoryConfig,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
        deliver: impl FnOnce(Position) -> T,
    ) -> T {
        let now = Instant::now();
        let at_ms = now_ms();
        let ring = self.ring(channel, now);
        let out = {
            let mut r = ring.lock();
            let position = r.next;
            r.next += 1;
            r.touched = now;
            let event = KeptEvent {
                position,
                frame,
                except,
                at_ms,
            };
            let added = event.cost();
            r.bytes += added;
            r.events.push_back(event);
            let freed = r.trim(config, at_ms);
            self.bytes.fetch_add(added, Ordering::Relaxed);
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            deliver(position)
        };
        // Outside the ring's lock: evicting locks other rings one at a time.
        if self.bytes.load(Ordering::Relaxed) > config.max_bytes {
            self.evict(config.max_bytes / 10 * 9);
        }
        out
    }

    /// Drops the oldest events of the least recently published channels until at most `target` bytes are kept.
    /// A ring left empty goes too (its epoch with it: a later resume into it gets `history_lost`).
    fn evict(&self, target: usize) {
        while self.bytes.load(Ordering::Relaxed) > target {
            let coldest = self
                .rings
                .iter()
                .map(|e| (e.value().lock().touched, e.key().clone(), e.value().clone()))
                .min_by_key(|(touched, _, _)| *touched);
            let Some((_, name, ring)) = coldest else {
                return;
            };
            {
                let mut r = ring.lock();
                while self.bytes.load(Ordering::Relaxed) > target {
                    let freed = r.evict_oldest();
                    if freed == 0 {
                        break;
                    }
                    self.bytes.fetch_sub(freed, Ordering::Relaxed);
                }
            }
            if self.bytes.load(Ordering::Relaxed) > target {
                self.remove_if_empty(&name, &ring);
            }
        }
    }

    /// Drops a channel's ring if it is still `ring` and holds no events.
    fn remove_if_empty(&self, name: &ChannelName, ring: &Arc<Mutex<Ring>>) {
        let removed = self.rings.remove_if(name, |_, r| {
            Arc::ptr_eq(r, ring) && r.lock().events.is_empty()
        });
        if removed.is_some() {
            self.bytes.fetch_sub(ring_cost(name), Ordering::Relaxed);
        }
    }

    /// What a subscriber asking `request` gets now (the ring is made if the channel has none yet).
    pub fn replay(
        &self,
        config: &HistoryConfig,
        channel: &ChannelName,
        request: &HistoryRequest,
    ) -> Replay {
        let now = Instant::now();
        let now_ms = now_ms();
        let ring = self.ring(channel, now);
        let mut r = ring.lock();
        let freed = r.trim(config, now_ms);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        let window = r.window();
        select(
            window,
            r.events.iter(),
            request,
            Duration::from_secs(config.max_age_secs),
            now_ms,
        )
    }

    /// A REST page: events within the query's range, in its order, at most `limit`.
    pub fn page(
        &self,
        config: &HistoryConfig,
        channel: &ChannelName,
        query: &HistoryQuery,
    ) -> Page {
        let now_ms = now_ms();
        let ring = self.ring(channel, Instant::now());
        let mut r = ring.lock();
        let freed = r.trim(config, now_ms);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        let matching = r.events.iter().filter(|e| query.contains(e.position));
        let events = match query.direction {
            protocol::history::Direction::OldestFirst => {
                matching.take(query.limit).cloned().collect()
            }
            protocol::history::Direction::NewestFirst => {
                matching.rev().take(query.limit).cloned().collect()
            }
        };
        Page {
            window: r.window(),
            events,
        }
    }

    /// Drops events past their age and rings idle for `max_age_secs`; run periodically.
    pub fn sweep(&self, config: &HistoryConfig, now: Instant) {
        let now_ms = now_ms();
        let idle = Duration::from_secs(config.max_age_secs);
        self.rings.retain(|name, ring| {
            let mut r = ring.lock();
            let freed = r.trim(config, now_ms);
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            if r.events.is_empty() && now.saturating_duration_since(r.touched) >= idle {
                self.bytes.fetch_sub(ring_cost(name), Ordering::Relaxed);
                return false;
            }
            true
        });
    }

    /// Bytes kept for the app on this node.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Channels with a ring on this node.
    pub fn channels(&self) -> usize {
        self.rings.len()
    }
}

/// The replay for `request` from a window and its kept events (oldest first):
/// shared by every store (the Redis one reads the same shape).
pub fn select<'a>(
    window: Window,
    kept: impl Iterator<Item = &'a KeptEvent>,
    request: &HistoryRequest,
    max_age: Duration,
    now_ms: u64,
) -> Replay {
    let newest = window.newest;
    let (after, failed) = match plan(request, &window) {
        Ok(after) => (Some(after), None),
        Err(reason) => (None, Some(reason)),
    };
    let since_ms = match request {
        HistoryRequest::Rewind(Rewind::Seconds(s)) => {
            Some(now_ms.saturating_sub(Duration::from_secs(*s).min(max_age).as_millis() as u64))
        }
        _ => None,
    };
    let excluded = request.excluded();
    let events = match (after, since_ms) {
        (_, Some(since)) => kept.filter(|e| e.at_ms >= since).cloned().collect(),
        (Some(after), None) => kept
            .filter(|e| e.position > after)
            .filter(|e| e.except.is_none_or(|x| !excluded.contains(&x)))
            .cloned()
            .collect(),
        (None, None) => Vec::new(),
    };
    Replay {
        epoch: window.epoch,
        newest,
        events,
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    fn cfg(max_events: usize, max_bytes: usize) -> HistoryConfig {
        HistoryConfig {
            channels: vec!["*".into()],
            max_events,
            max_bytes,
            ..Default::default()
        }
    }

    fn keep(h: &LocalHistory, c: &HistoryConfig, channel: &str, text: &str) -> Position {
        h.keep(c, &ch(channel), text.to_owned().into(), None, |p| p)
    }

    #[test]
    fn positions_count_up_and_resume_replays_what_follows() {
        let h = LocalHistory::default();
        let c = cfg(3, 1 << 20);
        for i in 1..=5 {
            assert_eq!(keep(&h, &c, "a", &format!("e{i}")), i);
        }
        let epoch = h.replay(&c, &ch("a"), &HistoryRequest::Positions).epoch;
        let resume = |position| HistoryRequest::Resume {
            epoch: epoch.clone(),
            position,
            socket_ids: vec![],
        };
        let r = h.replay(&c, &ch("a"), &resume(3));
        assert_eq!(r.failed, None);
        assert_eq!(
            r.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(r.newest, 5);
        assert_eq!(
            h.replay(&c, &ch("a"), &resume(1)).failed,
            Some(FailReason::WindowExceeded),
            "only 3..=5 are kept"
        );
        assert_eq!(h.replay(&c, &ch("a"), &resume(2)).failed, None);
        let other = HistoryRequest::Resume {
            epoch: "0000".into(),
            position: 3,
            socket_ids: vec![],
        };
        assert_eq!(
            h.replay(&c, &ch("a"), &other).failed,
            Some(FailReason::HistoryLost)
        );
    }

    #[test]
    fn excluded_sockets_are_not_replayed() {
        let h = LocalHistory::default();
        let c = cfg(10, 1 << 20);
        let me: SocketId = "1.1".parse().unwrap();
        h.keep(&c, &ch("a"), "mine".into(), Some(me), |_| ());
        h.keep(&c, &ch("a"), "theirs".into(), None, |_| ());
        let epoch = h.replay(&c, &ch("a"), &HistoryRequest::Positions).epoch;
        let r = h.replay(
            &c,
            &ch("a"),
            &HistoryRequest::Resume {
                epoch,
                position: 0,
                socket_ids: vec![me],
            },
        );
        assert_eq!(
            r.events.iter().map(|e| &*e.frame).collect::<Vec<_>>(),
            ["theirs"]
        );
        assert_eq!(r.newest, 2);
    }

    #[test]
    fn the_memory_bound_evicts_the_least_recently_published_channel_first() {
        let h = LocalHistory::default();
        let one = KeptEvent {
            position: 0,
            frame: "x".repeat(100).into(),
            except: None,
            at_ms: 0,
        }
        .cost();
        let rings = ring_cost(&ch("cold")) + ring_cost(&ch("hot"));
        let c = cfg(100, one * 10 + rings);
        for _ in 0..5 {
            keep(&h, &c, "cold", &"x".repeat(100));
        }
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..5 {
            keep(&h, &c, "hot", &"x".repeat(100));
        }
        assert_eq!(
            h.bytes(),
            one * 10 + rings,
            "exactly at the bound: nothing dropped"
        );
        keep(&h, &c, "hot", &"x".repeat(100));
        assert!(h.bytes() <= c.max_bytes / 10 * 9, "{} > 90 %", h.bytes());
        let cold = h.page(&c, &ch("cold"), &query());
        let hot = h.page(&c, &ch("hot"), &query());
        assert_eq!(hot.events.len(), 6, "the channel just published to is kept");
        assert_eq!(cold.window.newest, 5);
        assert!(cold.window.oldest > 1, "cold lost its oldest events");
    }

    fn query() -> HistoryQuery {
        HistoryQuery {
            limit: 100,
            direction: protocol::history::Direction::OldestFirst,
            start: None,
            end: None,
        }
    }

    #[test]
    fn empty_rings_count_against_the_bound_and_the_coldest_go() {
        let h = LocalHistory::default();
        let c = cfg(10, ring_cost(&ch("a0")) * 5);
        for i in 0..20 {
            h.replay(&c, &ch(&format!("a{i}")), &HistoryRequest::Positions);
        }
        assert_eq!(h.channels(), 20, "reads make rings");
        assert_eq!(
            h.bytes(),
            ring_cost(&ch("a0")) * 10 + ring_cost(&ch("a10")) * 10
        );
        keep(&h, &c, "a19", "e");
        assert!(h.bytes() <= c.max_bytes / 10 * 9, "{}", h.bytes());
        assert!(h.channels() < 5, "{} rings left", h.channels());
        assert!(
            h.rings.contains_key(&ch("a19")),
            "the channel just published to stays"
        );
    }

    #[test]
    fn bookkeeping_per_event_is_what_the_readme_says() {
        // README, "Benchmarks": a kept event costs its frame plus 72 bytes.
        assert_eq!(std::mem::size_of::<KeptEvent>(), 72);
    }

    #[test]
    fn idle_rings_expire_with_their_epoch() {
        let h = LocalHistory::default();
        let c = HistoryConfig {
            max_age_secs: 1,
            ..cfg(10, 1 << 20)
        };
        keep(&h, &c, "a", "e");
        let before = h.replay(&c, &ch("a"), &HistoryRequest::Positions).epoch;
        h.sweep(&c, Instant::now() + Duration::from_secs(2));
        assert_eq!(h.channels(), 1, "the event is not a second old yet");
        h.rings.get(&ch("a")).unwrap().lock().events.clear();
        h.sweep(&c, Instant::now() + Duration::from_secs(2));
        assert_eq!(h.channels(), 0);
        let after = h.replay(&c, &ch("a"), &HistoryRequest::Positions).epoch;
        assert_ne!(before, after);
    }
}
