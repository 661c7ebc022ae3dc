//! Leaving webhooks held back for the debounce window, on this node.
//!
//! A transition (a subscribe, a join, a leave) and the sorting of the lifecycle
//! events it caused must be one step, or two racing transitions of one channel
//! could be sorted in the other order than the hub applied them (a `vacated`
//! held back after the `occupied` that should have cancelled it). That step is
//! taken under a lock of the transition's channel only: every subject (the
//! channel, or a member of it) belongs to one channel, so transitions of
//! different channels never wait for each other, and an app with webhooks
//! subscribes as concurrently as one without.
//!
//! A clustered adapter keeps the same bookkeeping in Redis instead, so that a
//! user who leaves on one node and comes back on another is matched too.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;
use parking_lot::Mutex;

use super::WebhookEvent;

/// What a lifecycle webhook is about, within its channel: the channel itself
/// (occupied/vacated) or one member of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Subject {
    Channel,
    Member(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Left,
    Back,
}

/// For the four lifecycle events: their channel, what they are about, and whether they leave or come back.
fn lifecycle(event: &WebhookEvent) -> Option<(&str, Subject, Direction)> {
    match event {
        WebhookEvent::ChannelOccupied { channel } => {
            Some((channel, Subject::Channel, Direction::Back))
        }
        WebhookEvent::ChannelVacated { channel } => {
            Some((channel, Subject::Channel, Direction::Left))
        }
        WebhookEvent::MemberAdded { channel, user_id } => {
            Some((channel, Subject::Member(user_id.clone()), Direction::Back))
        }
        WebhookEvent::MemberRemoved { channel, user_id } => {
            Some((channel, Subject::Member(user_id.clone()), Direction::Left))
        }
        _ => None,
    }
}

/// A leave waiting for its window: when it is due, the order it happened in, the event.
#[derive(Debug)]
struct Held {
    due: Instant,
    seq: u64,
    event: WebhookEvent,
}

/// One channel's held-back leaves; its lock is what orders the channel's transitions.
type ChannelHeld = Arc<Mutex<HashMap<Subject, Held>>>;

#[derive(Debug)]
pub struct Debounce {
    window: Duration,
    /// Channels with held-back leaves or a transition under way. An entry is only
    /// cloned under the map's shard lock and removed (also under it) when nobody else
    /// holds it and it holds nothing, so two transitions of one channel always share one lock.
    channels: DashMap<String, ChannelHeld>,
    /// Order of the leaves across channels, so that due ones are sent as they happened.
    next: AtomicU64,
}

