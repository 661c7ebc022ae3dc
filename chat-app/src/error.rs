//! One error type for every handler, and the HTTP status each case answers with.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde_json::json;

use crate::{
    store::StoreError,
    throttle::{HashingBusy, TooMany},
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("login required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many attempts, try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// Every password-hashing slot stayed busy for the configured wait.
    #[error("the server is busy, try again shortly")]
    Busy { retry_after_secs: u64 },
    #[error("the database is unavailable, try again shortly")]
    Unavailable(String),
    /// Start-up has not yet reached and migrated the database (the log says why).
    #[error("starting: waiting for the database")]
    Starting,
    /// The text is logged; the client only learns that something went wrong.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub fn csrf() -> Self {
        Self::Forbidden("missing or invalid CSRF token".into())
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Busy { .. } | AppError::Unavailable(_) | AppError::Starting => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::Internal(detail) => tracing::error!(%detail, "request failed"),
            AppError::Unavailable(detail) => tracing::warn!(%detail, "database unavailable"),
            _ => {}
        }
        let mut resp = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs() {
            resp.insert_header(("Retry-After", secs.to_string()));
        }
        resp.json(json!({ "error": self.to_string() }))
    }
}

impl AppError {
    /// Seconds for `Retry-After`, for the errors that clear by waiting.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AppError::TooManyRequests { retry_after_secs }
            | AppError::Busy { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl From<TooMany> for AppError {
    fn from(t: TooMany) -> Self {
        AppError::TooManyRequests {
            retry_after_secs: t.retry_after_secs,
        }
    }
}

impl From<HashingBusy> for AppError {
    /// A slot frees within one hash (well under a second), so one second is enough.
    fn from(_: HashingBusy) -> Self {
        AppError::Busy {
            retry_after_secs: 1,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => AppError::Conflict("that username is taken".into()),
            StoreError::NoSuchUser => AppError::Unauthorized,
            // Routes that can hit these turn them into a message naming the bound.
            StoreError::GroupFull | StoreError::GroupTooSmall => AppError::Conflict(e.to_string()),
            StoreError::Db(e) => AppError::Internal(e.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for AppError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        AppError::Internal(e.to_string())
    }
}
