-- 0001 init: the first catalog schema.
-- Times are unix seconds, except audit_outbox.time (unix milliseconds).
-- Ids are text chosen by the controller ("ag-...", "bs-...", "tk-...").
-- Never edit a released migration: add the next numbered file instead.

CREATE TABLE agents (
  id               TEXT PRIMARY KEY,
  name             TEXT NOT NULL UNIQUE,
  curve_public_key BLOB NOT NULL UNIQUE CHECK (length(curve_public_key) = 32),
  state            TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'revoked')),
  hostname         TEXT NOT NULL DEFAULT '',
  agent_version    TEXT NOT NULL DEFAULT '',
  created_at       INTEGER NOT NULL,
  state_changed_at INTEGER NOT NULL,
  last_seen_at     INTEGER
);

-- What each agent declares in its own configuration; plans pick among these.
CREATE TABLE agent_components (
  agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
  name        TEXT NOT NULL,
  driver      TEXT NOT NULL,
  can_restore INTEGER NOT NULL DEFAULT 0 CHECK (can_restore IN (0, 1)),
  PRIMARY KEY (agent_id, name)
) WITHOUT ROWID;

-- Operator keys the ZAP handler admits on the operator socket.
CREATE TABLE operators (
  id               TEXT PRIMARY KEY,
  name             TEXT NOT NULL UNIQUE,
  curve_public_key BLOB NOT NULL UNIQUE CHECK (length(curve_public_key) = 32),
  state            TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
  created_at       INTEGER NOT NULL
);

-- Public halves of the plan-signing keys. The private key stays in its file.
-- 'active' signs plans; 'standby' is announced to agents but not yet signing.
CREATE TABLE controller_keys (
  key_id     TEXT PRIMARY KEY,
  public_key BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
  state      TEXT NOT NULL CHECK (state IN ('active', 'standby', 'retired')),
  created_at INTEGER NOT NULL,
  retired_at INTEGER
);
CREATE UNIQUE INDEX controller_keys_one_active ON controller_keys(state) WHERE state = 'active';

CREATE TABLE backup_sets (
  id           TEXT PRIMARY KEY,
  created_at   INTEGER NOT NULL,
  trigger      TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule', 'safety')),
  requested_by TEXT NOT NULL,
  selector     TEXT NOT NULL DEFAULT '{}',  -- JSON: {"components": [...], "nodes": [...]}
  state        TEXT NOT NULL CHECK (state IN ('running', 'complete', 'partial', 'failed')),
  finished_at  INTEGER
);
CREATE INDEX backup_sets_created ON backup_sets(created_at);

CREATE TABLE restores (
  id                 TEXT PRIMARY KEY,
  source_set_id      TEXT NOT NULL REFERENCES backup_sets(id),
  safety_set_id      TEXT REFERENCES backup_sets(id),
  skip_safety_backup INTEGER NOT NULL DEFAULT 0 CHECK (skip_safety_backup IN (0, 1)),
  created_at         INTEGER NOT NULL,
  requested_by       TEXT NOT NULL,
  selector           TEXT NOT NULL DEFAULT '{}',
  state              TEXT NOT NULL CHECK (state IN ('running', 'complete', 'partial', 'failed')),
  finished_at        INTEGER
);

-- The highest sequence signed for each agent; only grows.
CREATE TABLE plan_sequences (
  agent_id      TEXT PRIMARY KEY REFERENCES agents(id),
  last_sequence INTEGER NOT NULL CHECK (last_sequence >= 0)
);

CREATE TABLE plans (
  id          TEXT PRIMARY KEY,
  agent_id    TEXT NOT NULL REFERENCES agents(id),
  sequence    INTEGER NOT NULL,
  key_id      TEXT NOT NULL,
  issued_at   INTEGER NOT NULL,
  not_before  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  state       TEXT NOT NULL CHECK (state IN ('issued', 'accepted', 'rejected', 'expired')),
  error_code  INTEGER NOT NULL DEFAULT 0,  -- cairn.v1.ErrorCode
  detail      TEXT NOT NULL DEFAULT '',
  UNIQUE (agent_id, sequence)
);
CREATE INDEX plans_open ON plans(state, expires_at);

