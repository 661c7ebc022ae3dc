//! The sidebar and conversation management: list, start a direct conversation,
//! create a group, add and remove members (the group's creator only), find users.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::member_conversation;
use crate::{
    body::FormOrJson,
    broadcast::{NOTICE_ADDED, NOTICE_MEMBERS, NOTICE_REMOVED},
    csrf,
    error::AppError,
    models::{channel_name, timestamp, Conversation, Kind, Status},
    session::CurrentUser,
    state::AppState,
    store::conversations as store,
    validate,
};

/// A group has at least this many members, creator included.
pub const GROUP_MIN_MEMBERS: i64 = 2;
/// Most users a search returns.
const SEARCH_LIMIT: i64 = 20;
/// Most members listed by `GET /api/conversations/{id}` (groups have at most 50; "everyone" is not listed).
const MEMBER_LIST_LIMIT: i64 = 200;

#[derive(Serialize)]
struct Summary {
    id: i64,
    kind: Kind,
    /// What to call it: the group's title, the other person's name, or "Everyone".
    title: String,
    channel: String,
    created_by: Option<i32>,
    member_count: i64,
    /// Counted up to 100 (the page shows "99+").
    unread: i64,
    last_message: Option<serde_json::Value>,
    last_message_at: String,
}

fn summary(row: store::SummaryRow) -> Summary {
    let kind = Kind::parse(&row.kind).unwrap_or(Kind::Group);
    let title = match kind {
        Kind::Everyone => row.title.unwrap_or_else(|| "Everyone".into()),
        Kind::Direct => row.peer.unwrap_or_else(|| "(left)".into()),
        Kind::Group => row.title.unwrap_or_default(),
    };
    let last_message = match (row.last_id, row.last_name, row.last_message) {
        (Some(id), Some(name), Some(message)) => {
            let mut last = json!({ "id": id, "name": name, "message": message });
            // As in history: how far I have acknowledged it, when it is someone else's to me.
            if row.last_for_me {
                last["my_status"] = Status::of_receipt(row.last_mine).as_str().into();
            }
            Some(last)
        }
        _ => None,
    };
    Summary {
        id: row.id,
        kind,
        title,
        channel: channel_name(row.id, kind, row.channel_epoch),
        created_by: row.created_by,
        member_count: row.member_count,
        unread: row.unread,
        last_message,
        last_message_at: timestamp(&row.last_message_at),
    }
}

async fn summary_for(state: &AppState, user_id: i32, cid: i64) -> Result<Summary, AppError> {
    let row = state
        .db(move |c| Ok(store::summaries(c, user_id, Some(cid))?))
        .await?
        .pop();
    row.map(summary)
        .ok_or_else(|| AppError::NotFound("no such conversation".into()))
}

/// `GET /api/conversations`: mine, newest activity first.
pub async fn list(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let rows = state
        .db(move |c| Ok(store::summaries(c, user.id, None)?))
        .await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(summary).collect::<Vec<_>>()))
}

/// `GET /api/conversations/{id}`: the summary and, except for "everyone", the members.
pub async fn show(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let cid = super::parse_id(&path, "conversation")?;
    let conv = member_conversation(&state, cid, user.id).await?;
    let s = summary_for(&state, user.id, cid).await?;
    let members = if conv.kind() == Kind::Everyone {
        Vec::new()
    } else {
        state
            .db(move |c| Ok(store::members_of(c, cid, MEMBER_LIST_LIMIT)?))
            .await?
    };
    let members: Vec<_> = members
        .into_iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "conversation": s, "members": members })))
}

#[derive(Debug, Deserialize)]
pub struct NewConversation {
    /// `direct` or `group`.
    kind: Option<String>,
    /// Direct: the other person.
    username: Option<String>,
    /// Group: its name and the members besides the creator.
    title: Option<String>,
    #[serde(default)]
    usernames: Vec<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

/// `POST /api/conversations` (JSON): `{kind: "direct", username}` opens (or
/// returns) the direct conversation with that user; `{kind: "group", title,
/// usernames}` creates a group of the creator and those users.
pub async fn create(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(body): FormOrJson<NewConversation>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let me = user.id;
    let (conv, new_members) = match body.kind.as_deref() {
        Some("direct") => {
            let name = body.username.unwrap_or_default().trim().to_owned();
            let other = state
                .db(move |c| Ok(crate::store::find_user_by_name(c, &name)?))
                .await?
                .ok_or_else(|| AppError::bad_request("no user by that name"))?;
            if other.id == me {
                return Err(AppError::bad_request(
                    "a direct conversation needs another person",
                ));
            }
            let (conv, is_new) = state
                .db(move |c| Ok(store::direct(c, me, other.id)?))
                .await?;
            (conv, if is_new { vec![other.id] } else { Vec::new() })
        }
        Some("group") => {
            let title = validate::title(body.title.as_deref())?;
            let max = state.config.group_max_members;
            let mut names: Vec<String> = body
                .usernames
                .iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect();
            names.sort();
            names.dedup();
            names.retain(|n| *n != user.username);
            let total = names.len() as i64 + 1;
            if total < GROUP_MIN_MEMBERS || total > max {
                return Err(AppError::bad_request(format!("a group has {GROUP_MIN_MEMBERS} to {max} members, you included (this one would have {total})")));
            }
            let lookup = names.clone();
            let found = state
                .db(move |c| Ok(store::users_by_names(c, &lookup)?))
                .await?;
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !found.iter().any(|u| &u.username == *n))
                .collect();
            if !missing.is_empty() {
                let list = missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(AppError::bad_request(format!("no such users: {list}")));
            }
            let ids: Vec<i32> = found.iter().map(|u| u.id).collect();
            let others = ids.clone();
            let conv = state
                .db(move |c| Ok(store::create_group(c, me, &title, &others)?))
                .await?;
            (conv, ids)
        }
        _ => return Err(AppError::bad_request("kind must be direct or group")),
    };
    let cid = conv.id;
    state
        .broadcaster
        .send_to_users(
            &new_members,
            NOTICE_ADDED,
            &json!({ "conversation_id": cid }),
        )
        .await;
    Ok(HttpResponse::Ok().json(summary_for(&state, me, cid).await?))
}

