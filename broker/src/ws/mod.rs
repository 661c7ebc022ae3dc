//! The WebSocket endpoint `/app/{key}`: the handshake checks, then a
//! [`crate::session`] task per connection, reading from a [`wire::FrameReader`].

mod outbox;
pub mod wire;

use actix_web::{
    body::{BodyStream, BoxBody},
    web, HttpRequest, HttpResponse,
};

use protocol::ErrorCode;

use crate::{core::connection, session, state::State};

/// `GET /app/{key}?protocol=7&client=js&version=8.6.0`
///
/// The upgrade response's body is the connection's [`outbox::Outbox`]:
/// actix writes whatever frames are queued for the connection, several per write
/// when they pile up. A refused connection gets its `pusher:error` and close frame
/// as the whole body.
pub async fn connect(
    req: HttpRequest,
    payload: web::Payload,
    key: web::Path<String>,
    state: web::Data<State>,
) -> actix_web::Result<HttpResponse> {
    let mut response = actix_http::ws::handshake(req.head())?;
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(actix_web::web::Query::into_inner)
        .unwrap_or_default();
    let protocol = query
        .iter()
        .find(|(k, _)| k == "protocol")
        .map(|(_, v)| v.as_str());
    let origin = req.headers().get("origin").and_then(|o| o.to_str().ok());
    // The TCP peer, never a forwarded-for header (see `core::ip_limit`). Taken before the
    // app's own quota so a refused address does not use up the app's.
    let slot = match (&state.per_ip, req.peer_addr()) {
        (Some(limiter), Some(peer)) => match limiter.try_acquire(peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                tracing::debug!(peer = %peer.ip(), "refusing connection: max_connections_per_ip");
                state.metrics.refused_per_ip.inc();
                let code = ErrorCode::OverAddressQuota.code();
                return Ok(response
                    .message_body(BoxBody::new(wire::closing(code)))?
                    .into());
            }
        },
        _ => None,
    };
    match session::admit(&state, &key, protocol, origin) {
        Ok(app) => {
            let state = state.into_inner();
            let (conn, receiver) = connection::queue(state.socket_ids.next(), state.send_queue);
            state.console.connection_opened(&app.key, conn.id, origin);
            let outbox = outbox::Outbox::new(receiver, state.metrics.clone());
            let reader =
                wire::FrameReader::new(payload, app.limits.max_ws_message_bytes, conn.clone());
            actix_web::rt::spawn(async move {
                session::run(state, app, conn, reader).await;
                // The address's place is held for the connection's whole life.
                drop(slot);
            });
            Ok(response
                .message_body(BoxBody::new(BodyStream::new(outbox)))?
                .into())
        }
        Err(code) => {
            tracing::debug!(code = code.code(), "refusing connection");
            Ok(response
                .message_body(BoxBody::new(wire::closing(code.code())))?
                .into())
        }
    }
}
