//! A receive request's response body: the session's queue, framed as
//! HTTP-fallback lines.
//!
//! A stream (`xhr_streaming`) stays open, sending `a[...]` lines as messages
//! arrive and `h` when idle; a poll (`xhr`) ends after its first line. Either
//! ends with the close lines when the session closes, or quietly when a newer
//! receive request takes the queue over.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::{framing, sessions::Attached};
use crate::{core::Outgoing, metrics::Metrics};

pub struct ReceiveBody {
    attached: Attached,
    /// Lines to send before the queue (the prelude, the open frame).
    first: VecDeque<Bytes>,
    /// A poll ends after one line; a stream does not.
    poll: bool,
    heartbeat: Duration,
    next_heartbeat: Pin<Box<Sleep>>,
    taken: VecDeque<Outgoing>,
    metrics: Arc<Metrics>,
    finished: bool,
}

impl ReceiveBody {
    pub fn new(
        attached: Attached,
        first: Vec<Bytes>,
        poll: bool,
        heartbeat: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            attached,
            first: first.into(),
            poll,
            heartbeat,
            next_heartbeat: Box::pin(tokio::time::sleep(heartbeat)),
            taken: VecDeque::new(),
            metrics,
            finished: false,
        }
    }

    /// A line to send; a poll ends with it.
    fn line(&mut self, bytes: Bytes) -> Poll<Option<Result<Bytes, Infallible>>> {
        self.finished = self.poll;
        self.next_heartbeat
            .as_mut()
            .reset(Instant::now() + self.heartbeat);
        Poll::Ready(Some(Ok(bytes)))
    }
}

impl Stream for ReceiveBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished || !this.attached.still_current(cx) {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.pop_front() {
            // The open frame is a poll's whole answer; a stream's prelude and open frame lead its lines.
            this.finished = this.poll && this.first.is_empty();
            return Poll::Ready(Some(Ok(first)));
        }
        match this.attached.receiver.poll_drain(cx, &mut this.taken) {
            Poll::Ready(Err(code)) => {
                this.finished = true;
                this.attached.session.close_delivered.notify_one();
                return Poll::Ready(Some(Ok(framing::closing(code))));
            }
            Poll::Ready(Ok(())) => {
                let framed = framing::messages(this.taken.iter());
                this.taken.clear();
                if this.taken.capacity() > 64 {
                    this.taken.shrink_to(16);
                }
                if let Some((line, count)) = framed {
                    this.metrics.messages_out.inc_by(count as u64);
                    this.metrics.bytes_out.inc_by(line.len() as u64);
                    return this.line(line);
                }
            }
            Poll::Pending => {}
        }
        match this.next_heartbeat.as_mut().poll(cx) {
            Poll::Ready(()) => this.line(Bytes::from_static(framing::HEARTBEAT)),
            Poll::Pending => Poll::Pending,
        }
    }
}
