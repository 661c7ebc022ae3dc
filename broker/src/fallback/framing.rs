//! The HTTP-fallback framing, as pusher-js's `HTTPSocket` reads it
//! (`src/core/http/http_socket.ts`): newline-terminated lines whose first
//! letter says what they hold.
//!
//! - `o` or `o{"hostname":…}`: the session is open (the hint moves the session's
//!   later requests to that host);
//! - `a[…]`: messages, each a JSON string holding one Pusher message;
//! - `h`: heartbeat;
//! - `c[code,"reason"]`: the session is closed.
//!
//! An `o` reaching a session pusher-js already has open means "server lost
//! session": it closes that connection and reconnects. That is the answer to a
//! request for a session this node does not know.

use bytes::{BufMut, Bytes, BytesMut};
use protocol::{frame, ErrorCode};

use crate::core::{Framing, Outgoing};

/// Sent first on every stream: 2048 bytes of `h` and a newline, so that
/// proxies and browsers that buffer a response's first bytes let the rest
/// through at once. pusher-js reads it as a heartbeat.
pub fn prelude() -> Bytes {
    let mut b = BytesMut::with_capacity(2049);
    b.put_bytes(b'h', 2048);
    b.put_u8(b'\n');
    b.freeze()
}

pub const HEARTBEAT: &[u8] = b"h\n";

/// The open frame, with the host name hint when this node has one.
pub fn open(hostname: Option<&str>) -> Bytes {
    match hostname {
        Some(h) => Bytes::from(format!("o{}\n", serde_json::json!({ "hostname": h }))),
        None => Bytes::from_static(b"o\n"),
    }
}

/// One `a[...]` line holding every queued message (a message's JSON-string
/// form is made once and shared by every fallback subscriber). Transport
/// bytes meant for another framing are skipped. `None` when nothing is left.
pub fn messages<'a>(batch: impl Iterator<Item = &'a Outgoing>) -> Option<(Bytes, usize)> {
    let mut out = BytesMut::new();
    let mut count = 0;
    for item in batch {
        let Outgoing::Message(m) = item else { continue };
        let quoted = m.framed(Framing::JsonString, |text| {
            Bytes::from(serde_json::to_string(text).expect("strings serialize"))
        });
        out.put_slice(if count == 0 { b"a[" } else { b"," });
        out.put_slice(&quoted);
        count += 1;
    }
    if count == 0 {
        return None;
    }
    out.put_slice(b"]\n");
    Some((out.freeze(), count))
}

/// The last lines a closing session gets: `pusher:error` with the code when it
/// is one of Pusher's, then the close frame. Nothing for 1006 (the client is gone).
pub fn closing(code: u16) -> Bytes {
    match ErrorCode::from_code(code) {
        _ if code == 1006 => Bytes::new(),
        Some(c) => closing_with(code, Some(c.message())),
        None => closing_with(code, None),
    }
}

fn closing_with(code: u16, pusher_error: Option<&str>) -> Bytes {
    let mut out = BytesMut::new();
    if let Some(message) = pusher_error {
        out.put_slice(b"a[");
        out.put_slice(
            serde_json::to_string(&frame::error(Some(code), message))
                .expect("strings serialize")
                .as_bytes(),
        );
        out.put_slice(b"]\n");
    }
    out.put_slice(
        format!(
            "c{}\n",
            serde_json::json!([code, pusher_error.unwrap_or("Connection closed")])
        )
        .as_bytes(),
    );
    out.freeze()
}

/// A refused open: the open frame (so pusher-js reads what follows as the
/// handshake), the error and the close.
pub fn refusal(code: ErrorCode, message: &str) -> Bytes {
    let mut out = BytesMut::from(&b"o\n"[..]);
    out.extend_from_slice(&closing_with(code.code(), Some(message)));
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Message;

    #[test]
    fn lines_are_what_pusher_js_parses() {
        assert_eq!(&open(None)[..], b"o\n");
        assert_eq!(
            &open(Some("node-1.example.com"))[..],
            b"o{\"hostname\":\"node-1.example.com\"}\n"
        );
        let p = prelude();
        assert_eq!(p.len(), 2049);
        assert!(p.starts_with(b"hh") && p.ends_with(b"h\n"));
        let batch = [
            Outgoing::from(Message::from(r#"{"event":"x","data":"{\"a\":1}"}"#)),
            Outgoing::Raw(Bytes::from_static(b"\x8a\0")),
            Outgoing::from("{}"),
        ];
        let (line, n) = messages(batch.iter()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "a[\"{\\\"event\\\":\\\"x\\\",\\\"data\\\":\\\"{\\\\\\\"a\\\\\\\":1}\\\"}\",\"{}\"]\n"
        );
        let inner: Vec<String> = serde_json::from_slice(&line[1..line.len() - 1]).unwrap();
        assert_eq!(inner[0], r#"{"event":"x","data":"{\"a\":1}"}"#);
        assert!(messages([Outgoing::Raw(Bytes::new())].iter()).is_none());
    }

    #[test]
    fn closing_sends_the_error_then_the_code() {
        let text = String::from_utf8(closing(4200).to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let errors: Vec<String> = serde_json::from_str(&lines[0][1..]).unwrap();
        assert!(errors[0].contains("pusher:error") && errors[0].contains("4200"));
        let close: (u16, String) = serde_json::from_str(&lines[1][1..]).unwrap();
        assert_eq!(close.0, 4200);
        assert!(closing(1006).is_empty());
        assert!(refusal(ErrorCode::AppNotFound, "no").starts_with(b"o\na["));
    }
}
