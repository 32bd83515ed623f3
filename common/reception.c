/* reception.c - reception pipeline; see reception.h. */
#include "reception.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "log.h"
#include "names.h"

#define FP_MAX_ENTRIES (8u << 20) /* bound on the "known logged" set */
#define FOREIGN_CHUNK (8u << 20)  /* bytes read at a time when hashing */

/* A set of 64-bit fingerprints of (key, etag), open addressing. */
struct fpset {
	uint64_t *slots; /* 0 = empty */
	size_t cap, n;
};

/* Objects seen in a listing and not known to be logged: checked against
 * the database and logged by the worker, off the caller's path. */
struct saw_job {
	char *prefix;
	struct s3_list_entry *e; /* keys and etags owned by the job */
	size_t n;
	struct saw_job *next;
};

struct reception {
	const struct cfg *cfg;
	struct s3_client *s3;
	struct db *db;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fpset known;   /* protected by lock: (key, etag) logged */
	struct fpset pending; /* protected by lock: queued for logging */
	struct saw_job *head, *tail; /* protected by lock */
	int busy;                        /* protected by lock */
	int stopping;                    /* protected by lock */
	pthread_t worker;
	int worker_started;
	struct actor foreign; /* who a foreign upload is logged as */
};

static uint64_t fp_of(const char *key, const char *etag)
{
	uint64_t h = XXH3_64bits(key, strlen(key));

	h = XXH3_64bits_withSeed(etag ? etag : "", etag ? strlen(etag) : 0, h);
	return h ? h : 1;
}

static int fpset_has(const struct fpset *s, uint64_t fp)
{
	size_t i;

	if (!s->cap)
		return 0;
	for (i = fp & (s->cap - 1); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == fp)
			return 1;
	return 0;
}

static void fpset_put_raw(struct fpset *s, uint64_t fp)
{
	size_t i;

	for (i = fp & (s->cap - 1); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == fp)
			return;
	s->slots[i] = fp;
	s->n++;
}

static void fpset_add(struct fpset *s, uint64_t fp)
{
	if (s->n + 1 > FP_MAX_ENTRIES) {
		/* Forgetting only costs a database check later. */
		memset(s->slots, 0, s->cap * sizeof(*s->slots));
		s->n = 0;
	}
	if ((s->n + 1) * 2 > s->cap) {
		struct fpset ns = {0};
		size_t i;

		ns.cap = s->cap ? s->cap * 2 : 1024;
		ns.slots = calloc(ns.cap, sizeof(*ns.slots));
		if (!ns.slots)
			return;
		for (i = 0; i < s->cap; i++)
			if (s->slots[i])
				fpset_put_raw(&ns, s->slots[i]);
		free(s->slots);
		*s = ns;
	}
	fpset_put_raw(s, fp);
}

static void fpset_del(struct fpset *s, uint64_t fp)
{
	size_t i, j;

	if (!s->cap)
		return;
	for (i = fp & (s->cap - 1); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == fp)
			break;
	if (!s->slots[i])
		return;
	/* Backward-shift deletion keeps probe chains intact. */
	s->slots[i] = 0;
	s->n--;
	for (j = (i + 1) & (s->cap - 1); s->slots[j];
	     j = (j + 1) & (s->cap - 1)) {
		uint64_t v = s->slots[j];

		s->slots[j] = 0;
		s->n--;
		fpset_put_raw(s, v);
	}
}

static void reception_mark_known(struct reception *r, const char *key,
				 const char *etag)
{
	pthread_mutex_lock(&r->lock);
	fpset_add(&r->known, fp_of(key, etag));
	pthread_mutex_unlock(&r->lock);
}

static void reception_reason(char *out, size_t len, const char *what,
			     const struct actor *who)
{
	char a[400];

	actor_format(who, a, sizeof(a));
	snprintf(out, len, "%s by %s", what, a);
}

int reception_ready(struct reception *r)
{
	return db_ping(r->db);
}

