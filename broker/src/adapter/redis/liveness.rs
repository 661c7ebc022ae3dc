//! Liveness: heartbeats, clean-up after a node that stopped without saying goodbye,
//! and sending the leaving webhooks whose debounce window has passed.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use protocol::{ChannelKind, ChannelName};

use super::{
    keys::{channel_ref, member_field_user, split_channel_ref, HeldBack},
    transport::Transport,
    RedisAdapter,
};
use crate::{
    apps::{App, AppRegistry},
    webhooks::WebhookEvent,
};

/// Held-back webhooks claimed per channel per round trip.
const CLAIM_BATCH: usize = 500;

/// Channels with due webhooks looked at per round.
const CHANNELS_PER_ROUND: usize = 200;

impl RedisAdapter {
    /// Heartbeats, dead-node clean-up and periodic reconcile.
    pub(super) async fn run_heartbeat(self: Arc<Self>, apps: Arc<AppRegistry>) {
        let mut tick =
            tokio::time::interval(Duration::from_secs(self.config.heartbeat_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reconcile = Instant::now();
        loop {
            tick.tick().await;
            let Some(bus) = self.bus() else { continue };
            let reconcile_due = last_reconcile.elapsed() > Duration::from_secs(30);
            match self.heartbeat(&apps, bus.as_ref(), reconcile_due).await {
                Ok(true) => last_reconcile = Instant::now(),
                Ok(false) => {}
                Err(e) => self.degraded(&e),
            }
        }
    }

    /// One heartbeat: registers, reconciles when needed (or `reconcile_due`), and
    /// cleans up after the other nodes that stopped heartbeating. `true` if it reconciled.
    pub(super) async fn heartbeat(
        &self,
        apps: &AppRegistry,
        bus: &dyn Transport,
        reconcile_due: bool,
    ) -> redis::RedisResult<bool> {
        self.register(bus).await?;
        let nodes: HashSet<String> = bus
            .set_members(&self.keys.nodes())
            .await?
            .into_iter()
            .collect();
        let reconcile = self.needs_reconcile.load(Ordering::Acquire) || reconcile_due;
        if reconcile {
            self.reconcile_now(apps).await;
        }
        for other in nodes.iter().filter(|n| **n != self.node) {
            if let Ok(false) = bus.exists(&self.keys.alive(other)).await {
                self.clean_up_dead_node(apps, bus, other).await;
            }
        }
        Ok(reconcile)
    }

    /// Announces this node as alive for the next `node_timeout_secs`.
    ///
    /// A node that finds itself missing from the node set after it had registered was
    /// declared dead (it could not heartbeat in time: a stall, a network cut) and its
    /// share was removed, its users announced as gone: it writes its state back at once,
    /// announcing them again, instead of waiting for the periodic reconcile.
    pub(super) async fn register(&self, bus: &dyn Transport) -> redis::RedisResult<()> {
        // Two keys in two slots: two commands.
        bus.set_expiring(
            &self.keys.alive(&self.node),
            "1",
            self.config.node_timeout_secs.max(1),
        )
        .await?;
        let added = bus.set_add(&self.keys.nodes(), &self.node).await?;
        if added && self.registered.swap(true, Ordering::AcqRel) {
            tracing::warn!(node = %self.node, "this node was declared dead by the cluster; writing its state back");
            self.needs_reconcile.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Removes a dead node's share of every channel, once for the cluster. Its users
    /// leave as on any leave: `member_removed` is announced by the script (and its
    /// webhook held back), and watchers of a user whose last connection was there
    /// hear "offline".
    pub(super) async fn clean_up_dead_node(
        &self,
        apps: &AppRegistry,
        bus: &dyn Transport,
        dead: &str,
    ) {
        let lock = bus
            .set_new_expiring(&self.keys.cleanup_lock(dead), &self.node, 30)
            .await;
        if !matches!(lock, Ok(true)) {
            return;
        }
        tracing::warn!(
            dead_node = dead,
            "node stopped heartbeating; removing its connections from the cluster view"
        );
        let channels = bus
            .set_members(&self.keys.node_channels(dead))
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
            if let Ok(change) = self.set_sub_share(bus, &app, &name, dead, 0).await {
                if change.before > 0 && change.after <= 0 {
                    crate::adapter::user_channel_changed(self, &app, &name, false);
                }
            }
        }
        let _ = bus.delete(&self.keys.node_channels(dead)).await;
        let _ = bus.set_remove(&self.keys.nodes(), dead).await;
    }

    /// A node's share of each member of a presence channel (user -> connections).
    pub(super) async fn member_shares_of(
        &self,
        bus: &dyn Transport,
        app: &App,
        channel: &ChannelName,
        node: &str,
    ) -> redis::RedisResult<HashMap<String, i64>> {
        let all = bus
            .hash_all(
                &self
                    .keys
                    .channel(app.id.as_str(), channel.as_str())
                    .member_shares(),
            )
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(field, n)| {
                Some((member_field_user(&field, node)?.to_owned(), n.parse().ok()?))
            })
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
            let Some(bus) = self.bus() else { continue };
            if let Err(e) = self.claim_due(&apps, bus.as_ref()).await {
                self.degraded(&e);
            }
        }
    }

    pub(super) async fn claim_due(
        &self,
        apps: &AppRegistry,
        bus: &dyn Transport,
    ) -> redis::RedisResult<()> {
        // Redis's clock decides, as it stamped the due times.
        let now = bus.now_ms().await?;
        let index = self.keys.held_index();
        let due = bus.sorted_due(&index, now, CHANNELS_PER_ROUND).await?;
        for entry in due {
            let Some((app_id, channel)) = split_channel_ref(&entry) else {
                bus.sorted_remove(&index, &entry).await?;
                continue;
            };
            let keys = self.keys.channel(app_id, channel);
            let next = loop {
                let (next, taken) = bus.claim(&keys.held(), CLAIM_BATCH).await?;
                let count = taken.len();
                if let Some(app) = apps.by_id(app_id) {
                    for held in taken {
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
                    break next;
                }
            };
            if let Some(next) = next {
                bus.sorted_add(&index, &entry, next, false).await?;
            } else {
                // Then look again: a leave may have held one back since the claim, and
                // filed the channel just before this removal.
                bus.sorted_remove(&index, &entry).await?;
                if let Some((_, due)) = bus.sorted_first(&keys.held()).await? {
                    bus.sorted_add(&index, &channel_ref(app_id, channel), due, true)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
