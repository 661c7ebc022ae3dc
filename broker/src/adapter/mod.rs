//! The seam between one node and the cluster.
//!
//! Sessions and REST handlers never touch another node directly; they call an
//! [`Adapter`]. [`LocalAdapter`] serves a single node from its in-memory
//! [`Hub`](crate::core::Hub)s. A clustered adapter implements the same trait by
//! also publishing to, and asking, the other nodes; queries are therefore async,
//! and the transitions it reports (occupied, vacated, a user's first or last
//! connection) are cluster-wide.

pub mod redis;

use std::time::Instant;

use bytestring::ByteString;
use futures_util::future::{self, BoxFuture, FutureExt};
use protocol::{ChannelName, ErrorCode, SocketId};
use serde_json::value::RawValue;

use crate::{
    ws::wire,
    apps::App,
    core::{
        hub::{CachedEvent, ChannelFull, Joined, Subscribed, Unsubscribed},
        ChannelCounts, ConnHandle,
    },
};

pub trait Adapter: Send + Sync + 'static {
    /// Whether the adapter can reach the rest of the cluster (always true on one node).
    fn healthy(&self) -> bool {
        true
    }

    /// Messages for other nodes that could not be sent (always 0 on one node).
    fn dropped_messages(&self) -> u64 {
        0
    }

    /// Subscribes a local connection to a non-presence channel. `None` if it already was.
    fn subscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, conn: &'a ConnHandle) -> BoxFuture<'a, Option<Subscribed>>;

    /// Subscribes a local connection to a presence channel as `user_id`.
    fn join<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
        user_id: &'a str,
        info: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Option<Joined>, ChannelFull>>;

    /// Removes a subscription; `None` if there was none.
    fn unsubscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, socket: SocketId) -> BoxFuture<'a, Option<Unsubscribed>>;

    /// Delivers a serialized frame to every subscriber of the channel but `except`, on every node.
    fn broadcast(&self, app: &App, channel: &ChannelName, frame: ByteString, except: Option<SocketId>);

    /// Keeps a cache channel's last server-triggered event.
    fn cache_put(&self, app: &App, channel: &ChannelName, event: CachedEvent);

    /// A cache channel's last event, if one is still kept.
    fn cached<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Option<CachedEvent>>;

    /// Closes every connection subscribed to `channel`, on every node.
    fn close_subscribers(&self, app: &App, channel: &ChannelName, code: ErrorCode);

    /// Sends a frame to every connection watching `user_id`, on every node.
    fn notify_watchers(&self, app: &App, user_id: &str, frame: ByteString);

    /// Counts for one channel, cluster-wide.
    fn channel_counts<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, ChannelCounts>;

    /// Occupied channels whose names start with `prefix`, cluster-wide.
    fn channels<'a>(&'a self, app: &'a App, prefix: &'a str) -> BoxFuture<'a, Vec<(ChannelName, ChannelCounts)>>;

    /// User ids present on a presence channel, cluster-wide.
    fn users<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Vec<String>>;
}

/// One node on its own: everything is answered from local memory.
#[derive(Debug, Default)]
pub struct LocalAdapter;

impl Adapter for LocalAdapter {
    fn subscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, conn: &'a ConnHandle) -> BoxFuture<'a, Option<Subscribed>> {
        future::ready(app.hub.subscribe(channel, conn)).boxed()
    }

    fn join<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
        user_id: &'a str,
        info: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Option<Joined>, ChannelFull>> {
        future::ready(app.hub.join(channel, conn, user_id, info, app.limits.max_presence_members)).boxed()
    }

    fn unsubscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, socket: SocketId) -> BoxFuture<'a, Option<Unsubscribed>> {
        future::ready(app.hub.unsubscribe(channel, socket)).boxed()
    }

    fn broadcast(&self, app: &App, channel: &ChannelName, frame: ByteString, except: Option<SocketId>) {
        app.hub.deliver(channel, except, || wire::text(&frame));
    }

    fn cache_put(&self, app: &App, channel: &ChannelName, event: CachedEvent) {
        app.hub.cache_put(channel, event);
    }

    fn cached<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Option<CachedEvent>> {
        future::ready(app.hub.cache_get(channel, Instant::now())).boxed()
    }

    fn close_subscribers(&self, app: &App, channel: &ChannelName, code: ErrorCode) {
        app.hub.close_subscribers(channel, code);
    }

    fn notify_watchers(&self, app: &App, user_id: &str, frame: ByteString) {
        app.hub.notify_watchers(user_id, &wire::text(&frame));
    }

    fn channel_counts<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, ChannelCounts> {
        future::ready(app.hub.counts(channel)).boxed()
    }

    fn channels<'a>(&'a self, app: &'a App, prefix: &'a str) -> BoxFuture<'a, Vec<(ChannelName, ChannelCounts)>> {
        future::ready(app.hub.channels(prefix)).boxed()
    }

    fn users<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Vec<String>> {
        future::ready(app.hub.user_ids(channel)).boxed()
    }
}
