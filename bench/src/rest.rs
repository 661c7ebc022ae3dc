//! Signed REST triggers over keep-alive HTTP/1.1 connections.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::sign;

use crate::ws::Target;

pub struct Rest {
    client: reqwest::Client,
    target: Target,
    path: String,
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
            path: format!("/apps/{}/events", target.app_id),
            target: target.clone(),
        })
    }

    /// `POST /apps/{id}/events` with one channel; `Err` carries the status and body.
    pub async fn trigger(&self, channel: &str, event: &str, data: &str) -> Result<(), String> {
        let body = serde_json::to_vec(
            &serde_json::json!({ "name": event, "channel": channel, "data": data }),
        )
        .expect("serializes");
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let params = sign::sign_rest(
            &self.target.key,
            &self.target.secret,
            "POST",
            &self.path,
            &[],
            &body,
            ts,
        );
        let mut url = format!("{}{}?", self.target.http_base, self.path);
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
            .map_err(|e| format!("trigger request: {e}"))?;
        let status = resp.status();
        let text = resp
            .bytes()
            .await
            .map_err(|e| format!("trigger response: {e}"))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "trigger HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&text[..text.len().min(200)])
            ))
        }
    }
}
