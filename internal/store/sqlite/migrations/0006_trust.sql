-- Signed TUF metadata (drover trust): every version of root, the newest of
-- the other roles (targets, bins, snapshot, timestamp).
CREATE TABLE trust_files (
    role    TEXT NOT NULL,
    version INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (role, version)
) STRICT;
