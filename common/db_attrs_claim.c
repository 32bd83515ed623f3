/* db_attrs_claim.c - claims on a name (migration 11) and the bind
 * of a new file's row; see
 * db_attrs.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_attrs.h"
#include "db_attrs_internal.h"
#include "db_internal.h"
#include "log.h"

/* clang-format off */
/* $1 bucket, $2 key, $3 etag, $4 claimer: the row of a new file's claim,
 * still that claimer's and unbound, or already bound to etag (a retry),
 * describes the object etag now (the claim ends there). */
static const char db_sql_attrs_bind_mine[] =
	"UPDATE file_attrs SET etag = $3::text, claimed_by = NULL,"
	" claim_until = NULL WHERE bucket = $1::text"
	" AND object_key = $2::text AND ((etag IS NULL"
	" AND claimed_by = $4::text) OR etag = $3::text) RETURNING 1";
/* Who ($1..$4), $5 bucket, $6 key, $7 etag, $8 mode, $9 uid, $10 gid,
 * $11 atime_ns, $12 mtime_ns (NULL: not set): the row a take writes
 * (db_sql_attrs_bind_take), logged ('create') first: a wait on the log
 * holds no key lock and no row lock. */
static const char db_sql_attrs_bind_take_log[] =
	LOG_COLS "VALUES ($5::text, $6::text, 'create', $8::integer,"
	" $9::bigint, $10::bigint, $11::bigint, $12::bigint, $7::text, NULL,"
	" " LOG_WHO ")";
/* $1 bucket, $2 key, $3 etag, $4 mode, $5 uid, $6 gid, $7 atime_ns,
 * $8 mtime_ns, $9 by: the name's row is not that file's claim any more
 * (it lapsed and another create took it, or it went): the object etag,
 * that file's content and the live one (checked by the caller under the
 * key lock), gets that file's row, whatever was there but a row already
 * bound to etag. */
static const char db_sql_attrs_bind_take[] =
	"INSERT INTO file_attrs AS f (bucket, object_key, mode, uid, gid,"
	" atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until)"
	" VALUES ($1::text, $2::text, $4::integer, $5::bigint, $6::bigint,"
	" $7::bigint, $8::bigint, now(), $9::text, $3::text, NULL, NULL)"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" etag = excluded.etag,"
	" ctime = greatest(now(), f.ctime), updated_by = excluded.updated_by,"
	" claimed_by = NULL, claim_until = NULL"
	" WHERE f.etag IS DISTINCT FROM excluded.etag RETURNING 1";
/* A claim on a name (migration 11) holds while its row is unbound and its
 * lease runs. */
#define LIVE "(f.etag IS NULL AND f.claim_until IS NOT NULL" \
	" AND f.claim_until > now())"
/* Who ($1..$4), $5 bucket, $6 key, $7 mode, $8 uid, $9 gid, $10 claimer,
 * $11 lease (seconds), $12 take: a row that is no live claim is taken
 * over, $13 from: a live claim of that claimer is taken over too (NULL:
 * none). The row claimed, unbound and reset, is logged ('create'). */
static const char db_sql_attrs_claim[] =
	"WITH c AS (INSERT INTO file_attrs AS f (bucket, object_key, mode, uid,"
	" gid, ctime, updated_by, etag, claimed_by, claim_until)"
	" VALUES ($5::text, $6::text, $7::integer, $8::bigint, $9::bigint,"
	" now(), $1::text, NULL, $10::text,"
	" now() + $11::integer * interval '1 second')"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = NULL, mtime_ns = NULL, etag = NULL,"
	" ctime = greatest(now(), f.ctime), updated_by = excluded.updated_by,"
	" claimed_by = excluded.claimed_by, claim_until = excluded.claim_until"
	" WHERE CASE WHEN " LIVE " THEN f.claimed_by = $13::text"
	" ELSE $12::boolean END RETURNING *), l AS ("
	LOG_COLS "SELECT bucket, object_key, 'create', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM c)"
	" SELECT (extract(epoch FROM ctime) * 1000000)::bigint * 1000 FROM c";
/* Who ($1..$4), $5 bucket, $6 key: the name's row goes unless it is a live
 * claim (logged 'drop'). */
