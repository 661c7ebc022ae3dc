//! The WebSocket endpoint `/app/{key}`.
//!
//! A WebSocket handshake never reaches actix-web's routing: actix's HTTP/1
//! dispatcher hands every `Upgrade: websocket` request, with its socket, to
//! [`upgrade`] (installed by the server). The handshake checks run there, the
//! `101` answer is written, and from then on the connection's [`session`] task
//! owns the socket ([`socket::Socket`]) — no HTTP dispatcher, no request or
//! response buffers stay behind for the connection's life. A plain GET to the
//! path (no upgrade) is answered by [`not_upgraded`].

mod socket;
mod tcp;
pub mod wire;

use std::{sync::Arc, time::Duration};

use actix_codec::{AsyncRead, AsyncWrite, Encoder, Framed};
use actix_http::{body::BodySize, h1, ws, Request, Response, StatusCode};
use actix_service::{fn_service, ServiceFactory};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use protocol::ErrorCode;

use crate::{core::connection, session, state::State};

/// What a transport's socket becomes once upgraded: the stream the session task
/// reads and writes, and (on plain TCP) the writer publishers use directly.
pub trait IntoSocket {
    type Io: AsyncRead + AsyncWrite + Unpin + 'static;
    fn into_socket(self, metrics: &Arc<crate::metrics::Metrics>)
        -> (Self::Io, Option<tcp::Direct>);
}

impl IntoSocket for tokio::net::TcpStream {
    type Io = tcp::SharedTcp;
    fn into_socket(
        self,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> (Self::Io, Option<tcp::Direct>) {
        let socket = Arc::new(self);
        let direct = tcp::Direct {
            socket: socket.clone(),
            metrics: metrics.clone(),
        };
        (tcp::SharedTcp(socket), Some(direct))
    }
}

/// A TLS stream: written by its session task only (a TLS session cannot be shared
/// between threads without a lock around every record).
pub struct Tls<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Unpin + 'static> IntoSocket for Tls<T> {
    type Io = T;
    fn into_socket(self, _: &Arc<crate::metrics::Metrics>) -> (T, Option<tcp::Direct>) {
        (self.0, None)
    }
}

/// The service actix's dispatcher calls with every WebSocket upgrade request on
/// the listener. `wrap` says what kind of socket the listener's connections are.
pub fn upgrade<T, S>(
    state: Arc<State>,
    wrap: fn(T) -> S,
) -> impl ServiceFactory<
    (Request, Framed<T, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: IntoSocket,
{
    let factory = move || {
        let state = state.clone();
        async move {
            Ok::<_, ()>(fn_service(
                move |(req, framed): (Request, Framed<T, h1::Codec>)| {
                    let state = state.clone();
                    // Boxed: the connection's task then holds only a pointer to it, and the
                    // future's own allocation is exactly its size.
                    let connection = Box::pin(upgraded(state, req, framed, wrap));
                    async move {
                        connection.await;
                        Ok::<_, actix_web::Error>(())
                    }
                },
            ))
        }
    };
    actix_service::fn_factory(factory)
}

/// `GET /app/{key}` without `Upgrade: websocket`: the handshake's own error (400).
pub async fn not_upgraded(req: HttpRequest) -> HttpResponse {
    match ws::handshake(req.head()) {
        Err(e) => e.error_response(),
        // Unreachable in practice: an upgrade request goes to `upgrade`.
        Ok(_) => HttpResponse::BadRequest().finish(),
    }
}

/// Answers an upgrade request and, if it is accepted, runs the connection to its end.
async fn upgraded<T, S>(
    state: Arc<State>,
    req: Request,
    framed: Framed<T, h1::Codec>,
    wrap: fn(T) -> S,
) where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: IntoSocket,
{
    let parts = framed.into_parts();
    let (io, mut codec, read) = (parts.io, parts.codec, parts.read_buf);
    // The dispatcher's write buffer (8 KiB) is not needed: the socket writes frames as they are.
    drop(parts.write_buf);
    let head = req.head();
    // `/app/{key}`, as actix-web's router matched it before: one non-empty segment.
    let key = head
        .uri
        .path()
        .strip_prefix("/app/")
        .filter(|k| !k.is_empty() && !k.contains('/'));
    let response = match (key, ws::handshake(head)) {
        (Some(_), Ok(mut builder)) => builder.finish().map_into_boxed_body(),
        (None, _) => Response::new(StatusCode::NOT_FOUND),
        (Some(_), Err(e)) => Response::from(e),
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let mut answer = BytesMut::new();
    let (response, _) = response.into_parts();
    let size = if switching {
        BodySize::None
    } else {
        BodySize::Sized(0)
    };
    if codec
        .encode(h1::Message::Item((response, size)), &mut answer)
        .is_err()
    {
        return;
    }
    let (Some(key), true) = (key, switching) else {
        answer_and_close(io, answer, state.close_timeout).await;
        return;
    };
    let protocol =
        actix_web::web::Query::<Vec<(String, String)>>::from_query(head.uri.query().unwrap_or(""))
            .ok()
            .and_then(|q| q.into_inner().into_iter().find(|(k, _)| k == "protocol"))
            .map(|(_, v)| v);
    let origin = head.headers.get("origin").and_then(|o| o.to_str().ok());
    // The TCP peer, never a forwarded-for header (see `core::ip_limit`). Taken before the
    // app's own quota so a refused address does not use up the app's.
    let slot = match (&state.per_ip, req.peer_addr()) {
        (Some(limiter), Some(peer)) => match limiter.try_acquire(peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                tracing::debug!(peer = %peer.ip(), "refusing connection: max_connections_per_ip");
                state.metrics.refused_per_ip.inc();
                refuse(
                    io,
                    answer,
                    ErrorCode::OverAddressQuota.code(),
                    state.close_timeout,
                )
                .await;
                return;
            }
        },
        _ => None,
    };
    let app = match session::admit(&state, key, protocol.as_deref(), origin) {
        Ok(app) => app,
        Err(code) => {
            tracing::debug!(code = code.code(), "refusing connection");
            refuse(io, answer, code.code(), state.close_timeout).await;
            return;
        }
    };
    let (conn, mut receiver) = connection::queue(state.socket_ids.next(), state.send_queue);
    state.console.connection_opened(&app.key, conn.id, origin);
    let (io, direct) = wrap(io).into_socket(&state.metrics);
    if let Some(direct) = direct {
        // The `101` goes out first, with whatever the session queues before its first write.
        receiver.attach(Box::new(direct), true);
    }
    let mut socket = socket::Socket::new(
        io,
        read,
        answer.freeze(),
        conn.clone(),
        receiver,
        app.limits.max_ws_message_bytes,
        state.metrics.clone(),
    );
    drop(req);
    let close_timeout = state.close_timeout;
    session::run(state, app, conn.clone(), &mut socket).await;
    socket.finish(conn.close_code(), close_timeout).await;
    // The address's place is held for the connection's whole life.
    drop(slot);
}

/// The `101`, then `pusher:error` with `code` and the close frame.
async fn refuse<T: AsyncWrite + Unpin>(io: T, mut answer: BytesMut, code: u16, within: Duration) {
    answer.extend_from_slice(&wire::closing(code));
    answer_and_close(io, answer, within).await;
}

/// Writes the last bytes a connection gets and closes it, within `within` (`close_timeout`).
async fn answer_and_close<T: AsyncWrite + Unpin>(mut io: T, answer: BytesMut, within: Duration) {
    let write = async {
        io.write_all(&answer).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(within, write).await;
}
