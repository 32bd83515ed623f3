/* db_attrs_internal.h - what db_attrs.c, db_attrs_claim.c and
 * db_attrs_pending.c share: the logging columns, a row's columns and the
 * statements one of them runs in another's transaction. Not for callers
 * outside these files (they use db_attrs.h). */
#ifndef CUSTODYFS_DB_ATTRS_INTERNAL_H
#define CUSTODYFS_DB_ATTRS_INTERNAL_H

#include <libpq-fe.h>

#include "db_attrs.h"
#include "db_internal.h"

/* clang-format off */
/* Who: $1 changed_by, $2 uid, $3 user, $4 host (the first parameters of
 * each logging statement). */
#define LOG_COLS "INSERT INTO file_attr_changes (bucket, object_key, op," \
	" mode, uid, gid, atime_ns, mtime_ns, etag, from_key, changed_by," \
	" changed_uid, changed_user, changed_host) "
#define LOG_WHO "$1::text, $2::bigint, $3::text, $4::text"

/* Is row f a live claim (unbound, its lease running) of another process
 * than this one (c: the parameter holding db->claimer, NULL: none)? Such
 * a row marks where another mount's new file will land: this process's
 * drops and moves leave it alone (db_set_claimer). */
/* The suffix of claimed_by on a hidden name's row (db_attrs_copy_hidden):
 * never a claim ('#' + a number is), the claimer names its process. */
#define HIDDEN_TAG "!hidden"

#define OTHERS_LIVE(c) "(f.etag IS NULL AND f.claim_until IS NOT NULL" \
	" AND f.claim_until > now() AND (" c "::text IS NULL" \
	" OR left(coalesce(f.claimed_by, ''), length(" c "::text) + 1)" \
	" IS DISTINCT FROM " c "::text || '#'))"

/* Is row f a hidden name's row (db_attrs_copy_hidden's tag) whose process
 * is not gone (LIVE_GONE_BEAT, db_internal.h: its liveness lock held, or
 * its heartbeat within its grace, or no heartbeat row at all)? Read, never
 * taken nor waited for. Such a row goes with its file (its last close), or
 * with the process (db_attrs_sweep_hidden): a tree drop that spares claims
 * spares it too (review-31 R6), also while its process takes its lock
 * again (review-36 R3). A tree drop cannot wait to read a lock twice, so
 * the row of a claimer that writes no heartbeat (a daemon of before
 * migration 17) is spared whatever its lock: the sweep drops it once that
 * lock stayed free for DB_LIVE_NOBEAT_MS (review-37 F2). */
#define LIVE_TAG "(f.claim_until IS NULL AND f.claimed_by IS NOT NULL" \
	" AND right(f.claimed_by, length('" HIDDEN_TAG "')) = '" HIDDEN_TAG "'" \
	" AND NOT " LIVE_GONE_BEAT("left(f.claimed_by, length(f.claimed_by)" \
	" - length('" HIDDEN_TAG "'))") ")"

/* A pending row (file_attrs_pending, alias p) of an open file still being
 * written: unbound and its lease running (a deferred publish's, renewed
 * while its file is open, db_attrs_defer; or a publish's upload in
 * flight). It stands for a file that lands at its key: a create there
 * fails as on a live claim (review-h5 N1), and it goes only with its file
 * (its publish, unpend), never with the name. */
#define PEND_LIVE "(p.etag IS NULL AND p.pending_until > now())"

#define ROW_COLS "object_key, mode, uid, gid, atime_ns, mtime_ns," \
	" (extract(epoch FROM ctime) * 1000000)::bigint * 1000, etag"
/* clang-format on */

/* Who as the first four parameters of a logging statement. */
struct who_params {
	char by[400], uid[24];
};

/* A rename's keys (db_attrs_move, db_attrs_copy and their kin). */
struct attrs_move_args {
	const char *bucket, *from, *to, *etag, *old;
	int tree;
	const struct actor *who;
};

/* p[0..3] from who (all NULL when who is NULL); w holds the strings. */
void attrs_who_fill(const struct actor *who, struct who_params *w,
		    const char **p);
/* Row i of res (columns ROW_COLS) into *r (zeroed first). 0 or -ENOMEM
 * (r->key set unless that failed: the caller frees what was set). */
int attrs_row_parse(PGresult *res, int i, struct db_attrs *r);
/* key + "/" and key + "0" (malloc'd): the byte range of everything under
 * key/. 0 or -ENOMEM. */
int attrs_subtree(const char *key, char **lo, char **hi);

/* keys as a PostgreSQL array literal: each element quoted, '"' and '\'
 * escaped (malloc'd). NULL: ENOMEM. */
char *attrs_text_array(const char *const *keys, size_t n);

/* In x's transaction: db_attrs_pend_publish's work (its pending row's
 * lease_s already at least 1); upload: its upload is in flight
 * (upload_state 'upload', review n19; 0: a deferral, its file still open
 * for writing). 0 or -errno. */
int pg_attrs_pend_pub(struct pg_ctx *x, const char *bucket, const char *from,
		      const char *to, const char *token, int lease_s,
		      const char *claimer, const struct db_attrs *a,
		      const struct actor *who, int upload);

/* In x's transaction: key's row goes (with tree, those under key/ too),
 * each logged ('drop') with who; with spare 1, another mount's live
 * claim stays (a rename's target: another mount's new file lands there);
 * with spare 2 (db_attrs_drop_hidden), another process's hidden tag.
 * An unlink ends any claim on its name (spare 0). 0 or -errno. */
int pg_attrs_drop_one(struct pg_ctx *x, const char *bucket, const char *key,
		      int tree, int spare, const struct actor *who);
/* In x's transaction: the name key of bucket is locked until the
 * transaction ends (an advisory lock of its own, never the reception key
 * lock): a create's claim and a deferred publish of key take it first, so
 * that of the two racing on key exactly one sees the other (review-h5
 * N1). 0 or -errno. */
int pg_attrs_lock_name(struct pg_ctx *x, const char *bucket, const char *key);
/* In x's transaction, under key's name lock (taken here): is there a live
 * pending row (PEND_LIVE) at key, another file's that lands there? 1 (*h
 * filled as db_attrs_claim's *held: a live claim, its holder the pending
 * row's token; h may be NULL), 0, or -errno. */
int pg_attrs_pend_held(struct pg_ctx *x, const char *bucket, const char *key,
		       struct db_claim *h);
/* In x's transaction: db_attrs_move's work. 0 or -errno. */
int pg_attrs_move_run(struct pg_ctx *x, const struct attrs_move_args *m);
/* In a transaction, under key's reception key lock (taken here): is etag
 * the live object of key (its live reception row's)? 1, 0, or -errno. */
int pg_attrs_live_is(struct pg_ctx *x, const char *bucket, const char *key,
		     const char *etag);
/* In x's transaction: db_attrs_bind's statement. 0 or -errno. */
int pg_attrs_bind_run(struct pg_ctx *x, const char *bucket, const char *key,
		      const char *etag, const char *old);
/* In x's transaction: the row of claimer's claim at key, unbound (or
 * already bound to etag), is bound to etag (*mine 1), else nothing
 * (*mine 0). 0 or -errno. */
int pg_attrs_bind_mine(struct pg_ctx *x, const char *bucket, const char *key,
		       const char *etag, const char *claimer, int *mine);
/* In x's transaction: the pending row(s) of `to` a rename left go. 0 or
 * -errno. */
int pg_attrs_unpend_key(struct pg_ctx *x, const char *bucket, const char *to);
#endif
