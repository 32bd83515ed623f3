/* db_migrate.c - the versioned schema (schema_migrations); see db.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "db_status.h"
#include "log.h"

#define DB_MIGRATE_TIMEOUT "15min"
/* pg_advisory_xact_lock(bigint) key serialising migrations: "custody\x01". */
#define DB_MIGRATE_LOCK "7166761325952268545"

/* Version 1: adopt (or create) the seed's tables, add every column of the
 * contract, indexes, and the append-only triggers. Existing rows are never
 * dropped or changed: added columns are NULL in them, defaults are set
 * separately so old rows do not get the migration time. */
/* clang-format off */
static const char *const db_migration_1[] = {
	/* The seed's minimal shapes. */
	"CREATE TABLE IF NOT EXISTS projects_registry ("
	" id bigserial PRIMARY KEY,"
	" prefix text NOT NULL,"
	" name text NOT NULL)",

	"CREATE TABLE IF NOT EXISTS reception_audit ("
	" id bigserial PRIMARY KEY,"
	" source_bucket text NOT NULL,"
	" file_name text NOT NULL,"
	" object_key text NOT NULL,"
	" size_bytes bigint,"
	" uploaded_at timestamptz NOT NULL DEFAULT now())",

	"CREATE TABLE IF NOT EXISTS storage_audit ("
	" id bigserial PRIMARY KEY,"
	" project_prefix text NOT NULL,"
	" project_name text,"
	" dest_key text NOT NULL,"
	" size_bytes bigint,"
	" moved_at timestamptz NOT NULL DEFAULT now(),"
	" source_bucket text)",

	/* A seed table without an id gets one (numbered in physical order),
	 * and a primary key on it when it has none. */
	"DO $do$\n"
	"DECLARE t text;\n"
	"BEGIN\n"
	" FOREACH t IN ARRAY ARRAY['projects_registry', 'reception_audit',"
	"  'storage_audit'] LOOP\n"
	"  IF NOT EXISTS (SELECT 1 FROM pg_attribute"
	"   WHERE attrelid = to_regclass(t) AND attname = 'id'"
	"   AND NOT attisdropped) THEN\n"
	"   EXECUTE format('ALTER TABLE %I ADD COLUMN id bigserial', t);\n"
	"   IF NOT EXISTS (SELECT 1 FROM pg_constraint"
	"    WHERE conrelid = to_regclass(t) AND contype = 'p') THEN\n"
	"    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', t);\n"
	"   END IF;\n"
	"  END IF;\n"
	" END LOOP;\n"
	"END\n"
	"$do$",

	"ALTER TABLE projects_registry"
	" ADD COLUMN IF NOT EXISTS prefix text,"
	" ADD COLUMN IF NOT EXISTS name text,"
	" ADD COLUMN IF NOT EXISTS created_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS created_by text",
	"ALTER TABLE projects_registry ALTER COLUMN created_at SET DEFAULT now()",

	"ALTER TABLE reception_audit"
	" ADD COLUMN IF NOT EXISTS source_bucket text,"
	" ADD COLUMN IF NOT EXISTS file_name text,"
	" ADD COLUMN IF NOT EXISTS object_key text,"
	" ADD COLUMN IF NOT EXISTS size_bytes bigint,"
	" ADD COLUMN IF NOT EXISTS uploaded_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS xxh128 text,"
	" ADD COLUMN IF NOT EXISTS sha256 text,"
	" ADD COLUMN IF NOT EXISTS received_by text,"
	" ADD COLUMN IF NOT EXISTS removed_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS removal_reason text,"
	" ADD COLUMN IF NOT EXISTS etag text,"
	" ADD COLUMN IF NOT EXISTS origin text,"
	" ADD COLUMN IF NOT EXISTS received_uid bigint,"
	" ADD COLUMN IF NOT EXISTS received_user text,"
	" ADD COLUMN IF NOT EXISTS received_host text",
	"ALTER TABLE reception_audit ALTER COLUMN uploaded_at SET DEFAULT now()",

	"ALTER TABLE storage_audit"
	" ADD COLUMN IF NOT EXISTS project_prefix text,"
	" ADD COLUMN IF NOT EXISTS project_name text,"
	" ADD COLUMN IF NOT EXISTS dest_bucket text,"
	" ADD COLUMN IF NOT EXISTS dest_key text,"
	" ADD COLUMN IF NOT EXISTS size_bytes bigint,"
	" ADD COLUMN IF NOT EXISTS moved_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS source_bucket text,"
	" ADD COLUMN IF NOT EXISTS source_key text,"
	" ADD COLUMN IF NOT EXISTS reception_id bigint,"
	" ADD COLUMN IF NOT EXISTS outcome text,"
	" ADD COLUMN IF NOT EXISTS duplicate_of text,"
	" ADD COLUMN IF NOT EXISTS xxh128 text,"
	" ADD COLUMN IF NOT EXISTS sha256 text,"
	" ADD COLUMN IF NOT EXISTS moved_by text,"
	" ADD COLUMN IF NOT EXISTS moved_uid bigint,"
	" ADD COLUMN IF NOT EXISTS moved_user text,"
	" ADD COLUMN IF NOT EXISTS moved_host text,"
	" ADD COLUMN IF NOT EXISTS removed_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS removal_reason text",
	"ALTER TABLE storage_audit ALTER COLUMN moved_at SET DEFAULT now()",

	/* Seed columns too narrow for what we store: varchar(n) becomes text
	 * (binary-coercible, no rewrite) and an integer size_bytes becomes
	 * bigint (values kept). If something depends on the column (a view),
	 * it stays as it is, with a warning. */
	"DO $do$\n"
	"DECLARE c record;\n"
	"BEGIN\n"
	" FOR c IN SELECT a.attrelid::regclass AS tab, a.attname AS col,"
	"   a.atttypid::regtype::text AS typ FROM pg_attribute a"
	"   WHERE a.attrelid IN (to_regclass('projects_registry'),"
	"    to_regclass('reception_audit'), to_regclass('storage_audit'))"
	"   AND a.attnum > 0 AND NOT a.attisdropped"
	"   AND ((a.atttypid = 'varchar'::regtype AND a.atttypmod > 0)"
	"    OR (a.attname = 'size_bytes'"
	"     AND a.atttypid IN ('int2'::regtype, 'int4'::regtype))) LOOP\n"
	"  BEGIN\n"
	"   EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', c.tab,"
	"    c.col, CASE WHEN c.col = 'size_bytes' THEN 'bigint'"
	"    ELSE 'text' END);\n"
	"  EXCEPTION WHEN OTHERS THEN\n"
	"   RAISE WARNING 'custodyfs: %.% (%) could not be widened: %',"
	"    c.tab, c.col, c.typ, SQLERRM;\n"
	"  END;\n"
	" END LOOP;\n"
	"END\n"
	"$do$",

	/* One live row per (bucket, key). Adopted data may already break
	 * that: then a plain index, a warning, and the writers' locks. */
	"DO $do$\n"
	"BEGIN\n"
	" IF to_regclass('reception_audit_live_key') IS NOT NULL"
	"  OR to_regclass('reception_audit_live_key_nonunique') IS NOT NULL"
	" THEN\n"
	"  RETURN;\n"
	" END IF;\n"
	" IF EXISTS (SELECT 1 FROM reception_audit WHERE removed_at IS NULL"
	"  AND source_bucket IS NOT NULL AND object_key IS NOT NULL"
	"  GROUP BY source_bucket, object_key HAVING count(*) > 1) THEN\n"
	"  RAISE WARNING 'custodyfs: reception_audit holds several live rows"
	" for the same (source_bucket, object_key); the unique index"
	" reception_audit_live_key is not created, a plain one is';\n"
	"  CREATE INDEX reception_audit_live_key_nonunique"
	"   ON reception_audit (source_bucket, object_key)"
	"   WHERE removed_at IS NULL;\n"
	" ELSE\n"
	"  CREATE UNIQUE INDEX reception_audit_live_key"
	"   ON reception_audit (source_bucket, object_key)"
	"   WHERE removed_at IS NULL;\n"
	" END IF;\n"
	"END\n"
	"$do$",

	/* projects_registry.prefix unique, unless the seed made it so
	 * already or its rows do not allow it. */
	"DO $do$\n"
	"BEGIN\n"
	" IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a"
	"  ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
	"  WHERE i.indrelid = 'projects_registry'::regclass"
	"  AND a.attname = 'prefix' AND i.indisunique AND i.indnatts = 1"
	"  AND i.indpred IS NULL AND i.indexprs IS NULL)"
	"  OR to_regclass('projects_registry_prefix_nonunique') IS NOT NULL"
	" THEN\n"
	"  RETURN;\n"
	" END IF;\n"
	" IF EXISTS (SELECT 1 FROM projects_registry WHERE prefix IS NOT NULL"
	"  GROUP BY prefix HAVING count(*) > 1) THEN\n"
	"  RAISE WARNING 'custodyfs: projects_registry holds duplicate"
	" prefixes; the unique index on prefix is not created, a plain one"
	" is';\n"
	"  CREATE INDEX projects_registry_prefix_nonunique"
	"   ON projects_registry (prefix);\n"
	" ELSE\n"
	"  CREATE UNIQUE INDEX projects_registry_prefix_key"
	"   ON projects_registry (prefix);\n"
	" END IF;\n"
	"END\n"
	"$do$",

	"CREATE INDEX IF NOT EXISTS storage_audit_dest_key"
	" ON storage_audit (dest_key)",
	"CREATE INDEX IF NOT EXISTS storage_audit_prefix_sha256"
	" ON storage_audit (project_prefix, sha256)",
	"CREATE INDEX IF NOT EXISTS reception_audit_sha256"
	" ON reception_audit (sha256)",

	/* Append-only audit tables, for every role (superusers too, and in
	 * replica mode: ENABLE ALWAYS). */
	"CREATE OR REPLACE FUNCTION custodyfs_audit_append_only()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"BEGIN\n"
	" IF TG_OP = 'UPDATE' THEN\n"
	"  IF OLD.removed_at IS NULL AND NEW.removed_at IS NOT NULL AND"
	"   (to_jsonb(NEW) - 'removed_at' - 'removal_reason') ="
	"   (to_jsonb(OLD) - 'removed_at' - 'removal_reason') THEN\n"
	"   RETURN NEW;\n"
	"  END IF;\n"
	"  RAISE EXCEPTION 'custodyfs: %.% is append-only: only removed_at"
	" (with removal_reason) may be set, and only once', TG_TABLE_SCHEMA,"
	" TG_TABLE_NAME USING ERRCODE = 'P0001';\n"
	" END IF;\n"
	" RAISE EXCEPTION 'custodyfs: %.% is append-only: % refused',"
	" TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = 'P0001';\n"
	"END\n"
	"$fn$",

	"CREATE OR REPLACE FUNCTION custodyfs_projects_guard()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"DECLARE stored boolean;\n"
	"BEGIN\n"
	" IF TG_OP = 'UPDATE' THEN\n"
	"  IF (to_jsonb(NEW) - 'name') = (to_jsonb(OLD) - 'name') THEN\n"
	"   RETURN NEW;\n"
	"  END IF;\n"
	"  RAISE EXCEPTION 'custodyfs: %.%: only name may be updated',"
	"   TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'P0001';\n"
	" ELSIF TG_OP = 'DELETE' THEN\n"
	"  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.storage_audit"
	" WHERE project_prefix = $1)', TG_TABLE_SCHEMA)"
	"   INTO stored USING OLD.prefix;\n"
	"  IF stored THEN\n"
	"   RAISE EXCEPTION 'custodyfs: project % has stored files and"
	" cannot be deleted', OLD.prefix USING ERRCODE = 'P0001';\n"
	"  END IF;\n"
	"  RETURN OLD;\n"
	" END IF;\n"
	" EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.storage_audit)',"
	"  TG_TABLE_SCHEMA) INTO stored;\n"
	" IF stored THEN\n"
	"  RAISE EXCEPTION 'custodyfs: %.% cannot be truncated: projects have"
	" stored files', TG_TABLE_SCHEMA, TG_TABLE_NAME"
	"   USING ERRCODE = 'P0001';\n"
	" END IF;\n"
	" RETURN NULL;\n"
	"END\n"
	"$fn$",

	"DO $do$\n"
	"DECLARE t text;\n"
	"BEGIN\n"
	" FOREACH t IN ARRAY ARRAY['reception_audit', 'storage_audit'] LOOP\n"
	"  EXECUTE format('DROP TRIGGER IF EXISTS custodyfs_append_only_row"
	" ON %I', t);\n"
	"  EXECUTE format('DROP TRIGGER IF EXISTS custodyfs_append_only_stmt"
	" ON %I', t);\n"
	"  EXECUTE format('CREATE TRIGGER custodyfs_append_only_row"
	" BEFORE UPDATE ON %I FOR EACH ROW"
	" EXECUTE FUNCTION custodyfs_audit_append_only()', t);\n"
	"  EXECUTE format('CREATE TRIGGER custodyfs_append_only_stmt"
	" BEFORE DELETE OR TRUNCATE ON %I FOR EACH STATEMENT"
	" EXECUTE FUNCTION custodyfs_audit_append_only()', t);\n"
	"  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_row', t);\n"
	"  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_stmt', t);\n"
	" END LOOP;\n"
	"END\n"
	"$do$",

	"DROP TRIGGER IF EXISTS custodyfs_projects_row ON projects_registry",
	"DROP TRIGGER IF EXISTS custodyfs_projects_stmt ON projects_registry",
	"CREATE TRIGGER custodyfs_projects_row"
	" BEFORE UPDATE OR DELETE ON projects_registry FOR EACH ROW"
	" EXECUTE FUNCTION custodyfs_projects_guard()",
	"CREATE TRIGGER custodyfs_projects_stmt"
	" BEFORE TRUNCATE ON projects_registry FOR EACH STATEMENT"
	" EXECUTE FUNCTION custodyfs_projects_guard()",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_projects_row",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_projects_stmt",
	NULL,
};

