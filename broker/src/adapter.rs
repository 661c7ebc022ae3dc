//! The seam between one node and the cluster.
//!
//! Sessions and REST handlers never touch another node directly; they call an
//! [`Adapter`]. [`LocalAdapter`] serves a single node from its in-memory
//! [`Hub`](crate::core::Hub)s. A clustered adapter implements the same trait by
//! also publishing to, and asking, the other nodes; queries are therefore async.

use bytestring::ByteString;
use futures_util::future::{self, BoxFuture, FutureExt};
use protocol::{ChannelName, SocketId};
use serde_json::value::RawValue;

use crate::{
    apps::App,
    core::{hub::ChannelFull, hub::Joined, ChannelCounts, ConnHandle},
};

pub trait Adapter: Send + Sync + 'static {
    /// Subscribes a local connection to a non-presence channel. False if it already was.
    fn subscribe(&self, app: &App, channel: &ChannelName, conn: &ConnHandle) -> bool;

    /// Subscribes a local connection to a presence channel as `user_id`.
    /// `first` in the answer is cluster-wide: the user was on no node before.
    fn join<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
        user_id: &'a str,
        info: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Option<Joined>, ChannelFull>>;

    /// Removes a subscription; `Some(user)` when the user left the channel cluster-wide.
    fn unsubscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, socket: SocketId) -> BoxFuture<'a, Option<String>>;

    /// Delivers a serialized frame to every subscriber of the channel but `except`, on every node.
    fn broadcast(&self, app: &App, channel: &ChannelName, frame: ByteString, except: Option<SocketId>);

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
    fn subscribe(&self, app: &App, channel: &ChannelName, conn: &ConnHandle) -> bool {
        app.hub.subscribe(channel, conn)
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

    fn unsubscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, socket: SocketId) -> BoxFuture<'a, Option<String>> {
        let left = app.hub.unsubscribe(channel, socket).flatten().map(|u| u.to_string());
        future::ready(left).boxed()
    }

    fn broadcast(&self, app: &App, channel: &ChannelName, frame: ByteString, except: Option<SocketId>) {
        app.hub.deliver(channel, &frame, except);
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
