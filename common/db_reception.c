/* db_reception.c - reception_audit queries; see db.h.
 *
 * Writers of reception_audit serialise per (bucket, key) on a
 * transaction-scoped advisory lock and then on the row locks of the live
 * rows; the unique partial index on live rows (when the adopted data allows
 * it) makes that safe against writers that skip the advisory lock too. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "db_attrs.h"
#include "db_internal.h"
#include "log.h"
#include "sbuf.h"

/* clang-format off */
/* $1 bucket, $2 key: the live rows, newest first, locked. */
static const char db_sql_live_for_update[] =
	"SELECT id, etag, size_bytes, xxh128, sha256 FROM reception_audit"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at IS NULL ORDER BY id DESC FOR UPDATE";

/* $1 id: its (bucket, key) while it is live. */
static const char db_sql_live_by_id[] =
	"SELECT source_bucket, object_key FROM reception_audit"
	" WHERE id = $1::bigint AND removed_at IS NULL";

/* $1 id, $2 reason. */
static const char db_sql_remove_id[] =
	"UPDATE reception_audit SET removed_at = now(),"
	" removal_reason = $2::text"
	" WHERE id = $1::bigint AND removed_at IS NULL RETURNING id";

static const char db_sql_insert_reception[] =
	"INSERT INTO reception_audit (source_bucket, file_name, object_key,"
	" size_bytes, uploaded_at, xxh128, sha256, etag, origin, received_by,"
	" received_uid, received_user, received_host)"
	" VALUES ($1::text, $2::text, $3::text, $4::bigint, now(), $5::text,"
	" $6::text, $7::text, $8::text, $9::text, $10::bigint, $11::text,"
	" $12::text)"
	" RETURNING id";
/* The same, logged already removed ($13: removal_reason): an upload that was
 * replaced or removed before its row. */
static const char db_sql_insert_removed[] =
	"INSERT INTO reception_audit (source_bucket, file_name, object_key,"
	" size_bytes, uploaded_at, xxh128, sha256, etag, origin, received_by,"
	" received_uid, received_user, received_host, removed_at,"
	" removal_reason)"
	" VALUES ($1::text, $2::text, $3::text, $4::bigint, now(), $5::text,"
	" $6::text, $7::text, $8::text, $9::text, $10::bigint, $11::text,"
	" $12::text, now(), $13::text)"
	" RETURNING id";

/* $1 bucket, $2 key, $3 etag: does a live row record it? Does the key
 * have a live row at all? */
static const char db_sql_etag_rowed[] =
	"SELECT coalesce(bool_or(etag = $3::text), false), count(*) > 0"
	" FROM reception_audit WHERE source_bucket = $1::text"
	" AND object_key COLLATE \"C\" = $2::text AND removed_at IS NULL";
/* $1 bucket, $2 key: the key is being removed (migration 10), since the
 * start of the removal's transaction: a file opened once the object was
 * being deleted is newer than the removal. */
static const char db_sql_removal_note[] =
	"INSERT INTO reception_removals (source_bucket, object_key, removed_at)"
	" VALUES ($1::text, $2::text, now())"
	" ON CONFLICT (source_bucket, object_key)"
	" DO UPDATE SET removed_at = EXCLUDED.removed_at";

/* $1 bucket, $2 key, $3 ms: was the key removed in the last $3 ms? */
static const char db_sql_removed_since[] =
	"SELECT EXISTS (SELECT 1 FROM reception_removals"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at > clock_timestamp() - $3::bigint"
	" * interval '1 millisecond')";
/* clang-format on */

static const char *db_basename(const char *key)
{
	const char *s = strrchr(key, '/');

	return s ? s + 1 : key;
}

static int db_size_param(uint64_t size, char *buf, size_t len)
{
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	snprintf(buf, len, "%" PRIu64, size);
	return 0;
}

/* Actor as parameters: received_by, uid, user, host (all NULL for none). */
struct db_actor_params {
	char by[400];
	char uid[24];
};

static void db_actor_params(const struct actor *who, struct db_actor_params *ap,
			    const char **p)
{
	if (!who) {
		p[0] = p[1] = p[2] = p[3] = NULL;
		return;
	}
	if (who->uid == (uid_t)-1) {
		/* Not done through custodyfs: only the host that logged it. */
		snprintf(ap->by, sizeof(ap->by),
			 "another route (%s), logged by custodyfs @ %s",
			 who->user[0] ? who->user : "unknown uploader",
			 who->host);
		p[0] = ap->by;
		p[1] = NULL;
		p[2] = NULL;
		p[3] = who->host;
		return;
	}
	actor_format(who, ap->by, sizeof(ap->by));
	snprintf(ap->uid, sizeof(ap->uid), "%lu", (unsigned long)who->uid);
	p[0] = ap->by;
	p[1] = ap->uid;
	p[2] = who->user;
	p[3] = who->host;
}

struct db_record_args {
	const struct reception_new *r;
	const char *reason;
	int64_t id;
	int inserted;
};

/* $1..$15: see custodyfs_reception_record (migration 2). */
/* clang-format off */
static const char db_sql_record[] =
	"SELECT o_id, o_inserted FROM custodyfs_reception_record("
	"$1::integer, $2::integer, $3::text, $4::text, $5::text, $6::bigint,"
	" $7::text, $8::text, $9::text, $10::text, $11::text, $12::bigint,"
	" $13::text, $14::text, $15::text)";
/* clang-format on */

static int pg_reception_record(struct pg_ctx *x, void *arg)
{
	struct db_record_args *a = arg;
	const struct reception_new *r = a->r;
	struct db_actor_params ap;
	PGresult *res = NULL;
	const char *p[15];
	char size[24], obj[16];
	int rc;

	a->id = 0;
	a->inserted = 0;
	rc = db_size_param(r->size, size, sizeof(size));
	if (rc)
		return rc;
	pg_key_lock_obj(r->source_bucket, r->object_key, obj);
	p[0] = DB_KEY_LOCK_CLASS;
	p[1] = obj;
	p[2] = r->source_bucket;
	p[3] = r->file_name ? r->file_name : db_basename(r->object_key);
	p[4] = r->object_key;
	p[5] = size;
	p[6] = r->xxh128;
	p[7] = r->sha256;
	p[8] = r->etag;
	p[9] = r->origin;
	db_actor_params(r->who, &ap, p + 10);
	p[14] = a->reason;
	/* Inside BEGIN/COMMIT (db_run): a server that stops answering before
	 * COMMIT is sent rolls back when the connection drops, so a row never
	 * appears for an upload the caller was told failed. */
	rc = pg_exec(x, db_sql_record, 15, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		rc = -EIO;
		goto out;
	}
	a->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	a->inserted = PQgetvalue(res, 0, 1)[0] == 't';
out:
	PQclear(res);
	return rc;
}