-- One task per (agent, component) of a backup set or a restore. The latest
-- progress is kept in the row itself: an update per report, not a history.
CREATE TABLE tasks (
  id              TEXT PRIMARY KEY,
  backup_set_id   TEXT REFERENCES backup_sets(id),
  restore_id      TEXT REFERENCES restores(id),
  agent_id        TEXT NOT NULL REFERENCES agents(id),
  component       TEXT NOT NULL,
  kind            TEXT NOT NULL CHECK (kind IN ('backup', 'restore')),
  source_snapshot TEXT,  -- restore: the snapshot to read
  plan_id         TEXT REFERENCES plans(id),
  state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'accepted', 'rejected', 'running',
                                                 'succeeded', 'partial', 'failed', 'missed')),
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  snapshot_id     TEXT,
  manifest_digest TEXT,
  phase           INTEGER NOT NULL DEFAULT 0,  -- cairn.v1.Phase
  bytes_done      INTEGER NOT NULL DEFAULT 0,
  bytes_total     INTEGER NOT NULL DEFAULT 0,
  files_done      INTEGER NOT NULL DEFAULT 0,
  files_total     INTEGER NOT NULL DEFAULT 0,
  current_item    TEXT NOT NULL DEFAULT '',
  progress_at     INTEGER,  -- unix milliseconds of the latest report
  CHECK ((backup_set_id IS NULL) <> (restore_id IS NULL))
);
CREATE INDEX tasks_set ON tasks(backup_set_id);
CREATE INDEX tasks_restore ON tasks(restore_id);
CREATE INDEX tasks_plan ON tasks(plan_id);
CREATE INDEX tasks_agent_state ON tasks(agent_id, state);

-- Every reason a task was rejected, partial, failed or missed.
CREATE TABLE task_reasons (
  task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  ordinal INTEGER NOT NULL,
  code    INTEGER NOT NULL,  -- cairn.v1.ErrorCode
  detail  TEXT NOT NULL,
  item    TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (task_id, ordinal)
) WITHOUT ROWID;

CREATE TABLE snapshots (
  id              TEXT PRIMARY KEY,
  task_id         TEXT NOT NULL UNIQUE REFERENCES tasks(id),
  backup_set_id   TEXT NOT NULL REFERENCES backup_sets(id),
  agent_id        TEXT NOT NULL REFERENCES agents(id),
  component       TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  created_at      INTEGER NOT NULL,
  bytes           INTEGER NOT NULL DEFAULT 0,
  files           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX snapshots_set ON snapshots(backup_set_id);

-- Operation locks per target ("<agent id>/<component>"): no backup during a
-- restore of the same component, no two restores.
CREATE TABLE locks (
  target      TEXT PRIMARY KEY,
  kind        TEXT NOT NULL CHECK (kind IN ('backup', 'restore')),
  holder      TEXT NOT NULL,  -- backup set or restore id
  acquired_at INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL
);

-- Audit events, hash-chained (see controller/catalog/audit.h for the
-- encoding), written in the transaction of the change they record and
-- published later; published_at is the only column that may change.
CREATE TABLE audit_outbox (
  seq          INTEGER PRIMARY KEY,
  event_id     TEXT NOT NULL UNIQUE,
  time         INTEGER NOT NULL,
  actor        TEXT NOT NULL,
  action       TEXT NOT NULL,
  target       TEXT NOT NULL,
  outcome      TEXT NOT NULL,
  reason       TEXT NOT NULL DEFAULT '',
  details      TEXT NOT NULL DEFAULT '{}',
  prev_hash    TEXT NOT NULL,
  hash         TEXT NOT NULL UNIQUE,
  published_at INTEGER
);
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
WHEN OLD.published_at IS NULL
BEGIN
  SELECT RAISE(ABORT, 'an unpublished audit event cannot be deleted');
END;
