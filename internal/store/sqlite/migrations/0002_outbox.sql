-- Outbox: events waiting for the AMQP broker's confirmation, written in the
-- same transaction as the events (when the server has a broker). A copy of
-- the event, so event retention never removes an unpublished one.
CREATE TABLE outbox (
    id   INTEGER NOT NULL PRIMARY KEY, -- the event's id
    body BLOB    NOT NULL              -- the api.Event as JSON
) STRICT;

-- Event retention by age.
CREATE INDEX events_time ON events (time);
