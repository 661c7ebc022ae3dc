//! The protocol's documented limits, and a per-app set of them.

use serde::Deserialize;

/// Longest channel name the hosted service accepts.
pub const MAX_CHANNEL_NAME_LEN: usize = 164;
/// Longest event name.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// Limits applied to one app. Every field can be set per app in the broker's config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest `data` of one event, in bytes (REST triggers and client events). 413 over it.
    pub max_event_data_bytes: usize,
    /// Most channels one `POST /events` may name. 400 over it.
    pub max_channels_per_trigger: usize,
    /// Most events in one `POST /batch_events`. 400 over it.
    pub max_batch_events: usize,
    pub max_channel_name_len: usize,
    pub max_event_name_len: usize,
    /// Most distinct users on one presence channel.
    pub max_presence_members: usize,
    /// Largest `user_info` of a presence member, in bytes of JSON.
    pub max_presence_user_info_bytes: usize,
    /// Client events one connection may send per second (token bucket, burst of the same size).
    pub client_events_per_second: u32,
    /// Largest WebSocket message a client may send, in bytes.
    pub max_ws_message_bytes: usize,
    /// Concurrent connections for the app; 0 means no limit.
    pub max_connections: usize,
    /// User ids one signed-in connection may watch (`user_data.watchlist`).
    pub max_watchlist_users: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_data_bytes: 10 * 1024,
            max_channels_per_trigger: 100,
            max_batch_events: 10,
            max_channel_name_len: MAX_CHANNEL_NAME_LEN,
            max_event_name_len: MAX_EVENT_NAME_LEN,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
            client_events_per_second: 10,
            max_ws_message_bytes: 32 * 1024,
            max_connections: 0,
            max_watchlist_users: 100,
        }
    }
}
