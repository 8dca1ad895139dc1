-- 0018 (issue 34): offsite copies by policy. A policy may name a second
-- repository (copy_to, one the controller declares); after each complete or
-- partial set the controller copies the set's snapshots there
-- (controller/set_copy.h) and records the outcome per set and destination,
-- and each copied snapshot's id there (restores from the copy, retention).
ALTER TABLE policies ADD COLUMN copy_to TEXT NOT NULL DEFAULT '';
CREATE TABLE set_copies (
  set_id TEXT NOT NULL,
  repository TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'copied', 'failed')),
  reason TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  finished_at INTEGER,
  snapshots INTEGER NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL DEFAULT 0,
  blobs_new INTEGER NOT NULL DEFAULT 0,
  removed_at INTEGER,
  PRIMARY KEY (set_id, repository)
);
CREATE INDEX set_copies_state ON set_copies(state, next_attempt_at);
CREATE TABLE task_copies (
  task_id TEXT NOT NULL,
  repository TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  PRIMARY KEY (task_id, repository)
);
