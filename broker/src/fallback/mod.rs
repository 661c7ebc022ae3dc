//! pusher-js's HTTP fallback transports, `xhr_streaming` and `xhr_polling`,
//! as its web build speaks them (`src/core/http/http_socket.ts` and friends):
//!
//! - `POST {httpPath}/app/{key}/{server}/{session}/xhr_streaming?protocol=7…`:
//!   a response that stays open and carries the session's messages;
//! - `POST …/xhr`: one poll, answered with the next line (messages, or a
//!   heartbeat when nothing came for `heartbeat_secs`);
//! - `POST …/xhr_send` with a JSON array of Pusher messages: the client's messages.
//!
//! `{server}/{session}` is chosen by the client; the first receive request for
//! an id this node does not know opens a new session (a stale one thus gets
//! `o`, which pusher-js takes as "session lost" and reconnects). Each session
//! runs the same [`crate::session`] task as a WebSocket connection; this module
//! only frames. CORS is answered for any origin (pusher-js uses XHR with a
//! JSON content type, so browsers send a preflight); the app's
//! `allowed_origins` is checked when a session opens, and a refused client
//! gets the Pusher error in the body, where pusher-js can read it.
//!
//! A session serves only the client that opened it ([`owner`]): another
//! client's request gets 403, which pusher-js takes as a lost connection
//! (close 1006, reconnect) should it ever be its own. One client address
//! holds at most `max_sessions_per_ip_percent` of the node's sessions.

mod body;
pub mod framing;
mod owner;
mod sessions;

use std::{sync::Arc, time::Duration};

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, HttpResponseBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;
use protocol::{
    fallback::{self, valid_segment, Op, SendError},
    ErrorCode,
};

use owner::Owner;
pub use sessions::Sessions;
use sessions::{FallbackSession, NotMade, SessionInbound};

use crate::{
    apps::App,
    core::{connection, ConnHandle},
    session::{self, InboundError, Incoming},
    state::State,
};

/// Adds the routes under `config.path` (pusher-js's `httpPath`).
pub fn routes(cfg: &mut web::ServiceConfig, sessions: web::Data<Sessions>) {
    let path = format!(
        "{}/app/{{key}}/{{server}}/{{session}}/{{op}}",
        sessions.config.path
    );
    cfg.app_data(sessions)
        .route(&path, web::post().to(request))
        .route(
            &path,
            web::method(actix_web::http::Method::OPTIONS).to(preflight),
        );
}

fn origin(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
}

/// A response the calling page may read, from any origin.
fn answer(status: StatusCode, origin: Option<&str>) -> HttpResponseBuilder {
    let mut res = HttpResponse::build(status);
    res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.unwrap_or("*")))
        .insert_header((header::VARY, "Origin"))
        .insert_header((
            header::CACHE_CONTROL,
            "no-store, no-cache, must-revalidate, max-age=0",
        ));
    res
}

/// Lines for pusher-js: 200, as it ignores other statuses' bodies.
fn lines(origin: Option<&str>) -> HttpResponseBuilder {
    let mut res = answer(StatusCode::OK, origin);
    res.content_type("application/javascript; charset=UTF-8")
        // Proxies such as nginx must not hold a stream back to buffer it.
        .insert_header(("X-Accel-Buffering", "no"));
    res
}

/// `OPTIONS`: the CORS preflight a browser sends before pusher-js's POSTs.
async fn preflight(req: HttpRequest) -> HttpResponse {
    let headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("Content-Type")
        .to_owned();
    answer(StatusCode::NO_CONTENT, origin(&req))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, headers))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

async fn request(
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    payload: web::Payload,
    state: web::Data<State>,
    sessions: web::Data<Sessions>,
) -> HttpResponse {
    let (key, server, session_id, op) = path.into_inner();
    let origin = origin(&req);
    let Some(op) = Op::parse(&op).filter(|_| valid_segment(&server) && valid_segment(&session_id))
    else {
        return answer(StatusCode::NOT_FOUND, origin).finish();
    };
    let id = format!("{key}/{server}/{session_id}");
    let requester = Owner::of(&req, sessions.config.bind_to_address);
    let existing = sessions.get(&id);
    if existing.as_ref().is_some_and(|s| s.owner != requester) {
        // Someone who learnt the URL (from a log, say), or the opener from a new
        // address: neither may use the session. The opener's pusher-js reconnects.
        state.metrics.fallback_refused_foreign.inc();
        tracing::debug!(session = %id, "refusing a request from another client than the session's");
        return answer(StatusCode::FORBIDDEN, origin).finish();
    }
    match (op, existing) {
        (Op::Send, Some(s)) => send(&state, &key, &s, payload, origin).await,
        // Not (or no longer) here: pusher-js ignores a failed send; its next receive request finds out.
        (Op::Send, None) => answer(StatusCode::NOT_FOUND, origin).finish(),
        (op, Some(s)) => {
            s.heard();
            let first = if op == Op::Stream {
                vec![framing::prelude()]
            } else {
                Vec::new()
            };
            receive(&state, &sessions, s, first, op, origin).await
        }
        (op, None) => open(&req, &state, &sessions, id, &key, op, requester).await,
    }
}

