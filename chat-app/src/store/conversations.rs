//! Conversations and who belongs to them.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz},
};

use super::StoreError;
use crate::{
    models::{Conversation, Kind, User, EVERYONE_ID},
    schema::{conversations, members, users},
};

/// The conversation, if `user_id` is one of its members. Non-members and
/// missing conversations look the same, so ids reveal nothing.
pub fn for_member(
    conn: &mut PgConnection,
    conversation_id: i64,
    user_id: i32,
) -> Result<Option<Conversation>, StoreError> {
    Ok(conversations::table
        .inner_join(members::table)
        .filter(conversations::id.eq(conversation_id))
        .filter(members::user_id.eq(user_id))
        .select(Conversation::as_select())
        .first(conn)
        .optional()?)
}

pub fn member_ids(conn: &mut PgConnection, conversation_id: i64) -> Result<Vec<i32>, StoreError> {
    Ok(members::table
        .filter(members::conversation_id.eq(conversation_id))
        .select(members::user_id)
        .order(members::user_id)
        .load(conn)?)
}

/// `(id, name)` of the members, by name; at most `limit`.
pub fn members_of(
    conn: &mut PgConnection,
    conversation_id: i64,
    limit: i64,
) -> Result<Vec<(i32, String)>, StoreError> {
    Ok(members::table
        .inner_join(users::table)
        .filter(members::conversation_id.eq(conversation_id))
        .select((users::id, users::username))
        .order(users::username)
        .limit(limit)
        .load(conn)?)
}

pub fn count_members(conn: &mut PgConnection, conversation_id: i64) -> Result<i64, StoreError> {
    Ok(members::table
        .filter(members::conversation_id.eq(conversation_id))
        .count()
        .get_result(conn)?)
}

