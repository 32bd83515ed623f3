/* db_attrs.h - persisted file attributes (file_attrs) and their change log
 * (file_attr_changes), migration 5.
 *
 * Knows nothing of S3 or FUSE: a key is a string in a bucket. file_attrs
 * holds, per key, the mode bits, owner and times set on the file (a NULL
 * column: not set, the caller's default applies) and the time of the last
 * status change; it is mutable and follows renames and removals.
 * file_attr_changes logs every chmod, chown and utimens with who and when
 * and is append-only (the database refuses UPDATE, DELETE, TRUNCATE).
 *
 * A row describes one object (migration 8): etag is the ETag of the object
 * it was set on, NULL while a mount's new or rewritten file is not yet
 * recorded. A row bound to another ETag than the object at its key is not
 * that object's: the caller shows that object with the defaults. */
#ifndef CUSTODYFS_DB_ATTRS_H
#define CUSTODYFS_DB_ATTRS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "db.h"

#define DB_ATTR_MODE 1	 /* mode */
#define DB_ATTR_OWNER 2	 /* uid and gid */
#define DB_ATTR_ATIME 4	 /* atime_ns */
#define DB_ATTR_MTIME 8	 /* mtime_ns */
#define DB_ATTR_RESET 16 /* a new file: fields not given become NULL */

struct db_attrs {
	char *key;     /* output rows only: malloc'd, owned by the rows */
	unsigned what; /* DB_ATTR_* set in this row */
	uint32_t mode; /* permission bits, 07777 */
	int64_t uid, gid;
	int64_t atime_ns, mtime_ns;
	int64_t ctime_ns; /* output: the last status change */
	char *etag;	  /* output rows only: malloc'd (NULL: not bound) */
};

/* Who may make a change, checked by the database on the row as it is when
 * the change is made: the kernel and the daemon check the caller's view of
 * the name, which may be older than the row and describe another object
 * (review-T-Hb). The kernel's rules: DB_MAY_CHMOD the owner; DB_MAY_KILL
 * (a write's clearing of setuid/setgid, its mode computed from the row's,
 * never the caller's) the owner or whoever may write; DB_MAY_KILL_OPEN (the
 * same through a descriptor open for writing, checked at its open) anyone;
 * DB_MAY_CHOWN the owner, to its own uid and the file's group or one of its
 * groups; DB_MAY_TIMES (explicit times) the owner; DB_MAY_TOUCH (both times
 * now) the owner or whoever may write the file. Root (uid 0) may do all. The
 * caller owns the struct and the groups array. */
enum db_may {
	DB_MAY_CHMOD,
	DB_MAY_KILL,
	DB_MAY_KILL_OPEN,
	DB_MAY_CHOWN,
	DB_MAY_TIMES,
	DB_MAY_TOUCH
};
struct db_attrs_may {
	enum db_may kind;
	int64_t uid;	       /* the caller */
	const int64_t *groups; /* its groups, its gid among them */
	size_t ngroups;
	/* What a key shows without a row (or with a stale one). */
	int64_t def_uid, def_gid;
	uint32_t def_mode;
};

/* Sets the fields of *a named by a->what for (bucket, key), in one
 * transaction: the row is created when absent; with DB_ATTR_RESET every
 * other field becomes NULL (a new file inherits nothing) and the row is
 * unbound. etag is the ETag of the object changed ("": none stored, NULL:
 * not known, or a directory); a new row is bound to etag. A row bound to
 * another object is never taken on the caller's word (its view of the key
 * may be older than the row, review-T H-b): it is refused, -ESTALE with
 * its etag in *bound, unless it is bound to stale (NULL: none), an object
 * the caller has seen the store no longer holds at key; then it is stale
 * and the change starts from the defaults (every other field NULL), the
 * row then bound to etag. With DB_ATTR_OWNER, a->uid or a->gid < 0 keeps
 * the row's (what the key shows: may's defaults when it has none, so may
 * must be given) and both are set, on success, to the row's owner now;
 * with DB_ATTR_MODE, a->mode to the row's mode now. may
 * (NULL: nothing checked, the daemon's own
 * change) is checked on the row as it is, or on may's defaults for a key
 * without a row or with a stale one: refused with -EPERM (-EACCES for
 * DB_MAY_TOUCH). When op is not NULL ("chmod", "chown", "utimens",
 * "create", "mkdir", "kill_priv") the change is also logged in
 * file_attr_changes with who. *ctime_ns (may be NULL) gets the row's new
 * status-change time, *bound (may be NULL) its etag now (malloc'd, the
 * caller frees; NULL when unbound). 0 or -errno (nothing changed;
 * -ESTALE, -EPERM, -EACCES: refused as above; -EINPROGRESS: the
 * connection was lost at COMMIT). */
