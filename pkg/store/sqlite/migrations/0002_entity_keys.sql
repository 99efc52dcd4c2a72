-- 0002: per-entity data keys, for crypto-shredding.
--
-- One row per sequence whose events are encrypted with a key of its own: the
-- key wrapped (AES-256-GCM) by the master key master_id, never in the clear.
-- Forgetting the sequence sets wrapped to NULL and forgotten_at: the row
-- stays, without key material, so that no key is ever made for it again.

CREATE TABLE entity_keys (
    seq_id       BLOB PRIMARY KEY CHECK (length(seq_id) = 16),
    master_id    TEXT NOT NULL,
    wrapped      BLOB,
    created_at   TEXT NOT NULL,
    forgotten_at TEXT,
    CHECK ((wrapped IS NULL) = (forgotten_at IS NOT NULL))
) STRICT, WITHOUT ROWID;
