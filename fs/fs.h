/* fs.h - state of the custodyfs FUSE daemon, shared by the fs/ files.
 *
 * The daemon maps paths to the custody pipeline in common/: inbox/ is the
 * reception bucket (reception.h, upload.h), projects/ and audit/ are views.
 * Handlers return 0 or -errno, as libfuse expects. */
#ifndef CUSTODYFS_FS_H
#define CUSTODYFS_FS_H

#define FUSE_USE_VERSION 314

#include <fuse.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "cfg.h"
#include "db.h"
#include "db_attrs.h"
#include "dset.h"
#include "promote.h"
#include "rawin.h"
#include "reception.h"
#include "s3.h"
#include "upload.h"

enum cfs_area { AREA_NONE, AREA_ROOT, AREA_INBOX, AREA_PROJECTS, AREA_AUDIT };

/* Attributes set with chmod/chown/utimens, kept for the view (attrs.c). */
/* A stored object as a check saw it (its HEAD): its ETag, the value of its
 * UPLOAD_TAG ("" when it carries none), its time. etag "": nothing seen. */
struct seen_obj {
	char etag[80];
	char tag[64];
	time_t mtime; /* its LastModified */
};

struct attrov {
	char *rel;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec atime, mtime;
	struct timespec ctime; /* the last status change recorded */
	char *etag;  /* the object the row describes (NULL: not bound yet) */
	char *miss;  /* an ETag found not to be etag since the row's read */
	char *alias; /* another ETag the store gives etag's object (a listing
			may not show the ETag HEAD and the copy gave) */
	unsigned has_mode : 1, has_owner : 1, has_atime : 1, has_mtime : 1,
	    has_ctime : 1;
};

#define OFILE_WRITER_IDS 4
#define OFILE_WRITER_GROUPS 64

/* A file of inbox/ open for writing, or a local temporary file, or an open
 * file that was unlinked (hidden).
 *
 * Invariant: an ofile is local (never uploaded) iff its current name is a
 * temp name or a hidden name. A hidden ofile was unlinked (or renamed over)
 * while open: libfuse (hard_remove=0) renamed it to ".fuse_hidden…" in the
 * same directory; it is never listed, uploaded or logged, and is freed with
 * its last handle. */
struct ofile {
	char *rel;    /* protected by cfs.lock: key in the reception bucket */
	int refs;     /* protected by cfs.lock: open handles */
	int unlinked; /* protected by cfs.lock: no longer found by name */
	int hidden;   /* protected by cfs.lock: unlinked while open */
	char *node_name;      /* protected by cfs.lock: the name libfuse's node
				 for it still has when that is not rel (the
				 hidden name a failed rename over it left: the
				 high-level API, review-hide H7), else NULL */
	pthread_mutex_t lock; /* serialises data operations on this file */
	int fd;		      /* protected by lock: the spool (O_TMPFILE) */
	char loaded[80];      /* protected by lock: which stored file this
				 is: the ETag of the object its spool was
				 filled from (ofile_load) or that a
				 truncating open checked; OFILE_NEW for a
				 file created here; "" not known */
	char base_tag[64];    /* protected by lock: the UPLOAD_TAG of the
				 object its content is based on (the one
				 loaded or truncated, or its own last
				 upload), "" when it carries none */
	int base_known;	      /* protected by lock: base_tag (and loaded
				 or committed) name that object: its
				 commit replaces another only if its
				 writers may (ofile_writer_may_replace;
				 review-t4c F2, T10) */
	/* Each user (not root) that opened it for writing or truncated it
	 * by path, with the groups of that request: whose bytes it may
	 * hold, so whose rights its commit over another object needs (a
	 * write request's uid is no writer's: the kernel sends a shared
	 * mapping's writeback as root). */
	struct ofile_writer_id {
		uid_t uid;
		int ngroups;
		gid_t groups[OFILE_WRITER_GROUPS];
	} wids[OFILE_WRITER_IDS]; /* protected by lock */
	int nwids;		  /* protected by lock */
	int wids_over;		  /* protected by lock: more users than
				     OFILE_WRITER_IDS */
	char committed[80];	  /* protected by lock: the ETag of its last
				     upload recorded here, or of the copy a
				     rename here made of it (ofile_copied), or
				     "" */
	int ready;	       /* protected by lock: the spool holds the file */
	int writers;	       /* protected by lock: handles open for writing */
	int failed;	       /* protected by lock: -errno of a failed load */
	uint64_t size;	       /* protected by lock */
	int dirty;	       /* protected by lock: spool differs from store */
	int local;	       /* protected by lock: never uploaded */
	int in_store;	       /* protected by lock: an object exists for rel */
	uint64_t stored_size;  /* protected by lock: its size, when in_store */
	int attrs_unbound;     /* protected by lock and cfs.lock (set under
				  both, read under either): its attributes row
				  is this mount's claim on the name, created
				  unbound by its create (attrov_claim), and
				  nothing is stored yet */
	char *claim;	       /* protected by cfs.lock: its claim's token
				  (file_attrs.claimed_by: claimer "#" n, one
				  per create), or NULL */
	struct attrov creator; /* set under lock at create, before
				  attrs_unbound; then changed (chmod, chown,
				  utimens: ofile_note_attrs) and read under
				  cfs.lock: its mode, owner and times as they
				  are now (with claim), the row its content
				  gets if the claim was taken meanwhile */
	/* The owner and mode of the object its spool holds, as its first
	 * opener was checked against them (a new file: its creator's); then
	 * changed only by a chmod/chown made through this mount by their
	 * owner or root (ofile_note_attrs): a change of the name's row by
	 * another user may be another object's, and narrows what an opener
	 * may do through the row check, never widens it for this spool. The
	 * name's row
	 * may describe another object since (another mount renamed one
	 * over it, maybe with the same bytes): an open of the name while it
	 * is open here must be allowed by these and by the name's
	 * attributes now (ofile_may_open; review-T T4, review-t4c F2). */
	int held_set;	  /* protected by cfs.lock: the three below are */
	uid_t held_uid;	  /* protected by cfs.lock */
	gid_t held_gid;	  /* protected by cfs.lock */
	mode_t held_mode; /* protected by cfs.lock: permission bits */
	/* A publish deferred to its writer's close (rename_pending over a
	 * stored object, review-hide H5): its attributes are its pending
	 * row at rel (db_attrs_defer) and creator, never rel's row, which
	 * describes rel's object until the upload is recorded there. */
	char *pub_from;	       /* protected by lock and cfs.lock (set under
				  both, read under either): the name its row was
				  published from, or NULL: none deferred */
	char *pub_pending;     /* protected as pub_from: its pending row's
				  token (with pub_from) */
	int pending;	       /* protected by lock: handles whose close will
				  commit what they changed (fhandle.pending) */
	struct upload *up;     /* protected by lock; NULL while local */
	struct timespec mtime; /* protected by lock */
	int64_t based_ms;      /* protected by lock: CLOCK_MONOTONIC ms when its
				  content was last based on the store (created,
				  opened, published or committed): a removal of
				  the key by a mount since wins over its commit */
	uid_t writer;	       /* protected by lock: who last changed it */
	int has_writer;	       /* protected by lock: writer is set */
	/* A direct write into a project (ops_direct.c): the file lives in
	 * reception under DIRECT_STAGING/<host>.<pid>/<direct_to> and each
	 * commit there is
	 * followed by its promotion to projects/<direct_to>. */
	char *direct_to;    /* protected by lock; NULL: an inbox/ file */
	int direct_hold;    /* protected by lock: an rsync temp name, never
			       promoted under it (direct_rename does) */
	int direct_pending; /* protected by lock: committed to reception,
			       not promoted yet */
	struct ofile *next; /* protected by cfs.lock */
};

