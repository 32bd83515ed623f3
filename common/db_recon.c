/* db_recon.c - see db_recon.h. */
#include "db_recon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "sbuf.h"

/* clang-format off */
#define DB_RECEIVED_COLS \
	"id, object_key, coalesce(etag, ''), coalesce(size_bytes, -1)," \
	" coalesce(sha256, ''), coalesce(xxh128, '')," \
	" coalesce(extract(epoch FROM now() - uploaded_at)::float8, -1)"

/* Byte order, as S3 lists keys; (key, id) > ($2, $3) so that several live
 * rows of one key (adopted data without the unique index) are never cut
 * in two by a page. */
static const char db_sql_live_page[] =
	"SELECT " DB_RECEIVED_COLS " FROM reception_audit"
	" WHERE source_bucket = $1::text AND removed_at IS NULL"
	" AND ($2::text IS NULL OR object_key COLLATE \"C\" > $2::text"
	"  OR (object_key COLLATE \"C\" = $2::text AND id > $3::bigint))"
	" ORDER BY object_key COLLATE \"C\", id LIMIT $4::bigint";

static const char db_sql_live_keys[] =
	"SELECT " DB_RECEIVED_COLS " FROM reception_audit"
	" WHERE source_bucket = $1::text AND removed_at IS NULL"
	" AND object_key COLLATE \"C\" = ANY ($2::text[])"
	" ORDER BY object_key COLLATE \"C\", id";

/* $1 reception ids, $2 their keys (same order), $3 the reception bucket:
 * for each, the newest storage row naming that reception, else (a row of
 * a tool that knew no reception ids, the seed's) the newest one without a
 * reception_id that names the key as its source; with the ETag its journal
 * entry recorded for the stored object ("" when it has none). */
static const char db_sql_stored_for[] =
	"SELECT DISTINCT ON (r.i) s.id, r.rid, coalesce(s.outcome, 'copied'),"
	" coalesce(s.dest_bucket, ''), coalesce(s.dest_key, ''),"
	" coalesce(s.duplicate_of, ''), coalesce(s.size_bytes, -1),"
	" coalesce(s.sha256, ''), s.reception_id IS NULL,"
	" coalesce(j.dest_etag, '')"
	" FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS r(rid, key, i)"
	" JOIN storage_audit s ON (s.reception_id = r.rid"
	"  OR (s.reception_id IS NULL AND s.source_bucket = $3::text"
	"   AND s.source_key = r.key))"
	" LEFT JOIN promotion_journal j ON j.id = s.journal_id"
	" WHERE s.removed_at IS NULL AND coalesce(s.outcome, 'copied') IN"
	"  ('copied', 'restored', 'adopted', 'duplicate', 'duplicate_content')"
	" ORDER BY r.i, s.reception_id IS NULL, s.id DESC";
/* Live storage rows that say an object is at their key of bucket $1 (a
 * seed row without dest_bucket names the storage bucket), paged as
 * db_sql_live_page: outcome copied, restored, adopted (NULL: copied) or
 * duplicate (the same bytes found at that key); a duplicate_content row
 * points at another key and has no object of its own. The ETag is the one
 * its journal entry verified ("" when unknown). */
static const char db_sql_stored_page[] =
	"SELECT s.id, s.dest_key, coalesce(j.dest_etag, ''),"
	" coalesce(s.size_bytes, -1), coalesce(s.sha256, ''),"
	" coalesce(s.xxh128, ''),"
	" coalesce(extract(epoch FROM now() - s.moved_at)::float8, -1)"
	" FROM storage_audit s LEFT JOIN promotion_journal j"
	" ON j.id = s.journal_id"
	" WHERE coalesce(s.dest_bucket, $1::text) = $1::text"
	" AND s.removed_at IS NULL AND coalesce(s.outcome, 'copied') IN"
	"  ('copied', 'restored', 'adopted', 'duplicate')"
	" AND ($2::text IS NULL OR s.dest_key COLLATE \"C\" > $2::text"
	"  OR (s.dest_key COLLATE \"C\" = $2::text AND s.id > $3::bigint))"
	" ORDER BY s.dest_key COLLATE \"C\", s.id LIMIT $4::bigint";

