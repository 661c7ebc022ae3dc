//! Webhooks: tell an app's server what happened on its channels.
//!
//! Events are queued per app in a bounded queue (a dead endpoint can never grow
//! memory: when the queue is full new events are dropped and counted), sent in
//! batches as `{"time_ms", "events"}` signed with the app's secret, and retried
//! with exponential back-off while the endpoint fails, for up to
//! `retry_for_secs` (5 minutes by default, as the hosted service does).
//!
//! Leaving events (`member_removed`, `channel_vacated`) are held back for a
//! debounce window ([`Debounce`]): when the user or channel comes back within
//! it, neither the leave nor the matching `member_added` / `channel_occupied`
//! is sent, so an app that marks users offline from webhooks does not flap on
//! every page reload.

mod debounce;
pub mod target;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use protocol::{sign, AppKey, AppSecret};
use serde::Serialize;

pub use crate::config::{WebhookConfig, WebhookSettings};
pub use debounce::Debounce;
use tokio::sync::{mpsc, watch};

/// One webhook event, serialized as Pusher documents it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum WebhookEvent {
    ChannelOccupied {
        channel: String,
    },
    ChannelVacated {
        channel: String,
    },
    MemberAdded {
        channel: String,
        user_id: String,
    },
    MemberRemoved {
        channel: String,
        user_id: String,
    },
    ClientEvent {
        channel: String,
        event: String,
        data: String,
        socket_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    CacheMiss {
        channel: String,
    },
    SubscriptionCount {
        channel: String,
        subscription_count: u64,
    },
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

/// Counters for one app's webhooks.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events never delivered: the queue was full, or their batch was given up.
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
    pub sent_batches: AtomicU64,
}

/// The producing side: cheap to call from any worker.
#[derive(Debug)]
pub struct WebhookQueue {
    tx: mpsc::Sender<WebhookEvent>,
    pub stats: Arc<WebhookStats>,
    debounce: Arc<Debounce>,
}

