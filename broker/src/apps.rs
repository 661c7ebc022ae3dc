//! The apps this broker serves, found by key (WebSocket URL) or id (REST path).

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Instant};

use protocol::{AppId, AppKey, AppSecret, Limits};

use crate::{
    config::AppConfig,
    core::Hub,
    webhooks::{self, WebhookEvent, WebhookQueue, WebhookReceiver, WebhookSettings},
    ws::rate::TokenBucket,
};

/// One tenant: its credentials, limits and its channels on this node.
#[derive(Debug)]
pub struct App {
    pub id: AppId,
    pub key: AppKey,
    pub secret: AppSecret,
    pub enabled: bool,
    pub limits: Limits,
    pub allowed_origins: Vec<String>,
    pub subscription_count: bool,
    pub hub: Hub,
    pub webhooks: Option<WebhookQueue>,
    /// REST request budget; `None` when unlimited.
    rest_rate: Option<Mutex<TokenBucket>>,
}

impl App {
    pub fn from_config(c: &AppConfig, settings: &WebhookSettings) -> (Self, Option<WebhookReceiver>) {
        let (webhooks, receiver) = if c.webhooks.is_empty() {
            (None, None)
        } else {
            let (q, r) = webhooks::queue(settings, c.key.clone(), c.secret.clone(), c.webhooks.clone());
            (Some(q), Some(r))
        };
        let app = Self {
            id: c.id.clone(),
            key: c.key.clone(),
            secret: c.secret.clone(),
            enabled: c.enabled,
            limits: c.limits.clone(),
            allowed_origins: c.allowed_origins.clone(),
            subscription_count: c.subscription_count,
            hub: Hub::default(),
            webhooks,
            rest_rate: (c.rest_requests_per_second > 0).then(|| Mutex::new(TokenBucket::new(c.rest_requests_per_second))),
        };
        (app, receiver)
    }

    /// Queues a webhook event if the app has webhooks.
    pub fn webhook(&self, event: impl FnOnce() -> WebhookEvent) {
        if let Some(q) = &self.webhooks {
            q.emit(event());
        }
    }

    /// Takes one REST request from the app's budget.
    pub fn allow_rest_request(&self) -> bool {
        self.rest_rate.as_ref().is_none_or(|b| b.lock().unwrap_or_else(|p| p.into_inner()).take(Instant::now()))
    }

    /// Whether a WebSocket from `origin` may connect.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        self.allowed_origins.is_empty() || origin.is_some_and(|o| self.allowed_origins.iter().any(|a| a == "*" || a == o))
    }
}

#[derive(Debug, Default)]
pub struct AppRegistry {
    by_key: HashMap<AppKey, Arc<App>>,
    by_id: HashMap<AppId, Arc<App>>,
}

impl AppRegistry {
    /// Builds every app; returns the webhook receivers that must be run.
    pub fn new(apps: &[AppConfig], settings: &WebhookSettings) -> (Self, Vec<WebhookReceiver>) {
        let mut reg = Self::default();
        let mut receivers = Vec::new();
        for c in apps {
            let (app, receiver) = App::from_config(c, settings);
            let app = Arc::new(app);
            receivers.extend(receiver);
            reg.by_key.insert(c.key.clone(), app.clone());
            reg.by_id.insert(c.id.clone(), app);
        }
        (reg, receivers)
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(&AppKey::new(key).ok()?)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(&AppId::new(id).ok()?)
    }

    /// Whether every configured source of apps has been loaded.
    pub fn ready(&self) -> bool {
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }
}
