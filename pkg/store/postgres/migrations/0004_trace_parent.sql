-- 0004: the trace context of each event.
--
-- trace_parent is the W3C traceparent of the command that produced the
-- item, which the relay sends on as the record's traceparent header; NULL
-- for items written without one. It is kept outside state, which stays the
-- domain's. Adding a nullable column with no default rewrites nothing.
ALTER TABLE {{.Events}} ADD COLUMN trace_parent text;
