//! Liveness: heartbeats, clean-up after a node that stopped without saying goodbye,
//! and sending the leaving webhooks whose debounce window has passed.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use protocol::{ChannelKind, ChannelName};
use redis::AsyncCommands;

use super::{
    bus::Bus,
    keys::{channel_ref, member_field_user, split_channel_ref, HeldBack},
    RedisAdapter,
};
use crate::{
    apps::{App, AppRegistry},
    webhooks::WebhookEvent,
};

/// Held-back webhooks claimed per channel per round trip.
const CLAIM_BATCH: usize = 500;

/// Channels with due webhooks looked at per round.
const CHANNELS_PER_ROUND: isize = 200;

impl RedisAdapter {
    /// Heartbeats, dead-node clean-up and periodic reconcile.
    pub(super) async fn run_heartbeat(self: Arc<Self>, apps: Arc<AppRegistry>) {
        let mut tick =
            tokio::time::interval(Duration::from_secs(self.config.heartbeat_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reconcile = Instant::now();
        loop {
            tick.tick().await;
            let Some(mut bus) = self.bus() else { continue };
            if let Err(e) = self.register(&mut bus).await {
                self.degraded(&e);
                continue;
            }
            let nodes = match bus.smembers::<_, HashSet<String>>(self.keys.nodes()).await {
                Ok(nodes) => nodes,
                Err(e) => {
                    self.degraded(&e);
                    continue;
                }
            };
            if self.needs_reconcile.load(Ordering::Acquire)
                || last_reconcile.elapsed() > Duration::from_secs(30)
            {
                self.reconcile_now(&apps).await;
                last_reconcile = Instant::now();
            }
            for other in nodes.iter().filter(|n| **n != self.node) {
                let exists: redis::RedisResult<bool> = bus.exists(self.keys.alive(other)).await;
                if let Ok(false) = exists {
                    self.clean_up_dead_node(&apps, &mut bus, other).await;
                }
            }
        }
    }

    /// Announces this node as alive for the next `node_timeout_secs`.
    ///
    /// A node that finds itself missing from the node set after it had registered was
    /// declared dead (it could not heartbeat in time: a stall, a network cut) and its
    /// share was removed, its users announced as gone: it writes its state back at once,
    /// announcing them again, instead of waiting for the periodic reconcile.
    pub(super) async fn register(&self, bus: &mut Bus) -> redis::RedisResult<()> {
        // Two keys in two slots: two commands.
        let () = bus
            .set_ex(
                self.keys.alive(&self.node),
                1,
                self.config.node_timeout_secs.max(1),
            )
            .await?;
        let added: i64 = bus.sadd(self.keys.nodes(), &self.node).await?;
        if added == 1 && self.registered.swap(true, Ordering::AcqRel) {
            tracing::warn!(node = %self.node, "this node was declared dead by the cluster; writing its state back");
            self.needs_reconcile.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Removes a dead node's share of every channel, once for the cluster. Its users
    /// leave as on any leave: `member_removed` is announced by the script (and its
    /// webhook held back), and watchers of a user whose last connection was there
    /// hear "offline".
    async fn clean_up_dead_node(&self, apps: &AppRegistry, bus: &mut Bus, dead: &str) {
        let lock: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.keys.cleanup_lock(dead))
            .arg(&self.node)
            .arg("NX")
            .arg("EX")
            .arg(30)
            .query_async(bus)
            .await;
        if !matches!(lock, Ok(Some(_))) {
            return;
        }
        tracing::warn!(
            dead_node = dead,
            "node stopped heartbeating; removing its connections from the cluster view"
        );
        let channels: Vec<String> = bus
            .smembers(self.keys.node_channels(dead))
            .await
            .unwrap_or_default();
        for entry in &channels {
            let Some((app_id, channel)) = split_channel_ref(entry) else {
                continue;
            };
            let (Some(app), Ok(name)) = (
                apps.by_id(app_id),
                ChannelName::parse_with_max(channel, usize::MAX),
            ) else {
                continue;
            };
            if name.kind() == ChannelKind::Presence {
                for user in self
                    .member_shares_of(bus, &app, &name, dead)
                    .await
                    .unwrap_or_default()
                    .into_keys()
                {
                    let _ = self
                        .set_member_share(bus, &app, &name, dead, &user, 0, None)
                        .await;
                }
            }
            if let Ok((before, after, _)) = self.set_sub_share(bus, &app, &name, dead, 0).await {
                if before > 0 && after <= 0 {
                    crate::adapter::user_channel_changed(self, &app, &name, false);
                }
            }
        }
        let _: redis::RedisResult<()> = bus.del(self.keys.node_channels(dead)).await;
        let _: redis::RedisResult<()> = bus.srem(self.keys.nodes(), dead).await;
    }

    /// A node's share of each member of a presence channel (user -> connections).
    pub(super) async fn member_shares_of(
        &self,
        bus: &mut Bus,
        app: &App,
        channel: &ChannelName,
        node: &str,
    ) -> redis::RedisResult<HashMap<String, i64>> {
        let all: HashMap<String, i64> = bus
            .hgetall(
                self.keys
                    .channel(app.id.as_str(), channel.as_str())
                    .member_shares(),
            )
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(field, n)| Some((member_field_user(&field, node)?.to_owned(), n)))
            .collect())
    }

    /// Claims leaving webhooks whose debounce window has passed (each by exactly one
    /// node) and queues them with the app's webhooks. Channels with held-back entries
    /// are found through an index scored by their earliest due time.
    pub(super) async fn run_held_back_webhooks(self: Arc<Self>, apps: Arc<AppRegistry>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !apps.all().iter().any(|a| a.webhooks.is_some()) {
                continue;
            }
            let Some(mut bus) = self.bus() else { continue };
            if let Err(e) = self.claim_due(&apps, &mut bus).await {
                self.degraded(&e);
            }
        }
    }

