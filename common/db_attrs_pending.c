/* db_attrs_pending.c - a rename's copy of a key's row, its pending
 * row, and a publish's move; see
 * db_attrs.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db_attrs.h"
#include "db_attrs_internal.h"
#include "db_internal.h"
#include "log.h"

/* clang-format off */
/* $1 bucket, $2 key, $3 another key (NULL: none): are all the rows of
 * these keys now locked by this transaction? (FOR UPDATE SKIP LOCKED: a
 * row another transaction holds is skipped, never waited for.) */
static const char db_sql_attrs_lock_rows[] =
	"SELECT (SELECT count(*) FROM file_attrs WHERE bucket = $1::text"
	" AND object_key IN ($2::text, $3::text)) = (SELECT count(*) FROM"
	" (SELECT 1 FROM file_attrs WHERE bucket = $1::text"
	" AND object_key IN ($2::text, $3::text) FOR UPDATE SKIP LOCKED) l)";
/* A row of `from` ($2) the publisher ($1 bucket, $5 its claim's token,
 * NULL: none) may move: its claim, unbound; without a token any row. */
#define PUB_MINE "(SELECT 1 FROM file_attrs WHERE bucket = $1::text" \
	" AND object_key = $2::text AND ($5::text IS NULL OR (etag IS NULL" \
	" AND claimed_by = $5::text)))"
/* $1 bucket, $2 from, $3 to, $4 etag, $5 the publisher's token: was
 * from's row published to to already (from has none of the publisher's,
 * to's is bound to etag: a retry after a commit whose answer was lost,
 * e.g. the reception row's that moved it)? And is from's row the
 * publisher's? */
static const char db_sql_attrs_published[] =
	"SELECT NOT EXISTS " PUB_MINE " AND EXISTS (SELECT 1 FROM file_attrs"
	" WHERE bucket = $1::text AND object_key = $3::text"
	" AND etag = $4::text), EXISTS " PUB_MINE;
/* Who ($1..$4), $5 bucket, $6 from, $7 to, $8 etag, $9 mode, $10 uid,
 * $11 gid, $12 atime_ns, $13 mtime_ns (NULL: not set): the row under
 * `from` is not the publisher's any more (its claim was taken by another
 * file there): to's row becomes the published file's own attributes
 * (those it has in memory), bound to etag (logged 'move', from_key
 * from); a row already bound to etag (an earlier try) stays, and from's
 * row (the other file's) is not touched. */
static const char db_sql_attrs_publish_take[] =
	"WITH c AS (INSERT INTO file_attrs AS f (bucket, object_key, mode,"
	" uid, gid, atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until)"
	" VALUES ($5::text, $7::text, $9::integer, $10::bigint, $11::bigint,"
	" $12::bigint, $13::bigint, now(), $1::text, $8::text, NULL, NULL)"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" etag = excluded.etag,"
	" ctime = greatest(now(), f.ctime), updated_by = excluded.updated_by,"
	" claimed_by = NULL, claim_until = NULL"
	" WHERE f.etag IS DISTINCT FROM excluded.etag RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text, " LOG_WHO " FROM c";
/* Who ($1..$4), $5 bucket, $6 from, $7 the publisher's token (NULL:
 * none): from's row goes (logged 'drop') while it is the publisher's. */
static const char db_sql_attrs_publish_drop[] =
	"WITH d AS (DELETE FROM file_attrs WHERE bucket = $5::text"
	" AND object_key = $6::text AND ($7::text IS NULL OR (etag IS NULL"
	" AND claimed_by = $7::text)) RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, " LOG_WHO " FROM d";
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
/* $1 bucket, $2 to; then who ($1..$4), $5 bucket, $6 from, $7 to: to's
 * row becomes a copy of from's (none when from has none; logged 'move');
 * the copy's ctime is now (a rename is a status change); a new file's
 * claim (an unbound row's) is copied with it. */
