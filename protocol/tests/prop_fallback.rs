//! Property tests of the HTTP-fallback send body and path segments (the fuzz target
//! `fallback_send` runs the same entry points).

use proptest::prelude::*;
use protocol::fallback::{parse_send, send_body_limit, valid_segment, SendError};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// What pusher-js sends (a JSON array of messages within the limit) reads back the same.
    #[test]
    fn sent_messages_read_back(messages in prop::collection::vec("\\PC{0,40}", 0..6)) {
        let body = serde_json::to_string(&messages).unwrap();
        prop_assert_eq!(parse_send(body.as_bytes(), 200), Ok(messages));
    }

    /// One message over the limit refuses the body, whatever else it holds.
    #[test]
    fn an_oversize_message_refuses_the_body(ok in prop::collection::vec("[a-z]{0,10}", 0..4), extra in 11usize..40, at in 0usize..4) {
        let mut messages = ok;
        messages.insert(at.min(messages.len()), "x".repeat(extra));
        let body = serde_json::to_string(&messages).unwrap();
        prop_assert_eq!(parse_send(body.as_bytes(), 10), Err(SendError::TooLarge { max: 10 }));
    }

    /// Arbitrary bytes: no panic, and an answer consistent with the limits.
    #[test]
    fn any_body_is_answered(body in prop::collection::vec(any::<u8>(), 0..300), max in 0usize..64) {
        match parse_send(&body, max) {
            Ok(messages) => {
                prop_assert!(body.len() <= send_body_limit(max));
                prop_assert!(messages.iter().all(|m| m.len() <= max));
            }
            Err(SendError::NotStrings) => prop_assert!(serde_json::from_slice::<Vec<String>>(&body).is_err()),
            Err(SendError::TooLarge { max: said }) => prop_assert_eq!(said, max),
        }
    }

    /// Segments that could be paths are refused; pusher-js's ids are accepted.
    #[test]
    fn segments(s in "\\PC{0,40}") {
        if valid_segment(&s) {
            prop_assert!(!s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        }
    }

    #[test]
    fn pusher_js_ids_are_valid(id in "[0-9a-z]{1,32}") {
        prop_assert!(valid_segment(&id));
    }
}
