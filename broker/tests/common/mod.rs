//! An in-process test harness: a whole broker on port 0, stopped with a future,
//! and small clients built on the `protocol` crate — a WebSocket client speaking
//! protocol 7 and the signed REST client. Tests run inside an actix system
//! (`#[actix_rt::test]`).
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use broker::{config::Config, server::Server, state::State};
use futures_util::{SinkExt, StreamExt};
use protocol::{client::RestClient, sign, AppId, AppKey, AppSecret};
use serde_json::{json, Value};
use tokio::{net::TcpStream, sync::oneshot};
use tokio_tungstenite::{tungstenite::Message as WsMessage, MaybeTlsStream, WebSocketStream};

pub const APP_ID: &str = "1";
pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";
/// How long any single wait may take before the test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(5);

/// A broker running in this process.
pub struct TestBroker {
    pub port: u16,
    pub url: String,
    pub state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<actix_rt::task::JoinHandle<std::io::Result<()>>>,
}

/// Starts a broker with `top` (top-level keys and tables such as `[webhooks]`)
/// and one app (`app-key` / `app-secret`) whose table also gets `app_extra`.
pub async fn start(top: &str, app_extra: &str) -> TestBroker {
    let toml = format!(
        "host = \"127.0.0.1\"\nport = 0\nworkers = 1\n{top}\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{app_extra}\n"
    );
    start_with(Config::from_toml(&toml).expect("test config parses")).await
}

pub async fn start_with(config: Config) -> TestBroker {
    config.validate().expect("test config is valid");
    let server = Server::build(config, None).await.expect("broker binds");
    let port = server.local_addrs()[0].port();
    let state = server.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = actix_rt::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    TestBroker {
        port,
        url: format!("http://127.0.0.1:{port}"),
        state,
        stop: Some(stop),
        done: Some(done),
    }
}

impl TestBroker {
    pub fn rest(&self) -> RestClient {
        RestClient::new(
            &self.url,
            AppId::new(APP_ID).unwrap(),
            AppKey::new(KEY).unwrap(),
            AppSecret::new(SECRET).unwrap(),
        )
    }

    /// A signed REST request as the SDKs send it; returns (status, body).
    pub async fn signed(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
        secret: &str,
    ) -> (u16, String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let query = sign::sign_rest(
            &AppKey::new(KEY).unwrap(),
            &AppSecret::new(secret).unwrap(),
            method,
            path,
            params,
            body.as_bytes(),
            now,
        );
        let qs: String = query
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let client = awc::Client::default();
        let req = client
            .request(method.parse().unwrap(), format!("{}{path}?{qs}", self.url))
            .insert_header(("content-type", "application/json"));
        let mut res = req
            .send_body(body.to_owned())
            .await
            .expect("broker answers");
        let text = res.body().await.expect("body");
        (
            res.status().as_u16(),
            String::from_utf8_lossy(&text).into_owned(),
        )
    }

    /// Shuts the broker down as SIGTERM would, and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), done)
                .await
                .expect("broker stops");
        }
    }
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A WebSocket client speaking protocol 7, reading one JSON message at a time.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub socket_id: String,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed(pub Option<u16>);

impl Ws {
    /// Connects to `/app/{key}` and reads `pusher:connection_established`.
    pub async fn connect(b: &TestBroker) -> Self {
        let mut ws = Self::open(b, KEY).await;
        let established = ws.expect("pusher:connection_established").await;
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
        ws.socket_id = data["socket_id"].as_str().unwrap().to_owned();
        ws
    }

    /// Connects without reading anything.
    pub async fn open(b: &TestBroker, key: &str) -> Self {
        let url = format!(
            "ws://127.0.0.1:{}/app/{key}?protocol=7&client=test&version=1",
            b.port
        );
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self {
            stream,
            socket_id: String::new(),
        }
    }

    pub async fn send_raw(&mut self, m: WsMessage) {
        self.stream.send(m).await.expect("send");
    }

    /// Asserts that nothing arrives within `ms`.
    pub async fn quiet_for(&mut self, ms: u64) {
        if let Ok(Some(Ok(WsMessage::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(ms), self.stream.next()).await
        {
            panic!("expected nothing, got {t}");
        }
    }
}

impl Client for Ws {
    fn socket_id(&self) -> &str {
        &self.socket_id
    }

    async fn send(&mut self, v: Value) {
        self.stream
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    async fn next(&mut self) -> Result<Value, Closed> {
        loop {
            let m = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a message within the wait");
            match m {
                Some(Ok(WsMessage::Text(t))) => {
                    return Ok(serde_json::from_str(&t).expect("JSON from the broker"))
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(Closed(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Closed(None)),
            }
        }
    }
}

/// What tests need of a client connection, whatever its transport; the
/// conversation helpers are written once on top of `send` and `next`.
#[allow(async_fn_in_trait)]
pub trait Client {
    fn socket_id(&self) -> &str;

    async fn send(&mut self, v: Value);

    /// The next JSON message; `Err` with the close code when the connection closed.
    async fn next(&mut self) -> Result<Value, Closed>;

    /// Reads until a message with `event` arrives and returns it (others are skipped).
    async fn expect(&mut self, event: &str) -> Value {
        loop {
            match self.next().await {
                Ok(m) if m["event"] == event => return m,
                Ok(_) => continue,
                Err(c) => panic!("connection closed ({c:?}) while waiting for {event}"),
            }
        }
    }

    /// Reads until the connection closes; returns the close code.
    async fn closed(&mut self) -> Closed {
        loop {
            if let Err(c) = self.next().await {
                return c;
            }
        }
    }

    async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
        self.answer(channel).await
    }

    /// Subscribes to a private or presence channel with a valid signature.
    async fn subscribe_signed(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
        let auth = sign::sign_channel(
            &AppKey::new(KEY).unwrap(),
            &AppSecret::new(SECRET).unwrap(),
            self.socket_id(),
            channel,
            channel_data,
        );
        let mut data = json!({"channel": channel, "auth": auth});
        if let Some(cd) = channel_data {
            data["channel_data"] = json!(cd);
        }
        self.send(json!({"event": "pusher:subscribe", "data": data}))
            .await;
        self.answer(channel).await
    }

    /// Joins a presence channel as `user_id`.
    async fn join(&mut self, channel: &str, user_id: &str) -> Value {
        let cd = json!({"user_id": user_id, "user_info": {"name": user_id}}).to_string();
        self.subscribe_signed(channel, Some(&cd)).await
    }

    /// The broker's answer to a subscription: succeeded or error, for `channel`.
    async fn answer(&mut self, channel: &str) -> Value {
        loop {
            let m = self.next().await.expect("open while subscribing");
            let ev = m["event"].as_str().unwrap_or_default();
            if m["channel"] == channel
                && (ev == "pusher_internal:subscription_succeeded"
                    || ev == "pusher:subscription_error")
            {
                return m;
            }
            assert!(
                !ev.starts_with("pusher_internal:member"),
                "member event for a channel before its answer: {m}"
            );
        }
    }
}

/// The `data` of a frame, parsed when it is a JSON string.
pub fn data(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}