int db_attrs_set(struct db *d, const char *bucket, const char *key,
		 struct db_attrs *a, const char *etag, const char *stale,
		 const struct db_attrs_may *may, const char *op,
		 const struct actor *who, int64_t *ctime_ns, char **bound);

/* The rows of the direct children of directory prefix dir ("" = the
 * bucket's root, else "a/b/": keys dir + a name without '/', and dir + a
 * name + "/" is not a child but that directory's marker) of bucket, in
 * one query. *rows malloc'd (free with db_attrs_free). 0 or -errno. */
int db_attrs_list_dir(struct db *d, const char *bucket, const char *dir,
		      struct db_attrs **rows, size_t *n);
void db_attrs_free(struct db_attrs *rows, size_t n);
/* Frees one row's strings (key, etag) and zeroes it. */
void db_attrs_free_row(struct db_attrs *row);
/* The row of key alone, read now (no cache): *found 1 and *row filled
 * (row->key malloc'd, the caller frees it), or *found 0 when key has no
 * row. 0 or -errno (the database cannot be read). */
int db_attrs_get(struct db *d, const char *bucket, const char *key,
		 struct db_attrs *row, int *found);
/* Has key a row, read once no transaction holds it (FOR UPDATE: one in
 * flight, a COMMIT whose answer was lost among them, is waited for)?
 * *found 1 or 0. 0 or -errno. */
int db_attrs_settled(struct db *d, const char *bucket, const char *key,
		     int *found);
/* As db_attrs_get, a pending row of key (db_attrs_copy_rename): the
 * attributes a rename in flight, or one a crash cut short, gives its copy
 * at key, for the object with ETag etag (NULL: any live one): one bound
 * to etag (a rename's copy of that object), else the newest unbound one
 * (a publish's, or a deferred one's) while etag's object may be its
 * upload: its lease running and etag not recorded at key before it (an
 * upload in flight), or etag the first object recorded at key since it,
 * still live (its rows' move cut short, maybe by a crash). Never for an
 * object recorded before it (the one its upload is to replace), nor once
 * it lapsed for a later one (review-h5 N7). tag: the UPLOAD_TAG (upload.h)
 * etag's object carries ("": none; NULL: not read). An unbound row tied to
 * its uploads' tags (a publish's, a deferred one's: db_attrs_pend_tag)
 * describes only an object that carries one of them (review-h5 N2: never
 * another object that arrives at key, by any route, nor any while its
 * file is still open for writing). With tag NULL, when only such a row
 * may apply: *found 0 and *need_tag 1 (may be NULL): read the object's
 * tag and ask again. */
int db_attrs_get_pending(struct db *d, const char *bucket, const char *key,
			 const char *etag, const char *tag,
			 struct db_attrs *row, int *found, int *need_tag);
/* The pending row of a publish (db_attrs_pend_publish, db_attrs_defer:
 * token; unbound, at any key) is tied to one more of its uploads, the one
 * whose requests carry the UPLOAD_TAG tag (non-empty): called before that
 * upload's request is sent, so an object with it is shown with the row's
 * attributes from the moment it lands (db_attrs_get_pending). The tags
 * of earlier attempts stay (one answered with an error may have landed).
 * No row (it went): nothing done. One transaction. 0 or -errno. */
int db_attrs_pend_tag(struct db *d, const char *bucket, const char *token,
		      const char *tag);

/* Rename: the row of from becomes to's (to's own row goes first); with
 * tree set, the rows of every key under from + "/" move under to + "/"
 * (and those under to + "/" go first). etag (NULL or "": unchanged) is
 * the ETag of to's object after the move (a copy may change it), taken by
 * from's row when it is unbound or bound to old (the object moved; NULL:
 * not known, only an unbound row is bound then). Another mount's live
 * claim (db_set_claimer) is neither moved nor dropped: one at `to` while
 * from has a row to move there fails the move (-EBUSY, nothing changed).
 * One transaction; each row moved or dropped is logged ('move', 'drop')
 * with who. 0 or -errno. */
int db_attrs_move(struct db *d, const char *bucket, const char *from,
		  const char *to, int tree, const char *etag, const char *old,
		  const struct actor *who);

