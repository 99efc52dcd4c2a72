-- 0004: the trace context of each event.
--
-- trace_parent is the W3C traceparent of the command that produced the
-- item, which the relay sends on as the record's traceparent header; NULL
-- for items written without one. It is kept outside state, which stays the
-- domain's.

ALTER TABLE events ADD COLUMN trace_parent TEXT;
