//! Presence across the cluster: a join admitted, announced and listed by one script,
//! the joiner queued its member list in the bus order, and a leave that tells whether it
//! was the user's last connection anywhere.

use std::{collections::HashMap, sync::atomic::Ordering, time::Duration};

use protocol::{frame, ChannelName};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::{
    keys::member_field,
    message::{Header, Kind},
    transport::{JoinOutcome, JoinRequest},
    RedisAdapter,
};
use crate::{
    apps::App,
    core::{
        hub::{ChannelFull, Joined, Subscribed},
        ConnHandle,
    },
    webhooks::WebhookEvent,
};

/// How long a joiner waits for its member list from the bus before it is joined
/// with a list read directly (the bus is then broken, and a reconcile follows).
const LIST_WAIT: Duration = Duration::from_secs(3);

/// A presence join waiting for its member list from the bus.
pub(super) struct PendingJoin {
    pub channel: ChannelName,
    pub conn: ConnHandle,
    pub user_id: String,
    pub info: Box<RawValue>,
    /// The local subscription, once the list is queued (`None`: already subscribed).
    pub done: oneshot::Sender<Option<Subscribed>>,
}

impl RedisAdapter {
    /// Takes one of the user's connections off the cluster's presence count; on the
    /// last, the script announces `member_removed`. `Some(true)` when it was the last.
    pub(super) async fn leave_presence(
        &self,
        app: &App,
        channel: &ChannelName,
        user: &str,
    ) -> Option<bool> {
        let keys = self.keys.channel(app.id.as_str(), channel.as_str());
        let removed = self.member_message(
            app,
            channel,
            &frame::member_removed(channel.as_str(), user),
            None,
        );
        let field = member_field(&self.node, user);
        let hold_for = self.hold_for(app);
        let left = self
            .with_bus(|c| async move { c.leave(&keys, &field, user, &removed, hold_for).await })
            .await?;
        self.index_held_back(app, channel, left.due).await;
        Some(left.last)
    }

    /// Joins without the bus's ordering (it failed us): with the member list read now.
    async fn join_with_list_read_now(&self, app: &App, p: PendingJoin) -> Option<Subscribed> {
        let key = self
            .keys
            .channel(app.id.as_str(), p.channel.as_str())
            .infos();
        let infos: Option<HashMap<String, String>> = self
            .with_bus(|c| async move { c.hash_all(&key).await })
            .await;
        let mut members: Vec<(String, Box<RawValue>)> = match infos {
            Some(infos) => infos
                .into_iter()
                .filter_map(|(id, text)| Some((id, RawValue::from_string(text).ok()?)))
                .collect(),
            None => Vec::new(),
        };
        if !members.iter().any(|(id, _)| *id == p.user_id) {
            members.push((p.user_id.clone(), p.info.clone()));
        }
        let succeeded = succeeded_frame(&p.channel, &members);
        self.needs_reconcile.store(true, Ordering::Release);
        app.hub
            .join_with_list(&p.channel, &p.conn, &p.user_id, p.info, &succeeded)
    }

    /// The cluster part of a presence join, after this node listens to the channel.
    /// `Err(())` when Redis could not be asked (the caller joins locally).
    pub(super) async fn join_cluster(
        &self,
        app: &App,
        channel: &ChannelName,
        conn: &ConnHandle,
        user_id: &str,
        info: Box<RawValue>,
    ) -> Result<Result<Option<Joined>, ChannelFull>, Box<RawValue>> {
        if app.hub.is_subscribed(channel, conn.id) {
            return Ok(Ok(None));
        }
        if self.note_channel(app, channel).await.is_none() {
            return Err(info);
        }
        let keys = self.keys.channel(app.id.as_str(), channel.as_str());
        let info_text = info.get().to_owned();
        let added = self.member_message(
            app,
            channel,
            &frame::member_added(channel.as_str(), user_id, &info),
            Some(conn.id),
        );
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut list_header =
            Header::new(&self.node, Kind::List, app.id.as_str(), channel.as_str());
        list_header.token = Some(token);
        let (done, mut listed) = oneshot::channel();
        let pending = PendingJoin {
            channel: channel.clone(),
            conn: conn.clone(),
            user_id: user_id.to_owned(),
            info: info.clone(),
            done,
        };
        self.pending_joins.lock().insert(token, pending);
        let take_pending = || self.pending_joins.lock().remove(&token);
        // Admission is cluster-wide; the script decides, announces and lists.
        let field = member_field(&self.node, user_id);
        let list_line = list_header.line();
        let request = JoinRequest {
            field: &field,
            user: user_id,
            info: &info_text,
            max_members: app.limits.max_presence_members,
            added: &added,
            list_header: &list_line,
            hold_for: self.hold_for(app),
        };
        let result = self
            .with_bus(|c| async move { c.join(&keys, request).await })
            .await;
        let Some(outcome) = result else {
            return Err(take_pending().map(|p| p.info).unwrap_or(info));
        };
        let JoinOutcome::Joined {
            connections: count,
            cancelled,
        } = outcome
        else {
            take_pending();
            return Ok(Err(ChannelFull));
        };
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
            return Ok(Ok(None));
        };
        let subscribed = self.count_subscription(app, channel, local).await;
        let first = count == 1;
        if first && !cancelled {
            app.webhook(|| WebhookEvent::MemberAdded {
                channel: channel.to_string(),
                user_id: user_id.to_owned(),
            });
        }
        Ok(Ok(Some(Joined { first, subscribed })))
    }
}

/// A presence channel's `subscription_succeeded` for a member list read from Redis.
pub(super) fn succeeded_frame(
    channel: &ChannelName,
    members: &[(String, Box<RawValue>)],
) -> String {
    let pairs: Vec<(&str, &RawValue)> = members
        .iter()
        .map(|(id, info)| (id.as_str(), &**info))
        .collect();
    frame::presence_subscription_succeeded(channel.as_str(), &pairs)
}
