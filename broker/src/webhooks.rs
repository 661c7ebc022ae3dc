//! Webhooks: tell an app's server what happened on its channels.
//!
//! Events are queued per app in a bounded queue (a dead endpoint can never grow
//! memory: when the queue is full new events are dropped and counted), sent in
//! batches as `{"time_ms", "events"}` signed with the app's secret, and retried
//! with exponential back-off while the endpoint fails.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use protocol::{sign, AppKey, AppSecret};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Where one app's webhooks go, and which events it wants.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Event names to send (`channel_occupied`, `member_added`, ...); empty means all.
    #[serde(default)]
    pub event_types: Vec<String>,
}

/// One webhook event, serialized as Pusher documents it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum WebhookEvent {
    ChannelOccupied { channel: String },
    ChannelVacated { channel: String },
    MemberAdded { channel: String, user_id: String },
    MemberRemoved { channel: String, user_id: String },
    ClientEvent {
        channel: String,
        event: String,
        data: String,
        socket_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    CacheMiss { channel: String },
    SubscriptionCount { channel: String, subscription_count: u64 },
}

impl WebhookEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ChannelOccupied { .. } => "channel_occupied",
            Self::ChannelVacated { .. } => "channel_vacated",
            Self::MemberAdded { .. } => "member_added",
            Self::MemberRemoved { .. } => "member_removed",
            Self::ClientEvent { .. } => "client_event",
            Self::CacheMiss { .. } => "cache_miss",
            Self::SubscriptionCount { .. } => "subscription_count",
        }
    }
}

/// Tuning shared by every app's webhook sender.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Events waiting per app before new ones are dropped.
    pub queue: usize,
    /// Most events in one request.
    pub batch_max: usize,
    /// How long to wait for more events to fill a batch, in milliseconds.
    pub batch_wait_ms: u64,
    /// Attempts per batch before it is given up.
    pub attempts: u32,
    /// First retry delay in milliseconds; doubles each attempt.
    pub backoff_ms: u64,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self { queue: 10_000, batch_max: 100, batch_wait_ms: 50, attempts: 5, backoff_ms: 500, timeout_ms: 5_000 }
    }
}

/// Counters for one app's webhooks.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
    pub sent_batches: AtomicU64,
}

/// The producing side: cheap to call from any worker.
#[derive(Debug)]
pub struct WebhookQueue {
    tx: mpsc::Sender<WebhookEvent>,
    pub stats: Arc<WebhookStats>,
}

impl WebhookQueue {
    pub fn emit(&self, event: WebhookEvent) {
        if self.tx.try_send(event).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events queued and not yet sent.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The consuming side, to be run by [`run_sender`].
pub struct WebhookReceiver {
    rx: mpsc::Receiver<WebhookEvent>,
    stats: Arc<WebhookStats>,
    pub key: AppKey,
    pub secret: AppSecret,
    pub hooks: Vec<WebhookConfig>,
}

pub fn queue(settings: &WebhookSettings, key: AppKey, secret: AppSecret, hooks: Vec<WebhookConfig>) -> (WebhookQueue, WebhookReceiver) {
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let stats = Arc::new(WebhookStats::default());
    (WebhookQueue { tx, stats: stats.clone() }, WebhookReceiver { rx, stats, key, secret, hooks })
}

#[derive(Serialize)]
struct Body<'a> {
    time_ms: u128,
    events: Vec<&'a WebhookEvent>,
}

/// Sends one app's webhooks until `flush` turns true; then sends what is still
/// queued and returns. Needs an actix runtime (awc).
pub async fn run_sender(mut r: WebhookReceiver, settings: WebhookSettings, mut flush: watch::Receiver<bool>) {
    let client = awc::Client::builder().timeout(Duration::from_millis(settings.timeout_ms)).finish();
    let mut batch = Vec::with_capacity(settings.batch_max);
    loop {
        let first = tokio::select! {
            e = r.rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
            _ = flush.wait_for(|f| *f) => {
                // Shutting down: no more waiting for batches to fill, one attempt each.
                let last = WebhookSettings { attempts: 1, ..settings.clone() };
                while let Ok(e) = r.rx.try_recv() {
                    batch.push(e);
                    if batch.len() == settings.batch_max {
                        send_batch(&client, &r, &batch, &last).await;
                        batch.clear();
                    }
                }
                send_batch(&client, &r, &batch, &last).await;
                return;
            }
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(settings.batch_wait_ms);
        while batch.len() < settings.batch_max {
            match tokio::time::timeout_at(deadline, r.rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        send_batch(&client, &r, &batch, &settings).await;
        batch.clear();
    }
}

/// Sends a batch to every hook that wants some of its events.
async fn send_batch(client: &awc::Client, r: &WebhookReceiver, batch: &[WebhookEvent], settings: &WebhookSettings) {
    for hook in &r.hooks {
        let events: Vec<&WebhookEvent> = batch
            .iter()
            .filter(|e| hook.event_types.is_empty() || hook.event_types.iter().any(|t| t == e.name()))
            .collect();
        if events.is_empty() {
            continue;
        }
        let count = events.len();
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let body = serde_json::to_vec(&Body { time_ms, events }).expect("webhook body serializes");
        let signature = sign::sign_webhook(&r.secret, &body);
        let sent = deliver(client, hook, &r.key, &signature, body, settings).await;
        crate::console::feed::webhook(&r.key, &hook.url, count, sent, settings.attempts);
        if sent {
            r.stats.sent_batches.fetch_add(1, Ordering::Relaxed);
        } else {
            r.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %hook.url, "webhook batch given up after {} attempts", settings.attempts);
        }
    }
}

async fn deliver(client: &awc::Client, hook: &WebhookConfig, key: &AppKey, signature: &str, body: Vec<u8>, s: &WebhookSettings) -> bool {
    let body = bytes_of(body);
    let mut delay = Duration::from_millis(s.backoff_ms);
    for attempt in 1..=s.attempts.max(1) {
        let result = client
            .post(&hook.url)
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("X-Pusher-Key", key.as_str()))
            .insert_header(("X-Pusher-Signature", signature))
            .send_body(body.clone())
            .await;
        match result {
            Ok(res) if res.status().is_success() => return true,
            Ok(res) => tracing::debug!(url = %hook.url, status = res.status().as_u16(), attempt, "webhook refused"),
            Err(e) => tracing::debug!(url = %hook.url, error = %e, attempt, "webhook failed"),
        }
        if attempt < s.attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
    false
}

fn bytes_of(v: Vec<u8>) -> actix_web::web::Bytes {
    actix_web::web::Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_documented() {
        let e = WebhookEvent::MemberAdded { channel: "presence-a".into(), user_id: "7".into() };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"name":"member_added","channel":"presence-a","user_id":"7"}"#);
        let c = WebhookEvent::ClientEvent { channel: "private-a".into(), event: "client-x".into(), data: "{}".into(), socket_id: "1.2".into(), user_id: None };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"name":"client_event","channel":"private-a","event":"client-x","data":"{}","socket_id":"1.2"}"#
        );
        assert_eq!(c.name(), "client_event");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let s = WebhookSettings { queue: 2, ..Default::default() };
        let (q, _r) = queue(&s, AppKey::new("k").unwrap(), AppSecret::new("s").unwrap(), vec![]);
        for _ in 0..5 {
            q.emit(WebhookEvent::CacheMiss { channel: "cache-a".into() });
        }
        assert_eq!(q.depth(), 2);
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 3);
    }
}
