//! Rows, the message status, and the JSON shapes clients see.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::schema::{conversations, users};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: i32,
    pub username: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
}

/// What a conversation is; stored as text in `conversations.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The original single room: every user is a member, nobody can be removed.
    Everyone,
    Direct,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Everyone => "everyone",
            Kind::Direct => "direct",
            Kind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Kind::Everyone, Kind::Direct, Kind::Group]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The conversation every user belongs to (created by the migration).
pub const EVERYONE_ID: i64 = 1;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = conversations)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct Conversation {
    pub id: i64,
    pub kind: String,
    pub title: Option<String>,
    pub created_by: Option<i32>,
    pub direct_key: Option<String>,
    pub channel_epoch: i32,
    pub created_at: DateTime<Utc>,
    pub last_message_at: DateTime<Utc>,
}

/// The original app's channel, made private: the default conversation keeps it.
pub const EVERYONE_CHANNEL: &str = "private-a_channel";

impl Conversation {
    pub fn kind(&self) -> Kind {
        Kind::parse(&self.kind).unwrap_or(Kind::Group)
    }

    /// The private channel this conversation's events travel on. The epoch
    /// changes when a member is removed, so an old subscription hears nothing more.
    pub fn channel(&self) -> String {
        channel_name(self.id, self.kind(), self.channel_epoch)
    }
}

pub fn channel_name(id: i64, kind: Kind, epoch: i32) -> String {
    match kind {
        Kind::Everyone => EVERYONE_CHANNEL.to_owned(),
        _ => format!("private-conversation-{id}-{epoch}"),
    }
}

/// `(id, epoch)` of a `private-conversation-{id}-{epoch}` channel name.
pub fn parse_channel(name: &str) -> Option<(i64, i32)> {
    let rest = name.strip_prefix("private-conversation-")?;
    let (id, epoch) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(id) || !digits(epoch) {
        return None;
    }
    Some((id.parse().ok()?, epoch.parse().ok()?))
}

/// Where a message is on its way to its recipients. Ordered: it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Sent,
    Delivered,
    Seen,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Sent, Status::Delivered, Status::Seen];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "Sent",
            Status::Delivered => "Delivered",
            Status::Seen => "Seen",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// One recipient's own status from the store's receipt code: none yet
    /// (`None`), delivered (1), seen (2).
    pub fn of_receipt(code: Option<i32>) -> Self {
        match code {
            None => Status::Sent,
            Some(2) => Status::Seen,
            Some(_) => Status::Delivered,
        }
    }

    /// The status of a message as a whole: Delivered once every recipient has
    /// it, Seen once every recipient has seen it (as a direct message reads).
    pub fn of_counts(recipients: i64, delivered: i64, seen: i64) -> Self {
        if recipients > 0 && seen >= recipients {
            Status::Seen
        } else if recipients > 0 && delivered >= recipients {
            Status::Delivered
        } else {
            Status::Sent
        }
    }
}

pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A message as clients see it. `{name, status, message, id, created_at}` is the
/// original app's shape; the rest tells receipts per recipient. The recipients
/// of a message are the members who had joined when it was sent, less its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub name: String,
    pub status: String,
    pub message: String,
    pub id: i64,
    pub created_at: String,
    pub conversation_id: i64,
    pub sender_id: i32,
    pub recipients: i64,
    pub delivered: i64,
    pub seen: i64,
    /// How far the viewer has acknowledged someone else's message (history only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub my_status: Option<&'static str>,
}

/// The part of a view that a receipt changes: what the `receipts` event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptUpdate {
    pub id: i64,
    pub status: String,
    pub recipients: i64,
    pub delivered: i64,
    pub seen: i64,
}

impl From<&MessageView> for ReceiptUpdate {
    fn from(v: &MessageView) -> Self {
        Self {
            id: v.id,
            status: v.status.clone(),
            recipients: v.recipients,
            delivered: v.delivered,
            seen: v.seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Status::Sent < Status::Delivered && Status::Delivered < Status::Seen);
        assert_eq!(Status::parse("Delivered"), Some(Status::Delivered));
        assert_eq!(Status::parse("delivered"), None);
    }

    #[test]
    fn status_of_counts() {
        assert_eq!(Status::of_counts(0, 0, 0), Status::Sent);
        assert_eq!(Status::of_counts(3, 2, 2), Status::Sent);
        assert_eq!(Status::of_counts(3, 3, 2), Status::Delivered);
        assert_eq!(Status::of_counts(1, 1, 1), Status::Seen);
    }

    #[test]
    fn channel_names_round_trip() {
        assert_eq!(channel_name(1, Kind::Everyone, 0), "private-a_channel");
        assert_eq!(channel_name(7, Kind::Group, 3), "private-conversation-7-3");
        assert_eq!(parse_channel("private-conversation-7-3"), Some((7, 3)));
        for bad in [
            "private-conversation-7",
            "private-conversation--3",
            "private-conversation-7-x",
            "private-conversation-+7-1",
            "presence-conversation-7-1",
        ] {
            assert_eq!(parse_channel(bad), None, "{bad}");
        }
    }
}
