-- 0012: whether a backup into a repository is still open (Tx::backup_running_into),
-- asked by retention before it prunes a repository and, while a prune waits
-- for a fleet backup, once a second. A partial index: it holds open backup
-- tasks only, so it stays the size of the backups running now, not of every
-- task the catalog keeps; without it each question read every task.
CREATE INDEX tasks_open_backup_repository ON tasks(repository)
  WHERE kind = 'backup' AND state IN ('pending', 'sent', 'accepted', 'running');
