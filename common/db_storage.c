/* db_storage.c - storage_audit rows and the promotion journal; see
 * db_storage.h.
 *
 * Writers of storage rows serialise per destination (bucket, key) on a
 * transaction-scoped advisory lock, and under dedup=content per (bucket,
 * project, sha256, size) on a second one, always taken in that order. The
 * unique partial indexes of migration 6 back the locks against writers that
 * skip them: one open journal entry per destination, per source and per
 * content, one storage row per journal entry. */
#include "db_storage.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "log.h"

/* First halves of the (int, int) advisory locks ("CUSU", "CUSV" read as
 * big-endian integers, beside reception's "CUST"; the owners' "CUSW" is
 * DB_OWNER_CLASS in db_internal.h). */
#define DB_STORE_KEY_CLASS "1129665365"
#define DB_CONTENT_CLASS "1129665366"

static const char *const db_outcome_names[] = {
    "copied",	 "restored",	      "adopted",
    "duplicate", "duplicate_content", "conflict",
};

const char *db_outcome_name(enum db_outcome o)
{
	if ((unsigned)o >= sizeof(db_outcome_names) / sizeof(*db_outcome_names))
		return "unknown";
	return db_outcome_names[o];
}

/* clang-format off */
static const char db_sql_lock[] =
	"SELECT pg_advisory_xact_lock($1::integer, $2::integer)";

static const char db_sql_project_name[] =
	"SELECT coalesce(name, prefix) FROM projects_registry"
	" WHERE prefix = $1::text ORDER BY id LIMIT 1";

static const char db_sql_source_live[] =
	"SELECT 1 FROM reception_audit WHERE id = $1::bigint"
	" AND removed_at IS NULL FOR UPDATE";

/* $1 dest bucket, $2 dest key, $3 source bucket, $4 source key,
 * $5 dedup content, $6 prefix, $7 sha256, $8 size. */
static const char db_sql_busy[] =
	"SELECT EXISTS (SELECT 1 FROM promotion_journal"
	" WHERE state IN ('intent', 'stored') AND ("
	" (dest_bucket = $1::text AND dest_key = $2::text)"
	" OR (source_bucket = $3::text AND source_key = $4::text)"
	" OR ($5::boolean AND dedup_content AND dest_bucket = $1::text"
	"  AND project_prefix = $6::text AND sha256 = $7::text"
	"  AND size_bytes = $8::bigint)))";

/* The newest row that claims the key (seed rows may have no bucket), and
 * the ETag its journal entry recorded. */
static const char db_sql_key_row[] =
	"SELECT coalesce(s.outcome, 'copied'), s.sha256, s.size_bytes,"
	" s.duplicate_of, coalesce(j.dest_etag, '')"
	" FROM storage_audit s LEFT JOIN promotion_journal j"
	" ON j.id = s.journal_id WHERE s.dest_key = $2::text"
	" AND coalesce(s.dest_bucket, $1::text) = $1::text"
	" AND s.removed_at IS NULL ORDER BY s.id DESC LIMIT 1";

/* The ETag recorded for the object of content ($3, $4) at key $2: that
 * of its newest row that stored or found it there. */
static const char db_sql_target_etag[] =
	"SELECT coalesce(j.dest_etag, '') FROM storage_audit s"
	" JOIN promotion_journal j ON j.id = s.journal_id"
	" WHERE s.dest_key = $2::text"
	" AND coalesce(s.dest_bucket, $1::text) = $1::text"
	" AND s.sha256 = $3::text AND s.size_bytes = $4::bigint"
	" AND s.removed_at IS NULL"
	" AND coalesce(s.outcome, 'copied') <> 'duplicate_content'"
	" ORDER BY s.id DESC LIMIT 1";

/* A stored object of the same content in the project under another key. */
static const char db_sql_content_row[] =
	"SELECT dest_key FROM storage_audit"
	" WHERE project_prefix = $1::text"
	" AND coalesce(dest_bucket, $2::text) = $2::text"
	" AND sha256 = $3::text AND size_bytes = $4::bigint"
	" AND dest_key <> $5::text AND removed_at IS NULL"
	" AND coalesce(outcome, 'copied') IN ('copied', 'restored', 'adopted')"
	" ORDER BY id LIMIT 1";

static const char db_sql_journal_insert[] =
	"INSERT INTO promotion_journal (reception_id, source_bucket,"
	" source_key, source_etag, dest_bucket, dest_key, project_prefix,"
	" size_bytes, sha256, xxh128, dedup_content, outcome, duplicate_of,"
	" state, owner, moved_by, moved_uid, moved_user, moved_host, dest_etag)"
	" VALUES ($1::bigint, $2::text, $3::text, $4::text, $5::text, $6::text,"
	" $7::text, $8::bigint, $9::text, $10::text, $11::boolean, $12::text,"
	" $13::text, $14::text, $15::integer, $16::text, $17::bigint,"
	" $18::text, $19::text, $20::text) RETURNING id";

/* The storage row of journal entry $1, unless it has one already. */
static const char db_sql_row_from_journal[] =
	"INSERT INTO storage_audit (project_prefix, project_name, dest_bucket,"
	" dest_key, size_bytes, moved_at, source_bucket, source_key,"
	" reception_id, outcome, duplicate_of, xxh128, sha256, moved_by,"
	" moved_uid, moved_user, moved_host, journal_id)"
	" SELECT j.project_prefix, coalesce((SELECT p.name FROM"
	"  projects_registry p WHERE p.prefix = j.project_prefix"
	"  ORDER BY p.id LIMIT 1), j.project_prefix), j.dest_bucket,"
	" j.dest_key, j.size_bytes, now(), j.source_bucket, j.source_key,"
	" j.reception_id, j.outcome, j.duplicate_of, j.xxh128, j.sha256,"
	" j.moved_by, j.moved_uid, j.moved_user, j.moved_host, j.id"
	" FROM promotion_journal j WHERE j.id = $1::bigint"
	" AND NOT EXISTS (SELECT 1 FROM storage_audit s"
	"  WHERE s.journal_id = $1::bigint)";

