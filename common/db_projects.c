/* db_projects.c - projects_registry and the duplicate_content rows the
 * projects/ view shows; see db_projects.h.
 *
 * Creation is serialised per prefix by a transaction-scoped advisory lock
 * (class "PROJ"), and the unique index on prefix (migration 1) refuses a
 * second row from a writer that skips the lock. Deletion and renaming are
 * policed by the trigger custodyfs_projects_guard: a project that ever
 * stored a file cannot be deleted, and only name may be updated. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "db_projects.h"
#include "log.h"

/* First half of the (int, int) advisory lock per project prefix: "PROJ". */
#define DB_PROJECT_LOCK_CLASS "1347571530"

/* clang-format off */
static const char db_sql_projects_list[] =
	"SELECT id, prefix, coalesce(name, ''),"
	" extract(epoch FROM created_at)::bigint, created_by"
	" FROM projects_registry WHERE prefix IS NOT NULL"
	" ORDER BY prefix COLLATE \"C\", id";

static const char db_sql_project_lock[] =
	"SELECT pg_advisory_xact_lock(" DB_PROJECT_LOCK_CLASS "::integer,"
	" hashtext($1::text))";

static const char db_sql_project_insert[] =
	"INSERT INTO projects_registry (prefix, name, created_at, created_by)"
	" SELECT $1::text, $2::text, now(), $3::text"
	" WHERE NOT EXISTS (SELECT 1 FROM projects_registry"
	"  WHERE prefix = $1::text)"
	" RETURNING id";

static const char db_sql_project_rename[] =
	"UPDATE projects_registry SET name = $2::text WHERE prefix = $1::text";

static const char db_sql_project_delete[] =
	"DELETE FROM projects_registry WHERE prefix = $1::text";

/* The direct children of $2 made by the rows under it: one row per child
 * name, a link (its newest row) or, when rows lie deeper, a directory
 * ("$2<child>/", no target; it wins over a link of the same name). Keys in
 * byte order, as S3 lists: >= $2 and below $2 followed by U+10FFFF (see
 * db_reception.c). LIMIT NULL is no limit. */
static const char db_sql_links[] =
	"SELECT CASE WHEN deeper THEN $2::text || child || '/'"
	"  ELSE dest_key END, CASE WHEN deeper THEN NULL ELSE duplicate_of END"
	" FROM (SELECT DISTINCT ON (child COLLATE \"C\") child, deeper,"
	"  dest_key, duplicate_of"
	"  FROM (SELECT split_part(substr(dest_key, length($2::text) + 1),"
	"    '/', 1) AS child,"
	"   strpos(substr(dest_key, length($2::text) + 1), '/') > 0 AS deeper,"
	"   dest_key, duplicate_of, id"
	"   FROM storage_audit"
	"   WHERE outcome = 'duplicate_content' AND removed_at IS NULL"
	"   AND (dest_bucket = $1::text OR dest_bucket IS NULL)"
	"   AND duplicate_of IS NOT NULL"
	"   AND dest_key COLLATE \"C\" >= $2::text"
	"   AND dest_key COLLATE \"C\" < $2::text || chr(1114111)) r"
	"  WHERE child <> ''"
	"  ORDER BY child COLLATE \"C\", deeper DESC, id DESC) c"
	" ORDER BY child COLLATE \"C\""
	" LIMIT $3::bigint";

static const char db_sql_link_get[] =
	"SELECT duplicate_of FROM storage_audit"
	" WHERE outcome = 'duplicate_content' AND removed_at IS NULL"
	" AND (dest_bucket = $1::text OR dest_bucket IS NULL)"
	" AND duplicate_of IS NOT NULL AND dest_key = $2::text"
	" ORDER BY id DESC LIMIT 1";
/* clang-format on */