impl WebhookQueue {
    pub fn emit(&self, event: WebhookEvent) {
        if self.tx.try_send(event).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs a transition of `channel` and queues the lifecycle events it caused
    /// (occupied, vacated, member added or removed) through the debounce window.
    pub fn transition<T>(
        &self,
        channel: &str,
        op: impl FnOnce() -> T,
        events: impl FnOnce(&T) -> Vec<WebhookEvent>,
    ) -> T {
        let (result, now) = self
            .debounce
            .transition(channel, op, events, Instant::now());
        for e in now {
            self.emit(e);
        }
        result
    }

    /// Queues lifecycle events that happened outside a hub transition through the debounce window.
    pub fn lifecycle(&self, events: impl IntoIterator<Item = WebhookEvent>) {
        for e in self.debounce.admit(events, Instant::now()) {
            self.emit(e);
        }
    }

    /// Leaving events waiting for the debounce window.
    pub fn debounced(&self) -> usize {
        self.debounce.pending()
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
    debounce: Arc<Debounce>,
    pub key: AppKey,
    pub secret: AppSecret,
    pub hooks: Vec<WebhookConfig>,
}

#[cfg(test)]
impl WebhookReceiver {
    /// The events queued so far (what the sender would send next), for tests.
    pub(crate) fn queued(&mut self) -> Vec<WebhookEvent> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

pub fn queue(
    settings: &WebhookSettings,
    key: AppKey,
    secret: AppSecret,
    hooks: Vec<WebhookConfig>,
) -> (WebhookQueue, WebhookReceiver) {
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let stats = Arc::new(WebhookStats::default());
    let debounce = Arc::new(Debounce::new(settings.debounce()));
    (
        WebhookQueue {
            tx,
            stats: stats.clone(),
            debounce: debounce.clone(),
        },
        WebhookReceiver {
            rx,
            stats,
            debounce,
            key,
            secret,
            hooks,
        },
    )
}

#[derive(Serialize)]
struct Body<'a> {
    time_ms: u128,
    events: Vec<&'a WebhookEvent>,
}

/// Sends one app's webhooks until `flush` turns true; then sends what is still
/// queued or held back and returns, telling the server's console what became of
/// each batch. Needs an actix runtime (awc).
pub async fn run_sender(
    mut r: WebhookReceiver,
    settings: WebhookSettings,
    mut flush: watch::Receiver<bool>,
    console: crate::console_feed::Hooks,
) {
    // Redirects are not followed: a receiver (or whoever answers for its host) could
    // otherwise send the signed batch to another path or host, past
    // `deny_private_addresses`. A 3xx is a failed attempt like a 500.
    let client = awc::Client::builder()
        .timeout(Duration::from_millis(settings.timeout_ms))
        .disable_redirects()
        .finish();
    let mut batch = Vec::with_capacity(settings.batch_max);
    // Held-back leaves are looked at this often; their delay is the window plus at most this.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            e = r.rx.recv() => match e {
                Some(e) => batch.push(e),
                None => return,
            },
            _ = tick.tick() => batch.extend(r.debounce.take_due(Some(Instant::now()))),
            _ = flush.wait_for(|f| *f) => {
                // Shutting down: no more waiting for batches to fill or windows to pass, one attempt each.
                let last = WebhookSettings { attempts: 1, ..settings.clone() };
                batch.extend(r.debounce.take_due(None));
                while let Ok(e) = r.rx.try_recv() {
                    batch.push(e);
                }
                for chunk in batch.chunks(settings.batch_max.max(1)) {
                    send_batch(&client, &r, chunk, &last, &console).await;
                }
                return;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(settings.batch_wait_ms);
        while batch.len() < settings.batch_max {
            match tokio::time::timeout_at(deadline, r.rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        for chunk in batch.chunks(settings.batch_max.max(1)) {
            send_batch(&client, &r, chunk, &settings, &console).await;
        }
        batch.clear();
    }
}

/// Sends a batch to every hook that wants some of its events.
async fn send_batch(
    client: &awc::Client,
    r: &WebhookReceiver,
    batch: &[WebhookEvent],
    settings: &WebhookSettings,
    console: &crate::console_feed::Hooks,
) {
    for hook in &r.hooks {
        let events: Vec<&WebhookEvent> = batch
            .iter()
            .filter(|e| {
                hook.event_types.is_empty() || hook.event_types.iter().any(|t| t == e.name())
            })
            .collect();
        if events.is_empty() {
            continue;
        }
        let events_len = events.len();
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let body = serde_json::to_vec(&Body { time_ms, events }).expect("webhook body serializes");
        let signature = sign::sign_webhook(&r.secret, &body);
        let sent = deliver(client, hook, &r.key, &signature, body, settings).await;
        console.webhook(&r.key, &hook.url, events_len, sent, settings.retry_for_secs);
        if sent {
            r.stats.sent_batches.fetch_add(1, Ordering::Relaxed);
        } else {
            r.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            r.stats
                .dropped
                .fetch_add(events_len as u64, Ordering::Relaxed);
            tracing::warn!(url = %hook.url, events = events_len, "webhook batch given up after retrying for {} s", settings.retry_for_secs);
        }
    }
}

/// How one attempt to post a batch ended.
enum Attempt {
    Sent,
    /// Worth another try after the back-off.
    Failed,
    /// The URL is refused by `deny_private_addresses`: not tried, and not retried.
    Refused,
}

/// Posts one batch, retrying with exponential back-off until the endpoint accepts
/// it, `retry_for_secs` have passed, or `attempts` (when not 0) are used up.
async fn deliver(
    client: &awc::Client,
    hook: &WebhookConfig,
    key: &AppKey,
    signature: &str,
    body: Vec<u8>,
    s: &WebhookSettings,
) -> bool {
    let body = bytes_of(body);
    let give_up_at = Instant::now() + Duration::from_secs(s.retry_for_secs);
    let mut delay = Duration::from_millis(s.backoff_ms.max(1));
    let max_delay = Duration::from_millis(s.max_backoff_ms.max(1));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match post(client, hook, key, signature, body.clone(), s, attempt).await {
            Attempt::Sent => return true,
            Attempt::Refused => return false,
            Attempt::Failed => {}
        }
        if (s.attempts != 0 && attempt >= s.attempts) || Instant::now() + delay > give_up_at {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max_delay);
    }
}

/// One POST of a batch. The headers go out as Pusher documents them
/// (`X-Pusher-Key`, `X-Pusher-Signature`): names are case-insensitive, but PHP's
/// `getallheaders()` under Apache or `php -S` keeps them as sent and the PHP SDK
/// looks them up in that case.
async fn post(
    client: &awc::Client,
    hook: &WebhookConfig,
    key: &AppKey,
    signature: &str,
    body: actix_web::web::Bytes,
    s: &WebhookSettings,
    attempt: u32,
) -> Attempt {
    let mut request = client
        .post(&hook.url)
        .camel_case()
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-Pusher-Key", key.as_str()))
        .insert_header(("X-Pusher-Signature", signature));
    if s.deny_private_addresses {
        match target::checked_address(request.get_uri()).await {
            Ok(addr) => request = request.address(addr),
            Err(e) => {
                tracing::warn!(url = %hook.url, error = %e, "webhook URL refused; batch given up");
                return Attempt::Refused;
            }
        }
    }
    match request.send_body(body).await {
        Ok(res) if res.status().is_success() => Attempt::Sent,
        Ok(res) if res.status().is_redirection() => {
            let location = res
                .headers()
                .get(awc::http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("");
            tracing::warn!(url = %hook.url, status = res.status().as_u16(), location, attempt, "webhook answered a redirect, which is not followed; retrying");
            Attempt::Failed
        }
        Ok(res) => {
            tracing::debug!(url = %hook.url, status = res.status().as_u16(), attempt, "webhook refused");
            Attempt::Failed
        }
        Err(e) => {
            tracing::debug!(url = %hook.url, error = %e, attempt, "webhook failed");
            Attempt::Failed
        }
    }
}

fn bytes_of(v: Vec<u8>) -> actix_web::web::Bytes {
    actix_web::web::Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_documented() {
        let e = WebhookEvent::MemberAdded {
            channel: "presence-a".into(),
            user_id: "7".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"name":"member_added","channel":"presence-a","user_id":"7"}"#
        );
        let c = WebhookEvent::ClientEvent {
            channel: "private-a".into(),
            event: "client-x".into(),
            data: "{}".into(),
            socket_id: "1.2".into(),
            user_id: None,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"name":"client_event","channel":"private-a","event":"client-x","data":"{}","socket_id":"1.2"}"#
        );
        assert_eq!(c.name(), "client_event");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let s = WebhookSettings {
            queue: 2,
            ..Default::default()
        };
        let (q, _r) = queue(
            &s,
            AppKey::new("k").unwrap(),
            AppSecret::new("s").unwrap(),
            vec![],
        );
        for _ in 0..5 {
            q.emit(WebhookEvent::CacheMiss {
                channel: "cache-a".into(),
            });
        }
        assert_eq!(q.depth(), 2);
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 3);
    }
}
