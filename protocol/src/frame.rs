//! The wire format: one JSON object per WebSocket text message.
//!
//! Server frames carry most `data` as a JSON-encoded *string*: pusher-js parses
//! `data` a second time when it is a string, and some clients only work that
//! way. Client frames usually carry `data` as an object, but may send a string;
//! both are accepted.

use std::borrow::Cow;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{error::ErrorCode, socket_id::SocketId};

/// A frame received from a client.
#[derive(Debug)]
pub enum ClientFrame {
    Ping,
    Pong,
    Subscribe(Subscribe),
    Unsubscribe {
        channel: String,
    },
    Signin(Signin),
    /// A `client-*` event to relay to the channel's other subscribers.
    ClientEvent {
        event: String,
        channel: String,
        data: Box<RawValue>,
    },
    /// Any other event name; the broker answers with an error.
    Unknown {
        event: String,
    },
}

#[derive(Debug, Deserialize)]
pub struct Subscribe {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    /// The exact JSON string that was signed; kept as text so the signature can be checked.
    #[serde(default, deserialize_with = "string_or_json")]
    pub channel_data: Option<String>,
    /// The opt-in to channel history and recovery (see [`crate::history`]); read
    /// against the app's settings by the broker, so a bad one refuses only this subscription.
    #[serde(default)]
    pub history: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
pub struct Signin {
    pub auth: String,
    #[serde(deserialize_with = "string_or_json_required")]
    pub user_data: String,
}

#[derive(Deserialize)]
struct ChannelOnly {
    channel: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    /// `None` only when absent: an explicit `null` is kept, so a client event's
    /// `null` payload is relayed as `null`.
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Whether JSON text is an object. Derived structs also accept a JSON array of
/// their fields in order; the protocol's messages are objects, so that is refused.
fn is_object(json: &str) -> bool {
    json.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

/// Why a client frame could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message is not a JSON object with an event: {0}")]
    Malformed(String),
    #[error("{event}: {reason}")]
    BadData { event: &'static str, reason: String },
    #[error("client event must name a channel")]
    MissingChannel,
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        if !is_object(text) {
            return Err(FrameError::Malformed("expected a JSON object".to_owned()));
        }
        let env: Envelope<'_> =
            serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
        let bad = |event: &'static str| {
            move |e: serde_json::Error| FrameError::BadData {
                event,
                reason: e.to_string(),
            }
        };
        Ok(match env.event.as_ref() {
            "pusher:ping" => Self::Ping,
            "pusher:pong" => Self::Pong,
            "pusher:subscribe" => {
                Self::Subscribe(decode_data(env.data).map_err(bad("pusher:subscribe"))?)
            }
            "pusher:unsubscribe" => {
                let c: ChannelOnly = decode_data(env.data).map_err(bad("pusher:unsubscribe"))?;
                Self::Unsubscribe { channel: c.channel }
            }
            "pusher:signin" => Self::Signin(decode_data(env.data).map_err(bad("pusher:signin"))?),
            e if e.starts_with("client-") => Self::ClientEvent {
                event: e.to_owned(),
                channel: env.channel.ok_or(FrameError::MissingChannel)?.into_owned(),
                data: env
                    .data
                    .map(RawValue::to_owned)
                    .unwrap_or_else(empty_object),
            },
            e => Self::Unknown {
                event: e.to_owned(),
            },
        })
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("valid JSON")
}

/// Decodes `data` that may be an object or a string holding the object.
fn decode_data<T: DeserializeOwned>(raw: Option<&RawValue>) -> Result<T, serde_json::Error> {
    let raw = raw.map(RawValue::get).unwrap_or("null");
    let object = |json: &str| {
        if is_object(json) {
            serde_json::from_str(json)
        } else {
            Err(serde::de::Error::custom("data must be a JSON object"))
        }
    };
    if raw.trim_start().starts_with('"') {
        object(&serde_json::from_str::<String>(raw)?)
    } else {
        object(raw)
    }
}

/// `channel_data`/`user_data` are signed as text; an object is accepted and re-encoded.
fn string_or_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

fn string_or_json_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    string_or_json(d)?.ok_or_else(|| serde::de::Error::custom("missing user_data"))
}

/// The `data` of a server frame.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// Sent as a JSON string (the usual form).
    Text(&'a str),
    /// Sent as the JSON it already is (a client event's payload, relayed untouched).
    Json(&'a RawValue),
}

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Text(t) => s.serialize_str(t),
            Data::Json(r) => r.serialize(s),
        }
    }
}

/// A frame sent by the server. Serialize once with [`ServerFrame::to_json`] and
/// share the text with every recipient.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ServerFrame<'a> {
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    pub data: Data<'a>,
    /// Set on client events relayed on presence channels: the sender's user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames always serialize")
    }
}