int reception_commit(struct reception *r, const char *key,
		     const struct upload_result *res, const struct actor *who,
		     int created)
{
	struct reception_new rn = {
		.source_bucket = r->cfg->reception_bucket,
		.object_key = key,
		.file_name = names_basename(key),
		.size = res->size,
		.xxh128 = res->xxh128,
		.sha256 = res->sha256,
		.etag = res->etag,
		.origin = "mount",
		.who = who,
	};
	char reason[512];
	int rc;

	reception_reason(reason, sizeof(reason), "overwritten", who);
	rc = db_reception_record(r->db, &rn, reason, NULL, NULL);
	if (rc == 0) {
		reception_mark_known(r, key, res->etag);
		return 0;
	}
	if (rc == -EINPROGRESS) {
		/* The row may exist: keep the object it would describe. If
		 * it does not, the next scan logs the object. */
		log_error("reception row for %s/%s: outcome unknown (database "
			  "lost at commit); object kept",
			  r->cfg->reception_bucket, key);
		return -EIO;
	}
	log_error("reception row for %s/%s not committed: %s",
		  r->cfg->reception_bucket, key, strerror(-rc));
	if (created) {
		int drc = s3_delete(r->s3, r->cfg->reception_bucket, key);

		if (drc)
			log_error("could not remove unlogged %s/%s: %s; the "
				  "next scan will log it",
				  r->cfg->reception_bucket, key,
				  strerror(-drc));
	}
	return rc;
}

int reception_remove(struct reception *r, const char *key,
		     const struct actor *who)
{
	char reason[512];
	int rc;

	/* The row must follow the object: do not delete what could not be
	 * marked removed (the database being down is the likely failure). */
	rc = db_ping(r->db);
	if (rc)
		return rc;
	rc = s3_delete(r->s3, r->cfg->reception_bucket, key);
	if (rc)
		return rc;
	reception_reason(reason, sizeof(reason), "deleted", who);
	rc = db_reception_mark_removed(r->db, r->cfg->reception_bucket, key,
				       reason);
	if (rc == -EINPROGRESS)
		rc = -EIO;
	if (rc)
		log_error("%s/%s deleted but its row was not marked removed: "
			  "%s", r->cfg->reception_bucket, key, strerror(-rc));
	return rc;
}

int reception_rename(struct reception *r, const char *from_key,
		     const char *to_key, uint64_t size,
		     const struct actor *who, char *new_etag)
{
	const char *b = r->cfg->reception_bucket;
	char etag[80] = "";
	int rc;

	rc = s3_copy_auto(r->s3, b, from_key, b, to_key, size,
			  r->cfg->copy_threshold, r->cfg->part_size, NULL, 0,
			  etag);
	if (rc)
		return rc;
	rc = db_reception_rename(r->db, b, from_key, to_key, etag, size, who);
	if (rc == -EINPROGRESS) {
		/* The new row may exist: keep both objects; a scan sorts
		 * out whichever has no row. */
		log_error("rename %s -> %s: outcome unknown (database lost at "
			  "commit); both objects kept", from_key, to_key);
		return -EIO;
	}
	if (rc) {
		int drc = s3_delete(r->s3, b, to_key);

		if (drc)
			log_error("rename rollback: could not remove %s/%s: %s",
				  b, to_key, strerror(-drc));
		return rc;
	}
	reception_mark_known(r, to_key, etag);
	if (new_etag)
		memcpy(new_etag, etag, sizeof(etag));
	rc = s3_delete(r->s3, b, from_key);
	if (rc)
		log_error("renamed %s to %s but the source is still there: %s",
			  from_key, to_key, strerror(-rc));
	return rc;
}