static const char db_sql_attrs_copy_del[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text RETURNING " ROW_COLS;
/* The same for a rename's copy, $3 this process's claimer: another
 * mount's live claim made since db_sql_attrs_copy_has looked stays, and
 * the copy's insert then fails (unique_violation): the transaction is run
 * again and refuses (review-stale4 K2). */
static const char db_sql_attrs_copy_del_spare[] =
	"DELETE FROM file_attrs f WHERE bucket = $1::text"
	" AND object_key = $2::text AND NOT " OTHERS_LIVE("$3")
	" RETURNING " ROW_COLS;
/* The attributes a rename in flight gives its copy at a key that has a
 * row of its own (a target renamed over) are that rename's pending row
 * (file_attrs_pending, migration 12: keyed by the rename's token, naming
 * its source, held until pending_until): the target keeps its row until
 * the copy's rows are recorded (db_attrs_renamed, in that transaction), so
 * a crash while the copy is in flight, or a copy that never lands, leaves
 * the target with its own attributes; two renames over one target each
 * have their own. Never listed, never read as any key's committed row. */
/* $1 bucket, $2 to, $3 this process's claimer: does to have a row
 * (locked), and is it another mount's live claim? */
static const char db_sql_attrs_copy_has[] =
	"SELECT " OTHERS_LIVE("$3") " FROM file_attrs f WHERE bucket = $1::text"
	" AND object_key = $2::text FOR UPDATE";
/* $1 bucket, $2 key, $3 the ctime (ns) of the row a rename's copy made
 * there (0: none): key's row, locked, when it is another (newer) one. */
static const char db_sql_attrs_newer_at[] =
	"SELECT 1 FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text AND (extract(epoch FROM ctime) * 1000000)"
	"::bigint * 1000 IS DISTINCT FROM nullif($3::bigint, 0) FOR UPDATE";
/* $1 bucket, $2 from, $3 to, $4 token, $5 lease (seconds): from's row
 * (all NULL when it has none) becomes that rename's pending row of to. */
static const char db_sql_attrs_pend[] =
	"INSERT INTO file_attrs_pending AS p (bucket, object_key, token,"
	" from_key, mode, uid, gid, atime_ns, mtime_ns, ctime, updated_by,"
	" etag, pending_until)"
	" SELECT $1::text, $3::text, $4::text, $2::text, f.mode, f.uid, f.gid,"
	" f.atime_ns, f.mtime_ns, now(), f.updated_by, f.etag,"
	" now() + $5::integer * interval '1 second'"
	" FROM (SELECT 1) o LEFT JOIN file_attrs f ON f.bucket = $1::text"
	" AND f.object_key = $2::text"
	" ON CONFLICT (bucket, object_key, token) DO UPDATE SET"
	" from_key = excluded.from_key, mode = excluded.mode,"
	" uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" ctime = excluded.ctime, updated_by = excluded.updated_by,"
	" etag = excluded.etag, pending_until = excluded.pending_until";
/* $1 bucket, $2 to: every pending row of to goes (the name went), but a
 * live one of a file still open (PEND_LIVE: it goes with its file, which
 * lands at `to` at its close, review-h5 N1). */
static const char db_sql_attrs_unpend[] =
	"DELETE FROM file_attrs_pending p WHERE bucket = $1::text"
	" AND object_key = $2::text AND NOT " PEND_LIVE;
/* $1 bucket, $2 to, $3 token: that rename's pending row of to goes (its
 * copy never landed); another rename's stays. */
static const char db_sql_attrs_unpend_mine[] =
	"DELETE FROM file_attrs_pending WHERE bucket = $1::text"
	" AND object_key = $2::text AND token = $3::text";
/* $1 bucket, $2 from, $3 to, $4 token, $5 lease (seconds), $6 the
 * publisher's claim token (NULL: none): from's row, while it is the
 * publisher's (PUB_MINE), becomes the pending row (token) of its upload to
 * `to`, unbound (the upload's ETag is not known yet), tied to the tags of
 * its uploads (none yet: db_attrs_pend_tag, migration 16); $7 its upload_state
 * (migration 15): 'upload', its upload in flight (an unlink of `to` marks
 * it, never drops it, review n19 Y2), or NULL (a deferral). */
static const char db_sql_attrs_pend_pub_row[] =
	"INSERT INTO file_attrs_pending AS p (bucket, object_key, token,"
	" from_key, mode, uid, gid, atime_ns, mtime_ns, ctime, updated_by,"
	" etag, pending_until, upload_state, upload_tags)"
	" SELECT $1::text, $3::text, $4::text, $2::text, mode, uid, gid,"
	" atime_ns, mtime_ns, now(), updated_by, NULL,"
	" now() + $5::integer * interval '1 second', $7::text, '{}'::text[]"
	" FROM file_attrs WHERE bucket = $1::text AND object_key = $2::text"
	" AND ($6::text IS NULL OR (etag IS NULL AND claimed_by = $6::text))"
	" ON CONFLICT (bucket, object_key, token) DO UPDATE SET"
	" mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" pending_until = excluded.pending_until,"
	" upload_state = excluded.upload_state,"
	" upload_tags = coalesce(p.upload_tags, excluded.upload_tags)"
	" RETURNING 1";
/* $1 bucket, $2 from, $3 to, $4 token, $5 lease (seconds), $6 mode,
 * $7 uid, $8 gid, $9 atime_ns, $10 mtime_ns (NULL: not set), $11 by: the
 * publisher's own attributes (from's row is another file's) as the
 * pending row (token) of its upload to `to`; $12 its upload_state. */
static const char db_sql_attrs_pend_pub_vals[] =
	"INSERT INTO file_attrs_pending AS p (bucket, object_key, token,"
	" from_key, mode, uid, gid, atime_ns, mtime_ns, ctime, updated_by,"
	" etag, pending_until, upload_state, upload_tags)"
	" VALUES ($1::text, $3::text, $4::text, $2::text, $6::integer,"
	" $7::bigint, $8::bigint, $9::bigint, $10::bigint, now(), $11::text,"
	" NULL, now() + $5::integer * interval '1 second', $12::text,"
	" '{}'::text[])"
	" ON CONFLICT (bucket, object_key, token) DO UPDATE SET"
	" mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" pending_until = excluded.pending_until,"
	" upload_state = excluded.upload_state,"
	" upload_tags = coalesce(p.upload_tags, excluded.upload_tags)";
/* Who ($1..$4), $5 bucket, $6 key, $7 etag (key's live object, checked
 * under the key lock), $8 the UPLOAD_TAG that object carries (NULL: none
 * or not known; a row tied to its uploads' tags settles only onto an
 * object with one of them, review-h5 N2): a publish's pending row
 * (unbound) whose lease is over (no upload of it in flight) and that is
 * older than the live
 * reception row of a mount's upload of etag (the upload it was recorded
 * for; a crash cut its rows' move short) becomes key's row, bound to etag
 * (logged 'move' from its source), unless that row is bound to etag
 * already; every such stale row of key goes. */
static const char db_sql_attrs_settle[] =
	"WITH p AS (DELETE FROM file_attrs_pending WHERE bucket = $5::text"
	" AND object_key = $6::text AND etag IS NULL"
	" AND (upload_tags IS NULL OR $8::text = ANY(upload_tags))"
	" AND pending_until <= now() AND ctime <= (SELECT max(uploaded_at)"
	" FROM reception_audit WHERE source_bucket = $5::text"
	" AND object_key = $6::text AND etag = $7::text"
	" AND removed_at IS NULL AND origin = 'mount') RETURNING *),"
	" o AS (SELECT * FROM p ORDER BY ctime DESC LIMIT 1),"
	" c AS (INSERT INTO file_attrs AS f (bucket, object_key, mode, uid,"
	" gid, atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until)"
	" SELECT bucket, object_key, mode, uid, gid, atime_ns, mtime_ns, now(),"
	" updated_by, $7::text, NULL, NULL FROM o"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" etag = excluded.etag,"
	" ctime = greatest(now(), f.ctime), updated_by = excluded.updated_by,"
	" claimed_by = NULL, claim_until = NULL"
	" WHERE f.etag IS DISTINCT FROM excluded.etag RETURNING *) "
	LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, (SELECT from_key FROM o), " LOG_WHO
	" FROM c";
/* The first object recorded at key ($1 bucket, $2 key) since pending row
 * p was made, as "its upload": still key's live object, ETag e (any
 * origin: another mount's logger may record an upload in flight before
 * its own row, review-e E1). A crash between that upload's reception row and its rows' move
 * leaves p lapsed with it (db_attrs_settle_pending). */
#define PEND_UPLOAD(e) "EXISTS (SELECT 1 FROM (SELECT r.etag, r.origin," \
	" r.removed_at FROM reception_audit r WHERE r.source_bucket = $1::text" \
	" AND r.object_key = $2::text AND r.uploaded_at >= p.ctime" \
	" ORDER BY r.uploaded_at, r.id LIMIT 1) f WHERE f.etag = " e \
	" AND f.removed_at IS NULL)"
/* Object e ($1 bucket, $2 key) was never recorded at key, and nothing
 * was since pending row p was made: it may be p's upload whose reception
 * row is still to come (a publish whose row write timed out is logged
 * late: review-G G1), whatever p's lease says. */
#define PEND_UNLOGGED(e) "(" e " IS NOT NULL AND NOT EXISTS (SELECT 1" \
	" FROM reception_audit r WHERE r.source_bucket = $1::text" \
	" AND r.object_key = $2::text AND (r.etag = " e \
	" OR r.uploaded_at >= p.ctime)))"
/* $1 bucket, $2 key, $3 the ETag of the object shown (NULL: any): the
 * pending row that describes it, a rename's copy of that object (etag),
 * else the newest unbound one (a publish's or a deferred publish's, H5)
 * while it may be the upload of that object: its lease running and that
 * object not recorded at key before it (an upload in flight), that
 * object the first recorded at key since it (PEND_UPLOAD: its upload,
 * its rows' move cut short, maybe by a crash), or that object never
 * recorded and nothing since it (PEND_UNLOGGED: its upload, its row still
 * to be logged). Never for an object recorded before it (the one its
 * upload is to replace, e.g. the target of an open file's rename, H5),
 * nor once it lapsed for a later one recorded but not the first since it
 * (review-h5 N7; a crash before the upload: db_sql_attrs_sweep_pending
 * drops it). With $3 NULL: a live one only. $4 the UPLOAD_TAG that
 * object carries ("": none; NULL: not read): an unbound row tied to its
 * uploads' tags (upload_tags, migration 16: a publish's, a deferred
 * one's) describes only an object that carries one of them, never
 * another that arrives at key meanwhile, by any route (review-h5 N2),
 * and none while no upload of it was sent (its file still open for
 * writing); with $4 NULL, one that may apply is returned last, its last
 * column true: the caller reads the object's tag and asks again. */
#define PEND_TIED "(p.etag IS NULL AND p.upload_tags IS NOT NULL)"
static const char db_sql_attrs_get_pending[] =
	"SELECT " ROW_COLS ", " PEND_TIED " AND $4::text IS NULL"
	" FROM file_attrs_pending p"
	" WHERE bucket = $1::text AND object_key = $2::text"
	" AND (etag IS NULL OR etag = $3::text)"
	" AND (NOT " PEND_TIED " OR (cardinality(p.upload_tags) > 0"
	" AND ($4::text IS NULL OR $4::text = ANY(p.upload_tags))))"
	" AND (p.etag IS NOT NULL OR ($3::text IS NULL AND " PEND_LIVE ")"
	" OR (" PEND_LIVE " AND NOT EXISTS (SELECT 1 FROM reception_audit r"
	" WHERE r.source_bucket = $1::text AND r.object_key = $2::text"
	" AND r.etag = $3::text AND r.removed_at IS NULL"
	" AND r.uploaded_at < p.ctime))"
	" OR " PEND_UPLOAD("$3::text") " OR " PEND_UNLOGGED("$3::text") ")"
	" ORDER BY " PEND_TIED " AND $4::text IS NULL, etag IS NULL,"
	" ctime DESC LIMIT 1";
/* $1 bucket, $2 token, $3 a tag: that publish's pending row (unbound, at
 * any key) is tied to one more upload, the one that sends that tag. */
static const char db_sql_attrs_pend_tag[] =
	"UPDATE file_attrs_pending SET upload_tags ="
	" CASE WHEN $3::text = ANY(coalesce(upload_tags, '{}'::text[]))"
	" THEN upload_tags"
	" ELSE array_append(coalesce(upload_tags, '{}'::text[]), $3::text) END"
	" WHERE bucket = $1::text AND token = $2::text AND etag IS NULL";
/* $1 bucket, $2 the claimers found gone (db_sql_attrs_pending_free): the
 * unbound pending rows whose upload can never be recorded any more go:
 * those of a process that is gone (the claimer its token names, taken by
 * db_attrs_defer and db_attrs_pend_publish: still in $2, its heartbeat
 * still stale and its liveness lock, db_set_claimer, free: tried once per
 * claimer, in a CTE of its own), and those whose lease is over with another object, or
 * a removed one, the first recorded at their key since them; never one
 * whose upload may have been recorded (the first object since it still
 * live: db_attrs_settle_pending's). A crash before the upload (review-h5
 * N7): such a row is never shown (db_sql_attrs_get_pending once it
 * lapsed) and goes here. $3 the sweeping host: each row dropped is logged
 * as op 'pending drop' (its from_key the rename's source), changed_by
 * "custodyfs sweep of" its token's claimer, no uid nor user, so that a
 * wrong drop leaves evidence (review-37 F7). */
#define TOKEN_CLAIMER(t) "regexp_replace(" t ", '#[0-9]+$', '')"
/* $1 bucket: the claimers of its unbound pending rows that are gone now
 * (LIVE_GONE: the liveness lock free, the heartbeat stale; read, never
 * taken), and whether each has a heartbeat row (live_free_claimers). */
static const char db_sql_attrs_pending_free[] =
	"SELECT DISTINCT " TOKEN_CLAIMER("p.token") ", "
	LIVE_BEAT_ROW(TOKEN_CLAIMER("p.token")) " FROM file_attrs_pending p"
	" WHERE p.bucket = $1::text AND p.etag IS NULL AND p.token ~ '#[0-9]+$'"
	" AND " LIVE_GONE(TOKEN_CLAIMER("p.token"));
static const char db_sql_attrs_sweep_pending[] =
	"WITH t AS MATERIALIZED (SELECT DISTINCT " TOKEN_CLAIMER("token")
	" AS c FROM file_attrs_pending WHERE bucket = $1::text"
	" AND etag IS NULL AND token ~ '#[0-9]+$'),"
	" gone AS MATERIALIZED (SELECT c FROM t WHERE CASE WHEN"
	" c = ANY ($2::text[]) AND NOT " LIVE_BEAT_FRESH("c")
	" THEN pg_try_advisory_xact_lock(" LIVE_KEY("c") ") ELSE false END),"
	" d AS (DELETE FROM file_attrs_pending p WHERE p.bucket = $1::text"
	" AND p.etag IS NULL"
	" AND (" TOKEN_CLAIMER("p.token") " IN (SELECT c FROM gone)"
	" OR (p.pending_until <= now() AND EXISTS (SELECT 1"
	" FROM reception_audit r WHERE r.source_bucket = $1::text"
	" AND r.object_key = p.object_key AND r.uploaded_at >= p.ctime)))"
	" AND NOT EXISTS (SELECT 1 FROM (SELECT r.etag, r.origin,"
	" r.removed_at FROM reception_audit r WHERE r.source_bucket = $1::text"
	" AND r.object_key = p.object_key AND r.uploaded_at >= p.ctime"
	" ORDER BY r.uploaded_at, r.id LIMIT 1) f WHERE f.removed_at IS NULL)"
	" RETURNING p.*) "
	LOG_COLS "SELECT bucket, object_key, 'pending drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, from_key, 'custodyfs sweep of ' || "
	TOKEN_CLAIMER("token") ", NULL, NULL, $3::text FROM d";
/* Who ($1..$4), $5 bucket, $6 from, $7 to, $8 the copy's ETag, $9 the
 * ETag of the object copied (NULL: not known): to's pending row replaces
 * to's own (logged 'move' from from), bound to the copy when it was
 * unbound or bound to the object copied. */
static const char db_sql_attrs_promote[] =
	"WITH d AS (DELETE FROM file_attrs_pending WHERE bucket = $5::text"
	" AND object_key = $7::text AND (from_key = $6::text"
	" OR pending_until <= now()) RETURNING *),"
	" p AS (SELECT * FROM d WHERE from_key = $6::text"
	" ORDER BY ctime DESC LIMIT 1),"
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
/* $1 bucket, $2 from, $3 the moved object's ETag or NULL: the move
 * db_attrs_copy logged is complete; a row bound to another object (an
 * upload of from since: review-N N6) stays. */
static const char db_sql_attrs_copy_done[] =
	"DELETE FROM file_attrs WHERE bucket = $1::text"
	" AND object_key = $2::text AND ($3::text IS NULL OR etag IS NULL"
	" OR etag = $3::text)";
static const char db_sql_attrs_copy_ins[] =
	"WITH c AS (INSERT INTO file_attrs (bucket, object_key, mode, uid,"
	" gid, atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until)"
	" SELECT bucket, $7::text, mode, uid, gid, atime_ns, mtime_ns, now(),"
	" updated_by, etag, claimed_by, claim_until FROM file_attrs"
	" WHERE bucket = $5::text AND object_key = $6::text RETURNING *),"
	" l AS (" LOG_COLS "SELECT bucket, object_key, 'move', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, $6::text, " LOG_WHO " FROM c)"
	" SELECT (extract(epoch FROM ctime) * 1000000)::bigint * 1000 FROM c";
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
/* clang-format on */

struct attrs_get_pending_args {
	const char *bucket, *key, *etag, *tag;
	struct db_attrs row; /* output */
	int found;	     /* output */
	int need_tag;	     /* output */
};

static int pg_attrs_get_pending(struct pg_ctx *x, void *arg)
{
	struct attrs_get_pending_args *g = arg;
	const char *p[4] = {g->bucket, g->key, g->etag, g->tag};
	PGresult *res = NULL;
	int rc;

	db_attrs_free_row(&g->row);
	g->found = 0;
	g->need_tag = 0;
	rc = pg_exec(x, db_sql_attrs_get_pending, 4, p, &res);
	if (rc == 0 && PQntuples(res) == 1) {
		if (!strcmp(PQgetvalue(res, 0, 8), "t"))
			g->need_tag = 1;
		else {
			rc = attrs_row_parse(res, 0, &g->row);
			g->found = rc == 0;
		}
	}
	PQclear(res);
	return rc;
}

int db_attrs_get_pending(struct db *d, const char *bucket, const char *key,
			 const char *etag, const char *tag,
			 struct db_attrs *row, int *found, int *need_tag)
{
	struct attrs_get_pending_args g = {.bucket = bucket,
					   .key = key,
					   .etag = etag && *etag ? etag : NULL,
					   .tag = tag};
	int rc;

	memset(row, 0, sizeof(*row));
	*found = 0;
	if (need_tag)
		*need_tag = 0;
	if (!d || !bucket || !key)
		return -EINVAL;
	rc = db_run(d, "read pending file attributes", 0, 0,
		    pg_attrs_get_pending, &g);
	if (rc == 0 && g.found) {
		*row = g.row;
		*found = 1;
	} else {
		db_attrs_free_row(&g.row);
	}
	if (rc == 0 && need_tag)
		*need_tag = g.need_tag;
	return rc;
}

struct attrs_pend_tag_args {
	const char *bucket, *token, *tag;
};

static int pg_attrs_pend_tag(struct pg_ctx *x, void *arg)
{
	struct attrs_pend_tag_args *t = arg;
	const char *p[3] = {t->bucket, t->token, t->tag};

	return pg_exec(x, db_sql_attrs_pend_tag, 3, p, NULL);
}

int db_attrs_pend_tag(struct db *d, const char *bucket, const char *token,
		      const char *tag)
{
	struct attrs_pend_tag_args t = {
	    .bucket = bucket, .token = token, .tag = tag};

	if (!d || !bucket || !token || !tag || !*tag)
		return -EINVAL;
	return db_run(d, "tie a publish's pending attributes to its upload", 1,
		      1, pg_attrs_pend_tag, &t);
}

struct attrs_copy_args {
	struct attrs_move_args m;
	int keep;		  /* a target's row stays: from's is pending */
	const char *token;	  /* with keep: the rename's */
	int lease_s;		  /* with keep: its pending row's lease */
	struct db_attrs replaced; /* output: to's row deleted */
	int had;		  /* output: there was one */
	int pending;		  /* output: from's row went to to's pending */
	int64_t copied;		  /* output: the copy's ctime (ns; 0: none) */
};

static int pg_attrs_copy(struct pg_ctx *x, void *arg)
{
	struct attrs_copy_args *c = arg;
	struct attrs_move_args *m = &c->m;
	struct who_params w;
	PGresult *res = NULL;
	const char *p[7];
	char lease[16];
	const char *k[5] = {m->bucket, m->from, m->to, c->token, lease};
	int rc;

	/* A retried transaction starts again from nothing kept. */
	db_attrs_free_row(&c->replaced);
	c->had = c->pending = 0;
	c->copied = 0;
	p[0] = m->bucket;
	p[1] = m->to;
	p[2] = x->d->claimer;
	/* An open file that lands at `to` at its close (its publish deferred,
	 * db_attrs_defer, or a publish's upload in flight): not this copy's
	 * to replace, as a live claim there (review n17 X1); checked under
	 * to's name lock, which a deferral takes too. */
	rc = pg_attrs_pend_held(x, m->bucket, m->to, NULL);
	if (rc) {
		rc = rc < 0 ? rc : -EBUSY;
		goto out;
	}
	rc = pg_exec(x, db_sql_attrs_copy_has, 3, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't') {
		/* Another mount's new file is being written there: not this
		 * rename's to replace (review-stale4 K2). */
		rc = -EBUSY;
		goto out;
	}
	if (c->keep) {
		if (PQntuples(res) == 1) {
			/* A target with its own row: it keeps it until the
			 * copy's rows are recorded (pg_attrs_renamed). */
			snprintf(lease, sizeof(lease), "%d", c->lease_s);
			rc = pg_exec(x, db_sql_attrs_pend, 5, k, NULL);
			if (rc == 0)
				c->pending = 1;
			goto out;
		}
	}
	PQclear(res);
	res = NULL;
	rc = pg_exec(x, db_sql_attrs_unpend, 2, p, NULL);
	if (rc)
		goto out;
	p[2] = x->d->claimer;
	rc = pg_exec(x, db_sql_attrs_copy_del_spare, 3, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 1) {
		rc = attrs_row_parse(res, 0, &c->replaced);
		if (rc)
			goto out;
		c->had = 1;
	}
	attrs_who_fill(m->who, &w, p);
	p[4] = m->bucket;
	p[5] = m->from;
	p[6] = m->to;
	PQclear(res);
	res = NULL;
	rc = pg_exec(x, db_sql_attrs_copy_ins, 7, p, &res);
	if (rc == 0 && PQntuples(res) == 1)
		c->copied = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
out:
	PQclear(res);
	return rc;
}

static int attrs_copy(struct db *d, struct attrs_copy_args *c,
		      struct db_attrs *replaced, int *had, int *pending,
		      int64_t *copied)
{
	int rc;

	if (copied)
		*copied = 0;
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
	if (rc == 0 && copied)
		*copied = c->copied;
	return rc;
}

int db_attrs_copy(struct db *d, const char *bucket, const char *from,
		  const char *to, const struct actor *who,
		  struct db_attrs *replaced, int *had, int64_t *copied)
{
	struct attrs_copy_args c = {
	    .m = {.bucket = bucket, .from = from, .to = to, .who = who}};

	return attrs_copy(d, &c, replaced, had, NULL, copied);
}

int db_attrs_copy_rename(struct db *d, const char *bucket, const char *from,
			 const char *to, const char *token, int lease_s,
			 const struct actor *who, struct db_attrs *replaced,
			 int *had, int *pending, int64_t *copied)
{
	struct attrs_copy_args c = {
	    .m = {.bucket = bucket, .from = from, .to = to, .who = who},
	    .keep = 1,
	    .token = token,
	    .lease_s = lease_s > 0 ? lease_s : 1};

	if (!token)
		return -EINVAL;
	return attrs_copy(d, &c, replaced, had, pending, copied);
}

/* clang-format off */
/* Who ($1..$4), $5 bucket, $6 key, $7 its hidden name, $8 this process's
 * claimer: key's row, unless it is another mount's live claim, is copied
 * to the hidden name without its claim, tagged with the claimer and
 * HIDDEN_TAG instead (never a claim: no claim_until), so that what a crash
 * leaves there is found (db_attrs_sweep_hidden); logged 'create',
 * from_key key. A row at the hidden name that another process's hide
 * tagged is never replaced (review-hide H6: two processes may count the
 * same hidden name): nothing copied. One row: how many rows were copied,
 * and whether key has a row to copy. */
static const char db_sql_attrs_copy_hidden[] =
	"WITH s AS (SELECT * FROM file_attrs f"
	" WHERE bucket = $5::text AND object_key = $6::text"
	" AND NOT " OTHERS_LIVE("$8") "),"
	" c AS (INSERT INTO file_attrs AS t (bucket, object_key, mode, uid,"
	" gid, atime_ns, mtime_ns, ctime, updated_by, etag, claimed_by,"
	" claim_until)"
	" SELECT bucket, $7::text, mode, uid, gid, atime_ns, mtime_ns, now(),"
	" updated_by, etag, $8::text || '" HIDDEN_TAG "', NULL FROM s"
	" ON CONFLICT (bucket, object_key) DO UPDATE SET"
	" mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
	" atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns,"
	" ctime = excluded.ctime, updated_by = excluded.updated_by,"
	" etag = excluded.etag, claimed_by = excluded.claimed_by,"
	" claim_until = NULL"
	" WHERE t.claimed_by IS NULL OR t.claimed_by = excluded.claimed_by"
	" OR right(t.claimed_by, length('" HIDDEN_TAG "'))"
	" <> '" HIDDEN_TAG "'"
	" RETURNING *),"
	" l AS (" LOG_COLS "SELECT bucket, object_key, 'create', mode, uid,"
	" gid, atime_ns, mtime_ns, etag, $6::text, " LOG_WHO " FROM c)"
	" SELECT (SELECT count(*) FROM c), EXISTS (SELECT 1 FROM s)";
/* clang-format on */

static int pg_attrs_copy_hidden(struct pg_ctx *x, void *arg)
{
	struct attrs_move_args *m = arg;
	struct who_params w;
	const char *p[8];
	PGresult *res = NULL;
	int rc;

	attrs_who_fill(m->who, &w, p);
	p[4] = m->bucket;
	p[5] = m->from;
	p[6] = m->to;
	p[7] = x->d->claimer;
	rc = pg_exec(x, db_sql_attrs_copy_hidden, 8, p, &res);
	if (rc == 0 && PQntuples(res) == 1 &&
	    !strcmp(PQgetvalue(res, 0, 0), "0") &&
	    !strcmp(PQgetvalue(res, 0, 1), "t"))
		rc = -EEXIST; /* another process's hide holds the name */
	PQclear(res);
	return rc;
}

int db_attrs_copy_hidden(struct db *d, const char *bucket, const char *key,
			 const char *hidden, const struct actor *who)
{
	struct attrs_move_args m = {
	    .bucket = bucket, .from = key, .to = hidden, .who = who};

	if (!d || !bucket || !key || !hidden)
		return -EINVAL;
	/* A tag names this process, which holds its liveness lock or takes
	 * it again within DB_LIVE_WATCH_MS (db_live_watch): never here, so
	 * that no request waits on it (review-31 R2). */
	return db_run(d, "copy file attributes to a hidden name", 1, 1,
		      pg_attrs_copy_hidden, &m);
}

/* clang-format off */
/* $1 bucket: the claimers of its hidden rows (db_attrs_copy_hidden's tags)
 * that are gone now (LIVE_GONE: the liveness lock free, the heartbeat
 * stale; read, never taken), and whether each has a heartbeat row
 * (live_free_claimers). */
#define HIDDEN_CLAIMER "left(f.claimed_by, length(f.claimed_by)" \
	" - length('" HIDDEN_TAG "'))"
static const char db_sql_attrs_hidden_free[] =
	"SELECT DISTINCT " HIDDEN_CLAIMER ", " LIVE_BEAT_ROW(HIDDEN_CLAIMER)
	" FROM file_attrs f"
	" WHERE f.bucket = $1::text AND f.claim_until IS NULL"
	" AND f.claimed_by IS NOT NULL"
	" AND right(f.claimed_by, length('" HIDDEN_TAG "')) = '" HIDDEN_TAG "'"
	" AND " LIVE_GONE(HIDDEN_CLAIMER);
/* $1 the sweeping host, $2 bucket, $3 the claimers found gone
 * (db_sql_attrs_hidden_free): the hidden rows of every one of them that
 * is still gone (its heartbeat still stale, its liveness lock free:
 * tried once per tag, in a CTE of its own, never for another row's
 * claimed_by, nor for a claimer not in $3) go. A process cannot come back
 * under its claimer (its start time is in it). Each drop is logged as the
 * system's, not a user's (review-36 R7): changed_by "custodyfs sweep of"
 * the gone claimer, no uid nor user, the host that swept. */
#define SWEEP_CLAIMER "left(claimed_by, length(claimed_by) - length('" \
	HIDDEN_TAG "'))"
static const char db_sql_attrs_sweep_hidden[] =
	"WITH t AS MATERIALIZED (SELECT DISTINCT claimed_by FROM file_attrs"
	" WHERE bucket = $2::text AND claim_until IS NULL"
	" AND claimed_by IS NOT NULL"
	" AND right(claimed_by, length('" HIDDEN_TAG "')) = '" HIDDEN_TAG "'),"
	" gone AS MATERIALIZED (SELECT claimed_by FROM t WHERE CASE WHEN "
	SWEEP_CLAIMER " = ANY ($3::text[]) AND NOT "
	LIVE_BEAT_FRESH(SWEEP_CLAIMER) " THEN pg_try_advisory_xact_lock("
	LIVE_KEY(SWEEP_CLAIMER) ") ELSE false END),"
	" d AS (DELETE FROM file_attrs f USING gone WHERE f.bucket = $2::text"
	" AND f.claim_until IS NULL AND f.claimed_by = gone.claimed_by"
	" RETURNING f.*) "
	LOG_COLS "SELECT bucket, object_key, 'drop', mode, uid, gid,"
	" atime_ns, mtime_ns, etag, NULL, 'custodyfs sweep of ' || "
	SWEEP_CLAIMER ", NULL, NULL, $1::text FROM d";
/* clang-format on */

struct sweep_hidden_args {
	const char *bucket;
	const struct actor *who;
	const char *free; /* live_free_claimers' */
	long dropped;	  /* output */
};

struct live_free_args {
	const char *sql, *bucket;
	const char *scope; /* live_nobeat_gone's */
	char *arr;	   /* output: a text[] literal, malloc'd */
	int n;		   /* output: how many in it */
};

static int pg_live_free(struct pg_ctx *x, void *arg)
{
	struct live_free_args *f = arg;
	const char *p[1] = {f->bucket};
	PGresult *res = NULL;
	size_t len = 3, at = 0;
	int rc = pg_exec(x, f->sql, 1, p, &res);
	int i, n;

	unsigned char *gone = NULL;
	int k = 0;

	if (rc)
		goto out;
	n = PQntuples(res);
	gone = calloc(n ? (size_t)n : 1, 1);
	if (!gone) {
		rc = -ENOMEM;
		goto out;
	}
	/* With a stale heartbeat row: gone now. With none at all (a daemon
	 * of before migration 17): once its lock was seen free for
	 * DB_LIVE_NOBEAT_MS (review-37 F2). */
	pthread_mutex_lock(&x->d->lock);
	live_nobeat_begin(x->d, f->scope);
	for (i = 0; i < n; i++)
		gone[i] =
		    PQgetvalue(res, i, 1)[0] == 't' ||
		    live_nobeat_gone(x->d, f->scope, PQgetvalue(res, i, 0));
	live_nobeat_end(x->d, f->scope);
	pthread_mutex_unlock(&x->d->lock);
	for (i = 0; i < n; i++)
		len += 2 * (size_t)PQgetlength(res, i, 0) + 3;
	free(f->arr);
	f->arr = malloc(len);
	if (!f->arr) {
		rc = -ENOMEM;
		goto out;
	}
	f->arr[at++] = '{';
	for (i = 0; i < n; i++) {
		const char *v = PQgetvalue(res, i, 0);

		if (!gone[i])
			continue;
		if (k++)
			f->arr[at++] = ',';
		f->arr[at++] = '"';
		for (; *v; v++) {
			if (*v == '"' || *v == '\\')
				f->arr[at++] = '\\';
			f->arr[at++] = *v;
		}
		f->arr[at++] = '"';
	}
	f->arr[at++] = '}';
	f->arr[at] = '\0';
	f->n = k;
out:
	free(gone);
	PQclear(res);
	return rc;
}

/* The claimers sql ($1 bucket) reads as gone now (LIVE_GONE; its second
 * column: has it a heartbeat row), in *arr (a text[] literal, the caller
 * frees it), and how many in *n. No wait: a live process's heartbeat is
 * fresh, and a crashed one's rows go at a later sweep once it is stale
 * (the mount sweeps periodically). A claimer with no heartbeat row is in
 * *arr only once this process's reads of kind's rows of bucket found its
 * lock free for DB_LIVE_NOBEAT_MS (live_nobeat_gone). 0 or -errno. */
static int live_free_claimers(struct db *d, const char *what, const char *sql,
			      const char *kind, const char *bucket, char **arr,
			      int *n)
{
	struct live_free_args f = {.sql = sql, .bucket = bucket};
	char *scope = malloc(strlen(kind) + strlen(bucket) + 2);
	int rc;

	if (!scope)
		return -ENOMEM;
	sprintf(scope, "%s %s", kind, bucket);
	f.scope = scope;
	rc = db_run(d, what, 0, 0, pg_live_free, &f);
	free(scope);
	if (rc) {
		free(f.arr);
		return rc;
	}
	*arr = f.arr;
	*n = f.n;
	return 0;
}

static int pg_attrs_sweep_hidden(struct pg_ctx *x, void *arg)
{
	struct sweep_hidden_args *h = arg;
	const char *p[3] = {h->who && h->who->host[0] ? h->who->host : NULL,
			    h->bucket, h->free};
	PGresult *res = NULL;
	int rc;

	rc = pg_exec(x, db_sql_attrs_sweep_hidden, 3, p, &res);
	if (rc == 0)
		h->dropped = atol(PQcmdTuples(res));
	PQclear(res);
	return rc;
}

int db_attrs_sweep_hidden(struct db *d, const char *bucket,
			  const struct actor *who, long *dropped)
{
	struct sweep_hidden_args h = {.bucket = bucket, .who = who};
	char *free_claimers = NULL;
	int rc, n = 0;

	if (dropped)
		*dropped = 0;
	if (!d || !bucket)
		return -EINVAL;
	rc = live_free_claimers(d, "read the hidden rows' gone processes",
				db_sql_attrs_hidden_free, "hidden", bucket,
				&free_claimers, &n);
	if (rc)
		return rc;
	h.free = free_claimers;
	if (n > 0)
		rc = db_run(d, "drop hidden file attributes of gone processes",
			    1, 0, pg_attrs_sweep_hidden, &h);
	free(free_claimers);
	if (rc == 0 && dropped)
		*dropped = h.dropped;
	return rc;
}

int pg_attrs_unpend_key(struct pg_ctx *x, const char *bucket, const char *to)
{
	const char *p[2] = {bucket, to};

	return pg_exec(x, db_sql_attrs_unpend, 2, p, NULL);
}

static int pg_attrs_unpend(struct pg_ctx *x, void *arg)
{
	struct attrs_move_args *m = arg;
	const char *p[3] = {m->bucket, m->to, m->old};

	return pg_exec(x, db_sql_attrs_unpend_mine, 3, p, NULL);
}

int db_attrs_unpend(struct db *d, const char *bucket, const char *to,
		    const char *token)
{
	struct attrs_move_args m = {.bucket = bucket, .to = to, .old = token};

	if (!d || !bucket || !to || !token)
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
	attrs_who_fill(who, &w, p);
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
	const char *p[3] = {m->bucket, m->from, m->etag};

	return pg_exec(x, db_sql_attrs_copy_done, 3, p, NULL);
}

int db_attrs_copy_done(struct db *d, const char *bucket, const char *from,
		       const char *etag)
{
	struct attrs_move_args m = {.bucket = bucket,
				    .from = from,
				    .etag = etag && *etag ? etag : NULL};

	if (!d || !bucket || !from)
		return -EINVAL;
	return db_run(d, "complete a move of file attributes", 1, 1,
		      pg_attrs_copy_done, &m);
}

struct attrs_restore_args {
	const char *bucket, *key;
	const struct db_attrs *row;
	int64_t copied;
	const struct actor *who;
};

/* In x's transaction, under key's reception key lock: has key a row
 * (locked) that is not the copy a rename made there (copied: its ctime in
 * ns, 0: it made none), i.e. a newer file's, stored or claimed there since
 * (review-stale4 K3)? An ETag cannot tell (review-k L1: equal contents). 1,
 * 0 or -errno. */
static int pg_attrs_newer_at(struct pg_ctx *x, const char *bucket,
			     const char *key, int64_t copied)
{
	char ct[24];
	const char *p[3] = {bucket, key, ct};
	PGresult *res = NULL;
	int rc;

	snprintf(ct, sizeof(ct), "%" PRId64, copied);
	rc = pg_lock_key(x, bucket, key);
	if (rc == 0)
		rc = pg_exec(x, db_sql_attrs_newer_at, 3, p, &res);
	if (rc == 0)
		rc = PQntuples(res) == 1;
	PQclear(res);
	return rc;
}

static int pg_attrs_restore(struct pg_ctx *x, void *arg)
{
	struct attrs_restore_args *a = arg;
	const struct db_attrs *r = a->row;
	char mode[16], uid[24], gid[24], at[24], mt[24], ct[24];
	struct who_params w;
	const char *p[13];
	int rc = pg_attrs_newer_at(x, a->bucket, a->key, a->copied);

	/* Stored or claimed there since (review-stale4 K3): that file's
	 * row stays, and the one the copy replaced is older. */
	if (rc)
		return rc < 0 ? rc : 0;
	rc = pg_attrs_drop_one(x, a->bucket, a->key, 0, 0, a->who);
	if (rc || !r)
		return rc;
	snprintf(mode, sizeof(mode), "%u", (unsigned)(r->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, r->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, r->gid);
	snprintf(at, sizeof(at), "%" PRId64, r->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, r->mtime_ns);
	snprintf(ct, sizeof(ct), "%" PRId64, r->ctime_ns);
	attrs_who_fill(a->who, &w, p);
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
		     const struct db_attrs *row, int64_t copied,
		     const struct actor *who)
{
	struct attrs_restore_args a = {.bucket = bucket,
				       .key = key,
				       .row = row,
				       .copied = copied,
				       .who = who};

	if (!d || !bucket || !key)
		return -EINVAL;
	return db_run(d, "restore file attributes", 1, 1, pg_attrs_restore, &a);
}

struct attrs_publish_args {
	const char *bucket, *from, *to, *etag;
	const char *claimer;	  /* the publisher's claim token, or NULL */
	const char *pending;	  /* its pending row's token, or NULL */
	const struct db_attrs *a; /* its attributes (NULL: not known) */
	const struct actor *who;
	int in_row;  /* in the transaction that recorded etag live at to */
	int live;    /* output: etag was the live object of to */
	int skipped; /* output (in_row): not done, left to the caller */
};

/* In x's transaction: 1 when from's row was published to to already
 * (db_sql_attrs_published), 0, or -errno; *mine: from's row is the
 * publisher's. */
static int pg_attrs_published(struct pg_ctx *x,
			      const struct attrs_publish_args *a, int *mine)
{
	const char *p[5] = {a->bucket, a->from, a->to, a->etag, a->claimer};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_published, 5, p, &res);

	*mine = 0;
	if (rc == 0 && PQntuples(res) != 1)
		rc = -EIO;
	if (rc == 0) {
		*mine = !strcmp(PQgetvalue(res, 0, 1), "t");
		rc = !strcmp(PQgetvalue(res, 0, 0), "t");
	}
	PQclear(res);
	return rc;
}

/* In x's transaction: to's row becomes a->a, bound to etag
 * (db_sql_attrs_publish_take). 0 or -errno. */
static int pg_attrs_publish_take(struct pg_ctx *x,
				 const struct attrs_publish_args *a)
{
	const struct db_attrs *r = a->a;
	char mode[16], uid[24], gid[24], at[24], mt[24];
	struct who_params w;
	const char *p[13];

	snprintf(mode, sizeof(mode), "%u", (unsigned)(r->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, r->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, r->gid);
	snprintf(at, sizeof(at), "%" PRId64, r->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, r->mtime_ns);
	attrs_who_fill(a->who, &w, p);
	p[4] = a->bucket;
	p[5] = a->from;
	p[6] = a->to;
	p[7] = a->etag;
	p[8] = mode;
	p[9] = uid;
	p[10] = gid;
	p[11] = r->what & DB_ATTR_ATIME ? at : NULL;
	p[12] = r->what & DB_ATTR_MTIME ? mt : NULL;
	return pg_exec(x, db_sql_attrs_publish_take, 13, p, NULL);
}

static int pg_attrs_publish_rows(struct attrs_publish_args *a,
				 struct pg_ctx *x);

/* The publish (pg_attrs_publish_rows), and its pending row goes with it
 * (the rows it stood for are committed now, or a newer object is there). */
static int pg_attrs_publish(struct pg_ctx *x, void *arg)
{
	struct attrs_publish_args *a = arg;
	const char *p[3] = {a->bucket, a->to, a->pending};
	int rc = pg_attrs_publish_rows(a, x);

	if (rc == 0 && !a->skipped && a->pending)
		rc = pg_exec(x, db_sql_attrs_unpend_mine, 3, p, NULL);
	return rc;
}

static int pg_attrs_publish_rows(struct attrs_publish_args *a, struct pg_ctx *x)
{
	const char *del[2] = {a->bucket, a->to};
	const char *done[3] = {a->bucket, NULL, NULL};
	struct who_params w;
	const char *p[8];
	int rc, mine = 0;

	a->skipped = 0;
	if (a->in_row) {
		a->live = 1; /* recorded so under the key lock just now */
		rc = pg_attrs_published(x, a, &mine);
		if (rc < 0)
			return rc;
	} else {
		rc = a->live = pg_attrs_live_is(x, a->bucket, a->to, a->etag);
		if (rc < 0)
			return rc;
		rc = pg_attrs_published(x, a, &mine);
		if (rc < 0)
			return rc;
		if (rc && a->live)
			return 0; /* done: nothing to move */
	}
	if (a->live && !mine) {
		/* The row under from is another file's now (E3): never
		 * moved; to gets the publisher's own attributes. */
		if (!a->a) {
			a->skipped = 1;
			return 0;
		}
		return pg_attrs_publish_take(x, a);
	}
	if (a->live) {
		rc = pg_exec(x, db_sql_attrs_copy_del, 2, del, NULL);
		if (rc)
			return rc;
		attrs_who_fill(a->who, &w, p);
		p[4] = a->bucket;
		p[5] = a->from;
		p[6] = a->to;
		p[7] = a->etag;
		rc = pg_exec(x, db_sql_attrs_publish_ins, 8, p, NULL);
		if (rc)
			return rc;
		/* from's rows, whatever object they are bound to: the
		 * publisher's temporary name is gone */
		done[1] = a->from;
		return pg_exec(x, db_sql_attrs_copy_done, 3, done, NULL);
	}
	/* A newer object is there: its row stays; from's name is gone (its
	 * row with it, while it is the publisher's). */
	attrs_who_fill(a->who, &w, p);
	p[4] = a->bucket;
	p[5] = a->from;
	p[6] = a->claimer;
	return pg_exec(x, db_sql_attrs_publish_drop, 7, p, NULL);
}

int db_attrs_publish(struct db *d, const char *bucket, const char *from,
		     const char *to, const char *etag, const char *claimer,
		     const char *pending, const struct db_attrs *attrs,
		     const struct actor *who, int *live)
{
	struct attrs_publish_args a = {.bucket = bucket,
				       .from = from,
				       .to = to,
				       .etag = etag,
				       .claimer = claimer,
				       .pending = pending,
				       .a = attrs,
				       .who = who};
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
					.claimer = b->claimer,
					.pending = b->pending,
					.a = b->attrs,
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
		*done = rc == 0 && !pa.skipped;
		goto out;
	}
	p[2] = etag;
	p[3] = b->claimer;
	if (b->claimer) {
		/* Still its claim: bound. (Else its take, separately.) */
		rc = pg_attrs_bind_mine(x, bucket, key, etag, b->claimer, done);
		goto out;
	}
	rc = pg_attrs_bind_run(x, bucket, key, etag, NULL); /* old: none */
	*done = rc == 0;
out:
	PQclear(res);
	return rc;
}

struct attrs_pend_publish_args {
	const char *bucket, *from, *to, *token, *claimer;
	int lease_s;
	const struct db_attrs *a;
	const struct actor *who;
};

int pg_attrs_pend_pub(struct pg_ctx *x, const char *bucket, const char *from,
		      const char *to, const char *token, int lease_s,
		      const char *claimer, const struct db_attrs *r,
		      const struct actor *who, int upload)
{
	char lease[16], mode[16], uid[24], gid[24], at[24], mt[24];
	const char *state = upload ? "upload" : NULL;
	const char *p[12] = {bucket, from, to, token, lease, claimer, state};
	struct who_params w;
	const char *wp[4];
	PGresult *res = NULL;
	int rc;

	snprintf(lease, sizeof(lease), "%d", lease_s);
	rc = pg_exec(x, db_sql_attrs_pend_pub_row, 7, p, &res);
	if (rc || PQntuples(res) == 1 || !r)
		goto out;
	/* from's row is not the publisher's: its own attributes. */
	snprintf(mode, sizeof(mode), "%u", (unsigned)(r->mode & 07777));
	snprintf(uid, sizeof(uid), "%" PRId64, r->uid);
	snprintf(gid, sizeof(gid), "%" PRId64, r->gid);
	snprintf(at, sizeof(at), "%" PRId64, r->atime_ns);
	snprintf(mt, sizeof(mt), "%" PRId64, r->mtime_ns);
	attrs_who_fill(who, &w, wp);
	p[5] = mode;
	p[6] = uid;
	p[7] = gid;
	p[8] = r->what & DB_ATTR_ATIME ? at : NULL;
	p[9] = r->what & DB_ATTR_MTIME ? mt : NULL;
	p[10] = wp[0];
	p[11] = state;
	rc = pg_exec(x, db_sql_attrs_pend_pub_vals, 12, p, NULL);
out:
	PQclear(res);
	return rc;
}

static int pg_attrs_pend_publish(struct pg_ctx *x, void *arg)
{
	struct attrs_pend_publish_args *g = arg;

	return pg_attrs_pend_pub(x, g->bucket, g->from, g->to, g->token,
				 g->lease_s, g->claimer, g->a, g->who, 1);
}

int db_attrs_pend_publish(struct db *d, const char *bucket, const char *from,
			  const char *to, const char *token, int lease_s,
			  const char *claimer, const struct db_attrs *attrs,
			  const struct actor *who)
{
	struct attrs_pend_publish_args g = {.bucket = bucket,
					    .from = from,
					    .to = to,
					    .token = token,
					    .claimer = claimer,
					    .lease_s =
						lease_s > 0 ? lease_s : 1,
					    .a = attrs,
					    .who = who};

	if (!d || !bucket || !from || !to || !token)
		return -EINVAL;
	/* Its token names this process (db_attrs_sweep_pending), which
	 * holds its liveness lock or takes it again (db_live_watch): never
	 * here (review-31 R2). */
	return db_run(d, "record a publish's pending file attributes", 1, 1,
		      pg_attrs_pend_publish, &g);
}

struct sweep_pending_args {
	const char *bucket;
	const char *free; /* live_free_claimers' */
	char host[256];	  /* the sweeping host, for the log */
	long dropped;	  /* output */
};

static int pg_attrs_sweep_pending(struct pg_ctx *x, void *arg)
{
	struct sweep_pending_args *s = arg;
	const char *p[3] = {s->bucket, s->free, s->host[0] ? s->host : NULL};
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_attrs_sweep_pending, 3, p, &res);

	if (rc == 0)
		s->dropped = strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return rc;
}

