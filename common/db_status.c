/* db_status.c - see db_status.h. */
#include "db_status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "log.h"

/* clang-format off */
/* Does owner j.owner live: its session lock is held (granted) in this
 * database now. The same lock db_storage.c's fence asks for. */
#define DB_OWNER_ALIVE \
	"EXISTS (SELECT 1 FROM pg_catalog.pg_locks l" \
	" WHERE l.locktype = 'advisory'" \
	" AND l.database = (SELECT oid FROM pg_catalog.pg_database" \
	"  WHERE datname = pg_catalog.current_database())" \
	" AND l.classid = " DB_OWNER_CLASS "::bigint::oid" \
	" AND l.objid = j.owner::bigint::oid AND l.objsubid = 2" \
	" AND l.granted)"

static const char db_sql_counts_received[] =
	"SELECT count(*) FILTER (WHERE removed_at IS NULL), count(*)"
	" FROM reception_audit WHERE source_bucket = $1::text";

static const char db_sql_counts_stored[] =
	"SELECT coalesce(outcome, ''), count(*) FROM storage_audit"
	" WHERE coalesce(dest_bucket, $1::text) = $1::text"
	" GROUP BY 1 ORDER BY 1";

static const char db_sql_counts_projects[] =
	"SELECT count(*) FROM projects_registry";

static const char db_sql_counts_journal[] =
	"SELECT count(*) FILTER (WHERE state IN ('intent', 'stored')),"
	" count(*) FILTER (WHERE state IN ('intent', 'stored') AND "
	DB_OWNER_ALIVE "),"
	" count(*) FILTER (WHERE state = 'failed')"
	" FROM promotion_journal j";

#define DB_INFO_COLS \
	"j.id, j.state, j.outcome, j.owner, " DB_OWNER_ALIVE "," \
	" pg_catalog.to_char(j.created_at AT TIME ZONE 'UTC'," \
	"  'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')," \
	" j.source_bucket, j.source_key, j.dest_bucket, j.dest_key," \
	" coalesce(j.error, '')"

static const char db_sql_infos_open[] =
	"SELECT " DB_INFO_COLS " FROM promotion_journal j"
	" WHERE j.state IN ('intent', 'stored') ORDER BY j.id"
	" LIMIT $1::bigint";

static const char db_sql_infos_ids[] =
	"SELECT " DB_INFO_COLS " FROM promotion_journal j"
	" WHERE j.id = ANY ($1::bigint[]) ORDER BY j.id";
/* clang-format on */

