// Mirrors migrations/; kept by hand because the app has two small tables.

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
    conversations (id) {
        id -> Int8,
        // The column is called "user", as in the original app; diesel quotes it.
        #[sql_name = "user"]
        user_id -> Int4,
        #[max_length = 225]
        message -> Varchar,
        #[max_length = 16]
        status -> Varchar,
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

diesel::joinable!(conversations -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(conversations, users, sessions);
