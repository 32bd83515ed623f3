/* db_attrs_defer.c - the publish of an open new file renamed over a stored
 * target, deferred to its writer's close (review-hide H5); see db_attrs.h
 * (db_attrs_defer and its kin). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_attrs.h"
#include "db_attrs_internal.h"
#include "db_internal.h"

/* clang-format off */
/* $1 bucket, $2 to, $3 this process's claimer: to's row (locked), and is
 * it another mount's live claim? */
static const char db_sql_defer_has[] =
	"SELECT " OTHERS_LIVE("$3") " FROM file_attrs f WHERE bucket = $1::text"
	" AND object_key = $2::text FOR UPDATE";
/* $1 bucket, $2 from, $3 the file's claim token: its claim's row goes
 * (the name is free; the rows it stood for are to's pending row now). */
static const char db_sql_defer_unclaim[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text AND etag IS NULL AND claimed_by = $3::text";
/* $1 bucket, $2 from, $3 and $4 the ETags of a file's own objects (NULL:
 * none), $5 the owner it holds: from's row while it is that file's (bound
 * to one of them: no claim; and its owner's: another file with the same
 * content, so the same ETag, is not taken for it, review-34 Z3), locked. */
static const char db_sql_defer_own[] =
	"SELECT mode, uid, gid, atime_ns, mtime_ns FROM file_attrs"
	" WHERE bucket = $1::text AND object_key = $2::text"
	" AND etag IN ($3::text, $4::text)"
	" AND (uid IS NULL OR uid = $5::bigint) FOR UPDATE";
/* Who ($1..$4), $5 bucket, $6 from, $7..$9 as $3..$5 above: a file with
 * no claim (stored before, review-h5 N6): its own row at from goes
 * (logged 'drop': the publish's 'move' from `from` at its close records
 * where its attributes went); another file's there stays (review n17
 * X2, review-34 Z3). */
static const char db_sql_defer_unrow[] =
	"WITH d AS (DELETE FROM file_attrs f WHERE bucket = $5::text"
	" AND object_key = $6::text AND etag IN ($7::text, $8::text)"
	" AND (uid IS NULL OR uid = $9::bigint) RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM d";
/* $1 bucket, $2 key, $3 token, $4..$7 set mode/owner/atime/mtime, $8 mode,
 * $9 uid, $10 gid, $11 atime_ns, $12 mtime_ns, $13 by: that deferred
 * publish's pending row (still unbound) takes the change. */
static const char db_sql_defer_set[] =
	"UPDATE file_attrs_pending SET"
	" mode = CASE WHEN $4::boolean THEN $8::integer ELSE mode END,"
	" uid = CASE WHEN $5::boolean THEN $9::bigint ELSE uid END,"
	" gid = CASE WHEN $5::boolean THEN $10::bigint ELSE gid END,"
	" atime_ns = CASE WHEN $6::boolean THEN $11::bigint ELSE atime_ns END,"
	" mtime_ns = CASE WHEN $7::boolean THEN $12::bigint ELSE mtime_ns END,"
	" updated_by = $13::text"
	" WHERE bucket = $1::text AND object_key = $2::text"
	" AND token = $3::text AND etag IS NULL";
/* Who ($1..$4), $5 bucket, $6 key, $7 op, $8..$11 as $4..$7 above,
 * $12 mode, $13 uid, $14 gid, $15 atime_ns, $16 mtime_ns: the change
 * logged, on no object yet (etag NULL: the open file's). */
static const char db_sql_defer_log[] =
	"INSERT INTO file_attr_changes (bucket, object_key, op, mode, uid,"
	" gid, atime_ns, mtime_ns, etag, changed_by, changed_uid,"
	" changed_user, changed_host)"
	" VALUES ($5::text, $6::text, $7::text,"
	" CASE WHEN $8::boolean THEN $12::integer END,"
	" CASE WHEN $9::boolean THEN $13::bigint END,"
	" CASE WHEN $9::boolean THEN $14::bigint END,"
	" CASE WHEN $10::boolean THEN $15::bigint END,"
	" CASE WHEN $11::boolean THEN $16::bigint END,"
	" NULL, $1::text, $2::bigint, $3::text, $4::text)";
/* $1 bucket, $2 tokens (array), $3 lease (seconds): those deferred
 * publishes' pending rows hold that long from now. */
static const char db_sql_defer_renew[] =
	"UPDATE file_attrs_pending SET"
	" pending_until = now() + $3::integer * interval '1 second'"
	" WHERE bucket = $1::text AND token = ANY($2::text[]) AND etag IS NULL";
/* $1 bucket, $2 key, $3 to, $4 token: the pending row follows its open
 * file to `to` (another deferred publish of it there is replaced). */
static const char db_sql_defer_move_del[] =
	"DELETE FROM file_attrs_pending WHERE bucket = $1::text"
	" AND object_key = $3::text AND token = $4::text"
	" AND $2::text IS NOT NULL";
static const char db_sql_defer_move[] =
	"UPDATE file_attrs_pending SET object_key = $3::text"
	" WHERE bucket = $1::text AND object_key = $2::text"
	" AND token = $4::text";
/* $1 bucket, $2 key, $3 token: that pending row goes, its columns
 * returned (mode, uid, gid, atime_ns, mtime_ns, updated_by, from_key). */
static const char db_sql_defer_take[] =
	"DELETE FROM file_attrs_pending WHERE bucket = $1::text"
	" AND object_key = $2::text AND token = $3::text AND etag IS NULL"
	" RETURNING mode, uid, gid, atime_ns, mtime_ns, updated_by, from_key";
/* $1 bucket, $2 to: to's row goes (not another mount's live claim:
 * checked first, db_sql_defer_has). */
static const char db_sql_defer_clear[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text";
/* Who ($1..$4), $5 bucket, $6 to, $7 mode, $8 uid, $9 gid, $10 atime_ns,
 * $11 mtime_ns, $12 updated_by, $13 claim token, $14 lease (seconds),
 * $15 from_key to log (NULL: not logged): the claim of the open file at
 * `to`, unbound. */
static const char db_sql_defer_claim[] =
	"WITH c AS (INSERT INTO file_attrs (bucket, object_key, mode, uid, gid,"
	" atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until) VALUES ($5::text, $6::text, $7::integer, $8::bigint,"
	" $9::bigint, $10::bigint, $11::bigint, now(), $12::text, NULL,"
	" $13::text, CASE WHEN $13::text IS NOT NULL"
	" THEN now() + $14::integer * interval '1 second' END)"
	" RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $15::text, " LOG_WHO " FROM c"
	" WHERE $15::text IS NOT NULL";
/* Who ($1..$4; $2 the unlinker's uid), $5 bucket, $6 key, $7 who may
 * remove any file (root, or no permission checks), $8 key's directory is
 * sticky, $9 its owner's uid, $10 the owner of a file whose row sets none:
 * the live pending rows at key (open files that land there, review-h5 N1)
 * that who may remove go, each logged ('drop', on no object); those whose
 * upload is in flight (upload_state 'upload', review n19 Y1, Y2) stay,
 * marked 'unlinked' (logged 'drop' the same): they hold the name until
 * that upload's record refuses it. */
#define DEFER_UNLINK_MAY                                                       \
	" bucket = $5::text AND object_key = $6::text AND " PEND_LIVE          \
	" AND ($7::boolean OR $2::bigint = 0 OR NOT $8::boolean"               \
	" OR $2::bigint = $9::bigint OR $2::bigint = coalesce(p.uid,"          \
	" $10::bigint))"
#define DEFER_UNLINK_LOGGED                                                    \
	" bucket, object_key, 'drop', mode, uid, gid, atime_ns, mtime_ns,"     \
	" NULL, NULL, " LOG_WHO
static const char db_sql_defer_unlink[] =
	"WITH d AS (DELETE FROM file_attrs_pending p WHERE" DEFER_UNLINK_MAY
	" AND p.upload_state IS NULL RETURNING *),"
	" m AS (UPDATE file_attrs_pending p SET upload_state = 'unlinked'"
	" WHERE" DEFER_UNLINK_MAY " AND p.upload_state = 'upload'"
	" RETURNING p.*) "
	LOG_COLS "SELECT" DEFER_UNLINK_LOGGED " FROM d"
	" UNION ALL SELECT" DEFER_UNLINK_LOGGED " FROM m";
/* $1 bucket, $2 key: the live pending rows left at key (not those
 * unlinked while their upload is in flight). */
static const char db_sql_defer_unlink_kept[] =
	"SELECT count(*) FROM file_attrs_pending p WHERE bucket = $1::text"
	" AND object_key = $2::text AND " PEND_LIVE
	" AND p.upload_state IS DISTINCT FROM 'unlinked'";
/* $1 bucket, $2 token: that deferred publish's pending row (at any key: a
 * failed db_attrs_defer_move leaves it where it was), unless its file was
 * unlinked, now has its upload in flight (review n19 Y1: an unlink from
 * now on marks it, never drops it). */
static const char db_sql_defer_has_row[] =
	"UPDATE file_attrs_pending SET upload_state = 'upload'"
	" WHERE bucket = $1::text AND token = $2::text AND etag IS NULL"
	" AND upload_state IS DISTINCT FROM 'unlinked' RETURNING 1";
/* $1 bucket, $2 token: that deferred publish's row, unlinked during an
 * earlier upload of its close (logged then), goes with this close. */
static const char db_sql_defer_has_gone[] =
	"DELETE FROM file_attrs_pending WHERE bucket = $1::text"
	" AND token = $2::text AND etag IS NULL AND upload_state = 'unlinked'";
/* clang-format on */

struct defer_args {
	const char *bucket, *from, *to, *token, *claimer;
	const char *own1, *own2; /* db_attrs_defer without a claimer */
	int lease_s;
	const struct db_attrs *a;
	struct db_attrs rec; /* db_attrs_defer: what it recorded (output) */
	const char *op;
	int log;
	const struct actor *who;
};

/* In x's transaction: is to's row another mount's live claim? 1, 0 or
 * -errno. The row (if any) is locked until the transaction ends. */
static int defer_others_claim(struct pg_ctx *x, const char *bucket,
			      const char *to)
{
	const char *p[3] = {bucket, to, x->d->claimer};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_defer_has, 3, p, &res);

	if (rc == 0)
		rc = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	return rc;
}

/* In x's transaction: *r, a file's own attributes as it holds them (no
 * claim: review-h5 N6), takes from its own row at from
 * (db_sql_defer_own), if there is one, its current mode and owner (the
 * row has every mount's changes since the file's open: an owner's chmod
 * on another mount is kept, review-34 Z5) and the times it sets none of.
 * 0 or -errno. */
static int defer_own_row(struct pg_ctx *x, const struct defer_args *g,
			 const char *owner, struct db_attrs *r)
{
	const char *p[5] = {g->bucket, g->from, g->own1, g->own2, owner};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_defer_own, 5, p, &res);

	if (rc || PQntuples(res) != 1)
		goto out;
	if (!PQgetisnull(res, 0, 0))
		r->mode =
		    (unsigned)strtoul(PQgetvalue(res, 0, 0), NULL, 10) & 07777;
	if (!PQgetisnull(res, 0, 1) && !PQgetisnull(res, 0, 2)) {
		r->uid = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		r->gid = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	}
	if (!(r->what & DB_ATTR_ATIME) && !PQgetisnull(res, 0, 3)) {
		r->atime_ns = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
		r->what |= DB_ATTR_ATIME;
	}
	if (!(r->what & DB_ATTR_MTIME) && !PQgetisnull(res, 0, 4)) {
		r->mtime_ns = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
		r->what |= DB_ATTR_MTIME;
	}
out:
	PQclear(res);
	return rc;
}

