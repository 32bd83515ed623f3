/* inval.c - kernel cache invalidation off the FUSE handlers; see inval.h.
 *
 Two bounded FIFOs of paths, each with its thread: one hands each path to
 * fuse_invalidate_path (the inode's attributes and pages), the other each
 * entry to fuse_lowlevel_notify_inval_entry (the high-level API has no
 * entry invalidation: the directory's node id is its st_ino through the
 * mount). Apart, so an entry notification waiting for a directory's lock
 * never delays an inode's (review-O A2). The queues are small and
 * dropping is safe: the kernel's attribute
 * and entry caches time out by themselves (attr_timeout, entry_timeout),
 * an invalidation only makes the new state show at once.
 *
 * Beside it, a small table of paths whose type changed under the kernel
 * (inval_type_changed): the first getattr of each answers ESTALE. */
#include "inval.h"

#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ll.h"
#include "log.h"

#define INVAL_MAX 256 /* paths waiting; more are dropped */
#define STALE_MAX 64  /* paths marked by inval_type_changed at once */
/* Callers answered ESTALE per mark: past that many in its window, others
 * are served (an ESTALE to a caller already answered one fails its call:
 * the kernel retries once; review-35 F3). */
#define STALE_TIDS 256

struct inval_req {
	char *path;	 /* the inode's, or the entry's directory */
	char *name;	 /* NULL: the inode of path; else an entry of path */
	fuse_ino_t dino; /* an entry's directory's node id when known at
			    queueing (low-level API), else 0: path's */
	uint64_t seq;	 /* order of queueing, from 1 */
	struct inval_req *next;
};

/* A path inval_type_changed marked, until its first getattr or until. */
struct stale_mark {
	char *path;	       /* NULL: a free slot */
	struct timespec until; /* CLOCK_MONOTONIC */
	/* Callers (thread ids) answered ESTALE since the mark: their retry
	 * is served. Never forgotten within the window: when full, no
	 * caller is answered ESTALE any more. A caller whose tid the
	 * daemon cannot see (0: another pid namespace) is one caller: one
	 * ESTALE for all of them (review-35 F2, the one-shot of old). */
	pid_t *tids;	/* ntids of them, grown to at most STALE_TIDS */
	unsigned ntids; /* answered so far */
	unsigned cap;	/* tids' room */
};