/* of->loaded of a file created here: matches no ETag (a reader opened on
 * an older object under that name is not one of its readers). */
#define OFILE_NEW "(new)"

/* Per open handle (fi->fh). */
struct fhandle {
	struct ofile *of; /* set at open, never changes; NULL: read-only
			     handle on a stored object */
	enum cfs_area area;
	/* Only a handle that changed the file commits it (flush/fsync). */
	int modified; /* protected by of->lock: created, truncated or
			 written through this handle */
	int wrote;    /* protected by of->lock: data written through it */
	int pending;  /* protected by of->lock: changed through it since its
			 last closing flush (or committing fsync): its close
			 commits; counted in of->pending */
	int writable; /* opened for writing: counted in of->writers */
	pid_t opener; /* the thread that opened it (FUSE context), or 0 */
	uint64_t opened_ns; /* ctr_now_ns() at its create or open: the
			       HIST_FILE_OPEN of a writable one */
	int deferred;	    /* protected by of->lock: a flush left the commit to
			       another descriptor of the closing process */
	/* Read-only handles on a stored object (of == NULL): */
	char *rel;	       /* protected by cfs.lock: key read from; follows
				  renames of the object */
	uint64_t size;	       /* object size at open */
	char etag[80];	       /* protected by its lock and cfs.lock (both
				  to write, either to read; no lock before it
				  is on `readers`): the object whose
				  attributes the open was checked against
				  ("": not known); reads are pinned to it */
	char copied[80];       /* protected by cfs.lock: the ETag of the copy
				  this mount renamed its object to (the same
				  content), or "" */
	int stale;	       /* protected by cfs.lock: its object left the
				  store while another was at its key (spool
				  holds that other): reads fail with ESTALE
				  (readers_attach) */
	struct ofile *spool;   /* protected by cfs.lock: the file was unlinked
				  while open; its content, read from here */
	struct fhandle *rnext; /* protected by cfs.lock: list of them */
	/* Every handle of inbox/ (and direct writes), for fh_free_all. */
	struct fhandle *anext, *aprev; /* protected by cfs.lock */
	pthread_mutex_t lock;	       /* read-ahead window */
	struct rawin win;	       /* protected by lock */
};

struct cfs {
	struct cfg cfg;
	struct s3_client *s3;
	struct db *db;
	struct upload_pool *pool;
	struct reception *rcp;
	struct promote *promote;	 /* NULL until the workers start */
	struct chain_anchorer *anchorer; /* NULL: none ([fs]
					    chain_anchor_interval 0) */
	char host[256];
	uid_t uid; /* the daemon's: owner of the root and inbox/ */
	gid_t gid;
	uid_t foreign_uid; /* owner of what no mount created ([fs]) */
	gid_t foreign_gid;
	time_t started;
	int perm_checks; /* default_permissions in effect: the kernel checks
			    permissions, and the daemon what it cannot */

	/* Protects ofiles, and the attribute overrides of attrs.c. Taken
	 * after dircache.c's own lock, never before it. */
	pthread_mutex_t lock;
	struct ofile *ofiles; /* protected by lock */

	/* The mount point, absolute and resolved (realpath), set before the
	 * FUSE loop starts and never changed. */
	char *mountpoint;

	/* The FUSE session, set before the loop starts: its exit flag tells
	 * that a stop (SIGTERM, SIGINT, SIGHUP) was asked for. */
	struct fuse_session *se;
	/* This mount's name on its claims (file_attrs.claimed_by): host,
	 * pid and start time, set before the FUSE loop starts. */
	char claimer[320];
	int64_t stop_seen_ms; /* protected by lock: when cfs_stop_due first
				 saw the stop (CLOCK_MONOTONIC), 0 before */
};

/* The daemon's state, set before the FUSE loop starts. */
extern struct cfs *cfs;

/* Splits a FUSE path: returns the area and sets *rel to the part after
 * "/inbox/" etc. ("" for the area's own directory). */
