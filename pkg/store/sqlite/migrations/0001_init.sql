-- 0001: events, snapshots and tracking.
--
-- events.id is the notification id. AUTOINCREMENT guarantees an id is never
-- reused, even after the row with the greatest id is gone; SQLite admits one
-- writer at a time, so ids are assigned, and become visible, in commit order.

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sequence_id BLOB    NOT NULL CHECK (length(sequence_id) = 16),
    position    INTEGER NOT NULL CHECK (position >= 0),
    topic       TEXT    NOT NULL,
    state       BLOB    NOT NULL,
    codec       TEXT    NOT NULL,
    UNIQUE (sequence_id, position)
) STRICT;

-- Snapshots can be large, so they keep a rowid (WITHOUT ROWID suits small rows).
CREATE TABLE snapshots (
    sequence_id BLOB    NOT NULL CHECK (length(sequence_id) = 16),
    position    INTEGER NOT NULL CHECK (position >= 0),
    topic       TEXT    NOT NULL,
    state       BLOB    NOT NULL,
    codec       TEXT    NOT NULL,
    UNIQUE (sequence_id, position)
) STRICT;

CREATE TABLE tracking (
    name      TEXT    NOT NULL,
    topic     TEXT    NOT NULL,
    partition INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (name, topic, partition)
) STRICT, WITHOUT ROWID;
