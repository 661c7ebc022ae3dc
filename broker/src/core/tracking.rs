//! Which of a connection's subscriptions asked for history, and where each stands.
//!
//! A subscription that asked is first *held*: kept events for it are set aside
//! while its replay is read, then the replay is queued, then what was held is
//! released, skipping what the replay already carried (positions at or below the
//! replay's last). From then on it is *live*: each kept event is queued behind a
//! `pusher_internal:position` frame, and one at or below the last position sent
//! (an event that reached this node twice) is dropped. So each event is queued at
//! most once, in position order. Connections that never asked have no tracking at
//! all and take no lock for it.

use std::collections::HashMap;

use protocol::{history::Position, ChannelName};

/// Where one tracked subscription stands.
#[derive(Debug)]
enum Track<M> {
    /// Its replay is being read: kept events wait here.
    Holding(Vec<M>),
    /// Replayed: events after `last` go out with their position.
    Live { last: Position },
}

/// What to do with a kept event for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Not a tracked subscription: queue the frame alone, as for anyone.
    Plain,
    /// Queue it behind its position frame.
    WithPosition,
    /// Set aside until the replay is queued.
    Held,
    /// Already sent (or replayed): drop it.
    Duplicate,
}

/// A connection's tracked subscriptions. `M` is the queued message type.
#[derive(Debug)]
pub struct Tracking<M> {
    channels: HashMap<ChannelName, Track<M>>,
}

impl<M> Default for Tracking<M> {
    fn default() -> Self {
        Self {
            channels: HashMap::new(),
        }
    }
}

impl<M> Tracking<M> {
    /// Starts holding a subscription's kept events (before it is registered with the channel).
    pub fn hold(&mut self, channel: &ChannelName) {
        self.channels
            .insert(channel.clone(), Track::Holding(Vec::new()));
    }

    /// Routes a kept event at `position` on `channel`; a held one is moved in (when `room` allows).
    pub fn route(
        &mut self,
        channel: &ChannelName,
        position: Position,
        message: &M,
        room: usize,
    ) -> Result<Route, Overflow>
    where
        M: Clone,
    {
        match self.channels.get_mut(channel) {
            None => Ok(Route::Plain),
            Some(Track::Holding(held)) => {
                if held.len() >= room {
                    return Err(Overflow);
                }
                held.push(message.clone());
                Ok(Route::Held)
            }
            Some(Track::Live { last }) if position <= *last => Ok(Route::Duplicate),
            Some(Track::Live { last }) => {
                *last = position;
                Ok(Route::WithPosition)
            }
        }
    }

    /// Ends holding after a replay that leaves the client at `last`: returns the
    /// held events still to send (after `last`, in order, each once) and goes live.
    pub fn release(
        &mut self,
        channel: &ChannelName,
        mut last: Position,
        position_of: impl Fn(&M) -> Position,
    ) -> Vec<M> {
        let held = match self.channels.remove(channel) {
            Some(Track::Holding(held)) => held,
            Some(Track::Live { last: l }) => {
                last = last.max(l);
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(held.len());
        for m in held {
            let p = position_of(&m);
            if p > last {
                last = p;
                out.push(m);
            }
        }
        self.channels.insert(channel.clone(), Track::Live { last });
        out
    }

    /// Stops tracking a subscription; returns what was held (to send as plain frames).
    pub fn forget(&mut self, channel: &ChannelName) -> Vec<M> {
        match self.channels.remove(channel) {
            Some(Track::Holding(held)) => held,
            _ => Vec::new(),
        }
    }
}

/// A held subscription outgrew the connection's send queue while its replay was read.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ch() -> ChannelName {
        ChannelName::parse("c").unwrap()
    }

