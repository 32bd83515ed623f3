-- What was deduplicated, and against what: every promotion that stored
-- nothing because the content was already there.
--   duplicate          the same key, same size and SHA-256, already stored
--   duplicate_content  the same size and SHA-256 stored in the project
--                      under another key (duplicate_of); the new name is a
--                      symbolic link to it
SELECT s.id,
       s.moved_at,
       s.moved_by,
       s.project_prefix,
       s.source_bucket,
       s.source_key,
       s.dest_key,
       s.outcome,
       COALESCE(s.duplicate_of, s.dest_key) AS stored_as,
       s.size_bytes,
       s.sha256
FROM storage_audit s
WHERE s.outcome IN ('duplicate', 'duplicate_content')
ORDER BY s.moved_at, s.id;