static const char db_sql_journal_lock[] =
	"SELECT dest_bucket, dest_key, state FROM promotion_journal"
	" WHERE id = $1::bigint FOR UPDATE";

/* $2: the ETag the verification saw (NULL: unknown, keeps any). */
static const char db_sql_journal_stored[] =
	"UPDATE promotion_journal SET state = 'stored', updated_at = now(),"
	" dest_etag = coalesce($2::text, dest_etag) WHERE id = $1::bigint";

static const char db_sql_reception_promoted[] =
	"UPDATE reception_audit SET removed_at = now(),"
	" removal_reason = 'promoted to ' || j.dest_bucket || '/' || j.dest_key"
	" FROM promotion_journal j WHERE j.id = $1::bigint"
	" AND reception_audit.id = j.reception_id"
	" AND reception_audit.removed_at IS NULL RETURNING reception_audit.id";

static const char db_sql_journal_done[] =
	"UPDATE promotion_journal SET state = 'done', updated_at = now()"
	" WHERE id = $1::bigint";

/* A live storage row claiming $2 in bucket $1 (seed rows: no bucket). */
static const char db_sql_key_claimed[] =
	"SELECT 1 FROM storage_audit WHERE dest_key = $2::text"
	" AND coalesce(dest_bucket, $1::text) = $1::text"
	" AND removed_at IS NULL LIMIT 1";

static const char db_sql_journal_state[] =
	"SELECT state FROM promotion_journal WHERE id = $1::bigint";

static const char db_sql_journal_failed[] =
	"UPDATE promotion_journal SET state = 'failed', error = $2::text,"
	" updated_at = now() WHERE id = $1::bigint AND state = 'intent'"
	" RETURNING id";

#define DB_JOURNAL_COLS \
	"id, coalesce(reception_id, 0), state, outcome, owner," \
	" source_bucket, source_key, source_etag, dest_bucket, dest_key," \
	" sha256, size_bytes, coalesce(xxh128, '')," \
	" coalesce(moved_uid, -1), coalesce(moved_user, '')," \
	" coalesce(moved_host, '')"

static const char db_sql_journal_get[] =
	"SELECT " DB_JOURNAL_COLS " FROM promotion_journal"
	" WHERE id = $1::bigint";

static const char db_sql_journal_open_source[] =
	"SELECT " DB_JOURNAL_COLS " FROM promotion_journal"
	" WHERE source_bucket = $1::text AND source_key = $2::text"
	" AND state IN ('intent', 'stored') ORDER BY id LIMIT 1";

static const char db_sql_journal_blocker[] =
	"SELECT " DB_JOURNAL_COLS " FROM promotion_journal"
	" WHERE state IN ('intent', 'stored') AND ("
	" (dest_bucket = $1::text AND dest_key = $2::text)"
	" OR (source_bucket = $3::text AND source_key = $4::text)"
	" OR ($5::boolean AND dedup_content AND dest_bucket = $1::text"
	"  AND project_prefix = $6::text AND sha256 = $7::text"
	"  AND size_bytes = $8::bigint)) ORDER BY id LIMIT 1";

static const char db_sql_open_owners[] =
	"SELECT DISTINCT owner FROM promotion_journal"
	" WHERE state IN ('intent', 'stored') AND owner <> $1::integer";

static const char db_sql_owned[] =
	"SELECT " DB_JOURNAL_COLS " FROM promotion_journal"
	" WHERE state IN ('intent', 'stored') AND owner = $1::integer"
	" ORDER BY id";

static const char db_sql_owner_next[] =
	"SELECT nextval('promotion_owner_seq')::integer";
static const char db_sql_owner_lock[] =
	"SELECT pg_advisory_lock($1::integer, $2::integer)";
static const char db_sql_owner_try[] =
	"SELECT pg_try_advisory_lock($1::integer, $2::integer)";
/* The fence of a journal step: entry $1 belongs to owner $2 and the
 * owner's session (backend $3) holds that owner's lock now. */
static const char db_sql_fence[] =
	"SELECT 1 FROM promotion_journal j WHERE j.id = $1::bigint"
	" AND j.owner = $2::integer AND EXISTS (SELECT 1 FROM pg_locks l"
	"  WHERE l.locktype = 'advisory' AND l.classid = "
	DB_OWNER_CLASS "::bigint::oid"
	"  AND l.objid = $2::bigint::oid AND l.objsubid = 2"
	"  AND l.pid = $3::integer AND l.granted)";

/* A dead owner's open entries (its lock held by the caller) become $2's:
 * all of them ($3 NULL) or entry $3. */
static const char db_sql_takeover[] =
	"UPDATE promotion_journal SET owner = $2::integer, updated_at = now()"
	" WHERE owner = $1::integer AND state IN ('intent', 'stored')"
	" AND ($3::bigint IS NULL OR id = $3::bigint)"
	" RETURNING " DB_JOURNAL_COLS;

static const char db_sql_owner_session[] =
	"SELECT pg_catalog.set_config('idle_session_timeout', '0', false)";

static const char db_sql_owner_unlock[] =
	"SELECT pg_advisory_unlock($1::integer, $2::integer)";
/* clang-format on */