static const char db_sql_storage_accounted[] =
	"SELECT EXISTS (SELECT 1 FROM promotion_journal"
	"  WHERE state IN ('intent', 'stored') AND dest_bucket = $1::text"
	"  AND dest_key = $2::text)"
	" OR EXISTS (SELECT 1 FROM storage_audit"
	"  WHERE dest_key = $2::text"
	"  AND coalesce(dest_bucket, $1::text) = $1::text"
	"  AND removed_at IS NULL AND coalesce(outcome, 'copied') IN"
	"   ('copied', 'restored', 'adopted', 'duplicate'))";
/* clang-format on */

static void db_copy(char *out, size_t len, const char *s)
{
	snprintf(out, len, "%s", s);
}

void db_recon_received_free(struct db_received *rows, size_t n)
{
	size_t i;

	if (!rows)
		return;
	for (i = 0; i < n; i++)
		free(rows[i].object_key);
	free(rows);
}

static int pg_received_rows(PGresult *res, struct db_received **out,
			    size_t *n_out)
{
	size_t i, n = (size_t)PQntuples(res);
	struct db_received *rows;

	*out = NULL;
	*n_out = 0;
	if (!n)
		return 0;
	rows = calloc(n, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		int r = (int)i;

		rows[i].id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		rows[i].object_key = strdup(PQgetvalue(res, r, 1));
		if (!rows[i].object_key) {
			db_recon_received_free(rows, i);
			return -ENOMEM;
		}
		db_copy(rows[i].etag, sizeof(rows[i].etag),
			PQgetvalue(res, r, 2));
		rows[i].size = strtoll(PQgetvalue(res, r, 3), NULL, 10);
		db_copy(rows[i].sha256, sizeof(rows[i].sha256),
			PQgetvalue(res, r, 4));
		db_copy(rows[i].xxh128, sizeof(rows[i].xxh128),
			PQgetvalue(res, r, 5));
		rows[i].age_s = strtod(PQgetvalue(res, r, 6), NULL);
	}
	*out = rows;
	*n_out = n;
	return 0;
}

struct db_recon_args {
	const char *sql;
	int np;
	const char *p[4];
	struct db_received *rows;
	size_t n;
};

static int pg_recon_received(struct pg_ctx *x, void *arg)
{
	struct db_recon_args *a = arg;
	PGresult *res = NULL;
	int rc;

	a->rows = NULL;
	a->n = 0;
	rc = pg_exec(x, a->sql, a->np, a->p, &res);
	if (!rc)
		rc = pg_received_rows(res, &a->rows, &a->n);
	PQclear(res);
	return rc;
}

/* One page of sql ($1 bucket, $2/$3 after (key, id), $4 max). */
static int db_recon_page(struct db *d, const char *sql, const char *what,
			 const char *bucket, const char *after_key,
			 int64_t after_id, size_t max,
			 struct db_received **rows, size_t *n)
{
	struct db_recon_args a = {.sql = sql, .np = 4};
	char id[24], lim[24];
	int rc;

	if (!rows || !n)
		return -EINVAL;
	*rows = NULL;
	*n = 0;
	if (!d || !bucket || !max)
		return -EINVAL;
	snprintf(id, sizeof(id), "%" PRId64, after_id);
	snprintf(lim, sizeof(lim), "%zu", max);
	a.p[0] = bucket;
	a.p[1] = after_key;
	a.p[2] = id;
	a.p[3] = lim;
	rc = db_run(d, what, 0, 0, pg_recon_received, &a);
	if (rc)
		return rc;
	*rows = a.rows;
	*n = a.n;
	return 0;
}

int db_recon_live_page(struct db *d, const char *bucket, const char *after_key,
		       int64_t after_id, size_t max, struct db_received **rows,
		       size_t *n)
{
	return db_recon_page(d, db_sql_live_page, "reception live rows page",
			     bucket, after_key, after_id, max, rows, n);
}

int db_recon_stored_page(struct db *d, const char *bucket,
			 const char *after_key, int64_t after_id, size_t max,
			 struct db_received **rows, size_t *n)
{
	return db_recon_page(d, db_sql_stored_page, "storage live rows page",
			     bucket, after_key, after_id, max, rows, n);
}

struct db_accounted_args {
	const char *p[2];
	int open;
};

static int pg_storage_accounted(struct pg_ctx *x, void *arg)
{
	struct db_accounted_args *a = arg;
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_storage_accounted, 2, a->p, &res);
	if (!rc)
		a->open =
		    PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	return rc;
}

