CREATE TABLE users (
    id            SERIAL PRIMARY KEY,
    username      VARCHAR(150) NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- "user" and "status" keep the original app's column names; the checks repeat the
-- application's validation so that no other writer can store what the app would refuse.
CREATE TABLE conversations (
    id         BIGSERIAL PRIMARY KEY,
    "user"     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message    VARCHAR(225) NOT NULL CHECK (char_length(btrim(message)) > 0),
    status     VARCHAR(16) NOT NULL DEFAULT 'Sent' CHECK (status IN ('Sent', 'Delivered', 'Seen')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX conversations_user_idx ON conversations ("user");
