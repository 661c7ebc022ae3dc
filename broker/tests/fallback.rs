//! The HTTP fallback transports (`xhr_streaming`, `xhr_polling`) against a
//! whole broker in this process, with a client that speaks them as pusher-js's
//! `HTTPSocket` does.

mod common;

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use bytes::Bytes;
use common::{data, start, Client, Closed, TestBroker, Ws, KEY, WAIT};
use futures_util::{Stream, StreamExt};
use protocol::rest::TriggerRequest;
use serde_json::{json, Value};

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

static NEXT_SESSION: AtomicU32 = AtomicU32::new(1);

/// The `User-Agent` every request of these clients sends (a browser's stays the same too).
const UA: &str = "fallback-test/1.0";

/// How the client receives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Streaming,
    Polling,
}

/// An HTTP-fallback client: one receive request at a time (a stream, or
/// polls one after another) and a POST per message.
struct Fb {
    http: awc::Client,
    /// `http://…/pusher/app/{key}/{server}/{session}`.
    base: String,
    mode: Mode,
    origin: Option<String>,
    stream: Option<Body>,
    buf: Vec<u8>,
    lines: VecDeque<String>,
    messages: VecDeque<Value>,
    socket_id: String,
    /// Lines seen, by first letter, for tests of the framing.
    seen: String,
}

impl Fb {
    fn new(b: &TestBroker, mode: Mode, origin: Option<&str>) -> Self {
        let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        Self {
            http: awc::Client::builder().disable_timeout().finish(),
            base: format!("{}/pusher/app/{KEY}/{}/s{n:07}", b.url, n % 1000),
            mode,
            origin: origin.map(str::to_owned),
            stream: None,
            buf: Vec::new(),
            lines: VecDeque::new(),
            messages: VecDeque::new(),
            socket_id: String::new(),
            seen: String::new(),
        }
    }

    /// Opens a session and reads `pusher:connection_established`.
    async fn connect(b: &TestBroker, mode: Mode) -> Self {
        let mut fb = Self::new(b, mode, None);
        let established = fb.expect("pusher:connection_established").await;
        fb.socket_id = data(&established)["socket_id"].as_str().unwrap().to_owned();
        assert!(
            fb.seen
                .starts_with(if mode == Mode::Streaming { "ho" } else { "o" }),
            "prelude and open first: {}",
            fb.seen
        );
        fb
    }

    fn post(&self, op: &str) -> awc::ClientRequest {
        let url = format!("{}/{op}?protocol=7&client=js&version=8.4.0", self.base);
        let mut req = self
            .http
            .post(url)
            .insert_header(("content-type", "application/json"))
            .insert_header(("user-agent", UA));
        if let Some(o) = &self.origin {
            req = req.insert_header(("origin", o.as_str()));
        }
        req
    }

    /// The next line the broker sent.
    async fn line(&mut self) -> String {
        loop {
            if let Some(l) = self.lines.pop_front() {
                self.seen.push(l.chars().next().unwrap_or('-'));
                return l;
            }
            match self.mode {
                Mode::Streaming => {
                    if self.stream.is_none() {
                        let res = self
                            .post("xhr_streaming")
                            .send()
                            .await
                            .expect("stream opens");
                        assert_eq!(res.status(), 200);
                        self.stream = Some(Box::pin(res));
                    }
                    let chunk = tokio::time::timeout(WAIT, self.stream.as_mut().unwrap().next())
                        .await
                        .expect("a line within the wait");
                    match chunk {
                        Some(Ok(c)) => self.buf.extend_from_slice(&c),
                        _ => {
                            self.stream = None;
                            self.lines.push_back("end".into());
                        }
                    }
                }
                Mode::Polling => {
                    let mut res = tokio::time::timeout(WAIT, self.post("xhr").send())
                        .await
                        .expect("poll answered")
                        .expect("poll");
                    assert_eq!(res.status(), 200);
                    let body = tokio::time::timeout(WAIT, res.body())
                        .await
                        .expect("a poll's line within the wait")
                        .expect("poll body");
                    self.buf.extend_from_slice(&body);
                }
            }
            while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                self.lines
                    .push_back(String::from_utf8(line[..i].to_vec()).unwrap());
            }
        }
    }

    /// POSTs raw `xhr_send` body; returns the status.
    async fn send_body(&self, body: &str) -> u16 {
        self.post("xhr_send")
            .send_body(body.to_owned())
            .await
            .expect("send answered")
            .status()
            .as_u16()
    }
}