/* Version 2: the reception record in one round trip (the daemon logs every
 * file at close, so this is on the hot path): lock the key, keep an
 * identical live row, else retire the live row and insert. The lock ids are
 * the client's (pg_key_lock_obj), the same the other writers take. */
static const char *const db_migration_2[] = {
	"CREATE OR REPLACE FUNCTION custodyfs_reception_record("
	" p_lock_class integer, p_lock_obj integer,"
	" p_bucket text, p_file_name text, p_key text, p_size bigint,"
	" p_xxh text, p_sha text, p_etag text, p_origin text,"
	" p_by text, p_uid bigint, p_user text, p_host text, p_reason text,"
	" OUT o_id bigint, OUT o_inserted boolean)"
	" LANGUAGE plpgsql AS $fn$\n"
	"DECLARE r record; n integer := 0;\n"
	"BEGIN\n"
	" PERFORM pg_advisory_xact_lock(p_lock_class, p_lock_obj);\n"
	" FOR r IN SELECT id, etag FROM reception_audit"
	"  WHERE source_bucket = p_bucket AND object_key = p_key"
	"  AND removed_at IS NULL ORDER BY id DESC FOR UPDATE LOOP\n"
	"  n := n + 1;\n"
	"  IF r.etag IS NULL OR r.etag = p_etag THEN\n"
	"   o_id := r.id; o_inserted := false; RETURN;\n"
	"  END IF;\n"
	" END LOOP;\n"
	" IF n > 0 THEN\n"
	"  UPDATE reception_audit SET removed_at = now(),"
	"   removal_reason = p_reason"
	"   WHERE source_bucket = p_bucket AND object_key = p_key"
	"   AND removed_at IS NULL;\n"
	" END IF;\n"
	" INSERT INTO reception_audit (source_bucket, file_name, object_key,"
	"  size_bytes, uploaded_at, xxh128, sha256, etag, origin, received_by,"
	"  received_uid, received_user, received_host)"
	"  VALUES (p_bucket, p_file_name, p_key, p_size, now(), p_xxh, p_sha,"
	"  p_etag, p_origin, p_by, p_uid, p_user, p_host)"
	"  RETURNING id INTO o_id;\n"
	" o_inserted := true;\n"
	"END\n"
	"$fn$",
	NULL,
};

/* Version 3: indexed lookups by key in byte order (S3's listing order):
 * the live rows of a range of keys (a prefix) and every row of one key (the
 * undo of an upload asks whether any row records its ETag). Adopted tables
 * just get the indexes; nothing is rewritten. */
static const char *const db_migration_3[] = {
	"CREATE INDEX IF NOT EXISTS reception_audit_live_key_c"
	" ON reception_audit (source_bucket, object_key COLLATE \"C\")"
	" WHERE removed_at IS NULL",
	"CREATE INDEX IF NOT EXISTS reception_audit_key_c"
	" ON reception_audit (source_bucket, object_key COLLATE \"C\", id)",
	NULL,
};