int db_reception_record(struct db *d, const struct reception_new *r,
			const char *replaced_reason, int64_t *id_out,
			int *inserted)
{
	struct db_record_args a = {.r = r};
	int rc;

	if (!d || !r || !r->source_bucket || !r->object_key)
		return -EINVAL;
	a.reason = replaced_reason ? replaced_reason : "replaced";
	/* A unique violation means another writer inserted the live row
	 * first: run again, and the row is then seen. */
	rc = db_run(d, "reception record", 1, 1, pg_reception_record, &a);
	if (rc)
		return rc;
	if (id_out)
		*id_out = a.id;
	if (inserted)
		*inserted = a.inserted;
	return 0;
}

/* $1 bucket, $2 key, $3 reason: the live rows closed, answering them
 * (id, size_bytes or -1), newest first. Idempotent. */
/* clang-format off */
static const char db_sql_mark_removed_ret[] =
	"WITH c AS (UPDATE reception_audit SET removed_at = now(),"
	" removal_reason = $3::text"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at IS NULL RETURNING id, size_bytes)"
	" SELECT id, coalesce(size_bytes, -1) FROM c ORDER BY id DESC";
/* clang-format on */

struct db_removed_args {
	const char *bucket;
	const char *key;
	const char *reason;
	struct db_closed *closed;
};

static int pg_reception_mark_removed(struct pg_ctx *x, void *arg)
{
	struct db_removed_args *a = arg;
	const char *p[3] = {a->bucket, a->key, a->reason};
	PGresult *res = NULL;
	int rc;

	memset(a->closed, 0, sizeof(*a->closed));
	rc = pg_exec(x, db_sql_mark_removed_ret, 3, p, &res);
	if (!rc && PQntuples(res) > 0) {
		a->closed->n = PQntuples(res);
		a->closed->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		a->closed->size = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	}
	PQclear(res);
	return rc;
}

int db_reception_mark_removed_ret(struct db *d, const char *bucket,
				  const char *key, const char *reason,
				  struct db_closed *closed)
{
	struct db_closed local;
	struct db_removed_args a = {
	    .bucket = bucket,
	    .key = key,
	    .reason = reason,
	    .closed = closed ? closed : &local,
	};

	memset(a.closed, 0, sizeof(*a.closed));
	if (!d || !bucket || !key)
		return -EINVAL;
	/* One idempotent statement: safe to run again after a reconnect
	 * (a second run closes nothing: closed says none). */
	return db_run(d, "reception mark removed", 0, 0,
		      pg_reception_mark_removed, &a);
}

int db_reception_mark_removed(struct db *d, const char *bucket, const char *key,
			      const char *reason)
{
	return db_reception_mark_removed_ret(d, bucket, key, reason, NULL);
}

struct db_removed_locked_args {
	struct db_removed_args rm;
	db_locked_fn fn;
	db_locked_fn absent; /* db_reception_remove_spare: NULL no spare */
	void *arg;
	int called; /* fn ran (and returned fn_rc) */
	int fn_rc;
	int spared; /* nothing done: another mount's new file is there */
};

static int pg_reception_mark_removed_locked(struct pg_ctx *x, void *arg)
{
	struct db_removed_locked_args *a = arg;
	const char *p[3] = {a->rm.bucket, a->rm.key, a->rm.reason};
	PGresult *res = NULL;
	int rc;

	rc = pg_lock_key(x, a->rm.bucket, a->rm.key);
	if (rc)
		return rc;
	a->spared = 0;
	if (a->absent) {
		rc = pg_exec(x, db_sql_live_for_update, 2, p, &res);
		if (rc == 0 && PQntuples(res) == 0)
			rc = pg_attrs_others_live(x, a->rm.bucket, a->rm.key);
		PQclear(res);
		if (rc < 0)
			return rc;
		/* No live row is no proof that no object is there (review-31
		 * R4: one that came by another route, or another upload's
		 * PUT before its commit): spared only when there is none. */
		if (rc > 0) {
			rc = a->absent(a->arg);
			if (rc == 0) {
				a->spared = 1;
				return 0;
			}
			if (rc != -ESTALE)
				return rc;
		}
	}
	a->called = 1;
	a->fn_rc = a->fn(a->arg);
	if (a->fn_rc)
		return a->fn_rc;
	rc = pg_exec(x, db_sql_removal_note, 2, p, NULL);
	if (rc)
		return rc;
	return pg_reception_mark_removed(x, &a->rm);
}

/* The locked removal of both entry points: with absent (not NULL), a key
 * with no live row, another mount's live claim and no object (absent
 * returns 0) is spared (*spared 1). what names the operation (a string
 * literal). */
static int mark_removed_locked(struct db *d, const char *what,
			       const char *bucket, const char *key,
			       const char *reason, db_locked_fn fn,
			       db_locked_fn absent, void *arg, int *fn_ran,
			       struct db_closed *closed, int *spared)
{
	struct db_closed local;
	struct db_removed_locked_args a = {
	    .rm = {.bucket = bucket,
		   .key = key,
		   .reason = reason,
		   .closed = closed ? closed : &local},
	    .fn = fn,
	    .absent = absent,
	    .arg = arg,
	};
	int rc;

	memset(a.rm.closed, 0, sizeof(*a.rm.closed));
	if (fn_ran)
		*fn_ran = 0;
	if (!d || !bucket || !key || !reason || !fn)
		return -EINVAL;
	if (spared)
		*spared = 0;
	rc = db_run(d, what, 1, 0, pg_reception_mark_removed_locked, &a);
	if (fn_ran)
		*fn_ran = a.called;
	if (spared)
		*spared = rc == 0 && a.spared;
	return rc;
}

int db_reception_mark_removed_locked(struct db *d, const char *bucket,
				     const char *key, const char *reason,
				     db_locked_fn fn, void *arg, int *fn_ran,
				     struct db_closed *closed)
{
	return mark_removed_locked(d, "reception mark removed (locked)", bucket,
				   key, reason, fn, NULL, arg, fn_ran, closed,
				   NULL);
}

int db_reception_remove_spare(struct db *d, const char *bucket, const char *key,
			      const char *reason, db_locked_fn fn,
			      db_locked_fn absent, void *arg, int *fn_ran,
			      struct db_closed *closed, int *spared)
{
	if (!spared || !absent)
		return -EINVAL;
	return mark_removed_locked(d, "reception remove (sparing claims)",
				   bucket, key, reason, fn, absent, arg, fn_ran,
				   closed, spared);
}