static int hex_ok(const char *s, size_t len)
{
	size_t i;

	if (!s || strlen(s) != len)
		return 0;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* Hashes an object by reading it in ranged chunks. */
static int reception_hash_object(struct reception *r, const char *key,
				 uint64_t size, char *xxh, char *sha)
{
	struct hash_ctx h;
	uint64_t off = 0;
	char *buf;
	int rc;

	rc = hash_init(&h);
	if (rc)
		return rc;
	buf = malloc(FOREIGN_CHUNK);
	if (!buf) {
		rc = -ENOMEM;
		goto fail;
	}
	while (off < size) {
		size_t got = 0;

		rc = s3_get_range(r->s3, r->cfg->reception_bucket, key, off,
				  FOREIGN_CHUNK, buf, &got);
		if (rc)
			goto fail;
		if (got == 0) {
			rc = -EIO; /* shrank under us */
			goto fail;
		}
		hash_update(&h, buf, got);
		off += got;
	}
	hash_final(&h, xxh, sha);
	rc = 0;
fail:
	free(buf);
	hash_free(&h);
	return rc;
}

/* Logs one object that arrived by another route. Returns 0 or -errno. */
static int reception_log_foreign(struct reception *r, const char *key,
				 int *inserted)
{
	char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX];
	struct s3_object_info before = {0}, after = {0};
	struct reception_new rn = {0};
	int rc, attempt;

	*inserted = 0;
	for (attempt = 0; attempt < 3; attempt++) {
		const char *mx, *ms;

		s3_object_info_free(&before);
		s3_object_info_free(&after);
		rc = s3_head(r->s3, r->cfg->reception_bucket, key, &before);
		if (rc == -ENOENT)
			return 0; /* gone already: nothing to log */
		if (rc)
			return rc;
		mx = s3_meta_get(&before, "xxh128");
		ms = s3_meta_get(&before, "sha256");
		if (hex_ok(mx, 32) && hex_ok(ms, 64)) {
			memcpy(xxh, mx, HASH_XXH128_HEX);
			memcpy(sha, ms, HASH_SHA256_HEX);
			rc = 0;
			break;
		}
		rc = reception_hash_object(r, key, before.size, xxh, sha);
		if (rc)
			goto out;
		rc = s3_head(r->s3, r->cfg->reception_bucket, key, &after);
		if (rc)
			goto out;
		if (!strcmp(after.etag, before.etag) &&
		    after.size == before.size)
			break;
		rc = -EAGAIN; /* replaced while we read it: again */
	}
	if (rc)
		goto out;
	rn.source_bucket = r->cfg->reception_bucket;
	rn.object_key = key;
	rn.file_name = names_basename(key);
	rn.size = before.size;
	rn.xxh128 = xxh;
	rn.sha256 = sha;
	rn.etag = before.etag;
	rn.origin = "foreign";
	rn.who = &r->foreign;
	rc = db_reception_record(r->db, &rn, "replaced by a new upload", NULL,
				 inserted);
	if (rc == 0) {
		reception_mark_known(r, key, before.etag);
		if (*inserted)
			log_info("logged upload from another route: %s/%s "
				 "(%llu bytes)", r->cfg->reception_bucket, key,
				 (unsigned long long)before.size);
	}
out:
	s3_object_info_free(&before);
	s3_object_info_free(&after);
	return rc;
}

static int live_cmp(const void *a, const void *b)
{
	const struct reception_live *x = a, *y = b;

	return strcmp(x->object_key, y->object_key);
}

/* Entries not known to be logged, checked against the database; calls
 * fn for each one that is not logged. */
static int reception_unlogged(struct reception *r, const char *prefix,
			      const struct s3_list_entry *e, size_t n,
			      int skip_pending,
			      void (*fn)(struct reception *,
					 const struct s3_list_entry *, void *),
			      void *arg)
{
	struct reception_live *rows = NULL;
	size_t n_rows = 0, i, unknown = 0;
	char *unchecked;
	int rc;

	unchecked = calloc(n ? n : 1, 1);
	if (!unchecked)
		return -ENOMEM;
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < n; i++) {
		uint64_t fp;
		size_t kl = strlen(e[i].key);

		if (kl == 0 || e[i].key[kl - 1] == '/')
			continue; /* directory marker */
		fp = fp_of(e[i].key, e[i].etag);
		if (fpset_has(&r->known, fp) ||
		    (skip_pending && fpset_has(&r->pending, fp)))
			continue;
		unchecked[i] = 1;
		unknown++;
	}
	pthread_mutex_unlock(&r->lock);
	if (!unknown) {
		free(unchecked);
		return 0;
	}
	rc = db_reception_live(r->db, r->cfg->reception_bucket,
			       prefix ? prefix : "", 0, &rows, &n_rows);
	if (rc)
		goto out;
	if (n_rows)
		qsort(rows, n_rows, sizeof(*rows), live_cmp);
	for (i = 0; i < n; i++) {
		struct reception_live k = {.object_key = e[i].key}, *row = NULL;

		if (!unchecked[i])
			continue;
		if (n_rows)
			row = bsearch(&k, rows, n_rows, sizeof(*rows),
				      live_cmp);
		if (row && (!row->etag || !strcmp(row->etag, e[i].etag))) {
			reception_mark_known(r, e[i].key, e[i].etag);
			continue;
		}
		fn(r, &e[i], arg);
	}
out:
	db_reception_live_free(rows, n_rows);
	free(unchecked);
	return rc;
}

static void saw_job_free(struct saw_job *j)
{
	size_t i;

	for (i = 0; i < j->n; i++)
		free(j->e[i].key);
	free(j->e);
	free(j->prefix);
	free(j);
}

