//! The debug console's live event feed ([`crate::console`]): what happened on
//! this node, for whoever has a console open.
//!
//! The broker calls the hook functions at the bottom of this module
//! ([`connection_opened`], [`subscribed`], [`rest_trigger`], ...) from its
//! sessions, REST handlers and webhook senders. Each hook first checks whether
//! anyone is watching; with no console open that check is all it costs: no
//! event is built, nothing is allocated, no lock is taken. (The feed is one
//! per process, in a static, because the webhook senders run without the
//! broker's shared state; see [`install`].)
//!
//! With a console open the work stays bounded however busy the broker is:
//! - at most `events_per_second` events are built per second; the rest are
//!   counted as *skipped* and only that number reaches the page;
//! - events go to viewers through a bounded [`broadcast`] channel; a viewer that
//!   falls behind loses the oldest events and is told how many it lost
//!   ([`Message::Dropped`]), so a slow page never holds anything up;
//! - publishers never wait: sending on a broadcast channel does not block.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;

use protocol::{AppKey, ChannelName, EventName, SocketId};
use serde::Serialize;
use tokio::sync::broadcast;

/// Bounds of the feed (from `[console]`, see [`crate::config::ConsoleSettings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedLimits {
    /// Events built and sent per second, over all apps; more are skipped and counted.
    pub events_per_second: u32,
    /// Events a viewer may lag behind before it loses the oldest.
    pub buffer: usize,
    /// Consoles that may watch the feed at once.
    pub max_viewers: usize,
}

/// One thing that happened, as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// The variant names are the page's `kind` tags (`rest_event`, `client_event`), read by console.js.
#[allow(clippy::enum_variant_names)]
pub enum Event {
    ConnectionOpened {
        socket_id: String,
        origin: Option<String>,
    },
    ConnectionClosed {
        socket_id: String,
        /// The WebSocket close code sent or seen; `None` when the client vanished without one.
        code: Option<u16>,
    },
    Subscribed {
        socket_id: String,
        channel: String,
    },
    SubscriptionFailed {
        socket_id: String,
        channel: String,
        reason: String,
    },
    Unsubscribed {
        socket_id: String,
        channel: String,
    },
    /// An event triggered through the REST API (or the console's event creator, which uses the same path).
    RestEvent {
        channels: Vec<String>,
        event: String,
        size: usize,
        excluded_socket: Option<String>,
    },
    ClientEvent {
        socket_id: String,
        channel: String,
        event: String,
        size: usize,
    },
    WebhookSent {
        url: String,
        events: usize,
    },
    WebhookFailed {
        url: String,
        events: usize,
        reason: String,
    },
}

/// What a viewer receives.
#[derive(Clone, Debug)]
pub enum Message {
    /// An event of the app with this key, already encoded as JSON (once, for every viewer).
    /// `relayed` when it happened on another node of the cluster (see [`crate::console::cluster`]).
    Event {
        app: AppKey,
        json: Arc<str>,
        relayed: bool,
    },
    /// The viewer fell behind and lost this many events.
    Dropped(u64),
}

#[derive(Serialize)]
struct Encoded<'a> {
    /// Milliseconds since the Unix epoch.
    time: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// The feed: a count of viewers, a per-second budget and a bounded channel.
#[derive(Debug)]
pub struct Feed {
    limits: FeedLimits,
    /// Consoles watching on this node (bounded by `max_viewers`).
    viewers: AtomicUsize,
    /// Everything receiving events: viewers, plus the cluster relay while a console is open on any node.
    /// The hooks' one check.
    watchers: AtomicUsize,
    tx: broadcast::Sender<Message>,
    /// Events built in the current second (reset by [`Feed::tick`]).
    in_window: AtomicU32,
    /// Events skipped because the budget was spent, since the start.
    skipped: AtomicU64,
    /// Messages published per app (REST triggers per channel, client events) since the last tick;
    /// counted only while someone watches.
    published: Mutex<HashMap<AppKey, u64>>,
}

/// A place in the feed; dropping it stops counting it.
pub struct Receiver {
    feed: Arc<Feed>,
    rx: broadcast::Receiver<Message>,
}

/// A console's place in the feed.
pub struct Viewer(Receiver);

/// The feed is full of viewers.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyViewers;

