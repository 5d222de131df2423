-- The fleet page's one-time login tokens and logged-in sessions, by the
-- SHA-256 of their secret (never the secret), so a restart logs nobody out.
CREATE TABLE ui_sessions (
    key     TEXT NOT NULL PRIMARY KEY,
    kind    TEXT NOT NULL, -- token | live
    user    TEXT NOT NULL,
    csrf    TEXT NOT NULL,
    expires TEXT NOT NULL  -- UTC, fixed-width RFC 3339 so text order is time order
) STRICT;

CREATE INDEX ui_sessions_expires ON ui_sessions (kind, expires);