impl Client for Fb {
    fn socket_id(&self) -> &str {
        &self.socket_id
    }

    async fn send(&mut self, v: Value) {
        let status = self.send_body(&json!([v.to_string()]).to_string()).await;
        assert_eq!(status, 204);
    }

    async fn next(&mut self) -> Result<Value, Closed> {
        loop {
            if let Some(m) = self.messages.pop_front() {
                return Ok(m);
            }
            let line = self.line().await;
            match line.chars().next() {
                Some('a') => {
                    let texts: Vec<String> =
                        serde_json::from_str(&line[1..]).expect("a[...] holds strings");
                    self.messages.extend(
                        texts.iter().map(|t| {
                            serde_json::from_str::<Value>(t).expect("each a Pusher message")
                        }),
                    );
                }
                Some('c') => {
                    let (code, _reason): (u16, String) =
                        serde_json::from_str(&line[1..]).expect("c[code,reason]");
                    return Err(Closed(Some(code)));
                }
                Some('h' | 'o') => {}
                _ => return Err(Closed(None)),
            }
        }
    }
}

fn trigger(channel: &str, event: &str, except: Option<&str>) -> TriggerRequest {
    serde_json::from_value(
        json!({"name": event, "channel": channel, "data": "{\"n\":1}", "socket_id": except}),
    )
    .unwrap()
}

