-- 0009 (issue 13): indexes for a fleet of thousands of agents.
-- Whether a set or restore still has an open task is asked at every task
-- result (Tx::finish_owner_if_done): answered from these indexes, not by
-- reading every task of a set over thousands of agents (issue 13).
CREATE INDEX tasks_set_state ON tasks(backup_set_id, state);
CREATE INDEX tasks_restore_state ON tasks(restore_id, state);
-- An agent's undelivered plans, asked for every agent a set goes to: by agent
-- first (plans_open, by state, would scan every issued plan of the fleet).
CREATE INDEX plans_agent_open ON plans(agent_id, state, sequence);
-- Whether the pending list is over its bound, asked at every unknown key.
CREATE INDEX agents_state ON agents(state);
-- The parent of each backup a set orders (Tx::backup_parent): the agent's
-- newest snapshot of the component, found here instead of among every task the
-- agent ever succeeded in (72 ms an agent with 8,000 sets in the catalog).
CREATE INDEX snapshots_agent_component ON snapshots(agent_id, component, created_at);
