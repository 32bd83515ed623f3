/* upload.c - streaming multipart upload of a spool file; see upload.h. */
#include "upload.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define UPLOAD_MAX_PARTS 10000
#define UPLOAD_PART_TIER 2000	    /* part size doubles every 2000 parts */
#define UPLOAD_READ_CHUNK (1 << 20) /* a hasher's or worker's read buffer */

struct part_job {
	struct upload *u;
	int number;
	off_t off;
	uint64_t len;
	char sha[HASH_SHA256_HEX]; /* "" = worker computes it */
	struct part_job *next;
};

/* Two kinds of threads: workers upload parts (FIFO of part_job), hashers
 * hash what writers appended (FIFO of uploads with bytes to hash, each
 * upload at most once in it and hashed by one hasher at a time, in order). */
struct upload_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;	      /* part jobs queued, or stopping */
	pthread_cond_t hcond;	      /* uploads queued, or stopping */
	struct part_job *head, *tail; /* protected by lock */
	struct upload *hhead, *htail; /* protected by lock */
	int stopping;		      /* protected by lock */
	int n_threads;
	pthread_t *threads;
};

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
	int error;	       /* protected by lock: first part error, errno */
	struct s3_part *parts; /* protected by lock: parts[i].number = i + 1 */
	size_t n_parts, cap_parts; /* protected by lock */
	int broken; /* protected by lock: stream no longer matches the spool */
	struct s3_kv *meta;   /* protected by lock: upload_set_meta's */
	size_t n_meta;	      /* protected by lock */
	uint64_t appended;    /* protected by lock: bytes the writer appended */
	uint64_t hashed;      /* protected by lock: bytes hashed so far */
	int hashing;	      /* protected by lock: queued for or in a hasher */
	struct upload *hnext; /* protected by pool->lock */

	/* Owned by the hasher while hashing is set, else by the caller
	 * thread (which waits for !hashing before touching them). */
	char *upload_id;	/* multipart upload in flight, or NULL */
	struct s3_kv *mpu_meta; /* what upload_id was created with (like it) */
	size_t n_mpu_meta;
	uint64_t part_start;
	uint64_t cur_part_size;
	struct hash_ctx h;
};

static int upload_close_part(struct upload *u, uint64_t end);

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

/* Drops the record of what the multipart upload was created with. */
static void upload_forget_mpu(struct upload *u)
{
	kv_free(u->mpu_meta, u->n_mpu_meta);
	u->mpu_meta = NULL;
	u->n_mpu_meta = 0;
}