/* Version 4: who decides that an upload is logged already. The mount that
 * uploaded knows each close is a distinct upload (even of the same bytes,
 * even over a live row with no ETag from the seed or another tool): origin
 * 'mount' always retires the live row and inserts its own. An observer
 * (any other origin) logs nothing when a live row has the same ETag, or no
 * ETag, and the same size; otherwise it retires the live row too. Replaces
 * version 2's function in place (same signature). */
static const char *const db_migration_4[] = {
	"CREATE OR REPLACE FUNCTION custodyfs_reception_record("
	" p_lock_class integer, p_lock_obj integer,"
	" p_bucket text, p_file_name text, p_key text, p_size bigint,"
	" p_xxh text, p_sha text, p_etag text, p_origin text,"
	" p_by text, p_uid bigint, p_user text, p_host text, p_reason text,"
	" OUT o_id bigint, OUT o_inserted boolean)"
	" LANGUAGE plpgsql AS $fn$\n"
	"DECLARE r record; n integer := 0;\n"
	"BEGIN\n"
	" PERFORM pg_advisory_xact_lock(p_lock_class, p_lock_obj);\n"
	" FOR r IN SELECT id, etag, size_bytes FROM reception_audit"
	"  WHERE source_bucket = p_bucket AND object_key = p_key"
	"  AND removed_at IS NULL ORDER BY id DESC FOR UPDATE LOOP\n"
	"  n := n + 1;\n"
	"  IF p_origin IS DISTINCT FROM 'mount'"
	"   AND (r.etag IS NULL OR r.etag = p_etag)"
	"   AND r.size_bytes IS NOT DISTINCT FROM p_size THEN\n"
	"   o_id := r.id; o_inserted := false; RETURN;\n"
	"  END IF;\n"
	" END LOOP;\n"
	" IF n > 0 THEN\n"
	"  UPDATE reception_audit SET removed_at = now(),"
	"   removal_reason = p_reason"
	"   WHERE source_bucket = p_bucket AND object_key = p_key"
	"   AND removed_at IS NULL;\n"
	" END IF;\n"
	" INSERT INTO reception_audit (source_bucket, file_name, object_key,"
	"  size_bytes, uploaded_at, xxh128, sha256, etag, origin, received_by,"
	"  received_uid, received_user, received_host)"
	"  VALUES (p_bucket, p_file_name, p_key, p_size, now(), p_xxh, p_sha,"
	"  p_etag, p_origin, p_by, p_uid, p_user, p_host)"
	"  RETURNING id INTO o_id;\n"
	" o_inserted := true;\n"
	"END\n"
	"$fn$",
	NULL,
};

/* Version 5: attributes set with chmod, chown and utimens (and the owner
 * and mode given at create/mkdir), persisted so every mount sharing the
 * database shows them. file_attrs is mutable (one row per key: NULL
 * columns mean "not set", the default applies); file_attr_changes logs
 * each chmod/chown/utimens with who and when, and is append-only for every
 * role (no removed_at: nothing may change). Times are nanoseconds since
 * the epoch (utimensat's precision). A removed file's file_attrs row goes;
 * its changes stay. */
static const char *const db_migration_5[] = {
	"CREATE TABLE IF NOT EXISTS file_attrs ("
	" bucket text NOT NULL,"
	" object_key text NOT NULL,"
	" mode integer CHECK (mode BETWEEN 0 AND 4095),"
	" uid bigint,"
	" gid bigint,"
	" atime_ns bigint,"
	" mtime_ns bigint,"
	" ctime timestamptz NOT NULL DEFAULT now(),"
	" updated_by text,"
	" PRIMARY KEY (bucket, object_key))",
	"CREATE INDEX IF NOT EXISTS file_attrs_key_c"
	" ON file_attrs (bucket, object_key COLLATE \"C\")",

	"CREATE TABLE IF NOT EXISTS file_attr_changes ("
	" id bigserial PRIMARY KEY,"
	" bucket text NOT NULL,"
	" object_key text NOT NULL,"
	" op text NOT NULL CHECK (op IN ('chmod', 'chown', 'utimens')),"
	" mode integer,"
	" uid bigint,"
	" gid bigint,"
	" atime_ns bigint,"
	" mtime_ns bigint,"
	" changed_at timestamptz NOT NULL DEFAULT now(),"
	" changed_by text,"
	" changed_uid bigint,"
	" changed_user text,"
	" changed_host text)",
	"CREATE INDEX IF NOT EXISTS file_attr_changes_key"
	" ON file_attr_changes (bucket, object_key, id)",

	"CREATE OR REPLACE FUNCTION custodyfs_strict_append_only()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"BEGIN\n"
	" RAISE EXCEPTION 'custodyfs: %.% is append-only: % refused',"
	" TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = 'P0001';\n"
	"END\n"
	"$fn$",
	"DROP TRIGGER IF EXISTS custodyfs_append_only_row"
	" ON file_attr_changes",
	"DROP TRIGGER IF EXISTS custodyfs_append_only_stmt"
	" ON file_attr_changes",
	"CREATE TRIGGER custodyfs_append_only_row"
	" BEFORE UPDATE ON file_attr_changes FOR EACH ROW"
	" EXECUTE FUNCTION custodyfs_strict_append_only()",
	"CREATE TRIGGER custodyfs_append_only_stmt"
	" BEFORE DELETE OR TRUNCATE ON file_attr_changes FOR EACH STATEMENT"
	" EXECUTE FUNCTION custodyfs_strict_append_only()",
	"ALTER TABLE file_attr_changes ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_row",
	"ALTER TABLE file_attr_changes ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_stmt",
	NULL,
};

/* Version 6: the promotion journal (promote.c, db_storage.c). An ordinary
 * mutable table, not an audit table: one row per promotion, its intent and
 * step, so a crash is finished or rolled back from it. The database decides
 * uniqueness: at most one open entry (intent or stored) per destination key
 * and per source key, and, for entries promoted under dedup=content, per
 * (project, sha256, size); a storage_audit row records at most one journal
 * entry (journal_id), so a redone record step never inserts a second row.
 * owner is a mount's id (promotion_owner_seq), held as a session advisory
 * lock while the mount lives. */
static const char *const db_migration_6[] = {
	"CREATE SEQUENCE IF NOT EXISTS promotion_owner_seq"
	" MINVALUE 1 MAXVALUE 2147483647 CYCLE",
	"CREATE TABLE IF NOT EXISTS promotion_journal ("
	" id bigserial PRIMARY KEY,"
	" reception_id bigint,"
	" source_bucket text NOT NULL,"
	" source_key text NOT NULL,"
	" source_etag text NOT NULL,"
	" dest_bucket text NOT NULL,"
	" dest_key text NOT NULL,"
	" project_prefix text NOT NULL,"
	" size_bytes bigint NOT NULL CHECK (size_bytes >= 0),"
	" sha256 text NOT NULL,"
	" xxh128 text,"
	" dedup_content boolean NOT NULL DEFAULT true,"
	" outcome text NOT NULL CHECK (outcome IN ('copied', 'restored',"
	"  'adopted', 'duplicate', 'duplicate_content')),"
	" duplicate_of text,"
	" state text NOT NULL DEFAULT 'intent' CHECK (state IN ('intent',"
	"  'stored', 'done', 'failed')),"
	" owner integer NOT NULL,"
	" moved_by text,"
	" moved_uid bigint,"
	" moved_user text,"
	" moved_host text,"
	" error text,"
	" created_at timestamptz NOT NULL DEFAULT now(),"
	" updated_at timestamptz NOT NULL DEFAULT now())",
	"CREATE UNIQUE INDEX IF NOT EXISTS promotion_journal_open_dest"
	" ON promotion_journal (dest_bucket, dest_key)"
	" WHERE state IN ('intent', 'stored')",
	"CREATE UNIQUE INDEX IF NOT EXISTS promotion_journal_open_source"
	" ON promotion_journal (source_bucket, source_key)"
	" WHERE state IN ('intent', 'stored')",
	"CREATE UNIQUE INDEX IF NOT EXISTS promotion_journal_open_content"
	" ON promotion_journal (dest_bucket, project_prefix, sha256, size_bytes)"
	" WHERE state IN ('intent', 'stored') AND dedup_content",
	"CREATE INDEX IF NOT EXISTS promotion_journal_open_owner"
	" ON promotion_journal (owner) WHERE state IN ('intent', 'stored')",
	"ALTER TABLE storage_audit ADD COLUMN IF NOT EXISTS journal_id bigint",
	"CREATE UNIQUE INDEX IF NOT EXISTS storage_audit_journal"
	" ON storage_audit (journal_id) WHERE journal_id IS NOT NULL",
	"CREATE INDEX IF NOT EXISTS storage_audit_bucket_key_c"
	" ON storage_audit (dest_key COLLATE \"C\", id)",
	NULL,
};

