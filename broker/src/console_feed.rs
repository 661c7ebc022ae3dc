//! The debug console's live event feed ([`crate::console`]): what happened on
//! this node, for whoever has a console open.
//!
//! The broker calls the hooks of [`Hooks`] ([`Hooks::connection_opened`],
//! [`Hooks::subscribed`], [`Hooks::rest_trigger`], ...) from its sessions, REST
//! handlers and webhook senders. Each hook first checks whether anyone is
//! watching; with no console open that check is all it costs: no event is
//! built, nothing is allocated, no lock is taken. Each server builds its own
//! feed (held in its shared state, and handed to its webhook senders), so two
//! brokers in one process never share one another's log or bounds.
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
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;

use protocol::{AppKey, ChannelName, EventName, SocketId};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

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

/// The feed: the viewers' places, a per-second budget and a bounded channel.
#[derive(Debug)]
pub struct Feed {
    limits: FeedLimits,
    /// Consoles watching on this node (at most `max_viewers`).
    places: Mutex<Places>,
    /// How many places are held (read without the lock by the relay and the stats).
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

/// A console's place in the feed. It ends when dropped (its page is gone) or when
/// the same page opens the feed again (it switched apps), which takes the place over.
pub struct Viewer {
    receiver: Receiver,
    place: u64,
    /// Resolves (with an error) once the place was taken over.
    taken_over: watch::Receiver<()>,
}

/// The feed is full of viewers.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyViewers;

/// The id a console page gives its feed requests, so that opening the feed again
/// (for another app) takes over its own place instead of needing a second one.
/// Up to 64 ASCII letters, digits, `-` or `_` (a page uses a random UUID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageId(String);

/// A page id that is empty, too long or has other characters.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("page must be 1 to 64 letters, digits, '-' or '_'")]
pub struct BadPageId;

impl PageId {
    pub fn parse(s: &str) -> Result<Self, BadPageId> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(s.to_owned())).ok_or(BadPageId)
    }
}

/// The viewers' places (a few: `max_viewers` is small, so a list is enough).
#[derive(Debug, Default)]
struct Places {
    held: Vec<Place>,
    next_id: u64,
}

#[derive(Debug)]
struct Place {
    id: u64,
    page: Option<PageId>,
    /// Dropped when another request of the same page takes the place: its viewer then ends.
    _holder: watch::Sender<()>,
}

