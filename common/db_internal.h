/* db_internal.h - shared by the db_*.c files; not part of the API (db.h).
 *
 * Every statement goes through pg_exec() (PQexecParams, typed casts, the
 * PGresult cleared on every path; a statement with parameters is prepared
 * once per pooled connection and run by name, db_stmt.c), or a few of them
 * at once through pg_exec_pipe(), inside db_run(), which takes a pooled
 * connection, wraps the operation in a transaction when asked, resets a
 * lost connection and retries once, and retries deadlocks and
 * serialization failures a bounded number of times with jittered backoff.
 * db_pool.c holds the pool and that policy, db_migrate.c the versioned
 * schema, db_reception.c the reception_audit queries. */
#ifndef CUSTODYFS_DB_INTERNAL_H
#define CUSTODYFS_DB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

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

/* Connections of a pool at most. */
#define DB_POOL_MAX 64

struct pg_stmts;

struct db {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int size;
	PGconn **conns;		  /* NULL: slot not connected yet */
	unsigned char *busy;	  /* slot taken by an operation */
	int bulk_max;		  /* bulk operations (db_run_bulk) at once */
	int bulk_busy;		  /* protected by lock: slots bulk ones hold */
	char *conninfo;		  /* never logged: may hold a password */
	char *secret[3];	  /* its password, sslpassword and a URI's
				     userinfo (NULL: none): kept out of every
				     libpq message logged */
	const char *kw[10];	  /* PQconnectdbParams keywords ... */
	const char *val[10];	  /* ... and values, NULL-terminated */
	const char *live_kw[16];  /* the same for the liveness connection, */
	const char *live_val[16]; /* with its fast dead-peer checks */
	char *claimer; /* set before use (db_set_claimer): this process's
			  claim tokens are claimer + "#n"; NULL: none */
	pthread_mutex_t live_lock;
	PGconn *live; /* protected by live_lock: a connection of its own
			 holding claimer's liveness lock, or NULL */
	pthread_cond_t live_cond;  /* live_stop set (monotonic clock) */
	pthread_t live_thread;	   /* db_live_watch's */
	int live_watching;	   /* live_thread runs */
	int live_stop;		   /* protected by live_lock: it ends */
	int live_failing;	   /* protected by live_lock: the last take
				      failed (logged once, not each period) */
	pthread_mutex_t beat_lock; /* one heartbeat write at a time, and
				      none of a claimer being replaced
				      (taken before live_lock) */
	int live_grace_s;	   /* db_live_watch's: the heartbeat's grace */
	int beat_failing;	   /* protected by beat_lock: the last
				      heartbeat failed (logged once) */
	PGconn *beat_conn;     /* protected by beat_lock: the heartbeat's own
				  connection (live_beat), or NULL */
	pthread_t beat_thread; /* the heartbeat's (db_live_watch) */
	int beat_running;      /* beat_thread runs */
	atomic_int beat_stop;  /* set by db_close */
	/* CLOCK_MONOTONIC ms of the first of this process's heartbeats
	 * written since the last failure (0: the last one failed, or none
	 * yet): db_live_steady_ms. */
	_Atomic int64_t beat_since_ms;
	struct pg_stmts *stmts[DB_POOL_MAX]; /* per slot, used by the slot's
						holder only (db_stmt.c) */
	/* protected by lock: claimers with no heartbeat row whose liveness
	 * lock this process's sweeps saw free, and since when
	 * (live_nobeat_gone, db_live_gone.c; review-37 F2) */
	struct live_nobeat *nobeat;
	int nobeat_n;
};

/* The session advisory lock a process holds while it lives (db_set_claimer,
 * db_live_ensure), keyed by its claimer (an SQL text expression). */
#define LIVE_KEY(c) "hashtextextended(" c ", 7310303)"

/* Every DB_LIVE_WATCH_MS the watch (db_live_watch) takes a lost liveness
 * lock again and writes the process's heartbeat (live_heartbeat.seen_at,
 * on a connection of its own, by the server's clock). */
#define DB_LIVE_WATCH_MS 1000

/* The default grace of a heartbeat (db_live_watch), in seconds. */
#define DB_LIVE_GRACE_S 30

/* Every round trip on the liveness connection (its setup, the try-lock,
 * the unlock) is bounded on the client by this, since it runs under
 * live_lock (review-36 R4): a peer that does not answer makes the
 * connection count as lost, and the watch tries again a period later. */
