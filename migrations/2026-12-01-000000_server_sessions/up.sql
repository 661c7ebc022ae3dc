-- Server-side login sessions. The cookie carries a random token; only its SHA-256
-- is stored, so a copy of this table cannot be replayed as cookies. Deleting a
-- row ends that session at once (logout); deleting a user's rows ends them all.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX sessions_user_idx ON sessions (user_id);
