//! Many broker nodes sharing one Redis (or one Redis Cluster): the cluster behaves
//! like one big broker.
//!
//! - **Per-channel routing.** Each channel has its own topic (`bus`, `keys`). A node
//!   listens to a channel's topic only while it has a local subscriber ([`interest`]),
//!   so it receives the traffic of the channels it holds and nothing else. A node
//!   delivers an event to its own subscribers at once and publishes it on the topic;
//!   it travels already serialized, so a receiving node shares one buffer among its
//!   subscribers. On a Redis Cluster a channel's keys and topic share one hash tag, so
//!   they live on one shard and pub/sub is sharded (SPUBLISH).
//! - **No silent loss.** Each publish runs a script that compares how many nodes heard
//!   it with how many hold a share of the channel; a REST trigger is answered 200 only
//!   when all did, 503 otherwise (see [`Adapter::broadcast`]).
//! - **Counts and presence.** Subscription counts and presence members live in Redis,
//!   changed by small Lua scripts (`lua/`), so "first subscriber", "last subscriber",
//!   "user's first connection" and "user's last connection" are each decided once for
//!   the whole cluster (and webhooks fire once). Each node's share is recorded too, so
//!   a dead node's share can be removed.
//! - **Exact member lists.** The script that changes a presence channel's members also
//!   publishes the `member_added` / `member_removed` on the channel's topic, and the
//!   joiner's member list in the same step. Redis hands a subscriber a topic's messages
//!   in the order they were published, so a node adds the joiner to the channel (and
//!   queues its list) exactly between the member events the list already reflects and
//!   those it does not: no member event reaches a joiner before its list, and none is lost.
//! - **Debounced webhooks.** `member_removed` and `channel_vacated` wait in the
//!   channel's `held` set for the debounce window; a join or subscription within it (on
//!   any node) removes the entry and sends neither webhook. Any node claims due entries.
//! - **Liveness** ([`liveness`]): heartbeats, and clean-up of a node that stopped.
//! - **Redis down.** Local clients keep being served from the local hub; queries fall
//!   back to local answers, triggers answer 503 and `/ready` says the adapter is down.
//!   When Redis returns, the node listens again and writes its local state back ([`reconcile`]).

mod bus;
mod history;
mod interest;
mod keys;
mod liveness;
#[cfg(test)]
mod memory;
mod message;
mod presence;
mod publisher;
mod reconcile;
mod redis_transport;
#[cfg(test)]
mod tests;
mod transport;

pub(crate) use bus::{message as bus_message, Bus, Target};

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parking_lot::{Mutex, RwLock};

use bytestring::ByteString;
use futures_util::future::{BoxFuture, FutureExt};
use protocol::{ChannelKind, ChannelName, ErrorCode, SocketId};
use redis::PushInfo;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use self::{
    interest::{Hold, Interest},
    keys::{channel_ref, ChannelKeys, Keys},
    message::{decode, encode, member_list, Header, Kind},
    presence::{succeeded_frame, PendingJoin},
    publisher::Outgoing,
    redis_transport::RedisTransport,
    transport::{HoldFor, Transport},
};
use super::{local, Adapter, BusStats, Published};
use crate::{
    apps::{App, AppRegistry},
    config::ClusterConfig,
    core::{
        hub::{Announce, CachedEvent, ChannelFull, Joined, Subscribed, Unsubscribed, CACHE_TTL},
        ChannelCounts, ConnHandle, Message,
    },
    webhooks::WebhookEvent,
};

#[derive(Serialize, Deserialize)]
struct StoredCache {
    event: String,
    data: String,
    frame: String,
}

/// The adapter for a cluster of nodes on Redis.
pub struct RedisAdapter {
    node: String,
    keys: Keys,
    config: ClusterConfig,
    target: Target,
    /// The webhook debounce window (leaves wait this long in Redis).
    debounce: Duration,
    /// Set once connected; the client reconnects by itself after that.
    bus: RwLock<Option<Arc<dyn Transport>>>,
    /// The node listens to its topics and the last command worked.
    healthy: AtomicBool,
    /// Set when local state (or what this node listens to) may differ from Redis.
    needs_reconcile: AtomicBool,
    /// This node has registered once (so a later "added" means it had been removed).
    registered: AtomicBool,
    publish: mpsc::Sender<Outgoing>,
    publish_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Publishes that did not reach every node holding the channel.
    dropped_publishes: AtomicU64,
    /// Messages received from the bus.
    received: AtomicU64,
    interest: Arc<Interest>,
    interest_rx: Mutex<Option<mpsc::UnboundedReceiver<interest::Command>>>,
    pending_joins: Mutex<HashMap<u64, PendingJoin>>,
    next_token: AtomicU64,
    /// Joins and leaves hold it shared from the hub change to the script; a reconcile
    /// holds it alone, so the share it writes is never one a concurrent change already
    /// moved past (which would leave the cluster count off by that change).
    reconcile_gate: tokio::sync::RwLock<()>,
}