static const char db_sql_attrs_drop_unclaimed[] =
	"WITH d AS (DELETE FROM file_attrs f WHERE bucket = $5::text"
	" AND object_key = $6::text AND NOT " LIVE " RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM d";
/* Who ($1..$4), $5 bucket, $6 from, $7 to, $8 claimer, $9 lease
 * (seconds), $10 and $11 the ETags of the file's own objects (NULL: none):
 * from's row, when it is no live claim and is bound to one of them (the
 * file's own, not a row another mount's create took since), moves to `to`,
 * unbound, as that claimer's claim there, logged ('move', from_key from);
 * its attributes returned. */
static const char db_sql_attrs_move_claim[] =
	"WITH m AS (UPDATE file_attrs f SET object_key = $7::text,"
	" etag = NULL, claimed_by = $8::text,"
	" claim_until = now() + $9::integer * interval '1 second'"
	" WHERE bucket = $5::text AND object_key = $6::text AND NOT " LIVE
	" AND etag IN ($10::text, $11::text) RETURNING *),"
	" l AS (" LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text, " LOG_WHO " FROM m)"
	" SELECT mode, uid, gid, atime_ns, mtime_ns FROM m";
/* $1 bucket, $2 key: key's name lock (pg_attrs_lock_name). */
static const char db_sql_attrs_lock_name[] =
	"SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/'"
	" || $2::text, 7310304))";
/* $1 bucket, $2 key: the newest live pending row of an open file at key,
 * as db_sql_attrs_claim_held's columns (a live claim: its token). */
static const char db_sql_attrs_pend_held[] =
	"SELECT mode, uid, gid, etag, token, true FROM file_attrs_pending p"
	" WHERE bucket = $1::text AND object_key = $2::text AND " PEND_LIVE
	" ORDER BY ctime DESC LIMIT 1";
/* $1 bucket, $2 key: the row a claim did not take. */
static const char db_sql_attrs_claim_held[] =
	"SELECT mode, uid, gid, etag, claimed_by, " LIVE
	" FROM file_attrs f WHERE bucket = $1::text AND object_key = $2::text";
/* The same, locked until the transaction ends. */
static const char db_sql_attrs_claim_lock[] =
	"SELECT mode, uid, gid, etag, claimed_by, " LIVE
	" FROM file_attrs f WHERE bucket = $1::text AND object_key = $2::text"
	" FOR UPDATE";
/* $1 bucket, $2 dir + "/", $3 dir + "0", $4 this process's claimer: is a
 * key under dir/ another process's live claim? */
static const char db_sql_attrs_others_under[] =
	"SELECT EXISTS (SELECT 1 FROM file_attrs f WHERE bucket = $1::text"
	" AND object_key COLLATE \"C\" >= $2::text"
	" AND object_key COLLATE \"C\" < $3::text AND " OTHERS_LIVE("$4") ")";
/* $1 bucket, $2 key, $3 this process's claimer: is key's row another
 * process's live claim? */
static const char db_sql_attrs_others_live[] =
	"SELECT EXISTS (SELECT 1 FROM file_attrs f WHERE bucket = $1::text"
	" AND object_key = $2::text AND " OTHERS_LIVE("$3") ")";
/* Who ($1..$4), $5 bucket, $6 key, $7 claimer: the row goes while it is
 * that claimer's and unbound (logged 'drop'). */
static const char db_sql_attrs_unclaim[] =
	"WITH d AS (DELETE FROM file_attrs WHERE bucket = $5::text"
	" AND object_key = $6::text AND etag IS NULL"
	" AND claimed_by = $7::text RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM d";
/* $1 bucket, $2 claimer, $3 lease (seconds), $4 keys (text[]). A row
 * another transaction holds (a bind of it in progress) is skipped, never
 * waited for: the others' renewals are not late behind it (E6); it is
 * renewed next time. */
static const char db_sql_attrs_renew[] =
	"UPDATE file_attrs SET claim_until = now() + $3::integer"
	" * interval '1 second' WHERE bucket = $1::text"
	" AND object_key IN (SELECT object_key FROM file_attrs"
	" WHERE bucket = $1::text AND object_key = ANY ($4::text[])"
	" AND etag IS NULL"
	" AND left(claimed_by, length($2::text) + 1) = $2::text || '#'"
	" FOR UPDATE SKIP LOCKED)";
