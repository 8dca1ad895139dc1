-- 0014 (issue 30): cluster identity is cairn's. A cluster-scoped component
-- (etcd, ZooKeeper) is a member of a logical cluster the controller keeps:
-- established when the operator approves its first members, it survives
-- cairn's own restores (which give etcd a new internal cluster id), agent
-- restarts and catalog rebuilds. What an agent declares (its component's own
-- id, or `cluster_id` in its configuration) only proposes a membership: one
-- declared by an agent already approved, into a cluster that has approved
-- members, stays 'pending' until an operator approves it
-- ('cairnctl agent approve NAME'); pending members take part in no backup or
-- restore of the cluster. agent_components.cluster_id keeps the id the agent
-- declared; the logical cluster is read from here.
CREATE TABLE cluster_members (
  agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
  component  TEXT NOT NULL,
  driver     TEXT NOT NULL,
  cluster    TEXT NOT NULL,  -- the logical cluster
  state      TEXT NOT NULL CHECK (state IN ('approved', 'pending')),
  declared_cluster_id TEXT NOT NULL,  -- what the agent declared when last registered
  created_at INTEGER NOT NULL,
  PRIMARY KEY (agent_id, component)
) WITHOUT ROWID;
CREATE INDEX cluster_members_by_cluster ON cluster_members (driver, cluster);
-- Today's members, as they were: the cluster is the id they declared.
INSERT INTO cluster_members (agent_id, component, driver, cluster, state, declared_cluster_id, created_at)
  SELECT c.agent_id, c.name, c.driver, c.cluster_id,
         CASE WHEN a.state = 'approved' THEN 'approved' ELSE 'pending' END, c.cluster_id, CAST(strftime('%s', 'now') AS INTEGER)
  FROM agent_components c JOIN agents a ON a.id = c.agent_id
  WHERE c.scope = 'cluster' AND c.cluster_id != '';
