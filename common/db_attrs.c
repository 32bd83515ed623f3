/* db_attrs.c - file_attrs and file_attr_changes (migration 5): a key's
 * attributes set, read, listed, moved and dropped; claims in db_attrs_claim.c,
 * a rename's pending rows and a publish in db_attrs_pending.c; see
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
/* A row bound to another object than the one a change is made on ($14:
 * its ETag, '' when there is no stored object, NULL when not known or a
 * directory): stale, the change starts from the defaults -- but only when
 * the caller has seen in the store that the row's object ($15) is not the
 * one at the key (review-T H-b: a caller's stale listing names an object
 * the store no longer holds, while the row is the newer object's). */
#define STALE "($14::text IS NOT NULL AND f.etag IS NOT NULL" \
	" AND f.etag IS DISTINCT FROM nullif($14::text, ''))"
/* Is the caller ($16: its uid, NULL when nothing is checked; $18 its
 * groups) allowed the change of kind $17 on a file whose owner, group and
 * mode are EU, EG, EM? The kernel's rules, applied by the database to the
 * row as it is when the change is made (review-T-Hb: the kernel and the
 * daemon check the caller's view of the name, which may be older than the
 * row and name another object). chmod: the owner; kill (a write's clearing
 * of setuid/setgid): the owner or whoever may write; kill_open (the same
 * through a descriptor open for writing, whose permission was checked at
 * open): anyone, as the kernel does; chown: the owner, to
 * its own uid and its file's group or one of its groups; times: the owner;
 * touch (both times now): the owner or whoever may write. Root is allowed
 * all. */
#define MAY_WRITE(eg, em) "((" em ") & CASE WHEN " eg \
	" = ANY($18::bigint[]) THEN 16 ELSE 2 END) <> 0"
#define MAY(eu, eg, em) "($16::bigint IS NULL OR $16::bigint = 0 OR" \
	" CASE $17::text" \
	" WHEN 'chmod' THEN $16::bigint = " eu \
	" WHEN 'kill' THEN $16::bigint = " eu " OR " MAY_WRITE(eg, em) \
	" WHEN 'kill_open' THEN true" \
	" WHEN 'chown' THEN $16::bigint = " eu \
	"  AND coalesce($9::bigint, " eu ") = " eu \
	"  AND (coalesce($10::bigint, " eg ") = " eg \
	"   OR $10::bigint = ANY($18::bigint[]))" \
	" WHEN 'times' THEN $16::bigint = " eu \
	" WHEN 'touch' THEN $16::bigint = " eu " OR " MAY_WRITE(eg, em) \
	" ELSE false END)"
/* A kill's mode: m without setuid, and without setgid when group-executable
 * (the kernel's rule), cleared from the mode the row has, not the caller's
 * view of it. */
#define KILLED(m) "((" m ") & ~(2048 | CASE WHEN ((" m ") & 1032) = 1032" \
	" THEN 1024 ELSE 0 END))"
/* What a key shows without a row of its own ($19 uid, $20 gid, $21
 * mode), and with its row: the row's, or the defaults when the row is
 * STALE (bound to $15, which the caller has seen the store not to hold). */
#define DEF_MAY MAY("$19::bigint", "$20::bigint", "$21::integer")
#define ROW_UID "CASE WHEN " STALE " THEN $19::bigint" \
	" ELSE coalesce(f.uid, $19::bigint) END"
#define ROW_GID "CASE WHEN " STALE " THEN $20::bigint" \
	" ELSE coalesce(f.gid, $20::bigint) END"
#define ROW_MODE "CASE WHEN " STALE " THEN $21::integer" \
	" ELSE coalesce(f.mode, $21::integer) END"
#define ROW_MAY MAY(ROW_UID, ROW_GID, ROW_MODE)
/* $1 bucket, $2 key, $3 reset, $4..$7 set mode/owner/atime/mtime,
 * $8 mode, $9 uid, $10 gid, $11 atime_ns, $12 mtime_ns, $13 by, $14 etag
 * of the object changed, $15 the ETag of a row known stale (NULL: none),
 * $16..$21 who may (MAY).
 * A reset row is not bound (etag NULL) until its upload is recorded
 * (db_attrs_bind). A STALE row not bound to $15 is left as it is, and so
 * is a row the caller may not change: no row returned (refused). A new
 * row is inserted only when the defaults allow the change; the third
 * column says whether it was inserted without that (a row that existed
 * when the statement began was removed before the insert: refused too). */