/* Version 7: the projects guard refuses to delete a project that stored
 * files with SQLSTATE 2BP01 (dependent_objects_still_exist), so rmdir can
 * tell ENOTEMPTY from the other refusals (P0001, EPERM). Same function,
 * same triggers; only that error code changes. */
static const char *const db_migration_7[] = {
	"CREATE OR REPLACE FUNCTION custodyfs_projects_guard()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"DECLARE stored boolean;\n"
	"BEGIN\n"
	" IF TG_OP = 'UPDATE' THEN\n"
	"  IF (to_jsonb(NEW) - 'name') = (to_jsonb(OLD) - 'name') THEN\n"
	"   RETURN NEW;\n"
	"  END IF;\n"
	"  RAISE EXCEPTION 'custodyfs: %.%: only name may be updated',"
	"   TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'P0001';\n"
	" ELSIF TG_OP = 'DELETE' THEN\n"
	"  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.storage_audit"
	" WHERE project_prefix = $1)', TG_TABLE_SCHEMA)"
	"   INTO stored USING OLD.prefix;\n"
	"  IF stored THEN\n"
	"   RAISE EXCEPTION 'custodyfs: project % has stored files and"
	" cannot be deleted', OLD.prefix USING ERRCODE = '2BP01';\n"
	"  END IF;\n"
	"  RETURN OLD;\n"
	" END IF;\n"
	" EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.storage_audit)',"
	"  TG_TABLE_SCHEMA) INTO stored;\n"
	" IF stored THEN\n"
	"  RAISE EXCEPTION 'custodyfs: %.% cannot be truncated: projects have"
	" stored files', TG_TABLE_SCHEMA, TG_TABLE_NAME"
	"   USING ERRCODE = 'P0001';\n"
	" END IF;\n"
	" RETURN NULL;\n"
	"END\n"
	"$fn$",
	NULL,
};

/* Version 8: a file_attrs row describes one object: etag is the ETag of
 * the object it was set on (NULL: not bound yet, a mount's new file whose
 * upload is not recorded), and a row bound to another ETag than the
 * object a listing shows is not that object's (removed or replaced by
 * another route). Rows from before are bound to the key's newest live
 * reception row of a mount's upload. file_attr_changes also logs the
 * initial attributes ('create', 'mkdir'), renames ('move', from_key the
 * old name) and removals ('drop'), each with the ETag the row is bound
 * to; the clearing of setuid/setgid by a write ('kill_priv') is no
 * chmod. */
static const char *const db_migration_8[] = {
	"ALTER TABLE file_attrs ADD COLUMN IF NOT EXISTS etag text",
	"UPDATE file_attrs f SET etag = r.etag FROM (SELECT DISTINCT ON"
	" (source_bucket, object_key) source_bucket, object_key, etag, origin"
	" FROM reception_audit WHERE removed_at IS NULL"
	" ORDER BY source_bucket, object_key, id DESC) r"
	" WHERE f.etag IS NULL AND f.bucket = r.source_bucket"
	" AND f.object_key = r.object_key AND r.origin = 'mount'"
	" AND r.etag IS NOT NULL AND r.etag <> ''",
	"ALTER TABLE file_attr_changes ADD COLUMN IF NOT EXISTS etag text",
	"ALTER TABLE file_attr_changes ADD COLUMN IF NOT EXISTS from_key text",
	"ALTER TABLE file_attr_changes DROP CONSTRAINT IF EXISTS"
	" file_attr_changes_op_check",
	"ALTER TABLE file_attr_changes ADD CONSTRAINT"
	" file_attr_changes_op_check CHECK (op IN ('chmod', 'chown',"
	" 'utimens', 'create', 'mkdir', 'move', 'drop', 'kill_priv'))",
	/* A directory's attribute snapshot reads the rows of its direct
	 * children only (their parent prefix indexed), not the whole tree
	 * under it. The expression is db_attrs.c's list_dir query's. */
	"CREATE INDEX IF NOT EXISTS file_attrs_parent"
	" ON file_attrs (bucket, regexp_replace(object_key, '[^/]*$', ''))",
	NULL,
};

/* Version 9: tamper evidence (doc/custodyfs.1, TAMPER EVIDENCE, is the
 * auditor's reference). Every row inserted into projects_registry,
 * reception_audit, storage_audit and audit_chain_events, by anyone, gets
 * from the BEFORE INSERT trigger zz_custodyfs_chain (named to run last of
 * the BEFORE triggers, ENABLE ALWAYS so replica mode does not skip it):
 *   chain_lane = a lane, chain_seq = the lane's last chain_seq + 1,
 *   prev_hash = the lane's last row_hash (64 zeros for the first),
 *   row_hash  = hex(SHA-256(unhex(prev_hash) || custodyfs_chain_enc_*))
 * Each table has 8 chains, "lanes" (0 to 7). The trigger takes a lane's
 * transaction advisory lock (class CHAIN_LOCK_CLASS + the table's number,
 * the lane): one no other transaction holds, its own pid's first, else it
 * waits for its own pid's lane. The lock is held until the inserting
 * transaction ends, and the lane's last row is read after it is granted
 * (a fresh snapshot in READ COMMITTED): within a lane, an inserter sees
 * the row of the one before it once that one committed, or nothing of it
 * after a rollback; each lane's order is its commit order, gapless. In
 * REPEATABLE READ a stale snapshot would reuse a chain_seq: the unique
 * index on (chain_lane, chain_seq) refuses it (23505), to be retried.
 * Why lanes: one chain per table makes every insert wait for the previous
 * inserter's commit (its WAL flush); with 8 writers that cost most of the
 * insert rate (tests/bench/chain_bench.py). Why no table of heads: a head
 * row updated by every insert cost as much again (one more row version
 * per insert), and it proves nothing a superuser could not rewrite with
 * the rows; the heads that count are the anchors in the store (chain.h).
 * The mutable columns (removed_at and removal_reason of the two audit
 * tables, a project's name) are not in the row hash: each value they
 * take, at insert or by an UPDATE, is its own chained row of
 * audit_chain_events (strictly append-only), and verify checks each row's
 * current value against its newest event. Rows present at migration time
 * are chained in id order in lane 0. */