/* clang-format on */

struct attrs_bind_claim_args {
	const char *bucket, *key, *etag, *claimer;
	const struct db_attrs *a;
	const struct actor *who;
	int taken; /* output: DB_BIND_* */
};

int pg_attrs_bind_mine(struct pg_ctx *x, const char *bucket, const char *key,
		       const char *etag, const char *claimer, int *mine)
{
	const char *p[4] = {bucket, key, etag, claimer};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_bind_mine, 4, p, &res);

	*mine = rc == 0 && PQntuples(res) == 1;
	PQclear(res);
	return rc;
}

static int pg_attrs_bind_claim(struct pg_ctx *x, void *arg)
{
	struct attrs_bind_claim_args *b = arg;
	const char *p[12] = {b->bucket, b->key, b->etag, b->claimer};
	char mode[16], uid[24], gid[24], at[24], mt[24];
	const struct db_attrs *a = b->a;
	const char *by;
	struct who_params w;
	PGresult *res = NULL;
	int rc;

	b->taken = DB_BIND_MINE;
	rc = pg_exec(x, db_sql_attrs_bind_mine, 4, p, &res);
	if (rc == 0 && PQntuples(res) == 1)
		goto out;
	if (rc)
		goto out;
	PQclear(res);
	res = NULL;
	snprintf(mode, sizeof(mode), "%u", (unsigned)(a->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, a->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, a->gid);
	snprintf(at, sizeof(at), "%" PRId64, a->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, a->mtime_ns);
	attrs_who_fill(b->who, &w, p);
	p[4] = b->bucket;
	p[5] = b->key;
	p[6] = b->etag;
	p[7] = mode;
	p[8] = uid;
	p[9] = gid;
	p[10] = a->what & DB_ATTR_ATIME ? at : NULL;
	p[11] = a->what & DB_ATTR_MTIME ? mt : NULL;
	by = p[0];
	rc = pg_exec(x, db_sql_attrs_bind_take_log, 12, p, NULL);
	if (rc)
		goto out;
	/* Its claim is gone: the row becomes this file's only while its
	 * object is the live one (a late bind never takes the row of a
	 * newer object, bound or claimed); else all of it is rolled
	 * back. */
	rc = pg_attrs_live_is(x, b->bucket, b->key, b->etag);
	if (rc < 0)
		goto out;
	if (rc == 0) {
		rc = -ESTALE;
		goto out;
	}
	p[0] = b->bucket;
	p[1] = b->key;
	p[2] = b->etag;
	p[3] = mode;
	p[4] = uid;
	p[5] = gid;
	p[6] = p[10];
	p[7] = p[11];
	p[8] = by;
	rc = pg_exec(x, db_sql_attrs_bind_take, 9, p, &res);
	if (rc == 0 && PQntuples(res) != 1)
		rc = -ESTALE; /* already bound to etag: kept */
	if (rc == 0)
		b->taken = DB_BIND_TAKEN;
out:
	PQclear(res);
	return rc;
}

int db_attrs_bind_claim(struct db *d, const char *bucket, const char *key,
			const char *etag, const char *claimer,
			const struct db_attrs *a, const struct actor *who,
			int *taken)
{
	struct attrs_bind_claim_args b = {.bucket = bucket,
					  .key = key,
					  .etag = etag,
					  .claimer = claimer,
					  .a = a,
					  .who = who};
	int rc;

	if (taken)
		*taken = DB_BIND_MINE;
	if (!d || !bucket || !key || !etag || !*etag || !claimer || !a)
		return -EINVAL;
	rc = db_run(d, "bind a new file's attributes", 1, 1,
		    pg_attrs_bind_claim, &b);
	if (rc == -ESTALE) {
		b.taken = DB_BIND_STALE; /* rolled back: nothing changed */
		rc = 0;
	}
	if (rc == 0 && taken)
		*taken = b.taken;
	return rc;
}

struct attrs_claim_args {
	const char *bucket, *key, *claimer, *from;
	const struct db_attrs *a;
	const struct actor *who;
	int lease_s, take;
	int64_t ctime_ns;
	struct db_claim *held; /* output when not taken */
	int (*gate)(void *);   /* before the COMMIT of a claim (NULL: none) */
	void *gate_arg;
};

/* Row 0 of res (db_sql_attrs_claim_held's columns) into *h (zeroed by
 * the caller). 0 or -ENOMEM. */
static int claim_parse(PGresult *res, struct db_claim *h)
{
	h->found = 1;
	if (!PQgetisnull(res, 0, 0)) {
		h->has_mode = 1;
		h->mode = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
	}
	if (!PQgetisnull(res, 0, 1) && !PQgetisnull(res, 0, 2)) {
		h->has_owner = 1;
		h->uid = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		h->gid = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	}
	h->live = !strcmp(PQgetvalue(res, 0, 5), "t");
	if (!PQgetisnull(res, 0, 3))
		h->etag = strdup(PQgetvalue(res, 0, 3));
	if (!PQgetisnull(res, 0, 4))
		h->holder = strdup(PQgetvalue(res, 0, 4));
	if ((!PQgetisnull(res, 0, 3) && !h->etag) ||
	    (!PQgetisnull(res, 0, 4) && !h->holder))
		return -ENOMEM;
	return 0;
}

int pg_attrs_lock_name(struct pg_ctx *x, const char *bucket, const char *key)
{
	const char *p[2] = {bucket, key};

	return pg_exec(x, db_sql_attrs_lock_name, 2, p, NULL);
}

int pg_attrs_pend_held(struct pg_ctx *x, const char *bucket, const char *key,
		       struct db_claim *h)
{
	const char *p[2] = {bucket, key};
	PGresult *res = NULL;
	int rc = pg_attrs_lock_name(x, bucket, key);

	if (rc == 0)
		rc = pg_exec(x, db_sql_attrs_pend_held, 2, p, &res);
	if (rc == 0 && PQntuples(res) == 1)
		rc = !h ? 1 : claim_parse(res, h) ? -ENOMEM : 1;
	if (rc == 1 && h)
		h->pending = 1; /* a file that lands here, no claim */
	PQclear(res);
	return rc;
}

static int pg_attrs_claim(struct pg_ctx *x, void *arg)
{
	struct attrs_claim_args *c = arg;
	struct db_claim *h = c->held;
	char mode[16], uid[24], gid[24], lease[16];
	struct who_params w;
	const char *p[13];
	PGresult *res = NULL;
	int rc;

	free(h->holder);
	free(h->etag);
	memset(h, 0, sizeof(*h));
	/* A claim is a lease, not evidence (no audit row; its 'create' in
	 * file_attr_changes is in the same transaction): it commits without
	 * waiting for its WAL flush. Visible to every other mount at COMMIT
	 * all the same (cross-mount O_EXCL), only a PostgreSQL crash in
	 * the next ~wal_writer_delay x 3 can lose it, with its log row. The
	 * file is still open on its mount then: its close records its row
	 * and binds its attributes as for a lapsed claim (bind_take: the row
	 * is its creator's again, logged 'create'), and another mount that
	 * created the name meanwhile is the last-writer-wins of a lapsed
	 * claim (R7). The reception row's synchronous COMMIT flushes the WAL
	 * up to itself, the claim's included. */
	rc = pg_exec(x, "SET LOCAL synchronous_commit = off", 0, NULL, NULL);
	if (rc)
		return rc;
	/* An open file that lands at key at its close (its publish deferred,
	 * db_attrs_defer): the name is taken as by a live claim (review-h5
	 * N1), checked under the name lock its deferral takes too. */
	rc = pg_attrs_pend_held(x, c->bucket, c->key, h);
	if (rc)
		return rc < 0 ? rc : -EEXIST;
	snprintf(mode, sizeof(mode), "%u", (unsigned)(c->a->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, c->a->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, c->a->gid);
	snprintf(lease, sizeof(lease), "%d", c->lease_s);
	attrs_who_fill(c->who, &w, p);
	p[4] = c->bucket;
	p[5] = c->key;
	p[6] = mode;
	p[7] = uid;
	p[8] = gid;
	p[9] = c->claimer;
	p[10] = lease;
	p[11] = c->take ? "t" : "f";
	p[12] = c->from;
	rc = pg_exec(x, db_sql_attrs_claim, 13, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 1) {
		c->ctime_ns = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		if (c->gate) /* its nonzero return rolls the claim back */
			rc = c->gate(c->gate_arg);
		goto out;
	}
	PQclear(res);
	res = NULL;
	rc = pg_exec(x, db_sql_attrs_claim_held, 2, &p[4], &res);
	if (rc)
		goto out;
	rc = -EEXIST;
	if (PQntuples(res) != 1)
		goto out; /* gone meanwhile: the caller tries again */
	if (claim_parse(res, h))
		rc = -ENOMEM;
out:
	PQclear(res);
	return rc;
}

int db_attrs_claim(struct db *d, const char *bucket, const char *key,
		   const struct db_attrs *a, const char *claimer, int lease_s,
		   int take, const char *from, const struct actor *who,
		   int64_t *ctime_ns, struct db_claim *held)
{
	return db_attrs_claim_gated(d, bucket, key, a, claimer, lease_s, take,
				    from, who, ctime_ns, held, NULL, NULL);
}

int db_attrs_claim_gated(struct db *d, const char *bucket, const char *key,
			 const struct db_attrs *a, const char *claimer,
			 int lease_s, int take, const char *from,
			 const struct actor *who, int64_t *ctime_ns,
			 struct db_claim *held, int (*gate)(void *),
			 void *gate_arg)
{
	struct attrs_claim_args c = {.bucket = bucket,
				     .key = key,
				     .claimer = claimer,
				     .from = from,
				     .a = a,
				     .who = who,
				     .lease_s = lease_s,
				     .take = take,
				     .held = held,
				     .gate = gate,
				     .gate_arg = gate_arg};
	int rc;

	memset(held, 0, sizeof(*held));
	if (!d || !bucket || !key || !a || !claimer)
		return -EINVAL;
	rc = db_run(d, "claim a new file's name", 1, 1, pg_attrs_claim, &c);
	if (rc != -EEXIST)
		db_claim_free(held);
	if (rc == 0 && ctime_ns)
		*ctime_ns = c.ctime_ns;
	return rc;
}

struct attrs_claim_get_args {
	const char *bucket, *key;
	struct db_claim *held;
};

static int pg_attrs_claim_get(struct pg_ctx *x, void *arg)
{
	struct attrs_claim_get_args *g = arg;
	const char *p[2] = {g->bucket, g->key};
	PGresult *res = NULL;
	int rc;

	db_claim_free(g->held);
	rc = pg_exec(x, db_sql_attrs_claim_held, 2, p, &res);
	if (rc == 0 && PQntuples(res) == 1)
		rc = claim_parse(res, g->held);
	PQclear(res);
	return rc;
}

int db_attrs_claim_get(struct db *d, const char *bucket, const char *key,
		       struct db_claim *held)
{
	struct attrs_claim_get_args g = {
	    .bucket = bucket, .key = key, .held = held};
	int rc;

	memset(held, 0, sizeof(*held));
	if (!d || !bucket || !key)
		return -EINVAL;
	rc = db_run(d, "read a name's claim", 0, 0, pg_attrs_claim_get, &g);
	if (rc)
		db_claim_free(held);
	return rc;
}

struct attrs_others_under_args {
	const char *bucket, *lo, *hi;
	int found;
};

static int pg_attrs_others_under(struct pg_ctx *x, void *arg)
{
	struct attrs_others_under_args *o = arg;
	const char *p[4] = {o->bucket, o->lo, o->hi, x->d->claimer};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_others_under, 4, p, &res);

	if (rc == 0)
		o->found =
		    PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	return rc;
}

int pg_attrs_others_live(struct pg_ctx *x, const char *bucket, const char *key)
{
	const char *p[3] = {bucket, key, x->d->claimer};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_others_live, 3, p, &res);

	if (rc == 0)
		rc = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	return rc;
}

