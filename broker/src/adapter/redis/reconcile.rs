//! Reconcile: make Redis hold exactly what a node has (after Redis was unreachable,
//! after a restart of Redis, periodically), or nothing (for a dead node).
//!
//! A share set here moves the cluster totals by the difference, and the transitions
//! that causes are announced as any join or leave would be: members coming back or
//! leaving get `member_added` / `member_removed` (from the script, in order with
//! every other member event) and their webhooks, channels their occupied/vacated webhooks.

use std::{
    collections::HashMap,
    sync::atomic::Ordering,
};

use protocol::{frame, ChannelKind, ChannelName};
use redis::{aio::ConnectionManager, AsyncCommands};
use serde_json::value::RawValue;

use super::{
    keys::{member_field, split_member_field, sub_field, HeldBack},
    RedisAdapter,
};
use crate::{
    apps::{App, AppRegistry},
    webhooks::WebhookEvent,
};

impl RedisAdapter {
    /// Sets `node`'s share of a channel's subscriptions. Returns the cluster count
    /// before and after, and whether a held-back `channel_vacated` was cancelled; sends
    /// `channel_occupied` when the channel comes back and nothing was cancelled.
    pub(super) async fn set_sub_share(
        &self,
        conn: &mut ConnectionManager,
        app: &App,
        channel: &ChannelName,
        node: &str,
        count: u64,
    ) -> redis::RedisResult<(i64, i64, bool)> {
        let held = Self::held_back(app, HeldBack::Vacated { app: app.id.as_str(), channel: channel.as_str() });
        let (before, after, cancelled): (i64, i64, i64) = self
            .scripts
            .reconcile_subs
            .key(self.keys.node_subs(node))
            .key(self.keys.channels(app.id.as_str()))
            .key(self.keys.held_back())
            .arg(sub_field(app.id.as_str(), channel.as_str()))
            .arg(channel.as_str())
            .arg(count)
            .arg(held)
            .arg(self.debounce_ms())
            .invoke_async(conn)
            .await?;
        if before <= 0 && after > 0 && cancelled == 0 {
            app.webhook(|| WebhookEvent::ChannelOccupied { channel: channel.to_string() });
        }
        Ok((before, after, cancelled == 1))
    }

    /// Sets `node`'s share of a presence user's connections (`info` needed when > 0).
    /// The script announces the user leaving or coming back; `member_added` is sent
    /// here unless it cancels a held-back `member_removed`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn set_member_share(
        &self,
        conn: &mut ConnectionManager,
        app: &App,
        channel: &ChannelName,
        node: &str,
        user: &str,
        sockets: u32,
        info: Option<&RawValue>,
    ) -> redis::RedisResult<(i64, i64)> {
        let app_id = app.id.as_str();
        let null = RawValue::from_string("null".into()).expect("valid JSON");
        let info = info.unwrap_or(&null);
        let removed = self.member_message(app, channel, &frame::member_removed(channel.as_str(), user), None);
        let added = self.member_message(app, channel, &frame::member_added(channel.as_str(), user, info), None);
        let held = Self::held_back(app, HeldBack::Removed { app: app_id, channel: channel.as_str(), user });
        let (before, after, cancelled): (i64, i64, i64) = self
            .scripts
            .reconcile_members
            .key(self.keys.node_members(node))
            .key(self.keys.members(app_id, channel.as_str()))
            .key(self.keys.infos(app_id, channel.as_str()))
            .key(self.keys.held_back())
            .arg(member_field(app_id, channel.as_str(), user))
            .arg(user)
            .arg(sockets)
            .arg(info.get())
            .arg(self.keys.events())
            .arg(removed)
            .arg(added)
            .arg(held)
            .arg(self.debounce_ms())
            .invoke_async(conn)
            .await?;
        if before <= 0 && after > 0 && cancelled == 0 {
            app.webhook(|| WebhookEvent::MemberAdded { channel: channel.to_string(), user_id: user.to_owned() });
        }
        Ok((before, after))
    }

    /// Makes Redis hold exactly this node's local subscriptions and members.
    pub(super) async fn reconcile_now(&self, apps: &AppRegistry) {
        let Some(mut conn) = self.conn() else { return };
        let _alone = self.reconcile_gate.write().await;
        self.needs_reconcile.store(false, Ordering::Release);
        // What this node holds: (app, channel) -> subscriptions, (app, channel, user) -> (sockets, info).
        let mut subs: HashMap<(String, ChannelName), u64> = HashMap::new();
        let mut members: HashMap<(String, ChannelName, String), (u32, Option<Box<RawValue>>)> = HashMap::new();
        for app in apps.all() {
            let app_id = app.id.as_str();
            for (channel, counts) in app.hub.channels("") {
                if channel.kind() == ChannelKind::Presence {
                    for (user, sockets, info) in app.hub.member_sockets(&channel) {
                        members.insert((app_id.to_owned(), channel.clone(), user), (sockets, RawValue::from_string(info).ok()));
                    }
                }
                subs.insert((app_id.to_owned(), channel), counts.subscriptions);
            }
        }
        let recorded_subs: HashMap<String, i64> = match conn.hgetall(self.keys.node_subs(&self.node)).await {
            Ok(m) => m,
            Err(e) => return self.degraded(&e),
        };
        let recorded_members: HashMap<String, i64> = conn.hgetall(self.keys.node_members(&self.node)).await.unwrap_or_default();
        // What Redis holds for this node but the node no longer has is set to zero.
        for field in recorded_subs.keys() {
            if let Some((app_id, channel)) = field.split_once('\n') {
                if let Ok(name) = ChannelName::parse_with_max(channel, usize::MAX) {
                    subs.entry((app_id.to_owned(), name)).or_insert(0);
                }
            }
        }
        for field in recorded_members.keys() {
            if let Some((app_id, channel, user)) = split_member_field(field) {
                if let Ok(name) = ChannelName::parse_with_max(channel, usize::MAX) {
                    members.entry((app_id.to_owned(), name, user.to_owned())).or_insert((0, None));
                }
            }
        }
        let mut failed = false;
        for ((app_id, channel), count) in &subs {
            let Some(app) = apps.by_id(app_id) else { continue };
            failed |= self.set_sub_share(&mut conn, &app, channel, &self.node, *count).await.is_err();
        }
        for ((app_id, channel, user), (sockets, info)) in &members {
            let Some(app) = apps.by_id(app_id) else { continue };
            failed |= self.set_member_share(&mut conn, &app, channel, &self.node, user, *sockets, info.as_deref()).await.is_err();
        }
        if failed {
            self.needs_reconcile.store(true, Ordering::Release);
        } else {
            self.healthy.store(true, Ordering::Release);
        }
    }
}