static const char db_sql_attrs_upsert[] =
	"INSERT INTO file_attrs AS f (bucket, object_key, mode, uid, gid,"
	" atime_ns, mtime_ns, ctime, updated_by, etag)"
	" SELECT $1::text, $2::text,"
	" CASE WHEN $4::boolean THEN CASE WHEN $17::text LIKE 'kill%'"
	"  THEN " KILLED("$21::integer") " ELSE $8::integer END END,"
	" CASE WHEN $5::boolean THEN coalesce($9::bigint, $19::bigint) END,"
	" CASE WHEN $5::boolean THEN coalesce($10::bigint, $20::bigint) END,"
	" CASE WHEN $6::boolean THEN $11::bigint END,"
	" CASE WHEN $7::boolean THEN $12::bigint END,"
	" now(), $13::text,"
	" CASE WHEN NOT $3::boolean THEN nullif($14::text, '') END"
	" WHERE " DEF_MAY " OR EXISTS (SELECT 1 FROM file_attrs e"
	"  WHERE e.bucket = $1::text AND e.object_key = $2::text)"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = CASE WHEN $4::boolean THEN CASE WHEN $17::text LIKE 'kill%'"
	"  THEN " KILLED(ROW_MODE) " ELSE $8::integer END"
	"  WHEN $3::boolean OR " STALE " THEN NULL ELSE f.mode END,"
	" uid = CASE WHEN $5::boolean THEN coalesce($9::bigint, " ROW_UID ")"
	"  WHEN $3::boolean OR " STALE " THEN NULL ELSE f.uid END,"
	" gid = CASE WHEN $5::boolean THEN coalesce($10::bigint, " ROW_GID ")"
	"  WHEN $3::boolean OR " STALE " THEN NULL ELSE f.gid END,"
	" atime_ns = CASE WHEN $6::boolean THEN $11::bigint"
	"  WHEN $3::boolean OR " STALE " THEN NULL ELSE f.atime_ns END,"
	" mtime_ns = CASE WHEN $7::boolean THEN $12::bigint"
	"  WHEN $3::boolean OR " STALE " THEN NULL ELSE f.mtime_ns END,"
	" etag = CASE WHEN $3::boolean THEN NULL"
	"  WHEN " STALE " THEN nullif($14::text, '') ELSE f.etag END,"
	" claimed_by = CASE WHEN $3::boolean THEN NULL ELSE f.claimed_by END,"
	" claim_until = CASE WHEN $3::boolean THEN NULL"
	"  ELSE f.claim_until END,"
	" ctime = greatest(now(), f.ctime), updated_by = $13::text"
	" WHERE ($3::boolean OR NOT " STALE " OR f.etag = $15::text)"
	" AND " ROW_MAY
	" RETURNING (extract(epoch FROM ctime) * 1000000)::bigint * 1000,"
	" etag, (xmax::text = '0' AND NOT " DEF_MAY "), uid, gid, mode";
/* $1 bucket, $2 key, $3 and $4 the upsert's $14 and $15: the etag of the
 * row an upsert refused (its conflicting row, locked by the upsert until
 * the transaction ends), and whether it was refused as STALE (else: the
 * caller may not change it). */
static const char db_sql_attrs_etag[] =
	"SELECT etag, $3::text IS NOT NULL AND etag IS NOT NULL"
	" AND etag IS DISTINCT FROM nullif($3::text, '')"
	" AND etag IS DISTINCT FROM $4::text"
	" FROM file_attrs WHERE bucket = $1::text AND object_key = $2::text";

/* The upsert's parameters ($3 is the op, $14 the row's etag now), then
 * who ($15..$18). */
static const char db_sql_attrs_log[] =
	"INSERT INTO file_attr_changes (bucket, object_key, op, mode, uid,"
	" gid, atime_ns, mtime_ns, etag, changed_by, changed_uid,"
	" changed_user, changed_host)"
	" VALUES ($1::text, $2::text, $3::text,"
	" CASE WHEN $4::boolean THEN $8::integer END,"
	" CASE WHEN $5::boolean THEN $9::bigint END,"
	" CASE WHEN $5::boolean THEN $10::bigint END,"
	" CASE WHEN $6::boolean THEN $11::bigint END,"
	" CASE WHEN $7::boolean THEN $12::bigint END,"
	" $14::text, coalesce($15::text, $13::text), $16::bigint, $17::text,"
	" $18::text)";