/// Everything a WebSocket client does, over each fallback transport, beside a WebSocket client.
async fn the_whole_protocol(mode: Mode) {
    let b = start("", "").await;
    let mut fb = Fb::connect(&b, mode).await;
    let mut ws = Ws::connect(&b).await;
    fb.send(json!({"event": "pusher:ping", "data": {}})).await;
    fb.expect("pusher:pong").await;
    assert_eq!(
        fb.subscribe("news").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    ws.subscribe("news").await;
    // socket_id exclusion: the fallback client is left out, the other gets it, then the reverse.
    b.rest()
        .trigger(&trigger("news", "story", Some(&fb.socket_id)))
        .await
        .unwrap();
    ws.expect("story").await;
    b.rest()
        .trigger(&trigger("news", "story2", Some(&ws.socket_id)))
        .await
        .unwrap();
    assert_eq!(
        fb.next().await.unwrap()["event"],
        "story2",
        "story (excluded) never reached the fallback client"
    );
    // Private channels and client events both ways.
    fb.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-room", "auth": "app-key:00"}})).await;
    assert_eq!(
        fb.expect("pusher:subscription_error").await["data"]["status"],
        401
    );
    fb.subscribe_signed("private-room", None).await;
    ws.subscribe_signed("private-room", None).await;
    fb.send(json!({"event": "client-typing", "channel": "private-room", "data": {"who": "fb"}}))
        .await;
    assert_eq!(
        data(&ws.expect("client-typing").await),
        json!({"who": "fb"})
    );
    ws.send(json!({"event": "client-typing", "channel": "private-room", "data": {"who": "ws"}}))
        .await;
    assert_eq!(
        data(&fb.expect("client-typing").await),
        json!({"who": "ws"})
    );
    // Presence: each sees the other, and the fallback client sees the WebSocket one leave.
    assert_eq!(
        data(&fb.join("presence-room", "fbuser").await)["presence"]["count"],
        1
    );
    assert_eq!(
        data(&ws.join("presence-room", "wsuser").await)["presence"]["count"],
        2
    );
    assert_eq!(
        data(&fb.expect("pusher_internal:member_added").await)["user_id"],
        "wsuser"
    );
    drop(ws);
    assert_eq!(
        data(&fb.expect("pusher_internal:member_removed").await)["user_id"],
        "wsuser"
    );
    // Bad input gets an error and the session stays.
    assert_eq!(fb.send_body("{not json").await, 400);
    fb.send(json!({"event": "pusher:subscribe", "data": {"channel": "bad name!"}}))
        .await;
    fb.expect("pusher:error").await;
    // Shutdown tells the client to reconnect (4200).
    let stopping = actix_rt::spawn(b.stop());
    assert_eq!(fb.closed().await, Closed(Some(4200)));
    stopping.await.unwrap();
}

#[actix_rt::test]
async fn streaming_sessions_speak_the_whole_protocol() {
    the_whole_protocol(Mode::Streaming).await;
}

#[actix_rt::test]
async fn polling_sessions_speak_the_whole_protocol() {
    the_whole_protocol(Mode::Polling).await;
}

#[actix_rt::test]
async fn abandoned_sessions_expire_and_leave_nothing_behind() {
    // A cut stream is noticed when a heartbeat cannot be written.
    let b = start(
        "[http_fallback]\nsession_timeout_secs = 1\nheartbeat_secs = 1",
        "",
    )
    .await;
    let mut ws = Ws::connect(&b).await;
    ws.join("presence-room", "wsuser").await;
    let mut abandoned = Vec::new();
    for (i, mode) in [Mode::Polling, Mode::Streaming].into_iter().enumerate() {
        let mut fb = Fb::connect(&b, mode).await;
        fb.join("presence-room", &format!("gone{i}")).await;
        ws.expect("pusher_internal:member_added").await;
        abandoned.push(fb);
    }
    assert_eq!(b.state.connection_count(), 3);
    // The polling client stops polling; the streaming one's stream is cut.
    drop(abandoned);
    for _ in 0..2 {
        let removed = ws.expect("pusher_internal:member_removed").await;
        assert!(data(&removed)["user_id"]
            .as_str()
            .unwrap()
            .starts_with("gone"));
    }
    eventually(|| b.state.connection_count() == 1).await;
    let users = b.rest().users("presence-room").await.unwrap();
    assert_eq!(users.users.len(), 1);
    b.stop().await;
}

#[actix_rt::test]
async fn a_stream_reopened_for_the_same_session_takes_over() {
    let b = start("", "").await;
    let mut fb = Fb::connect(&b, Mode::Streaming).await;
    fb.subscribe("news").await;
    // pusher-js reopens its stream after 256 KiB: same session, no new open frame.
    let mut second = Fb {
        base: fb.base.clone(),
        ..Fb::new(&b, Mode::Streaming, None)
    };
    second.socket_id = fb.socket_id.clone();
    assert_eq!(second.line().await.len(), 2048, "the prelude");
    assert_eq!(fb.line().await, "end", "the older stream ends");
    b.rest()
        .trigger(&trigger("news", "story", None))
        .await
        .unwrap();
    second.expect("story").await;
    assert!(
        !second.seen.contains('o'),
        "no second open frame: {}",
        second.seen
    );
    b.stop().await;
}

#[actix_rt::test]
async fn refusals_unknown_sessions_and_cors() {
    let b = start(
        "[http_fallback]\nmax_sessions = 1",
        "allowed_origins = [\"https://good.example\"]",
    )
    .await;
    // A disallowed origin: the open frame, then 4009 as pusher-js reads a refused handshake.
    let mut bad = Fb::new(&b, Mode::Polling, Some("https://evil.example"));
    let err = bad.next().await.unwrap();
    assert_eq!(err["data"]["code"], 4009);
    assert_eq!(bad.closed().await, Closed(Some(4009)));
    // An unknown key.
    let mut stranger = Fb {
        base: Fb::new(&b, Mode::Polling, None).base.replace(KEY, "nope"),
        ..Fb::new(&b, Mode::Polling, Some("https://good.example"))
    };
    assert_eq!(stranger.closed().await, Closed(Some(4001)));
    // One session is the limit here; the next is refused with 4100 (pusher-js backs off).
    let good = Fb::connect_from(&b, "https://good.example").await;
    let mut second = Fb::new(&b, Mode::Streaming, Some("https://good.example"));
    assert_eq!(second.closed().await, Closed(Some(4100)));
    // Sends to a session this node does not have are refused (404), not held; from another
    // origin than the session's, refused with 403 (see a_session_serves_only_the_client_that_opened_it).
    assert_eq!(second.send_body("[]").await, 404);
    let thief = Fb {
        origin: Some("https://good.example.evil".into()),
        ..Fb::new(&b, Mode::Polling, None)
    };
    let thief = Fb {
        base: good.base.clone(),
        ..thief
    };
    assert_eq!(thief.send_body("[]").await, 403);
    // The CORS preflight pusher-js's POSTs need.
    let res = awc::Client::new()
        .request(
            awc::http::Method::OPTIONS,
            format!("{}/xhr_send", good.base),
        )
        .insert_header(("origin", "https://good.example"))
        .insert_header(("access-control-request-method", "POST"))
        .insert_header(("access-control-request-headers", "content-type"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "https://good.example"
    );
    assert!(res
        .headers()
        .get("access-control-allow-methods")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(
        res.headers().get("access-control-allow-headers").unwrap(),
        "content-type"
    );
    b.stop().await;
}

impl Fb {
    async fn connect_from(b: &TestBroker, origin: &str) -> Self {
        let mut fb = Self::new(b, Mode::Polling, Some(origin));
        let established = fb.expect("pusher:connection_established").await;
        fb.socket_id = data(&established)["socket_id"].as_str().unwrap().to_owned();
        fb
    }
}

#[actix_rt::test]
async fn a_session_polled_too_slowly_is_cut_like_a_slow_consumer() {
    let b = start("send_queue = 4", "").await;
    let mut fb = Fb::connect(&b, Mode::Polling).await;
    fb.subscribe("news").await;
    for i in 0..6 {
        b.rest()
            .trigger(&trigger("news", &format!("e{i}"), None))
            .await
            .unwrap();
    }
    assert_eq!(fb.closed().await, Closed(Some(4100)));
    b.stop().await;
}

async fn eventually(f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition still false after the wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a receive request (`op`: `xhr` or `xhr_streaming`) of `fb`'s session
/// on a TCP socket of its own, as a browser does, and returns the socket once
/// the request is attached and all it was sent is read (so that dropping the
/// socket sends a FIN, as a browser closing a page does, not a reset).
async fn raw_receive(b: &TestBroker, fb: &Fb, op: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = fb.base.strip_prefix(&b.url).unwrap();
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", b.port))
        .await
        .unwrap();
    let head = format!(
        "POST {path}/{op}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         User-Agent: {UA}\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // A poll has sent its head; a stream its prelude too (one chunk).
    let end: &[u8] = if op == "xhr_streaming" {
        b"h\n\r\n"
    } else {
        b"\r\n\r\n"
    };
    let mut got = Vec::new();
    while !got.ends_with(end) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("the response within the wait")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    socket
}

/// A client whose socket closes while its poll or stream is held is noticed at
/// once: the session ends `session_timeout_secs` after that, not after the next
/// heartbeat could not be written.
async fn a_closed_socket_is_noticed_at_once(mode: Mode) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let b = start(
        "[http_fallback]\nsession_timeout_secs = 2\nheartbeat_secs = 60",
        "",
    )
    .await;
    let mut ws = Ws::connect(&b).await;
    ws.join("presence-room", "wsuser").await;
    let mut fb = Fb::connect(&b, mode).await;
    fb.join("presence-room", "fbuser").await;
    ws.expect("pusher_internal:member_added").await;
    let op = if mode == Mode::Streaming {
        "xhr_streaming"
    } else {
        "xhr"
    };
    let socket = raw_receive(&b, &fb, op).await;
    let closed = tokio::time::Instant::now();
    drop(socket);
    let removed = ws.expect("pusher_internal:member_removed").await;
    let took = closed.elapsed();
    assert_eq!(data(&removed)["user_id"], "fbuser");
    assert!(
        took >= TIMEOUT - Duration::from_millis(100) && took <= TIMEOUT + Duration::from_secs(1),
        "member_removed {took:?} after the socket closed; expected the session timeout ({TIMEOUT:?}) plus at most 1 s"
    );
    b.stop().await;
}

#[actix_rt::test]
async fn a_closed_streaming_socket_is_noticed_at_once() {
    a_closed_socket_is_noticed_at_once(Mode::Streaming).await;
}

#[actix_rt::test]
async fn a_closed_polling_socket_is_noticed_at_once() {
    a_closed_socket_is_noticed_at_once(Mode::Polling).await;
}

/// An HTTP client whose connections come from `local` (any 127.0.0.0/8 address
/// reaches the broker on 127.0.0.1): another client address on one machine.
fn http_from(local: &str) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().local_address(local.parse().unwrap()))
        .disable_timeout()
        .finish()
}

#[actix_rt::test]
async fn a_session_serves_only_the_client_that_opened_it() {
    // A short timeout only so that the broker stops soon (its sessions' close lines are not read).
    let b = start("[http_fallback]\nsession_timeout_secs = 1", "").await;
    let mut victim = Fb::connect(&b, Mode::Polling).await;
    victim.subscribe_signed("private-room", None).await;
    // What a request of someone else (another address, or another browser) gets.
    let others = [
        (http_from("127.0.0.2"), UA, "another address"),
        (http_from("127.0.0.1"), "Other/2.0", "another User-Agent"),
    ];
    for (http, ua, who) in others {
        for op in ["xhr", "xhr_streaming", "xhr_send"] {
            let req = http
                .post(format!("{}/{op}?protocol=7&client=js", victim.base))
                .insert_header(("content-type", "application/json"))
                .insert_header(("user-agent", ua));
            let res = tokio::time::timeout(WAIT, req.send_body("[]"))
                .await
                .expect("answered")
                .unwrap();
            assert_eq!(res.status(), 403, "{op} from {who}");
        }
    }
    // Another page's Origin, same address and browser.
    let page = Fb {
        origin: Some("https://other.example".into()),
        base: victim.base.clone(),
        ..Fb::new(&b, Mode::Polling, None)
    };
    assert_eq!(page.send_body("[]").await, 403);
    assert_eq!(b.state.metrics.fallback_refused_foreign.get(), 7);
    // None of that touched the session: it still gets its private events, and sends.
    b.rest()
        .trigger(&trigger("private-room", "secret", None))
        .await
        .unwrap();
    victim.expect("secret").await;
    victim
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    victim.expect("pusher:pong").await;
    b.stop().await;

    // Bound to Origin and User-Agent only, for clients whose requests leave by several addresses.
    let b = start(
        "[http_fallback]\nbind_to_address = false\nsession_timeout_secs = 1",
        "",
    )
    .await;
    let mut fb = Fb::connect(&b, Mode::Polling).await;
    let elsewhere = Fb {
        http: http_from("127.0.0.2"),
        base: fb.base.clone(),
        ..Fb::new(&b, Mode::Polling, None)
    };
    assert_eq!(elsewhere.send_body("[]").await, 204);
    fb.send(json!({"event": "pusher:ping", "data": {}})).await;
    fb.expect("pusher:pong").await;
    b.stop().await;
}

#[actix_rt::test]
async fn one_address_holds_at_most_its_share_of_the_sessions() {
    // 10 % of 20: two sessions per address.
    let b = start(
        "[http_fallback]\nmax_sessions = 20\nmax_sessions_per_ip_percent = 10\nsession_timeout_secs = 1",
        "",
    )
    .await;
    let first = Fb::connect(&b, Mode::Polling).await;
    let _second = Fb::connect(&b, Mode::Streaming).await;
    let mut third = Fb::new(&b, Mode::Polling, None);
    let refused = third.expect("pusher:error").await;
    assert_eq!(refused["data"]["code"], 4101, "{refused}");
    assert!(refused["data"]["message"]
        .as_str()
        .unwrap()
        .contains("2 HTTP-fallback sessions"));
    assert_eq!(third.closed().await, Closed(Some(4101)));
    // Other addresses are counted apart.
    let mut elsewhere = Fb {
        http: http_from("127.0.0.3"),
        ..Fb::new(&b, Mode::Polling, None)
    };
    elsewhere.expect("pusher:connection_established").await;
    // A session that ends gives its place back.
    drop(first);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut again = Fb::new(&b, Mode::Polling, None);
    again.expect("pusher:connection_established").await;
    b.stop().await;
}
