//! WebSocket framing, on actix-http's codec.
//!
//! Outgoing frames are encoded here once per broadcast (not once per
//! subscriber) and queued as shared bytes. Incoming frames are decoded by
//! [`super::socket`], which also joins fragmented messages.

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser, ProtocolError};
use bytes::{Bytes, BytesMut};
use protocol::{frame, ErrorCode};

/// A server-to-client text frame (servers never mask).
pub fn text(payload: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut out, payload, OpCode::Text, true, false);
    out.freeze()
}

pub fn pong(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut out, payload, OpCode::Pong, true, false);
    out.freeze()
}

/// The last bytes a closing connection gets: `pusher:error` with the code when
/// it is one of Pusher's, then the close frame.
pub fn closing(code: u16) -> Bytes {
    let mut out = BytesMut::new();
    let known = ErrorCode::from_code(code);
    let description = match known {
        Some(c) => {
            Parser::write_message(&mut out, frame::error_code(c), OpCode::Text, true, false);
            Some(c.message().to_owned())
        }
        None => None,
    };
    if code != 1006 {
        Parser::write_close(
            &mut out,
            Some(CloseReason {
                code: CloseCode::from(code),
                description,
            }),
            false,
        );
    }
    out.freeze()
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    #[error("connection error: {0}")]
    Payload(String),
}

impl ReadError {
    /// The close code the client gets (RFC 6455 §7.4.1): 1009 for a message over
    /// the size limit, 1002 for any other framing violation, and 1006 (nothing is
    /// sent) when the connection itself failed.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooBig(_) | Self::Protocol(ProtocolError::Overflow) => 1009,
            Self::Protocol(_) => 1002,
            Self::Payload(_) => 1006,
        }
    }
}

/// The longest frame header a client can send: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_FRAME_HEADER: usize = 14;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_are_unmasked_with_the_right_length() {
        let f = text("hi");
        assert_eq!(&f[..], &[0x81, 2, b'h', b'i']);
        let long = "x".repeat(300);
        let f = text(&long);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 304);
    }

    #[test]
    fn only_oversized_messages_close_with_1009() {
        assert_eq!(ReadError::TooBig(10).close_code(), 1009);
        assert_eq!(ReadError::from(ProtocolError::Overflow).close_code(), 1009);
        assert_eq!(
            ReadError::from(ProtocolError::ContinuationNotStarted).close_code(),
            1002
        );
        assert_eq!(
            ReadError::from(ProtocolError::UnmaskedFrame).close_code(),
            1002
        );
        assert_eq!(ReadError::Payload("reset".into()).close_code(), 1006);
    }

    #[test]
    fn closing_sends_the_error_then_the_close_code() {
        let f = closing(4100);
        assert_eq!(f[0], 0x81, "text frame first");
        let close_at = f.len() - f.iter().rev().position(|b| *b == 0x88).unwrap() - 1;
        assert_eq!(&f[close_at + 2..close_at + 4], &4100u16.to_be_bytes());
        assert_eq!(
            closing(1006).len(),
            0,
            "nothing to send to a client that is gone"
        );
    }
}