static struct {
	pthread_mutex_t lock;
	struct stale_mark marks[STALE_MAX]; /* protected by lock */
	atomic_int n; /* slots in use; written under lock, read without */
} stale = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* A FIFO of requests and the thread that serves it. Two of them: inode
 * invalidations (waited for by inval_path_wait's callers) and entry
 * invalidations (never waited for), so an entry notification blocked on a
 * directory's lock (a long rename into it, a slow readdir) never holds up
 * an inode one, whose waiters would time out and whose node could be
 * renamed meanwhile (review-O A2). */
struct inval_q {
	const char
	    *what; /* for the log: "invalidation", "entry invalidation" */
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
};

static struct inval_q iq = {.what = "kernel cache invalidation",
			    .lock = PTHREAD_MUTEX_INITIALIZER,
			    .cond = PTHREAD_COND_INITIALIZER};
static struct inval_q eq = {.what = "kernel entry invalidation",
			    .lock = PTHREAD_MUTEX_INITIALIZER,
			    .cond = PTHREAD_COND_INITIALIZER};

/* Set by inval_start before the workers start, read by them; kept. */
static struct {
	struct fuse *fuse;	 /* NULL with the low-level API */
	struct fuse_session *se; /* the session of either */
	char *mountpoint;
	dev_t dev; /* the mount's device number, 0: unknown */
} inval;

/* Caller holds q->lock. Frees every queued request. */
static void inval_drop_all_locked(struct inval_q *q)
{
	struct inval_req *r;

	while ((r = q->head)) {
		q->head = r->next;
		free(r->path);
		free(r->name);
		free(r);
	}
	q->tail = NULL;
	q->n = 0;
}

/* The kernel forgets its entry name in directory dir (a fuse path): the
 * directory's node id is its inode number as the mount shows it (use_ino
 * is off: libfuse gives st_ino = node id, ops.c cfs_init). The stat may
 * ask the daemon (a GETATTR, served by the loop); the notification waits
 * for the directory's lock (a rename into it holds it until it has
 * returned). 0 or -errno (-ENOENT: nothing cached). */
static int inval_entry_notify(const char *dir, fuse_ino_t known,
			      const char *name)
{
	struct stat st;
	char *full;
	fuse_ino_t dino;
	int rc;

	if (known) /* found when queued */
		return fuse_lowlevel_notify_inval_entry(inval.se, known, name,
							strlen(name));
	if (ll_active()) {
		/* Our own node ids: no stat through the mount. */
		rc = ll_path_ino(dir, &dino);
		if (rc == 0)
			rc = fuse_lowlevel_notify_inval_entry(
			    inval.se, dino, name, strlen(name));
		return rc;
	}
	if (!inval.mountpoint)
		return -ENOENT;
	if (asprintf(&full, "%s%s", inval.mountpoint, dir) < 0)
		return -ENOMEM;
	rc = fstatat(AT_FDCWD, full, &st, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
	free(full);
	if (rc == 0 && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	/* Another filesystem at that path (a mount over a directory of
	 * ours, this one moved away): its inode number is no node id of
	 * ours (review-O A6). */
	if (rc == 0 && inval.dev && st.st_dev != inval.dev)
		rc = -EXDEV;
	if (rc == 0)
		rc = fuse_lowlevel_notify_inval_entry(
		    inval.se, (fuse_ino_t)st.st_ino, name, strlen(name));
	return rc;
}

/* The kernel forgets the attributes and pages of fuse path: 0 or -errno
 * (-ENOENT: no node for it). */
static int inval_inode_notify(const char *path)
{
	fuse_ino_t ino;
	int rc;

	if (!ll_active())
		return fuse_invalidate_path(inval.fuse, path);
	rc = ll_path_ino(path, &ino);
	if (rc == 0)
		rc = fuse_lowlevel_notify_inval_inode(inval.se, ino, 0, 0);
	return rc;
}

/* The worker of queue arg (struct inval_q *). */
static void *inval_main(void *arg)
{
	struct inval_q *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct inval_req *r;
		int rc;

		while (!q->stop && !q->head)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->stop)
			break;
		r = q->head;
		q->head = r->next;
		if (!q->head)
			q->tail = NULL;
		q->n--;
		pthread_mutex_unlock(&q->lock);
		/* -ENOENT: the kernel never looked the path up, or forgot
		 * it; nothing cached. */
		if (r->name)
			rc = inval_entry_notify(r->path, r->dino, r->name);
		else
			rc = inval_inode_notify(r->path);
		if (rc && rc != -ENOENT)
			log_debug("kernel cache of %s%s%s not invalidated: %s",
				  r->path, r->name ? " entry " : "",
				  r->name ? r->name : "", strerror(-rc));
		pthread_mutex_lock(&q->lock);
		q->done = r->seq;
		pthread_cond_broadcast(&q->cond); /* inval_path_wait */
		free(r->path);
		free(r->name);
		free(r);
	}
	q->running = 0;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* Starts q's worker: 0 or -errno. */
static int inval_q_start(struct inval_q *q)
{
	int rc;

	pthread_mutex_lock(&q->lock);
	q->stop = 0;
	q->running = 1;
	rc = pthread_create(&q->thread, NULL, inval_main, q);
	if (rc)
		q->running = 0;
	q->joinable = !rc;
	pthread_mutex_unlock(&q->lock);
	return -rc;
}

int inval_start(struct fuse *f, struct fuse_session *se, const char *mountpoint,
		dev_t dev)
{
	int rc;

	inval.dev = dev;
	inval.fuse = f;
	inval.se = se;
	free(inval.mountpoint);
	inval.mountpoint = mountpoint ? strdup(mountpoint) : NULL;
	rc = inval_q_start(&iq);
	if (rc == 0 && inval_q_start(&eq) != 0)
		/* Entries are left to time out (entry_timeout): the inode
		 * worker still serves. */
		log_warn("kernel entry invalidation thread not started");
	return rc;
}

/* Caller holds q->lock. Queues path (name NULL: its inode; else its
 * entry name): its seq, or 0 (dropped). */
static uint64_t inval_queue_locked(struct inval_q *q, const char *path,
				   const char *name, fuse_ino_t dino)
{
	struct inval_req *r;

	if (!q->running || q->stop || q->n >= INVAL_MAX)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		return 0;
	r->path = strdup(path);
	r->name = name ? strdup(name) : NULL;
	if (!r->path || (name && !r->name)) {
		free(r->path);
		free(r->name);
		free(r);
		return 0;
	}
	r->dino = dino;
	r->seq = ++q->queued;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	q->n++;
	pthread_cond_broadcast(&q->cond);
	return r->seq;
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
	pthread_mutex_lock(&iq.lock);
	seq = inval_queue_locked(&iq, path, NULL, 0);
	while (seq && !iq.stop && iq.done < seq && rc == 0)
		rc = pthread_cond_timedwait(&iq.cond, &iq.lock, &until);
	if (seq && iq.done >= seq) {
		pthread_mutex_unlock(&iq.lock);
		return 0;
	}
	pthread_mutex_unlock(&iq.lock);
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

	pthread_mutex_lock(&iq.lock);
	seq = inval_queue_locked(&iq, path, NULL, 0);
	pthread_mutex_unlock(&iq.lock);
	if (!seq)
		log_debug("kernel cache of %s left to time out", path);
}

void inval_inbox(const char *rel)
{
	char *path;

	if (asprintf(&path, "/inbox/%s", rel) < 0)
		return;
	inval_path(path);
	free(path);
}

/* Is a before b (CLOCK_MONOTONIC)? */
static int ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Caller holds stale.lock. Frees slot i. */
static void stale_free_locked(int i)
{
	free(stale.marks[i].path);
	stale.marks[i].path = NULL;
	free(stale.marks[i].tids);
	stale.marks[i].tids = NULL;
	stale.marks[i].ntids = stale.marks[i].cap = 0;
	atomic_fetch_sub(&stale.n, 1);
}

/* Marks path for inval_stale_take until INVAL_STALE_MS from now: 0, or
 * -ENOSPC / -ENOMEM (not marked). */
static int stale_mark(const char *path)
{
	struct timespec now, until;
	int i, slot = -1;

	clock_gettime(CLOCK_MONOTONIC, &now);
	until = now;
	until.tv_sec += INVAL_STALE_MS / 1000;
	until.tv_nsec += (long)(INVAL_STALE_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&stale.lock);
	for (i = 0; i < STALE_MAX; i++) {
		struct stale_mark *m = &stale.marks[i];

		if (m->path && ts_before(&m->until, &now))
			stale_free_locked(i); /* expired */
		if (m->path && strcmp(m->path, path) == 0) {
			m->until = until; /* marked again: answered anew */
			m->ntids = 0;
			pthread_mutex_unlock(&stale.lock);
			return 0;
		}
		if (!m->path && slot < 0)
			slot = i;
	}
	if (slot >= 0 && (stale.marks[slot].path = strdup(path))) {
		stale.marks[slot].until = until;
		stale.marks[slot].ntids = stale.marks[slot].cap = 0;
		stale.marks[slot].tids = NULL;
		atomic_fetch_add(&stale.n, 1);
		pthread_mutex_unlock(&stale.lock);
		return 0;
	}
	pthread_mutex_unlock(&stale.lock);
	return slot < 0 ? -ENOSPC : -ENOMEM;
}

void inval_stale_mark(const char *path)
{
	if (stale_mark(path) != 0)
		log_debug("%s: type change not marked: its first stat may "
			  "fail with EIO",
			  path);
}

void inval_type_changed(const char *path)
{
	inval_stale_mark(path);
	inval_entry(path);
}

/* The directory part of fuse path ("/" for "/x"), or NULL (no name after
 * the last '/', or no memory). Caller frees. */
static char *inval_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash || !slash[1])
		return NULL;
	return slash == path ? strdup("/")
			     : strndup(path, (size_t)(slash - path));
}

