//! Start-up's wait for the database: until PostgreSQL answers and the
//! migrations have run, the server is up but not ready (`/health` answers 503),
//! and attempts are retried with a growing delay. An orchestrator that starts the chat before its database, or a database that
//! restarts while the chat starts, then costs a delay instead of an exit.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::{
    accounts,
    config::Config,
    db::{self, Database},
};

/// The first retry comes quickly (a database that is just starting is often
/// up within a second); later ones are spaced up to this, so a long outage
/// costs a log line every few seconds and readiness follows within as long.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// Connections the server's pool keeps at most.
pub const POOL_SIZE: u32 = 10;

/// Retries until the database is reachable and migrated, creates the demo user
/// if configured, then hands the pool to `database`. Never gives up: the
/// process stays up and says what it waits for.
pub async fn wait_for_database(database: Arc<Database>, config: Arc<Config>) {
    let target = db::display_target(&config.database_url).to_owned();
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(LONGEST_RETRY)
        .with_jitter()
        .without_max_times()
        .build();
    for attempt in 1u32.. {
        let cfg = config.clone();
        let tried = actix_web::web::block(move || prepare(&cfg)).await;
        let error = match tried {
            Ok(Ok(pool)) => {
                tracing::info!(database = %target, attempt, "database ready");
                database.set_ready(pool);
                return;
            }
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        let wait = delays.next().unwrap_or(LONGEST_RETRY);
        tracing::warn!(
            database = %target,
            attempt,
            %error,
            retry_in_ms = wait.as_millis() as u64,
            "waiting for the database before serving: not ready until it answers and is migrated"
        );
        actix_web::rt::time::sleep(wait).await;
    }
}

/// One attempt: connect, migrate, build the pool, create the demo user.
fn prepare(config: &Config) -> Result<db::DbPool, String> {
    let pool =
        db::connect_and_migrate(&config.database_url, POOL_SIZE).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    accounts::ensure_demo_user(&mut conn, config).map_err(|e| e.to_string())?;
    Ok(pool)
}