static const char *const db_migration_9[] = {
	"CREATE TABLE IF NOT EXISTS audit_chain_events ("
	" id bigserial PRIMARY KEY,"
	" table_name text NOT NULL,"
	" row_id bigint NOT NULL,"
	" kind text NOT NULL CHECK (kind IN ('removed', 'named', 'deleted')),"
	" removed_at timestamptz,"
	" removal_reason text,"
	" name text,"
	" event_at timestamptz NOT NULL DEFAULT now(),"
	" event_by text NOT NULL DEFAULT current_user,"
	" gap_lane integer,"
	" gap_seq bigint,"
	" gap_prev text,"
	" gap_hash text)",
	"CREATE INDEX IF NOT EXISTS audit_chain_events_gap"
	" ON audit_chain_events (table_name, gap_lane, gap_seq)"
	" WHERE kind = 'deleted'",
	"CREATE INDEX IF NOT EXISTS audit_chain_events_row"
	" ON audit_chain_events (table_name, row_id, id)",

	"ALTER TABLE projects_registry"
	" ADD COLUMN IF NOT EXISTS chain_lane integer,"
	" ADD COLUMN IF NOT EXISTS chain_seq bigint,"
	" ADD COLUMN IF NOT EXISTS prev_hash text,"
	" ADD COLUMN IF NOT EXISTS row_hash text",
	"ALTER TABLE reception_audit"
	" ADD COLUMN IF NOT EXISTS chain_lane integer,"
	" ADD COLUMN IF NOT EXISTS chain_seq bigint,"
	" ADD COLUMN IF NOT EXISTS prev_hash text,"
	" ADD COLUMN IF NOT EXISTS row_hash text",
	"ALTER TABLE storage_audit"
	" ADD COLUMN IF NOT EXISTS chain_lane integer,"
	" ADD COLUMN IF NOT EXISTS chain_seq bigint,"
	" ADD COLUMN IF NOT EXISTS prev_hash text,"
	" ADD COLUMN IF NOT EXISTS row_hash text",
	"ALTER TABLE audit_chain_events"
	" ADD COLUMN IF NOT EXISTS chain_lane integer,"
	" ADD COLUMN IF NOT EXISTS chain_seq bigint,"
	" ADD COLUMN IF NOT EXISTS prev_hash text,"
	" ADD COLUMN IF NOT EXISTS row_hash text",

	/* One field: "~" for NULL, else its UTF-8 byte length in decimal,
	 * ":", the value, as text (custodyfs_chain_enc_* convert the whole to
	 * UTF-8 once). In a UTF-8 database a text's octet_length is its UTF-8
	 * length; in another, it is counted after conversion. Every function
	 * in it is immutable (int::text, not int || text, which is stable),
	 * so the planner inlines it: a call costs what a CASE costs. */
	"DO $do$\n"
	"BEGIN\n"
	" IF current_setting('server_encoding') = 'UTF8' THEN\n"
	"  CREATE OR REPLACE FUNCTION custodyfs_chain_field(v text)"
	"   RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS"
	"   $fn$SELECT CASE WHEN v IS NULL THEN '~'"
	"   ELSE octet_length(v)::text || ':' || v END$fn$;\n"
	" ELSE\n"
	"  CREATE OR REPLACE FUNCTION custodyfs_chain_field(v text)"
	"   RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS"
	"   $fn$SELECT CASE WHEN v IS NULL THEN '~'"
	"   ELSE octet_length(convert_to(v, 'UTF8'))::text || ':' || v"
	"   END$fn$;\n"
	" END IF;\n"
	"END\n"
	"$do$",

	/* A timestamp's field: microseconds since the Unix epoch. A
	 * timestamp without time zone (or a date, at midnight) is its
	 * nominal value read as UTC, whatever the session's TimeZone: the
	 * overloads keep PostgreSQL from casting it to timestamptz in the
	 * inserting session's zone (verify reads the same nominal value). */
	"CREATE OR REPLACE FUNCTION custodyfs_chain_ts(t timestamptz)"
	" RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS"
	" $fn$SELECT (extract(epoch FROM t) * 1000000)::bigint::text$fn$",
	"CREATE OR REPLACE FUNCTION custodyfs_chain_ts(t timestamp)"
	" RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS"
	" $fn$SELECT (extract(epoch FROM t) * 1000000)::bigint::text$fn$",
	"CREATE OR REPLACE FUNCTION custodyfs_chain_ts(t date)"
	" RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS"
	" $fn$SELECT (extract(epoch FROM t::timestamp) * 1000000)"
	"::bigint::text$fn$",

	/* The canonical encoding of a row of each table (version 1: a later
	 * migration that adds a column to it must start v2): the fields
	 * "custodyfs-chain-v1", the table name, then the columns in this
	 * order, timestamps as custodyfs_chain_ts, other values as their
	 * text. */
	"CREATE OR REPLACE FUNCTION custodyfs_chain_enc_projects_registry(r projects_registry)"
	" RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$SELECT"
	" convert_to(custodyfs_chain_field('custodyfs-chain-v1')"
	" || custodyfs_chain_field('projects_registry')"
	" || custodyfs_chain_field(r.id::text)"
	" || custodyfs_chain_field(r.prefix::text)"
	" || custodyfs_chain_field(custodyfs_chain_ts(r.created_at))"
	" || custodyfs_chain_field(r.created_by::text), 'UTF8')$fn$",

	"CREATE OR REPLACE FUNCTION custodyfs_chain_enc_reception_audit(r reception_audit)"
	" RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$SELECT"
	" convert_to(custodyfs_chain_field('custodyfs-chain-v1')"
	" || custodyfs_chain_field('reception_audit')"
	" || custodyfs_chain_field(r.id::text)"
	" || custodyfs_chain_field(r.source_bucket::text)"
	" || custodyfs_chain_field(r.file_name::text)"
	" || custodyfs_chain_field(r.object_key::text)"
	" || custodyfs_chain_field(r.size_bytes::text)"
	" || custodyfs_chain_field(custodyfs_chain_ts(r.uploaded_at))"
	" || custodyfs_chain_field(r.xxh128::text)"
	" || custodyfs_chain_field(r.sha256::text)"
	" || custodyfs_chain_field(r.received_by::text)"
	" || custodyfs_chain_field(r.etag::text)"
	" || custodyfs_chain_field(r.origin::text)"
	" || custodyfs_chain_field(r.received_uid::text)"
	" || custodyfs_chain_field(r.received_user::text)"
	" || custodyfs_chain_field(r.received_host::text), 'UTF8')$fn$",

	"CREATE OR REPLACE FUNCTION custodyfs_chain_enc_storage_audit(r storage_audit)"
	" RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$SELECT"
	" convert_to(custodyfs_chain_field('custodyfs-chain-v1')"
	" || custodyfs_chain_field('storage_audit')"
	" || custodyfs_chain_field(r.id::text)"
	" || custodyfs_chain_field(r.project_prefix::text)"
	" || custodyfs_chain_field(r.project_name::text)"
	" || custodyfs_chain_field(r.dest_bucket::text)"
	" || custodyfs_chain_field(r.dest_key::text)"
	" || custodyfs_chain_field(r.size_bytes::text)"
	" || custodyfs_chain_field(custodyfs_chain_ts(r.moved_at))"
	" || custodyfs_chain_field(r.source_bucket::text)"
	" || custodyfs_chain_field(r.source_key::text)"
	" || custodyfs_chain_field(r.reception_id::text)"
	" || custodyfs_chain_field(r.outcome::text)"
	" || custodyfs_chain_field(r.duplicate_of::text)"
	" || custodyfs_chain_field(r.xxh128::text)"
	" || custodyfs_chain_field(r.sha256::text)"
	" || custodyfs_chain_field(r.moved_by::text)"
	" || custodyfs_chain_field(r.moved_uid::text)"
	" || custodyfs_chain_field(r.moved_user::text)"
	" || custodyfs_chain_field(r.moved_host::text)"
	" || custodyfs_chain_field(r.journal_id::text), 'UTF8')$fn$",

	"CREATE OR REPLACE FUNCTION custodyfs_chain_enc_audit_chain_events(r audit_chain_events)"
	" RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$SELECT"
	" convert_to(custodyfs_chain_field('custodyfs-chain-v1')"
	" || custodyfs_chain_field('audit_chain_events')"
	" || custodyfs_chain_field(r.id::text)"
	" || custodyfs_chain_field(r.table_name::text)"
	" || custodyfs_chain_field(r.row_id::text)"
	" || custodyfs_chain_field(r.kind::text)"
	" || custodyfs_chain_field(custodyfs_chain_ts(r.removed_at))"
	" || custodyfs_chain_field(r.removal_reason::text)"
	" || custodyfs_chain_field(r.name::text)"
	" || custodyfs_chain_field(custodyfs_chain_ts(r.event_at))"
	" || custodyfs_chain_field(r.event_by::text)"
	" || custodyfs_chain_field(r.gap_lane::text)"
	" || custodyfs_chain_field(r.gap_seq::text)"
	" || custodyfs_chain_field(r.gap_prev::text)"
	" || custodyfs_chain_field(r.gap_hash::text), 'UTF8')$fn$",

	/* Lane locks: (int, int) advisory keys (1129665392 + the table's
	 * number, lane): "CUSp" onwards, apart from the other classes. */
	"CREATE OR REPLACE FUNCTION custodyfs_chain_insert()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"DECLARE enc bytea; cls integer; mine integer := pg_backend_pid() % 8;"
	" l integer; i integer; prev text; seq bigint;\n"
	"BEGIN\n"
	" cls := 1129665392 + CASE TG_TABLE_NAME WHEN 'projects_registry'"
	"  THEN 0 WHEN 'reception_audit' THEN 1 WHEN 'storage_audit' THEN 2"
	"  ELSE 3 END;\n"
	" l := mine;\n"
	" IF NOT pg_try_advisory_xact_lock(cls, l) THEN\n"
	"  l := NULL;\n"
	"  FOR i IN 1..7 LOOP\n"
	"   l := (mine + i) % 8;\n"
	"   EXIT WHEN pg_try_advisory_xact_lock(cls, l);\n"
	"   l := NULL;\n"
	"  END LOOP;\n"
	"  IF l IS NULL THEN\n"
	"   l := mine;\n"
	"   PERFORM pg_advisory_xact_lock(cls, l);\n"
	"  END IF;\n"
	" END IF;\n"
	" IF TG_TABLE_NAME = 'reception_audit' THEN\n"
	"  enc := custodyfs_chain_enc_reception_audit(NEW);\n"
	"  SELECT x.chain_seq, x.row_hash INTO seq, prev FROM reception_audit x"
	"   WHERE x.chain_lane = l ORDER BY x.chain_seq DESC LIMIT 1;\n"
	" ELSIF TG_TABLE_NAME = 'storage_audit' THEN\n"
	"  enc := custodyfs_chain_enc_storage_audit(NEW);\n"
	"  SELECT x.chain_seq, x.row_hash INTO seq, prev FROM storage_audit x"
	"   WHERE x.chain_lane = l ORDER BY x.chain_seq DESC LIMIT 1;\n"
	" ELSIF TG_TABLE_NAME = 'projects_registry' THEN\n"
	"  enc := custodyfs_chain_enc_projects_registry(NEW);\n"
	"  SELECT x.chain_seq, x.row_hash INTO seq, prev"
	"   FROM projects_registry x"
	"   WHERE x.chain_lane = l ORDER BY x.chain_seq DESC LIMIT 1;\n"
	/* a deleted tail is still the lane's last link */
	"  SELECT e.gap_seq, e.gap_hash INTO seq, prev FROM ("
	"   SELECT seq AS gap_seq, prev AS gap_hash WHERE seq IS NOT NULL"
	"   UNION ALL SELECT x.gap_seq, x.gap_hash FROM audit_chain_events x"
	"   WHERE x.kind = 'deleted' AND x.table_name = 'projects_registry'"
	"   AND x.gap_lane = l) e ORDER BY e.gap_seq DESC LIMIT 1;\n"
	" ELSE\n"
	"  enc := custodyfs_chain_enc_audit_chain_events(NEW);\n"
	"  SELECT x.chain_seq, x.row_hash INTO seq, prev"
	"   FROM audit_chain_events x"
	"   WHERE x.chain_lane = l ORDER BY x.chain_seq DESC LIMIT 1;\n"
	" END IF;\n"
	" IF seq IS NULL THEN\n"
	"  seq := 0; prev := repeat('0', 64);\n"
	" END IF;\n"
	" NEW.chain_lane := l;\n"
	" NEW.chain_seq := seq + 1;\n"
	" NEW.prev_hash := prev;\n"
	" NEW.row_hash := encode(sha256(decode(prev, 'hex') || enc), 'hex');\n"
	" RETURN NEW;\n"
	"END\n"
	"$fn$",

	/* Each value a mutable column takes is an event. */
	"CREATE OR REPLACE FUNCTION custodyfs_chain_mutable()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"BEGIN\n"
	" IF TG_TABLE_NAME = 'projects_registry' THEN\n"
	"  IF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name THEN\n"
	"   INSERT INTO audit_chain_events (table_name, row_id, kind, name)"
	"    VALUES (TG_TABLE_NAME, NEW.id, 'named', NEW.name);\n"
	"  END IF;\n"
	" ELSIF (TG_OP = 'INSERT' AND (NEW.removed_at IS NOT NULL"
	"   OR NEW.removal_reason IS NOT NULL))"
	"  OR (TG_OP = 'UPDATE' AND (NEW.removed_at, NEW.removal_reason)"
	"   IS DISTINCT FROM (OLD.removed_at, OLD.removal_reason)) THEN\n"
	"  INSERT INTO audit_chain_events (table_name, row_id, kind,"
	"   removed_at, removal_reason)"
	"   VALUES (TG_TABLE_NAME, NEW.id, 'removed', NEW.removed_at,"
	"   NEW.removal_reason);\n"
	" END IF;\n"
	" RETURN NULL;\n"
	"END\n"
	"$fn$",

	/* A permitted DELETE of a projects_registry row (a project that
	 * never stored a file, custodyfs_projects_guard) leaves a chained
	 * 'deleted' event naming the link it took out of its lane: verify
	 * accepts that gap, and only that one. AFTER, so that it fires only
	 * for a row really deleted. */
	"CREATE OR REPLACE FUNCTION custodyfs_chain_deleted()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"BEGIN\n"
	" PERFORM pg_advisory_xact_lock(1129665392 + CASE TG_TABLE_NAME"
	"  WHEN 'projects_registry' THEN 0 WHEN 'reception_audit' THEN 1"
	"  WHEN 'storage_audit' THEN 2 ELSE 3 END, OLD.chain_lane);\n"
	" INSERT INTO audit_chain_events (table_name, row_id, kind, gap_lane,"
	"  gap_seq, gap_prev, gap_hash) VALUES (TG_TABLE_NAME, OLD.id,"
	"  'deleted', OLD.chain_lane, OLD.chain_seq, OLD.prev_hash,"
	"  OLD.row_hash);\n"
	" RETURN NULL;\n"
	"END\n"
	"$fn$",

	/* Chain what is there, in id order, in lane 0; the mutable columns' current
	 * values become their first events. The append-only triggers are
	 * off for this transaction's own updates of the new columns. */
	"ALTER TABLE projects_registry DISABLE TRIGGER custodyfs_projects_row",
	"ALTER TABLE reception_audit DISABLE TRIGGER custodyfs_append_only_row",
	"ALTER TABLE storage_audit DISABLE TRIGGER custodyfs_append_only_row",
	"INSERT INTO audit_chain_events (table_name, row_id, kind, name)"
	" SELECT 'projects_registry', id, 'named', name FROM projects_registry"
	" ORDER BY id",
	"INSERT INTO audit_chain_events (table_name, row_id, kind, removed_at,"
	" removal_reason) SELECT 'reception_audit', id, 'removed', removed_at,"
	" removal_reason FROM reception_audit WHERE removed_at IS NOT NULL"
	" OR removal_reason IS NOT NULL ORDER BY id",
	"INSERT INTO audit_chain_events (table_name, row_id, kind, removed_at,"
	" removal_reason) SELECT 'storage_audit', id, 'removed', removed_at,"
	" removal_reason FROM storage_audit WHERE removed_at IS NOT NULL"
	" OR removal_reason IS NOT NULL ORDER BY id",
	"DO $do$\n"
	"DECLARE t text; rid bigint; enc bytea; n bigint; h text; nh text;\n"
	"BEGIN\n"
	" FOREACH t IN ARRAY ARRAY['projects_registry', 'reception_audit',"
	"  'storage_audit', 'audit_chain_events'] LOOP\n"
	"  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(t)"
	"   AND tgname = 'zz_custodyfs_chain')"
	"  THEN\n"
	"   CONTINUE;\n"
	"  END IF;\n"
	"  n := 0; h := repeat('0', 64);\n"
	"  FOR rid, enc IN EXECUTE format('SELECT id::bigint,"
	"   custodyfs_chain_enc_%s(x) FROM %I x"
	"   ORDER BY id', t, t) LOOP\n"
	"   n := n + 1;\n"
	"   nh := encode(sha256(decode(h, 'hex') || enc), 'hex');\n"
	"   EXECUTE format('UPDATE %I SET chain_lane = 0, chain_seq = $1,"
	"    prev_hash = $2, row_hash = $3 WHERE id = $4', t)"
	"    USING n, h, nh, rid;\n"
	"   h := nh;\n"
	"  END LOOP;\n"
		"  EXECUTE format('CREATE UNIQUE INDEX IF NOT EXISTS %I ON %I"
	"   (chain_lane, chain_seq)', t || '_chain_seq', t);\n"
	"  EXECUTE format('DROP TRIGGER IF EXISTS zz_custodyfs_chain ON %I',"
	"   t);\n"
	"  EXECUTE format('CREATE TRIGGER zz_custodyfs_chain BEFORE INSERT"
	"   ON %I FOR EACH ROW EXECUTE FUNCTION custodyfs_chain_insert()', t);\n"
	"  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	"   zz_custodyfs_chain', t);\n"
	"  IF t <> 'audit_chain_events' THEN\n"
	"   EXECUTE format('DROP TRIGGER IF EXISTS custodyfs_chain_mutable"
	"    ON %I', t);\n"
	"   EXECUTE format('DROP TRIGGER IF EXISTS custodyfs_chain_mutable_ins"
	"    ON %I', t);\n"
	"   EXECUTE format('CREATE TRIGGER custodyfs_chain_mutable AFTER"
	"    UPDATE ON %I FOR EACH ROW WHEN (%s)"
	"    EXECUTE FUNCTION custodyfs_chain_mutable()', t, CASE t"
	"    WHEN 'projects_registry' THEN 'NEW.name IS DISTINCT FROM OLD.name'"
	"    ELSE '(NEW.removed_at, NEW.removal_reason) IS DISTINCT FROM"
	"    (OLD.removed_at, OLD.removal_reason)' END);\n"
	"   EXECUTE format('CREATE TRIGGER custodyfs_chain_mutable_ins AFTER"
	"    INSERT ON %I FOR EACH ROW WHEN (%s)"
	"    EXECUTE FUNCTION custodyfs_chain_mutable()', t, CASE t"
	"    WHEN 'projects_registry' THEN 'true'"
	"    ELSE 'NEW.removed_at IS NOT NULL OR NEW.removal_reason IS NOT"
	"    NULL' END);\n"
	"   EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	"    custodyfs_chain_mutable', t);\n"
	"   EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	"    custodyfs_chain_mutable_ins', t);\n"
	"  END IF;\n"
	" END LOOP;\n"
	"END\n"
	"$do$",

	/* Back on, as version 1 and 5 left them (ALWAYS). */
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_projects_row",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_projects_stmt",
	"DO $do$\n"
	"DECLARE t text;\n"
	"BEGIN\n"
	" FOREACH t IN ARRAY ARRAY['reception_audit', 'storage_audit',"
	"  'audit_chain_events'] LOOP\n"
	"  EXECUTE format('CREATE OR REPLACE TRIGGER custodyfs_append_only_row"
	" BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION %I()', t,"
	"   CASE t WHEN 'audit_chain_events' THEN"
	"   'custodyfs_strict_append_only' ELSE 'custodyfs_audit_append_only'"
	"   END);\n"
	"  EXECUTE format('CREATE OR REPLACE TRIGGER custodyfs_append_only_stmt"
	" BEFORE DELETE OR TRUNCATE ON %I FOR EACH STATEMENT"
	" EXECUTE FUNCTION %I()', t,"
	"   CASE t WHEN 'audit_chain_events' THEN"
	"   'custodyfs_strict_append_only' ELSE 'custodyfs_audit_append_only'"
	"   END);\n"
	"  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_row', t);\n"
	"  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_stmt', t);\n"
	" END LOOP;\n"
	"END\n"
	"$do$",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" zz_custodyfs_chain",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_chain_mutable",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_chain_mutable_ins",
	"ALTER TABLE reception_audit ENABLE ALWAYS TRIGGER zz_custodyfs_chain",
	"ALTER TABLE reception_audit ENABLE ALWAYS TRIGGER"
	" custodyfs_chain_mutable",
	"ALTER TABLE reception_audit ENABLE ALWAYS TRIGGER"
	" custodyfs_chain_mutable_ins",
	"ALTER TABLE storage_audit ENABLE ALWAYS TRIGGER zz_custodyfs_chain",
	"ALTER TABLE storage_audit ENABLE ALWAYS TRIGGER"
	" custodyfs_chain_mutable",
	"ALTER TABLE storage_audit ENABLE ALWAYS TRIGGER"
	" custodyfs_chain_mutable_ins",
	"ALTER TABLE audit_chain_events ENABLE ALWAYS TRIGGER"
	" zz_custodyfs_chain",
	"DROP TRIGGER IF EXISTS custodyfs_chain_deleted ON projects_registry",
	"CREATE TRIGGER custodyfs_chain_deleted AFTER DELETE ON"
	" projects_registry FOR EACH ROW"
	" EXECUTE FUNCTION custodyfs_chain_deleted()",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_chain_deleted",
	NULL,
};