struct db_remove_id_args {
	char id[24];
	const char *reason;
};

static int pg_reception_remove_id(struct pg_ctx *x, void *arg)
{
	struct db_remove_id_args *a = arg;
	const char *p[2] = {a->id, a->reason};
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_live_by_id, 1, p, &res);
	if (!rc && PQntuples(res) < 1)
		rc = -ENOENT;
	if (!rc)
		rc = pg_lock_key(x, PQgetvalue(res, 0, 0),
				 PQgetvalue(res, 0, 1));
	PQclear(res);
	res = NULL;
	if (!rc)
		rc = pg_exec(x, db_sql_remove_id, 2, p, &res);
	if (!rc && PQntuples(res) < 1)
		rc = -ENOENT; /* closed by another writer meanwhile */
	PQclear(res);
	return rc;
}

int db_reception_remove_id(struct db *d, int64_t id, const char *reason)
{
	struct db_remove_id_args a = {.reason = reason};

	if (!d || id <= 0 || !reason)
		return -EINVAL;
	snprintf(a.id, sizeof(a.id), "%" PRId64, id);
	return db_run(d, "reception remove by id", 1, 0, pg_reception_remove_id,
		      &a);
}

struct db_rename_args {
	const char *bucket;
	const char *old_key;
	const char *new_key;
	const char *new_etag;
	const struct db_rename_src *src;
	uint64_t size;
	const struct actor *who;
	char *renamed;	/* "renamed to <new_key>" */
	char *replaced; /* "replaced by rename from <old_key>" */
	struct db_renamed *out;
};

/* A rename in flight to a key (review F1): a row of file_attrs_pending
 * under the bucket RENAMING_SUFFIX (no attributes query reads that
 * bucket), keyed by the rename's token, written under the key's lock
 * before its copy and deleted in its rows' transaction; a crashed
 * rename's lapses at pending_until. While one holds, no S3 DELETE under
 * the key's lock (db_reception_newest_do) runs: the object there may be
 * that rename's copy, whose rows are not committed yet. */
#define RENAMING_SUFFIX "/renaming"
/* $1 bucket, $2 key, $3 token, $4 lease (seconds) */
static const char db_sql_renaming_add[] =
    "INSERT INTO file_attrs_pending (bucket, object_key, token,"
    " pending_until) VALUES ($1::text || '" RENAMING_SUFFIX "', $2::text,"
    " $3::text, now() + $4::integer * interval '1 second')"
    " ON CONFLICT (bucket, object_key, token) DO UPDATE SET"
    " pending_until = excluded.pending_until";
/* $1 bucket, $2 key, $3 token */
static const char db_sql_renaming_del[] =
    "DELETE FROM file_attrs_pending WHERE bucket = $1::text || "
    "'" RENAMING_SUFFIX "' AND object_key = $2::text AND token = $3::text";
/* $1 bucket, $2 key, $3 token: that rename's marker still there (lapsed
 * or not)? */
static const char db_sql_renaming_mine[] =
    "SELECT 1 FROM file_attrs_pending WHERE bucket = $1::text || "
    "'" RENAMING_SUFFIX "' AND object_key = $2::text AND token = $3::text";
/* $1 bucket, $2 key: a rename to key in flight? */
static const char db_sql_renaming_any[] =
    "SELECT 1 FROM file_attrs_pending WHERE bucket = $1::text || "
    "'" RENAMING_SUFFIX "' AND object_key = $2::text AND pending_until > now()"
    " LIMIT 1";

/* The newest id a db_sql_mark_removed_ret result res closed, or 0. */
static int64_t db_closed_id(PGresult *res)
{
	return PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
				  : 0;
}

/* $1 bucket, $2 key: its live rows, newest first (a look, no lock). */
static const char db_sql_live_rows[] =
    "SELECT id, etag, size_bytes, xxh128, sha256 FROM reception_audit"
    " WHERE source_bucket = $1::text AND object_key = $2::text"
    " AND removed_at IS NULL ORDER BY id DESC";

/* Does old_key's live row (res: db_sql_live_for_update or
 * db_sql_live_rows, newest first) log the object a rename copied (src, of
 * size)? It must log the very object copied: its ETag (or none: seed rows,
 * other tools) and its size. Any other live row, or none, is an upload or
 * a removal committed since the rename looked (review H2): -EBADMSG. Its
 * hashes are carried over only when its ETag is the copy's source and the
 * copy's own ETag vouched (else the caller hashed the copy: copy_hashed,
 * and they must be the row's, else -EBADMSG: review F3). 0 with *xxh and
 * *sha the new row's hashes (into res or src; NULL: none); -ESTALE when
 * src->require and there would be none. */
static int pg_rename_verdict(const char *old_key, const char *new_key,
			     PGresult *res, const struct db_rename_src *src,
			     const char *size, const char **xxh,
			     const char **sha)
{
	*xxh = *sha = NULL;
	if (PQntuples(res) == 0 ||
	    (!PQgetisnull(res, 0, 1) &&
	     (!src->etag || strcmp(PQgetvalue(res, 0, 1), src->etag))) ||
	    (!PQgetisnull(res, 0, 2) && strcmp(PQgetvalue(res, 0, 2), size))) {
		log_error("database: rename %s -> %s: the live row (%s, ETag "
			  "%s, size %s) does not log the object copied (ETag "
			  "%s, size %s): not renamed",
			  old_key, new_key, PQntuples(res) ? "present" : "none",
			  PQntuples(res) && !PQgetisnull(res, 0, 1)
			      ? PQgetvalue(res, 0, 1)
			      : "none",
			  PQntuples(res) && !PQgetisnull(res, 0, 2)
			      ? PQgetvalue(res, 0, 2)
			      : "?",
			  src->etag ? src->etag : "unknown", size);
		return -EBADMSG;
	}
	if (!PQgetisnull(res, 0, 3))
		*xxh = PQgetvalue(res, 0, 3);
	if (!PQgetisnull(res, 0, 4))
		*sha = PQgetvalue(res, 0, 4);
	if (src->copy_hashed &&
	    ((src->sha256 && *sha && strcmp(*sha, src->sha256)) ||
	     (src->xxh128 && *xxh && strcmp(*xxh, src->xxh128)))) {
		log_error("database: rename %s -> %s: the copy's bytes "
			  "(SHA-256 %s) are not the upload the live row logs "
			  "(SHA-256 %s)",
			  old_key, new_key, src->sha256 ? src->sha256 : "?",
			  *sha ? *sha : "?");
		return -EBADMSG;
	}
	if (PQgetisnull(res, 0, 1) || src->copy_hashed || (!*xxh && !*sha)) {
		/* A row without an ETag vouches for no object: the copy's
		 * own hashes (computed by the caller), or none at all. */
		*xxh = src->xxh128;
		*sha = src->sha256;
		if (!*xxh && !*sha && src->require)
			return -ESTALE;
	}
	return 0;
}