static void upload_run_job(struct part_job *j)
{
	struct upload *u = j->u;
	char etag[80] = "";
	int rc = 0;

	if (!j->sha[0]) {
		void *ctx = sha256_new();
		char *buf = malloc(UPLOAD_READ_CHUNK);
		uint64_t done = 0;

		if (!ctx || !buf)
			rc = -ENOMEM;
		while (!rc && done < j->len) {
			size_t want = j->len - done > UPLOAD_READ_CHUNK
					  ? UPLOAD_READ_CHUNK
					  : (size_t)(j->len - done);
			ssize_t n =
			    pread(u->fd, buf, want, j->off + (off_t)done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				rc = n < 0 ? -errno : -EIO;
				break;
			}
			sha256_update(ctx, buf, (size_t)n);
			done += (uint64_t)n;
		}
		if (!rc)
			sha256_final_hex(ctx, j->sha);
		sha256_free(ctx);
		free(buf);
	}
	if (!rc)
		rc = s3_mpu_upload_part(u->s3, u->bucket, u->key, u->upload_id,
					j->number, u->fd, j->off, j->len,
					j->sha, etag);
	pthread_mutex_lock(&u->lock);
	if (rc) {
		if (!u->error)
			u->error = -rc;
	} else {
		struct s3_part *p = &u->parts[j->number - 1];

		p->number = j->number;
		memcpy(p->etag, etag, sizeof(p->etag));
	}
	u->pending--;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
	free(j);
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
		upload_run_job(j);
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

/* Hashes u's appended bytes, in order, from the spool, until it catches up
 * with the writer (or the stream breaks), queueing each part it completes.
 * Runs in one hasher at a time (u->hashing), so the hash state and the
 * part bookkeeping are this thread's until it clears u->hashing. */
static void upload_hash_run(struct upload *u, char *buf)
{
	for (;;) {
		uint64_t from, to, end;
		int rc;

		pthread_mutex_lock(&u->lock);
		if (!buf || u->broken || u->hashed == u->appended) {
			if (!buf)
				u->broken = 1;
			u->hashing = 0;
			pthread_cond_broadcast(&u->cond);
			pthread_mutex_unlock(&u->lock);
			return;
		}
		from = u->hashed;
		to = u->appended;
		pthread_mutex_unlock(&u->lock);
		end = u->part_start + u->cur_part_size;
		if (to > end)
			to = end;
		if (to - from > UPLOAD_READ_CHUNK)
			to = from + UPLOAD_READ_CHUNK;
		rc = upload_pread_all(u->fd, buf, (size_t)(to - from),
				      (off_t)from);
		if (!rc) {
			hash_update(&u->h, buf, (size_t)(to - from));
			if (to == end)
				rc = upload_close_part(u, end);
		}
		if (rc)
			log_warn(
			    "streaming upload of %s/%s: %s; will upload at "
			    "close",
			    u->bucket, u->key, strerror(-rc));
		pthread_mutex_lock(&u->lock);
		u->hashed = to;
		if (rc)
			u->broken = 1;
		pthread_mutex_unlock(&u->lock);
	}
}

static void *upload_hasher(void *arg)
{
	struct upload_pool *p = arg;
	char *buf = malloc(UPLOAD_READ_CHUNK);

	for (;;) {
		struct upload *u;

		pthread_mutex_lock(&p->lock);
		while (!p->hhead && !p->stopping)
			pthread_cond_wait(&p->hcond, &p->lock);
		u = p->hhead;
		if (!u) {
			pthread_mutex_unlock(&p->lock);
			free(buf);
			return NULL;
		}
		p->hhead = u->hnext;
		if (!p->hhead)
			p->htail = NULL;
		pthread_mutex_unlock(&p->lock);
		/* Without a buffer the stream breaks: the spool is hashed
		 * at finish instead. */
		upload_hash_run(u, buf);
	}
}

/* u->hashing was just set by the caller: hand u to a hasher. */
static void upload_hash_queue(struct upload *u)
{
	struct upload_pool *p = u->pool;

	pthread_mutex_lock(&p->lock);
	u->hnext = NULL;
	if (p->htail)
		p->htail->hnext = u;
	else
		p->hhead = u;
	p->htail = u;
	pthread_cond_signal(&p->hcond);
	pthread_mutex_unlock(&p->lock);
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
	p->threads = calloc((size_t)workers * 2, sizeof(*p->threads));
	if (!p->threads)
		goto fail;
	/* As many hashers as workers: files written at once hash in
	 * parallel, as they did in the FUSE threads. Both kinds are needed:
	 * a pool missing either would leave work queued forever. */
	for (i = 0; i < workers * 2; i++) {
		if (pthread_create(&p->threads[p->n_threads], NULL,
				   i % 2 ? upload_hasher : upload_worker, p))
			break;
		p->n_threads++;
	}
	if (p->n_threads < 2) {
		upload_pool_free(p);
		errno = ENOMEM;
		return NULL;
	}
	return p;
fail:
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	pthread_cond_destroy(&p->hcond);
	free(p->threads);
	free(p);
	errno = ENOMEM;
	return NULL;
}

void upload_pool_free(struct upload_pool *p)
{
	int i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_cond_broadcast(&p->hcond);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	pthread_cond_destroy(&p->hcond);
	free(p->threads);
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
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	if (!u->bucket || !u->key || hash_init(&u->h)) {
		upload_free(u);
		return NULL;
	}
	return u;
}

/* Waits until the hasher has caught up with the writer (or given up). */
static void upload_wait_idle_hashing(struct upload *u)
{
	pthread_mutex_lock(&u->lock);
	while (u->hashing)
		pthread_cond_wait(&u->cond, &u->lock);
	pthread_mutex_unlock(&u->lock);
}

/* Waits until no hasher and no worker holds u. */
static void upload_wait_idle(struct upload *u)
{
	pthread_mutex_lock(&u->lock);
	while (u->pending > 0 || u->hashing)
		pthread_cond_wait(&u->cond, &u->lock);
	pthread_mutex_unlock(&u->lock);
}

/* Drops the multipart state (aborting it on the server) and every hash. */
static void upload_reset(struct upload *u, int broken)
{
	upload_wait_idle(u);
	if (u->upload_id) {
		int rc = s3_mpu_abort(u->s3, u->bucket, u->key, u->upload_id);

		if (rc)
			log_warn("abort of multipart upload of %s/%s: %s",
				 u->bucket, u->key, strerror(-rc));
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
	pthread_mutex_unlock(&u->lock);
	hash_reset(&u->h);
	u->part_start = 0;
	u->cur_part_size = u->part_size;
}

/* Queues part `number` = [off, off+len) with a known or unknown (sha "")
 * payload hash. Returns 0 or -errno. */
static int upload_queue_part(struct upload *u, off_t off, uint64_t len,
			     const char *sha)
{
	struct part_job *j;
	struct upload_pool *p = u->pool;

	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	pthread_mutex_lock(&u->lock);
	if (u->n_parts == u->cap_parts) {
		size_t cap = u->cap_parts ? u->cap_parts * 2 : 16;
		struct s3_part *np = realloc(u->parts, cap * sizeof(*np));

		if (!np) {
			pthread_mutex_unlock(&u->lock);
			free(j);
			return -ENOMEM;
		}
		u->parts = np;
		u->cap_parts = cap;
	}
	memset(&u->parts[u->n_parts], 0, sizeof(u->parts[0]));
	u->n_parts++;
	j->number = (int)u->n_parts;
	u->pending++;
	pthread_mutex_unlock(&u->lock);
	j->u = u;
	j->off = off;
	j->len = len;
	if (sha)
		memcpy(j->sha, sha, HASH_SHA256_HEX);
	pthread_mutex_lock(&p->lock);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
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

	if (!u->upload_id) {
		struct s3_kv *meta;
		size_t n_meta;

		pthread_mutex_lock(&u->lock);
		n_meta = u->n_meta;
		meta = kv_dup(u->meta, n_meta);
		pthread_mutex_unlock(&u->lock);
		if (n_meta && !meta)
			return -ENOMEM;
		rc = s3_mpu_create(u->s3, u->bucket, u->key, meta, n_meta,
				   &u->upload_id);
		if (rc) {
			kv_free(meta, n_meta);
			return rc;
		}
		upload_forget_mpu(u);
		u->mpu_meta = meta;
		u->n_mpu_meta = n_meta;
	}
	pthread_mutex_lock(&u->lock);
	n = u->n_parts;
	pthread_mutex_unlock(&u->lock);
	if (n + 1 >= UPLOAD_MAX_PARTS)
		return -EFBIG;
	rc = upload_queue_part(u, (off_t)u->part_start, end - u->part_start,
			       NULL);
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
		kick = !u->hashing;
		u->hashing = 1;
	}
	err = u->error;
	if (err)
		u->broken = 1;
	pthread_mutex_unlock(&u->lock);
	if (kick)
		upload_hash_queue(u);
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

int upload_set_key(struct upload *u, const char *key)
{
	char *k;

	if (!strcmp(u->key, key))
		return 0;
	k = strdup(key);
	if (!k)
		return -ENOMEM;
	/* The hasher uses the key and owns upload_id until it is idle. */
	upload_wait_idle_hashing(u);
	if (u->upload_id)
		upload_reset(u, 1);
	free(u->key);
	u->key = k;
	return 0;
}

/* meta[] + xxh128 + sha256 in a new array (entries borrowed). */
static struct s3_kv *upload_meta(const struct s3_kv *meta, size_t n,
				 struct upload_result *res)
{
	struct s3_kv *all = calloc(n + 2, sizeof(*all));

	if (!all)
		return NULL;
	if (n)
		memcpy(all, meta, n * sizeof(*all));
	all[n].name = (char *)"xxh128";
	all[n].value = res->xxh128;
	all[n + 1].name = (char *)"sha256";
	all[n + 1].value = res->sha256;
	return all;
}

static int upload_wait_parts(struct upload *u)
{
	int err;

	upload_wait_idle(u);
	pthread_mutex_lock(&u->lock);
	err = u->error;
	pthread_mutex_unlock(&u->lock);
	return err ? -err : 0;
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
		free(u->upload_id);
		u->upload_id = NULL;
		upload_forget_mpu(u);
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
	int rc;

	if (!u->upload_id)
		return s3_put_fd(u->s3, u->bucket, u->key, u->fd, 0, size,
				 res->sha256, all, n_all, res->etag);
	if (!kv_same(u->mpu_meta, u->n_mpu_meta, meta, n_meta)) {
		/* Created with another mode or owner (a chmod or chown
		 * while it was written, or none given): the object must
		 * carry the file's. */
		rc = -ESTALE;
		goto from_spool;
	}
	if (size > u->part_start) {
		rc = upload_queue_part(u, (off_t)u->part_start,
				       size - u->part_start, NULL);
		if (rc)
			goto from_spool;
		u->part_start = size;
	}
	rc = upload_wait_parts(u);
	if (rc)
		goto from_spool;
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
	uint64_t part, off;
	int rc;

	upload_reset(u, 1);
	rc = hash_fd(u->fd, res->xxh128, res->sha256, &got);
	if (rc)
		return rc;
	if (got != size) {
		log_error("spool of %s/%s holds %llu bytes, expected %llu",
			  u->bucket, u->key, got, (unsigned long long)size);
		return -EIO;
	}
	all = upload_meta(meta, n_meta, res);
	if (!all)
		return -ENOMEM;
	if (size <= u->part_size) {
		rc = s3_put_fd(u->s3, u->bucket, u->key, u->fd, 0, size,
			       res->sha256, all, n_meta + 2, res->etag);
		goto out;
	}
	part = u->part_size;
	while (size / part >= UPLOAD_MAX_PARTS)
		part *= 2;
	rc = s3_mpu_create(u->s3, u->bucket, u->key, all, n_meta + 2,
			   &u->upload_id);
	if (rc)
		goto out;
	for (off = 0; off < size && !rc; off += part)
		rc = upload_queue_part(
		    u, (off_t)off, size - off < part ? size - off : part, NULL);
	if (!rc)
		rc = upload_wait_parts(u);
	if (!rc)
		rc = upload_complete(u, res->etag);
out:
	free(all);
	return rc;
}

int upload_finish(struct upload *u, uint64_t size, const struct s3_kv *meta,
		  size_t n_meta, struct upload_result *res)
{
	struct s3_kv *all = NULL;
	int rc, broken;

	memset(res, 0, sizeof(*res));
	res->size = size;
	/* The hasher catches up with the last write first. */
	upload_wait_idle_hashing(u);
	pthread_mutex_lock(&u->lock);
	if (u->hashed != size)
		u->broken = 1;
	broken = u->broken;
	pthread_mutex_unlock(&u->lock);
	if (broken) {
		rc = upload_finish_spool(u, size, meta, n_meta, res);
	} else {
		hash_final(&u->h, res->xxh128, res->sha256);
		all = upload_meta(meta, n_meta, res);
		rc = all ? upload_finish_stream(u, size, meta, n_meta, all,
						n_meta + 2, res)
			 : -ENOMEM;
	}
	free(all);
	if (rc) {
		log_error("upload of %s/%s (%llu bytes) failed: %s", u->bucket,
			  u->key, (unsigned long long)size, strerror(-rc));
		/* A failed multipart upload is aborted here; the next
		 * attempt uploads from the spool. */
		upload_reset(u, 1);
		return rc;
	}
	/* After an empty version (the first close of `echo x > f` or of
	 * `dd`, whose writes then start at 0) the next one streams from
	 * offset 0 again. After a non-empty version the hash states are
	 * gone: the next version is hashed and uploaded from the spool. */
	upload_reset(u, size != 0);
	return 0;
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
