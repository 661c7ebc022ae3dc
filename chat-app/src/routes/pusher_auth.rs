//! `/pusher/auth`: signs subscriptions to the presence and typing channels for logged-in users.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::{sign::sign_channel, SocketId};
use serde::Deserialize;
use serde_json::json;

use crate::{
    body::FormOrJson,
    broadcast::{CHAT_CHANNEL, PRESENCE_CHANNEL, TYPING_CHANNEL},
    csrf,
    error::AppError,
    session::CurrentUser,
    state::AppState,
};

/// What pusher-js posts (form-encoded).
#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    channel_name: Option<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

pub async fn authorize(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(body): FormOrJson<AuthRequest>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let socket_id: SocketId = body
        .socket_id
        .as_deref()
        .ok_or_else(|| AppError::bad_request("socket_id is required"))?
        .parse()
        .map_err(|_| AppError::bad_request("socket_id must look like 1234.5678"))?;
    let channel = body.channel_name.as_deref().ok_or_else(|| AppError::bad_request("channel_name is required"))?;
    let cfg = &state.config;
    let socket = socket_id.to_string();
    // Only the app's own channels: a logged-in user gets no signature for anything else.
    let answer = match channel {
        PRESENCE_CHANNEL => {
            let channel_data = json!({ "user_id": user.id.to_string(), "user_info": { "name": user.username } }).to_string();
            let auth = sign_channel(&cfg.app_key, &cfg.app_secret, &socket, channel, Some(&channel_data));
            json!({ "auth": auth, "channel_data": channel_data })
        }
        TYPING_CHANNEL | CHAT_CHANNEL => json!({ "auth": sign_channel(&cfg.app_key, &cfg.app_secret, &socket, channel, None) }),
        _ => return Err(AppError::Forbidden(format!("not allowed to subscribe to {channel:?}"))),
    };
    Ok(HttpResponse::Ok().json(answer))
}