/// The group, if `user` created it; otherwise why not.
async fn managed_group(state: &AppState, cid: i64, user_id: i32) -> Result<Conversation, AppError> {
    let conv = member_conversation(state, cid, user_id).await?;
    if conv.kind() != Kind::Group {
        return Err(AppError::bad_request(
            "only groups have members to add or remove",
        ));
    }
    if conv.created_by != Some(user_id) {
        return Err(AppError::Forbidden(
            "only the group's creator can add or remove members".into(),
        ));
    }
    Ok(conv)
}

#[derive(Debug, Deserialize)]
pub struct AddMember {
    username: Option<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

/// `POST /api/conversations/{id}/members` `{username}` (creator only).
pub async fn add_member(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    path: web::Path<String>,
    FormOrJson(body): FormOrJson<AddMember>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let cid = super::parse_id(&path, "conversation")?;
    let conv = managed_group(&state, cid, user.id).await?;
    let name = body.username.unwrap_or_default().trim().to_owned();
    let other = state
        .db(move |c| Ok(crate::store::find_user_by_name(c, &name)?))
        .await?
        .ok_or_else(|| AppError::bad_request("no user by that name"))?;
    let max = state.config.group_max_members;
    let added = match state
        .db(move |c| Ok(store::add_member(c, cid, other.id, max)?))
        .await
    {
        Err(AppError::Conflict(_)) => {
            return Err(AppError::bad_request(format!(
                "a group has at most {max} members"
            )))
        }
        other => other?,
    };
    if added {
        let members = state.db(move |c| Ok(store::member_ids(c, cid)?)).await?;
        let others: Vec<i32> = members.into_iter().filter(|id| *id != other.id).collect();
        state
            .broadcaster
            .send_to_users(
                &[other.id],
                NOTICE_ADDED,
                &json!({ "conversation_id": cid }),
            )
            .await;
        state
            .broadcaster
            .send_to_users(
                &others,
                NOTICE_MEMBERS,
                &json!({ "conversation_id": cid, "channel": conv.channel() }),
            )
            .await;
    }
    Ok(HttpResponse::Ok().json(json!({ "added": added })))
}

#[derive(Debug, Deserialize)]
pub struct TokenOnly {
    #[serde(default)]
    csrf_token: Option<String>,
}

/// `DELETE /api/conversations/{id}/members/{user_id}` (creator only).
///
/// The conversation moves to a new channel (its epoch is part of the name)
/// before anyone is told: the removed member's live subscription is on the old
/// channel, where nothing is published any more, and `/pusher/auth` signs the
/// new one only for members. Remaining members get `members_changed` with the
/// new channel and resubscribe. This works whatever the removed member's page
/// does, and disconnects nobody (terminating the user's connections would also
/// cut their other conversations, and only reaches connections that signed in).
pub async fn remove_member(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    FormOrJson(body): FormOrJson<TokenOnly>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, body.csrf_token.as_deref())?;
    let (cid, uid) = path.into_inner();
    let cid = super::parse_id(&cid, "conversation")?;
    let uid: i32 = uid
        .parse()
        .map_err(|_| AppError::NotFound("no such member".into()))?;
    managed_group(&state, cid, user.id).await?;
    if uid == user.id {
        return Err(AppError::bad_request("the creator cannot be removed"));
    }
    let moved = match state
        .db(move |c| Ok(store::remove_member(c, cid, uid, GROUP_MIN_MEMBERS)?))
        .await
    {
        Err(AppError::Conflict(_)) => {
            return Err(AppError::bad_request(format!(
                "a group has at least {GROUP_MIN_MEMBERS} members"
            )))
        }
        other => other?,
    };
    let Some(conv) = moved else {
        return Err(AppError::NotFound("no such member".into()));
    };
    let members = state.db(move |c| Ok(store::member_ids(c, cid)?)).await?;
    state
        .broadcaster
        .send_to_users(
            &members,
            NOTICE_MEMBERS,
            &json!({ "conversation_id": cid, "channel": conv.channel() }),
        )
        .await;
    state
        .broadcaster
        .send_to_users(&[uid], NOTICE_REMOVED, &json!({ "conversation_id": cid }))
        .await;
    Ok(HttpResponse::Ok().json(json!({ "removed": true, "channel": conv.channel() })))
}

#[derive(Debug, Deserialize)]
pub struct Search {
    q: Option<String>,
}

/// `GET /api/users?q=prefix`: up to 20 other users whose name starts with it.
pub async fn search_users(
    CurrentUser(user): CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<Search>,
) -> Result<HttpResponse, AppError> {
    let q = query.q.as_deref().unwrap_or("").trim().to_owned();
    if q.chars().count() > validate::USERNAME_MAX_CHARS {
        return Err(AppError::bad_request("q is longer than any username"));
    }
    let found = state
        .db(move |c| Ok(store::search_users(c, &q, user.id, SEARCH_LIMIT)?))
        .await?;
    Ok(HttpResponse::Ok().json(
        found
            .into_iter()
            .map(|(id, name)| json!({ "id": id, "name": name }))
            .collect::<Vec<_>>(),
    ))
}
