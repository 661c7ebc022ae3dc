//! A small signed client for the broker's HTTP API (feature `client`).
//!
//! It covers what an application server needs: trigger an event, trigger a
//! batch, and ask about channels. Requests are signed with [`crate::sign::sign_rest`],
//! the same function the broker verifies with, so both sides agree by construction.
//! Built on `awc`, so it must run inside an actix (or tokio `LocalSet`) runtime.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    app::{AppId, AppKey, AppSecret},
    rest::{
        BatchRequest, BatchResponse, ChannelResponse, ChannelsResponse, TriggerRequest,
        TriggerResponse, UsersResponse,
    },
    sign::sign_rest,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached or did not answer in time.
    #[error("broker unreachable: {0}")]
    Transport(String),
    /// The broker answered with an error status; `body` is its explanation.
    #[error("broker answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer from broker: {0}")]
    Decode(String),
}

/// Signs and sends requests to one app on one broker.
#[derive(Clone)]
pub struct RestClient {
    base_url: String,
    app_id: AppId,
    key: AppKey,
    secret: AppSecret,
    http: awc::Client,
}

impl RestClient {
    /// `base_url` is the broker's HTTP origin, such as `http://127.0.0.1:6001`.
    pub fn new(base_url: &str, app_id: AppId, key: AppKey, secret: AppSecret) -> Self {
        Self::with_timeout(base_url, app_id, key, secret, Duration::from_secs(5))
    }

    pub fn with_timeout(
        base_url: &str,
        app_id: AppId,
        key: AppKey,
        secret: AppSecret,
        timeout: Duration,
    ) -> Self {
        let http = awc::Client::builder().timeout(timeout).finish();
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            app_id,
            key,
            secret,
            http,
        }
    }

    /// `POST /apps/{id}/events`.
    pub async fn trigger(&self, req: &TriggerRequest) -> Result<TriggerResponse, ClientError> {
        self.send("POST", "events", &[], Some(req)).await
    }

    /// `POST /apps/{id}/batch_events`.
    pub async fn trigger_batch(&self, req: &BatchRequest) -> Result<BatchResponse, ClientError> {
        self.send("POST", "batch_events", &[], Some(req)).await
    }

    /// `GET /apps/{id}/channels`.
    pub async fn channels(
        &self,
        filter_by_prefix: Option<&str>,
        info: Option<&str>,
    ) -> Result<ChannelsResponse, ClientError> {
        let mut params = Vec::new();
        if let Some(p) = filter_by_prefix {
            params.push(("filter_by_prefix", p));
        }
        if let Some(i) = info {
            params.push(("info", i));
        }
        self.send::<(), _>("GET", "channels", &params, None).await
    }

    /// `GET /apps/{id}/channels/{name}`.
    pub async fn channel(
        &self,
        name: &str,
        info: Option<&str>,
    ) -> Result<ChannelResponse, ClientError> {
        let params: Vec<_> = info.map(|i| ("info", i)).into_iter().collect();
        self.send::<(), _>("GET", &format!("channels/{name}"), &params, None)
            .await
    }

    /// `GET /apps/{id}/channels/{name}/users` (presence channels only).
    pub async fn users(&self, name: &str) -> Result<UsersResponse, ClientError> {
        self.send::<(), _>("GET", &format!("channels/{name}/users"), &[], None)
            .await
    }

    async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        resource: &str,
        params: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
            None => Vec::new(),
        };
        let path = format!("/apps/{}/{}", self.app_id.as_str(), resource);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let query = sign_rest(&self.key, &self.secret, method, &path, params, &body, now);
        let url = format!("{}{}", self.base_url, path);
        let request = match method {
            "POST" => self.http.post(url),
            _ => self.http.get(url),
        }
        .query(&query)
        .map_err(|e| ClientError::Transport(e.to_string()))?;
        let mut response = if body.is_empty() {
            request.send().await
        } else {
            request
                .content_type("application/json")
                .send_body(body)
                .await
        }
        .map_err(|e| ClientError::Transport(e.to_string()))?;
        let bytes = response
            .body()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ClientError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::RestRequest;
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

    /// A stand-in server that checks the signature exactly as the broker does.
    async fn check(req: HttpRequest, body: web::Bytes) -> HttpResponse {
        let query: Vec<(String, String)> =
            web::Query::<Vec<(String, String)>>::from_query(req.query_string())
                .unwrap()
                .into_inner();
        let verified = RestRequest {
            method: req.method().as_str(),
            path: req.path(),
            query: &query,
            body: &body,
        }
        .verify(
            &AppKey::new("k").unwrap(),
            &AppSecret::new("s").unwrap(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
        match verified {
            Ok(()) if req.path().ends_with("/events") => HttpResponse::Ok().body("{}"),
            Ok(()) => HttpResponse::Ok().body(r#"{"occupied":true,"user_count":2}"#),
            Err(e) => HttpResponse::Unauthorized().body(e.to_string()),
        }
    }

    #[actix_rt::test]
    async fn signs_requests_the_server_accepts() {
        let server = HttpServer::new(|| App::new().default_service(web::to(check)))
            .workers(1)
            .bind(("127.0.0.1", 0))
            .unwrap();
        let addr = server.addrs()[0];
        let handle = server.run();
        let srv = handle.handle();
        actix_rt::spawn(handle);
        let base = format!("http://{addr}");
        let client = |secret: &str| {
            RestClient::new(
                &base,
                AppId::new("7").unwrap(),
                AppKey::new("k").unwrap(),
                AppSecret::new(secret).unwrap(),
            )
        };

        let req = TriggerRequest {
            name: "e".into(),
            data: "{\"x\":\"a b&c\"}".into(),
            channel: Some("c".into()),
            ..Default::default()
        };
        client("s").trigger(&req).await.unwrap();
        let ch = client("s")
            .channel("presence-x", Some("user_count,subscription_count"))
            .await
            .unwrap();
        assert_eq!(ch.user_count, Some(2));
        match client("wrong").trigger(&req).await {
            Err(ClientError::Status { status: 401, .. }) => {}
            other => panic!("expected 401, got {other:?}"),
        }
        srv.stop(false).await;
        assert!(matches!(
            client("s").trigger(&req).await,
            Err(ClientError::Transport(_))
        ));
    }
}
