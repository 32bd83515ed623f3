/* db_internal.h - shared by the db_*.c files; not part of the API (db.h).
 *
 * Every statement goes through pg_exec() (PQexecParams, typed casts, the
 * PGresult cleared on every path) inside db_run(), which takes a pooled
 * connection, wraps the operation in a transaction when asked, resets a
 * lost connection and retries once, and retries deadlocks and
 * serialization failures a bounded number of times with jittered backoff.
 * db_pool.c holds the pool and that policy, db_migrate.c the versioned
 * schema, db_reception.c the reception_audit queries. */
#ifndef CUSTODYFS_DB_INTERNAL_H
#define CUSTODYFS_DB_INTERNAL_H

#include <pthread.h>

#include <libpq-fe.h>

#include "db.h"

/* First half of the (int, int) advisory lock taken per (bucket, key):
 * "CUST". The (int, int) and (bigint) key spaces never collide. */
#define DB_KEY_LOCK_CLASS "1129665364"

/* First half of the (int, int) session lock each promotion journal owner
 * holds on its id while it lives ("CUSW"): db_storage.c takes it,
 * db_status.c asks pg_locks whether an owner lives. */
#define DB_OWNER_CLASS "1129665367"

/* A server that stops answering (frozen, or a dead peer whose kernel still
 * ACKs) must not hold a caller forever: every statement but the migrations
 * is bounded here, on the client. */
#define DB_STATEMENT_TIMEOUT_MS DB_STATEMENT_DEADLINE_MS

struct db {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int size;
	PGconn **conns;	     /* NULL: slot not connected yet */
	unsigned char *busy; /* slot taken by an operation */
	int bulk_max;	     /* bulk operations (db_run_bulk) at once */
	int bulk_busy;	     /* protected by lock: slots bulk ones hold */
	char *conninfo;	     /* never logged: may hold a password */
	char *secret[3];     /* its password, sslpassword and a URI's
				userinfo (NULL: none): kept out of every
				libpq message logged */
	const char *kw[10];  /* PQconnectdbParams keywords ... */
	const char *val[10]; /* ... and values, NULL-terminated */
	char *claimer;	     /* set before use (db_set_claimer): this process's
				claim tokens are claimer + "#n"; NULL: none */
	pthread_mutex_t live_lock;
	PGconn *live; /* protected by live_lock: a connection of its own
			 holding claimer's liveness lock, or NULL */
	pthread_cond_t live_cond; /* live_stop set (monotonic clock) */
	pthread_t live_thread;	  /* db_live_watch's */
	int live_watching;	  /* live_thread runs */
	int live_stop;		  /* protected by live_lock: it ends */
	int live_failing;	  /* protected by live_lock: the last take
				     failed (logged once, not each period) */
};

/* The session advisory lock a process holds while it lives (db_set_claimer,
 * db_live_ensure), keyed by its claimer (an SQL text expression). */
#define LIVE_KEY(c) "hashtextextended(" c ", 7310303)"

/* A live process whose liveness session ended (a database restart,
 * idle_session_timeout, a dropped connection) takes its lock again within
 * DB_LIVE_WATCH_MS (db_live_watch) plus a connection's setup; a sweep
 * takes a process for gone only when its lock was free at two reads at
 * least DB_LIVE_GRACE_MS apart (review-31 R1). */
#define DB_LIVE_WATCH_MS 1000
#define DB_LIVE_GRACE_MS 5000

/* Is the liveness lock of claimer c (an SQL text expression) held, by
 * any session? Read in pg_locks: never taken nor waited for. */
#define LIVE_HELD(c)                                                           \
	"EXISTS (SELECT 1 FROM pg_locks l, (SELECT " LIVE_KEY(                 \
	    c) " AS k) h"                                                      \
	       " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid "  \
	       "= 1"                                                           \
	       " AND l.database = (SELECT oid FROM pg_database"                \
	       " WHERE datname = current_database())"                          \
	       " AND l.classid::bigint = ((h.k >> 32) & 4294967295)"           \
	       " AND l.objid::bigint = (h.k & 4294967295))"

