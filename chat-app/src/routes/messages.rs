//! Sending, listing and acknowledging messages: the original app's routes
//! (`POST /conversation`, `GET /conversations/`, `POST /conversations/{id}/delivered`,
//! which act on the conversation everyone belongs to unless told another), and
//! the per-conversation API the page uses.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::SocketId;
use serde::{Deserialize, Serialize};

use super::{member_conversation, parse_id};
use crate::{
    body::FormOrJson,
    broadcast::{EVENT_DELIVERED, EVENT_NEW, EVENT_RECEIPTS, EVENT_SEEN, NOTICE_NEW_MESSAGE},
    csrf,
    error::AppError,
    models::{Conversation, MessageView, ReceiptUpdate, Status, EVERYONE_ID},
    session::CurrentUser,
    state::AppState,
    store::messages as store,
    validate,
};

pub const DEFAULT_PAGE: i64 = 200;
pub const MAX_PAGE: i64 = 500;
/// Most message ids in one receipts request.
pub const MAX_RECEIPT_BATCH: usize = 200;
/// Most receipt updates in one `receipts` event, to stay well inside the broker's 10 KiB event limit.
const UPDATES_PER_EVENT: usize = 50;
/// Most names listed by `GET /api/messages/{id}/receipts`.
const MAX_RECEIPT_NAMES: i64 = 100;

fn parse_socket(s: Option<&str>) -> Result<Option<SocketId>, AppError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<SocketId>()
            .map(Some)
            .map_err(|_| AppError::bad_request("socket_id must look like 1234.5678")),
    }
}

#[derive(Debug, Deserialize)]
pub struct NewMessage {
    #[serde(default)]
    message: Option<String>,
    /// The conversation to post in; the one everyone belongs to when absent.
    #[serde(default)]
    conversation_id: Option<serde_json::Value>,
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

/// A message notice for members who do not have the conversation open.
#[derive(Serialize)]
struct Notice<'a> {
    conversation_id: i64,
    id: i64,
    name: &'a str,
    message: &'a str,
    created_at: &'a str,
}

/// A conversation id given as a number or a numeric string (forms send strings).
fn conversation_field(v: Option<&serde_json::Value>) -> Result<i64, AppError> {
    let bad = || AppError::bad_request("conversation_id must be a positive integer");
    match v {
        None | Some(serde_json::Value::Null) => Ok(EVERYONE_ID),
        Some(serde_json::Value::Number(n)) => n.as_i64().filter(|i| *i > 0).ok_or_else(bad),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(EVERYONE_ID),
        Some(serde_json::Value::String(s)) => {
            s.parse::<i64>().ok().filter(|i| *i > 0).ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

/// `POST /conversation` (the original route).
pub async fn create(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    body: FormOrJson<NewMessage>,
) -> Result<HttpResponse, AppError> {
    let cid = conversation_field(body.0.conversation_id.as_ref())?;
    post_message(user, state, session, req, cid, body.0).await
}

/// `POST /api/conversations/{id}/messages`.
pub async fn create_in(
    user: CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    FormOrJson(body): FormOrJson<NewMessage>,
) -> Result<HttpResponse, AppError> {
    let cid = parse_id(&path, "conversation")?;
    post_message(user, state, session, req, cid, body).await
}

async fn post_message(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    cid: i64,
    body: NewMessage,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let conv = member_conversation(&state, cid, user.id).await?;
    let text = validate::message(body.message.as_deref())?;
    let (view, recipients) = state
        .db(move |c| Ok(store::insert(c, &user, cid, &text)?))
        .await?;
    let broadcast = state
        .broadcaster
        .publish(&conv.channel(), EVENT_NEW, &view, None)
        .await;
    let notice = Notice {
        conversation_id: cid,
        id: view.id,
        name: &view.name,
        message: &view.message,
        created_at: &view.created_at,
    };
    state
        .broadcaster
        .send_to_users(&recipients, NOTICE_NEW_MESSAGE, &notice)
        .await;
    Ok(HttpResponse::Ok().json(Created {
        message: view,
        broadcast,
    }))
}

#[derive(Debug, Deserialize)]
pub struct Page {
    before: Option<String>,
    limit: Option<String>,
    conversation_id: Option<String>,
}

impl Page {
    fn parse(&self) -> Result<(Option<i64>, i64), AppError> {
        let before =
            match self.before.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(s.parse::<i64>().ok().filter(|b| *b > 0).ok_or_else(|| {
                    AppError::bad_request("before must be a positive message id")
                })?),
            };
        let limit = match self.limit.as_deref().filter(|s| !s.is_empty()) {
            None => DEFAULT_PAGE,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| {
                    AppError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}"))
                })?,
        };
        Ok((before, limit))
    }
}

/// `GET /conversations/` (the original route; `?conversation_id=` picks another conversation).
pub async fn list(
    user: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<Page>,
) -> Result<HttpResponse, AppError> {
    let cid = match query.conversation_id.as_deref().filter(|s| !s.is_empty()) {
        None => EVERYONE_ID,
        Some(s) => parse_id(s, "conversation")?,
    };
    page_of(user, state, cid, &query).await
}

/// `GET /api/conversations/{id}/messages?before=&limit=`: a page, oldest first.
pub async fn list_in(
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<Page>,
) -> Result<HttpResponse, AppError> {
    let cid = parse_id(&path, "conversation")?;
    page_of(user, state, cid, &query).await
}