/* A file open on this mount is hidden (hidden: its ".fuse_hidden..." name)
 * while a rename replaces key: key's row, unless another mount's live
 * claim, is copied to hidden without a claim (logged 'create', from_key
 * key), and key keeps its own: every mount shows key's object with it
 * until the rename's copy replaces it (review-k L3, L5). The copy is tagged
 * with this process's claimer (db_attrs_sweep_hidden); its liveness lock
 * is checked first (db_live_ensure). A row another process's hide tagged
 * at hidden is never replaced (review-hide H6). 0, -EEXIST (that: nothing
 * copied) or -errno. */
int db_attrs_copy_hidden(struct db *d, const char *bucket, const char *key,
			 const char *hidden, const struct actor *who);

/* The rows db_attrs_copy_hidden made are tagged with the claimer of the
 * process that made them (db_set_claimer) + "!hidden", and go with that
 * process's hidden files. Those of every process that is gone, on any
 * host (its liveness lock, db_set_claimer, is free and its heartbeat,
 * db_live_watch, missing or older than its grace: a crash), go now, each
 * logged 'drop' as the system's (changed_by "custodyfs sweep of" the
 * claimer, no uid nor user, who's host: review-36 R7); *dropped (may be
 * NULL): how many. A live process's never go, also while its liveness
 * session is lost (review-36 R1, R2). Never waits. 0 or -errno. */
int db_attrs_sweep_hidden(struct db *d, const char *bucket,
			  const struct actor *who, long *dropped);

/* One key of a rename, before its object moves: to's row becomes a copy of
 * from's (with its claim, if any; to's own goes; none when from has
 * none), from's stays until the
 * caller drops it once the object has moved, so a failure or a crash
 * between the steps never leaves an object without its attributes. One
 * transaction. replaced/had (both or neither may be NULL): to's own row as
 * it was (*had 1; free with db_attrs_free_row) for db_attrs_restore when
 * the object does not move after all. *copied (may be NULL): the ctime (ns)
 * of the copy made at to (0: none), which names it to db_attrs_restore.
 * 0 or -errno (nothing changed):
 * -EBUSY when to's row is another mount's live claim (db_set_claimer: its
 * new file lands there), never replaced, and when to has a live unbound
 * pending row (an open file's deferred publish, db_attrs_defer, or a
 * publish's upload in flight: that file lands there; review n17 X1). */
int db_attrs_copy(struct db *d, const char *bucket, const char *from,
		  const char *to, const struct actor *who,
		  struct db_attrs *replaced, int *had, int64_t *copied);
/* db_attrs_copy for a rename through the store's copy (reception_rename):
 * when to has a row (a target renamed over), that row stays and from's
 * becomes to's pending row instead (*pending 1), that rename's own (token:
 * the rename's, unique; held lease_s seconds, then stale), which replaces
 * it only when the copy's rows are recorded (pg_attrs_renamed, in their
 * transaction), so a copy that never lands (a failure, a crash) leaves
 * the target with its own attributes; db_attrs_unpend undoes it. Another
 * rename's pending row of to is never touched. */
int db_attrs_copy_rename(struct db *d, const char *bucket, const char *from,
			 const char *to, const char *token, int lease_s,
			 const struct actor *who, struct db_attrs *replaced,
			 int *had, int *pending, int64_t *copied);

/* Undoes a db_attrs_copy_rename that made a pending row (its object never
 * moved to `to`): that rename's (token) goes, to's own row and another
 * rename's pending row stay. 0 or -errno. */
int db_attrs_unpend(struct db *d, const char *bucket, const char *to,
		    const char *token);

/* The copy of from landed at `to` (ETag etag; src: the ETag of the object
 * copied, NULL: not known) but its rows were not recorded with it (they
 * do this in their transaction): to takes the attributes db_attrs_copy
 * prepared, as pg_attrs_renamed (db_internal.h) says. 0 or -errno. */
int db_attrs_renamed(struct db *d, const char *bucket, const char *from,
		     const char *to, const char *etag, const char *src,
		     const struct actor *who);

/* The object db_attrs_copy was for (ETag etag; NULL or "": unknown) has
 * moved: from's row goes, unless it is bound to another object (an upload
 * of from since the copy: review-N N6). Not logged again: the copy's
 * 'move' (from_key from) records the rename, as db_attrs_move's does. 0 or
 * -errno. */
int db_attrs_copy_done(struct db *d, const char *bucket, const char *from,
		       const char *etag);