enum cfs_area cfs_area_of(const char *path, const char **rel);
/* The caller of the current FUSE request. */
void cfs_actor(struct actor *a);
/* Is the caller ctx of the current request in group gid (its own or a
 * supplementary one)? */
int cfs_caller_in_group(const struct fuse_context *ctx, gid_t gid);

/* The caller of the request this thread serves (uid, gid, pid, umask), or
 * NULL outside a request: libfuse's fuse_get_context() with the high-level
 * API, the low-level request's fuse_req_ctx() with -o lowlevel (ll.c). */
struct fuse_context *cfs_context(void);

/* The supplementary groups of that caller, as fuse_getgroups(): their
 * number (up to size in list), or -errno (-EINVAL outside a request). */
int cfs_getgroups(int size, gid_t list[]);

/* Has the mount been asked to stop more than [fs] stop_timeout seconds
 * ago (counted from the first call that saw the stop)? Work in flight is
 * finished; what has not started by then is not started (directory
 * promotions: the remaining files stay in inbox/). 1 or 0; any thread. */
int cfs_stop_due(void);

/* Fills *st for a read-only (0444) regular file of size bytes owned by the
 * daemon's uid/gid, with all three times *when (the mount's start time
 * when when is NULL or zero). */
void cfs_ro_file_stat(struct stat *st, uint64_t size,
		      const struct timespec *when);
/* The actor for user uid on this host. */
void cfs_actor_uid(struct actor *a, uid_t uid);

/* dircache.c - listings of a bucket, with a TTL. Callers hold no lock
 * (dircache.c has its own; see struct cfs for the order). The functions
 * without a namespace argument are inbox/'s (DC_INBOX). */
enum dc_ns {
	DC_INBOX, /* the reception bucket; listings log foreign uploads */
	DC_STORE  /* the storage bucket (projects/); nothing is logged */
};
/* dcache_lookup in the listings of `which`. */
int dcache_lookup_in(enum dc_ns which, const char *rel, struct dentry *e);
/* Looks up rel ("a/b.txt"): 0 with *e filled (name not set), or -ENOENT,
 * or -errno when the store cannot be listed. */
int dcache_lookup(const char *rel, struct dentry *e);
/* Fresh listing of directory rel ("" = inbox root) passed to fn, one call
 * per entry, under dircache.c's lock (fn must not call dcache_*). A
 * listing already being fetched by another thread is shared, not fetched
 * again. 0 or -errno (EIO, ENOMEM, ...). */
int dcache_list(const char *rel, void (*fn)(void *arg, const struct dentry *e),
		void *arg);
/* A listing seen from dcache_list_ex's done callback. */
struct dcache_view;
/* 1 when name is an entry of the listing, else 0: O(1). */
int dcache_view_has(const struct dcache_view *v, const char *name);
/* dcache_list, then done(arg, view) still under the same lock hold, so
 * what done adds (open files not yet stored) can be merged with the
 * listing without copying its names: done may take cfs->lock, and must
 * not call dcache_*. */
int dcache_list_ex(const char *rel,
		   void (*fn)(void *arg, const struct dentry *e),
		   void (*done)(void *arg, const struct dcache_view *v),
		   void *arg);
/* dcache_list_ex in the listings of `which`. */
int dcache_list_in(enum dc_ns which, const char *rel,
		   void (*fn)(void *arg, const struct dentry *e),
		   void (*done)(void *arg, const struct dcache_view *v),
		   void *arg);
void dcache_upsert(const char *rel, int is_dir, uint64_t size, time_t mtime,
		   const char *etag);
/* dcache_upsert in the listings of `which`: the daemon's own change, put
 * into the cached listing of rel's directory (and into a fetch of it under
 * way) instead of listing it again. Nothing when that listing is not
 * cached. */
void dcache_upsert_in(enum dc_ns which, const char *rel, int is_dir,
		      uint64_t size, time_t mtime, const char *etag);
void dcache_remove(const char *rel);
void dcache_invalidate_all(void);
/* Every listing of `which` is fetched again at its next use (a fetch under
 * way is not trusted): after a change made by another path, such as a
 * promotion into the storage bucket. */
void dcache_invalidate_in(enum dc_ns which);
/* At unmount, after the FUSE loop has ended: no new background refresh
 * starts, and the running ones (which stop between LIST pages) are waited
 * for up to timeout_ms. Returns how many still run: their threads may
 * still use cfs->s3 and cfs->cfg, which must then not be freed (they touch
 * nothing else: not the listings, not cfs->rcp). */
int dcache_shutdown(int timeout_ms);
/* Frees every listing. After dcache_shutdown. */
void dcache_free_all(void);

/* ofile.c - open files and spools. Caller holds no lock unless said. */
/* Is rel's basename a name libfuse gives an open file it hides on unlink
 * (".fuse_hidden…")? Such names are never listed, uploaded or logged. */
int ofile_is_hidden_name(const char *rel);
struct ofile *ofile_find(const char *rel); /* takes a reference */
/* A new ofile for rel (or the one already open under rel, shared), with a
 * reference for the caller, returned with of->lock held (a new one is not
 * ready: the caller fills it, or truncates it, before unlocking).
 * *err = -errno on failure. */
struct ofile *ofile_create(const char *rel, int local, int *err);
/* Drops a reference. The last one of a new file that never reached the
 * store (not local, not unlinked) drops its claim on the name too
 * (attrov_unclaim). */
void ofile_put(struct ofile *of);
/* The thread renewing this mount's claims on the names of its new files
 * not stored yet (attrs_unbound), every quarter of [fs] claim_lease, so a
 * file open longer than the lease is never taken over; and the thread
 * retrying the binds queued when the database failed them (apart: a slow
 * retry never delays a renewal). Start: 0 or -errno (none runs then: a
 * claim open longer lapses); stop: joins them, tries the queued binds a
 * last time. */