/* Version 10: the last removal of each reception key through a mount
 * (reception_remove), written under the key lock with the object's
 * deletion. A mount's commit, under the same lock, finds there whether the
 * key was removed after the content it uploads was based on the store (an
 * upload held in flight while another mount ran rm): then the removal wins
 * and the upload is logged removed (db.h: db_record_guard.based_ms_ago).
 * An ordinary mutable table, not an audit table: one row per key. */
static const char *const db_migration_10[] = {
	"CREATE TABLE IF NOT EXISTS reception_removals ("
	" source_bucket text NOT NULL,"
	" object_key text NOT NULL,"
	" removed_at timestamptz NOT NULL,"
	" PRIMARY KEY (source_bucket, object_key))",
	NULL,
};

/* Version 11: O_EXCL decided by the database. A mount's new file's row
 * (unbound, etag NULL) is its creator's claim on the name from its create
 * until its upload is recorded: claimed_by names the mount, claim_until
 * is when the claim lapses unless that mount renews it (it does while the
 * file is open there). The primary key lets one create of a name win; a
 * lapsed claim (its mount died before storing) may be taken over. */
static const char *const db_migration_11[] = {
	"ALTER TABLE file_attrs ADD COLUMN IF NOT EXISTS claimed_by text,"
	" ADD COLUMN IF NOT EXISTS claim_until timestamptz",
	NULL,
};

