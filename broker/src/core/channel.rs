//! One channel's subscribers and, on presence channels, its members.

use std::{collections::HashMap, sync::Arc};

use protocol::SocketId;
use serde_json::value::RawValue;

use super::connection::{ConnHandle, Message, Write};

/// A presence member: one user, however many of their connections subscribe.
#[derive(Debug)]
pub struct Member {
    pub info: Box<RawValue>,
    /// Subscribed connections of this user; the member leaves when it drops to zero.
    sockets: u32,
}

impl Member {
    /// How many of the user's connections subscribe here.
    pub fn sockets(&self) -> u32 {
        self.sockets
    }
}

#[derive(Debug)]
struct Subscriber {
    conn: ConnHandle,
    /// The presence user this connection subscribed as.
    user_id: Option<Arc<str>>,
}

/// How many connections and (on presence channels) users a channel has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    pub subscriptions: u64,
    pub users: u64,
}

#[derive(Debug, Default)]
pub struct Channel {
    subscribers: HashMap<SocketId, Subscriber>,
    members: HashMap<Arc<str>, Member>,
}

/// The result of adding a presence subscription.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// The connection was already subscribed; nothing changed.
    AlreadySubscribed,
    /// Subscribed; `first` is true when the user was not yet a member.
    Joined { first: bool },
}

impl Channel {
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    pub fn counts(&self) -> ChannelCounts {
        ChannelCounts {
            subscriptions: self.subscribers.len() as u64,
            users: self.members.len() as u64,
        }
    }

    pub fn is_subscribed(&self, socket: SocketId) -> bool {
        self.subscribers.contains_key(&socket)
    }

    /// Adds a plain subscription. Returns false if it already existed.
    pub fn subscribe(&mut self, conn: &ConnHandle) -> bool {
        if self.subscribers.contains_key(&conn.id) {
            return false;
        }
        self.subscribers.insert(
            conn.id,
            Subscriber {
                conn: conn.clone(),
                user_id: None,
            },
        );
        true
    }

    /// Adds a presence subscription for `user_id`. The user's info is replaced
    /// by the latest connection's, as the hosted service does.
    pub fn join(&mut self, conn: &ConnHandle, user_id: &str, info: Box<RawValue>) -> Join {
        if self.subscribers.contains_key(&conn.id) {
            return Join::AlreadySubscribed;
        }
        let (key, first) = match self.members.get_key_value(user_id) {
            Some((k, _)) => (k.clone(), false),
            None => (Arc::<str>::from(user_id), true),
        };
        let member = self.members.entry(key.clone()).or_insert(Member {
            info: info.clone(),
            sockets: 0,
        });
        member.sockets += 1;
        member.info = info;
        self.subscribers.insert(
            conn.id,
            Subscriber {
                conn: conn.clone(),
                user_id: Some(key),
            },
        );
        Join::Joined { first }
    }

    /// Would a new user fit under `max` members?
    pub fn has_room_for(&self, user_id: &str, max: usize) -> bool {
        self.members.contains_key(user_id) || self.members.len() < max
    }

    /// Removes a subscription. Returns `None` if there was none, else the
    /// presence user it belonged to (if any) and whether it was that user's
    /// last connection here.
    pub fn unsubscribe(&mut self, socket: SocketId) -> Option<(Option<Arc<str>>, bool)> {
        let sub = self.subscribers.remove(&socket)?;
        let Some(user_id) = sub.user_id else {
            return Some((None, false));
        };
        let member = self
            .members
            .get_mut(&user_id)
            .expect("presence subscriber has a member entry");
        member.sockets -= 1;
        let last = member.sockets == 0;
        if last {
            self.members.remove(&user_id);
        }
        Some((Some(user_id), last))
    }

    pub fn members(&self) -> impl Iterator<Item = (&str, &Member)> {
        self.members.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Queues `message` for every subscriber but `except`. Returns how many got it.
    pub fn deliver(&self, message: &Message, except: Option<SocketId>, how: Write) -> usize {
        let mut sent = 0;
        for (id, sub) in &self.subscribers {
            if Some(*id) != except && sub.conn.send_with(message, how) {
                sent += 1;
            }
        }
        sent
    }

    /// Asks every subscriber's connection to close with `code`. Returns how many.
    pub fn close_all(&self, code: protocol::ErrorCode) -> usize {
        for sub in self.subscribers.values() {
            sub.conn.close(code);
        }
        self.subscribers.len()
    }

    /// The user a connection is present as, if any.
    pub fn user_of(&self, socket: SocketId) -> Option<&str> {
        self.subscribers.get(&socket)?.user_id.as_deref()
    }
}
