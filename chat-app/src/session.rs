//! Who is logged in. The signed cookie holds a random session token; the
//! database holds its hash in `sessions`. Every request looks the token up, so
//! deleting the row (logout, "log out everywhere", account deletion) ends the
//! session at once, even for a copy of the cookie taken before.

use std::future::Future;
use std::pin::Pin;

use actix_session::{Session, SessionExt};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{csrf, error::AppError, models::User, state::AppState, store};

const TOKEN: &str = "sid";

/// Hex SHA-256 of a session token: what the `sessions` table stores.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub async fn current_user(session: &Session, state: &AppState) -> Result<Option<User>, AppError> {
    let Ok(Some(token)) = session.get::<String>(TOKEN) else {
        return Ok(None);
    };
    let hash = token_hash(&token);
    let max_age = state.config.session_max_age_secs;
    let user = state
        .db(move |c| Ok(store::session_user(c, &hash, max_age)?))
        .await?;
    if user.is_none() {
        // Ended elsewhere, expired, or the account is gone: forget the token.
        session.remove(TOKEN);
    }
    Ok(user)
}

/// Starts a logged-in session under a new cookie value with a new CSRF token,
/// so nothing planted before login (session fixation) carries over.
pub async fn log_in(session: &Session, state: &AppState, user: &User) -> Result<(), AppError> {
    let token = new_token();
    let (hash, user_id, max_age) = (
        token_hash(&token),
        user.id,
        state.config.session_max_age_secs,
    );
    state
        .db(move |c| Ok(store::create_session(c, &hash, user_id, max_age)?))
        .await?;
    session.renew();
    session
        .insert(TOKEN, token)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    csrf::rotate(session)?;
    Ok(())
}

/// Ends this session on the server and clears the cookie.
pub async fn log_out(session: &Session, state: &AppState) -> Result<(), AppError> {
    if let Ok(Some(token)) = session.get::<String>(TOKEN) {
        let hash = token_hash(&token);
        state
            .db(move |c| Ok(store::delete_session(c, &hash)?))
            .await?;
    }
    session.purge();
    Ok(())
}

/// Ends every session of `user_id` (all browsers and devices), then clears this cookie.
pub async fn log_out_everywhere(
    session: &Session,
    state: &AppState,
    user_id: i32,
) -> Result<usize, AppError> {
    let ended = state
        .db(move |c| Ok(store::delete_user_sessions(c, user_id)?))
        .await?;
    session.purge();
    Ok(ended)
}

/// Extractor for handlers that need a login; answers 401 otherwise.
pub struct CurrentUser(pub User);

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| AppError::Internal("app state missing".into()))?;
            match current_user(&req.get_session(), state).await? {
                Some(u) => Ok(CurrentUser(u)),
                None => Err(AppError::Unauthorized),
            }
        })
    }
}