static int64_t dbs_int64(PGresult *res, int row, int col)
{
	return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

struct db_counts_arg {
	const char *reception_bucket;
	const char *storage_bucket;
	struct db_counts *c;
};

static int pg_counts(struct pg_ctx *x, void *arg)
{
	struct db_counts_arg *a = arg;
	struct db_counts *c = a->c;
	PGresult *res = NULL;
	const char *v[1];
	int rc, i;

	memset(c, 0, sizeof(*c));
	rc = pg_exec(x,
		     "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, "
		     "READ ONLY",
		     0, NULL, NULL);
	if (rc)
		return rc;
	v[0] = a->reception_bucket;
	rc = pg_exec(x, db_sql_counts_received, 1, v, &res);
	if (rc)
		goto out;
	c->received_live = dbs_int64(res, 0, 0);
	c->received_rows = dbs_int64(res, 0, 1);
	PQclear(res);
	v[0] = a->storage_bucket;
	rc = pg_exec(x, db_sql_counts_stored, 1, v, &res);
	if (rc)
		goto out;
	for (i = 0; i < PQntuples(res); i++) {
		int64_t n = dbs_int64(res, i, 1);

		c->stored_rows += n;
		if (c->n_outcomes >= DB_STATUS_OUTCOMES)
			continue; /* (counted in stored_rows) */
		snprintf(c->by_outcome[c->n_outcomes].outcome,
			 sizeof(c->by_outcome[0].outcome), "%s",
			 PQgetvalue(res, i, 0));
		c->by_outcome[c->n_outcomes++].rows = n;
	}
	PQclear(res);
	rc = pg_exec(x, db_sql_counts_projects, 0, NULL, &res);
	if (rc)
		goto out;
	c->projects = dbs_int64(res, 0, 0);
	PQclear(res);
	rc = pg_exec(x, db_sql_counts_journal, 0, NULL, &res);
	if (rc)
		goto out;
	c->journal_open = dbs_int64(res, 0, 0);
	c->journal_alive = dbs_int64(res, 0, 1);
	c->journal_failed = dbs_int64(res, 0, 2);
out:
	PQclear(res);
	return rc;
}

int db_status_counts(struct db *d, const char *reception_bucket,
		     const char *storage_bucket, struct db_counts *out)
{
	struct db_counts_arg a = {reception_bucket, storage_bucket, out};

	if (!d || !reception_bucket || !storage_bucket || !out)
		return -EINVAL;
	return db_run(d, "status counts", 1, 0, pg_counts, &a);
}

struct db_infos_arg {
	const int64_t *ids;
	size_t n_ids;
	size_t max;
	struct db_journal_info *e;
	size_t n;
};

static void db_info_clear(struct db_journal_info *e)
{
	free(e->source_bucket);
	free(e->source_key);
	free(e->dest_bucket);
	free(e->dest_key);
	free(e->error);
	memset(e, 0, sizeof(*e));
}

void db_journal_infos_free(struct db_journal_info *e, size_t n)
{
	size_t i;

	for (i = 0; e && i < n; i++)
		db_info_clear(&e[i]);
	free(e);
}

/* "{1,2,3}": ids as a bigint[] parameter. NULL on ENOMEM. */
static char *db_id_array(const int64_t *ids, size_t n)
{
	char *s = malloc(n * 21 + 3), *p;
	size_t i;

	if (!s)
		return NULL;
	p = s;
	*p++ = '{';
	for (i = 0; i < n; i++)
		p += sprintf(p, "%s%lld", i ? "," : "", (long long)ids[i]);
	*p++ = '}';
	*p = '\0';
	return s;
}

static int pg_infos(struct pg_ctx *x, void *arg)
{
	struct db_infos_arg *a = arg;
	PGresult *res = NULL;
	char lim[24], *arr = NULL;
	const char *v[1];
	int rc, i, nt;

	db_journal_infos_free(a->e, a->n); /* a retried transaction */
	a->e = NULL;
	a->n = 0;
	if (a->ids) {
		arr = db_id_array(a->ids, a->n_ids);
		if (!arr)
			return -ENOMEM;
		v[0] = arr;
		rc = pg_exec(x, db_sql_infos_ids, 1, v, &res);
	} else {
		snprintf(lim, sizeof(lim), "%lld",
			 a->max ? (long long)a->max : (long long)INT64_MAX);
		v[0] = lim;
		rc = pg_exec(x, db_sql_infos_open, 1, v, &res);
	}
	free(arr);
	if (rc)
		return rc;
	nt = PQntuples(res);
	a->e = calloc((size_t)nt + 1, sizeof(*a->e));
	if (!a->e) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nt; i++) {
		struct db_journal_info *e = &a->e[i];

		e->id = dbs_int64(res, i, 0);
		snprintf(e->state, sizeof(e->state), "%s",
			 PQgetvalue(res, i, 1));
		snprintf(e->outcome, sizeof(e->outcome), "%s",
			 PQgetvalue(res, i, 2));
		e->owner = atoi(PQgetvalue(res, i, 3));
		e->owner_alive = !strcmp(PQgetvalue(res, i, 4), "t");
		snprintf(e->created, sizeof(e->created), "%s",
			 PQgetvalue(res, i, 5));
		e->source_bucket = strdup(PQgetvalue(res, i, 6));
		e->source_key = strdup(PQgetvalue(res, i, 7));
		e->dest_bucket = strdup(PQgetvalue(res, i, 8));
		e->dest_key = strdup(PQgetvalue(res, i, 9));
		e->error = strdup(PQgetvalue(res, i, 10));
		a->n++; /* (freed whole on failure: counted first) */
		if (!e->source_bucket || !e->source_key || !e->dest_bucket ||
		    !e->dest_key || !e->error) {
			rc = -ENOMEM;
			goto out;
		}
	}
out:
	PQclear(res);
	return rc;
}

int db_journal_infos(struct db *d, const int64_t *ids, size_t n_ids, size_t max,
		     struct db_journal_info **out, size_t *n)
{
	struct db_infos_arg a = {ids, n_ids, max, NULL, 0};
	int rc;

	if (!d || !out || !n || (ids && !n_ids))
		return -EINVAL;
	*out = NULL;
	*n = 0;
	rc = db_run(d, "journal entries", 0, 0, pg_infos, &a);
	if (rc) {
		db_journal_infos_free(a.e, a.n);
		return rc;
	}
	*out = a.e;
	*n = a.n;
	return 0;
}
