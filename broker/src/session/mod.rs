//! One client connection's task, whatever its transport: reads client
//! messages from an [`Inbound`], answers them, keeps the connection alive, and
//! cleans up after it. WebSocket and HTTP-fallback connections run this same code.
//!
//! Outgoing frames never pass through this task: broadcasts and replies are
//! queued on the connection's [`ConnHandle`] and the response body drains the
//! queue (see [`crate::core::connection`]). The task wakes only for client
//! messages, timers and close requests.
//!
//! Everything about a connection that only it needs (its subscriptions, its
//! rate bucket, its signed-in user) lives in this task, not in shared state.

use std::{sync::Arc, time::Instant};

use futures_util::future;
use protocol::{
    channel::InvalidName,
    frame::{self, ChannelData, ClientFrame, Subscribe, UserData},
    history::{self, FailReason, HistoryRequest, Recovery, RequestError, Status},
    limits::{clip, CHANNEL_LIMIT_STATUS, MAX_QUOTED_INPUT_CHARS},
    sign, ChannelKind, ChannelName, ErrorCode, EventName,
};
use serde_json::value::RawValue;
use tokio::time::{sleep_until, Instant as TokioInstant};

use crate::{
    adapter,
    apps::App,
    core::{hub::Subscribed, rate::TokenBucket, ConnHandle, Message, Outgoing},
    state::State,
    webhooks::WebhookEvent,
};

mod admit;
mod inbound;

pub use admit::admit;
pub use inbound::{Inbound, InboundError, Incoming};

/// The client went away; the session only cleans up.
struct Gone;

/// What a subscription asked of the channel's history.
enum HistoryAsk {
    /// Nothing (no `history` field): the subscription is exactly as without history.
    None,
    /// Asked, but the app keeps no history for the channel.
    NotKept,
    /// Asked on a kept channel; its kept events are held until the replay is queued.
    Track(HistoryRequest),
}

/// `pusher_internal:recovery` for a failure without a known window.
fn failed_notice(name: &ChannelName, reason: FailReason) -> String {
    history::recovery_frame(
        name.as_str(),
        &Recovery {
            status: Status::Failed,
            reason: Some(reason),
            epoch: None,
            position: None,
            replayed: 0,
        },
    )
}

struct Session {
    state: Arc<State>,
    app: Arc<App>,
    conn: ConnHandle,
    channels: Vec<ChannelName>,
    client_events: TokenBucket,
    user_id: Option<String>,
    /// User ids this connection watches (from its sign-in's `user_data.watchlist`).
    watchlist: Vec<String>,
    /// Signed in, or joined a channel that needs auth (what authorized connections ask for).
    authorized: bool,
}

/// Runs a connection to its end. The app's connection count was already
/// incremented by the handshake; it is decremented here.
pub async fn run(state: Arc<State>, app: Arc<App>, conn: ConnHandle, reader: impl Inbound) {
    let id = conn.id;
    let mut session = Session {
        client_events: TokenBucket::new(app.limits.client_events_per_second),
        state,
        app,
        conn,
        channels: Vec::new(),
        user_id: None,
        watchlist: Vec::new(),
        authorized: false,
    };
    tracing::debug!(socket_id = %id, app = session.app.id.as_str(), "connected");
    let metrics = session.state.metrics.clone();
    metrics.connections.inc();
    metrics.connections_opened.inc();
    session.serve(reader).await;
    // Boxed so the rarely used clean-up path does not enlarge every idle connection's task.
    Box::pin(session.cleanup()).await;
    session
        .state
        .console
        .connection_closed(&session.app.key, id, session.conn.close_code());
    metrics.connections.dec();
    tracing::debug!(socket_id = %id, "disconnected");
}

