//! The HTTP API under `/apps/{app_id}`, plus the health endpoint.

mod auth;
mod channels;
pub mod error;
mod events;
mod users;

use actix_web::{web, HttpResponse};

/// Largest REST body accepted before parsing (a full batch of maximum-size events fits).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .route("/health", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
        .service(
            web::scope("/apps/{app_id}")
                .route("/events", web::post().to(events::trigger))
                .route("/batch_events", web::post().to(events::batch))
                .route("/channels", web::get().to(channels::list))
                .route("/channels/{channel_name}", web::get().to(channels::show))
                .route("/channels/{channel_name}/users", web::get().to(channels::users))
                .route("/users/{user_id}/terminate_connections", web::post().to(users::terminate_connections)),
        );
}
