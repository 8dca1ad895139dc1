-- 0013: when retention removed a backup task's snapshot from its repository.
-- A set is forgotten once every repository its snapshots went to is cleared;
-- which ones are cleared was known only to the running controller, so after
-- a restart a set half cleared was pruned again, and /metrics could not tell
-- a cleared repository from one still waiting.
ALTER TABLE tasks ADD COLUMN snapshot_removed_at INTEGER;
-- And whether the backup's plan named its repository (a policy's
-- --repository) rather than leaving it to the component's default: a
-- restore on another member of the cluster reads the named one by that name,
-- the default one by that member's own name for its default. Older tasks
-- count as the default's.
ALTER TABLE tasks ADD COLUMN repository_named INTEGER NOT NULL DEFAULT 0;
