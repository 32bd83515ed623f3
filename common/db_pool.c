/* db_pool.c - connection pool, statement execution, reconnect and retry
 * policy; see db_internal.h. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "counters.h"
#include "db_internal.h"
#include "log.h"
#include "s3err.h"

#define DB_STATEMENT_TIMEOUT "30s"
#define DB_CONNECT_TIMEOUT "5"
#define DB_MAX_RETRIES 5 /* transient failures of one operation */

void actor_format(const struct actor *a, char *out, size_t len)
{
	if (!out || !len)
		return;
	if (!a) {
		out[0] = '\0';
		return;
	}
	snprintf(out, len, "%s (uid %lu) @ %s", a->user, (unsigned long)a->uid,
		 a->host);
}

/* Copies a libpq message into buf on one line, without the trailing
 * newline. */
static void pg_oneline(char *buf, size_t len, const char *msg)
{
	size_t i, j = 0;

	if (!len)
		return;
	if (!msg)
		msg = "unknown error";
	for (i = 0; msg[i] && j + 1 < len; i++) {
		char c = msg[i];

		if (c == '\n' || c == '\t' || c == '\r')
			c = ' ';
		if (c == ' ' && (j == 0 || buf[j - 1] == ' '))
			continue;
		buf[j++] = c;
	}
	while (j > 0 && buf[j - 1] == ' ')
		j--;
	buf[j] = '\0';
}

/* Does msg hold 4 consecutive bytes of secret (all of it when shorter)? */
static int pg_has_fragment(const char *msg, const char *secret)
{
	size_t sl, w, i;

	if (!secret || !*secret)
		return 0;
	sl = strlen(secret);
	w = sl < 4 ? sl : 4;
	for (i = 0; i + w <= sl; i++)
		if (memmem(msg, strlen(msg), secret + i, w))
			return 1;
	return 0;
}

void pg_conn_error(const struct db *d, PGconn *conn, char *buf, size_t len)
{
	int i;

	if (!len)
		return;
	pg_oneline(buf, len, conn ? PQerrorMessage(conn) : "out of memory");
	for (i = 0; d && i < 3; i++)
		if (pg_has_fragment(buf, d->secret[i])) {
			snprintf(buf, len,
				 "libpq's message is not shown: it quotes "
				 "part of the password");
			return;
		}
}

/* Copies the password and sslpassword of conninfo into d->secret. 0, or
 * -EINVAL when libpq cannot parse conninfo (its message is dropped: it
 * may quote the password), or -ENOMEM. */
static int pg_conninfo_check(struct db *d, const char *conninfo)
{
	PQconninfoOption *opts, *o;
	char *perr = NULL;
	int rc = 0;

	if (!*conninfo)
		return 0; /* libpq's defaults and environment */
	/* A URI's userinfo as written, up to the last '@' of the authority:
	 * an unescaped '@' in the password makes libpq take a part of it
	 * for the host name, which its messages then quote. */
	if (!strncmp(conninfo, "postgresql://", 13) ||
	    !strncmp(conninfo, "postgres://", 11)) {
		const char *a = strstr(conninfo, "://") + 3;
		size_t al = strcspn(a, "/?");
		const char *at = NULL, *q;

		for (q = a; q < a + al; q++)
			if (*q == '@')
				at = q;
		if (at && at > a) {
			d->secret[2] = strndup(a, (size_t)(at - a));
			if (!d->secret[2])
				return -ENOMEM;
		}
	}
	opts = PQconninfoParse(conninfo, &perr);
	if (!opts) {
		rc = perr ? -EINVAL : -ENOMEM;
		if (perr) {
			/* may quote the password: wiped, never logged */
			explicit_bzero(perr, strlen(perr));
			PQfreemem(perr);
		}
		return rc;
	}
	for (o = opts; o->keyword; o++) {
		int i = !strcmp(o->keyword, "password")	     ? 0
			: !strcmp(o->keyword, "sslpassword") ? 1
							     : -1;

		if (i < 0 || !o->val || !*o->val)
			continue;
		d->secret[i] = strdup(o->val);
		if (!d->secret[i]) {
			rc = -ENOMEM;
			break;
		}
	}
	PQconninfoFree(opts);
	return rc;
}

/* Server notices (RAISE WARNING in migrations, "already exists, skipping"
 * notices) go to our log. */
static void pg_notice(void *arg, const PGresult *res)
{
	const char *sev =
	    PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char line[1024];

	(void)arg;
	pg_oneline(line, sizeof(line), msg);
	if (sev && !strcmp(sev, "WARNING"))
		log_warn("database: %s", line);
	else
		log_debug("database: %s", line);
}

/* Per-session settings, after every connect and reset. */
static int pg_session_setup(PGconn *conn, char *err, size_t err_len)
{
	const char *p[1] = {DB_STATEMENT_TIMEOUT};
	PGresult *res;
	int rc = 0;

	res = PQexecParams(conn,
			   "SELECT pg_catalog.set_config('statement_timeout', "
			   "$1::text, false)",
			   1, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_oneline(err, err_len, PQerrorMessage(conn));
		rc = -EIO;
	}
	PQclear(res);
	return rc;
}

/* A new connection, ready for use, or NULL with the reason in err. */
static PGconn *pg_connect(struct db *d, char *err, size_t err_len)
{
	PGconn *conn;

	conn = PQconnectdbParams(d->kw, d->val, 1);
	if (!conn) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK)
		goto fail;
	PQsetNoticeReceiver(conn, pg_notice, NULL);
	if (pg_session_setup(conn, err, err_len))
		goto fail_setup;
	return conn;

fail:
	pg_conn_error(d, conn, err, err_len);
fail_setup:
	PQfinish(conn);
	return NULL;
}

/* A pooled operation's log line: at debug level for a quiet one (the
 * heartbeat, every second: its caller logs a failing streak once). */
