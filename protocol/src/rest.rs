//! Bodies of the HTTP API (`/apps/{app_id}/...`), shared by the broker and the client.
//!
//! Request fields are kept as plain strings here; the broker validates them so
//! that each problem gets its own status and message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /events`, and one item of `POST /batch_events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TriggerRequest {
    pub name: String,
    /// The payload, as text. SDKs send a string; other JSON is accepted and re-encoded.
    #[serde(deserialize_with = "data_text")]
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Exclude this connection from delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
    /// Comma-separated attributes to return per channel (`user_count`, `subscription_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

fn data_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchRequest {
    pub batch: Vec<TriggerRequest>,
}

/// Attributes of one channel, present only when asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<u64>,
}

/// Answer to `POST /events`: `{}` unless `info` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<BTreeMap<String, ChannelStats>>,
}

/// Answer to `POST /batch_events`: `{}` unless some item asked for `info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<ChannelStats>>,
}

/// Answer to `GET /channels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsResponse {
    pub channels: BTreeMap<String, ChannelStats>,
}

/// Answer to `GET /channels/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelResponse {
    pub occupied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<u64>,
    /// With `info=cache`: the cache channel's last event, or `null` when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Option<CacheInfo>>,
}

/// A cache channel's kept event and how many seconds it will still be kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    pub event: String,
    pub data: String,
    pub ttl: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
}

/// Answer to `GET /channels/{name}/users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersResponse {
    pub users: Vec<UserRef>,
}

/// The attributes a request may ask for in `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InfoRequest {
    pub user_count: bool,
    pub subscription_count: bool,
    /// A cache channel's last event (`GET /channels/{name}` only).
    pub cache: bool,
}

impl InfoRequest {
    /// Parses `info=user_count,subscription_count`. Unknown attributes are an error.
    pub fn parse(info: Option<&str>) -> Result<Self, String> {
        let mut out = Self::default();
        for part in info
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match part {
                "user_count" => out.user_count = true,
                "subscription_count" => out.subscription_count = true,
                "cache" => out.cache = true,
                other => return Err(format!("unknown info attribute {other:?}")),
            }
        }
        Ok(out)
    }

    /// Whether any per-channel count was asked for.
    pub fn any(&self) -> bool {
        self.user_count || self.subscription_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_data_may_be_an_object() {
        let r: TriggerRequest =
            serde_json::from_str(r#"{"name":"e","channel":"c","data":{"a":1}}"#).unwrap();
        assert_eq!(r.data, r#"{"a":1}"#);
        let r: TriggerRequest =
            serde_json::from_str(r#"{"name":"e","channels":["c"],"data":"x"}"#).unwrap();
        assert_eq!(r.data, "x");
    }

    #[test]
    fn empty_answers_serialize_as_empty_objects() {
        assert_eq!(
            serde_json::to_string(&TriggerResponse::default()).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::to_string(&BatchResponse::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn info_parsing() {
        let i = InfoRequest::parse(Some("user_count,subscription_count")).unwrap();
        assert!(i.user_count && i.subscription_count);
        assert!(!InfoRequest::parse(None).unwrap().any());
        assert!(InfoRequest::parse(Some("cache,bogus")).is_err());
    }
}
