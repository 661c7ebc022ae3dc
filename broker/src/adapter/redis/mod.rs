//! Many broker nodes sharing one Redis: the cluster behaves like one big broker.
//!
//! - **Delivery.** A node delivers an event to its own subscribers at once and
//!   publishes it on one Redis channel (`{prefix}:events`); every other node
//!   delivers it to its subscribers. The frame travels already serialized, so a
//!   node turns it into one shared buffer for all its subscribers.
//! - **Counts and presence.** Subscription counts and presence members live in
//!   Redis hashes, changed by small Lua scripts (`lua/`), so "first subscriber",
//!   "last subscriber", "user's first connection" and "user's last connection" are
//!   each decided once for the whole cluster (and webhooks fire once). Each node
//!   also records its own share, so a dead node's share can be removed.
//! - **Exact member lists.** The script that changes a presence channel's members
//!   also publishes the `member_added` / `member_removed`, and a joiner's member
//!   list goes to its node's inbox in the same step. Redis hands a subscriber
//!   messages in the order they were published, so a node adds the joiner to the
//!   channel (and queues its list) exactly between the member events the list
//!   already reflects and those it does not: each member present when or after
//!   the joiner's `subscription_succeeded` is in its list or arrives afterwards as
//!   an event, and no member event reaches it before the list.
//! - **Debounced webhooks.** `member_removed` and `channel_vacated` wait in a Redis
//!   sorted set for the debounce window; a join or subscription within it (on any
//!   node) removes the entry and sends neither webhook. Any node claims due entries.
//! - **Liveness** ([`liveness`]): heartbeats, and clean-up of a node that stopped.
//! - **Redis down.** Local clients keep being served from the local hub; queries
//!   fall back to local answers and `/ready` says the adapter is down. When Redis
//!   returns, the node writes its local state back ([`reconcile`]).

