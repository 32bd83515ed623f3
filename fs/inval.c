/* inval.c - kernel cache invalidation off the FUSE handlers; see inval.h.
 *
 * A bounded FIFO of paths and one thread that hands each to
 * fuse_invalidate_path (the inode's attributes and pages). The queue is
 * small and dropping is safe: the kernel's attribute cache times out by
 * itself (attr_timeout), an invalidation only makes the new state show at
 * once. */
#include "inval.h"

#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fuse.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define INVAL_MAX 256 /* paths waiting; more are dropped */

struct inval_req {
	char *path;
	uint64_t seq; /* order of queueing, from 1 */
	struct inval_req *next;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct inval_req *head, *tail; /* protected by lock */
	size_t n;		       /* protected by lock */
	int stop;		       /* protected by lock */
	int running;  /* protected by lock: the worker has not ended */
	int joinable; /* protected by lock: started, not joined or detached */
	uint64_t queued; /* protected by lock: seq of the last queued */
	uint64_t done;	 /* protected by lock: seq of the last notified */
	pthread_t thread;
	struct fuse *fuse;
} inval = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* Caller holds inval.lock. Frees every queued request. */
static void inval_drop_all_locked(void)
{
	struct inval_req *q;

	while ((q = inval.head)) {
		inval.head = q->next;
		free(q->path);
		free(q);
	}
	inval.tail = NULL;
	inval.n = 0;
}

static void *inval_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&inval.lock);
	for (;;) {
		struct inval_req *q;
		int rc;

		while (!inval.stop && !inval.head)
			pthread_cond_wait(&inval.cond, &inval.lock);
		if (inval.stop)
			break;
		q = inval.head;
		inval.head = q->next;
		if (!inval.head)
			inval.tail = NULL;
		inval.n--;
		pthread_mutex_unlock(&inval.lock);
		/* -ENOENT: the kernel never looked the path up, or forgot
		 * it; nothing cached. */
		rc = fuse_invalidate_path(inval.fuse, q->path);
		if (rc && rc != -ENOENT)
			log_debug("kernel cache of %s not invalidated: %s",
				  q->path, strerror(-rc));
		pthread_mutex_lock(&inval.lock);
		inval.done = q->seq;
		pthread_cond_broadcast(&inval.cond); /* inval_path_wait */
		free(q->path);
		free(q);
	}
	inval.running = 0;
	pthread_cond_broadcast(&inval.cond);
	pthread_mutex_unlock(&inval.lock);
	return NULL;
}

int inval_start(struct fuse *f)
{
	int rc;

	pthread_mutex_lock(&inval.lock);
	inval.fuse = f;
	inval.stop = 0;
	inval.running = 1;
	rc = pthread_create(&inval.thread, NULL, inval_main, NULL);
	if (rc)
		inval.running = 0;
	inval.joinable = !rc;
	pthread_mutex_unlock(&inval.lock);
	return -rc;
}

/* Caller holds inval.lock. Queues path: its seq, or 0 (dropped). */
static uint64_t inval_queue_locked(const char *path)
{
	struct inval_req *q;

	if (!inval.running || inval.stop || inval.n >= INVAL_MAX)
		return 0;
	q = calloc(1, sizeof(*q));
	if (!q)
		return 0;
	q->path = strdup(path);
	if (!q->path) {
		free(q);
		return 0;
	}
	q->seq = ++inval.queued;
	if (inval.tail)
		inval.tail->next = q;
	else
		inval.head = q;
	inval.tail = q;
	inval.n++;
	pthread_cond_broadcast(&inval.cond);
	return q->seq;
}

/* The absolute CLOCK_REALTIME time wait_ms from now. */
static void inval_deadline(struct timespec *until, int wait_ms)
{
	clock_gettime(CLOCK_REALTIME, until);
	until->tv_sec += wait_ms / 1000;
	until->tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (until->tv_nsec >= 1000000000L) {
		until->tv_sec++;
		until->tv_nsec -= 1000000000L;
	}
}

int inval_path_wait(const char *path, int wait_ms)
{
	struct timespec until;
	uint64_t seq;
	int rc = 0;

	inval_deadline(&until, wait_ms);
	pthread_mutex_lock(&inval.lock);
	seq = inval_queue_locked(path);
	while (seq && !inval.stop && inval.done < seq && rc == 0)
		rc = pthread_cond_timedwait(&inval.cond, &inval.lock, &until);
	if (seq && inval.done >= seq) {
		pthread_mutex_unlock(&inval.lock);
		return 0;
	}
	pthread_mutex_unlock(&inval.lock);
	if (!seq)
		log_debug("kernel cache of %s left to time out", path);
	else
		log_debug("kernel cache of %s: notification not done within "
			  "%d ms, left to the worker",
			  path, wait_ms);
	return -ETIMEDOUT;
}

void inval_path(const char *path)
{
	uint64_t seq;

	pthread_mutex_lock(&inval.lock);
	seq = inval_queue_locked(path);
	pthread_mutex_unlock(&inval.lock);
	if (!seq)
		log_debug("kernel cache of %s left to time out", path);
}

int inval_stop(int wait_ms)
{
	struct timespec until;
	int left, join;

	pthread_mutex_lock(&inval.lock);
	inval.stop = 1;
	inval_drop_all_locked();
	pthread_cond_broadcast(&inval.cond);
	inval_deadline(&until, wait_ms);
	while (inval.running &&
	       pthread_cond_timedwait(&inval.cond, &inval.lock, &until) == 0)
		;
	left = inval.running;
	join = !left && inval.joinable;
	if (join)
		inval.joinable = 0;
	pthread_mutex_unlock(&inval.lock);
	if (left) {
		log_warn("kernel cache invalidation still waiting on the "
			 "kernel at unmount");
		return 1;
	}
	if (join)
		pthread_join(inval.thread, NULL);
	return 0;
}

void inval_abandon(void)
{
	int detach;

	pthread_mutex_lock(&inval.lock);
	detach = inval.running && inval.joinable;
	if (detach)
		inval.joinable = 0;
	pthread_mutex_unlock(&inval.lock);
	if (detach) {
		log_warn("kernel cache invalidation thread left behind in the "
			 "kernel");
		pthread_detach(inval.thread);
	}
}