int db_attrs_others_claim_under(struct db *d, const char *bucket,
				const char *dir)
{
	struct attrs_others_under_args o = {.bucket = bucket};
	char *lo, *hi;
	int rc;

	if (!d || !bucket || !dir)
		return -EINVAL;
	rc = attrs_subtree(dir, &lo, &hi);
	if (rc)
		return rc;
	o.lo = lo;
	o.hi = hi;
	rc = db_run(d, "read the claims under a directory", 0, 0,
		    pg_attrs_others_under, &o);
	free(lo);
	free(hi);
	return rc ? rc : o.found;
}

void db_claim_free(struct db_claim *held)
{
	free(held->holder);
	free(held->etag);
	memset(held, 0, sizeof(*held));
}

struct attrs_unclaim_args {
	const char *bucket, *key, *claimer;
	const struct actor *who;
};

static int pg_attrs_unclaim(struct pg_ctx *x, void *arg)
{
	struct attrs_unclaim_args *u = arg;
	struct who_params w;
	const char *p[7];

	attrs_who_fill(u->who, &w, p);
	p[4] = u->bucket;
	p[5] = u->key;
	p[6] = u->claimer;
	return pg_exec(x, db_sql_attrs_unclaim, 7, p, NULL);
}

int db_attrs_unclaim(struct db *d, const char *bucket, const char *key,
		     const char *claimer, const struct actor *who)
{
	struct attrs_unclaim_args u = {
	    .bucket = bucket, .key = key, .claimer = claimer, .who = who};

	if (!d || !bucket || !key || !claimer)
		return -EINVAL;
	return db_run(d, "drop a new file's claim", 1, 1, pg_attrs_unclaim, &u);
}