impl Session {
    async fn serve(&mut self, mut reader: impl Inbound) {
        let established =
            frame::connection_established(self.conn.id, self.state.activity_timeout.as_secs());
        self.send(established);
        let mut last_heard = TokioInstant::now();
        let mut pinged_at: Option<TokioInstant> = None;
        let mut shutdown = self.state.shutdown_signal();
        let conn = self.conn.clone();
        // With authorized connections on, the connection must authorize itself by then.
        let authorize_by = self.app.authorize_within.map(|t| TokioInstant::now() + t);
        loop {
            let deadline = match pinged_at {
                Some(t) => t + self.state.pong_timeout,
                None => last_heard + self.state.activity_timeout,
            };
            tokio::select! {
                biased;
                code = conn.close_requested() => {
                    if code == ErrorCode::OverCapacity.code() {
                        self.state.metrics.slow_consumers_closed.inc();
                    }
                    return;
                }
                _ = shutdown.wait_for(|stopping| *stopping) => {
                    self.conn.close(ErrorCode::ReconnectImmediately);
                    return;
                }
                _ = sleep_until(authorize_by.unwrap_or_else(TokioInstant::now)), if authorize_by.is_some() && !self.authorized => {
                    // The hosted service's answer: 4009, "Connection not authorized within timeout".
                    tracing::debug!(socket_id = %self.conn.id, "not authorized within the timeout");
                    self.conn.close(ErrorCode::Unauthorized);
                    return;
                }
                msg = reader.next() => {
                    last_heard = TokioInstant::now();
                    pinged_at = None;
                    match msg {
                        Some(Ok(m)) => {
                            if Box::pin(self.on_message(m)).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(socket_id = %self.conn.id, error = %e.message, "protocol error");
                            self.send(frame::error(None, &e.message));
                            self.conn.close_with(e.close_code);
                            return;
                        }
                        None => return,
                    }
                }
                _ = sleep_until(deadline) => {
                    if pinged_at.is_some() {
                        self.conn.close(ErrorCode::PongNotReceived);
                        return;
                    }
                    self.send(frame::PING);
                    pinged_at = Some(TokioInstant::now());
                }
            }
        }
    }

    /// Queues a reply or notice for this client.
    fn send(&self, message: impl Into<Outgoing>) {
        self.conn.send_direct(message);
    }

