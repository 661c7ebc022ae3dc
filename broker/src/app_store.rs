//! Apps kept in PostgreSQL, so they can be added, changed or removed without a restart.
//!
//! The table is read in full every `refresh_secs` (a short cache: lookups on the
//! connection and REST paths never touch the database). If the database goes
//! away, the last apps read keep working and `/ready` reports the store down.

use std::{sync::Arc, time::Duration};

use protocol::{history::HistoryConfig, AppId, AppKey, AppSecret, Limits};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::{
    config::{AppConfig, AppStoreConfig, PUBLISHED_SECRET},
    state::State,
    webhooks::{self, WebhookConfig, WebhookSettings},
};

/// Created on first connect if missing. JSON columns use the config file's shapes.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS broker_apps (
    id text PRIMARY KEY,
    key text NOT NULL UNIQUE,
    secret text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    limits jsonb NOT NULL DEFAULT '{}',
    webhooks jsonb NOT NULL DEFAULT '[]',
    allowed_origins jsonb NOT NULL DEFAULT '[]',
    subscription_count boolean NOT NULL DEFAULT false,
    rest_requests_per_second integer NOT NULL DEFAULT 0
);
ALTER TABLE broker_apps ADD COLUMN IF NOT EXISTS authorized_connections boolean NOT NULL DEFAULT false;
ALTER TABLE broker_apps ADD COLUMN IF NOT EXISTS authorized_connection_timeout_secs integer NOT NULL DEFAULT 30;
ALTER TABLE broker_apps ADD COLUMN IF NOT EXISTS history jsonb";

const SELECT: &str = "SELECT id, key, secret, enabled, limits::text, webhooks::text, allowed_origins::text,
    subscription_count, rest_requests_per_second, authorized_connections, authorized_connection_timeout_secs, history::text FROM broker_apps";

/// Keeps the registry in step with the table until the process ends. Webhook
/// senders for apps it adds are pushed to `senders` so shutdown can wait for them.
/// `on_loopback`: the broker listens on loopback only, so a row may use the
/// published default secret (as the config file may; see [`crate::config`]).
pub async fn run(
    state: Arc<State>,
    store: AppStoreConfig,
    settings: WebhookSettings,
    senders: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    on_loopback: bool,
) {
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(store.refresh_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = match connect(&store.database_url).await {
                Ok(c) => Some(c),
                Err(e) => {
                    state.apps.set_store_healthy(false);
                    tracing::warn!(error = %e, "app store unreachable; keeping the apps already loaded");
                    continue;
                }
            };
        }
        let Some(c) = &client else { continue };
        match load(c, on_loopback).await {
            Ok(apps) => {
                state.apps.set_store_healthy(true);
                for receiver in state.apps.sync_store(&apps) {
                    let handle = actix_web::rt::spawn(webhooks::run_sender(
                        receiver,
                        settings.clone(),
                        state.webhook_flush_signal(),
                        state.console.clone(),
                    ));
                    senders.lock().push(handle);
                }
            }
            Err(e) => {
                state.apps.set_store_healthy(false);
                tracing::warn!(error = %e, "app store read failed; keeping the apps already loaded");
                client = None;
            }
        }
    }
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    actix_web::rt::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "app store connection ended");
        }
    });
    client.batch_execute(SCHEMA).await?;
    Ok(client)
}

/// Reads every row; a row that does not make a valid app is skipped with a warning.
async fn load(client: &Client, on_loopback: bool) -> Result<Vec<AppConfig>, tokio_postgres::Error> {
    let rows = client.query(SELECT, &[]).await?;
    let mut apps = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        match parse(&row).and_then(|app| admit(app, on_loopback)) {
            Ok(app) => apps.push(app),
            Err(e) => tracing::warn!(app = %id, error = %e, "app store row skipped"),
        }
    }
    Ok(apps)
}

/// Refuses an app with the published default secret unless the broker listens on loopback only.
fn admit(app: AppConfig, on_loopback: bool) -> Result<AppConfig, String> {
    if app.has_published_secret() && !on_loopback {
        return Err(format!("secret: the published default secret {PUBLISHED_SECRET:?} is not served on a non-loopback address"));
    }
    Ok(app)
}

fn parse(row: &tokio_postgres::Row) -> Result<AppConfig, String> {
    let json = |i: usize, what: &str| -> Result<String, String> {
        row.try_get::<_, String>(i)
            .map_err(|e| format!("{what}: {e}"))
    };
    let rate: i32 = row.get(8);
    Ok(AppConfig {
        id: AppId::new(row.get::<_, String>(0)).map_err(|e| format!("id: {e}"))?,
        key: AppKey::new(row.get::<_, String>(1)).map_err(|e| format!("key: {e}"))?,
        secret: AppSecret::new(row.get::<_, String>(2)).map_err(|e| format!("secret: {e}"))?,
        enabled: row.get(3),
        limits: serde_json::from_str::<Limits>(&json(4, "limits")?)
            .map_err(|e| format!("limits: {e}"))?,
        webhooks: serde_json::from_str::<Vec<WebhookConfig>>(&json(5, "webhooks")?)
            .map_err(|e| format!("webhooks: {e}"))?,
        allowed_origins: serde_json::from_str(&json(6, "allowed_origins")?)
            .map_err(|e| format!("allowed_origins: {e}"))?,
        subscription_count: row.get(7),
        rest_requests_per_second: u32::try_from(rate)
            .map_err(|_| "rest_requests_per_second must not be negative".to_owned())?,
        authorized_connections: row.get(9),
        authorized_connection_timeout_secs: u64::try_from(row.get::<_, i32>(10))
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| "authorized_connection_timeout_secs must be at least 1".to_owned())?,
        history: row
            .try_get::<_, Option<String>>(11)
            .map_err(|e| format!("history: {e}"))?
            .map(|h| {
                let h: HistoryConfig =
                    serde_json::from_str(&h).map_err(|e| format!("history: {e}"))?;
                h.validate()?;
                Ok::<_, String>(h)
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_with_the_published_secret_is_served_on_loopback_only() {
        let published = AppConfig::default_app();
        assert!(admit(published.clone(), true).is_ok());
        let e = admit(published, false).unwrap_err();
        assert!(e.starts_with("secret:"), "{e}");
        let own = AppConfig {
            secret: AppSecret::new("a-secret-of-its-own").unwrap(),
            ..AppConfig::default_app()
        };
        assert!(admit(own, false).is_ok());
    }
}