/* FNV-1a over the strings, each followed by a NUL: a lock object id. */
static void db_lock_obj(const char *const *parts, int n, char obj[16])
{
	uint32_t h = 2166136261u;
	const unsigned char *s;
	int i;

	for (i = 0; i < n; i++) {
		for (s = (const unsigned char *)parts[i]; *s; s++)
			h = (h ^ *s) * 16777619u;
		h *= 16777619u;
	}
	snprintf(obj, 16, "%" PRId32, (int32_t)h);
}

static int pg_lock(struct pg_ctx *x, const char *cls, const char *const *parts,
		   int n)
{
	const char *p[2] = {cls, NULL};
	char obj[16];

	db_lock_obj(parts, n, obj);
	p[1] = obj;
	return pg_exec(x, db_sql_lock, 2, p, NULL);
}

static int pg_lock_dest(struct pg_ctx *x, const char *bucket, const char *key)
{
	const char *parts[2] = {bucket, key};

	return pg_lock(x, DB_STORE_KEY_CLASS, parts, 2);
}

/* ---- projects ---------------------------------------------------------- */

struct db_name_args {
	const char *prefix;
	char *out;
	size_t len;
};

static int pg_project_name(struct pg_ctx *x, void *arg)
{
	struct db_name_args *a = arg;
	const char *p[1] = {a->prefix};
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_project_name, 1, p, &res);
	if (rc)
		return rc;
	if (PQntuples(res) < 1)
		rc = -ENOENT;
	else
		snprintf(a->out, a->len, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return rc;
}

int db_project_name(struct db *d, const char *prefix, char *out, size_t len)
{
	struct db_name_args a = {prefix, out, len};

	if (!d || !prefix || !out || !len)
		return -EINVAL;
	return db_run(d, "project name", 0, 0, pg_project_name, &a);
}

/* ---- reception rows -------------------------------------------------- */

/* clang-format off */
static const char db_sql_reception_row[] =
	"SELECT id, coalesce(size_bytes, -1), coalesce(etag, ''),"
	" coalesce(sha256, ''), coalesce(xxh128, '') FROM reception_audit"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at IS NULL ORDER BY id DESC LIMIT 1";
/* clang-format on */

struct db_rrow_args {
	const char *v[2];
	struct db_reception_row *out;
};

static int pg_reception_row(struct pg_ctx *x, void *arg)
{
	struct db_rrow_args *a = arg;
	struct db_reception_row *o = a->out;
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_reception_row, 2, a->v, &res);
	if (!rc && PQntuples(res) < 1)
		rc = -ENOENT;
	if (!rc) {
		o->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		o->size = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		snprintf(o->etag, sizeof(o->etag), "%s", PQgetvalue(res, 0, 2));
		snprintf(o->sha256, sizeof(o->sha256), "%s",
			 PQgetvalue(res, 0, 3));
		snprintf(o->xxh128, sizeof(o->xxh128), "%s",
			 PQgetvalue(res, 0, 4));
	}
	PQclear(res);
	return rc;
}

int db_reception_row_get(struct db *d, const char *bucket, const char *key,
			 struct db_reception_row *out)
{
	struct db_rrow_args a = {{bucket, key}, out};

	memset(out, 0, sizeof(*out));
	return db_run(d, "reception row", 0, 0, pg_reception_row, &a);
}

/* ---- the decision ------------------------------------------------------ */

struct db_decide_args {
	const struct db_promo *p;
	db_decide_fn fn;
	void *arg;
	enum db_outcome outcome;
	int64_t journal_id;
	char dup_of[1025];
};

/* Inserts the journal entry (state given) and returns its id. */
static int pg_journal_insert(struct pg_ctx *x, const struct db_promo *p,
			     enum db_outcome o, const char *dup_of,
			     const char *state, const char *dest_etag,
			     int64_t *id)
{
	char rid[24], size[24], owner[16], uid[24], by[400];
	const char *v[20];
	PGresult *res = NULL;
	int rc;

	snprintf(rid, sizeof(rid), "%" PRId64, p->reception_id);
	snprintf(size, sizeof(size), "%" PRIu64, p->size);
	snprintf(owner, sizeof(owner), "%d", p->owner);
	v[0] = p->reception_id > 0 ? rid : NULL;
	v[1] = p->source_bucket;
	v[2] = p->source_key;
	v[3] = p->source_etag;
	v[4] = p->dest_bucket;
	v[5] = p->dest_key;
	v[6] = p->project_prefix;
	v[7] = size;
	v[8] = p->sha256;
	v[9] = p->xxh128;
	v[10] = p->dedup_content ? "true" : "false";
	v[11] = db_outcome_name(o);
	v[12] = dup_of;
	v[13] = state;
	v[14] = owner;
	v[15] = v[16] = v[17] = v[18] = NULL;
	if (p->who) {
		actor_format(p->who, by, sizeof(by));
		snprintf(uid, sizeof(uid), "%lu", (unsigned long)p->who->uid);
		v[15] = by;
		v[16] = p->who->uid == (uid_t)-1 ? NULL : uid;
		v[17] = p->who->user;
		v[18] = p->who->host;
	}
	v[19] = dest_etag && *dest_etag ? dest_etag : NULL;
	rc = pg_exec(x, db_sql_journal_insert, 20, v, &res);
	if (!rc)
		*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rc;
}

static int pg_row_from_journal(struct pg_ctx *x, int64_t id)
{
	char ids[24];
	const char *v[1] = {ids};

	snprintf(ids, sizeof(ids), "%" PRId64, id);
	return pg_exec(x, db_sql_row_from_journal, 1, v, NULL);
}

/* Reads what the database holds about p into *s (under the locks). */
static int pg_decide_read(struct pg_ctx *x, const struct db_promo *p,
			  struct db_promo_seen *s)
{
	char rid[24], size[24];
	const char *v[8];
	PGresult *res = NULL;
	int rc;