static int pg_reception_rename(struct pg_ctx *x, void *arg)
{
	struct db_rename_args *a = arg;
	struct db_actor_params ap;
	PGresult *res = NULL, *closed = NULL;
	const char *p[13];
	const char *xxh = NULL, *sha = NULL;
	char size[24];
	int rc, first, superseded = 0, moved = 0;

	memset(a->out, 0, sizeof(*a->out)); /* a transaction tried again */
	if (a->src->superseded)
		*a->src->superseded = 0;
	rc = db_size_param(a->size, size, sizeof(size));
	if (rc)
		return rc;
	/* Both keys, in a fixed order so two renames cannot deadlock. */
	first = strcmp(a->old_key, a->new_key) < 0;
	rc = pg_lock_key(x, a->bucket, first ? a->old_key : a->new_key);
	if (rc)
		goto out;
	rc = pg_lock_key(x, a->bucket, first ? a->new_key : a->old_key);
	if (rc)
		goto out;

	if (a->src->again) {
		/* The first call's rows deleted the marker if they committed:
		 * written again only while it is there (under new_key's lock,
		 * which every writer of it takes). */
		p[0] = a->bucket;
		p[1] = a->new_key;
		p[2] = a->src->token;
		rc = a->src->token
			 ? pg_exec(x, db_sql_renaming_mine, 3, p, &res)
			 : -EALREADY;
		if (!rc && PQntuples(res) < 1)
			rc = -EALREADY;
		PQclear(res);
		res = NULL;
		if (rc)
			goto out;
	}
	p[0] = a->bucket;
	p[1] = a->old_key;
	rc = pg_exec(x, db_sql_live_for_update, 2, p, &res);
	if (rc)
		goto out;
	/* res is kept until the insert: xxh and sha may point into it. */
	rc = pg_rename_verdict(a->old_key, a->new_key, res, a->src, size, &xxh,
			       &sha);
	if (rc == -EBADMSG && a->src->verified && a->src->checked_id > 0 &&
	    PQntuples(res) > 0 &&
	    strtoll(PQgetvalue(res, 0, 0), NULL, 10) > a->src->checked_id) {
		/* The copy was checked against old_key's live row before it
		 * reached new_key; a newer upload (or rename onto old_key)
		 * committed there since (review L3): the rename happened
		 * first. No live row, or none newer, is a rename away or an
		 * rm of old_key by another mount: refused (review N1). new_key
		 * gets the checked bytes' row; old_key's (the newer upload's)
		 * stay. */
		log_warn("database: rename %s -> %s: the source was uploaded "
			 "again after its checked copy reached the target; "
			 "its new row stays",
			 a->old_key, a->new_key);
		xxh = a->src->xxh128;
		sha = a->src->sha256;
		rc = !xxh && !sha && a->src->require ? -ESTALE : 0;
		moved = 1;
	}
	if (rc)
		goto out;

	/* new_key must still hold the copy (review K1), checked under both
	 * key locks before anything is written: another mount's commit,
	 * rename or rm of new_key took that lock between the copy and this
	 * check (seen here), or takes it once these rows are committed. */
	if (a->src->check) {
		rc = a->src->check(a->src->check_arg);
		if ((rc == -ESTALE || rc == -ENOENT) &&
		    a->src->superseded_reason) {
			superseded = 1;
			rc = 0;
		}
		if (rc)
			goto out;
	}

	if (!moved) {
		p[2] = a->renamed;
		rc = pg_exec(x, db_sql_mark_removed_ret, 3, p, &closed);
		if (rc)
			goto out;
		a->out->from_id = db_closed_id(closed);
		PQclear(closed);
		closed = NULL;
	}
	a->out->src_moved = moved;
	if (!superseded) {
		p[1] = a->new_key;
		p[2] = a->replaced;
		rc = pg_exec(x, db_sql_mark_removed_ret, 3, p, &closed);
		if (rc)
			goto out;
		a->out->replaced_id = db_closed_id(closed);
		PQclear(closed);
		closed = NULL;
	}

	p[0] = a->bucket;
	p[1] = db_basename(a->new_key);
	p[2] = a->new_key;
	p[3] = size;
	p[4] = xxh;
	p[5] = sha;
	p[6] = a->new_etag;
	p[7] = "rename";
	db_actor_params(a->who, &ap, p + 8);
	/* The rename happened, and its result was then replaced or removed:
	 * its row is logged already removed; new_key's live rows (the
	 * replacing upload's) and attributes are left alone. */
	p[12] = a->src->superseded_reason;
	rc = pg_exec(
	    x, superseded ? db_sql_insert_removed : db_sql_insert_reception,
	    superseded ? 13 : 12, p, &closed);
	if (!rc && PQntuples(closed) == 1)
		a->out->id = strtoll(PQgetvalue(closed, 0, 0), NULL, 10);
	if (!rc && superseded && a->src->superseded)
		*a->src->superseded = 1;
	/* The copy's attributes with its row: a crash after this commit
	 * never shows it with the target's, nor unbound from its ETag. */
	if (!rc && !superseded)
		rc = pg_attrs_renamed(x, a->bucket, a->old_key, a->new_key,
				      a->new_etag, a->src->etag, a->who);
	if (!rc && a->src->token) {
		/* The rename's copy has its row: its marker goes with it. */
		PQclear(closed);
		closed = NULL;
		p[0] = a->bucket;
		p[1] = a->new_key;
		p[2] = a->src->token;
		rc = pg_exec(x, db_sql_renaming_del, 3, p, &closed);
	}
out:
	PQclear(closed);
	PQclear(res); /* after the insert: xxh and sha point into it */
	return rc;
}

int db_reception_rename(struct db *d, const char *bucket, const char *old_key,
			const char *new_key, const char *new_etag,
			uint64_t size, const struct actor *who)
{
	/* A single-part CopyObject's ETag is its source's (the MD5). */
	struct db_rename_src src = {.etag = new_etag};

	return db_reception_rename_ret(d, bucket, old_key, new_key, new_etag,
				       &src, size, who, NULL);
}

