//! A connection's send queue: the only way messages reach a client, whatever the
//! transport.
//!
//! Messages are queued as [`Message`]s: JSON text shared by every connection a
//! broadcast goes to, with room for the transport's framing of it, so a broadcast
//! is framed once however many subscribers get it. The transport drains the queue
//! through [`Receiver::poll_drain`], taking everything queued since its last look
//! in one step (the WebSocket transport writes it in one `write()`).
//!
//! The queue is bounded. A connection whose queue is full cannot keep up; it is
//! closed with 4100 instead of being allowed to grow without limit. Its idle cost
//! is one small allocation: the queue allocates only when messages wait.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, OnceLock,
    },
    task::{Context, Poll},
};

use parking_lot::Mutex;

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use protocol::{history::Position, ChannelName, ErrorCode, SocketId};
use tokio::sync::Notify;

use super::tracking::{Route, Tracking};

/// One message for clients: its JSON text, and the transport's framing of it,
/// made on first use and then shared.
#[derive(Clone, Debug)]
pub struct Message(Arc<MessageInner>);

#[derive(Debug)]
struct MessageInner {
    text: ByteString,
    /// One framing per [`Framing`].
    framed: [OnceLock<Bytes>; 2],
    /// Set on a kept event: where it sits in its channel's history.
    kept: Option<Kept>,
}

/// A kept event's place in its channel's history, and the `pusher_internal:position`
/// frame that precedes it for subscriptions that asked for history.
#[derive(Debug)]
pub struct Kept {
    pub channel: ChannelName,
    pub position: Position,
    marker: Message,
}

/// The ways a transport frames a message, each cached once per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A WebSocket text frame.
    WebSocket,
    /// A JSON string, as HTTP-fallback `a[...]` frames list messages.
    JsonString,
}

impl Message {
    pub fn new(text: impl Into<ByteString>) -> Self {
        Self(Arc::new(MessageInner {
            text: text.into(),
            framed: [OnceLock::new(), OnceLock::new()],
            kept: None,
        }))
    }

    /// A kept event: the same text, plus its position (sent only to subscriptions that asked).
    pub fn kept(text: impl Into<ByteString>, channel: &ChannelName, position: Position) -> Self {
        let marker = Message::new(protocol::history::position_frame(
            channel.as_str(),
            position,
        ));
        Self(Arc::new(MessageInner {
            text: text.into(),
            framed: [OnceLock::new(), OnceLock::new()],
            kept: Some(Kept {
                channel: channel.clone(),
                position,
                marker,
            }),
        }))
    }

    /// Where a kept event sits in its channel's history.
    pub fn kept_at(&self) -> Option<&Kept> {
        self.0.kept.as_ref()
    }

    pub fn text(&self) -> &str {
        &self.0.text
    }

    /// The message framed by `frame` as `framing`; `frame` runs once per message
    /// and framing (not once per connection), so subscribers on different
    /// transports share their framings too.
    pub fn framed(&self, framing: Framing, frame: impl FnOnce(&str) -> Bytes) -> Bytes {
        self.0.framed[framing as usize]
            .get_or_init(|| frame(&self.0.text))
            .clone()
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<&'static str> for Message {
    fn from(text: &'static str) -> Self {
        Self::new(ByteString::from_static(text))
    }
}

/// What waits in a connection's queue.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A Pusher message (JSON text).
    Message(Message),
    /// Bytes the transport made itself and understands (a WebSocket pong); other transports skip them.
    Raw(Bytes),
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Outgoing>>,
    capacity: usize,
    /// Wakes the transport when messages arrive or a close is requested.
    waker: AtomicWaker,
    /// A requested close code (0 = none); the first request wins.
    close: AtomicU16,
    /// Wakes the session task when a close is requested.
    close_notify: Notify,
    /// The transport let go of the receiver: the client is gone.
    gone: AtomicBool,
    /// Set once a subscription asked for history; until then kept events skip `tracking`.
    tracks: AtomicBool,
    /// Subscriptions that asked for history (see [`crate::core::tracking`]). Locked
    /// before `queue` whenever both are.
    tracking: Mutex<Tracking<Message>>,
}

/// The sending side, held by every channel the connection subscribes to.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub id: SocketId,
    shared: Arc<Shared>,
}

/// The receiving side, held by the transport.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