/* $1 bucket, $2 dir: keys dir + name, name without '/' (their parent
 * prefix, "" at the root), read through the file_attrs_parent index
 * (migration 9, the same expression): the children only, never the rows
 * of the tree below them. */
static const char db_sql_attrs_list_dir[] =
	"SELECT " ROW_COLS
	" FROM file_attrs WHERE bucket = $1::text"
	" AND regexp_replace(object_key, '[^/]*$', '') = $2::text";

/* $1 bucket, $2 gid. Files received through a mount (live row, origin
 * 'mount', received_uid known) without a file_attrs row: a database from
 * before migration 5. Bound to that row's object. */
static const char db_sql_attrs_backfill[] =
	"INSERT INTO file_attrs (bucket, object_key, uid, gid, ctime,"
	" updated_by, etag)"
	" SELECT DISTINCT ON (r.object_key) r.source_bucket, r.object_key,"
	" r.received_uid, $2::bigint, r.uploaded_at,"
	" 'backfill from reception_audit', nullif(r.etag, '')"
	" FROM reception_audit r WHERE r.source_bucket = $1::text"
	" AND r.removed_at IS NULL AND r.origin = 'mount'"
	" AND r.received_uid IS NOT NULL"
	" AND NOT EXISTS (SELECT 1 FROM file_attrs f"
	"  WHERE f.bucket = r.source_bucket AND f.object_key = r.object_key)"
	" ORDER BY r.object_key, r.id DESC"
	" ON CONFLICT (bucket, object_key) DO NOTHING";

/* $1 bucket, $2 key: that key's row only. */
static const char db_sql_attrs_get[] =
	"SELECT " ROW_COLS
	" FROM file_attrs WHERE bucket = $1::text AND object_key = $2::text";

/* Who ($1..$4), $5 bucket, $6 key, $7 tree, $8 key + "/", $9 key + "0",
 * $10 this process's claimer, $11 spare, $12 own_hidden: each row removed
 * is logged ('drop'); with spare, another mount's live claim stays
 * (review-stale4 K1, K2), and so does a live process's hidden row
 * (review-31 R6); with own_hidden, a row another process's hide tagged
 * stays, live or not (review-34 Z2, Z7: the name may be that process's
 * now). */
static const char db_sql_attrs_drop[] =
	"WITH d AS (DELETE FROM file_attrs f WHERE bucket = $5::text"
	" AND (object_key = $6::text OR ($7::boolean"
	" AND object_key COLLATE \"C\" >= $8::text"
	" AND object_key COLLATE \"C\" < $9::text))"
	" AND NOT ($11::boolean AND (" OTHERS_LIVE("$10") " OR " LIVE_TAG "))"
	" AND NOT ($12::boolean AND f.claimed_by IS NOT NULL"
	" AND right(f.claimed_by, length('" HIDDEN_TAG "')) = '" HIDDEN_TAG "'"
	" AND f.claimed_by IS DISTINCT FROM $10::text || '" HIDDEN_TAG "')"
	" RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM d";

/* Who ($1..$4), $5 bucket, $6 key, $7 the ETag of the object that
 * replaced it: a row bound to anything else goes (logged 'drop'). */
static const char db_sql_attrs_drop_replaced[] =
	"WITH d AS (DELETE FROM file_attrs WHERE bucket = $5::text"
	" AND object_key = $6::text AND etag IS DISTINCT FROM $7::text"
	" RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM d";

/* Who ($1..$4), $5 bucket, $6 key, $7 the ETag of an object removed from
 * key: a row bound to it goes (logged 'drop'). */
static const char db_sql_attrs_drop_bound[] =
	"WITH d AS (DELETE FROM file_attrs WHERE bucket = $5::text"
	" AND object_key = $6::text AND etag = $7::text"
	" RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM d";

/* $1 bucket, $2 key, $3 the ETag of the object the upload replaces (''
 * none): before a mount uploads key, a row bound to another object is
 * stale and goes (the file showed the defaults, its new content keeps
 * them); the row left is unbound until the upload is recorded. */
