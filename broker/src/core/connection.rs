//! A connection's send queue: the only way messages reach a client, whatever the
//! transport.
//!
//! Messages are queued as [`Message`]s: JSON text shared by every connection a
//! broadcast goes to, with room for the transport's framing of it, so a broadcast
//! is framed once however many subscribers get it. The transport drains the queue
//! through [`Receiver::poll_drain`], taking everything queued since its last look
//! in one step (the WebSocket transport writes it in one `write()`).
//!
//! A transport that owns a socket it can write from any thread (a plain-TCP
//! WebSocket) attaches a [`DirectWriter`]: a message queued while nothing waits
//! is then written at once by whoever queues it, under the queue's lock, instead
//! of waking the connection's task to do it. Only what the socket cannot take at
//! once waits in the queue. The lock keeps every write in queue order.
//!
//! The queue is bounded. A connection whose queue is full cannot keep up; it is
//! closed with 4100 instead of being allowed to grow without limit. Its idle cost
//! is one small allocation: the queue allocates only when messages wait.

use std::{
    collections::VecDeque,
    fmt,
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

/// How a broadcast reaches a connection whose queue is idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Written at once by whoever sends it, when the transport allows
    /// ([`DirectWriter`]): no wake-up of the connection's task.
    Now,
    /// Queued for the connection's task, which writes whatever has piled up by then
    /// in one go: cheaper per message while the workers are busy anyway.
    Queued,
}

/// What waits in a connection's queue.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A Pusher message (JSON text).
    Message(Message),
    /// Bytes the transport made itself and understands (a WebSocket pong); other transports skip them.
    Raw(Bytes),
}

/// Writes messages to the client's socket without waiting, from whichever thread
/// queues them (see the module docs). Called with the connection's queue locked and
/// empty, and the transport holding nothing unwritten.
pub trait DirectWriter: Send + Sync {
    /// Writes as much of `items`, in order, as the socket takes now.
    fn write_now(&self, items: &[Outgoing]) -> Leftover;
}

/// What a direct write could not write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftover {
    /// Items written whole, from the first.
    pub written: usize,
    /// The unwritten end of the next item, when the socket took only part of it.
    pub tail: Option<Bytes>,
}

/// What waits for the client, and who may write it.
#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    /// The unwritten end of a frame a direct write began. It goes out first, even
    /// when closing (the client would otherwise see half a frame).
    tail: Option<Bytes>,
    /// The transport took items it has not finished writing: a direct write now
    /// would overtake them.
    in_flight: bool,
    direct: Option<Box<dyn DirectWriter>>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("items", &self.items.len())
            .field("tail", &self.tail.as_ref().map(Bytes::len))
            .field("in_flight", &self.in_flight)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

impl Queue {
    /// Nothing waits and the transport holds nothing: a new message may be written at once.
    fn idle(&self) -> bool {
        self.items.is_empty() && self.tail.is_none() && !self.in_flight
    }

    /// Takes `items` for the client: written at once when nothing waits, `how` allows
    /// it and the transport can (what the socket does not take is queued: the rest of
    /// a begun item as the tail, then the items not begun), queued otherwise. True when
    /// the queue stopped being idle, so the transport must be woken.
    fn offer<I>(&mut self, items: I, how: Write) -> bool
    where
        I: AsRef<[Outgoing]> + IntoIterator<Item = Outgoing>,
    {
        let was_idle = self.idle();
        let left = match &self.direct {
            Some(direct) if was_idle && how == Write::Now => direct.write_now(items.as_ref()),
            _ => Leftover::default(),
        };
        let mut rest = items.into_iter().skip(left.written);
        if let Some(tail) = left.tail {
            rest.next();
            self.tail = Some(tail);
        }
        self.items.extend(rest);
        was_idle && !self.idle()
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
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
        queue: Mutex::new(Queue::default()),
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
        self.send_with(message, Write::Now)
    }

    /// [`Self::send`], saying how the message should reach an idle socket.
    pub fn send_with(&self, message: &Message, how: Write) -> bool {
        match message.kept_at() {
            Some(kept) if self.shared.tracks.load(Ordering::Acquire) => {
                self.send_tracked(kept, message, how)
            }
            _ => self.push(Outgoing::Message(message.clone()), how),
        }
    }