#define PG_LOG(x, lvl, ...)                                                    \
	log_msg((x)->quiet ? LOG_LVL_DEBUG : (lvl), __VA_ARGS__)

/* PQreset and redo the session settings. 0 or -EIO. */
static int pg_reset(struct pg_ctx *x)
{
	char err[512];

	PG_LOG(x, LOG_LVL_WARN,
	       "database: connection lost during %s, reconnecting", x->what);
	PQreset(x->conn);
	pg_stmts_forget(x->d, x->slot); /* a new session */
	if (PQstatus(x->conn) != CONNECTION_OK) {
		pg_conn_error(x->d, x->conn, err, sizeof(err));
		PG_LOG(x, LOG_LVL_ERROR, "database: reconnect failed: %s", err);
		return -errmap_sqlstate(NULL); /* EIO, cause "lost" */
	}
	if (pg_session_setup(x->conn, err, sizeof(err))) {
		PG_LOG(x, LOG_LVL_ERROR,
		       "database: session setup after reconnect failed: %s",
		       err);
		return -EIO;
	}
	PG_LOG(x, LOG_LVL_INFO, "database: reconnected");
	return 0;
}

/* Takes a pooled connection, connecting the slot if it has none yet. When
 * every slot is busy it waits for one to be free, at most the operation's
 * statement bound (x->timeout_ms, or DB_STATEMENT_TIMEOUT_MS for an
 * unbounded one): a holder stuck on a server that does not answer must not
 * hold every other caller forever. 0 or -EIO (no connection, or none came
 * free in time: logged, cause "pool"). */
static int pg_take(struct db *d, struct pg_ctx *x)
{
	int wait_ms =
	    x->timeout_ms > 0 ? x->timeout_ms : DB_STATEMENT_TIMEOUT_MS;
	struct timespec until;
	char err[512];
	int i, fresh, expired = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&d->lock);
	for (;;) {
		fresh = -1;
		/* A bulk operation takes no slot while its share is used up:
		 * the rest stay for everyone else. */
		for (i = 0;
		     i < d->size && !(x->bulk && d->bulk_busy >= d->bulk_max);
		     i++) {
			if (d->busy[i])
				continue;
			if (d->conns[i]) {
				d->busy[i] = 1;
				d->bulk_busy += x->bulk;
				x->slot = i;
				x->conn = d->conns[i];
				pthread_mutex_unlock(&d->lock);
				return 0;
			}
			if (fresh < 0)
				fresh = i;
		}
		if (fresh >= 0)
			break;
		/* Timed out: after one more look above (a timed-out wait may
		 * have taken the signal of a slot given back). */
		if (expired) {
			pthread_mutex_unlock(&d->lock);
			PG_LOG(x, LOG_LVL_ERROR,
			       "database: %s: no connection of the pool of "
			       "%d came free within %d ms",
			       x->what, d->size, wait_ms);
			return -errmap_db_pool_wait();
		}
		expired = pthread_cond_timedwait(&d->cond, &d->lock, &until) ==
			  ETIMEDOUT;
	}
	d->busy[fresh] = 1;
	d->bulk_busy += x->bulk;
	pthread_mutex_unlock(&d->lock);

	x->slot = fresh;
	pg_stmts_forget(d, fresh); /* a new session */
	x->conn = pg_connect(d, err, sizeof(err));
	if (x->conn)
		return 0;
	PG_LOG(x, LOG_LVL_ERROR, "database: cannot connect: %s", err);
	pthread_mutex_lock(&d->lock);
	d->busy[fresh] = 0;
	d->bulk_busy -= x->bulk;
	/* Every waiter looks: a bulk one may not take what it is told of. */
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return -errmap_sqlstate(NULL); /* EIO, cause "lost" */
}

static void pg_give(struct db *d, struct pg_ctx *x)
{
	if (x->timed_out) {
		/* Mid-statement on a server that does not answer: never
		 * reuse it; the slot reconnects when next taken. */
		PQfinish(x->conn);
		x->conn = NULL;
		pg_stmts_forget(d, x->slot);
	}
	pthread_mutex_lock(&d->lock);
	d->conns[x->slot] = x->conn;
	d->busy[x->slot] = 0;
	d->bulk_busy -= x->bulk;
	/* Every waiter looks: a bulk one woken alone while its share is used
	 * up would take nothing, and a plain waiter would miss the slot. */
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static int pg_state_is_lost(const char *state)
{
	return !strncmp(state, "08", 2) || !strcmp(state, "57P01") ||
	       !strcmp(state, "57P02") || !strcmp(state, "57P03");
}

int64_t pg_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pg_wait(struct pg_ctx *x, int64_t deadline)
{
	while (PQisBusy(x->conn)) {
		struct pollfd pfd = {.fd = PQsocket(x->conn), .events = POLLIN};
		int64_t left = x->timeout_ms ? deadline - pg_now_ms() : -1;
		int n;

		if (x->timeout_ms && left <= 0) {
			PG_LOG(x, LOG_LVL_ERROR,
			       "database: %s: no answer in %d ms; dropping "
			       "the connection",
			       x->what, x->timeout_ms);
			x->lost = 1;
			x->timed_out = 1;
			return -1;
		}
		n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno != EINTR)
			return -1;
		if (n > 0 && !PQconsumeInput(x->conn))
			return -1;
	}
	return 0;
}

PGresult *pg_last_result(struct pg_ctx *x, int64_t deadline)
{
	PGresult *last = NULL, *r;

	for (;;) {
		if (pg_wait(x, deadline)) {
			PQclear(last);
			return NULL;
		}
		r = PQgetResult(x->conn);
		if (!r)
			break;
		PQclear(last);
		last = r;
	}
	return last;
}

int pg_send(struct pg_ctx *x, const char *name, const char *sql, int nparams,
	    const char *const *params)
{
	if (name[0])
		return PQsendQueryPrepared(x->conn, name, nparams, params, NULL,
					   NULL, 0);
	return PQsendQueryParams(x->conn, sql, nparams, NULL, params, NULL,
				 NULL, 0);
}

