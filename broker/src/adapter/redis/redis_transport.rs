//! [`Transport`] on Redis: plain commands on the shared connection ([`Bus`]), and the
//! atomic steps as the Lua scripts kept beside this module (`lua/`).

use std::collections::HashMap;

use futures_util::future::{BoxFuture, FutureExt};
use redis::{AsyncCommands, RedisResult, Script};

use super::{
    bus::{Bus, Target},
    keys::ChannelKeys,
    transport::{
        CountChange, Heard, HoldFor, JoinOutcome, JoinRequest, Left, MemberShare, Message, Reply,
        StoredHistory, Transport,
    },
};

/// The Lua scripts, kept as `.lua` files beside this module. Each has a Rust twin in
/// `memory.rs` that the unit tests run: a change to a script is made to its twin too.
struct Scripts {
    adjust: Script,
    join: Script,
    leave: Script,
    reconcile_subs: Script,
    reconcile_members: Script,
    claim: Script,
    publish: Script,
    history_read: Script,
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
            publish: Script::new(include_str!("lua/publish.lua")),
            history_read: Script::new(include_str!("lua/history_read.lua")),
        }
    }
}

/// Redis, one instance or a Redis Cluster.
pub(super) struct RedisTransport {
    bus: Bus,
    scripts: Scripts,
    /// PUBLISH, or SPUBLISH on a Redis Cluster: what reaches [`Bus::subscribe`]'s listeners.
    publish_command: &'static str,
}

impl RedisTransport {
    pub fn new(bus: Bus, target: &Target) -> Self {
        Self {
            bus,
            scripts: Scripts::load(),
            publish_command: target.publish_command(),
        }
    }

    /// A connection handle for one call (clones share the connection).
    fn conn(&self) -> Bus {
        self.bus.clone()
    }

    async fn try_publish(
        &self,
        bus: &mut Bus,
        shares: &str,
        topic: &str,
        messages: &[Message],
    ) -> RedisResult<Vec<(i64, i64)>> {
        let mut pipe = redis::pipe();
        for message in messages {
            let mut invocation = self.scripts.publish.key(shares);
            invocation
                .arg(self.publish_command)
                .arg(topic)
                .arg(&message.payload);
            if let Some(kept) = &message.history {
                for k in &kept.keys {
                    invocation.key(k);
                }
                for a in &kept.args {
                    invocation.arg(a);
                }
            }
            pipe.invoke_script(&invocation);
        }
        // Kept events answer a third number (their position), which the sender does not need.
        let answers: Vec<Vec<i64>> = pipe.query_async(bus).await?;
        Ok(answers
            .into_iter()
            .map(|a| {
                (
                    a.first().copied().unwrap_or(0),
                    a.get(1).copied().unwrap_or(0),
                )
            })
            .collect())
    }
}

/// The flag scripts take: hold back leaving webhooks only for apps that have webhooks.
fn webhooks_flag(hold_for: HoldFor) -> &'static str {
    if hold_for.is_some() {
        "1"
    } else {
        ""
    }
}

fn count_change((before, after, cancelled, due): (i64, i64, i64, i64)) -> CountChange {
    CountChange {
        before,
        after,
        cancelled: cancelled == 1,
        due,
    }
}

impl Transport for RedisTransport {
    fn subscribe<'a>(&'a self, topics: &'a [String]) -> BoxFuture<'a, Vec<RedisResult<()>>> {
        self.bus.subscribe(topics).boxed()
    }

    fn unsubscribe<'a>(&'a self, topics: &'a [String]) -> Reply<'a, ()> {
        self.bus.unsubscribe(topics).boxed()
    }

