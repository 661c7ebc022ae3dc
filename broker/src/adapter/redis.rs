//! Many broker nodes sharing one Redis: the cluster behaves like one big broker.
//!
//! - **Delivery.** A node delivers an event to its own subscribers at once and
//!   publishes it on one Redis channel (`{prefix}:events`); every other node
//!   delivers it to its subscribers. The frame travels already serialized, so a
//!   node turns it into one shared buffer for all its subscribers.
//! - **Counts and presence.** Subscription counts and presence members live in
//!   Redis hashes, changed by small Lua scripts, so "first subscriber", "last
//!   subscriber", "user's first connection" and "user's last connection" are each
//!   decided once for the whole cluster (and webhooks fire once).
//!   Each node also records its own share, so a dead node's share can be removed.
//! - **Liveness.** Nodes refresh `{prefix}:node:{id}:alive` every heartbeat; a node
//!   whose key expired is cleaned up by the first live node to take its lock:
//!   its counts are subtracted and `member_removed` goes out for its users.
//! - **Redis down.** Local clients keep being served from the local hub; queries
//!   fall back to local answers and `/ready` says the adapter is down. When Redis
//!   returns, the node writes its local state back (a reconcile that sets its
//!   share to what it actually holds), so the cluster view heals.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
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
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::Adapter;
use crate::{
    apps::App,
    core::{
        hub::{CachedEvent, ChannelFull, Joined, Subscribed, Unsubscribed, CACHE_TTL},
        ChannelCounts, ConnHandle,
    },
    state::State,
    webhooks::WebhookEvent,
    ws::wire,
};

/// How to reach Redis and how the cluster keeps time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Seconds between a node's heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a node is considered dead.
    #[serde(default = "default_node_timeout")]
    pub node_timeout_secs: u64,
}

fn default_prefix() -> String {
    "pusher".into()
}
fn default_heartbeat() -> u64 {
    2
}
fn default_node_timeout() -> u64 {
    6
}

/// Adds `delta` to a node's share and to the cluster total of one counter;
/// removes fields that reach zero. Returns the new cluster total.
const ADJUST: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local t = redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
if t <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return t
"#;

/// Sets a node's share of a counter to ARGV[3], moving the cluster total by the
/// difference. KEYS[3] (optional) is a hash of infos to set (ARGV[4]) while the
/// total is positive and to clear when it reaches zero. Returns {old total, new total}.
const RECONCILE: &str = r#"
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[3])
if new > 0 then redis.call('HSET', KEYS[1], ARGV[1], new) else redis.call('HDEL', KEYS[1], ARGV[1]) end
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local t = before
if new ~= old then t = redis.call('HINCRBY', KEYS[2], ARGV[2], new - old) end
if t <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  if KEYS[3] then redis.call('HDEL', KEYS[3], ARGV[2]) end
elseif KEYS[3] and ARGV[4] then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
end
return {before, t}
"#;

/// A presence join: refuses a new user past ARGV[4] members (-1); else returns
/// the user's connection count after joining (1 = the user's first connection).
const JOIN: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local c = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return c
"#;

/// A presence leave: returns 1 when it was the user's last connection.
const LEAVE: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local c = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if c <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  return 1
end
return 0
"#;

/// What kind of cluster message follows the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    /// Deliver the frame to the channel's subscribers but `except`.
    #[serde(rename = "b")]
    Broadcast,
    /// Close the channel's subscribers with `code`.
    #[serde(rename = "t")]
    Terminate,
    /// Send the frame to connections watching the user named by `channel`.
    #[serde(rename = "w")]
    Watchers,
}

/// The header of a cluster message: one JSON line, then the frame's bytes as they go on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Header<'a> {
    #[serde(rename = "n")]
    node: &'a str,
    #[serde(rename = "k")]
    kind: Kind,
    #[serde(rename = "a")]
    app: &'a str,
    #[serde(rename = "c")]
    channel: &'a str,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    except: Option<SocketId>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

fn encode(header: &Header<'_>, frame: &str) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).expect("header serializes");
    out.push(b'\n');
    out.extend_from_slice(frame.as_bytes());
    out
}

/// Splits a cluster message into its header and frame.
fn decode(payload: &[u8]) -> Option<(Header<'_>, &str)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let header: Header<'_> = serde_json::from_slice(&payload[..split]).ok()?;
    let frame = std::str::from_utf8(&payload[split + 1..]).ok()?;
    Some((header, frame))
}

#[derive(Serialize, Deserialize)]
struct StoredCache {
    event: String,
    data: String,
    frame: String,
}

