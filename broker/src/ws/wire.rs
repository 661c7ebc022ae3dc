//! WebSocket framing, on actix-http's codec.
//!
//! Outgoing frames are encoded here once per broadcast (not once per
//! subscriber) and queued as shared bytes. Incoming frames are decoded from the
//! request payload by [`FrameReader`], which also joins fragmented messages.

use actix_codec::Decoder;
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, OpCode, Parser, ProtocolError};
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use protocol::{frame, ErrorCode};

use crate::{
    core::{ConnHandle, Outgoing},
    session::{Inbound, InboundError, Incoming},
};

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
const MAX_FRAME_HEADER: usize = 14;

/// Decodes client frames from the upgraded request's payload, and answers
/// pings itself (the session sees them only as signs of life).
pub struct FrameReader {
    conn: ConnHandle,
    payload: web::Payload,
    buf: BytesMut,
    codec: Codec,
    max: usize,
    /// A fragmented message being joined: (is text, bytes so far).
    partial: Option<(bool, BytesMut)>,
}

impl FrameReader {
    pub fn new(payload: web::Payload, max_message_bytes: usize, conn: ConnHandle) -> Self {
        Self {
            conn,
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_message_bytes),
            max: max_message_bytes,
            partial: None,
        }
    }

    /// The next complete message; `None` when the client disconnected.
    async fn next_frame(&mut self) -> Option<Result<Incoming, ReadError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    if let Some(msg) = self.assemble(frame).transpose() {
                        return Some(msg);
                    }
                    continue;
                }
                // actix's codec checks a frame's size only once all of it has arrived, so a
                // header announcing a huge frame would make us buffer whatever follows. A
                // frame within the limit fits in `max` bytes plus its header: more than that
                // buffered and still incomplete means the frame is over the limit.
                Ok(None) if self.buf.len() > self.max + MAX_FRAME_HEADER => {
                    return Some(Err(ReadError::TooBig(self.max)))
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e.into())),
            }
            match self.payload.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Some(Err(ReadError::Payload(e.to_string()))),
                None => return None,
            }
        }
    }

    fn assemble(&mut self, frame: Frame) -> Result<Option<Incoming>, ReadError> {
        Ok(Some(match frame {
            Frame::Text(b) => Incoming::Text(b),
            Frame::Binary(_) => Incoming::Binary,
            Frame::Ping(b) => {
                self.conn.send_direct(Outgoing::Raw(pong(&b)));
                Incoming::Heard
            }
            Frame::Pong(_) => Incoming::Heard,
            Frame::Close(_) => Incoming::Close,
            Frame::Continuation(item) => {
                let (first, chunk, last) = match item {
                    Item::FirstText(b) => (Some(true), b, false),
                    Item::FirstBinary(b) => (Some(false), b, false),
                    Item::Continue(b) => (None, b, false),
                    Item::Last(b) => (None, b, true),
                };
                if let Some(is_text) = first {
                    self.partial = Some((is_text, BytesMut::new()));
                }
                let Some((is_text, data)) = self.partial.as_mut() else {
                    return Err(ProtocolError::ContinuationNotStarted.into());
                };
                if data.len() + chunk.len() > self.max {
                    return Err(ReadError::TooBig(self.max));
                }
                data.extend_from_slice(&chunk);
                if !last {
                    return Ok(None);
                }
                let is_text = *is_text;
                let (_, data) = self.partial.take().expect("checked above");
                if is_text {
                    Incoming::Text(data.freeze())
                } else {
                    Incoming::Binary
                }
            }
        }))
    }
}

impl Inbound for FrameReader {
    async fn next(&mut self) -> Option<Result<Incoming, InboundError>> {
        // Mostly an over-long message; any broken frame ends the connection the same way.
        Some(self.next_frame().await?.map_err(|e| InboundError {
            message: format!("WebSocket protocol error: {e}"),
            close_code: e.close_code(),
        }))
    }
}

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