int ofile_claims_start(void);
void ofile_claims_stop(void);
/* Fills the spool from the stored object key; only from the object of ETag
 * etag when etag is not NULL (-EEXIST: another object is there now).
 * Caller holds of->lock. On failure the ofile is marked failed (every
 * handle sharing it gets the error) and no longer found by name. */
int ofile_load(struct ofile *of, const char *key, const char *etag);
/* Caller holds of->lock: upload + log if dirty; -errno. leaving: writable
 * handles of of that go away with this commit (1 for the closing flush or
 * the release of a writable handle, else 0). When another upload replaced
 * the object before the row went in (reception_commit's superseded), 0 is
 * returned and the file shows the store's object from then on: it is clean,
 * and forgets its name unless a writable handle stays open. */
int ofile_commit(struct ofile *of, int leaving);
/* Caller holds of->lock: hands the file's object metadata as it is now
 * (mode, uid, gid, mtime) to its upload, for a multipart upload the
 * stream is about to create (upload_set_meta). */
void ofile_stream_meta(struct ofile *of);
/* Caller holds of->lock. A file no open handle will commit, local or
 * never stored, gets the final name `to`: uploaded and logged under `to`
 * (replaces: an object exists there, overwritten), and only then renamed;
 * its attributes row follows it there once its upload is recorded
 * (attrov_publish: to's own describes to's object until then, whatever
 * happens to the upload). On failure nothing changed: it keeps its name
 * (a local one stays local). 0 or -errno. */
int ofile_publish(struct ofile *of, const char *to, int replaces);
/* After rel's attributes row was changed (chmod, chown, utimens: r's
 * fields, as stored): a new file of this mount open under rel with its
 * claim keeps them, for its bind (attrov_bind_claim) if the claim is
 * taken meanwhile. */
void ofile_note_attrs(const char *rel, const struct db_attrs *r);
/* The token of the pending row of the deferred publish (fs.h, pub_from)
 * of the open file at rel (malloc'd), and *cur its attributes now; NULL
 * when none. */
char *ofile_deferred(const char *rel, struct attrov *cur);
/* Caller holds of->lock. of has a deferred publish: *st (ofile_stat's)
 * gets its own attributes (creator), never rel's row's. 1 when applied,
 * else 0. */
int ofile_deferred_stat(struct ofile *of, struct stat *st);
/* Caller holds of->lock. Ends of's deferred publish in memory (its
 * pending row is the caller's). */
void ofile_defer_clear(struct ofile *of);
/* Caller holds of->lock. of's deferred publish will never be committed
 * (its file hidden for good): its pending row at key goes (key NULL: it
 * went already); of keeps showing its own attributes (pub_from). */
void ofile_defer_drop(struct ofile *of, const char *key);
/* Caller holds of->lock. Its commit would replace the object at rel
 * that is not the one its content is based on (another mount's, or
 * another client's, since it was opened): may each of its writers
 * (of->wids) write it, as an open for writing with O_TRUNC would be
 * checked: write permission on the row at rel read now (whatever object
 * it was bound to: a foreign upload over the owner's file leaves her row;
 * the defaults where there is none)? Only root writers: yes; nothing is
 * checked without default_permissions. 0, -EACCES, or -errno of the
 * database. */
int ofile_writer_may_replace(struct ofile *of, const char *rel);
/* Caller holds of->lock. The caller of this request (not root) opens of
 * for writing, or truncates it by path: recorded in of->wids with its
 * groups. */
void ofile_note_writer(struct ofile *of);
/* Caller holds of->lock; of was truncated by an open or a truncate(2)
 * that checked the object of ETag etag at rel (from the listing), never
 * loaded: the object there now (HEAD) must be that one, and its UPLOAD_TAG
 * becomes of->base_tag. 0; else of fails (of->failed, unlinked, as a
 * failed load): -EAGAIN when another object is there now (the listing is
 * refreshed; the caller checks again), -ESTALE when none is (the kernel
 * looks the name up again, and creates it), or the HEAD's -errno. */
int ofile_base_head(struct ofile *of, const char *rel, const char *etag);
/* Remembers *st's owner and mode as those of the object of's spool holds
 * (of->held_*), unless an earlier opener set them. Takes cfs.lock. */
void ofile_hold_attrs(struct ofile *of, const struct stat *st);
/* Caller holds of->lock. A file whose commit is left to a handle still
 * open (of->pending), or that is local, takes the name `to` with no store
 * write: its writer's close uploads and logs it there, once (replaces: an
 * object of to_size bytes exists under `to`, which that commit will
 * overwrite; *base, the object the rename's check saw there, becomes the
 * base that commit is checked against; base NULL or its etag "": none
 * known, so any object there at the commit is another's and checked).
 * A final `to` gives a local file an upload; a local file
 * under a final name without a pending writer must go through
 * ofile_publish instead. The caller has dealt with the object stored under
 * the current name, if any (renamed or removed). A local file already
 * named `to` is dropped. 0 or -ENOMEM (nothing changed). */
int ofile_rename_uncommitted(struct ofile *of, const char *to, int replaces,
			     uint64_t to_size, const struct seen_obj *base);
/* Caller holds of->lock. The file stops being uploaded (an upload in
 * flight is aborted): it becomes local. */
void ofile_make_local(struct ofile *of);
int ofile_truncate(struct ofile *of, uint64_t size); /* of->lock held */
/* Caller holds of->lock: the caller of the current FUSE request changed
 * the file (its uid is received_by at the next commit). */
void ofile_set_writer(struct ofile *of);
void ofile_stat(struct ofile *of, struct stat *st); /* of->lock held */
/* A copy of of->rel (read under cfs.lock), or NULL (ENOMEM). */
char *ofile_rel(struct ofile *of);
void ofile_rebase(const char *from, const char *to); /* rename of rel(s) */
/* of (found by ofile_find) now lives under the hidden name `to`. */
void ofile_hide(struct ofile *of, const char *to);
/* Caller holds of->lock. Undoes ofile_hide(of, hidden): of is found under
 * rel again. -EEXIST (another file took rel), -ENOENT (unlinked or
 * renamed since), -ENOMEM: of stays hidden. */