/* Queues path's entry in its directory (dino: that directory's node id
 * if known, else 0). */
static void inval_entry_queue(const char *path, fuse_ino_t dino)
{
	char *dir = inval_dir_of(path);
	uint64_t seq = 0;

	if (dir) {
		pthread_mutex_lock(&eq.lock);
		seq =
		    inval_queue_locked(&eq, dir, strrchr(path, '/') + 1, dino);
		pthread_mutex_unlock(&eq.lock);
		free(dir);
	}
	if (!seq)
		log_debug("kernel entry of %s left to time out", path);
}

void inval_entry(const char *path)
{
	inval_entry_queue(path, 0);
}

void inval_entry_moved(const char *path, const char *before)
{
	fuse_ino_t dino = 0;

	if (ll_active()) {
		char *dir = inval_dir_of(before);

		/* The node table renames the directory's node only once
		 * the rename's handler has returned: its node id, the
		 * same before and after, is found by the old path now. */
		if (!dir || ll_path_ino(dir, &dino) != 0)
			dino = 0;
		free(dir);
	}
	inval_entry_queue(path, dino);
}

int inval_stale_take(const char *path, pid_t caller)
{
	struct timespec now;
	int i, hit = 0;

	if (!path || atomic_load(&stale.n) == 0)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&stale.lock);
	for (i = 0; i < STALE_MAX; i++) {
		struct stale_mark *m = &stale.marks[i];
		unsigned k, known;

		if (!m->path)
			continue;
		if (ts_before(&m->until, &now)) {
			stale_free_locked(i); /* expired: n drops back to 0 */
			continue;
		}
		if (strcmp(m->path, path) != 0)
			continue;
		known = m->ntids;
		for (k = 0; k < known && m->tids[k] != caller; k++)
			;
		if (k < known || known >= STALE_TIDS)
			continue; /* its retry, or too many: served */
		if (known == m->cap) {
			unsigned cap = m->cap ? m->cap * 2 : 8;
			pid_t *t = realloc(m->tids, cap * sizeof(*t));

			if (!t)
				continue; /* served: never a second ESTALE */
			m->tids = t;
			m->cap = cap;
		}
		m->tids[m->ntids++] = caller; /* its first request since */
		hit = 1;
	}
	pthread_mutex_unlock(&stale.lock);
	return hit;
}

