//! Messages, their receipts per recipient, and the views clients read.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz},
};

use super::StoreError;
use crate::{
    models::{timestamp, MessageView, Status, User},
    schema::{conversations, members, messages},
};

#[derive(Debug, QueryableByName)]
struct ViewRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    conversation_id: i64,
    #[diesel(sql_type = Integer)]
    sender_id: i32,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    message: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    recipients: i64,
    #[diesel(sql_type = BigInt)]
    delivered: i64,
    #[diesel(sql_type = BigInt)]
    seen: i64,
    /// The viewer's own receipt: 1 delivered, 2 seen, none yet.
    #[diesel(sql_type = Nullable<Integer>)]
    mine: Option<i32>,
}

impl ViewRow {
    fn into_view(self, viewer: Option<i32>) -> MessageView {
        let my_status = match viewer {
            Some(v) if v != self.sender_id => Some(Status::of_receipt(self.mine)),
            _ => None,
        };
        MessageView {
            status: Status::of_counts(self.recipients, self.delivered, self.seen)
                .as_str()
                .to_owned(),
            name: self.name,
            message: self.message,
            id: self.id,
            created_at: timestamp(&self.created_at),
            conversation_id: self.conversation_id,
            sender_id: self.sender_id,
            recipients: self.recipients,
            delivered: self.delivered,
            seen: self.seen,
            my_status: my_status.map(Status::as_str),
        }
    }
}

/// Recipients are the members who had joined when the message was sent, less
/// its sender; only their receipts count. `$1` is the viewer (0 for nobody).
/// A macro so that the queries below can be built with `concat!` at compile time.
macro_rules! view_select {
    () => {
        "
SELECT m.id, m.conversation_id, m.sender_id, u.username::text AS name, m.message::text AS message, m.created_at,
  (SELECT count(*) FROM members mb
     WHERE mb.conversation_id = m.conversation_id AND mb.user_id <> m.sender_id AND mb.joined_at <= m.created_at) AS recipients,
  (SELECT count(*) FROM receipts r JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = r.user_id
     WHERE r.message_id = m.id AND r.user_id <> m.sender_id AND mb.joined_at <= m.created_at) AS delivered,
  (SELECT count(*) FROM receipts r JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = r.user_id
     WHERE r.message_id = m.id AND r.user_id <> m.sender_id AND mb.joined_at <= m.created_at AND r.seen_at IS NOT NULL) AS seen,
  (SELECT CASE WHEN r.seen_at IS NULL THEN 1 ELSE 2 END FROM receipts r WHERE r.message_id = m.id AND r.user_id = $1) AS mine
FROM messages m JOIN users u ON u.id = m.sender_id"
    };
}

/// The page query: `$1` viewer, `$2` conversation, `$3` cursor (ids below it), `$4` limit.
/// Ordered by both index columns so that the planner walks `messages_conversation_idx`
/// backwards from the cursor rather than the primary key with a filter.
pub const PAGE_SQL: &str = concat!(view_select!(), " WHERE m.conversation_id = $2 AND m.id < $3 ORDER BY m.conversation_id DESC, m.id DESC LIMIT $4");

