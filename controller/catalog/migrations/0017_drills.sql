-- 0017 (issue 35): restore drills. A drill is a restore record of its own
-- kind: its tasks read a snapshot (so retention keeps what an open drill
-- reads, tasks_open_restore_source) into a sandbox on a drill agent and
-- touch nothing live (docs/drills.md).
ALTER TABLE restores ADD COLUMN kind TEXT NOT NULL DEFAULT 'restore' CHECK (kind IN ('restore', 'drill'));
-- The newest drills of a set (backup show) and the newest drills overall (drill list).
CREATE INDEX restores_source_kind ON restores(source_set_id, kind, created_at);
CREATE INDEX restores_kind_created ON restores(kind, created_at);
-- The backup task that wrote a drilled snapshot (the status page's rows per
-- component and cluster): found by its snapshot id.
CREATE INDEX tasks_snapshot ON tasks(snapshot_id) WHERE snapshot_id IS NOT NULL;
-- A policy's drills: a schedule ('' = none), the agent that runs them ('' =
-- any that can), and whether retention keeps each component's newest proven
-- set while no newer set is proven (on by default).
ALTER TABLE policies ADD COLUMN drill_schedule TEXT NOT NULL DEFAULT '';
ALTER TABLE policies ADD COLUMN drill_on TEXT NOT NULL DEFAULT '';
ALTER TABLE policies ADD COLUMN keep_proven INTEGER NOT NULL DEFAULT 1 CHECK (keep_proven IN (0, 1));
ALTER TABLE policies ADD COLUMN drill_next_at INTEGER;