/* BEGIN and sql in one round trip (libpq pipeline mode), with pg_wait's
 * deadline: NULL when sending failed, the connection broke, or the
 * deadline passed (the connection is marked lost: reset, not reused).
 * Returns BEGIN's result when it failed, else sql's last result. */
static PGresult *pg_exec_begin(struct pg_ctx *x, const char *name,
			       const char *sql, int nparams,
			       const char *const *params)
{
	int64_t deadline = pg_now_ms() + x->timeout_ms;
	PGresult *begin = NULL, *last = NULL, *r;
	int query = 0; /* 0: BEGIN's results, 1: sql's */

	if (!PQenterPipelineMode(x->conn))
		return NULL;
	if (!PQsendQueryParams(x->conn, "BEGIN", 0, NULL, NULL, NULL, NULL,
			       0) ||
	    !pg_send(x, name, sql, nparams, params) ||
	    !PQpipelineSync(x->conn)) {
		x->lost = 1; /* mid-pipeline: reset, not reused */
		return NULL;
	}
	for (;;) {
		if (pg_wait(x, deadline)) {
			x->lost = 1;
			PQclear(begin);
			PQclear(last);
			return NULL;
		}
		r = PQgetResult(x->conn);
		if (!r) { /* the end of one query's results */
			query++;
			continue;
		}
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			break;
		}
		if (query == 0) {
			PQclear(begin);
			begin = r;
		} else {
			PQclear(last);
			last = r;
		}
	}
	if (!PQexitPipelineMode(x->conn))
		x->lost = 1;
	if (!begin || PQresultStatus(begin) != PGRES_COMMAND_OK) {
		PQclear(last);
		return begin;
	}
	PQclear(begin);
	return last;
}

/* PQexecParams (or PQexecPrepared: pg_stmt_name) with a deadline: NULL
 * when sending failed, the connection broke, or the deadline passed (then
 * the connection is marked lost: it is mid-statement and gets reset, not
 * reused). Returns the last result. A transaction's BEGIN still due
 * (x->begin_due) goes with sql. *named: sql ran by name. */
static PGresult *pg_exec_timed(struct pg_ctx *x, const char *sql, int nparams,
			       const char *const *params, int *named)
{
	int64_t deadline;
	PGresult *last = NULL;
	char name[32];

	/* before the pipeline, and before any BEGIN still due */
	*named = pg_stmt_name(x, sql, nparams, name, sizeof(name), &last);
	if (*named < 0)
		return last;
	deadline = pg_now_ms() + x->timeout_ms;
	if (x->begin_due) {
		x->begin_due = 0;
		return pg_exec_begin(x, name, sql, nparams, params);
	}
	if (!x->timeout_ms && name[0])
		return PQexecPrepared(x->conn, name, nparams, params, NULL,
				      NULL, 0);
	if (!x->timeout_ms)
		return PQexecParams(x->conn, sql, nparams, NULL, params, NULL,
				    NULL, 0);
	if (!pg_send(x, name, sql, nparams, params))
		return NULL;
	return pg_last_result(x, deadline);
}

/* Runs one statement. On success returns 0 and, when out is not NULL, the
 * result (the caller clears it). On failure returns -errno, logs, clears
 * the result, and notes in x whether the connection is lost or the failure
 * transient. */
int pg_exec(struct pg_ctx *x, const char *sql, int nparams,
	    const char *const *params, PGresult **out)
{
	PGresult *res;
	uint64_t t0 = ctr_now_ns();
	int named = 0;

	if (out)
		*out = NULL;
	res = pg_exec_timed(x, sql, nparams, params, &named);
	stage_observe_since(STG_SQL_STATEMENT, t0);
	return pg_result_check(x, res, named, out);
}