/// An event on a channel whose data is `data` as a JSON string: a REST trigger's,
/// or one of the broker's own `pusher_internal:*` frames.
pub fn channel_event(channel: &str, event: &str, data: &str) -> String {
    ServerFrame {
        event,
        channel: Some(channel),
        data: Data::Text(data),
        user_id: None,
    }
    .to_json()
}

/// A client event relayed to the channel's other subscribers.
pub fn client_event(channel: &str, event: &str, data: &RawValue, user_id: Option<&str>) -> String {
    ServerFrame {
        event,
        channel: Some(channel),
        data: Data::Json(data),
        user_id,
    }
    .to_json()
}

pub fn connection_established(socket_id: SocketId, activity_timeout_secs: u64) -> String {
    let data =
        serde_json::json!({ "socket_id": socket_id, "activity_timeout": activity_timeout_secs })
            .to_string();
    ServerFrame {
        event: "pusher:connection_established",
        channel: None,
        data: Data::Text(&data),
        user_id: None,
    }
    .to_json()
}

/// `pusher:error`. `code` is `None` for errors the protocol gives no number.
pub fn error(code: Option<u16>, message: &str) -> String {
    #[derive(Serialize)]
    struct E<'a> {
        code: Option<u16>,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct F<'a> {
        event: &'static str,
        data: E<'a>,
    }
    let message = &*crate::limits::clip(message, crate::limits::MAX_ERROR_MESSAGE_CHARS);
    serde_json::to_string(&F {
        event: "pusher:error",
        data: E { code, message },
    })
    .expect("serializes")
}

pub fn error_code(code: ErrorCode) -> String {
    error(Some(code.code()), code.message())
}

pub const PING: &str = r#"{"event":"pusher:ping","data":"{}"}"#;
pub const PONG: &str = r#"{"event":"pusher:pong","data":"{}"}"#;

pub fn subscription_succeeded(channel: &str) -> String {
    ServerFrame {
        event: "pusher_internal:subscription_succeeded",
        channel: Some(channel),
        data: Data::Text("{}"),
        user_id: None,
    }
    .to_json()
}

/// `subscription_succeeded` for a presence channel: the member list as
/// `{"presence":{"ids":[..],"hash":{id:info},"count":n}}`.
pub fn presence_subscription_succeeded(channel: &str, members: &[(&str, &RawValue)]) -> String {
    struct Ids<'a>(&'a [(&'a str, &'a RawValue)]);
    struct Hash<'a>(&'a [(&'a str, &'a RawValue)]);
    impl Serialize for Ids<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(|(id, _)| id))
        }
    }
    impl Serialize for Hash<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(id, info)| (id, info)))
        }
    }
    #[derive(Serialize)]
    struct Presence<'a> {
        ids: Ids<'a>,
        hash: Hash<'a>,
        count: usize,
    }
    #[derive(Serialize)]
    struct Wrapper<'a> {
        presence: Presence<'a>,
    }
    let data = serde_json::to_string(&Wrapper {
        presence: Presence {
            ids: Ids(members),
            hash: Hash(members),
            count: members.len(),
        },
    })
    .expect("serializes");
    ServerFrame {
        event: "pusher_internal:subscription_succeeded",
        channel: Some(channel),
        data: Data::Text(&data),
        user_id: None,
    }
    .to_json()
}

/// A refused subscription, scoped to the channel so pusher-js emits
/// `pusher:subscription_error` on that channel's object.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    #[derive(Serialize)]
    struct D<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        error: &'a str,
        status: u16,
    }
    #[derive(Serialize)]
    struct F<'a> {
        event: &'static str,
        channel: &'a str,
        data: D<'a>,
    }
    let error = &*crate::limits::clip(error, crate::limits::MAX_ERROR_MESSAGE_CHARS);
    serde_json::to_string(&F {
        event: "pusher:subscription_error",
        channel,
        data: D {
            kind,
            error,
            status,
        },
    })
    .expect("serializes")
}

pub fn member_added(channel: &str, user_id: &str, user_info: &RawValue) -> String {
    #[derive(Serialize)]
    struct D<'a> {
        user_id: &'a str,
        user_info: &'a RawValue,
    }
    let data = serde_json::to_string(&D { user_id, user_info }).expect("serializes");
    ServerFrame {
        event: "pusher_internal:member_added",
        channel: Some(channel),
        data: Data::Text(&data),
        user_id: None,
    }
    .to_json()
}

pub fn member_removed(channel: &str, user_id: &str) -> String {
    let data = serde_json::json!({ "user_id": user_id }).to_string();
    ServerFrame {
        event: "pusher_internal:member_removed",
        channel: Some(channel),
        data: Data::Text(&data),
        user_id: None,
    }
    .to_json()
}

