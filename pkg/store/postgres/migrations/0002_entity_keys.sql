-- 0002: per-entity data keys, for crypto-shredding.
--
-- One row per sequence whose events are encrypted with a key of its own:
-- the key wrapped (AES-256-GCM) by the master key master_id, never in the
-- clear. Forgetting the sequence sets wrapped to NULL and forgotten_at: the
-- row stays, without key material, so that no key is ever made for the
-- sequence again.
CREATE TABLE {{.Keys}} (
	seq_id       uuid        NOT NULL,
	master_id    text        NOT NULL,
	wrapped      bytea,
	created_at   timestamptz NOT NULL DEFAULT now(),
	forgotten_at timestamptz,
	CONSTRAINT {{name "entity_keys_pkey"}} PRIMARY KEY (seq_id),
	CONSTRAINT {{name "entity_keys_wrapped_check"}} CHECK ((wrapped IS NULL) = (forgotten_at IS NOT NULL))
);
