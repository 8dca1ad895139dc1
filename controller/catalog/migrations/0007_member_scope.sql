-- 0007 Kafka (issue 11): scope 'member': each member of a cluster holds its
-- own data (Kafka brokers), is backed up on its own, and is restored in steps
-- when several members of one cluster are restored at once. SQLite cannot
-- change a CHECK constraint in place: the table is made again.
CREATE TABLE agent_components_new (
  agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
  name        TEXT NOT NULL,
  driver      TEXT NOT NULL,
  can_restore INTEGER NOT NULL DEFAULT 0 CHECK (can_restore IN (0, 1)),
  restore_targets TEXT NOT NULL DEFAULT '[]',
  scope TEXT NOT NULL DEFAULT 'node' CHECK (scope IN ('node', 'cluster', 'member')),
  cluster_id TEXT NOT NULL DEFAULT '',
  member_id TEXT NOT NULL DEFAULT '',
  modes TEXT NOT NULL DEFAULT '[]',
  restore_stops_service INTEGER NOT NULL DEFAULT 0 CHECK (restore_stops_service IN (0, 1)),
  PRIMARY KEY (agent_id, name)
) WITHOUT ROWID;
INSERT INTO agent_components_new (agent_id, name, driver, can_restore, restore_targets, scope, cluster_id, member_id,
                                  modes, restore_stops_service)
  SELECT agent_id, name, driver, can_restore, restore_targets, scope, cluster_id, member_id, modes, restore_stops_service
  FROM agent_components;
DROP TABLE agent_components;
ALTER TABLE agent_components_new RENAME TO agent_components;
