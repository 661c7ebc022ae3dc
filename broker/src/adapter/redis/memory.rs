//! An in-memory [`Transport`] for the rules' unit tests: one shared store
//! ([`MemoryStore`], the "Redis") and one connection per node ([`MemoryBus`]), whose
//! pub/sub messages arrive as Redis pushes them.
//!
//! The atomic steps are Rust versions of the Lua scripts in `lua/`, each run under the
//! store's one lock as Redis runs a script alone. **Each must do what its script does**
//! (named above it); a change to a script changes its twin here. The store's clock
//! (TIME) is a number the tests move; keys never expire by themselves (a test deletes
//! a node's `alive` key to let it die).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
        Arc,
    },
};

use parking_lot::{Mutex, MutexGuard};

use futures_util::future::{self, BoxFuture, FutureExt};
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;

use super::{
    keys::ChannelKeys,
    transport::{
        CountChange, Heard, HoldFor, JoinOutcome, JoinRequest, Left, MemberShare, Message, Reply,
        StoredHistory, Transport,
    },
};

#[derive(Default)]
struct Data {
    strings: HashMap<String, String>,
    hashes: HashMap<String, BTreeMap<String, String>>,
    sets: HashMap<String, BTreeSet<String>>,
    sorted: HashMap<String, BTreeMap<String, i64>>,
    /// topic -> connections listening.
    listeners: HashMap<String, BTreeSet<usize>>,
    connections: HashMap<usize, mpsc::UnboundedSender<PushInfo>>,
}

/// The shared store: what every node's [`MemoryBus`] reads and writes.
#[derive(Default)]
pub(super) struct MemoryStore {
    data: Mutex<Data>,
    now_ms: AtomicI64,
    down: AtomicBool,
    next_connection: AtomicUsize,
}

/// One node's connection to the [`MemoryStore`].
pub(super) struct MemoryBus {
    store: Arc<MemoryStore>,
    id: usize,
}

fn unreachable_store() -> redis::RedisError {
    (redis::ErrorKind::Io, "the in-memory store is down").into()
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        let store = Self::default();
        store.now_ms.store(1_000_000, Ordering::Relaxed);
        Arc::new(store)
    }

    /// A connection, and where its pub/sub messages arrive.
    pub fn connect(self: &Arc<Self>) -> (Arc<MemoryBus>, mpsc::UnboundedReceiver<PushInfo>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.lock().connections.insert(id, tx);
        let bus = MemoryBus {
            store: self.clone(),
            id,
        };
        (Arc::new(bus), rx)
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock()
    }

    /// The store's data, if it can be reached.
    fn reach(&self) -> RedisResult<MutexGuard<'_, Data>> {
        if self.down.load(Ordering::Acquire) {
            return Err(unreachable_store());
        }
        Ok(self.lock())
    }

    /// Moves the store's clock.
    pub fn advance_ms(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Takes the store down (every call fails, every connection hears it dropped and
    /// forgets its subscriptions, as with Redis) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Release);
        if down {
            let mut data = self.lock();
            data.listeners.clear();
            for tx in data.connections.values() {
                let _ = tx.send(PushInfo {
                    kind: PushKind::Disconnection,
                    data: Vec::new(),
                });
            }
        }
    }

    /// For tests to look at.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.lock().strings.get(key).and_then(|v| v.parse().ok())
    }
    pub fn hash(&self, key: &str) -> BTreeMap<String, String> {
        self.lock().hashes.get(key).cloned().unwrap_or_default()
    }
    pub fn set(&self, key: &str) -> BTreeSet<String> {
        self.lock().sets.get(key).cloned().unwrap_or_default()
    }
    pub fn sorted(&self, key: &str) -> BTreeMap<String, i64> {
        self.lock().sorted.get(key).cloned().unwrap_or_default()
    }
    pub fn delete(&self, key: &str) {
        self.lock().del(key);
    }
}

impl Data {
    fn del(&mut self, key: &str) {
        self.strings.remove(key);
        self.hashes.remove(key);
        self.sets.remove(key);
        self.sorted.remove(key);
    }

