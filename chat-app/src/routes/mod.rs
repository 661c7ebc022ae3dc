//! URL map: one module per area.

pub mod auth;
pub mod conversations;
pub mod pages;
pub mod pusher_auth;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(pages::index)))
        .service(web::resource("/health").route(web::get().to(pages::health)))
        .service(web::resource("/login").route(web::get().to(auth::login_form)).route(web::post().to(auth::login)))
        .service(web::resource("/signup").route(web::get().to(auth::signup_form)).route(web::post().to(auth::signup)))
        .service(web::resource("/logout").route(web::get().to(auth::logout_form)).route(web::post().to(auth::logout)))
        .service(web::resource("/conversation").route(web::post().to(conversations::create)))
        .service(web::resource(["/conversations/", "/conversations"]).route(web::get().to(conversations::list)))
        .service(web::resource("/conversations/{id}/delivered").route(web::post().to(conversations::delivered)))
        .service(web::resource("/conversations/{id}/seen").route(web::post().to(conversations::seen)))
        .service(web::resource("/pusher/auth").route(web::post().to(pusher_auth::authorize)))
        .service(web::resource("/static/vendor/pusher.min.js").route(web::get().to(pages::pusher_js)))
        .service(web::resource("/static/{file}").route(web::get().to(pages::static_file)));
}
