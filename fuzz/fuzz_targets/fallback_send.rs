//! pusher-js's HTTP fallback: the path segments of a session's requests and the
//! body of an `xhr_send`. The first byte chooses the message size limit (tiny, or
//! the default), so both refusals are reached.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::fallback::{parse_send, send_body_limit, valid_segment, Op, SendError};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let max = if choice < 128 {
        usize::from(choice)
    } else {
        protocol::Limits::default().max_ws_message_bytes
    };

    if let Ok(segment) = std::str::from_utf8(body) {
        if valid_segment(segment) {
            assert!(!segment.is_empty() && segment.len() <= 32);
            assert!(!segment.contains('/') && !segment.contains('.'));
        }
        if let Some(op) = Op::parse(segment) {
            assert!(matches!(
                (op, segment),
                (Op::Stream, "xhr_streaming") | (Op::Poll, "xhr") | (Op::Send, "xhr_send")
            ));
        }
    }

    match parse_send(body, max) {
        Ok(messages) => {
            assert!(body.len() <= send_body_limit(max));
            assert!(messages.iter().all(|m| m.len() <= max));
            // What pusher-js would have sent for these messages reads back the same.
            let resent = serde_json::to_string(&messages).unwrap();
            assert_eq!(parse_send(resent.as_bytes(), max).as_ref(), Ok(&messages));
            // The broker hands messages back as `a[...]` lines of JSON strings; pusher-js
            // parses what follows the `a` as JSON: every message survives the trip.
            let quoted: Vec<String> = messages
                .iter()
                .map(|m| serde_json::to_string(m).unwrap())
                .collect();
            let line = format!("a[{}]", quoted.join(","));
            let back: Vec<String> = serde_json::from_str(&line[1..]).unwrap();
            assert_eq!(back, messages);
        }
        Err(SendError::NotStrings) => {
            assert!(body.len() <= send_body_limit(max));
            assert!(serde_json::from_slice::<Vec<String>>(body).is_err());
        }
        Err(SendError::TooLarge { max: said }) => {
            assert_eq!(said, max);
            let over = body.len() > send_body_limit(max)
                || serde_json::from_slice::<Vec<String>>(body)
                    .is_ok_and(|m| m.iter().any(|m| m.len() > max));
            assert!(over);
        }
    }
});
