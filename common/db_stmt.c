/* db_stmt.c - prepared statements of the pooled connections; see
 * db_internal.h (pg_stmt_name).
 *
 * A statement with parameters is parsed and planned by the server at each
 * PQexecParams: on the commit path of a small file that is most of the
 * server's time per statement (0.1-0.3 ms of parse and bind against a few
 * hundredths for the execution). Each pooled connection (its slot, used by
 * one operation at a time: no lock) prepares each statement text once, the
 * first time it runs there, and runs it by name from then on.
 *
 * The cache of a slot belongs to its server session: it is forgotten when
 * the session ends (pg_reset, a connection dropped or replaced). Names
 * carry a generation, bumped when a server says a prepared statement is
 * stale or unknown (pg_stmt_stale): new names are then prepared, never one
 * the session may still hold. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <xxhash.h>

#include "counters.h"
#include "db_internal.h"
#include "log.h"

/* statements prepared per connection at most: the rest run unnamed */
#define PG_STMTS_MAX 256

struct pg_stmt {
	uint64_t hash;
	size_t len;
	char *sql;
};

struct pg_stmts {
	unsigned gen; /* bumped when forgotten: names never reused */
	int n;
	struct pg_stmt s[PG_STMTS_MAX];
};

static void pg_stmts_clear(struct pg_stmts *c)
{
	int i;

	for (i = 0; i < c->n; i++)
		free(c->s[i].sql);
	c->n = 0;
	c->gen++;
}

void pg_stmts_forget(struct db *d, int slot)
{
	if (!d || slot < 0 || slot >= DB_POOL_MAX || !d->stmts[slot])
		return;
	pg_stmts_clear(d->stmts[slot]);
}

void pg_stmts_free(struct db *d)
{
	int i;

	if (!d)
		return;
	for (i = 0; i < DB_POOL_MAX; i++) {
		if (!d->stmts[i])
			continue;
		pg_stmts_clear(d->stmts[i]);
		free(d->stmts[i]);
		d->stmts[i] = NULL;
	}
}

/* This process's part of every statement name: behind a pooler that
 * shares server sessions between clients (transaction mode), another
 * process's statement of the same index is then an unknown name (26000:
 * prepared again), never another text run with our values (review-38
 * R1). */
static uint32_t pg_stmt_tag;
static pthread_once_t pg_stmt_tag_once = PTHREAD_ONCE_INIT;

static void pg_stmt_tag_init(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	pg_stmt_tag =
	    (uint32_t)XXH3_64bits_withSeed(&ts, sizeof(ts), (uint64_t)getpid());
}

static void pg_stmt_format(char *name, size_t len, unsigned gen, int i)
{
	pthread_once(&pg_stmt_tag_once, pg_stmt_tag_init);
	snprintf(name, len, "cfs_%08x_%u_%d", pg_stmt_tag, gen, i);
}

/* PQprepare bounded by x's statement deadline: NULL when sending failed,
 * the connection broke or the deadline passed (pg_wait marks it lost). */
static PGresult *pg_prepare_timed(struct pg_ctx *x, const char *name,
				  const char *sql, int nparams)
{
	int64_t deadline = pg_now_ms() + x->timeout_ms;

	if (!x->timeout_ms)
		return PQprepare(x->conn, name, sql, nparams, NULL);
	if (!PQsendPrepare(x->conn, name, sql, nparams, NULL))
		return NULL;
	return pg_last_result(x, deadline);
}

int pg_stmt_name(struct pg_ctx *x, const char *sql, int nparams, char *name,
		 size_t len, PGresult **failed)
{
	struct pg_stmts *c;
	size_t sl = strlen(sql);
	uint64_t h = XXH3_64bits(sql, sl), t0;
	PGresult *res;
	int i;

	*failed = NULL;
	name[0] = '\0';
	/* A statement without parameters (BEGIN, COMMIT, SET LOCAL, DDL, a
	 * COPY) is cheap to parse or cannot be prepared: unnamed. */
	if (nparams <= 0 || x->slot < 0 || x->slot >= DB_POOL_MAX)
		return 0;
	c = x->d->stmts[x->slot];
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return 0; /* unnamed: slower, not wrong */
		x->d->stmts[x->slot] = c;
	}
	for (i = 0; i < c->n; i++) {
		if (c->s[i].hash == h && c->s[i].len == sl &&
		    !memcmp(c->s[i].sql, sql, sl)) {
			pg_stmt_format(name, len, c->gen, i);
			return 1;
		}
	}
	if (c->n >= PG_STMTS_MAX)
		return 0;
	c->s[c->n].sql = malloc(sl + 1);
	if (!c->s[c->n].sql)
		return 0;
	memcpy(c->s[c->n].sql, sql, sl + 1);
	pg_stmt_format(name, len, c->gen, c->n);
	t0 = ctr_now_ns();
	res = pg_prepare_timed(x, name, sql, nparams);
	stage_observe_since(STG_SQL_PREPARE, t0);
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		/* The statement's own failure (what running it would have
		 * said: a prepare parses and analyses it), or the
		 * connection's: either is the statement's result. */
		free(c->s[c->n].sql);
		c->s[c->n].sql = NULL;
		name[0] = '\0';
		*failed = res;
		return -1;
	}
	PQclear(res);
	c->s[c->n].hash = h;
	c->s[c->n].len = sl;
	c->n++;
	return 1;
}