pub fn signin_success(user_data: &str) -> String {
    let data = serde_json::json!({ "user_data": user_data }).to_string();
    ServerFrame {
        event: "pusher:signin_success",
        channel: None,
        data: Data::Text(&data),
        user_id: None,
    }
    .to_json()
}

/// `pusher_internal:subscription_count`: how many connections subscribe to the channel.
pub fn subscription_count(channel: &str, count: u64) -> String {
    let data = serde_json::json!({ "subscription_count": count }).to_string();
    ServerFrame {
        event: "pusher_internal:subscription_count",
        channel: Some(channel),
        data: Data::Text(&data),
        user_id: None,
    }
    .to_json()
}

/// `pusher:cache_miss`: a cache channel had no event to replay.
pub fn cache_miss(channel: &str) -> String {
    ServerFrame {
        event: "pusher:cache_miss",
        channel: Some(channel),
        data: Data::Text("{}"),
        user_id: None,
    }
    .to_json()
}

/// `pusher_internal:watchlist_events` with one event (`online` or `offline`) for `user_ids`.
pub fn watchlist_event(name: &str, user_ids: &[&str]) -> String {
    let data =
        serde_json::json!({ "events": [{ "name": name, "user_ids": user_ids }] }).to_string();
    ServerFrame {
        event: "pusher_internal:watchlist_events",
        channel: None,
        data: Data::Text(&data),
        user_id: None,
    }
    .to_json()
}

/// Presence `channel_data`: who the subscriber is. `user_id` may be a number on the wire.
#[derive(Debug, Deserialize)]
pub struct ChannelData {
    #[serde(deserialize_with = "id_string")]
    pub user_id: String,
    #[serde(default)]
    pub user_info: Option<Box<RawValue>>,
}

/// Sign-in `user_data`: at least an `id`.
#[derive(Debug, Deserialize)]
pub struct UserData {
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    #[serde(default)]
    pub watchlist: Option<Vec<serde_json::Value>>,
}

impl UserData {
    /// The watched user ids as text: like user ids, they may be numbers on the wire.
    pub fn watchlist_ids(&self) -> Vec<String> {
        let entries = self.watchlist.iter().flatten();
        entries
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }
}

fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) if !s.is_empty() => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom(
            "user id must be a non-empty string or a number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn error_replies_do_not_echo_long_input() {
        let huge = "x".repeat(30_000);
        let e = json(&error(None, &format!("invalid channel name {huge:?}")));
        assert_eq!(
            e["data"]["message"].as_str().unwrap().chars().count(),
            crate::limits::MAX_ERROR_MESSAGE_CHARS
        );
        let e = json(&subscription_error("c", "AuthError", &huge, 401));
        assert_eq!(
            e["data"]["error"].as_str().unwrap().chars().count(),
            crate::limits::MAX_ERROR_MESSAGE_CHARS
        );
        // serde_json quotes the offending value in its message; the reply still stays short.
        let bad =
            format!(r#"{{"event":"pusher:subscribe","data":{{"channel":1,"auth":"{huge}"}}}}"#);
        let parse_error = ClientFrame::parse(&bad).unwrap_err().to_string();
        assert!(json(&error(None, &parse_error)).to_string().len() < 1024);
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn connection_established_data_is_a_string() {
        let f = json(&connection_established(SocketId::new(1, 2), 120));
        assert_eq!(f["event"], "pusher:connection_established");
        let inner = json(f["data"].as_str().unwrap());
        assert_eq!(inner["socket_id"], "1.2");
        assert_eq!(inner["activity_timeout"], 120);
    }

    #[test]
    fn subscribe_accepts_object_and_string_data() {
        let a = ClientFrame::parse(
            r#"{"event":"pusher:subscribe","data":{"channel":"c","auth":"k:s"}}"#,
        )
        .unwrap();
        let b = ClientFrame::parse(
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"c\",\"auth\":\"k:s\"}"}"#,
        )
        .unwrap();
        for f in [a, b] {
            match f {
                ClientFrame::Subscribe(s) => {
                    assert_eq!(s.channel, "c");
                    assert_eq!(s.auth.as_deref(), Some("k:s"));
                    assert!(s.channel_data.is_none());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn channel_data_is_kept_verbatim() {
        let f = ClientFrame::parse(
            r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"{\"user_id\":7}"}}"#,
        )
        .unwrap();
        let ClientFrame::Subscribe(s) = f else {
            panic!()
        };
        assert_eq!(s.channel_data.as_deref(), Some(r#"{"user_id":7}"#));
        let cd: ChannelData = serde_json::from_str(s.channel_data.as_deref().unwrap()).unwrap();
        assert_eq!(cd.user_id, "7");
    }

    #[test]
    fn client_event_keeps_raw_data() {
        let f = ClientFrame::parse(
            r#"{"event":"client-typing","channel":"private-a","data":{"x": 1}}"#,
        )
        .unwrap();
        let ClientFrame::ClientEvent {
            event,
            channel,
            data,
        } = f
        else {
            panic!()
        };
        assert_eq!(
            (event.as_str(), channel.as_str()),
            ("client-typing", "private-a")
        );
        let out = json(&client_event(&channel, &event, &data, Some("u1")));
        assert_eq!(out["data"]["x"], 1);
        assert_eq!(out["user_id"], "u1");
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(
            ClientFrame::parse("nope"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"data":1}"#),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"event":"pusher:subscribe","data":{}}"#),
            Err(FrameError::BadData { .. })
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"event":"client-x","data":{}}"#),
            Err(FrameError::MissingChannel)
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"event":"pusher:foo"}"#),
            Ok(ClientFrame::Unknown { .. })
        ));
    }

    // Found by the property tests (protocol/tests/prop_frames.rs): a JSON array of
    // the envelope's fields in order was read as a frame, and array `data` as the
    // subscribe/unsubscribe/signin object.
    #[test]
    fn arrays_are_not_frames() {
        assert!(matches!(
            ClientFrame::parse(r#"["pusher:ping"]"#),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#" [""]"#),
            Err(FrameError::Malformed(_))
        ));
        for data in [r#"["c"]"#, r#""[\"c\"]""#, "null", r#""c""#, "1"] {
            let text = format!(r#"{{"event":"pusher:unsubscribe","data":{data}}}"#);
            assert!(
                matches!(
                    ClientFrame::parse(&text),
                    Err(FrameError::BadData {
                        event: "pusher:unsubscribe",
                        ..
                    })
                ),
                "{text}"
            );
        }
        let ok = ClientFrame::parse(
            "\n {\"event\":\"pusher:unsubscribe\",\"data\":\" {\\\"channel\\\":\\\"c\\\"}\"}",
        )
        .unwrap();
        assert!(matches!(ok, ClientFrame::Unsubscribe { channel } if channel == "c"));
    }

    // Found by the property tests: a client event's `"data": null` was relayed as `{}`.
    #[test]
    fn client_event_null_data_is_relayed_as_null() {
        let f = ClientFrame::parse(r#"{"event":"client-x","channel":"private-a","data":null}"#)
            .unwrap();
        let ClientFrame::ClientEvent { data, .. } = f else {
            panic!()
        };
        assert_eq!(data.get(), "null");
        let f = ClientFrame::parse(r#"{"event":"client-x","channel":"private-a"}"#).unwrap();
        let ClientFrame::ClientEvent { data, .. } = f else {
            panic!()
        };
        assert_eq!(
            data.get(),
            "{}",
            "absent data is still relayed as an empty object"
        );
    }

    #[test]
    fn watchlist_ids_may_be_numbers() {
        let u: UserData = serde_json::from_str(r#"{"id":"1","watchlist":["a",2,null]}"#).unwrap();
        assert_eq!(u.watchlist_ids(), ["a", "2", "null"]);
        let u: UserData = serde_json::from_str(r#"{"id":"1"}"#).unwrap();
        assert!(u.watchlist_ids().is_empty());
    }

    #[test]
    fn presence_snapshot_shape() {
        let info = RawValue::from_string(r#"{"name":"A"}"#.into()).unwrap();
        let f = json(&presence_subscription_succeeded(
            "presence-x",
            &[("1", &*info)],
        ));
        let data = json(f["data"].as_str().unwrap());
        assert_eq!(data["presence"]["ids"], json(r#"["1"]"#));
        assert_eq!(data["presence"]["hash"]["1"]["name"], "A");
        assert_eq!(data["presence"]["count"], 1);
    }

    #[test]
    fn event_data_is_string_encoded() {
        let f = json(&channel_event("a", "e", r#"{"k":"v"}"#));
        assert_eq!(f["data"], r#"{"k":"v"}"#);
        assert!(f.get("user_id").is_none());
    }

    #[test]
    fn error_frames() {
        let f = json(&error_code(ErrorCode::AppNotFound));
        assert_eq!(f["data"]["code"], 4001);
        let f = json(&error(None, "x"));
        assert!(f["data"]["code"].is_null());
        let f = json(&subscription_error("private-a", "AuthError", "bad", 401));
        assert_eq!(f["channel"], "private-a");
        assert_eq!(f["data"]["status"], 401);
    }
}
