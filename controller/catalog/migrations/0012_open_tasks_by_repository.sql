-- 0012: whether a repository is in use by the fleet (Tx::repository_in_use):
-- a backup into it or a restore from it still open. Asked by retention before
-- it prunes a repository, and once a second while a prune runs or waits.
-- Partial indexes: they hold open tasks only, so they stay the size of the
-- work running now, not of every task the catalog keeps; without them each
-- question read every task.
CREATE INDEX tasks_open_backup_repository ON tasks(repository)
  WHERE kind = 'backup' AND state IN ('pending', 'sent', 'accepted', 'running');
CREATE INDEX tasks_open_restore_source ON tasks(source_snapshot)
  WHERE kind = 'restore' AND state IN ('pending', 'sent', 'accepted', 'running');
