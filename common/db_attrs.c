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
/* A row bound to another object than the one a change is made on ($14:
 * its ETag, '' when there is no stored object, NULL when not known or a
 * directory): stale, the change starts from the defaults. */
#define STALE "($14::text IS NOT NULL AND f.etag IS NOT NULL" \
	" AND f.etag IS DISTINCT FROM nullif($14::text, ''))"
/* $1 bucket, $2 key, $3 reset, $4..$7 set mode/owner/atime/mtime,
 * $8 mode, $9 uid, $10 gid, $11 atime_ns, $12 mtime_ns, $13 by, $14 etag
 * of the object changed. A reset row is not bound (etag NULL) until its
 * upload is recorded (db_attrs_bind). */
static const char db_sql_attrs_upsert[] =
	"INSERT INTO file_attrs AS f (bucket, object_key, mode, uid, gid,"
	" atime_ns, mtime_ns, ctime, updated_by, etag)"
	" VALUES ($1::text, $2::text,"
	" CASE WHEN $4::boolean THEN $8::integer END,"
	" CASE WHEN $5::boolean THEN $9::bigint END,"
	" CASE WHEN $5::boolean THEN $10::bigint END,"
	" CASE WHEN $6::boolean THEN $11::bigint END,"
	" CASE WHEN $7::boolean THEN $12::bigint END,"
	" now(), $13::text,"
	" CASE WHEN NOT $3::boolean THEN nullif($14::text, '') END)"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = CASE WHEN $4::boolean THEN $8::integer"
	"  WHEN $3::boolean OR " STALE " THEN NULL ELSE f.mode END,"
	" uid = CASE WHEN $5::boolean THEN $9::bigint"
	"  WHEN $3::boolean OR " STALE " THEN NULL ELSE f.uid END,"
	" gid = CASE WHEN $5::boolean THEN $10::bigint"
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
	" RETURNING (extract(epoch FROM ctime) * 1000000)::bigint * 1000,"
	" etag";

/* Who: $1 changed_by, $2 uid, $3 user, $4 host (the first parameters of
 * each logging statement). */
#define LOG_COLS "INSERT INTO file_attr_changes (bucket, object_key, op," \
	" mode, uid, gid, atime_ns, mtime_ns, etag, from_key, changed_by," \
	" changed_uid, changed_user, changed_host) "
#define LOG_WHO "$1::text, $2::bigint, $3::text, $4::text"

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

#define ROW_COLS "object_key, mode, uid, gid, atime_ns, mtime_ns," \
	" (extract(epoch FROM ctime) * 1000000)::bigint * 1000, etag"

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

/* Who ($1..$4), $5 bucket, $6 key, $7 tree, $8 key + "/", $9 key + "0";
 * each row removed is logged ('drop'). */
static const char db_sql_attrs_drop[] =
	"WITH d AS (DELETE FROM file_attrs WHERE bucket = $5::text"
	" AND (object_key = $6::text OR ($7::boolean"
	" AND object_key COLLATE \"C\" >= $8::text"
	" AND object_key COLLATE \"C\" < $9::text)) RETURNING *) "
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

/* $1 bucket, $2 key, $3 etag, $4 claimer: the row of a new file's claim,
 * still that claimer's and unbound, or already bound to etag (a retry),
 * describes the object etag now (the claim ends there). */
static const char db_sql_attrs_bind_mine[] =
	"UPDATE file_attrs SET etag = $3::text, claimed_by = NULL,"
	" claim_until = NULL WHERE bucket = $1::text"
	" AND object_key = $2::text AND ((etag IS NULL"
	" AND claimed_by = $4::text) OR etag = $3::text) RETURNING 1";
/* $1 bucket, $2 key, $3 another key (NULL: none): are all the rows of
 * these keys now locked by this transaction? (FOR UPDATE SKIP LOCKED: a
 * row another transaction holds is skipped, never waited for.) */
