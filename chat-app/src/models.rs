//! Rows, the message status, and the JSON shape every client sees.

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

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = conversations)]
#[diesel(belongs_to(User, foreign_key = user_id))]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct Conversation {
    pub id: i64,
    pub user_id: i32,
    pub message: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = conversations)]
pub struct NewConversation<'a> {
    pub user_id: i32,
    pub message: &'a str,
    pub status: &'a str,
}

/// Where a message is on its way to the recipient. Ordered: it only moves forward.
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

    /// The states a message may be in for `self` to be an advance.
    pub fn earlier(self) -> Vec<&'static str> {
        Self::ALL.into_iter().filter(|s| *s < self).map(Status::as_str).collect()
    }
}

/// `{name, status, message, id, created_at}`: the history entries, the trigger
/// payloads, and the answer to `POST /conversation` all use this shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub name: String,
    pub status: String,
    pub message: String,
    pub id: i64,
    pub created_at: String,
}

impl MessageView {
    pub fn new(c: &Conversation, sender: &str) -> Self {
        Self {
            name: sender.to_owned(),
            status: c.status.clone(),
            message: c.message.clone(),
            id: c.id,
            created_at: c.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Status::Sent < Status::Delivered && Status::Delivered < Status::Seen);
        assert_eq!(Status::Seen.earlier(), vec!["Sent", "Delivered"]);
        assert!(Status::Sent.earlier().is_empty());
        assert_eq!(Status::parse("Delivered"), Some(Status::Delivered));
        assert_eq!(Status::parse("delivered"), None);
    }
}
