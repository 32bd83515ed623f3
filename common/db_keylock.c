/* db_keylock.c - the reception key lock (pg_lock_key): the
 * transaction-scoped advisory lock every writer of a (bucket, key)'s
 * reception rows takes first; see db_internal.h. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "db_internal.h"

/* clang-format off */
static const char db_sql_key_lock[] =
	"SELECT pg_advisory_xact_lock($1::integer, $2::integer)";
/* clang-format on */

void pg_key_lock_obj(const char *bucket, const char *key, char obj[16])
{
	uint32_t h = 2166136261u; /* FNV-1a over bucket NUL key */
	const unsigned char *s;

	for (s = (const unsigned char *)bucket; *s; s++)
		h = (h ^ *s) * 16777619u;
	h *= 16777619u;
	for (s = (const unsigned char *)key; *s; s++)
		h = (h ^ *s) * 16777619u;
	snprintf(obj, 16, "%" PRId32, (int32_t)h);
}

int pg_lock_key(struct pg_ctx *x, const char *bucket, const char *key)
{
	const char *p[2] = {DB_KEY_LOCK_CLASS, NULL};
	char obj[16];

	pg_key_lock_obj(bucket, key, obj);
	p[1] = obj;
	return pg_exec(x, db_sql_key_lock, 2, p, NULL);
}

int pg_lock_key_then(struct pg_ctx *x, const char *bucket, const char *key,
		     const char *sql, int nparams, const char *const *params,
		     PGresult **out)
{
	const char *p[2] = {DB_KEY_LOCK_CLASS, NULL};
	struct pg_call c[2] = {{db_sql_key_lock, 2, p}, {sql, nparams, params}};
	PGresult *res[2] = {NULL, NULL};
	char obj[16];
	int rc;

	if (out)
		*out = NULL;
	pg_key_lock_obj(bucket, key, obj);
	p[1] = obj;
	rc = pg_exec_pipe(x, 2, c, res);
	if (rc)
		return rc;
	PQclear(res[0]);
	if (out)
		*out = res[1];
	else
		PQclear(res[1]);
	return 0;
}
