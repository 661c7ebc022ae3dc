//! Request bodies that may come form-encoded (as HTML forms and the original
//! page send them) or as JSON.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, web::Bytes, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::AppError;

pub struct FormOrJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for FormOrJson<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        // Bytes honours the app's PayloadConfig, so oversized bodies are refused early.
        let bytes = Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes
                .await
                .map_err(|e| AppError::bad_request(format!("cannot read request body: {e}")))?;
            let value = match content_type.as_str() {
                // No body at all (a DELETE, a POST with only a header token): every field absent.
                _ if bytes.is_empty() => serde_urlencoded::from_bytes(&bytes).map_err(|e| AppError::bad_request(format!("invalid form body: {e}")))?,
                "application/json" => serde_json::from_slice(&bytes).map_err(|e| AppError::bad_request(format!("invalid JSON body: {e}")))?,
                "" | "application/x-www-form-urlencoded" => {
                    serde_urlencoded::from_bytes(&bytes).map_err(|e| AppError::bad_request(format!("invalid form body: {e}")))?
                }
                other => {
                    return Err(AppError::bad_request(format!(
                        "unsupported content type {other:?}: send application/x-www-form-urlencoded or application/json"
                    )))
                }
            };
            Ok(FormOrJson(value))
        })
    }
}
