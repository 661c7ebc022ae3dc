//! All channels of one app on this node.
//!
//! Channels live in a sharded concurrent map, so publishing to one channel
//! only read-locks that channel's shard; there is no global lock on the
//! publish path. A channel is created by its first subscriber and removed
//! with its last; both transitions are reported to the caller exactly once,
//! because they happen under the channel's shard lock.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytestring::ByteString;
use dashmap::DashMap;
use protocol::{frame, ChannelName, ErrorCode, SocketId};
use serde_json::value::RawValue;

use super::{
    channel::{Channel, ChannelCounts, Join},
    connection::{ConnHandle, Message, Write},
};

/// How long a cache channel keeps its last event.
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Default)]
pub struct Hub {
    channels: DashMap<ChannelName, Channel>,
    connections: AtomicUsize,
    /// Deliveries under way (see [`Hub::deliver`]).
    delivering: AtomicUsize,
    /// Last event of each cache channel, kept whether or not anyone subscribes.
    cache: DashMap<ChannelName, CachedEvent>,
    /// Signed-in connections watching a user id (from `user_data.watchlist`).
    watchers: DashMap<Arc<str>, HashMap<SocketId, ConnHandle>>,
    /// Kept channel history on this node (empty unless the app keeps history).
    pub history: super::history::LocalHistory,
}

/// The last server-triggered event of a cache channel.
#[derive(Clone, Debug)]
pub struct CachedEvent {
    /// The frame as subscribers receive it.
    pub frame: ByteString,
    pub event: Arc<str>,
    pub data: Arc<str>,
    pub stored: Instant,
}

impl CachedEvent {
    /// Seconds it will still be kept.
    pub fn ttl_secs(&self, now: Instant) -> u64 {
        CACHE_TTL
            .saturating_sub(now.saturating_duration_since(self.stored))
            .as_secs()
    }
}

/// A presence subscription that was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct ChannelFull;

/// A subscription that was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The channel had no subscribers before.
    pub occupied: bool,
    pub subscriptions: u64,
}

/// A presence subscription that was accepted. Its `subscription_succeeded` (with the
/// member list) is already queued for the joiner.
#[derive(Debug)]
pub struct Joined {
    /// The user was not a member before (so the others hear `member_added`).
    pub first: bool,
    pub subscribed: Subscribed,
}

/// A subscription that was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribed {
    /// The presence user the connection was subscribed as.
    pub user: Option<Arc<str>>,
    /// Set to that user when this was their last connection on the channel.
    pub user_left: Option<Arc<str>>,
    /// The channel has no subscribers left.
    pub vacated: bool,
    pub subscriptions: u64,
}

/// Whether the hub itself tells a presence channel's local subscribers about members
/// joining and leaving. On one node it does, inside the channel's lock, so that a
/// joiner's member list and the member events it receives afterwards never disagree.
/// In a cluster the member events come from the bus in the cluster's order instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    Members,
    Nothing,
}

