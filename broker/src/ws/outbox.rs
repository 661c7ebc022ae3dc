//! The upgraded WebSocket response's body: the connection's queue, framed.
//!
//! actix's dispatcher polls this stream directly; each poll takes every message
//! queued since the last one, frames them (a broadcast's framing is made once
//! and shared by all its subscribers) and hands them out, so messages that pile
//! up for one connection leave in one `write()` and no extra task sits between
//! the publisher and the socket.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::Stream;

use super::wire;
use crate::{
    core::connection::{Framing, Outgoing, Receiver},
    metrics::Metrics,
};

pub struct Outbox {
    rx: Receiver,
    /// Messages taken from the queue in one swap.
    taken: VecDeque<Outgoing>,
    /// Their frames, handed out one per poll.
    frames: VecDeque<Bytes>,
    metrics: Arc<Metrics>,
    finished: bool,
}

impl Outbox {
    pub fn new(rx: Receiver, metrics: Arc<Metrics>) -> Self {
        Self {
            rx,
            taken: VecDeque::new(),
            frames: VecDeque::new(),
            metrics,
            finished: false,
        }
    }
}

impl Stream for Outbox {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(code) = this.rx.close_code() {
            // Closing: what is still waiting is dropped, then a last frame tells the client why.
            this.finished = true;
            this.frames.clear();
            return Poll::Ready(Some(Ok(wire::closing(code))));
        }
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.rx.poll_drain(cx, &mut this.taken) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(code)) => {
                this.finished = true;
                Poll::Ready(Some(Ok(wire::closing(code))))
            }
            Poll::Ready(Ok(())) => {
                let mut bytes = 0;
                for item in this.taken.drain(..) {
                    let frame = match item {
                        Outgoing::Message(m) => m.framed(Framing::WebSocket, wire::text),
                        Outgoing::Raw(b) => b,
                    };
                    bytes += frame.len();
                    this.frames.push_back(frame);
                }
                this.metrics.messages_out.inc_by(this.frames.len() as u64);
                this.metrics.bytes_out.inc_by(bytes as u64);
                // Keep idle connections small: do not hold on to a burst's capacity.
                for q in [this.taken.capacity(), this.frames.capacity()] {
                    if q > 64 {
                        this.taken.shrink_to(16);
                        this.frames.shrink_to(16);
                        break;
                    }
                }
                Poll::Ready(this.frames.pop_front().map(Ok))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::connection::{queue, Message};
    use futures_util::StreamExt;
    use protocol::SocketId;

    #[tokio::test]
    async fn frames_a_broadcast_once_and_closes_with_the_code() {
        let (h, rx) = queue(SocketId::new(1, 1), 8);
        let (h2, rx2) = queue(SocketId::new(1, 2), 8);
        let mut out = Outbox::new(rx, Arc::new(Metrics::new()));
        let mut out2 = Outbox::new(rx2, Arc::new(Metrics::new()));
        let m = Message::from("hello");
        h.send(&m);
        h2.send(&m);
        let a = out.next().await.unwrap().unwrap();
        let b = out2.next().await.unwrap().unwrap();
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "one framing shared by both connections"
        );
        assert_eq!(&a[2..], b"hello");
        h.close(protocol::ErrorCode::OverCapacity);
        let last = out.next().await.unwrap().unwrap();
        assert!(
            last.windows(4).any(|w| w == b"4100"),
            "pusher:error 4100 then the close frame"
        );
        assert!(out.next().await.is_none());
    }
}