/* Undoes db_attrs_copy onto key (its object never moved there): key's row
 * goes (logged 'drop'), and row (NULL: none), the one the copy replaced,
 * is put back as it was (logged 'move' from key itself), in one
 * transaction. copied: the copy's ctime (db_attrs_copy's *copied; 0: it
 * made none). Any other row there is a newer file's (stored or claimed
 * there since: review-stale4 K3): it stays, and nothing is put back. 0 or
 * -errno (nothing changed). */
int db_attrs_restore(struct db *d, const char *bucket, const char *key,
		     const struct db_attrs *row, int64_t copied,
		     const struct actor *who);

/* Removal: key's row goes (with tree, those under key + "/" too), each
 * logged ('drop') with who, and key's pending row (db_attrs_copy) a
 * crashed rename left; never a live unbound one (an open file's deferred
 * publish, db_attrs_defer, or a publish's upload in flight: it goes with
 * its file, which lands at key, review-h5 N1). 0 or -errno. */
int db_attrs_drop(struct db *d, const char *bucket, const char *key, int tree,
		  const struct actor *who);
/* db_attrs_drop for a removal that removed nothing in the store (an unlink
 * through a stale listing: the object was gone already) or of a directory
 * (rmdir): another mount's live claim (db_set_claimer) stays, at key and
 * under key + "/" (its new file lands there: review-k L6, L7), and so does
 * a hidden name's row whose process is not gone (its liveness lock held,
 * or its heartbeat within its grace: its open file still shows it,
 * review-31 R6, review-36 R3; or no heartbeat row at all, a daemon of
 * before migration 17, review-37 F2); every other row goes as
 * db_attrs_drop says. 0 or -errno. */
int db_attrs_drop_spare(struct db *d, const char *bucket, const char *key,
			int tree, const struct actor *who);
/* db_attrs_drop of key, a hidden name of this process's (its file's last
 * close, or its hide undone): a row another process's hide tagged there
 * stays, live or not (that process took the name since: review-34 Z2,
 * Z7); this process's own tag, an untagged row (an unlink's hide moved
 * it) or a claim go as db_attrs_drop says. 0 or -errno. */
int db_attrs_drop_hidden(struct db *d, const char *bucket, const char *key,
			 const struct actor *who);
/* Is a key under dir + "/" another mount's live claim (db_set_claimer:
 * another mount's new file being written there, which no listing of the
 * store shows)? Read now. 1, 0, or -errno (the database cannot be read). */
int db_attrs_others_claim_under(struct db *d, const char *bucket,
				const char *dir);

/* Content that arrived by another route (ETag etag) is at key: key's row
 * goes unless it is bound to that object, so the new content gets the
 * configured owner, never its uploader's claim nor the previous writer's.
 * Logged ('drop') with who. 0 or -errno. */
int db_attrs_drop_replaced(struct db *d, const char *bucket, const char *key,
			   const char *etag, const struct actor *who);

/* The object with ETag etag was removed from key by this process (a copy
 * or an upload undone): key's row goes if it is bound to that object, so a
 * later object with the same content there inherits nothing. Logged
 * ('drop') with who. 0 or -errno. */
int db_attrs_drop_bound(struct db *d, const char *bucket, const char *key,
			const char *etag, const struct actor *who);

/* Before a mount uploads key: with check, the upload replaces the object
 * with ETag replaced_etag (NULL or "": none is there now) and a row bound
 * to another object is stale and goes (what was shown with the defaults
 * keeps them); the row left is unbound (it applies to whatever is at key)
 * until db_attrs_bind. One transaction. 0 or -errno. */
int db_attrs_prepare(struct db *d, const char *bucket, const char *key,
		     int check, const char *replaced_etag);
/* After a mount's upload of key (ETag etag) is recorded, or a copy of an
 * object (ETag old, NULL when not known) landed at key: an unbound row,
 * or one bound to old, is bound to etag. 0 or -errno. */
int db_attrs_bind(struct db *d, const char *bucket, const char *key,
		  const char *etag, const char *old);

/* What db_attrs_bind_claim did. */
enum {
	DB_BIND_MINE,  /* the file's claim was bound */
	DB_BIND_TAKEN, /* the row became the file's again (its claim gone) */
	DB_BIND_STALE  /* nothing: etag is not key's live object any more
			  (or the row was already bound to it) */
};

