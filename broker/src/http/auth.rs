//! Finds the app named in the path and checks the request's signature.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use protocol::sign::RestRequest;

use super::{body::RestBody, error::ApiError};
use crate::{apps::App, state::State};

/// A request to `/apps/{app_id}/…` that passed the signature check, with its
/// decoded query and its body. As an extractor, it is the one place every REST
/// handler's request is authenticated.
pub struct Authed {
    pub app: Arc<App>,
    pub query: Vec<(String, String)>,
    pub body: web::Bytes,
}

impl FromRequest for Authed {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        // Bounded by max_rest_body_bytes; an oversized body is drained before the 413 (see `body`).
        let body = RestBody::from_request(&req, payload);
        Box::pin(async move {
            let body = body.await?.into_bytes();
            let state = req
                .app_data::<web::Data<State>>()
                .expect("State is registered")
                .clone();
            let app_id = req
                .match_info()
                .get("app_id")
                .unwrap_or_default()
                .to_owned();
            Ok(authenticate(&req, body, &state, &app_id)?)
        })
    }
}

impl Authed {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn authenticate(
    req: &HttpRequest,
    body: web::Bytes,
    state: &State,
    app_id: &str,
) -> Result<Authed, ApiError> {
    let app = state
        .apps
        .by_id(app_id)
        .ok_or_else(|| ApiError::AppNotFound(app_id.to_owned()))?;
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?
        .into_inner();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The signature covers the path as sent, so verify against the raw path.
    RestRequest {
        method: req.method().as_str(),
        path: req.path(),
        query: &query,
        body: &body,
    }
    .verify(&app.key, &app.secret, now)?;
    admit(&app)?;
    Ok(Authed { app, query, body })
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
