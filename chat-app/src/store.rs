//! Every query the app makes. Synchronous: handlers run these on the blocking pool.

use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
};

use crate::{
    models::{NewUser, User},
    schema::{sessions, users},
};

pub mod conversations;
pub mod messages;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username is taken")]
    UsernameTaken,
    #[error("no such user")]
    NoSuchUser,
    #[error("the group is full")]
    GroupFull,
    #[error("the group would be too small")]
    GroupTooSmall,
    #[error(transparent)]
    Db(#[from] DieselError),
}

pub fn count_users(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(users::table.count().get_result(conn)?)
}

/// A new account, already a member of the conversation everyone belongs to.
pub fn create_user(
    conn: &mut PgConnection,
    username: &str,
    password_hash: &str,
) -> Result<User, StoreError> {
    conn.transaction(|c| {
        let user = diesel::insert_into(users::table)
            .values(NewUser {
                username,
                password_hash,
            })
            .returning(User::as_returning())
            .get_result(c)
            .map_err(|e| match e {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                    StoreError::UsernameTaken
                }
                other => StoreError::Db(other),
            })?;
        conversations::join_everyone(c, user.id)?;
        Ok(user)
    })
}

pub fn find_user_by_name(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Option<User>, StoreError> {
    Ok(users::table
        .filter(users::username.eq(username))
        .select(User::as_select())
        .first(conn)
        .optional()?)
}

pub fn find_user(conn: &mut PgConnection, id: i32) -> Result<Option<User>, StoreError> {
    Ok(users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()?)
}

/// The user a live session token belongs to; `None` when the session was ended
/// or is older than `max_age_secs`.
pub fn session_user(
    conn: &mut PgConnection,
    token_hash: &str,
    max_age_secs: u64,
) -> Result<Option<User>, StoreError> {
    let cutoff = session_cutoff(max_age_secs);
    Ok(sessions::table
        .inner_join(users::table)
        .filter(sessions::token_hash.eq(token_hash))
        .filter(sessions::created_at.gt(cutoff))
        .select(User::as_select())
        .first(conn)
        .optional()?)
}

fn session_cutoff(max_age_secs: u64) -> chrono::DateTime<chrono::Utc> {
    let age = chrono::Duration::seconds(
        i64::try_from(max_age_secs)
            .unwrap_or(i64::MAX / 1000)
            .min(i64::MAX / 1000),
    );
    chrono::Utc::now() - age
}

/// Records a new session, and drops this user's expired ones so the table does not grow without end.
pub fn create_session(
    conn: &mut PgConnection,
    token_hash: &str,
    user_id: i32,
    max_age_secs: u64,
) -> Result<(), StoreError> {
    diesel::delete(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::created_at.le(session_cutoff(max_age_secs))),
    )
    .execute(conn)?;
    diesel::insert_into(sessions::table)
        .values((
            sessions::token_hash.eq(token_hash),
            sessions::user_id.eq(user_id),
        ))
        .execute(conn)
        .map_err(|e| match e {
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                StoreError::NoSuchUser
            }
            other => StoreError::Db(other),
        })?;
    Ok(())
}

pub fn delete_session(conn: &mut PgConnection, token_hash: &str) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(sessions::table.filter(sessions::token_hash.eq(token_hash)))
            .execute(conn)?,
    )
}

pub fn delete_user_sessions(conn: &mut PgConnection, user_id: i32) -> Result<usize, StoreError> {
    Ok(diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(conn)?)
}