int ofile_unhide(struct ofile *of, const char *hidden, const char *rel);
/* After ofile_unhide (high-level API only: ll.c renames its node back),
 * libfuse's node for of keeps the hidden name `node` until it unlinks it at
 * the last close (review-hide H7): path operations on that name are of's.
 * Without memory nothing is noted (they find nothing, as before). */
void ofile_set_node(struct ofile *of, const char *node);
/* The name (malloc'd) of the open file whose libfuse node has the name
 * `node` (ofile_set_node) and that still has a name, else NULL. */
char *ofile_node_rel(const char *node);
/* libfuse unlinked the hidden name `node` (its node's last close): no
 * open file is reached through it any more. */
void ofile_node_forget(const char *node);
/* rel is replaced by a rename: a local file under that name is dropped.
 * (An open final-named file was hidden by libfuse before.) */
void ofile_drop_name(const char *rel);
/* At unmount: files still open or local are dropped (uploads aborted,
 * nothing logged). */
void ofile_free_all(void);

/* attrs.c - mode, owner and times of inbox/ files (given at create and
 * mkdir, set with chmod/chown/utimens), persisted in PostgreSQL
 * (db_attrs.h) with a per-directory cache refreshed every cache_ttl_ms.
 * Callers hold no lock. */
#define ATTROV_MODE 1
#define ATTROV_OWNER 2 /* uid/gid (uid_t)-1 / (gid_t)-1: keep the row's */
#define ATTROV_ATIME 4
#define ATTROV_MTIME 8
#define ATTROV_RESET 32 /* a new file: rel's earlier attributes go first */
#define ATTROV_DIR 64	/* with RESET: a directory (logged 'mkdir') */
/* with MODE: the kernel's rule clearing setuid/setgid on a write or a
 * truncation by another than root, not a chmod anyone asked for (logged
 * 'kill_priv', the writer as who) */
#define ATTROV_KILLPRIV 128
/* with ATIME/MTIME: both set to now (no explicit time): whoever may write
 * the file may, not only its owner */
#define ATTROV_NOW 256
/* with KILLPRIV: by a writer through a descriptor open for writing (the
 * kernel's rule: whatever the mode says now) */
#define ATTROV_OPENW 512
/* ns since the epoch (as the database keeps times) as a timespec, tv_nsec
 * in [0, 1e9) also for a time before the epoch. */
struct timespec attrs_ns_ts(int64_t ns);
/* Records the fields of in named by what (ATTROV_*) for rel: in the
 * database first (with the caller of the current FUSE request as who;
 * logged in file_attr_changes: 'create'/'mkdir' for a RESET, 'kill_priv'
 * for a KILLPRIV, else chmod/chown/utimens), then in the cache; the
 * status-change time is the database's now(). st is the file's stat as the
 * caller saw it (a directory's or a file's defaults; may be NULL for a
 * file). etag is the ETag of
 * the object changed (NULL: not known, a directory, or a file open here): a row
 * bound to another object is stale, and the change starts from the defaults
 * (db_attrs_set), only when a HEAD (unlocked, sent only then) shows that the
 * store holds etag's object at rel; otherwise -ESTALE (the caller's view is
 * older than the store; rel's listing entry and attributes are read again
 * before they are shown: review-T H-b). The database checks that the caller
 * of the current FUSE request may make the change on the row as it is
 * (db_attrs_may; not for a RESET, nor for root): else -EPERM (-EACCES for a
 * touch, ATTROV_NOW), and rel is read again. A RESET row is unbound until
 * its upload is recorded (attrov_bind). 0 or -errno from the database or
 * the store (EIO when the outcome is unknown; nothing recorded). */
int attrov_set(const char *rel, const struct attrov *in, unsigned what,
	       const struct stat *st, const char *etag);
/* A new file's create: rel's row, with in's mode, uid and gid (times not
 * set), inserted as this mount's claim on the name (db_attrs_claim: one
 * of creates racing on a name from any mount wins; logged 'create'), then
 * cached. take: a row that is no live claim is taken over; from: a live
 * claim of that claimer too. 0, -EEXIST (not taken: *held is the row
 * there, the caller frees it with db_claim_free; found 0: gone meanwhile,
 * try again), or -errno from the database (EIO when the outcome is
 * unknown). gate (NULL: none) runs before the claim's COMMIT
 * (db_attrs_claim_gated): its nonzero return is returned, nothing claimed. */
int attrov_claim(const char *rel, const struct attrov *in, int take,
		 const char *from, const char *token, struct db_claim *held,
		 int (*gate)(void *), void *gate_arg);
/* A new token for a claim of this mount (cfs->claimer "#" n, n unique in
 * the process), malloc'd (NULL: ENOMEM); claim_mine: holder is one. */
char *attrov_claim_token(void);
/* An open file renamed to a free name `to` claims it with its own row
 * (db_attrs_move_claim: from's row, if bound to own1 or own2, the file's
 * objects, moves there, logged 'move', as this mount's claim under token,
 * unbound; else in's mode and owner). A row at `to` is taken only with
 * take (the caller found nothing stored there after seeing it), and only
 * the one seen: *held, as an earlier call gave it back (read, then freed).
 * *out gets
 * the claim's attributes (has_*: those it sets), for the file's bind. 0,
 * -EEXIST (*held: the row not taken; the caller frees it), or -errno
 * (EIO). */
int attrov_move_claim(const char *from, const char *to, const char *own1,
		      const char *own2, const struct attrov *in, int take,
		      const char *token, struct attrov *out,
		      struct db_claim *held);