/* After a mount's upload of a new file at key (ETag etag) is recorded:
 * the row of that file's claim (claimer: its token), still unbound, is
 * bound to etag and the claim ends, its fields as they are (set on the
 * file meanwhile). When the row is not that claim any more (it lapsed and
 * another create took the name, or it went), and etag is still key's live
 * object (its live reception row's, read under the reception key lock),
 * the object is that file's content (the last writer's, SPEC §2): the row
 * becomes that file's again (mode, uid, gid of *a, and its times when
 * a->what has DB_ATTR_ATIME / DB_ATTR_MTIME; logged 'create' with who),
 * bound to etag, never another create's attributes on it. A row of a newer
 * object (etag not live any more) is never touched. *taken (may be NULL):
 * DB_BIND_*. One transaction. 0 or -errno (nothing changed; -EINPROGRESS:
 * the connection was lost at COMMIT). */
int db_attrs_bind_claim(struct db *d, const char *bucket, const char *key,
			const char *etag, const char *claimer,
			const struct db_attrs *a, const struct actor *who,
			int *taken);

/* After a mount's upload of a file published from `from` (a rename of a
 * file never stored under that name) to `to` (ETag etag) is recorded:
 * while etag is to's live object (its live reception row's, read under the
 * reception key lock; *live 1), to's row is replaced by from's, bound to
 * etag, its claim ended (logged 'move', from_key from), and from's goes;
 * else (a newer object is there) to's row stays and from's goes (logged
 * 'drop'). Only a row of from that is the publisher's moves or goes:
 * claimer (NULL: none, any row) is the published file's claim token, and
 * a row under from that is not that claim, unbound (another file took the
 * name), stays; to's row then becomes *attrs (mode, uid, gid, and the
 * times a->what names: the file's own, NULL: nothing done) bound to etag
 * (logged 'move'), unless it is bound to etag already. Until then to's
 * row describes to's earlier object, whatever happens to the upload (a
 * crash, a failure). One transaction. 0 or -errno (nothing changed;
 * -EINPROGRESS: the connection was lost at COMMIT). pending (NULL: none): the
 * token of the pending row db_attrs_pend_publish recorded for it, which
 * goes in the same transaction. */
int db_attrs_publish(struct db *d, const char *bucket, const char *from,
		     const char *to, const char *etag, const char *claimer,
		     const char *pending, const struct db_attrs *attrs,
		     const struct actor *who, int *live);

/* Before a mount uploads a file published from `from` to `to` (E1): the
 * attributes its object will have at `to` are recorded first, as the
 * pending row (token: the publish's, unique; held lease_s seconds) of
 * `to`, unbound: from's row while it is the publisher's (claimer, as
 * db_attrs_publish says), else *attrs (NULL: none recorded). While the
 * upload's object matches no committed row of `to` (in flight, or a crash
 * before its rows moved), it is shown with these (db_attrs_get_pending),
 * never with to's old row or the defaults. db_attrs_publish (pending:
 * token) drops it with the rows it commits; db_attrs_unpend after a failed
 * upload. Its upload is in flight (upload_state 'upload'): an unlink of
 * `to` marks it, never drops it (db_attrs_defer_unlink, review n19 Y2).
 * 0 or -errno. */
int db_attrs_pend_publish(struct db *d, const char *bucket, const char *from,
			  const char *to, const char *token, int lease_s,
			  const char *claimer, const struct db_attrs *attrs,
			  const struct actor *who);
/* An open file (a new file's claim at `from`: claimer; NULL: a file
 * stored before, review-h5 N6) is renamed over `to`, which holds another
 * object, and its writer's close uploads it there (review-hide H5): until
 * that upload is recorded, to's row stays to's object's, whatever happens
 * (a crash, a failure). In one transaction, under to's name lock
 * (db_attrs_claim): another mount's live claim at `to` (db_set_claimer)
 * fails it (-EBUSY, nothing changed); else from's row while it is that
 * claim (else *attrs: the file's own) becomes the pending row (token;
 * held lease_s seconds, db_attrs_defer_renew) of `to`, unbound, as
 * db_attrs_pend_publish's, and from's claim goes (not logged: the
 * publish's 'move' from `from` records the rename), so that `from` is
 * free at once. Without a claimer *attrs (required) is the file's own
 * mode and owner, as it holds them, used when it has no own row at from:
 * a row bound to own1 or own2 (the ETags of the objects it was loaded
 * from or stored, NULL: none) whose owner is attrs->uid (or unset). Its
 * own row's current mode and owner win (they hold every mount's changes
 * since its open: review-34 Z5), its times where *attrs sets none; that
 * row alone goes, logged 'drop'. Any other row at from (another file's:
 * another mount's claim of the name since, review n17 X2, or another
 * owner's file with the same content, review-34 Z3) is neither read nor
 * touched.
 * *got (may be NULL; without a claimer): the attributes recorded. The close
 * commits it as a publish from `from` (db_attrs_publish, pending: token).
 * Nothing is shown for it elsewhere while to's row describes to's object
 * (db_attrs_get_pending is read only for an object no committed row
 * describes). 0 or -errno. */
