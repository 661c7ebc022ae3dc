//! Finds the app named in the path and checks the request's signature.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use actix_web::{web, HttpRequest};
use protocol::sign::RestRequest;

use super::error::ApiError;
use crate::{apps::App, state::State};

/// A request that passed the signature check, with its decoded query.
pub struct Authed {
    pub app: Arc<App>,
    pub query: Vec<(String, String)>,
}

impl Authed {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

pub fn authenticate(req: &HttpRequest, body: &[u8], state: &State, app_id: &str) -> Result<Authed, ApiError> {
    let app = state.apps.by_id(app_id).ok_or_else(|| ApiError::AppNotFound(app_id.to_owned()))?;
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?
        .into_inner();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // The signature covers the path as sent, so verify against the raw path.
    RestRequest { method: req.method().as_str(), path: req.path(), query: &query, body }.verify(&app.key, &app.secret, now)?;
    admit(&app)?;
    Ok(Authed { app, query })
}

/// What an authenticated request must still pass: the app is enabled and within its REST rate.
pub fn admit(app: &App) -> Result<(), ApiError> {
    if !app.enabled {
        return Err(ApiError::AppDisabled);
    }
    if !app.allow_rest_request() {
        return Err(ApiError::RateLimited);
    }
    Ok(())
}