int db_reception_rename_ret(struct db *d, const char *bucket,
			    const char *old_key, const char *new_key,
			    const char *new_etag,
			    const struct db_rename_src *src, uint64_t size,
			    const struct actor *who, struct db_renamed *out)
{
	static const struct db_rename_src unknown;
	struct db_renamed local;
	struct db_rename_args a = {
	    .bucket = bucket,
	    .old_key = old_key,
	    .new_key = new_key,
	    .new_etag = new_etag,
	    .src = src ? src : &unknown,
	    .size = size,
	    .who = who,
	    .out = out ? out : &local,
	};
	int rc = -ENOMEM;

	memset(a.out, 0, sizeof(*a.out));
	if (!d || !bucket || !old_key || !new_key)
		return -EINVAL;
	if (!strcmp(old_key, new_key))
		return 0;
	if (asprintf(&a.renamed, "renamed to %s", new_key) < 0) {
		a.renamed = NULL;
		goto out;
	}
	if (asprintf(&a.replaced, "replaced by rename from %s", old_key) < 0) {
		a.replaced = NULL;
		goto out;
	}
	rc = db_run(d, "reception rename", 1, 1, pg_reception_rename, &a);
out:
	free(a.replaced);
	free(a.renamed);
	return rc;
}

/* $1 bucket, $2 old key, $3 "renamed to <new key>", $4 the source's ETag,
 * $5 new key, $6 the copy's ETag: the old key's newest row closed as
 * renamed to the new key, and a newer rename row of the new key with the
 * copy's ETag (live or not); their ids and whether the latter is live. */
static const char db_sql_rename_readback[] =
    "SELECT f.id, t.id, t.removed_at IS NULL FROM"
    " (SELECT id, etag, removed_at, removal_reason FROM reception_audit"
    "  WHERE source_bucket = $1::text AND object_key = $2::text"
    "  ORDER BY id DESC LIMIT 1) f"
    " CROSS JOIN LATERAL"
    " (SELECT id, removed_at FROM reception_audit"
    "  WHERE source_bucket = $1::text AND object_key = $5::text"
    "  AND origin = 'rename' AND etag = $6::text AND id > f.id"
    "  ORDER BY id DESC LIMIT 1) t"
    " WHERE f.removed_at IS NOT NULL AND f.removal_reason = $3::text"
    " AND (f.etag IS NULL OR f.etag = $4::text)";

struct db_rename_readback_args {
	const char *bucket, *old_key, *new_key, *src_etag, *new_etag;
	char *renamed;
	int done, live;
	struct db_renamed *out;
};

static int pg_reception_rename_readback(struct pg_ctx *x, void *arg)
{
	struct db_rename_readback_args *a = arg;
	const char *p[6] = {a->bucket,	 a->old_key, a->renamed,
			    a->src_etag, a->new_key, a->new_etag};
	PGresult *res = NULL;
	int rc, first = strcmp(a->old_key, a->new_key) < 0;

	a->done = a->live = 0;
	memset(a->out, 0, sizeof(*a->out));
	/* as pg_reception_rename: both keys, in its order */
	rc = pg_lock_key(x, a->bucket, first ? a->old_key : a->new_key);
	if (!rc)
		rc = pg_lock_key(x, a->bucket, first ? a->new_key : a->old_key);
	if (!rc)
		rc = pg_exec(x, db_sql_rename_readback, 6, p, &res);
	if (!rc && PQntuples(res) == 1) {
		a->done = 1;
		a->out->from_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		a->out->id = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		a->live = PQgetvalue(res, 0, 2)[0] == 't';
	}
	PQclear(res);
	return rc;
}

struct db_rename_check_args {
	const char *bucket;
	const char *old_key;
	const char *new_key;
	const struct db_rename_src *src;
	const char *size;
	int64_t row_id;
};

static int pg_reception_rename_check(struct pg_ctx *x, void *arg)
{
	struct db_rename_check_args *a = arg;
	const char *p[2] = {a->bucket, a->old_key};
	const char *xxh, *sha;
	PGresult *res = NULL;
	int rc;

	a->row_id = 0;
	rc = pg_exec(x, db_sql_live_rows, 2, p, &res);
	if (!rc)
		rc = pg_rename_verdict(a->old_key, a->new_key, res, a->src,
				       a->size, &xxh, &sha);
	if ((!rc || rc == -ESTALE) && PQntuples(res) > 0)
		a->row_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rc;
}

int db_reception_rename_readback(struct db *d, const char *bucket,
				 const char *old_key, const char *new_key,
				 const char *src_etag, const char *new_etag,
				 int *done, int *live, struct db_renamed *out)
{
	struct db_renamed local;
	struct db_rename_readback_args a = {
	    .bucket = bucket,
	    .old_key = old_key,
	    .new_key = new_key,
	    .src_etag = src_etag,
	    .new_etag = new_etag,
	    .out = out ? out : &local,
	};
	int rc;

	memset(a.out, 0, sizeof(*a.out));
	*done = 0;
	if (live)
		*live = 0;
	if (!d || !bucket || !old_key || !new_key || !src_etag || !new_etag)
		return -EINVAL;
	if (asprintf(&a.renamed, "renamed to %s", new_key) < 0)
		return -ENOMEM;
	rc = db_run(d, "reception rename read back", 1, 0,
		    pg_reception_rename_readback, &a);
	free(a.renamed);
	if (rc)
		return rc;
	*done = a.done;
	if (live)
		*live = a.live;
	return 0;
}

int db_reception_rename_check(struct db *d, const char *bucket,
			      const char *old_key, const char *new_key,
			      const struct db_rename_src *src, uint64_t size,
			      int64_t *row_id)
{
	struct db_rename_check_args a = {bucket, old_key, new_key,
					 src,	 NULL,	  0};
	char sz[24];
	int rc;

	if (row_id)
		*row_id = 0;
	if (!d || !bucket || !old_key || !new_key || !src)
		return -EINVAL;
	rc = db_size_param(size, sz, sizeof(sz));
	if (rc)
		return rc;
	a.size = sz;
	rc = db_run(d, "reception rename check", 0, 0,
		    pg_reception_rename_check, &a);
	if (row_id)
		*row_id = a.row_id;
	return rc;
}

/* Caller holds the key lock (in a transaction): logs r as an upload that
 * is already gone (replaced or removed before its row), leaving the live
 * row alone. 0 or -errno. */