static const char db_sql_attrs_prepare_del[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text AND etag IS NOT NULL"
	" AND etag IS DISTINCT FROM nullif($3::text, '')";
static const char db_sql_attrs_prepare_unbind[] =
	"UPDATE file_attrs SET etag = NULL WHERE bucket = $1::text"
	" AND object_key = $2::text AND etag IS NOT NULL";

/* $1 bucket, $2 key, $3 etag, $4 old: an unbound row, or one bound to
 * old (the object a copy replaced), describes the object etag now (a
 * claim on the name ends there). */
static const char db_sql_attrs_bind[] =
	"UPDATE file_attrs SET etag = $3::text, claimed_by = NULL,"
	" claim_until = NULL WHERE bucket = $1::text"
	" AND object_key = $2::text AND (etag IS NULL OR etag = $4::text)";
/* $1 bucket, $2 key, $3 etag: is the live reception row of key that of
 * the object etag? (Read under the reception key lock.) */
static const char db_sql_attrs_live_is[] =
	"SELECT EXISTS (SELECT 1 FROM reception_audit"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND etag = $3::text AND removed_at IS NULL)";
/* Who ($1..$4), $5 bucket, $6 from, $7 to, $8 tree, $9 from + "/",
 * $10 from + "0", $11 the ETag of to's object after the move (NULL:
 * unchanged), taken by from's row when unbound or bound to $12 (the
 * object moved), $13 this process's claimer. Each row moved is logged
 * ('move', from_key); another mount's live claim stays where it is. */
static const char db_sql_attrs_move[] =
	"WITH m AS (UPDATE file_attrs f SET object_key = CASE"
	" WHEN object_key = $6::text THEN $7::text"
	" ELSE $7::text || substr(object_key, length($6::text) + 1) END,"
	" etag = CASE WHEN object_key = $6::text AND $11::text IS NOT NULL"
	" AND (etag IS NULL OR etag = $12::text) THEN $11::text ELSE etag END"
	" WHERE bucket = $5::text AND (object_key = $6::text OR ($8::boolean"
	" AND object_key COLLATE \"C\" >= $9::text"
	" AND object_key COLLATE \"C\" < $10::text))"
	" AND NOT " OTHERS_LIVE("$13") " RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text ||"
	" substr(object_key, length($7::text) + 1), " LOG_WHO " FROM m";
/* $1 bucket, $2 to, $3 from, $4 this process's claimer: is `to` held by
 * another mount's live claim (a row db_sql_attrs_drop left) while from
 * has a row that would move there? */
static const char db_sql_attrs_move_blocked[] =
	"SELECT 1 FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text AND EXISTS (SELECT 1 FROM file_attrs f"
	" WHERE bucket = $1::text AND object_key = $3::text"
	" AND NOT " OTHERS_LIVE("$4") ")";
/* clang-format on */

void attrs_who_fill(const struct actor *who, struct who_params *w,
		    const char **p)
{
	if (!who) {
		p[0] = p[1] = p[2] = p[3] = NULL;
		return;
	}
	actor_format(who, w->by, sizeof(w->by));
	snprintf(w->uid, sizeof(w->uid), "%lu", (unsigned long)who->uid);
	p[0] = w->by;
	p[1] = w->uid;
	p[2] = who->user;
	p[3] = who->host;
}

struct attrs_set_args {
	const char *bucket, *key, *op, *etag, *stale;
	const struct db_attrs *a;
	const struct db_attrs_may *may;
	int64_t uid_now, gid_now; /* output: the owner after DB_ATTR_OWNER */
	uint32_t mode_now;	  /* output: the mode after DB_ATTR_MODE */
	const struct actor *who;
	int64_t ctime_ns;
	char *bound; /* output: the row's etag now (malloc'd), or NULL */
};

static const char *const may_kinds[] = {
    [DB_MAY_CHMOD] = "chmod",	      [DB_MAY_KILL] = "kill",
    [DB_MAY_KILL_OPEN] = "kill_open", [DB_MAY_CHOWN] = "chown",
    [DB_MAY_TIMES] = "times",	      [DB_MAY_TOUCH] = "touch",
};

/* The upsert's $16..$21 from may (NULL: nothing checked) into u[15..20],
 * the strings in m (groups: "{g1,g2,...}", malloc'd into *groups, the
 * caller frees). 0 or -ENOMEM. */
struct may_params {
	char uid[24], du[24], dg[24], dm[16];
};

