-- 0010 (issue 13): tasks_set and tasks_restore are prefixes of
-- tasks_set_state and tasks_restore_state (0009), which answer every query
-- they did. Each index is written at every task inserted; a set over 1,000
-- agents inserts 1,000 tasks in the transaction that signs its plans.
DROP INDEX tasks_set;
DROP INDEX tasks_restore;