static int pg_reception_insert_removed(struct pg_ctx *x,
				       struct db_record_args *a,
				       const char *reason)
{
	const struct reception_new *r = a->r;
	struct db_actor_params ap;
	PGresult *res = NULL;
	const char *p[13];
	char size[24];
	int rc;

	rc = db_size_param(r->size, size, sizeof(size));
	if (rc)
		return rc;
	p[0] = r->source_bucket;
	p[1] = r->file_name ? r->file_name : db_basename(r->object_key);
	p[2] = r->object_key;
	p[3] = size;
	p[4] = r->xxh128;
	p[5] = r->sha256;
	p[6] = r->etag;
	p[7] = r->origin;
	db_actor_params(r->who, &ap, p + 8);
	p[12] = reason;
	rc = pg_exec(x, db_sql_insert_removed, 13, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		rc = -EIO;
		goto out;
	}
	a->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	a->inserted = 1;
out:
	PQclear(res);
	return rc;
}

struct db_guarded_args {
	struct db_record_args rec;
	const struct db_record_guard *g;
	int bound; /* g->bind bound the row (in this attempt) */
};

/* Does live row i of res (db_sql_live_for_update) log the upload r
 * already? For the mount that uploaded (origin "mount") only when asked to
 * read back an unknown outcome (g->readback) and the row has its ETag; for
 * an observer when the row has the same ETag, or none, and the same size
 * (custodyfs_reception_record, migration 4, decides the same way). */
static int db_live_row_logs(PGresult *res, int i, const struct reception_new *r,
			    const struct db_record_guard *g)
{
	char size[24];

	if (r->origin && !strcmp(r->origin, "mount"))
		return g && g->readback && r->etag && !PQgetisnull(res, i, 1) &&
		       !strcmp(PQgetvalue(res, i, 1), r->etag);
	if (!PQgetisnull(res, i, 1) &&
	    (!r->etag || strcmp(PQgetvalue(res, i, 1), r->etag)))
		return 0;
	if (db_size_param(r->size, size, sizeof(size)))
		return 0;
	return !PQgetisnull(res, i, 2) && !strcmp(PQgetvalue(res, i, 2), size);
}

/* CLOCK_MONOTONIC, in ms. */
static int64_t db_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Caller holds the key lock: *removed = 1 when r's key was removed by a
 * mount (reception_removals) in the last ms milliseconds. 0 or -errno. */
static int pg_key_removed_since(struct pg_ctx *x, const struct reception_new *r,
				int64_t ms, int *removed)
{
	const char *p[3] = {r->source_bucket, r->object_key, NULL};
	PGresult *res = NULL;
	char msbuf[24];
	int rc;

	snprintf(msbuf, sizeof(msbuf), "%" PRId64, ms);
	p[2] = msbuf;
	rc = pg_exec(x, db_sql_removed_since, 3, p, &res);
	if (rc == 0 && PQntuples(res) != 1)
		rc = -EIO;
	if (rc == 0)
		*removed = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	return rc;
}

/* $1 bucket, $2 token: a publish's pending row unlinked while its upload
 * was in flight (db_attrs_defer_unlink marked it, review n19) goes. */
static const char db_sql_pend_unlinked[] =
    "DELETE FROM file_attrs_pending WHERE bucket = $1::text"
    " AND token = $2::text AND etag IS NULL AND upload_state = 'unlinked'"
    " RETURNING 1";

/* Caller's transaction, a->g set: the guarded upload is refused as a
 * removal (its object goes through a->g->gone, its row is logged removed
 * with a->g->removed_reason, *removed_out says so). 0 or -errno. */
static int pg_guarded_refuse(struct pg_ctx *x, struct db_guarded_args *a)
{
	int rc = a->g->gone ? a->g->gone(a->g->arg) : 0;

	if (rc == 0)
		rc = pg_reception_insert_removed(x, &a->rec,
						 a->g->removed_reason);
	if (rc == 0 && a->g->removed_out)
		*a->g->removed_out = 1;
	return rc;
}

/* In x's transaction: *unlinked = 1 when the pending row token (of the
 * upload being recorded) was unlinked while that upload was in flight; it
 * goes then. 0 or -errno. */
static int pg_pend_unlinked(struct pg_ctx *x, const char *bucket,
			    const char *token, int *unlinked)
{
	const char *p[2] = {bucket, token};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_pend_unlinked, 2, p, &res);

	*unlinked = rc == 0 && PQntuples(res) > 0;
	PQclear(res);
	return rc;
}

static int pg_reception_record_guarded(struct pg_ctx *x, void *arg)
{
	struct db_guarded_args *a = arg;
	const struct reception_new *r = a->rec.r;
	const char *p[2] = {r->source_bucket, r->object_key};
	PGresult *res = NULL;
	int64_t newest = 0;
	int rc, i, n;

	a->rec.id = 0;
	a->rec.inserted = 0;
	a->bound = 0;
	/* the live rows read once the key lock is held: one round trip */
	rc = pg_lock_key_then(x, r->source_bucket, r->object_key,
			      db_sql_live_for_update, 2, p, &res);
	if (rc)
		goto out;
	n = PQntuples(res);
	if (a->g && a->g->had_live_out)
		*a->g->had_live_out = n > 0;
	for (i = 0; i < n; i++) {
		if (db_live_row_logs(res, i, r, a->g)) {
			if (a->g && a->g->had_live_out) /* r's own row */
				*a->g->had_live_out = n > 1;
			a->rec.id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			goto out;
		}
	}
	if (n)
		newest = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	if (a->g && a->g->expect_live >= 0 && newest != a->g->expect_live) {
		log_info("database: %s/%s: its live row changed since it was "
			 "read (%" PRId64 " -> %" PRId64 "); not logged now",
			 r->source_bucket, r->object_key, a->g->expect_live,
			 newest);
		rc = -ESTALE;
		goto out;
	}
	if (a->g && a->g->superseded_out)
		*a->g->superseded_out = 0;
	if (a->g && a->g->removed_out)
		*a->g->removed_out = 0;
	/* A publish's upload (its pending row bind->pending) whose file was
	 * unlinked while it was in flight (review n19 Y1, Y2: its row, marked,
	 * held the name meanwhile, so no other file was stored there since):
	 * refused as a removal after it began, whatever the key's live rows
	 * (its object deleted while it is still this upload, logged removed;
	 * its row goes). */
	if (a->g && a->g->bind && a->g->bind->pending && a->g->removed_reason) {
		int unlinked = 0;

		rc = pg_pend_unlinked(x, r->source_bucket, a->g->bind->pending,
				      &unlinked);
		if (rc || !unlinked)
			goto pended;
		rc = pg_guarded_refuse(x, a);
		goto out;
	}
pended:
	if (rc)
		goto out;
	/* Only while the key has no live row: the removal closed them all,
	 * so a live row now was written after it (the key was created again)
	 * and the removal is no longer the key's state; r is then guarded by
	 * check as usual (last writer wins). */
	if (a->g && a->g->based_ms_ago >= 0 && a->g->removed_reason && n == 0) {
		int64_t ago = a->g->based_ms_ago;
		int removed = 0;

		/* the time since it was measured (pool, lock wait, retries) */
		if (a->g->measured_mono_ms > 0)
			ago += db_mono_ms() - a->g->measured_mono_ms;
		rc = pg_key_removed_since(x, r, ago, &removed);
		if (rc || !removed)
			goto checked;
		rc = pg_guarded_refuse(x, a);
		goto out;
	}
checked:
	if (rc)
		goto out;
	if (a->g && a->g->check) {
		rc = a->g->check(a->g->arg);
		if ((rc == -ESTALE || rc == -ENOENT) &&
		    a->g->superseded_reason) {
			rc = pg_reception_insert_removed(
			    x, &a->rec, a->g->superseded_reason);
			if (rc == 0 && a->g->superseded_out)
				*a->g->superseded_out = 1;
			goto out;
		}
		if (rc)
			goto out;
	}
	rc = pg_reception_record(x, &a->rec);
	/* r is the key's live row now, under the key lock: its attributes
	 * row follows it in this transaction (a failure fails both). */
	if (rc == 0 && a->g && a->g->bind)
		rc = pg_attrs_binding(x, r->source_bucket, r->object_key,
				      r->etag, a->g->bind, &a->bound);
out:
	PQclear(res);
	return rc;
}