static int may_fill(const struct db_attrs_may *may, struct may_params *m,
		    char **groups, const char **u)
{
	size_t i, len = 3, at;

	*groups = NULL;
	memset(u, 0, 6 * sizeof(*u));
	if (!may)
		return 0;
	len += may->ngroups * 22;
	*groups = malloc(len);
	if (!*groups)
		return -ENOMEM;
	at = (size_t)snprintf(*groups, len, "{");
	for (i = 0; i < may->ngroups; i++)
		at += (size_t)snprintf(*groups + at, len - at, "%s%" PRId64,
				       i ? "," : "", may->groups[i]);
	snprintf(*groups + at, len - at, "}");
	snprintf(m->uid, sizeof(m->uid), "%" PRId64, may->uid);
	snprintf(m->du, sizeof(m->du), "%" PRId64, may->def_uid);
	snprintf(m->dg, sizeof(m->dg), "%" PRId64, may->def_gid);
	snprintf(m->dm, sizeof(m->dm), "%u", (unsigned)(may->def_mode & 07777));
	u[0] = m->uid;
	u[1] = may_kinds[may->kind];
	u[2] = *groups;
	u[3] = m->du;
	u[4] = m->dg;
	u[5] = m->dm;
	return 0;
}

/* The upsert refused: why (the row's etag into s->bound). -ESTALE (bound
 * to another object), else the caller may not: -EPERM, -EACCES for a
 * touch. */
static int attrs_refused(struct pg_ctx *x, struct attrs_set_args *s)
{
	const char *p[4] = {s->bucket, s->key, s->etag, s->stale};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_etag, 4, p, &res);

	if (rc)
		goto out;
	rc = s->may && s->may->kind == DB_MAY_TOUCH ? -EACCES : -EPERM;
	if (PQntuples(res) != 1)
		goto out;
	if (!strcmp(PQgetvalue(res, 0, 1), "t"))
		rc = -ESTALE;
	if (!PQgetisnull(res, 0, 0)) {
		s->bound = strdup(PQgetvalue(res, 0, 0));
		if (!s->bound)
			rc = -ENOMEM;
	}
out:
	PQclear(res);
	return rc;
}