/// Key names, all under the configured prefix.
struct Keys {
    prefix: String,
}

impl Keys {
    fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn alive(&self, node: &str) -> String {
        format!("{}:node:{node}:alive", self.prefix)
    }
    fn cleanup_lock(&self, node: &str) -> String {
        format!("{}:node:{node}:cleanup", self.prefix)
    }
    fn node_subs(&self, node: &str) -> String {
        format!("{}:node:{node}:subs", self.prefix)
    }
    fn node_members(&self, node: &str) -> String {
        format!("{}:node:{node}:members", self.prefix)
    }
    fn channels(&self, app: &str) -> String {
        format!("{}:app:{app}:channels", self.prefix)
    }
    fn members(&self, app: &str, channel: &str) -> String {
        format!("{}:app:{app}:members:{channel}", self.prefix)
    }
    fn infos(&self, app: &str, channel: &str) -> String {
        format!("{}:app:{app}:infos:{channel}", self.prefix)
    }
    fn cache(&self, app: &str, channel: &str) -> String {
        format!("{}:app:{app}:cache:{channel}", self.prefix)
    }
}

/// Field names in a node's share hashes.
fn sub_field(app: &str, channel: &str) -> String {
    format!("{app}\n{channel}")
}
fn member_field(app: &str, channel: &str, user: &str) -> String {
    format!("{app}\n{channel}\n{user}")
}

/// The adapter for a cluster of nodes on Redis.
pub struct RedisAdapter {
    node: String,
    keys: Keys,
    config: ClusterConfig,
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    /// The pub/sub subscription is live and the last command worked.
    healthy: AtomicBool,
    /// Set when local state may differ from what Redis holds for this node.
    needs_reconcile: AtomicBool,
    publish: mpsc::Sender<Vec<u8>>,
    publish_rx: std::sync::Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    dropped_publishes: AtomicU64,
    adjust: Script,
    reconcile: Script,
    join: Script,
    leave: Script,
}