int pg_stmt_stale(struct pg_ctx *x, const char *state, const char *msg)
{
	/* 0A000 "cached plan must not change result type" (a migration
	 * changed a table a statement reads with *); 26000: the session
	 * does not know the name (it was not the session the cache was
	 * filled on). Either: prepare again under new names. */
	if (!state ||
	    !((!strcmp(state, "0A000") && msg && strstr(msg, "cached plan")) ||
	      !strcmp(state, "26000")))
		return 0;
	log_info("database: %s: a prepared statement is stale (%s): "
		 "preparing again",
		 x->what, state);
	pg_stmts_forget(x->d, x->slot);
	return 1;
}

int pg_exec_pipe(struct pg_ctx *x, int n, const struct pg_call *c,
		 PGresult **out)
{
	PGresult *res[PG_PIPE_MAX] = {NULL}, *begin = NULL, *r;
	char names[PG_PIPE_MAX][32];
	int named[PG_PIPE_MAX], i, q, rc = 0, sent, begin_due;
	uint64_t t0 = ctr_now_ns();
	int64_t deadline;

	for (i = 0; i < n && i < PG_PIPE_MAX; i++)
		out[i] = NULL;
	if (n < 1 || n > PG_PIPE_MAX)
		return -EINVAL;
	/* prepared first: a prepare's round trip is not a pipeline's */
	for (i = 0; i < n; i++) {
		named[i] = pg_stmt_name(x, c[i].sql, c[i].nparams, names[i],
					sizeof(names[i]), &r);
		if (named[i] < 0)
			return pg_result_check(x, r, 0, NULL);
	}
	deadline = pg_now_ms() + x->timeout_ms;
	begin_due = x->begin_due;
	x->begin_due = 0;
	sent = PQenterPipelineMode(x->conn);
	if (sent && begin_due)
		sent = PQsendQueryParams(x->conn, "BEGIN", 0, NULL, NULL, NULL,
					 NULL, 0);
	for (i = 0; sent && i < n; i++)
		sent =
		    pg_send(x, names[i], c[i].sql, c[i].nparams, c[i].params);
	if (sent)
		sent = PQpipelineSync(x->conn);
	if (!sent) {
		x->lost = 1; /* mid-pipeline: reset, not reused */
		stage_observe_since(STG_SQL_STATEMENT, t0);
		return pg_result_check(x, NULL, 0, NULL);
	}
	/* results of BEGIN (q = -1), then of each statement, each ended by
	 * a NULL; then the sync */
	q = begin_due ? -1 : 0;
	for (;;) {
		if (pg_wait(x, deadline)) {
			x->lost = 1;
			break;
		}
		r = PQgetResult(x->conn);
		if (!r) {
			q++;
			continue;
		}
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			break;
		}
		if (q < 0) {
			PQclear(begin);
			begin = r;
		} else if (q < n) {
			PQclear(res[q]);
			res[q] = r;
		} else {
			PQclear(r);
		}
	}
	if (!x->lost && !PQexitPipelineMode(x->conn))
		x->lost = 1;
	stage_observe_since(STG_SQL_STATEMENT, t0);
	if (x->lost) {
		PQclear(begin);
		for (i = 0; i < n; i++)
			PQclear(res[i]);
		return pg_result_check(x, NULL, 0, NULL);
	}
	if (begin && PQresultStatus(begin) != PGRES_COMMAND_OK) {
		for (i = 0; i < n; i++)
			PQclear(res[i]);
		return pg_result_check(x, begin, 0, NULL);
	}
	PQclear(begin);
	/* the first failure is the verdict (those after it were aborted) */
	for (i = 0; i < n; i++) {
		rc = pg_result_check(x, res[i], named[i], &out[i]);
		res[i] = NULL;
		if (rc)
			break;
	}
	if (rc) {
		for (q = 0; q < n; q++) {
			PQclear(out[q]);
			out[q] = NULL;
			PQclear(res[q]);
		}
	}
	return rc;
}