/// Creates a connection's queue holding at most `capacity` messages (broadcasts and replies alike).
pub fn queue(id: SocketId, capacity: usize) -> (ConnHandle, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        capacity,
        waker: AtomicWaker::new(),
        close: AtomicU16::new(0),
        close_notify: Notify::new(),
        gone: AtomicBool::new(false),
        tracks: AtomicBool::new(false),
        tracking: Mutex::new(Tracking::default()),
    });
    (
        ConnHandle {
            id,
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl ConnHandle {
    /// Queues a broadcast message without waiting. Returns false if it was
    /// dropped: the connection is gone or closing, or too slow (and is now being closed).
    pub fn send(&self, message: &Message) -> bool {
        match message.kept_at() {
            Some(kept) if self.shared.tracks.load(Ordering::Acquire) => {
                self.send_tracked(kept, message)
            }
            _ => self.push(Outgoing::Message(message.clone())),
        }
    }

    fn send_tracked(&self, kept: &Kept, message: &Message) -> bool {
        let s = &self.shared;
        let mut tracking = self.tracking();
        match tracking.route(&kept.channel, kept.position, message, s.capacity) {
            Ok(Route::Plain) => self.push(Outgoing::Message(message.clone())),
            Ok(Route::WithPosition) => self.push_all(
                [kept.marker.clone(), message.clone()].map(Outgoing::Message),
                true,
            ),
            Ok(Route::Held | Route::Duplicate) => true,
            Err(_) => {
                drop(tracking);
                self.close(ErrorCode::OverCapacity);
                false
            }
        }
    }

    fn tracking(&self) -> parking_lot::MutexGuard<'_, Tracking<Message>> {
        self.shared.tracking.lock()
    }

    /// Starts holding `channel`'s kept events for a subscription that asked for
    /// history; call before the subscription is registered, then [`Self::replay`].
    pub fn hold(&self, channel: &ChannelName) {
        self.tracking().hold(channel);
        self.shared.tracks.store(true, Ordering::Release);
    }

    /// Queues a held subscription's `pusher_internal:recovery` notice and replay,
    /// then what was held meanwhile (each event once, in order), and goes live:
    /// later kept events come with their positions. `last` is where the replay
    /// leaves the client. A replay is bounded by the app's `max_events`, not by
    /// the send queue (it is what the client asked for, once).
    pub fn replay(
        &self,
        channel: &ChannelName,
        notice: String,
        replayed: Vec<Message>,
        last: Position,
    ) -> bool {
        let mut tracking = self.tracking();
        let held = tracking.release(channel, last, |m| {
            m.kept_at().map_or(Position::MAX, |k| k.position)
        });
        let items = std::iter::once(Outgoing::from(notice)).chain(
            replayed
                .into_iter()
                .chain(held)
                .flat_map(|m| {
                    let marker = m.kept_at().map(|k| k.marker.clone());
                    marker.into_iter().chain(std::iter::once(m))
                })
                .map(Outgoing::Message),
        );
        self.push_all(items, false)
    }

    /// Stops tracking `channel`: what was held goes out as plain frames (after `notice`, if any).
    pub fn untrack(&self, channel: &ChannelName, notice: Option<String>) -> bool {
        let mut tracking = self.tracking();
        let held = tracking.forget(channel);
        let items = notice
            .map(Outgoing::from)
            .into_iter()
            .chain(held.into_iter().map(Outgoing::Message));
        self.push_all(items, false)
    }

    /// Queues a reply to the client's own request (subscription answers, pongs,
    /// errors). Replies share the one bounded queue with broadcasts: a client
    /// that keeps asking but never reads fills it like a slow subscriber and is
    /// closed with 4100, instead of growing the broker's memory with answers.
    pub fn send_direct(&self, item: impl Into<Outgoing>) -> bool {
        self.push(item.into())
    }

    /// Queues several items in one step (nothing can come between them); with
    /// `bounded` the queue's capacity applies to the whole group.
    fn push_all(&self, items: impl IntoIterator<Item = Outgoing>, bounded: bool) -> bool {
        let s = &self.shared;
        if s.gone.load(Ordering::Relaxed) || s.close.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let was_empty = {
            let mut q = s.queue.lock();
            let was_empty = q.is_empty();
            let before = q.len();
            q.extend(items);
            if bounded && q.len() > s.capacity {
                q.truncate(before);
                drop(q);
                self.close(ErrorCode::OverCapacity);
                return false;
            }
            was_empty && q.len() > before
        };
        if was_empty {
            s.waker.wake();
        }
        true
    }

    fn push(&self, item: Outgoing) -> bool {
        let s = &self.shared;
        if s.gone.load(Ordering::Relaxed) || s.close.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let was_empty = {
            let mut q = s.queue.lock();
            if q.len() >= s.capacity {
                drop(q);
                self.close(ErrorCode::OverCapacity);
                return false;
            }
            let was_empty = q.is_empty();
            q.push_back(item);
            was_empty
        };
        // The transport drains everything at once, so only the first message needs to wake it.
        if was_empty {
            s.waker.wake();
        }
        true
    }

    /// Asks the connection to close with `code`: the client gets `pusher:error`
    /// with the code (when it is a Pusher code) and a close. The first request wins.
    pub fn close(&self, code: ErrorCode) {
        self.close_with(code.code());
    }

    /// Closes with any WebSocket close code (e.g. 1000, 1009).
    pub fn close_with(&self, code: u16) {
        let s = &self.shared;
        if s.close
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            s.waker.wake();
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

    /// The close code requested so far (1006 once the client vanished), if any.
    pub fn close_code(&self) -> Option<u16> {
        Some(self.shared.close.load(Ordering::Acquire)).filter(|&c| c != 0)
    }

    /// The client went away (the transport let go of the receiver).
    pub fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Acquire)
    }
}

impl From<Message> for Outgoing {
    fn from(m: Message) -> Self {
        Self::Message(m)
    }
}

