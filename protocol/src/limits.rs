//! The protocol's documented limits, and a per-app set of them.

use std::borrow::Cow;

use serde::Deserialize;

/// Longest channel name the hosted service accepts.
pub const MAX_CHANNEL_NAME_LEN: usize = 164;
/// Longest event name.
pub const MAX_EVENT_NAME_LEN: usize = 200;
/// Longest error message sent back to a client, in characters. Messages quote
/// what the client sent (a bad channel name, a parser's complaint), so this keeps
/// a reply from echoing a message-sized input.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 256;
/// Longest piece of client input quoted inside an error message, in characters.
pub const MAX_QUOTED_INPUT_CHARS: usize = 64;

/// `text`, cut to at most `max` characters (an ellipsis marks the cut).
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => {
            let keep = text[..end]
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(end, |(i, _)| i);
            Cow::Owned(format!("{}…", &text[..keep]))
        }
    }
}

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
    /// Channels one connection may be subscribed to (its sign-in's own user
    /// channel aside). The next `pusher:subscribe` gets a `pusher:subscription_error`
    /// with status [`CHANNEL_LIMIT_STATUS`].
    pub max_channels_per_connection: usize,
}

/// `status` of the `pusher:subscription_error` for a subscription over `max_channels_per_connection`.
pub const CHANNEL_LIMIT_STATUS: u16 = 429;

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
            max_channels_per_connection: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly10!", 10), "exactly10!");
        assert_eq!(clip("0123456789abc", 10), "012345678…");
        assert_eq!(clip("ééééé", 3).chars().count(), 3);
        assert_eq!(clip(&"x".repeat(100_000), 64).chars().count(), 64);
    }
}