static const char db_sql_attrs_lock_rows[] =
	"SELECT (SELECT count(*) FROM file_attrs WHERE bucket = $1::text"
	" AND object_key IN ($2::text, $3::text)) = (SELECT count(*) FROM"
	" (SELECT 1 FROM file_attrs WHERE bucket = $1::text"
	" AND object_key IN ($2::text, $3::text) FOR UPDATE SKIP LOCKED) l)";
/* $1 bucket, $2 from, $3 to, $4 etag: was from's row published to to
 * already (from has none, to's is bound to etag: a retry after a commit
 * whose answer was lost, e.g. the reception row's that moved it)? */
static const char db_sql_attrs_published[] =
	"SELECT NOT EXISTS (SELECT 1 FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text) AND EXISTS (SELECT 1 FROM file_attrs"
	" WHERE bucket = $1::text AND object_key = $3::text"
	" AND etag = $4::text)";
/* $1 bucket, $2 key, $3 etag: is the live reception row of key that of
 * the object etag? (Read under the reception key lock.) */
static const char db_sql_attrs_live_is[] =
	"SELECT EXISTS (SELECT 1 FROM reception_audit"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND etag = $3::text AND removed_at IS NULL)";
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
/* Who ($1..$4), $5 bucket, $6 from, $7 to, $8 etag: the row of a file
 * published from `from` (its upload to `to` recorded, the live object
 * there) becomes to's, bound to etag, its claim ended (logged 'move',
 * from_key from); to's own was deleted first (db_sql_attrs_copy_del). */
static const char db_sql_attrs_publish_ins[] =
	"WITH c AS (INSERT INTO file_attrs (bucket, object_key, mode, uid,"
	" gid, atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until)"
	" SELECT bucket, $7::text, mode, uid, gid, atime_ns, mtime_ns, now(),"
	" updated_by, $8::text, NULL, NULL FROM file_attrs"
	" WHERE bucket = $5::text AND object_key = $6::text RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text, " LOG_WHO " FROM c";
/* Who ($1..$4), $5 bucket, $6 from, $7 to, $8 tree, $9 from + "/",
 * $10 from + "0", $11 the ETag of to's object after the move (NULL:
 * unchanged), taken by from's row when unbound or bound to $12 (the
 * object moved). Each row moved is logged ('move', from_key). */
static const char db_sql_attrs_move[] =
	"WITH m AS (UPDATE file_attrs SET object_key = CASE"
	" WHEN object_key = $6::text THEN $7::text"
	" ELSE $7::text || substr(object_key, length($6::text) + 1) END,"
	" etag = CASE WHEN object_key = $6::text AND $11::text IS NOT NULL"
	" AND (etag IS NULL OR etag = $12::text) THEN $11::text ELSE etag END"
	" WHERE bucket = $5::text AND (object_key = $6::text OR ($8::boolean"
	" AND object_key COLLATE \"C\" >= $9::text"
	" AND object_key COLLATE \"C\" < $10::text)) RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text ||"
	" substr(object_key, length($7::text) + 1), " LOG_WHO " FROM m";
/* $1 bucket, $2 to; then who ($1..$4), $5 bucket, $6 from, $7 to: to's
 * row becomes a copy of from's (none when from has none; logged 'move');
 * the copy's ctime is now (a rename is a status change); a new file's
 * claim (an unbound row's) is copied with it. */
