-- 0020 (issue 33): where Kafka acknowledged the newest published audit event:
-- its seq and hash, and the topic and offset it was written at. At start the
-- publisher looks for that event at that offset before it believes a tail of
-- checkpoints only: a checkpoint copied into a recreated topic is genuine,
-- signed by this controller, yet the topic holds none of the events it covers.
CREATE TABLE audit_topic_mark (
  id            INTEGER PRIMARY KEY CHECK (id = 1),
  topic         TEXT NOT NULL,
  seq           INTEGER NOT NULL,
  hash          TEXT NOT NULL,
  record_offset INTEGER NOT NULL
);
