//! The chat page, static assets and the health check.

use actix_files::NamedFile;
use actix_session::Session;
use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use crate::{csrf, error::AppError, html, session, state::AppState};

pub async fn index(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, AppError> {
    let Some(user) = session::current_user(&session, &state).await? else {
        return Ok(HttpResponse::Found()
            .insert_header(("Location", "/login"))
            .finish());
    };
    let token = csrf::token(&session)?;
    let page = html::chat_page(&html::ChatPage {
        csrf_token: &token,
        username: &user.username,
        user_id: user.id,
        config: &state.config,
    });
    Ok(html::respond(StatusCode::OK, &state.config, page))
}

/// Readiness, for start-up scripts, orchestrators and load balancers: 200 when
/// the database answers; 503 while start-up still waits for it or when it stops
/// answering (the process stays up either way).
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    use diesel::RunQueryDsl;
    state
        .db(|c| {
            diesel::sql_query("SELECT 1")
                .execute(c)
                .map_err(|e| AppError::Unavailable(e.to_string()))
        })
        .await?;
    Ok(HttpResponse::Ok().content_type("text/plain").body("ok"))
}

/// pusher-js straight from the npm install, so the page needs no CDN.
pub async fn pusher_js(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let path = state
        .config
        .node_modules
        .join("pusher-js/dist/web/pusher.min.js");
    let file = NamedFile::open_async(&path).await.map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "pusher-js not found: run `npm ci` or set CHAT_NODE_MODULES");
        AppError::NotFound("pusher.min.js is not installed".into())
    })?;
    Ok(file.into_response(&req))
}

/// The project's recovery helper (clients/pusher-recovery), built into the
/// binary: it is part of this repository rather than an npm install, and the
/// page must get the very version this broker's wire contract was written for.
const RECOVERY_JS: &str = include_str!("../../../clients/pusher-recovery/index.js");

/// The helper as an ES module for the page's `import()`; revalidated on each
/// load (a new binary may carry a new helper).
pub async fn recovery_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(RECOVERY_JS)
}

/// Files directly in the web directory; the name is checked so that no path
/// can leave it.
pub async fn static_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = name.into_inner();
    let safe = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !safe {
        return Err(AppError::NotFound("no such file".into()));
    }
    let file = NamedFile::open_async(state.config.web_dir.join(&name))
        .await
        .map_err(|_| AppError::NotFound("no such file".into()))?;
    Ok(file.into_response(&req))
}