static int pg_attrs_set(struct pg_ctx *x, void *arg)
{
	struct attrs_set_args *s = arg;
	const struct db_attrs *a = s->a;
	char mode[16], uid[24], gid[24], at[24], mt[24], *groups = NULL;
	struct who_params w;
	struct may_params m;
	const char *p[18], *u[21];
	PGresult *res = NULL;
	int rc;

	free(s->bound);
	s->bound = NULL;
	snprintf(mode, sizeof(mode), "%u", (unsigned)(a->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, a->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, a->gid);
	snprintf(at, sizeof(at), "%" PRId64, a->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, a->mtime_ns);
	attrs_who_fill(s->who, &w, &p[14]);
	p[0] = s->bucket;
	p[1] = s->key;
	p[2] = a->what & DB_ATTR_RESET ? "t" : "f";
	p[3] = a->what & DB_ATTR_MODE ? "t" : "f";
	p[4] = a->what & DB_ATTR_OWNER ? "t" : "f";
	p[5] = a->what & DB_ATTR_ATIME ? "t" : "f";
	p[6] = a->what & DB_ATTR_MTIME ? "t" : "f";
	p[7] = mode;
	p[8] = a->uid < 0 ? NULL : uid; /* kept (with may's defaults) */
	p[9] = a->gid < 0 ? NULL : gid;
	p[10] = at;
	p[11] = mt;
	p[12] = p[14]; /* updated_by */
	p[13] = s->etag;
	memcpy(u, p, 14 * sizeof(*u));
	u[14] = s->stale;
	rc = may_fill(s->may, &m, &groups, &u[15]);
	if (rc)
		goto out;
	rc = pg_exec(x, db_sql_attrs_upsert, 21, u, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 0) {
		rc = attrs_refused(x, s);
		goto out;
	}
	if (PQntuples(res) != 1) {
		rc = -EIO;
		goto out;
	}
	if (!strcmp(PQgetvalue(res, 0, 2), "t")) {
		/* Inserted unchecked: the row it passed on went away. */
		rc = s->may && s->may->kind == DB_MAY_TOUCH ? -EACCES : -EPERM;
		goto out;
	}
	s->ctime_ns = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	if ((a->what & DB_ATTR_OWNER) && !PQgetisnull(res, 0, 3) &&
	    !PQgetisnull(res, 0, 4)) {
		/* The owner the row has now (a kept field filled in). */
		s->uid_now = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
		s->gid_now = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
		snprintf(uid, sizeof(uid), "%" PRId64, s->uid_now);
		snprintf(gid, sizeof(gid), "%" PRId64, s->gid_now);
		p[8] = uid;
		p[9] = gid;
	}
	if ((a->what & DB_ATTR_MODE) && !PQgetisnull(res, 0, 5)) {
		/* The mode the row has now (a kill's, from the row's). */
		s->mode_now =
		    (uint32_t)strtoul(PQgetvalue(res, 0, 5), NULL, 10);
		snprintf(mode, sizeof(mode), "%u", (unsigned)s->mode_now);
	}
	if (!PQgetisnull(res, 0, 1)) {
		s->bound = strdup(PQgetvalue(res, 0, 1));
		if (!s->bound) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if (!s->op)
		goto out;
	p[2] = s->op;
	p[13] = s->bound;
	rc = pg_exec(x, db_sql_attrs_log, 18, p, NULL);
out:
	free(groups);
	PQclear(res);
	return rc;
}

int db_attrs_set(struct db *d, const char *bucket, const char *key,
		 struct db_attrs *a, const char *etag, const char *stale,
		 const struct db_attrs_may *may, const char *op,
		 const struct actor *who, int64_t *ctime_ns, char **bound)
{
	struct attrs_set_args s = {.bucket = bucket,
				   .key = key,
				   .op = op,
				   .etag = etag,
				   .stale = stale,
				   .may = may,
				   .a = a,
				   .who = who};
	int rc;

	if (bound)
		*bound = NULL;
	if (!d || !bucket || !key || !a)
		return -EINVAL;
	s.uid_now = a->uid;
	s.gid_now = a->gid;
	s.mode_now = a->mode;
	rc = db_run(d, "set file attributes", 1, 1, pg_attrs_set, &s);
	if (rc == 0 && ctime_ns)
		*ctime_ns = s.ctime_ns;
	if (rc == 0 && (a->what & DB_ATTR_MODE))
		a->mode = s.mode_now;
	if (rc == 0 && (a->what & DB_ATTR_OWNER)) {
		a->uid = s.uid_now;
		a->gid = s.gid_now;
	}
	if ((rc == 0 || rc == -ESTALE) && bound)
		*bound = s.bound;
	else
		free(s.bound);
	return rc;
}

struct attrs_list_args {
	const char *bucket, *dir;
	const char *key; /* set: that key's row only (dir unused) */
	struct db_attrs *rows;
	size_t n;
};

/* Row i of res (columns ROW_COLS) into *r (zeroed first). 0 or -ENOMEM
 * (r->key set unless that failed: the caller frees what was set). */
int attrs_row_parse(PGresult *res, int i, struct db_attrs *r)
{
	memset(r, 0, sizeof(*r));
	r->key = strdup(PQgetvalue(res, i, 0));
	if (!r->key)
		return -ENOMEM;
	if (!PQgetisnull(res, i, 1)) {
		r->what |= DB_ATTR_MODE;
		r->mode = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
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
	if (!PQgetisnull(res, i, 7)) {
		r->etag = strdup(PQgetvalue(res, i, 7));
		if (!r->etag)
			return -ENOMEM;
	}
	return 0;
}

static int pg_attrs_list_dir(struct pg_ctx *x, void *arg)
{
	struct attrs_list_args *l = arg;
	PGresult *res = NULL;
	const char *p[2];
	int rc, i, nt;

	l->rows = NULL;
	l->n = 0;
	p[0] = l->bucket;
	p[1] = l->key ? l->key : l->dir;
	rc = pg_exec(x, l->key ? db_sql_attrs_get : db_sql_attrs_list_dir, 2, p,
		     &res);
	if (rc)
		goto out;
	nt = PQntuples(res);
	l->rows = nt ? calloc((size_t)nt, sizeof(*l->rows)) : NULL;
	if (nt && !l->rows) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nt; i++) {
		rc = attrs_row_parse(res, i, &l->rows[l->n]);
		if (l->rows[l->n].key)
			l->n++;
		if (rc)
			goto out;
	}
out:
	if (rc) {
		db_attrs_free(l->rows, l->n);
		l->rows = NULL;
		l->n = 0;
	}
	PQclear(res);
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
		l.rows[0].etag = NULL;
		*found = 1;
	}
	db_attrs_free(l.rows, l.n);
	return 0;
}

/* clang-format off */
/* $1 bucket, $2 key: its row, once no transaction holds it. */
static const char db_sql_attrs_settled[] =
	"SELECT 1 FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text FOR UPDATE";
/* clang-format on */

struct attrs_settled_args {
	const char *bucket, *key;
	int found; /* output */
};

static int pg_attrs_settled(struct pg_ctx *x, void *arg)
{
	struct attrs_settled_args *a = arg;
	const char *p[2] = {a->bucket, a->key};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_settled, 2, p, &res);

	if (rc == 0)
		a->found = PQntuples(res) > 0;
	PQclear(res);
	return rc;
}

