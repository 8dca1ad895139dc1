-- 0006 drivers (issue 10): what each agent's component can do, and what a
-- task's driver recorded.
-- scope 'cluster': one dataset replicated on several members (etcd,
-- ZooKeeper), backed up from one member and restored on all in steps.
ALTER TABLE agent_components ADD COLUMN scope TEXT NOT NULL DEFAULT 'node' CHECK (scope IN ('node', 'cluster'));
ALTER TABLE agent_components ADD COLUMN cluster_id TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_components ADD COLUMN member_id TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_components ADD COLUMN modes TEXT NOT NULL DEFAULT '[]';  -- JSON array, the default first
ALTER TABLE agent_components ADD COLUMN restore_stops_service INTEGER NOT NULL DEFAULT 0 CHECK (restore_stops_service IN (0, 1));
-- The driver's metadata (JSON object): versions, identities, positions.
ALTER TABLE tasks ADD COLUMN component_metadata TEXT;
-- A cluster restore's step ('stop', 'data', 'start', 'verify', 'rollback');
-- '' for a whole restore or a backup.
ALTER TABLE tasks ADD COLUMN restore_step TEXT NOT NULL DEFAULT '';
-- A cluster-scoped component's tasks name the cluster they belong to.
ALTER TABLE tasks ADD COLUMN cluster_id TEXT NOT NULL DEFAULT '';
