//! A plain-TCP WebSocket's socket, shared between its session task and the
//! publishers that write to it directly.
//!
//! tokio's `TcpStream` can be read and written through `&self` (`try_read`,
//! `try_write`), from any thread, with readiness tracked by the reactor of the
//! worker that owns it. The session task reads and writes through [`SharedTcp`];
//! a publisher on any worker writes through [`Direct`] while the connection's
//! queue is idle (see [`crate::core::connection::DirectWriter`]), which saves
//! waking the task for every message.

use std::{
    io::{self, IoSlice},
    net::Shutdown,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::socket::frame;
use crate::{
    core::{
        connection::{DirectWriter, Leftover},
        Outgoing,
    },
    metrics::Metrics,
};

/// The task's side of the socket.
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // Zeroed only now that there is something to read.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: poll again, which registers for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(Shutdown::Write))
    }
}

/// The publishers' side: writes framed messages if the socket takes them now.
pub struct Direct {
    pub socket: Arc<TcpStream>,
    pub metrics: Arc<Metrics>,
}

/// Frames handed to one vectored write at most.
const MAX_IOV: usize = 16;

impl DirectWriter for Direct {
    fn write_now(&self, items: &[Outgoing]) -> Leftover {
        let mut left = Leftover::default();
        for chunk in items.chunks(MAX_IOV) {
            let frames: Vec<Bytes> = chunk.iter().map(frame).collect();
            let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
            // Full, or failing: the task meets the error when it writes what is left.
            let Ok(mut n) = self.socket.try_write_vectored(&slices) else {
                return left;
            };
            for f in &frames {
                if n >= f.len() {
                    n -= f.len();
                    self.metrics.messages_out.inc();
                    self.metrics.bytes_out.inc_by(f.len() as u64);
                    left.written += 1;
                    continue;
                }
                if n > 0 {
                    // Begun: counted now, its rest is written by the task.
                    self.metrics.messages_out.inc();
                    self.metrics.bytes_out.inc_by(n as u64);
                    left.tail = Some(f.slice(n..));
                }
                return left;
            }
        }
        left
    }
}