impl Feed {
    pub fn new(limits: FeedLimits) -> Self {
        Self {
            limits,
            viewers: AtomicUsize::new(0),
            watchers: AtomicUsize::new(0),
            tx: broadcast::channel(limits.buffer.max(1)).0,
            in_window: AtomicU32::new(0),
            skipped: AtomicU64::new(0),
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any console is open. The only cost of a hook when none is.
    #[inline]
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) != 0
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Events skipped over the per-second budget since the start.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Starts watching, unless `max_viewers` already do.
    pub fn watch(self: &Arc<Self>) -> Result<Viewer, TooManyViewers> {
        let max = self.limits.max_viewers;
        self.viewers
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| TooManyViewers)?;
        Ok(self.receiver())
    }

    /// Receives events without counting as a console (for the cluster relay); not bounded by `max_viewers`.
    pub fn relay(self: &Arc<Self>) -> Receiver {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Receiver {
            feed: self.clone(),
            rx: self.tx.subscribe(),
        }
    }

    fn receiver(self: &Arc<Self>) -> Viewer {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Viewer(Receiver {
            feed: self.clone(),
            rx: self.tx.subscribe(),
        })
    }

    /// Hands viewers an event another node built (it already passed that node's budget).
    pub fn relayed(&self, app: AppKey, json: String) {
        if self.viewers() != 0 {
            let _ = self.tx.send(Message::Event {
                app,
                json: json.into(),
                relayed: true,
            });
        }
    }

    /// Builds and sends an event if someone watches and the second's budget allows.
    #[inline]
    pub fn emit(&self, app: &AppKey, make: impl FnOnce() -> Event) {
        if self.watched() {
            self.send(app, make);
        }
    }

    /// Like [`Feed::emit`], for an event that carries `messages` messages (counted for the graph
    /// even when the event itself is skipped).
    #[inline]
    pub fn emit_messages(&self, app: &AppKey, messages: u64, make: impl FnOnce() -> Event) {
        if self.watched() {
            self.count_published(app, messages);
            self.send(app, make);
        }
    }

    #[cold]
    fn count_published(&self, app: &AppKey, messages: u64) {
        let mut published = self.published.lock();
        match published.get_mut(app) {
            Some(n) => *n += messages,
            None => {
                published.insert(app.clone(), messages);
            }
        }
    }

