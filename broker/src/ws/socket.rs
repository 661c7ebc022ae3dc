//! An upgraded WebSocket connection's socket, driven by its session task.
//!
//! After the handshake the connection owns its socket outright (actix's HTTP
//! dispatcher hands it over, see [`super::upgrade`]), so nothing but what the
//! connection needs stays allocated while it is idle: no request or response
//! buffers, no second task. Reading and writing both happen in the session's
//! task, inside [`Inbound::next`]:
//!
//! - Reads go through a buffer on the stack; only the bytes of a frame that has
//!   not fully arrived are kept (usually none, so an idle connection holds no
//!   read buffer at all).
//! - Writes take every frame queued for the connection and write them with one
//!   vectored write. On plain TCP most frames never wait for this task: the
//!   publisher writes them directly when the socket has room (see
//!   [`crate::core::connection::DirectWriter`]); the task only writes what the
//!   socket could not take at once.

use std::{
    collections::VecDeque,
    future::poll_fn,
    io::{self, IoSlice},
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::wire::{self, ReadError};
use crate::{
    core::{
        connection::{Framing, Receiver},
        ConnHandle, Outgoing,
    },
    metrics::Metrics,
    session::{Inbound, InboundError, Incoming},
};

/// Bytes read from the socket per read call. On the stack: the connection keeps
/// only what is left of an incomplete frame.
const READ_CHUNK: usize = 4096;

/// Frames handed to one vectored write at most.
const MAX_IOV: usize = 64;

/// A WebSocket message framed (made once per message, then shared).
pub fn frame(item: &Outgoing) -> Bytes {
    match item {
        Outgoing::Message(m) => m.framed(Framing::WebSocket, wire::text),
        Outgoing::Raw(b) => b.clone(),
    }
}

/// The socket of one upgraded connection, with its decoding and write state.
pub struct Socket<T> {
    io: T,
    conn: ConnHandle,
    rx: Receiver,
    metrics: Arc<Metrics>,
    /// The start of a frame that has not fully arrived (empty, unallocated, otherwise).
    buf: BytesMut,
    codec: Codec,
    max: usize,
    /// A fragmented message being joined: (is text, bytes so far).
    partial: Option<(bool, BytesMut)>,
    /// Taken from the queue in one swap.
    taken: VecDeque<Outgoing>,
    /// Framed and not yet (fully) written; the first has `sent` bytes out already.
    out: VecDeque<Bytes>,
    sent: usize,
    /// The first of `out` is the rest of a frame whose start a direct write sent.
    front_begun: bool,
    /// The client closed its side, or reading or writing failed.
    ended: bool,
    /// The handshake's answer (the first of `out`) has not fully gone out yet.
    unanswered: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Socket<T> {
    /// `read` holds bytes the client sent right after its handshake request, if any;
    /// `first` is written before anything queued (the handshake's answer).
    pub fn new(
        io: T,
        read: BytesMut,
        first: Bytes,
        conn: ConnHandle,
        rx: Receiver,
        max_message_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            io,
            conn,
            rx,
            metrics,
            buf: read,
            codec: Codec::new().max_size(max_message_bytes),
            max: max_message_bytes,
            partial: None,
            taken: VecDeque::new(),
            out: VecDeque::from([first]),
            sent: 0,
            front_begun: false,
            ended: false,
            unanswered: true,
        }
    }

    /// Takes what is queued for the client and writes as much as the socket accepts.
    /// `Ok` when everything is out or the socket is full (the task is then woken when
    /// either changes).
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            // Take from the queue only once what was taken is written: a client that does not
            // read then fills the bounded queue and is cut, instead of growing `out`. (The
            // handshake's answer is the exception: what the session queues first joins it.)
            let holding = !self.out.is_empty();
            let only_answer = self.unanswered && self.sent == 0 && self.out.len() == 1;
            let took = if !holding || only_answer {
                self.rx.poll_take(cx, &mut self.taken, holding)
            } else {
                Poll::Pending
            };
            if let Poll::Ready(Ok(begun)) = took {
                // Only when nothing else was held (a direct write never overtakes the task).
                self.front_begun |= begun && !holding;
                let mut bytes = 0;
                let before = self.out.len();
                for item in self.taken.drain(..) {
                    let framed = frame(&item);
                    bytes += framed.len();
                    self.out.push_back(framed);
                }
                // The rest of a frame a direct write began was counted with that write.
                let (messages, bytes) = match (begun, self.out.get(before)) {
                    (true, Some(rest)) => (self.out.len() - before - 1, bytes - rest.len()),
                    _ => (self.out.len() - before, bytes),
                };
                self.metrics.messages_out.inc_by(messages as u64);
                self.metrics.bytes_out.inc_by(bytes as u64);
                shrink(&mut self.taken);
            }
            // Closing (`Err`): the session ends and `finish` writes the last frames.
            if self.out.is_empty() {
                return Ok(());
            }
            match self.poll_write_out(cx) {
                Poll::Ready(Ok(())) => shrink(&mut self.out),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// Writes `out` to the end, or until the socket is full.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, f) in self.out.iter().take(MAX_IOV).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &f[self.sent..] } else { f });
                n += 1;
            }
            let mut written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(w)) => w,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            while written > 0 {
                let left = self.out[0].len() - self.sent;
                if written >= left {
                    written -= left;
                    self.out.pop_front();
                    self.sent = 0;
                    self.unanswered = false;
                    self.front_begun = false;
                } else {
                    self.sent += written;
                    written = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Decodes the next whole message from what was read, if there is one.
    fn decode(&mut self) -> Option<Result<Incoming, ReadError>> {
        loop {
            if self.buf.is_empty() {
                // Let go of the allocation: idle connections keep no read buffer.
                self.buf = BytesMut::new();
                return None;
            }
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => match self.assemble(frame).transpose() {
                    Some(msg) => return Some(msg),
                    None => continue,
                },
                // actix's codec checks a frame's size only once all of it has arrived, so a
                // header announcing a huge frame would make us buffer whatever follows. A
                // frame within the limit fits in `max` bytes plus its header: more than that
                // buffered and still incomplete means the frame is over the limit.
                Ok(None) if self.buf.len() > self.max + wire::MAX_FRAME_HEADER => {
                    return Some(Err(ReadError::TooBig(self.max)))
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    fn assemble(&mut self, frame: Frame) -> Result<Option<Incoming>, ReadError> {
        Ok(Some(match frame {
            Frame::Text(b) => Incoming::Text(b),
            Frame::Binary(_) => Incoming::Binary,
            Frame::Ping(b) => {
                self.conn.send_direct(Outgoing::Raw(wire::pong(&b)));
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

    /// Writes queued frames and reads until a whole message has arrived.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, ReadError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Err(e) = self.poll_write_queue(cx) {
            tracing::debug!(socket_id = %self.conn.id, error = %e, "write failed");
            return Poll::Ready(self.end());
        }
        loop {
            if let Some(msg) = self.decode() {
                return Poll::Ready(Some(msg));
            }
            // Uninitialised: most polls find nothing to read (the task was woken to write),
            // and the socket initialises only what it reads into.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(self.end()),
                Poll::Ready(Ok(())) => self.buf.extend_from_slice(read.filled()),
                Poll::Ready(Err(e)) => {
                    let message = e.to_string();
                    self.end();
                    return Poll::Ready(Some(Err(ReadError::Payload(message))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The client is gone: nothing more is read or written.
    fn end(&mut self) -> Option<Result<Incoming, ReadError>> {
        self.ended = true;
        self.conn.close_with(1006);
        None
    }

    /// Ends the connection after its session: the rest of a frame already begun, then
    /// (for a code other than 1006) `pusher:error` and the close frame, within
    /// `within` (the `close_timeout` setting). What else was queued is dropped: the
    /// connection is closing.
    pub async fn finish(mut self, code: Option<u16>, within: Duration) {
        let tail = self.rx.detach();
        if self.ended {
            return;
        }
        // Of what is unwritten, only the rest of a frame already begun still goes out.
        self.out.truncate(usize::from(
            self.sent > 0 || self.front_begun || self.unanswered,
        ));
        self.out.extend(tail);
        let last = wire::closing(code.unwrap_or(1000));
        if !last.is_empty() {
            self.out.push_back(last);
        }
        let flush = async {
            poll_fn(|cx| self.poll_write_out(cx)).await?;
            poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await?;
            // Read (and drop) what the client still sends until it closes too: closing a
            // socket with unread bytes makes the kernel answer with a reset, which can
            // destroy the close frame before the client reads it.
            loop {
                let got = poll_fn(|cx| {
                    // On the stack of the poll, not in the (long-lived) future.
                    let mut sink = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                    let mut read = ReadBuf::uninit(&mut sink);
                    Pin::new(&mut self.io)
                        .poll_read(cx, &mut read)
                        .map_ok(|()| read.filled().len())
                })
                .await?;
                if got == 0 {
                    return Ok::<_, io::Error>(());
                }
            }
        };
        if let Ok(Err(e)) = tokio::time::timeout(within, flush).await {
            tracing::debug!(error = %e, "closing write failed");
        }
    }
}

/// Keeps idle connections small: a burst's capacity is not held on to.
fn shrink<X>(q: &mut VecDeque<X>) {
    if q.capacity() > 64 {
        q.shrink_to(16);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Inbound for Socket<T> {
    async fn next(&mut self) -> Option<Result<Incoming, InboundError>> {
        let msg = poll_fn(|cx| self.poll_message(cx)).await?;
        // Mostly an over-long message; any broken frame ends the connection the same way.
        Some(msg.map_err(|e| InboundError {
            message: format!("WebSocket protocol error: {e}"),
            close_code: e.close_code(),
        }))
    }
}