int db_attrs_defer(struct db *d, const char *bucket, const char *from,
		   const char *to, const char *token, int lease_s,
		   const char *claimer, const char *own1, const char *own2,
		   const struct db_attrs *attrs, const struct actor *who,
		   struct db_attrs *got);
/* A change (a->what: DB_ATTR_MODE, DB_ATTR_OWNER, DB_ATTR_ATIME,
 * DB_ATTR_MTIME; the values the file has after it, uid and gid >= 0)
 * made to the open file of a deferred publish (db_attrs_defer) at key:
 * its pending row (token) takes it, and it is logged (op, NULL: not) at
 * key with who, on no object (etag NULL), in one transaction. The caller
 * checked who may (the file's attributes are its own until the close). 0
 * or -errno. */
int db_attrs_defer_set(struct db *d, const char *bucket, const char *key,
		       const char *token, const struct db_attrs *a,
		       const char *op, const struct actor *who);
/* The pending rows of these deferred publishes (tokens[0..n-1]) hold
 * lease_s seconds from now (their files are still open). 0 or -errno. */
int db_attrs_defer_renew(struct db *d, const char *bucket,
			 const char *const *tokens, size_t n, int lease_s);
/* The open file of a deferred publish is renamed from key to `to`: its
 * pending row (token) follows. 0 or -errno. */
int db_attrs_defer_move(struct db *d, const char *bucket, const char *key,
			const char *to, const char *token);
/* A deferred publish ends without an upload (its rename failed, or the
 * file got a temp name): its pending row at key (token) becomes the claim
 * (claimer, lease_s seconds, unbound; NULL: a file stored before, an
 * unbound row with no claim) of its file at `to`, to's own row going, in
 * one transaction; logged ('move', from_key: the name it was
 * published from) when log is set. Another mount's live claim at `to`:
 * -EBUSY, nothing changed. No pending row (it lapsed and went): 0,
 * nothing done. 0 or -errno. */
int db_attrs_defer_undo(struct db *d, const char *bucket, const char *key,
			const char *token, const char *to, const char *claimer,
			int lease_s, int log, const struct actor *who);

/* Who may remove a file at a key (an unlink's permission, judged as the
 * daemon knows the directory: db_attrs_defer_unlink). */
struct db_unlink_perm {
	int any;	 /* any file: root, or no permission checks */
	int sticky;	 /* the key's directory is sticky (S_ISVTX) */
	int64_t dir_uid; /* the directory's owner */
	int64_t def_uid; /* the owner of a file whose row sets none */
};
/* An unlink of key by who (review-h5 N1, POSIX): key is also the name of
 * any open file whose publish is deferred there (its live pending row,
 * db_attrs_defer; or a publish's upload in flight), so that file is
 * unlinked too when who may remove it: perm->any, who->uid 0, a directory
 * not sticky, who its owner (perm->dir_uid), or who the file's owner (the
 * pending row's uid, perm->def_uid where it sets none). In one
 * transaction, under key's name lock (db_attrs_defer takes it too): those
 * pending rows go, each logged ('drop', no ETag) with who (*dropped, may
 * be NULL); those of files who may not remove stay (*kept: the live
 * pending rows left at key, may be NULL; a create there still fails).
 * Their files' closes then store nothing (db_attrs_defer_has). A row whose
 * upload is in flight (upload_state 'upload': a deferred publish's close
 * past db_attrs_defer_has, a publish's db_attrs_pend_publish; review n19)
 * is not dropped but marked 'unlinked' (logged the same, counted in
 * *dropped): it holds the name until that upload's record refuses it
 * (db_reception_record_guarded: its object deleted while it is still that
 * upload, logged removed, the close or rename ENOENT), so no other file
 * is stored there meanwhile for that upload to replace. 0 or -errno. */
int db_attrs_defer_unlink(struct db *d, const char *bucket, const char *key,
			  const struct db_unlink_perm *perm,
			  const struct actor *who, int *dropped, int *kept);
