//! Endpoints for operators: liveness, readiness and metrics.

use actix_web::{web, HttpResponse};

use crate::state::State;

/// `GET /health`: the process is up and serving HTTP.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// `GET /ready`: 200 when this node should receive traffic; 503 with the reason otherwise.
pub async fn ready(state: web::Data<State>) -> HttpResponse {
    let mut problems = Vec::new();
    if state.is_shutting_down() {
        problems.push("shutting down");
    }
    if !state.adapter.healthy() {
        problems.push("adapter unavailable");
    }
    if !state.apps.ready() {
        problems.push("app store not loaded");
    }
    if problems.is_empty() {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    } else {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body(problems.join(", "))
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<State>) -> HttpResponse {
    let body = state.metrics.render(&state.apps, state.adapter.as_ref());
    HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(body)
}
