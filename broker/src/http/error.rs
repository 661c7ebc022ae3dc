//! Every way a REST request can fail, and the status each maps to.
//!
//! Bodies are plain text explaining the problem, as the hosted service answers.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use protocol::{
    limits::{clip, MAX_ERROR_MESSAGE_CHARS},
    sign::RestAuthError,
    trigger::BodyError,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown app id {0:?}")]
    AppNotFound(String),
    #[error("app is disabled")]
    AppDisabled,
    #[error("{0}")]
    Unauthorized(#[from] RestAuthError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A body too large even to drain: 413, then the connection is cut.
    #[error("{}", .0.message())]
    BodyCut(super::body::Cut),
    #[error("too many requests for this app; slow down")]
    RateLimited,
    /// The cluster could not take the event to every node (Redis unreachable, a node
    /// not listening): it may not have reached all subscribers. Retrying is safe for
    /// subscribers that dedupe, and the only way to be sure for those that do not.
    #[error("{0}")]
    Unavailable(String),
    /// Something the path names does not exist (a channel the app keeps no history for).
    #[error("{0}")]
    NotFound(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::AppNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::AppDisabled => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) | Self::BodyCut(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Messages quote request input (names, ids); keep the answer short whatever was sent.
        let message = clip(&self.to_string(), MAX_ERROR_MESSAGE_CHARS).into_owned() + "\n";
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("text/plain; charset=utf-8");
        match self {
            Self::BodyCut(cut) => response.force_close().body(cut.body(message)),
            _ => response.body(message),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        if e.is_too_large() {
            Self::PayloadTooLarge(e.to_string())
        } else {
            Self::BadRequest(e.to_string())
        }
    }
}

pub fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}
