//! What every worker shares: settings, apps, the adapter and the socket id source.

use std::{sync::Arc, time::Duration};

use protocol::socket_id::SocketIdGenerator;

use crate::{adapter::Adapter, apps::AppRegistry, config::Config, webhooks::WebhookReceiver};

pub struct State {
    pub activity_timeout: Duration,
    pub pong_timeout: Duration,
    pub send_queue: usize,
    pub apps: AppRegistry,
    pub adapter: Arc<dyn Adapter>,
    pub socket_ids: SocketIdGenerator,
}

impl State {
    /// The shared state, and the webhook senders the caller must spawn.
    pub fn new(config: &Config, adapter: Arc<dyn Adapter>) -> (Self, Vec<WebhookReceiver>) {
        let (apps, receivers) = AppRegistry::new(&config.apps, &config.webhooks);
        let state = Self {
            activity_timeout: Duration::from_secs(config.activity_timeout),
            pong_timeout: Duration::from_secs(config.pong_timeout),
            send_queue: config.send_queue,
            apps,
            adapter,
            socket_ids: SocketIdGenerator::new(),
        };
        (state, receivers)
    }
}
