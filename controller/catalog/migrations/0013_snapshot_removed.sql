-- 0013: when retention removed a backup task's snapshot from its repository.
-- A set is forgotten once every repository its snapshots went to is cleared;
-- which ones are cleared was known only to the running controller, so after
-- a restart a set half cleared was pruned again, and /metrics could not tell
-- a cleared repository from one still waiting.
ALTER TABLE tasks ADD COLUMN snapshot_removed_at INTEGER;