int db_recon_storage_accounted(struct db *d, const char *bucket,
			       const char *key)
{
	struct db_accounted_args a = {.p = {bucket, key}};
	int rc;

	if (!d || !bucket || !key)
		return -EINVAL;
	rc = db_run(d, "storage key accounted for", 0, 0, pg_storage_accounted,
		    &a);
	return rc ? rc : a.open;
}

/* Appends s to b as one element of a PostgreSQL array literal. */
static int db_array_elem(struct sbuf *b, const char *s, int first)
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

int db_recon_live_keys(struct db *d, const char *bucket,
		       const char *const *keys, size_t n_keys,
		       struct db_received **rows, size_t *n)
{
	struct db_recon_args a = {.sql = db_sql_live_keys, .np = 2};
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
		rc = db_array_elem(&b, keys[i], i == 0);
	if (!rc && sbuf_addc(&b, '}'))
		rc = -ENOMEM;
	if (!rc) {
		a.p[0] = bucket;
		a.p[1] = sbuf_str(&b);
		rc = db_run(d, "reception live rows of keys (full)", 0, 0,
			    pg_recon_received, &a);
	}
	sbuf_free(&b);
	if (rc)
		return rc;
	*rows = a.rows;
	*n = a.n;
	return 0;
}

struct db_stored_args {
	const char *ids;
	const char *keys;
	const char *bucket;
	struct db_stored_row *rows;
	size_t n;
};

static int pg_recon_stored(struct pg_ctx *x, void *arg)
{
	struct db_stored_args *a = arg;
	const char *p[3] = {a->ids, a->keys, a->bucket};
	PGresult *res = NULL;
	size_t i, n;
	int rc;

	free(a->rows);
	a->rows = NULL;
	a->n = 0;
	rc = pg_exec(x, db_sql_stored_for, 3, p, &res);
	if (rc)
		goto out;
	n = (size_t)PQntuples(res);
	if (!n)
		goto out;
	a->rows = calloc(n, sizeof(*a->rows));
	if (!a->rows) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct db_stored_row *s = &a->rows[i];
		int r = (int)i;

		s->id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		s->reception_id = strtoll(PQgetvalue(res, r, 1), NULL, 10);
		db_copy(s->outcome, sizeof(s->outcome), PQgetvalue(res, r, 2));
		db_copy(s->dest_bucket, sizeof(s->dest_bucket),
			PQgetvalue(res, r, 3));
		db_copy(s->dest_key, sizeof(s->dest_key),
			PQgetvalue(res, r, 4));
		db_copy(s->duplicate_of, sizeof(s->duplicate_of),
			PQgetvalue(res, r, 5));
		s->size = strtoll(PQgetvalue(res, r, 6), NULL, 10);
		db_copy(s->sha256, sizeof(s->sha256), PQgetvalue(res, r, 7));
		s->by_key = PQgetvalue(res, r, 8)[0] == 't';
		db_copy(s->dest_etag, sizeof(s->dest_etag),
			PQgetvalue(res, r, 9));
	}
	a->n = n;
out:
	PQclear(res);
	return rc;
}

int db_recon_stored_for(struct db *d, const char *bucket,
			const struct db_received *recv, size_t n_recv,
			struct db_stored_row **rows, size_t *n)
{
	struct db_stored_args a = {.bucket = bucket};
	struct sbuf ids = SBUF_INIT, keys = SBUF_INIT;
	size_t i;
	int rc = 0;

	if (!rows || !n)
		return -EINVAL;
	*rows = NULL;
	*n = 0;
	if (!d || !bucket || (n_recv && !recv))
		return -EINVAL;
	if (!n_recv)
		return 0;
	if (sbuf_addc(&ids, '{') || sbuf_addc(&keys, '{'))
		rc = -ENOMEM;
	for (i = 0; i < n_recv && !rc; i++) {
		if (sbuf_addf(&ids, "%s%" PRId64, i ? "," : "", recv[i].id))
			rc = -ENOMEM;
		else
			rc = db_array_elem(&keys, recv[i].object_key, i == 0);
	}
	if (!rc && (sbuf_addc(&ids, '}') || sbuf_addc(&keys, '}')))
		rc = -ENOMEM;
	if (!rc) {
		a.ids = sbuf_str(&ids);
		a.keys = sbuf_str(&keys);
		rc = db_run(d, "storage rows of receptions", 0, 0,
			    pg_recon_stored, &a);
	}
	sbuf_free(&ids);
	sbuf_free(&keys);
	if (rc) {
		free(a.rows);
		return rc;
	}
	*rows = a.rows;
	*n = a.n;
	return 0;
}