long db_attrs_sweep_pending(struct db *d, const char *bucket)
{
	struct sweep_pending_args s = {.bucket = bucket};
	char *free_claimers = NULL;
	int rc, n = 0;

	if (!d || !bucket)
		return -EINVAL;
	rc = live_free_claimers(d, "read the pending rows' gone processes",
				db_sql_attrs_pending_free, "pending", bucket,
				&free_claimers, &n);
	if (rc)
		return rc;
	s.free = free_claimers;
	if (gethostname(s.host, sizeof(s.host)))
		s.host[0] = '\0';
	s.host[sizeof(s.host) - 1] = '\0';
	rc = db_run(d, "drop lapsed pending file attributes", 1, 0,
		    pg_attrs_sweep_pending, &s);
	free(free_claimers);
	return rc ? rc : s.dropped;
}

struct attrs_settle_args {
	const char *bucket, *key, *etag, *tag;
	const struct actor *who;
	int settled; /* output */
};

static int pg_attrs_settle(struct pg_ctx *x, void *arg)
{
	struct attrs_settle_args *a = arg;
	struct who_params w;
	const char *p[8];
	PGresult *res = NULL;
	int rc;

	a->settled = 0;
	rc = pg_attrs_live_is(x, a->bucket, a->key, a->etag);
	if (rc <= 0)
		return rc;
	attrs_who_fill(a->who, &w, p);
	p[4] = a->bucket;
	p[5] = a->key;
	p[6] = a->etag;
	p[7] = a->tag && *a->tag ? a->tag : NULL;
	rc = pg_exec(x, db_sql_attrs_settle, 8, p, &res);
	if (rc == 0)
		a->settled = strtol(PQcmdTuples(res), NULL, 10) > 0;
	PQclear(res);
	return rc;
}

int db_attrs_settle_pending(struct db *d, const char *bucket, const char *key,
			    const char *etag, const char *tag,
			    const struct actor *who, int *settled)
{
	struct attrs_settle_args a = {
	    .bucket = bucket, .key = key, .etag = etag, .tag = tag, .who = who};
	int rc;

	if (settled)
		*settled = 0;
	if (!d || !bucket || !key || !etag || !*etag)
		return -EINVAL;
	rc = db_run(d, "settle a publish's pending file attributes", 1, 1,
		    pg_attrs_settle, &a);
	if (rc == 0 && settled)
		*settled = a.settled;
	return rc;
}