int pg_result_check(struct pg_ctx *x, PGresult *res, int named, PGresult **out)
{
	ExecStatusType st;
	const char *state = NULL;
	char msg[1024];
	int err;

	if (out)
		*out = NULL;
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (out)
			*out = res;
		else
			PQclear(res);
		return 0;
	}

	x->stmt_failed = 1;
	if (res)
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (res && PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
		pg_oneline(msg, sizeof(msg),
			   PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	else
		pg_conn_error(x->d, x->conn, msg, sizeof(msg));

	if (!res || PQstatus(x->conn) != CONNECTION_OK ||
	    (state && pg_state_is_lost(state))) {
		x->lost = 1;
		err = errmap_sqlstate(NULL);
		PG_LOG(x, LOG_LVL_WARN,
		       "database: %s: connection failure (%s): %s", x->what,
		       state ? state : "no SQLSTATE", msg);
	} else if (named > 0 && pg_stmt_stale(x, state, msg)) {
		x->retry = 1; /* its transaction again, prepared anew */
		err = EIO;
	} else if (state &&
		   (!strcmp(state, "40001") || !strcmp(state, "40P01") ||
		    (x->retry_unique && !strcmp(state, "23505")))) {
		x->retry = 1;
		err = errmap_sqlstate(state);
		PG_LOG(x, LOG_LVL_INFO,
		       "database: %s: transient failure (%s): %s", x->what,
		       state, msg);
	} else {
		err = errmap_sqlstate(state);
		if (!err)
			err = EIO;
		PG_LOG(x, LOG_LVL_ERROR, "database: %s failed (%s): %s",
		       x->what, state ? state : "no SQLSTATE", msg);
	}
	PQclear(res);
	return -err;
}

/* Sleeps before retry number attempt (0-based): 10 ms doubling, capped at
 * 400 ms, with the upper half jittered. */
static void db_backoff(int attempt)
{
	static __thread unsigned int seed;
	struct timespec ts;
	long base, ms;

	if (!seed)
		seed = (unsigned int)time(NULL) ^ (unsigned int)getpid() ^
		       (unsigned int)(uintptr_t)&ts;
	base = 10L << (attempt < 6 ? attempt : 6);
	if (base > 400)
		base = 400;
	ms = base / 2 + rand_r(&seed) % (base / 2 + 1);
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
}

static void pg_rollback(struct pg_ctx *x)
{
	PGTransactionStatusType ts = PQtransactionStatus(x->conn);

	if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
		PQclear(PQexec(x->conn, "ROLLBACK"));
}

/* Runs fn on a pooled connection, in a transaction when txn is set, with
 * the reconnect and retry policy; bulk: counted in the bulk share
 * (db_run_bulk). Returns fn's result or the failure. */
static int db_run_ctx(struct db *d, const char *what, int txn, int retry_unique,
		      int timeout_ms, int bulk, int quiet, db_op_fn fn,
		      void *arg)
{
	struct pg_ctx x = {.d = d,
			   .what = what,
			   .retry_unique = retry_unique,
			   .timeout_ms = timeout_ms,
			   .bulk = bulk,
			   .quiet = quiet};
	int rc, attempt = 0, resets = 0, open;
	uint64_t t0 = ctr_now_ns(), t1;

	rc = pg_take(d, &x);
	if (rc) {
		hist_observe_since(HIST_SQL, t0, 1);
		sql_what_observe_since(what, t0);
		return rc;
	}
	for (;;) {
		x.lost = 0;
		x.retry = 0;
		x.in_commit = 0;
		if (PQstatus(x.conn) != CONNECTION_OK) {
			if (resets++) {
				rc = -EIO;
				break;
			}
			rc = pg_reset(&x);
			if (rc)
				break;
		}
		/* BEGIN is sent with the transaction's first statement (one
		 * round trip): pg_exec_begin. */
		x.begin_due = txn;
		rc = fn(&x, arg);
		open = txn && !x.begin_due; /* none if fn ran no statement */
		x.begin_due = 0;
		if (!rc && open) {
			x.in_commit = 1;
			t1 = ctr_now_ns();
			rc = pg_exec(&x, "COMMIT", 0, NULL, NULL);
			stage_observe_since(STG_SQL_COMMIT, t1);
		}
		if (!rc)
			break;
		if (open && !x.lost)
			pg_rollback(&x);
		if (x.lost && !x.in_commit && !resets && !x.timed_out) {
			resets++;
			rc = pg_reset(&x);
			if (rc)
				break;
			continue;
		}
		if (x.lost && x.in_commit) {
			log_error("database: %s: connection lost at COMMIT, "
				  "outcome unknown",
				  what);
			rc = -EINPROGRESS;
			break;
		}
		if (x.retry && attempt < DB_MAX_RETRIES) {
			db_backoff(attempt++);
			continue;
		}
		break;
	}
	pg_give(d, &x);
	/* Failed: a statement or the connection did (not fn's own answer). */
	hist_observe_since(HIST_SQL, t0,
			   rc && (x.stmt_failed || x.lost || resets));
	sql_what_observe_since(what, t0);
	return rc;
}

int db_run_timed(struct db *d, const char *what, int txn, int retry_unique,
		 int timeout_ms, db_op_fn fn, void *arg)
{
	return db_run_ctx(d, what, txn, retry_unique, timeout_ms, 0, 0, fn,
			  arg);
}

int db_run_bulk(struct db *d, const char *what, int txn, int timeout_ms,
		db_op_fn fn, void *arg)
{
	return db_run_ctx(d, what, txn, 0, timeout_ms, 1, 0, fn, arg);
}

int db_run(struct db *d, const char *what, int txn, int retry_unique,
	   db_op_fn fn, void *arg)
{
	return db_run_timed(d, what, txn, retry_unique, DB_STATEMENT_TIMEOUT_MS,
			    fn, arg);
}

/* d->live_kw/live_val: d->kw/val (n of them) and, after the conninfo so
 * that they win over it, fast checks for a silently dead peer (review-36
 * R4): an idle liveness connection is probed after 5 s and dropped after 3
 * unanswered probes 2 s apart, and data unacknowledged for 10 s (libpq 12+:
 * tcp_user_timeout) ends it too, so the watch sees the end within seconds,
 * not the minutes of the pool's keepalives or TCP's retransmissions.
 * Ignored on a Unix socket. */
static void live_conninfo(struct db *d, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		d->live_kw[i] = d->kw[i];
		d->live_val[i] = d->val[i];
	}
	d->live_kw[n] = "keepalives";
	d->live_val[n++] = "1";
	d->live_kw[n] = "keepalives_idle";
	d->live_val[n++] = "5";
	d->live_kw[n] = "keepalives_interval";
	d->live_val[n++] = "2";
	d->live_kw[n] = "keepalives_count";
	d->live_val[n++] = "3";
	if (PQlibVersion() >= 120000) {
		d->live_kw[n] = "tcp_user_timeout";
		d->live_val[n++] = "10000";
	}
	d->live_kw[n] = NULL;
	d->live_val[n] = NULL;
}

