//! The seam between one node and the cluster.
//!
//! Sessions and REST handlers never touch another node directly; they call an
//! [`Adapter`]. [`LocalAdapter`] serves a single node from its in-memory
//! [`Hub`](crate::core::Hub)s. A clustered adapter implements the same trait by
//! also publishing to, and asking, the other nodes; queries are therefore async,
//! and the transitions it reports (occupied, vacated, a user's first or last
//! connection) are cluster-wide.

pub mod history;
pub mod redis;

use std::time::Instant;

use bytestring::ByteString;
use futures_util::future::{self, BoxFuture, FutureExt};
use protocol::{ChannelName, ErrorCode, SocketId};
use serde_json::value::RawValue;

use self::history::History;
use crate::{
    apps::App,
    core::{
        hub::{CachedEvent, ChannelFull, Joined, Subscribed, Unsubscribed},
        ChannelCounts, ConnHandle, Message,
    },
};

/// The receipt of a broadcast whose work is already done: local subscribers have the
/// event and it is queued for the other nodes. What is left is the cluster's
/// acknowledgement, which a caller either awaits ([`Published::acknowledged`]) or
/// declines in so many words ([`Published::unacknowledged`]); dropping it silently is
/// a warning, since a REST trigger must not answer 200 without it.
#[must_use = "the event is already sent; await `.acknowledged()` or call `.unacknowledged()`"]
#[derive(Debug)]
pub struct Published(Acknowledgement);

#[derive(Debug)]
enum Acknowledgement {
    /// Known when the broadcast was made (one node: nobody else to hear it).
    Known(Result<(), NotPublished>),
    /// Told `true` once every other node holding the channel heard it.
    Awaited(tokio::sync::oneshot::Receiver<bool>),
}

impl Published {
    /// Every node that holds the channel has it already.
    pub fn complete() -> Self {
        Self(Acknowledgement::Known(Ok(())))
    }

    /// Known not to have reached the other nodes (only this node's subscribers have it).
    pub fn not_published() -> Self {
        Self(Acknowledgement::Known(Err(NotPublished)))
    }

    /// Acknowledged when `heard` says `true`; a dropped sender means it was not published.
    pub fn awaiting(heard: tokio::sync::oneshot::Receiver<bool>) -> Self {
        Self(Acknowledgement::Awaited(heard))
    }

    /// Resolves once every other node holding the channel heard the event, or it is
    /// known that some may not have.
    pub async fn acknowledged(self) -> Result<(), NotPublished> {
        match self.0 {
            Acknowledgement::Known(result) => result,
            Acknowledgement::Awaited(heard) => match heard.await {
                Ok(true) => Ok(()),
                _ => Err(NotPublished),
            },
        }
    }

    /// Declines the acknowledgement: for events with nobody to tell about a miss (a
    /// client event, a subscription count); misses still count in the adapter's metrics.
    pub fn unacknowledged(self) {}
}

/// A broadcast that may not have reached every node's subscribers (the local ones got it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event could not be published to the other nodes of the cluster; it may not have reached all subscribers")]
pub struct NotPublished;

/// What a node receives from the cluster bus (all zero on one node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages received from the bus since start.
    pub received: u64,
    /// Bus topics this node listens to.
    pub topics: u64,
}

