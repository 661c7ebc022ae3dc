//! The history seam, beside [`Adapter`](super::Adapter)'s: keeping an event with
//! its position (atomically with its delivery), and reading a channel's history
//! back for a resuming subscriber or a REST page. On one node the app's
//! [`LocalHistory`](crate::core::history::LocalHistory) answers; the Redis
//! adapter keeps history in Redis so every node replays the same positions.

use bytestring::ByteString;
use futures_util::future::{self, BoxFuture, FutureExt};
use protocol::{
    history::{FailReason, HistoryQuery, HistoryRequest},
    ChannelName, SocketId,
};

use super::Published;
use crate::{
    apps::App,
    core::{
        history::{Page, Replay},
        Message,
    },
};

pub trait History: Send + Sync + 'static {
    /// Keeps an event of a kept channel (the app keeps it: see [`is_kept`]) and
    /// delivers it like [`Adapter::broadcast`](super::Adapter::broadcast), each
    /// subscriber getting it in position order.
    fn keep(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
    ) -> Published;

    /// What a subscriber asking `request` on a kept channel gets.
    fn replay<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        request: &'a HistoryRequest,
    ) -> BoxFuture<'a, Result<Replay, FailReason>>;

    /// One REST page of a kept channel's history.
    fn page<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<Page, FailReason>>;
}

/// Whether the app keeps this channel's events (client events only if it says so).
pub fn is_kept(app: &App, channel: &ChannelName, client_event: bool) -> bool {
    app.history
        .as_ref()
        .is_some_and(|h| h.keeps(channel) && (!client_event || h.client_events))
}

/// History kept in this node's memory (one node, or a cluster node that cannot reach Redis).
pub(crate) mod local {
    use super::*;

    pub fn keep(app: &App, channel: &ChannelName, frame: ByteString, except: Option<SocketId>) {
        let Some(config) = &app.history else {
            app.hub.deliver(channel, except, || Message::new(frame));
            return;
        };
        app.hub
            .history
            .keep(config, channel, frame.clone(), except, |position| {
                app.hub
                    .deliver(channel, except, || Message::kept(frame, channel, position))
            });
    }

    pub fn replay(
        app: &App,
        channel: &ChannelName,
        request: &HistoryRequest,
    ) -> Result<Replay, FailReason> {
        let config = app.history.as_ref().ok_or(FailReason::ChannelNotKept)?;
        Ok(app.hub.history.replay(config, channel, request))
    }

    pub fn page(
        app: &App,
        channel: &ChannelName,
        query: &HistoryQuery,
    ) -> Result<Page, FailReason> {
        let config = app.history.as_ref().ok_or(FailReason::ChannelNotKept)?;
        Ok(app.hub.history.page(config, channel, query))
    }
}

impl History for super::LocalAdapter {
    fn keep(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
    ) -> Published {
        local::keep(app, channel, frame, except);
        Published::complete()
    }

    fn replay<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        request: &'a HistoryRequest,
    ) -> BoxFuture<'a, Result<Replay, FailReason>> {
        future::ready(local::replay(app, channel, request)).boxed()
    }

    fn page<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<Page, FailReason>> {
        future::ready(local::page(app, channel, query)).boxed()
    }
}
