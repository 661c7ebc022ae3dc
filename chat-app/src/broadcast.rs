//! Publishing chat events through the broker's signed REST API (the workspace
//! `protocol` client): conversation events on each conversation's private
//! channel, and notices to users (`sendToUser`: the `#server-to-user-{id}`
//! channel that a signed-in connection joins).

use std::time::Duration;

use protocol::{client::RestClient, rest::TriggerRequest, SocketId};
use serde::Serialize;

use crate::config::Config;

pub const EVENT_NEW: &str = "an_event";
pub const EVENT_DELIVERED: &str = "delivered_message";
pub const EVENT_SEEN: &str = "seen_message";
/// Receipt changes of many messages at once: `{conversation_id, updates: [ReceiptUpdate]}`.
pub const EVENT_RECEIPTS: &str = "receipts";
/// Who is online: every logged-in user may join.
pub const PRESENCE_CHANNEL: &str = "presence-chat";

/// Notices to users, outside any conversation channel.
pub const NOTICE_NEW_MESSAGE: &str = "new_message";
pub const NOTICE_ADDED: &str = "conversation_added";
pub const NOTICE_REMOVED: &str = "conversation_removed";
pub const NOTICE_MEMBERS: &str = "members_changed";

/// The broker's limit on channels named by one trigger (the hosted service's too).
const MAX_CHANNELS_PER_TRIGGER: usize = 100;

pub struct Broadcaster {
    client: RestClient,
}

impl Broadcaster {
    pub fn new(config: &Config) -> Self {
        let client = RestClient::with_timeout(
            &config.pusher_url,
            config.app_id.clone(),
            config.app_key.clone(),
            config.app_secret.clone(),
            Duration::from_secs(config.broker_timeout_secs),
        );
        Self { client }
    }

    /// Triggers `event` on `channel`, leaving out the `exclude` connection.
    /// Returns whether the broker accepted it; a failure is logged, never
    /// returned, because the data is already stored and clients catch up from
    /// history after they reconnect.
    pub async fn publish<T: Serialize>(
        &self,
        channel: &str,
        event: &str,
        data: &T,
        exclude: Option<SocketId>,
    ) -> bool {
        let Some(data) = encode(event, data) else {
            return false;
        };
        let req = TriggerRequest {
            name: event.to_owned(),
            data,
            channel: Some(channel.to_owned()),
            socket_id: exclude.map(|s| s.to_string()),
            ..Default::default()
        };
        self.send(&req).await
    }

    /// `sendToUser` for many users: one trigger per hundred of them.
    pub async fn send_to_users<T: Serialize>(
        &self,
        user_ids: &[i32],
        event: &str,
        data: &T,
    ) -> bool {
        let Some(data) = encode(event, data) else {
            return false;
        };
        let mut all = true;
        for chunk in user_ids.chunks(MAX_CHANNELS_PER_TRIGGER) {
            let req = TriggerRequest {
                name: event.to_owned(),
                data: data.clone(),
                channels: Some(
                    chunk
                        .iter()
                        .map(|id| format!("#server-to-user-{id}"))
                        .collect(),
                ),
                ..Default::default()
            };
            all &= self.send(&req).await;
        }
        all
    }

    async fn send(&self, req: &TriggerRequest) -> bool {
        match self.client.trigger(req).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(event = %req.name, error = %e, "event not broadcast");
                false
            }
        }
    }
}

fn encode<T: Serialize>(event: &str, data: &T) -> Option<String> {
    serde_json::to_string(data)
        .map_err(|e| tracing::error!(event, error = %e, "cannot encode event"))
        .ok()
}
