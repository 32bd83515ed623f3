/* reception_int.h - internals shared by the reception pipeline's files
 * (reception.c: busy keys, grace, commit, undo, rename, the worker;
 * reception_foreign.c: objects that came by other routes). Not an API: only
 * reception*.c include it. */
#ifndef CUSTODYFS_RECEPTION_INT_H
#define CUSTODYFS_RECEPTION_INT_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "fpset.h"
#include "reception.h"

#define FP_MAX_ENTRIES (1u << 20) /* bound on the "known logged" set */
#define FOREIGN_CHUNK (4u << 20)  /* bytes read at a time when hashing */
#define SCAN_PAGE 1000		  /* keys per listing page in a scan */
#define TABLE_BUCKETS 1024	  /* busy and deferred tables */
#define DEFER_MAX 65536		  /* objects waiting for their grace */
#define DEFER_BATCH 256		  /* ripe objects logged per round */
#define UNDO_MAX 1024		  /* undos waiting for the database */
#define UNDO_RETRY_MS 2000	  /* first retry; doubles up to ... */
#define UNDO_RETRY_MAX_MS 30000	  /* ... this */
#define UNDO_MAX_TRIES 150	  /* about an hour of retries, then given up */
#define S3_REQUEST_TIMEOUT_DEFAULT_MS 30000

/* A key this process is writing or committing, with a use count. */
struct busy_ent {
	char *key;
	int count;	  /* uploads and pending undos holding the key */
	int undos;	  /* of count, pending undos */
	unsigned commits; /* rows this process committed for the key */
	struct busy_ent *next;
};

/* An object seen and not logged yet because it is younger than the grace
 * period (or a multipart object seen too recently). */
struct defer_ent {
	char *key;
	char etag[80];
	int64_t first_seen_ms; /* realtime, when this process first saw it */
	int64_t due_ms;	       /* realtime, when it may be logged */
	struct defer_ent *next;
};

/* An upload whose row did not commit, to be resolved with the database. */
struct undo {
	char *key;
	struct upload_result res;
	struct actor who;
	int created; /* new key: delete if unrowed; else log it late */
	/* CLOCK_MONOTONIC ms when its content was based on the store (-1:
	 * no such condition): a removal by a mount since still wins when the
	 * overwrite is logged late (db_record_guard.based_ms_ago). */
	int64_t based_mono;
	unsigned gen; /* the key's busy_ent commits when its row failed */
	int unknown;  /* a commit of its row may have happened (read back) */
	const char *origin; /* static: "mount", or "rename" (a copy) */
	int tries;
	int64_t next_try_ms; /* monotonic */
	struct undo *next;
};

/* Objects seen in a listing and not known to be logged: checked against
 * the database and logged by the worker, off the caller's path. */
struct saw_job {
	struct s3_list_entry *e; /* keys owned by the job */
	size_t n;
	struct saw_job *next;
};

struct reception {
	const struct cfg *cfg;
	struct s3_client *s3;
	struct db *db;
	int64_t grace_ms;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fpset known;	     /* protected by lock: (key, etag) logged */
	struct fpset pending;	     /* protected by lock: queued for logging */
	struct saw_job *head, *tail; /* protected by lock */
	struct busy_ent *busy[TABLE_BUCKETS];	/* protected by lock */
	struct defer_ent *defer[TABLE_BUCKETS]; /* protected by lock */
	size_t n_defer;				/* protected by lock */
	struct undo *undos;			/* protected by lock */
	size_t n_undos;				/* protected by lock */
	int working;  /* protected by lock: the worker is on a job */
	int stopping; /* protected by lock */
	pthread_t worker;
	int worker_started;
	struct actor foreign; /* who a foreign upload is logged as */
};

/* The user metadata a copy of a rename carries: its token (review L2),
 * unless the source's own metadata leaves no room for it (review N4). */
#define RENAME_TAG "custodyfs-rename"

struct still_ours {
	struct reception *r;
	const char *key;
	const char *etag;
	int delete; /* delete it when it is */
	/* NULL or "", or the value of the upload's tag_name (UPLOAD_TAG, or
	 * a rename copy's RENAME_TAG): then the object is the upload only
	 * when it carries it too (another client's object of the same bytes
	 * has the same ETag, not the tag) */
	const char *tag;
	const char *tag_name;
	int own; /* undo: uploads of the key the caller holds (busy), else -1 */
	unsigned gen; /* undo: the key's commit generation at its failure */
	/* NULL, or: what the last HEAD found (a commit's guard) */
	struct reception_seen *seen;
};

struct log_state {
	int ripe; /* the entries' grace has passed */
	size_t logged;
	int rc;
};

/* reception.c */
/* The key's commit generation (see struct undo). */
unsigned busy_gen(struct reception *r, const char *key);
/* An upload's row failed with rc: resolve now if the database answers,
 * else remember it for the worker. Returns 0 if the upload turned out to
 * be committed (it stands), else rc (-EIO for an unknown outcome). */
int reception_undo_start(struct reception *r, const char *key,
			 const struct upload_result *res,
			 const struct actor *who, const char *origin,
			 int created, unsigned gen, int64_t based_mono, int rc);
/* This process committed a row for key: its pending undos are of older
 * uploads of the key, superseded. */
void reception_undos_cancel(struct reception *r, const char *key);
int64_t ms_now(clockid_t clk);
int reception_stopping(struct reception *r);
uint64_t fp_of(const char *key, const char *etag);
void reception_mark_known(struct reception *r, const char *key,
			  const char *etag);
int reception_is_busy(struct reception *r, const char *key);
int reception_still_ours(void *arg);
int busy_has(struct reception *r, const char *key); /* caller holds r->lock */
/* the grace period; callers hold r->lock */
struct defer_ent *defer_find(struct reception *r, const char *key,
			     const char *etag);
int64_t defer_due(struct reception *r, const char *key, const char *etag,
		  time_t mtime);
void defer_del(struct reception *r, const char *key, const char *etag);
/* The leftover source of a rename whose rows committed (its row, row_id,
 * closed "renamed to ..."), which the rename could not delete: deleted
 * now, under the key's lock, only while it is still that object (ETag)
 * and no upload of the key committed a row since; never logged. 0 (also
 * when a newer upload is there: it stays) or -errno. */
int reception_leftover_delete(struct reception *r, const char *key,
			      const char *etag, int64_t row_id);
/* one event line for a reception row change (events.c) */
void reception_event(struct reception *r, const char *event, const char *op,
		     int rc, const char *key, const struct upload_result *res,
		     int64_t id, const struct actor *who, const char *origin);

/* reception_foreign.c */
int reception_unlogged(struct reception *r, const struct s3_list_entry *e,
		       size_t n, int skip_pending, struct log_state *st);
void saw_job_free(struct saw_job *j);
/* The object at key (ETag etag, size) is logged: 0 when a live row logs
 * it (as an observer decides: same ETag or none, same size) or it is
 * logged now as another route's arrival; -EBUSY when it cannot be logged
 * yet (younger than the grace period, being written by this process, or
 * replaced or logged by another meanwhile: look again); -errno. */
int reception_log_unlogged(struct reception *r, const char *key,
			   const char *etag, uint64_t size);

#endif
