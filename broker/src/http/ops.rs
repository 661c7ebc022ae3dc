//! Endpoints for operators: liveness, readiness and metrics.
//!
//! `/health` says only "ok" and is public everywhere (load balancers probe it).
//! `/ready` and `/metrics` tell app ids, counts and the cluster's state, so who
//! may read them is an [`OpsAccess`] chosen per listener (see [`crate::server`]):
//! with `ops_token` set a bearer token is required; otherwise the public port
//! answers loopback peers only, and the `metrics_addr` listener answers anyone
//! who can reach it.

use std::net::SocketAddr;

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, ResponseError,
};

use crate::{config::OpsToken, state::State};

/// Who may read `/ready` and `/metrics` on one listener.
#[derive(Clone, Debug)]
pub enum OpsAccess {
    /// Only peers on a loopback address (the public port's default).
    LoopbackOnly,
    /// Whoever presents `Authorization: Bearer <ops_token>`, loopback peers included.
    Token(OpsToken),
    /// Anyone who reaches the listener (a `metrics_addr` without a token).
    Open,
}

/// Why an operations request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 403: the public port serves these to loopback peers only.
    NotLoopback,
    /// 401: the bearer token is missing or wrong.
    BadToken,
}

impl OpsAccess {
    /// Decides for a request from `peer` carrying `authorization` (the header's value).
    pub fn check(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
    ) -> Result<(), Refusal> {
        match self {
            Self::Open => Ok(()),
            Self::LoopbackOnly if peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) => {
                Ok(())
            }
            Self::LoopbackOnly => Err(Refusal::NotLoopback),
            Self::Token(token) => {
                // The scheme is case-insensitive (RFC 9110); the token is compared exactly.
                let presented = authorization
                    .and_then(|a| a.trim().split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim());
                if presented.is_some_and(|p| token.matches(p)) {
                    Ok(())
                } else {
                    Err(Refusal::BadToken)
                }
            }
        }
    }

    fn guard(&self, req: &HttpRequest) -> Result<(), Refusal> {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.check(req.peer_addr(), authorization)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotLoopback => "served to loopback peers only; set metrics_addr or ops_token to read it from elsewhere\n",
            Self::BadToken => "missing or wrong bearer token (ops_token)\n",
        })
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotLoopback => StatusCode::FORBIDDEN,
            Self::BadToken => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if *self == Self::BadToken {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.content_type("text/plain").body(self.to_string())
    }
}

/// `/health` on any listener.
pub fn health_route(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health));
}

/// `/ready` and `/metrics`, readable as `access` allows.
pub fn guarded_routes(cfg: &mut web::ServiceConfig, access: OpsAccess) {
    cfg.app_data(web::Data::new(access))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// `GET /health`: the process is up and serving HTTP.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// `GET /ready`: 200 when this node should receive traffic; 503 with the reason otherwise.
pub async fn ready(
    req: HttpRequest,
    access: web::Data<OpsAccess>,
    state: web::Data<State>,
) -> Result<HttpResponse, Refusal> {
    access.guard(&req)?;
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
    Ok(if problems.is_empty() {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(problems.join(", "))
    })
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(
    req: HttpRequest,
    access: web::Data<OpsAccess>,
    state: web::Data<State>,
) -> Result<HttpResponse, Refusal> {
    access.guard(&req)?;
    let body = state.metrics.render(&state.apps, state.adapter.as_ref());
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_default_answers_loopback_peers_only() {
        let a = OpsAccess::LoopbackOnly;
        assert_eq!(a.check(peer("127.0.0.1:5000"), None), Ok(()));
        assert_eq!(a.check(peer("[::1]:5000"), None), Ok(()));
        assert_eq!(
            a.check(peer("[::ffff:127.0.0.1]:5000"), None),
            Ok(()),
            "IPv4 loopback on a dual-stack socket"
        );
        assert_eq!(
            a.check(peer("192.0.2.1:5000"), None),
            Err(Refusal::NotLoopback)
        );
        assert_eq!(
            a.check(peer("[2001:db8::1]:5000"), None),
            Err(Refusal::NotLoopback)
        );
        assert_eq!(
            a.check(peer("10.0.0.1:5000"), Some("Bearer anything")),
            Err(Refusal::NotLoopback)
        );
        assert_eq!(
            a.check(None, None),
            Err(Refusal::NotLoopback),
            "an unknown peer is not loopback"
        );
    }

    #[test]
    fn a_token_is_required_from_every_peer() {
        let a = OpsAccess::Token(OpsToken::new("s3cret-token-0123".into()).unwrap());
        assert_eq!(
            a.check(peer("192.0.2.1:1"), Some("Bearer s3cret-token-0123")),
            Ok(())
        );
        assert_eq!(
            a.check(peer("192.0.2.1:1"), Some("bearer s3cret-token-0123")),
            Ok(()),
            "the scheme is case-insensitive"
        );
        assert_eq!(
            a.check(peer("192.0.2.1:1"), Some("Basic s3cret-token-0123")),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            a.check(peer("127.0.0.1:1"), None),
            Err(Refusal::BadToken),
            "loopback too: a local proxy makes every peer loopback"
        );
        assert_eq!(
            a.check(peer("127.0.0.1:1"), Some("Bearer s3cret-token-0124")),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            a.check(peer("127.0.0.1:1"), Some("s3cret-token-0123")),
            Err(Refusal::BadToken),
            "the Bearer scheme is needed"
        );
    }

    #[test]
    fn an_open_listener_answers_anyone() {
        assert_eq!(OpsAccess::Open.check(peer("192.0.2.1:1"), None), Ok(()));
    }
}