struct db *db_open(const char *conninfo, int pool_size, char *err,
		   size_t err_len)
{
	pthread_condattr_t ca;
	struct db *d;
	char why[512];
	int n = 0, rc;

	if (err && err_len)
		err[0] = '\0';
	if (pool_size < 1)
		pool_size = 1;
	if (pool_size > DB_POOL_MAX)
		pool_size = DB_POOL_MAX;

	d = calloc(1, sizeof(*d));
	if (!d)
		goto fail;
	d->size = pool_size;
	/* Two slots are never the exports' (a pool of 1 to 3 keeps what it
	 * can: one export at a time there). */
	d->bulk_max = pool_size > 3 ? pool_size - 2 : 1;
	d->conns = calloc((size_t)pool_size, sizeof(*d->conns));
	if (!d->conns)
		goto fail_conns;
	d->busy = calloc((size_t)pool_size, sizeof(*d->busy));
	if (!d->busy)
		goto fail_busy;
	d->conninfo = strdup(conninfo ? conninfo : "");
	if (!d->conninfo)
		goto fail_conninfo;
	rc = pg_conninfo_check(d, d->conninfo);
	if (rc == -EINVAL && err && err_len)
		snprintf(err, err_len,
			 "[postgres] conninfo is malformed: libpq cannot parse "
			 "it (its message is not shown: it may quote the "
			 "password; look for a bare %% in a URI, or a space "
			 "or quote in an unquoted value)");
	if (rc)
		goto fail_mutex;
	if (pthread_mutex_init(&d->lock, NULL))
		goto fail_mutex;
	/* pg_take's bounded waits are on the monotonic clock. */
	if (pthread_condattr_init(&ca))
		goto fail_cond;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(&d->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (rc)
		goto fail_cond;
	if (pthread_mutex_init(&d->live_lock, NULL))
		goto fail_live;
	if (pthread_mutex_init(&d->beat_lock, NULL))
		goto fail_beat;
	if (pthread_condattr_init(&ca))
		goto fail_live_cond;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(&d->live_cond, &ca);
	pthread_condattr_destroy(&ca);
	if (rc)
		goto fail_live_cond;
	d->live_grace_s = DB_LIVE_GRACE_S;

	/* Defaults first: keywords in the conninfo (expanded from dbname,
	 * which comes last) override them. */
	if (!getenv("PGCONNECT_TIMEOUT")) {
		d->kw[n] = "connect_timeout";
		d->val[n++] = DB_CONNECT_TIMEOUT;
	}
	d->kw[n] = "fallback_application_name";
	d->val[n++] = "custodyfs";
	d->kw[n] = "keepalives_idle";
	d->val[n++] = "30";
	d->kw[n] = "keepalives_interval";
	d->val[n++] = "10";
	d->kw[n] = "keepalives_count";
	d->val[n++] = "3";
	d->kw[n] = "dbname";
	d->val[n++] = d->conninfo;
	/* After the conninfo, so that it wins over it and PGCLIENTENCODING:
	 * the hash chain (db_chain.c) hashes the bytes libpq returns as
	 * UTF-8, and file names are UTF-8 bytes. */
	d->kw[n] = "client_encoding";
	d->val[n++] = "UTF8";
	d->kw[n] = NULL;
	d->val[n] = NULL;
	live_conninfo(d, n);

	d->conns[0] = pg_connect(d, why, sizeof(why));
	if (!d->conns[0]) {
		if (err && err_len)
			snprintf(err, err_len,
				 "cannot connect to PostgreSQL: %s", why);
		goto fail_connect;
	}
	log_info("database: connected to \"%s\" on %s port %s (pool of %d)",
		 PQdb(d->conns[0]), PQhost(d->conns[0]), PQport(d->conns[0]),
		 pool_size);
	return d;

fail_connect:
	pthread_cond_destroy(&d->live_cond);
fail_live_cond:
	pthread_mutex_destroy(&d->beat_lock);
fail_beat:
	pthread_mutex_destroy(&d->live_lock);
fail_live:
	pthread_cond_destroy(&d->cond);
fail_cond:
	pthread_mutex_destroy(&d->lock);
fail_mutex:
	free(d->secret[0]);
	free(d->secret[1]);
	free(d->secret[2]);
	free(d->conninfo);
fail_conninfo:
	free(d->busy);
fail_busy:
	free(d->conns);
fail_conns:
	free(d);
fail:
	if (err && err_len && !err[0])
		snprintf(err, err_len, "out of memory");
	return NULL;
}

/* Tried, never waited for: held elsewhere (a session of this process's the
 * server has not seen die yet, or a colliding key), it is not taken, and no
 * request waits for it (review-31 R2). */
static const char db_sql_live_lock[] =
    "SELECT pg_try_advisory_lock(" LIVE_KEY("$1::text") ")";

/* PQexecParams on the liveness connection c, bounded on the client by
 * DB_LIVE_ANSWER_MS (review-36 R4: its callers hold live_lock). The last
 * result, or NULL when sending failed, the connection broke, or no answer
 * came in time (then c is mid-statement: the caller finishes it). */
static PGresult *live_exec(PGconn *c, const char *sql, int nparams,
			   const char *const *params)
{
	int64_t deadline = pg_now_ms() + DB_LIVE_ANSWER_MS;
	PGresult *last = NULL, *r;

	if (!PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0))
		return NULL;
	for (;;) {
		while (PQisBusy(c)) {
			struct pollfd pfd = {.fd = PQsocket(c),
					     .events = POLLIN};
			int64_t left = deadline - pg_now_ms();
			int k;

			if (left <= 0)
				goto fail;
			k = poll(&pfd, 1, (int)left);
			if (k < 0 && errno != EINTR)
				goto fail;
			if (k > 0 && !PQconsumeInput(c))
				goto fail;
		}
		r = PQgetResult(c);
		if (!r)
			return last;
		PQclear(last);
		last = r;
	}

fail:
	PQclear(last);
	return NULL;
}

/* A new liveness connection (d->live_kw), its session set up with bounded
 * round trips, or NULL with the reason in err. */
static PGconn *live_connect(struct db *d, char *err, size_t err_len)
{
	static const char setup[] =
	    "SELECT pg_catalog.set_config('statement_timeout', $1::text, "
	    "false)";
	static const char setup14[] =
	    "SELECT pg_catalog.set_config('statement_timeout', $1::text, "
	    "false), pg_catalog.set_config('idle_session_timeout', '0', "
	    "false)";
	const char *p[1] = {DB_STATEMENT_TIMEOUT};
	PGresult *res;
	PGconn *c;

	c = PQconnectdbParams(d->live_kw, d->live_val, 1);
	if (!c) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		pg_conn_error(d, c, err, err_len);
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeReceiver(c, pg_notice, NULL);
	/* The session is idle for the process's life: idle_session_timeout
	 * (PostgreSQL 14+; set on the role, the database or in the
	 * conninfo's options) would end it, and free the lock, every period
	 * (review-36 R5). */
	res =
	    live_exec(c, PQserverVersion(c) >= 140000 ? setup14 : setup, 1, p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res)
			pg_conn_error(d, c, err, err_len);
		else
			snprintf(err, err_len,
				 "session setup: no answer within %d ms",
				 DB_LIVE_ANSWER_MS);
		PQclear(res);
		PQfinish(c);
		return NULL;
	}
	PQclear(res);
	return c;
}

