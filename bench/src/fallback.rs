//! HTTP-fallback subscribers: pusher-js's `xhr_streaming` transport (one
//! long POST carrying `a[...]` lines, a POST to `xhr_send` per message), for
//! `fanout --transport xhr_streaming`.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::{sync::watch, task::JoinHandle};

use crate::ws::{subscribe_frame, Handler, Health, SubSpec, Target};

/// One open, subscribed `xhr_streaming` session.
pub struct Stream {
    http: reqwest::Client,
    response: reqwest::Response,
    buf: Vec<u8>,
    /// `…/pusher/app/{key}/{server}/{session}`
    base: String,
}

impl Stream {
    /// Pusher messages from the next chunk of lines (heartbeats and the open frame
    /// are skipped); `Err` when the session is closed or the stream ends.
    async fn next_messages(&mut self) -> Result<Vec<String>, String> {
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|e| format!("read: {e}"))?
            .ok_or("stream ended")?;
        self.buf.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            match line.first() {
                Some(b'a') => {
                    let texts: Vec<String> = serde_json::from_slice(&line[1..i])
                        .map_err(|e| format!("bad a[...] line: {e}"))?;
                    out.extend(texts);
                }
                Some(b'c') => {
                    return Err(format!(
                        "closed by server: {}",
                        String::from_utf8_lossy(&line[1..i])
                    ))
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Sends one Pusher message through `xhr_send`.
    async fn send(&self, text: &str) -> Result<(), String> {
        let body = serde_json::to_string(&[text]).expect("strings serialize");
        let res = self
            .http
            .post(format!("{}/xhr_send", self.base))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("xhr_send: {e}"))?;
        match res.status().as_u16() {
            204 => Ok(()),
            s => Err(format!("xhr_send answered {s}")),
        }
    }
}

/// Opens session `idx`, waits for `connection_established`, subscribes to
/// `spec` and waits for `subscription_succeeded`; returns the stream and socket id.
pub async fn open_subscribed(
    http: &reqwest::Client,
    t: &Target,
    idx: usize,
    spec: &SubSpec,
) -> Result<(Stream, String), String> {
    let base = format!(
        "{}/pusher/app/{}/{}/bench{idx:07}",
        t.http_base,
        t.key.as_str(),
        idx % 1000
    );
    let response = http
        .post(format!(
            "{base}/xhr_streaming?protocol=7&client=pusher-bench&version=0.1.0"
        ))
        .send()
        .await
        .map_err(|e| format!("xhr_streaming: {e}"))?;
    if response.status() != 200 {
        return Err(format!("xhr_streaming answered {}", response.status()));
    }
    let mut s = Stream {
        http: http.clone(),
        response,
        buf: Vec::new(),
        base,
    };
    let socket_id = 'established: loop {
        for text in s.next_messages().await? {
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("bad message {text:?}: {e}"))?;
            match v["event"].as_str() {
                Some("pusher:connection_established") => {
                    let data: Value = serde_json::from_str(v["data"].as_str().unwrap_or("{}"))
                        .map_err(|e| format!("bad established data: {e}"))?;
                    break 'established data["socket_id"]
                        .as_str()
                        .ok_or("connection_established without socket_id")?
                        .to_owned();
                }
                Some("pusher:error") => return Err(format!("refused: {}", v["data"])),
                _ => {}
            }
        }
    };
    s.send(&subscribe_frame(t, &socket_id, spec)).await?;
    loop {
        for text in s.next_messages().await? {
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("bad message {text:?}: {e}"))?;
            match v["event"].as_str() {
                Some("pusher_internal:subscription_succeeded")
                    if v["channel"] == spec.channel.as_str() =>
                {
                    return Ok((s, socket_id))
                }
                Some("pusher:subscription_error" | "pusher:error") => {
                    return Err(format!("subscription refused: {}", v["data"]))
                }
                _ => {}
            }
        }
    }
}

/// Runs one session until `stop` turns true or the server ends it: hands
/// messages to `h` and answers `pusher:ping` (through `xhr_send`).
pub fn drive<H: Handler>(
    mut s: Stream,
    mut h: H,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stopped = async move { stop.wait_for(|s| *s).await.map(|_| ()) };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => return,
                msgs = s.next_messages() => match msgs {
                    Ok(msgs) => {
                        for t in msgs {
                            if t.len() < 80 && t.contains("\"pusher:ping\"") {
                                if let Err(e) = s.send(r#"{"event":"pusher:pong","data":{}}"#).await {
                                    health.drop_with(format!("send pong: {e}"));
                                    return;
                                }
                            } else {
                                h.on_text(&t);
                            }
                        }
                    }
                    Err(e) => {
                        health.drop_with(e);
                        return;
                    }
                },
            }
        }
    })
}

/// The HTTP client the sessions share: one connection per stream, plus those the sends use.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("http client: {e}"))
}