async fn page_of(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    cid: i64,
    query: &Page,
) -> Result<HttpResponse, AppError> {
    let (before, limit) = query.parse()?;
    member_conversation(&state, cid, user.id).await?;
    let messages = state
        .db(move |c| Ok(store::page(c, cid, user.id, before, limit)?))
        .await?;
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

/// The original per-message receipt: the recipient tells the app a message
/// reached it (`Delivered`) or was on screen (`Seen`). The sender cannot
/// acknowledge their own message; receipts never move backwards; the
/// acknowledging connection (`socket_id`) is left out of the broadcast because
/// it already knows.
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
    let id = parse_id(&id, "message")?;
    let exclude = parse_socket(body.socket_id.as_deref())?;
    let (_, cid, sender) = state
        .db(move |c| Ok(store::locate(c, id)?))
        .await?
        .ok_or_else(|| AppError::NotFound("no such message".into()))?;
    let conv = member_conversation(&state, cid, user.id)
        .await
        .map_err(|_| AppError::NotFound("no such message".into()))?;
    const TEXT: &str = "text/plain; charset=utf-8";
    if sender == user.id {
        return Ok(HttpResponse::Ok()
            .content_type(TEXT)
            .body(if to == Status::Seen {
                "Awaiting Seen"
            } else {
                "Awaiting Delivery"
            }));
    }
    let changed = state
        .db(move |c| Ok(store::mark(c, user.id, cid, &[id], to)?))
        .await?;
    if changed.is_empty() {
        return Ok(HttpResponse::Ok().content_type(TEXT).body("ok"));
    }
    let view = state
        .db(move |c| Ok(store::views(c, &[id])?))
        .await?
        .pop()
        .ok_or_else(|| AppError::NotFound("no such message".into()))?;
    let event = if to == Status::Seen {
        EVENT_SEEN
    } else {
        EVENT_DELIVERED
    };
    let sent = state
        .broadcaster
        .publish(&conv.channel(), event, &view, exclude)
        .await;
    Ok(HttpResponse::Ok()
        .content_type(TEXT)
        .insert_header(("X-Broadcast", if sent { "true" } else { "false" }))
        .body("ok"))
}

#[derive(Debug, Deserialize)]
pub struct ReceiptBatch {
    /// `Delivered` or `Seen`.
    status: Option<String>,
    ids: Option<Vec<i64>>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

#[derive(Serialize)]
struct ReceiptsEvent<'a> {
    conversation_id: i64,
    updates: &'a [ReceiptUpdate],
}

#[derive(Serialize)]
struct BatchAnswer {
    changed: Vec<i64>,
    broadcast: bool,
}

/// `POST /api/conversations/{id}/receipts` (JSON `{status, ids, socket_id}`):
/// receipts for many messages in one request, as a page sends when it loads
/// messages that arrived while it was away. Senders hear one `receipts` event
/// per fifty changed messages.
pub async fn receipts(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    FormOrJson(body): FormOrJson<ReceiptBatch>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let cid = parse_id(&path, "conversation")?;
    let Some(to @ (Status::Delivered | Status::Seen)) =
        body.status.as_deref().and_then(Status::parse)
    else {
        return Err(AppError::bad_request("status must be Delivered or Seen"));
    };
    let ids = body.ids.unwrap_or_default();
    if ids.is_empty() || ids.len() > MAX_RECEIPT_BATCH {
        return Err(AppError::bad_request(format!(
            "ids must list 1 to {MAX_RECEIPT_BATCH} message ids"
        )));
    }
    let exclude = parse_socket(body.socket_id.as_deref())?;
    let conv = member_conversation(&state, cid, user.id).await?;
    let changed = state
        .db(move |c| Ok(store::mark(c, user.id, cid, &ids, to)?))
        .await?;
    let broadcast = publish_receipts(&state, &conv, &changed, exclude).await?;
    Ok(HttpResponse::Ok().json(BatchAnswer { changed, broadcast }))
}

async fn publish_receipts(
    state: &AppState,
    conv: &Conversation,
    changed: &[i64],
    exclude: Option<SocketId>,
) -> Result<bool, AppError> {
    if changed.is_empty() {
        return Ok(true);
    }
    let ids = changed.to_vec();
    let views = state.db(move |c| Ok(store::views(c, &ids)?)).await?;
    let updates: Vec<ReceiptUpdate> = views.iter().map(ReceiptUpdate::from).collect();
    let channel = conv.channel();
    let mut all = true;
    for chunk in updates.chunks(UPDATES_PER_EVENT) {
        all &= state
            .broadcaster
            .publish(
                &channel,
                EVENT_RECEIPTS,
                &ReceiptsEvent {
                    conversation_id: conv.id,
                    updates: chunk,
                },
                exclude,
            )
            .await;
    }
    Ok(all)
}

/// `GET /api/messages/{id}/receipts`: each recipient with when it was delivered and seen.
pub async fn recipients(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&path, "message")?;
    let (_, cid, _) = state
        .db(move |c| Ok(store::locate(c, id)?))
        .await?
        .ok_or_else(|| AppError::NotFound("no such message".into()))?;
    member_conversation(&state, cid, user.id)
        .await
        .map_err(|_| AppError::NotFound("no such message".into()))?;
    let list = state
        .db(move |c| Ok(store::recipients(c, id, MAX_RECEIPT_NAMES)?))
        .await?;
    Ok(HttpResponse::Ok().json(list))
}