    fn publish<'a>(
        &'a self,
        shares: &'a str,
        topic: &'a str,
        messages: &'a [Message],
    ) -> Reply<'a, Vec<Heard>> {
        async move {
            let mut bus = self.conn();
            let mut result = self.try_publish(&mut bus, shares, topic, messages).await;
            if matches!(&result, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
            {
                // A restarted or newly promoted Redis has not seen the script yet.
                let _ = self
                    .scripts
                    .publish
                    .prepare_invoke()
                    .load_async(&mut bus)
                    .await;
                result = self.try_publish(&mut bus, shares, topic, messages).await;
            }
            Ok(result?
                .into_iter()
                .map(|(listeners, holders)| Heard { listeners, holders })
                .collect())
        }
        .boxed()
    }

    fn adjust<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        node: &'a str,
        delta: i64,
        hold_for: HoldFor,
    ) -> Reply<'a, CountChange> {
        async move {
            let (total, cancelled, due): (i64, i64, i64) = self
                .scripts
                .adjust
                .key(keys.count())
                .key(keys.shares())
                .key(keys.held())
                .arg(node)
                .arg(delta)
                .arg(webhooks_flag(hold_for))
                .arg(hold_for.unwrap_or(0))
                .invoke_async(&mut self.conn())
                .await?;
            Ok(count_change((total - delta, total, cancelled, due)))
        }
        .boxed()
    }

    fn join<'a>(&'a self, keys: &'a ChannelKeys, join: JoinRequest<'a>) -> Reply<'a, JoinOutcome> {
        async move {
            let (connections, cancelled): (i64, i64) = self
                .scripts
                .join
                .key(keys.member_shares())
                .key(keys.members())
                .key(keys.infos())
                .key(keys.held())
                .arg(join.field)
                .arg(join.user)
                .arg(join.info)
                .arg(join.max_members)
                .arg(self.publish_command)
                .arg(keys.topic())
                .arg(join.added)
                .arg(join.list_header)
                .arg(webhooks_flag(join.hold_for))
                .invoke_async(&mut self.conn())
                .await?;
            Ok(if connections < 0 {
                JoinOutcome::Full
            } else {
                JoinOutcome::Joined {
                    connections,
                    cancelled: cancelled == 1,
                }
            })
        }
        .boxed()
    }

    fn leave<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        field: &'a str,
        user: &'a str,
        removed: &'a [u8],
        hold_for: HoldFor,
    ) -> Reply<'a, Left> {
        async move {
            let (last, due): (i64, i64) = self
                .scripts
                .leave
                .key(keys.member_shares())
                .key(keys.members())
                .key(keys.infos())
                .key(keys.held())
                .arg(field)
                .arg(user)
                .arg(self.publish_command)
                .arg(keys.topic())
                .arg(removed)
                .arg(webhooks_flag(hold_for))
                .arg(hold_for.unwrap_or(0))
                .invoke_async(&mut self.conn())
                .await?;
            Ok(Left {
                last: last == 1,
                due,
            })
        }
        .boxed()
    }

    fn set_sub_share<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        node: &'a str,
        subscriptions: u64,
        hold_for: HoldFor,
    ) -> Reply<'a, CountChange> {
        async move {
            let answer = self
                .scripts
                .reconcile_subs
                .key(keys.count())
                .key(keys.shares())
                .key(keys.held())
                .arg(node)
                .arg(subscriptions)
                .arg(webhooks_flag(hold_for))
                .arg(hold_for.unwrap_or(0))
                .invoke_async(&mut self.conn())
                .await?;
            Ok(count_change(answer))
        }
        .boxed()
    }

    fn set_member_share<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        share: MemberShare<'a>,
    ) -> Reply<'a, CountChange> {
        async move {
            let answer = self
                .scripts
                .reconcile_members
                .key(keys.member_shares())
                .key(keys.members())
                .key(keys.infos())
                .key(keys.held())
                .arg(share.field)
                .arg(share.user)
                .arg(share.connections)
                .arg(share.info)
                .arg(self.publish_command)
                .arg(keys.topic())
                .arg(share.removed)
                .arg(share.added)
                .arg(webhooks_flag(share.hold_for))
                .arg(share.hold_for.unwrap_or(0))
                .invoke_async(&mut self.conn())
                .await?;
            Ok(count_change(answer))
        }
        .boxed()
    }

    fn claim<'a>(&'a self, held: &'a str, limit: usize) -> Reply<'a, (Option<i64>, Vec<String>)> {
        async move {
            let mut taken: Vec<redis::Value> = self
                .scripts
                .claim
                .key(held)
                .arg(limit)
                .invoke_async(&mut self.conn())
                .await?;
            if taken.is_empty() {
                return Ok((None, Vec::new()));
            }
            let next: i64 = redis::from_redis_value(taken.remove(0)).unwrap_or(-1);
            let entries = taken
                .into_iter()
                .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                .collect();
            Ok(((next >= 0).then_some(next), entries))
        }
        .boxed()
    }

    fn read_history<'a>(
        &'a self,
        keys: &'a [String; 3],
        max_age_secs: u64,
        fresh_epoch: String,
    ) -> Reply<'a, StoredHistory> {
        async move {
            let mut invocation = self.scripts.history_read.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            invocation.arg(max_age_secs).arg(fresh_epoch);
            invocation.invoke_async(&mut self.conn()).await
        }
        .boxed()
    }

    fn counts<'a>(&'a self, keys: &'a ChannelKeys) -> Reply<'a, (Option<i64>, u64)> {
        async move {
            redis::pipe()
                .get(keys.count())
                .hlen(keys.members())
                .query_async(&mut self.conn())
                .await
        }
        .boxed()
    }

    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, bool> {
        async move {
            let added: i64 = self.conn().sadd(key, member).await?;
            Ok(added == 1)
        }
        .boxed()
    }

    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, ()> {
        async move { self.conn().srem(key, member).await }.boxed()
    }

    fn set_members<'a>(&'a self, key: &'a str) -> Reply<'a, Vec<String>> {
        async move { self.conn().smembers(key).await }.boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> Reply<'a, ()> {
        async move { self.conn().del(key).await }.boxed()
    }

    fn exists<'a>(&'a self, key: &'a str) -> Reply<'a, bool> {
        async move { self.conn().exists(key).await }.boxed()
    }

    fn get_int<'a>(&'a self, key: &'a str) -> Reply<'a, Option<i64>> {
        async move { self.conn().get(key).await }.boxed()
    }

    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, secs: u64) -> Reply<'a, ()> {
        async move { self.conn().set_ex(key, value, secs).await }.boxed()
    }

    fn set_new_expiring<'a>(&'a self, key: &'a str, value: &'a str, secs: u64) -> Reply<'a, bool> {
        async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("EX")
                .arg(secs)
                .query_async(&mut self.conn())
                .await?;
            Ok(set.is_some())
        }
        .boxed()
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> Reply<'a, (Option<String>, i64)> {
        async move {
            redis::pipe()
                .get(key)
                .ttl(key)
                .query_async(&mut self.conn())
                .await
        }
        .boxed()
    }

    fn hash_fields<'a>(&'a self, key: &'a str) -> Reply<'a, Vec<String>> {
        async move { self.conn().hkeys(key).await }.boxed()
    }

    fn hash_all<'a>(&'a self, key: &'a str) -> Reply<'a, HashMap<String, String>> {
        async move { self.conn().hgetall(key).await }.boxed()
    }

    fn now_ms(&self) -> Reply<'_, i64> {
        async move {
            let (secs, micros): (i64, i64) =
                redis::cmd("TIME").query_async(&mut self.conn()).await?;
            Ok(secs * 1000 + micros / 1000)
        }
        .boxed()
    }

    fn sorted_add<'a>(
        &'a self,
        key: &'a str,
        member: &'a str,
        score: i64,
        lower_only: bool,
    ) -> Reply<'a, ()> {
        async move {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(key);
            if lower_only {
                cmd.arg("LT");
            }
            cmd.arg(score)
                .arg(member)
                .query_async(&mut self.conn())
                .await
        }
        .boxed()
    }

    fn sorted_remove<'a>(&'a self, key: &'a str, member: &'a str) -> Reply<'a, ()> {
        async move { self.conn().zrem(key, member).await }.boxed()
    }

    fn sorted_due<'a>(&'a self, key: &'a str, max: i64, limit: usize) -> Reply<'a, Vec<String>> {
        async move {
            self.conn()
                .zrangebyscore_limit(key, "-inf", max, 0, limit as isize)
                .await
        }
        .boxed()
    }

    fn sorted_first<'a>(&'a self, key: &'a str) -> Reply<'a, Option<(String, i64)>> {
        async move {
            let first: Vec<(String, i64)> = self.conn().zrange_withscores(key, 0, 0).await?;
            Ok(first.into_iter().next())
        }
        .boxed()
    }
}
