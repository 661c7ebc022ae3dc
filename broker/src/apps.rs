//! The apps this broker serves, found by key (WebSocket URL) or id (REST path).
//!
//! Apps come from the config file (fixed for the process's life) and, when an
//! app store is configured, from PostgreSQL (see [`crate::app_store`]), which
//! may add, change or remove apps while the broker runs. An app's live state
//! (its [`Hub`]) survives changes to its settings: a changed app is a new
//! [`App`] value sharing the old one's hub.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parking_lot::{Mutex, RwLock};

use protocol::{history::HistoryConfig, AppId, AppKey, AppSecret, ChannelName, Limits};

use crate::{
    config::AppConfig,
    core::{rate::TokenBucket, Hub},
    webhooks::{self, WebhookEvent, WebhookQueue, WebhookReceiver, WebhookSettings},
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
    /// With authorized connections on: how long a connection may stay without
    /// signing in or joining a private, encrypted or presence channel.
    pub authorize_within: Option<Duration>,
    pub hub: Arc<Hub>,
    pub webhooks: Option<Arc<WebhookQueue>>,
    /// Channel history settings; `None` keeps nothing.
    pub history: Option<HistoryConfig>,
    /// REST request budget; `None` when unlimited.
    rest_rate: Option<Mutex<TokenBucket>>,
    /// The settings this value was built from, to notice changes.
    config: AppConfig,
}

impl App {
    /// Builds an app. `previous` (the same app before a settings change) lends
    /// its hub, and its webhook queue when the webhooks did not change.
    fn build(
        c: &AppConfig,
        settings: &WebhookSettings,
        previous: Option<&App>,
    ) -> (Self, Option<WebhookReceiver>) {
        let (webhooks, receiver) = match previous {
            Some(p) if p.config.webhooks == c.webhooks => (p.webhooks.clone(), None),
            _ if c.webhooks.is_empty() => (None, None),
            _ => {
                let (q, r) = webhooks::queue(
                    settings,
                    c.key.clone(),
                    c.secret.clone(),
                    c.webhooks.clone(),
                );
                (Some(Arc::new(q)), Some(r))
            }
        };
        let app = Self {
            id: c.id.clone(),
            key: c.key.clone(),
            secret: c.secret.clone(),
            enabled: c.enabled,
            limits: c.limits.clone(),
            allowed_origins: c.allowed_origins.clone(),
            subscription_count: c.subscription_count,
            authorize_within: c
                .authorized_connections
                .then(|| Duration::from_secs(c.authorized_connection_timeout_secs.max(1))),
            hub: previous.map(|p| p.hub.clone()).unwrap_or_default(),
            webhooks,
            history: c.history.clone(),
            rest_rate: (c.rest_requests_per_second > 0)
                .then(|| Mutex::new(TokenBucket::new(c.rest_requests_per_second))),
            config: c.clone(),
        };
        (app, receiver)
    }

    /// Queues a webhook event if the app has webhooks.
    pub fn webhook(&self, event: impl FnOnce() -> WebhookEvent) {
        if let Some(q) = &self.webhooks {
            q.emit(event());
        }
    }

    /// Runs a transition of `channel` and sends the lifecycle webhooks it causes
    /// (`events`, only asked for when the app has webhooks) through the debounce
    /// window, as one step: concurrent transitions of one channel are matched in the
    /// order they happened (transitions of other channels do not wait for it).
    pub fn transition<T>(
        &self,
        channel: &ChannelName,
        op: impl FnOnce() -> T,
        events: impl FnOnce(&T) -> Vec<WebhookEvent>,
    ) -> T {
        match &self.webhooks {
            Some(q) => q.transition(channel.as_str(), op, events),
            None => op(),
        }
    }

    /// Sends lifecycle webhooks (occupied, vacated, member added or removed) through the debounce window.
    pub fn lifecycle_webhooks(&self, events: impl IntoIterator<Item = WebhookEvent>) {
        if let Some(q) = &self.webhooks {
            q.lifecycle(events);
        }
    }

    /// Takes one REST request from the app's budget.
    pub fn allow_rest_request(&self) -> bool {
        self.rest_rate
            .as_ref()
            .is_none_or(|b| b.lock().take(Instant::now()))
    }

    /// Whether a WebSocket from `origin` may connect.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        self.allowed_origins.is_empty()
            || origin.is_some_and(|o| self.allowed_origins.iter().any(|a| a == "*" || a == o))
    }
}

#[derive(Debug, Default)]
struct Maps {
    by_key: HashMap<AppKey, Arc<App>>,
    by_id: HashMap<AppId, Arc<App>>,
}

#[derive(Debug)]
pub struct AppRegistry {
    maps: RwLock<Maps>,
    /// Ids of apps from the config file; the store never changes these.
    fixed: Vec<AppId>,
    settings: WebhookSettings,
    /// False until the app store (if any) has loaded once.
    loaded: AtomicBool,
    /// False while the app store cannot be read.
    store_healthy: AtomicBool,
}

