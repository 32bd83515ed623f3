/* db_attrs.c - file_attrs and file_attr_changes (migration 5); see
 * db_attrs.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_attrs.h"
#include "db_internal.h"
#include "log.h"

/* clang-format off */
/* $1 bucket, $2 key, $3 reset, $4..$7 set mode/owner/atime/mtime,
 * $8 mode, $9 uid, $10 gid, $11 atime_ns, $12 mtime_ns, $13 by. */
static const char db_sql_attrs_upsert[] =
	"INSERT INTO file_attrs AS f (bucket, object_key, mode, uid, gid,"
	" atime_ns, mtime_ns, ctime, updated_by)"
	" VALUES ($1::text, $2::text,"
	" CASE WHEN $4::boolean THEN $8::integer END,"
	" CASE WHEN $5::boolean THEN $9::bigint END,"
	" CASE WHEN $5::boolean THEN $10::bigint END,"
	" CASE WHEN $6::boolean THEN $11::bigint END,"
	" CASE WHEN $7::boolean THEN $12::bigint END,"
	" now(), $13::text)"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = CASE WHEN $4::boolean THEN $8::integer"
	"  WHEN $3::boolean THEN NULL ELSE f.mode END,"
	" uid = CASE WHEN $5::boolean THEN $9::bigint"
	"  WHEN $3::boolean THEN NULL ELSE f.uid END,"
	" gid = CASE WHEN $5::boolean THEN $10::bigint"
	"  WHEN $3::boolean THEN NULL ELSE f.gid END,"
	" atime_ns = CASE WHEN $6::boolean THEN $11::bigint"
	"  WHEN $3::boolean THEN NULL ELSE f.atime_ns END,"
	" mtime_ns = CASE WHEN $7::boolean THEN $12::bigint"
	"  WHEN $3::boolean THEN NULL ELSE f.mtime_ns END,"
	" ctime = greatest(now(), f.ctime), updated_by = $13::text"
	" RETURNING (extract(epoch FROM ctime) * 1000000)::bigint * 1000";

/* The same parameters as the upsert ($3 is the op), plus who. */
static const char db_sql_attrs_log[] =
	"INSERT INTO file_attr_changes (bucket, object_key, op, mode, uid,"
	" gid, atime_ns, mtime_ns, changed_by, changed_uid, changed_user,"
	" changed_host)"
	" VALUES ($1::text, $2::text, $3::text,"
	" CASE WHEN $4::boolean THEN $8::integer END,"
	" CASE WHEN $5::boolean THEN $9::bigint END,"
	" CASE WHEN $5::boolean THEN $10::bigint END,"
	" CASE WHEN $6::boolean THEN $11::bigint END,"
	" CASE WHEN $7::boolean THEN $12::bigint END,"
	" $13::text, $14::bigint, $15::text, $16::text)";

/* Keys dir + name, name without '/': a range in byte order (dir "a/b/"
 * is [a/b/, a/b0), '0' following '/'), then the children only. */
static const char db_sql_attrs_list_dir[] =
	"SELECT object_key, mode, uid, gid, atime_ns, mtime_ns,"
	" (extract(epoch FROM ctime) * 1000000)::bigint * 1000"
	" FROM file_attrs WHERE bucket = $1::text"
	" AND ($2::text = '' OR (object_key COLLATE \"C\" >= $2::text"
	" AND object_key COLLATE \"C\" < $3::text))"
	" AND strpos(substr(object_key, length($2::text) + 1), '/') = 0";

/* $1 bucket, $2 gid. Files received through a mount (live row, origin
 * 'mount', received_uid known) without a file_attrs row: a database from
 * before migration 5. */
static const char db_sql_attrs_backfill[] =
	"INSERT INTO file_attrs (bucket, object_key, uid, gid, ctime,"
	" updated_by)"
	" SELECT r.source_bucket, r.object_key, r.received_uid, $2::bigint,"
	" r.uploaded_at, 'backfill from reception_audit'"
	" FROM reception_audit r WHERE r.source_bucket = $1::text"
	" AND r.removed_at IS NULL AND r.origin = 'mount'"
	" AND r.received_uid IS NOT NULL"
	" AND NOT EXISTS (SELECT 1 FROM file_attrs f"
	"  WHERE f.bucket = r.source_bucket AND f.object_key = r.object_key)"
	" ON CONFLICT (bucket, object_key) DO NOTHING";

/* $1 bucket, $2 key: that key's row only. */
static const char db_sql_attrs_get[] =
	"SELECT object_key, mode, uid, gid, atime_ns, mtime_ns,"
	" (extract(epoch FROM ctime) * 1000000)::bigint * 1000"
	" FROM file_attrs WHERE bucket = $1::text AND object_key = $2::text";

