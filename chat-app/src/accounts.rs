//! Creating accounts: shared by `/signup`, `chat-app create-user` and the demo user.

use diesel::PgConnection;

use crate::{config::Config, error::AppError, models::User, passwords, store, validate};

/// Validates, hashes and stores a new account.
pub fn create(conn: &mut PgConnection, username: &str, password: &str) -> Result<User, AppError> {
    let username = validate::username(username)?;
    validate::password(password)?;
    let hash = passwords::hash(password)?;
    Ok(store::create_user(conn, username, &hash)?)
}

/// On an empty database, creates the configured demo account so that a fresh
/// install can be tried at once. Returns its name when one was created.
pub fn ensure_demo_user(conn: &mut PgConnection, config: &Config) -> Result<Option<String>, AppError> {
    let Some(name) = config.demo_user.as_deref() else {
        return Ok(None);
    };
    if store::count_users(conn)? > 0 {
        return Ok(None);
    }
    let user = create(conn, name, &config.demo_password)?;
    if config.demo_password_is_default {
        // The default is documented in the README, so printing it reveals nothing new.
        tracing::warn!(user = %user.username, password = crate::config::DEFAULT_DEMO_PASSWORD, "created demo user with the default password; set CHAT_DEMO_PASSWORD to choose another");
    } else {
        tracing::info!(user = %user.username, "created demo user with the password from CHAT_DEMO_PASSWORD");
    }
    Ok(Some(user.username))
}