int db_project_prefix_valid(const char *prefix)
{
	size_t n;

	if (!prefix)
		return 0;
	n = strlen(prefix);
	if (n < 1 || n > DB_PROJECT_PREFIX_MAX)
		return 0;
	if (!((prefix[0] >= 'a' && prefix[0] <= 'z') ||
	      (prefix[0] >= '0' && prefix[0] <= '9')))
		return 0;
	for (; *prefix; prefix++) {
		char c = *prefix;

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

void db_projects_free(struct project_row *rows, size_t n)
{
	size_t i;

	if (!rows)
		return;
	for (i = 0; i < n; i++) {
		free(rows[i].prefix);
		free(rows[i].name);
		free(rows[i].created_by);
	}
	free(rows);
}

struct db_projects_args {
	struct project_row *rows;
	size_t n, skipped;
};

static int pg_projects_list(struct pg_ctx *x, void *arg)
{
	struct db_projects_args *a = arg;
	struct project_row *r;
	PGresult *res = NULL;
	int rc, i, nt;

	db_projects_free(a->rows, a->n);
	a->rows = NULL;
	a->n = a->skipped = 0;
	rc = pg_exec(x, db_sql_projects_list, 0, NULL, &res);
	if (rc)
		return rc;
	nt = PQntuples(res);
	a->rows = calloc(nt ? (size_t)nt : 1, sizeof(*a->rows));
	if (!a->rows) {
		PQclear(res);
		return -ENOMEM;
	}
	for (i = 0; i < nt; i++) {
		const char *prefix = PQgetvalue(res, i, 1);

		if (!db_project_prefix_valid(prefix)) {
			a->skipped++;
			continue;
		}
		r = &a->rows[a->n++];
		r->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		r->prefix = strdup(prefix);
		r->name = strdup(PQgetvalue(res, i, 2));
		r->created_at =
		    PQgetisnull(res, i, 3)
			? 0
			: (time_t)strtoll(PQgetvalue(res, i, 3), NULL, 10);
		if (!PQgetisnull(res, i, 4))
			r->created_by = strdup(PQgetvalue(res, i, 4));
		if (!r->prefix || !r->name ||
		    (!PQgetisnull(res, i, 4) && !r->created_by)) {
			PQclear(res);
			return -ENOMEM;
		}
	}
	PQclear(res);
	return 0;
}

int db_projects_list(struct db *d, struct project_row **rows, size_t *n,
		     size_t *skipped)
{
	struct db_projects_args a = {0};
	int rc;

	if (!d || !rows || !n)
		return -EINVAL;
	*rows = NULL;
	*n = 0;
	rc = db_run(d, "projects list", 0, 0, pg_projects_list, &a);
	if (rc) {
		db_projects_free(a.rows, a.n);
		return rc;
	}
	*rows = a.rows;
	*n = a.n;
	if (skipped)
		*skipped = a.skipped;
	return 0;
}

struct db_create_args {
	const char *prefix, *name;
	char by[512];
	int64_t id;
};

static int pg_project_create(struct pg_ctx *x, void *arg)
{
	struct db_create_args *a = arg;
	const char *p[3] = {a->prefix, a->name, a->by};
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_project_lock, 1, p, NULL);
	if (rc)
		return rc;
	rc = pg_exec(x, db_sql_project_insert, 3, p, &res);
	if (rc)
		return rc;
	if (PQntuples(res) != 1)
		rc = -EEXIST;
	else
		a->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rc;
}

int db_project_create(struct db *d, const char *prefix, const char *name,
		      const struct actor *who, int64_t *id_out)
{
	struct db_create_args a = {.prefix = prefix};
	int rc;

	if (!d || !prefix || !who)
		return -EINVAL;
	a.name = name ? name : prefix;
	actor_format(who, a.by, sizeof(a.by));
	rc = db_run(d, "project create", 1, 0, pg_project_create, &a);
	if (rc == 0 && id_out)
		*id_out = a.id;
	return rc;
}

struct db_name_args {
	const char *prefix, *name;
	int found;
};

static int pg_project_set_name(struct pg_ctx *x, void *arg)
{
	struct db_name_args *a = arg;
	const char *p[2] = {a->prefix, a->name};
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_project_rename, 2, p, &res);
	if (rc)
		return rc;
	a->found = atoi(PQcmdTuples(res)) > 0;
	PQclear(res);
	return a->found ? 0 : -ENOENT;
}

int db_project_set_name(struct db *d, const char *prefix, const char *name)
{
	struct db_name_args a = {.prefix = prefix, .name = name};

	if (!d || !prefix || !name)
		return -EINVAL;
	return db_run(d, "project name", 1, 0, pg_project_set_name, &a);
}