/* Ends a liveness connection (NULL: none). Its lock is let go first, so
 * it is free when this returns: closing the session alone frees it only
 * once the server's backend has gone, which may be after a sweep that
 * runs next (best effort, bounded: on an error or no answer the session's
 * end frees it). */
static void live_end(PGconn *c)
{
	if (!c)
		return;
	if (PQstatus(c) == CONNECTION_OK &&
	    PQtransactionStatus(c) == PQTRANS_IDLE)
		PQclear(
		    live_exec(c, "SELECT pg_advisory_unlock_all()", 0, NULL));
	PQfinish(c);
}

/* Caller holds d->live_lock. d->live: a new connection holding the
 * liveness lock of d->claimer. 0 or -errno. */
static int live_take(struct db *d)
{
	const char *p[1] = {d->claimer};
	char err[512];
	PGresult *res;
	PGconn *c;
	int rc = 0;

	if (d->live) /* found ended (live_ended): nothing to ask it */
		PQfinish(d->live);
	d->live = NULL;
	c = live_connect(d, err, sizeof(err));
	if (!c) {
		if (!d->live_failing)
			log_error("database: no connection for this process's "
				  "liveness lock (tried again every %d ms): %s",
				  DB_LIVE_WATCH_MS, err);
		d->live_failing = 1;
		return -EIO;
	}
	res = live_exec(c, db_sql_live_lock, 1, p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res)
			pg_conn_error(d, c, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "no answer within %d ms",
				 DB_LIVE_ANSWER_MS);
		if (!d->live_failing)
			log_error("database: liveness lock not taken (tried "
				  "again every %d ms): %s",
				  DB_LIVE_WATCH_MS, err);
		rc = -EIO;
	} else if (PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 't') {
		/* Most likely another mount's sweep, whose transaction
		 * try-locks the key of a claimer it found gone and holds it
		 * until its commit (the key is free again at the next try),
		 * or this process's old session the server has not seen end
		 * yet: no error of this process's (review-37 F8). A start's
		 * caller (db_set_claimer) gets -EBUSY and says so. */
		if (!d->live_failing)
			log_info("database: liveness lock held by another "
				 "session (another mount's sweep, which takes "
				 "this process for gone until its commit, or "
				 "this process's old session not yet ended on "
				 "the server): not taken (tried again every "
				 "%d ms)",
				 DB_LIVE_WATCH_MS);
		rc = -EBUSY;
	}
	PQclear(res);
	if (rc) {
		PQfinish(c);
		d->live_failing = 1;
		return rc;
	}
	if (d->live_failing)
		log_info("database: this process's liveness lock is held "
			 "again");
	d->live_failing = 0;
	d->live = c;
	return 0;
}

/* Caller holds d->live_lock: has d->live's session ended? Read without a
 * round trip (never blocks): what the server sent meanwhile (a FATAL
 * message and the end of the stream when it ended the session) is read,
 * and the connection is then bad. A silently dropped connection shows as
 * one once the client's keepalives give up (about a minute); meanwhile its
 * server backend, and so the lock, may live on too. */
static int live_ended(PGconn *c)
{
	PGresult *res;

	if (PQstatus(c) != CONNECTION_OK || !PQconsumeInput(c))
		return 1;
	while (!PQisBusy(c) && (res = PQgetResult(c)))
		PQclear(res);
	return PQstatus(c) != CONNECTION_OK;
}

/* clang-format off */
/* $1 claimer, $2 its grace in seconds, $3 host, $4 pid: its heartbeat, by
 * the server's clock. */
static const char db_sql_live_beat[] =
	"INSERT INTO live_heartbeat AS h (claimer, seen_at, grace, host, pid)"
	" VALUES ($1::text, clock_timestamp(),"
	" make_interval(secs => $2::integer), $3::text, $4::bigint)"
	" ON CONFLICT (claimer) DO UPDATE SET seen_at = excluded.seen_at,"
	" grace = excluded.grace, host = excluded.host, pid = excluded.pid";
/* $1 claimer: its heartbeat ends (a clean stop, a claimer replaced):
 * stale from now on (written if it had none), not deleted, so that its
 * rows' sweeps take it for gone once its lock is free, as a crash's, and
 * not as a claimer with no heartbeat row (a daemon of before migration
 * 17: DB_LIVE_NOBEAT_MS, review-37 F2). db_live_beats_sweep deletes it
 * then. */
static const char db_sql_live_unbeat[] =
	"INSERT INTO live_heartbeat AS h (claimer, seen_at, grace)"
	" VALUES ($1::text, '-infinity', interval '0 s')"
	" ON CONFLICT (claimer) DO UPDATE SET seen_at = '-infinity'";
/* The heartbeats of gone processes (their liveness lock free, their
 * heartbeat past its grace, or ended) go (LIVE_GONE). */
static const char db_sql_live_beats_gone[] =
	"DELETE FROM live_heartbeat h WHERE " LIVE_GONE("h.claimer");
/* clang-format on */

/* A new connection for the heartbeat, with the liveness connection's
 * keywords (d->live_kw: fast dead-peer checks), made without blocking past
 * deadline (pg_now_ms()): PQconnectPoll ignores connect_timeout, and all
 * the conninfo's host addresses are tried within this one deadline. Only
 * a host name's lookup, which libpq makes synchronously, is not bounded
 * by it (hostaddr avoids it). NULL on a failure or at the deadline. */