    fn get_int(&self, key: &str) -> i64 {
        self.strings
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// INCRBY.
    fn incr(&mut self, key: &str, by: i64) -> i64 {
        let n = self.get_int(key) + by;
        self.strings.insert(key.to_owned(), n.to_string());
        n
    }

    fn hget_int(&self, key: &str, field: &str) -> Option<i64> {
        self.hashes.get(key)?.get(field)?.parse().ok()
    }

    fn hset(&mut self, key: &str, field: &str, value: impl ToString) {
        self.hashes
            .entry(key.to_owned())
            .or_default()
            .insert(field.to_owned(), value.to_string());
    }

    /// HINCRBY.
    fn hincr(&mut self, key: &str, field: &str, by: i64) -> i64 {
        let n = self.hget_int(key, field).unwrap_or(0) + by;
        self.hset(key, field, n);
        n
    }

    fn hdel(&mut self, key: &str, field: &str) {
        if let Some(h) = self.hashes.get_mut(key) {
            h.remove(field);
            if h.is_empty() {
                self.hashes.remove(key);
            }
        }
    }

    fn hlen(&self, key: &str) -> usize {
        self.hashes.get(key).map_or(0, BTreeMap::len)
    }

    /// ZADD (LT: only lowers an existing score).
    fn zadd(&mut self, key: &str, member: &str, score: i64, lower_only: bool) {
        let z = self.sorted.entry(key.to_owned()).or_default();
        match z.get_mut(member) {
            Some(s) if lower_only => *s = (*s).min(score),
            Some(s) => *s = score,
            None => {
                z.insert(member.to_owned(), score);
            }
        }
    }

    /// ZREM: whether it was there.
    fn zrem(&mut self, key: &str, member: &str) -> bool {
        let Some(z) = self.sorted.get_mut(key) else {
            return false;
        };
        let removed = z.remove(member).is_some();
        if z.is_empty() {
            self.sorted.remove(key);
        }
        removed
    }

    /// Members by score then name, as Redis orders them.
    fn by_score(&self, key: &str) -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> = self
            .sorted
            .get(key)
            .map(|z| z.iter().map(|(m, s)| (m.clone(), *s)).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        all
    }

    /// PUBLISH / SPUBLISH: how many connections heard it.
    fn publish(&self, topic: &str, payload: &[u8]) -> i64 {
        let Some(listeners) = self.listeners.get(topic) else {
            return 0;
        };
        let mut heard = 0;
        for id in listeners {
            if let Some(tx) = self.connections.get(id) {
                let message = PushInfo {
                    kind: PushKind::Message,
                    data: vec![
                        Value::BulkString(topic.as_bytes().to_vec()),
                        Value::BulkString(payload.to_vec()),
                    ],
                };
                if tx.send(message).is_ok() {
                    heard += 1;
                }
            }
        }
        heard
    }
}

impl MemoryBus {
    fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Data) -> T) -> Reply<'_, T> {
        let answer = self.store.reach().map(|mut data| f(&mut data));
        future::ready(answer).boxed()
    }

    fn now(&self) -> i64 {
        self.store.now_ms.load(Ordering::Relaxed)
    }
}

impl Transport for MemoryBus {
    fn subscribe<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Vec<RedisResult<()>>> {
        let answers = topics
            .iter()
            .map(|t| {
                let mut data = self.store.reach()?;
                data.listeners.entry(t.clone()).or_default().insert(self.id);
                Ok(())
            })
            .collect();
        future::ready(answers).boxed()
    }

    fn unsubscribe<'a>(&'a self, topics: &'a [String]) -> Reply<'a, ()> {
        self.call(|data| {
            for t in topics {
                if let Some(l) = data.listeners.get_mut(t) {
                    l.remove(&self.id);
                    if l.is_empty() {
                        data.listeners.remove(t);
                    }
                }
            }
        })
    }