	memset(s, 0, sizeof(*s));
	snprintf(rid, sizeof(rid), "%" PRId64, p->reception_id);
	snprintf(size, sizeof(size), "%" PRIu64, p->size);
	v[0] = rid;
	rc = pg_exec(x, db_sql_source_live, 1, v, &res);
	if (rc)
		goto out;
	s->source_live = PQntuples(res) > 0;
	PQclear(res);
	res = NULL;

	v[0] = p->dest_bucket;
	v[1] = p->dest_key;
	v[2] = p->source_bucket;
	v[3] = p->source_key;
	v[4] = p->dedup_content ? "true" : "false";
	v[5] = p->project_prefix;
	v[6] = p->sha256;
	v[7] = size;
	rc = pg_exec(x, db_sql_busy, 8, v, &res);
	if (rc)
		goto out;
	s->busy = !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	res = NULL;

	rc = pg_exec(x, db_sql_key_row, 2, v, &res);
	if (rc)
		goto out;
	if (PQntuples(res) > 0) {
		s->has_row = 1;
		s->row_dup_content =
		    !strcmp(PQgetvalue(res, 0, 0), "duplicate_content");
		s->row_nohash = PQgetisnull(res, 0, 1);
		s->row_same = !PQgetisnull(res, 0, 1) &&
			      !PQgetisnull(res, 0, 2) &&
			      !strcmp(PQgetvalue(res, 0, 1), p->sha256) &&
			      !strcmp(PQgetvalue(res, 0, 2), size);
		if (!PQgetisnull(res, 0, 3))
			snprintf(s->row_dup_of, sizeof(s->row_dup_of), "%s",
				 PQgetvalue(res, 0, 3));
		snprintf(s->row_etag, sizeof(s->row_etag), "%s",
			 PQgetvalue(res, 0, 4));
	}
	PQclear(res);
	res = NULL;

