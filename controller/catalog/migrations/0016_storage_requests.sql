-- 0016: what a task's repository store was asked (issue 34): requests sent and,
-- of those, tries again after a transient failure (an object store: 503
-- SlowDown, a cut connection). 0 for a local repository and for older tasks.
ALTER TABLE tasks ADD COLUMN storage_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN storage_retries INTEGER NOT NULL DEFAULT 0;
