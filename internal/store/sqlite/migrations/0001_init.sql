-- Builds: one row per pushed build. A coordinate plus its sorted tag set
-- names at most one build; the manifest digest is its identity.
CREATE TABLE builds (
    digest     TEXT    NOT NULL PRIMARY KEY, -- SHA-256 of manifest.json
    package    TEXT    NOT NULL,             -- group:name
    version    TEXT    NOT NULL,
    coordinate TEXT    NOT NULL,             -- group:name:version
    tag_key    TEXT    NOT NULL,             -- sorted tags joined by ',' (tags never hold ',')
    install    TEXT    NOT NULL,
    files      INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    pushed     TEXT    NOT NULL,             -- UTC, fixed-width RFC 3339 so text order is time order
    UNIQUE (coordinate, tag_key)
) STRICT;

CREATE INDEX builds_package ON builds (package);

-- Manifests apart from builds, so listing builds never reads their bulk.
CREATE TABLE manifests (
    digest TEXT NOT NULL PRIMARY KEY REFERENCES builds (digest) ON DELETE CASCADE,
    body   BLOB NOT NULL
) STRICT;

-- Devices: the whole api.Device as JSON; rewritten on every report.
-- last_seen is kept apart for later queries of silent devices.
CREATE TABLE devices (
    id        TEXT NOT NULL PRIMARY KEY,
    last_seen TEXT NOT NULL,
    data      TEXT NOT NULL
) STRICT;

-- Desired states: the whole api.DesiredState as JSON.
CREATE TABLE desired (
    id   TEXT NOT NULL PRIMARY KEY,
    data TEXT NOT NULL
) STRICT;

-- Events. AUTOINCREMENT: an ID is never reused, even after old events are
-- pruned, so clients can resume from the last ID they saw.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    time          TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    level         TEXT    NOT NULL,
    priority      TEXT    NOT NULL,
    priority_rank INTEGER NOT NULL, -- api.PriorityRank, for --min-priority
    package       TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    payload       BLOB
) STRICT;

CREATE INDEX events_device ON events (device, id);
CREATE INDEX events_kind ON events (kind, id);
