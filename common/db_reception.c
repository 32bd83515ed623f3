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

#include <libpq-fe.h>

#include "db_internal.h"
#include "log.h"

/* clang-format off */
static const char db_sql_key_lock[] =
	"SELECT pg_advisory_xact_lock($1::integer, $2::integer)";

/* $1 bucket, $2 key: the live rows, newest first, locked. */
static const char db_sql_live_for_update[] =
	"SELECT id, etag, size_bytes, xxh128, sha256 FROM reception_audit"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at IS NULL ORDER BY id DESC FOR UPDATE";

/* $1 bucket, $2 key, $3 reason. Idempotent. */
static const char db_sql_mark_removed[] =
	"UPDATE reception_audit SET removed_at = now(),"
	" removal_reason = $3::text"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at IS NULL";

static const char db_sql_insert_reception[] =
	"INSERT INTO reception_audit (source_bucket, file_name, object_key,"
	" size_bytes, uploaded_at, xxh128, sha256, etag, origin, received_by,"
	" received_uid, received_user, received_host)"
	" VALUES ($1::text, $2::text, $3::text, $4::bigint, now(), $5::text,"
	" $6::text, $7::text, $8::text, $9::text, $10::bigint, $11::text,"
	" $12::text)"
	" RETURNING id";

/* Byte order (COLLATE "C"), as S3 lists keys; the prefix compared as a
 * string, never as a LIKE pattern. LIMIT NULL is no limit. */
static const char db_sql_live_list[] =
	"SELECT id, object_key, etag FROM reception_audit"
	" WHERE source_bucket = $1::text AND removed_at IS NULL"
	" AND left(object_key, length($2::text)) = $2::text"
	" ORDER BY object_key COLLATE \"C\", id"
	" LIMIT $3::bigint";
/* clang-format on */

/* The advisory lock object id of (bucket, key), as a decimal string. */
static void pg_key_lock_obj(const char *bucket, const char *key, char obj[16])
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

/* Serialises writers of (bucket, key) until the transaction ends. */
static int pg_lock_key(struct pg_ctx *x, const char *bucket, const char *key)
{
	const char *p[2] = {DB_KEY_LOCK_CLASS, NULL};
	char obj[16];

	pg_key_lock_obj(bucket, key, obj);
	p[1] = obj;
	return pg_exec(x, db_sql_key_lock, 2, p, NULL);
}

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

struct db_removed_args {
	const char *bucket;
	const char *key;
	const char *reason;
};

static int pg_reception_mark_removed(struct pg_ctx *x, void *arg)
{
	struct db_removed_args *a = arg;
	const char *p[3] = {a->bucket, a->key, a->reason};

	return pg_exec(x, db_sql_mark_removed, 3, p, NULL);
}

int db_reception_mark_removed(struct db *d, const char *bucket, const char *key,
			      const char *reason)
{
	struct db_removed_args a = {
	    .bucket = bucket,
	    .key = key,
	    .reason = reason,
	};

	if (!d || !bucket || !key)
		return -EINVAL;
	/* One idempotent statement: safe to run again after a reconnect. */
	return db_run(d, "reception mark removed", 0, 0,
		      pg_reception_mark_removed, &a);
}

struct db_rename_args {
	const char *bucket;
	const char *old_key;
	const char *new_key;
	const char *new_etag;
	uint64_t size;
	const struct actor *who;
	char *renamed;	/* "renamed to <new_key>" */
	char *replaced; /* "replaced by rename from <old_key>" */
};

static int pg_reception_rename(struct pg_ctx *x, void *arg)
{
	struct db_rename_args *a = arg;
	struct db_actor_params ap;
	PGresult *res = NULL;
	const char *p[12];
	const char *xxh = NULL, *sha = NULL;
	char size[24];
	int rc, first;

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

	/* The old key's live row: its hashes describe the content only if
	 * the size agrees. res is kept until the insert. */
	p[0] = a->bucket;
	p[1] = a->old_key;
	rc = pg_exec(x, db_sql_live_for_update, 2, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) > 0) {
		if (PQgetisnull(res, 0, 2) ||
		    !strcmp(PQgetvalue(res, 0, 2), size)) {
			if (!PQgetisnull(res, 0, 3))
				xxh = PQgetvalue(res, 0, 3);
			if (!PQgetisnull(res, 0, 4))
				sha = PQgetvalue(res, 0, 4);
		} else {
			log_warn("database: rename %s -> %s: size changed "
				 "(%s -> %s), hashes not carried over",
				 a->old_key, a->new_key, PQgetvalue(res, 0, 2),
				 size);
		}
	}

	p[2] = a->renamed;
	rc = pg_exec(x, db_sql_mark_removed, 3, p, NULL);
	if (rc)
		goto out;
	p[1] = a->new_key;
	p[2] = a->replaced;
	rc = pg_exec(x, db_sql_mark_removed, 3, p, NULL);
	if (rc)
		goto out;

	p[0] = a->bucket;
	p[1] = db_basename(a->new_key);
	p[2] = a->new_key;
	p[3] = size;
	p[4] = xxh;
	p[5] = sha;
	p[6] = a->new_etag;
	p[7] = "rename";
	db_actor_params(a->who, &ap, p + 8);
	rc = pg_exec(x, db_sql_insert_reception, 12, p, NULL);
out:
	PQclear(res); /* after the insert: xxh and sha point into it */
	return rc;
}

int db_reception_rename(struct db *d, const char *bucket, const char *old_key,
			const char *new_key, const char *new_etag,
			uint64_t size, const struct actor *who)
{
	struct db_rename_args a = {
	    .bucket = bucket,
	    .old_key = old_key,
	    .new_key = new_key,
	    .new_etag = new_etag,
	    .size = size,
	    .who = who,
	};
	int rc = -ENOMEM;

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

struct db_live_args {
	const char *bucket;
	const char *prefix;
	size_t max;
	struct reception_live *rows;
	size_t n;
};

static int pg_reception_live(struct pg_ctx *x, void *arg)
{
	struct db_live_args *a = arg;
	struct reception_live *rows = NULL;
	PGresult *res = NULL;
	const char *p[3];
	char limit[24];
	size_t i = 0, n;
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
	if (rc)
		goto out;
	n = (size_t)PQntuples(res);
	if (!n)
		goto out;
	rows = calloc(n, sizeof(*rows));
	if (!rows)
		goto fail_oom;
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
	}
	a->rows = rows;
	a->n = n;
	goto out;

fail_oom:
	db_reception_live_free(rows, rows ? i + 1 : 0);
	rc = -ENOMEM;
out:
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
