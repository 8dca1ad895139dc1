-- 0019 (issue 34): an offsite copy's progress while it runs. started_at is
-- set while the controller copies the set (its copier's progress written
-- every few seconds: snapshots and bytes done in the existing columns, the
-- totals here) and cleared when the copy ends or the controller finds no
-- copy running (it was restarted mid-copy).
ALTER TABLE set_copies ADD COLUMN started_at INTEGER;
ALTER TABLE set_copies ADD COLUMN snapshots_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE set_copies ADD COLUMN bytes_total INTEGER NOT NULL DEFAULT 0;
