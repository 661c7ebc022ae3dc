//! What every handler shares: settings, the database pool, the broker client.

use std::sync::Arc;

use actix_web::web;

use crate::{
    broadcast::Broadcaster, config::Config, db::Database, error::AppError, throttle::Throttle,
};

/// Built per worker thread, because the broker client (awc) is not `Send`.
pub struct AppState {
    pub config: Arc<Config>,
    /// Not ready until start-up has reached and migrated the database.
    pub database: Arc<Database>,
    pub broadcaster: Broadcaster,
    /// Shared by every worker, so the limits are per process.
    pub throttle: Arc<Throttle>,
}

impl AppState {
    pub fn new(config: Arc<Config>, database: Arc<Database>, throttle: Arc<Throttle>) -> Self {
        let broadcaster = Broadcaster::new(&config);
        Self {
            config,
            database,
            broadcaster,
            throttle,
        }
    }

    /// Runs blocking database work off the async threads; 503 while start-up
    /// still waits for the database.
    pub async fn db<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut diesel::PgConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.database.pool().ok_or(AppError::Starting)?.clone();
        web::block(move || {
            let mut conn = pool
                .get()
                .map_err(|e| AppError::Unavailable(e.to_string()))?;
            f(&mut conn)
        })
        .await?
    }
}