#define DB_LIVE_ANSWER_MS 5000

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

/* Has claimer c (an SQL text expression) written a heartbeat that is still
 * within its grace (db_live_watch), by the server's clock? */
#define LIVE_BEAT_FRESH(c)                                                     \
	"EXISTS (SELECT 1 FROM live_heartbeat hb WHERE hb.claimer = " c        \
	" AND hb.seen_at + hb.grace > clock_timestamp())"

/* Has claimer c (an SQL text expression) a heartbeat row at all? A
 * daemon of before migration 17 never writes one (review-37 F2). */
#define LIVE_BEAT_ROW(c)                                                       \
	"EXISTS (SELECT 1 FROM live_heartbeat hb WHERE hb.claimer = " c ")"

/* Is claimer c's process gone? Its liveness lock is free AND its
 * heartbeat is missing or older than its grace: a free lock alone is not
 * proof of death (a session lost silently, a re-take that keeps failing:
 * review-36 R1, R2), and a process that beats on its own connection keeps
 * itself alive meanwhile. Read, never taken nor waited for. A claimer
 * with no heartbeat row at all (a daemon of before migration 17 during a
 * rolling upgrade) is only a candidate: the sweeps take it for gone once
 * its lock was seen free for DB_LIVE_NOBEAT_MS (live_nobeat_gone), and
 * tree drops never (LIVE_TAG: review-37 F2). */
#define LIVE_GONE(c) "(NOT " LIVE_HELD(c) " AND NOT " LIVE_BEAT_FRESH(c) ")"

/* Is claimer c's process gone at once, with no wait? Its liveness lock is
 * free and it has a heartbeat row older than its grace; a claimer with no
 * heartbeat row (a daemon of before migration 17) is never gone here
 * (review-37 F2). Read, never taken nor waited for. */
#define LIVE_GONE_BEAT(c)                                                      \
	"(NOT " LIVE_HELD(c) " AND " LIVE_BEAT_ROW(                            \
	    c) " AND NOT " LIVE_BEAT_FRESH(c) ")"

/* A claimer with no heartbeat row (a daemon of before migration 17, which
 * holds its liveness lock and writes none) counts as gone for a sweep
 * only once the sweeps of one process have seen its lock free, every time
 * they read it, for this long (ms): the old rule's two reads of a free
 * lock a grace apart, the grace raised from 5 s to 30 s (review-37 F2).
 * At most DB_LIVE_NOBEAT_MAX of them are followed at a time; the others
 * wait for room (kept meanwhile). */
#define DB_LIVE_NOBEAT_MS 30000
#define DB_LIVE_NOBEAT_MAX 256

/* One operation on one connection. */
struct pg_ctx {
	struct db *d;
	PGconn *conn;
	int slot; /* its pool slot; -1: a connection of its own, on which no
		     statement is prepared (pg_stmt_name) */
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
	int quiet;	  /* its failures logged at debug level only */
};

/* libpq's error text of conn (NULL: "out of memory") into buf, on one
 * line. When it holds any 4 consecutive bytes of d's password,
 * sslpassword or URI userinfo (libpq quotes parts of the conninfo: a host name
 * cut out of a URI with an unescaped '@'), a generic text replaces it. */
void pg_conn_error(const struct db *d, PGconn *conn, char *buf, size_t len);

typedef int (*db_op_fn)(struct pg_ctx *x, void *arg);

/* A CLOCK_MONOTONIC reading in milliseconds. */
int64_t pg_now_ms(void);

/* A sweep's read (scope: what it read, e.g. a bucket's hidden rows) found
 * claimer's liveness lock free and no heartbeat row of it: 1 when this
 * process's reads of scope have found it so for DB_LIVE_NOBEAT_MS (gone),
 * else 0 (kept; followed from now on). Call live_nobeat_begin(d, scope)
 * before the read's claimers and live_nobeat_end(d, scope) after them,
 * all under d->lock: claimers of scope not seen in between (their lock
 * held again, a heartbeat written, their rows gone) are forgotten. */
void live_nobeat_begin(struct db *d, const char *scope);
int live_nobeat_gone(struct db *d, const char *scope, const char *claimer);
void live_nobeat_end(struct db *d, const char *scope);
/* Frees the table (db_close). */
void live_nobeat_free(struct db *d);