	if (!p->dedup_content)
		goto target;
	v[0] = p->project_prefix;
	v[1] = p->dest_bucket;
	v[2] = p->sha256;
	v[3] = size;
	v[4] = p->dest_key;
	rc = pg_exec(x, db_sql_content_row, 5, v, &res);
	if (rc)
		goto out;
	if (PQntuples(res) > 0) {
		s->has_content = 1;
		snprintf(s->content_key, sizeof(s->content_key), "%s",
			 PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	res = NULL;
target:
	/* the object a duplicate_content would point at: its ETag */
	v[1] = s->row_dup_content ? s->row_dup_of
				  : (s->has_content ? s->content_key : "");
	if (!*v[1])
		goto out;
	v[0] = p->dest_bucket;
	v[2] = p->sha256;
	v[3] = size;
	rc = pg_exec(x, db_sql_target_etag, 4, v, &res);
	if (!rc && PQntuples(res) > 0)
		snprintf(s->target_etag, sizeof(s->target_etag), "%s",
			 PQgetvalue(res, 0, 0));
out:
	PQclear(res);
	return rc;
}

static int pg_promote_decide(struct pg_ctx *x, void *arg)
{
	struct db_decide_args *a = arg;
	const struct db_promo *p = a->p;
	struct db_promo_seen seen;
	const char *dup_of = NULL;
	char size[24], etag[80] = "";
	int rc;

	a->journal_id = 0;
	a->dup_of[0] = '\0';
	rc = pg_lock_dest(x, p->dest_bucket, p->dest_key);
	if (!rc && p->dedup_content) {
		const char *parts[4] = {p->dest_bucket, p->project_prefix,
					p->sha256, size};

		snprintf(size, sizeof(size), "%" PRIu64, p->size);
		rc = pg_lock(x, DB_CONTENT_CLASS, parts, 4);
	}
	if (!rc)
		rc = pg_decide_read(x, p, &seen);
	if (rc)
		return rc;
	if (!seen.source_live)
		return -ESTALE;
	if (seen.busy)
		return -EBUSY;
	rc = a->fn(a->arg, &seen, &a->outcome, etag);
	if (rc)
		return rc;
	switch (a->outcome) {
	case DB_OUT_CONFLICT:
		return -EEXIST;
	case DB_OUT_DUPLICATE_CONTENT:
		dup_of =
		    seen.row_dup_content ? seen.row_dup_of : seen.content_key;
		snprintf(a->dup_of, sizeof(a->dup_of), "%s", dup_of);
		/* fall through */
	case DB_OUT_DUPLICATE:
		rc = pg_journal_insert(x, p, a->outcome, dup_of, "stored",
				       a->outcome == DB_OUT_DUPLICATE ? etag
								      : NULL,
				       &a->journal_id);
		if (!rc)
			rc = pg_row_from_journal(x, a->journal_id);
		return rc;
	case DB_OUT_COPIED:
	case DB_OUT_RESTORED:
	case DB_OUT_ADOPTED:
		return pg_journal_insert(x, p, a->outcome, NULL, "intent", NULL,
					 &a->journal_id);
	}
	return -EINVAL;
}

int db_promote_decide(struct db *d, const struct db_promo *p, db_decide_fn fn,
		      void *arg, enum db_outcome *outcome, int64_t *journal_id,
		      char *dup_of)
{
	struct db_decide_args a = {.p = p, .fn = fn, .arg = arg};
	int rc;

	if (!d || !p || !fn || !p->sha256 || !p->source_etag)
		return -EINVAL;
	rc = db_run(d, "promotion decision", 1, 0, pg_promote_decide, &a);
	*outcome = a.outcome;
	*journal_id = a.journal_id;
	if (dup_of)
		snprintf(dup_of, 1025, "%s", a.dup_of);
	return rc;
}

/* ---- the steps --------------------------------------------------------- */

static int pg_fence(struct pg_ctx *x, struct db_owner *o, int64_t id);

struct db_step_args {
	int64_t id;
	struct db_owner *o;
	int64_t row;	  /* done: the reception row it closed, 0 for none */
	const char *etag; /* record: the destination's ETag, NULL unknown */
};

static int pg_promote_record(struct pg_ctx *x, void *arg)
{
	const struct db_step_args *sa = arg;
	const int64_t *id = &sa->id;
	char ids[24];
	const char *v[1] = {ids};
	PGresult *res = NULL;
	int rc;

	snprintf(ids, sizeof(ids), "%" PRId64, *id);
	rc = pg_exec(x, db_sql_journal_lock, 1, v, &res);
	if (rc)
		goto out;
	if (PQntuples(res) > 0 && !strcmp(PQgetvalue(res, 0, 2), "done"))
		goto out; /* finished by another worker or mount: rc 0 */
	if (PQntuples(res) < 1 || (strcmp(PQgetvalue(res, 0, 2), "intent") &&
				   strcmp(PQgetvalue(res, 0, 2), "stored"))) {
		rc = -ENOENT;
		goto out;
	}
	rc = pg_fence(x, sa->o, *id);
	if (!rc)
		rc = pg_lock_dest(x, PQgetvalue(res, 0, 0),
				  PQgetvalue(res, 0, 1));
	if (!rc)
		rc = pg_row_from_journal(x, *id);
	if (!rc) {
		const char *w[2] = {ids,
				    sa->etag && *sa->etag ? sa->etag : NULL};

		rc = pg_exec(x, db_sql_journal_stored, 2, w, NULL);
	}
out:
	PQclear(res);
	return rc;
}

/* A step refused by its fence: the owner's session is checked (after a
 * restart it takes its id again when it can) and the step tried once
 * more. */
static int db_step(struct db *d, struct db_owner *o, const char *what,
		   int (*fn)(struct pg_ctx *x, void *arg), void *arg)
{
	int rc = db_run(d, what, 1, 0, fn, arg), me;

	if (rc == -ENOLCK && o && !db_owner_check(o, &me))
		rc = db_run(d, what, 1, 0, fn, arg);
	return rc;
}

int db_promote_record(struct db *d, struct db_owner *o, int64_t journal_id,
		      const char *dest_etag)
{
	struct db_step_args a = {journal_id, o, 0, dest_etag};

	return db_step(d, o, "promotion record", pg_promote_record, &a);
}

static int pg_promote_done(struct pg_ctx *x, void *arg)
{
	struct db_step_args *sa = arg;
	const int64_t *id = &sa->id;
	char ids[24];
	const char *v[1] = {ids};
	PGresult *res = NULL;
	int rc;

	sa->row = 0; /* a transaction tried again starts afresh */
	snprintf(ids, sizeof(ids), "%" PRId64, *id);
	rc = pg_exec(x, db_sql_journal_lock, 1, v, &res);
	if (rc)
		goto out;
	if (PQntuples(res) < 1 || (strcmp(PQgetvalue(res, 0, 2), "stored") &&
				   strcmp(PQgetvalue(res, 0, 2), "done"))) {
		rc = -ENOENT; /* never before the storage row */
		goto out;
	}
	if (!strcmp(PQgetvalue(res, 0, 2), "done"))
		goto out; /* finished already: nothing to write */
	rc = pg_fence(x, sa->o, *id);
	PQclear(res);
	res = NULL;
	if (!rc)
		rc = pg_exec(x, db_sql_reception_promoted, 1, v, &res);
	if (!rc && PQntuples(res) > 0)
		sa->row = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	if (!rc)
		rc = pg_exec(x, db_sql_journal_done, 1, v, NULL);
out:
	PQclear(res);
	return rc;
}

int db_promote_done(struct db *d, struct db_owner *o, int64_t journal_id,
		    int64_t *closed)
{
	struct db_step_args a = {journal_id, o, 0, NULL};
	int rc;

	rc = db_step(d, o, "promotion done", pg_promote_done, &a);
	if (closed)
		*closed = rc ? 0 : a.row;
	return rc;
}

struct db_fail_args {
	int64_t id;
	const char *why;
	struct db_owner *o;
};

static int pg_promote_fail(struct pg_ctx *x, void *arg)
{
	struct db_fail_args *a = arg;
	char ids[24];
	const char *v[2] = {ids, a->why};
	PGresult *res = NULL;
	int rc;

	snprintf(ids, sizeof(ids), "%" PRId64, a->id);
	rc = pg_exec(x, db_sql_journal_lock, 1, v, &res);
	if (!rc && PQntuples(res) > 0 &&
	    !strcmp(PQgetvalue(res, 0, 2), "intent"))
		rc = pg_fence(x, a->o, a->id);
	PQclear(res);
	res = NULL;
	if (!rc)
		rc = pg_exec(x, db_sql_journal_failed, 2, v, &res);
	if (rc || PQntuples(res) > 0)
		goto out;
	PQclear(res);
	res = NULL;
	rc = pg_exec(x, db_sql_journal_state, 1, v, &res);
	if (!rc)
		rc = PQntuples(res) > 0 &&
			     (!strcmp(PQgetvalue(res, 0, 0), "stored") ||
			      !strcmp(PQgetvalue(res, 0, 0), "done"))
			 ? -EALREADY
			 : -ENOENT;
out:
	PQclear(res);
	return rc;
}

int db_promote_fail(struct db *d, struct db_owner *o, int64_t journal_id,
		    const char *why)
{
	struct db_fail_args a = {journal_id, why ? why : "failed", o};

	return db_step(d, o, "promotion failed", pg_promote_fail, &a);
}

struct db_discard_args {
	int64_t id;
	const char *why;
	int (*del)(void *arg, const char *bucket, const char *key);
	void *arg;
	char *state;
	int claimed; /* a storage row claims the key: kept, entry failed */
	struct db_owner *o;
};

static int pg_promote_discard(struct pg_ctx *x, void *arg)
{
	struct db_discard_args *a = arg;
	char ids[24];
	const char *v[2] = {ids, a->why};
	PGresult *res = NULL, *row = NULL;
	int rc;

	snprintf(ids, sizeof(ids), "%" PRId64, a->id);
	rc = pg_exec(x, db_sql_journal_lock, 1, v, &res);
	if (rc)
		goto out;
	if (PQntuples(res) < 1) {
		rc = -ENOENT;
		goto out;
	}
	snprintf(a->state, 16, "%s", PQgetvalue(res, 0, 2));
	if (strcmp(a->state, "intent")) {
		rc = -EALREADY;
		goto out;
	}
	rc = pg_fence(x, a->o, a->id);
	if (!rc)
		rc = pg_lock_dest(x, PQgetvalue(res, 0, 0),
				  PQgetvalue(res, 0, 1));
	if (!rc) {
		const char *k[2] = {PQgetvalue(res, 0, 0),
				    PQgetvalue(res, 0, 1)};

		rc = pg_exec(x, db_sql_key_claimed, 2, k, &row);
	}
	if (rc)
		goto out;
	a->claimed = PQntuples(row) > 0;
	if (a->claimed) {
		rc = pg_exec(x, db_sql_journal_failed, 2, v, NULL);
		goto out;
	}
	rc = a->del(a->arg, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
	if (!rc)
		rc = pg_exec(x, db_sql_journal_failed, 2, v, NULL);
out:
	PQclear(row);
	PQclear(res);
	return rc;
}

int db_promote_discard(struct db *d, struct db_owner *o, int64_t journal_id,
		       const char *why,
		       int (*del)(void *arg, const char *bucket,
				  const char *key),
		       void *arg, char *state)
{
	struct db_discard_args a = {
	    journal_id, why ? why : "failed", del, arg, state, 0, o};
	int rc;

	if (!d || !del || !state)
		return -EINVAL;
	state[0] = '\0';
	rc = db_step(d, o, "promotion discard", pg_promote_discard, &a);
	return !rc && a.claimed ? -EEXIST : rc;
}

/* ---- reading entries --------------------------------------------------- */

static void pg_entry(PGresult *res, int i, struct db_journal_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
	e->reception_id = strtoll(PQgetvalue(res, i, 1), NULL, 10);
	snprintf(e->state, sizeof(e->state), "%s", PQgetvalue(res, i, 2));
	snprintf(e->outcome, sizeof(e->outcome), "%s", PQgetvalue(res, i, 3));
	e->owner = atoi(PQgetvalue(res, i, 4));
	snprintf(e->source_bucket, sizeof(e->source_bucket), "%s",
		 PQgetvalue(res, i, 5));
	snprintf(e->source_key, sizeof(e->source_key), "%s",
		 PQgetvalue(res, i, 6));
	snprintf(e->source_etag, sizeof(e->source_etag), "%s",
		 PQgetvalue(res, i, 7));
	snprintf(e->dest_bucket, sizeof(e->dest_bucket), "%s",
		 PQgetvalue(res, i, 8));
	snprintf(e->dest_key, sizeof(e->dest_key), "%s", PQgetvalue(res, i, 9));
	snprintf(e->sha256, sizeof(e->sha256), "%s", PQgetvalue(res, i, 10));
	e->size = strtoull(PQgetvalue(res, i, 11), NULL, 10);
	snprintf(e->xxh128, sizeof(e->xxh128), "%s", PQgetvalue(res, i, 12));
	e->who.uid = (uid_t)strtol(PQgetvalue(res, i, 13), NULL, 10);
	snprintf(e->who.user, sizeof(e->who.user), "%s",
		 PQgetvalue(res, i, 14));
	snprintf(e->who.host, sizeof(e->who.host), "%s",
		 PQgetvalue(res, i, 15));
}

struct db_get_args {
	const char *sql;
	int n;
	const char *v[2];
	struct db_journal_entry *e;
};

static int pg_journal_get(struct pg_ctx *x, void *arg)
{
	struct db_get_args *a = arg;
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, a->sql, a->n, a->v, &res);
	if (!rc && PQntuples(res) < 1)
		rc = -ENOENT;
	if (!rc)
		pg_entry(res, 0, a->e);
	PQclear(res);
	return rc;
}

int db_journal_get(struct db *d, int64_t id, struct db_journal_entry *e)
{
	char ids[24];
	struct db_get_args a = {db_sql_journal_get, 1, {ids, NULL}, e};

	snprintf(ids, sizeof(ids), "%" PRId64, id);
	return db_run(d, "journal entry", 0, 0, pg_journal_get, &a);
}

int db_journal_open_for_source(struct db *d, const char *bucket,
			       const char *key, struct db_journal_entry *e)
{
	struct db_get_args a = {
	    db_sql_journal_open_source, 2, {bucket, key}, e};

	return db_run(d, "journal entry of source", 0, 0, pg_journal_get, &a);
}

struct db_blocker_args {
	const char *v[8];
	struct db_journal_entry *e;
};

static int pg_journal_blocker(struct pg_ctx *x, void *arg)
{
	struct db_blocker_args *a = arg;
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_journal_blocker, 8, a->v, &res);
	if (!rc && PQntuples(res) < 1)
		rc = -ENOENT;
	if (!rc)
		pg_entry(res, 0, a->e);
	PQclear(res);
	return rc;
}

int db_journal_blocker(struct db *d, const struct db_promo *p,
		       struct db_journal_entry *e)
{
	struct db_blocker_args a = {{NULL}, e};
	char size[24];

