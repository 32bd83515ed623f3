/* upload.c - streaming multipart upload of a spool file; see upload.h. */
#include "upload.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "log.h"

#define UPLOAD_MAX_PARTS 10000
#define UPLOAD_PART_TIER 2000	    /* part size doubles every 2000 parts */
#define UPLOAD_READ_CHUNK (1 << 20) /* a hasher's or worker's read buffer */

/* A worker's job: part `number` of u, or (number 0) the creation of u's
 * multipart upload, which goes ahead of its first part. */
struct part_job {
	struct upload *u;
	int number;
	off_t off;
	uint64_t len;
	struct part_job *next;
};

/* Two kinds of threads: workers run jobs (FIFO of part_job), hashers hash
 * what writers appended (FIFO of uploads with bytes to hash, each upload at
 * most once in it and hashed by one hasher at a time, in order). A hasher
 * hashes one chunk of an upload, then puts it back at the tail: uploads
 * share the hashers in turn, and no request to the store ever runs in a
 * hasher. Lock order: pool->lock, then an upload's lock. */
struct upload_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;	      /* jobs queued, or stopping */
	pthread_cond_t hcond;	      /* uploads queued, or hstopping */
	struct part_job *head, *tail; /* protected by lock */
	struct upload *hhead, *htail; /* protected by lock */
	int stopping;		      /* protected by lock: workers end */
	int hstopping;		      /* protected by lock: hashers end */
	int n_workers, n_hashers;
	pthread_t *workers, *hashers;
	/* The journal of open multipart uploads (upload_journal_open), or
	 * -1; jopen counts those it holds. */
	pthread_mutex_t jlock;
	int jfd;     /* protected by jlock */
	char *jpath; /* protected by jlock */
	long jopen;  /* protected by jlock */
	int jfailed; /* protected by jlock: a write failure was logged */
};

/* Records that multipart upload id of bucket/key was created (key given)
 * or ended (key NULL: completed, or aborted). A journal with nothing left
 * open is emptied. A failed write is logged once: the upload goes on (a
 * death would then leave it for the store's own lifecycle rules). */
static void upload_journal_note(struct upload_pool *p, const char *bucket,
				const char *id, const char *key)
{
	char *line = NULL;
	int n, err = 0;

	pthread_mutex_lock(&p->jlock);
	if (p->jfd < 0)
		goto out;
	if (!key && p->jopen > 0 && --p->jopen == 0) {
		if (ftruncate(p->jfd, 0) != 0)
			err = errno;
		goto out;
	}
	n = key ? asprintf(&line, "C\t%s\t%s\t%s\n", bucket, id, key)
		: asprintf(&line, "E\t%s\t%s\n", bucket, id);
	if (n < 0) {
		line = NULL;
		err = ENOMEM;
		goto out;
	}
	if (write(p->jfd, line, (size_t)n) != n)
		err = errno ? errno : EIO;
	else if (key)
		p->jopen++;
out:
	if (err && !p->jfailed) {
		p->jfailed = 1;
		log_warn("journal of multipart uploads %s: %s",
			 p->jpath ? p->jpath : "?", strerror(err));
	}
	pthread_mutex_unlock(&p->jlock);
	free(line);
}

void upload_pool_set_journal(struct upload_pool *p, int fd, char *path)
{
	pthread_mutex_lock(&p->jlock);
	p->jfd = fd;
	p->jpath = path;
	p->jopen = 0;
	pthread_mutex_unlock(&p->jlock);
}

/* upload.hstate; H_QUEUED <=> in the pool's hasher FIFO, changed to and
 * from under pool->lock and u->lock both. */
enum { H_IDLE, H_QUEUED, H_RUNNING };
/* upload.mpu: the multipart upload of the current version. */
enum { MPU_NONE, MPU_CREATING, MPU_READY, MPU_FAILED };

struct upload {
	struct upload_pool *pool;
	struct s3_client *s3;
	char *bucket;
	char *key;
	int fd;
	uint64_t part_size;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	int pending;	       /* protected by lock: jobs queued or running */
	unsigned done_jobs;    /* protected by lock: jobs ended (a counter) */
	int error;	       /* protected by lock: first job error, errno */
	struct s3_part *parts; /* protected by lock: parts[i].number = i + 1 */
	size_t n_parts, cap_parts; /* protected by lock */
	int broken; /* protected by lock: stream no longer matches the spool */
	struct s3_kv *meta; /* protected by lock: upload_set_meta's */
	size_t n_meta;	    /* protected by lock */
	uint64_t appended;  /* protected by lock: bytes the writer appended */
	uint64_t hashed;    /* protected by lock: bytes hashed so far */
	int hstate;	    /* protected by lock (see H_QUEUED) */
	int held; /* protected by lock: the caller's thread hashes, no hasher */
	int nomem_logged;	  /* protected by lock */
	int mpu;		  /* protected by lock: MPU_* */
	struct part_job *waiting; /* protected by lock: parts queued while
				     mpu is MPU_CREATING */
	struct upload *hnext;	  /* protected by pool->lock */

