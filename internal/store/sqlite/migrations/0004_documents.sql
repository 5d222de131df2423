-- Desired-state documents of both kinds: a device's own (key device/ID)
-- and groups chosen by label selector (key group/NAME). data is the whole
-- api.Document as JSON. The per-device desired states stored before
-- become device documents.
CREATE TABLE documents (
    key  TEXT NOT NULL PRIMARY KEY, -- api.Document.Key()
    kind TEXT NOT NULL,             -- device | group
    name TEXT NOT NULL,             -- device id or group name
    data TEXT NOT NULL
) STRICT;

INSERT INTO documents (key, kind, name, data)
    SELECT 'device/' || id, 'device', id, json_set(json_remove(data, '$.systemtags'), '$.kind', 'device') FROM desired;

DROP TABLE desired;
