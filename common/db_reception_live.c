/* db_reception_live.c - the live reception rows of a listing: by prefix
 * (db_reception_live) and by keys (db_reception_live_keys), in S3's byte
 * order. Split from db_reception.c; no behaviour change. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "log.h"
#include "sbuf.h"

/* Byte order (COLLATE "C"), as S3 lists keys. A prefix is a range on the
 * index reception_audit_live_key_c (migration 3): keys >= $2 and below $2
 * followed by U+10FFFF, the greatest code point (so a key continuing the
 * prefix with U+10FFFF itself, a noncharacter, is not listed); "" is every
 * key. LIMIT NULL is no limit. */
static const char db_sql_live_list[] =
    "SELECT id, object_key, etag, size_bytes FROM reception_audit"
    " WHERE source_bucket = $1::text AND removed_at IS NULL"
    " AND object_key COLLATE \"C\" >= $2::text"
    " AND ($2::text = '' OR object_key COLLATE \"C\" <"
    " $2::text || chr(1114111))"
    " ORDER BY object_key COLLATE \"C\", id"
    " LIMIT $3::bigint";

/* $1 bucket, $2 keys (text[]): their live rows, one index probe each. */
static const char db_sql_live_keys[] =
    "SELECT id, object_key, etag, size_bytes FROM reception_audit"
    " WHERE source_bucket = $1::text AND removed_at IS NULL"
    " AND object_key COLLATE \"C\" = ANY ($2::text[])"
    " ORDER BY object_key COLLATE \"C\", id";

struct db_live_args {
	const char *bucket;
	const char *prefix;
	size_t max;
	struct reception_live *rows;
	size_t n;
};

/* Rows (id, object_key, etag, size) of res into a malloc'd array. */
static int pg_live_rows(PGresult *res, struct reception_live **out,
			size_t *n_out)
{
	struct reception_live *rows;
	size_t i, n = (size_t)PQntuples(res);

	*out = NULL;
	*n_out = 0;
	if (!n)
		return 0;
	rows = calloc(n, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		rows[i].id = strtoll(PQgetvalue(res, (int)i, 0), NULL, 10);
		rows[i].object_key = strdup(PQgetvalue(res, (int)i, 1));
		if (!rows[i].object_key)
			goto fail_oom;
		if (!PQgetisnull(res, (int)i, 2)) {
			rows[i].etag = strdup(PQgetvalue(res, (int)i, 2));
			if (!rows[i].etag)
				goto fail_oom;
		}
		rows[i].size =
		    PQgetisnull(res, (int)i, 3)
			? -1
			: strtoll(PQgetvalue(res, (int)i, 3), NULL, 10);
	}
	*out = rows;
	*n_out = n;
	return 0;

fail_oom:
	db_reception_live_free(rows, i + 1);
	return -ENOMEM;
}

static int pg_reception_live(struct pg_ctx *x, void *arg)
{
	struct db_live_args *a = arg;
	PGresult *res = NULL;
	const char *p[3];
	char limit[24];
	int rc;

	a->rows = NULL;
	a->n = 0;
	p[0] = a->bucket;
	p[1] = a->prefix;
	p[2] = NULL;
	if (a->max) {
		snprintf(limit, sizeof(limit), "%zu", a->max);
		p[2] = limit;
	}
	rc = pg_exec(x, db_sql_live_list, 3, p, &res);
	if (rc == 0)
		rc = pg_live_rows(res, &a->rows, &a->n);
	PQclear(res);
	return rc;
}

int db_reception_live(struct db *d, const char *bucket, const char *prefix,
		      size_t max, struct reception_live **rows, size_t *n)
{
	struct db_live_args a = {
	    .bucket = bucket,
	    .prefix = prefix ? prefix : "",
	    .max = max,
	};
	int rc;

	if (!rows || !n)
		return -EINVAL;
	*rows = NULL;
	*n = 0;
	if (!d || !bucket)
		return -EINVAL;
	rc = db_run(d, "reception live rows", 0, 0, pg_reception_live, &a);
	if (rc)
		return rc;
	*rows = a.rows;
	*n = a.n;
	return 0;
}

void db_reception_live_free(struct reception_live *rows, size_t n)
{
	size_t i;

	if (!rows)
		return;
	for (i = 0; i < n; i++) {
		free(rows[i].object_key);
		free(rows[i].etag);
	}
	free(rows);
}

/* Appends s to b as one element of a PostgreSQL array literal. */
static int pg_array_elem(struct sbuf *b, const char *s, int first)
{
	if (!first && sbuf_addc(b, ','))
		return -ENOMEM;
	if (sbuf_addc(b, '"'))
		return -ENOMEM;
	for (; *s; s++) {
		if ((*s == '"' || *s == '\\') && sbuf_addc(b, '\\'))
			return -ENOMEM;
		if (sbuf_addc(b, *s))
			return -ENOMEM;
	}
	return sbuf_addc(b, '"') ? -ENOMEM : 0;
}

struct db_keys_args {
	const char *bucket;
	const char *array; /* text[] literal */
	struct reception_live *rows;
	size_t n;
};

static int pg_reception_live_keys(struct pg_ctx *x, void *arg)
{
	struct db_keys_args *a = arg;
	const char *p[2] = {a->bucket, a->array};
	PGresult *res = NULL;
	int rc;

	a->rows = NULL;
	a->n = 0;
	rc = pg_exec(x, db_sql_live_keys, 2, p, &res);
	if (rc == 0)
		rc = pg_live_rows(res, &a->rows, &a->n);
	PQclear(res);
	return rc;
}

int db_reception_live_keys(struct db *d, const char *bucket,
			   const char *const *keys, size_t n_keys,
			   struct reception_live **rows, size_t *n)
{
	struct db_keys_args a = {.bucket = bucket};
	struct sbuf b = SBUF_INIT;
	size_t i;
	int rc = 0;

	if (!rows || !n)
		return -EINVAL;
	*rows = NULL;
	*n = 0;
	if (!d || !bucket || (n_keys && !keys))
		return -EINVAL;
	if (!n_keys)
		return 0;
	if (sbuf_addc(&b, '{'))
		rc = -ENOMEM;
	for (i = 0; i < n_keys && !rc; i++)
		rc = pg_array_elem(&b, keys[i], i == 0);
	if (!rc && sbuf_addc(&b, '}'))
		rc = -ENOMEM;
	if (!rc) {
		a.array = sbuf_str(&b);
		rc = db_run(d, "reception live rows of keys", 0, 0,
			    pg_reception_live_keys, &a);
	}
	sbuf_free(&b);
	if (rc)
		return rc;
	*rows = a.rows;
	*n = a.n;
	return 0;
}