int db_attrs_settled(struct db *d, const char *bucket, const char *key,
		     int *found)
{
	struct attrs_settled_args a = {.bucket = bucket, .key = key};
	int rc;

	if (!d || !bucket || !key || !found)
		return -EINVAL;
	rc = db_run(d, "settle file attributes", 1, 0, pg_attrs_settled, &a);
	if (rc == 0)
		*found = a.found;
	return rc;
}

void db_attrs_free_row(struct db_attrs *row)
{
	free(row->key);
	free(row->etag);
	memset(row, 0, sizeof(*row));
}

void db_attrs_free(struct db_attrs *rows, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(rows[i].key);
		free(rows[i].etag);
	}
	free(rows);
}

/* key + "/" and key + "0": the byte range of everything under key/. */
int attrs_subtree(const char *key, char **lo, char **hi)
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

int pg_attrs_drop_one(struct pg_ctx *x, const char *bucket, const char *key,
		      int tree, int spare, const struct actor *who)
{
	struct who_params w;
	const char *p[12];
	char *lo, *hi;
	int rc = attrs_subtree(key, &lo, &hi);

	if (rc)
		return rc;
	attrs_who_fill(who, &w, p);
	p[4] = bucket;
	p[5] = key;
	p[6] = tree ? "t" : "f";
	p[7] = lo;
	p[8] = hi;
	p[9] = x->d->claimer;
	p[10] = spare == 1 ? "t" : "f";
	p[11] = spare == 2 ? "t" : "f";
	rc = pg_exec(x, db_sql_attrs_drop, 12, p, NULL);
	free(lo);
	free(hi);
	return rc;
}

int pg_attrs_move_run(struct pg_ctx *x, const struct attrs_move_args *m)
{
	struct who_params w;
	const char *p[13];
	PGresult *res = NULL;
	char *lo, *hi;
	int rc;

	rc = pg_attrs_drop_one(x, m->bucket, m->to, m->tree, 1, m->who);
	if (rc)
		return rc;
	if (!m->tree) {
		/* Another mount's new file is claimed at `to` (drop_one left
		 * it): from's row cannot take its place. */
		p[0] = m->bucket;
		p[1] = m->to;
		p[2] = m->from;
		p[3] = x->d->claimer;
		rc = pg_exec(x, db_sql_attrs_move_blocked, 4, p, &res);
		if (rc == 0 && PQntuples(res) > 0)
			rc = -EBUSY;
		PQclear(res);
		if (rc)
			return rc;
	}
	rc = attrs_subtree(m->from, &lo, &hi);
	if (rc)
		return rc;
	attrs_who_fill(m->who, &w, p);
	p[4] = m->bucket;
	p[5] = m->from;
	p[6] = m->to;
	p[7] = m->tree ? "t" : "f";
	p[8] = lo;
	p[9] = hi;
	p[10] = m->etag && *m->etag ? m->etag : NULL;
	p[11] = m->old && *m->old ? m->old : NULL;
	p[12] = x->d->claimer;
	rc = pg_exec(x, db_sql_attrs_move, 13, p, NULL);
	free(lo);
	free(hi);
	return rc;
}

static int pg_attrs_move(struct pg_ctx *x, void *arg)
{
	return pg_attrs_move_run(x, arg);
}

int db_attrs_move(struct db *d, const char *bucket, const char *from,
		  const char *to, int tree, const char *etag, const char *old,
		  const struct actor *who)
{
	struct attrs_move_args m = {.bucket = bucket,
				    .from = from,
				    .to = to,
				    .etag = etag,
				    .old = old,
				    .tree = tree,
				    .who = who};

	if (!d || !bucket || !from || !to)
		return -EINVAL;
	if (!strcmp(from, to))
		return 0;
	return db_run(d, "move file attributes", 1, 1, pg_attrs_move, &m);
}

struct attrs_drop_args {
	const char *bucket, *key, *etag, *old;
	int tree, force, spare;
	const struct actor *who;
};

static int pg_attrs_drop(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;
	int rc =
	    pg_attrs_drop_one(x, a->bucket, a->key, a->tree, a->spare, a->who);

	/* A pending row a crashed rename left goes with the name. */
	return rc ? rc : pg_attrs_unpend_key(x, a->bucket, a->key);
}

