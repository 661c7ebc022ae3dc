//! The apps this broker serves, found by key (WebSocket URL) or id (REST path).

use std::{collections::HashMap, sync::Arc};

use protocol::{AppId, AppKey, AppSecret, Limits};

use crate::{config::AppConfig, core::Hub};

/// One tenant: its credentials, limits and its channels on this node.
#[derive(Debug)]
pub struct App {
    pub id: AppId,
    pub key: AppKey,
    pub secret: AppSecret,
    pub enabled: bool,
    pub limits: Limits,
    pub hub: Hub,
}

#[derive(Debug, Default)]
pub struct AppRegistry {
    by_key: HashMap<AppKey, Arc<App>>,
    by_id: HashMap<AppId, Arc<App>>,
}

impl AppRegistry {
    pub fn new(apps: &[AppConfig]) -> Self {
        let mut reg = Self::default();
        for c in apps {
            let app = Arc::new(App {
                id: c.id.clone(),
                key: c.key.clone(),
                secret: c.secret.clone(),
                enabled: c.enabled,
                limits: c.limits.clone(),
                hub: Hub::default(),
            });
            reg.by_key.insert(c.key.clone(), app.clone());
            reg.by_id.insert(c.id.clone(), app);
        }
        reg
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(&AppKey::new(key).ok()?)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(&AppId::new(id).ok()?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }
}
