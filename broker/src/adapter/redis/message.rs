//! The format of messages between nodes: one JSON header line, then the payload
//! (usually a frame exactly as clients receive it, so a node frames it once for
//! all its subscribers).

use protocol::SocketId;
use serde::{Deserialize, Serialize};

/// What kind of cluster message follows the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Kind {
    /// Deliver the frame to the channel's subscribers but `except`. The sender
    /// delivered it to its own subscribers already.
    #[serde(rename = "b")]
    Broadcast,
    /// Close the channel's subscribers with `code`.
    #[serde(rename = "t")]
    Terminate,
    /// Send the frame to connections watching the user named by `channel`.
    #[serde(rename = "w")]
    Watchers,
    /// A `member_added` / `member_removed`, published by a Lua script in the same step
    /// as the membership change. Every node delivers it, the sender's too, so member
    /// events reach each node in the order the changes happened.
    #[serde(rename = "m")]
    Member,
    /// The member list for a pending join (`token`) on the receiving node; the payload
    /// is a JSON array `[user, user_info, user, user_info, …]`.
    #[serde(rename = "l")]
    List,
    /// A kept event, published by `lua/publish.lua` with its position (`p`) in the same
    /// step that assigned it. Every node delivers it, the sender's too, so each node
    /// delivers a channel's kept events in position order.
    #[serde(rename = "h")]
    Kept,
}

/// The header of a cluster message.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Header<'a> {
    #[serde(rename = "n")]
    pub node: &'a str,
    #[serde(rename = "k")]
    pub kind: Kind,
    #[serde(rename = "a")]
    pub app: &'a str,
    #[serde(rename = "c", borrow)]
    pub channel: std::borrow::Cow<'a, str>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub except: Option<SocketId>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(rename = "j", default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// A kept event's position (added by the script that assigned it).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

impl<'a> Header<'a> {
    pub fn new(node: &'a str, kind: Kind, app: &'a str, channel: &'a str) -> Self {
        Self {
            node,
            kind,
            app,
            channel: channel.into(),
            except: None,
            code: None,
            token: None,
            position: None,
        }
    }

    /// The header line alone (for scripts that append the payload themselves).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("header serializes")
    }
}

pub(super) fn encode(header: &Header<'_>, payload: &str) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).expect("header serializes");
    out.push(b'\n');
    out.extend_from_slice(payload.as_bytes());
    out
}

/// Splits a cluster message into its header and payload.
pub(super) fn decode(message: &[u8]) -> Option<(Header<'_>, &str)> {
    let split = message.iter().position(|b| *b == b'\n')?;
    let header: Header<'_> = serde_json::from_slice(&message[..split]).ok()?;
    let payload = std::str::from_utf8(&message[split + 1..]).ok()?;
    Some((header, payload))
}

/// Parses a member list payload into `(user, user_info)` pairs; `None` if malformed.
pub(super) fn member_list(
    payload: &str,
) -> Option<Vec<(String, Box<serde_json::value::RawValue>)>> {
    let flat: Vec<String> = serde_json::from_str(payload).ok()?;
    if !flat.len().is_multiple_of(2) {
        return None;
    }
    let mut it = flat.into_iter();
    let mut out = Vec::new();
    while let (Some(user), Some(info)) = (it.next(), it.next()) {
        out.push((user, serde_json::value::RawValue::from_string(info).ok()?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_messages_round_trip() {
        let mut h = Header::new("n1", Kind::Broadcast, "1", "news");
        h.except = Some(SocketId::new(3, 4));
        let bytes = encode(&h, r#"{"event":"e","channel":"news","data":"{\n}"}"#);
        let (back, frame) = decode(&bytes).unwrap();
        assert_eq!(back.node, "n1");
        assert_eq!(back.kind, Kind::Broadcast);
        assert_eq!(back.except, Some(SocketId::new(3, 4)));
        assert_eq!(frame, r#"{"event":"e","channel":"news","data":"{\n}"}"#);
        assert!(decode(b"no header").is_none());
    }

    #[test]
    fn a_user_id_with_escapes_survives_the_header() {
        let h = Header::new("n1", Kind::Watchers, "1", "a \"quoted\"\nuser");
        let bytes = encode(&h, "x");
        assert_eq!(decode(&bytes).unwrap().0.channel, "a \"quoted\"\nuser");
    }

    #[test]
    fn member_lists_parse_as_scripts_write_them() {
        // Redis's cjson escapes '/' and writes the infos as strings.
        let list = member_list(r#"["u\/1","{\"name\":\"A\"}","2","null"]"#).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].0, "u/1");
        assert_eq!(list[0].1.get(), r#"{"name":"A"}"#);
        assert_eq!(list[1].1.get(), "null");
        assert!(member_list(r#"["odd"]"#).is_none());
        assert!(member_list(r#"["u","not json"]"#).is_none());
        assert!(member_list("{}").is_none());
    }
}