/* Waits (poll) until PQgetResult on x's connection would not block, within
 * deadline (pg_now_ms(); only when x->timeout_ms is set). 0, or -1 (the
 * connection is marked lost when the deadline passed). */
int pg_wait(struct pg_ctx *x, int64_t deadline);

/* After a query was sent on x->conn: its results read until the last one,
 * each waited for until deadline (pg_wait). The last result (the caller
 * clears it), or NULL when the wait failed or the connection broke. */
PGresult *pg_last_result(struct pg_ctx *x, int64_t deadline);

/* Prepared statements (db_stmt.c). The name (into name, len bytes) under
 * which sql, with nparams parameters, is prepared on x's connection,
 * preparing it there now (one round trip, timed as the sql_prepare stage)
 * when it is not yet. Returns 1 (named), 0 (run it unnamed: no
 * parameters, or the connection's cache is full), or -1: the prepare
 * failed and *failed holds its result (NULL: the connection broke or the
 * deadline passed), which is the statement's result (a prepare parses and
 * analyses it as running it would). Call outside a pipeline. */
int pg_stmt_name(struct pg_ctx *x, const char *sql, int nparams, char *name,
		 size_t len, PGresult **failed);

/* A named statement failed with SQLSTATE state (message msg): when that
 * says the session's prepared statement is stale or unknown, the slot's
 * statements are forgotten (prepared again under new names) and 1 is
 * returned (the transaction may run again); else 0. */
int pg_stmt_stale(struct pg_ctx *x, const char *state, const char *msg);

/* Forgets slot's prepared statements (its session ended or is replaced);
 * pg_stmts_free frees every slot's (db_close). */
void pg_stmts_forget(struct db *d, int slot);
void pg_stmts_free(struct db *d);

/* In a transaction: serialises the writers of (bucket, key) (the reception
 * key lock, DB_KEY_LOCK_CLASS) until it ends. 0 or -errno. */
int pg_lock_key(struct pg_ctx *x, const char *bucket, const char *key);

/* Runs one statement. On success returns 0 and, when out is not NULL, the
 * result (the caller clears it). On failure returns -errno, logs, clears
 * the result, and notes in x whether the connection is lost or the failure
 * transient. */
int pg_exec(struct pg_ctx *x, const char *sql, int nparams,
	    const char *const *params, PGresult **out);

/* pg_exec's verdict on res, a statement's result (NULL: sending failed,
 * the connection broke or the deadline passed), run by name when named > 0:
 * 0 with res in *out (when out is not NULL, else cleared), or -errno with
 * res cleared, logged, and x's lost/retry noted. */
int pg_result_check(struct pg_ctx *x, PGresult *res, int named, PGresult **out);

/* Sends sql on x's connection (PQsendQuery*): by name when name is not
 * empty (pg_stmt_name), else unnamed. 1 sent, 0 not. */
int pg_send(struct pg_ctx *x, const char *name, const char *sql, int nparams,
	    const char *const *params);

/* One statement of a pipeline (pg_exec_pipe). */
struct pg_call {
	const char *sql;
	int nparams;
	const char *const *params;
};

#define PG_PIPE_MAX 4

/* Runs the n (at most PG_PIPE_MAX) statements of c in one round trip
 * (libpq pipeline mode; a BEGIN still due first), in order, as pg_exec
 * would one after the other: the server runs each after the one before
 * (a lock taken by one holds for the next). 0 with each result in out[i]
 * (the caller clears them), or the first failure's -errno (pg_exec's
 * verdict; the statements after it did not run) with every out[i] NULL. */
int pg_exec_pipe(struct pg_ctx *x, int n, const struct pg_call *c,
		 PGresult **out);

/* The second half of the key lock of (bucket, key) (pg_lock_key), as a
 * decimal integer, into obj. */
void pg_key_lock_obj(const char *bucket, const char *key, char obj[16]);

/* pg_lock_key, then sql (pg_exec's arguments) in the same round trip
 * (pg_exec_pipe): sql runs once the lock is held. 0 (sql's result in *out
 * when out is not NULL) or -errno. */
int pg_lock_key_then(struct pg_ctx *x, const char *bucket, const char *key,
		     const char *sql, int nparams, const char *const *params,
		     PGresult **out);

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
