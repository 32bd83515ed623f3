-- Files still in reception: received, never promoted nor removed (a live
-- reception row), oldest first, with how long they have waited.
SELECT r.id,
       r.uploaded_at,
       now() - r.uploaded_at AS waiting,
       r.received_by,
       r.object_key,
       r.size_bytes,
       r.sha256
FROM reception_audit r
WHERE r.removed_at IS NULL
ORDER BY r.uploaded_at, r.id;
