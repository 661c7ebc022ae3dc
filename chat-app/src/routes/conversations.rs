//! Sending, listing, and acknowledging messages.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::SocketId;
use serde::{Deserialize, Serialize};

use crate::{
    body::FormOrJson,
    broadcast::{EVENT_DELIVERED, EVENT_NEW, EVENT_SEEN},
    csrf,
    error::AppError,
    models::{MessageView, Status},
    session::CurrentUser,
    state::AppState,
    store, validate,
};

pub const DEFAULT_PAGE: i64 = 200;
pub const MAX_PAGE: i64 = 500;

#[derive(Debug, Deserialize)]
pub struct NewMessage {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

#[derive(Debug, Serialize)]
struct Created {
    #[serde(flatten)]
    message: MessageView,
    /// False when the broker could not be reached: the message is stored and
    /// others will see it when their page reloads its history.
    broadcast: bool,
}

pub async fn create(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(body): FormOrJson<NewMessage>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let text = validate::message(body.message.as_deref())?;
    let view = state.db(move |c| Ok(store::insert_message(c, &user, &text)?)).await?;
    let broadcast = state.broadcaster.publish(EVENT_NEW, &view, None).await;
    Ok(HttpResponse::Ok().json(Created { message: view, broadcast }))
}

#[derive(Debug, Deserialize)]
pub struct Page {
    before: Option<String>,
    limit: Option<String>,
}

pub async fn list(_user: CurrentUser, state: web::Data<AppState>, query: web::Query<Page>) -> Result<HttpResponse, AppError> {
    let before = match query.before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<i64>().ok().filter(|b| *b > 0).ok_or_else(|| AppError::bad_request("before must be a positive message id"))?),
    };
    let limit = match query.limit.as_deref().filter(|s| !s.is_empty()) {
        None => DEFAULT_PAGE,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| AppError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}")))?,
    };
    let messages = state.db(move |c| Ok(store::list_messages(c, before, limit)?)).await?;
    Ok(HttpResponse::Ok().json(messages))
}

#[derive(Debug, Deserialize)]
pub struct Receipt {
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

pub async fn delivered(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    id: web::Path<String>,
    body: FormOrJson<Receipt>,
) -> Result<HttpResponse, AppError> {
    acknowledge(user, state, session, req, id, body, Status::Delivered).await
}

pub async fn seen(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    id: web::Path<String>,
    body: FormOrJson<Receipt>,
) -> Result<HttpResponse, AppError> {
    acknowledge(user, state, session, req, id, body, Status::Seen).await
}

/// The recipient tells the app a message reached it (`Delivered`) or was on
/// screen (`Seen`). The sender cannot acknowledge their own message; the
/// status never moves backwards; the acknowledging connection (`socket_id`) is
/// left out of the broadcast because it already knows.
async fn acknowledge(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    id: web::Path<String>,
    FormOrJson(body): FormOrJson<Receipt>,
    to: Status,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let id: i64 = id.parse().map_err(|_| AppError::NotFound("no such message".into()))?;
    let exclude = match body.socket_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<SocketId>().map_err(|_| AppError::bad_request("socket_id must look like 1234.5678"))?),
    };

    enum Outcome {
        OwnMessage,
        Unchanged,
        Advanced(MessageView),
    }
    let user_id = user.id;
    let outcome = state
        .db(move |c| {
            let (msg, sender) = store::find_message(c, id)?.ok_or_else(|| AppError::NotFound("no such message".into()))?;
            if msg.user_id == user_id {
                return Ok(Outcome::OwnMessage);
            }
            Ok(match store::advance_status(c, id, to)? {
                Some(updated) => Outcome::Advanced(MessageView::new(&updated, &sender)),
                None => Outcome::Unchanged,
            })
        })
        .await?;

    const TEXT: &str = "text/plain; charset=utf-8";
    Ok(match outcome {
        Outcome::OwnMessage => {
            HttpResponse::Ok().content_type(TEXT).body(if to == Status::Seen { "Awaiting Seen" } else { "Awaiting Delivery" })
        }
        Outcome::Unchanged => HttpResponse::Ok().content_type(TEXT).body("ok"),
        Outcome::Advanced(view) => {
            let event = if to == Status::Seen { EVENT_SEEN } else { EVENT_DELIVERED };
            let sent = state.broadcaster.publish(event, &view, exclude).await;
            HttpResponse::Ok().content_type(TEXT).insert_header(("X-Broadcast", if sent { "true" } else { "false" })).body("ok")
        }
    })
}