static int pg_defer(struct pg_ctx *x, void *arg)
{
	struct defer_args *g = arg;
	const char *p[3] = {g->bucket, g->from, g->claimer};
	struct who_params w;
	const char *d[9];
	char owner[24] = "";
	int rc = pg_attrs_lock_name(x, g->bucket, g->to);

	/* A retried transaction starts again from the caller's. */
	if (g->a) {
		g->rec = *g->a;
		snprintf(owner, sizeof(owner), "%" PRId64, g->a->uid);
	}
	g->rec.key = NULL;
	g->rec.etag = NULL;
	/* under to's name lock: a create's claim there (pg_attrs_claim)
	 * either committed first and is seen here, or sees this pending row
	 * (review-h5 N1) */
	if (rc == 0)
		rc = defer_others_claim(x, g->bucket, g->to);
	if (rc)
		return rc < 0 ? rc : -EBUSY;
	/* Without a claim (a file stored before: review-h5 N6) its own row
	 * at from is recorded as it is now (review-34 Z5), else the
	 * attributes it holds; never another file's row found at from (its
	 * token matches no claim; the row there may be another mount's
	 * claim: review n17 X2, or another file's with the same content:
	 * review-34 Z3). */
	if (!g->claimer)
		rc = defer_own_row(x, g, owner, &g->rec);
	if (rc == 0)
		rc = pg_attrs_pend_pub(x, g->bucket, g->from, g->to, g->token,
				       g->lease_s,
				       g->claimer ? g->claimer : g->token,
				       g->a ? &g->rec : NULL, g->who, 0);
	if (rc)
		return rc;
	if (g->claimer)
		return pg_exec(x, db_sql_defer_unclaim, 3, p, NULL);
	attrs_who_fill(g->who, &w, d);
	d[4] = g->bucket;
	d[5] = g->from;
	d[6] = g->own1;
	d[7] = g->own2;
	d[8] = owner;
	return pg_exec(x, db_sql_defer_unrow, 9, d, NULL);
}

