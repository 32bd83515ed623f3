-- Per project: files and bytes stored (one per stored key: a key copied and
-- later restored counts once, at its latest size), and how many promotions
-- were deduplicated. Projects that stored nothing show zeros.
WITH stored AS (
  SELECT DISTINCT ON (project_prefix, dest_key)
         project_prefix, dest_key, size_bytes
  FROM storage_audit
  WHERE outcome IN ('copied', 'restored', 'adopted')
    AND removed_at IS NULL
  ORDER BY project_prefix, dest_key, id DESC
), dups AS (
  SELECT project_prefix,
         count(*) FILTER (WHERE outcome = 'duplicate') AS duplicates,
         count(*) FILTER (WHERE outcome = 'duplicate_content') AS duplicates_content
  FROM storage_audit
  GROUP BY project_prefix
)
SELECT p.prefix,
       p.name,
       (SELECT count(*) FROM stored s WHERE s.project_prefix = p.prefix) AS files,
       (SELECT COALESCE(sum(s.size_bytes), 0) FROM stored s
         WHERE s.project_prefix = p.prefix)::bigint AS bytes,
       COALESCE(d.duplicates, 0) AS duplicates,
       COALESCE(d.duplicates_content, 0) AS duplicates_content
FROM projects_registry p
LEFT JOIN dups d ON d.project_prefix = p.prefix
ORDER BY p.prefix;