static const char db_sql_attrs_copy_del[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text RETURNING " ROW_COLS;
/* The attributes a rename in flight gives its copy at a key that has a
 * row of its own (a target renamed over) live under that key in bucket
 * PENDING(bucket) (no S3 bucket name has a '/'): the target keeps its row
 * until the copy's rows are recorded (db_attrs_renamed, in that
 * transaction), so a crash while the copy is in flight, or a copy that
 * never lands, leaves the target with its own attributes. Never listed,
 * never read as any key's row. */
#define PENDING_SUFFIX "/rename"
#define PENDING(b) "(" b " || '" PENDING_SUFFIX "')"
/* $1 bucket, $2 to: does to have a row (locked)? */
static const char db_sql_attrs_copy_has[] =
	"SELECT 1 FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text FOR UPDATE";
/* $1 bucket, $2 from, $3 to: from's row (all NULL when it has none)
 * becomes the pending row of to (replacing one a crash left). */
static const char db_sql_attrs_pend[] =
	"INSERT INTO file_attrs AS p (bucket, object_key, mode, uid, gid,"
	" atime_ns, mtime_ns, ctime, updated_by, etag)"
	" SELECT " PENDING("$1::text") ", $3::text, f.mode, f.uid, f.gid,"
	" f.atime_ns, f.mtime_ns, now(), f.updated_by, f.etag"
	" FROM (SELECT 1) o LEFT JOIN file_attrs f ON f.bucket = $1::text"
	" AND f.object_key = $2::text"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET mode = excluded.mode,"
	" uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" ctime = excluded.ctime, updated_by = excluded.updated_by,"
	" etag = excluded.etag, claimed_by = NULL, claim_until = NULL";
/* $1 bucket, $2 to: to's pending row goes (its copy never landed). */
static const char db_sql_attrs_unpend[] =
	"DELETE FROM file_attrs WHERE bucket = " PENDING("$1::text")
	" AND object_key = $2::text";
/* Who ($1..$4), $5 bucket, $6 from, $7 to, $8 the copy's ETag, $9 the
 * ETag of the object copied (NULL: not known): to's pending row replaces
 * to's own (logged 'move' from from), bound to the copy when it was
 * unbound or bound to the object copied. */
static const char db_sql_attrs_promote[] =
	"WITH p AS (DELETE FROM file_attrs WHERE bucket = " PENDING("$5::text")
	" AND object_key = $7::text RETURNING *),"
	" c AS (INSERT INTO file_attrs AS f (bucket, object_key, mode, uid,"
	" gid, atime_ns, mtime_ns, ctime, updated_by, etag)"
	" SELECT $5::text, $7::text, mode, uid, gid, atime_ns, mtime_ns, ctime,"
	" updated_by, CASE WHEN etag IS NULL OR etag = $9::text THEN $8::text"
	" ELSE etag END FROM p"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET mode = excluded.mode,"
	" uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" ctime = excluded.ctime, updated_by = excluded.updated_by,"
	" etag = excluded.etag, claimed_by = NULL, claim_until = NULL"
	" RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text, " LOG_WHO " FROM c";
/* $1 bucket, $2 to, $3 the copy's ETag, $4 the ETag of the object copied:
 * to's row, copied from from's (db_attrs_copy) and so bound to the object
 * copied, or unbound and unclaimed, describes the copy. */
static const char db_sql_attrs_rebind[] =
	"UPDATE file_attrs SET etag = $3::text, claimed_by = NULL,"
	" claim_until = NULL WHERE bucket = $1::text"
	" AND object_key = $2::text AND etag IS DISTINCT FROM $3::text"
	" AND (etag = $4::text OR (etag IS NULL"
	" AND (claim_until IS NULL OR claim_until <= now())))";
/* $1 bucket, $2 from: the move db_attrs_copy logged is complete. */
static const char db_sql_attrs_copy_done[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text";
static const char db_sql_attrs_copy_ins[] =
	"WITH c AS (INSERT INTO file_attrs (bucket, object_key, mode, uid,"
	" gid, atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until)"
	" SELECT bucket, $7::text, mode, uid, gid, atime_ns, mtime_ns, now(),"
	" updated_by, etag, claimed_by, claim_until FROM file_attrs"
	" WHERE bucket = $5::text AND object_key = $6::text RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text, " LOG_WHO " FROM c";
/* Who ($1..$4), $5 bucket, $6 key, $7 mode, $8 uid, $9 gid, $10 atime_ns,
 * $11 mtime_ns, $12 ctime (ns since the epoch), $13 etag (NULL for a
 * column not set): a row a copy replaced, put back under its own key
 * (logged 'move' from that key); updated_by is who puts it back. */
static const char db_sql_attrs_restore[] =
	"WITH c AS (INSERT INTO file_attrs (bucket, object_key, mode, uid,"
	" gid, atime_ns, mtime_ns, ctime, updated_by, etag)"
	" VALUES ($5::text, $6::text, $7::integer, $8::bigint, $9::bigint,"
	" $10::bigint, $11::bigint, timestamptz 'epoch'"
	" + ($12::bigint / 1000) * interval '1 microsecond', $1::text,"
	" $13::text) RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, object_key, " LOG_WHO " FROM c";
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
/* $1 bucket, $2 key: the row a claim did not take. */
static const char db_sql_attrs_claim_held[] =
	"SELECT mode, uid, gid, etag, claimed_by, " LIVE
	" FROM file_attrs f WHERE bucket = $1::text AND object_key = $2::text";
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

/* Who as the first four parameters of a logging statement. */
struct who_params {
	char by[400], uid[24];
};

static void who_fill(const struct actor *who, struct who_params *w,
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
	const char *bucket, *key, *op, *etag;
	const struct db_attrs *a;
	const struct actor *who;
	int64_t ctime_ns;
	char *bound; /* output: the row's etag now (malloc'd), or NULL */
};

static int pg_attrs_set(struct pg_ctx *x, void *arg)
{
	struct attrs_set_args *s = arg;
	const struct db_attrs *a = s->a;
	char mode[16], uid[24], gid[24], at[24], mt[24];
	struct who_params w;
	const char *p[18];
	PGresult *res = NULL;
	int rc;

	free(s->bound);
	s->bound = NULL;
	snprintf(mode, sizeof(mode), "%u", (unsigned)(a->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, a->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, a->gid);
	snprintf(at, sizeof(at), "%" PRId64, a->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, a->mtime_ns);
	who_fill(s->who, &w, &p[14]);
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
	p[12] = p[14]; /* updated_by */
	p[13] = s->etag;
	rc = pg_exec(x, db_sql_attrs_upsert, 14, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) != 1) {
		rc = -EIO;
		goto out;
	}
	s->ctime_ns = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
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
	PQclear(res);
	return rc;
}

int db_attrs_set(struct db *d, const char *bucket, const char *key,
		 const struct db_attrs *a, const char *etag, const char *op,
		 const struct actor *who, int64_t *ctime_ns, char **bound)
{
	struct attrs_set_args s = {.bucket = bucket,
				   .key = key,
				   .op = op,
				   .etag = etag,
				   .a = a,
				   .who = who};
	int rc;

	if (bound)
		*bound = NULL;
	if (!d || !bucket || !key || !a)
		return -EINVAL;
	rc = db_run(d, "set file attributes", 1, 1, pg_attrs_set, &s);
	if (rc == 0 && ctime_ns)
		*ctime_ns = s.ctime_ns;
	if (rc == 0 && bound)
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
static int row_parse(PGresult *res, int i, struct db_attrs *r)
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
		rc = row_parse(res, i, &l->rows[l->n]);
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

int db_attrs_get_pending(struct db *d, const char *bucket, const char *key,
			 struct db_attrs *row, int *found)
{
	char *pb = NULL;
	int rc;

	memset(row, 0, sizeof(*row));
	*found = 0;
	if (!bucket)
		return -EINVAL;
	if (asprintf(&pb, "%s" PENDING_SUFFIX, bucket) < 0)
		return -ENOMEM;
	rc = db_attrs_get(d, pb, key, row, found);
	free(pb);
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

struct attrs_move_args {
	const char *bucket, *from, *to, *etag, *old;
	int tree;
	const struct actor *who;
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
			     const char *key, int tree, const struct actor *who)
{
	struct who_params w;
	const char *p[9];
	char *lo, *hi;
	int rc = subtree(key, &lo, &hi);

	if (rc)
		return rc;
	who_fill(who, &w, p);
	p[4] = bucket;
	p[5] = key;
	p[6] = tree ? "t" : "f";
	p[7] = lo;
	p[8] = hi;
	rc = pg_exec(x, db_sql_attrs_drop, 9, p, NULL);
	free(lo);
	free(hi);
	return rc;
}

static int pg_attrs_move(struct pg_ctx *x, void *arg)
{
	struct attrs_move_args *m = arg;
	struct who_params w;
	const char *p[12];
	char *lo, *hi;
	int rc;

	rc = pg_attrs_drop_one(x, m->bucket, m->to, m->tree, m->who);
	if (rc)
		return rc;
	rc = subtree(m->from, &lo, &hi);
	if (rc)
		return rc;
	who_fill(m->who, &w, p);
	p[4] = m->bucket;
	p[5] = m->from;
	p[6] = m->to;
	p[7] = m->tree ? "t" : "f";
	p[8] = lo;
	p[9] = hi;
	p[10] = m->etag && *m->etag ? m->etag : NULL;
	p[11] = m->old && *m->old ? m->old : NULL;
	rc = pg_exec(x, db_sql_attrs_move, 12, p, NULL);
	free(lo);
	free(hi);
	return rc;
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

struct attrs_copy_args {
	struct attrs_move_args m;
	int keep;		  /* a target's row stays: from's is pending */
	struct db_attrs replaced; /* output: to's row deleted */
	int had;		  /* output: there was one */
	int pending;		  /* output: from's row went to to's pending */
};

static int pg_attrs_copy(struct pg_ctx *x, void *arg)
{
	struct attrs_copy_args *c = arg;
	struct attrs_move_args *m = &c->m;
	struct who_params w;
	PGresult *res = NULL;
	const char *p[7];
	const char *k[3] = {m->bucket, m->from, m->to};
	int rc;

	/* A retried transaction starts again from nothing kept. */
	db_attrs_free_row(&c->replaced);
	c->had = c->pending = 0;
	if (c->keep) {
		p[0] = m->bucket;
		p[1] = m->to;
		rc = pg_exec(x, db_sql_attrs_copy_has, 2, p, &res);
		if (rc)
			goto out;
		if (PQntuples(res) == 1) {
			/* A target with its own row: it keeps it until the
			 * copy's rows are recorded (pg_attrs_renamed). */
			rc = pg_exec(x, db_sql_attrs_pend, 3, k, NULL);
			if (rc == 0)
				c->pending = 1;
			goto out;
		}
		PQclear(res);
		res = NULL;
	}
	p[0] = m->bucket;
	p[1] = m->to;
	rc = pg_exec(x, db_sql_attrs_unpend, 2, p, NULL);
	if (rc)
		goto out;
	rc = pg_exec(x, db_sql_attrs_copy_del, 2, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 1) {
		rc = row_parse(res, 0, &c->replaced);
		if (rc)
			goto out;
		c->had = 1;
	}
	who_fill(m->who, &w, p);
	p[4] = m->bucket;
	p[5] = m->from;
	p[6] = m->to;
	rc = pg_exec(x, db_sql_attrs_copy_ins, 7, p, NULL);
out:
	PQclear(res);
	return rc;
}

static int attrs_copy(struct db *d, struct attrs_copy_args *c,
		      struct db_attrs *replaced, int *had, int *pending)
{
	int rc;

	if (replaced)
		memset(replaced, 0, sizeof(*replaced));
	if (had)
		*had = 0;
	if (pending)
		*pending = 0;
	if (!d || !c->m.bucket || !c->m.from || !c->m.to)
		return -EINVAL;
	if (!strcmp(c->m.from, c->m.to))
		return 0;
	rc = db_run(d, "copy file attributes", 1, 1, pg_attrs_copy, c);
	if (rc == 0 && c->had && replaced && had) {
		*replaced = c->replaced;
		*had = 1;
	} else {
		db_attrs_free_row(&c->replaced);
	}
	if (rc == 0 && pending)
		*pending = c->pending;
	return rc;
}

int db_attrs_copy(struct db *d, const char *bucket, const char *from,
		  const char *to, const struct actor *who,
		  struct db_attrs *replaced, int *had)
{
	struct attrs_copy_args c = {
	    .m = {.bucket = bucket, .from = from, .to = to, .who = who}};

	return attrs_copy(d, &c, replaced, had, NULL);
}

int db_attrs_copy_rename(struct db *d, const char *bucket, const char *from,
			 const char *to, const struct actor *who,
			 struct db_attrs *replaced, int *had, int *pending)
{
	struct attrs_copy_args c = {
	    .m = {.bucket = bucket, .from = from, .to = to, .who = who},
	    .keep = 1};

	return attrs_copy(d, &c, replaced, had, pending);
}

static int pg_attrs_unpend(struct pg_ctx *x, void *arg)
{
	struct attrs_move_args *m = arg;
	const char *p[2] = {m->bucket, m->to};

	return pg_exec(x, db_sql_attrs_unpend, 2, p, NULL);
}

int db_attrs_unpend(struct db *d, const char *bucket, const char *to)
{
	struct attrs_move_args m = {.bucket = bucket, .to = to};

	if (!d || !bucket || !to)
		return -EINVAL;
	return db_run(d, "drop a rename's pending file attributes", 1, 1,
		      pg_attrs_unpend, &m);
}

int pg_attrs_renamed(struct pg_ctx *x, const char *bucket, const char *from,
		     const char *to, const char *etag, const char *src,
		     const struct actor *who)
{
	struct who_params w;
	const char *p[9];
	const char *r[4] = {bucket, to, etag, src && *src ? src : NULL};
	int rc;

	if (!etag || !*etag)
		return 0;
	who_fill(who, &w, p);
	p[4] = bucket;
	p[5] = from;
	p[6] = to;
	p[7] = etag;
	p[8] = r[3];
	rc = pg_exec(x, db_sql_attrs_promote, 9, p, NULL);
	return rc ? rc : pg_exec(x, db_sql_attrs_rebind, 4, r, NULL);
}

struct attrs_renamed_args {
	const char *bucket, *from, *to, *etag, *src;
	const struct actor *who;
};

static int pg_attrs_renamed_run(struct pg_ctx *x, void *arg)
{
	struct attrs_renamed_args *a = arg;

	return pg_attrs_renamed(x, a->bucket, a->from, a->to, a->etag, a->src,
				a->who);
}

int db_attrs_renamed(struct db *d, const char *bucket, const char *from,
		     const char *to, const char *etag, const char *src,
		     const struct actor *who)
{
	struct attrs_renamed_args a = {bucket, from, to, etag, src, who};

	if (!d || !bucket || !from || !to)
		return -EINVAL;
	return db_run(d, "give a renamed copy its file attributes", 1, 1,
		      pg_attrs_renamed_run, &a);
}

static int pg_attrs_copy_done(struct pg_ctx *x, void *arg)
{
	struct attrs_move_args *m = arg;
	const char *p[2] = {m->bucket, m->from};

	return pg_exec(x, db_sql_attrs_copy_done, 2, p, NULL);
}

int db_attrs_copy_done(struct db *d, const char *bucket, const char *from)
{
	struct attrs_move_args m = {.bucket = bucket, .from = from};

	if (!d || !bucket || !from)
		return -EINVAL;
	return db_run(d, "complete a move of file attributes", 1, 1,
		      pg_attrs_copy_done, &m);
}

struct attrs_restore_args {
	const char *bucket, *key;
	const struct db_attrs *row;
	const struct actor *who;
};

static int pg_attrs_restore(struct pg_ctx *x, void *arg)
{
	struct attrs_restore_args *a = arg;
	const struct db_attrs *r = a->row;
	char mode[16], uid[24], gid[24], at[24], mt[24], ct[24];
	struct who_params w;
	const char *p[13];
	int rc = pg_attrs_drop_one(x, a->bucket, a->key, 0, a->who);

	if (rc || !r)
		return rc;
	snprintf(mode, sizeof(mode), "%u", (unsigned)(r->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, r->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, r->gid);
	snprintf(at, sizeof(at), "%" PRId64, r->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, r->mtime_ns);
	snprintf(ct, sizeof(ct), "%" PRId64, r->ctime_ns);
	who_fill(a->who, &w, p);
	p[4] = a->bucket;
	p[5] = a->key;
	p[6] = r->what & DB_ATTR_MODE ? mode : NULL;
	p[7] = r->what & DB_ATTR_OWNER ? uid : NULL;
	p[8] = r->what & DB_ATTR_OWNER ? gid : NULL;
	p[9] = r->what & DB_ATTR_ATIME ? at : NULL;
	p[10] = r->what & DB_ATTR_MTIME ? mt : NULL;
	p[11] = ct;
	p[12] = r->etag;
	return pg_exec(x, db_sql_attrs_restore, 13, p, NULL);
}

int db_attrs_restore(struct db *d, const char *bucket, const char *key,
		     const struct db_attrs *row, const struct actor *who)
{
	struct attrs_restore_args a = {
	    .bucket = bucket, .key = key, .row = row, .who = who};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "restore file attributes", 1, 1, pg_attrs_restore, &a);
}

struct attrs_drop_args {
	const char *bucket, *key, *etag, *old;
	int tree, force;
	const struct actor *who;
};

static int pg_attrs_drop(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;
	const char *p[2] = {a->bucket, a->key};
	int rc = pg_attrs_drop_one(x, a->bucket, a->key, a->tree, a->who);

	/* A pending row a crashed rename left goes with the name. */
	return rc ? rc : pg_exec(x, db_sql_attrs_unpend, 2, p, NULL);
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

static int pg_attrs_drop_replaced(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;
	struct who_params w;
	const char *p[7];

	who_fill(a->who, &w, p);
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

static int pg_attrs_bind(struct pg_ctx *x, void *arg)
{
	struct attrs_drop_args *a = arg;
	const char *p[4] = {a->bucket, a->key, a->etag, a->old};

	return pg_exec(x, db_sql_attrs_bind, 4, p, NULL);
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

struct attrs_bind_claim_args {
	const char *bucket, *key, *etag, *claimer;
	const struct db_attrs *a;
	const struct actor *who;
	int taken; /* output: DB_BIND_* */
};

/* In a transaction, under key's reception key lock: is etag the live
 * object of key (its live reception row's)? 1, 0, or -errno. */
static int pg_attrs_live_is(struct pg_ctx *x, const char *bucket,
			    const char *key, const char *etag)
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
	who_fill(b->who, &w, p);
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

struct attrs_publish_args {
	const char *bucket, *from, *to, *etag;
	const struct actor *who;
	int in_row; /* in the transaction that recorded etag live at to */
	int live;   /* output: etag was the live object of to */
};

/* In x's transaction: 1 when from's row was published to to already
 * (db_sql_attrs_published), 0, or -errno. */
static int pg_attrs_published(struct pg_ctx *x,
			      const struct attrs_publish_args *a)
{
	const char *p[4] = {a->bucket, a->from, a->to, a->etag};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_published, 4, p, &res);

	if (rc == 0)
		rc = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	return rc;
}

static int pg_attrs_publish(struct pg_ctx *x, void *arg)
{
	struct attrs_publish_args *a = arg;
	const char *del[2] = {a->bucket, a->to};
	struct who_params w;
	const char *p[8];
	int rc;

	if (a->in_row) {
		a->live = 1; /* recorded so under the key lock just now */
	} else {
		rc = a->live = pg_attrs_live_is(x, a->bucket, a->to, a->etag);
		if (rc < 0)
			return rc;
		rc = a->live ? pg_attrs_published(x, a) : 0;
		if (rc)
			return rc < 0 ? rc : 0; /* done: nothing to move */
	}
	if (a->live) {
		rc = pg_exec(x, db_sql_attrs_copy_del, 2, del, NULL);
		if (rc)
			return rc;
		who_fill(a->who, &w, p);
		p[4] = a->bucket;
		p[5] = a->from;
		p[6] = a->to;
		p[7] = a->etag;
		rc = pg_exec(x, db_sql_attrs_publish_ins, 8, p, NULL);
		if (rc)
			return rc;
		del[1] = a->from;
		return pg_exec(x, db_sql_attrs_copy_done, 2, del, NULL);
	}
	/* A newer object is there: its row stays; from's name is gone. */
	return pg_attrs_drop_one(x, a->bucket, a->from, 0, a->who);
}

int db_attrs_publish(struct db *d, const char *bucket, const char *from,
		     const char *to, const char *etag, const struct actor *who,
		     int *live)
{
	struct attrs_publish_args a = {
	    .bucket = bucket, .from = from, .to = to, .etag = etag, .who = who};
	int rc;

	if (live)
		*live = 0;
	if (!d || !bucket || !from || !to || !etag || !*etag ||
	    !strcmp(from, to))
		return -EINVAL;
	rc = db_run(d, "bind a published file's attributes", 1, 1,
		    pg_attrs_publish, &a);
	if (rc == 0 && live)
		*live = a.live;
	return rc;
}

int pg_attrs_binding(struct pg_ctx *x, const char *bucket, const char *key,
		     const char *etag, struct db_attrs_binding *b, int *done)
{
	const char *p[4] = {bucket, key, b->from, NULL};
	struct attrs_publish_args pa = {.bucket = bucket,
					.from = b->from,
					.to = key,
					.etag = etag,
					.who = b->who,
					.in_row = 1};
	PGresult *res = NULL;
	int rc;

	*done = 0;
	if (!etag || !*etag)
		return 0;
	/* Never a wait on a row another transaction holds (the key lock is
	 * held): such a binding is left to the caller, after the commit. */
	rc = pg_exec(x, db_sql_attrs_lock_rows, 3, p, &res);
	if (rc || PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t"))
		goto out;
	PQclear(res);
	res = NULL;
	if (b->from) {
		rc = pg_attrs_publish(x, &pa);
		*done = rc == 0;
		goto out;
	}
	p[2] = etag;
	p[3] = b->claimer;
	if (b->claimer) {
		/* Still its claim: bound. (Else its take, separately.) */
		rc = pg_exec(x, db_sql_attrs_bind_mine, 4, p, &res);
		*done = rc == 0 && PQntuples(res) == 1;
		goto out;
	}
	p[3] = NULL; /* old: none */
	rc = pg_exec(x, db_sql_attrs_bind, 4, p, NULL);
	*done = rc == 0;
out:
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

struct attrs_claim_args {
	const char *bucket, *key, *claimer, *from;
	const struct db_attrs *a;
	const struct actor *who;
	int lease_s, take;
	int64_t ctime_ns;
	struct db_claim *held; /* output when not taken */
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
	snprintf(mode, sizeof(mode), "%u", (unsigned)(c->a->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, c->a->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, c->a->gid);
	snprintf(lease, sizeof(lease), "%d", c->lease_s);
	who_fill(c->who, &w, p);
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
	struct attrs_claim_args c = {.bucket = bucket,
				     .key = key,
				     .claimer = claimer,
				     .from = from,
				     .a = a,
				     .who = who,
				     .lease_s = lease_s,
				     .take = take,
				     .held = held};
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

	who_fill(u->who, &w, p);
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

/* keys as a PostgreSQL array literal: each element quoted, '"' and '\'
 * escaped. NULL: ENOMEM. */
static char *text_array(const char *const *keys, size_t n)
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
	char lease[16], *arr = text_array(r->keys, r->n);
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