impl Hub {
    /// Counts a new connection unless that would exceed `max` (0 = unlimited).
    pub fn try_add_connection(&self, max: usize) -> bool {
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if max != 0 && current >= max {
                return false;
            }
            match self.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    pub fn remove_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Subscribes to a non-presence channel. `None` if already subscribed.
    pub fn subscribe(&self, name: &ChannelName, conn: &ConnHandle) -> Option<Subscribed> {
        let mut channel = self.channels.entry(name.clone()).or_default();
        let occupied = channel.is_empty();
        channel.subscribe(conn).then(|| Subscribed {
            occupied,
            subscriptions: channel.counts().subscriptions,
        })
    }

    /// Subscribes to a presence channel as `user_id`, unless it would exceed `max_members`.
    /// `Ok(None)` means the connection was already subscribed.
    ///
    /// Within the channel's lock, the joiner is sent `subscription_succeeded` with the
    /// members present now, and (on a user's first connection) the others are sent
    /// `member_added`: every member event the joiner sees afterwards is news to its list.
    pub fn join(
        &self,
        name: &ChannelName,
        conn: &ConnHandle,
        user_id: &str,
        info: Box<RawValue>,
        max_members: usize,
    ) -> Result<Option<Joined>, ChannelFull> {
        let mut channel = self.channels.entry(name.clone()).or_default();
        if !channel.is_subscribed(conn.id) && !channel.has_room_for(user_id, max_members) {
            drop(channel);
            self.remove_if_empty(name);
            return Err(ChannelFull);
        }
        let occupied = channel.is_empty();
        let added = frame::member_added(name.as_str(), user_id, &info);
        match channel.join(conn, user_id, info) {
            Join::AlreadySubscribed => Ok(None),
            Join::Joined { first } => {
                if first {
                    channel.deliver(&Message::new(added), Some(conn.id), Write::Now);
                }
                let members: Vec<(&str, &RawValue)> =
                    channel.members().map(|(id, m)| (id, &*m.info)).collect();
                conn.send_direct(frame::presence_subscription_succeeded(
                    name.as_str(),
                    &members,
                ));
                let subscribed = Subscribed {
                    occupied,
                    subscriptions: channel.counts().subscriptions,
                };
                Ok(Some(Joined { first, subscribed }))
            }
        }
    }

    /// Adds a presence subscription whose member list was decided elsewhere (by the
    /// cluster): queues `succeeded` for the joiner inside the channel's lock, so no
    /// later broadcast can overtake it. `None` if the connection was already subscribed.
    pub fn join_with_list(
        &self,
        name: &ChannelName,
        conn: &ConnHandle,
        user_id: &str,
        info: Box<RawValue>,
        succeeded: &str,
    ) -> Option<Subscribed> {
        let mut channel = self.channels.entry(name.clone()).or_default();
        let occupied = channel.is_empty();
        match channel.join(conn, user_id, info) {
            Join::AlreadySubscribed => None,
            Join::Joined { .. } => {
                conn.send_direct(succeeded.to_owned());
                Some(Subscribed {
                    occupied,
                    subscriptions: channel.counts().subscriptions,
                })
            }
        }
    }

    /// Removes a subscription; `None` if there was none. With [`Announce::Members`], a
    /// presence user's last connection leaving tells the others `member_removed`,
    /// inside the channel's lock. The channel is dropped in the same step when it
    /// empties, so "vacated" and a concurrent "occupied" cannot both be missed.
    pub fn unsubscribe(
        &self,
        name: &ChannelName,
        socket: SocketId,
        announce: Announce,
    ) -> Option<Unsubscribed> {
        let mut result = None;
        self.channels.remove_if_mut(name, |_, channel| {
            if let Some((user, last)) = channel.unsubscribe(socket) {
                let user_left = if last { user.clone() } else { None };
                if let (Some(u), Announce::Members) = (&user_left, announce) {
                    channel.deliver(
                        &Message::new(frame::member_removed(name.as_str(), u)),
                        None,
                        Write::Now,
                    );
                }
                let subscriptions = channel.counts().subscriptions;
                result = Some(Unsubscribed {
                    user,
                    user_left,
                    vacated: subscriptions == 0,
                    subscriptions,
                });
            }
            channel.is_empty()
        });
        result
    }

    /// Removes the channel if nobody subscribes; true if this call removed it.
    fn remove_if_empty(&self, name: &ChannelName) -> bool {
        self.channels.remove_if(name, |_, c| c.is_empty()).is_some()
    }

    /// Queues a message for the channel's local subscribers but `except`. The
    /// message is made once, and only if the channel has local subscribers (most
    /// nodes of a cluster have none for a given event).
    ///
    /// A delivery that starts while another is under way on this hub queues its
    /// message for each connection's task instead of writing it at once: the
    /// workers are busy, and a task that runs later writes everything queued for
    /// its connection by then in one write (see [`Write`]).
    pub fn deliver(
        &self,
        name: &ChannelName,
        except: Option<SocketId>,
        message: impl FnOnce() -> Message,
    ) -> usize {
        let Some(channel) = self.channels.get(name) else {
            return 0;
        };
        let how = match self.delivering.fetch_add(1, Ordering::Relaxed) {
            0 => Write::Now,
            _ => Write::Queued,
        };
        let sent = channel.deliver(&message(), except, how);
        self.delivering.fetch_sub(1, Ordering::Relaxed);
        sent
    }

    /// Closes every local connection subscribed to the channel.
    pub fn close_subscribers(&self, name: &ChannelName, code: ErrorCode) -> usize {
        self.channels.get(name).map_or(0, |c| c.close_all(code))
    }

    pub fn counts(&self, name: &ChannelName) -> ChannelCounts {
        self.channels
            .get(name)
            .map(|c| c.counts())
            .unwrap_or_default()
    }

    /// Every occupied channel whose name starts with `prefix`.
    pub fn channels(&self, prefix: &str) -> Vec<(ChannelName, ChannelCounts)> {
        self.channels
            .iter()
            .filter(|e| e.key().as_str().starts_with(prefix))
            .map(|e| (e.key().clone(), e.value().counts()))
            .collect()
    }

    /// The user ids present on a presence channel.
    pub fn user_ids(&self, name: &ChannelName) -> Vec<String> {
        self.channels
            .get(name)
            .map(|c| c.members().map(|(id, _)| id.to_owned()).collect())
            .unwrap_or_default()
    }

    /// Each present user with how many local connections they have here, and their info.
    pub fn member_sockets(&self, name: &ChannelName) -> Vec<(String, u32, String)> {
        self.channels
            .get(name)
            .map(|c| {
                c.members()
                    .map(|(id, m)| (id.to_owned(), m.sockets(), m.info.get().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The user a connection is present as on a channel.
    pub fn user_of(&self, name: &ChannelName, socket: SocketId) -> Option<String> {
        self.channels.get(name)?.user_of(socket).map(str::to_owned)
    }

    pub fn is_subscribed(&self, name: &ChannelName, socket: SocketId) -> bool {
        self.channels
            .get(name)
            .is_some_and(|c| c.is_subscribed(socket))
    }

    /// Keeps `event` as the cache channel's last event.
    pub fn cache_put(&self, name: &ChannelName, event: CachedEvent) {
        self.cache.insert(name.clone(), event);
    }

    /// The cache channel's last event, if it is younger than [`CACHE_TTL`].
    pub fn cache_get(&self, name: &ChannelName, now: Instant) -> Option<CachedEvent> {
        let entry = self.cache.get(name)?;
        (now.saturating_duration_since(entry.stored) < CACHE_TTL).then(|| entry.clone())
    }

    /// Drops expired cache entries; run periodically so unread entries do not pile up.
    pub fn cache_sweep(&self, now: Instant) {
        self.cache
            .retain(|_, e| now.saturating_duration_since(e.stored) < CACHE_TTL);
    }

    /// Registers `conn` as watching each of `user_ids`.
    pub fn watch(&self, conn: &ConnHandle, user_ids: &[String]) {
        for id in user_ids {
            self.watchers
                .entry(Arc::from(id.as_str()))
                .or_default()
                .insert(conn.id, conn.clone());
        }
    }

    pub fn unwatch(&self, socket: SocketId, user_ids: &[String]) {
        for id in user_ids {
            if let Some(mut w) = self.watchers.get_mut(id.as_str()) {
                w.remove(&socket);
                let empty = w.is_empty();
                drop(w);
                if empty {
                    self.watchers.remove_if(id.as_str(), |_, w| w.is_empty());
                }
            }
        }
    }

    /// Sends a message to every connection watching `user_id`.
    pub fn notify_watchers(&self, user_id: &str, message: &Message) {
        if let Some(w) = self.watchers.get(user_id) {
            for conn in w.values() {
                conn.send(message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::connection::{
        queue,
        tests::{queued, FakeSocket},
        Receiver,
    };

    #[test]
    fn a_delivery_that_overlaps_another_is_queued_not_written_at_once() {
        let hub = Hub::default();
        let (a, mut rx) = conn(1);
        let socket = FakeSocket::default();
        *socket.room.lock() = 1000;
        rx.attach(Box::new(socket.clone()), false);
        hub.subscribe(&ch("outer"), &a);
        hub.subscribe(&ch("inner"), &a);
        // The inner delivery starts while the outer one is under way (its message is
        // made inside it): it is queued for the task, not written; the outer one then
        // queues behind it (the queue is no longer idle).
        hub.deliver(&ch("outer"), None, || {
            hub.deliver(&ch("inner"), None, || Message::from("second"));
            Message::from("first")
        });
        assert!(socket.took.lock().is_empty());
        assert_eq!(queued(&mut rx), ["second", "first"]);
        // The transport wrote them and found nothing more: alone, a delivery is written at once.
        assert_eq!(queued(&mut rx), Vec::<String>::new());
        hub.deliver(&ch("outer"), None, || Message::from("alone"));
        assert_eq!(queued(&mut rx), Vec::<String>::new());
        assert_eq!(&socket.took.lock()[..], b"alone", "alone: written at once");
    }

    fn conn(n: u64) -> (ConnHandle, Receiver) {
        queue(SocketId::new(1, n), 8)
    }
    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }
    fn info(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn deliver_skips_the_excluded_socket_and_shares_bytes() {
        let hub = Hub::default();
        let (a, mut ra) = conn(1);
        let (b, mut rb) = conn(2);
        assert!(hub.subscribe(&ch("news"), &a).unwrap().occupied);
        assert!(hub.subscribe(&ch("news"), &a).is_none());
        assert!(!hub.subscribe(&ch("news"), &b).unwrap().occupied);
        assert_eq!(
            hub.deliver(&ch("news"), Some(b.id), || Message::from("frame")),
            1
        );
        assert_eq!(
            hub.deliver(&ch("empty"), None, || unreachable!("nothing to encode for")),
            0
        );
        assert_eq!(queued(&mut ra), ["frame"]);
        assert!(
            queued(&mut rb).is_empty(),
            "nothing queued for the excluded socket"
        );
    }

    #[test]
    fn occupied_and_vacated_are_reported_once() {
        let hub = Hub::default();
        let (a, _ra) = conn(1);
        let (b, _rb) = conn(2);
        assert!(hub.subscribe(&ch("x"), &a).unwrap().occupied);
        assert!(!hub.subscribe(&ch("x"), &b).unwrap().occupied);
        assert!(
            !hub.unsubscribe(&ch("x"), a.id, Announce::Members)
                .unwrap()
                .vacated
        );
        let last = hub.unsubscribe(&ch("x"), b.id, Announce::Members).unwrap();
        assert!(last.vacated);
        assert_eq!(last.subscriptions, 0);
        assert_eq!(hub.unsubscribe(&ch("x"), b.id, Announce::Members), None);
        assert!(hub.channels("").is_empty());
    }

    #[test]
    fn presence_deduplicates_users_across_connections() {
        let hub = Hub::default();
        let p = ch("presence-room");
        let (a1, _r1) = conn(1);
        let (a2, _r2) = conn(2);
        let (b, _r3) = conn(3);
        let j = hub
            .join(&p, &a1, "alice", info(r#"{"n":1}"#), 100)
            .unwrap()
            .unwrap();
        assert!(j.first && j.subscribed.occupied);
        assert!(
            !hub.join(&p, &a2, "alice", info(r#"{"n":2}"#), 100)
                .unwrap()
                .unwrap()
                .first
        );
        assert!(hub
            .join(&p, &a2, "alice", info("{}"), 100)
            .unwrap()
            .is_none());
        assert!(
            hub.join(&p, &b, "bob", info("{}"), 100)
                .unwrap()
                .unwrap()
                .first
        );
        assert_eq!(
            hub.counts(&p),
            ChannelCounts {
                subscriptions: 3,
                users: 2
            }
        );
        let mut ids = hub.user_ids(&p);
        ids.sort();
        assert_eq!(ids, ["alice", "bob"]);
        assert_eq!(
            hub.unsubscribe(&p, a1.id, Announce::Members)
                .unwrap()
                .user_left,
            None,
            "alice still has a2"
        );
        assert_eq!(
            hub.unsubscribe(&p, a2.id, Announce::Members)
                .unwrap()
                .user_left
                .as_deref(),
            Some("alice")
        );
        assert_eq!(hub.user_of(&p, b.id).as_deref(), Some("bob"));
    }

    #[tokio::test]
    async fn a_joiner_gets_its_member_list_before_any_member_event() {
        let hub = Hub::default();
        let p = ch("presence-room");
        let (a, mut ra) = conn(1);
        let (b, mut rb) = conn(2);
        hub.join(&p, &a, "alice", info("{}"), 100).unwrap().unwrap();
        hub.join(&p, &b, "bob", info("{}"), 100).unwrap().unwrap();
        let to_a = queued(&mut ra);
        assert_eq!(to_a.len(), 2, "{to_a:?}");
        assert!(
            to_a[0].contains("subscription_succeeded") && to_a[1].contains("member_added"),
            "{to_a:?}"
        );
        let to_b = queued(&mut rb);
        assert_eq!(
            to_b.len(),
            1,
            "bob hears no member_added of his own: {to_b:?}"
        );
        assert!(
            to_b[0].contains("subscription_succeeded")
                && to_b[0].contains("alice")
                && to_b[0].contains("bob")
        );
        hub.unsubscribe(&p, b.id, Announce::Members).unwrap();
        assert!(queued(&mut ra)[0].contains("member_removed"));
        hub.unsubscribe(&p, a.id, Announce::Nothing).unwrap();
        assert!(queued(&mut rb).is_empty());
    }

    #[tokio::test]
    async fn a_list_decided_elsewhere_is_queued_and_nothing_is_announced() {
        let hub = Hub::default();
        let p = ch("presence-room");
        let (a, mut ra) = conn(1);
        let (b, mut rb) = conn(2);
        hub.join(&p, &a, "alice", info("{}"), 100).unwrap().unwrap();
        queued(&mut ra);
        let sub = hub
            .join_with_list(&p, &b, "bob", info("{}"), "the list")
            .unwrap();
        assert_eq!(sub.subscriptions, 2);
        assert!(hub
            .join_with_list(&p, &b, "bob", info("{}"), "again")
            .is_none());
        assert_eq!(queued(&mut rb), ["the list"]);
        assert!(
            queued(&mut ra).is_empty(),
            "the cluster announces members, not the hub"
        );
    }

    #[test]
    fn presence_member_limit() {
        let hub = Hub::default();
        let p = ch("presence-small");
        let (a, _r1) = conn(1);
        let (a2, _r2) = conn(2);
        let (b, _r3) = conn(3);
        hub.join(&p, &a, "alice", info("{}"), 1).unwrap();
        assert!(
            hub.join(&p, &a2, "alice", info("{}"), 1).is_ok(),
            "same user does not count twice"
        );
        assert_eq!(
            hub.join(&p, &b, "bob", info("{}"), 1).unwrap_err(),
            ChannelFull
        );
    }

    #[test]
    fn connection_quota() {
        let hub = Hub::default();
        assert!(hub.try_add_connection(2));
        assert!(hub.try_add_connection(2));
        assert!(!hub.try_add_connection(2));
        hub.remove_connection();
        assert!(hub.try_add_connection(2));
        assert!(hub.try_add_connection(0));
    }

    #[test]
    fn cache_expires() {
        let hub = Hub::default();
        let t0 = Instant::now();
        let e = CachedEvent {
            frame: ByteString::from_static("f"),
            event: "e".into(),
            data: "d".into(),
            stored: t0,
        };
        hub.cache_put(&ch("cache-x"), e);
        let got = hub
            .cache_get(&ch("cache-x"), t0 + Duration::from_secs(60))
            .unwrap();
        assert_eq!(&*got.frame, "f");
        assert_eq!(
            got.ttl_secs(t0 + Duration::from_secs(60)),
            CACHE_TTL.as_secs() - 60
        );
        assert!(hub.cache_get(&ch("cache-x"), t0 + CACHE_TTL).is_none());
        hub.cache_sweep(t0 + CACHE_TTL);
        assert!(hub.cache.is_empty());
    }

    #[tokio::test]
    async fn watchers_hear_about_watched_users() {
        let hub = Hub::default();
        let (w, mut rw) = conn(1);
        hub.watch(&w, &["bob".into()]);
        hub.notify_watchers("bob", &Message::from("online"));
        hub.notify_watchers("carol", &Message::from("nope"));
        assert_eq!(queued(&mut rw), ["online"]);
        hub.unwatch(w.id, &["bob".into()]);
        assert!(hub.watchers.is_empty());
    }
}