/* Is the pending row of a deferred publish (token, unbound, at any key)
 * still there? 1 (its upload is in flight from now on: an unlink marks it,
 * never drops it, review n19 Y1), 0 (it went: its file was unlinked on
 * another mount, db_attrs_defer_unlink, or it lapsed and was cleared; one
 * marked unlinked during an earlier upload goes now), or -errno. Read
 * before the close's upload: a file whose row went stores nothing. */
int db_attrs_defer_has(struct db *d, const char *bucket, const char *token);

/* A publish whose rows never moved (a crash after its upload's reception
 * row committed): while etag is key's live object (read under the
 * reception key lock) and a mount's upload of it was recorded after a
 * pending row of a publish (db_attrs_pend_publish) whose lease is over,
 * that row becomes key's, bound to etag (logged 'move' with who), so the
 * object ends with its writer's attributes, never the defaults; the
 * other stale ones go. A row tied to its uploads' tags only when tag (the
 * UPLOAD_TAG etag's object carries; NULL or "": none known) is one of
 * them (review-h5 N2). *settled (may be NULL): 1 when a row was written.
 * One transaction. 0 or -errno. */
int db_attrs_settle_pending(struct db *d, const char *bucket, const char *key,
			    const char *etag, const char *tag,
			    const struct actor *who, int *settled);

/* The pending rows of bucket's publishes (db_attrs_pend_publish,
 * db_attrs_defer, which take their process's liveness lock first,
 * db_set_claimer) whose upload can never be recorded any more go: those
 * of a process that is gone (a crash: its liveness lock free, its
 * heartbeat stale, LIVE_GONE), and those whose lease is over with
 * another object, or a removed one, the first recorded at their key since
 * them (review-h5 N7); never one whose upload may have been recorded (the
 * first object since it still live: db_attrs_settle_pending's).
 * A lapsed one is never shown meanwhile (db_attrs_get_pending). Each one
 * dropped is logged as op 'pending drop' (not a 'drop': a pending row is
 * no key's attributes), by "custodyfs sweep of" its claimer, the sweeping
 * host (review-37 F7). The number dropped, or -errno. */
long db_attrs_sweep_pending(struct db *d, const char *bucket);

/* The binding of a mount's upload's attributes row, run in the transaction
 * of its reception row (db_record_guard.bind) once that row is recorded
 * there as key's live row (under the reception key lock, so etag is key's
 * live object: D8's check holds by construction): with from, the publish
 * (db_attrs_publish's statements, logged with who; claimer the
 * publisher's token; when from's row is not its own, only with attrs: to's
 * row becomes them); else with claimer,
 * the bind of a new file's claim while it is still that claimer's
 * (db_attrs_bind_claim's first statement; its take path, which logs first
 * and holds no lock meanwhile, is not run there); else db_attrs_bind's
 * (old NULL). Only when none of the rows it writes is locked by another
 * transaction (FOR UPDATE SKIP LOCKED: it never waits on one); otherwise,
 * or for a claim not that claimer's any more, nothing is run and done
 * stays 0: the caller binds separately afterwards (db_attrs_bind,
 * db_attrs_bind_claim, db_attrs_publish). A statement of it that fails
 * fails the row's transaction: the row is not committed either (the close
 * fails and its upload is undone, as for any failed row). done (output):
 * 1 when it was bound in the transaction that committed the row. */
struct db_attrs_binding {
	const char *claimer;
	const char *from;
	const char *pending; /* with from: its pending row's token (or NULL) */
	/* with from: the file's own attributes, which to's row takes in the
	 * row's transaction when from's row is not its own (a publish
	 * deferred to its close, db_attrs_defer); NULL: left to the caller */
	const struct db_attrs *attrs;
	const struct actor *who;
	int done;
};

/* A claim on a name (migration 11): the row of a mount's new file, from
 * its create until its upload is recorded (db_attrs_bind ends it), names
 * the mount (claimed_by) and holds until claim_until, renewed by that mount
 * while the file is open there; then it lapses. */
struct db_claim {
	int found;    /* a row is there */
	int live;     /* it is a claim that holds now */
	int has_mode; /* mode set */
	int has_owner;
	uint32_t mode;
	int64_t uid, gid;
	char *holder; /* claimed_by (malloc'd), or NULL */
	char *etag;   /* the object it is bound to (malloc'd), or NULL */
	int pending;  /* a live pending row (an open file that lands at the
			 key at its close, db_attrs_defer), not a claim */
};