impl Debounce {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            channels: DashMap::new(),
            next: AtomicU64::new(0),
        }
    }

    /// Runs `op`, a transition of `channel`, and sorts the lifecycle `events` it caused
    /// into those to send now, holding the channel's lock across both so that its
    /// transitions are matched in the order they happened. Leaves wait; a return
    /// cancels its pending leave (and is not sent either); other events pass through.
    pub fn transition<T>(
        &self,
        channel: &str,
        op: impl FnOnce() -> T,
        events: impl FnOnce(&T) -> Vec<WebhookEvent>,
        now: Instant,
    ) -> (T, Vec<WebhookEvent>) {
        let entry = self.channels.entry(channel.to_owned()).or_default().clone();
        let out = {
            let mut held = entry.lock();
            let result = op();
            let events = events(&result);
            let mut out = Vec::new();
            for event in events {
                match lifecycle(&event) {
                    Some((_, subject, Direction::Left)) if !self.window.is_zero() => {
                        let seq = self.next.fetch_add(1, Ordering::Relaxed);
                        let due = now + self.window;
                        held.insert(subject, Held { due, seq, event });
                    }
                    Some((_, subject, Direction::Back)) if held.remove(&subject).is_some() => {}
                    _ => out.push(event),
                }
            }
            (result, out)
        };
        drop(entry);
        self.forget_if_idle(channel);
        out
    }

    /// Sorts lifecycle events that happened outside a hub transition (a cluster
    /// adapter's), each under its own channel's lock.
    pub fn admit(
        &self,
        events: impl IntoIterator<Item = WebhookEvent>,
        now: Instant,
    ) -> Vec<WebhookEvent> {
        let mut out = Vec::new();
        for event in events {
            match lifecycle(&event).map(|(c, _, _)| c.to_owned()) {
                Some(channel) => {
                    out.extend(self.transition(&channel, || (), |_| vec![event], now).1);
                }
                None => out.push(event),
            }
        }
        out
    }

    /// Drops a channel's entry when no transition holds it and it holds no leave.
    fn forget_if_idle(&self, channel: &str) {
        self.channels.remove_if(channel, |_, held| {
            Arc::strong_count(held) == 1 && held.try_lock().is_some_and(|h| h.is_empty())
        });
    }

    /// Takes the held-back leaves whose window has passed (all of them with `now = None`),
    /// in the order they happened.
    pub fn take_due(&self, now: Option<Instant>) -> Vec<WebhookEvent> {
        if self.channels.is_empty() {
            return Vec::new();
        }
        // Clone the entries first: a channel's lock is never awaited under the map's shard lock.
        let channels: Vec<(String, ChannelHeld)> = self
            .channels
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let mut out: Vec<Held> = Vec::new();
        for (channel, entry) in channels {
            {
                let mut held = entry.lock();
                let due: Vec<Subject> = held
                    .iter()
                    .filter(|(_, h)| now.is_none_or(|now| h.due <= now))
                    .map(|(s, _)| s.clone())
                    .collect();
                out.extend(due.iter().filter_map(|s| held.remove(s)));
            }
            drop(entry);
            self.forget_if_idle(&channel);
        }
        out.sort_by_key(|h| h.seq);
        out.into_iter().map(|h| h.event).collect()
    }

    /// Leaves waiting for their window.
    pub fn pending(&self) -> usize {
        let channels: Vec<ChannelHeld> = self.channels.iter().map(|e| e.value().clone()).collect();
        channels.iter().map(|c| c.lock().len()).sum()
    }

    /// Channels this node keeps an entry for (held leaves or a transition under way).
    #[cfg(test)]
    fn channels(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Barrier};

    use super::*;

    fn removed(user: &str) -> WebhookEvent {
        WebhookEvent::MemberRemoved {
            channel: "presence-a".into(),
            user_id: user.into(),
        }
    }
    fn added(user: &str) -> WebhookEvent {
        WebhookEvent::MemberAdded {
            channel: "presence-a".into(),
            user_id: user.into(),
        }
    }

    #[test]
    fn a_return_within_the_window_cancels_both_webhooks() {
        let d = Debounce::new(Duration::from_secs(3));
        let t0 = Instant::now();
        assert_eq!(
            d.admit([added("u")], t0),
            [added("u")],
            "a first join is sent at once"
        );
        assert!(d
            .admit(
                [
                    removed("u"),
                    WebhookEvent::ChannelVacated {
                        channel: "presence-a".into()
                    }
                ],
                t0
            )
            .is_empty());
        assert_eq!(d.pending(), 2);
        let back = d.admit(
            [
                WebhookEvent::ChannelOccupied {
                    channel: "presence-a".into(),
                },
                added("u"),
            ],
            t0 + Duration::from_millis(500),
        );
        assert!(back.is_empty(), "the reload sends nothing: {back:?}");
        assert_eq!(d.pending(), 0);
        assert_eq!(d.channels(), 0, "an idle channel leaves no entry behind");
        assert!(d.take_due(Some(t0 + Duration::from_secs(10))).is_empty());
    }

    #[test]
    fn a_real_leave_is_sent_after_the_window() {
        let d = Debounce::new(Duration::from_secs(3));
        let t0 = Instant::now();
        assert!(d.admit([removed("u"), removed("v")], t0).is_empty());
        assert!(
            d.take_due(Some(t0 + Duration::from_secs(2))).is_empty(),
            "not before the window"
        );
        assert_eq!(
            d.admit([added("v")], t0 + Duration::from_secs(2)),
            Vec::<WebhookEvent>::new(),
            "v came back"
        );
        assert_eq!(
            d.take_due(Some(t0 + Duration::from_secs(3))),
            [removed("u")]
        );
        assert_eq!(
            d.admit([added("u")], t0 + Duration::from_secs(4)),
            [added("u")],
            "after the leave was sent, a join is news"
        );
        let other = WebhookEvent::CacheMiss {
            channel: "cache-a".into(),
        };
        assert_eq!(
            d.admit([other.clone()], t0),
            [other],
            "other events pass through"
        );
        assert_eq!(d.channels(), 0);
    }

    #[test]
    fn due_leaves_of_several_channels_come_out_in_the_order_they_happened() {
        let d = Debounce::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let vacated = |c: &str| WebhookEvent::ChannelVacated { channel: c.into() };
        for c in ["c", "a", "b", "a2"] {
            assert!(d.admit([vacated(c)], t0).is_empty());
        }
        assert_eq!(
            d.take_due(None),
            [vacated("c"), vacated("a"), vacated("b"), vacated("a2")]
        );
        assert_eq!(d.channels(), 0);
    }

    #[test]
    fn no_window_sends_leaves_at_once() {
        let d = Debounce::new(Duration::ZERO);
        assert_eq!(d.admit([removed("u")], Instant::now()), [removed("u")]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn shutdown_takes_every_held_back_leave() {
        let d = Debounce::new(Duration::from_secs(3));
        d.admit([removed("u")], Instant::now());
        assert_eq!(d.take_due(None), [removed("u")]);
    }

    /// The lock is the channel's: a transition of one channel runs while another
    /// channel's transition is still inside its hub operation. With one lock per
    /// app (as before) the second transition would wait for the first and this
    /// test would time out.
    #[test]
    fn transitions_of_different_channels_do_not_wait_for_each_other() {
        let d = Arc::new(Debounce::new(Duration::from_secs(3)));
        let inside = Arc::new(Barrier::new(2));
        let (release, released) = mpsc::channel::<()>();
        let slow = {
            let (d, inside) = (d.clone(), inside.clone());
            std::thread::spawn(move || {
                d.transition(
                    "presence-slow",
                    || {
                        inside.wait();
                        released.recv().ok();
                    },
                    |_| Vec::new(),
                    Instant::now(),
                )
            })
        };
        inside.wait();
        let (done, finished) = mpsc::channel();
        let fast = {
            let d = d.clone();
            std::thread::spawn(move || {
                d.transition("presence-fast", || (), |_| Vec::new(), Instant::now());
                done.send(()).ok();
            })
        };
        let result = finished.recv_timeout(Duration::from_secs(5));
        release.send(()).ok();
        slow.join().unwrap();
        fast.join().unwrap();
        assert!(
            result.is_ok(),
            "a transition of another channel waited for a slow one"
        );
    }

    /// Transitions of one channel are still one at a time, so a leave and a return
    /// are matched in the order the hub applied them.
    #[test]
    fn transitions_of_one_channel_are_serialised() {
        let d = Arc::new(Debounce::new(Duration::from_secs(3)));
        let inside = Arc::new(Barrier::new(2));
        let (release, released) = mpsc::channel::<()>();
        let slow = {
            let (d, inside) = (d.clone(), inside.clone());
            std::thread::spawn(move || {
                d.transition(
                    "presence-a",
                    || {
                        inside.wait();
                        released.recv().ok();
                    },
                    |_| vec![removed("u")],
                    Instant::now(),
                )
            })
        };
        inside.wait();
        let (done, finished) = mpsc::channel();
        let second = {
            let d = d.clone();
            std::thread::spawn(move || {
                let sent = d
                    .transition("presence-a", || (), |_| vec![added("u")], Instant::now())
                    .1;
                done.send(sent).ok();
            })
        };
        assert!(
            finished.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second transition of a channel waits for the first"
        );
        release.send(()).ok();
        slow.join().unwrap();
        second.join().unwrap();
        assert_eq!(
            finished.recv().unwrap(),
            Vec::<WebhookEvent>::new(),
            "the return after the leave cancelled it"
        );
        assert_eq!(d.pending(), 0);
    }
}