impl RedisAdapter {
    /// Creates the adapter; nothing connects until [`RedisAdapter::start`].
    pub fn new(config: ClusterConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(|e| format!("redis_url: {e}"))?;
        let (publish, publish_rx) = mpsc::channel(65_536);
        Ok(Self {
            node: format!("{:016x}", rand_node_id()),
            keys: Keys { prefix: config.key_prefix.clone() },
            config,
            client,
            conn: RwLock::new(None),
            healthy: AtomicBool::new(false),
            needs_reconcile: AtomicBool::new(true),
            publish,
            publish_rx: std::sync::Mutex::new(Some(publish_rx)),
            dropped_publishes: AtomicU64::new(0),
            adjust: Script::new(ADJUST),
            reconcile: Script::new(RECONCILE),
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Spawns the connection, subscriber, publisher and heartbeat tasks on the
    /// current (actix system) runtime. They run for the life of the process.
    pub fn start(self: &Arc<Self>, state: Arc<State>) {
        let rx = self.publish_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            actix_web::rt::spawn(self.clone().run_publisher(rx));
        }
        actix_web::rt::spawn(self.clone().run_subscriber(state.clone()));
        actix_web::rt::spawn(self.clone().run_heartbeat(state));
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
    async fn run_subscriber(self: Arc<Self>, state: Arc<State>) {
        let events = self.keys.events();
        loop {
            let connected = async {
                let manager = match self.conn() {
                    Some(m) => m,
                    None => {
                        let cfg = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Duration::from_secs(2))
                            .set_response_timeout(Duration::from_secs(2))
                            .set_number_of_retries(1);
                        let m = self.client.get_connection_manager_with_config(cfg).await?;
                        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
                        m
                    }
                };
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&events).await?;
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
            self.reconcile_now(&state).await;
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                self.on_message(&state, msg.get_payload_bytes());
            }
            self.healthy.store(false, Ordering::Release);
            self.needs_reconcile.store(true, Ordering::Release);
            tracing::warn!("redis subscription lost; reconnecting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn on_message(&self, state: &State, payload: &[u8]) {
        let Some((header, frame)) = decode(payload) else {
            tracing::debug!("ignoring a malformed cluster message");
            return;
        };
        if header.node == self.node {
            return;
        }
        let Some(app) = state.apps.by_id(header.app) else { return };
        let Ok(channel) = ChannelName::parse_with_max(header.channel, usize::MAX) else {
            // Watcher messages carry a user id here, which need not be a channel name.
            if header.kind == Kind::Watchers {
                app.hub.notify_watchers(header.channel, &wire::text(frame));
            }
            return;
        };
        match header.kind {
            Kind::Broadcast => {
                // Framed once on this node (and only if someone here subscribes);
                // every local subscriber gets the same bytes.
                app.hub.deliver(&channel, header.except, || wire::text(frame));
            }
            Kind::Terminate => {
                let code = header.code.and_then(ErrorCode::from_code).unwrap_or(ErrorCode::Unauthorized);
                app.hub.close_subscribers(&channel, code);
            }
            Kind::Watchers => app.hub.notify_watchers(header.channel, &wire::text(frame)),
        }
    }

    /// Heartbeats, dead-node clean-up and periodic reconcile.
    async fn run_heartbeat(self: Arc<Self>, state: Arc<State>) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.heartbeat_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reconcile = Instant::now();
        loop {
            tick.tick().await;
            let Some(mut conn) = self.conn() else { continue };
            if let Err(e) = self.register(&mut conn).await {
                self.degraded(&e);
                continue;
            }
            let nodes = match conn.smembers::<_, HashSet<String>>(self.keys.nodes()).await {
                Ok(nodes) => nodes,
                Err(e) => {
                    self.degraded(&e);
                    continue;
                }
            };
            if self.needs_reconcile.load(Ordering::Acquire) || last_reconcile.elapsed() > Duration::from_secs(30) {
                self.reconcile_now(&state).await;
                last_reconcile = Instant::now();
            }
            for other in nodes.iter().filter(|n| **n != self.node) {
                let exists: redis::RedisResult<bool> = conn.exists(self.keys.alive(other)).await;
                if let Ok(false) = exists {
                    self.clean_up_dead_node(&state, &mut conn, other).await;
                }
            }
        }
    }

    /// Announces this node as alive for the next `node_timeout_secs`.
    async fn register(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        redis::pipe()
            .set_ex(self.keys.alive(&self.node), 1, self.config.node_timeout_secs.max(1))
            .ignore()
            .sadd(self.keys.nodes(), &self.node)
            .ignore()
            .query_async(conn)
            .await
    }

    /// Removes a dead node's share of every count, once for the cluster.
    async fn clean_up_dead_node(&self, state: &State, conn: &mut ConnectionManager, dead: &str) {
        let lock: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.keys.cleanup_lock(dead))
            .arg(&self.node)
            .arg("NX")
            .arg("EX")
            .arg(30)
            .query_async(conn)
            .await;
        if !matches!(lock, Ok(Some(_))) {
            return;
        }
        tracing::warn!(dead_node = dead, "node stopped heartbeating; removing its connections from the cluster view");
        let members: HashMap<String, i64> = conn.hgetall(self.keys.node_members(dead)).await.unwrap_or_default();
        for field in members.keys() {
            let mut parts = field.splitn(3, '\n');
            let (Some(app_id), Some(channel), Some(user)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let result: redis::RedisResult<(i64, i64)> = self
                .reconcile
                .key(self.keys.node_members(dead))
                .key(self.keys.members(app_id, channel))
                .key(self.keys.infos(app_id, channel))
                .arg(field)
                .arg(user)
                .arg(0)
                .invoke_async(conn)
                .await;
            if let (Ok((before, after)), Some(app)) = (result, state.apps.by_id(app_id)) {
                if before > 0 && after <= 0 {
                    if let Ok(name) = ChannelName::parse_with_max(channel, usize::MAX) {
                        let removed = frame::member_removed(channel, user);
                        self.broadcast(&app, &name, removed.into(), None);
                        app.webhook(|| WebhookEvent::MemberRemoved { channel: channel.to_owned(), user_id: user.to_owned() });
                    }
                }
            }
        }
        let subs: HashMap<String, i64> = conn.hgetall(self.keys.node_subs(dead)).await.unwrap_or_default();
        for field in subs.keys() {
            let Some((app_id, channel)) = field.split_once('\n') else { continue };
            let result: redis::RedisResult<(i64, i64)> = self
                .reconcile
                .key(self.keys.node_subs(dead))
                .key(self.keys.channels(app_id))
                .arg(field)
                .arg(channel)
                .arg(0)
                .invoke_async(conn)
                .await;
            if let (Ok((before, after)), Some(app)) = (result, state.apps.by_id(app_id)) {
                if before > 0 && after <= 0 {
                    app.webhook(|| WebhookEvent::ChannelVacated { channel: channel.to_owned() });
                }
            }
        }
        let _: redis::RedisResult<()> = redis::pipe()
            .del(self.keys.node_subs(dead))
            .ignore()
            .del(self.keys.node_members(dead))
            .ignore()
            .srem(self.keys.nodes(), dead)
            .ignore()
            .query_async(conn)
            .await;
    }

    /// Makes Redis hold exactly this node's local subscriptions and members.
    async fn reconcile_now(&self, state: &State) {
        let Some(mut conn) = self.conn() else { return };
        self.needs_reconcile.store(false, Ordering::Release);
        let mut subs: HashMap<String, (String, String, u64)> = HashMap::new();
        let mut members: HashMap<String, (String, String, String, u32, String)> = HashMap::new();
        for app in state.apps.all() {
            let app_id = app.id.as_str();
            for (channel, counts) in app.hub.channels("") {
                subs.insert(sub_field(app_id, channel.as_str()), (app_id.to_owned(), channel.to_string(), counts.subscriptions));
                if channel.kind() == ChannelKind::Presence {
                    for (user, sockets, info) in app.hub.member_sockets(&channel) {
                        let field = member_field(app_id, channel.as_str(), &user);
                        members.insert(field, (app_id.to_owned(), channel.to_string(), user, sockets, info));
                    }
                }
            }
        }
        let recorded_subs: HashMap<String, i64> = match conn.hgetall(self.keys.node_subs(&self.node)).await {
            Ok(m) => m,
            Err(e) => return self.degraded(&e),
        };
        let recorded_members: HashMap<String, i64> = conn.hgetall(self.keys.node_members(&self.node)).await.unwrap_or_default();
        // What Redis holds for this node but the node no longer has is set to zero.
        for field in recorded_subs.into_keys() {
            if subs.contains_key(&field) {
                continue;
            }
            if let Some((app_id, channel)) = field.split_once('\n') {
                let entry = (app_id.to_owned(), channel.to_owned(), 0);
                subs.insert(field, entry);
            }
        }
        for field in recorded_members.into_keys() {
            if members.contains_key(&field) {
                continue;
            }
            let mut parts = field.splitn(3, '\n');
            if let (Some(a), Some(c), Some(u)) = (parts.next(), parts.next(), parts.next()) {
                let entry = (a.to_owned(), c.to_owned(), u.to_owned(), 0, String::new());
                members.insert(field, entry);
            }
        }
        let mut failed = false;
        for (field, (app_id, channel, count)) in &subs {
            let r: redis::RedisResult<(i64, i64)> = self
                .reconcile
                .key(self.keys.node_subs(&self.node))
                .key(self.keys.channels(app_id))
                .arg(field)
                .arg(channel)
                .arg(*count)
                .invoke_async(&mut conn)
                .await;
            failed |= r.is_err();
        }
        for (field, (app_id, channel, user, sockets, info)) in &members {
            let mut call = self.reconcile.prepare_invoke();
            call.key(self.keys.node_members(&self.node))
                .key(self.keys.members(app_id, channel))
                .key(self.keys.infos(app_id, channel))
                .arg(field)
                .arg(user)
                .arg(*sockets);
            if *sockets > 0 {
                call.arg(info);
            }
            let r: redis::RedisResult<(i64, i64)> = call.invoke_async(&mut conn).await;
            failed |= r.is_err();
        }
        if failed {
            self.needs_reconcile.store(true, Ordering::Release);
        } else {
            self.healthy.store(true, Ordering::Release);
        }
    }

    async fn adjust_subs(&self, app: &App, channel: &ChannelName, delta: i64) -> Option<i64> {
        let keys = (self.keys.node_subs(&self.node), self.keys.channels(app.id.as_str()));
        let field = sub_field(app.id.as_str(), channel.as_str());
        self.with_conn(|mut c| async move {
            self.adjust.key(keys.0).key(keys.1).arg(field).arg(channel.as_str()).arg(delta).invoke_async(&mut c).await
        })
        .await
    }
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
            let local = app.hub.subscribe(channel, conn)?;
            match self.adjust_subs(app, channel, 1).await {
                Some(total) => Some(Subscribed { occupied: total == 1, subscriptions: total.max(0) as u64 }),
                None => Some(local),
            }
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
            if app.hub.is_subscribed(channel, conn.id) {
                return Ok(None);
            }
            let app_id = app.id.as_str();
            let info_text = info.get().to_owned();
            // Admission is cluster-wide; Redis decides when it can.
            let result = self
                .with_conn(|mut c| async move {
                    self.join
                        .key(self.keys.node_members(&self.node))
                        .key(self.keys.members(app_id, channel.as_str()))
                        .key(self.keys.infos(app_id, channel.as_str()))
                        .arg(member_field(app_id, channel.as_str(), user_id))
                        .arg(user_id)
                        .arg(&info_text)
                        .arg(app.limits.max_presence_members)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            let Some(count) = result else {
                return app.hub.join(channel, conn, user_id, info, app.limits.max_presence_members);
            };
            if count < 0 {
                return Err(ChannelFull);
            }
            let local = match app.hub.join(channel, conn, user_id, info, usize::MAX) {
                Ok(Some(j)) => j,
                Ok(None) | Err(_) => {
                    // Already subscribed here: undo the count just taken.
                    let _ = self.leave_presence(app, channel, user_id).await;
                    return Ok(None);
                }
            };
            let subscribed = match self.adjust_subs(app, channel, 1).await {
                Some(total) => Subscribed { occupied: total == 1, subscriptions: total.max(0) as u64 },
                None => local.subscribed,
            };
            let infos: Option<HashMap<String, String>> =
                self.with_conn(|mut c| async move { c.hgetall(self.keys.infos(app_id, channel.as_str())).await }).await;
            let succeeded_frame = match infos {
                Some(infos) => {
                    let parsed: Vec<(String, Box<RawValue>)> = infos
                        .into_iter()
                        .filter_map(|(id, text)| RawValue::from_string(text).ok().map(|v| (id, v)))
                        .collect();
                    let members: Vec<(&str, &RawValue)> = parsed.iter().map(|(id, v)| (id.as_str(), &**v)).collect();
                    frame::presence_subscription_succeeded(channel.as_str(), &members)
                }
                None => local.succeeded_frame,
            };
            Ok(Some(Joined { first: count == 1, succeeded_frame, subscribed }))
        }
        .boxed()
    }

    fn unsubscribe<'a>(&'a self, app: &'a App, channel: &'a ChannelName, socket: SocketId) -> BoxFuture<'a, Option<Unsubscribed>> {
        async move {
            let local = app.hub.unsubscribe(channel, socket)?;
            let Some(total) = self.adjust_subs(app, channel, -1).await else { return Some(local) };
            // Every presence connection counts in the cluster, not only a user's last local one.
            let user_left = match &local.user {
                Some(user) => match self.leave_presence(app, channel, user).await {
                    Some(true) => Some(user.clone()),
                    Some(false) => None,
                    None => local.user_left.clone(),
                },
                None => None,
            };
            Some(Unsubscribed { user: local.user, user_left, vacated: total <= 0, subscriptions: total.max(0) as u64 })
        }
        .boxed()
    }