/* A new file at key: its row (mode, uid, gid of *a; times not set;
 * unbound) is inserted as claimer's claim for lease_s seconds, and logged
 * ('create') with who, when key has no row; an existing row is taken over
 * (reset as DB_ATTR_RESET does) only when it is no live claim and take is
 * set, or when it is from's live claim (from NULL: none). A live unbound
 * pending row at key (an open file's deferred publish, db_attrs_defer,
 * renewed while it is open; or a publish's upload in flight) takes the
 * name as a live claim does: -EEXIST, *held live, its holder that row's
 * token (review-h5 N1); checked under a lock of the name db_attrs_defer
 * takes too, so of a create and a deferral racing on key exactly one
 * wins. One statement: of creates racing on a name, exactly one takes
 * it. 0 (*ctime_ns, may be
 * NULL, the row's status-change time), -EEXIST: not taken, *held the row
 * there (free with db_claim_free; found 0: it went meanwhile), or -errno
 * (nothing changed; -EINPROGRESS: the connection was lost at COMMIT). */
int db_attrs_claim(struct db *d, const char *bucket, const char *key,
		   const struct db_attrs *a, const char *claimer, int lease_s,
		   int take, const char *from, const struct actor *who,
		   int64_t *ctime_ns, struct db_claim *held);
/* db_attrs_claim with a gate (NULL: none): once the name is taken, in its
 * transaction, before the COMMIT, gate(gate_arg) runs (again if the
 * transaction is run again); a nonzero return rolls the claim back
 * (nothing of it committed nor logged) and is returned. */
int db_attrs_claim_gated(struct db *d, const char *bucket, const char *key,
			 const struct db_attrs *a, const char *claimer,
			 int lease_s, int take, const char *from,
			 const struct actor *who, int64_t *ctime_ns,
			 struct db_claim *held, int (*gate)(void *),
			 void *gate_arg);
/* An open file renamed to a free name `to` that its writer will store
 * there claims it, in one transaction. A row at `to` that is a live claim
 * (another create's file; or a live pending row there, as db_attrs_claim
 * says), or any row when take is not set, is not taken:
 * -EEXIST, *held that row (found 0: none; free it with db_claim_free).
 * With take, *held is read first (then freed): the row an earlier call
 * gave back, the only one taken (the caller found nothing stored there
 * after seeing it); another there now is -EEXIST as well. Else
 * it goes (logged 'drop'), and from's row, if it is no live claim and is
 * bound to own1 or own2 (the file's own objects: not a row another mount's
 * create took since), moves to `to` (logged 'move', from_key from, its
 * times kept) as claimer's claim for lease_s seconds, unbound (renewed and
 * bound as db_attrs_claim's); otherwise `to` is claimed with *a's mode and
 * owner (logged 'create'). *out (the caller's) gets the claim's attributes
 * (what: those set). 0, -EEXIST, or -errno (nothing changed;
 * -EINPROGRESS: the connection was lost at COMMIT). */
int db_attrs_move_claim(struct db *d, const char *bucket, const char *from,
			const char *to, const char *own1, const char *own2,
			const struct db_attrs *a, const char *claimer,
			int lease_s, int take, const struct actor *who,
			struct db_attrs *out, struct db_claim *held);
void db_claim_free(struct db_claim *held);
/* key's row as db_attrs_claim reports it when not taken (*held: found 0
 * when there is none), read now. 0 or -errno. */
int db_attrs_claim_get(struct db *d, const char *bucket, const char *key,
		       struct db_claim *held);
/* A new file that never reached the store is gone (its last handle
 * closed): key's row goes (logged 'drop' with who) while it is still
 * unbound and claimer's claim, never another's or a bound one. 0 or
 * -errno. */
int db_attrs_unclaim(struct db *d, const char *bucket, const char *key,
		     const char *claimer, const struct actor *who);
/* The claims of a mount on keys[0..n-1] (those still unbound and its:
 * claimed_by is claimer + "#" + a per-file number) hold lease_s seconds
 * from now. 0 or -errno. */
int db_attrs_renew(struct db *d, const char *bucket, const char *claimer,
		   const char *const *keys, size_t n, int lease_s);

/* Files received through a mount (a live reception_audit row of origin
 * 'mount' naming received_uid) that have no row in bucket (a database
 * from before migration 5, where ownership was not kept) get one: owner
 * received_uid, group gid (the caller's configured group: the audit does
 * not record the writer's), mode and times not set. Rows that exist are
 * never touched. *n (may be NULL): rows added. 0 or -errno. */
int db_attrs_backfill(struct db *d, const char *bucket, int64_t gid, long *n);
#endif