void reception_saw(struct reception *r, const char *prefix,
		   const struct s3_list_entry *entries, size_t n)
{
	struct saw_job *j;
	size_t i;

	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->prefix = strdup(prefix ? prefix : "");
	j->e = calloc(n ? n : 1, sizeof(*j->e));
	if (!j->prefix || !j->e)
		goto drop;
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < n; i++) {
		const struct s3_list_entry *e = &entries[i];
		size_t kl = strlen(e->key);
		uint64_t fp;

		if (kl == 0 || e->key[kl - 1] == '/')
			continue; /* directory marker */
		fp = fp_of(e->key, e->etag);
		if (fpset_has(&r->known, fp) || fpset_has(&r->pending, fp))
			continue;
		j->e[j->n] = *e;
		j->e[j->n].key = strdup(e->key);
		if (!j->e[j->n].key)
			break;
		fpset_add(&r->pending, fp);
		j->n++;
	}
	if (j->n) {
		if (r->tail)
			r->tail->next = j;
		else
			r->head = j;
		r->tail = j;
		pthread_cond_broadcast(&r->cond);
		j = NULL;
	}
	pthread_mutex_unlock(&r->lock);
drop:
	if (j)
		saw_job_free(j);
}

struct scan_state {
	size_t logged;
	int rc;
};

static void reception_log_now(struct reception *r,
			      const struct s3_list_entry *e, void *arg)
{
	struct scan_state *st = arg;
	int inserted = 0;
	int rc = reception_log_foreign(r, e->key, &inserted);

	if (rc && !st->rc)
		st->rc = rc;
	if (rc)
		log_error("could not log %s/%s: %s", r->cfg->reception_bucket,
			  e->key, strerror(-rc));
	st->logged += (size_t)inserted;
}

int reception_scan(struct reception *r, const char *prefix, size_t *logged)
{
	struct s3_list_result res = {0};
	struct scan_state st = {0};
	int rc;

	rc = s3_list_all(r->s3, r->cfg->reception_bucket, prefix, NULL, 0,
			 &res);
	if (rc == 0)
		rc = reception_unlogged(r, prefix, res.entries, res.n_entries,
					1, reception_log_now, &st);
	s3xml_list_free(&res);
	if (logged)
		*logged = st.logged;
	return rc ? rc : st.rc;
}

static void *reception_worker(void *arg)
{
	struct reception *r = arg;
	time_t next_scan = time(NULL) + r->cfg->scan_interval_s;

	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		struct saw_job *j = r->head;

		if (!j) {
			struct timespec ts;

			if (r->cfg->scan_interval_s > 0 &&
			    time(NULL) >= next_scan) {
				r->busy = 1;
				pthread_mutex_unlock(&r->lock);
				reception_scan(r, "", NULL);
				pthread_mutex_lock(&r->lock);
				r->busy = 0;
				next_scan = time(NULL) +
					    r->cfg->scan_interval_s;
				continue;
			}
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_broadcast(&r->cond);
			pthread_cond_timedwait(&r->cond, &r->lock, &ts);
			continue;
		}
		r->head = j->next;
		if (!r->head)
			r->tail = NULL;
		r->busy = 1;
		pthread_mutex_unlock(&r->lock);
		{
			struct scan_state st = {0};
			int rc = reception_unlogged(r, j->prefix, j->e, j->n, 0,
						    reception_log_now, &st);
			size_t i;

			if (rc)
				log_warn("could not check listed objects "
					 "against the reception log: %s (will "
					 "retry when seen again)",
					 strerror(-rc));
			pthread_mutex_lock(&r->lock);
			for (i = 0; i < j->n; i++)
				fpset_del(&r->pending,
					  fp_of(j->e[i].key, j->e[i].etag));
		}
		r->busy = 0;
		pthread_cond_broadcast(&r->cond);
		saw_job_free(j);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

struct reception *reception_new(const struct cfg *cfg, struct s3_client *s3,
				struct db *db)
{
	struct reception *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->cfg = cfg;
	r->s3 = s3;
	r->db = db;
	r->foreign.uid = (uid_t)-1;
	if (gethostname(r->foreign.host, sizeof(r->foreign.host) - 1) != 0)
		snprintf(r->foreign.host, sizeof(r->foreign.host), "unknown");
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	if (pthread_create(&r->worker, NULL, reception_worker, r)) {
		reception_free(r);
		return NULL;
	}
	r->worker_started = 1;
	return r;
}

void reception_drain(struct reception *r)
{
	pthread_mutex_lock(&r->lock);
	while (r->head || r->busy)
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
}

void reception_free(struct reception *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = 1;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (r->worker_started)
		pthread_join(r->worker, NULL);
	while (r->head) {
		struct saw_job *j = r->head;

		r->head = j->next;
		saw_job_free(j);
	}
	free(r->known.slots);
	free(r->pending.slots);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}
