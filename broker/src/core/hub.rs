//! All channels of one app on this node.
//!
//! Channels live in a sharded concurrent map, so publishing to one channel
//! only read-locks that channel's shard; there is no global lock on the
//! publish path. A channel is created by its first subscriber and removed
//! with its last.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytestring::ByteString;
use dashmap::DashMap;
use protocol::{frame, ChannelName, SocketId};
use serde_json::value::RawValue;

use super::{
    channel::{Channel, ChannelCounts, Join},
    connection::ConnHandle,
};

#[derive(Debug, Default)]
pub struct Hub {
    channels: DashMap<ChannelName, Channel>,
    connections: AtomicUsize,
}

/// A presence subscription that was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct ChannelFull;

/// A presence subscription that was accepted.
#[derive(Debug)]
pub struct Joined {
    /// The user was not a member before (so the others should hear `member_added`).
    pub first: bool,
    /// `pusher_internal:subscription_succeeded` with the member list, for the joiner.
    pub succeeded_frame: String,
}

impl Hub {
    /// Counts a new connection unless that would exceed `max` (0 = unlimited).
    pub fn try_add_connection(&self, max: usize) -> bool {
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if max != 0 && current >= max {
                return false;
            }
            match self.connections.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
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

    /// Subscribes to a non-presence channel. Returns false if already subscribed.
    pub fn subscribe(&self, name: &ChannelName, conn: &ConnHandle) -> bool {
        self.channels.entry(name.clone()).or_default().subscribe(conn)
    }

    /// Subscribes to a presence channel as `user_id`, unless it would exceed `max_members`.
    /// `Ok(None)` means the connection was already subscribed.
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
        match channel.join(conn, user_id, info) {
            Join::AlreadySubscribed => Ok(None),
            Join::Joined { first } => {
                let members: Vec<(&str, &RawValue)> = channel.members().map(|(id, m)| (id, &*m.info)).collect();
                let succeeded_frame = frame::presence_subscription_succeeded(name.as_str(), &members);
                Ok(Some(Joined { first, succeeded_frame }))
            }
        }
    }

    /// Removes a subscription. `None` if there was none; `Some(Some(user))` when
    /// it was that presence user's last connection on the channel.
    pub fn unsubscribe(&self, name: &ChannelName, socket: SocketId) -> Option<Option<Arc<str>>> {
        let left = self.channels.get_mut(name)?.unsubscribe(socket);
        self.remove_if_empty(name);
        left
    }

    fn remove_if_empty(&self, name: &ChannelName) {
        self.channels.remove_if(name, |_, c| c.is_empty());
    }

    /// Queues a serialized frame for the channel's local subscribers but `except`.
    pub fn deliver(&self, name: &ChannelName, frame: &ByteString, except: Option<SocketId>) -> usize {
        self.channels.get(name).map_or(0, |c| c.deliver(frame, except))
    }

    pub fn counts(&self, name: &ChannelName) -> ChannelCounts {
        self.channels.get(name).map(|c| c.counts()).unwrap_or_default()
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
        self.channels.get(name).map(|c| c.members().map(|(id, _)| id.to_owned()).collect()).unwrap_or_default()
    }

    /// The user a connection is present as on a channel.
    pub fn user_of(&self, name: &ChannelName, socket: SocketId) -> Option<String> {
        self.channels.get(name)?.user_of(socket).map(str::to_owned)
    }

    pub fn is_subscribed(&self, name: &ChannelName, socket: SocketId) -> bool {
        self.channels.get(name).is_some_and(|c| c.is_subscribed(socket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::connection::{queue, Outbox};

    fn conn(n: u64) -> (ConnHandle, Outbox) {
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
        assert!(hub.subscribe(&ch("news"), &a));
        assert!(!hub.subscribe(&ch("news"), &a));
        hub.subscribe(&ch("news"), &b);
        let f = ByteString::from(String::from("frame"));
        assert_eq!(hub.deliver(&ch("news"), &f, Some(b.id)), 1);
        let got = ra.recv().await.unwrap();
        assert_eq!(got.as_bytes().as_ptr(), f.as_bytes().as_ptr(), "the same buffer, not a copy");
        assert!(rb.try_recv().is_none());
    }

    #[test]
    fn empty_channels_are_removed() {
        let hub = Hub::default();
        let (a, _ra) = conn(1);
        hub.subscribe(&ch("x"), &a);
        assert_eq!(hub.channels("").len(), 1);
        assert_eq!(hub.unsubscribe(&ch("x"), a.id), Some(None));
        assert_eq!(hub.unsubscribe(&ch("x"), a.id), None);
        assert!(hub.channels("").is_empty());
    }

    #[test]
    fn presence_deduplicates_users_across_connections() {
        let hub = Hub::default();
        let p = ch("presence-room");
        let (a1, _r1) = conn(1);
        let (a2, _r2) = conn(2);
        let (b, _r3) = conn(3);
        let j = hub.join(&p, &a1, "alice", info(r#"{"n":1}"#), 100).unwrap().unwrap();
        assert!(j.first);
        assert!(j.succeeded_frame.contains(r#"\"count\":1"#), "{}", j.succeeded_frame);
        assert!(!hub.join(&p, &a2, "alice", info(r#"{"n":2}"#), 100).unwrap().unwrap().first);
        assert!(hub.join(&p, &a2, "alice", info("{}"), 100).unwrap().is_none());
        assert!(hub.join(&p, &b, "bob", info("{}"), 100).unwrap().unwrap().first);
        assert_eq!(hub.counts(&p), ChannelCounts { subscriptions: 3, users: 2 });
        let mut ids = hub.user_ids(&p);
        ids.sort();
        assert_eq!(ids, ["alice", "bob"]);
        assert_eq!(hub.unsubscribe(&p, a1.id), Some(None), "alice still has a2");
        assert_eq!(hub.unsubscribe(&p, a2.id).unwrap().as_deref(), Some("alice"));
        assert_eq!(hub.user_of(&p, b.id).as_deref(), Some("bob"));
    }

    #[test]
    fn presence_member_limit() {
        let hub = Hub::default();
        let p = ch("presence-small");
        let (a, _r1) = conn(1);
        let (a2, _r2) = conn(2);
        let (b, _r3) = conn(3);
        hub.join(&p, &a, "alice", info("{}"), 1).unwrap();
        assert!(hub.join(&p, &a2, "alice", info("{}"), 1).is_ok(), "same user does not count twice");
        assert_eq!(hub.join(&p, &b, "bob", info("{}"), 1).unwrap_err(), ChannelFull);
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
}
