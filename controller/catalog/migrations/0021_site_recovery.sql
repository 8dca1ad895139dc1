-- 0021: what a disaster recovery needs from the catalog.
--
-- The members of a cluster when a backup of it was taken, by agent name
-- (docs/protocol.md § The cluster restore): a restore is accepted only when
-- every one of them has an approved, connected agent, and an agent whose
-- component does not know its cluster yet (an empty host) joins the cluster
-- whose newest backup names it. Written when the backup task is made, and
-- by a catalog rebuild from the set's signed record (or the snapshot's tags).
CREATE TABLE task_cluster_members (
  task_id    TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  agent_name TEXT NOT NULL,
  PRIMARY KEY (task_id, agent_name)
);
CREATE INDEX task_cluster_members_by_name ON task_cluster_members(agent_name);

-- A name given up by `cairnctl agent revoke` (the agent keeps its id and
-- history under a name of its own): the agent that takes the name next is
-- its successor, and restores what the revoked one backed up.
CREATE TABLE released_agent_names (
  agent_id    TEXT PRIMARY KEY REFERENCES agents(id),
  name        TEXT NOT NULL,
  released_at INTEGER NOT NULL
);
CREATE INDEX released_agent_names_by_name ON released_agent_names(name);
