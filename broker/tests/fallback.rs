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
            .insert_header(("content-type", "application/json"));
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
                    let body = res.body().await.expect("poll body");
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
    // Sends to a session this node does not have (or from another origin) are refused, not held.
    assert_eq!(second.send_body("[]").await, 404);
    let thief = Fb {
        origin: Some("https://good.example.evil".into()),
        ..Fb::new(&b, Mode::Polling, None)
    };
    let thief = Fb {
        base: good.base.clone(),
        ..thief
    };
    assert_eq!(thief.send_body("[]").await, 404);
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
