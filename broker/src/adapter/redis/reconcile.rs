//! Reconcile: make Redis hold exactly what a node has (after Redis was unreachable,
//! after a restart or failover of Redis, periodically), or nothing (for a dead node).
//!
//! A share set here moves the cluster totals by the difference, and the transitions
//! that causes are announced as any join or leave would be: members coming back or
//! leaving get `member_added` / `member_removed` (from the script, in order with
//! every other member event) and their webhooks, channels their occupied/vacated webhooks.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering,
};

use protocol::{frame, ChannelKind, ChannelName};
use serde_json::value::RawValue;

use super::{
    keys::{channel_ref, member_field, split_channel_ref},
    transport::{CountChange, MemberShare, Transport},
    RedisAdapter,
};
use crate::{
    apps::{App, AppRegistry},
    webhooks::WebhookEvent,
};

impl RedisAdapter {
    /// Sets `node`'s share of a channel's subscriptions, moving the cluster count by
    /// the difference; sends `channel_occupied` when the channel comes back and no
    /// held-back `channel_vacated` was cancelled.
    pub(super) async fn set_sub_share(
        &self,
        bus: &dyn Transport,
        app: &App,
        channel: &ChannelName,
        node: &str,
        count: u64,
    ) -> redis::RedisResult<CountChange> {
        let keys = self.keys.channel(app.id.as_str(), channel.as_str());
        let change = bus
            .set_sub_share(&keys, node, count, self.hold_for(app))
            .await?;
        if change.before <= 0 && change.after > 0 && !change.cancelled {
            app.webhook(|| WebhookEvent::ChannelOccupied {
                channel: channel.to_string(),
            });
        }
        self.index_count_change(app, channel, change.before, change.after, change.due)
            .await;
        Ok(change)
    }

    /// Sets `node`'s share of a presence user's connections (`info` needed when > 0).
    /// The script announces the user leaving or coming back; `member_added` is sent
    /// here unless it cancels a held-back `member_removed`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn set_member_share(
        &self,
        bus: &dyn Transport,
        app: &App,
        channel: &ChannelName,
        node: &str,
        user: &str,
        sockets: u32,
        info: Option<&RawValue>,
    ) -> redis::RedisResult<CountChange> {
        let keys = self.keys.channel(app.id.as_str(), channel.as_str());
        let null = RawValue::from_string("null".into()).expect("valid JSON");
        let info = info.unwrap_or(&null);
        let removed = self.member_message(
            app,
            channel,
            &frame::member_removed(channel.as_str(), user),
            None,
        );
        let added = self.member_message(
            app,
            channel,
            &frame::member_added(channel.as_str(), user, info),
            None,
        );
        let field = member_field(node, user);
        let share = MemberShare {
            field: &field,
            user,
            connections: sockets,
            info: info.get(),
            removed: &removed,
            added: &added,
            hold_for: self.hold_for(app),
        };
        let change = bus.set_member_share(&keys, share).await?;
        if change.before <= 0 && change.after > 0 && !change.cancelled {
            app.webhook(|| WebhookEvent::MemberAdded {
                channel: channel.to_string(),
                user_id: user.to_owned(),
            });
        }
        self.index_held_back(app, channel, change.due).await;
        Ok(change)
    }

    /// Listens to every topic this node holds again, and makes Redis hold exactly this
    /// node's local subscriptions and members. The node is healthy once both worked.
    pub(super) async fn reconcile_now(&self, apps: &AppRegistry) {
        let Some(bus) = self.bus() else { return };
        let _alone = self.reconcile_gate.write().await;
        self.needs_reconcile.store(false, Ordering::Release);
        if !self.interest.resubscribe_all().await {
            self.needs_reconcile.store(true, Ordering::Release);
            return;
        }
        if let Err(e) = self.write_back(apps, bus.as_ref()).await {
            self.degraded(&e);
            return;
        }
        if !self.needs_reconcile.load(Ordering::Acquire)
            && !self.healthy.swap(true, Ordering::AcqRel)
        {
            tracing::info!(node = %self.node, "redis reachable: cluster view written back");
        }
    }

    async fn write_back(&self, apps: &AppRegistry, bus: &dyn Transport) -> redis::RedisResult<()> {
        // What this node holds: (app, channel) -> subscriptions, and the presence members.
        type Members = HashMap<String, (u32, Option<Box<RawValue>>)>;
        let mut held: HashMap<(String, ChannelName), (u64, Members)> = HashMap::new();
        for app in apps.all() {
            for (channel, counts) in app.hub.channels("") {
                let mut members = Members::new();
                if channel.kind() == ChannelKind::Presence {
                    for (user, sockets, info) in app.hub.member_sockets(&channel) {
                        members.insert(user, (sockets, RawValue::from_string(info).ok()));
                    }
                }
                held.insert(
                    (app.id.as_str().to_owned(), channel),
                    (counts.subscriptions, members),
                );
            }
        }
        // What Redis may hold for this node but the node no longer has goes to zero.
        let index = self.keys.node_channels(&self.node);
        let recorded: HashSet<String> = bus.set_members(&index).await?.into_iter().collect();
        for entry in &recorded {
            let Some((app_id, channel)) = split_channel_ref(entry) else {
                continue;
            };
            if let Ok(name) = ChannelName::parse_with_max(channel, usize::MAX) {
                held.entry((app_id.to_owned(), name))
                    .or_insert_with(|| (0, Members::new()));
            }
        }
        for ((app_id, channel), (subscriptions, mut members)) in held {
            let Some(app) = apps.by_id(&app_id) else {
                continue;
            };
            let entry = channel_ref(&app_id, channel.as_str());
            if subscriptions > 0 {
                bus.set_add(&index, &entry).await?;
            }
            if channel.kind() == ChannelKind::Presence {
                for user in self
                    .member_shares_of(bus, &app, &channel, &self.node)
                    .await?
                    .into_keys()
                {
                    members.entry(user).or_insert((0, None));
                }
                for (user, (sockets, info)) in &members {
                    self.set_member_share(
                        bus,
                        &app,
                        &channel,
                        &self.node,
                        user,
                        *sockets,
                        info.as_deref(),
                    )
                    .await?;
                }
            }
            self.set_sub_share(bus, &app, &channel, &self.node, subscriptions)
                .await?;
            if subscriptions == 0 {
                bus.set_remove(&index, &entry).await?;
            }
        }
        Ok(())
    }
}
