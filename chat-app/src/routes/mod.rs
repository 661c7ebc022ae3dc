//! URL map: one module per area.

pub mod auth;
pub mod conversations;
pub mod messages;
pub mod pages;
pub mod pusher_auth;

use actix_web::web;

use crate::{
    error::AppError, models::Conversation, state::AppState, store::conversations as store,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(pages::index)))
        .service(web::resource("/health").route(web::get().to(pages::health)))
        .service(web::resource("/login").route(web::get().to(auth::login_form)).route(web::post().to(auth::login)))
        .service(web::resource("/signup").route(web::get().to(auth::signup_form)).route(web::post().to(auth::signup)))
        .service(web::resource("/logout").route(web::get().to(auth::logout_form)).route(web::post().to(auth::logout)))
        // The original app's routes, on the conversation everyone belongs to.
        .service(web::resource("/conversation").route(web::post().to(messages::create)))
        .service(web::resource(["/conversations/", "/conversations"]).route(web::get().to(messages::list)))
        .service(web::resource("/conversations/{id}/delivered").route(web::post().to(messages::delivered)))
        .service(web::resource("/conversations/{id}/seen").route(web::post().to(messages::seen)))
        // Conversations with members.
        .service(web::resource("/api/conversations").route(web::get().to(conversations::list)).route(web::post().to(conversations::create)))
        .service(web::resource("/api/conversations/{id}").route(web::get().to(conversations::show)))
        .service(web::resource("/api/conversations/{id}/messages").route(web::get().to(messages::list_in)).route(web::post().to(messages::create_in)))
        .service(web::resource("/api/conversations/{id}/receipts").route(web::post().to(messages::receipts)))
        .service(web::resource("/api/conversations/{id}/members").route(web::post().to(conversations::add_member)))
        .service(web::resource("/api/conversations/{id}/members/{user_id}").route(web::delete().to(conversations::remove_member)))
        .service(web::resource("/api/messages/{id}/receipts").route(web::get().to(messages::recipients)))
        .service(web::resource("/api/users").route(web::get().to(conversations::search_users)))
        .service(web::resource("/pusher/auth").route(web::post().to(pusher_auth::authorize)))
        .service(web::resource("/pusher/user-auth").route(web::post().to(pusher_auth::user_auth)))
        .service(web::resource("/static/vendor/pusher.min.js").route(web::get().to(pages::pusher_js)))
        .service(web::resource("/static/vendor/pusher-recovery.js").route(web::get().to(pages::recovery_js)))
        .service(web::resource("/static/{file}").route(web::get().to(pages::static_file)));
}

/// A positive id from a path; anything else is "no such {what}" (404), like an id that does not exist.
pub(crate) fn parse_id(raw: &str, what: &str) -> Result<i64, AppError> {
    raw.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| AppError::NotFound(format!("no such {what}")))
}

/// The conversation if `user_id` is a member; 404 otherwise, so that
/// non-members cannot tell which conversations exist.
pub(crate) async fn member_conversation(
    state: &AppState,
    cid: i64,
    user_id: i32,
) -> Result<Conversation, AppError> {
    state
        .db(move |c| Ok(store::for_member(c, cid, user_id)?))
        .await?
        .ok_or_else(|| AppError::NotFound("no such conversation".into()))
}
