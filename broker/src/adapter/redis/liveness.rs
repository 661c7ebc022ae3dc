//! Liveness: heartbeats, clean-up after a node that stopped without saying goodbye,
//! and sending the leaving webhooks whose debounce window has passed.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use protocol::ChannelName;
use redis::{aio::ConnectionManager, AsyncCommands};

use super::{
    keys::{split_member_field, HeldBack},
    RedisAdapter,
};
use crate::{apps::AppRegistry, webhooks::WebhookEvent};

/// Held-back webhooks claimed per round trip.
const CLAIM_BATCH: usize = 500;

impl RedisAdapter {
    /// Heartbeats, dead-node clean-up and periodic reconcile.
    pub(super) async fn run_heartbeat(self: Arc<Self>, apps: Arc<AppRegistry>) {
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
                self.reconcile_now(&apps).await;
                last_reconcile = Instant::now();
            }
            for other in nodes.iter().filter(|n| **n != self.node) {
                let exists: redis::RedisResult<bool> = conn.exists(self.keys.alive(other)).await;
                if let Ok(false) = exists {
                    self.clean_up_dead_node(&apps, &mut conn, other).await;
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
    pub(super) async fn register(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let (added,): (i64,) = redis::pipe()
            .set_ex(self.keys.alive(&self.node), 1, self.config.node_timeout_secs.max(1))
            .ignore()
            .sadd(self.keys.nodes(), &self.node)
            .query_async(conn)
            .await?;
        if added == 1 && self.registered.swap(true, Ordering::AcqRel) {
            tracing::warn!(node = %self.node, "this node was declared dead by the cluster; writing its state back");
            self.needs_reconcile.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Removes a dead node's share of every count, once for the cluster. Its users
    /// leave as on any leave: `member_removed` is announced by the script (and its
    /// webhook held back), and watchers of a user whose last connection was there
    /// hear "offline".
    async fn clean_up_dead_node(&self, apps: &AppRegistry, conn: &mut ConnectionManager, dead: &str) {
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
            let Some((app_id, channel, user)) = split_member_field(field) else { continue };
            let (Some(app), Ok(name)) = (apps.by_id(app_id), ChannelName::parse_with_max(channel, usize::MAX)) else { continue };
            let _ = self.set_member_share(conn, &app, &name, dead, user, 0, None).await;
        }
        let subs: HashMap<String, i64> = conn.hgetall(self.keys.node_subs(dead)).await.unwrap_or_default();
        for field in subs.keys() {
            let Some((app_id, channel)) = field.split_once('\n') else { continue };
            let (Some(app), Ok(name)) = (apps.by_id(app_id), ChannelName::parse_with_max(channel, usize::MAX)) else { continue };
            if let Ok((before, after, _)) = self.set_sub_share(conn, &app, &name, dead, 0).await {
                if before > 0 && after <= 0 {
                    crate::adapter::user_channel_changed(self, &app, &name, false);
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

    /// Claims leaving webhooks whose debounce window has passed (each by exactly one
    /// node) and queues them with the app's webhooks.
    pub(super) async fn run_held_back_webhooks(self: Arc<Self>, apps: Arc<AppRegistry>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !apps.all().iter().any(|a| a.webhooks.is_some()) {
                continue;
            }
            let Some(mut conn) = self.conn() else { continue };
            loop {
                let due: redis::RedisResult<Vec<String>> =
                    self.scripts.claim.key(self.keys.held_back()).arg(CLAIM_BATCH).invoke_async(&mut conn).await;
                let due = match due {
                    Ok(d) => d,
                    Err(e) => {
                        self.degraded(&e);
                        break;
                    }
                };
                for entry in &due {
                    let event = match HeldBack::decode(entry) {
                        Some(HeldBack::Vacated { app, channel }) => (app, WebhookEvent::ChannelVacated { channel: channel.to_owned() }),
                        Some(HeldBack::Removed { app, channel, user }) => {
                            (app, WebhookEvent::MemberRemoved { channel: channel.to_owned(), user_id: user.to_owned() })
                        }
                        None => continue,
                    };
                    if let Some(app) = apps.by_id(event.0) {
                        app.webhook(|| event.1);
                    }
                }
                if due.len() < CLAIM_BATCH {
                    break;
                }
            }
        }
    }
}
