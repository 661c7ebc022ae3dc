//! What a session hears from its client, whatever the transport.
//!
//! A transport turns its own framing (WebSocket frames, HTTP-fallback
//! `xhr_send` bodies) into [`Incoming`] messages and answers its own
//! keep-alives (a WebSocket pong) itself; the session only sees Pusher
//! messages, "the client is still there", and the end.

use std::future::Future;

use bytes::Bytes;

/// One complete message or sign of life from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A Pusher message (JSON text, not yet checked to be UTF-8).
    Text(Bytes),
    /// A message the protocol has no use for (a WebSocket binary frame).
    Binary,
    /// The client showed it is alive without a message (a WebSocket ping or
    /// pong, an HTTP-fallback heartbeat or poll).
    Heard,
    /// The client said goodbye.
    Close,
}

/// The client broke its transport's rules; the session reports it and closes.
#[derive(Debug)]
pub struct InboundError {
    pub message: String,
    /// The close code the client gets.
    pub close_code: u16,
}

/// A source of client messages.
pub trait Inbound {
    /// The next message; `None` when the client is gone.
    fn next(&mut self) -> impl Future<Output = Option<Result<Incoming, InboundError>>>;
}

impl<I: Inbound> Inbound for &mut I {
    fn next(&mut self) -> impl Future<Output = Option<Result<Incoming, InboundError>>> {
        (**self).next()
    }
}
