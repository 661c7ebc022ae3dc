//! Builds the HTTP server that serves both the WebSocket and REST endpoints.

use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::{adapter::LocalAdapter, config::Config, http, state::State, webhooks, ws};

/// Binds and runs the broker until it is stopped (SIGINT/SIGTERM).
pub async fn run(config: Config) -> std::io::Result<()> {
    let (state, webhook_receivers) = State::new(&config, Arc::new(LocalAdapter));
    let state = web::Data::new(state);
    for receiver in webhook_receivers {
        actix_web::rt::spawn(webhooks::run_sender(receiver, config.webhooks.clone()));
    }
    let sweeper = state.clone().into_inner();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = std::time::Instant::now();
            for app in sweeper.apps.iter() {
                app.hub.cache_sweep(now);
            }
        }
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/app/{key}", web::get().to(ws::connect))
            .configure(http::routes)
    })
    .shutdown_timeout(5)
    .bind((config.host.as_str(), config.port))?;
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    tracing::info!(host = %config.host, port = config.port, apps = config.apps.len(), "broker listening");
    server.run().await
}
