//! `POST /apps/{id}/users/{user_id}/terminate_connections`.

use actix_web::{web, HttpRequest, HttpResponse};
use protocol::{ChannelName, ErrorCode};

use super::{
    auth::authenticate,
    body::RestBody,
    error::{bad_request, ApiError},
};
use crate::state::State;

/// Closes every connection signed in as the user, on every node. They are told
/// 4009 (unauthorized), so pusher-js does not reconnect them on its own.
pub async fn terminate_connections(
    req: HttpRequest,
    body: RestBody,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let (app_id, user_id) = path.into_inner();
    let authed = authenticate(&req, &body, &state, &app_id)?;
    let channel = ChannelName::for_user(&user_id).map_err(|e| bad_request(format!("invalid user id {user_id:?}: {e}")))?;
    state.adapter.close_subscribers(&authed.app, &channel, ErrorCode::Unauthorized);
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