/* Version 12: a rename's pending attributes in a table of their own, one
 * row per rename in flight (token: that rename's), not one per target: two
 * renames over one target never replace or drop each other's (revE E2,
 * E7). The row names the key renamed from (from_key: the copy's rows take
 * the pending row of their own source) and holds until pending_until
 * (then it is stale: a later rename over the target clears it). Rows the
 * earlier design kept in file_attrs under bucket '<bucket>/rename' move
 * here, already stale. */
static const char *const db_migration_12[] = {
	"CREATE TABLE IF NOT EXISTS file_attrs_pending ("
	" bucket text NOT NULL,"
	" object_key text NOT NULL,"
	" token text NOT NULL,"
	" from_key text,"
	" mode integer CHECK (mode BETWEEN 0 AND 4095),"
	" uid bigint,"
	" gid bigint,"
	" atime_ns bigint,"
	" mtime_ns bigint,"
	" etag text,"
	" ctime timestamptz NOT NULL DEFAULT now(),"
	" updated_by text,"
	" pending_until timestamptz NOT NULL,"
	" PRIMARY KEY (bucket, object_key, token))",
	"INSERT INTO file_attrs_pending (bucket, object_key, token, from_key,"
	" mode, uid, gid, atime_ns, mtime_ns, etag, ctime, updated_by,"
	" pending_until)"
	" SELECT left(bucket, length(bucket) - length('/rename')), object_key,"
	" 'migration 12', NULL, mode, uid, gid, atime_ns, mtime_ns, etag, ctime,"
	" updated_by, now() FROM file_attrs"
	" WHERE right(bucket, length('/rename')) = '/rename'"
	" ON CONFLICT (bucket, object_key, token) DO NOTHING",
	"DELETE FROM file_attrs WHERE right(bucket, length('/rename')) = '/rename'",
	NULL,
};

/* Version 13: the ETag of the object a promotion stored or found, as
 * the step that recorded its storage row saw it (the copy's verification,
 * or the decision's HEAD for a duplicate), with the journal entry the row
 * names (promotion_journal is not an audit table: the rows' chain
 * encoding is unchanged). A later decision trusts a row's sha256 only
 * while the object at its key still has that ETag; otherwise, and for
 * older entries (NULL), it hashes the object's bytes. */
static const char *const db_migration_13[] = {
	"ALTER TABLE promotion_journal ADD COLUMN IF NOT EXISTS dest_etag text",
	NULL,
};

/* The hidden names' rows a gone process left (db_attrs_sweep_hidden),
 * found at every mount's start without reading the whole table: a tag has
 * claimed_by without claim_until (a claim has both, a bound row neither). */
static const char *const db_migration_14[] = {
	"CREATE INDEX IF NOT EXISTS file_attrs_tagged ON file_attrs"
	" (bucket, claimed_by) WHERE claim_until IS NULL"
	" AND claimed_by IS NOT NULL",
	NULL,
};

/* Version 15 (review n19 Y1, Y2): where a pending row's upload is.
 * NULL: its file is still open for writing (an unlink by who may remove
 * it drops the row); 'upload': its upload is in flight (a deferred
 * publish's close, db_attrs_defer_has; a publish, db_attrs_pend_publish):
 * an unlink marks it 'unlinked' instead, and the row holds the name
 * (a create there fails) until that upload's record refuses it
 * (db_reception_record_guarded: the object removed, logged removed). */
static const char *const db_migration_15[] = {
	"ALTER TABLE file_attrs_pending ADD COLUMN IF NOT EXISTS upload_state"
	" text CHECK (upload_state IN ('upload', 'unlinked'))",
	NULL,
};

/* Version 16 (review-h5 N2, N7): the tie between a publish's pending row
 * and its upload. NULL: a row not tied (a rename's copy, known by its
 * ETag; a row from before this version); an array: the UPLOAD_TAG values
 * (upload.h) of that publish's uploads, one per attempt, each recorded
 * before its request is sent (db_attrs_pend_tag); empty while none is
 * (a deferred publish whose file is still open for writing). Such a row
 * describes only an object that carries one of them
 * (db_attrs_get_pending), never another that arrives at its key. */
static const char *const db_migration_16[] = {
	"ALTER TABLE file_attrs_pending ADD COLUMN IF NOT EXISTS upload_tags"
	" text[]",
	NULL,
};

/* Version 17 (review-36 R1-R3): each process's heartbeat, written by its
 * liveness watch through the pool every second (db_live_watch): seen_at by
 * the server's clock, and the grace the process asks for. A process is
 * gone only when its liveness lock is free and its heartbeat is missing
 * or older than its grace (LIVE_GONE); a clean stop ends its row (stale),
 * and a sweep deletes the rows of gone processes. host and pid say whose
 * it is. */
