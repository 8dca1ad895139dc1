-- 0011 (issue 13): audit_outbox without the UNIQUE indexes on event_id and
-- hash. Both are random hex, so each event inserted wrote into a random page
-- of two indexes that grow with the outbox; a set over 1,000 agents writes
-- ~3,000 events in the transaction that signs its plans, and those page
-- writes were a quarter of its time. Nothing looks an event up by either:
-- event_id is 128 random bits, and a hash covers the previous one (the chain
-- is what makes it unique). The table is rebuilt as SQLite requires to drop
-- a column constraint; its triggers and index are those of 0001 and 0005.
CREATE TABLE audit_outbox_0011 (
  seq          INTEGER PRIMARY KEY,
  event_id     TEXT NOT NULL,
  time         INTEGER NOT NULL,
  actor        TEXT NOT NULL,
  action       TEXT NOT NULL,
  target       TEXT NOT NULL,
  outcome      TEXT NOT NULL,
  reason       TEXT NOT NULL DEFAULT '',
  details      TEXT NOT NULL DEFAULT '{}',
  prev_hash    TEXT NOT NULL,
  hash         TEXT NOT NULL,
  published_at INTEGER
);
INSERT INTO audit_outbox_0011 (seq, event_id, time, actor, action, target, outcome, reason, details, prev_hash, hash,
                               published_at)
  SELECT seq, event_id, time, actor, action, target, outcome, reason, details, prev_hash, hash, published_at
  FROM audit_outbox ORDER BY seq;
DROP TABLE audit_outbox;
ALTER TABLE audit_outbox_0011 RENAME TO audit_outbox;

CREATE INDEX audit_outbox_unpublished ON audit_outbox(seq) WHERE published_at IS NULL;

CREATE TRIGGER audit_outbox_immutable BEFORE UPDATE ON audit_outbox
WHEN NEW.seq IS NOT OLD.seq OR NEW.event_id IS NOT OLD.event_id OR NEW.time IS NOT OLD.time
  OR NEW.actor IS NOT OLD.actor OR NEW.action IS NOT OLD.action OR NEW.target IS NOT OLD.target
  OR NEW.outcome IS NOT OLD.outcome OR NEW.reason IS NOT OLD.reason OR NEW.details IS NOT OLD.details
  OR NEW.prev_hash IS NOT OLD.prev_hash OR NEW.hash IS NOT OLD.hash
BEGIN
  SELECT RAISE(ABORT, 'audit events are immutable');
END;

CREATE TRIGGER audit_outbox_keep_unpublished BEFORE DELETE ON audit_outbox
WHEN OLD.published_at IS NULL AND (SELECT open FROM audit_prune_gate WHERE id = 1) IS NOT 1
BEGIN
  SELECT RAISE(ABORT, 'an unpublished audit event cannot be deleted');
END;