	snprintf(size, sizeof(size), "%" PRIu64, p->size);
	a.v[0] = p->dest_bucket;
	a.v[1] = p->dest_key;
	a.v[2] = p->source_bucket;
	a.v[3] = p->source_key;
	a.v[4] = p->dedup_content ? "true" : "false";
	a.v[5] = p->project_prefix;
	a.v[6] = p->sha256;
	a.v[7] = size;
	return db_run(d, "journal blocker", 0, 0, pg_journal_blocker, &a);
}

/* ---- owners ------------------------------------------------------------ */

struct db_owner {
	struct db *d;
	pthread_mutex_t lock; /* one statement at a time on conn */
	PGconn *conn;	      /* protected by lock: its own session, the owner
				 lock lives with it */
	int id;		      /* protected by lock */
	char ids[16];	      /* protected by lock */
	pthread_mutex_t fence_lock;
	int fence_id;  /* protected by fence_lock: id and backend pid of the */
	int fence_pid; /* session holding it, for the steps' fence */
};

/* One statement on the owner's connection. */
static int pg_owner_exec(struct db_owner *o, const char *what, const char *sql,
			 int n, const char *const *v, PGresult **out)
{
	struct pg_ctx x = {.d = o->d,
			   .conn = o->conn,
			   .slot = -1, /* not the pool's: nothing prepared */
			   .what = what,
			   .timeout_ms = DB_STATEMENT_TIMEOUT_MS};

	return pg_exec(&x, sql, n, v, out);
}

static void pg_owner_fence_set(struct db_owner *o)
{
	pthread_mutex_lock(&o->fence_lock);
	o->fence_id = o->conn ? o->id : 0;
	o->fence_pid = o->conn ? PQbackendPID(o->conn) : 0;
	pthread_mutex_unlock(&o->fence_lock);
}

/* A new session holding an owner id's lock, in o (lock held or o not
 * shared yet). The old session, if any, is closed first. The id held
 * before (a session lost to a restart) is taken again when its lock is
 * free: the entries journaled under it stay this process's, unless
 * another process's recovery took them over meanwhile (their owner column
 * then says so, and the steps' fence refuses them). Else a new id. */
static int pg_owner_connect(struct db_owner *o)
{
	const char *v[2];
	PGresult *res = NULL;
	int rc, again = 0;

	if (o->conn)
		PQfinish(o->conn);
	o->conn = PQconnectdbParams(o->d->kw, o->d->val, 1);
	if (!o->conn || PQstatus(o->conn) != CONNECTION_OK) {
		char why[512];

		pg_conn_error(o->d, o->conn, why, sizeof(why));
		log_error("database: promotion owner: cannot connect: %s", why);
		rc = -EIO;
		goto fail;
	}
	/* The session is idle between promotions: idle_session_timeout
	 * (PostgreSQL 14+; the role's, the database's or the conninfo's)
	 * would end it and free the owner lock, and another process's
	 * recovery would take this live process's entries over (its steps
	 * then refused by their fence: the promotions in flight fail). */
	if (PQserverVersion(o->conn) >= 140000) {
		rc = pg_owner_exec(o, "promotion owner session",
				   db_sql_owner_session, 0, NULL, NULL);
		if (rc)
			goto fail;
	}
	v[0] = DB_OWNER_CLASS;
	if (o->id) {
		v[1] = o->ids;
		rc = pg_owner_exec(o, "promotion owner retake",
				   db_sql_owner_try, 2, v, &res);
		if (rc)
			goto fail;
		again = !strcmp(PQgetvalue(res, 0, 0), "t");
		PQclear(res);
		res = NULL;
		if (!again)
			log_warn("promotion: journal owner %d is held by "
				 "another session (a recovery): its entries "
				 "are no longer this process's",
				 o->id);
	}
	if (!again) {
		rc = pg_owner_exec(o, "promotion owner id", db_sql_owner_next,
				   0, NULL, &res);
		if (rc)
			goto fail;
		o->id = atoi(PQgetvalue(res, 0, 0));
		snprintf(o->ids, sizeof(o->ids), "%d", o->id);
		PQclear(res);
		res = NULL;
		v[1] = o->ids;
		rc = pg_owner_exec(o, "promotion owner lock", db_sql_owner_lock,
				   2, v, NULL);
		if (rc)
			goto fail;
	}
	pg_owner_fence_set(o);
	log_info("promotion: this process is journal owner %d%s", o->id,
		 again ? " again" : "");
	return 0;
fail:
	PQclear(res);
	if (o->conn)
		PQfinish(o->conn);
	o->conn = NULL;
	pg_owner_fence_set(o);
	return rc;
}

int db_owner_take(struct db *d, struct db_owner **out, int *owner_id)
{
	struct db_owner *o;
	int rc;

	*out = NULL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->d = d;
	pthread_mutex_init(&o->fence_lock, NULL);
	rc = pg_owner_connect(o);
	if (rc) {
		pthread_mutex_destroy(&o->fence_lock);
		free(o);
		return rc;
	}
	pthread_mutex_init(&o->lock, NULL);
	*out = o;
	*owner_id = o->id;
	return 0;
}

int db_owner_check(struct db_owner *o, int *owner_id)
{
	int rc = 0;

	if (!o)
		return -EINVAL;
	pthread_mutex_lock(&o->lock);
	/* One round trip: a session the server ended (a restart) is only
	 * noticed by using it. */
	if (o->conn) {
		rc = pg_owner_exec(o, "promotion owner check", "SELECT 1", 0,
				   NULL, NULL);
		if (!rc) {
			*owner_id = o->id;
			goto out;
		}
		log_warn("promotion: the session holding journal owner %d is "
			 "lost: its entries are anyone's to recover until it "
			 "is taken again",
			 o->id);
	}
	rc = pg_owner_connect(o);
	if (!rc)
		*owner_id = o->id;
out:
	pthread_mutex_unlock(&o->lock);
	return rc;
}

int db_owner_id(struct db_owner *o)
{
	int id;

	if (!o)
		return 0;
	pthread_mutex_lock(&o->fence_lock);
	id = o->fence_id;
	pthread_mutex_unlock(&o->fence_lock);
	return id;
}

void db_owner_release(struct db_owner *o)
{
	if (!o)
		return;
	if (o->conn)
		PQfinish(o->conn); /* ends the session: the lock goes */
	pthread_mutex_destroy(&o->lock);
	pthread_mutex_destroy(&o->fence_lock);
	free(o);
}

/* Under o->lock: takes dead's lock (0 when taken, -EBUSY when its session
 * lives), makes its open entries (all, or entry id when id > 0) o's, and
 * lets the lock go. *out gets the entries taken over (caller PQclears). */
static int pg_owner_takeover(struct db_owner *o, const char *dead, int64_t id,
			     PGresult **out)
{
	char ids[24];
	const char *v[3];
	PGresult *res = NULL;
	int rc, got;

	*out = NULL;
	if (!o->conn)
		return -EIO;
	if (!strcmp(dead, o->ids))
		return -EBUSY; /* this process's own */
	v[0] = DB_OWNER_CLASS;
	v[1] = dead;
	rc = pg_owner_exec(o, "journal owner lock", db_sql_owner_try, 2, v,
			   &res);
	if (rc)
		return rc;
	got = !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	if (!got)
		return -EBUSY; /* that owner lives: its entries are its own */
	snprintf(ids, sizeof(ids), "%" PRId64, id);
	v[0] = dead;
	v[1] = o->ids;
	v[2] = id > 0 ? ids : NULL;
	rc = pg_owner_exec(o, "journal takeover", db_sql_takeover, 3, v, out);
	v[0] = DB_OWNER_CLASS;
	v[1] = dead;
	if (pg_owner_exec(o, "journal owner unlock", db_sql_owner_unlock, 2, v,
			  NULL))
		log_warn("promotion: could not release the lock of owner %s",
			 dead);
	if (!rc && PQntuples(*out) > 0)
		log_warn("promotion: journal owner %d took over %d open "
			 "entr%s of owner %s (gone)",
			 o->id, PQntuples(*out),
			 PQntuples(*out) == 1 ? "y" : "ies", dead);
	return rc;
}

int db_journal_takeover(struct db_owner *o, int64_t journal_id, int dead,
			struct db_journal_entry *e)
{
	char deads[16];
	PGresult *res = NULL;
	int rc, me;