    #[cold]
    fn send(&self, app: &AppKey, make: impl FnOnce() -> Event) {
        if self.in_window.fetch_add(1, Ordering::Relaxed) >= self.limits.events_per_second {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let json = serde_json::to_string(&Encoded {
            time,
            event: &make(),
        })
        .expect("events serialize");
        // An error only means every viewer left meanwhile.
        let _ = self.tx.send(Message::Event {
            app: app.clone(),
            json: json.into(),
            relayed: false,
        });
    }

    /// Ends the current second: a new budget, and the messages each app published in it
    /// (`None` if nobody watched, so nothing was counted).
    pub fn tick(&self) -> Option<HashMap<AppKey, u64>> {
        self.in_window.store(0, Ordering::Relaxed);
        let counted = std::mem::take(&mut *self.published.lock());
        self.watched().then_some(counted)
    }
}

impl Viewer {
    /// The next message, waiting for one. `None` when the feed is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.0.next().await
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.feed.viewers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Receiver {
    /// The next message, waiting for one. `None` when the feed is gone.
    pub async fn next(&mut self) -> Option<Message> {
        match self.rx.recv().await {
            Ok(m) => Some(m),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Message::Dropped(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.feed.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

static FEED: OnceLock<Arc<Feed>> = OnceLock::new();

/// Creates the process's feed (the first call wins; later calls return the same feed).
pub fn install(limits: FeedLimits) -> Arc<Feed> {
    FEED.get_or_init(|| Arc::new(Feed::new(limits))).clone()
}

/// The process's feed, if a console is configured.
#[inline]
fn feed() -> Option<&'static Feed> {
    FEED.get().map(|f| &**f)
}

// The hooks. Each costs one load of `FEED` when no console is configured and one
// more when none is open; arguments are borrowed so nothing is built before that.

#[inline]
pub fn connection_opened(app: &AppKey, socket: SocketId, origin: Option<&str>) {
    if let Some(f) = feed() {
        f.emit(app, || Event::ConnectionOpened {
            socket_id: socket.to_string(),
            origin: origin.map(str::to_owned),
        });
    }
}

#[inline]
pub fn connection_closed(app: &AppKey, socket: SocketId, code: Option<u16>) {
    if let Some(f) = feed() {
        f.emit(app, || Event::ConnectionClosed {
            socket_id: socket.to_string(),
            code,
        });
    }
}

#[inline]
pub fn subscribed(app: &AppKey, socket: SocketId, channel: &ChannelName) {
    if let Some(f) = feed() {
        f.emit(app, || Event::Subscribed {
            socket_id: socket.to_string(),
            channel: channel.to_string(),
        });
    }
}

/// A subscription was refused with `refusal`, the frame the client gets
/// (`pusher:subscription_error` or `pusher:error`); the log shows its message and status.
#[inline]
pub fn subscription_failed(app: &AppKey, socket: SocketId, channel: &str, refusal: &str) {
    if let Some(f) = feed() {
        f.emit(app, || Event::SubscriptionFailed {
            socket_id: socket.to_string(),
            channel: channel.to_owned(),
            reason: reason_of(refusal),
        });
    }
}

/// The readable part of a refusal frame: `error (status)` or `message`.
fn reason_of(refusal: &str) -> String {
    let Ok(frame) = serde_json::from_str::<serde_json::Value>(refusal) else {
        return refusal.to_owned();
    };
    let data = &frame["data"];
    match (
        data["error"].as_str().or(data["message"].as_str()),
        data["status"].as_u64().or(data["code"].as_u64()),
    ) {
        (Some(text), Some(status)) => format!("{text} ({status})"),
        (Some(text), None) => text.to_owned(),
        _ => refusal.to_owned(),
    }
}

#[inline]
pub fn unsubscribed(app: &AppKey, socket: SocketId, channel: &ChannelName) {
    if let Some(f) = feed() {
        f.emit(app, || Event::Unsubscribed {
            socket_id: socket.to_string(),
            channel: channel.to_string(),
        });
    }
}

#[inline]
pub fn rest_trigger(
    app: &AppKey,
    channels: &[ChannelName],
    event: &EventName,
    size: usize,
    except: Option<SocketId>,
) {
    if let Some(f) = feed() {
        f.emit_messages(app, channels.len() as u64, || Event::RestEvent {
            channels: channels.iter().map(ChannelName::to_string).collect(),
            event: event.to_string(),
            size,
            excluded_socket: except.map(|s| s.to_string()),
        });
    }
}

#[inline]
pub fn client_event(
    app: &AppKey,
    socket: SocketId,
    channel: &ChannelName,
    event: &str,
    size: usize,
) {
    if let Some(f) = feed() {
        f.emit_messages(app, 1, || Event::ClientEvent {
            socket_id: socket.to_string(),
            channel: channel.to_string(),
            event: event.to_owned(),
            size,
        });
    }
}

/// A webhook batch was accepted (`sent`) or given up after retrying for up to `retry_for_secs`.
#[inline]
pub fn webhook(app: &AppKey, url: &str, events: usize, sent: bool, retry_for_secs: u64) {
    if let Some(f) = feed() {
        f.emit(app, || {
            let url = redact_url(url);
            if sent {
                Event::WebhookSent { url, events }
            } else {
                Event::WebhookFailed { url, events, reason: format!("given up after retrying (for up to {retry_for_secs} s; see the broker log)") }
            }
        });
    }
}

/// A webhook URL without credentials or query string, which may hold secrets.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let rest = match rest.split_once('/') {
        Some((authority, path)) => format!(
            "{}/{path}",
            authority.rsplit('@').next().unwrap_or(authority)
        ),
        None => rest.rsplit('@').next().unwrap_or(rest).to_owned(),
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> AppKey {
        AppKey::new(k).unwrap()
    }

    fn feed(events_per_second: u32, buffer: usize) -> Arc<Feed> {
        Arc::new(Feed::new(FeedLimits {
            events_per_second,
            buffer,
            max_viewers: 2,
        }))
    }

    fn opened(n: u64) -> Event {
        Event::ConnectionOpened {
            socket_id: format!("1.{n}"),
            origin: None,
        }
    }

    #[test]
    fn nothing_is_built_while_nobody_watches() {
        let f = feed(10, 8);
        f.emit(&key("a"), || panic!("built an event with no viewer"));
        f.emit_messages(&key("a"), 3, || panic!("built an event with no viewer"));
        assert_eq!(f.tick(), None, "no messages counted without a viewer");
    }

    #[tokio::test]
    async fn a_watcher_gets_events_as_json() {
        let f = feed(10, 8);
        let mut v = f.watch().unwrap();
        f.emit(&key("a"), || opened(1));
        match v.next().await.unwrap() {
            Message::Event { app, json, relayed } => {
                assert!(!relayed);
                assert_eq!(app, key("a"));
                let value: serde_json::Value = serde_json::from_str(&json).unwrap();
                assert_eq!(value["kind"], "connection_opened");
                assert_eq!(value["socket_id"], "1.1");
                assert!(value["time"].as_u64().unwrap() > 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn over_the_budget_events_are_skipped_and_counted_until_the_next_second() {
        let f = feed(3, 64);
        let mut v = f.watch().unwrap();
        for i in 0..10 {
            f.emit(&key("a"), || opened(i));
        }
        assert_eq!(f.skipped(), 7);
        f.tick();
        f.emit(&key("a"), || opened(99));
        let mut got = Vec::new();
        for _ in 0..4 {
            if let Some(Message::Event { json, .. }) = v.next().await {
                got.push(json);
            }
        }
        assert!(
            got[3].contains("1.99"),
            "a new budget after the tick: {got:?}"
        );
        assert_eq!(f.skipped(), 7);
    }

    #[tokio::test]
    async fn a_slow_viewer_loses_the_oldest_and_is_told_how_many() {
        let f = feed(1000, 4);
        let mut v = f.watch().unwrap();
        for i in 0..10 {
            f.emit(&key("a"), || opened(i));
        }
        assert!(matches!(v.next().await, Some(Message::Dropped(6))));
        // What is left is the newest `buffer` events.
        let Some(Message::Event { json, .. }) = v.next().await else {
            panic!()
        };
        assert!(json.contains("\"1.6\""), "{json}");
    }

    #[test]
    fn viewers_are_bounded_and_counted_until_dropped() {
        let f = feed(10, 4);
        let a = f.watch().unwrap();
        let _b = f.watch().unwrap();
        assert_eq!(f.watch().err(), Some(TooManyViewers));
        assert_eq!(f.viewers(), 2);
        drop(a);
        assert_eq!(f.viewers(), 1);
        assert!(f.watch().is_ok());
    }

    #[test]
    fn a_relay_makes_the_feed_watched_without_taking_a_viewer_slot() {
        let f = feed(10, 4);
        let relay = f.relay();
        assert!(f.watched());
        assert_eq!(f.viewers(), 0);
        drop(relay);
        assert!(!f.watched());
        let _a = f.watch().unwrap();
        let _b = f.watch().unwrap();
        let _r = f.relay();
        assert_eq!(f.viewers(), 2);
    }

    #[test]
    fn messages_are_counted_per_app_even_past_the_budget() {
        let f = feed(1, 4);
        let _v = f.watch().unwrap();
        for _ in 0..5 {
            f.emit_messages(&key("a"), 2, || opened(0));
        }
        f.emit_messages(&key("b"), 1, || opened(0));
        let counted = f.tick().unwrap();
        assert_eq!(counted[&key("a")], 10);
        assert_eq!(counted[&key("b")], 1);
        assert!(f.tick().unwrap().is_empty(), "each tick starts from zero");
    }

    #[test]
    fn refusals_read_as_their_message_and_status() {
        let f =
            protocol::frame::subscription_error("private-a", "AuthError", "invalid signature", 401);
        assert_eq!(reason_of(&f), "invalid signature (401)");
        assert_eq!(
            reason_of(&protocol::frame::error(None, "bad name")),
            "bad name"
        );
    }

    #[test]
    fn webhook_urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_url("https://user:pw@example.com/hook?token=x"),
            "https://example.com/hook"
        );
        assert_eq!(
            redact_url("http://example.com:8080"),
            "http://example.com:8080"
        );
        assert_eq!(redact_url("http://a@b/c#frag"), "http://b/c");
    }
}
