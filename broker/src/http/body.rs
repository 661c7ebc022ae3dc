//! A REST request's body, read with the `max_rest_body_bytes` bound.
//!
//! A body over the bound is answered 413, but only after it has been read:
//! answering while the client is still sending and then closing makes the
//! client's write fail, and SDKs (node `pusher`, Python `pusher`) then report a
//! reset connection instead of the 413. So the rest of an oversized body is read
//! and thrown away, up to [`REST_BODY_DRAIN_FACTOR`] times the bound and for at
//! most [`DRAIN_TIMEOUT`]; memory stays at the bound whatever is sent, and the
//! connection stays usable.
//!
//! A body larger still (announced, or found while draining), or one that takes
//! longer, is answered 413 and its connection cut (see [`Cut`]). Left to itself
//! actix-web would go on reading it after the answer: for a second when it has a
//! `Content-Length`, and to its end, however long, when it is chunked.

use std::{
    cell::RefCell,
    fmt,
    future::Future,
    ops::Deref,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{
    body::{BodySize, MessageBody},
    dev::Payload,
    http::header,
    web, FromRequest, HttpRequest,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::time::Sleep;

use super::error::ApiError;
use crate::{config::REST_BODY_DRAIN_FACTOR, state::State};

/// Longest time spent reading and discarding an oversized body.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a cut connection stays open, not read, after its 413 was written, so
/// the client can read the answer before the connection goes.
pub const CUT_GRACE: Duration = Duration::from_millis(500);

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

/// How the drain of an oversized body ended.
enum Drained {
    /// The body ended: the connection can carry the next request.
    ToItsEnd,
    /// It went past the drain bound or [`DRAIN_TIMEOUT`]: the connection must be cut.
    Stopped,
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
            let drain_max = max.saturating_mul(REST_BODY_DRAIN_FACTOR) as u64;
            if declared.is_some_and(|n| n > drain_max) {
                // Too big to be worth reading: answer now and cut the connection.
                return Err(ApiError::BodyCut(Cut::new(max, payload)));
            }
            let mut body =
                BytesMut::with_capacity(declared.map_or(0, |n| n.min(max as u64) as usize));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk
                    .map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
                if body.len() + chunk.len() > max {
                    let seen = (body.len() + chunk.len()) as u64;
                    return Err(match drain(&mut payload, seen, drain_max).await {
                        Drained::ToItsEnd => ApiError::PayloadTooLarge(too_large(max)),
                        Drained::Stopped => ApiError::BodyCut(Cut::new(max, payload)),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(RestBody(body.freeze()))
        })
    }
}

fn too_large(max: usize) -> String {
    format!("request body is larger than the limit of {max} bytes")
}

/// Reads and drops the rest of a body until its end, `limit` bytes in all, or [`DRAIN_TIMEOUT`].
async fn drain(payload: &mut Payload, mut seen: u64, limit: u64) -> Drained {
    let read_rest = async {
        while seen <= limit {
            match payload.next().await {
                Some(Ok(chunk)) => seen += chunk.len() as u64,
                None => return Drained::ToItsEnd,
                Some(Err(_)) => return Drained::Stopped,
            }
        }
        Drained::Stopped
    };
    tokio::time::timeout(DRAIN_TIMEOUT, read_rest)
        .await
        .unwrap_or(Drained::Stopped)
}

/// An oversized body whose connection is cut after the 413.
///
/// The request's payload is kept, unread, until the answer has been written and
/// [`CUT_GRACE`] has passed: while it is alive and full, actix-web stops reading
/// the socket (back-pressure) instead of discarding what arrives. Then the
/// answer's body ends in an error, which makes actix-web drop the connection at
/// once rather than drain or linger on it.
pub struct Cut {
    max: usize,
    payload: RefCell<Option<Payload>>,
}

impl Cut {
    fn new(max: usize, payload: Payload) -> Self {
        Self {
            max,
            payload: RefCell::new(Some(payload)),
        }
    }

    pub fn message(&self) -> String {
        too_large(self.max)
    }

    /// The 413's body: `message`, then (after the grace) the end of the connection.
    pub fn body(&self, message: String) -> CutBody {
        CutBody {
            len: message.len() as u64,
            message: Some(Bytes::from(message)),
            _payload: self.payload.borrow_mut().take(),
            grace: Box::pin(tokio::time::sleep(CUT_GRACE)),
        }
    }
}

impl fmt::Debug for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cut").field("max", &self.max).finish()
    }
}

/// See [`Cut`].
pub struct CutBody {
    message: Option<Bytes>,
    len: u64,
    _payload: Option<Payload>,
    grace: Pin<Box<Sleep>>,
}

/// Ends a cut connection. actix-web logs it (with `Debug`) when it drops the
/// connection, so that says what happened.
#[derive(thiserror::Error)]
#[error("oversized REST body: connection cut after the 413 (max_rest_body_bytes)")]
pub struct ConnectionCut;

impl fmt::Debug for ConnectionCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl MessageBody for CutBody {
    type Error = ConnectionCut;

    fn size(&self) -> BodySize {
        // Sized, so the client knows it has the whole answer before the connection goes.
        BodySize::Sized(self.len)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if let Some(message) = this.message.take() {
            return Poll::Ready(Some(Ok(message)));
        }
        match this.grace.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(ConnectionCut))),
            Poll::Pending => Poll::Pending,
        }
    }
}