int db_reception_record_guarded(struct db *d, const struct reception_new *r,
				const char *replaced_reason,
				const struct db_record_guard *g,
				int64_t *id_out, int *inserted)
{
	struct db_guarded_args a = {.rec = {.r = r}, .g = g};
	int rc;

	if (!d || !r || !r->source_bucket || !r->object_key)
		return -EINVAL;
	a.rec.reason = replaced_reason ? replaced_reason : "replaced";
	if (g && g->bind)
		g->bind->done = 0;
	rc = db_run(d, "reception record (guarded)", 1, 1,
		    pg_reception_record_guarded, &a);
	if (rc)
		return rc;
	if (g && g->bind)
		g->bind->done = a.bound;
	if (id_out)
		*id_out = a.rec.id;
	if (inserted)
		*inserted = a.rec.inserted;
	return 0;
}

struct db_unrowed_args {
	const char *bucket;
	const char *key;
	const char *etag;
	db_locked_fn fn;
	void *arg;
	int rowed;
	int want_other; /* a live row of another object stops fn */
	int other;
	int called; /* fn ran (and returned fn_rc) */
	int fn_rc;
};

static int pg_reception_unrowed_do(struct pg_ctx *x, void *arg)
{
	struct db_unrowed_args *a = arg;
	const char *p[3] = {a->bucket, a->key, a->etag};
	PGresult *res = NULL;
	int rc;

	a->rowed = a->other = 0;
	rc = pg_lock_key_then(x, a->bucket, a->key, db_sql_etag_rowed, 3, p,
			      &res);
	if (rc)
		goto out;
	if (PQntuples(res) != 1) {
		rc = -EIO;
		goto out;
	}
	a->rowed = PQgetvalue(res, 0, 0)[0] == 't';
	a->other =
	    !a->rowed && a->want_other && PQgetvalue(res, 0, 1)[0] == 't';
	if (a->rowed || a->other)
		goto out;
	a->called = 1;
	a->fn_rc = a->fn ? a->fn(a->arg) : 0;
	rc = a->fn_rc;
out:
	PQclear(res);
	return rc;
}

int db_reception_unrowed_do(struct db *d, const char *bucket, const char *key,
			    const char *etag, db_locked_fn fn, void *arg,
			    int *rowed, int *other)
{
	struct db_unrowed_args a = {
	    .bucket = bucket,
	    .key = key,
	    .etag = etag,
	    .fn = fn,
	    .arg = arg,
	    .want_other = other != NULL,
	};
	int rc;

	if (!d || !bucket || !key || !etag || !*etag)
		return -EINVAL;
	rc = db_run(d, "reception undo check", 1, 0, pg_reception_unrowed_do,
		    &a);
	/* The transaction writes nothing: a COMMIT whose answer was lost
	 * changed nothing either, and fn's outcome stands. */
	if (rc == -EINPROGRESS && a.called)
		rc = a.fn_rc;
	if (rc == 0 && rowed)
		*rowed = a.rowed;
	if (rc == 0 && other)
		*other = a.other;
	return rc;
}

struct db_renaming_args {
	const char *p[4];
	int add;
};

static int pg_reception_renaming(struct pg_ctx *x, void *arg)
{
	struct db_renaming_args *a = arg;
	PGresult *res = NULL;
	int rc;

	/* Under the key's lock: a locked DELETE of the key that did not see
	 * the marker is over before the copy can land. */
	rc = pg_lock_key(x, a->p[0], a->p[1]);
	if (rc)
		return rc;
	rc = pg_exec(x, a->add ? db_sql_renaming_add : db_sql_renaming_del,
		     a->add ? 4 : 3, a->p, &res);
	PQclear(res);
	return rc;
}

int db_reception_renaming(struct db *d, const char *bucket, const char *key,
			  const char *token, int lease_s)
{
	struct db_renaming_args a = {.p = {bucket, key, token, NULL},
				     .add = lease_s > 0};
	char lbuf[16];

	if (!d || !bucket || !key || !token || !*token)
		return -EINVAL;
	snprintf(lbuf, sizeof(lbuf), "%d", lease_s);
	a.p[3] = lbuf;
	return db_run(d, a.add ? "reception renaming" : "reception renamed", 1,
		      0, pg_reception_renaming, &a);
}

/* Is a rename to key in flight (its marker held)? 1, 0, or -errno. */
static int pg_renaming_any(struct pg_ctx *x, const char *bucket,
			   const char *key)
{
	const char *p[2] = {bucket, key};
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_renaming_any, 2, p, &res);
	if (!rc)
		rc = PQntuples(res) > 0;
	PQclear(res);
	return rc;
}

static int pg_reception_renaming_held(struct pg_ctx *x, void *arg)
{
	const char **bk = arg;

	return pg_renaming_any(x, bk[0], bk[1]);
}

