//! Who is logged in: the session holds a user id, checked against the database
//! on every request so that a deleted account's cookie stops working.

use std::future::Future;
use std::pin::Pin;

use actix_session::{Session, SessionExt};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use crate::{csrf, error::AppError, models::User, state::AppState, store};

const USER_ID: &str = "user_id";

pub async fn current_user(session: &Session, state: &AppState) -> Result<Option<User>, AppError> {
    let Ok(Some(id)) = session.get::<i32>(USER_ID) else {
        return Ok(None);
    };
    let user = state.db(move |c| Ok(store::find_user(c, id)?)).await?;
    if user.is_none() {
        session.remove(USER_ID);
    }
    Ok(user)
}

/// Starts a logged-in session under a new cookie value with a new CSRF token,
/// so nothing planted before login (session fixation) carries over.
pub fn log_in(session: &Session, user: &User) -> Result<(), AppError> {
    session.renew();
    session.insert(USER_ID, user.id).map_err(|e| AppError::Internal(e.to_string()))?;
    csrf::rotate(session)?;
    Ok(())
}

pub fn log_out(session: &Session) {
    session.purge();
}

/// Extractor for handlers that need a login; answers 401 otherwise.
pub struct CurrentUser(pub User);

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| AppError::Internal("app state missing".into()))?;
            match current_user(&req.get_session(), state).await? {
                Some(u) => Ok(CurrentUser(u)),
                None => Err(AppError::Unauthorized),
            }
        })
    }
}