int attrov_claim_mine(const char *holder);
/* The last handle of a new file that never reached the store closed:
 * rel's row goes while it is still unbound and that file's claim (token:
 * never another create's of the same name, even on this mount)
 * (logged 'drop'), so the name is free again. A failure is logged (the
 * claim then lapses after [fs] claim_lease). */
void attrov_unclaim(const char *rel, const char *token);
/* Applies rel's attributes, if any, to *st: mode, owner, atime and mtime
 * replace st's; ctime is the later of st's (moved by writes and truncates)
 * and the recorded one. Only a row that describes the object shown does:
 * etag is its ETag (NULL or "": not known, a directory or a file open
 * here: any row applies); a row bound to another ETag (the object was
 * removed or replaced by another route) is read again from the database
 * and, still another's, not applied: the object has the defaults. Loads rel's
 * directory from the database when its snapshot is older than the TTL (a stale
 * snapshot is used meanwhile). A name the snapshot does not hold that may be
 * newer than it (a directory, or st_mtime not long before its load) has its own
 * row read now. 0, or -errno (EIO...) when what is needed cannot be read from
 * the database: never the defaults in its place. */
int attrov_apply(const char *rel, struct stat *st, const char *etag);
/* etag (80 bytes), the ETag a listing shows for rel's object: replaced
 * by the one rel's row is bound to when the store gives that object both
 * (struct attrov's alias), so a change is made on the row's object. */
void attrov_bound_etag(const char *rel, char *etag);
/* attrov_apply with rel's row read from the database now (not from a
 * snapshot), for decisions the kernel could not check. 0 or -errno (the
 * database cannot be read: *st unchanged). */
int attrov_apply_fresh(const char *rel, struct stat *st, const char *etag);
/* rename (after the store's): from's attributes become to's; to's own go.
 * With tree set (a directory), those of everything under from/ follow to
 * to/ as well. etag (NULL: unchanged) is to's object's ETag after the
 * move, taken by from's row when unbound or bound to old (the ETag of the
 * object moved, NULL when not known). Logged ('move', 'drop'). One
 * transaction (db_attrs_move): another mount's live claim at `to` while
 * from has a row fails it, nothing moved (EBUSY). A failure is logged
 * and the cache shows the database's state; a caller that moves its
 * file only after this fails its rename then (rename_open), the others
 * let theirs stand. 0 or -errno: EBUSY, EIO, EINPROGRESS (the connection
 * was lost at COMMIT: the outcome unknown), ENOMEM, EINVAL. */
int attrov_move(const char *from, const char *to, int tree, const char *etag,
		const char *old);
/* A rename hides name (open here) as hidden: name's attributes are copied
 * there (db_attrs_copy_hidden); name keeps its own until the rename
 * replaces them. Called before the hide changes anything: a failure
 * (logged) fails the hide, and leaves no copy of this process's there
 * (review-34 Z7). 0, -EBUSY (another process's hide holds the hidden name:
 * it lost the race between libfuse's getattr of the name and this copy;
 * that process's row stays, never shown for this file) or -errno (EIO,
 * ENOMEM, EINVAL). */
int attrov_copy_hidden(const char *name, const char *hidden);
/* At start and then periodically (main.c's sweep thread), after
 * db_set_claimer: drops the rows attrov_copy_hidden's of processes that
 * are gone left (db_attrs_sweep_hidden: lock free, heartbeat stale), each
 * logged as the sweep's. Failures are logged. */
void attrov_sweep_hidden(void);
/* At start and then periodically: the pending rows of publishes whose
 * upload can never be recorded any more (a crash cut them short before
 * it) go (db_attrs_sweep_pending). Failures are logged. */
void attrov_sweep_pending(void);
/* After the unlink of rel (its stored object removed) by who: the open
 * files whose publish is deferred to rel (their live pending rows, on any
 * mount) are unlinked too when who may remove them, judged on each one's
 * owner and rel's directory as this mount knows it (db_attrs_defer_unlink,
 * review-h5 N1); their closes store nothing (attrov_defer_has). Those who
 * may not remove stay (a create at rel still fails). Failures are
 * logged. */
void attrov_unlink_pending(const char *rel, const struct actor *who);
/* Is a deferred publish's pending row (token pending) still there? 1, 0
 * (its file was unlinked: its close stores nothing), or -errno (EIO). */
int attrov_defer_has(const char *pending);
/* The pending row of a publish (token pending; a deferred one's too) is
 * tied to up's next upload (its UPLOAD_TAG, upload_tag): called before
 * each upload_finish, so that row describes the object that upload makes
 * and no other (review-h5 N2, db_attrs_pend_tag). 0 or -errno (EIO):
 * nothing is to be uploaded then. */
int attrov_pend_tag(const char *pending, struct upload *up);
/* What attrov_copy (attrov_copy_rename) did at its target, to undo
 * (attrov_undo_copy) if the object does not move there after all. */
struct attrov_undo {
	struct db_attrs row; /* the target's own row, when had */
	int had;
	int pending;	/* the target kept its row; from's is pending there */
	char *token;	/* the rename's (its pending row's), malloc'd or NULL */
	int64_t copied; /* the copy's ctime (ns; 0: none made) */
};
/* A rename, per key, before the store moves it: to's attributes become a
 * copy of from's (from's stay until attrov_drop after the move), so a
 * crash after the move never shows the object with the defaults. undo
 * (may be NULL; else freed with attrov_undo_free) keeps to's own row. 0
 * or -errno (EIO: the database failed; nothing may be moved then). */
int attrov_copy(const char *from, const char *to, struct attrov_undo *undo);
/* attrov_copy for a rename through the store's copy (reception_rename): a
 * target with its own row keeps it until the copy's rows are recorded
 * (from's are pending there until then: db_attrs_copy_rename), so a crash
 * before the copy lands never shows the target with from's, nor the
 * defaults. */
