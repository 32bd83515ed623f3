/* test_db_pool.c - the connection pool's waiters are bounded (review F6):
 * with every pooled connection busy for longer than a statement may take,
 * an operation waiting for one fails with -EIO after about
 * DB_STATEMENT_DEADLINE_MS instead of waiting as long as the holder. And
 * the audit exports never hold the pool's last two connections (E10a). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "db_export.h"
#include "test_db.h"

#define HOLD_S (DB_STATEMENT_DEADLINE_MS / 1000 + 8)

struct holder {
	struct db *d;
	int rc;
	atomic_int done; /* its operation returned */
};

/* Called under the key lock, the pool's only connection held. */
static int hold_fn(void *arg)
{
	(void)arg;
	sleep(HOLD_S);
	return 0;
}

static void *holder_main(void *arg)
{
	struct holder *h = arg;

	h->rc =
	    db_reception_newest_do(h->d, "pool", "held", 0, hold_fn, h, NULL);
	atomic_store(&h->done, 1);
	return NULL;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The heartbeat's write time (epoch ms by the server's clock), or -1. */
#define BEAT_MS                                                                \
	"SELECT coalesce((SELECT (extract(epoch FROM seen_at) * 1000)::bigint" \
	" FROM live_heartbeat WHERE claimer = 'pool:1:1.0'), -1)"

void test_pool_wait(const char *conninfo)
{
	struct holder h = {0};
	PGconn *raw = PQconnectdb(conninfo);
	pthread_t th;
	double t0, dt;
	long beat = -1;
	int rc, i, beat_moved = 0, held = 0;

	h.d = open_or_die(conninfo, 1);
	/* review-37 F4: its heartbeat, on a connection of its own, goes on
	 * while the pool's only connection is held */
	ok(db_set_claimer(h.d, "pool:1:1.0") == 0 && db_live_watch(h.d, 0) == 0,
	   "a claimer and its liveness watch on a pool of one");
	for (i = 0; i < 100 && beat < 0; i++) {
		beat = sql_long(raw, BEAT_MS);
		if (beat < 0)
			usleep(50000);
	}
	ok(beat >= 0, "... its heartbeat is written");
	if (pthread_create(&th, NULL, holder_main, &h)) {
		ok(0, "holder thread");
		db_close(h.d);
		return;
	}
	usleep(500000); /* the holder has the only connection now */
	t0 = mono_s();
	rc = db_ping(h.d);
	dt = mono_s() - t0;
	ok(rc == -EIO && dt < DB_STATEMENT_DEADLINE_MS / 1000.0 + 3.0,
	   "a waiter for a pooled connection gives up with -EIO after the "
	   "statement bound (rc %d after %.1fs; the holder keeps it %ds)",
	   rc, dt, HOLD_S);
	beat = sql_long(raw, BEAT_MS);
	for (i = 0; i < 100 && !beat_moved; i++) {
		usleep(50000);
		held = !atomic_load(&h.done);
		beat_moved = held && sql_long(raw, BEAT_MS) > beat;
	}
	ok(beat_moved,
	   "the heartbeat is written again while the pool's only connection "
	   "is still held (review-37 F4; held %d)",
	   held);
	pthread_join(th, NULL);
	ok(h.rc == 0, "the holder's operation ends well (rc %d)", h.rc);
	ok(db_ping(h.d) == 0, "the connection serves again once it is back");
	db_close(h.d);
	PQfinish(raw);
}

#define BULK_POOL 4
#define BULK_N 4 /* exports at once: the whole pool before the fix */

struct exporter {
	struct db *d;
	int rc;
};

static void *exporter_main(void *arg)
{
	struct exporter *e = arg;
	FILE *f = tmpfile();

	e->rc = f ? db_export(e->d, DBX_STORAGE, DBX_CSV, NULL, fileno(f), NULL)
		  : -errno;
	if (f)
		fclose(f);
	return NULL;
}

void test_pool_bulk(const char *conninfo)
{
	struct exporter e[BULK_N];
	pthread_t th[BULK_N];
	double t0, dt;
	int i, n = 0, rc;
	struct db *d = open_or_die(conninfo, BULK_POOL);
	PGconn *raw = PQconnectdb(conninfo);

	/* Every export waits on the server (the table locked), holding its
	 * connection meanwhile. */
	if (!sql_ok(raw, "BEGIN") ||
	    !sql_ok(raw, "LOCK TABLE storage_audit IN ACCESS EXCLUSIVE MODE")) {
		ok(0, "lock storage_audit");
		PQfinish(raw);
		db_close(d);
		return;
	}
	for (i = 0; i < BULK_N; i++) {
		e[i].d = d;
		e[i].rc = 1;
		if (pthread_create(&th[i], NULL, exporter_main, &e[i]))
			break;
		n++;
	}
	sleep(2);
	t0 = mono_s();
	rc = db_ping(d);
	dt = mono_s() - t0;
	ok(rc == 0 && dt < 1.0,
	   "%d exports stuck on the server leave room in a pool of %d for "
	   "others (ping rc %d after %.1fs)",
	   BULK_N, BULK_POOL, rc, dt);
	sql_ok(raw, "ROLLBACK");
	for (i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (i = 0, rc = 0; i < n; i++)
		rc |= e[i].rc;
	ok(n == BULK_N && rc == 0,
	   "the exports end well once the table is free (the ones beyond the "
	   "share waited their turn)");
	PQfinish(raw);
	db_close(d);
}