    #[test]
    fn held_events_after_the_replay_are_released_once() {
        let mut t = Tracking::<Position>::default();
        assert_eq!(t.route(&ch(), 1, &1, 10), Ok(Route::Plain));
        t.hold(&ch());
        for p in [4, 5, 6] {
            assert_eq!(t.route(&ch(), p, &p, 10), Ok(Route::Held));
        }
        assert_eq!(t.release(&ch(), 5, |p| *p), [6]);
        assert_eq!(t.route(&ch(), 6, &6, 10), Ok(Route::Duplicate));
        assert_eq!(t.route(&ch(), 7, &7, 10), Ok(Route::WithPosition));
        t.hold(&ch());
        assert_eq!(t.route(&ch(), 8, &8, 1), Ok(Route::Held));
        assert_eq!(t.route(&ch(), 9, &9, 1), Err(Overflow));
        assert_eq!(t.forget(&ch()), [8]);
        assert_eq!(t.route(&ch(), 10, &10, 1), Ok(Route::Plain));
    }

    /// One step of a simulated world: the channel publishes, or the client's link drops and it resumes.
    #[derive(Clone, Debug)]
    enum Step {
        Publish,
        /// The link drops; `published` more events happen while it is gone, and
        /// `during` more while the resume's replay is being read.
        Resume {
            published: usize,
            during: usize,
        },
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                3 => Just(Step::Publish),
                1 => (0..6usize, 0..4usize).prop_map(|(published, during)| Step::Resume { published, during }),
            ],
            0..60,
        )
    }

    /// The store of the simulation: positions only, the newest `window` kept.
    struct World {
        kept: Vec<Position>,
        next: Position,
        window: usize,
    }

    impl World {
        fn publish(
            &mut self,
            t: &mut Tracking<Position>,
            seen: &mut Vec<Position>,
            connected: bool,
        ) {
            let p = self.next;
            self.next += 1;
            self.kept.push(p);
            if self.kept.len() > self.window {
                self.kept.remove(0);
            }
            if connected {
                match t.route(&ch(), p, &p, usize::MAX).unwrap() {
                    Route::WithPosition => seen.push(p),
                    Route::Held | Route::Duplicate => {}
                    Route::Plain => unreachable!(),
                }
            }
        }
    }

    proptest! {
        /// Any interleaving of publishes, drops and resumes, with a store keeping
        /// `window` events: the client sees each event at most once and in order, and
        /// every event exactly once whenever each resume was within the window (or
        /// it was told the resume failed).
        #[test]
        fn at_most_once_in_order_and_exactly_once_within_the_window(steps in steps(), window in 1..8usize) {
            let mut world = World { kept: Vec::new(), next: 1, window };
            let mut seen: Vec<Position> = Vec::new(); // what the client received
            let mut t = Tracking::<Position>::default();
            let c = ch();
            t.hold(&c);
            let _ = t.release(&c, 0, |p| *p);
            let mut failed = false;
            for step in steps {
                match step {
                    Step::Publish => { world.publish(&mut t, &mut seen, true); }
                    Step::Resume { published, during } => {
                        // The old connection is gone; a new one subscribes with the last position seen.
                        t = Tracking::default();
                        let last = seen.last().copied().unwrap_or(0);
                        for _ in 0..published { world.publish(&mut t, &mut seen, false); }
                        t.hold(&c);
                        // Registered: live events now are held; then the store is read.
                        for _ in 0..during { world.publish(&mut t, &mut seen, true); }
                        let store = world.kept.clone();
                        let newest = world.next - 1;
                        let oldest = store.first().copied().unwrap_or(world.next);
                        let replay: Vec<Position> = if last + 1 < oldest {
                            failed = true;
                            Vec::new()
                        } else {
                            store.iter().copied().filter(|p| *p > last).collect()
                        };
                        seen.extend(&replay);
                        let after = if replay.is_empty() { newest.max(last) } else { *replay.last().unwrap() };
                        seen.extend(t.release(&c, after, |p| *p));
                    }
                }
            }
            prop_assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, at most once: {:?}", seen);
            if !failed {
                let all: Vec<Position> = (1..world.next).collect();
                prop_assert_eq!(seen, all);
            }
        }
    }
}