/// Up to `limit` messages of a conversation with ids below `before` (the
/// newest, if `None`), oldest first. Walks `messages_conversation_idx` from the
/// cursor, so the cost does not depend on how long the conversation is.
pub fn page(
    conn: &mut PgConnection,
    conversation_id: i64,
    viewer: i32,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<MessageView>, StoreError> {
    let mut rows: Vec<ViewRow> = diesel::sql_query(PAGE_SQL)
        .bind::<Integer, _>(viewer)
        .bind::<BigInt, _>(conversation_id)
        .bind::<BigInt, _>(before.unwrap_or(i64::MAX))
        .bind::<BigInt, _>(limit)
        .load(conn)?;
    rows.reverse();
    Ok(rows
        .into_iter()
        .map(|r| r.into_view(Some(viewer)))
        .collect())
}

/// The views of `ids` (as anybody sees them: no `my_status`), by id.
pub fn views(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<MessageView>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    const SQL: &str = concat!(view_select!(), " WHERE m.id = ANY($2) ORDER BY m.id");
    let rows: Vec<ViewRow> = diesel::sql_query(SQL)
        .bind::<Integer, _>(0)
        .bind::<Array<BigInt>, _>(ids)
        .load(conn)?;
    Ok(rows.into_iter().map(|r| r.into_view(None)).collect())
}

/// `(message id, conversation id, sender id)` of a message.
pub fn locate(conn: &mut PgConnection, id: i64) -> Result<Option<(i64, i64, i32)>, StoreError> {
    Ok(messages::table
        .find(id)
        .select((messages::id, messages::conversation_id, messages::sender_id))
        .first(conn)
        .optional()?)
}

/// Stores a message (already validated) in a conversation the sender belongs
/// to, and returns its view with the ids of its recipients.
pub fn insert(
    conn: &mut PgConnection,
    sender: &User,
    conversation_id: i64,
    text: &str,
) -> Result<(MessageView, Vec<i32>), StoreError> {
    conn.transaction(|c| {
        let id: i64 = diesel::insert_into(messages::table)
            .values((
                messages::sender_id.eq(sender.id),
                messages::conversation_id.eq(conversation_id),
                messages::message.eq(text),
            ))
            .returning(messages::id)
            .get_result(c)
            .map_err(|e| match e {
                // The account was deleted while its session was still alive.
                DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                    StoreError::NoSuchUser
                }
                other => StoreError::Db(other),
            })?;
        diesel::update(conversations::table.find(conversation_id))
            .set(conversations::last_message_at.eq(diesel::dsl::now))
            .execute(c)?;
        let view = views(c, &[id])?
            .pop()
            .ok_or(StoreError::Db(DieselError::NotFound))?;
        let recipients = members::table
            .filter(members::conversation_id.eq(conversation_id))
            .filter(members::user_id.ne(sender.id))
            .select(members::user_id)
            .load(c)?;
        Ok((view, recipients))
    })
}

/// Records that `viewer` received (or saw) each of `ids` that is someone
/// else's message in `conversation_id` sent after the viewer joined. Receipts
/// only move forward. Returns the ids whose receipts changed.
pub fn mark(
    conn: &mut PgConnection,
    viewer: i32,
    conversation_id: i64,
    ids: &[i64],
    to: Status,
) -> Result<Vec<i64>, StoreError> {
    let seen = to == Status::Seen;
    conn.transaction(|c| {
        let changed: Vec<ChangedId> = diesel::sql_query(
            "INSERT INTO receipts (message_id, user_id, delivered_at, seen_at)
             SELECT m.id, $1, now(), CASE WHEN $4 THEN now() END
             FROM messages m JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = $1
             WHERE m.conversation_id = $2 AND m.id = ANY($3) AND m.sender_id <> $1 AND mb.joined_at <= m.created_at
             ON CONFLICT (message_id, user_id) DO UPDATE SET seen_at = EXCLUDED.seen_at
               WHERE receipts.seen_at IS NULL AND EXCLUDED.seen_at IS NOT NULL
             RETURNING message_id",
        )
        .bind::<Integer, _>(viewer)
        .bind::<BigInt, _>(conversation_id)
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Bool, _>(seen)
        .load(c)?;
        if seen {
            // Unread counts start after the newest message this member has seen.
            diesel::sql_query(
                "UPDATE members SET last_seen_message_id = GREATEST(last_seen_message_id,
                   COALESCE((SELECT max(id) FROM messages WHERE conversation_id = $2 AND id = ANY($3)), 0))
                 WHERE conversation_id = $2 AND user_id = $1",
            )
            .bind::<Integer, _>(viewer)
            .bind::<BigInt, _>(conversation_id)
            .bind::<Array<BigInt>, _>(ids)
            .execute(c)?;
        }
        let mut ids: Vec<i64> = changed.into_iter().map(|r| r.message_id).collect();
        ids.sort_unstable();
        Ok(ids)
    })
}

#[derive(QueryableByName)]
struct ChangedId {
    #[diesel(sql_type = BigInt)]
    message_id: i64,
}

/// One recipient's receipt for the "who has it" list.
#[derive(Debug, QueryableByName, serde::Serialize)]
pub struct RecipientReceipt {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub seen_at: Option<DateTime<Utc>>,
}

/// Every recipient of a message with their receipt (if any), by name; at most `limit`.
pub fn recipients(
    conn: &mut PgConnection,
    message_id: i64,
    limit: i64,
) -> Result<Vec<RecipientReceipt>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT u.username::text AS name, r.delivered_at, r.seen_at
         FROM messages m
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id <> m.sender_id AND mb.joined_at <= m.created_at
         JOIN users u ON u.id = mb.user_id
         LEFT JOIN receipts r ON r.message_id = m.id AND r.user_id = mb.user_id
         WHERE m.id = $1 ORDER BY u.username LIMIT $2",
    )
    .bind::<BigInt, _>(message_id)
    .bind::<BigInt, _>(limit)
    .load(conn)?)
}