/* $1 bucket, $2 key, $3 tree, $4 key + "/", $5 key + "0". */
static const char db_sql_attrs_drop[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND (object_key = $2::text OR ($3::boolean"
	" AND object_key COLLATE \"C\" >= $4::text"
	" AND object_key COLLATE \"C\" < $5::text))";

/* $1 bucket, $2 key, $3 the replacing upload's time (epoch seconds). */
static const char db_sql_attrs_drop_replaced[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text"
	" AND ctime < to_timestamp($3::bigint)";

/* $1 bucket, $2 from, $3 to, $4 tree, $5 from + "/", $6 from + "0". */
static const char db_sql_attrs_move[] =
	"UPDATE file_attrs SET object_key = CASE WHEN object_key = $2::text"
	" THEN $3::text ELSE $3::text || substr(object_key,"
	" length($2::text) + 1) END"
	" WHERE bucket = $1::text AND (object_key = $2::text OR ($4::boolean"
	" AND object_key COLLATE \"C\" >= $5::text"
	" AND object_key COLLATE \"C\" < $6::text))";
/* $1 bucket, $2 to; then $1 bucket, $2 from, $3 to: to's row becomes a
 * copy of from's (none when from has none); the copy's ctime is now (a
 * rename is a status change). */
static const char db_sql_attrs_copy_del[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text";
static const char db_sql_attrs_copy_ins[] =
	"INSERT INTO file_attrs (bucket, object_key, mode, uid, gid, atime_ns,"
	" mtime_ns, ctime, updated_by)"
	" SELECT bucket, $3::text, mode, uid, gid, atime_ns, mtime_ns, now(),"
	" updated_by FROM file_attrs"
	" WHERE bucket = $1::text AND object_key = $2::text";
/* clang-format on */

struct attrs_set_args {
	const char *bucket, *key, *op;
	const struct db_attrs *a;
	const struct actor *who;
	int64_t ctime_ns;
};

static int pg_attrs_set(struct pg_ctx *x, void *arg)
{
	struct attrs_set_args *s = arg;
	const struct db_attrs *a = s->a;
	char mode[16], uid[24], gid[24], at[24], mt[24], cuid[24], by[400];
	const char *p[16];
	PGresult *res = NULL;
	int rc;

	snprintf(mode, sizeof(mode), "%u", (unsigned)(a->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, a->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, a->gid);
	snprintf(at, sizeof(at), "%" PRId64, a->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, a->mtime_ns);
	actor_format(s->who, by, sizeof(by));
	p[0] = s->bucket;
	p[1] = s->key;
	p[2] = a->what & DB_ATTR_RESET ? "t" : "f";
	p[3] = a->what & DB_ATTR_MODE ? "t" : "f";
	p[4] = a->what & DB_ATTR_OWNER ? "t" : "f";
	p[5] = a->what & DB_ATTR_ATIME ? "t" : "f";
	p[6] = a->what & DB_ATTR_MTIME ? "t" : "f";
	p[7] = mode;
	p[8] = uid;
	p[9] = gid;
	p[10] = at;
	p[11] = mt;
	p[12] = s->who ? by : NULL;
	rc = pg_exec(x, db_sql_attrs_upsert, 13, p, &res);
	if (rc)
		goto out;
	s->ctime_ns =
	    PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	if (!s->op)
		goto out;
	p[2] = s->op;
	if (s->who) {
		snprintf(cuid, sizeof(cuid), "%lu", (unsigned long)s->who->uid);
		p[13] = cuid;
		p[14] = s->who->user;
		p[15] = s->who->host;
	} else {
		p[13] = p[14] = p[15] = NULL;
	}
	rc = pg_exec(x, db_sql_attrs_log, 16, p, NULL);
out:
	PQclear(res);
	return rc;
}

int db_attrs_set(struct db *d, const char *bucket, const char *key,
		 const struct db_attrs *a, const char *op,
		 const struct actor *who, int64_t *ctime_ns)
{
	struct attrs_set_args s = {
	    .bucket = bucket, .key = key, .op = op, .a = a, .who = who};
	int rc;

	if (!d || !bucket || !key || !a)
		return -EINVAL;
	rc = db_run(d, "set file attributes", 1, 1, pg_attrs_set, &s);
	if (rc == 0 && ctime_ns)
		*ctime_ns = s.ctime_ns;
	return rc;
}

struct attrs_list_args {
	const char *bucket, *dir;
	const char *key; /* set: that key's row only (dir unused) */
	struct db_attrs *rows;
	size_t n;
};

/* dir with its last byte incremented: the end of its byte range. */
static char *range_end(const char *dir)
{
	size_t l = strlen(dir);
	char *e = strdup(dir);

	if (e && l)
		e[l - 1]++; /* '/' becomes '0' */
	return e;
}

static int pg_attrs_list_dir(struct pg_ctx *x, void *arg)
{
	struct attrs_list_args *l = arg;
	PGresult *res = NULL;
	const char *p[3];
	char *end = range_end(l->key ? "" : l->dir);
	int rc, i, nt;

	l->rows = NULL;
	l->n = 0;
	if (!end)
		return -ENOMEM;
	p[0] = l->bucket;
	p[1] = l->key ? l->key : l->dir;
	p[2] = end;
	if (l->key)
		rc = pg_exec(x, db_sql_attrs_get, 2, p, &res);
	else
		rc = pg_exec(x, db_sql_attrs_list_dir, 3, p, &res);
	if (rc)
		goto out;
	nt = PQntuples(res);
	l->rows = nt ? calloc((size_t)nt, sizeof(*l->rows)) : NULL;
	if (nt && !l->rows) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nt; i++) {
		struct db_attrs *r = &l->rows[l->n];

		r->key = strdup(PQgetvalue(res, i, 0));
		if (!r->key) {
			rc = -ENOMEM;
			goto out;
		}
		l->n++;
		if (!PQgetisnull(res, i, 1)) {
			r->what |= DB_ATTR_MODE;
			r->mode =
			    (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
		}
		if (!PQgetisnull(res, i, 2) && !PQgetisnull(res, i, 3)) {
			r->what |= DB_ATTR_OWNER;
			r->uid = strtoll(PQgetvalue(res, i, 2), NULL, 10);
			r->gid = strtoll(PQgetvalue(res, i, 3), NULL, 10);
		}
		if (!PQgetisnull(res, i, 4)) {
			r->what |= DB_ATTR_ATIME;
			r->atime_ns = strtoll(PQgetvalue(res, i, 4), NULL, 10);
		}
		if (!PQgetisnull(res, i, 5)) {
			r->what |= DB_ATTR_MTIME;
			r->mtime_ns = strtoll(PQgetvalue(res, i, 5), NULL, 10);
		}
		r->ctime_ns = strtoll(PQgetvalue(res, i, 6), NULL, 10);
	}
out:
	if (rc) {
		db_attrs_free(l->rows, l->n);
		l->rows = NULL;
		l->n = 0;
	}
	PQclear(res);
	free(end);
	return rc;
}

int db_attrs_list_dir(struct db *d, const char *bucket, const char *dir,
		      struct db_attrs **rows, size_t *n)
{
	struct attrs_list_args l = {.bucket = bucket, .dir = dir};
	int rc;

	*rows = NULL;
	*n = 0;
	if (!d || !bucket || !dir)
		return -EINVAL;
	rc = db_run(d, "list file attributes", 0, 0, pg_attrs_list_dir, &l);
	if (rc == 0) {
		*rows = l.rows;
		*n = l.n;
	}
	return rc;
}

int db_attrs_get(struct db *d, const char *bucket, const char *key,
		 struct db_attrs *row, int *found)
{
	struct attrs_list_args l = {.bucket = bucket, .key = key};
	int rc;

	memset(row, 0, sizeof(*row));
	*found = 0;
	if (!d || !bucket || !key)
		return -EINVAL;
	rc = db_run(d, "read file attributes", 0, 0, pg_attrs_list_dir, &l);
	if (rc)
		return rc;
	if (l.n == 1) {
		*row = l.rows[0];
		l.rows[0].key = NULL;
		*found = 1;
	}
	db_attrs_free(l.rows, l.n);
	return 0;
}

void db_attrs_free(struct db_attrs *rows, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(rows[i].key);
	free(rows);
}

struct attrs_move_args {
	const char *bucket, *from, *to;
	int tree;
};

/* key + "/" and key + "0": the byte range of everything under key/. */
static int subtree(const char *key, char **lo, char **hi)
{
	*hi = NULL;
	if (asprintf(lo, "%s/", key) < 0) {
		*lo = NULL;
		return -ENOMEM;
	}
	if (asprintf(hi, "%s0", key) < 0) {
		free(*lo);
		*lo = *hi = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int pg_attrs_drop_one(struct pg_ctx *x, const char *bucket,
			     const char *key, int tree)
{
	const char *p[5];
	char *lo, *hi;
	int rc = subtree(key, &lo, &hi);

	if (rc)
		return rc;
	p[0] = bucket;
	p[1] = key;
	p[2] = tree ? "t" : "f";
	p[3] = lo;
	p[4] = hi;
	rc = pg_exec(x, db_sql_attrs_drop, 5, p, NULL);
	free(lo);
	free(hi);
	return rc;
}

static int pg_attrs_move(struct pg_ctx *x, void *arg)
{
	struct attrs_move_args *m = arg;
	const char *p[6];
	char *lo, *hi;
	int rc;

	rc = pg_attrs_drop_one(x, m->bucket, m->to, m->tree);
	if (rc)
		return rc;
	rc = subtree(m->from, &lo, &hi);
	if (rc)
		return rc;
	p[0] = m->bucket;
	p[1] = m->from;
	p[2] = m->to;
	p[3] = m->tree ? "t" : "f";
	p[4] = lo;
	p[5] = hi;
	rc = pg_exec(x, db_sql_attrs_move, 6, p, NULL);
	free(lo);
	free(hi);
	return rc;
}

int db_attrs_move(struct db *d, const char *bucket, const char *from,
		  const char *to, int tree)
{
	struct attrs_move_args m = {
	    .bucket = bucket, .from = from, .to = to, .tree = tree};

	if (!d || !bucket || !from || !to)
		return -EINVAL;
	if (!strcmp(from, to))
		return 0;
	return db_run(d, "move file attributes", 1, 1, pg_attrs_move, &m);
}

static int pg_attrs_copy(struct pg_ctx *x, void *arg)
{
	struct attrs_move_args *m = arg;
	const char *p[3] = {m->bucket, m->from, m->to};
	const char *del[2] = {m->bucket, m->to};
	int rc = pg_exec(x, db_sql_attrs_copy_del, 2, del, NULL);

	return rc ? rc : pg_exec(x, db_sql_attrs_copy_ins, 3, p, NULL);
}

int db_attrs_copy(struct db *d, const char *bucket, const char *from,
		  const char *to)
{
	struct attrs_move_args m = {.bucket = bucket, .from = from, .to = to};

	if (!d || !bucket || !from || !to)
		return -EINVAL;
	if (!strcmp(from, to))
		return 0;
	return db_run(d, "copy file attributes", 1, 1, pg_attrs_copy, &m);
}

struct attrs_drop_args {
	const char *bucket, *key;
	int tree;
};

static int pg_attrs_drop(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;

	return pg_attrs_drop_one(x, a->bucket, a->key, a->tree);
}

int db_attrs_drop(struct db *d, const char *bucket, const char *key, int tree)
{
	struct attrs_drop_args a = {.bucket = bucket, .key = key, .tree = tree};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "drop file attributes", 1, 0, pg_attrs_drop, &a);
}

struct attrs_replaced_args {
	const char *bucket, *key;
	time_t at;
};

static int pg_attrs_drop_replaced(struct pg_ctx *x, void *arg)
{
	struct attrs_replaced_args *a = arg;
	char at[24];
	const char *p[3] = {a->bucket, a->key, at};

	/* The store's Last-Modified has whole seconds: a row written in
	 * the same second as the upload is taken as older (dropped). */
	snprintf(at, sizeof(at), "%lld", (long long)a->at + 1);
	return pg_exec(x, db_sql_attrs_drop_replaced, 3, p, NULL);
}

int db_attrs_drop_replaced(struct db *d, const char *bucket, const char *key,
			   time_t uploaded_at)
{
	struct attrs_replaced_args a = {
	    .bucket = bucket, .key = key, .at = uploaded_at};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "drop replaced file attributes", 0, 0,
		      pg_attrs_drop_replaced, &a);
}

struct attrs_backfill_args {
	const char *bucket;
	int64_t gid;
	long n;
};

static int pg_attrs_backfill(struct pg_ctx *x, void *arg)
{
	struct attrs_backfill_args *a = arg;
	PGresult *res = NULL;
	char gid[24];
	const char *p[2] = {a->bucket, gid};
	int rc;

	snprintf(gid, sizeof(gid), "%" PRId64, a->gid);
	rc = pg_exec(x, db_sql_attrs_backfill, 2, p, &res);
	if (rc == 0)
		a->n = strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return rc;
}

int db_attrs_backfill(struct db *d, const char *bucket, int64_t gid, long *n)
{
	struct attrs_backfill_args a = {.bucket = bucket, .gid = gid};
	int rc;

	if (!d || !bucket)
		return -EINVAL;
	rc = db_run(d, "backfill file owners", 1, 1, pg_attrs_backfill, &a);
	if (rc == 0 && n)
		*n = a.n;
	return rc;
}
