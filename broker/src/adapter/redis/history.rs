//! Channel history on a cluster: kept in Redis, so every node replays the same
//! positions and a node restart loses nothing Redis kept.
//!
//! Per kept channel, in its slot (`{app:channel}`): the last position given out
//! (`hseq`), a stream of the kept events whose entry ids are `position-0` and whose
//! length is capped at `max_events` (`hist`), and the epoch (`hepoch`). The existing
//! publish script assigns the position, appends to the stream and publishes the
//! event with its position in one step; every key is given `max_age_secs` to live
//! on every publish, so an idle channel's history goes away by itself. The epoch is
//! set only if missing: if Redis loses its data (restart without persistence, a
//! flush), the next publish or read starts a new epoch and resumes fail with
//! `history_lost` instead of replaying a gap.
//!
//! While Redis cannot be reached the node keeps and replays from its own memory
//! (another epoch, so a resume on another node fails honestly rather than silently).

use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::{BoxFuture, FutureExt};
use protocol::{
    history::{FailReason, HistoryConfig, HistoryQuery, HistoryRequest, Window},
    ChannelName, SocketId,
};

use super::{
    message::{Header, Kind},
    transport::KeptArgs,
    RedisAdapter,
};
use crate::{
    adapter::{
        history::{local, History},
        Adapter, Published,
    },
    apps::App,
    core::{
        history::{now_ms, select, KeptEvent, Page, Replay},
        Message,
    },
};

fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Delivers a kept event from the bus to this node's subscribers, with its position.
pub(super) fn deliver(app: &App, channel: &ChannelName, header: &Header<'_>, body: &str) {
    let message = || match header.position {
        Some(p) => Message::kept(body.to_owned(), channel, p),
        None => Message::new(body.to_owned()),
    };
    app.hub.deliver(channel, header.except, message);
}

/// `(epoch, last position, [(entry id, [field, value, ...])])` as `history_read.lua` answers.
type Stored = super::transport::StoredHistory;

/// The window and the events still within `max_age_secs`, oldest first.
fn parse(stored: Stored, config: &HistoryConfig) -> (Window, Vec<KeptEvent>) {
    let (epoch, newest, entries) = stored;
    let since = now_ms().saturating_sub(config.max_age_secs.saturating_mul(1000));
    let events: Vec<KeptEvent> = entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let position = id.split_once('-')?.0.parse().ok()?;
            let mut event = KeptEvent {
                position,
                frame: ByteString::new(),
                except: None,
                at_ms: 0,
            };
            for pair in fields.chunks_exact(2) {
                match pair[0].as_str() {
                    "f" => event.frame = pair[1].clone().into(),
                    "x" => event.except = pair[1].parse::<SocketId>().ok(),
                    "t" => event.at_ms = pair[1].parse().unwrap_or(0),
                    _ => {}
                }
            }
            Some(event)
        })
        .filter(|e| e.at_ms >= since)
        .collect();
    let window = Window {
        epoch,
        oldest: events.first().map_or(newest + 1, |e| e.position),
        newest,
    };
    (window, events)
}

impl RedisAdapter {
    /// Queues a kept event on the publisher (in order with the channel's other messages).
    fn send_kept(
        &self,
        keys: &super::keys::ChannelKeys,
        header_line: Vec<u8>,
        kept: KeptArgs,
    ) -> tokio::sync::oneshot::Receiver<bool> {
        let (ack, acked) = tokio::sync::oneshot::channel();
        let out = super::publisher::Outgoing {
            topic: keys.topic(),
            shares: keys.shares(),
            payload: header_line,
            history: Some(kept),
            ack,
        };
        if !self.connected() || self.publish.try_send(out).is_err() {
            self.dropped_publishes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        acked
    }

    async fn read_history(
        &self,
        app: &App,
        channel: &ChannelName,
        config: &HistoryConfig,
    ) -> Option<(Window, Vec<KeptEvent>)> {
        let keys = self.keys.channel(app.id.as_str(), channel.as_str());
        let keys = [
            keys.history_seq(),
            keys.history_stream(),
            keys.history_epoch(),
        ];
        let max_age = config.max_age_secs;
        let stored: Stored = self
            .with_bus(|bus| async move { bus.read_history(&keys, max_age, fresh_epoch()).await })
            .await?;
        Some(parse(stored, config))
    }
}

impl History for RedisAdapter {
    fn keep(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
    ) -> Published {
        let Some(config) = &app.history else {
            return self.broadcast(app, channel, frame, except);
        };
        if !self.healthy() {
            // Kept here only, in this node's own epoch; the other nodes cannot be told.
            local::keep(app, channel, frame, except);
            return Published::not_published();
        }
        let mut header = Header::new(&self.node, Kind::Kept, app.id.as_str(), channel.as_str());
        header.except = except;
        let keys = self.keys.channel(app.id.as_str(), channel.as_str());
        let kept = KeptArgs {
            keys: [
                keys.history_seq(),
                keys.history_stream(),
                keys.history_epoch(),
            ],
            args: vec![
                frame.as_bytes().to_vec(),
                except
                    .map(|s| s.to_string())
                    .unwrap_or_default()
                    .into_bytes(),
                config.max_events.to_string().into_bytes(),
                config.max_age_secs.to_string().into_bytes(),
                fresh_epoch().into_bytes(),
            ],
        };
        Published::awaiting(self.send_kept(&keys, header.line().into_bytes(), kept))
    }

    fn replay<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        request: &'a HistoryRequest,
    ) -> BoxFuture<'a, Result<Replay, FailReason>> {
        async move {
            let config = app.history.as_ref().ok_or(FailReason::ChannelNotKept)?;
            if !self.healthy() {
                return Err(FailReason::Unavailable);
            }
            let (window, events) = self
                .read_history(app, channel, config)
                .await
                .ok_or(FailReason::Unavailable)?;
            Ok(select(
                window,
                events.iter(),
                request,
                Duration::from_secs(config.max_age_secs),
                now_ms(),
            ))
        }
        .boxed()
    }

    fn page<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<Page, FailReason>> {
        async move {
            let config = app.history.as_ref().ok_or(FailReason::ChannelNotKept)?;
            if !self.healthy() {
                return local::page(app, channel, query);
            }
            let (window, events) = self
                .read_history(app, channel, config)
                .await
                .ok_or(FailReason::Unavailable)?;
            let matching = events.into_iter().filter(|e| query.contains(e.position));
            let events = match query.direction {
                protocol::history::Direction::OldestFirst => matching.take(query.limit).collect(),
                protocol::history::Direction::NewestFirst => {
                    let all: Vec<_> = matching.collect();
                    all.into_iter().rev().take(query.limit).collect()
                }
            };
            Ok(Page { window, events })
        }
        .boxed()
    }
}
