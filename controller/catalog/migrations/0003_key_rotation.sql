-- 0003 key rotation: the signed announcements of each new controller signing
-- key, kept so an agent that was offline during a rotation is brought up to
-- date when it registers, and what each agent said it trusts.
CREATE TABLE key_announcements (
  id          TEXT PRIMARY KEY,
  new_key_id  TEXT NOT NULL REFERENCES controller_keys(key_id),
  signed_by   TEXT NOT NULL REFERENCES controller_keys(key_id),
  retires     TEXT NOT NULL DEFAULT '[]',  -- JSON array of key ids the agents stop trusting
  issued_at   INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  envelope    BLOB NOT NULL                -- serialized SignedEnvelope, signed by signed_by
);
CREATE INDEX key_announcements_issued ON key_announcements(issued_at);

-- The controller key ids the agent reported in its latest Register, updated
-- when it accepts an announcement. JSON array.
ALTER TABLE agents ADD COLUMN trusted_key_ids TEXT NOT NULL DEFAULT '[]';