	if (!o || !e)
		return -EINVAL;
	rc = db_owner_check(o, &me); /* this process's own lock first */
	if (rc)
		return rc;
	snprintf(deads, sizeof(deads), "%d", dead);
	pthread_mutex_lock(&o->lock);
	rc = pg_owner_takeover(o, deads, journal_id, &res);
	pthread_mutex_unlock(&o->lock);
	if (!rc && PQntuples(res) < 1)
		rc = -ENOENT;
	if (!rc)
		pg_entry(res, 0, e);
	PQclear(res);
	return rc;
}

/* The step's fence, inside its transaction after the entry's row lock:
 * 0, or -ENOLCK when the entry is not (or no longer) this owner's. */
static int pg_fence(struct pg_ctx *x, struct db_owner *o, int64_t id)
{
	char ids[24], me[16], pid[16];
	const char *v[3] = {ids, me, pid};
	PGresult *res = NULL;
	int rc;

	if (!o)
		return 0; /* unfenced (tests of the db layer) */
	snprintf(ids, sizeof(ids), "%" PRId64, id);
	pthread_mutex_lock(&o->fence_lock);
	snprintf(me, sizeof(me), "%d", o->fence_id);
	snprintf(pid, sizeof(pid), "%d", o->fence_pid);
	pthread_mutex_unlock(&o->fence_lock);
	rc = pg_exec(x, db_sql_fence, 3, v, &res);
	if (!rc && PQntuples(res) < 1)
		rc = -ENOLCK;
	PQclear(res);
	return rc;
}

int db_journal_recover(struct db_owner *o,
		       int (*fn)(void *arg, const struct db_journal_entry *e),
		       void *arg, int *n_seen)
{
	PGresult *owners = NULL, *res = NULL;
	struct db_journal_entry e;
	const char *v[1];
	int rc, first = 0, i, me;

	*n_seen = 0;
	rc = db_owner_check(o, &me);
	if (rc)
		return rc;
	pthread_mutex_lock(&o->lock);
	v[0] = o->ids;
	rc = pg_owner_exec(o, "journal owners", db_sql_open_owners, 1, v,
			   &owners);
	for (i = 0; !rc && i < PQntuples(owners); i++) {
		rc = pg_owner_takeover(o, PQgetvalue(owners, i, 0), 0, &res);
		if (rc == -EBUSY)
			rc = 0;
		PQclear(res);
		res = NULL;
	}
	PQclear(owners);
	/* Then every open entry of this owner: those just taken over, and
	 * its own that no step finished (the caller skips those it works
	 * on). */
	v[0] = o->ids;
	if (!rc)
		rc = pg_owner_exec(o, "journal entries", db_sql_owned, 1, v,
				   &res);
	pthread_mutex_unlock(&o->lock);
	/* worked outside the owner's session lock (the steps' fence and
	 * db_owner_check use it) */
	for (i = 0; !rc && i < PQntuples(res); i++) {
		int r;

		pg_entry(res, i, &e);
		(*n_seen)++;
		r = fn(arg, &e);
		if (r && !first)
			first = r;
	}
	PQclear(res);
	return rc ? rc : first;
}
