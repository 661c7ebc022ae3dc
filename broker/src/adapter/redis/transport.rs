//! The seam between the cluster's rules and what carries them.
//!
//! The rules (the rest of this module: who joined first, who left last, counts,
//! presence lists, a dead node's clean-up, the reconcile) need a shared store of keys
//! with pub/sub, and a few steps that must be atomic. [`Transport`] names exactly
//! those, each as the Redis command or Lua script (`lua/`) it is on Redis
//! ([`super::redis_transport`]). Tests run the same rules on an in-memory transport
//! (`memory`) that implements the scripts in Rust.
//!
//! Errors are Redis's own (`redis::RedisError`): any of them means the shared view
//! could not be read or changed, and the node falls back to serving local clients.

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use redis::RedisResult;

use super::keys::ChannelKeys;

/// What a transport call resolves to.
pub(super) type Reply<'a, T> = BoxFuture<'a, RedisResult<T>>;

/// How long leaving webhooks wait (`member_removed`, `channel_vacated`), in ms; `None`
/// when the app has no webhooks, so nothing is held back.
pub(super) type HoldFor = Option<u64>;

/// A publish's answer: how many listeners heard it, how many nodes hold a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Heard {
    pub listeners: i64,
    pub holders: i64,
}

impl Heard {
    /// Every node holding a share was listening (a node listens before its share is
    /// written and stops only after it is removed).
    pub fn by_all(self) -> bool {
        self.listeners >= self.holders
    }
}

/// A change of a count (a channel's subscriptions, or a member's connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CountChange {
    pub before: i64,
    pub after: i64,
    /// A held-back leaving webhook was cancelled by this coming back.
    pub cancelled: bool,
    /// When a leaving webhook held back now is due (ms, the store's clock); 0: none.
    pub due: i64,
}

/// A presence join, as `lua/join.lua` takes it.
pub(super) struct JoinRequest<'a> {
    /// This node's share of the user's connections ([`super::keys::member_field`]).
    pub field: &'a str,
    pub user: &'a str,
    pub info: &'a str,
    pub max_members: usize,
    /// `member_added` for the others, published when it is the user's first connection.
    pub added: &'a [u8],
    /// Header line of the joiner's member list, published after the change.
    pub list_header: &'a str,
    pub hold_for: HoldFor,
}

/// A presence join's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JoinOutcome {
    /// The channel holds `max_members` others.
    Full,
    /// The user's connections in the cluster now, and whether a held-back
    /// `member_removed` was cancelled (a reload: no webhook either way).
    Joined { connections: i64, cancelled: bool },
}

/// A presence leave's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Left {
    /// It was the user's last connection anywhere.
    pub last: bool,
    /// When the `member_removed` webhook held back now is due (ms); 0: none.
    pub due: i64,
}

/// A node's share of a presence member, as `lua/reconcile_members.lua` sets it.
pub(super) struct MemberShare<'a> {
    pub field: &'a str,
    pub user: &'a str,
    pub connections: u32,
    /// The user's info (used when `connections` > 0).
    pub info: &'a str,
    pub removed: &'a [u8],
    pub added: &'a [u8],
    pub hold_for: HoldFor,
}

/// A shared key store with pub/sub. Every method is one Redis command, one pipeline
/// or one script: the atomic ones say so.
/// A kept event's part of a publish: keys (position, stream, epoch) and arguments
/// (`lua/publish.lua` appends the event to the channel's history in the same step).
pub(super) struct KeptArgs {
    pub keys: [String; 3],
    pub args: Vec<Vec<u8>>,
}

/// What `lua/history_read.lua` answers: epoch, newest position, (entry id, fields).
pub(super) type StoredHistory = (String, u64, Vec<(String, Vec<String>)>);

/// One message of a publish.
pub(super) struct Message {
    pub payload: Vec<u8>,
    /// For a kept event: then `payload` is the header line, and the script adds the
    /// frame and the position it assigns.
    pub history: Option<KeptArgs>,
}

