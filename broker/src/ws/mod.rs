//! The WebSocket endpoint `/app/{key}`: the handshake checks, then a
//! [`session`] task per connection.

pub mod rate;
pub mod session;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason};
use protocol::{frame, ErrorCode};

use crate::{apps::App, state::State};

/// Protocol versions this broker speaks; pusher-js 8 uses 7.
const SUPPORTED_PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

/// Why a connection is refused right after the upgrade.
fn check(state: &State, key: &str, protocol: Option<&str>, origin: Option<&str>) -> Result<Arc<App>, ErrorCode> {
    let app = state.apps.by_key(key).ok_or(ErrorCode::AppNotFound)?;
    if !app.enabled {
        return Err(ErrorCode::AppDisabled);
    }
    if !app.origin_allowed(origin) {
        return Err(ErrorCode::Unauthorized);
    }
    let version: u32 = protocol
        .ok_or(ErrorCode::NoProtocolVersion)?
        .parse()
        .map_err(|_| ErrorCode::InvalidVersionFormat)?;
    if !SUPPORTED_PROTOCOLS.contains(&version) {
        return Err(ErrorCode::UnsupportedProtocolVersion);
    }
    if !app.hub.try_add_connection(app.limits.max_connections) {
        return Err(ErrorCode::OverConnectionQuota);
    }
    Ok(app)
}

/// `GET /app/{key}?protocol=7&client=js&version=8.6.0`
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    key: web::Path<String>,
    state: web::Data<State>,
) -> actix_web::Result<HttpResponse> {
    let (response, mut ws, stream) = actix_ws::handle(&req, body)?;
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default();
    let protocol = query.iter().find(|(k, _)| k == "protocol").map(|(_, v)| v.as_str());
    let origin = req.headers().get("origin").and_then(|o| o.to_str().ok());
    match check(&state, &key, protocol, origin) {
        Ok(app) => {
            let state = state.into_inner();
            actix_web::rt::spawn(session::run(state, app, ws, stream));
        }
        Err(code) => {
            tracing::debug!(code = code.code(), "refusing connection");
            actix_web::rt::spawn(async move {
                let _ = ws.text(frame::error_code(code)).await;
                let _ = ws.close(Some(CloseReason { code: CloseCode::Other(code.code()), description: Some(code.message().into()) })).await;
            });
        }
    }
    Ok(response)
}
