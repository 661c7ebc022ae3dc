//! WebSocket clients: open, subscribe, connect many in bounded parallel
//! batches, and drive each connection in its own task.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::{stream, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use protocol::{sign, AppKey, AppSecret};
use serde_json::{json, Value};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message},
    WebSocketStream,
};

use crate::stats;

pub type Ws = WebSocketStream<TcpStream>;

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    /// `host:port`
    pub authority: String,
    /// `http://host:port`
    pub http_base: String,
    pub app_id: String,
    pub key: AppKey,
    pub secret: AppSecret,
}

impl Target {
    pub fn parse(url: &str, app_id: &str, key: &str, secret: &str) -> Result<Self, String> {
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|p| url.strip_prefix(p))
            .ok_or_else(|| {
                format!("--url {url:?}: only http:// or ws:// (loopback, no TLS) is supported")
            })?;
        let authority = rest.split('/').next().unwrap_or_default().to_owned();
        if authority.is_empty() {
            return Err(format!("--url {url:?} has no host"));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            http_base: format!("http://{authority}"),
            authority,
            app_id: app_id.to_owned(),
            key: AppKey::new(key).map_err(|e| format!("--key: {e}"))?,
            secret: AppSecret::new(secret).map_err(|e| format!("--secret: {e}"))?,
        })
    }

    fn ws_url(&self) -> String {
        format!(
            "ws://{}/app/{}?protocol=7&client=pusher-bench&version=0.1.0",
            self.authority, self.key
        )
    }
}

fn ws_config() -> WebSocketConfig {
    // tungstenite zero-fills the free part of its read buffer before every read, so a
    // 16 KiB buffer costs a 16 KiB memset per ~200-byte frame (5 % of the generator's
    // CPU in a fan-out run). 4 KiB still takes a burst of frames in one read.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Opens a connection and waits for `pusher:connection_established`; returns the socket id.
pub async fn open(t: &Target) -> Result<(Ws, String), String> {
    upgrade(t, connect_tcp(t).await?).await
}

/// Opens a TCP connection to the broker (nothing sent).
pub async fn connect_tcp(t: &Target) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(&t.authority)
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Does the WebSocket handshake over an open TCP connection and waits for
/// `pusher:connection_established`; returns the socket id.
pub async fn upgrade(t: &Target, tcp: TcpStream) -> Result<(Ws, String), String> {
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(t.ws_url(), tcp, Some(ws_config()))
            .await
            .map_err(|e| format!("websocket handshake: {e}"))?;
    loop {
        let text = next_text(&mut ws).await?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("bad frame {text:?}: {e}"))?;
        match v["event"].as_str() {
            Some("pusher:connection_established") => {
                let data: Value = match &v["data"] {
                    Value::String(s) => {
                        serde_json::from_str(s).map_err(|e| format!("bad established data: {e}"))?
                    }
                    other => other.clone(),
                };
                let sid = data["socket_id"]
                    .as_str()
                    .ok_or("connection_established without socket_id")?;
                return Ok((ws, sid.to_owned()));
            }
            Some("pusher:error") => return Err(format!("refused: {}", v["data"])),
            _ => {}
        }
    }
}

/// The next text frame.
pub async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(c))) => return Err(format!("closed by server: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection ended".into()),
        }
    }
}

/// What to subscribe a connection to.
#[derive(Clone)]
pub enum Auth {
    Public,
    /// Private channel, signed locally with the app secret.
    Private,
    /// Presence channel with this `channel_data`.
    Presence(String),
}

#[derive(Clone)]
pub struct SubSpec {
    pub channel: String,
    pub auth: Auth,
}

/// The `pusher:subscribe` frame for `spec`, signed for `socket_id` where needed.
pub fn subscribe_frame(t: &Target, socket_id: &str, spec: &SubSpec) -> String {
    let mut data = json!({ "channel": spec.channel });
    match &spec.auth {
        Auth::Public => {}
        Auth::Private => {
            data["auth"] =
                sign::sign_channel(&t.key, &t.secret, socket_id, &spec.channel, None).into();
        }
        Auth::Presence(cd) => {
            data["auth"] =
                sign::sign_channel(&t.key, &t.secret, socket_id, &spec.channel, Some(cd)).into();
            data["channel_data"] = cd.clone().into();
        }
    }
    json!({ "event": "pusher:subscribe", "data": data }).to_string()
}

/// Subscribes and waits for `subscription_succeeded` on that channel.
pub async fn subscribe(ws: &mut Ws, frame: String, channel: &str) -> Result<(), String> {
    ws.send(Message::text(frame))
        .await
        .map_err(|e| format!("send subscribe: {e}"))?;
    loop {
        let text = next_text(ws).await?;
        if !text.contains(channel) && !text.contains("pusher:error") {
            continue;
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("bad frame {text:?}: {e}"))?;
        match v["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") if v["channel"] == channel => {
                return Ok(())
            }
            Some("pusher:subscription_error" | "pusher:error") => {
                return Err(format!("subscription refused: {}", v["data"]));
            }
            _ => {}
        }
    }
}

/// A connection that is open and subscribed (a WebSocket, or an HTTP-fallback stream).
pub struct Opened<C = Ws> {
    pub idx: usize,
    pub ws: C,
    pub socket_id: String,
    pub spec: SubSpec,
}