struct attrs_renew_args {
	const char *bucket, *claimer;
	const char *const *keys;
	size_t n;
	int lease_s;
};

char *attrs_text_array(const char *const *keys, size_t n)
{
	size_t len = 3, i;
	const char *k;
	char *out, *o;

	for (i = 0; i < n; i++)
		len += 2 * strlen(keys[i]) + 3;
	out = malloc(len);
	if (!out)
		return NULL;
	o = out;
	*o++ = '{';
	for (i = 0; i < n; i++) {
		if (i)
			*o++ = ',';
		*o++ = '"';
		for (k = keys[i]; *k; k++) {
			if (*k == '"' || *k == '\\')
				*o++ = '\\';
			*o++ = *k;
		}
		*o++ = '"';
	}
	*o++ = '}';
	*o = '\0';
	return out;
}

static int pg_attrs_renew(struct pg_ctx *x, void *arg)
{
	struct attrs_renew_args *r = arg;
	char lease[16], *arr = attrs_text_array(r->keys, r->n);
	const char *p[4] = {r->bucket, r->claimer, lease, arr};
	int rc;

	if (!arr)
		return -ENOMEM;
	snprintf(lease, sizeof(lease), "%d", r->lease_s);
	rc = pg_exec(x, db_sql_attrs_renew, 4, p, NULL);
	free(arr);
	return rc;
}

