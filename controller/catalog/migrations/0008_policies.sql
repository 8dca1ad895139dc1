-- 0008 operations (issue 12): backup policies and their runs, retention, and
-- where each backup's snapshots went.
-- A policy: which components on which agents, into which repository, when,
-- and what to keep. source 'config' rows mirror the controller's
-- configuration ([[policy]]) and are replaced from it at every start.
CREATE TABLE policies (
  name        TEXT PRIMARY KEY,
  source      TEXT NOT NULL CHECK (source IN ('catalog', 'config')),
  selector    TEXT NOT NULL DEFAULT '{}',   -- JSON {"components": [...], "nodes": [...], "labels": {...}}
  repository  TEXT NOT NULL DEFAULT '',     -- a repository name the agents declare; '' = each component's default
  mode        TEXT NOT NULL DEFAULT '',     -- driver mode for components that declare it
  schedule    TEXT NOT NULL,                -- cron, @daily, @every 15m (controller/schedule.h)
  time_zone   TEXT NOT NULL DEFAULT 'UTC',
  retention   TEXT NOT NULL DEFAULT '{}',   -- JSON {"last": n, "hourly": n, ..., "within": seconds, "min": n}
  paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  next_run_at INTEGER                       -- unix seconds; NULL while paused or never
);

-- Every time a policy was due or run by hand: started (with its set),
-- skipped (the previous run still going) or refused (nothing selected, ...).
CREATE TABLE policy_runs (
  seq           INTEGER PRIMARY KEY,
  policy        TEXT NOT NULL,
  scheduled_for INTEGER NOT NULL,   -- the run time it was for (run-now: the time it was asked)
  at            INTEGER NOT NULL,
  trigger       TEXT NOT NULL CHECK (trigger IN ('schedule', 'missed', 'run-now')),
  outcome       TEXT NOT NULL CHECK (outcome IN ('started', 'skipped', 'refused')),
  backup_set_id TEXT REFERENCES backup_sets(id),
  reason        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX policy_runs_policy ON policy_runs(policy, seq);

ALTER TABLE backup_sets ADD COLUMN policy TEXT;
-- Retention: when a rule let the set go, and when its snapshots were removed
-- from their repositories (a forgotten set cannot be restored).
ALTER TABLE backup_sets ADD COLUMN expired_at INTEGER;
ALTER TABLE backup_sets ADD COLUMN forgotten_at INTEGER;
CREATE INDEX backup_sets_policy ON backup_sets(policy, created_at);
CREATE INDEX backup_sets_expired ON backup_sets(created_at) WHERE expired_at IS NOT NULL AND forgotten_at IS NULL;

-- The repository a backup task writes to: the plan's, else the component's
-- default as its agent declares it ('' when the agent does not say).
ALTER TABLE tasks ADD COLUMN repository TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_components ADD COLUMN repository TEXT NOT NULL DEFAULT '';
-- Labels an agent declares (JSON object); policies select agents by them.
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