int attrov_copy_rename(const char *from, const char *to,
		       struct attrov_undo *undo);
/* The object did not move to `to` (nothing landed there): to's rows are put
 * back as they were before attrov_copy (the copy goes, to's own comes
 * back or stayed), so no later object with from's ETag at `to` inherits
 * from's attributes. A failure is logged (the cache shows the database's
 * state). undo is freed. */
void attrov_undo_copy(const char *to, struct attrov_undo *undo);
void attrov_undo_free(struct attrov_undo *undo);
/* The copy of from landed at `to` (ETag etag; old: the ETag of the object
 * copied, NULL when not known) but the rename failed before its rows were
 * recorded (which does this with them): to takes the attributes
 * attrov_copy prepared (it has from's content). A failure is logged. */
void attrov_renamed(const char *from, const char *to, const char *etag,
		    const char *old);
/* The object attrov_copy was for (ETag etag; NULL or "": unknown) has
 * moved from `from`: from's attributes go (the copy's 'move' is the log of
 * the rename), unless bound to another object (an upload of from since:
 * review-N N6). A failure is logged (the row stays bound to the moved
 * object) and the cache shows the database's state. */
void attrov_copy_done(const char *from, const char *etag);
/* unlink/rmdir (after the store's): rel's attributes go (with tree, those
 * under rel/ too), logged ('drop'). A failure is logged and the cache
 * shows the database's state (a row left stays bound to the removed
 * object, so it applies to no later one). */
void attrov_drop(const char *rel, int tree);
/* attrov_drop for a removal that removed nothing in the store (an unlink
 * through a stale listing), or of a directory: another mount's live claim
 * (its new file, being written there) stays (db_attrs_drop_spare: review-k
 * L6, L7). A failure is logged, as attrov_drop's. */
void attrov_drop_spare(const char *rel, int tree);
/* rel is a hidden name of this process's whose row goes (its file's last
 * close, or a failed rename's hide undone): db_attrs_drop_hidden (a row
 * another process's hide tagged there stays). */
void attrov_drop_hidden(const char *rel);
/* The hidden names this process's hides took (review-34 Z1, Z2): only one
 * of those is unlinked here (libfuse does at its node's last close).
 * hidden_note records name (drop: its row is to go then; 0: it went
 * already, a failed rename's copy); hidden_forget takes it out: 1 (and
 * *drop) when it was this process's, else 0. */
void hidden_note(const char *name, int drop);
int hidden_forget(const char *name, int *drop);
/* Before this mount uploads rel: with check (an object is there, the
 * upload replaces it), replaced is the ETag of that object now (NULL: none
 * any more) and a row bound to another object goes; the row left is
 * unbound until attrov_bind. 0 or -errno (EIO; nothing may be uploaded). */
int attrov_prepare(const char *rel, int check, const char *replaced);
/* After this mount's upload of rel (ETag etag) is recorded, or a copy of
 * the object with ETag old landed at rel: rel's unbound row, or one bound
 * to old, describes etag. A failure is logged (the row stays unbound). */
void attrov_bind(const char *rel, const char *etag, const char *old);
/* After this mount's upload of a new file rel (ETag etag) is recorded:
 * its claim's row (token) is bound to etag (db_attrs_bind_claim); a row
 * that is no longer that claim (lapsed and taken by another create, or
 * gone) becomes the file's again (cur: its mode, uid, gid and times as
 * they are now, with the chmod/chown/utimens made on it since its
 * create), bound to etag, while etag is rel's live object: never another
 * create's attributes on it, and never a newer object's row taken. 0 or
 * -errno (logged; EIO when the outcome is unknown). */
int attrov_bind_claim(const char *rel, const char *etag, const char *token,
		      const struct attrov *cur);
/* After this mount's upload of a file published from `from` to `to` (ETag
 * etag) is recorded: from's row becomes to's, bound to etag, while etag is
 * to's live object (db_attrs_publish); from's goes. Only the publisher's
 * own row moves: token (NULL: none) is the file's claim, and a row under
 * `from` that is not that claim (another file took the name) stays, `to`
 * getting cur (the file's mode, owner and times now; NULL: not known)
 * instead. Until then to's row is
 * left as it is (it describes to's earlier object, which shows with it
 * during the upload and after a failure or a crash). 0 or -errno (logged;
 * the cache shows the database's state). */
int attrov_publish(const char *from, const char *to, const char *etag,
		   const char *token, const struct attrov *cur,
		   const char *pending);
/* Before this mount uploads a file published from `from` to `to` (token,
 * cur as for attrov_publish): the attributes its object will have at `to`
 * are recorded first, pending there (db_attrs_pend_publish), so that
 * object is never shown with to's old row or the defaults, in flight or
 * after a crash (E1). *pending: that row's token (malloc'd), for
 * attrov_publish, or attrov_unpend when the upload failed. 0 or -errno
 * (EIO; nothing may be uploaded). */
int attrov_pend_publish(const char *from, const char *to, const char *token,
			const struct attrov *cur, char **pending);
void attrov_unpend(const char *to, const char *pending);
/* rename_pending of an open file (a new file's claim token, NULL for a
 * file stored before: review-h5 N6; *cur its attributes as it holds them)
 * from `from` over `to`, which holds a stored object: its attributes
 * become to's pending row (pending: its token, the caller's), to's own row
 * stays, and from's claim goes (db_attrs_defer). Without a claim, its own
 * row at from (bound to own1 or own2, its own objects' ETags: its loaded
 * and committed ones) goes instead and gives *cur the times *cur has not;
 * another file's row there (another mount's claim of the name since: review
 * n17 X2) is neither read nor touched. 0 or -errno (EBUSY: another mount's
 * live claim at `to`; EINPROGRESS: the answer to its COMMIT was lost;
 * EIO). */
int attrov_defer(const char *from, const char *to, const char *token,
		 const char *own1, const char *own2, struct attrov *cur,
		 const char *pending);