int db_attrs_renew(struct db *d, const char *bucket, const char *claimer,
		   const char *const *keys, size_t n, int lease_s)
{
	struct attrs_renew_args r = {.bucket = bucket,
				     .claimer = claimer,
				     .keys = keys,
				     .n = n,
				     .lease_s = lease_s};

	if (!d || !bucket || !claimer || (n && !keys))
		return -EINVAL;
	if (!n)
		return 0;
	return db_run(d, "renew new files' claims", 1, 1, pg_attrs_renew, &r);
}

struct attrs_move_claim_args {
	struct attrs_claim_args c; /* to's claim when from's row is not moved */
	const char *from, *own1, *own2;
	const char *seen_etag, *seen_holder; /* with take: the row seen */
	struct db_attrs *out;
};

/* Both NULL, or equal strings. */
static int same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

/* A column of row 0 of res as an int64 (0 when NULL): *has set when not. */
static int64_t col_i64(PGresult *res, int col, int *has)
{
	*has = !PQgetisnull(res, 0, col);
	return *has ? strtoll(PQgetvalue(res, 0, col), NULL, 10) : 0;
}

static void move_claim_out(PGresult *res, struct db_attrs *o)
{
	int has, has2;

	o->mode = (uint32_t)col_i64(res, 0, &has);
	o->what |= has ? DB_ATTR_MODE : 0;
	o->uid = col_i64(res, 1, &has);
	o->gid = col_i64(res, 2, &has2);
	o->what |= has && has2 ? DB_ATTR_OWNER : 0;
	o->atime_ns = col_i64(res, 3, &has);
	o->what |= has ? DB_ATTR_ATIME : 0;
	o->mtime_ns = col_i64(res, 4, &has);
	o->what |= has ? DB_ATTR_MTIME : 0;
}

