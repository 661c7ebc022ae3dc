//! The connection pool and the migrations embedded in the binary.

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