static PGconn *beat_connect(struct db *d, int64_t deadline)
{
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	PGconn *c = PQconnectStartParams(d->live_kw, d->live_val, 1);

	if (!c || PQstatus(c) == CONNECTION_BAD)
		goto fail;
	while (st != PGRES_POLLING_OK) {
		struct pollfd pfd = {
		    .fd = PQsocket(c),
		    .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
		int64_t left = deadline - pg_now_ms();
		int n;

		if (st == PGRES_POLLING_FAILED || pfd.fd < 0 || left <= 0)
			goto fail;
		n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno != EINTR)
			goto fail;
		if (n > 0)
			st = PQconnectPoll(c);
	}
	PQsetNoticeReceiver(c, pg_notice, NULL);
	return c;

fail:
	PQfinish(c);
	return NULL;
}

/* Caller holds d->beat_lock: runs sql (n parameters p, no result rows) on
 * the heartbeat's own connection (d->beat_conn, made first when there is
 * none or it broke), all of it, connect included, within deadline. Never
 * a pool slot (a saturated pool must not hold up the heartbeat, review-37
 * F4) nor the liveness connection (its loss is what the heartbeat
 * outlives, review-36 R1, R2); never tried again within the call. A
 * connection that failed or passed the deadline is dropped: the next call
 * makes a new one. 0 or -errno. */
static int beat_exec(struct db *d, const char *sql, int n, const char *const *p,
		     int64_t deadline)
{
	struct pg_ctx x = {.d = d,
			   .slot = -1,
			   .what = "liveness heartbeat",
			   .timeout_ms = DB_LIVE_ANSWER_MS,
			   .quiet = 1};
	PGresult *res;
	int rc;

	if (d->beat_conn && PQstatus(d->beat_conn) != CONNECTION_OK) {
		PQfinish(d->beat_conn);
		d->beat_conn = NULL;
	}
	if (!d->beat_conn)
		d->beat_conn = beat_connect(d, deadline);
	if (!d->beat_conn)
		return -errmap_sqlstate(NULL); /* EIO, cause "lost" */
	x.conn = d->beat_conn;
	if (!PQsendQueryParams(x.conn, sql, n, NULL, p, NULL, NULL, 0))
		goto lost;
	res = pg_last_result(&x, deadline);
	if (!res)
		goto lost;
	rc = PQresultStatus(res) == PGRES_COMMAND_OK
		 ? 0
		 : -errmap_sqlstate(PQresultErrorField(res, PG_DIAG_SQLSTATE));
	PQclear(res);
	return rc;

lost:
	PQfinish(d->beat_conn);
	d->beat_conn = NULL;
	return -errmap_sqlstate(NULL);
}

/* CLOCK_MONOTONIC now, in ms (never 0 on a running system). */
static int64_t live_mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Caller holds d->beat_lock: writes (gone 0) or ends (gone 1) claimer's
 * heartbeat on its own connection (beat_exec), the whole of it (a new
 * connection to any of the host addresses, then the statement) within
 * DB_LIVE_ANSWER_MS whatever connect_timeout says, and never waiting for
 * a pool slot (review-37 F4). With the nap between two beats, a live
 * process's heartbeats are thus at most DB_LIVE_ANSWER_MS +
 * DB_LIVE_WATCH_MS apart while the server answers (6 s, below the
 * smallest live_grace but for 2 to 5 s). A failing streak is logged
 * once. 0 or -errno. */
static int live_beat(struct db *d, const char *claimer, int gone)
{
	char grace[16], host[256], pid[24];
	const char *p[4] = {claimer, grace, host, pid};
	int rc;

	if (gone) {
		rc = beat_exec(d, db_sql_live_unbeat, 1, p,
			       pg_now_ms() + DB_LIVE_ANSWER_MS);
	} else {
		snprintf(grace, sizeof(grace), "%d", d->live_grace_s);
		if (gethostname(host, sizeof(host)))
			host[0] = '\0';
		host[sizeof(host) - 1] = '\0';
		snprintf(pid, sizeof(pid), "%ld", (long)getpid());
		rc = beat_exec(d, db_sql_live_beat, 4, p,
			       pg_now_ms() + DB_LIVE_ANSWER_MS);
	}

	if (gone) {
		if (rc)
			log_warn("database: heartbeat of %s not ended (%s): "
				 "it lapses %d s after its last write",
				 claimer, strerror(-rc), d->live_grace_s);
		return rc;
	}
	if (rc && !d->beat_failing)
		log_error("database: this process's heartbeat not written "
			  "(tried again every %d ms): %s; other mounts take "
			  "it for gone %d s after the last one while its "
			  "liveness lock is free",
			  DB_LIVE_WATCH_MS, strerror(-rc), d->live_grace_s);
	else if (!rc && d->beat_failing)
		log_info("database: this process's heartbeat is written "
			 "again");
	d->beat_failing = rc != 0;
	if (rc)
		atomic_store(&d->beat_since_ms, 0);
	else if (atomic_load(&d->beat_since_ms) == 0)
		atomic_store(&d->beat_since_ms, live_mono_ms());
	return rc;
}

/* The heartbeat's thread: every DB_LIVE_WATCH_MS, the current claimer's
 * heartbeat (none: nothing). Apart from the watch, and never under
 * live_lock: a re-take of the lock that waits for a connection (up to
 * connect_timeout per address, then two bounded round trips) must not
 * hold up the heartbeat past its grace (review-37 F1). d->claimer is
 * changed only with beat_lock held (db_set_claimer), which this holds. */
static void *live_beat_main(void *arg)
{
	struct db *d = arg;
	struct timespec nap = {0, 50 * 1000000L};
	int waited;

	while (!atomic_load(&d->beat_stop)) {
		pthread_mutex_lock(&d->beat_lock);
		if (d->claimer && !atomic_load(&d->beat_stop))
			live_beat(d, d->claimer, 0);
		pthread_mutex_unlock(&d->beat_lock);
		for (waited = 0;
		     waited < DB_LIVE_WATCH_MS && !atomic_load(&d->beat_stop);
		     waited += 50)
			nanosleep(&nap, NULL);
	}
	return NULL;
}

