-- 0015: signed set records (controller/set_record.h, issue 32). When a backup
-- set ends the controller signs its record and writes it to every declared
-- repository holding its snapshots; `catalog rebuild` trusts a set only from
-- such a record. `attested` is 0 for a set rebuilt from snapshot tags alone
-- (no record verified): a restore from it needs --accept-unattested.
ALTER TABLE backup_sets ADD COLUMN attested INTEGER NOT NULL DEFAULT 1;
-- Sets an earlier rebuild took from tags were never seen by this controller:
-- they stay unattested, and are never signed.
UPDATE backup_sets SET attested = 0 WHERE requested_by = 'catalog rebuild';
-- Which repository holds the record of which set, signed by which key (a key
-- rotation makes every record due again, signed by the new key).
CREATE TABLE set_records (
  set_id TEXT NOT NULL REFERENCES backup_sets(id),
  repository TEXT NOT NULL,
  key_id TEXT NOT NULL,
  written_at INTEGER NOT NULL,
  PRIMARY KEY (set_id, repository)
) WITHOUT ROWID;
-- Sets whose record is to be written (ended, or the signing key rotated).
CREATE TABLE set_records_due (set_id TEXT PRIMARY KEY REFERENCES backup_sets(id)) WITHOUT ROWID;
INSERT INTO set_records_due (set_id)
  SELECT id FROM backup_sets WHERE state IN ('complete', 'partial', 'failed') AND trigger != 'safety' AND forgotten_at IS NULL
    AND attested = 1;
