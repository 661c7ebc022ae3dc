// Mirrors migrations/; kept by hand because the tables are few.

diesel::table! {
    users (id) {
        id -> Int4,
        #[max_length = 150]
        username -> Varchar,
        password_hash -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (token_hash) {
        token_hash -> Text,
        user_id -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    conversations (id) {
        id -> Int8,
        #[max_length = 16]
        kind -> Varchar,
        #[max_length = 80]
        title -> Nullable<Varchar>,
        created_by -> Nullable<Int4>,
        #[max_length = 32]
        direct_key -> Nullable<Varchar>,
        channel_epoch -> Int4,
        created_at -> Timestamptz,
        last_message_at -> Timestamptz,
    }
}

diesel::table! {
    members (conversation_id, user_id) {
        conversation_id -> Int8,
        user_id -> Int4,
        joined_at -> Timestamptz,
        last_seen_message_id -> Int8,
    }
}

diesel::table! {
    messages (id) {
        id -> Int8,
        sender_id -> Int4,
        #[max_length = 225]
        message -> Varchar,
        conversation_id -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    receipts (message_id, user_id) {
        message_id -> Int8,
        user_id -> Int4,
        delivered_at -> Timestamptz,
        seen_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(members -> users (user_id));
diesel::joinable!(members -> conversations (conversation_id));
diesel::joinable!(messages -> users (sender_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(receipts -> messages (message_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    conversations,
    members,
    messages,
    receipts
);
