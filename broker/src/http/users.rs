//! `POST /apps/{id}/users/{user_id}/terminate_connections`.

use actix_web::{web, HttpResponse};
use protocol::{ChannelName, ErrorCode};

use super::{
    auth::Authed,
    error::{bad_request, ApiError},
};
use crate::state::State;

/// Closes every connection signed in as the user, on every node. They are told
/// 4009 (unauthorized), so pusher-js does not reconnect them on its own.
pub async fn terminate_connections(
    authed: Authed,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let (_, user_id) = path.into_inner();
    let channel = ChannelName::for_user(&user_id)
        .map_err(|e| bad_request(format!("invalid user id {user_id:?}: {e}")))?;
    state
        .adapter
        .close_subscribers(&authed.app, &channel, ErrorCode::Unauthorized);
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