    async fn claim_due(&self, apps: &AppRegistry, bus: &mut Bus) -> redis::RedisResult<()> {
        // Redis's clock decides, as it stamped the due times.
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(bus).await?;
        let now = secs * 1000 + micros / 1000;
        let index = self.keys.held_index();
        let due: Vec<String> = bus
            .zrangebyscore_limit(&index, "-inf", now, 0, CHANNELS_PER_ROUND)
            .await?;
        for entry in due {
            let Some((app_id, channel)) = split_channel_ref(&entry) else {
                let _: () = bus.zrem(&index, &entry).await?;
                continue;
            };
            let keys = self.keys.channel(app_id, channel);
            let mut next = -1;
            loop {
                let mut taken: Vec<redis::Value> = self
                    .scripts
                    .claim
                    .key(keys.held())
                    .arg(CLAIM_BATCH)
                    .invoke_async(bus)
                    .await?;
                if taken.is_empty() {
                    break;
                }
                next = redis::from_redis_value(taken.remove(0)).unwrap_or(-1);
                let count = taken.len();
                if let Some(app) = apps.by_id(app_id) {
                    for held in taken
                        .into_iter()
                        .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                    {
                        let event = match HeldBack::decode(&held) {
                            Some(HeldBack::Vacated) => WebhookEvent::ChannelVacated {
                                channel: channel.to_owned(),
                            },
                            Some(HeldBack::Removed { user }) => WebhookEvent::MemberRemoved {
                                channel: channel.to_owned(),
                                user_id: user.to_owned(),
                            },
                            None => continue,
                        };
                        app.webhook(|| event);
                    }
                }
                if count < CLAIM_BATCH {
                    break;
                }
            }
            if next >= 0 {
                let () = bus.zadd(&index, &entry, next).await?;
            } else {
                // Then look again: a leave may have held one back since the claim, and
                // filed the channel just before this removal.
                let () = bus.zrem(&index, &entry).await?;
                let first: Vec<(String, i64)> = bus.zrange_withscores(keys.held(), 0, 0).await?;
                if let Some((_, due)) = first.first() {
                    let () = redis::cmd("ZADD")
                        .arg(&index)
                        .arg("LT")
                        .arg(*due)
                        .arg(channel_ref(app_id, channel))
                        .query_async(bus)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
