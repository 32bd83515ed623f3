/* counters.h - this process's custody counters (audit/stats "mount.*")
 * and latency histograms, and their Prometheus text exposition.
 *
 * Lock-free atomic counters, incremented by the custody pipeline at its
 * outcome points (reception.c, promote.c) and read by whoever reports them
 * (the daemon's audit/stats, a batch tool's summary). Knows nothing of
 * FUSE, S3 or the database. They start at zero with the process and are
 * never reset: "since this mount". */
#ifndef CUSTODYFS_COUNTERS_H
#define CUSTODYFS_COUNTERS_H

#include <stdint.h>
#include <stdio.h>

enum ctr {
	CTR_RECEIVED,	    /* reception rows committed for new content:
			       uploads through the mount and uploads by other
			       routes logged by this process */
	CTR_BYTES_RECEIVED, /* their sizes */
	CTR_COPIED,	    /* promotions that stored bytes: copied */
	CTR_RESTORED,	    /* ... restored (row kept, object was gone) */
	CTR_ADOPTED,	    /* ... adopted (object there, no row) */
	CTR_DUP_PATH,	    /* promotions found already stored at the key */
	CTR_DUP_CONTENT,    /* promotions found stored under another key */
	CTR_CONFLICTS,	    /* promotions refused: another file at the key */
	CTR_BYTES_STORED,   /* sizes of the copied/restored/adopted files */
	CTR_ERR_RECEPTION,  /* uploads whose reception row failed */
	CTR_ERR_PROMOTION,  /* promotions that failed (conflicts excluded) */
	CTR_N
};

/* Adds n to counter c. Thread-safe, never blocks. */
void ctr_add(enum ctr c, uint64_t n);
/* The current value of c. */
uint64_t ctr_get(enum ctr c);
/* The stable name of c in reports ("received", "bytes_received", ...). */
const char *ctr_name(enum ctr c);

/* Latency histograms (seconds). Lock-free too: one atomic count per bucket
 * and an atomic sum in nanoseconds; a reader may see an observation in a
 * bucket before its sum, never a _count that disagrees with the buckets
 * (_count is the buckets' total). */
enum hist {
	HIST_UPLOAD,	/* a file committed through the mount (close, fsync,
			   rename): upload and its reception row */
	HIST_PROMOTION, /* one file's promotion, whatever its outcome */
	HIST_SQL,	/* one database operation (its transaction, retries
			   included) */
	HIST_S3_HEAD,	/* one S3 request, retries included, by operation
			   (HIST_S3_HEAD..HIST_S3_OTHER) */
	HIST_S3_GET,
	HIST_S3_LIST,
	HIST_S3_PUT,
	HIST_S3_COPY,
	HIST_S3_UPLOAD_PART,
	HIST_S3_MULTIPART, /* create, complete or abort a multipart upload */
	HIST_S3_DELETE,
	HIST_S3_OTHER,
	HIST_FILE_OPEN, /* a file open for writing through the mount: from
			   its create (or open) to its release */
	HIST_N
};

/* A CLOCK_MONOTONIC reading in nanoseconds, for hist_observe_since(). */
uint64_t ctr_now_ns(void);
/* Counts one observation of h that began at t0 (ctr_now_ns()); failed
 * counts it as a failure too (S3 requests and SQL operations report those
 * as *_failures_total). Thread-safe, never blocks. */
void hist_observe_since(enum hist h, uint64_t t0, int failed);
/* Counts one observation of ns nanoseconds (hist_observe_since's work;
 * for tests). */
void hist_observe_ns(enum hist h, uint64_t ns, int failed);

/* The stages of a file's life through the mount that have no histogram
 * of their own, timed for the benchmark's per-file breakdown: a count and
 * a sum (a Prometheus summary without quantiles), lock-free like the rest.
 * A stage may run on another thread than the request that waits for it
 * (hashing): its sum is time spent, not always time waited. */
enum stage {
	STG_SPOOL_WRITE,   /* one write request's bytes into the spool */
	STG_HASH,	   /* hashing spooled bytes (pread and hash update, or
			      the final digest, or a whole spool again) */
	STG_UPLOAD_FINISH, /* a commit's upload: hashing what is left, then
			      the PUT (or the multipart completion) */
	STG_RECEPTION_ROW, /* a commit's reception row: its transaction,
			      the check of the object under the key lock
			      included, retries included */
	STG_SQL_COMMIT,	   /* COMMIT of any transaction */
	STG_ROW_CHECK,	   /* inside a commit's reception row: the HEAD that
			      checks, under the key lock, that the object is
			      still this upload */
	STG_CREATE_CHECK,  /* a create's HEAD: is the name stored already
			      (O_EXCL, an object the kernel's lookup missed) */
	STG_SQL_STATEMENT, /* one statement's round trip (pg_exec: BEGIN
			      pipelined with it, COMMIT included; a first
			      use's prepare counted apart) */
	STG_SQL_PREPARE,   /* preparing a statement on a connection (once
			      per connection and statement text) */
	STG_N
};

/* The FUSE operations (the callbacks of the high-level API: a kernel
 * LOOKUP and GETATTR both arrive as getattr). */
enum fop {
	FOP_GETATTR,
	FOP_READDIR,
	FOP_MKDIR,
	FOP_RMDIR,
	FOP_CREATE,
	FOP_OPEN,
	FOP_READ,
	FOP_WRITE,
	FOP_FLUSH,
	FOP_FSYNC,
	FOP_RELEASE,
	FOP_TRUNCATE,
	FOP_UNLINK,
	FOP_RENAME,
	FOP_CHMOD,
	FOP_CHOWN,
	FOP_UTIMENS,
	FOP_STATFS,
	FOP_SYMLINK,
	FOP_READLINK,
	FOP_LINK,
	FOP_GETXATTR,
	FOP_SETXATTR,
	FOP_LISTXATTR,
	FOP_REMOVEXATTR,
	FOP_MKNOD,
	FOP_N
};

/* Counts one run of stage s that began at t0 (ctr_now_ns()), or lasted
 * ns. Thread-safe, never blocks. */
void stage_observe_since(enum stage s, uint64_t t0);
void stage_observe_ns(enum stage s, uint64_t ns);
/* Counts one FUSE operation op that began at t0, or lasted ns. */
void fop_observe_since(enum fop op, uint64_t t0);
void fop_observe_ns(enum fop op, uint64_t ns);

/* Counts one database operation named what (db_run's "what": a string
 * with static storage, kept by pointer; at most CTR_SQL_WHATS different
 * names, further ones counted under "other") that began at t0 (or lasted
 * ns): custodyfs_sql_operation_duration_seconds{what}. */
#define CTR_SQL_WHATS 96
void sql_what_observe_since(const char *what, uint64_t t0);
void sql_what_observe_ns(const char *what, uint64_t ns);

/* Writes every counter and histogram to f in the Prometheus text
 * exposition format 0.0.4 (# HELP and # TYPE lines, counters *_total,
 * histograms _bucket{le=...}/_sum/_count, units in names). labels, when
 * not NULL or empty, is a label pair list put into every sample, e.g.
 * mountpoint="/srv/custody" (its values already escaped, see
 * ctr_prom_escape()). Returns 0, or -EIO when f reports an error. */
int ctr_write_prom(FILE *f, const char *labels);

/* Copies s into out (out_len bytes, always NUL-terminated) escaped for a
 * Prometheus label value: backslash, double quote and newline. Returns
 * -ENAMETOOLONG when it did not fit (out holds a prefix), else 0. */
int ctr_prom_escape(const char *s, char *out, size_t out_len);

#endif
