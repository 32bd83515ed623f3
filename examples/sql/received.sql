-- Who received what, and when: every reception, removed ones too (a removed
-- row was promoted, deleted or overwritten: removal_reason says which).
-- Columns of the contract only, so it also reads rows other tools wrote.
--   psql "$CONNINFO" -f received.sql
SELECT r.id,
       r.uploaded_at,
       r.received_by,
       r.source_bucket,
       r.object_key,
       r.size_bytes,
       r.sha256,
       r.removed_at,
       r.removal_reason
FROM reception_audit r
ORDER BY r.uploaded_at, r.id;