/// Makes `user_id` a member of the conversation everyone belongs to.
pub fn join_everyone(conn: &mut PgConnection, user_id: i32) -> Result<(), StoreError> {
    diesel::insert_into(members::table)
        .values((
            members::conversation_id.eq(EVERYONE_ID),
            members::user_id.eq(user_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// The direct conversation of two users, created on first use. `true` when it is new.
pub fn direct(
    conn: &mut PgConnection,
    me: i32,
    other: i32,
) -> Result<(Conversation, bool), StoreError> {
    let key = format!("{}:{}", me.min(other), me.max(other));
    conn.transaction(|c| {
        let created = diesel::insert_into(conversations::table)
            .values((
                conversations::kind.eq(Kind::Direct.as_str()),
                conversations::created_by.eq(me),
                conversations::direct_key.eq(&key),
            ))
            .on_conflict(conversations::direct_key)
            .do_nothing()
            .returning(Conversation::as_returning())
            .get_result(c)
            .optional()?;
        let is_new = created.is_some();
        let conv = match created {
            Some(conv) => conv,
            None => conversations::table
                .filter(conversations::direct_key.eq(&key))
                .select(Conversation::as_select())
                .first(c)?,
        };
        if is_new {
            diesel::insert_into(members::table)
                .values(vec![
                    (
                        members::conversation_id.eq(conv.id),
                        members::user_id.eq(me),
                    ),
                    (
                        members::conversation_id.eq(conv.id),
                        members::user_id.eq(other),
                    ),
                ])
                .execute(c)?;
        }
        Ok((conv, is_new))
    })
}

/// A named group of `creator` and `others` (already checked for size).
pub fn create_group(
    conn: &mut PgConnection,
    creator: i32,
    title: &str,
    others: &[i32],
) -> Result<Conversation, StoreError> {
    conn.transaction(|c| {
        let conv: Conversation = diesel::insert_into(conversations::table)
            .values((
                conversations::kind.eq(Kind::Group.as_str()),
                conversations::created_by.eq(creator),
                conversations::title.eq(title),
            ))
            .returning(Conversation::as_returning())
            .get_result(c)?;
        let mut ids: Vec<i32> = others.iter().copied().chain([creator]).collect();
        ids.sort_unstable();
        ids.dedup();
        let rows: Vec<_> = ids
            .iter()
            .map(|u| {
                (
                    members::conversation_id.eq(conv.id),
                    members::user_id.eq(*u),
                )
            })
            .collect();
        diesel::insert_into(members::table)
            .values(rows)
            .execute(c)?;
        Ok(conv)
    })
}

/// Adds a member unless the group would grow past `max`. `Ok(false)`: already a member.
pub fn add_member(
    conn: &mut PgConnection,
    conversation_id: i64,
    user_id: i32,
    max: i64,
) -> Result<bool, StoreError> {
    conn.transaction(|c| {
        // Lock the conversation row so two concurrent adds cannot both pass the size check.
        conversations::table
            .find(conversation_id)
            .select(conversations::id)
            .for_update()
            .first::<i64>(c)?;
        let n: i64 = members::table
            .filter(members::conversation_id.eq(conversation_id))
            .count()
            .get_result(c)?;
        let inserted = diesel::insert_into(members::table)
            .values((
                members::conversation_id.eq(conversation_id),
                members::user_id.eq(user_id),
            ))
            .on_conflict_do_nothing()
            .execute(c)?;
        if inserted == 1 && n + 1 > max {
            return Err(StoreError::GroupFull);
        }
        Ok(inserted == 1)
    })
}

/// Removes a member unless the group would shrink below `min`, and moves the
/// conversation to a new channel epoch. Returns the conversation after the move,
/// or `None` if the user was not a member.
pub fn remove_member(
    conn: &mut PgConnection,
    conversation_id: i64,
    user_id: i32,
    min: i64,
) -> Result<Option<Conversation>, StoreError> {
    conn.transaction(|c| {
        conversations::table
            .find(conversation_id)
            .select(conversations::id)
            .for_update()
            .first::<i64>(c)?;
        let n: i64 = members::table
            .filter(members::conversation_id.eq(conversation_id))
            .count()
            .get_result(c)?;
        let removed = diesel::delete(
            members::table
                .filter(members::conversation_id.eq(conversation_id))
                .filter(members::user_id.eq(user_id)),
        )
        .execute(c)?;
        if removed == 0 {
            return Ok(None);
        }
        if n - 1 < min {
            return Err(StoreError::GroupTooSmall);
        }
        let conv = diesel::update(conversations::table.find(conversation_id))
            .set(conversations::channel_epoch.eq(conversations::channel_epoch + 1))
            .returning(Conversation::as_returning())
            .get_result(c)?;
        Ok(Some(conv))
    })
}

/// Up to `limit` users whose name starts with `prefix` (any case), other than `me`.
pub fn search_users(
    conn: &mut PgConnection,
    prefix: &str,
    me: i32,
    limit: i64,
) -> Result<Vec<(i32, String)>, StoreError> {
    // Usernames cannot contain LIKE's wildcards (see validate::username), but escape anyway.
    let escaped: String = prefix
        .chars()
        .flat_map(|ch| {
            if matches!(ch, '%' | '_' | '\\') {
                vec!['\\', ch]
            } else {
                vec![ch]
            }
        })
        .collect();
    Ok(users::table
        .filter(users::username.ilike(format!("{escaped}%")))
        .filter(users::id.ne(me))
        .select((users::id, users::username))
        .order(diesel::dsl::sql::<Text>("lower(users.username)"))
        .limit(limit)
        .load(conn)?)
}

pub fn users_by_names(conn: &mut PgConnection, names: &[String]) -> Result<Vec<User>, StoreError> {
    Ok(users::table
        .filter(users::username.eq_any(names))
        .select(User::as_select())
        .load(conn)?)
}

/// One line of the sidebar.
#[derive(Debug, QueryableByName)]
pub struct SummaryRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub title: Option<String>,
    #[diesel(sql_type = Integer)]
    pub channel_epoch: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    pub created_by: Option<i32>,
    #[diesel(sql_type = Timestamptz)]
    pub last_message_at: DateTime<Utc>,
    /// For a direct conversation: the other person.
    #[diesel(sql_type = Nullable<Text>)]
    pub peer: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub member_count: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub last_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_message: Option<String>,
    /// Whether the viewer is a recipient of the last message (someone else's,
    /// sent after the viewer joined), and their receipt code for it (1
    /// delivered, 2 seen): the page acknowledges a preview it shows as Delivered.
    #[diesel(sql_type = Bool)]
    pub last_for_me: bool,
    #[diesel(sql_type = Nullable<Integer>)]
    pub last_mine: Option<i32>,
    /// Messages from others after the newest one this member has seen, counted up to 100.
    #[diesel(sql_type = BigInt)]
    pub unread: i64,
}

/// The most unread messages counted per conversation; the page shows "99+".
pub const UNREAD_CAP: i64 = 100;

const SUMMARY_SQL: &str = "
SELECT c.id, c.kind::text AS kind, c.title::text AS title, c.channel_epoch, c.created_by, c.last_message_at,
  CASE WHEN c.kind = 'direct' THEN
    (SELECT u.username::text FROM members o JOIN users u ON u.id = o.user_id WHERE o.conversation_id = c.id AND o.user_id <> $1 LIMIT 1)
  END AS peer,
  (SELECT count(*) FROM members o WHERE o.conversation_id = c.id) AS member_count,
  lm.id AS last_id, lm.name AS last_name, lm.message AS last_message,
  COALESCE(lm.sender_id <> $1 AND lm.created_at >= mb.joined_at, false) AS last_for_me,
  (SELECT CASE WHEN r.seen_at IS NULL THEN 1 ELSE 2 END FROM receipts r WHERE r.message_id = lm.id AND r.user_id = $1) AS last_mine,
  (SELECT count(*) FROM (
     SELECT 1 FROM messages m
     WHERE m.conversation_id = c.id AND m.id > mb.last_seen_message_id AND m.sender_id <> $1 AND m.created_at >= mb.joined_at
     LIMIT 100) AS x) AS unread
FROM members mb
JOIN conversations c ON c.id = mb.conversation_id
LEFT JOIN LATERAL (
  SELECT m.id, m.sender_id, m.created_at, u.username::text AS name, m.message::text AS message
  FROM messages m JOIN users u ON u.id = m.sender_id
  WHERE m.conversation_id = c.id ORDER BY m.id DESC LIMIT 1) lm ON true
WHERE mb.user_id = $1 AND ($2::bigint IS NULL OR c.id = $2)
ORDER BY c.last_message_at DESC, c.id DESC";

/// The sidebar: `user_id`'s conversations, newest activity first (or just `only`).
pub fn summaries(
    conn: &mut PgConnection,
    user_id: i32,
    only: Option<i64>,
) -> Result<Vec<SummaryRow>, StoreError> {
    Ok(diesel::sql_query(SUMMARY_SQL)
        .bind::<Integer, _>(user_id)
        .bind::<Nullable<BigInt>, _>(only)
        .load(conn)?)
}