/* Caller holds cfs.lock. The own mode and owner of of, a file stored
 * before (no claim), as it holds them (held_*: its first opener's check,
 * its own changes since, ofile_note_attrs), the defaults (the configured
 * file mode and owner) when it holds none; no times (*cur). */
void ofile_own_attrs(const struct ofile *of, struct attrov *cur);
/* The open file of a deferred publish (pending) moved from key to `to`
 * (db_attrs_defer_move). Failures are logged (the row lapses; the close
 * publishes from memory). */
void attrov_defer_move(const char *key, const char *to, const char *pending);
/* A deferred publish ends without its upload: its pending row at key
 * becomes the claim (token) of its file at `to` (db_attrs_defer_undo;
 * logged when log is set). 0 or -errno. */
int attrov_defer_undo(const char *key, const char *pending, const char *to,
		      const char *token, int log);
/* cur's mode, owner and times as a row (what: the times set). */
void attrov_row_of(const struct attrov *cur, struct db_attrs *r);
/* rel's cached entry is read again from the database before it is shown
 * next. */
void attrov_reload(const char *rel);
/* attrov_set (its r, op, who made) on the open file of a deferred publish
 * at rel (pending: its pending row's token, cur: its attributes now): the
 * change is that file's (its pending row's, db_attrs_defer_set, and its
 * creator's, ofile_note_attrs; logged at rel on no object), never rel's
 * row's, which describes rel's stored object until the file's upload is
 * recorded there (H5). Who may make it was checked on the file's own
 * attributes (the kernel's check, daemon_checks), which only this mount
 * changes; a kill clears the bits from the file's mode as it is. 0 or
 * -errno (EINVAL for a reset; EIO). */
int attrov_set_deferred(const char *rel, const char *pending,
			const struct attrov *cur, struct db_attrs *r,
			unsigned what, const char *op, const struct actor *who);

/* rel's row was bound to etag, by its reception row's transaction
 * (db_attrs_binding done) or by one of the three above: what is cached of
 * rel follows, as after attrov_bind (old; claim 0, from NULL),
 * attrov_bind_claim's bind of its own claim (claim 1) or attrov_publish
 * (from: the name it was published from; both reloaded). */
void attrov_bound(const char *rel, const char *etag, const char *old, int claim,
		  const char *from);
/* Forgets what is cached of rel and under rel/ (reloaded when next shown). */
void attrov_forget_tree(const char *rel);
/* At unmount: frees the cache. */
void attrov_free_all(void);

/* The ETag of the stored object inbox/rel shows, copied into out (80
 * bytes) and returned; NULL (out "") when not known: a directory, a file
 * open here, or not found in the listing. */
const char *inbox_shown_etag(const char *rel, char *out);

/* ops_promote.c - promotion by rename (inbox/ -> projects/). */
int promote_rename(const char *from, const char *to, unsigned int flags);
/* ops_direct.c - files created directly in a project: a drop into the
 * reception bucket under the reserved prefix DIRECT_STAGING
 * ("<host>.<pid>/<prefix>/ <relpath>" below it), then a promotion at each
 * commit. */
#define DIRECT_STAGING ".custodyfs-direct"
/* create(projects/<rel>). Errors: EPERM (a stored name without O_EXCL, a
 * temp name, projects/<new>), EEXIST (O_EXCL on a stored name), EACCES,
 * ENOENT, ENOTDIR, EINVAL, ENAMETOOLONG, EIO, ENOMEM. */
int direct_create(const char *rel, mode_t mode, struct fuse_file_info *fi);
/* After inbox_sync(h) returned rc: a direct file committed to reception
 * is promoted now. Returns rc, or the promotion's error: EPERM (conflict:
 * another file is stored under the name; the bytes stay in reception
 * under DIRECT_STAGING), EIO... */
int direct_settle(struct fhandle *h, int rc);
/* Caller holds of->lock, of->direct_pending set: the promotion of
 * direct_settle (release's last resort). */
int direct_promote_locked(struct ofile *of);
/* projects/<rel> is being written directly by this mount (an open or
 * not yet promoted file): its staging key in inbox/ terms (the caller
 * frees it), else NULL. Opens, stats and truncates by path go there. */
char *direct_open_key(const char *rel);
/* rsync's temp name (".<name>.XXXXXX") in a project: received at close
 * but not promoted under that name; its rename within projects/ promotes
 * it under the final name. Is rel's basename one? */
int direct_is_held_name(const char *rel);
/* projects/<rel>, a held file received by this mount: 0 with its stat
 * (inbox/'s view of its staging key), else -ENOENT. */
int direct_held_getattr(const char *rel, struct stat *st);
/* rename(projects/<from>, projects/<to>) of a held file: promotes its
 * received bytes to <to> (promote_file). Only its writer (owner), the
 * mount's owner or root may, with or without default_permissions.
 * Errors: ENOENT (no such held file: the caller's EPERM applies), EPERM
 * (another user's held file), EBUSY (still open for writing), EEXIST
 * (conflict: nothing overwritten, the file stays received), EACCES, EIO. */
int direct_rename(const char *from, const char *to);
/* unlink(projects/<rel>) of a held file: removes the received object (its
 * row gets removed_at). Only its writer (owner), the mount's owner or
 * root may. Errors: ENOENT (rel is no held file), EPERM (another user's),
 * EIO, ENOMEM. */
int direct_unlink(const char *rel);
/* Is inbox/<rel> the reserved staging directory (never listed)? */
int direct_is_staging(const char *rel);
/* Is inbox/<rel> the staging directory or below it? Nothing is created,
 * made or renamed there through inbox/ (EPERM): only direct writes put
 * files there; what is left there can be read, renamed out or removed. */
int direct_is_reserved(const char *rel);

extern const struct fuse_operations cfs_ops;

#endif