static const char *const db_migration_17[] = {
	"CREATE TABLE IF NOT EXISTS live_heartbeat ("
	" claimer text PRIMARY KEY,"
	" seen_at timestamptz NOT NULL,"
	" grace interval NOT NULL,"
	" host text,"
	" pid bigint)",
	NULL,
};

/* Version 18 (review-37 F7): a sweep's drop of a gone process's pending row
 * (db_attrs_sweep_pending) is logged, as op 'pending drop': a pending row
 * is no key's attributes, so not a 'drop'. NOT VALID, then validated: the
 * log is not locked against writes while its rows are checked. */
static const char *const db_migration_18[] = {
	"ALTER TABLE file_attr_changes DROP CONSTRAINT IF EXISTS"
	" file_attr_changes_op_check",
	"ALTER TABLE file_attr_changes ADD CONSTRAINT"
	" file_attr_changes_op_check CHECK (op IN ('chmod', 'chown',"
	" 'utimens', 'create', 'mkdir', 'move', 'drop', 'kill_priv',"
	" 'pending drop')) NOT VALID",
	"ALTER TABLE file_attr_changes VALIDATE CONSTRAINT"
	" file_attr_changes_op_check",
	NULL,
};

struct db_migration {
	int version;
	const char *description;
	const char *const *stmts;
};

static const struct db_migration db_migrations[] = {
	{1, "adopt the seed tables; contract columns, indexes, append-only triggers",
	 db_migration_1},
	{2, "reception record in one round trip", db_migration_2},
	{3, "byte-order key indexes on reception_audit", db_migration_3},
	{4, "a mount's upload always gets its own reception row", db_migration_4},
	{5, "persisted file attributes and their change log", db_migration_5},
	{6, "promotion journal; storage rows name their journal entry",
	 db_migration_6},
	{7, "projects guard: deleting a project with stored files is 2BP01",
	 db_migration_7},
	{8, "file attributes bound to the object version they describe "
	    "and indexed by their directory; creations, renames and "
	    "removals logged",
	 db_migration_8},
	{9, "tamper evidence: hash chains on the audit tables and their "
	    "events",
	 db_migration_9},
	{10, "the last removal of each reception key, for commits racing it",
	 db_migration_10},
	{11, "a new file's row claims its name until its upload is recorded "
	     "(O_EXCL across mounts)",
	 db_migration_11},
	{12, "a rename's pending file attributes keyed by that rename "
	     "(file_attrs_pending)",
	 db_migration_12},
	{13, "the stored object's ETag with its promotion's journal entry",
	 db_migration_13},
	{14, "an index of the rows a hidden name's copy left (a process's "
	     "tag)",
	 db_migration_14},
	{15, "a pending row's upload in flight, and its unlink while it is",
	 db_migration_15},
	{16, "a publish's pending row tied to its uploads' tags",
	 db_migration_16},
	{17, "each process's heartbeat: a free liveness lock alone is not "
	     "death",
	 db_migration_17},
	{18, "a sweep's drop of a gone process's pending row is logged",
	 db_migration_18},
};
/* clang-format on */

#define DB_NMIGRATIONS ((int)(sizeof(db_migrations) / sizeof(db_migrations[0])))

/* clang-format off */
static const char db_sql_has_migrations[] =
	"SELECT to_regclass('schema_migrations') IS NOT NULL";
static const char db_sql_schema_version[] =
	"SELECT coalesce(max(version), 0),"
	" count(*) FILTER (WHERE version BETWEEN 1 AND $1::integer)"
	" FROM schema_migrations";
static const char db_sql_local_timeout[] =
	"SELECT pg_catalog.set_config('statement_timeout', $1::text, true)";
static const char db_sql_migrate_lock[] =
	"SELECT pg_advisory_xact_lock($1::bigint)";
static const char db_sql_create_migrations[] =
	"CREATE TABLE IF NOT EXISTS schema_migrations ("
	" version integer PRIMARY KEY,"
	" applied_at timestamptz NOT NULL DEFAULT now(),"
	" description text)";
static const char db_sql_migration_applied[] =
	"SELECT 1 FROM schema_migrations WHERE version = $1::integer";
static const char db_sql_migration_done[] =
	"INSERT INTO schema_migrations (version, description)"
	" VALUES ($1::integer, $2::text)";
/* clang-format on */

/* What pg_schema_version reads: the highest version applied, and how many
 * of this program's versions (1 to latest) have their row. */
struct schema_state {
	int latest; /* in: this program's highest version */
	int version;
	int known;
};

/* Schema version applied, 0 when there is no schema_migrations. */
static int pg_schema_version(struct pg_ctx *x, void *arg)
{
	struct schema_state *st = arg;
	PGresult *res = NULL;
	const char *p[1];
	char latest[16];
	int rc;

	st->version = st->known = 0;
	rc = pg_exec(x, db_sql_has_migrations, 0, NULL, &res);
	if (rc)
		goto out;
	if (strcmp(PQgetvalue(res, 0, 0), "t"))
		goto out;
	PQclear(res);
	res = NULL;
	snprintf(latest, sizeof(latest), "%d", st->latest);
	p[0] = latest;
	rc = pg_exec(x, db_sql_schema_version, 1, p, &res);
	if (rc)
		goto out;
	st->version = atoi(PQgetvalue(res, 0, 0));
	st->known = atoi(PQgetvalue(res, 0, 1));
out:
	PQclear(res);
	return rc;
}

/* One version, in the caller's transaction, under the migration lock
 * (waiting for another process's migration to commit). */
static int pg_migrate_one(struct pg_ctx *x, void *arg)
{
	const struct db_migration *m = arg;
	const char *p[2];
	char ver[16];
	PGresult *res = NULL;
	int rc, i;

	snprintf(ver, sizeof(ver), "%d", m->version);
	p[0] = DB_MIGRATE_TIMEOUT;
	rc = pg_exec(x, db_sql_local_timeout, 1, p, NULL);
	if (rc)
		goto out;
	p[0] = DB_MIGRATE_LOCK;
	rc = pg_exec(x, db_sql_migrate_lock, 1, p, NULL);
	if (rc)
		goto out;
	rc = pg_exec(x, db_sql_create_migrations, 0, NULL, NULL);
	if (rc)
		goto out;
	p[0] = ver;
	rc = pg_exec(x, db_sql_migration_applied, 1, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) > 0) {
		log_debug("database: migration %d already applied", m->version);
		goto out;
	}

	for (i = 0; m->stmts[i]; i++) {
		rc = pg_exec(x, m->stmts[i], 0, NULL, NULL);
		if (rc) {
			log_error("database: migration %d, statement %d failed",
				  m->version, i + 1);
			goto out;
		}
	}
	p[0] = ver;
	p[1] = m->description;
	rc = pg_exec(x, db_sql_migration_done, 2, p, NULL);
	if (rc)
		goto out;
	log_info("database: applied migration %d (%s)", m->version,
		 m->description);
out:
	PQclear(res);
	return rc;
}

int db_migrate(struct db *d)
{
	int rc, i;
	int latest = db_migrations[DB_NMIGRATIONS - 1].version;
	struct schema_state st = {.latest = latest};

	if (!d)
		return -EINVAL;
	/* Up to date (the usual start): no lock, no DDL, so a role that
	 * may not create tables can run a migrated database. */
	rc = db_run(d, "schema version", 0, 0, pg_schema_version, &st);
	if (rc)
		return rc;
	if (st.version > latest)
		log_warn("database: schema version %d is newer than this "
			 "program's (%d)",
			 st.version, latest);
	for (i = 0; i < DB_NMIGRATIONS; i++) {
		/* Every version of ours has its row: nothing to do. Else
		 * each one is tried (pg_migrate_one skips those applied):
		 * a version below the highest applied may be missing, one
		 * merged after a later one was applied (review-35 F1). */
		if (st.known == DB_NMIGRATIONS)
			break;
		/* Adopting a big seed table may rewrite it: no bound. */
		rc = db_run_timed(d, "migration", 1, 0, 0, pg_migrate_one,
				  (void *)&db_migrations[i]);
		if (rc)
			return rc;
	}
	return 0;
}

int db_schema_version(struct db *d, int *version, int *latest)
{
	struct schema_state st;
	int rc;

	if (!d || !version || !latest)
		return -EINVAL;
	*latest = st.latest = db_migrations[DB_NMIGRATIONS - 1].version;
	rc = db_run(d, "schema version", 0, 0, pg_schema_version, &st);
	*version = rc ? 0 : st.version;
	return rc;
}
