//! Publishing chat events through the broker's signed REST API.

use std::time::Duration;

use protocol::{client::RestClient, rest::TriggerRequest, SocketId};

use crate::{config::Config, models::MessageView};

/// The channel every chat page subscribes to: the original app's `a_channel`,
/// made private so that only logged-in users (signed by `/pusher/auth`) can read it.
pub const CHAT_CHANNEL: &str = "private-a_channel";
pub const EVENT_NEW: &str = "an_event";
pub const EVENT_DELIVERED: &str = "delivered_message";
pub const EVENT_SEEN: &str = "seen_message";
pub const PRESENCE_CHANNEL: &str = "presence-chat";
pub const TYPING_CHANNEL: &str = "private-typing";

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

    /// Triggers `event` on the chat channel. Returns whether the broker accepted it;
    /// a failure is logged, never returned, because the message is already stored
    /// and clients catch up from history after they reconnect.
    pub async fn publish(&self, event: &str, message: &MessageView, exclude: Option<SocketId>) -> bool {
        let data = match serde_json::to_string(message) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode event");
                return false;
            }
        };
        let req = TriggerRequest {
            name: event.to_owned(),
            data,
            channel: Some(CHAT_CHANNEL.to_owned()),
            socket_id: exclude.map(|s| s.to_string()),
            ..Default::default()
        };
        match self.client.trigger(&req).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(event, id = message.id, error = %e, "event not broadcast");
                false
            }
        }
    }
}
