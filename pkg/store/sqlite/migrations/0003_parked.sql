-- 0003: parked sequences, a projection's sequenced dead letters.
--
-- A projection that cannot apply an event parks the event's sequence: one
-- row in parked_sequences (per projection name and sequence), the event and
-- every later event of the sequence in parked_events, in the projection's
-- own transactions. A retry or a skip takes the events out and leaves a row
-- in park_actions. A row of parked_sequences with nothing parked stays while
-- it keeps skipped positions (skipped, a JSON array of {"from","to"}).
-- Times are RFC 3339 text in UTC.

CREATE TABLE parked_sequences (
    name        TEXT    NOT NULL,
    sequence_id BLOB    NOT NULL CHECK (length(sequence_id) = 16),
    entity      TEXT    NOT NULL,
    first_pos   INTEGER NOT NULL,
    last_pos    INTEGER NOT NULL,
    event_count INTEGER NOT NULL CHECK (event_count >= 0),
    reason      TEXT    NOT NULL,
    parked_at   TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    retries     INTEGER NOT NULL,
    skipped     TEXT    NOT NULL,
    PRIMARY KEY (name, sequence_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE parked_events (
    name             TEXT    NOT NULL,
    sequence_id      BLOB    NOT NULL CHECK (length(sequence_id) = 16),
    position         INTEGER NOT NULL CHECK (position >= 0),
    topic            TEXT    NOT NULL,
    state            BLOB    NOT NULL,
    codec            TEXT    NOT NULL,
    notification_id  INTEGER NOT NULL,
    record_topic     TEXT    NOT NULL,
    record_partition INTEGER NOT NULL,
    record_offset    INTEGER NOT NULL,
    parked_at        TEXT    NOT NULL,
    PRIMARY KEY (name, sequence_id, position)
) STRICT;

CREATE TABLE park_actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    sequence_id BLOB    NOT NULL CHECK (length(sequence_id) = 16),
    entity      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    from_pos    INTEGER NOT NULL,
    to_pos      INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    at          TEXT    NOT NULL
) STRICT;
CREATE INDEX park_actions_sequence ON park_actions (name, sequence_id, id);