	/* Set by the worker that created it (under lock, before any part
	 * job of it is queued); freed by the caller once pending is 0. */
	char *upload_id; /* multipart upload in flight, or NULL */
	/* Set with mpu = MPU_CREATING by whoever queued the creation (the
	 * job reads it), freed by the caller once pending is 0. */
	struct s3_kv *mpu_meta; /* what upload_id is created with */
	size_t n_mpu_meta;
	/* Set by the creation's job with upload_id: the UPLOAD_TAG it was
	 * created with (the completed object's). */
	char mpu_tag[UPLOAD_TAG_HEX];
	/* The hash state: a hasher's while hstate is H_RUNNING, else the
	 * caller thread's once it holds u (upload_hold). */
	uint64_t part_start;
	uint64_t cur_part_size;
	struct hash_ctx h;
	char tag[UPLOAD_TAG_HEX]; /* protected by lock: UPLOAD_TAG of the
				     current version (upload_new, or the
				     last reset); "" when none was drawn */
};

static int upload_close_part(struct upload *u, uint64_t end);
static int upload_catch_up(struct upload *u, uint64_t size);

static void kv_free(struct s3_kv *kv, size_t n)
{
	size_t i;

	for (i = 0; kv && i < n; i++) {
		free(kv[i].name);
		free(kv[i].value);
	}
	free(kv);
}

/* A deep copy of kv[0..n); NULL on OOM (or when n is 0). */
static struct s3_kv *kv_dup(const struct s3_kv *kv, size_t n)
{
	struct s3_kv *c = n ? calloc(n, sizeof(*c)) : NULL;
	size_t i;

	for (i = 0; c && i < n; i++) {
		c[i].name = strdup(kv[i].name);
		c[i].value = strdup(kv[i].value);
		if (!c[i].name || !c[i].value) {
			kv_free(c, i + 1);
			return NULL;
		}
	}
	return c;
}

/* Every entry of want but "mtime" is in have with the same value. */
static int kv_same(const struct s3_kv *have, size_t n_have,
		   const struct s3_kv *want, size_t n_want)
{
	size_t i, j;

	for (i = 0; i < n_want; i++) {
		if (!strcmp(want[i].name, "mtime"))
			continue;
		for (j = 0; j < n_have; j++)
			if (!strcmp(have[j].name, want[i].name))
				break;
		if (j == n_have || strcmp(have[j].value, want[i].value))
			return 0;
	}
	return 1;
}

/* Caller holds u->lock (or owns u alone): draws the tag of a new version.
 * Without randomness the tag is "" and sent nowhere: a failed upload's
 * object is then never taken for it (the safe side). */
static void upload_new_tag(struct upload *u)
{
	static const char hex[] = "0123456789abcdef";
	static atomic_int warned;
	unsigned char r[(UPLOAD_TAG_HEX - 1) / 2];
	size_t i;

	u->tag[0] = '\0';
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		if (!atomic_exchange(&warned, 1))
			log_warn("uploads: no random tag (%s): an upload "
				 "answered with an error will fail even if "
				 "it landed",
				 strerror(errno));
		return;
	}
	for (i = 0; i < sizeof(r); i++) {
		u->tag[2 * i] = hex[r[i] >> 4];
		u->tag[2 * i + 1] = hex[r[i] & 15];
	}
	u->tag[2 * sizeof(r)] = '\0';
}

/* kv[0..n) plus the entries of more[0..n_more) whose value is not "" in a
 * new array; entries borrowed. *n_out is its length. NULL on OOM. */
static struct s3_kv *kv_with(const struct s3_kv *kv, size_t n,
			     const struct s3_kv *more, size_t n_more,
			     size_t *n_out)
{
	struct s3_kv *all = calloc(n + n_more, sizeof(*all));
	size_t i;

	if (!all)
		return NULL;
	if (n)
		memcpy(all, kv, n * sizeof(*all));
	for (i = 0; i < n_more; i++)
		if (more[i].value[0])
			all[n++] = more[i];
	*n_out = n;
	return all;
}

/* Drops the record of what the multipart upload was created with. */
static void upload_forget_mpu(struct upload *u)
{
	kv_free(u->mpu_meta, u->n_mpu_meta);
	u->mpu_meta = NULL;
	u->n_mpu_meta = 0;
}

