/* db_live_gone.c - the sweeps' rule for claimers that write no heartbeat
 * (review-37 F2): a daemon of before migration 17 holds its liveness lock
 * and never writes a heartbeat row, so a free lock is all that can be read
 * of it. It counts as gone only once this process's sweeps have found its
 * lock free at every read for DB_LIVE_NOBEAT_MS; see db_internal.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

/* One claimer followed: seen with its lock free since first_ms. */
struct live_nobeat {
	char *scope;
	char *claimer;
	int64_t first_ms; /* pg_now_ms() of the first read that saw it */
	int seen;	  /* seen by the read in progress */
};

static void nobeat_forget(struct db *d, int i)
{
	free(d->nobeat[i].scope);
	free(d->nobeat[i].claimer);
	d->nobeat[i] = d->nobeat[--d->nobeat_n];
}

void live_nobeat_begin(struct db *d, const char *scope)
{
	int i;

	for (i = 0; i < d->nobeat_n; i++)
		if (strcmp(d->nobeat[i].scope, scope) == 0)
			d->nobeat[i].seen = 0;
}

int live_nobeat_gone(struct db *d, const char *scope, const char *claimer)
{
	struct live_nobeat *e;
	int64_t now = pg_now_ms();
	int i;

	for (i = 0; i < d->nobeat_n; i++) {
		e = &d->nobeat[i];
		if (strcmp(e->scope, scope) == 0 &&
		    strcmp(e->claimer, claimer) == 0) {
			e->seen = 1;
			return now - e->first_ms >= DB_LIVE_NOBEAT_MS;
		}
	}
	/* Full, or out of memory: kept now, followed once there is room. */
	if (!d->nobeat) {
		d->nobeat = calloc(DB_LIVE_NOBEAT_MAX, sizeof(*d->nobeat));
		if (!d->nobeat)
			return 0;
	}
	if (d->nobeat_n >= DB_LIVE_NOBEAT_MAX)
		return 0;
	e = &d->nobeat[d->nobeat_n];
	e->scope = strdup(scope);
	e->claimer = strdup(claimer);
	if (!e->scope || !e->claimer) {
		free(e->scope);
		free(e->claimer);
		return 0;
	}
	e->first_ms = now;
	e->seen = 1;
	d->nobeat_n++;
	return 0;
}

void live_nobeat_end(struct db *d, const char *scope)
{
	int i = 0;

	while (i < d->nobeat_n)
		if (!d->nobeat[i].seen &&
		    strcmp(d->nobeat[i].scope, scope) == 0)
			nobeat_forget(d, i); /* the last one moves to i */
		else
			i++;
}

void live_nobeat_free(struct db *d)
{
	while (d->nobeat_n > 0)
		nobeat_forget(d, d->nobeat_n - 1);
	free(d->nobeat);
	d->nobeat = NULL;
}
