-- 0005 audit retention: until a publisher exists, the outbox keeps the newest
-- events only (docs/configuration.md § [audit]). Unpublished events may be
-- deleted by the retention pass alone: it opens this gate inside its own
-- transaction (Tx::prune_audit) and closes it before committing, so any other
-- delete of an unpublished event is still refused.
CREATE TABLE audit_prune_gate (
  id   INTEGER PRIMARY KEY CHECK (id = 1),
  open INTEGER NOT NULL CHECK (open IN (0, 1))
);
INSERT INTO audit_prune_gate (id, open) VALUES (1, 0);

DROP TRIGGER audit_outbox_keep_unpublished;
CREATE TRIGGER audit_outbox_keep_unpublished BEFORE DELETE ON audit_outbox
WHEN OLD.published_at IS NULL AND (SELECT open FROM audit_prune_gate WHERE id = 1) IS NOT 1
BEGIN
  SELECT RAISE(ABORT, 'an unpublished audit event cannot be deleted');
END;
