//! A chat with read receipts: messages in PostgreSQL, live updates through a
//! Pusher-compatible broker. `main.rs` is a thin command line over [`serve`].
#![forbid(unsafe_code)]

pub mod accounts;
pub mod body;
pub mod broadcast;
pub mod config;
pub mod csrf;
pub mod db;
pub mod error;
pub mod html;
pub mod models;
pub mod passwords;
pub mod routes;
pub mod schema;
pub mod session;
pub mod startup;
pub mod state;
pub mod store;
pub mod throttle;
pub mod validate;

use std::sync::Arc;

use actix_session::{storage::CookieSessionStore, SessionMiddleware};
use actix_web::{
    body::MessageBody,
    cookie::SameSite,
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    middleware::{DefaultHeaders, Logger},
    web, App, HttpServer,
};

pub use config::Config;
pub use db::{Database, DbPool};
use error::AppError;
pub use state::AppState;

pub const SESSION_COOKIE: &str = "chat_session";
/// Bodies are a message, a token and a socket id: anything larger is not ours.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The whole application; `main` serves it and the tests call it in-process.
pub fn build_app(
    config: Arc<Config>,
    database: Arc<Database>,
    throttle: Arc<throttle::Throttle>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let sessions =
        SessionMiddleware::builder(CookieSessionStore::default(), config.session_key.clone())
            .cookie_name(SESSION_COOKIE.to_owned())
            .cookie_secure(config.cookie_secure)
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .build();
    App::new()
        .app_data(web::Data::new(AppState::new(config, database, throttle)))
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(web::QueryConfig::default().error_handler(|e, _| AppError::bad_request(format!("invalid query: {e}")).into()))
        .wrap(sessions)
        .wrap(
            DefaultHeaders::new()
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("Referrer-Policy", "same-origin"))
                .add(("X-Frame-Options", "DENY")),
        )
        // Request line, status and time only: no headers, so no cookies in logs.
        .wrap(Logger::new("%r %s %Dms"))
        .configure(routes::configure)
        .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(AppError::NotFound("not found".into())) }))
}

/// Serves at once, and in the background waits for the database, migrates it
/// and creates the demo user on an empty one: until then `/health` answers 503
/// (see [`startup`]). Serves until stopped.
pub async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let config = Arc::new(config);
    tracing::info!(?config, "starting chat-app");
    let (host, port) = (config.host.clone(), config.port);
    let throttle = Arc::new(throttle::Throttle::new(&config.abuse));
    let database = Database::starting();
    let server = {
        let (config, database) = (config.clone(), database.clone());
        HttpServer::new(move || build_app(config.clone(), database.clone(), throttle.clone()))
            .bind((host.as_str(), port))?
    };
    for addr in server.addrs() {
        tracing::info!("chat listening on http://{addr}");
    }
    actix_web::rt::spawn(startup::wait_for_database(database, config));
    server.run().await?;
    Ok(())
}