int db_reception_renaming_held(struct db *d, const char *bucket,
			       const char *key)
{
	const char *bk[2] = {bucket, key};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "reception renaming held", 0, 0,
		      pg_reception_renaming_held, bk);
}

struct db_remove_locked_args {
	const char *bucket;
	const char *key;
	int64_t id;
	const char *reason;
	db_locked_fn fn;
	void *arg;
	int64_t newest; /* the newest live row seen under the lock */
	int called;	/* fn ran (and returned fn_rc) */
	int fn_rc;
};

static int pg_reception_remove_locked(struct pg_ctx *x, void *arg)
{
	struct db_remove_locked_args *a = arg;
	const char *p[2] = {a->bucket, a->key};
	const char *q[2] = {NULL, a->reason};
	PGresult *res = NULL;
	char idbuf[24];
	int rc, i, found = 0;

	a->newest = 0;
	rc = pg_lock_key(x, a->bucket, a->key);
	if (rc)
		goto out;
	rc = pg_exec(x, db_sql_live_for_update, 2, p, &res);
	if (rc)
		goto out;
	for (i = 0; i < PQntuples(res); i++) {
		int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);

		if (i == 0)
			a->newest = id;
		if (id == a->id)
			found = 1;
	}
	PQclear(res);
	res = NULL;
	if (a->id > 0 && a->newest > a->id) { /* a newer upload: it stays */
		rc = -ESTALE;
		goto out;
	}
	if (!a->reason) {
		/* A rename to key in flight: the object may be its copy
		 * (review F1); kept. */
		rc = pg_renaming_any(x, a->bucket, a->key);
		if (rc < 0)
			goto out;
		if (rc) {
			rc = -EBUSY;
			goto out;
		}
	}
	if (!found && a->reason) {
		rc = -ENOENT;
		goto out;
	}
	a->called = 1;
	a->fn_rc = a->fn(a->arg);
	rc = a->fn_rc;
	if (rc || !a->reason) /* (no reason: db_reception_newest_do) */
		goto out;
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, a->id);
	q[0] = idbuf;
	rc = pg_exec(x, db_sql_remove_id, 2, q, &res);
	if (!rc && PQntuples(res) != 1)
		rc = -EIO; /* cannot be: the row is locked and live */
out:
	PQclear(res);
	return rc;
}

int db_reception_remove_locked(struct db *d, const char *bucket,
			       const char *key, int64_t id, const char *reason,
			       db_locked_fn fn, void *arg, int64_t *newest)
{
	struct db_remove_locked_args a = {
	    .bucket = bucket,
	    .key = key,
	    .id = id,
	    .reason = reason,
	    .fn = fn,
	    .arg = arg,
	};
	int rc;

	if (!d || !bucket || !key || id <= 0 || !reason || !fn)
		return -EINVAL;
	rc = db_run(d, "reception remove (locked)", 1, 0,
		    pg_reception_remove_locked, &a);
	if (newest)
		*newest = a.newest;
	return rc;
}

int db_reception_newest_do(struct db *d, const char *bucket, const char *key,
			   int64_t id, db_locked_fn fn, void *arg,
			   int64_t *newest)
{
	struct db_remove_locked_args a = {
	    .bucket = bucket,
	    .key = key,
	    .id = id,
	    .fn = fn,
	    .arg = arg,
	};
	int rc;

	if (!d || !bucket || !key || id < 0 || !fn)
		return -EINVAL;
	rc = db_run(d, "reception key lock", 1, 0, pg_reception_remove_locked,
		    &a);
	/* The transaction writes nothing: a COMMIT whose answer was lost
	 * changed nothing either, and fn's outcome stands. */
	if (rc == -EINPROGRESS && a.called)
		rc = a.fn_rc;
	if (newest)
		*newest = a.newest;
	return rc;
}

/* Last-Modified is in whole seconds, and Swift rounds it up: an object
 * uploaded within a second before its rename's rows can show an mtime
 * after them. One more second for the clocks of the store and the
 * database. (An upload of the very same bytes made within that bound
 * after the rename is taken for its leftover.) */
#define RENAMED_AWAY_SLACK_S "2"

/* clang-format off */
/* $1 bucket, $2 key, $3 etag, $4 mtime (epoch seconds): the key's newest
 * row when the key has no live row, that row was closed by a rename
 * ("renamed to ...") at or after mtime, less RENAMED_AWAY_SLACK_S, and it
 * logs an object with ETag $3. */
static const char db_sql_renamed_away[] =
	"SELECT r.id FROM (SELECT id, etag, uploaded_at, removed_at,"
	" removal_reason"
	" FROM reception_audit WHERE source_bucket = $1::text"
	" AND object_key = $2::text ORDER BY id DESC LIMIT 1) r"
	" WHERE r.removed_at IS NOT NULL AND r.etag = $3::text"
	" AND r.removal_reason LIKE 'renamed to %'"
	" AND r.removed_at >= to_timestamp($4::double precision)"
	" - make_interval(secs => " RENAMED_AWAY_SLACK_S ")"
	" AND to_timestamp($4::double precision) <= r.uploaded_at"
	" + make_interval(secs => " RENAMED_AWAY_SLACK_S ")"
	" AND NOT EXISTS (SELECT 1 FROM reception_audit l"
	" WHERE l.source_bucket = $1::text AND l.object_key = $2::text"
	" AND l.removed_at IS NULL)";
/* clang-format on */

struct db_renamed_away_args {
	const char *p[4];
	int64_t id;
};

static int pg_reception_renamed_away(struct pg_ctx *x, void *arg)
{
	struct db_renamed_away_args *a = arg;
	PGresult *res = NULL;
	int rc;

	a->id = 0;
	rc = pg_exec(x, db_sql_renamed_away, 4, a->p, &res);
	if (rc == 0 && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
		a->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rc;
}

int db_reception_renamed_away(struct db *d, const char *bucket, const char *key,
			      const char *etag, time_t mtime, int64_t *id)
{
	struct db_renamed_away_args a = {.p = {bucket, key, etag, NULL}};
	char tbuf[24];
	int rc;

	if (!d || !bucket || !key || !etag || !*etag || !id)
		return -EINVAL;
	*id = 0;
	snprintf(tbuf, sizeof(tbuf), "%lld", (long long)mtime);
	a.p[3] = tbuf;
	rc = db_run(d, "reception renamed away", 0, 0,
		    pg_reception_renamed_away, &a);
	if (rc == 0)
		*id = a.id;
	return rc;
}
