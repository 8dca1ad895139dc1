-- 0004 restores that do what they say: each restore task names the safety
-- backup task that saves what it will overwrite (matched on its result), and
-- each component keeps the alternative restore targets its agent declares
-- (JSON array of names) so an unknown target is refused before a plan goes out.
ALTER TABLE tasks ADD COLUMN safety_task_id TEXT REFERENCES tasks(id);
ALTER TABLE agent_components ADD COLUMN restore_targets TEXT NOT NULL DEFAULT '[]';
