//! Per-session CSRF tokens.
//!
//! The session cookie is `SameSite=Lax`, which already keeps most cross-site
//! POSTs out; the token also covers older browsers and same-site attackers.
//! Pages put the token in a form field (`csrf_token`) or in `X-CSRF-Token`.

use actix_session::Session;
use actix_web::HttpRequest;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::error::AppError;

const SESSION_KEY: &str = "csrf";
pub const HEADER: &str = "X-CSRF-Token";
pub const FIELD: &str = "csrf_token";

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The session's token, created on first use.
pub fn token(session: &Session) -> Result<String, AppError> {
    if let Ok(Some(t)) = session.get::<String>(SESSION_KEY) {
        return Ok(t);
    }
    rotate(session)
}

/// A fresh token; called when the session changes hands (login), so a token
/// seen before login is useless after it.
pub fn rotate(session: &Session) -> Result<String, AppError> {
    let t = new_token();
    session
        .insert(SESSION_KEY, &t)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(t)
}

/// Accepts the request if the header, or else the form field, matches the session's token.
pub fn verify(
    session: &Session,
    req: &HttpRequest,
    form_token: Option<&str>,
) -> Result<(), AppError> {
    let Ok(Some(expected)) = session.get::<String>(SESSION_KEY) else {
        return Err(AppError::csrf());
    };
    let given = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .or(form_token)
        .unwrap_or("");
    if !given.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(AppError::csrf())
    }
}