int db_attrs_defer(struct db *d, const char *bucket, const char *from,
		   const char *to, const char *token, int lease_s,
		   const char *claimer, const char *own1, const char *own2,
		   const struct db_attrs *attrs, const struct actor *who,
		   struct db_attrs *got)
{
	struct defer_args g = {.bucket = bucket,
			       .from = from,
			       .to = to,
			       .token = token,
			       .claimer = claimer,
			       .own1 = own1,
			       .own2 = own2,
			       .lease_s = lease_s > 0 ? lease_s : 1,
			       .a = attrs,
			       .who = who};
	int rc;

	if (got)
		memset(got, 0, sizeof(*got));
	if (!d || !bucket || !from || !to || !token || !strcmp(from, to) ||
	    (!claimer && !attrs))
		return -EINVAL;
	/* Its token names this process (db_attrs_sweep_pending), which
	 * holds its liveness lock or takes it again (db_live_watch): never
	 * here (review-31 R2). */
	rc = db_run(d, "defer an open file's publish", 1, 1, pg_defer, &g);
	if (rc == 0 && got && attrs)
		*got = g.rec; /* no strings */
	return rc;
}

static int pg_defer_set(struct pg_ctx *x, void *arg)
{
	struct defer_args *g = arg;
	const struct db_attrs *a = g->a;
	char mode[16], uid[24], gid[24], at[24], mt[24];
	const char *p[13], *l[16];
	struct who_params w;
	int rc;

	snprintf(mode, sizeof(mode), "%u", (unsigned)(a->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, a->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, a->gid);
	snprintf(at, sizeof(at), "%" PRId64, a->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, a->mtime_ns);
	attrs_who_fill(g->who, &w, l);
	p[0] = g->bucket;
	p[1] = g->to;
	p[2] = g->token;
	p[3] = a->what & DB_ATTR_MODE ? "t" : "f";
	p[4] = a->what & DB_ATTR_OWNER ? "t" : "f";
	p[5] = a->what & DB_ATTR_ATIME ? "t" : "f";
	p[6] = a->what & DB_ATTR_MTIME ? "t" : "f";
	p[7] = mode;
	p[8] = uid;
	p[9] = gid;
	p[10] = at;
	p[11] = mt;
	p[12] = l[0];
	rc = pg_exec(x, db_sql_defer_set, 13, p, NULL);
	if (rc || !g->op)
		return rc;
	l[4] = g->bucket;
	l[5] = g->to;
	l[6] = g->op;
	memcpy(&l[7], &p[3], 9 * sizeof(*l));
	return pg_exec(x, db_sql_defer_log, 16, l, NULL);
}

int db_attrs_defer_set(struct db *d, const char *bucket, const char *key,
		       const char *token, const struct db_attrs *a,
		       const char *op, const struct actor *who)
{
	struct defer_args g = {.bucket = bucket,
			       .to = key,
			       .token = token,
			       .a = a,
			       .op = op,
			       .who = who};

	if (!d || !bucket || !key || !token || !a || a->uid < 0 || a->gid < 0)
		return -EINVAL;
	return db_run(d, "change a deferred publish's attributes", 1, 1,
		      pg_defer_set, &g);
}

struct defer_renew_args {
	const char *bucket;
	const char *const *tokens;
	size_t n;
	int lease_s;
};

static int pg_defer_renew(struct pg_ctx *x, void *arg)
{
	struct defer_renew_args *r = arg;
	char lease[16], *arr = attrs_text_array(r->tokens, r->n);
	const char *p[3] = {r->bucket, arr, lease};
	int rc;

	if (!arr)
		return -ENOMEM;
	snprintf(lease, sizeof(lease), "%d", r->lease_s);
	rc = pg_exec(x, db_sql_defer_renew, 3, p, NULL);
	free(arr);
	return rc;
}

int db_attrs_defer_renew(struct db *d, const char *bucket,
			 const char *const *tokens, size_t n, int lease_s)
{
	struct defer_renew_args r = {
	    .bucket = bucket, .tokens = tokens, .n = n, .lease_s = lease_s};

	if (!d || !bucket || (n && !tokens))
		return -EINVAL;
	if (!n)
		return 0;
	return db_run(d, "renew deferred publishes", 1, 1, pg_defer_renew, &r);
}

static int pg_defer_move(struct pg_ctx *x, void *arg)
{
	struct defer_args *g = arg;
	const char *p[4] = {g->bucket, g->from, g->to, g->token};
	int rc = pg_exec(x, db_sql_defer_move_del, 4, p, NULL);

	return rc ? rc : pg_exec(x, db_sql_defer_move, 4, p, NULL);
}

int db_attrs_defer_move(struct db *d, const char *bucket, const char *key,
			const char *to, const char *token)
{
	struct defer_args g = {
	    .bucket = bucket, .from = key, .to = to, .token = token};

	if (!d || !bucket || !key || !to || !token)
		return -EINVAL;
	if (!strcmp(key, to))
		return 0;
	return db_run(d, "move a deferred publish", 1, 1, pg_defer_move, &g);
}

static int pg_defer_undo(struct pg_ctx *x, void *arg)
{
	struct defer_args *g = arg;
	const char *p[3] = {g->bucket, g->from, g->token};
	const char *c[15];
	char lease[16];
	struct who_params w;
	PGresult *res = NULL;
	int rc, i;

	rc = pg_exec(x, db_sql_defer_take, 3, p, &res);
	if (rc || PQntuples(res) != 1)
		goto out; /* none (it lapsed and went): nothing to put back */
	rc = defer_others_claim(x, g->bucket, g->to);
	if (rc) {
		rc = rc < 0 ? rc : -EBUSY;
		goto out;
	}
	p[1] = g->to;
	rc = pg_exec(x, db_sql_defer_clear, 2, p, NULL);
	if (rc)
		goto out;
	attrs_who_fill(g->who, &w, c);
	c[4] = g->bucket;
	c[5] = g->to;
	for (i = 0; i < 6; i++)
		c[6 + i] =
		    PQgetisnull(res, 0, i) ? NULL : PQgetvalue(res, 0, i);
	c[12] = g->claimer;
	snprintf(lease, sizeof(lease), "%d", g->lease_s);
	c[13] = lease;
	c[14] = !g->log			 ? NULL
		: PQgetisnull(res, 0, 6) ? g->from
					 : PQgetvalue(res, 0, 6);
	rc = pg_exec(x, db_sql_defer_claim, 15, c, NULL);
out:
	PQclear(res);
	return rc;
}

int db_attrs_defer_undo(struct db *d, const char *bucket, const char *key,
			const char *token, const char *to, const char *claimer,
			int lease_s, int log, const struct actor *who)
{
	struct defer_args g = {.bucket = bucket,
			       .from = key,
			       .to = to,
			       .token = token,
			       .claimer = claimer,
			       .lease_s = lease_s > 0 ? lease_s : 1,
			       .log = log,
			       .who = who};

	if (!d || !bucket || !key || !token || !to)
		return -EINVAL;
	return db_run(d, "undo a deferred publish", 1, 1, pg_defer_undo, &g);
}

struct defer_unlink_args {
	const char *bucket, *key;
	const struct db_unlink_perm *perm;
	const struct actor *who;
	int dropped, kept; /* output */
};

static int pg_defer_unlink(struct pg_ctx *x, void *arg)
{
	struct defer_unlink_args *u = arg;
	const struct db_unlink_perm *pm = u->perm;
	char dir_uid[24], def_uid[24];
	const char *p[10];
	struct who_params w;
	PGresult *res = NULL;
	int rc;

	/* under key's name lock: a deferral there (pg_defer) either
	 * committed first and is judged here, or comes after this unlink */
	rc = pg_attrs_lock_name(x, u->bucket, u->key);
	if (rc)
		return rc;
	attrs_who_fill(u->who, &w, p);
	snprintf(dir_uid, sizeof(dir_uid), "%" PRId64, pm->dir_uid);
	snprintf(def_uid, sizeof(def_uid), "%" PRId64, pm->def_uid);
	p[4] = u->bucket;
	p[5] = u->key;
	p[6] = pm->any ? "true" : "false";
	p[7] = pm->sticky ? "true" : "false";
	p[8] = dir_uid;
	p[9] = def_uid;
	rc = pg_exec(x, db_sql_defer_unlink, 10, p, &res);
	if (rc == 0)
		u->dropped = (int)strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	res = NULL;
	if (rc == 0)
		rc = pg_exec(x, db_sql_defer_unlink_kept, 2, p + 4, &res);
	if (rc == 0)
		u->kept = PQntuples(res) == 1
			      ? (int)strtol(PQgetvalue(res, 0, 0), NULL, 10)
			      : 0;
	PQclear(res);
	return rc;
}

int db_attrs_defer_unlink(struct db *d, const char *bucket, const char *key,
			  const struct db_unlink_perm *perm,
			  const struct actor *who, int *dropped, int *kept)
{
	struct defer_unlink_args u = {
	    .bucket = bucket, .key = key, .perm = perm, .who = who};
	int rc;

	if (!d || !bucket || !key || !perm || !who)
		return -EINVAL;
	rc = db_run(d, "drop an unlinked open file's pending attributes", 1, 1,
		    pg_defer_unlink, &u);
	if (rc == 0 && dropped)
		*dropped = u.dropped;
	if (rc == 0 && kept)
		*kept = u.kept;
	return rc;
}

struct defer_has_args {
	const char *bucket, *token;
	int has; /* output */
};

static int pg_defer_has_row(struct pg_ctx *x, void *arg)
{
	struct defer_has_args *h = arg;
	const char *p[2] = {h->bucket, h->token};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_defer_has_row, 2, p, &res);

	if (rc == 0)
		h->has = PQntuples(res) > 0;
	PQclear(res);
	if (rc == 0 && !h->has)
		rc = pg_exec(x, db_sql_defer_has_gone, 2, p, NULL);
	return rc;
}

int db_attrs_defer_has(struct db *d, const char *bucket, const char *token)
{
	struct defer_has_args h = {.bucket = bucket, .token = token};
	int rc;

	if (!d || !bucket || !token)
		return -EINVAL;
	rc = db_run(d, "start a deferred publish's upload", 1, 1,
		    pg_defer_has_row, &h);
	return rc ? rc : h.has;
}