mod keys;
mod liveness;
mod message;
mod reconcile;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use bytestring::ByteString;
use futures_util::{
    future::{BoxFuture, FutureExt},
    StreamExt,
};
use protocol::{frame, ChannelKind, ChannelName, ErrorCode, SocketId};
use redis::{aio::ConnectionManager, AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use self::{
    keys::{member_field, sub_field, HeldBack, Keys},
    message::{decode, encode, member_list, Header, Kind},
};
use super::{local, Adapter};
use crate::{
    apps::{App, AppRegistry},
    core::{
        hub::{Announce, CachedEvent, ChannelFull, Joined, Subscribed, Unsubscribed, CACHE_TTL},
        ChannelCounts, ConnHandle, Message,
    },
    webhooks::WebhookEvent,
};

/// How long a joiner waits for its member list from the bus before it is joined
/// with a list read directly (the bus is then broken, and a reconcile follows).
const LIST_WAIT: Duration = Duration::from_secs(3);

/// The Lua scripts, kept as `.lua` files beside this module.
struct Scripts {
    adjust: Script,
    join: Script,
    leave: Script,
    reconcile_subs: Script,
    reconcile_members: Script,
    claim: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            adjust: Script::new(include_str!("lua/adjust.lua")),
            join: Script::new(include_str!("lua/join.lua")),
            leave: Script::new(include_str!("lua/leave.lua")),
            reconcile_subs: Script::new(include_str!("lua/reconcile_subs.lua")),
            reconcile_members: Script::new(include_str!("lua/reconcile_members.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredCache {
    event: String,
    data: String,
    frame: String,
}

/// A presence join waiting for its member list from the bus.
struct PendingJoin {
    channel: ChannelName,
    conn: ConnHandle,
    user_id: String,
    info: Box<RawValue>,
    /// The local subscription, once the list is queued (`None`: already subscribed).
    done: oneshot::Sender<Option<Subscribed>>,
}

/// The adapter for a cluster of nodes on Redis.
pub struct RedisAdapter {
    node: String,
    keys: Keys,
    config: ClusterConfig,
    /// The webhook debounce window (leaves wait this long in Redis).
    debounce: Duration,
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    /// The pub/sub subscription is live and the last command worked.
    healthy: AtomicBool,
    /// Set when local state may differ from what Redis holds for this node.
    needs_reconcile: AtomicBool,
    /// This node has registered once (so a later "added" means it had been removed).
    registered: AtomicBool,
    publish: mpsc::Sender<Vec<u8>>,
    publish_rx: std::sync::Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    dropped_publishes: AtomicU64,
    scripts: Scripts,
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
        let client = redis::Client::open(config.redis_url.as_str()).map_err(|e| format!("redis_url: {e}"))?;
        let (publish, publish_rx) = mpsc::channel(65_536);
        Ok(Self {
            node: format!("{:016x}", rand_node_id()),
            keys: Keys::new(&config.key_prefix),
            config,
            debounce,
            client,
            conn: RwLock::new(None),
            healthy: AtomicBool::new(false),
            needs_reconcile: AtomicBool::new(true),
            registered: AtomicBool::new(false),
            publish,
            publish_rx: std::sync::Mutex::new(Some(publish_rx)),
            dropped_publishes: AtomicU64::new(0),
            scripts: Scripts::load(),
            pending_joins: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            reconcile_gate: tokio::sync::RwLock::new(()),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Spawns the connection, subscriber, publisher, heartbeat and webhook-claim
    /// tasks on the current (actix system) runtime. They run for the life of the process.
    pub fn start(self: &Arc<Self>, apps: Arc<AppRegistry>) {
        let rx = self.publish_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            actix_web::rt::spawn(self.clone().run_publisher(rx));
        }
        actix_web::rt::spawn(self.clone().run_subscriber(apps.clone()));
        actix_web::rt::spawn(self.clone().run_heartbeat(apps.clone()));
        actix_web::rt::spawn(self.clone().run_held_back_webhooks(apps));
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs a command on the shared connection; on failure marks the adapter unhealthy.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn()?;
        match f(conn).await {
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

    fn send_cluster(&self, header: &Header<'_>, frame: &str) {
        if self.conn().is_none() || self.publish.try_send(encode(header, frame)).is_err() {
            self.dropped_publishes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The webhook debounce window in milliseconds, as scripts take it.
    fn debounce_ms(&self) -> u64 {
        self.debounce.as_millis() as u64
    }

    /// The held-back key a script files a leave under; empty when the app has no webhooks.
    fn held_back(app: &App, h: HeldBack<'_>) -> String {
        if app.webhooks.is_some() {
            h.encode()
        } else {
            String::new()
        }
    }

    /// A member event as scripts publish it: every node delivers it, the sender's too.
    fn member_message(&self, app: &App, channel: &ChannelName, frame: &str, except: Option<SocketId>) -> Vec<u8> {
        let mut header = Header::new(&self.node, Kind::Member, app.id.as_str(), channel.as_str());
        header.except = except;
        encode(&header, frame)
    }

    async fn run_publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Vec<u8>>) {
        let channel = self.keys.events();
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            let Some(mut conn) = self.conn() else {
                self.dropped_publishes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                continue;
            };
            // One round trip for everything that queued up meanwhile.
            let count = batch.len() as u64;
            let mut pipe = redis::pipe();
            for msg in batch.drain(..) {
                pipe.publish(&channel, msg).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                self.dropped_publishes.fetch_add(count, Ordering::Relaxed);
                self.degraded(&e);
            }
        }
    }

    /// Keeps a pub/sub subscription open, delivering other nodes' messages locally.
    async fn run_subscriber(self: Arc<Self>, apps: Arc<AppRegistry>) {
        let events = self.keys.events();
        let inbox = self.keys.inbox(&self.node);
        loop {
            let connected = async {
                let manager = match self.conn() {
                    Some(m) => m,
                    None => {
                        let cfg = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Duration::from_secs(2))
                            // Generous: a slow answer under load must not flip the node into
                            // serving local clients only (their presence lists would then miss
                            // the other nodes' members).
                            .set_response_timeout(Duration::from_secs(5))
                            .set_number_of_retries(1);
                        let m = self.client.get_connection_manager_with_config(cfg).await?;
                        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
                        m
                    }
                };
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&[&events, &inbox]).await?;
                Ok::<_, redis::RedisError>((manager, pubsub))
            }
            .await;
            let (manager, pubsub) = match connected {
                Ok(v) => v,
                Err(e) => {
                    self.degraded(&e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            tracing::info!(node = %self.node, "connected to redis");
            // Register before writing any share, so a crash right after is still noticed.
            if let Err(e) = self.register(&mut manager.clone()).await {
                self.degraded(&e);
                continue;
            }
            self.reconcile_now(&apps).await;
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                self.on_message(&apps, msg.get_payload_bytes());
            }
            self.healthy.store(false, Ordering::Release);
            self.needs_reconcile.store(true, Ordering::Release);
            tracing::warn!("redis subscription lost; reconnecting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn on_message(&self, apps: &AppRegistry, payload: &[u8]) {
        let Some((header, body)) = decode(payload) else {
            tracing::debug!("ignoring a malformed cluster message");
            return;
        };
        let own = header.node == self.node;
        if own && matches!(header.kind, Kind::Broadcast | Kind::Terminate | Kind::Watchers) {
            return; // delivered locally when sent
        }
        let Some(app) = apps.by_id(header.app) else { return };
        if header.kind == Kind::Watchers {
            // These carry a user id in `channel`, which need not be a channel name.
            app.hub.notify_watchers(&header.channel, &Message::new(body.to_owned()));
            return;
        }
        let Ok(channel) = ChannelName::parse_with_max(&header.channel, usize::MAX) else { return };
        match header.kind {
            // Framed once on this node (and only if someone here subscribes);
            // every local subscriber gets the same bytes.
            Kind::Broadcast | Kind::Member => {
                app.hub.deliver(&channel, header.except, || Message::new(body.to_owned()));
            }
            Kind::Terminate => {
                let code = header.code.and_then(ErrorCode::from_code).unwrap_or(ErrorCode::Unauthorized);
                app.hub.close_subscribers(&channel, code);
            }
            Kind::List => {
                let pending = header.token.and_then(|t| self.pending_joins.lock().unwrap_or_else(|p| p.into_inner()).remove(&t));
                let Some(p) = pending else { return }; // gave up waiting; joined without it
                let Some(members) = member_list(body) else {
                    tracing::warn!(channel = %channel.as_str(), "malformed member list from redis");
                    return; // the joiner's wait runs out and it joins with a list read directly
                };
                let succeeded = succeeded_frame(&channel, &members);
                let sub = app.hub.join_with_list(&channel, &p.conn, &p.user_id, p.info, &succeeded);
                let _ = p.done.send(sub);
            }
            Kind::Watchers => {}
        }
    }

    async fn adjust_subs(&self, app: &App, channel: &ChannelName, delta: i64) -> Option<(i64, bool)> {
        let held = Self::held_back(app, HeldBack::Vacated { app: app.id.as_str(), channel: channel.as_str() });
        self.with_conn(|mut c| async move {
            self.scripts
                .adjust
                .key(self.keys.node_subs(&self.node))
                .key(self.keys.channels(app.id.as_str()))
                .key(self.keys.held_back())
                .arg(sub_field(app.id.as_str(), channel.as_str()))
                .arg(channel.as_str())
                .arg(delta)
                .arg(held)
                .arg(self.debounce_ms())
                .invoke_async::<(i64, i64)>(&mut c)
                .await
        })
        .await
        .map(|(total, cancelled)| (total, cancelled == 1))
    }

    /// Counts a new local subscription in the cluster: `occupied` is cluster-wide, and
    /// `channel_occupied` is sent unless it cancels a held-back `channel_vacated`.
    async fn count_subscription(&self, app: &App, channel: &ChannelName, local: Subscribed) -> Subscribed {
        match self.adjust_subs(app, channel, 1).await {
            Some((total, cancelled)) => {
                let occupied = total == 1;
                if occupied && !cancelled {
                    app.webhook(|| WebhookEvent::ChannelOccupied { channel: channel.to_string() });
                }
                Subscribed { occupied, subscriptions: total.max(0) as u64 }
            }
            None => {
                if local.occupied {
                    app.lifecycle_webhooks([WebhookEvent::ChannelOccupied { channel: channel.to_string() }]);
                }
                local
            }
        }
    }

    /// Takes one of the user's connections off the cluster's presence count; on the
    /// last, the script announces `member_removed`. `Some(true)` when it was the last.
    async fn leave_presence(&self, app: &App, channel: &ChannelName, user: &str) -> Option<bool> {
        let app_id = app.id.as_str();
        let removed = self.member_message(app, channel, &frame::member_removed(channel.as_str(), user), None);
        let held = Self::held_back(app, HeldBack::Removed { app: app_id, channel: channel.as_str(), user });
        self.with_conn(|mut c| async move {
            self.scripts
                .leave
                .key(self.keys.node_members(&self.node))
                .key(self.keys.members(app_id, channel.as_str()))
                .key(self.keys.infos(app_id, channel.as_str()))
                .key(self.keys.held_back())
                .arg(member_field(app_id, channel.as_str(), user))
                .arg(user)
                .arg(self.keys.events())
                .arg(removed)
                .arg(held)
                .arg(self.debounce_ms())
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|last| last == 1)
    }

    /// Joins without the bus's ordering (it failed us): with the member list read now.
    async fn join_with_list_read_now(&self, app: &App, p: PendingJoin) -> Option<Subscribed> {
        let key = self.keys.infos(app.id.as_str(), p.channel.as_str());
        let infos: Option<HashMap<String, String>> = self.with_conn(|mut c| async move { c.hgetall(key).await }).await;
        let mut members: Vec<(String, Box<RawValue>)> = match infos {
            Some(infos) => infos.into_iter().filter_map(|(id, text)| Some((id, RawValue::from_string(text).ok()?))).collect(),
            None => Vec::new(),
        };
        if !members.iter().any(|(id, _)| *id == p.user_id) {
            members.push((p.user_id.clone(), p.info.clone()));
        }
        let succeeded = succeeded_frame(&p.channel, &members);
        self.needs_reconcile.store(true, Ordering::Release);
        app.hub.join_with_list(&p.channel, &p.conn, &p.user_id, p.info, &succeeded)
    }
}

/// A presence channel's `subscription_succeeded` for a member list read from Redis.
fn succeeded_frame(channel: &ChannelName, members: &[(String, Box<RawValue>)]) -> String {
    let pairs: Vec<(&str, &RawValue)> = members.iter().map(|(id, info)| (id.as_str(), &**info)).collect();
    frame::presence_subscription_succeeded(channel.as_str(), &pairs)
}

fn rand_node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
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

    fn subscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, conn: &'a ConnHandle) -> BoxFuture<'a, Option<Subscribed>> {
        async move {
            if !self.healthy() {
                return local::subscribe(app, channel, conn);
            }
            let _gate = self.reconcile_gate.read().await;
            let local = app.hub.subscribe(channel, conn)?;
            Some(self.count_subscription(app, channel, local).await)
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
            if !self.healthy() {
                return local::join(app, channel, conn, user_id, info);
            }
            let _gate = self.reconcile_gate.read().await;
            if app.hub.is_subscribed(channel, conn.id) {
                return Ok(None);
            }
            let app_id = app.id.as_str();
            let info_text = info.get().to_owned();
            let added = self.member_message(app, channel, &frame::member_added(channel.as_str(), user_id, &info), Some(conn.id));
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            let mut list_header = Header::new(&self.node, Kind::List, app_id, channel.as_str());
            list_header.token = Some(token);
            let held = Self::held_back(app, HeldBack::Removed { app: app_id, channel: channel.as_str(), user: user_id });
            let (done, mut listed) = oneshot::channel();
            let pending = PendingJoin { channel: channel.clone(), conn: conn.clone(), user_id: user_id.to_owned(), info: info.clone(), done };
            self.pending_joins.lock().unwrap_or_else(|p| p.into_inner()).insert(token, pending);
            let take_pending = || self.pending_joins.lock().unwrap_or_else(|p| p.into_inner()).remove(&token);
            // Admission is cluster-wide; the script decides, announces and lists.
            let result = self
                .with_conn(|mut c| async move {
                    self.scripts
                        .join
                        .key(self.keys.node_members(&self.node))
                        .key(self.keys.members(app_id, channel.as_str()))
                        .key(self.keys.infos(app_id, channel.as_str()))
                        .key(self.keys.held_back())
                        .arg(member_field(app_id, channel.as_str(), user_id))
                        .arg(user_id)
                        .arg(&info_text)
                        .arg(app.limits.max_presence_members)
                        .arg(self.keys.events())
                        .arg(added)
                        .arg(self.keys.inbox(&self.node))
                        .arg(list_header.line())
                        .arg(held)
                        .invoke_async::<(i64, i64)>(&mut c)
                        .await
                })
                .await;
            let Some((count, cancelled)) = result else {
                take_pending();
                return local::join(app, channel, conn, user_id, info);
            };
            if count < 0 {
                take_pending();
                return Err(ChannelFull);
            }
            let local = match tokio::time::timeout(LIST_WAIT, &mut listed).await {
                Ok(result) => result.ok().flatten(),
                Err(_) => match take_pending() {
                    Some(p) => {
                        tracing::warn!(channel = %channel.as_str(), "member list did not arrive from redis; joining with a list read directly");
                        self.join_with_list_read_now(app, p).await
                    }
                    // The subscriber task took it just now: its answer is on the way.
                    None => listed.await.ok().flatten(),
                },
            };
            let Some(local) = local else {
                // Counted in Redis but already subscribed here: a reconcile puts the count right.
                self.needs_reconcile.store(true, Ordering::Release);
                return Ok(None);
            };
            let subscribed = self.count_subscription(app, channel, local).await;
            let first = count == 1;
            if first && cancelled == 0 {
                app.webhook(|| WebhookEvent::MemberAdded { channel: channel.to_string(), user_id: user_id.to_owned() });
            }
            Ok(Some(Joined { first, subscribed }))
        }
        .boxed()
    }

    fn unsubscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, socket: SocketId) -> BoxFuture<'a, Option<Unsubscribed>> {
        async move {
            if !self.healthy() {
                return local::unsubscribe(app, channel, socket);
            }
            let _gate = self.reconcile_gate.read().await;
            let local = app.hub.unsubscribe(channel, socket, Announce::Nothing)?;
            // The member leaves before the channel empties, so their webhooks are due in that order.
            // Every presence connection counts in the cluster, not only a user's last local one.
            let user_left = match &local.user {
                Some(user) => match self.leave_presence(app, channel, user).await {
                    Some(true) => Some(user.clone()),
                    Some(false) => None,
                    None => return Some(local::announce_unsubscribed(app, channel, local)),
                },
                None => None,
            };
            let Some((total, _)) = self.adjust_subs(app, channel, -1).await else {
                return Some(Unsubscribed { user_left, ..local });
            };
            Some(Unsubscribed { user: local.user, user_left, vacated: total <= 0, subscriptions: total.max(0) as u64 })
        }
        .boxed()
    }

    fn broadcast(&self, app: &App, channel: &ChannelName, frame: ByteString, except: Option<SocketId>) {
        app.hub.deliver(channel, except, || Message::new(frame.clone()));
        let mut header = Header::new(&self.node, Kind::Broadcast, app.id.as_str(), channel.as_str());
        header.except = except;
        self.send_cluster(&header, &frame);
    }

    fn cache_put(&self, app: &App, channel: &ChannelName, event: CachedEvent) {
        let stored = StoredCache { event: event.event.to_string(), data: event.data.to_string(), frame: event.frame.to_string() };
        app.hub.cache_put(channel, event);
        let Some(mut conn) = self.conn() else { return };
        let key = self.keys.cache(app.id.as_str(), channel.as_str());
        let value = serde_json::to_string(&stored).expect("cache entry serializes");
        actix_web::rt::spawn(async move {
            let _: redis::RedisResult<()> = conn.set_ex(key, value, CACHE_TTL.as_secs()).await;
        });
    }

    fn cached<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Option<CachedEvent>> {
        async move {
            let key = self.keys.cache(app.id.as_str(), channel.as_str());
            let found = self
                .with_conn(|mut c| async move { redis::pipe().get(&key).ttl(&key).query_async::<(Option<String>, i64)>(&mut c).await })
                .await;
            let Some((value, ttl)) = found else { return app.hub.cache_get(channel, Instant::now()) };
            let stored: StoredCache = serde_json::from_str(&value?).ok()?;
            let kept_for = CACHE_TTL.saturating_sub(Duration::from_secs(ttl.max(0) as u64));
            Some(CachedEvent {
                frame: stored.frame.into(),
                event: stored.event.into(),
                data: stored.data.into(),
                stored: Instant::now().checked_sub(kept_for).unwrap_or_else(Instant::now),
            })
        }
        .boxed()
    }

    fn close_subscribers(&self, app: &App, channel: &ChannelName, code: ErrorCode) {
        app.hub.close_subscribers(channel, code);
        let mut header = Header::new(&self.node, Kind::Terminate, app.id.as_str(), channel.as_str());
        header.code = Some(code.code());
        self.send_cluster(&header, "");
    }

    fn notify_watchers(&self, app: &App, user_id: &str, frame: ByteString) {
        app.hub.notify_watchers(user_id, &Message::new(frame.clone()));
        let header = Header::new(&self.node, Kind::Watchers, app.id.as_str(), user_id);
        self.send_cluster(&header, &frame);
    }

    fn channel_counts<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, ChannelCounts> {
        async move {
            let app_id = app.id.as_str();
            let found = self
                .with_conn(|mut c| async move {
                    redis::pipe()
                        .hget(self.keys.channels(app_id), channel.as_str())
                        .hlen(self.keys.members(app_id, channel.as_str()))
                        .query_async::<(Option<i64>, u64)>(&mut c)
                        .await
                })
                .await;
            match found {
                Some((subs, users)) => ChannelCounts { subscriptions: subs.unwrap_or(0).max(0) as u64, users },
                None => app.hub.counts(channel),
            }
        }
        .boxed()
    }

    fn channels<'a>(&'a self, app: &'a App, prefix: &'a str) -> BoxFuture<'a, Vec<(ChannelName, ChannelCounts)>> {
        async move {
            let app_id = app.id.as_str();
            let all: Option<HashMap<String, i64>> = self.with_conn(|mut c| async move { c.hgetall(self.keys.channels(app_id)).await }).await;
            let Some(all) = all else { return app.hub.channels(prefix) };
            let mut out: Vec<(ChannelName, ChannelCounts)> = all
                .into_iter()
                .filter(|(name, n)| *n > 0 && name.starts_with(prefix))
                .filter_map(|(name, n)| {
                    Some((ChannelName::parse_with_max(&name, usize::MAX).ok()?, ChannelCounts { subscriptions: n as u64, users: 0 }))
                })
                .collect();
            let presence: Vec<usize> = (0..out.len()).filter(|i| out[*i].0.kind() == ChannelKind::Presence).collect();
            if !presence.is_empty() {
                let mut pipe = redis::pipe();
                for i in &presence {
                    pipe.hlen(self.keys.members(app_id, out[*i].0.as_str()));
                }
                let counts: Option<Vec<u64>> = self.with_conn(|mut c| async move { pipe.query_async(&mut c).await }).await;
                for (i, users) in presence.iter().zip(counts.unwrap_or_default()) {
                    out[*i].1.users = users;
                }
            }
            out
        }
        .boxed()
    }

    fn users<'a>(&'a self, app: &'a App, channel: &'a ChannelName) -> BoxFuture<'a, Vec<String>> {
        async move {
            let key = self.keys.members(app.id.as_str(), channel.as_str());
            match self.with_conn(|mut c| async move { c.hkeys(key).await }).await {
                Some(users) => users,
                None => app.hub.user_ids(channel),
            }
        }
        .boxed()
    }
}
