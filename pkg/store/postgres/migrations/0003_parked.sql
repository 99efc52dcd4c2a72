-- 0003: parked sequences, a projection's sequenced dead letters.
--
-- A projection that cannot apply an event parks the event's sequence: one
-- row in parked_sequences (per projection name and sequence), the event and
-- every later event of the sequence in parked_events, in the projection's
-- own transactions. A retry or a skip takes the events out and leaves a row
-- in park_actions. A row of parked_sequences with nothing parked stays while
-- it keeps skipped positions (skipped, a JSON array of {"from","to"}).
CREATE TABLE {{.Parked}} (
	name        text        NOT NULL,
	sequence_id uuid        NOT NULL,
	entity      text        NOT NULL,
	first_pos   bigint      NOT NULL,
	last_pos    bigint      NOT NULL,
	event_count bigint      NOT NULL CHECK (event_count >= 0),
	reason      text        NOT NULL,
	parked_at   timestamptz NOT NULL,
	updated_at  timestamptz NOT NULL,
	retries     integer     NOT NULL,
	skipped     jsonb       NOT NULL,
	CONSTRAINT {{name "parked_sequences_pkey"}} PRIMARY KEY (name, sequence_id)
);

CREATE TABLE {{.ParkedEvents}} (
	name             text    NOT NULL,
	sequence_id      uuid    NOT NULL,
	position         bigint  NOT NULL CHECK (position >= 0),
	topic            text    NOT NULL,
	state            bytea   NOT NULL,
	codec            text    NOT NULL,
	notification_id  bigint  NOT NULL,
	record_topic     text    NOT NULL,
	record_partition integer NOT NULL,
	record_offset    bigint  NOT NULL,
	parked_at        timestamptz NOT NULL,
	CONSTRAINT {{name "parked_events_pkey"}} PRIMARY KEY (name, sequence_id, position)
);

CREATE TABLE {{.ParkActions}} (
	id          bigint GENERATED ALWAYS AS IDENTITY,
	name        text        NOT NULL,
	sequence_id uuid        NOT NULL,
	entity      text        NOT NULL,
	action      text        NOT NULL,
	from_pos    bigint      NOT NULL,
	to_pos      bigint      NOT NULL,
	event_count bigint      NOT NULL,
	reason      text        NOT NULL,
	at          timestamptz NOT NULL,
	CONSTRAINT {{name "park_actions_pkey"}} PRIMARY KEY (id)
);
CREATE INDEX {{name "park_actions_sequence"}} ON {{.ParkActions}} (name, sequence_id, id);
