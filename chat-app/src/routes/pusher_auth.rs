//! `/pusher/auth` signs channel subscriptions, `/pusher/user-auth` signs
//! `pusher.signin()`; both for logged-in users only, and each channel only for
//! those allowed to read it.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::{
    sign::{sign_channel, sign_user},
    SocketId,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    body::FormOrJson,
    broadcast::PRESENCE_CHANNEL,
    csrf,
    error::AppError,
    models::{parse_channel, EVERYONE_CHANNEL, EVERYONE_ID},
    session::CurrentUser,
    state::AppState,
    store::conversations as store,
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

fn socket_of(raw: Option<&str>) -> Result<SocketId, AppError> {
    raw.ok_or_else(|| AppError::bad_request("socket_id is required"))?
        .parse()
        .map_err(|_| AppError::bad_request("socket_id must look like 1234.5678"))
}

pub async fn authorize(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(body): FormOrJson<AuthRequest>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let socket = socket_of(body.socket_id.as_deref())?.to_string();
    let channel = body
        .channel_name
        .as_deref()
        .ok_or_else(|| AppError::bad_request("channel_name is required"))?;
    let cfg = &state.config;
    let refuse = || AppError::Forbidden(format!("not allowed to subscribe to {channel:?}"));
    // Only the app's own channels, and a conversation's only for its members
    // and only under its current epoch (an old name belongs to removed members).
    let conversation = match channel {
        PRESENCE_CHANNEL => {
            let channel_data =
                json!({ "user_id": user.id.to_string(), "user_info": { "name": user.username } })
                    .to_string();
            let auth = sign_channel(
                &cfg.app_key,
                &cfg.app_secret,
                &socket,
                channel,
                Some(&channel_data),
            );
            return Ok(
                HttpResponse::Ok().json(json!({ "auth": auth, "channel_data": channel_data }))
            );
        }
        EVERYONE_CHANNEL => EVERYONE_ID,
        other => parse_channel(other).map(|(id, _)| id).ok_or_else(refuse)?,
    };
    let uid = user.id;
    let conv = state
        .db(move |c| Ok(store::for_member(c, conversation, uid)?))
        .await?
        .ok_or_else(refuse)?;
    if conv.channel() != channel {
        return Err(refuse());
    }
    Ok(HttpResponse::Ok().json(
        json!({ "auth": sign_channel(&cfg.app_key, &cfg.app_secret, &socket, channel, None) }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct SigninRequest {
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

/// `pusher.signin()`: the connection becomes this user, so notices sent to the
/// user (`#server-to-user-{id}`) reach it.
pub async fn user_auth(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(body): FormOrJson<SigninRequest>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let socket = socket_of(body.socket_id.as_deref())?.to_string();
    let user_data =
        json!({ "id": user.id.to_string(), "user_info": { "name": user.username } }).to_string();
    let auth = sign_user(
        &state.config.app_key,
        &state.config.app_secret,
        &socket,
        &user_data,
    );
    Ok(HttpResponse::Ok().json(json!({ "auth": auth, "user_data": user_data })))
}
