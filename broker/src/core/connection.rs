//! A connection's send queue: the only way frames reach a client.
//!
//! Frames are queued already encoded as WebSocket frames ([`Bytes`], a shared
//! buffer: a broadcast encodes once and every subscriber's queue holds the same
//! bytes). The receiving end, [`Outbox`], is the HTTP response body of the
//! upgraded connection: actix's dispatcher polls it directly, takes every frame
//! queued since its last poll and writes them together, so frames that pile up
//! for one connection leave in one `write()` and no extra task sits between the
//! publisher and the socket.
//!
//! The queue is bounded. A connection whose queue is full cannot keep up; it is
//! closed with 4100 instead of being allowed to grow without limit. Its idle
//! cost is one small allocation: the queue allocates only when frames wait.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::{task::AtomicWaker, Stream};
use protocol::{ErrorCode, SocketId};
use tokio::sync::Notify;

use crate::{metrics::Metrics, ws::wire};

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Bytes>>,
    capacity: usize,
    /// Wakes the response body when frames arrive or a close is requested.
    body: AtomicWaker,
    /// A requested close code (0 = none); the first request wins.
    close: AtomicU16,
    /// Wakes the session task when a close is requested.
    close_notify: Notify,
    /// The response body was dropped: the client is gone.
    gone: AtomicBool,
}

/// The sending side, held by every channel the connection subscribes to.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub id: SocketId,
    shared: Arc<Shared>,
}

/// The receiving side: a stream of encoded frames, used as the response body.
pub struct Outbox {
    shared: Arc<Shared>,
    /// Frames taken from the queue in one swap, handed out one per poll.
    taken: VecDeque<Bytes>,
    metrics: Arc<Metrics>,
    finished: bool,
}

/// Creates a connection's queue holding at most `capacity` frames (broadcasts and replies alike).
pub fn queue(id: SocketId, capacity: usize, metrics: Arc<Metrics>) -> (ConnHandle, Outbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        capacity,
        body: AtomicWaker::new(),
        close: AtomicU16::new(0),
        close_notify: Notify::new(),
        gone: AtomicBool::new(false),
    });
    (ConnHandle { id, shared: shared.clone() }, Outbox { shared, taken: VecDeque::new(), metrics, finished: false })
}

impl ConnHandle {
    /// Queues a broadcast frame without waiting. Returns false if it was
    /// dropped: the connection is gone or closing, or too slow (and is now being closed).
    pub fn send(&self, frame: &Bytes) -> bool {
        self.push(frame.clone())
    }

    /// Queues a reply to the client's own request (subscription answers, pongs,
    /// errors). Replies share the one bounded queue with broadcasts: a client
    /// that keeps asking but never reads fills it like a slow subscriber and is
    /// closed with 4100, instead of growing the broker's memory with answers.
    pub fn send_direct(&self, frame: Bytes) -> bool {
        self.push(frame)
    }

    fn push(&self, frame: Bytes) -> bool {
        let s = &self.shared;
        if s.gone.load(Ordering::Relaxed) || s.close.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let was_empty = {
            let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= s.capacity {
                drop(q);
                self.close(ErrorCode::OverCapacity);
                return false;
            }
            let was_empty = q.is_empty();
            q.push_back(frame);
            was_empty
        };
        // The body drains everything at once, so only the first frame needs to wake it.
        if was_empty {
            s.body.wake();
        }
        true
    }

    /// Asks the connection to close with `code`: the client gets `pusher:error`
    /// with the code (when it is a Pusher code) and a close frame. The first request wins.
    pub fn close(&self, code: ErrorCode) {
        self.close_with(code.code());
    }

    /// Closes with any WebSocket close code (e.g. 1000, 1009).
    pub fn close_with(&self, code: u16) {
        let s = &self.shared;
        if s.close.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            s.body.wake();
            s.close_notify.notify_one();
        }
    }

    /// Resolves when someone asked this connection to close, with the code.
    pub async fn close_requested(&self) -> u16 {
        loop {
            let notified = self.shared.close_notify.notified();
            let code = self.shared.close.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            notified.await;
        }
    }

    /// The client went away (the response body was dropped).
    pub fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Acquire)
    }
}

impl Stream for Outbox {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let code = this.shared.close.load(Ordering::Acquire);
        if code != 0 {
            // Closing: what is still queued is dropped (a slow consumer would never
            // take it), then a last frame tells the client why.
            this.finished = true;
            this.taken.clear();
            this.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
            return Poll::Ready(Some(Ok(wire::closing(code))));
        }
        if let Some(frame) = this.taken.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        this.shared.body.register(cx.waker());
        {
            let mut q = this.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *q, &mut this.taken);
        }
        if this.taken.is_empty() {
            // A close may have been requested between the first check and the registration.
            if this.shared.close.load(Ordering::Acquire) != 0 {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        let bytes: usize = this.taken.iter().map(Bytes::len).sum();
        this.metrics.messages_out.inc_by(this.taken.len() as u64);
        this.metrics.bytes_out.inc_by(bytes as u64);
        // Keep idle connections small: do not hold on to a burst's capacity.
        if this.taken.capacity() > 64 && this.taken.len() <= 16 {
            this.taken.shrink_to(16);
        }
        Poll::Ready(this.taken.pop_front().map(Ok))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shared.gone.store(true, Ordering::Release);
        // The session may be waiting for a close; the client is gone, so end it.
        self.shared.close.compare_exchange(0, 1006, Ordering::AcqRel, Ordering::Acquire).ok();
        self.shared.close_notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn new(cap: usize) -> (ConnHandle, Outbox) {
        queue(SocketId::new(1, 1), cap, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_share_the_buffer() {
        let (h, mut out) = new(8);
        let a = Bytes::from_static(b"a");
        assert!(h.send(&a));
        assert!(h.send_direct(Bytes::from_static(b"b")));
        let first = out.next().await.unwrap().unwrap();
        assert_eq!(first.as_ptr(), a.as_ptr(), "the same bytes, not a copy");
        assert_eq!(&out.next().await.unwrap().unwrap()[..], b"b");
    }

    #[tokio::test]
    async fn a_full_queue_closes_with_4100_and_drops_what_waits() {
        let (h, mut out) = new(2);
        let f = Bytes::from_static(b"x");
        assert!(h.send(&f));
        assert!(h.send(&f));
        assert!(!h.send(&f));
        assert_eq!(h.close_requested().await, 4100);
        let last = out.next().await.unwrap().unwrap();
        assert!(last.windows(4).any(|w| w == b"4100"), "pusher:error 4100 then the close frame");
        assert!(out.next().await.is_none());
        h.close(ErrorCode::ReconnectImmediately);
        assert_eq!(h.close_requested().await, 4100, "the first code wins");
    }

    #[tokio::test]
    async fn replies_count_against_the_same_bound() {
        let (h, mut out) = new(3);
        assert!(h.send(&Bytes::from_static(b"broadcast")));
        assert!(h.send_direct(Bytes::from_static(b"pong")));
        assert!(h.send_direct(Bytes::from_static(b"pong")));
        assert!(!h.send_direct(Bytes::from_static(b"pong")), "the fourth frame does not fit");
        assert_eq!(h.close_requested().await, 4100);
        let last = out.next().await.unwrap().unwrap();
        assert!(last.windows(4).any(|w| w == b"4100"));
    }

    #[tokio::test]
    async fn a_dropped_body_makes_sends_fail_and_ends_the_session() {
        let (h, out) = new(2);
        drop(out);
        assert!(!h.send(&Bytes::from_static(b"x")));
        assert!(h.is_gone());
        assert_eq!(h.close_requested().await, 1006);
    }
}