    // lua/publish.lua
    fn publish<'a>(
        &'a self,
        shares: &'a str,
        topic: &'a str,
        messages: &'a [Message],
    ) -> Reply<'a, Vec<Heard>> {
        // History (a kept event's stream append) is not emulated here: the history
        // rules are tested against a real Redis (tests/broker-history*.test.mjs).
        self.call(|data| {
            messages
                .iter()
                .map(|m| Heard {
                    listeners: data.publish(topic, &m.payload),
                    holders: data.hlen(shares) as i64,
                })
                .collect()
        })
    }

    // lua/adjust.lua
    fn adjust<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        node: &'a str,
        delta: i64,
        hold_for: HoldFor,
    ) -> Reply<'a, CountChange> {
        let now = self.now();
        self.call(move |data| {
            let (count, shares, held) = (keys.count(), keys.shares(), keys.held());
            if data.hincr(&shares, node, delta) <= 0 {
                data.hdel(&shares, node);
            }
            let t = data.incr(&count, delta);
            let (mut cancelled, mut due) = (false, 0);
            if t <= 0 {
                data.del(&count);
                if let (true, Some(ms)) = (delta < 0, hold_for) {
                    due = now + ms as i64;
                    data.zadd(&held, "v", due, false);
                }
            } else if delta > 0 && t - delta <= 0 && hold_for.is_some() {
                cancelled = data.zrem(&held, "v");
            }
            CountChange {
                before: t - delta,
                after: t,
                cancelled,
                due,
            }
        })
    }

    // lua/join.lua
    fn join<'a>(&'a self, keys: &'a ChannelKeys, join: JoinRequest<'a>) -> Reply<'a, JoinOutcome> {
        self.call(move |data| {
            let (shares, members, infos, held) = (
                keys.member_shares(),
                keys.members(),
                keys.infos(),
                keys.held(),
            );
            let topic = keys.topic();
            if data.hget_int(&members, join.user).is_none()
                && data.hlen(&members) >= join.max_members
            {
                return JoinOutcome::Full;
            }
            data.hincr(&shares, join.field, 1);
            let c = data.hincr(&members, join.user, 1);
            data.hset(&infos, join.user, join.info);
            let mut cancelled = false;
            if c == 1 {
                data.publish(&topic, join.added);
                if join.hold_for.is_some() {
                    cancelled = data.zrem(&held, &format!("r{}", join.user));
                }
            }
            // As cjson.encode(HGETALL): a flat array of user, info, user, info, ...
            let flat: Vec<&String> = data
                .hashes
                .get(&infos)
                .into_iter()
                .flatten()
                .flat_map(|(user, info)| [user, info])
                .collect();
            let list = format!(
                "{}\n{}",
                join.list_header,
                serde_json::to_string(&flat).expect("strings serialize")
            );
            data.publish(&topic, list.as_bytes());
            JoinOutcome::Joined {
                connections: c,
                cancelled,
            }
        })
    }

    // lua/leave.lua
    fn leave<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        field: &'a str,
        user: &'a str,
        removed: &'a [u8],
        hold_for: HoldFor,
    ) -> Reply<'a, Left> {
        let now = self.now();
        self.call(move |data| {
            let (shares, members, infos, held) = (
                keys.member_shares(),
                keys.members(),
                keys.infos(),
                keys.held(),
            );
            if data.hincr(&shares, field, -1) <= 0 {
                data.hdel(&shares, field);
            }
            if data.hincr(&members, user, -1) > 0 {
                return Left {
                    last: false,
                    due: 0,
                };
            }
            data.hdel(&members, user);
            data.hdel(&infos, user);
            data.publish(&keys.topic(), removed);
            let mut due = 0;
            if let Some(ms) = hold_for {
                due = now + ms as i64;
                data.zadd(&held, &format!("r{user}"), due, false);
            }
            Left { last: true, due }
        })
    }

    // lua/reconcile_subs.lua
    fn set_sub_share<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        node: &'a str,
        subscriptions: u64,
        hold_for: HoldFor,
    ) -> Reply<'a, CountChange> {
        let now = self.now();
        self.call(move |data| {
            let (count, shares, held) = (keys.count(), keys.shares(), keys.held());
            let old = data.hget_int(&shares, node).unwrap_or(0);
            let new = subscriptions as i64;
            if new > 0 {
                data.hset(&shares, node, new);
            } else {
                data.hdel(&shares, node);
            }
            let before = data.get_int(&count);
            let mut t = before;
            if new != old {
                t = data.incr(&count, new - old);
            }
            let (mut cancelled, mut due) = (false, 0);
            if t <= 0 {
                data.del(&count);
                if let (true, Some(ms)) = (before > 0, hold_for) {
                    due = now + ms as i64;
                    data.zadd(&held, "v", due, false);
                }
            } else if before <= 0 && hold_for.is_some() {
                cancelled = data.zrem(&held, "v");
            }
            CountChange {
                before,
                after: t,
                cancelled,
                due,
            }
        })
    }

    // lua/reconcile_members.lua
    fn set_member_share<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        share: MemberShare<'a>,
    ) -> Reply<'a, CountChange> {
        let now = self.now();
        self.call(move |data| {
            let (shares, members, infos, held) = (
                keys.member_shares(),
                keys.members(),
                keys.infos(),
                keys.held(),
            );
            let topic = keys.topic();
            let old = data.hget_int(&shares, share.field).unwrap_or(0);
            let new = i64::from(share.connections);
            if new > 0 {
                data.hset(&shares, share.field, new);
            } else {
                data.hdel(&shares, share.field);
            }
            let before = data.hget_int(&members, share.user).unwrap_or(0);
            let mut t = before;
            if new != old {
                t = data.hincr(&members, share.user, new - old);
            }
            let (mut cancelled, mut due) = (false, 0);
            let removed = format!("r{}", share.user);
            if t <= 0 {
                data.hdel(&members, share.user);
                data.hdel(&infos, share.user);
                if before > 0 {
                    data.publish(&topic, share.removed);
                    if let Some(ms) = share.hold_for {
                        due = now + ms as i64;
                        data.zadd(&held, &removed, due, false);
                    }
                }
            } else {
                if new > 0 {
                    data.hset(&infos, share.user, share.info);
                }
                if before <= 0 {
                    data.publish(&topic, share.added);
                    if share.hold_for.is_some() {
                        cancelled = data.zrem(&held, &removed);
                    }
                }
            }
            CountChange {
                before,
                after: t,
                cancelled,
                due,
            }
        })
    }

    // lua/claim.lua
    fn read_history<'a>(
        &'a self,
        _keys: &'a [String; 3],
        _max_age_secs: u64,
        _fresh_epoch: String,
    ) -> Reply<'a, StoredHistory> {
        // Not emulated (see `publish`): history is tested against a real Redis.
        let unsupported = redis::RedisError::from((
            redis::ErrorKind::Client,
            "history is not emulated by the memory transport",
        ));
        future::ready(Err(unsupported)).boxed()
    }

    fn claim<'a>(&'a self, held: &'a str, limit: usize) -> Reply<'a, (Option<i64>, Vec<String>)> {
        let now = self.now();
        self.call(move |data| {
            let taken: Vec<String> = data
                .by_score(held)
                .into_iter()
                .take_while(|(_, due)| *due <= now)
                .take(limit)
                .map(|(m, _)| m)
                .collect();
            for m in &taken {
                data.zrem(held, m);
            }
            let next = data.by_score(held).first().map(|(_, due)| *due);
            (next, taken)
        })
    }

    fn counts<'a>(&'a self, keys: &'a ChannelKeys) -> Reply<'a, (Option<i64>, u64)> {
        self.call(|data| {
            let count = data.strings.get(&keys.count()).and_then(|v| v.parse().ok());
            (count, data.hlen(&keys.members()) as u64)
        })
    }

    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, bool> {
        self.call(|data| {
            data.sets
                .entry(key.to_owned())
                .or_default()
                .insert(member.to_owned())
        })
    }

    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, ()> {
        self.call(|data| {
            if let Some(s) = data.sets.get_mut(key) {
                s.remove(member);
                if s.is_empty() {
                    data.sets.remove(key);
                }
            }
        })
    }

    fn set_members<'a>(&'a self, key: &'a str) -> Reply<'a, Vec<String>> {
        self.call(|data| {
            data.sets
                .get(key)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> Reply<'a, ()> {
        self.call(|data| data.del(key))
    }

    fn exists<'a>(&'a self, key: &'a str) -> Reply<'a, bool> {
        self.call(|data| {
            data.strings.contains_key(key)
                || data.hashes.contains_key(key)
                || data.sets.contains_key(key)
                || data.sorted.contains_key(key)
        })
    }

    fn get_int<'a>(&'a self, key: &'a str) -> Reply<'a, Option<i64>> {
        self.call(|data| data.strings.get(key).and_then(|v| v.parse().ok()))
    }

    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, _secs: u64) -> Reply<'a, ()> {
        self.call(|data| {
            data.strings.insert(key.to_owned(), value.to_owned());
        })
    }

    fn set_new_expiring<'a>(&'a self, key: &'a str, value: &'a str, _secs: u64) -> Reply<'a, bool> {
        self.call(|data| {
            if data.strings.contains_key(key) {
                return false;
            }
            data.strings.insert(key.to_owned(), value.to_owned());
            true
        })
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> Reply<'a, (Option<String>, i64)> {
        // Nothing expires here: a key kept has its full time left.
        self.call(|data| (data.strings.get(key).cloned(), -1))
    }

    fn hash_fields<'a>(&'a self, key: &'a str) -> Reply<'a, Vec<String>> {
        self.call(|data| {
            data.hashes
                .get(key)
                .map(|h| h.keys().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn hash_all<'a>(&'a self, key: &'a str) -> Reply<'a, HashMap<String, String>> {
        self.call(|data| {
            data.hashes
                .get(key)
                .map(|h| h.clone().into_iter().collect())
                .unwrap_or_default()
        })
    }

    fn now_ms(&self) -> Reply<'_, i64> {
        let now = self.now();
        self.call(move |_| now)
    }

    fn sorted_add<'a>(
        &'a self,
        key: &'a str,
        member: &'a str,
        score: i64,
        lower_only: bool,
    ) -> Reply<'a, ()> {
        self.call(|data| data.zadd(key, member, score, lower_only))
    }

    fn sorted_remove<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, ()> {
        self.call(|data| {
            data.zrem(key, member);
        })
    }

    fn sorted_due<'a>(&'a self, key: &'a str, max: i64, limit: usize) -> Reply<'a, Vec<String>> {
        self.call(|data| {
            data.by_score(key)
                .into_iter()
                .take_while(|(_, s)| *s <= max)
                .take(limit)
                .map(|(m, _)| m)
                .collect()
        })
    }

    fn sorted_first<'a>(&'a self, key: &'a str) -> Reply<'a, Option<(String, i64)>> {
        self.call(|data| data.by_score(key).into_iter().next())
    }
}
