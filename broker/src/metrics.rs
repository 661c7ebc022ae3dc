//! Prometheus metrics, rendered at `GET /metrics`.
//!
//! Hot-path counters are bumped once per broadcast or per drained batch of
//! frames, not once per frame, so counting stays off the per-delivery cost.

use std::sync::atomic::Ordering;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{adapter::Adapter, apps::AppRegistry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_opened: Counter,
    pub subscriptions: Gauge,
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    pub slow_consumers_closed: Counter,
    /// Bounds reached: connections refused by `max_connections_per_ip`, and
    /// HTTP-fallback sessions by `[http_fallback] max_sessions_per_ip_percent`.
    pub refused_per_ip: Counter,
    /// HTTP-fallback requests refused for not coming from their session's client.
    pub fallback_refused_foreign: Counter,
    /// Bounds reached: subscriptions refused by `max_channels_per_connection`.
    pub refused_channel_limit: Counter,
    pub rest_requests: Family<RestLabels, Counter>,
    webhook_queue_depth: Family<AppLabels, Gauge>,
    webhook_sent_batches: Family<AppLabels, Gauge>,
    webhook_failed_batches: Family<AppLabels, Gauge>,
    webhook_dropped_events: Family<AppLabels, Gauge>,
    adapter_up: Gauge,
    adapter_dropped_messages: Gauge,
    adapter_bus_received: Counter,
    adapter_topics: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("broker"),
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            subscriptions: Gauge::default(),
            messages_in: Counter::default(),
            bytes_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_out: Counter::default(),
            slow_consumers_closed: Counter::default(),
            refused_per_ip: Counter::default(),
            fallback_refused_foreign: Counter::default(),
            refused_channel_limit: Counter::default(),
            rest_requests: Family::default(),
            webhook_queue_depth: Family::default(),
            webhook_sent_batches: Family::default(),
            webhook_failed_batches: Family::default(),
            webhook_dropped_events: Family::default(),
            adapter_up: Gauge::default(),
            adapter_dropped_messages: Gauge::default(),
            adapter_bus_received: Counter::default(),
            adapter_topics: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "connections",
            "Open client connections (WebSocket and HTTP fallback)",
            m.connections.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            m.connections_opened.clone(),
        );
        r.register(
            "subscriptions",
            "Channel subscriptions held by connections on this node",
            m.subscriptions.clone(),
        );
        r.register(
            "ws_messages_in",
            "WebSocket messages received from clients",
            m.messages_in.clone(),
        );
        r.register(
            "ws_bytes_in",
            "Bytes of WebSocket messages received from clients",
            m.bytes_in.clone(),
        );
        r.register(
            "ws_messages_out",
            "WebSocket messages written to clients",
            m.messages_out.clone(),
        );
        r.register(
            "ws_bytes_out",
            "Bytes of WebSocket messages written to clients",
            m.bytes_out.clone(),
        );
        r.register(
            "slow_consumers_closed",
            "Connections closed because their send queue overflowed",
            m.slow_consumers_closed.clone(),
        );
        r.register(
            "connections_refused_per_ip",
            "Connections refused by max_connections_per_ip, and HTTP-fallback sessions by max_sessions_per_ip_percent",
            m.refused_per_ip.clone(),
        );
        r.register(
            "fallback_requests_refused_foreign",
            "HTTP-fallback requests refused (403) for coming from another client (address, User-Agent or Origin) than the one that opened the session",
            m.fallback_refused_foreign.clone(),
        );
        r.register(
            "subscriptions_refused_channel_limit",
            "Subscriptions refused by max_channels_per_connection",
            m.refused_channel_limit.clone(),
        );
        r.register(
            "rest_requests",
            "REST requests by route and status",
            m.rest_requests.clone(),
        );
        r.register(
            "webhook_queue_depth",
            "Webhook events waiting to be sent",
            m.webhook_queue_depth.clone(),
        );
        r.register(
            "webhook_sent_batches",
            "Webhook batches the endpoint accepted",
            m.webhook_sent_batches.clone(),
        );
        r.register(
            "webhook_failed_batches",
            "Webhook batches given up after every retry",
            m.webhook_failed_batches.clone(),
        );
        r.register(
            "webhook_dropped_events",
            "Webhook events dropped because the queue was full",
            m.webhook_dropped_events.clone(),
        );
        r.register(
            "adapter_up",
            "1 when the cluster adapter is healthy",
            m.adapter_up.clone(),
        );
        r.register(
            "adapter_dropped_messages",
            "Cluster messages that did not reach every node holding their channel (Redis unreachable, publish queue full, or a node not listening)",
            m.adapter_dropped_messages.clone(),
        );
        r.register(
            "adapter_bus_received",
            "Messages this node received from the cluster bus (only for channels and watched users it holds)",
            m.adapter_bus_received.clone(),
        );
        r.register(
            "adapter_topics",
            "Cluster bus topics this node listens to",
            m.adapter_topics.clone(),
        );
        m
    }

    /// The text exposition, with gauges read from the apps at scrape time.
    pub fn render(&self, apps: &AppRegistry, adapter: &dyn Adapter) -> String {
        for app in apps.all() {
            if let Some(q) = &app.webhooks {
                let labels = AppLabels {
                    app: app.id.as_str().to_owned(),
                };
                self.webhook_queue_depth
                    .get_or_create(&labels)
                    .set(q.depth() as i64);
                self.webhook_sent_batches
                    .get_or_create(&labels)
                    .set(q.stats.sent_batches.load(Ordering::Relaxed) as i64);
                self.webhook_failed_batches
                    .get_or_create(&labels)
                    .set(q.stats.failed_batches.load(Ordering::Relaxed) as i64);
                self.webhook_dropped_events
                    .get_or_create(&labels)
                    .set(q.stats.dropped.load(Ordering::Relaxed) as i64);
            }
        }
        self.adapter_up.set(i64::from(adapter.healthy()));
        self.adapter_dropped_messages
            .set(adapter.dropped_messages() as i64);
        let bus = adapter.bus_stats();
        // The adapter counts; the counter catches up at scrape time.
        self.adapter_bus_received
            .inc_by(bus.received.saturating_sub(self.adapter_bus_received.get()));
        self.adapter_topics.set(bus.topics as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