/// A cluster (or a single node) as sessions and REST handlers see it; its
/// [`History`] half keeps and replays channel history.
pub trait Adapter: History + Send + Sync + 'static {
    /// Whether the adapter can reach the rest of the cluster (always true on one node).
    fn healthy(&self) -> bool {
        true
    }

    /// Messages for other nodes that could not be sent (always 0 on one node).
    fn dropped_messages(&self) -> u64 {
        0
    }

    /// What this node receives from the cluster bus.
    fn bus_stats(&self) -> BusStats {
        BusStats::default()
    }

    /// Subscribes a local connection to a non-presence channel. `None` if it already was.
    /// Sends `channel_occupied` (debounced) when the channel becomes occupied.
    fn subscribe<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
    ) -> BoxFuture<'a, Option<Subscribed>>;

    /// Subscribes a local connection to a presence channel as `user_id`. On success the
    /// joiner's `subscription_succeeded` with its member list is already queued, the
    /// other members were told `member_added` (on the user's first connection), and the
    /// webhooks were sent (debounced); no member event reaches the joiner before its list.
    fn join<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
        user_id: &'a str,
        info: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Option<Joined>, ChannelFull>>;

    /// Removes a subscription; `None` if there was none. On a presence user's last
    /// connection the others are told `member_removed`; `member_removed` and
    /// `channel_vacated` webhooks wait for the debounce window.
    fn unsubscribe<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        socket: SocketId,
    ) -> BoxFuture<'a, Option<Unsubscribed>>;

    /// Delivers a serialized frame to every subscriber of the channel but `except`, on
    /// every node. Local subscribers have it on return; the result says whether every
    /// other node holding the channel heard it (REST triggers answer 503 when not).
    fn broadcast(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
    ) -> Published;

    /// Keeps a cache channel's last server-triggered event.
    fn cache_put(&self, app: &App, channel: &ChannelName, event: CachedEvent);

    /// A cache channel's last event, if one is still kept.
    fn cached<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Option<CachedEvent>>;

    /// Closes every connection subscribed to `channel`, on every node.
    fn close_subscribers(&self, app: &App, channel: &ChannelName, code: ErrorCode);

    /// Makes `conn` hear "online"/"offline" of these users, from every node; resolves
    /// once it will.
    fn watch<'a>(
        &'a self,
        app: &'a App,
        conn: &'a ConnHandle,
        user_ids: &'a [String],
    ) -> BoxFuture<'a, ()>;

    /// Undoes [`Adapter::watch`] for these users.
    fn unwatch(&self, app: &App, socket: SocketId, user_ids: &[String]);

    /// Sends a frame to every connection watching `user_id`, on every node.
    fn notify_watchers(&self, app: &App, user_id: &str, frame: ByteString);

    /// Counts for one channel, cluster-wide.
    fn channel_counts<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, ChannelCounts>;

    /// Occupied channels whose names start with `prefix`, cluster-wide.
    fn channels<'a>(
        &'a self,
        app: &'a App,
        prefix: &'a str,
    ) -> BoxFuture<'a, Vec<(ChannelName, ChannelCounts)>>;

    /// User ids present on a presence channel, cluster-wide.
    fn users<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Vec<String>>;
}

/// A user is online while their `#server-to-user-` channel is occupied anywhere in
/// the cluster: its becoming occupied or vacated (a sign-in, a last connection
/// closing, a dead node's clean-up) tells the user's watchers. The one place that rule lives.
pub fn user_channel_changed(
    adapter: &dyn Adapter,
    app: &App,
    channel: &ChannelName,
    occupied: bool,
) {
    if let Some(user) = channel.server_to_user_id() {
        let notice =
            protocol::frame::watchlist_event(if occupied { "online" } else { "offline" }, &[user]);
        adapter.notify_watchers(app, user, notice.into());
    }
}

/// One node on its own: everything is answered from local memory.
#[derive(Debug, Default)]
pub struct LocalAdapter;

