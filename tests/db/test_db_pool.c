/* test_db_pool.c - the connection pool's waiters are bounded (review F6):
 * with every pooled connection busy for longer than a statement may take,
 * an operation waiting for one fails with -EIO after about
 * DB_STATEMENT_DEADLINE_MS instead of waiting as long as the holder. */
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "test_db.h"

#define HOLD_S (DB_STATEMENT_DEADLINE_MS / 1000 + 8)

struct holder {
	struct db *d;
	int rc;
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
	return NULL;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void test_pool_wait(const char *conninfo)
{
	struct holder h = {0};
	pthread_t th;
	double t0, dt;
	int rc;

	h.d = open_or_die(conninfo, 1);
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
	pthread_join(th, NULL);
	ok(h.rc == 0, "the holder's operation ends well (rc %d)", h.rc);
	ok(db_ping(h.d) == 0, "the connection serves again once it is back");
	db_close(h.d);
}