int db_attrs_drop(struct db *d, const char *bucket, const char *key, int tree,
		  const struct actor *who)
{
	struct attrs_drop_args a = {
	    .bucket = bucket, .key = key, .tree = tree, .who = who};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "drop file attributes", 1, 1, pg_attrs_drop, &a);
}

int db_attrs_drop_hidden(struct db *d, const char *bucket, const char *key,
			 const struct actor *who)
{
	struct attrs_drop_args a = {
	    .bucket = bucket, .key = key, .spare = 2, .who = who};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "drop a hidden name's file attributes", 1, 1,
		      pg_attrs_drop, &a);
}

int db_attrs_drop_spare(struct db *d, const char *bucket, const char *key,
			int tree, const struct actor *who)
{
	struct attrs_drop_args a = {
	    .bucket = bucket, .key = key, .tree = tree, .spare = 1, .who = who};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "drop file attributes (sparing claims)", 1, 1,
		      pg_attrs_drop, &a);
}

static int pg_attrs_drop_replaced(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;
	struct who_params w;
	const char *p[7];

	attrs_who_fill(a->who, &w, p);
	p[4] = a->bucket;
	p[5] = a->key;
	p[6] = a->etag;
	return pg_exec(
	    x, a->force ? db_sql_attrs_drop_bound : db_sql_attrs_drop_replaced,
	    7, p, NULL);
}

int db_attrs_drop_replaced(struct db *d, const char *bucket, const char *key,
			   const char *etag, const struct actor *who)
{
	struct attrs_drop_args a = {
	    .bucket = bucket, .key = key, .etag = etag, .who = who};

	if (!d || !bucket || !key || !etag)
		return -EINVAL;
	return db_run(d, "drop replaced file attributes", 1, 1,
		      pg_attrs_drop_replaced, &a);
}

int db_attrs_drop_bound(struct db *d, const char *bucket, const char *key,
			const char *etag, const struct actor *who)
{
	struct attrs_drop_args a = {
	    .bucket = bucket, .key = key, .etag = etag, .force = 1, .who = who};

	if (!d || !bucket || !key || !etag || !*etag)
		return -EINVAL;
	return db_run(d, "drop file attributes of a removed object", 1, 1,
		      pg_attrs_drop_replaced, &a);
}

static int pg_attrs_prepare(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;
	const char *p[3] = {a->bucket, a->key, a->etag ? a->etag : ""};
	int rc =
	    a->force ? pg_exec(x, db_sql_attrs_prepare_del, 3, p, NULL) : 0;

	return rc ? rc : pg_exec(x, db_sql_attrs_prepare_unbind, 2, p, NULL);
}

int db_attrs_prepare(struct db *d, const char *bucket, const char *key,
		     int check, const char *replaced_etag)
{
	struct attrs_drop_args a = {.bucket = bucket,
				    .key = key,
				    .etag = replaced_etag,
				    .force = check};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "unbind file attributes", 1, 1, pg_attrs_prepare, &a);
}

int pg_attrs_bind_run(struct pg_ctx *x, const char *bucket, const char *key,
		      const char *etag, const char *old)
{
	const char *p[4] = {bucket, key, etag, old};

	return pg_exec(x, db_sql_attrs_bind, 4, p, NULL);
}

static int pg_attrs_bind(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;

	return pg_attrs_bind_run(x, a->bucket, a->key, a->etag, a->old);
}

int db_attrs_bind(struct db *d, const char *bucket, const char *key,
		  const char *etag, const char *old)
{
	struct attrs_drop_args a = {.bucket = bucket,
				    .key = key,
				    .etag = etag,
				    .old = old && *old ? old : NULL};

	if (!d || !bucket || !key || !etag || !*etag)
		return -EINVAL;
	return db_run(d, "bind file attributes", 1, 1, pg_attrs_bind, &a);
}

/* In a transaction, under key's reception key lock: is etag the live
 * object of key (its live reception row's)? 1, 0, or -errno. */
int pg_attrs_live_is(struct pg_ctx *x, const char *bucket, const char *key,
		     const char *etag)
{
	const char *p[3] = {bucket, key, etag};
	PGresult *res = NULL;
	int rc = pg_lock_key(x, bucket, key);

	if (rc == 0)
		rc = pg_exec(x, db_sql_attrs_live_is, 3, p, &res);
	if (rc == 0)
		rc = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	return rc;
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
