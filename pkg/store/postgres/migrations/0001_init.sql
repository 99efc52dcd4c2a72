-- 0001: events, snapshots, tracking.
--
-- notification_id is (top-level transaction id << 20) + the item's ordinal in
-- its transaction; see doc.go for why readers stay below the xmin horizon.
CREATE TABLE {{.Events}} (
	sequence_id     uuid   NOT NULL,
	position        bigint NOT NULL CHECK (position >= 0),
	topic           text   NOT NULL,
	state           bytea  NOT NULL,
	codec           text   NOT NULL,
	notification_id bigint NOT NULL,
	CONSTRAINT {{name "events_pkey"}} PRIMARY KEY (sequence_id, position)
);
CREATE UNIQUE INDEX {{name "events_notification_id_key"}} ON {{.Events}} (notification_id);

CREATE TABLE {{.Snapshots}} (
	sequence_id uuid   NOT NULL,
	position    bigint NOT NULL CHECK (position >= 0),
	topic       text   NOT NULL,
	state       bytea  NOT NULL,
	codec       text   NOT NULL,
	CONSTRAINT {{name "snapshots_pkey"}} PRIMARY KEY (sequence_id, position)
);

CREATE TABLE {{.Tracking}} (
	name      text    NOT NULL,
	topic     text    NOT NULL,
	partition integer NOT NULL,
	position  bigint  NOT NULL,
	CONSTRAINT {{name "tracking_pkey"}} PRIMARY KEY (name, topic, partition)
);
