//! Creating accounts: shared by `/signup`, `chat-app create-user` and the demo user.
//!
//! Hashing is split from storing so that the web path can hash outside the
//! database pool (a slow hash never holds one of its few connections).

use diesel::PgConnection;

use crate::{config::Config, error::AppError, models::User, passwords, store, validate};

/// A validated name with its password hash, ready to store.
pub struct NewAccount {
    pub username: String,
    pub password_hash: String,
}

/// Validates both fields and hashes the password (slow: call off the async threads).
pub fn prepare(username: &str, password: &str) -> Result<NewAccount, AppError> {
    let username = validate::username(username)?.to_owned();
    validate::password(password)?;
    Ok(NewAccount {
        username,
        password_hash: passwords::hash(password)?,
    })
}

pub fn store(conn: &mut PgConnection, account: &NewAccount) -> Result<User, AppError> {
    Ok(store::create_user(
        conn,
        &account.username,
        &account.password_hash,
    )?)
}

/// Validates, hashes and stores a new account (command line and start-up use).
pub fn create(conn: &mut PgConnection, username: &str, password: &str) -> Result<User, AppError> {
    store(conn, &prepare(username, password)?)
}

/// On an empty database, creates the demo account if one was configured
/// (`CHAT_DEMO_PASSWORD`). Returns its name when one was created.
pub fn ensure_demo_user(
    conn: &mut PgConnection,
    config: &Config,
) -> Result<Option<String>, AppError> {
    let Some(demo) = config.demo.as_ref() else {
        return Ok(None);
    };
    if store::count_users(conn)? > 0 {
        return Ok(None);
    }
    let user = create(conn, &demo.user, &demo.password)?;
    tracing::info!(user = %user.username, "created demo user with the password from CHAT_DEMO_PASSWORD");
    Ok(Some(user.username))
}
