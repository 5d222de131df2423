-- The fleet page's one-time login tokens and logged-in sessions, by the
-- SHA-256 of their secret (never the secret), so every replica knows them.
CREATE TABLE ui_sessions (
    key     text        NOT NULL PRIMARY KEY,
    kind    text        NOT NULL, -- token | live
    "user"  text        NOT NULL,
    csrf    text        NOT NULL,
    expires timestamptz NOT NULL
);

CREATE INDEX ui_sessions_expires ON ui_sessions (kind, expires);
