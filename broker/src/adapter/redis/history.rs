//! Channel history on a cluster node.

use bytestring::ByteString;
use futures_util::future::{self, BoxFuture, FutureExt};
use protocol::{
    history::{FailReason, HistoryQuery, HistoryRequest},
    ChannelName, SocketId,
};

use super::{
    message::{Header, Kind},
    RedisAdapter,
};
use crate::{
    adapter::{
        history::{local, History},
        Published,
    },
    apps::App,
    core::history::{Page, Replay},
};

impl History for RedisAdapter {
    fn keep(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
    ) -> Published {
        local::keep(app, channel, frame.clone(), except);
        let mut header = Header::new(
            &self.node,
            Kind::Broadcast,
            app.id.as_str(),
            channel.as_str(),
        );
        header.except = except;
        super::published(self.send_cluster(
            &self.keys.channel(app.id.as_str(), channel.as_str()),
            &header,
            &frame,
        ))
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
