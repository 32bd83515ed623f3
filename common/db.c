/* db.c - the audit store in PostgreSQL, see db.h.
 *
 * Every statement goes through pg_exec() (PQexecParams, typed casts, the
 * PGresult cleared on every path) inside db_run(), which takes a pooled
 * connection, wraps the operation in a transaction when asked, resets a
 * lost connection and retries once, and retries deadlocks and
 * serialization failures a bounded number of times with jittered backoff.
 *
 * Writers of reception_audit serialise per (bucket, key) on a
 * transaction-scoped advisory lock and then on the row locks of the live
 * rows; the unique partial index on live rows (when the adopted data allows
 * it) makes that safe against writers that skip the advisory lock too. */
#include "db.h"

#include <errno.h>
#include <poll.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "log.h"
#include "s3err.h"

#define DB_STATEMENT_TIMEOUT "30s"
#define DB_MIGRATE_TIMEOUT "15min"
#define DB_CONNECT_TIMEOUT "5"
#define DB_POOL_MAX 64
#define DB_MAX_RETRIES 5 /* transient failures of one operation */
/* pg_advisory_xact_lock(bigint) key serialising migrations: "custody\x01". */
#define DB_MIGRATE_LOCK "7166761325952268545"
/* First half of the (int, int) advisory lock taken per (bucket, key):
 * "CUST". The (int, int) and (bigint) key spaces never collide. */
#define DB_KEY_LOCK_CLASS "1129665364"

struct db {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int size;
	PGconn **conns;	     /* NULL: slot not connected yet */
	unsigned char *busy; /* slot taken by an operation */
	char *conninfo;	     /* never logged: may hold a password */
	const char *kw[8];   /* PQconnectdbParams keywords ... */
	const char *val[8];  /* ... and values, NULL-terminated */
};

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
};

/* A server that stops answering (frozen, or a dead peer whose kernel still
 * ACKs) must not hold a caller forever: every statement but the migrations
 * is bounded here, on the client. */
#define DB_STATEMENT_TIMEOUT_MS 20000

typedef int (*db_op_fn)(struct pg_ctx *x, void *arg);

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
	pg_oneline(err, err_len, PQerrorMessage(conn));
fail_setup:
	PQfinish(conn);
	return NULL;
}

/* PQreset and redo the session settings. 0 or -EIO. */
static int pg_reset(struct pg_ctx *x)
{
	char err[512];

	log_warn("database: connection lost during %s, reconnecting", x->what);
	PQreset(x->conn);
	if (PQstatus(x->conn) != CONNECTION_OK) {
		pg_oneline(err, sizeof(err), PQerrorMessage(x->conn));
		log_error("database: reconnect failed: %s", err);
		return -EIO;
	}
	if (pg_session_setup(x->conn, err, sizeof(err))) {
		log_error("database: session setup after reconnect failed: %s",
			  err);
		return -EIO;
	}
	log_info("database: reconnected");
	return 0;
}

/* Takes a pooled connection (waiting for one to be free), connecting the
 * slot if it has none yet. 0 or -EIO. */
