-- 0002 plan envelopes: the signed bytes of each plan, so a plan issued while
-- its agent was offline (or before a controller restart) is delivered
-- unchanged when the agent registers, until it expires.
ALTER TABLE plans ADD COLUMN envelope BLOB;