impl Feed {
    pub fn new(limits: FeedLimits) -> Self {
        Self {
            limits,
            places: Mutex::new(Places::default()),
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

    /// Starts watching for `page`: takes over that page's place if it holds one (the
    /// earlier viewer ends), else takes a new place unless `max_viewers` are held.
    pub fn watch(self: &Arc<Self>, page: Option<PageId>) -> Result<Viewer, TooManyViewers> {
        let mut places = self.places.lock();
        let own = page.as_ref().and_then(|page| {
            places
                .held
                .iter()
                .position(|p| p.page.as_ref() == Some(page))
        });
        match own {
            // Dropping the place's holder ends the viewer that had it.
            Some(i) => drop(places.held.swap_remove(i)),
            None if places.held.len() >= self.limits.max_viewers => return Err(TooManyViewers),
            None => {}
        }
        let (holder, taken_over) = watch::channel(());
        let id = places.next_id;
        places.next_id += 1;
        places.held.push(Place {
            id,
            page,
            _holder: holder,
        });
        self.viewers.store(places.held.len(), Ordering::Relaxed);
        drop(places);
        Ok(Viewer {
            receiver: self.receiver(),
            place: id,
            taken_over,
        })
    }

    /// Receives events without counting as a console (for the cluster relay); not bounded by `max_viewers`.
    pub fn relay(self: &Arc<Self>) -> Receiver {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Receiver {
            feed: self.clone(),
            rx: self.tx.subscribe(),
        }
    }

    fn receiver(self: &Arc<Self>) -> Receiver {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Receiver {
            feed: self.clone(),
            rx: self.tx.subscribe(),
        }
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
    /// The next message, waiting for one. `None` when the feed is gone or the
    /// page took this place over with a newer request.
    pub async fn next(&mut self) -> Option<Message> {
        tokio::select! {
            biased;
            // Nothing is ever sent: this resolves only when the holder is dropped.
            _ = self.taken_over.changed() => None,
            m = self.receiver.next() => m,
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let feed = &self.receiver.feed;
        let mut places = feed.places.lock();
        // A place taken over is no longer in the list.
        places.held.retain(|p| p.id != self.place);
        feed.viewers.store(places.held.len(), Ordering::Relaxed);
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

/// The hooks the broker calls, one handle per server: empty when the console is off.
/// Cloning it is cheap (the feed is shared).
#[derive(Clone, Default)]
pub struct Hooks(Option<Arc<Feed>>);

// Each hook costs one check of the handle when no console is configured and one
// load more when none is open; arguments are borrowed so nothing is built before that.
impl Hooks {
    /// Hooks that feed a console with `limits`; without `limits` (console off) they do nothing.
    pub fn new(limits: Option<FeedLimits>) -> Self {
        Self(limits.map(|l| Arc::new(Feed::new(l))))
    }

    /// The feed, when the console is on.
    pub fn feed(&self) -> Option<&Arc<Feed>> {
        self.0.as_ref()
    }

    #[inline]
    pub fn connection_opened(&self, app: &AppKey, socket: SocketId, origin: Option<&str>) {
        if let Some(f) = &self.0 {
            f.emit(app, || Event::ConnectionOpened {
                socket_id: socket.to_string(),
                origin: origin.map(str::to_owned),
            });
        }
    }

    #[inline]
    pub fn connection_closed(&self, app: &AppKey, socket: SocketId, code: Option<u16>) {
        if let Some(f) = &self.0 {
            f.emit(app, || Event::ConnectionClosed {
                socket_id: socket.to_string(),
                code,
            });
        }
    }

    #[inline]
    pub fn subscribed(&self, app: &AppKey, socket: SocketId, channel: &ChannelName) {
        if let Some(f) = &self.0 {
            f.emit(app, || Event::Subscribed {
                socket_id: socket.to_string(),
                channel: channel.to_string(),
            });
        }
    }

    /// A subscription was refused with `refusal`, the frame the client gets
    /// (`pusher:subscription_error` or `pusher:error`); the log shows its message and status.
    #[inline]
    pub fn subscription_failed(
        &self,
        app: &AppKey,
        socket: SocketId,
        channel: &str,
        refusal: &str,
    ) {
        if let Some(f) = &self.0 {
            f.emit(app, || Event::SubscriptionFailed {
                socket_id: socket.to_string(),
                channel: channel.to_owned(),
                reason: reason_of(refusal),
            });
        }
    }

    #[inline]
    pub fn unsubscribed(&self, app: &AppKey, socket: SocketId, channel: &ChannelName) {
        if let Some(f) = &self.0 {
            f.emit(app, || Event::Unsubscribed {
                socket_id: socket.to_string(),
                channel: channel.to_string(),
            });
        }
    }

    #[inline]
    pub fn rest_trigger(
        &self,
        app: &AppKey,
        channels: &[ChannelName],
        event: &EventName,
        size: usize,
        except: Option<SocketId>,
    ) {
        if let Some(f) = &self.0 {
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
        &self,
        app: &AppKey,
        socket: SocketId,
        channel: &ChannelName,
        event: &str,
        size: usize,
    ) {
        if let Some(f) = &self.0 {
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
    pub fn webhook(&self, app: &AppKey, url: &str, events: usize, sent: bool, retry_for_secs: u64) {
        if let Some(f) = &self.0 {
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
        let mut v = f.watch(None).unwrap();
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
        let mut v = f.watch(None).unwrap();
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
        let mut v = f.watch(None).unwrap();
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
        let a = f.watch(None).unwrap();
        let _b = f.watch(None).unwrap();
        assert_eq!(f.watch(None).err(), Some(TooManyViewers));
        assert_eq!(f.viewers(), 2);
        drop(a);
        assert_eq!(f.viewers(), 1);
        assert!(f.watch(None).is_ok());
    }

    #[tokio::test]
    async fn a_page_opening_the_feed_again_takes_its_own_place_over() {
        let f = feed(10, 4);
        let page = || Some(PageId::parse("7f9c-page_1").unwrap());
        let mut first = f.watch(page()).unwrap();
        let _other = f.watch(None).unwrap();
        let mut second = f
            .watch(page())
            .expect("the page's own place, not a third one");
        assert_eq!(f.viewers(), 2);
        assert!(first.next().await.is_none(), "the earlier viewer ends");
        drop(first);
        assert_eq!(
            f.viewers(),
            2,
            "dropping the ended viewer frees nothing more"
        );
        f.emit(&key("a"), || opened(1));
        assert!(matches!(second.next().await, Some(Message::Event { .. })));
        assert_eq!(f.watch(None).err(), Some(TooManyViewers));
        drop(second);
        assert_eq!(f.viewers(), 1);
    }

    #[test]
    fn page_ids_are_short_and_plain() {
        assert!(PageId::parse("0b6e2a1c-55d4-4c1e-9a57-3f1f0e6c9b21").is_ok());
        assert_eq!(PageId::parse(""), Err(BadPageId));
        assert_eq!(PageId::parse(&"a".repeat(65)), Err(BadPageId));
        assert_eq!(PageId::parse("a b"), Err(BadPageId));
        assert_eq!(PageId::parse("a/../b"), Err(BadPageId));
    }

    #[test]
    fn a_relay_makes_the_feed_watched_without_taking_a_viewer_slot() {
        let f = feed(10, 4);
        let relay = f.relay();
        assert!(f.watched());
        assert_eq!(f.viewers(), 0);
        drop(relay);
        assert!(!f.watched());
        let _a = f.watch(None).unwrap();
        let _b = f.watch(None).unwrap();
        let _r = f.relay();
        assert_eq!(f.viewers(), 2);
    }

    #[test]
    fn messages_are_counted_per_app_even_past_the_budget() {
        let f = feed(1, 4);
        let _v = f.watch(None).unwrap();
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