    fn broadcast(&self, app: &App, channel: &ChannelName, frame: ByteString, except: Option<SocketId>) {
        app.hub.deliver(channel, except, || wire::text(&frame));
        let header = Header { node: &self.node, kind: Kind::Broadcast, app: app.id.as_str(), channel: channel.as_str(), except, code: None };
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
        let header = Header { node: &self.node, kind: Kind::Terminate, app: app.id.as_str(), channel: channel.as_str(), except: None, code: Some(code.code()) };
        self.send_cluster(&header, "");
    }

    fn notify_watchers(&self, app: &App, user_id: &str, frame: ByteString) {
        app.hub.notify_watchers(user_id, &wire::text(&frame));
        let header = Header { node: &self.node, kind: Kind::Watchers, app: app.id.as_str(), channel: user_id, except: None, code: None };
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

impl RedisAdapter {
    /// Takes one of the user's connections off the cluster's presence count.
    /// `Some(true)` when it was the user's last.
    async fn leave_presence(&self, app: &App, channel: &ChannelName, user: &str) -> Option<bool> {
        let app_id = app.id.as_str();
        self.with_conn(|mut c| async move {
            self.leave
                .key(self.keys.node_members(&self.node))
                .key(self.keys.members(app_id, channel.as_str()))
                .key(self.keys.infos(app_id, channel.as_str()))
                .arg(member_field(app_id, channel.as_str(), user))
                .arg(user)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|last| last == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_messages_round_trip() {
        let h = Header { node: "n1", kind: Kind::Broadcast, app: "1", channel: "news", except: Some(SocketId::new(3, 4)), code: None };
        let bytes = encode(&h, r#"{"event":"e","channel":"news","data":"{\n}"}"#);
        let (back, frame) = decode(&bytes).unwrap();
        assert_eq!(back.node, "n1");
        assert_eq!(back.kind, Kind::Broadcast);
        assert_eq!(back.except, Some(SocketId::new(3, 4)));
        assert_eq!(frame, r#"{"event":"e","channel":"news","data":"{\n}"}"#);
        assert!(decode(b"no header").is_none());
    }
}