impl AppRegistry {
    /// Builds the configured apps; returns the webhook receivers that must be run.
    /// `store` says whether an app store will add more (readiness waits for it).
    pub fn new(
        apps: &[AppConfig],
        settings: &WebhookSettings,
        store: bool,
    ) -> (Self, Vec<WebhookReceiver>) {
        let mut maps = Maps::default();
        let mut receivers = Vec::new();
        for c in apps {
            let (app, receiver) = App::build(c, settings, None);
            let app = Arc::new(app);
            receivers.extend(receiver);
            maps.by_key.insert(c.key.clone(), app.clone());
            maps.by_id.insert(c.id.clone(), app);
        }
        let reg = Self {
            maps: RwLock::new(maps),
            fixed: apps.iter().map(|a| a.id.clone()).collect(),
            settings: settings.clone(),
            loaded: AtomicBool::new(!store),
            store_healthy: AtomicBool::new(true),
        };
        (reg, receivers)
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Maps> {
        self.maps.read()
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.read().by_key.get(&AppKey::new(key).ok()?).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.read().by_id.get(&AppId::new(id).ok()?).cloned()
    }

    /// A snapshot of every app.
    pub fn all(&self) -> Vec<Arc<App>> {
        self.read().by_id.values().cloned().collect()
    }

    /// Whether every configured source of apps has been loaded and is reachable.
    pub fn ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && self.store_healthy.load(Ordering::Acquire)
    }

    pub fn set_store_healthy(&self, healthy: bool) {
        self.store_healthy.store(healthy, Ordering::Release);
    }

    /// Makes the store's apps the current ones: new apps are added, changed ones
    /// rebuilt around their hub, missing ones removed. Apps from the config file
    /// are left alone. Returns webhook receivers to run for new queues.
    pub fn sync_store(&self, apps: &[AppConfig]) -> Vec<WebhookReceiver> {
        let mut receivers = Vec::new();
        let mut maps = self.maps.write();
        for c in apps {
            if self.fixed.contains(&c.id) {
                tracing::warn!(
                    app = c.id.as_str(),
                    "app store row ignored: the id belongs to a configured app"
                );
                continue;
            }
            let previous = maps.by_id.get(&c.id).cloned();
            if previous.as_ref().is_some_and(|p| p.config == *c) {
                continue;
            }
            if let Some(owner) = maps.by_key.get(&c.key) {
                if owner.id != c.id {
                    tracing::warn!(
                        app = c.id.as_str(),
                        "app store row ignored: its key is used by app {}",
                        owner.id.as_str()
                    );
                    continue;
                }
            }
            let (app, receiver) = App::build(c, &self.settings, previous.as_deref());
            let app = Arc::new(app);
            receivers.extend(receiver);
            if let Some(p) = &previous {
                maps.by_key.remove(&p.key);
            }
            tracing::info!(
                app = c.id.as_str(),
                changed = previous.is_some(),
                "app loaded from the store"
            );
            maps.by_key.insert(c.key.clone(), app.clone());
            maps.by_id.insert(c.id.clone(), app);
        }
        let gone: Vec<AppId> = maps
            .by_id
            .keys()
            .filter(|id| !self.fixed.contains(id) && !apps.iter().any(|c| &c.id == *id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(app) = maps.by_id.remove(&id) {
                maps.by_key.remove(&app.key);
                tracing::info!(app = id.as_str(), "app removed from the store");
            }
        }
        self.loaded.store(true, Ordering::Release);
        receivers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, key: &str, secret: &str) -> AppConfig {
        AppConfig {
            id: AppId::new(id).unwrap(),
            key: AppKey::new(key).unwrap(),
            secret: AppSecret::new(secret).unwrap(),
            ..AppConfig::default_app()
        }
    }

    #[test]
    fn store_sync_adds_changes_and_removes_but_keeps_the_hub() {
        let (reg, _) =
            AppRegistry::new(&[app("1", "fixed", "s")], &WebhookSettings::default(), true);
        assert!(!reg.ready());
        reg.sync_store(&[app("7", "k7", "a")]);
        assert!(reg.ready());
        let before = reg.by_key("k7").unwrap();
        reg.sync_store(&[app("7", "k7b", "b")]);
        assert!(reg.by_key("k7").is_none(), "old key no longer maps");
        let after = reg.by_key("k7b").unwrap();
        assert_eq!(after.secret, AppSecret::new("b").unwrap());
        assert!(
            Arc::ptr_eq(&before.hub, &after.hub),
            "live state survives a settings change"
        );
        reg.sync_store(&[app("1", "evil", "x")]);
        assert!(reg.by_id("7").is_none(), "removed from the store");
        assert_eq!(
            reg.by_id("1").unwrap().key.as_str(),
            "fixed",
            "configured apps are not overridden"
        );
    }
}