pub(super) trait Transport: Send + Sync + 'static {
    // Pub/sub.

    /// Listens to each topic; one result per topic, in order.
    fn subscribe<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Vec<RedisResult<()>>>;
    fn unsubscribe<'a>(&'a self, topics: &'a [String]) -> Reply<'a, ()>;
    /// Publishes each payload on the channel's topic, in order, each with a count of
    /// the nodes holding a share (`shares`) taken in the same atomic step (`lua/publish.lua`).
    fn publish<'a>(
        &'a self,
        shares: &'a str,
        topic: &'a str,
        messages: &'a [Message],
    ) -> Reply<'a, Vec<Heard>>;

    // The atomic steps (`lua/`): each touches one channel's keys (one slot).

    /// Moves `node`'s share of the channel's subscriptions, and the total, by `delta`
    /// (`lua/adjust.lua`). `before` is the total before the change.
    fn adjust<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        node: &'a str,
        delta: i64,
        hold_for: HoldFor,
    ) -> Reply<'a, CountChange>;
    /// Admits, announces and lists a presence join (`lua/join.lua`).
    fn join<'a>(&'a self, keys: &'a ChannelKeys, join: JoinRequest<'a>) -> Reply<'a, JoinOutcome>;
    /// One connection of a presence user leaves (`lua/leave.lua`); on the user's last
    /// anywhere `removed` is published.
    fn leave<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        field: &'a str,
        user: &'a str,
        removed: &'a [u8],
        hold_for: HoldFor,
    ) -> Reply<'a, Left>;
    /// Sets `node`'s share of the channel's subscriptions (`lua/reconcile_subs.lua`).
    fn set_sub_share<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        node: &'a str,
        subscriptions: u64,
        hold_for: HoldFor,
    ) -> Reply<'a, CountChange>;
    /// Sets a node's share of a presence member (`lua/reconcile_members.lua`).
    fn set_member_share<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        share: MemberShare<'a>,
    ) -> Reply<'a, CountChange>;
    /// Takes up to `limit` held-back webhooks that are due from `held` (`lua/claim.lua`):
    /// the due time of the next one still waiting, and those taken.
    fn claim<'a>(&'a self, held: &'a str, limit: usize) -> Reply<'a, (Option<i64>, Vec<String>)>;
    /// A kept channel's epoch (set to `fresh_epoch` if missing), its newest position and
    /// its events as stream entries (`lua/history_read.lua`); `keys` as in [`KeptArgs`].
    fn read_history<'a>(
        &'a self,
        keys: &'a [String; 3],
        max_age_secs: u64,
        fresh_epoch: String,
    ) -> Reply<'a, StoredHistory>;

    // Plain commands.

    /// A channel's subscriptions (GET count) and members (HLEN members), in one round trip.
    fn counts<'a>(&'a self, keys: &'a ChannelKeys) -> Reply<'a, (Option<i64>, u64)>;
    /// SADD; whether it was added.
    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, bool>;
    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, ()>;
    fn set_members<'a>(&'a self, key: &'a str) -> Reply<'a, Vec<String>>;
    fn delete<'a>(&'a self, key: &'a str) -> Reply<'a, ()>;
    fn exists<'a>(&'a self, key: &'a str) -> Reply<'a, bool>;
    /// GET of an integer.
    fn get_int<'a>(&'a self, key: &'a str) -> Reply<'a, Option<i64>>;
    /// SET with an expiry in seconds.
    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, secs: u64) -> Reply<'a, ()>;
    /// SET NX with an expiry: whether it was set (a lock taken).
    fn set_new_expiring<'a>(&'a self, key: &'a str, value: &'a str, secs: u64) -> Reply<'a, bool>;
    /// GET and TTL in one round trip.
    fn get_with_ttl<'a>(&'a self, key: &'a str) -> Reply<'a, (Option<String>, i64)>;
    /// HKEYS.
    fn hash_fields<'a>(&'a self, key: &'a str) -> Reply<'a, Vec<String>>;
    /// HGETALL.
    fn hash_all<'a>(&'a self, key: &'a str) -> Reply<'a, HashMap<String, String>>;
    /// The store's clock in ms (TIME), which stamps due times.
    fn now_ms(&self) -> Reply<'_, i64>;
    /// ZADD (`lower_only`: ZADD LT, which keeps the earlier score).
    fn sorted_add<'a>(
        &'a self,
        key: &'a str,
        member: &'a str,
        score: i64,
        lower_only: bool,
    ) -> Reply<'a, ()>;
    fn sorted_remove<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, ()>;
    /// Members scored at most `max`, lowest first, at most `limit` of them.
    fn sorted_due<'a>(&'a self, key: &'a str, max: i64, limit: usize) -> Reply<'a, Vec<String>>;
    /// The lowest-scored member and its score.
    fn sorted_first<'a>(&'a self, key: &'a str) -> Reply<'a, Option<(String, i64)>>;
}