impl RedisAdapter {
    /// Creates the adapter; nothing connects until [`RedisAdapter::start`].
    pub fn new(config: ClusterConfig, debounce: Duration) -> Result<Self, String> {
        let target = Target::parse(&config.redis_url).map_err(|e| format!("redis_url: {e}"))?;
        // Past `publish_queue` waiting messages a broadcast is dropped (and counted), and a REST trigger answers 503.
        let (publish, publish_rx) = mpsc::channel(config.publish_queue.max(1));
        let (interest, interest_rx) = Interest::new();
        Ok(Self {
            node: format!("{:016x}", rand_node_id()),
            keys: Keys::new(&config.key_prefix),
            config,
            target,
            debounce,
            bus: RwLock::new(None),
            healthy: AtomicBool::new(false),
            needs_reconcile: AtomicBool::new(true),
            registered: AtomicBool::new(false),
            publish,
            publish_rx: Mutex::new(Some(publish_rx)),
            dropped_publishes: AtomicU64::new(0),
            received: AtomicU64::new(0),
            interest,
            interest_rx: Mutex::new(Some(interest_rx)),
            pending_joins: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            reconcile_gate: tokio::sync::RwLock::new(()),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Spawns the connection task on the current (actix system) runtime; once
    /// connected it starts the subscriber, publisher, heartbeat and webhook-claim work.
    /// They run for the life of the process.
    pub fn start(self: &Arc<Self>, apps: Arc<AppRegistry>) {
        actix_web::rt::spawn(self.clone().run(apps));
    }

    async fn run(self: Arc<Self>, apps: Arc<AppRegistry>) {
        let (pushes, pushed) = mpsc::unbounded_channel();
        let bus = loop {
            match Bus::connect(&self.target, pushes.clone()).await {
                Ok(bus) => break bus,
                Err(e) => {
                    self.degraded(&e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::info!(node = %self.node, cluster = self.target.is_cluster(), "connected to redis");
        let transport = Arc::new(RedisTransport::new(bus, &self.target));
        self.attach(apps.clone(), transport, pushed);
        actix_web::rt::spawn(self.clone().run_heartbeat(apps.clone()));
        actix_web::rt::spawn(self.clone().run_held_back_webhooks(apps));
    }

    /// Puts the node on a connected transport and spawns the work that lasts the
    /// process's life: sending what interest and publishes queue, handling what the
    /// bus pushes. (Heartbeats and webhook claims are [`Self::run`]'s.)
    fn attach(
        self: &Arc<Self>,
        apps: Arc<AppRegistry>,
        transport: Arc<dyn Transport>,
        pushed: mpsc::UnboundedReceiver<PushInfo>,
    ) {
        *self.bus.write() = Some(transport.clone());
        if let Some(rx) = self.interest_rx.lock().take() {
            actix_web::rt::spawn(self.interest.clone().run(rx, transport.clone()));
        }
        if let Some(rx) = self.publish_rx.lock().take() {
            actix_web::rt::spawn(self.clone().run_publisher(rx, transport));
        }
        actix_web::rt::spawn(self.clone().receive(apps, pushed));
    }

    /// Handles what the bus pushes: messages on the topics this node listens to, and
    /// notice of a lost connection.
    async fn receive(
        self: Arc<Self>,
        apps: Arc<AppRegistry>,
        mut pushed: mpsc::UnboundedReceiver<PushInfo>,
    ) {
        while let Some(push) = pushed.recv().await {
            if push.kind == redis::PushKind::Disconnection {
                // Whatever was published meanwhile is gone; the heartbeat listens again and reconciles.
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        "redis connection lost: serving local clients only until it returns"
                    );
                }
                self.needs_reconcile.store(true, Ordering::Release);
                continue;
            }
            if let Some(payload) = bus::message(&push) {
                self.received.fetch_add(1, Ordering::Relaxed);
                self.on_message(&apps, payload);
            }
        }
    }

    fn bus(&self) -> Option<Arc<dyn Transport>> {
        self.bus.read().clone()
    }

    /// Whether the first connection was made (the client reconnects by itself after
    /// that); on the publish path, so it does not clone the connection as [`Self::bus`] does.
    fn connected(&self) -> bool {
        self.bus.read().is_some()
    }

    /// Runs a command on the shared connection; on failure marks the adapter unhealthy.
    async fn with_bus<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(Arc<dyn Transport>) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let bus = self.bus()?;
        match f(bus).await {
            Ok(v) => Some(v),
            Err(e) => {
                self.degraded(&e);
                None
            }
        }
    }

    fn degraded(&self, e: &redis::RedisError) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %e, "redis unavailable: serving local clients only until it returns");
        }
        self.needs_reconcile.store(true, Ordering::Release);
    }

    /// Queues a message for the channel's topic; the receipt says whether every node
    /// holding the channel heard it.
    fn send_cluster(&self, keys: &ChannelKeys, header: &Header<'_>, frame: &str) -> Published {
        let (ack, acked) = oneshot::channel();
        let out = Outgoing {
            topic: keys.topic(),
            shares: keys.shares(),
            payload: encode(header, frame),
            history: None,
            ack,
        };
        if !self.connected() || self.publish.try_send(out).is_err() {
            self.dropped_publishes.fetch_add(1, Ordering::Relaxed);
        }
        Published::awaiting(acked)
    }

    /// How long the app's leaving webhooks are held back (only if it has webhooks).
    fn hold_for(&self, app: &App) -> HoldFor {
        app.webhooks
            .is_some()
            .then_some(self.debounce.as_millis() as u64)
    }

    /// A member event as scripts publish it: every node delivers it, the sender's too.
    fn member_message(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: &str,
        except: Option<SocketId>,
    ) -> Vec<u8> {
        let mut header = Header::new(&self.node, Kind::Member, app.id.as_str(), channel.as_str());
        header.except = except;
        encode(&header, frame)
    }

    /// Handles one message from a topic this node listens to.
    fn on_message(&self, apps: &AppRegistry, payload: &[u8]) {
        let Some((header, body)) = decode(payload) else {
            tracing::debug!("ignoring a malformed cluster message");
            return;
        };
        let own = header.node == self.node;
        if own
            && matches!(
                header.kind,
                Kind::Broadcast | Kind::Terminate | Kind::Watchers
            )
        {
            return; // delivered locally when sent
        }
        let Some(app) = apps.by_id(header.app) else {
            return;
        };
        if header.kind == Kind::Watchers {
            // These carry a user id in `channel`, which need not be a channel name.
            app.hub
                .notify_watchers(&header.channel, &Message::new(body.to_owned()));
            return;
        }
        let Ok(channel) = ChannelName::parse_with_max(&header.channel, usize::MAX) else {
            return;
        };
        match header.kind {
            // Framed once on this node; every local subscriber gets the same bytes.
            Kind::Broadcast | Kind::Member => {
                app.hub
                    .deliver(&channel, header.except, || Message::new(body.to_owned()));
            }
            Kind::Kept => history::deliver(&app, &channel, &header, body),
            Kind::Terminate => {
                let code = header
                    .code
                    .and_then(ErrorCode::from_code)
                    .unwrap_or(ErrorCode::Unauthorized);
                app.hub.close_subscribers(&channel, code);
            }
            Kind::List => {
                // Lists go out on the channel's topic, so every node holding it sees each one; only the joiner's takes it.
                if !own {
                    return;
                }
                let pending = header
                    .token
                    .and_then(|t| self.pending_joins.lock().remove(&t));
                let Some(p) = pending else { return }; // gave up waiting; joined without it
                let Some(members) = member_list(body) else {
                    tracing::warn!(channel = %channel.as_str(), "malformed member list from redis");
                    return; // the joiner's wait runs out and it joins with a list read directly
                };
                let succeeded = succeeded_frame(&channel, &members);
                let sub = app
                    .hub
                    .join_with_list(&channel, &p.conn, &p.user_id, p.info, &succeeded);
                let _ = p.done.send(sub);
            }
            Kind::Watchers => {}
        }
    }

    /// Records that this node may hold a share of the channel, so its clean-up after a
    /// crash finds it. Before the share is written; a stale entry costs only a no-op.
    async fn note_channel(&self, app: &App, channel: &ChannelName) -> Option<()> {
        let key = self.keys.node_channels(&self.node);
        let member = channel_ref(app.id.as_str(), channel.as_str());
        self.with_bus(|c| async move { c.set_add(&key, &member).await.map(drop) })
            .await
    }

    /// Keeps the app's channel index in step with a transition the scripts reported.
    /// Removal is checked afterwards against the count, since another node may have
    /// occupied the channel again between the script and the removal.
    async fn index_channel(&self, app: &App, channel: &ChannelName, occupied: bool) {
        let Some(bus) = self.bus() else { return };
        let index = self.keys.app_channels(app.id.as_str());
        if occupied {
            let _ = bus.set_add(&index, channel.as_str()).await;
            return;
        }
        let _ = bus.set_remove(&index, channel.as_str()).await;
        let count = bus
            .get_int(&self.keys.channel(app.id.as_str(), channel.as_str()).count())
            .await;
        if matches!(count, Ok(Some(n)) if n > 0) {
            let _ = bus.set_add(&index, channel.as_str()).await;
        }
    }

    /// Files a channel with held-back webhooks in the index claimers read.
    async fn index_held_back(&self, app: &App, channel: &ChannelName, due: i64) {
        if due <= 0 {
            return;
        }
        let Some(bus) = self.bus() else { return };
        let entry = channel_ref(app.id.as_str(), channel.as_str());
        let _ = bus
            .sorted_add(&self.keys.held_index(), &entry, due, true)
            .await;
    }

    /// Keeps the indexes in step with a change of a channel's cluster count made by a
    /// script: the app's channel index when the channel became occupied or vacated, the
    /// held-webhook index when the script held a `channel_vacated` back (`due` > 0).
    async fn index_count_change(
        &self,
        app: &App,
        channel: &ChannelName,
        before: i64,
        after: i64,
        due: i64,
    ) {
        if before <= 0 && after > 0 {
            self.index_channel(app, channel, true).await;
        } else if before > 0 && after <= 0 {
            self.index_channel(app, channel, false).await;
        }
        self.index_held_back(app, channel, due).await;
    }

    async fn adjust_subs(
        &self,
        app: &App,
        channel: &ChannelName,
        delta: i64,
    ) -> Option<(i64, bool)> {
        let keys = self.keys.channel(app.id.as_str(), channel.as_str());
        let hold_for = self.hold_for(app);
        let change = self
            .with_bus(|c| async move { c.adjust(&keys, &self.node, delta, hold_for).await })
            .await?;
        self.index_count_change(app, channel, change.before, change.after, change.due)
            .await;
        Some((change.after, change.cancelled))
    }

    /// Counts a new local subscription in the cluster: `occupied` is cluster-wide, and
    /// `channel_occupied` is sent unless it cancels a held-back `channel_vacated`.
    async fn count_subscription(
        &self,
        app: &App,
        channel: &ChannelName,
        local: Subscribed,
    ) -> Subscribed {
        match self.adjust_subs(app, channel, 1).await {
            Some((total, cancelled)) => {
                let occupied = total == 1;
                if occupied && !cancelled {
                    app.webhook(|| WebhookEvent::ChannelOccupied {
                        channel: channel.to_string(),
                    });
                }
                Subscribed {
                    occupied,
                    subscriptions: total.max(0) as u64,
                }
            }
            None => {
                if local.occupied {
                    app.lifecycle_webhooks([WebhookEvent::ChannelOccupied {
                        channel: channel.to_string(),
                    }]);
                }
                local
            }
        }
    }
}

fn rand_node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl Adapter for RedisAdapter {
    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn dropped_messages(&self) -> u64 {
        self.dropped_publishes.load(Ordering::Relaxed)
    }

    fn bus_stats(&self) -> BusStats {
        BusStats {
            received: self.received.load(Ordering::Relaxed),
            topics: self.interest.len() as u64,
        }
    }

    fn subscribe<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
    ) -> BoxFuture<'a, Option<Subscribed>> {
        async move {
            // Every local subscription holds the topic, healthy or not (a reconcile listens again).
            let topic = self.keys.channel(app.id.as_str(), channel.as_str()).topic();
            let listening = self.interest.hold(&topic);
            let local = if self.healthy() && listening.wait().await {
                let _gate = self.reconcile_gate.read().await;
                match app.hub.subscribe(channel, conn) {
                    None => None,
                    // The first here: noted before this node's share is written, so a clean-up after a crash finds it.
                    Some(local)
                        if local.occupied && self.note_channel(app, channel).await.is_none() =>
                    {
                        // Redis failed us: the hub counts it; Redis will when the reconcile writes this node's share.
                        app.lifecycle_webhooks([WebhookEvent::ChannelOccupied {
                            channel: channel.to_string(),
                        }]);
                        Some(local)
                    }
                    Some(local) => Some(self.count_subscription(app, channel, local).await),
                }
            } else {
                self.needs_reconcile.store(true, Ordering::Release);
                local::subscribe(app, channel, conn)
            };
            if local.is_none() {
                self.interest.release(&topic);
            }
            local
        }
        .boxed()
    }

    fn join<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        conn: &'a ConnHandle,
        user_id: &'a str,
        info: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Option<Joined>, ChannelFull>> {
        async move {
            let topic = self.keys.channel(app.id.as_str(), channel.as_str()).topic();
            let listening = self.interest.hold(&topic);
            let joined = if self.healthy() && listening.wait().await {
                let _gate = self.reconcile_gate.read().await;
                match self.join_cluster(app, channel, conn, user_id, info).await {
                    Ok(joined) => joined,
                    Err(info) => local::join(app, channel, conn, user_id, info),
                }
            } else {
                self.needs_reconcile.store(true, Ordering::Release);
                local::join(app, channel, conn, user_id, info)
            };
            if !matches!(joined, Ok(Some(_))) {
                self.interest.release(&topic);
            }
            joined
        }
        .boxed()
    }

    fn unsubscribe<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
        socket: SocketId,
    ) -> BoxFuture<'a, Option<Unsubscribed>> {
        async move {
            let topic = self.keys.channel(app.id.as_str(), channel.as_str()).topic();
            let left = if !self.healthy() {
                local::unsubscribe(app, channel, socket)
            } else {
                let _gate = self.reconcile_gate.read().await;
                match app.hub.unsubscribe(channel, socket, Announce::Nothing) {
                    None => None,
                    Some(local) => {
                        // The member leaves before the channel empties, so their webhooks are due in that order.
                        // Every presence connection counts in the cluster, not only a user's last local one.
                        let user_left = match &local.user {
                            Some(user) => match self.leave_presence(app, channel, user).await {
                                Some(true) => Ok(Some(user.clone())),
                                Some(false) => Ok(None),
                                None => Err(()),
                            },
                            None => Ok(None),
                        };
                        match user_left {
                            Err(()) => Some(local::announce_unsubscribed(app, channel, local)),
                            Ok(user_left) => match self.adjust_subs(app, channel, -1).await {
                                None => Some(Unsubscribed { user_left, ..local }),
                                Some((total, _)) => Some(Unsubscribed {
                                    user: local.user,
                                    user_left,
                                    vacated: total <= 0,
                                    subscriptions: total.max(0) as u64,
                                }),
                            },
                        }
                    }
                }
            };
            // Only now that its share is gone from Redis: a publish never counts on a node that stopped listening.
            if left.is_some() {
                self.interest.release(&topic);
            }
            left
        }
        .boxed()
    }

    fn broadcast(
        &self,
        app: &App,
        channel: &ChannelName,
        frame: ByteString,
        except: Option<SocketId>,
    ) -> Published {
        app.hub
            .deliver(channel, except, || Message::new(frame.clone()));
        let mut header = Header::new(
            &self.node,
            Kind::Broadcast,
            app.id.as_str(),
            channel.as_str(),
        );
        header.except = except;
        self.send_cluster(
            &self.keys.channel(app.id.as_str(), channel.as_str()),
            &header,
            &frame,
        )
    }

    fn cache_put(&self, app: &App, channel: &ChannelName, event: CachedEvent) {
        let stored = StoredCache {
            event: event.event.to_string(),
            data: event.data.to_string(),
            frame: event.frame.to_string(),
        };
        app.hub.cache_put(channel, event);
        let Some(bus) = self.bus() else { return };
        let key = self.keys.channel(app.id.as_str(), channel.as_str()).cache();
        let value = serde_json::to_string(&stored).expect("cache entry serializes");
        actix_web::rt::spawn(async move {
            let _ = bus.set_expiring(&key, &value, CACHE_TTL.as_secs()).await;
        });
    }

    fn cached<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Option<CachedEvent>> {
        async move {
            let key = self.keys.channel(app.id.as_str(), channel.as_str()).cache();
            let found = self
                .with_bus(|c| async move { c.get_with_ttl(&key).await })
                .await;
            let Some((value, ttl)) = found else {
                return app.hub.cache_get(channel, Instant::now());
            };
            let stored: StoredCache = serde_json::from_str(&value?).ok()?;
            let kept_for = CACHE_TTL.saturating_sub(Duration::from_secs(ttl.max(0) as u64));
            Some(CachedEvent {
                frame: stored.frame.into(),
                event: stored.event.into(),
                data: stored.data.into(),
                stored: Instant::now()
                    .checked_sub(kept_for)
                    .unwrap_or_else(Instant::now),
            })
        }
        .boxed()
    }

    fn close_subscribers(&self, app: &App, channel: &ChannelName, code: ErrorCode) {
        app.hub.close_subscribers(channel, code);
        let mut header = Header::new(
            &self.node,
            Kind::Terminate,
            app.id.as_str(),
            channel.as_str(),
        );
        header.code = Some(code.code());
        self.send_cluster(
            &self.keys.channel(app.id.as_str(), channel.as_str()),
            &header,
            "",
        )
        .unacknowledged();
    }

    fn watch<'a>(
        &'a self,
        app: &'a App,
        conn: &'a ConnHandle,
        user_ids: &'a [String],
    ) -> BoxFuture<'a, ()> {
        async move {
            app.hub.watch(conn, user_ids);
            let holds: Vec<_> = user_ids
                .iter()
                .map(|u| {
                    self.interest
                        .hold(&self.keys.watch(app.id.as_str(), u).topic())
                })
                .collect();
            if self.healthy() {
                futures_util::future::join_all(holds.into_iter().map(Hold::wait)).await;
            }
        }
        .boxed()
    }

    fn unwatch(&self, app: &App, socket: SocketId, user_ids: &[String]) {
        app.hub.unwatch(socket, user_ids);
        for u in user_ids {
            self.interest
                .release(&self.keys.watch(app.id.as_str(), u).topic());
        }
    }

    fn notify_watchers(&self, app: &App, user_id: &str, frame: ByteString) {
        app.hub
            .notify_watchers(user_id, &Message::new(frame.clone()));
        let header = Header::new(&self.node, Kind::Watchers, app.id.as_str(), user_id);
        self.send_cluster(&self.keys.watch(app.id.as_str(), user_id), &header, &frame)
            .unacknowledged();
    }

    fn channel_counts<'a>(
        &'a self,
        app: &'a App,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, ChannelCounts> {
        async move {
            let keys = self.keys.channel(app.id.as_str(), channel.as_str());
            let found = self
                .with_bus(|c| async move { c.counts(&keys).await })
                .await;
            match found {
                Some((subs, users)) => ChannelCounts {
                    subscriptions: subs.unwrap_or(0).max(0) as u64,
                    users,
                },
                None => app.hub.counts(channel),
            }
        }
        .boxed()
    }

    fn channels<'a>(
        &'a self,
        app: &'a App,
        prefix: &'a str,
    ) -> BoxFuture<'a, Vec<(ChannelName, ChannelCounts)>> {
        async move {
            let index = self.keys.app_channels(app.id.as_str());
            let Some(names) = self
                .with_bus(|c| async move { c.set_members(&index).await })
                .await
            else {
                return app.hub.channels(prefix);
            };
            let names: Vec<ChannelName> = names
                .iter()
                .filter(|n| n.starts_with(prefix))
                .filter_map(|n| ChannelName::parse_with_max(n, usize::MAX).ok())
                .collect();
            // Each channel's counts live in its own slot: one small pipeline each, all at once.
            let Some(bus) = self.bus() else {
                return app.hub.channels(prefix);
            };
            let counts = futures_util::future::join_all(names.iter().map(|name| {
                let keys = self.keys.channel(app.id.as_str(), name.as_str());
                let bus = bus.clone();
                async move { bus.counts(&keys).await }
            }))
            .await;
            let mut out = Vec::new();
            for (name, counts) in names.into_iter().zip(counts) {
                match counts {
                    Ok((Some(subs), users)) if subs > 0 => {
                        let users = if name.kind() == ChannelKind::Presence {
                            users
                        } else {
                            0
                        };
                        out.push((
                            name,
                            ChannelCounts {
                                subscriptions: subs as u64,
                                users,
                            },
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.degraded(&e);
                        return app.hub.channels(prefix);
                    }
                }
            }
            out
        }
        .boxed()
    }

    fn users<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Vec<String>> {
        async move {
            let key = self
                .keys
                .channel(app.id.as_str(), channel.as_str())
                .members();
            match self
                .with_bus(|c| async move { c.hash_fields(&key).await })
                .await
            {
                Some(users) => users,
                None => app.hub.user_ids(channel),
            }
        }
        .boxed()
    }
}
