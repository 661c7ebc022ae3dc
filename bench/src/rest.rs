//! Signed REST triggers over keep-alive HTTP/1.1 connections.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::sign;

use crate::ws::Target;

pub struct Rest {
    client: reqwest::Client,
    target: Target,
    events_path: String,
    batch_path: String,
}

fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Rest {
    pub fn new(target: &Target) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            client,
            events_path: format!("/apps/{}/events", target.app_id),
            batch_path: format!("/apps/{}/batch_events", target.app_id),
            target: target.clone(),
        })
    }

    /// `POST /apps/{id}/events` with one channel; `Err` carries the status and body.
    pub async fn trigger(&self, channel: &str, event: &str, data: &str) -> Result<(), String> {
        let body = serde_json::json!({ "name": event, "channel": channel, "data": data });
        self.post_signed(&self.events_path, &body, "trigger").await
    }

    /// `POST /apps/{id}/batch_events` with one event per `(channel, data)`, all named
    /// `event`; `Err` carries the status and body.
    pub async fn batch(&self, event: &str, items: &[(&str, String)]) -> Result<(), String> {
        let batch: Vec<_> = items
            .iter()
            .map(|(channel, data)| serde_json::json!({ "name": event, "channel": channel, "data": data }))
            .collect();
        self.post_signed(
            &self.batch_path,
            &serde_json::json!({ "batch": batch }),
            "batch",
        )
        .await
    }

    /// POSTs `body` to `path`, signed with the app's key and secret (the auth_* query
    /// parameters over the method, path and body's MD5). `what` names the request in errors.
    async fn post_signed(
        &self,
        path: &str,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(body).expect("serializes");
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let params = sign::sign_rest(
            &self.target.key,
            &self.target.secret,
            "POST",
            path,
            &[],
            &body,
            ts,
        );
        let mut url = format!("{}{}?", self.target.http_base, path);
        for (i, (k, v)) in params.iter().enumerate() {
            if i > 0 {
                url.push('&');
            }
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
        }
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{what} request: {e}"))?;
        let status = resp.status();
        let text = resp
            .bytes()
            .await
            .map_err(|e| format!("{what} response: {e}"))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "{what} HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&text[..text.len().min(200)])
            ))
        }
    }
}