    fn send_tracked(&self, kept: &Kept, message: &Message, how: Write) -> bool {
        let s = &self.shared;
        let mut tracking = self.tracking();
        match tracking.route(&kept.channel, kept.position, message, s.capacity) {
            Ok(Route::Plain) => self.push(Outgoing::Message(message.clone()), how),
            Ok(Route::WithPosition) => self.push_all(
                [kept.marker.clone(), message.clone()].map(Outgoing::Message),
                true,
                how,
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
        self.push_all(items, false, Write::Now)
    }

    /// Stops tracking `channel`: what was held goes out as plain frames (after `notice`, if any).
    pub fn untrack(&self, channel: &ChannelName, notice: Option<String>) -> bool {
        let mut tracking = self.tracking();
        let held = tracking.forget(channel);
        let items = notice
            .map(Outgoing::from)
            .into_iter()
            .chain(held.into_iter().map(Outgoing::Message));
        self.push_all(items, false, Write::Now)
    }

    /// Queues a reply to the client's own request (subscription answers, pongs,
    /// errors). Replies share the one bounded queue with broadcasts: a client
    /// that keeps asking but never reads fills it like a slow subscriber and is
    /// closed with 4100, instead of growing the broker's memory with answers.
    pub fn send_direct(&self, item: impl Into<Outgoing>) -> bool {
        self.push(item.into(), Write::Now)
    }

    /// Queues several items in one step (nothing can come between them); with
    /// `bounded` the queue's capacity applies to the whole group.
    fn push_all(
        &self,
        items: impl IntoIterator<Item = Outgoing>,
        bounded: bool,
        how: Write,
    ) -> bool {
        let s = &self.shared;
        if s.gone.load(Ordering::Relaxed) || s.close.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let wake = {
            let mut q = s.queue.lock();
            let before = q.items.len();
            let wake = q.offer(items.into_iter().collect::<Vec<_>>(), how);
            if bounded && q.items.len() > s.capacity {
                q.items.truncate(before);
                drop(q);
                self.close(ErrorCode::OverCapacity);
                return false;
            }
            wake
        };
        if wake {
            s.waker.wake();
        }
        true
    }

    fn push(&self, item: Outgoing, how: Write) -> bool {
        let s = &self.shared;
        if s.gone.load(Ordering::Relaxed) || s.close.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let wake = {
            let mut q = s.queue.lock();
            if q.items.len() >= s.capacity {
                drop(q);
                self.close(ErrorCode::OverCapacity);
                return false;
            }
            q.offer([item], how)
        };
        // The transport drains everything at once, so only the first message needs to wake it.
        if wake {
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
        self.poll_take(cx, batch, false).map_ok(drop)
    }

    /// [`Self::poll_drain`] for a transport with a [`DirectWriter`]: `holding` says it
    /// still has unwritten items of its own, so direct writes must wait until it has
    /// written those and what this takes. `Ready(Ok(true))` when the batch starts with
    /// the rest of a frame a direct write began (it must not be dropped on a close).
    pub fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Outgoing>,
        holding: bool,
    ) -> Poll<Result<bool, u16>> {
        if let Some(code) = self.close_code() {
            self.shared.queue.lock().items.clear();
            return Poll::Ready(Err(code));
        }
        self.shared.waker.register(cx.waker());
        let begun = {
            let mut q = self.shared.queue.lock();
            let tail = q.tail.take();
            let begun = tail.is_some();
            batch.extend(tail.map(Outgoing::Raw));
            if batch.is_empty() {
                // Swap rather than copy: the queue keeps the (empty) batch's buffer.
                std::mem::swap(&mut q.items, batch);
            } else {
                batch.extend(q.items.drain(..));
            }
            q.in_flight = holding || !batch.is_empty();
            begun
        };
        if !batch.is_empty() {
            return Poll::Ready(Ok(begun));
        }
        // A close may have been requested between the first check and the registration.
        if let Some(code) = self.close_code() {
            return Poll::Ready(Err(code));
        }
        Poll::Pending
    }
}

impl Receiver {
    /// Lets queued messages be written directly by `writer` from now on. With
    /// `holding`, the transport has bytes of its own to write first (direct writes
    /// start once it has taken and written everything).
    pub fn attach(&mut self, writer: Box<dyn DirectWriter>, holding: bool) {
        let mut q = self.shared.queue.lock();
        q.direct = Some(writer);
        q.in_flight = holding;
    }

    /// Ends direct writes (no writer runs after this returns); returns the rest of a
    /// frame a direct write began, which must go out before anything else.
    pub fn detach(&mut self) -> Option<Bytes> {
        let mut q = self.shared.queue.lock();
        q.direct = None;
        q.tail.take()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.queue.lock().direct = None;
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

    /// A socket that takes up to `room` bytes per write and records what it took.
    #[derive(Clone, Default)]
    pub(crate) struct FakeSocket {
        pub(crate) room: Arc<Mutex<usize>>,
        pub(crate) took: Arc<Mutex<Vec<u8>>>,
    }

    impl DirectWriter for FakeSocket {
        fn write_now(&self, items: &[Outgoing]) -> Leftover {
            let mut room = self.room.lock();
            for (written, item) in items.iter().enumerate() {
                let bytes = match item {
                    Outgoing::Message(m) => Bytes::copy_from_slice(m.text().as_bytes()),
                    Outgoing::Raw(b) => b.clone(),
                };
                let n = bytes.len().min(*room);
                *room -= n;
                self.took.lock().extend_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    let tail = (n > 0).then(|| bytes.slice(n..));
                    return Leftover { written, tail };
                }
            }
            Leftover {
                written: items.len(),
                tail: None,
            }
        }
    }

    fn take(rx: &mut Receiver, holding: bool) -> Poll<Result<Vec<String>, u16>> {
        let mut batch = VecDeque::new();
        let waker = futures_util::task::noop_waker();
        rx.poll_take(&mut Context::from_waker(&waker), &mut batch, holding)
            .map_ok(|_| {
                batch
                    .into_iter()
                    .map(|o| match o {
                        Outgoing::Message(m) => m.text().to_owned(),
                        Outgoing::Raw(b) => format!("raw:{}", String::from_utf8_lossy(&b)),
                    })
                    .collect()
            })
    }

    #[test]
    fn an_idle_queue_writes_directly_and_keeps_order_when_the_socket_fills() {
        let (h, mut rx) = new(8);
        let socket = FakeSocket::default();
        *socket.room.lock() = 5;
        rx.attach(Box::new(socket.clone()), false);
        assert!(h.send(&Message::from("abc")));
        assert_eq!(&socket.took.lock()[..], b"abc", "written at once");
        assert!(take(&mut rx, false).is_pending(), "nothing queued");
        // Two bytes of room left: the next message is cut, its rest waits as the tail,
        // and everything after it queues behind the tail instead of being written.
        assert!(h.send(&Message::from("defg")));
        assert!(h.send(&Message::from("hij")));
        assert_eq!(&socket.took.lock()[..], b"abcde");
        assert_eq!(
            take(&mut rx, false),
            Poll::Ready(Ok(vec!["raw:fg".to_owned(), "hij".to_owned()]))
        );
        // The transport holds what it took: new messages still queue.
        *socket.room.lock() = 100;
        assert!(h.send(&Message::from("k")));
        assert_eq!(&socket.took.lock()[..], b"abcde");
        assert_eq!(take(&mut rx, false), Poll::Ready(Ok(vec!["k".to_owned()])));
        // Written and nothing left: direct writes resume.
        assert!(take(&mut rx, false).is_pending());
        assert!(h.send(&Message::from("l")));
        assert_eq!(&socket.took.lock()[..], b"abcdel");
    }

    #[test]
    fn a_transport_holding_its_own_bytes_comes_first() {
        let (h, mut rx) = new(8);
        let socket = FakeSocket::default();
        *socket.room.lock() = 100;
        rx.attach(Box::new(socket.clone()), true);
        assert!(h.send_direct("established"));
        assert!(
            socket.took.lock().is_empty(),
            "queued behind the handshake's answer"
        );
        assert_eq!(
            take(&mut rx, true),
            Poll::Ready(Ok(vec!["established".to_owned()]))
        );
        assert!(take(&mut rx, false).is_pending());
        assert!(h.send_direct("pong"));
        assert_eq!(&socket.took.lock()[..], b"pong");
    }

    #[test]
    fn closing_drops_what_waits_but_not_the_rest_of_a_begun_frame() {
        let (h, mut rx) = new(8);
        let socket = FakeSocket::default();
        *socket.room.lock() = 2;
        rx.attach(Box::new(socket.clone()), false);
        assert!(h.send(&Message::from("abcd")));
        assert!(h.send(&Message::from("queued")));
        h.close(ErrorCode::OverCapacity);
        assert_eq!(take(&mut rx, false), Poll::Ready(Err(4100)));
        assert_eq!(rx.detach(), Some(Bytes::from_static(b"cd")));
        *socket.room.lock() = 100;
        assert!(!h.send(&Message::from("late")));
        assert_eq!(
            &socket.took.lock()[..],
            b"ab",
            "no direct write after a close"
        );
    }

    #[test]
    fn a_full_queue_still_closes_with_4100_when_writing_directly() {
        let (h, mut rx) = new(2);
        let socket = FakeSocket::default();
        rx.attach(Box::new(socket), false);
        // The socket takes nothing: two messages fill the queue, the third is one too many.
        assert!(h.send(&Message::from("a")));
        assert!(h.send(&Message::from("b")));
        assert!(!h.send(&Message::from("c")));
        assert_eq!(h.close_code(), Some(4100));
    }

    #[test]
    fn a_group_is_written_directly_in_one_go_and_its_rest_waits_in_order() {
        let (h, mut rx) = new(8);
        let socket = FakeSocket::default();
        *socket.room.lock() = 7;
        rx.attach(Box::new(socket.clone()), false);
        assert!(h.push_all(["abc", "def", "ghi"].map(Outgoing::from), true, Write::Now));
        assert_eq!(&socket.took.lock()[..], b"abcdefg");
        assert_eq!(
            take(&mut rx, false),
            Poll::Ready(Ok(vec!["raw:hi".to_owned()])),
            "the begun third item's rest, nothing else"
        );
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