static int pg_attrs_move_claim(struct pg_ctx *x, void *arg)
{
	struct attrs_move_claim_args *m = arg;
	struct db_claim *h = m->c.held;
	struct db_attrs *o = m->out;
	char lease[16];
	struct who_params w;
	const char *p[12];
	PGresult *res = NULL;
	int rc;

	memset(o, 0, sizeof(*o));
	free(h->holder);
	free(h->etag);
	memset(h, 0, sizeof(*h));
	/* an open file that lands at `to` at its close (pg_attrs_claim) */
	rc = pg_attrs_pend_held(x, m->c.bucket, m->c.key, h);
	if (rc) {
		rc = rc < 0 ? rc : -EEXIST;
		goto out;
	}
	/* to's row, locked: a live claim is another create's file (never
	 * taken); another row only when the caller found nothing stored
	 * there after seeing it (take: an object lands before its row) */
	rc = pg_exec(x, db_sql_attrs_claim_lock, 2,
		     (const char *[]){m->c.bucket, m->c.key}, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 1) {
		if (claim_parse(res, h)) {
			rc = -ENOMEM;
			goto out;
		}
		/* take: only the row the caller saw (review-stale4 K4), not
		 * one made there since */
		if (h->live || !m->c.take || !same_str(h->etag, m->seen_etag) ||
		    !same_str(h->holder, m->seen_holder)) {
			rc = -EEXIST;
			goto out;
		}
	}
	PQclear(res);
	res = NULL;
	snprintf(lease, sizeof(lease), "%d", m->c.lease_s);
	attrs_who_fill(m->c.who, &w, p);
	p[4] = m->c.bucket;
	p[5] = m->c.key;
	rc = pg_exec(x, db_sql_attrs_drop_unclaimed, 6, p, NULL);
	if (rc)
		goto out;
	p[5] = m->from;
	p[6] = m->c.key;
	p[7] = m->c.claimer;
	p[8] = lease;
	p[9] = m->own1 && *m->own1 ? m->own1 : NULL;
	p[10] = m->own2 && *m->own2 ? m->own2 : NULL;
	rc = pg_exec(x, db_sql_attrs_move_claim, 11, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 1) {
		move_claim_out(res, o);
		goto out;
	}
	PQclear(res);
	res = NULL;
	/* from's row is not the file's own (none, or another create's):
	 * `to` is claimed with the file's mode and owner */
	m->c.take = 0;
	rc = pg_attrs_claim(x, &m->c);
	if (rc == 0) {
		o->what = DB_ATTR_MODE | DB_ATTR_OWNER;
		o->mode = m->c.a->mode & 07777;
		o->uid = m->c.a->uid;
		o->gid = m->c.a->gid;
	}
out:
	PQclear(res);
	return rc;
}

int db_attrs_move_claim(struct db *d, const char *bucket, const char *from,
			const char *to, const char *own1, const char *own2,
			const struct db_attrs *a, const char *claimer,
			int lease_s, int take, const struct actor *who,
			struct db_attrs *out, struct db_claim *held)
{
	struct attrs_move_claim_args m = {.c = {.bucket = bucket,
						.key = to,
						.claimer = claimer,
						.a = a,
						.who = who,
						.lease_s = lease_s,
						.take = take,
						.held = held},
					  .from = from,
					  .own1 = own1,
					  .own2 = own2,
					  .out = out};
	struct db_claim seen = {0};
	int rc;

	if (held && take) {
		seen = *held; /* ours now: freed below */
		m.seen_etag = seen.etag;
		m.seen_holder = seen.holder;
	} else if (held) {
		db_claim_free(held);
	}
	if (held)
		memset(held, 0, sizeof(*held));
	if (!d || !bucket || !from || !to || !a || !claimer || !out) {
		db_claim_free(&seen);
		return -EINVAL;
	}
	rc = db_run(d, "move a file's attributes as a claim", 1, 0,
		    pg_attrs_move_claim, &m);
	db_claim_free(&seen);
	if (rc != -EEXIST)
		db_claim_free(held);
	return rc;
}