static int pg_take(struct db *d, struct pg_ctx *x)
{
	char err[512];
	int i, fresh;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		fresh = -1;
		for (i = 0; i < d->size; i++) {
			if (d->busy[i])
				continue;
			if (d->conns[i]) {
				d->busy[i] = 1;
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
		pthread_cond_wait(&d->cond, &d->lock);
	}
	d->busy[fresh] = 1;
	pthread_mutex_unlock(&d->lock);

	x->slot = fresh;
	x->conn = pg_connect(d, err, sizeof(err));
	if (x->conn)
		return 0;
	log_error("database: cannot connect: %s", err);
	pthread_mutex_lock(&d->lock);
	d->busy[fresh] = 0;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return -EIO;
}

static void pg_give(struct db *d, struct pg_ctx *x)
{
	if (x->timed_out) {
		/* Mid-statement on a server that does not answer: never
		 * reuse it; the slot reconnects when next taken. */
		PQfinish(x->conn);
		x->conn = NULL;
	}
	pthread_mutex_lock(&d->lock);
	d->conns[x->slot] = x->conn;
	d->busy[x->slot] = 0;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static int pg_state_is_lost(const char *state)
{
	return !strncmp(state, "08", 2) || !strcmp(state, "57P01") ||
	       !strcmp(state, "57P02") || !strcmp(state, "57P03");
}

static int64_t pg_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* PQexecParams with a deadline: NULL when sending failed, the connection
 * broke, or the deadline passed (then the connection is marked lost: it is
 * mid-statement and gets reset, not reused). Returns the last result. */
static PGresult *pg_exec_timed(struct pg_ctx *x, const char *sql, int nparams,
			       const char *const *params)
{
	int64_t deadline = pg_now_ms() + x->timeout_ms;
	PGresult *last = NULL, *r;

	if (!x->timeout_ms)
		return PQexecParams(x->conn, sql, nparams, NULL, params, NULL,
				    NULL, 0);
	if (!PQsendQueryParams(x->conn, sql, nparams, NULL, params, NULL, NULL,
			       0))
		return NULL;
	for (;;) {
		while (PQisBusy(x->conn)) {
			struct pollfd pfd = {.fd = PQsocket(x->conn),
					     .events = POLLIN};
			int64_t left = deadline - pg_now_ms();
			int n;

			if (left <= 0) {
				log_error("database: %s: no answer in %d ms; "
					  "dropping the connection",
					  x->what, x->timeout_ms);
				x->lost = 1;
				x->timed_out = 1;
				PQclear(last);
				return NULL;
			}
			n = poll(&pfd, 1, (int)left);
			if (n < 0 && errno != EINTR) {
				PQclear(last);
				return NULL;
			}
			if (n > 0 && !PQconsumeInput(x->conn)) {
				PQclear(last);
				return NULL;
			}
		}
		r = PQgetResult(x->conn);
		if (!r)
			break;
		PQclear(last);
		last = r;
	}
	return last;
}

/* Runs one statement. On success returns 0 and, when out is not NULL, the
 * result (the caller clears it). On failure returns -errno, logs, clears
 * the result, and notes in x whether the connection is lost or the failure
 * transient. */
static int pg_exec(struct pg_ctx *x, const char *sql, int nparams,
		   const char *const *params, PGresult **out)
{
	PGresult *res;
	ExecStatusType st;
	const char *state = NULL;
	char msg[1024];
	int err;

	if (out)
		*out = NULL;
	res = pg_exec_timed(x, sql, nparams, params);
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (out)
			*out = res;
		else
			PQclear(res);
		return 0;
	}

	if (res)
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (res && PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
		pg_oneline(msg, sizeof(msg),
			   PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	else
		pg_oneline(msg, sizeof(msg), PQerrorMessage(x->conn));

	if (!res || PQstatus(x->conn) != CONNECTION_OK ||
	    (state && pg_state_is_lost(state))) {
		x->lost = 1;
		err = errmap_sqlstate(NULL);
		log_warn("database: %s: connection failure (%s): %s", x->what,
			 state ? state : "no SQLSTATE", msg);
	} else if (state &&
		   (!strcmp(state, "40001") || !strcmp(state, "40P01") ||
		    (x->retry_unique && !strcmp(state, "23505")))) {
		x->retry = 1;
		err = errmap_sqlstate(state);
		log_info("database: %s: transient failure (%s): %s", x->what,
			 state, msg);
	} else {
		err = errmap_sqlstate(state);
		if (!err)
			err = EIO;
		log_error("database: %s failed (%s): %s", x->what,
			  state ? state : "no SQLSTATE", msg);
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
 * the reconnect and retry policy. Returns fn's result or the failure. */
static int db_run_timed(struct db *d, const char *what, int txn,
			int retry_unique, int timeout_ms, db_op_fn fn,
			void *arg)
{
	struct pg_ctx x = {.d = d, .what = what, .retry_unique = retry_unique,
			   .timeout_ms = timeout_ms};
	int rc, attempt = 0, resets = 0;

	rc = pg_take(d, &x);
	if (rc)
		return rc;
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
		rc = txn ? pg_exec(&x, "BEGIN", 0, NULL, NULL) : 0;
		if (!rc)
			rc = fn(&x, arg);
		if (!rc && txn) {
			x.in_commit = 1;
			rc = pg_exec(&x, "COMMIT", 0, NULL, NULL);
		}
		if (!rc)
			break;
		if (txn && !x.lost)
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
	return rc;
}

static int db_run(struct db *d, const char *what, int txn, int retry_unique,
		  db_op_fn fn, void *arg)
{
	return db_run_timed(d, what, txn, retry_unique,
			    DB_STATEMENT_TIMEOUT_MS, fn, arg);
}

struct db *db_open(const char *conninfo, int pool_size, char *err,
		   size_t err_len)
{
	struct db *d;
	char why[512];
	int n = 0;

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
	d->conns = calloc((size_t)pool_size, sizeof(*d->conns));
	if (!d->conns)
		goto fail_conns;
	d->busy = calloc((size_t)pool_size, sizeof(*d->busy));
	if (!d->busy)
		goto fail_busy;
	d->conninfo = strdup(conninfo ? conninfo : "");
	if (!d->conninfo)
		goto fail_conninfo;
	if (pthread_mutex_init(&d->lock, NULL))
		goto fail_mutex;
	if (pthread_cond_init(&d->cond, NULL))
		goto fail_cond;

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
	d->kw[n] = NULL;
	d->val[n] = NULL;

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
	pthread_cond_destroy(&d->cond);
fail_cond:
	pthread_mutex_destroy(&d->lock);
fail_mutex:
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

void db_close(struct db *d)
{
	int i;

	if (!d)
		return;
	for (i = 0; i < d->size; i++)
		if (d->conns[i])
			PQfinish(d->conns[i]);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d->conninfo);
	free(d->busy);
	free(d->conns);
	free(d);
}

/* ---- migrations ---------------------------------------------------- */

/* Version 1: adopt (or create) the seed's tables, add every column of the
 * contract, indexes, and the append-only triggers. Existing rows are never
 * dropped or changed: added columns are NULL in them, defaults are set
 * separately so old rows do not get the migration time. */
/* clang-format off */
static const char *const db_migration_1[] = {
	/* The seed's minimal shapes. */
	"CREATE TABLE IF NOT EXISTS projects_registry ("
	" id bigserial PRIMARY KEY,"
	" prefix text NOT NULL,"
	" name text NOT NULL)",

	"CREATE TABLE IF NOT EXISTS reception_audit ("
	" id bigserial PRIMARY KEY,"
	" source_bucket text NOT NULL,"
	" file_name text NOT NULL,"
	" object_key text NOT NULL,"
	" size_bytes bigint,"
	" uploaded_at timestamptz NOT NULL DEFAULT now())",

	"CREATE TABLE IF NOT EXISTS storage_audit ("
	" id bigserial PRIMARY KEY,"
	" project_prefix text NOT NULL,"
	" project_name text,"
	" dest_key text NOT NULL,"
	" size_bytes bigint,"
	" moved_at timestamptz NOT NULL DEFAULT now(),"
	" source_bucket text)",

	/* A seed table without an id gets one (numbered in physical order),
	 * and a primary key on it when it has none. */
	"DO $do$\n"
	"DECLARE t text;\n"
	"BEGIN\n"
	" FOREACH t IN ARRAY ARRAY['projects_registry', 'reception_audit',"
	"  'storage_audit'] LOOP\n"
	"  IF NOT EXISTS (SELECT 1 FROM pg_attribute"
	"   WHERE attrelid = to_regclass(t) AND attname = 'id'"
	"   AND NOT attisdropped) THEN\n"
	"   EXECUTE format('ALTER TABLE %I ADD COLUMN id bigserial', t);\n"
	"   IF NOT EXISTS (SELECT 1 FROM pg_constraint"
	"    WHERE conrelid = to_regclass(t) AND contype = 'p') THEN\n"
	"    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', t);\n"
	"   END IF;\n"
	"  END IF;\n"
	" END LOOP;\n"
	"END\n"
	"$do$",

	"ALTER TABLE projects_registry"
	" ADD COLUMN IF NOT EXISTS prefix text,"
	" ADD COLUMN IF NOT EXISTS name text,"
	" ADD COLUMN IF NOT EXISTS created_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS created_by text",
	"ALTER TABLE projects_registry ALTER COLUMN created_at SET DEFAULT now()",

	"ALTER TABLE reception_audit"
	" ADD COLUMN IF NOT EXISTS source_bucket text,"
	" ADD COLUMN IF NOT EXISTS file_name text,"
	" ADD COLUMN IF NOT EXISTS object_key text,"
	" ADD COLUMN IF NOT EXISTS size_bytes bigint,"
	" ADD COLUMN IF NOT EXISTS uploaded_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS xxh128 text,"
	" ADD COLUMN IF NOT EXISTS sha256 text,"
	" ADD COLUMN IF NOT EXISTS received_by text,"
	" ADD COLUMN IF NOT EXISTS removed_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS removal_reason text,"
	" ADD COLUMN IF NOT EXISTS etag text,"
	" ADD COLUMN IF NOT EXISTS origin text,"
	" ADD COLUMN IF NOT EXISTS received_uid bigint,"
	" ADD COLUMN IF NOT EXISTS received_user text,"
	" ADD COLUMN IF NOT EXISTS received_host text",
	"ALTER TABLE reception_audit ALTER COLUMN uploaded_at SET DEFAULT now()",

	"ALTER TABLE storage_audit"
	" ADD COLUMN IF NOT EXISTS project_prefix text,"
	" ADD COLUMN IF NOT EXISTS project_name text,"
	" ADD COLUMN IF NOT EXISTS dest_bucket text,"
	" ADD COLUMN IF NOT EXISTS dest_key text,"
	" ADD COLUMN IF NOT EXISTS size_bytes bigint,"
	" ADD COLUMN IF NOT EXISTS moved_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS source_bucket text,"
	" ADD COLUMN IF NOT EXISTS source_key text,"
	" ADD COLUMN IF NOT EXISTS reception_id bigint,"
	" ADD COLUMN IF NOT EXISTS outcome text,"
	" ADD COLUMN IF NOT EXISTS duplicate_of text,"
	" ADD COLUMN IF NOT EXISTS xxh128 text,"
	" ADD COLUMN IF NOT EXISTS sha256 text,"
	" ADD COLUMN IF NOT EXISTS moved_by text,"
	" ADD COLUMN IF NOT EXISTS moved_uid bigint,"
	" ADD COLUMN IF NOT EXISTS moved_user text,"
	" ADD COLUMN IF NOT EXISTS moved_host text,"
	" ADD COLUMN IF NOT EXISTS removed_at timestamptz,"
	" ADD COLUMN IF NOT EXISTS removal_reason text",
	"ALTER TABLE storage_audit ALTER COLUMN moved_at SET DEFAULT now()",

	/* Seed columns too narrow for what we store: varchar(n) becomes text
	 * (binary-coercible, no rewrite) and an integer size_bytes becomes
	 * bigint (values kept). If something depends on the column (a view),
	 * it stays as it is, with a warning. */
	"DO $do$\n"
	"DECLARE c record;\n"
	"BEGIN\n"
	" FOR c IN SELECT a.attrelid::regclass AS tab, a.attname AS col,"
	"   a.atttypid::regtype::text AS typ FROM pg_attribute a"
	"   WHERE a.attrelid IN (to_regclass('projects_registry'),"
	"    to_regclass('reception_audit'), to_regclass('storage_audit'))"
	"   AND a.attnum > 0 AND NOT a.attisdropped"
	"   AND ((a.atttypid = 'varchar'::regtype AND a.atttypmod > 0)"
	"    OR (a.attname = 'size_bytes'"
	"     AND a.atttypid IN ('int2'::regtype, 'int4'::regtype))) LOOP\n"
	"  BEGIN\n"
	"   EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', c.tab,"
	"    c.col, CASE WHEN c.col = 'size_bytes' THEN 'bigint'"
	"    ELSE 'text' END);\n"
	"  EXCEPTION WHEN OTHERS THEN\n"
	"   RAISE WARNING 'custodyfs: %.% (%) could not be widened: %',"
	"    c.tab, c.col, c.typ, SQLERRM;\n"
	"  END;\n"
	" END LOOP;\n"
	"END\n"
	"$do$",

	/* One live row per (bucket, key). Adopted data may already break
	 * that: then a plain index, a warning, and the writers' locks. */
	"DO $do$\n"
	"BEGIN\n"
	" IF to_regclass('reception_audit_live_key') IS NOT NULL"
	"  OR to_regclass('reception_audit_live_key_nonunique') IS NOT NULL"
	" THEN\n"
	"  RETURN;\n"
	" END IF;\n"
	" IF EXISTS (SELECT 1 FROM reception_audit WHERE removed_at IS NULL"
	"  AND source_bucket IS NOT NULL AND object_key IS NOT NULL"
	"  GROUP BY source_bucket, object_key HAVING count(*) > 1) THEN\n"
	"  RAISE WARNING 'custodyfs: reception_audit holds several live rows"
	" for the same (source_bucket, object_key); the unique index"
	" reception_audit_live_key is not created, a plain one is';\n"
	"  CREATE INDEX reception_audit_live_key_nonunique"
	"   ON reception_audit (source_bucket, object_key)"
	"   WHERE removed_at IS NULL;\n"
	" ELSE\n"
	"  CREATE UNIQUE INDEX reception_audit_live_key"
	"   ON reception_audit (source_bucket, object_key)"
	"   WHERE removed_at IS NULL;\n"
	" END IF;\n"
	"END\n"
	"$do$",

	/* projects_registry.prefix unique, unless the seed made it so
	 * already or its rows do not allow it. */
	"DO $do$\n"
	"BEGIN\n"
	" IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a"
	"  ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
	"  WHERE i.indrelid = 'projects_registry'::regclass"
	"  AND a.attname = 'prefix' AND i.indisunique AND i.indnatts = 1"
	"  AND i.indpred IS NULL AND i.indexprs IS NULL)"
	"  OR to_regclass('projects_registry_prefix_nonunique') IS NOT NULL"
	" THEN\n"
	"  RETURN;\n"
	" END IF;\n"
	" IF EXISTS (SELECT 1 FROM projects_registry WHERE prefix IS NOT NULL"
	"  GROUP BY prefix HAVING count(*) > 1) THEN\n"
	"  RAISE WARNING 'custodyfs: projects_registry holds duplicate"
	" prefixes; the unique index on prefix is not created, a plain one"
	" is';\n"
	"  CREATE INDEX projects_registry_prefix_nonunique"
	"   ON projects_registry (prefix);\n"
	" ELSE\n"
	"  CREATE UNIQUE INDEX projects_registry_prefix_key"
	"   ON projects_registry (prefix);\n"
	" END IF;\n"
	"END\n"
	"$do$",

	"CREATE INDEX IF NOT EXISTS storage_audit_dest_key"
	" ON storage_audit (dest_key)",
	"CREATE INDEX IF NOT EXISTS storage_audit_prefix_sha256"
	" ON storage_audit (project_prefix, sha256)",
	"CREATE INDEX IF NOT EXISTS reception_audit_sha256"
	" ON reception_audit (sha256)",

	/* Append-only audit tables, for every role (superusers too, and in
	 * replica mode: ENABLE ALWAYS). */
	"CREATE OR REPLACE FUNCTION custodyfs_audit_append_only()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"BEGIN\n"
	" IF TG_OP = 'UPDATE' THEN\n"
	"  IF OLD.removed_at IS NULL AND NEW.removed_at IS NOT NULL AND"
	"   (to_jsonb(NEW) - 'removed_at' - 'removal_reason') ="
	"   (to_jsonb(OLD) - 'removed_at' - 'removal_reason') THEN\n"
	"   RETURN NEW;\n"
	"  END IF;\n"
	"  RAISE EXCEPTION 'custodyfs: %.% is append-only: only removed_at"
	" (with removal_reason) may be set, and only once', TG_TABLE_SCHEMA,"
	" TG_TABLE_NAME USING ERRCODE = 'P0001';\n"
	" END IF;\n"
	" RAISE EXCEPTION 'custodyfs: %.% is append-only: % refused',"
	" TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = 'P0001';\n"
	"END\n"
	"$fn$",

	"CREATE OR REPLACE FUNCTION custodyfs_projects_guard()"
	" RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
	"DECLARE stored boolean;\n"
	"BEGIN\n"
	" IF TG_OP = 'UPDATE' THEN\n"
	"  IF (to_jsonb(NEW) - 'name') = (to_jsonb(OLD) - 'name') THEN\n"
	"   RETURN NEW;\n"
	"  END IF;\n"
	"  RAISE EXCEPTION 'custodyfs: %.%: only name may be updated',"
	"   TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'P0001';\n"
	" ELSIF TG_OP = 'DELETE' THEN\n"
	"  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.storage_audit"
	" WHERE project_prefix = $1)', TG_TABLE_SCHEMA)"
	"   INTO stored USING OLD.prefix;\n"
	"  IF stored THEN\n"
	"   RAISE EXCEPTION 'custodyfs: project % has stored files and"
	" cannot be deleted', OLD.prefix USING ERRCODE = 'P0001';\n"
	"  END IF;\n"
	"  RETURN OLD;\n"
	" END IF;\n"
	" EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.storage_audit)',"
	"  TG_TABLE_SCHEMA) INTO stored;\n"
	" IF stored THEN\n"
	"  RAISE EXCEPTION 'custodyfs: %.% cannot be truncated: projects have"
	" stored files', TG_TABLE_SCHEMA, TG_TABLE_NAME"
	"   USING ERRCODE = 'P0001';\n"
	" END IF;\n"
	" RETURN NULL;\n"
	"END\n"
	"$fn$",

	"DO $do$\n"
	"DECLARE t text;\n"
	"BEGIN\n"
	" FOREACH t IN ARRAY ARRAY['reception_audit', 'storage_audit'] LOOP\n"
	"  EXECUTE format('DROP TRIGGER IF EXISTS custodyfs_append_only_row"
	" ON %I', t);\n"
	"  EXECUTE format('DROP TRIGGER IF EXISTS custodyfs_append_only_stmt"
	" ON %I', t);\n"
	"  EXECUTE format('CREATE TRIGGER custodyfs_append_only_row"
	" BEFORE UPDATE ON %I FOR EACH ROW"
	" EXECUTE FUNCTION custodyfs_audit_append_only()', t);\n"
	"  EXECUTE format('CREATE TRIGGER custodyfs_append_only_stmt"
	" BEFORE DELETE OR TRUNCATE ON %I FOR EACH STATEMENT"
	" EXECUTE FUNCTION custodyfs_audit_append_only()', t);\n"
	"  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_row', t);\n"
	"  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER"
	" custodyfs_append_only_stmt', t);\n"
	" END LOOP;\n"
	"END\n"
	"$do$",

	"DROP TRIGGER IF EXISTS custodyfs_projects_row ON projects_registry",
	"DROP TRIGGER IF EXISTS custodyfs_projects_stmt ON projects_registry",
	"CREATE TRIGGER custodyfs_projects_row"
	" BEFORE UPDATE OR DELETE ON projects_registry FOR EACH ROW"
	" EXECUTE FUNCTION custodyfs_projects_guard()",
	"CREATE TRIGGER custodyfs_projects_stmt"
	" BEFORE TRUNCATE ON projects_registry FOR EACH STATEMENT"
	" EXECUTE FUNCTION custodyfs_projects_guard()",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_projects_row",
	"ALTER TABLE projects_registry ENABLE ALWAYS TRIGGER"
	" custodyfs_projects_stmt",
	NULL,
};

/* Version 2: the reception record in one round trip (the daemon logs every
 * file at close, so this is on the hot path): lock the key, keep an
 * identical live row, else retire the live row and insert. The lock ids are
 * the client's (pg_key_lock_obj), the same the other writers take. */
static const char *const db_migration_2[] = {
	"CREATE OR REPLACE FUNCTION custodyfs_reception_record("
	" p_lock_class integer, p_lock_obj integer,"
	" p_bucket text, p_file_name text, p_key text, p_size bigint,"
	" p_xxh text, p_sha text, p_etag text, p_origin text,"
	" p_by text, p_uid bigint, p_user text, p_host text, p_reason text,"
	" OUT o_id bigint, OUT o_inserted boolean)"
	" LANGUAGE plpgsql AS $fn$\n"
	"DECLARE r record; n integer := 0;\n"
	"BEGIN\n"
	" PERFORM pg_advisory_xact_lock(p_lock_class, p_lock_obj);\n"
	" FOR r IN SELECT id, etag FROM reception_audit"
	"  WHERE source_bucket = p_bucket AND object_key = p_key"
	"  AND removed_at IS NULL ORDER BY id DESC FOR UPDATE LOOP\n"
	"  n := n + 1;\n"
	"  IF r.etag IS NULL OR r.etag = p_etag THEN\n"
	"   o_id := r.id; o_inserted := false; RETURN;\n"
	"  END IF;\n"
	" END LOOP;\n"
	" IF n > 0 THEN\n"
	"  UPDATE reception_audit SET removed_at = now(),"
	"   removal_reason = p_reason"
	"   WHERE source_bucket = p_bucket AND object_key = p_key"
	"   AND removed_at IS NULL;\n"
	" END IF;\n"
	" INSERT INTO reception_audit (source_bucket, file_name, object_key,"
	"  size_bytes, uploaded_at, xxh128, sha256, etag, origin, received_by,"
	"  received_uid, received_user, received_host)"
	"  VALUES (p_bucket, p_file_name, p_key, p_size, now(), p_xxh, p_sha,"
	"  p_etag, p_origin, p_by, p_uid, p_user, p_host)"
	"  RETURNING id INTO o_id;\n"
	" o_inserted := true;\n"
	"END\n"
	"$fn$",
	NULL,
};

struct db_migration {
	int version;
	const char *description;
	const char *const *stmts;
};

static const struct db_migration db_migrations[] = {
	{1, "adopt the seed tables; contract columns, indexes, append-only triggers",
	 db_migration_1},
	{2, "reception record in one round trip", db_migration_2},
};
/* clang-format on */

#define DB_NMIGRATIONS ((int)(sizeof(db_migrations) / sizeof(db_migrations[0])))

/* clang-format off */
static const char db_sql_has_migrations[] =
	"SELECT to_regclass('schema_migrations') IS NOT NULL";
static const char db_sql_schema_version[] =
	"SELECT coalesce(max(version), 0) FROM schema_migrations";
static const char db_sql_local_timeout[] =
	"SELECT pg_catalog.set_config('statement_timeout', $1::text, true)";
static const char db_sql_migrate_lock[] =
	"SELECT pg_advisory_xact_lock($1::bigint)";
static const char db_sql_create_migrations[] =
	"CREATE TABLE IF NOT EXISTS schema_migrations ("
	" version integer PRIMARY KEY,"
	" applied_at timestamptz NOT NULL DEFAULT now(),"
	" description text)";
static const char db_sql_migration_applied[] =
	"SELECT 1 FROM schema_migrations WHERE version = $1::integer";
static const char db_sql_migration_done[] =
	"INSERT INTO schema_migrations (version, description)"
	" VALUES ($1::integer, $2::text)";
/* clang-format on */

/* Schema version applied, 0 when there is no schema_migrations. */
static int pg_schema_version(struct pg_ctx *x, void *arg)
{
	int *version = arg;
	PGresult *res = NULL;
	int rc;

	*version = 0;
	rc = pg_exec(x, db_sql_has_migrations, 0, NULL, &res);
	if (rc)
		goto out;
	if (strcmp(PQgetvalue(res, 0, 0), "t"))
		goto out;
	PQclear(res);
	res = NULL;
	rc = pg_exec(x, db_sql_schema_version, 0, NULL, &res);
	if (rc)
		goto out;
	*version = atoi(PQgetvalue(res, 0, 0));
out:
	PQclear(res);
	return rc;
}

/* One version, in the caller's transaction, under the migration lock
 * (waiting for another process's migration to commit). */
static int pg_migrate_one(struct pg_ctx *x, void *arg)
{
	const struct db_migration *m = arg;
	const char *p[2];
	char ver[16];
	PGresult *res = NULL;
	int rc, i;

	snprintf(ver, sizeof(ver), "%d", m->version);
	p[0] = DB_MIGRATE_TIMEOUT;
	rc = pg_exec(x, db_sql_local_timeout, 1, p, NULL);
	if (rc)
		goto out;
	p[0] = DB_MIGRATE_LOCK;
	rc = pg_exec(x, db_sql_migrate_lock, 1, p, NULL);
	if (rc)
		goto out;
	rc = pg_exec(x, db_sql_create_migrations, 0, NULL, NULL);
	if (rc)
		goto out;
	p[0] = ver;
	rc = pg_exec(x, db_sql_migration_applied, 1, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) > 0) {
		log_debug("database: migration %d already applied", m->version);
		goto out;
	}

	for (i = 0; m->stmts[i]; i++) {
		rc = pg_exec(x, m->stmts[i], 0, NULL, NULL);
		if (rc) {
			log_error("database: migration %d, statement %d failed",
				  m->version, i + 1);
			goto out;
		}
	}
	p[0] = ver;
	p[1] = m->description;
	rc = pg_exec(x, db_sql_migration_done, 2, p, NULL);
	if (rc)
		goto out;
	log_info("database: applied migration %d (%s)", m->version,
		 m->description);
out:
	PQclear(res);
	return rc;
}

int db_migrate(struct db *d)
{
	int rc, i, version = 0;
	int latest = db_migrations[DB_NMIGRATIONS - 1].version;

	if (!d)
		return -EINVAL;
	/* Up to date (the usual start): no lock, no DDL, so a role that
	 * may not create tables can run a migrated database. */
	rc = db_run(d, "schema version", 0, 0, pg_schema_version, &version);
	if (rc)
		return rc;
	if (version > latest)
		log_warn("database: schema version %d is newer than this "
			 "program's (%d)",
			 version, latest);
	for (i = 0; i < DB_NMIGRATIONS; i++) {
		if (db_migrations[i].version <= version)
			continue;
		/* Adopting a big seed table may rewrite it: no bound. */
		rc = db_run_timed(d, "migration", 1, 0, 0, pg_migrate_one,
			    (void *)&db_migrations[i]);
		if (rc)
			return rc;
	}
	return 0;
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

/* ---- reception_audit ----------------------------------------------- */

/* clang-format off */
static const char db_sql_key_lock[] =
	"SELECT pg_advisory_xact_lock($1::integer, $2::integer)";

/* $1 bucket, $2 key: the live rows, newest first, locked. */
static const char db_sql_live_for_update[] =
	"SELECT id, etag, size_bytes, xxh128, sha256 FROM reception_audit"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at IS NULL ORDER BY id DESC FOR UPDATE";

/* $1 bucket, $2 key, $3 reason. Idempotent. */
static const char db_sql_mark_removed[] =
	"UPDATE reception_audit SET removed_at = now(),"
	" removal_reason = $3::text"
	" WHERE source_bucket = $1::text AND object_key = $2::text"
	" AND removed_at IS NULL";

static const char db_sql_insert_reception[] =
	"INSERT INTO reception_audit (source_bucket, file_name, object_key,"
	" size_bytes, uploaded_at, xxh128, sha256, etag, origin, received_by,"
	" received_uid, received_user, received_host)"
	" VALUES ($1::text, $2::text, $3::text, $4::bigint, now(), $5::text,"
	" $6::text, $7::text, $8::text, $9::text, $10::bigint, $11::text,"
	" $12::text)"
	" RETURNING id";

/* Byte order (COLLATE "C"), as S3 lists keys; the prefix compared as a
 * string, never as a LIKE pattern. LIMIT NULL is no limit. */
static const char db_sql_live_list[] =
	"SELECT id, object_key, etag FROM reception_audit"
	" WHERE source_bucket = $1::text AND removed_at IS NULL"
	" AND left(object_key, length($2::text)) = $2::text"
	" ORDER BY object_key COLLATE \"C\", id"
	" LIMIT $3::bigint";
/* clang-format on */

/* The advisory lock object id of (bucket, key), as a decimal string. */
static void pg_key_lock_obj(const char *bucket, const char *key, char obj[16])
{
	uint32_t h = 2166136261u; /* FNV-1a over bucket NUL key */
	const unsigned char *s;

	for (s = (const unsigned char *)bucket; *s; s++)
		h = (h ^ *s) * 16777619u;
	h *= 16777619u;
	for (s = (const unsigned char *)key; *s; s++)
		h = (h ^ *s) * 16777619u;
	snprintf(obj, 16, "%" PRId32, (int32_t)h);
}

/* Serialises writers of (bucket, key) until the transaction ends. */
static int pg_lock_key(struct pg_ctx *x, const char *bucket, const char *key)
{
	const char *p[2] = {DB_KEY_LOCK_CLASS, NULL};
	char obj[16];

	pg_key_lock_obj(bucket, key, obj);
	p[1] = obj;
	return pg_exec(x, db_sql_key_lock, 2, p, NULL);
}

static const char *db_basename(const char *key)
{
	const char *s = strrchr(key, '/');

	return s ? s + 1 : key;
}

static int db_size_param(uint64_t size, char *buf, size_t len)
{
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	snprintf(buf, len, "%" PRIu64, size);
	return 0;
}

/* Actor as parameters: received_by, uid, user, host (all NULL for none). */
struct db_actor_params {
	char by[400];
	char uid[24];
};

static void db_actor_params(const struct actor *who, struct db_actor_params *ap,
			    const char **p)
{
	if (!who) {
		p[0] = p[1] = p[2] = p[3] = NULL;
		return;
	}
	if (who->uid == (uid_t)-1) {
		/* Not done through custodyfs: only the host that logged it. */
		snprintf(ap->by, sizeof(ap->by),
			 "another route (%s), logged by custodyfs @ %s",
			 who->user[0] ? who->user : "unknown uploader",
			 who->host);
		p[0] = ap->by;
		p[1] = NULL;
		p[2] = NULL;
		p[3] = who->host;
		return;
	}
	actor_format(who, ap->by, sizeof(ap->by));
	snprintf(ap->uid, sizeof(ap->uid), "%lu", (unsigned long)who->uid);
	p[0] = ap->by;
	p[1] = ap->uid;
	p[2] = who->user;
	p[3] = who->host;
}

struct db_record_args {
	const struct reception_new *r;
	const char *reason;
	int64_t id;
	int inserted;
};

/* $1..$15: see custodyfs_reception_record (migration 2). */
static const char db_sql_record[] =
	"SELECT o_id, o_inserted FROM custodyfs_reception_record("
	"$1::integer, $2::integer, $3::text, $4::text, $5::text, $6::bigint,"
	" $7::text, $8::text, $9::text, $10::text, $11::text, $12::bigint,"
	" $13::text, $14::text, $15::text)";

static int pg_reception_record(struct pg_ctx *x, void *arg)
{
	struct db_record_args *a = arg;
	const struct reception_new *r = a->r;
	struct db_actor_params ap;
	PGresult *res = NULL;
	const char *p[15];
	char size[24], obj[16];
	int rc;

	a->id = 0;
	a->inserted = 0;
	rc = db_size_param(r->size, size, sizeof(size));
	if (rc)
		return rc;
	pg_key_lock_obj(r->source_bucket, r->object_key, obj);
	p[0] = DB_KEY_LOCK_CLASS;
	p[1] = obj;
	p[2] = r->source_bucket;
	p[3] = r->file_name ? r->file_name : db_basename(r->object_key);
	p[4] = r->object_key;
	p[5] = size;
	p[6] = r->xxh128;
	p[7] = r->sha256;
	p[8] = r->etag;
	p[9] = r->origin;
	db_actor_params(r->who, &ap, p + 10);
	p[14] = a->reason;
	/* Inside BEGIN/COMMIT (db_run): a server that stops answering before
	 * COMMIT is sent rolls back when the connection drops, so a row never
	 * appears for an upload the caller was told failed. */
	rc = pg_exec(x, db_sql_record, 15, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		rc = -EIO;
		goto out;
	}
	a->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	a->inserted = PQgetvalue(res, 0, 1)[0] == 't';
out:
	PQclear(res);
	return rc;
}

int db_reception_record(struct db *d, const struct reception_new *r,
			const char *replaced_reason, int64_t *id_out,
			int *inserted)
{
	struct db_record_args a = {.r = r};
	int rc;

	if (!d || !r || !r->source_bucket || !r->object_key)
		return -EINVAL;
	a.reason = replaced_reason ? replaced_reason : "replaced";
	/* A unique violation means another writer inserted the live row
	 * first: run again, and the row is then seen. */
	rc = db_run(d, "reception record", 1, 1, pg_reception_record, &a);
	if (rc)
		return rc;
	if (id_out)
		*id_out = a.id;
	if (inserted)
		*inserted = a.inserted;
	return 0;
}

struct db_removed_args {
	const char *bucket;
	const char *key;
	const char *reason;
};

static int pg_reception_mark_removed(struct pg_ctx *x, void *arg)
{
	struct db_removed_args *a = arg;
	const char *p[3] = {a->bucket, a->key, a->reason};

	return pg_exec(x, db_sql_mark_removed, 3, p, NULL);
}

int db_reception_mark_removed(struct db *d, const char *bucket, const char *key,
			      const char *reason)
{
	struct db_removed_args a = {
	    .bucket = bucket,
	    .key = key,
	    .reason = reason,
	};

	if (!d || !bucket || !key)
		return -EINVAL;
	/* One idempotent statement: safe to run again after a reconnect. */
	return db_run(d, "reception mark removed", 0, 0,
		      pg_reception_mark_removed, &a);
}

struct db_rename_args {
	const char *bucket;
	const char *old_key;
	const char *new_key;
	const char *new_etag;
	uint64_t size;
	const struct actor *who;
	char *renamed;	/* "renamed to <new_key>" */
	char *replaced; /* "replaced by rename from <old_key>" */
};

static int pg_reception_rename(struct pg_ctx *x, void *arg)
{
	struct db_rename_args *a = arg;
	struct db_actor_params ap;
	PGresult *res = NULL;
	const char *p[12];
	const char *xxh = NULL, *sha = NULL;
	char size[24];
	int rc, first;

	rc = db_size_param(a->size, size, sizeof(size));
	if (rc)
		return rc;
	/* Both keys, in a fixed order so two renames cannot deadlock. */
	first = strcmp(a->old_key, a->new_key) < 0;
	rc = pg_lock_key(x, a->bucket, first ? a->old_key : a->new_key);
	if (rc)
		goto out;
	rc = pg_lock_key(x, a->bucket, first ? a->new_key : a->old_key);
	if (rc)
		goto out;

	/* The old key's live row: its hashes describe the content only if
	 * the size agrees. res is kept until the insert. */
	p[0] = a->bucket;
	p[1] = a->old_key;
	rc = pg_exec(x, db_sql_live_for_update, 2, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) > 0) {
		if (PQgetisnull(res, 0, 2) ||
		    !strcmp(PQgetvalue(res, 0, 2), size)) {
			if (!PQgetisnull(res, 0, 3))
				xxh = PQgetvalue(res, 0, 3);
			if (!PQgetisnull(res, 0, 4))
				sha = PQgetvalue(res, 0, 4);
		} else {
			log_warn("database: rename %s -> %s: size changed "
				 "(%s -> %s), hashes not carried over",
				 a->old_key, a->new_key, PQgetvalue(res, 0, 2),
				 size);
		}
	}

	p[2] = a->renamed;
	rc = pg_exec(x, db_sql_mark_removed, 3, p, NULL);
	if (rc)
		goto out;
	p[1] = a->new_key;
	p[2] = a->replaced;
	rc = pg_exec(x, db_sql_mark_removed, 3, p, NULL);
	if (rc)
		goto out;

	p[0] = a->bucket;
	p[1] = db_basename(a->new_key);
	p[2] = a->new_key;
	p[3] = size;
	p[4] = xxh;
	p[5] = sha;
	p[6] = a->new_etag;
	p[7] = "rename";
	db_actor_params(a->who, &ap, p + 8);
	rc = pg_exec(x, db_sql_insert_reception, 12, p, NULL);
out:
	PQclear(res); /* after the insert: xxh and sha point into it */
	return rc;
}

int db_reception_rename(struct db *d, const char *bucket, const char *old_key,
			const char *new_key, const char *new_etag,
			uint64_t size, const struct actor *who)
{
	struct db_rename_args a = {
	    .bucket = bucket,
	    .old_key = old_key,
	    .new_key = new_key,
	    .new_etag = new_etag,
	    .size = size,
	    .who = who,
	};
	int rc = -ENOMEM;

	if (!d || !bucket || !old_key || !new_key)
		return -EINVAL;
	if (!strcmp(old_key, new_key))
		return 0;
	if (asprintf(&a.renamed, "renamed to %s", new_key) < 0) {
		a.renamed = NULL;
		goto out;
	}
	if (asprintf(&a.replaced, "replaced by rename from %s", old_key) < 0) {
		a.replaced = NULL;
		goto out;
	}
	rc = db_run(d, "reception rename", 1, 1, pg_reception_rename, &a);
out:
	free(a.replaced);
	free(a.renamed);
	return rc;
}

struct db_live_args {
	const char *bucket;
	const char *prefix;
	size_t max;
	struct reception_live *rows;
	size_t n;
};

static int pg_reception_live(struct pg_ctx *x, void *arg)
{
	struct db_live_args *a = arg;
	struct reception_live *rows = NULL;
	PGresult *res = NULL;
	const char *p[3];
	char limit[24];
	size_t i = 0, n;
	int rc;

	a->rows = NULL;
	a->n = 0;
	p[0] = a->bucket;
	p[1] = a->prefix;
	p[2] = NULL;
	if (a->max) {
		snprintf(limit, sizeof(limit), "%zu", a->max);
		p[2] = limit;
	}
	rc = pg_exec(x, db_sql_live_list, 3, p, &res);
	if (rc)
		goto out;
	n = (size_t)PQntuples(res);
	if (!n)
		goto out;
	rows = calloc(n, sizeof(*rows));
	if (!rows)
		goto fail_oom;
	for (i = 0; i < n; i++) {
		rows[i].id = strtoll(PQgetvalue(res, (int)i, 0), NULL, 10);
		rows[i].object_key = strdup(PQgetvalue(res, (int)i, 1));
		if (!rows[i].object_key)
			goto fail_oom;
		if (!PQgetisnull(res, (int)i, 2)) {
			rows[i].etag = strdup(PQgetvalue(res, (int)i, 2));
			if (!rows[i].etag)
				goto fail_oom;
		}
	}
	a->rows = rows;
	a->n = n;
	goto out;

fail_oom:
	db_reception_live_free(rows, rows ? i + 1 : 0);
	rc = -ENOMEM;
out:
	PQclear(res);
	return rc;
}

int db_reception_live(struct db *d, const char *bucket, const char *prefix,
		      size_t max, struct reception_live **rows, size_t *n)
{
	struct db_live_args a = {
	    .bucket = bucket,
	    .prefix = prefix ? prefix : "",
	    .max = max,
	};
	int rc;

	if (!rows || !n)
		return -EINVAL;
	*rows = NULL;
	*n = 0;
	if (!d || !bucket)
		return -EINVAL;
	rc = db_run(d, "reception live rows", 0, 0, pg_reception_live, &a);
	if (rc)
		return rc;
	*rows = a.rows;
	*n = a.n;
	return 0;
}

void db_reception_live_free(struct reception_live *rows, size_t n)
{
	size_t i;

	if (!rows)
		return;
	for (i = 0; i < n; i++) {
		free(rows[i].object_key);
		free(rows[i].etag);
	}
	free(rows);
}
