//! A REST request's body, read with the `max_rest_body_bytes` bound.
//!
//! A body over the bound is answered 413, but only after it has been read:
//! answering while the client is still sending and then closing makes the
//! client's write fail, and SDKs (node `pusher`, Python `pusher`) then report a
//! reset connection instead of the 413. So the rest of an oversized body is read
//! and thrown away, up to [`REST_BODY_DRAIN_FACTOR`] times the bound and for at
//! most [`DRAIN_TIMEOUT`]; memory stays at the bound whatever is sent. A body
//! larger still is answered 413 at once and the connection closed.

use std::{future::Future, ops::Deref, pin::Pin, time::Duration};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::error::ApiError;
use crate::{config::REST_BODY_DRAIN_FACTOR, state::State};

/// Longest time spent reading and discarding an oversized body.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole body of a REST request, at most `max_rest_body_bytes` long.
pub struct RestBody(Bytes);

impl RestBody {
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for RestBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl FromRequest for RestBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let max = req
            .app_data::<web::Data<State>>()
            .map_or(1024 * 1024, |s| s.max_rest_body_bytes);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            let too_large = || {
                ApiError::PayloadTooLarge(format!(
                    "request body is larger than the limit of {max} bytes"
                ))
            };
            let drain_max = max.saturating_mul(REST_BODY_DRAIN_FACTOR) as u64;
            if declared.is_some_and(|n| n > drain_max) {
                // Too big to be worth reading: answer now, and the connection is closed.
                return Err(too_large());
            }
            let mut body =
                BytesMut::with_capacity(declared.map_or(0, |n| n.min(max as u64) as usize));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk
                    .map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
                if body.len() + chunk.len() > max {
                    drain(&mut payload, (body.len() + chunk.len()) as u64, drain_max).await;
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(RestBody(body.freeze()))
        })
    }
}

/// Reads and drops the rest of a body until its end, `limit` bytes in all, or [`DRAIN_TIMEOUT`].
async fn drain(payload: &mut Payload, mut seen: u64, limit: u64) {
    let read_rest = async {
        while seen <= limit {
            match payload.next().await {
                Some(Ok(chunk)) => seen += chunk.len() as u64,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read_rest).await;
}