impl From<String> for Outgoing {
    fn from(text: String) -> Self {
        Self::Message(Message::new(text))
    }
}

impl From<&'static str> for Outgoing {
    fn from(text: &'static str) -> Self {
        Self::Message(Message::from(text))
    }
}

impl Receiver {
    /// The close code someone requested, if any.
    pub fn close_code(&self) -> Option<u16> {
        match self.shared.close.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Moves everything queued into `batch` (in order). `Ready(Ok(()))` when it
    /// took something, `Ready(Err(code))` when the connection is closing (what
    /// was queued is dropped: a slow consumer would never take it), `Pending`
    /// when nothing waits (the task is woken when something arrives).
    pub fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Outgoing>,
    ) -> Poll<Result<(), u16>> {
        if let Some(code) = self.close_code() {
            self.shared.queue.lock().clear();
            return Poll::Ready(Err(code));
        }
        self.shared.waker.register(cx.waker());
        {
            let mut q = self.shared.queue.lock();
            if batch.is_empty() {
                // Swap rather than copy: the queue keeps the (empty) batch's buffer.
                std::mem::swap(&mut *q, batch);
            } else {
                batch.extend(q.drain(..));
            }
        }
        if !batch.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // A close may have been requested between the first check and the registration.
        if let Some(code) = self.close_code() {
            return Poll::Ready(Err(code));
        }
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.gone.store(true, Ordering::Release);
        // The session may be waiting for a close; the client is gone, so end it.
        self.shared
            .close
            .compare_exchange(0, 1006, Ordering::AcqRel, Ordering::Acquire)
            .ok();
        self.shared.close_notify.notify_one();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures_util::future::poll_fn;

    /// Everything queued for a connection right now, as text (`Raw` as lossy text).
    pub(crate) fn queued(rx: &mut Receiver) -> Vec<String> {
        let mut batch = VecDeque::new();
        let waker = futures_util::task::noop_waker();
        let _ = rx.poll_drain(&mut Context::from_waker(&waker), &mut batch);
        batch
            .into_iter()
            .map(|o| match o {
                Outgoing::Message(m) => m.text().to_owned(),
                Outgoing::Raw(b) => String::from_utf8_lossy(&b).into_owned(),
            })
            .collect()
    }

    fn new(cap: usize) -> (ConnHandle, Receiver) {
        queue(SocketId::new(1, 1), cap)
    }

    #[tokio::test]
    async fn messages_come_out_in_order_and_share_the_buffer() {
        let (h, mut rx) = new(8);
        let a = Message::from("a");
        assert!(h.send(&a));
        assert!(h.send_direct("b"));
        let mut batch = VecDeque::new();
        poll_fn(|cx| rx.poll_drain(cx, &mut batch)).await.unwrap();
        let Outgoing::Message(first) = &batch[0] else {
            panic!("a message")
        };
        assert!(Arc::ptr_eq(&first.0, &a.0), "the same message, not a copy");
        let framed = first.framed(Framing::WebSocket, |t| Bytes::from(format!("<{t}>")));
        assert_eq!(&framed[..], b"<a>");
        assert_eq!(
            a.framed(Framing::WebSocket, |_| unreachable!("framed once"))
                .as_ptr(),
            framed.as_ptr()
        );
        assert_eq!(
            &a.framed(Framing::JsonString, |t| Bytes::from(format!("'{t}'")))[..],
            b"'a'",
            "each framing its own"
        );
        assert!(matches!(&batch[1], Outgoing::Message(m) if m.text() == "b"));
    }

    #[tokio::test]
    async fn a_full_queue_closes_with_4100_and_drops_what_waits() {
        let (h, mut rx) = new(2);
        let f = Message::from("x");
        assert!(h.send(&f));
        assert!(h.send(&f));
        assert!(!h.send(&f));
        assert_eq!(h.close_requested().await, 4100);
        let mut batch = VecDeque::new();
        assert_eq!(poll_fn(|cx| rx.poll_drain(cx, &mut batch)).await, Err(4100));
        assert!(batch.is_empty());
        h.close(ErrorCode::ReconnectImmediately);
        assert_eq!(h.close_requested().await, 4100, "the first code wins");
    }

    #[tokio::test]
    async fn replies_count_against_the_same_bound() {
        let (h, mut rx) = new(3);
        assert!(h.send(&Message::from("broadcast")));
        assert!(h.send_direct("pong"));
        assert!(h.send_direct(Outgoing::Raw(Bytes::from_static(b"ws pong"))));
        assert!(!h.send_direct("pong"), "the fourth message does not fit");
        assert_eq!(h.close_requested().await, 4100);
        let mut batch = VecDeque::new();
        assert_eq!(poll_fn(|cx| rx.poll_drain(cx, &mut batch)).await, Err(4100));
    }

    #[tokio::test]
    async fn a_dropped_receiver_makes_sends_fail_and_ends_the_session() {
        let (h, rx) = new(2);
        drop(rx);
        assert!(!h.send(&Message::from("x")));
        assert!(h.is_gone());
        assert_eq!(h.close_requested().await, 1006);
    }
}
