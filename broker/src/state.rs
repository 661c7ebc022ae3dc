//! What every worker shares: settings, apps, the adapter and the socket id source.

use std::{sync::Arc, time::Duration};

use protocol::socket_id::SocketIdGenerator;
use tokio::sync::watch;

use crate::{
    adapter::Adapter,
    apps::AppRegistry,
    config::Config,
    console_feed::{self, FeedLimits},
    core::ip_limit::IpLimiter,
    metrics::Metrics,
    webhooks::WebhookReceiver,
};

pub struct State {
    pub activity_timeout: Duration,
    pub pong_timeout: Duration,
    pub send_queue: usize,
    /// `close_timeout`: how long a closing WebSocket may take to flush and close.
    pub close_timeout: Duration,
    /// `max_connections_per_ip`; `None` when there is no limit.
    pub per_ip: Option<IpLimiter>,
    /// `max_rest_body_bytes`.
    pub max_rest_body_bytes: usize,
    pub apps: Arc<AppRegistry>,
    pub adapter: Arc<dyn Adapter>,
    pub socket_ids: SocketIdGenerator,
    pub metrics: Arc<Metrics>,
    /// This server's debug-console hooks (they do nothing when the console is off).
    pub(crate) console: console_feed::Hooks,
    /// Flips to true once, when the broker starts shutting down.
    shutdown: watch::Sender<bool>,
    /// Flips to true when webhook senders should send what they hold and stop.
    flush_webhooks: watch::Sender<bool>,
}

impl State {
    /// The shared state, and the webhook senders the caller must spawn.
    pub fn new(config: &Config, adapter: Arc<dyn Adapter>) -> (Self, Vec<WebhookReceiver>) {
        let (apps, receivers) =
            AppRegistry::new(&config.apps, &config.webhooks, config.app_store.is_some());
        let state = Self {
            activity_timeout: Duration::from_secs(config.activity_timeout),
            pong_timeout: Duration::from_secs(config.pong_timeout),
            send_queue: config.send_queue,
            close_timeout: Duration::from_secs(config.close_timeout),
            per_ip: IpLimiter::new(config.max_connections_per_ip),
            max_rest_body_bytes: config.max_rest_body_bytes,
            apps: Arc::new(apps),
            adapter,
            socket_ids: SocketIdGenerator::new(),
            metrics: Arc::new(Metrics::new()),
            console: console_feed::Hooks::new(config.console_token.as_ref().map(|_| FeedLimits {
                events_per_second: config.console.events_per_second,
                buffer: config.console.buffer,
                max_viewers: config.console.max_viewers,
            })),
            shutdown: watch::channel(false).0,
            flush_webhooks: watch::channel(false).0,
        };
        (state, receivers)
    }

    /// Resolves (via `wait_for`) when the broker begins shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn webhook_flush_signal(&self) -> watch::Receiver<bool> {
        self.flush_webhooks.subscribe()
    }

    pub fn flush_webhooks(&self) {
        self.flush_webhooks.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Open connections over every app on this node.
    pub fn connection_count(&self) -> usize {
        self.apps
            .all()
            .iter()
            .map(|a| a.hub.connection_count())
            .sum()
    }
}
