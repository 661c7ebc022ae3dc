//! pusher-js's HTTP-fallback transports (`xhr_streaming`, `xhr_polling`): the pure
//! part of what a client sends, so the broker's handlers, the fuzz target and the
//! property tests share one reading of it.
//!
//! pusher-js (`src/core/http/`) addresses every request of a session as
//! `{path}/app/{key}/{server}/{session}/{op}`, where `server` and `session` are
//! short ids it makes of digits and base-32 letters, and `op` is `xhr_streaming`
//! or `xhr` (receive) or `xhr_send`. A send's body is a JSON array of strings,
//! each one Pusher message as the WebSocket transport would send it; `[]` is a
//! heartbeat.

use thiserror::Error;

/// What a request asks for, from the last path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `xhr_streaming`: a long-lived response carrying lines as they come.
    Stream,
    /// `xhr`: a response that ends after the first lines (long polling).
    Poll,
    /// `xhr_send`: messages from the client.
    Send,
}

impl Op {
    pub fn parse(segment: &str) -> Option<Self> {
        match segment {
            "xhr_streaming" => Some(Self::Stream),
            "xhr" => Some(Self::Poll),
            "xhr_send" => Some(Self::Send),
            _ => None,
        }
    }
}

/// Whether a `server` or `session` path segment is an id pusher-js could have made:
/// 1 to 32 letters, digits, `_` or `-` (anything like a path is refused).
pub fn valid_segment(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The largest send body for messages of at most `max_message` bytes: a message
/// quoted as a JSON string may double (every `"` escaped), plus the brackets.
pub fn send_body_limit(max_message: usize) -> usize {
    max_message.saturating_mul(2).saturating_add(64)
}

/// Why a send body was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// HTTP 400.
    #[error("the body must be a JSON array of strings")]
    NotStrings,
    /// HTTP 413, and the session closes with 1009 as a WebSocket would.
    #[error("message larger than {max} bytes")]
    TooLarge { max: usize },
}

/// Reads an `xhr_send` body: the messages in order, or why not. All or nothing: a
/// body with one message over `max_message` bytes delivers none of them.
pub fn parse_send(body: &[u8], max_message: usize) -> Result<Vec<String>, SendError> {
    if body.len() > send_body_limit(max_message) {
        return Err(SendError::TooLarge { max: max_message });
    }
    let messages: Vec<String> = serde_json::from_slice(body).map_err(|_| SendError::NotStrings)?;
    if messages.iter().any(|m| m.len() > max_message) {
        return Err(SendError::TooLarge { max: max_message });
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_what_pusher_js_makes() {
        assert_eq!(Op::parse("xhr_streaming"), Some(Op::Stream));
        assert_eq!(Op::parse("xhr"), Some(Op::Poll));
        assert_eq!(Op::parse("xhr_send"), Some(Op::Send));
        assert_eq!(Op::parse("websocket"), None);
        assert!(valid_segment("123") && valid_segment("a1b2c3d4"));
        assert!(
            !valid_segment("")
                && !valid_segment("..")
                && !valid_segment("a/b")
                && !valid_segment(&"a".repeat(33))
        );
    }

    #[test]
    fn send_bodies() {
        assert_eq!(parse_send(b"[]", 10), Ok(vec![]));
        let ping = r#"["{\"event\":\"pusher:ping\",\"data\":{}}"]"#;
        assert_eq!(
            parse_send(ping.as_bytes(), 100).unwrap(),
            [r#"{"event":"pusher:ping","data":{}}"#]
        );
        assert_eq!(parse_send(b"{}", 10), Err(SendError::NotStrings));
        assert_eq!(parse_send(b"[1]", 10), Err(SendError::NotStrings));
        assert_eq!(parse_send(b"[\"a\"", 10), Err(SendError::NotStrings));
        // One message over the limit refuses the whole body.
        assert_eq!(
            parse_send(br#"["ok","far too long"]"#, 5),
            Err(SendError::TooLarge { max: 5 })
        );
        // A body past the limit is refused before it is read.
        assert_eq!(
            parse_send(&[b' '; 100], 10),
            Err(SendError::TooLarge { max: 10 })
        );
        // A message of quotes may take twice its length in the body, and is accepted.
        let quotes = serde_json::to_string(&vec!["\"".repeat(10)]).unwrap();
        assert_eq!(
            parse_send(quotes.as_bytes(), 10).unwrap(),
            ["\"".repeat(10)]
        );
    }
}