/// The first receive request of a session: admits it like a WebSocket
/// handshake and starts its session task.
async fn open(
    req: &HttpRequest,
    state: &web::Data<State>,
    sessions: &web::Data<Sessions>,
    id: String,
    key: &str,
    op: Op,
    owner: Owner,
) -> HttpResponse {
    let origin = owner.origin();
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(actix_web::web::Query::into_inner)
        .unwrap_or_default();
    let protocol = query
        .iter()
        .find(|(k, _)| k == "protocol")
        .map(|(_, v)| v.as_str());
    // A session holds its opening request's address's place for its whole life, as a WebSocket does.
    let slot = match (&state.per_ip, req.peer_addr()) {
        (Some(limiter), Some(peer)) => match limiter.try_acquire(peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                state.metrics.refused_per_ip.inc();
                return lines(origin).body(framing::refusal(
                    ErrorCode::OverAddressQuota,
                    ErrorCode::OverAddressQuota.message(),
                ));
            }
        },
        _ => None,
    };
    let app = match session::admit(state, key, protocol, origin) {
        Ok(app) => app,
        Err(code) => {
            tracing::debug!(code = code.code(), "refusing HTTP-fallback session");
            return lines(origin).body(framing::refusal(code, code.message()));
        }
    };
    let state = state.clone().into_inner();
    let (conn, receiver) = connection::queue(state.socket_ids.next(), state.send_queue);
    let peer = req.peer_addr().map(|p| p.ip());
    let (session, inbound) = match sessions.insert(id.clone(), receiver, owner.clone(), peer) {
        Ok(made) => made,
        Err(why) => {
            app.hub.remove_connection();
            return match why {
                NotMade::Full => {
                    let msg = format!(
                        "Over capacity: this node has its {} HTTP-fallback sessions",
                        sessions.config.max_sessions
                    );
                    lines(origin).body(framing::refusal(ErrorCode::OverCapacity, &msg))
                }
                NotMade::AddressFull(max) => {
                    state.metrics.refused_per_ip.inc();
                    let msg = format!(
                        "Too many connections from this address: it holds its {max} HTTP-fallback sessions on this node"
                    );
                    lines(origin).body(framing::refusal(ErrorCode::OverAddressQuota, &msg))
                }
                NotMade::Taken => answer(StatusCode::CONFLICT, origin).finish(),
            };
        }
    };
    state.console.connection_opened(&app.key, conn.id, origin);
    let sessions_arc = sessions.clone().into_inner();
    let (run_state, run_session) = (state.clone(), session.clone());
    actix_web::rt::spawn(async move {
        drive(run_state, app, conn, inbound, sessions_arc, run_session, id).await;
        drop(slot);
    });
    let open = framing::open(sessions.config.hostname.as_deref());
    let first = if op == Op::Stream {
        vec![framing::prelude(), open]
    } else {
        vec![open]
    };
    receive(&state, sessions, session, first, op, origin).await
}

async fn receive(
    state: &State,
    sessions: &Sessions,
    session: Arc<FallbackSession>,
    first: Vec<Bytes>,
    op: Op,
    origin: Option<&str>,
) -> HttpResponse {
    let Some(attached) = session.attach().await else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, origin).finish();
    };
    let heartbeat = Duration::from_secs(sessions.config.heartbeat_secs);
    lines(origin).streaming(body::ReceiveBody::new(
        attached,
        first,
        op == Op::Poll,
        heartbeat,
        state.metrics.clone(),
    ))
}

/// `xhr_send`: a JSON array of Pusher messages (`[]` is a heartbeat), read by
/// [`protocol::fallback::parse_send`].
async fn send(
    state: &State,
    key: &str,
    session: &FallbackSession,
    mut payload: web::Payload,
    origin: Option<&str>,
) -> HttpResponse {
    let max = state
        .apps
        .by_key(key)
        .map_or(0, |a| a.limits.max_ws_message_bytes);
    let limit = fallback::send_body_limit(max);
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return answer(StatusCode::BAD_REQUEST, origin).finish();
        };
        if body.len() + chunk.len() > limit {
            session.deliver(Err(too_big(max))).await;
            return answer(StatusCode::PAYLOAD_TOO_LARGE, origin)
                .body(format!("a request body holds at most {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let messages = match fallback::parse_send(&body, max) {
        Ok(messages) => messages,
        Err(e @ SendError::NotStrings) => {
            return answer(StatusCode::BAD_REQUEST, origin).body(e.to_string())
        }
        Err(SendError::TooLarge { .. }) => {
            session.deliver(Err(too_big(max))).await;
            return answer(StatusCode::PAYLOAD_TOO_LARGE, origin).finish();
        }
    };
    if messages.is_empty() {
        session.heard();
    }
    for m in messages {
        session.deliver(Ok(Incoming::Text(Bytes::from(m)))).await;
    }
    answer(StatusCode::NO_CONTENT, origin).finish()
}

/// Over-long messages end a session as they end a WebSocket (1009).
fn too_big(max: usize) -> InboundError {
    InboundError {
        message: format!("message larger than {max} bytes"),
        close_code: 1009,
    }
}

/// Runs a session to its end, lets its close lines reach the client's next
/// request (or gives up after the session timeout), and forgets it.
async fn drive(
    state: Arc<State>,
    app: Arc<App>,
    conn: ConnHandle,
    inbound: SessionInbound,
    sessions: Arc<Sessions>,
    session: Arc<FallbackSession>,
    id: String,
) {
    let delivered = session.close_delivered.notified();
    session::run(state, app, conn.clone(), inbound).await;
    // The session ended without a close code only when its client went away.
    conn.close_with(1006);
    if conn.close_requested().await != 1006 {
        let _ = tokio::time::timeout(
            Duration::from_secs(sessions.config.session_timeout_secs),
            delivered,
        )
        .await;
    }
    sessions.remove(&id);
}