/// The result of [`connect_many`].
pub struct Connected<C = Ws> {
    pub opened: Vec<Opened<C>>,
    /// Time from starting the TCP connect to `subscription_succeeded`, µs.
    pub hist: Histogram<u64>,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl<C> Connected<C> {
    pub fn errors_json(&self) -> Value {
        json!(self.errors)
    }
}

/// Opens `n` WebSocket connections, at most `parallel` at a time, each subscribed to `spec(i)`.
/// Each connection gets `per_conn` to open and subscribe.
pub async fn connect_many(
    t: &Target,
    n: usize,
    parallel: usize,
    per_conn: Duration,
    spec: impl Fn(usize) -> SubSpec,
) -> Connected {
    connect_many_with(n, parallel, per_conn, spec, |_, spec| async move {
        let (mut ws, sid) = open(t).await?;
        subscribe(&mut ws, subscribe_frame(t, &sid, &spec), &spec.channel).await?;
        Ok((ws, sid))
    })
    .await
}

/// Opens `n` connections with `open(i, spec(i))` (which opens and subscribes), at
/// most `parallel` at a time, each within `per_conn`.
pub async fn connect_many_with<C, F, Fut>(
    n: usize,
    parallel: usize,
    per_conn: Duration,
    spec: impl Fn(usize) -> SubSpec,
    open: F,
) -> Connected<C>
where
    F: Fn(usize, SubSpec) -> Fut,
    Fut: std::future::Future<Output = Result<(C, String), String>>,
{
    let start = Instant::now();
    let open = &open;
    let results: Vec<_> = stream::iter((0..n).map(|i| (i, spec(i))))
        .map(|(i, spec)| async move {
            let t0 = Instant::now();
            let r = tokio::time::timeout(per_conn, open(i, spec.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "timed out after {per_conn:?} opening and subscribing"
                    ))
                });
            (i, spec, t0.elapsed(), r)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut out = Connected {
        opened: Vec::with_capacity(n),
        hist: stats::hist(),
        failed: 0,
        errors: BTreeMap::new(),
        elapsed: start.elapsed(),
    };
    for (idx, spec, took, r) in results {
        match r {
            Ok((ws, socket_id)) => {
                out.hist.saturating_record((took.as_micros() as u64).max(1));
                out.opened.push(Opened {
                    idx,
                    ws,
                    socket_id,
                    spec,
                });
            }
            Err(e) => {
                out.failed += 1;
                note_error(&mut out.errors, &e);
            }
        }
    }
    out.opened.sort_by_key(|o| o.idx);
    out
}

/// Counts an error message (shortened, at most 10 distinct kinds).
pub fn note_error(map: &mut BTreeMap<String, u64>, e: &str) {
    let mut e: String = e.chars().take(160).collect();
    if !map.contains_key(&e) && map.len() >= 10 {
        e = "other errors".into();
    }
    *map.entry(e).or_default() += 1;
}

/// Disconnects and errors seen by driven connections.
#[derive(Default)]
pub struct Health {
    /// Connections the server closed or that broke before we asked them to stop.
    pub dropped: AtomicU64,
    pub reasons: Mutex<BTreeMap<String, u64>>,
}

impl Health {
    pub fn drop_with(&self, reason: String) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        note_error(&mut self.reasons.lock().unwrap(), &reason);
    }

    pub fn json(&self) -> Value {
        json!({ "count": self.dropped.load(Ordering::Relaxed), "reasons": *self.reasons.lock().unwrap() })
    }
}

/// What a driven connection does with each text frame it receives.
pub trait Handler: Send + 'static {
    fn on_text(&mut self, text: &str);
}

/// Ignores everything (idle subscribers, presence members).
pub struct Ignore;
impl Handler for Ignore {
    fn on_text(&mut self, _: &str) {}
}

/// Runs one connection until `stop` turns true or the server ends it: hands
/// text frames to `h`, answers `pusher:ping`, and sends what arrives on `out`.
pub fn drive<H: Handler>(
    mut ws: Ws,
    mut h: H,
    mut stop: watch::Receiver<bool>,
    mut out: Option<mpsc::Receiver<String>>,
    health: Arc<Health>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // One waiter for the whole life of the connection: building it inside the loop
        // would register and drop a watch waiter for every frame received.
        let stopped = async move { stop.wait_for(|s| *s).await.map(|_| ()) };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
                cmd = async { out.as_mut().expect("guarded").recv().await }, if out.is_some() => match cmd {
                    Some(text) => {
                        if let Err(e) = ws.send(Message::text(text)).await {
                            health.drop_with(format!("send: {e}"));
                            return;
                        }
                    }
                    None => out = None,
                },
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let t = t.as_str();
                        if t.len() < 80 && t.contains("\"pusher:ping\"") {
                            if let Err(e) = ws.send(Message::text(r#"{"event":"pusher:pong","data":{}}"#)).await {
                                health.drop_with(format!("send pong: {e}"));
                                return;
                            }
                        } else {
                            h.on_text(t);
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        let why = c.map(|c| format!("closed by server: {} {}", c.code, c.reason)).unwrap_or_else(|| "closed by server".into());
                        health.drop_with(why);
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        health.drop_with(format!("read: {e}"));
                        return;
                    }
                    None => {
                        health.drop_with("connection ended without close frame".into());
                        return;
                    }
                },
            }
        }
    })
}

/// Asks every driven connection to close and waits (bounded) for them to finish.
pub async fn stop_all(
    stop: &watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    within: Duration,
) -> usize {
    let _ = stop.send(true);
    let deadline = tokio::time::Instant::now() + within;
    let mut unfinished = 0;
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            abort.abort();
            unfinished += 1;
        }
    }
    unfinished
}