/* Appends the list first..last to the pool's job FIFO. */
static void upload_push_jobs(struct upload_pool *p, struct part_job *first,
			     struct part_job *last)
{
	pthread_mutex_lock(&p->lock);
	if (p->tail)
		p->tail->next = first;
	else
		p->head = first;
	p->tail = last;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* A job of u ended (it counted in pending): wakes u's waiters. */
static void upload_job_done(struct upload *u)
{
	pthread_mutex_lock(&u->lock);
	u->pending--;
	u->done_jobs++;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
}

/* CreateMultipartUpload with the metadata the creation was queued with.
 * The parts queued meanwhile go to the FIFO after it succeeds (before the
 * creation counts as done, see upload_wait_parts), or are dropped. */
static void upload_run_create(struct part_job *j)
{
	struct upload *u = j->u;
	struct part_job *held, *last = NULL, *next;
	char *id = NULL, tag[UPLOAD_TAG_HEX];
	struct s3_kv *all = NULL;
	size_t n_all = 0;
	int rc, skip;

	pthread_mutex_lock(&u->lock);
	skip = u->error;
	memcpy(tag, u->tag, sizeof(tag));
	pthread_mutex_unlock(&u->lock);
	if (!skip) {
		struct s3_kv t = {(char *)UPLOAD_TAG, tag};

		all = kv_with(u->mpu_meta, u->n_mpu_meta, &t, 1, &n_all);
		if (!all)
			skip = ENOMEM;
	}
	/* After any failure the version goes up from the spool at finish:
	 * nothing more is sent for this stream. */
	rc = skip ? -skip
		  : s3_mpu_create(u->s3, u->bucket, u->key, all, n_all, &id);
	free(all);
	pthread_mutex_lock(&u->lock);
	held = u->waiting;
	u->waiting = NULL;
	if (rc) {
		if (!u->error)
			u->error = -rc;
		u->mpu = MPU_FAILED;
		for (; held; held = next) {
			next = held->next;
			free(held);
			u->pending--;
			u->done_jobs++;
		}
	} else {
		u->upload_id = id;
		memcpy(u->mpu_tag, tag, sizeof(u->mpu_tag));
		u->mpu = MPU_READY;
	}
	pthread_mutex_unlock(&u->lock);
	if (!rc)
		upload_journal_note(u->pool, u->bucket, id, u->key);
	if (held) {
		for (last = held; last->next; last = last->next)
			;
		upload_push_jobs(u->pool, held, last);
	}
	upload_job_done(u);
	free(j);
}

static void upload_run_part(struct part_job *j)
{
	struct upload *u = j->u;
	char etag[80] = "", sha[HASH_SHA256_HEX];
	void *ctx = NULL;
	char *buf = NULL;
	uint64_t done = 0;
	int rc;

	pthread_mutex_lock(&u->lock);
	rc = u->error ? -u->error : 0; /* see upload_run_create */
	pthread_mutex_unlock(&u->lock);
	if (!rc) {
		ctx = sha256_new();
		buf = malloc(UPLOAD_READ_CHUNK);
		if (!ctx || !buf)
			rc = -ENOMEM;
	}
	while (!rc && done < j->len) {
		size_t want = j->len - done > UPLOAD_READ_CHUNK
				  ? UPLOAD_READ_CHUNK
				  : (size_t)(j->len - done);
		ssize_t n = pread(u->fd, buf, want, j->off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		sha256_update(ctx, buf, (size_t)n);
		done += (uint64_t)n;
	}
	if (ctx && !rc)
		sha256_final_hex(ctx, sha);
	sha256_free(ctx);
	free(buf);
	if (!rc)
		rc = s3_mpu_upload_part(u->s3, u->bucket, u->key, u->upload_id,
					j->number, u->fd, j->off, j->len, sha,
					etag);
	pthread_mutex_lock(&u->lock);
	if (rc) {
		if (!u->error)
			u->error = -rc;
	} else {
		struct s3_part *p = &u->parts[j->number - 1];

		p->number = j->number;
		memcpy(p->etag, etag, sizeof(p->etag));
	}
	pthread_mutex_unlock(&u->lock);
	upload_job_done(u);
	free(j);
}

static void upload_run_job(struct part_job *j)
{
	if (j->number == 0)
		upload_run_create(j);
	else
		upload_run_part(j);
}

static void *upload_worker(void *arg)
{
	struct upload_pool *p = arg;

	for (;;) {
		struct part_job *j;

		pthread_mutex_lock(&p->lock);
		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->cond, &p->lock);
		j = p->head;
		if (!j) {
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		j->next = NULL;
		upload_run_job(j);
	}
}

/* Takes the first of u's jobs that no worker has started out of the FIFO;
 * NULL if there is none. */
static struct part_job *upload_steal_job(struct upload *u)
{
	struct upload_pool *p = u->pool;
	struct part_job *j, *prev = NULL;

	pthread_mutex_lock(&p->lock);
	for (j = p->head; j && j->u != u; j = j->next)
		prev = j;
	if (j) {
		if (prev)
			prev->next = j->next;
		else
			p->head = j->next;
		if (p->tail == j)
			p->tail = prev;
		j->next = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	return j;
}

/* Waits until no job of u is queued or running, running in this thread
 * those no worker has started: the caller waits for its own requests in
 * flight, never for the workers to get through other files' parts. The
 * first job error as -errno, or 0. */
static int upload_wait_parts(struct upload *u)
{
	for (;;) {
		struct part_job *j;
		unsigned seen;
		int err;

		/* Read before looking at the FIFO: a creation pushes its
		 * waiting parts there before it counts as done. */
		pthread_mutex_lock(&u->lock);
		seen = u->done_jobs;
		pthread_mutex_unlock(&u->lock);
		j = upload_steal_job(u);
		if (j) {
			upload_run_job(j);
			continue;
		}
		pthread_mutex_lock(&u->lock);
		if (u->pending == 0) {
			err = u->error;
			pthread_mutex_unlock(&u->lock);
			return err ? -err : 0;
		}
		while (u->done_jobs == seen)
			pthread_cond_wait(&u->cond, &u->lock);
		pthread_mutex_unlock(&u->lock);
	}
}

/* Reads len bytes at off of the spool. 0 or -errno (-EIO if short: the
 * spool was truncated under the stream, which is then broken anyway). */
static int upload_pread_all(int fd, char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n =
		    pread(fd, buf + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* Hashes u's appended bytes from *pos on (at most cap of them, not past
 * avail nor the end of the current part) and queues the part they
 * complete; *pos moves past what was hashed. The caller owns the hash
 * state (a hasher running u, or the caller thread holding it). No request
 * to the store is made here. 0 or -errno (the stream is then broken). */
static int upload_hash_step(struct upload *u, char *buf, size_t cap,
			    uint64_t *pos, uint64_t avail)
{
	uint64_t from = *pos, to = avail, end, t0;
	int rc;

	end = u->part_start + u->cur_part_size;
	if (to > end)
		to = end;
	if (to - from > cap)
		to = from + cap;
	t0 = ctr_now_ns();
	rc = upload_pread_all(u->fd, buf, (size_t)(to - from), (off_t)from);
	if (rc)
		return rc;
	hash_update(&u->h, buf, (size_t)(to - from));
	stage_observe_since(STG_HASH, t0);
	*pos = to;
	return to == end ? upload_close_part(u, end) : 0;
}

/* u (pool->lock and u->lock held) goes to the tail of the hashers' FIFO. */
static void upload_hqueue_locked(struct upload_pool *p, struct upload *u)
{
	u->hstate = H_QUEUED;
	u->hnext = NULL;
	if (p->htail)
		p->htail->hnext = u;
	else
		p->hhead = u;
	p->htail = u;
	pthread_cond_signal(&p->hcond);
}

/* u has bytes no hasher is on: queue it, unless the caller holds it. */
static void upload_kick(struct upload *u)
{
	struct upload_pool *p = u->pool;

	pthread_mutex_lock(&p->lock);
	pthread_mutex_lock(&u->lock);
	if (u->hstate == H_IDLE && !u->held && !u->broken &&
	    u->hashed < u->appended)
		upload_hqueue_locked(p, u);
	pthread_mutex_unlock(&u->lock);
	pthread_mutex_unlock(&p->lock);
}

/* The caller's thread takes u's hashing over: u leaves the hashers' FIFO,
 * and a hasher in the middle of u's chunk finishes that chunk (the read
 * and hash of at most UPLOAD_READ_CHUNK bytes of this file, no request to
 * the store) and lets go. Never waits for the hashers to get to u. */
static void upload_hold(struct upload *u)
{
	struct upload_pool *p = u->pool;

	pthread_mutex_lock(&p->lock);
	pthread_mutex_lock(&u->lock);
	u->held = 1;
	if (u->hstate == H_QUEUED) {
		struct upload *q, *prev = NULL;

		for (q = p->hhead; q && q != u; q = q->hnext)
			prev = q;
		if (q) {
			if (prev)
				prev->hnext = u->hnext;
			else
				p->hhead = u->hnext;
			if (p->htail == u)
				p->htail = prev;
		}
		u->hnext = NULL;
		u->hstate = H_IDLE;
	}
	pthread_mutex_unlock(&p->lock);
	while (u->hstate == H_RUNNING)
		pthread_cond_wait(&u->cond, &u->lock);
	pthread_mutex_unlock(&u->lock);
}

/* Ends upload_hold: the hashers take u again if it has bytes to hash. */
static void upload_unhold(struct upload *u)
{
	pthread_mutex_lock(&u->lock);
	u->held = 0;
	pthread_mutex_unlock(&u->lock);
	upload_kick(u);
}

/* A hasher ends its turn on u, which it hashed up to `hashed` (rc: the
 * stream broke): u goes back to the tail of the FIFO if it has more to
 * hash and the caller does not hold it, else it is idle. */
static void upload_hasher_yield(struct upload_pool *p, struct upload *u,
				uint64_t hashed, int rc, int nomem)
{
	pthread_mutex_lock(&p->lock);
	pthread_mutex_lock(&u->lock);
	u->hashed = hashed;
	if (rc)
		u->broken = 1;
	if (!nomem && !u->held && !u->broken && u->hashed < u->appended) {
		upload_hqueue_locked(p, u);
	} else {
		u->hstate = H_IDLE;
		pthread_cond_broadcast(&u->cond);
	}
	pthread_mutex_unlock(&u->lock);
	pthread_mutex_unlock(&p->lock);
}

static void *upload_hasher(void *arg)
{
	struct upload_pool *p = arg;
	char *buf = NULL;

	for (;;) {
		struct upload *u;
		uint64_t pos, avail;
		int rc = 0, go, nomem = 0;

		pthread_mutex_lock(&p->lock);
		while (!p->hhead && !p->hstopping)
			pthread_cond_wait(&p->hcond, &p->lock);
		u = p->hhead;
		if (!u) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		p->hhead = u->hnext;
		if (!p->hhead)
			p->htail = NULL;
		u->hnext = NULL;
		pthread_mutex_lock(&u->lock);
		u->hstate = H_RUNNING;
		pos = u->hashed;
		avail = u->appended;
		go = !u->broken && !u->held && pos < avail;
		pthread_mutex_unlock(&u->lock);
		pthread_mutex_unlock(&p->lock);
		if (go && !buf)
			buf = malloc(UPLOAD_READ_CHUNK);
		if (go && !buf) {
			/* Not the file's failure: it stays whole, the next
			 * write queues it again (and this hasher tries to
			 * allocate again), its finisher hashes the rest. */
			nomem = 1;
			pthread_mutex_lock(&u->lock);
			if (!u->nomem_logged)
				log_warn("streaming upload of %s/%s: no memory "
					 "for a hasher's buffer; hashing it "
					 "later or at close",
					 u->bucket, u->key);
			u->nomem_logged = 1;
			pthread_mutex_unlock(&u->lock);
		} else if (go) {
			rc = upload_hash_step(u, buf, UPLOAD_READ_CHUNK, &pos,
					      avail);
			if (rc)
				log_warn("streaming upload of %s/%s: %s; will "
					 "upload at close",
					 u->bucket, u->key, strerror(-rc));
		}
		upload_hasher_yield(p, u, pos, rc, nomem);
	}
	free(buf);
	return NULL;
}

struct upload_pool *upload_pool_new(int workers)
{
	struct upload_pool *p = calloc(1, sizeof(*p));
	int i;

	if (!p)
		return NULL;
	if (workers < 1)
		workers = 1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	pthread_cond_init(&p->hcond, NULL);
	pthread_mutex_init(&p->jlock, NULL);
	p->jfd = -1;
	p->workers = calloc((size_t)workers, sizeof(*p->workers));
	p->hashers = calloc((size_t)workers, sizeof(*p->hashers));
	if (!p->workers || !p->hashers)
		goto fail;
	/* As many hashers as workers: files written at once hash in
	 * parallel, as they did in the FUSE threads. Both kinds are needed:
	 * a pool missing either would leave work queued forever. */
	for (i = 0; i < workers; i++) {
		if (!pthread_create(&p->workers[p->n_workers], NULL,
				    upload_worker, p))
			p->n_workers++;
		if (!pthread_create(&p->hashers[p->n_hashers], NULL,
				    upload_hasher, p))
			p->n_hashers++;
	}
	if (p->n_workers < 1 || p->n_hashers < 1) {
		upload_pool_free(p);
		errno = ENOMEM;
		return NULL;
	}
	return p;
fail:
	pthread_mutex_destroy(&p->jlock);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	pthread_cond_destroy(&p->hcond);
	free(p->workers);
	free(p->hashers);
	free(p);
	errno = ENOMEM;
	return NULL;
}

/* Hashers first: a hasher queues parts, so the workers stop only once no
 * hasher can queue any more. */
void upload_pool_free(struct upload_pool *p)
{
	int i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->hstopping = 1;
	pthread_cond_broadcast(&p->hcond);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->n_hashers; i++)
		pthread_join(p->hashers[i], NULL);
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->n_workers; i++)
		pthread_join(p->workers[i], NULL);
	if (p->jfd >= 0) {
		/* Nothing left open: no sweep needs it. */
		if (p->jopen == 0 && p->jpath)
			unlink(p->jpath);
		close(p->jfd);
	}
	free(p->jpath);
	pthread_mutex_destroy(&p->jlock);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	pthread_cond_destroy(&p->hcond);
	free(p->workers);
	free(p->hashers);
	free(p);
}

struct upload *upload_new(struct upload_pool *p, struct s3_client *s3,
			  const char *bucket, const char *key, int fd,
			  uint64_t part_size)
{
	struct upload *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	u->pool = p;
	u->s3 = s3;
	u->fd = fd;
	u->part_size = part_size < (5ULL << 20) ? (5ULL << 20) : part_size;
	u->cur_part_size = u->part_size;
	u->bucket = strdup(bucket);
	u->key = strdup(key);
	upload_new_tag(u);
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	if (!u->bucket || !u->key || hash_init(&u->h)) {
		upload_free(u);
		return NULL;
	}
	return u;
}

/* Drops the multipart state (aborting it on the server) and every hash.
 * Jobs of u not started yet end without a request (u->error is set while
 * they drain); ends the caller's hold. */
static void upload_reset(struct upload *u, int broken)
{
	upload_hold(u);
	pthread_mutex_lock(&u->lock);
	if (!u->error)
		u->error = ECANCELED;
	pthread_mutex_unlock(&u->lock);
	upload_wait_parts(u);
	if (u->upload_id) {
		int rc = s3_mpu_abort(u->s3, u->bucket, u->key, u->upload_id);

		if (rc && rc != -ENOENT)
			log_warn("abort of multipart upload of %s/%s: %s (left "
				 "to the next sweep of the journal)",
				 u->bucket, u->key, strerror(-rc));
		else
			upload_journal_note(u->pool, u->bucket, u->upload_id,
					    NULL);
		free(u->upload_id);
		u->upload_id = NULL;
	}
	upload_forget_mpu(u);
	pthread_mutex_lock(&u->lock);
	u->n_parts = 0;
	u->error = 0;
	u->appended = 0;
	u->hashed = 0;
	u->broken = broken;
	u->mpu = MPU_NONE;
	u->held = 0;
	upload_new_tag(u);
	pthread_mutex_unlock(&u->lock);
	hash_reset(&u->h);
	u->part_start = 0;
	u->cur_part_size = u->part_size;
}

/* Queues part `number` = [off, off+len) (numbered here). The first part of
 * a stream queues the creation of its multipart upload ahead of it (a job
 * like the parts: run by a worker, or by this upload's finisher, never by
 * a hasher), created
 * with upload_set_meta's metadata; parts queued before it is created wait
 * for it on u->waiting. Returns 0 or -errno. */
static int upload_queue_part(struct upload *u, off_t off, uint64_t len)
{
	struct part_job *j = calloc(1, sizeof(*j)), *c = NULL;
	struct s3_kv *meta = NULL;
	size_t n_meta = 0;
	int rc = 0, create;

	if (!j)
		return -ENOMEM;
	j->u = u;
	j->off = off;
	j->len = len;
	pthread_mutex_lock(&u->lock);
	if (u->mpu == MPU_FAILED) {
		rc = u->error ? -u->error : -EIO;
		goto unlock;
	}
	create = u->mpu == MPU_NONE;
	if (create) {
		n_meta = u->n_meta;
		meta = kv_dup(u->meta, n_meta);
		c = calloc(1, sizeof(*c));
		if (!c || (n_meta && !meta)) {
			rc = -ENOMEM;
			goto unlock;
		}
	}
	if (u->n_parts == u->cap_parts) {
		size_t cap = u->cap_parts ? u->cap_parts * 2 : 16;
		struct s3_part *np = realloc(u->parts, cap * sizeof(*np));

		if (!np) {
			rc = -ENOMEM;
			goto unlock;
		}
		u->parts = np;
		u->cap_parts = cap;
	}
	if (create) {
		upload_forget_mpu(u);
		u->mpu_meta = meta;
		u->n_mpu_meta = n_meta;
		meta = NULL;
		u->mpu = MPU_CREATING;
		c->u = u;
		u->pending++;
	}
	memset(&u->parts[u->n_parts], 0, sizeof(u->parts[0]));
	u->n_parts++;
	j->number = (int)u->n_parts;
	u->pending++;
	if (u->mpu == MPU_CREATING) {
		struct part_job **t = &u->waiting;

		while (*t)
			t = &(*t)->next;
		*t = j;
		j = NULL;
	}
unlock:
	pthread_mutex_unlock(&u->lock);
	if (rc) {
		free(j);
		free(c);
		kv_free(meta, n_meta);
		return rc;
	}
	if (c)
		upload_push_jobs(u->pool, c, c);
	if (j)
		upload_push_jobs(u->pool, j, j);
	return 0;
}

static uint64_t upload_part_size_for(const struct upload *u, size_t number)
{
	unsigned tier = (unsigned)((number - 1) / UPLOAD_PART_TIER);

	return u->part_size << (tier > 20 ? 20 : tier);
}

/* Queues the part [part_start, end): the hasher at a part boundary, or
 * the caller at finish. */
static int upload_close_part(struct upload *u, uint64_t end)
{
	size_t n;
	int rc;

	pthread_mutex_lock(&u->lock);
	n = u->n_parts;
	pthread_mutex_unlock(&u->lock);
	if (n + 1 >= UPLOAD_MAX_PARTS)
		return -EFBIG;
	rc = upload_queue_part(u, (off_t)u->part_start, end - u->part_start);
	if (rc)
		return rc;
	u->part_start = end;
	u->cur_part_size = upload_part_size_for(u, n + 2);
	return 0;
}

/* The writer's path: bookkeeping only. The bytes are hashed (and parts
 * queued) by a hasher, which reads them back from the spool: the caller
 * wrote them there before calling, and nothing changes them unless the
 * stream breaks (a non-sequential write, a truncate), after which the
 * hashes are thrown away. */
int upload_write(struct upload *u, const void *data, size_t len, off_t off)
{
	int err, kick = 0;

	(void)data;
	pthread_mutex_lock(&u->lock);
	if (!u->broken && (uint64_t)off != u->appended)
		u->broken = 1;
	if (!u->broken && len) {
		u->appended += len;
		kick = u->hstate == H_IDLE && !u->held;
	}
	err = u->error;
	if (err)
		u->broken = 1;
	pthread_mutex_unlock(&u->lock);
	if (kick && !err)
		upload_kick(u);
	return err ? -err : 0;
}

int upload_set_meta(struct upload *u, const struct s3_kv *meta, size_t n)
{
	struct s3_kv *c = kv_dup(meta, n), *old;
	size_t n_old;

	if (n && !c)
		return -ENOMEM;
	pthread_mutex_lock(&u->lock);
	old = u->meta;
	n_old = u->n_meta;
	u->meta = c;
	u->n_meta = n;
	pthread_mutex_unlock(&u->lock);
	kv_free(old, n_old);
	return 0;
}

void upload_invalidate(struct upload *u)
{
	pthread_mutex_lock(&u->lock);
	u->broken = 1;
	pthread_mutex_unlock(&u->lock);
}

void upload_restart(struct upload *u)
{
	upload_reset(u, 0);
}

void upload_tag(struct upload *u, char *out, size_t n)
{
	pthread_mutex_lock(&u->lock);
	snprintf(out, n, "%s", u->tag);
	pthread_mutex_unlock(&u->lock);
}

int upload_set_key(struct upload *u, const char *key)
{
	uint64_t appended;
	char *k;
	int mpu;

	if (!strcmp(u->key, key))
		return 0;
	k = strdup(key);
	if (!k)
		return -ENOMEM;
	/* Hashers log the key, jobs use it: none may run while it changes.
	 * A multipart upload started under the old key is given up. */
	upload_hold(u);
	/* Caught up first (this file's bytes, in this thread), so whether a
	 * multipart upload exists depends on the bytes written, not on how
	 * far the hashers got. */
	pthread_mutex_lock(&u->lock);
	appended = u->appended;
	pthread_mutex_unlock(&u->lock);
	upload_catch_up(u, appended);
	pthread_mutex_lock(&u->lock);
	mpu = u->mpu;
	pthread_mutex_unlock(&u->lock);
	if (mpu != MPU_NONE)
		upload_reset(u, 1);
	free(u->key);
	u->key = k;
	if (mpu == MPU_NONE)
		upload_unhold(u);
	return 0;
}

/* meta[] + xxh128 + sha256 + UPLOAD_TAG (u's current one, copied into
 * res->tag; left out when "") in a new array (entries borrowed); *n_all
 * its length. */
static struct s3_kv *upload_meta(struct upload *u, const struct s3_kv *meta,
				 size_t n, struct upload_result *res,
				 size_t *n_all)
{
	struct s3_kv more[3] = {{(char *)"xxh128", res->xxh128},
				{(char *)"sha256", res->sha256},
				{(char *)UPLOAD_TAG, res->tag}};

	pthread_mutex_lock(&u->lock);
	snprintf(res->tag, sizeof(res->tag), "%s", u->tag);
	pthread_mutex_unlock(&u->lock);
	return kv_with(meta, n, more, 3, n_all);
}

static int upload_complete(struct upload *u, char *etag)
{
	struct s3_part *copy;
	size_t n;
	int rc;

	pthread_mutex_lock(&u->lock);
	n = u->n_parts;
	copy = malloc(n * sizeof(*copy));
	if (copy)
		memcpy(copy, u->parts, n * sizeof(*copy));
	pthread_mutex_unlock(&u->lock);
	if (!copy)
		return -ENOMEM;
	rc = s3_mpu_complete(u->s3, u->bucket, u->key, u->upload_id, copy, n,
			     etag);
	free(copy);
	if (rc == 0) {
		upload_journal_note(u->pool, u->bucket, u->upload_id, NULL);
		free(u->upload_id);
		u->upload_id = NULL;
		upload_forget_mpu(u);
		pthread_mutex_lock(&u->lock);
		u->mpu = MPU_NONE;
		pthread_mutex_unlock(&u->lock);
	}
	return rc;
}

static int upload_finish_spool(struct upload *u, uint64_t size,
			       const struct s3_kv *meta, size_t n_meta,
			       struct upload_result *res);

/* The stream is whole and its hashes are in res: PUT the single part with
 * the metadata and hashes, or complete the multipart upload it started.
 * That upload was created before the hashes were known, so the object goes
 * without them (the reception row is their record), with upload_set_meta's
 * metadata: if that is not meta[] (mtime aside), the spool is uploaded
 * again. Completing is the last request: the object is never rewritten
 * afterwards (no self-copy), so once it holds the new content the caller
 * knows it. A part that failed in the background (or could not be queued)
 * is no failure of the file: the spool is uploaded again, as upload.h
 * promises; only the PUT or the completion, whose outcome is the
 * object's, fail the finish. */
static int upload_finish_stream(struct upload *u, uint64_t size,
				const struct s3_kv *meta, size_t n_meta,
				const struct s3_kv *all, size_t n_all,
				struct upload_result *res)
{
	int rc, mpu;

	pthread_mutex_lock(&u->lock);
	mpu = u->mpu;
	pthread_mutex_unlock(&u->lock);
	if (mpu == MPU_NONE) { /* no part closed: size <= one part */
		res->sent = 1;
		return s3_put_fd(u->s3, u->bucket, u->key, u->fd, 0, size,
				 res->sha256, all, n_all, res->etag);
	}
	if (!kv_same(u->mpu_meta, u->n_mpu_meta, meta, n_meta)) {
		/* Created with another mode or owner (a chmod or chown
		 * while it was written, or none given): the object must
		 * carry the file's. */
		rc = -ESTALE;
		goto from_spool;
	}
	if (size > u->part_start) {
		rc = upload_queue_part(u, (off_t)u->part_start,
				       size - u->part_start);
		if (rc)
			goto from_spool;
		u->part_start = size;
	}
	rc = upload_wait_parts(u);
	if (rc)
		goto from_spool;
	res->sent = 1;
	pthread_mutex_lock(&u->lock);
	snprintf(res->tag, sizeof(res->tag), "%s", u->mpu_tag);
	pthread_mutex_unlock(&u->lock);
	return upload_complete(u, res->etag);
from_spool:
	log_warn("streaming upload of %s/%s: %s; uploading it again from the "
		 "spool",
		 u->bucket, u->key,
		 rc == -ESTALE ? "its metadata changed" : strerror(-rc));
	return upload_finish_spool(u, size, meta, n_meta, res);
}

/* The stream is broken: hash the spool and upload it all again. */
static int upload_finish_spool(struct upload *u, uint64_t size,
			       const struct s3_kv *meta, size_t n_meta,
			       struct upload_result *res)
{
	unsigned long long got = 0;
	struct s3_kv *all;
	size_t n_all = 0;
	uint64_t part, off;
	char *id = NULL, tag[UPLOAD_TAG_HEX];
	int rc;

	uint64_t t0;

	/* The same version: its tag stays (upload_tag told it the caller,
	 * e.g. for a publish's pending row, db_attrs_pend_tag). */
	pthread_mutex_lock(&u->lock);
	memcpy(tag, u->tag, sizeof(tag));
	pthread_mutex_unlock(&u->lock);
	upload_reset(u, 1);
	pthread_mutex_lock(&u->lock);
	memcpy(u->tag, tag, sizeof(tag));
	pthread_mutex_unlock(&u->lock);
	t0 = ctr_now_ns();
	rc = hash_fd(u->fd, res->xxh128, res->sha256, &got);
	stage_observe_since(STG_HASH, t0);
	if (rc)
		return rc;
	if (got != size) {
		log_error("spool of %s/%s holds %llu bytes, expected %llu",
			  u->bucket, u->key, got, (unsigned long long)size);
		return -EIO;
	}
	all = upload_meta(u, meta, n_meta, res, &n_all);
	if (!all)
		return -ENOMEM;
	if (size <= u->part_size) {
		res->sent = 1;
		rc = s3_put_fd(u->s3, u->bucket, u->key, u->fd, 0, size,
			       res->sha256, all, n_all, res->etag);
		goto out;
	}
	part = u->part_size;
	while (size / part >= UPLOAD_MAX_PARTS)
		part *= 2;
	/* Created here, the hashes known: the object carries them. */
	rc = s3_mpu_create(u->s3, u->bucket, u->key, all, n_all, &id);
	if (rc)
		goto out;
	upload_journal_note(u->pool, u->bucket, id, u->key);
	pthread_mutex_lock(&u->lock);
	u->upload_id = id;
	u->mpu = MPU_READY;
	pthread_mutex_unlock(&u->lock);
	for (off = 0; off < size && !rc; off += part)
		rc = upload_queue_part(u, (off_t)off,
				       size - off < part ? size - off : part);
	if (!rc)
		rc = upload_wait_parts(u);
	if (!rc) {
		res->sent = 1;
		rc = upload_complete(u, res->etag);
	}
out:
	free(all);
	return rc;
}

/* The caller's thread (holding u) hashes what the hashers have not, up to
 * size, queueing the parts it completes. 0, or -ENOMEM when it has no
 * buffer to read into (the file's own failure, reported). A read error
 * breaks the stream (uploaded again from the spool). */
static int upload_catch_up(struct upload *u, uint64_t size)
{
	uint64_t pos;
	size_t cap;
	char *buf;
	int rc = 0;

	pthread_mutex_lock(&u->lock);
	pos = u->hashed;
	if (u->appended != size)
		u->broken = 1;
	if (u->broken || pos >= size) {
		pthread_mutex_unlock(&u->lock);
		return 0;
	}
	pthread_mutex_unlock(&u->lock);
	cap = size - pos < UPLOAD_READ_CHUNK ? (size_t)(size - pos)
					     : UPLOAD_READ_CHUNK;
	buf = malloc(cap);
	if (!buf) {
		log_error("upload of %s/%s: no memory to hash its last %llu "
			  "bytes",
			  u->bucket, u->key, (unsigned long long)(size - pos));
		return -ENOMEM;
	}
	while (!rc && pos < size)
		rc = upload_hash_step(u, buf, cap, &pos, size);
	free(buf);
	if (rc)
		log_warn("streaming upload of %s/%s: %s; uploading it again "
			 "from the spool",
			 u->bucket, u->key, strerror(-rc));
	pthread_mutex_lock(&u->lock);
	u->hashed = pos;
	if (rc)
		u->broken = 1;
	pthread_mutex_unlock(&u->lock);
	return 0;
}

int upload_finish(struct upload *u, uint64_t size, const struct s3_kv *meta,
		  size_t n_meta, struct upload_result *res)
{
	struct s3_kv *all = NULL;
	size_t n_all = 0;
	int rc, broken;

	memset(res, 0, sizeof(*res));
	res->size = size;
	/* This thread hashes what the hashers have not got to yet: a close
	 * never waits for the pool to serve other files. */
	upload_hold(u);
	rc = upload_catch_up(u, size);
	if (rc)
		goto fail;
	pthread_mutex_lock(&u->lock);
	if (u->hashed != size)
		u->broken = 1;
	broken = u->broken;
	pthread_mutex_unlock(&u->lock);
	if (broken) {
		rc = upload_finish_spool(u, size, meta, n_meta, res);
	} else {
		uint64_t t0 = ctr_now_ns();

		hash_final(&u->h, res->xxh128, res->sha256);
		stage_observe_since(STG_HASH, t0);
		all = upload_meta(u, meta, n_meta, res, &n_all);
		rc = all ? upload_finish_stream(u, size, meta, n_meta, all,
						n_all, res)
			 : -ENOMEM;
	}
	free(all);
	if (rc)
		goto fail;
	/* After an empty version (the first close of `echo x > f` or of
	 * `dd`, whose writes then start at 0) the next one streams from
	 * offset 0 again. After a non-empty version the hash states are
	 * gone: the next version is hashed and uploaded from the spool. */
	upload_reset(u, size != 0);
	return 0;
fail:
	log_error("upload of %s/%s (%llu bytes) failed: %s", u->bucket, u->key,
		  (unsigned long long)size, strerror(-rc));
	/* A failed multipart upload is aborted here; the next attempt
	 * uploads from the spool. */
	upload_reset(u, 1);
	return rc;
}

void upload_free(struct upload *u)
{
	if (!u)
		return;
	if (u->h.xxh)
		upload_reset(u, 1);
	hash_free(&u->h);
	upload_forget_mpu(u);
	kv_free(u->meta, u->n_meta);
	pthread_mutex_destroy(&u->lock);
	pthread_cond_destroy(&u->cond);
	free(u->parts);
	free(u->bucket);
	free(u->key);
	free(u);
}