/* Tells q's worker to stop and drops its queue, without waiting. */
static void inval_q_tell_stop(struct inval_q *q)
{
	pthread_mutex_lock(&q->lock);
	q->stop = 1;
	inval_drop_all_locked(q);
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

/* Waits for q's worker to end until the absolute time until, and joins
 * it: 1 when it is still inside the kernel, else 0. */
static int inval_q_join(struct inval_q *q, const struct timespec *until)
{
	int left, join;

	pthread_mutex_lock(&q->lock);
	while (q->running &&
	       pthread_cond_timedwait(&q->cond, &q->lock, until) == 0)
		;
	left = q->running;
	join = !left && q->joinable;
	if (join)
		q->joinable = 0;
	pthread_mutex_unlock(&q->lock);
	if (left) {
		log_warn("%s still waiting on the kernel at unmount", q->what);
		return 1;
	}
	if (join)
		pthread_join(q->thread, NULL);
	return 0;
}

int inval_stop(int wait_ms)
{
	struct timespec until;
	int left;

	inval_q_tell_stop(&iq);
	inval_q_tell_stop(&eq);
	inval_deadline(&until, wait_ms); /* one bound for both */
	left = inval_q_join(&iq, &until);
	left |= inval_q_join(&eq, &until);
	return left;
}

/* inval_abandon for q. */
static void inval_q_abandon(struct inval_q *q)
{
	int detach;

	pthread_mutex_lock(&q->lock);
	detach = q->running && q->joinable;
	if (detach)
		q->joinable = 0;
	pthread_mutex_unlock(&q->lock);
	if (detach) {
		log_warn("%s thread left behind in the kernel", q->what);
		pthread_detach(q->thread);
	}
}

void inval_abandon(void)
{
	inval_q_abandon(&iq);
	inval_q_abandon(&eq);
}