impl Adapter for LocalAdapter {
    fn subscribe<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
    ) -> BoxFuture<'a, Option<Subscribed>> {
        future::ready(local::subscribe(app, channel, conn)).boxed()
    }

    fn join<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
        user_id: &'a str,
        info: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Option<Joined>, ChannelFull>> {
        future::ready(local::join(app, channel, conn, user_id, info)).boxed()
    }

    fn unsubscribe<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        socket: SocketId,
    ) -> BoxFuture<'a, Option<Unsubscribed>> {
        future::ready(local::unsubscribe(app, channel, socket)).boxed()
    }

    fn broadcast(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
    ) -> Published {
        app.hub.deliver(channel, except, || Message::new(frame));
        Published::complete()
    }

    fn watch<'a>(
        &'a self,
        app: &'a App,
        conn: &'a ConnHandle,
        user_ids: &'a [String],
    ) -> BoxFuture<'a, ()> {
        app.hub.watch(conn, user_ids);
        future::ready(()).boxed()
    }

    fn unwatch(&self, app: &App, socket: SocketId, user_ids: &[String]) {
        app.hub.unwatch(socket, user_ids);
    }

    fn cache_put(&self, app: &App, channel: &ChannelName, event: CachedEvent) {
        app.hub.cache_put(channel, event);
    }

    fn cached<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Option<CachedEvent>> {
        future::ready(app.hub.cache_get(channel, Instant::now())).boxed()
    }

    fn close_subscribers(&self, app: &App, channel: &ChannelName, code: ErrorCode) {
        app.hub.close_subscribers(channel, code);
    }

    fn notify_watchers(&self, app: &App, user_id: &str, frame: ByteString) {
        app.hub.notify_watchers(user_id, &Message::new(frame));
    }

    fn channel_counts<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, ChannelCounts> {
        future::ready(app.hub.counts(channel)).boxed()
    }

    fn channels<'a>(
        &'a self,
        app: &'a App,
        prefix: &'a str,
    ) -> BoxFuture<'a, Vec<(ChannelName, ChannelCounts)>> {
        future::ready(app.hub.channels(prefix)).boxed()
    }

    fn users<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Vec<String>> {
        future::ready(app.hub.user_ids(channel)).boxed()
    }
}

/// Joining and leaving on this node alone: the hub's transition and the lifecycle
/// webhooks it causes, taken as one step (see [`App::transition`]). Used by
/// [`LocalAdapter`], and by a cluster adapter while it cannot reach the cluster.
pub(crate) mod local {
    use super::*;
    use crate::{core::hub::Announce, webhooks::WebhookEvent};

    pub fn subscribe(app: &App, channel: &ChannelName, conn: &ConnHandle) -> Option<Subscribed> {
        app.transition(
            channel,
            || app.hub.subscribe(channel, conn),
            |sub| match sub {
                Some(s) if s.occupied => vec![WebhookEvent::ChannelOccupied {
                    channel: channel.to_string(),
                }],
                _ => Vec::new(),
            },
        )
    }

    pub fn join(
        app: &App,
        channel: &ChannelName,
        conn: &ConnHandle,
        user_id: &str,
        info: Box<RawValue>,
    ) -> Result<Option<Joined>, ChannelFull> {
        app.transition(
            channel,
            || {
                app.hub.join(
                    channel,
                    conn,
                    user_id,
                    info,
                    app.limits.max_presence_members,
                )
            },
            |joined| {
                let mut events = Vec::new();
                if let Ok(Some(j)) = joined {
                    if j.subscribed.occupied {
                        events.push(WebhookEvent::ChannelOccupied {
                            channel: channel.to_string(),
                        });
                    }
                    if j.first {
                        events.push(WebhookEvent::MemberAdded {
                            channel: channel.to_string(),
                            user_id: user_id.to_owned(),
                        });
                    }
                }
                events
            },
        )
    }

    pub fn unsubscribe(app: &App, channel: &ChannelName, socket: SocketId) -> Option<Unsubscribed> {
        app.transition(
            channel,
            || app.hub.unsubscribe(channel, socket, Announce::Members),
            |left| left_webhooks(channel, left.as_ref()),
        )
    }

    /// For a subscription already taken out of the hub without announcing it (a
    /// cluster adapter that then could not reach the cluster): announces it locally.
    pub fn announce_unsubscribed(
        app: &App,
        channel: &ChannelName,
        left: Unsubscribed,
    ) -> Unsubscribed {
        if let Some(user) = &left.user_left {
            app.hub.deliver(channel, None, || {
                Message::new(protocol::frame::member_removed(channel.as_str(), user))
            });
        }
        app.lifecycle_webhooks(left_webhooks(channel, Some(&left)));
        left
    }

    fn left_webhooks(channel: &ChannelName, left: Option<&Unsubscribed>) -> Vec<WebhookEvent> {
        let mut events = Vec::new();
        if let Some(left) = left {
            if let Some(user) = &left.user_left {
                events.push(WebhookEvent::MemberRemoved {
                    channel: channel.to_string(),
                    user_id: user.to_string(),
                });
            }
            if left.vacated {
                events.push(WebhookEvent::ChannelVacated {
                    channel: channel.to_string(),
                });
            }
        }
        events
    }
}