/* One operation on one connection. */
struct pg_ctx {
	struct db *d;
	PGconn *conn;
	int slot;
	const char *what; /* operation name, for the log */
	int lost;	  /* the connection broke */
	int retry;	  /* transient failure: run the transaction again */
	int retry_unique; /* count unique_violation as transient */
	int in_commit;	  /* failure happened at COMMIT: outcome unknown */
	int timeout_ms;	  /* client-side bound on one statement, 0: none */
	int timed_out;	  /* the bound was hit: do not try again */
	int stmt_failed;  /* a statement failed (for the metrics) */
	int begin_due;	  /* BEGIN goes with the next statement (pipelined) */
	int bulk;	  /* a bulk operation: counted in d->bulk_busy */
};

/* libpq's error text of conn (NULL: "out of memory") into buf, on one
 * line. When it holds any 4 consecutive bytes of d's password,
 * sslpassword or URI userinfo (libpq quotes parts of the conninfo: a host name
 * cut out of a URI with an unescaped '@'), a generic text replaces it. */
void pg_conn_error(const struct db *d, PGconn *conn, char *buf, size_t len);

typedef int (*db_op_fn)(struct pg_ctx *x, void *arg);

/* In a transaction: serialises the writers of (bucket, key) (the reception
 * key lock, DB_KEY_LOCK_CLASS) until it ends. 0 or -errno. */
int pg_lock_key(struct pg_ctx *x, const char *bucket, const char *key);

/* Runs one statement. On success returns 0 and, when out is not NULL, the
 * result (the caller clears it). On failure returns -errno, logs, clears
 * the result, and notes in x whether the connection is lost or the failure
 * transient. */
int pg_exec(struct pg_ctx *x, const char *sql, int nparams,
	    const char *const *params, PGresult **out);

/* Runs fn on a pooled connection, in a transaction when txn is set, with
 * the reconnect and retry policy (unique violations count as transient when
 * retry_unique is set); each statement bounded by timeout_ms (0: none).
 * Returns fn's result, the failure, or -EINPROGRESS when the connection was
 * lost at COMMIT. what names the operation in the log and in the metrics
 * (custodyfs_sql_operation_duration_seconds{what}): a string literal. */
int db_run_timed(struct db *d, const char *what, int txn, int retry_unique,
		 int timeout_ms, db_op_fn fn, void *arg);

/* db_run_timed for a bulk operation (an audit export: a COPY of a whole
 * table, which may hold its connection for minutes): at most d->bulk_max
 * of them hold connections at once (the pool's size less 2, at least 1),
 * so that they never take the slots the custody path (closes, renames,
 * claims) needs; one more waits for a bulk slot within the statement
 * bound, then fails -EIO (cause "pool"). Same results as db_run_timed. */
int db_run_bulk(struct db *d, const char *what, int txn, int timeout_ms,
		db_op_fn fn, void *arg);

/* db_run_timed with DB_STATEMENT_TIMEOUT_MS. */
int db_run(struct db *d, const char *what, int txn, int retry_unique,
	   db_op_fn fn, void *arg);

/* In the transaction recording a rename's rows (db_attrs.c): its copy at
 * `to` (ETag etag) takes the attributes db_attrs_copy gave it: to's
 * pending row from `from` (that rename's, never another's) replaces to's
 * own (logged 'move' from from), stale pending rows of to (their lease
 * over: renames a crash or a failure cut short) go, and to's row
 * bound to the object copied (ETag src; NULL: not known), or unbound and
 * unclaimed, is bound to the copy. Nothing when etag is NULL or "". 0 or
 * -errno. */
int pg_attrs_renamed(struct pg_ctx *x, const char *bucket, const char *from,
		     const char *to, const char *etag, const char *src,
		     const struct actor *who);

/* In x's transaction: is key's row another process's live claim
 * (OTHERS_LIVE, db_attrs_internal.h: another mount's new file being
 * written there)? 1, 0, or -errno. */
int pg_attrs_others_live(struct pg_ctx *x, const char *bucket, const char *key);

struct db_attrs_binding;

/* In x's transaction, which has just recorded the upload etag as key's
 * live reception row under the key lock (db_reception.c): b's statements
 * (db_attrs_binding, db_attrs.h); *done 1 when they bound the row, 0 when
 * that is left to the caller. 0 or -errno (the transaction fails). */
int pg_attrs_binding(struct pg_ctx *x, const char *bucket, const char *key,
		     const char *etag, struct db_attrs_binding *b, int *done);

#endif
