-- Rollouts: the whole api.Rollout as JSON, rewritten at each transition.
-- phase and created are kept apart to list the active ones in order.
CREATE TABLE rollouts (
    name    TEXT NOT NULL PRIMARY KEY,
    phase   TEXT NOT NULL,
    created TEXT NOT NULL, -- UTC, fixed-width RFC 3339 so text order is time order
    data    TEXT NOT NULL
) STRICT;

CREATE INDEX rollouts_phase ON rollouts (phase, created);