long db_live_steady_ms(struct db *d)
{
	int64_t since = d ? atomic_load(&d->beat_since_ms) : 0;

	return since ? (long)(live_mono_ms() - since) : 0;
}

/* db_live_watch's thread: every DB_LIVE_WATCH_MS, the process's heartbeat
 * is written (live_beat_main, on its own connection), and a lost liveness lock
 * is taken again (try-lock: never waits). Other processes take this one for
 * gone only when both the lock is free and the heartbeat is older than its
 * grace (LIVE_GONE). */
static void *live_watch_main(void *arg)
{
	struct db *d = arg;
	struct timespec until;

	pthread_mutex_lock(&d->live_lock);
	while (!d->live_stop) {
		if (d->claimer && (!d->live || live_ended(d->live))) {
			if (d->live && !d->live_failing)
				log_warn("database: this process's liveness "
					 "lock was lost (its session ended): "
					 "taking it again");
			live_take(d);
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += DB_LIVE_WATCH_MS / 1000;
		until.tv_nsec += (long)(DB_LIVE_WATCH_MS % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		while (!d->live_stop &&
		       pthread_cond_timedwait(&d->live_cond, &d->live_lock,
					      &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&d->live_lock);
	return NULL;
}

int db_live_watch(struct db *d, int grace_s)
{
	int rc;

	if (!d)
		return -EINVAL;
	if (d->live_watching)
		return 0;
	d->live_grace_s = grace_s > 0 ? grace_s : DB_LIVE_GRACE_S;
	d->live_stop = 0;
	atomic_store(&d->beat_stop, 0);
	rc = pthread_create(&d->beat_thread, NULL, live_beat_main, d);
	if (rc)
		return -rc;
	d->beat_running = 1;
	rc = pthread_create(&d->live_thread, NULL, live_watch_main, d);
	if (rc) {
		atomic_store(&d->beat_stop, 1);
		pthread_join(d->beat_thread, NULL);
		d->beat_running = 0;
		return -rc;
	}
	d->live_watching = 1;
	return 0;
}

int db_set_claimer(struct db *d, const char *claimer)
{
	char *c = claimer ? strdup(claimer) : NULL;
	char *old;
	int rc = 0;

	if (!d || (claimer && !c)) {
		free(c);
		return d ? -ENOMEM : -EINVAL;
	}
	/* No heartbeat of the old claimer is written after its row goes. */
	pthread_mutex_lock(&d->beat_lock);
	pthread_mutex_lock(&d->live_lock);
	old = d->claimer;
	d->claimer = c;
	live_end(d->live); /* the old claimer's lock goes with it */
	d->live = NULL;
	if (c)
		rc = live_take(d);
	pthread_mutex_unlock(&d->live_lock);
	if (old && (!c || strcmp(old, c)))
		live_beat(d, old, 1); /* best effort: a stale one is gone too */
	pthread_mutex_unlock(&d->beat_lock);
	free(old);
	return rc;
}

static int pg_live_beats_sweep(struct pg_ctx *x, void *arg)
{
	long *n = arg;
	PGresult *res = NULL;
	int rc = pg_exec(x, db_sql_live_beats_gone, 0, NULL, &res);

	if (rc == 0)
		*n = strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return rc;
}

long db_live_beats_sweep(struct db *d)
{
	long n = 0;
	int rc;

	if (!d)
		return -EINVAL;
	rc = db_run(d, "drop the heartbeats of gone processes", 0, 0,
		    pg_live_beats_sweep, &n);
	return rc ? rc : n;
}

int db_live_ensure(struct db *d)
{
	int rc = 0;

	if (!d)
		return -EINVAL;
	pthread_mutex_lock(&d->live_lock);
	if (!d->claimer) {
		rc = -EINVAL;
	} else if (!d->live || live_ended(d->live)) {
		if (d->live)
			log_warn("database: this process's liveness lock was "
				 "lost (its session ended): taking it again");
		rc = live_take(d);
	}
	pthread_mutex_unlock(&d->live_lock);
	return rc;
}

void db_close(struct db *d)
{
	int i;

	if (!d)
		return;
	/* The watch and the heartbeat first. */
	if (d->live_watching) {
		pthread_mutex_lock(&d->live_lock);
		d->live_stop = 1;
		pthread_cond_broadcast(&d->live_cond);
		pthread_mutex_unlock(&d->live_lock);
		pthread_join(d->live_thread, NULL);
	}
	if (d->beat_running) {
		atomic_store(&d->beat_stop, 1);
		pthread_join(d->beat_thread, NULL);
		d->beat_running = 0;
	}
	/* A clean stop: this process's heartbeat ends (best effort: else it
	 * lapses after its grace), then its liveness lock. */
	if (d->claimer && d->live_watching)
		live_beat(d, d->claimer, 1);
	for (i = 0; i < d->size; i++)
		if (d->conns[i])
			PQfinish(d->conns[i]);
	pg_stmts_free(d);
	if (d->live)
		PQfinish(d->live);
	if (d->beat_conn)
		PQfinish(d->beat_conn);
	live_nobeat_free(d);
	pthread_cond_destroy(&d->live_cond);
	pthread_mutex_destroy(&d->beat_lock);
	pthread_mutex_destroy(&d->live_lock);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d->secret[0]);
	free(d->secret[1]);
	free(d->secret[2]);
	free(d->conninfo);
	free(d->claimer);
	free(d->busy);
	free(d->conns);
	free(d);
}

static int pg_ping(struct pg_ctx *x, void *arg)
{
	(void)arg;
	return pg_exec(x, "SELECT 1", 0, NULL, NULL);
}

int db_ping(struct db *d)
{
	if (!d)
		return -EIO;
	return db_run(d, "ping", 0, 0, pg_ping, NULL) ? -EIO : 0;
}
