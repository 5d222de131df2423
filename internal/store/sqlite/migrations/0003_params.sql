-- Parameter values (issue 3): fleet-wide (device '') and per device, one
-- row per package, the values as one JSON object.
CREATE TABLE param_values (
    device  TEXT NOT NULL, -- '' for fleet-wide values
    package TEXT NOT NULL, -- group:name
    data    TEXT NOT NULL,
    PRIMARY KEY (device, package)
) STRICT;