static int pg_project_delete(struct pg_ctx *x, void *arg)
{
	const char *p[1] = {arg};
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_project_lock, 1, p, NULL);
	if (rc)
		return rc;
	rc = pg_exec(x, db_sql_project_delete, 1, p, &res);
	if (rc)
		return rc;
	rc = atoi(PQcmdTuples(res)) > 0 ? 0 : -ENOENT;
	PQclear(res);
	return rc;
}

int db_project_delete(struct db *d, const char *prefix)
{
	if (!d || !prefix)
		return -EINVAL;
	return db_run(d, "project delete", 1, 0, pg_project_delete,
		      (void *)prefix);
}

void db_project_links_free(struct project_link *rows, size_t n)
{
	size_t i;

	if (!rows)
		return;
	for (i = 0; i < n; i++) {
		free(rows[i].key);
		free(rows[i].duplicate_of);
	}
	free(rows);
}

struct db_links_args {
	const char *bucket, *prefix;
	size_t max;
	struct project_link *rows;
	size_t n;
};

static int pg_project_links(struct pg_ctx *x, void *arg)
{
	struct db_links_args *a = arg;
	const char *p[3] = {a->bucket, a->prefix, NULL};
	PGresult *res = NULL;
	char limit[24];
	int rc, i, nt;

	db_project_links_free(a->rows, a->n);
	a->rows = NULL;
	a->n = 0;
	if (a->max) {
		snprintf(limit, sizeof(limit), "%zu", a->max);
		p[2] = limit;
	}
	rc = pg_exec(x, db_sql_links, 3, p, &res);
	if (rc)
		return rc;
	nt = PQntuples(res);
	a->rows = calloc(nt ? (size_t)nt : 1, sizeof(*a->rows));
	if (!a->rows) {
		PQclear(res);
		return -ENOMEM;
	}
	for (i = 0; i < nt; i++, a->n++) {
		a->rows[i].key = strdup(PQgetvalue(res, i, 0));
		if (!PQgetisnull(res, i, 1))
			a->rows[i].duplicate_of = strdup(PQgetvalue(res, i, 1));
		if (!a->rows[i].key ||
		    (!PQgetisnull(res, i, 1) && !a->rows[i].duplicate_of)) {
			a->n++;
			PQclear(res);
			return -ENOMEM;
		}
	}
	PQclear(res);
	return 0;
}

int db_project_links(struct db *d, const char *bucket, const char *key_prefix,
		     size_t max, struct project_link **rows, size_t *n)
{
	struct db_links_args a = {
	    .bucket = bucket, .prefix = key_prefix, .max = max};
	int rc;

	if (!d || !bucket || !key_prefix || !*key_prefix || !rows || !n)
		return -EINVAL;
	*rows = NULL;
	*n = 0;
	rc = db_run(d, "project links", 0, 0, pg_project_links, &a);
	if (rc) {
		db_project_links_free(a.rows, a.n);
		return rc;
	}
	*rows = a.rows;
	*n = a.n;
	return 0;
}

struct db_link_args {
	const char *bucket, *key;
	char *target;
};

static int pg_project_link_get(struct pg_ctx *x, void *arg)
{
	struct db_link_args *a = arg;
	const char *p[2] = {a->bucket, a->key};
	PGresult *res = NULL;
	int rc;

	free(a->target);
	a->target = NULL;
	rc = pg_exec(x, db_sql_link_get, 2, p, &res);
	if (rc)
		return rc;
	if (PQntuples(res) < 1) {
		rc = -ENOENT;
	} else {
		a->target = strdup(PQgetvalue(res, 0, 0));
		rc = a->target ? 0 : -ENOMEM;
	}
	PQclear(res);
	return rc;
}

int db_project_link_get(struct db *d, const char *bucket, const char *key,
			char **target)
{
	struct db_link_args a = {.bucket = bucket, .key = key};
	int rc;

	if (!d || !bucket || !key || !target)
		return -EINVAL;
	*target = NULL;
	rc = db_run(d, "project link", 0, 0, pg_project_link_get, &a);
	if (rc) {
		free(a.target);
		return rc;
	}
	*target = a.target;
	return 0;
}
