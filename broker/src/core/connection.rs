//! The two ends of a connection's send queue.
//!
//! Broadcasts push already-serialized frames ([`ByteString`], a shared buffer:
//! cloning it is a reference-count increment) into a bounded queue that the
//! connection's own task drains into the socket. A connection whose queue is
//! full cannot keep up; it is told to close with 4100 rather than being allowed
//! to grow without bound.

use std::sync::{
    atomic::{AtomicU16, Ordering},
    Arc,
};

use bytestring::ByteString;
use protocol::{ErrorCode, SocketId};
use tokio::sync::{mpsc, Notify};

/// Shared between the handle and the outbox: a requested close code (0 = none).
#[derive(Debug, Default)]
struct CloseSignal {
    code: AtomicU16,
    notify: Notify,
}

/// The sending side, held by every channel the connection subscribes to.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub id: SocketId,
    tx: mpsc::Sender<ByteString>,
    close: Arc<CloseSignal>,
}

/// The receiving side, owned by the connection's task.
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::Receiver<ByteString>,
    close: Arc<CloseSignal>,
}

/// Creates a connection's queue holding at most `capacity` frames.
pub fn queue(id: SocketId, capacity: usize) -> (ConnHandle, Outbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let close = Arc::new(CloseSignal::default());
    (ConnHandle { id, tx, close: close.clone() }, Outbox { rx, close })
}

impl ConnHandle {
    /// Queues a frame without waiting. Returns false if it was dropped: the
    /// connection is gone, or too slow (and is now being closed).
    pub fn send(&self, frame: &ByteString) -> bool {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(ErrorCode::OverCapacity);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the connection to close with `code`. The first request wins.
    pub fn close(&self, code: ErrorCode) {
        if self.close.code.compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.close.notify.notify_one();
        }
    }
}

impl Outbox {
    /// The next queued frame; `None` once every handle is dropped.
    pub async fn recv(&mut self) -> Option<ByteString> {
        self.rx.recv().await
    }

    /// The next frame if one is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<ByteString> {
        self.rx.try_recv().ok()
    }

    /// A watch on close requests that can be awaited while the queue is read.
    pub fn close_watch(&self) -> CloseWatch {
        CloseWatch(self.close.clone())
    }
}

/// Resolves close requests made through any [`ConnHandle`].
#[derive(Debug)]
pub struct CloseWatch(Arc<CloseSignal>);

impl CloseWatch {
    /// Resolves when someone asked this connection to close, with the code.
    pub async fn requested(&self) -> u16 {
        loop {
            let code = self.0.code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            self.0.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_requests_over_capacity_close() {
        let (handle, mut outbox) = queue(SocketId::new(1, 1), 2);
        let f = ByteString::from_static("x");
        assert!(handle.send(&f));
        assert!(handle.send(&f));
        assert!(!handle.send(&f));
        assert_eq!(outbox.close_watch().requested().await, 4100);
        // A later request does not change the first code.
        handle.close(ErrorCode::ReconnectImmediately);
        assert_eq!(outbox.close_watch().requested().await, 4100);
        assert_eq!(outbox.recv().await.as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn dropped_outbox_makes_send_fail_quietly() {
        let (handle, outbox) = queue(SocketId::new(1, 2), 2);
        drop(outbox);
        assert!(!handle.send(&ByteString::from_static("x")));
    }
}
