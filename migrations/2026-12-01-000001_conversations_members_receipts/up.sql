-- Conversations with members, and receipts per recipient.
--
-- The original app called its message table "conversations". It becomes
-- "messages", and "conversations" now means a place messages are posted: the
-- default one everyone belongs to (id 1, the original single room), direct
-- conversations of two people, and named groups.
ALTER TABLE conversations RENAME TO messages;
ALTER TABLE messages RENAME CONSTRAINT conversations_pkey TO messages_pkey;
ALTER SEQUENCE conversations_id_seq RENAME TO messages_id_seq;
ALTER INDEX conversations_user_idx RENAME TO messages_sender_idx;
ALTER TABLE messages RENAME COLUMN "user" TO sender_id;
-- "status" stays as the record of the single-status era; receipts below replace it.

CREATE TABLE conversations (
    id              BIGSERIAL PRIMARY KEY,
    kind            VARCHAR(16) NOT NULL CHECK (kind IN ('everyone', 'direct', 'group')),
    title           VARCHAR(80) CHECK (title IS NULL OR char_length(btrim(title)) > 0),
    created_by      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    -- "lower:higher" user ids of a direct conversation, so each pair has one.
    direct_key      VARCHAR(32) UNIQUE,
    -- Part of the private channel name; bumped when a member is removed, so the
    -- removed member's live subscription goes quiet at once (see README).
    channel_epoch   INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_message_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX conversations_one_everyone ON conversations (kind) WHERE kind = 'everyone';
INSERT INTO conversations (id, kind, title) VALUES (1, 'everyone', 'Everyone');
SELECT setval('conversations_id_seq', 1);

CREATE TABLE members (
    conversation_id      BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id              INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Newest message this member has seen: unread counts are the messages after it.
    last_seen_message_id BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_user_idx ON members (user_id);
INSERT INTO members (conversation_id, user_id, joined_at) SELECT 1, id, created_at FROM users;

ALTER TABLE messages ADD COLUMN conversation_id BIGINT NOT NULL DEFAULT 1 REFERENCES conversations (id) ON DELETE CASCADE;
ALTER TABLE messages ALTER COLUMN conversation_id DROP DEFAULT;
-- Scroll-back walks this index from a cursor, so a page costs the same at any depth.
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);
UPDATE conversations SET last_message_at = COALESCE((SELECT max(created_at) FROM messages), now()) WHERE id = 1;

CREATE TABLE receipts (
    message_id   BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    delivered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at      TIMESTAMPTZ,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX receipts_user_idx ON receipts (user_id);
