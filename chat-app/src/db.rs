//! The connection pool, the migrations embedded in the binary, and
//! [`Database`]: the pool once start-up has reached and migrated the database.

use std::sync::{Arc, OnceLock};

use diesel::{
    pg::PgConnection,
    r2d2::{ConnectionManager, Pool, PooledConnection},
    Connection,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub type DbPool = Pool<ConnectionManager<PgConnection>>;
pub type DbConn = PooledConnection<ConnectionManager<PgConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("cannot apply migrations: {0}")]
    Migrate(String),
}

/// Connects once, applies pending migrations, then builds the pool.
pub fn connect_and_migrate(database_url: &str, max_size: u32) -> Result<DbPool, SetupError> {
    let mut conn =
        PgConnection::establish(database_url).map_err(|e| SetupError::Connect(e.to_string()))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| SetupError::Migrate(e.to_string()))?;
    for m in &applied {
        tracing::info!(migration = %m, "applied migration");
    }
    let manager = ConnectionManager::<PgConnection>::new(database_url);
    Pool::builder()
        .max_size(max_size)
        .connection_timeout(std::time::Duration::from_secs(10))
        .build(manager)
        .map_err(|e| SetupError::Connect(e.to_string()))
}

/// The database as the handlers see it. The server answers before the
/// database is reachable (so that an orchestrator sees a live process that is
/// not ready, rather than one that exits), and this holds the pool from the
/// moment start-up has migrated it. Why it is not ready yet goes to the log
/// only: the readiness answer is public and need not show where the database is.
#[derive(Default)]
pub struct Database {
    pool: OnceLock<DbPool>,
}

impl Database {
    /// Not ready yet: start-up will call [`Database::set_ready`].
    pub fn starting() -> Arc<Self> {
        Arc::default()
    }

    /// Ready from the start (tests, and tools that migrated already).
    pub fn ready(pool: DbPool) -> Arc<Self> {
        let db = Self::starting();
        db.set_ready(pool);
        db
    }

    pub fn set_ready(&self, pool: DbPool) {
        // Start-up sets it once; were it set twice, the pools would be equivalent.
        let _ = self.pool.set(pool);
    }

    /// The pool, once start-up has reached and migrated the database.
    pub fn pool(&self) -> Option<&DbPool> {
        self.pool.get()
    }
}

/// `host:port/name` of a database URL: what logs may show (never the password).
pub fn display_target(database_url: &str) -> &str {
    let rest = database_url
        .split_once("://")
        .map_or(database_url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('?').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_shown_has_no_credentials() {
        assert_eq!(
            display_target("postgres://chat:s3cret@db:5432/chat?sslmode=disable"),
            "db:5432/chat"
        );
        assert_eq!(
            display_target("postgres://postgres@127.0.0.1:5432/chat"),
            "127.0.0.1:5432/chat"
        );
        assert_eq!(display_target("postgres:///chat"), "/chat");
    }
}