    /// Handles one message; `Err` ends the session.
    async fn on_message(&mut self, msg: Incoming) -> Result<(), Gone> {
        match msg {
            Incoming::Text(bytes) => {
                self.state.metrics.messages_in.inc();
                self.state.metrics.bytes_in.inc_by(bytes.len() as u64);
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    self.send(frame::error(None, "text messages must be UTF-8"));
                    return Ok(());
                };
                match ClientFrame::parse(text) {
                    Ok(f) => self.on_frame(f).await,
                    Err(e) => self.send(frame::error(None, &e.to_string())),
                }
                Ok(())
            }
            Incoming::Binary => {
                self.send(frame::error(None, "binary messages are not supported"));
                Ok(())
            }
            Incoming::Heard => Ok(()),
            Incoming::Close => {
                self.conn.close_with(1000);
                Err(Gone)
            }
        }
    }

    async fn on_frame(&mut self, f: ClientFrame) {
        match f {
            ClientFrame::Ping => self.send(frame::PONG),
            ClientFrame::Pong => {}
            ClientFrame::Subscribe(s) => self.subscribe(s).await,
            ClientFrame::Unsubscribe { channel } => {
                if let Ok(name) = ChannelName::parse(&channel) {
                    if let Some(i) = self.channels.iter().position(|c| *c == name) {
                        self.channels.swap_remove(i);
                        self.leave(&name).await;
                        self.conn.untrack(&name, None);
                    }
                }
            }
            ClientFrame::Signin(s) => self.signin(&s.auth, &s.user_data).await,
            ClientFrame::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(&event, &channel, data).await,
            ClientFrame::Unknown { event } => self.send(frame::error(
                None,
                &format!(
                    "unsupported event {:?}",
                    clip(&event, MAX_QUOTED_INPUT_CHARS)
                ),
            )),
        }
    }

    async fn subscribe(&mut self, s: Subscribe) {
        let name =
            match ChannelName::parse_with_max(&s.channel, self.app.limits.max_channel_name_len) {
                Ok(n) => n,
                Err(e) => {
                    return self.refuse_subscription(
                        &s.channel,
                        frame::error(None, &invalid_channel(&s.channel, e)),
                    )
                }
            };
        let kind = name.kind();
        if kind == ChannelKind::ServerToUser {
            // Sign-in already joined the connection to its own user channel; pusher-js
            // still subscribes to it afterwards, and only that is allowed.
            if name.server_to_user_id() == self.user_id.as_deref() && self.channels.contains(&name)
            {
                return self.send(frame::subscription_succeeded(name.as_str()));
            }
            let msg =
                "a #server-to-user- channel is only for the connection signed in as that user";
            return self.refuse_subscription(
                name.as_str(),
                frame::subscription_error(name.as_str(), "AuthError", msg, 403),
            );
        }
        if !self.channels.contains(&name) && self.channel_limit_reached() {
            let max = self.app.limits.max_channels_per_connection;
            self.state.metrics.refused_channel_limit.inc();
            let msg = format!("this connection is subscribed to {max} channels, the most allowed; unsubscribe from one first");
            return self.refuse_subscription(
                name.as_str(),
                frame::subscription_error(
                    name.as_str(),
                    "LimitReached",
                    &msg,
                    CHANNEL_LIMIT_STATUS,
                ),
            );
        }
        if kind.needs_auth() {
            let Some(auth) = s.auth.as_deref() else {
                return self.refuse_subscription(
                    name.as_str(),
                    frame::subscription_error(
                        name.as_str(),
                        "AuthError",
                        "missing auth for a private channel",
                        401,
                    ),
                );
            };
            // SDKs sign `channel_data` into a private channel's auth too when the app
            // passes user data; the signature then covers it, so check it that way.
            let data = s.channel_data.as_deref();
            if let Err(e) = sign::verify_channel(
                &self.app.key,
                &self.app.secret,
                self.conn.id,
                name.as_str(),
                data,
                auth,
            ) {
                let msg = format!("invalid signature for {}: {e}", name.as_str());
                return self.refuse_subscription(
                    name.as_str(),
                    frame::subscription_error(name.as_str(), "AuthError", &msg, 401),
                );
            }
        }
        let ask = match self.history_ask(&name, s.history.as_deref()) {
            Ok(ask) => ask,
            Err(e) => {
                let msg = e.to_string();
                return self.refuse_subscription(
                    name.as_str(),
                    frame::subscription_error(name.as_str(), "HistoryError", &msg, 400),
                );
            }
        };
        if kind == ChannelKind::Presence {
            return self
                .join_presence(name, s.channel_data.as_deref(), ask)
                .await;
        }
        self.authorized |= kind.needs_auth();
        let subscribed = self
            .state
            .adapter
            .subscribe(&self.app, &name, &self.conn)
            .await;
        self.send(frame::subscription_succeeded(name.as_str()));
        if let Some(sub) = subscribed {
            self.channels.push(name.clone());
            self.after_subscribe(&name, sub);
        }
        self.finish_history(&name, ask, subscribed.is_some()).await;
        self.replay_cache(&name).await;
    }

    /// Reads a subscription's `history` field. A request on a kept channel starts
    /// holding the channel's kept events for this connection (until
    /// [`Self::finish_history`] queues the replay), so it must be registered next.
    fn history_ask(
        &self,
        name: &ChannelName,
        raw: Option<&RawValue>,
    ) -> Result<HistoryAsk, RequestError> {
        let Some(raw) = raw else {
            return Ok(HistoryAsk::None);
        };
        if self.channels.contains(name) {
            // Already subscribed on this connection: its events keep flowing as they were.
            return Ok(HistoryAsk::None);
        }
        let Some(config) = self
            .app
            .history
            .as_ref()
            .filter(|_| adapter::history::is_kept(&self.app, name, false))
        else {
            return Ok(HistoryAsk::NotKept);
        };
        let request = HistoryRequest::parse(raw, config)?;
        self.conn.hold(name);
        Ok(HistoryAsk::Track(request))
    }

    /// Tells a subscription that asked for history what follows
    /// (`pusher_internal:recovery`), queues its replay and goes live.
    async fn finish_history(&self, name: &ChannelName, ask: HistoryAsk, registered: bool) {
        let request = match ask {
            HistoryAsk::None => return,
            HistoryAsk::NotKept => {
                self.send(failed_notice(name, FailReason::ChannelNotKept));
                return;
            }
            HistoryAsk::Track(_) if !registered => {
                self.conn.untrack(name, None);
                return;
            }
            HistoryAsk::Track(request) => request,
        };
        match self.state.adapter.replay(&self.app, name, &request).await {
            Ok(replay) => {
                let status = match (&replay.failed, &request) {
                    (Some(_), _) => Status::Failed,
                    (None, HistoryRequest::Resume { .. }) => Status::Recovered,
                    (None, HistoryRequest::Rewind(_)) => Status::Rewound,
                    (None, HistoryRequest::Positions) => Status::Subscribed,
                };
                let notice = history::recovery_frame(
                    name.as_str(),
                    &Recovery {
                        status,
                        reason: replay.failed,
                        epoch: Some(&replay.epoch),
                        position: Some(replay.newest),
                        replayed: replay.events.len(),
                    },
                );
                let events = replay
                    .events
                    .into_iter()
                    .map(|e| Message::kept(e.frame, name, e.position))
                    .collect();
                self.conn.replay(name, notice, events, replay.newest);
            }
            Err(reason) => {
                self.conn.untrack(name, Some(failed_notice(name, reason)));
            }
        }
    }

    /// Sends a subscription's refusal (and shows it in the debug console).
    fn refuse_subscription(&self, channel: &str, refusal: String) {
        self.state
            .console
            .subscription_failed(&self.app.key, self.conn.id, channel, &refusal);
        self.send(refusal);
    }

    /// Whether the connection holds `max_channels_per_connection` channels; its
    /// sign-in's own user channel does not count.
    fn channel_limit_reached(&self) -> bool {
        let held = self
            .channels
            .iter()
            .filter(|c| c.kind() != ChannelKind::ServerToUser)
            .count();
        held >= self.app.limits.max_channels_per_connection
    }

    /// Counts that follow a new subscription (the adapter sent its lifecycle webhooks).
    fn after_subscribe(&self, name: &ChannelName, sub: Subscribed) {
        self.state
            .console
            .subscribed(&self.app.key, self.conn.id, name);
        self.state.metrics.subscriptions.inc();
        self.subscription_count_changed(name, sub.subscriptions);
    }

    fn subscription_count_changed(&self, name: &ChannelName, count: u64) {
        if !self.app.subscription_count || count == 0 || name.kind() == ChannelKind::Presence {
            return;
        }
        let f = frame::subscription_count(name.as_str(), count);
        // Fire and forget: a count that misses a node is corrected by the next one.
        self.state
            .adapter
            .broadcast(&self.app, name, f.into(), None)
            .unacknowledged();
        self.app.webhook(|| WebhookEvent::SubscriptionCount {
            channel: name.to_string(),
            subscription_count: count,
        });
    }

    /// Sends a cache channel's last event to the new subscriber, or `pusher:cache_miss`.
    async fn replay_cache(&mut self, name: &ChannelName) {
        if !name.is_cache() {
            return;
        }
        match self.state.adapter.cached(&self.app, name).await {
            Some(last) => self.send(Message::new(last.frame)),
            None => {
                self.app.webhook(|| WebhookEvent::CacheMiss {
                    channel: name.to_string(),
                });
                self.send(frame::cache_miss(name.as_str()));
            }
        }
    }

    async fn join_presence(
        &mut self,
        name: ChannelName,
        channel_data: Option<&str>,
        ask: HistoryAsk,
    ) {
        let joined = self.try_join_presence(&name, channel_data).await;
        self.finish_history(&name, ask, joined).await;
        if joined {
            self.replay_cache(&name).await;
        }
    }

    /// Joins a presence channel; true if this connection was added to it.
    async fn try_join_presence(&mut self, name: &ChannelName, channel_data: Option<&str>) -> bool {
        let refuse =
            |msg: &str, status| frame::subscription_error(name.as_str(), "AuthError", msg, status);
        let Some(raw) = channel_data else {
            self.refuse_subscription(
                name.as_str(),
                refuse("presence channels need channel_data", 400),
            );
            return false;
        };
        let data: ChannelData = match serde_json::from_str(raw) {
            Ok(d) => d,
            Err(e) => {
                self.refuse_subscription(
                    name.as_str(),
                    refuse(&format!("invalid channel_data: {e}"), 400),
                );
                return false;
            }
        };
        let info = data
            .user_info
            .unwrap_or_else(|| RawValue::from_string("null".into()).expect("valid JSON"));
        if info.get().len() > self.app.limits.max_presence_user_info_bytes {
            let msg = format!(
                "user_info is larger than {} bytes",
                self.app.limits.max_presence_user_info_bytes
            );
            self.refuse_subscription(name.as_str(), refuse(&msg, 413));
            return false;
        }
        let joined = self
            .state
            .adapter
            .join(&self.app, name, &self.conn, &data.user_id, info)
            .await;
        match joined {
            Err(_) => {
                let msg = format!(
                    "presence channel is full ({} members)",
                    self.app.limits.max_presence_members
                );
                self.refuse_subscription(name.as_str(), refuse(&msg, 403));
                false
            }
            Ok(None) => false,
            Ok(Some(joined)) => {
                // The adapter queued the member list and told the others.
                self.channels.push(name.clone());
                self.authorized = true;
                self.after_subscribe(name, joined.subscribed);
                true
            }
        }
    }

    /// Removes one subscription (the adapter tells the others if a presence user
    /// left, and sends the lifecycle webhooks).
    async fn leave(&self, name: &ChannelName) {
        let Some(left) = self
            .state
            .adapter
            .unsubscribe(&self.app, name, self.conn.id)
            .await
        else {
            return;
        };
        self.state
            .console
            .unsubscribed(&self.app.key, self.conn.id, name);
        self.state.metrics.subscriptions.dec();
        if left.vacated {
            adapter::user_channel_changed(self.state.adapter.as_ref(), &self.app, name, false);
        } else {
            self.subscription_count_changed(name, left.subscriptions);
        }
    }

    async fn signin(&mut self, auth: &str, user_data: &str) {
        let user: UserData = match serde_json::from_str(user_data) {
            Ok(u) => u,
            Err(e) => {
                return self.send(frame::error(
                    Some(ErrorCode::Unauthorized.code()),
                    &format!("invalid user_data: {e}"),
                ))
            }
        };
        if let Err(e) = sign::verify_user(
            &self.app.key,
            &self.app.secret,
            self.conn.id,
            user_data,
            auth,
        ) {
            return self.send(frame::error(
                Some(ErrorCode::Unauthorized.code()),
                &format!("sign-in refused: {e}"),
            ));
        }
        let watching = user.watchlist.as_ref().map_or(0, Vec::len);
        if watching > self.app.limits.max_watchlist_users {
            let msg = format!(
                "watchlist has {watching} users, more than the limit of {}",
                self.app.limits.max_watchlist_users
            );
            return self.send(frame::error(Some(ErrorCode::Unauthorized.code()), &msg));
        }
        let Ok(channel) = ChannelName::for_user(&user.id) else {
            return self.send(frame::error(
                Some(ErrorCode::Unauthorized.code()),
                "user id has characters a channel name cannot hold",
            ));
        };
        if let Some(old) = self.user_id.replace(user.id.clone()) {
            if old != user.id {
                if let Ok(old_channel) = ChannelName::for_user(&old) {
                    self.channels.retain(|c| *c != old_channel);
                    self.leave(&old_channel).await;
                }
            }
        }
        self.send(frame::signin_success(user_data));
        self.authorized = true;
        if let Some(sub) = self
            .state
            .adapter
            .subscribe(&self.app, &channel, &self.conn)
            .await
        {
            self.channels.push(channel.clone());
            self.after_subscribe(&channel, sub);
            if sub.occupied {
                adapter::user_channel_changed(
                    self.state.adapter.as_ref(),
                    &self.app,
                    &channel,
                    true,
                );
            }
        }
        let watchlist = user.watchlist_ids();
        self.state
            .adapter
            .unwatch(&self.app, self.conn.id, &self.watchlist);
        self.state
            .adapter
            .watch(&self.app, &self.conn, &watchlist)
            .await;
        // One query per watched user, all at once (`max_watchlist_users` bounds them).
        let app = &self.app;
        let adapter = self.state.adapter.as_ref();
        let online: Vec<&str> = future::join_all(watchlist.iter().filter_map(|id| {
            let channel = ChannelName::for_user(id).ok()?;
            Some(async move {
                let counts = adapter.channel_counts(app, &channel).await;
                (counts.subscriptions > 0).then_some(id.as_str())
            })
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
        if !online.is_empty() {
            self.send(frame::watchlist_event("online", &online));
        }
        self.watchlist = watchlist;
    }

    async fn client_event(&mut self, event: &str, channel: &str, data: Box<RawValue>) {
        let limits = &self.app.limits;
        let name = match ChannelName::parse_with_max(channel, limits.max_channel_name_len) {
            Ok(n) => n,
            Err(e) => return self.send(frame::error(None, &invalid_channel(channel, e))),
        };
        if EventName::parse_with_max(event, limits.max_event_name_len).is_err() {
            let msg = format!(
                "invalid event name (at most {} characters, no control characters)",
                limits.max_event_name_len
            );
            return self.send(frame::error(None, &msg));
        }
        if !name.kind().allows_client_events() {
            return self.send(frame::error(
                None,
                "client events are only allowed on private and presence channels",
            ));
        }
        if !self.channels.contains(&name) {
            return self.send(frame::error(
                None,
                &format!("not subscribed to {}", name.as_str()),
            ));
        }
        if data.get().len() > limits.max_event_data_bytes {
            let msg = format!(
                "client event data is larger than {} bytes",
                limits.max_event_data_bytes
            );
            return self.send(frame::error(None, &msg));
        }
        if !self.client_events.take(Instant::now()) {
            return self.send(frame::error_code(ErrorCode::ClientEventRateLimit));
        }
        let user_id = if name.kind() == ChannelKind::Presence {
            self.app.hub.user_of(&name, self.conn.id)
        } else {
            None
        };
        let out = frame::client_event(name.as_str(), event, &data, user_id.as_deref());
        // Client events are relayed but never cached: only server-triggered events fill a cache channel.
        // A client event has nobody to tell that it missed a node (the protocol has no
        // acknowledgement); such misses are counted in `broker_adapter_dropped_messages`.
        let except = Some(self.conn.id);
        let published = if adapter::history::is_kept(&self.app, &name, true) {
            self.state
                .adapter
                .keep(&self.app, &name, out.into(), except)
        } else {
            self.state
                .adapter
                .broadcast(&self.app, &name, out.into(), except)
        };
        published.unacknowledged();
        self.state.console.client_event(
            &self.app.key,
            self.conn.id,
            &name,
            event,
            data.get().len(),
        );
        self.app.webhook(|| WebhookEvent::ClientEvent {
            channel: name.to_string(),
            event: event.to_owned(),
            data: match serde_json::from_str::<String>(data.get()) {
                Ok(text) => text,
                Err(_) => data.get().to_owned(),
            },
            socket_id: self.conn.id.to_string(),
            user_id,
        });
    }

    async fn cleanup(&mut self) {
        self.state
            .adapter
            .unwatch(&self.app, self.conn.id, &self.watchlist);
        for name in std::mem::take(&mut self.channels) {
            self.leave(&name).await;
        }
        self.app.hub.remove_connection();
    }
}

/// The error for a bad channel name, quoting at most the name's start.
fn invalid_channel(raw: &str, e: InvalidName) -> String {
    format!(
        "invalid channel name {:?}: {e}",
        clip(raw, MAX_QUOTED_INPUT_CHARS)
    )
}
