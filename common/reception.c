/* reception.c - reception pipeline; see reception.h.
 *
 * Who logs an upload. Its uploader logs it (reception_commit) as soon as
 * the object is stored. An object nobody logged (it came by another route,
 * or its uploader died) is logged by an observer: the worker here, which
 * sees it in a listing or in a scan. The two never both log one upload:
 *  - keys this process is writing or committing are busy
 *    (reception_busy_add): the observer here skips them;
 *  - an observer logs an object only once it is older than the grace
 *    period: by its LastModified and, for a multipart object (whose
 *    LastModified may be when its upload began), by when this process first
 *    saw it. An uploader on another mount has committed its row by then, or
 *    failed (the grace exceeds the time between its upload and its commit);
 *  - the observer's row is committed under the key lock only if the key's
 *    live row is still the one the observer read, the object still has the
 *    ETag that was hashed, and the key is not busy
 *    (db_reception_record_guarded): a row an uploader committed meanwhile
 *    wins, and an object deleted meanwhile gets no row.
 * An observer's row holds hashes computed here from the object's bytes
 * (ranged GETs, bounded memory), never ones read from its metadata.
 *
 * Undo. When an upload's row is not committed, its object is deleted only
 * if it is still the one this upload produced (HEAD) and no row records
 * its ETag, decided under the key lock (db_reception_unrowed_do). An
 * overwrite, whose old content is gone anyway, is logged late instead of
 * deleted. When the database cannot be asked, the undo waits in a bounded
 * list that the worker retries until the database answers. */
#include "reception_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "counters.h"
#include "db_attrs.h"
#include "events.h"
#include "fpset.h"
#include "log.h"
#include "names.h"
#include "objhash.h"

int64_t ms_now(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int reception_stopping(struct reception *r)
{
	int s;

	pthread_mutex_lock(&r->lock);
	s = r->stopping;
	pthread_mutex_unlock(&r->lock);
	return s;
}

static size_t bucket_of(const char *key)
{
	return (size_t)(XXH3_64bits(key, strlen(key)) & (TABLE_BUCKETS - 1));
}

/* ---- fingerprint sets ------------------------------------------------ */

uint64_t fp_of(const char *key, const char *etag)
{
	uint64_t h = XXH3_64bits(key, strlen(key));

	h = XXH3_64bits_withSeed(etag ? etag : "", etag ? strlen(etag) : 0, h);
	return h ? h : 1;
}

void reception_mark_known(struct reception *r, const char *key,
			  const char *etag)
{
	pthread_mutex_lock(&r->lock);
	fpset_add(&r->known, fp_of(key, etag), FP_MAX_ENTRIES);
	pthread_mutex_unlock(&r->lock);
}

/* ---- busy keys ------------------------------------------------------- */

/* Caller holds r->lock. */
static struct busy_ent *busy_find(struct reception *r, const char *key)
{
	struct busy_ent *b;

	for (b = r->busy[bucket_of(key)]; b; b = b->next)
		if (!strcmp(b->key, key))
			return b;
	return NULL;
}

/* Caller holds r->lock. */
int busy_has(struct reception *r, const char *key)
{
	return busy_find(r, key) != NULL;
}

/* The key's commit generation (see struct undo). */
unsigned busy_gen(struct reception *r, const char *key)
{
	struct busy_ent *b;
	unsigned g;

	pthread_mutex_lock(&r->lock);
	b = busy_find(r, key);
	g = b ? b->commits : 0;
	pthread_mutex_unlock(&r->lock);
	return g;
}

/* Holds key for an upload (undo 0) or a pending undo (undo 1). A new entry
 * starts at commit generation gen. Caller holds r->lock. */
static int busy_add_locked(struct reception *r, const char *key, int undo,
			   unsigned gen)
{
	struct busy_ent *b, **head = &r->busy[bucket_of(key)];

	b = busy_find(r, key);
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (b)
			b->key = strdup(key);
		if (!b || !b->key) {
			free(b);
			return -ENOMEM;
		}
		b->commits = gen;
		b->next = *head;
		*head = b;
	}
	b->count++;
	b->undos += undo;
	return 0;
}

/* Caller holds r->lock. */
static void busy_del_locked(struct reception *r, const char *key, int undo)
{
	struct busy_ent **pp, *b;

	for (pp = &r->busy[bucket_of(key)]; (b = *pp); pp = &b->next) {
		if (strcmp(b->key, key))
			continue;
		b->undos -= undo;
		if (--b->count == 0) {
			*pp = b->next;
			free(b->key);
			free(b);
		}
		break;
	}
}

int reception_busy_add(struct reception *r, const char *key)
{
	int rc;

	if (!r || !key)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	rc = busy_add_locked(r, key, 0, 0);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

void reception_busy_del(struct reception *r, const char *key)
{
	if (!r || !key)
		return;
	pthread_mutex_lock(&r->lock);
	busy_del_locked(r, key, 0);
	pthread_mutex_unlock(&r->lock);
}

int reception_is_busy(struct reception *r, const char *key)
{
	int b;

	pthread_mutex_lock(&r->lock);
	b = busy_has(r, key);
	pthread_mutex_unlock(&r->lock);
	return b;
}

/* ---- grace period ---------------------------------------------------- */

/* Caller holds r->lock. */
struct defer_ent *defer_find(struct reception *r, const char *key,
			     const char *etag)
{
	struct defer_ent *d;

	for (d = r->defer[bucket_of(key)]; d; d = d->next)
		if (!strcmp(d->key, key) && !strcmp(d->etag, etag))
			return d;
	return NULL;
}

/* Caller holds r->lock. */
void defer_del(struct reception *r, const char *key, const char *etag)
{
	struct defer_ent **pp, *d;

	for (pp = &r->defer[bucket_of(key)]; (d = *pp); pp = &d->next) {
		if (!strcmp(d->key, key) && !strcmp(d->etag, etag)) {
			*pp = d->next;
			free(d->key);
			free(d);
			r->n_defer--;
			return;
		}
	}
}

/* May an observer log the object (key, etag, LastModified mtime) now? 0 if
 * so; otherwise the realtime (ms) when it may, and the object is remembered
 * so that the worker looks at it again then. Caller holds r->lock. */
int64_t defer_due(struct reception *r, const char *key, const char *etag,
		  time_t mtime)
{
	int64_t now = ms_now(CLOCK_REALTIME);
	/* LastModified has whole seconds: the upload may end 1 s later. */
	int64_t due = (int64_t)mtime * 1000 + 1000 + r->grace_ms;
	int multipart = strchr(etag, '-') != NULL;
	struct defer_ent *d = defer_find(r, key, etag);

	if (!d) {
		if (due <= now && !multipart)
			return 0;
		if (r->n_defer >= DEFER_MAX) {
			log_warn("too many recent uploads waiting to be "
				 "logged; %s is looked at again when next "
				 "seen",
				 key);
			return due > now ? due : now + r->grace_ms;
		}
		d = calloc(1, sizeof(*d));
		if (d)
			d->key = strdup(key);
		if (!d || !d->key) {
			free(d);
			return now + r->grace_ms;
		}
		snprintf(d->etag, sizeof(d->etag), "%s", etag);
		d->first_seen_ms = now;
		d->next = r->defer[bucket_of(key)];
		r->defer[bucket_of(key)] = d;
		r->n_defer++;
	}
	/* A multipart object's LastModified may be when its upload began:
	 * its uploader's commit is bounded from when it became visible. */
	if (multipart && d->first_seen_ms + r->grace_ms > due)
		due = d->first_seen_ms + r->grace_ms;
	d->due_ms = due > now ? due : now;
	return due > now ? due : 0;
}

/* Takes up to max objects whose grace has passed out of the deferred table
 * into e (keys malloc'd). Caller holds r->lock. */
static size_t defer_take_ripe(struct reception *r, struct s3_list_entry *e,
			      size_t max)
{
	int64_t now = ms_now(CLOCK_REALTIME);
	size_t i, n = 0;

	for (i = 0; i < TABLE_BUCKETS && n < max; i++) {
		struct defer_ent **pp = &r->defer[i], *d;

		while ((d = *pp) && n < max) {
			if (d->due_ms > now) {
				pp = &d->next;
				continue;
			}
			*pp = d->next;
			memset(&e[n], 0, sizeof(e[n]));
			e[n].key = d->key;
			memcpy(e[n].etag, d->etag, sizeof(e[n].etag));
			n++;
			r->n_defer--;
			free(d);
		}
	}
	return n;
}

/* Caller holds r->lock. */
static int defer_any_ripe(struct reception *r)
{
	int64_t now = ms_now(CLOCK_REALTIME);
	size_t i;

	if (!r->n_defer)
		return 0;
	for (i = 0; i < TABLE_BUCKETS; i++) {
		struct defer_ent *d;

		for (d = r->defer[i]; d; d = d->next)
			if (d->due_ms <= now)
				return 1;
	}
	return 0;
}

/* ---- commit and its undo --------------------------------------------- */

static void reception_reason(char *out, size_t len, const char *what,
			     const struct actor *who)
{
	char a[400];

	actor_format(who, a, sizeof(a));
	snprintf(out, len, "%s by %s", what, a);
}

/* One event line (log.h) for an outcome decided here. who may be NULL
 * (an upload by another route); rc < 0 makes it an error line for op.
 * reason (NULL: none) says why a removed row or object went. */
static void reception_event_why(struct reception *r, const char *event,
				const char *op, int rc, const char *key,
				const struct upload_result *res, int64_t id,
				const struct actor *who, const char *origin,
				const char *reason)
{
	events_reception(event, op, rc, r->cfg->reception_bucket, key,
			 res ? (long long)res->size : -1,
			 res ? res->sha256 : NULL, id, origin, reason, who);
}

void reception_event(struct reception *r, const char *event, const char *op,
		     int rc, const char *key, const struct upload_result *res,
		     int64_t id, const struct actor *who, const char *origin)
{
	reception_event_why(r, event, op, rc, key, res, id, who, origin, NULL);
}

int reception_ready(struct reception *r)
{
	return db_ping(r->db);
}

int reception_will_replace(struct reception *r, const char *key, int stored)
{
	struct reception_live *rows = NULL;
	const char *keys[1] = {key};
	size_t n = 0;
	int rc;

	if (stored) {
		rc = reception_ready(r);
		return rc ? rc : 1;
	}
	rc = db_reception_live_keys(r->db, r->cfg->reception_bucket, keys, 1,
				    &rows, &n);
	if (rc)
		return rc;
	db_reception_live_free(rows, n);
	return n > 0;
}

/* Under the key lock: is the object still the upload with that ETag (and,
 * when so->tag is given, that tag: another client's object of the same
 * bytes has the ETag, never the tag; review-W W2)? If so
 * and asked to, deletes it. For an undo (own >= 0), first: -ECANCELED when
 * this process committed a row for the key since the undo's upload failed,
 * -EBUSY while it uploads the key again (a newer upload of the same bytes
 * has the same ETag: never undo that one). 0, -ESTALE (another object is
 * there now), -ENOENT (none is), or the store's error. */
int reception_still_ours(void *arg)
{
	struct still_ours *so = arg;
	struct reception *r = so->r;
	struct s3_object_info info = {0};
	int rc = 0;

	if (so->own >= 0) {
		struct busy_ent *b;

		pthread_mutex_lock(&r->lock);
		b = busy_find(r, so->key);
		if (b && b->commits != so->gen)
			rc = -ECANCELED;
		else if (b && b->count - b->undos > so->own)
			rc = -EBUSY;
		pthread_mutex_unlock(&r->lock);
		if (rc)
			return rc;
	}
	rc = s3_head(r->s3, r->cfg->reception_bucket, so->key, &info);
	if (so->seen) { /* as of this call: the guard may run again */
		memset(so->seen, 0, sizeof(*so->seen));
		so->seen->gone = rc == -ENOENT;
		if (rc == 0) {
			snprintf(so->seen->etag, sizeof(so->seen->etag), "%s",
				 info.etag);
			so->seen->size = info.size;
			so->seen->mtime = info.mtime;
		}
	}
	if (rc)
		return rc;
	rc = strcmp(info.etag, so->etag) ? -ESTALE : 0;
	if (rc == 0 && so->tag && *so->tag) {
		const char *t = s3_meta_get(&info, so->tag_name);

		if (!t || strcmp(t, so->tag))
			rc = -ESTALE;
	}
	s3_object_info_free(&info);
	if (rc == 0 && so->delete)
		rc = s3_delete(r->s3, r->cfg->reception_bucket, so->key);
	return rc;
}

/* The guard of a mount's commit (under the key lock): 0 when the object is
 * still the upload (or the store cannot say now: the row is written as
 * before, a replacement is then logged by its own uploader or a scan),
 * -ESTALE when another upload replaced it, -ENODATA when it is gone (no
 * row: the caller uploads again). */
static int reception_commit_check(void *arg)
{
	struct still_ours *so = arg;
	uint64_t t0 = ctr_now_ns();
	int rc = reception_still_ours(so);

	stage_observe_since(STG_ROW_CHECK, t0);
	if (rc == -ENOENT)
		return -ENODATA;
	if (rc && rc != -ESTALE && rc != -ENOENT) {
		log_warn("%s/%s: cannot check the object before its row: %s",
			 so->r->cfg->reception_bucket, so->key, strerror(-rc));
		rc = 0;
	}
	return rc;
}

/* A late row of an upload through a mount (not a rename's copy: no new
 * content) counts as received, as its commit would have. */
/* objhash_compute's stop for an undo's hash: the reception is freed. */
static int reception_undo_stop(void *arg)
{
	return reception_stopping(arg);
}

int reception_undo_waits(struct reception *r, const char *key, const char *etag)
{
	struct undo *u;
	int n = 0;

	pthread_mutex_lock(&r->lock);
	for (u = r->undos; u && !n; u = u->next)
		n = !strcmp(u->key, key) && !strcmp(u->res.etag, etag);
	pthread_mutex_unlock(&r->lock);
	return n;
}

int reception_landed(struct reception *r, const char *key,
		     struct upload_result *res)
{
	const char *b = r->cfg->reception_bucket, *keys[1] = {key};
	struct s3_object_info info = {0};
	struct reception_live *rows = NULL;
	char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX];
	const char *tag;
	size_t n = 0, i;
	int rc;

	/* Nothing to prove it by; or every empty object alike. */
	if (!res->sha256[0] || !res->xxh128[0] || !res->tag[0] ||
	    res->size == 0)
		return 0;
	rc = s3_head(r->s3, b, key, &info);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		goto out;
	rc = 0;
	/* Without this upload's tag: another client's, whatever its bytes
	 * (or its time: a store's LastModified may be rounded up, Swift's
	 * is). */
	tag = s3_meta_get(&info, UPLOAD_TAG);
	if (!info.etag[0] || info.size != res->size || !tag ||
	    strcmp(tag, res->tag))
		goto out;
	/* An object some row logged already is that row's upload (the same
	 * bytes, when its ETag is their MD5): never logged twice. */
	rc = db_reception_live_keys(r->db, b, keys, 1, &rows, &n);
	if (rc)
		goto out;
	for (i = 0; i < n; i++)
		if (rows[i].etag && !strcmp(rows[i].etag, info.etag))
			goto out;
	rc = objhash_compute(r->s3, b, key, info.etag, res->size, FOREIGN_CHUNK,
			     reception_undo_stop, r, xxh, sha);
	if (rc == -ESTALE) {
		rc = 0; /* replaced or removed meanwhile */
		goto out;
	}
	if (rc)
		goto out;
	if (strcmp(sha, res->sha256) || strcmp(xxh, res->xxh128))
		goto out;
	snprintf(res->etag, sizeof(res->etag), "%s", info.etag);
	log_warn("%s/%s: its upload was answered with an error, but the "
		 "object there is that upload (its bytes hashed again): "
		 "stored",
		 b, key);
	rc = 1;
out:
	db_reception_live_free(rows, n);
	s3_object_info_free(&info);
	return rc;
}

static void reception_count_late(const struct undo *u)
{
	if (u->origin && !strcmp(u->origin, "rename"))
		return;
	ctr_add(CTR_RECEIVED, 1);
	ctr_add(CTR_BYTES_RECEIVED, u->res.size);
}

static int reception_commit_gone(void *arg);

/* Resolves an undo with the database. own: uploads of the key the caller
 * holds (1 when called from the failed commit, 0 from the worker). 0 when
 * resolved (*committed: the upload has its row, so it stands), else -errno
 * (ask again later; -EBUSY while this process uploads the key again). */
static int reception_undo_try(struct reception *r, struct undo *u, int own,
			      int *committed)
{
	const char *b = r->cfg->reception_bucket;
	struct still_ours so = {
	    .r = r,
	    .key = u->key,
	    .etag = u->res.etag,
	    .tag = u->res.tag,
	    .tag_name = u->origin && !strcmp(u->origin, "rename") ? RENAME_TAG
								  : UPLOAD_TAG,
	    .own = own,
	    .gen = u->gen};
	struct db_record_guard g = {.expect_live = -1,
				    .check = reception_still_ours,
				    .arg = &so,
				    .readback = u->unknown,
				    .based_ms_ago = -1};
	struct reception_new rn = {
	    .source_bucket = b,
	    .object_key = u->key,
	    .file_name = names_basename(u->key),
	    .size = u->res.size,
	    .xxh128 = u->res.xxh128[0] ? u->res.xxh128 : NULL,
	    .sha256 = u->res.sha256[0] ? u->res.sha256 : NULL,
	    .etag = u->res.etag,
	    .origin = u->origin,
	    .who = &u->who,
	};
	char reason[512];
	int64_t id = 0;
	int rc = 0, rowed = 0, other = 0, inserted = 0, removed = 0;

	*committed = 0;
	if (u->based_mono >= 0) {
		/* ago = 0 + (now - based_mono), measured under the key lock */
		g.based_ms_ago = 0;
		g.measured_mono_ms = u->based_mono;
		g.gone = reception_commit_gone;
		g.removed_reason = "removed by a mount (rm) after this upload "
				   "began, before its row was written";
		g.removed_out = &removed;
	}
	if (u->created) {
		so.delete = 1;
		rc = db_reception_unrowed_do(r->db, b, u->key, u->res.etag,
					     reception_still_ours, &so, &rowed,
					     &other);
		if (rc == -ECANCELED)
			goto cancelled;
		if (rc == 0 && other) {
			/* The key has a live row of another object: this
			 * upload (if it is the object now) replaced that
			 * row's, whatever its uploader believed. Never
			 * deleted: logged late, as any overwrite. */
			log_warn("%s/%s: the key has a live row of another "
				 "object: the upload whose row failed is an "
				 "overwrite (logged late, never deleted)",
				 b, u->key);
			so.delete = 0;
			u->created = 0;
		}
	}
	if (u->created) {
		if (rc == -ENOENT || rc == -ESTALE) {
			log_warn("%s/%s: the object is no longer the upload "
				 "whose row failed (replaced or removed); "
				 "nothing to undo",
				 b, u->key);
			return 0;
		}
		if (rc)
			return rc;
		/* A live row with its ETag: its commit did happen (unknown
		 * outcome), or another upload of the same bytes has a row;
		 * either way the object is kept, but only the former makes
		 * the caller's commit a success. */
		*committed = rowed && u->unknown;
		if (rowed) {
			log_info("%s/%s: its row was committed after all; "
				 "object kept",
				 b, u->key);
			if (*committed && !own) { /* (own: its caller logs) */
				reception_count_late(u);
				reception_event(r, "received", NULL, 0, u->key,
						&u->res, 0, &u->who, u->origin);
			}
		} else {
			log_warn("%s/%s: upload without a row removed again", b,
				 u->key);
			/* an object change with no row: reason says so */
			reception_event_why(r, "removed", NULL, 0, u->key,
					    &u->res, 0, &u->who, u->origin,
					    "unrowed");
			/* A rename's copy came with its source's attributes
			 * (bound to its ETag): they describe nothing now. */
			if (db_attrs_drop_bound(r->db, b, u->key, u->res.etag,
						&u->who) != 0)
				log_error("%s/%s: attributes of the removed "
					  "upload kept (bound to it)",
					  b, u->key);
		}
		return 0;
	}
	/* An overwrite: the old content is gone, the new one is there; its
	 * row is what is missing. A row is only ever written with the hashes
	 * of its bytes (review P2: a rename's undo may come without them):
	 * hashed here first, If-Match its ETag; until that works, the undo
	 * is asked again later. */
	if (!u->res.sha256[0] || !u->res.xxh128[0]) {
		rc = objhash_compute(r->s3, b, u->key, u->res.etag, u->res.size,
				     FOREIGN_CHUNK, reception_undo_stop, r,
				     u->res.xxh128, u->res.sha256);
		if (rc == -ESTALE) {
			log_warn("%s/%s: replaced or removed since its row "
				 "failed; nothing to undo, nothing to log for "
				 "that upload",
				 b, u->key);
			return 0;
		}
		if (rc) {
			u->res.xxh128[0] = u->res.sha256[0] = '\0';
			log_warn("%s/%s: the overwrite whose row failed cannot "
				 "be hashed (%s): its row waits",
				 b, u->key, strerror(-rc));
			return rc;
		}
		rn.xxh128 = u->res.xxh128;
		rn.sha256 = u->res.sha256;
	}
	reception_reason(reason, sizeof(reason), "overwritten", &u->who);
	rc =
	    db_reception_record_guarded(r->db, &rn, reason, &g, &id, &inserted);
	if (rc == -EINPROGRESS)
		u->unknown = 1; /* read back on the next try */
	if (rc == -ECANCELED)
		goto cancelled;
	if (rc == -ENOENT || rc == -ESTALE) {
		log_warn("%s/%s: replaced or removed since its row failed; "
			 "nothing to undo, nothing to log for that upload",
			 b, u->key);
		return 0;
	}
	if (rc)
		return rc;
	if (removed) { /* the removal won: deleted, logged removed */
		log_warn("%s/%s: removed by a mount after this upload began: "
			 "not stored, logged as removed",
			 b, u->key);
		reception_event_why(r, "removed", NULL, 0, u->key, &u->res, id,
				    &u->who, u->origin, "deleted");
		return 0;
	}
	*committed = 1;
	reception_mark_known(r, u->key, u->res.etag);
	if (inserted && !own) {
		/* (from the commit itself, own: its caller logs it) */
		log_warn("%s/%s: overwrite logged late (its commit had "
			 "failed)",
			 b, u->key);
		reception_count_late(u);
		reception_event(r, "overwritten", NULL, 0, u->key, &u->res, id,
				&u->who, u->origin);
	}
	return 0;
cancelled:
	log_info("%s/%s: a later upload of the key committed its row; the "
		 "undo of the failed one is dropped",
		 b, u->key);
	return 0;
}

static void undo_free(struct undo *u)
{
	if (!u)
		return;
	free(u->key);
	free(u);
}

/* An upload's row failed with rc: resolve now if the database answers,
 * else remember it for the worker. Returns 0 if the upload turned out to
 * be committed (it stands), else rc (-EIO for an unknown outcome). */
int reception_undo_start(struct reception *r, const char *key,
			 const struct upload_result *res,
			 const struct actor *who, const char *origin,
			 int created, unsigned gen, int64_t based_mono, int rc)
{
	int err;

	int fail = rc == -EINPROGRESS ? -EIO : rc, committed = 0;
	struct undo *u;

	if (!res->etag[0]) {
		log_error("%s/%s: no ETag for the upload whose row failed; "
			  "object kept (the next scan logs it)",
			  r->cfg->reception_bucket, key);
		return fail;
	}
	u = calloc(1, sizeof(*u));
	if (u)
		u->key = strdup(key);
	if (!u || !u->key) {
		undo_free(u);
		log_error("%s/%s: out of memory for the undo; object kept "
			  "(the next scan logs it)",
			  r->cfg->reception_bucket, key);
		return fail;
	}
	u->res = *res;
	if (who)
		u->who = *who;
	u->created = created;
	u->gen = gen;
	u->based_mono = based_mono;
	u->origin = origin;
	u->unknown = rc == -EINPROGRESS;
	/* A database that could not be reached is not asked again at once
	 * (a frozen server would hold the caller another deadline). */
	if (rc != -EIO && rc != -ETIMEDOUT) {
		if (reception_undo_try(r, u, 1, &committed) == 0) {
			undo_free(u);
			return committed ? 0 : fail;
		}
	}
	/* The undo holds the key (the observer leaves it alone) and counts
	 * as an undo, not an upload (see reception_still_ours). */
	pthread_mutex_lock(&r->lock);
	err =
	    r->n_undos >= UNDO_MAX ? -ENOSPC : busy_add_locked(r, key, 1, gen);
	if (err) {
		pthread_mutex_unlock(&r->lock);
		log_error("%s/%s: too many unresolved uploads; object kept "
			  "without a row (the next scan logs it)",
			  r->cfg->reception_bucket, key);
		undo_free(u);
		return fail;
	}
	u->next_try_ms = ms_now(CLOCK_MONOTONIC) + UNDO_RETRY_MS;
	u->next = r->undos;
	r->undos = u;
	r->n_undos++;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	log_warn("%s/%s: resolved when the database answers again",
		 r->cfg->reception_bucket, key);
	return fail;
}

/* Worker: tries every undo that is due once. */
static void reception_undo_run(struct reception *r)
{
	int64_t now = ms_now(CLOCK_MONOTONIC);

	for (;;) {
		struct undo **pp, *u = NULL;
		int committed, rc;

		pthread_mutex_lock(&r->lock);
		for (pp = &r->undos; *pp; pp = &(*pp)->next) {
			if ((*pp)->next_try_ms <= now) {
				u = *pp;
				*pp = u->next;
				r->n_undos--;
				break;
			}
		}
		if (!u || r->stopping) {
			if (u) { /* back for reception_free to report */
				u->next = r->undos;
				r->undos = u;
				r->n_undos++;
			}
			pthread_mutex_unlock(&r->lock);
			return;
		}
		pthread_mutex_unlock(&r->lock);

		rc = reception_undo_try(r, u, 0, &committed);
		if (rc && ++u->tries < UNDO_MAX_TRIES) {
			int64_t wait = (int64_t)UNDO_RETRY_MS
				       << (u->tries < 5 ? u->tries : 5);

			if (wait > UNDO_RETRY_MAX_MS)
				wait = UNDO_RETRY_MAX_MS;
			pthread_mutex_lock(&r->lock);
			u->next_try_ms = ms_now(CLOCK_MONOTONIC) + wait;
			u->next = r->undos;
			r->undos = u;
			r->n_undos++;
			pthread_mutex_unlock(&r->lock);
			continue;
		}
		if (rc)
			log_error("%s/%s: gave up resolving the upload whose "
				  "row failed: %s; object kept (the next scan "
				  "logs it)",
				  r->cfg->reception_bucket, u->key,
				  strerror(-rc));
		pthread_mutex_lock(&r->lock);
		busy_del_locked(r, u->key, 1);
		pthread_mutex_unlock(&r->lock);
		undo_free(u);
	}
}

/* This process committed a row for key: its pending undos are of older
 * uploads of the key, superseded (one the worker holds now sees the new
 * generation in reception_still_ours and is dropped too). */
void reception_undos_cancel(struct reception *r, const char *key)
{
	struct undo **pp, *u, *dropped = NULL;
	struct busy_ent *b;

	pthread_mutex_lock(&r->lock);
	b = busy_find(r, key);
	if (b)
		b->commits++;
	for (pp = &r->undos; (u = *pp);) {
		if (strcmp(u->key, key)) {
			pp = &u->next;
			continue;
		}
		*pp = u->next;
		r->n_undos--;
		busy_del_locked(r, key, 1);
		u->next = dropped;
		dropped = u;
	}
	pthread_mutex_unlock(&r->lock);
	while ((u = dropped)) {
		dropped = u->next;
		log_info("%s/%s: a later upload of the key committed its row; "
			 "the undo of the failed one is dropped",
			 r->cfg->reception_bucket, key);
		undo_free(u);
	}
}

static int reception_undo_due(struct reception *r)
{
	int64_t now = ms_now(CLOCK_MONOTONIC);
	struct undo *u;

	for (u = r->undos; u; u = u->next)
		if (u->next_try_ms <= now)
			return 1;
	return 0;
}

/* The guard of a mount's commit when the key was removed after its
 * content was based on the store (under the key lock): deletes the object
 * if it is still the upload. 0 (also when it is not: another object's own
 * commit or a scan logs it), or the store's error. */
static int reception_commit_gone(void *arg)
{
	struct still_ours so = *(struct still_ours *)arg;
	int rc;

	so.delete = 1;
	rc = reception_still_ours(&so);
	return rc == -ESTALE || rc == -ENOENT ? 0 : rc;
}

int reception_commit(struct reception *r, const char *key,
		     const struct upload_result *res, const struct actor *who,
		     int created, int64_t based_ms_ago,
		     struct db_attrs_binding *bind, struct reception_seen *seen)
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
	/* Under the key lock, the object must still be this upload: one
	 * replaced meanwhile (another mount's upload, or one by another route,
	 * landed after ours and may have its row already) is logged as a
	 * removed row, never as the live one. */
	struct reception_seen found = {0};
	struct still_ours so = {.r = r,
				.key = key,
				.etag = res->etag,
				.tag = res->tag,
				.tag_name = UPLOAD_TAG,
				.own = -1,
				.seen = &found};
	int64_t measured = ms_now(CLOCK_MONOTONIC); /* based_ms_ago's now */
	int superseded = 0, removed = 0, had_live = 0;
	struct db_record_guard g = {
	    .expect_live = -1,
	    .check = reception_commit_check,
	    .arg = &so,
	    .superseded_reason = "replaced or removed by another upload "
				 "before this upload's row was written",
	    .superseded_out = &superseded,
	    .had_live_out = &had_live,
	    .based_ms_ago = based_ms_ago,
	    .measured_mono_ms = measured,
	    .gone = reception_commit_gone,
	    .removed_reason = "removed by a mount (rm) after this upload "
			      "began, before its row was written",
	    .removed_out = &removed,
	    .bind = bind,
	};
	char reason[512];
	unsigned gen = busy_gen(r, key);
	int64_t id = 0;
	int rc;

	if (seen)
		memset(seen, 0, sizeof(*seen));
	reception_reason(reason, sizeof(reason), "overwritten", who);
	rc = db_reception_record_guarded(r->db, &rn, reason, &g, &id, NULL);
	/* A new key or an overwrite: as the database says under the key lock
	 * (a live row there: this upload replaced its object). A failed row
	 * leaves it to the undo, which asks again under the lock. */
	if (rc == 0 && had_live)
		created = 0;
	if (rc == -ENODATA) {
		log_warn("%s/%s: its object was deleted before its row was "
			 "written: nothing logged, to be uploaded again",
			 r->cfg->reception_bucket, key);
		return rc;
	}
	if (rc == 0 && removed) {
		/* The rm came after this file was opened: it wins, and this
		 * close learns that its content is not stored. */
		log_warn("%s/%s: removed by a mount after this upload began: "
			 "not stored, logged as removed",
			 r->cfg->reception_bucket, key);
		ctr_add(CTR_ERR_RECEPTION, 1);
		reception_event(r, NULL, "receive", -ENOENT, key, res, id, who,
				"mount");
		return -ENOENT;
	}
	if (rc == 0 && superseded) {
		/* What the HEAD under the key lock saw: the caller shows it. */
		if (seen) {
			*seen = found;
			seen->superseded = 1;
		}
		log_warn("%s/%s: replaced or removed by another upload before "
			 "its row was written: logged as removed",
			 r->cfg->reception_bucket, key);
		reception_undos_cancel(r, key);
		ctr_add(CTR_RECEIVED, 1);
		ctr_add(CTR_BYTES_RECEIVED, res->size);
		reception_event(r, created ? "received" : "overwritten", NULL,
				0, key, res, id, who, "mount");
		reception_event_why(r, "removed", NULL, 0, key, res, id, who,
				    "mount", "superseded");
		return 0;
	}
	if (rc == 0) {
		reception_mark_known(r, key, res->etag);
		reception_undos_cancel(r, key);
		ctr_add(CTR_RECEIVED, 1);
		ctr_add(CTR_BYTES_RECEIVED, res->size);
		reception_event(r, created ? "received" : "overwritten", NULL,
				0, key, res, id, who, "mount");
		return 0;
	}
	log_error("reception row for %s/%s not committed: %s",
		  r->cfg->reception_bucket, key,
		  rc == -EINPROGRESS ? "outcome unknown (database lost at "
				       "commit)"
				     : strerror(-rc));
	rc = reception_undo_start(
	    r, key, res, who, "mount", created, gen,
	    based_ms_ago >= 0 ? measured - based_ms_ago : -1, rc);
	if (rc == 0) { /* its row was committed after all */
		ctr_add(CTR_RECEIVED, 1);
		ctr_add(CTR_BYTES_RECEIVED, res->size);
		reception_event(r, created ? "received" : "overwritten", NULL,
				0, key, res, 0, who, "mount");
	} else {
		ctr_add(CTR_ERR_RECEPTION, 1);
		reception_event(r, NULL, "receive", rc, key, res, 0, who,
				"mount");
	}
	return rc;
}

struct remove_obj {
	struct reception *r;
	const char *key;
};

/* Under the key lock: deletes the key's object, whichever upload it is (one
 * whose row is not committed yet then finds it gone and is logged removed).
 * 0 (also when there was none) or the store's error. */
static int reception_delete_locked(void *arg)
{
	struct remove_obj *ro = arg;

	return s3_delete(ro->r->s3, ro->r->cfg->reception_bucket, ro->key);
}

/* Under the key lock, after a removal whose COMMIT answer was lost: 0 when
 * the key still has no object (its live rows are to be marked removed),
 * -ESTALE when one is there now (a newer upload: its own commit logs it,
 * the rows stay as they are), or the store's error. */
static int reception_gone_locked(void *arg)
{
	struct remove_obj *ro = arg;
	struct s3_object_info info = {0};
	int rc;

	rc = s3_head(ro->r->s3, ro->r->cfg->reception_bucket, ro->key, &info);
	if (rc == -ENOENT)
		return 0;
	if (rc == 0) {
		s3_object_info_free(&info);
		rc = -ESTALE;
	}
	return rc;
}

int reception_remove(struct reception *r, const char *key,
		     const struct actor *who)
{
	return reception_remove_spare(r, key, who, NULL);
}

/* db_reception_mark_removed_locked, or with spared its sparing variant. */
static int remove_locked(struct reception *r, const char *key,
			 const char *reason, db_locked_fn fn, void *arg,
			 int *fn_ran, struct db_closed *closed, int *spared)
{
	if (spared)
		return db_reception_remove_spare(
		    r->db, r->cfg->reception_bucket, key, reason, fn,
		    reception_gone_locked, arg, fn_ran, closed, spared);
	return db_reception_mark_removed_locked(r->db, r->cfg->reception_bucket,
						key, reason, fn, arg, fn_ran,
						closed);
}

int reception_remove_spare(struct reception *r, const char *key,
			   const struct actor *who, int *spared)
{
	struct remove_obj ro = {r, key};
	struct db_closed closed = {0};
	struct upload_result res = {0};
	char reason[512];
	int rc, deleted = 0;

	/* The object is deleted and its rows marked removed under the key lock
	 * that commits take, so no other mount's commit of the key falls in
	 * between (it would be marked removed with its object still there, or
	 * stay live with its object deleted). Nothing is deleted when the
	 * database cannot be reached: the row must follow the object. */
	reception_reason(reason, sizeof(reason), "deleted", who);
	rc = remove_locked(r, key, reason, reception_delete_locked, &ro,
			   &deleted, &closed, spared);
	if (rc == -EINPROGRESS && !deleted) /* spared: it wrote nothing */
		rc = remove_locked(r, key, reason, reception_delete_locked, &ro,
				   &deleted, &closed, spared);
	if (rc == -EINPROGRESS && deleted) {
		/* The COMMIT's answer was lost after the object was deleted:
		 * mark the rows again while it is still gone. This unlink did
		 * remove it (review-31 R7): when this pass is spared (no live
		 * row left, another mount's new file begun since), that file's
		 * claim stays, and the removal is logged all the same. */
		rc = remove_locked(r, key, reason, reception_gone_locked, &ro,
				   NULL, &closed, spared);
		if (rc == -ESTALE) { /* removed; a newer upload is there now */
			/* The row at the name is that newer file's: the caller
			 * must not drop it (review-34 Z6). */
			if (spared)
				*spared = RECEPTION_NEWER;
			rc = 0;
		}
	}
	if (rc == -EINPROGRESS)
		rc = -EIO;
	if (rc && deleted)
		log_error("%s/%s may be deleted but its row was not marked "
			  "removed: %s",
			  r->cfg->reception_bucket, key, strerror(-rc));
	if (!rc && spared && *spared && !deleted) {
		/* No object there (a HEAD under the key lock), no live row: the
		 * unlink removed nothing, and says so (review-31 R4). */
		log_info("%s/%s: nothing removed (no object there; another "
			 "mount's new file is being written there)",
			 r->cfg->reception_bucket, key);
		return -ENOENT;
	}
	if (!rc && closed.n > 0 && closed.size >= 0)
		res.size = (uint64_t)closed.size;
	reception_event_why(r, "removed", "remove", rc, key,
			    !rc && closed.n > 0 && closed.size >= 0 ? &res
								    : NULL,
			    rc ? 0 : closed.id, who, "mount", "deleted");
	return rc;
}

/* ---- the worker ------------------------------------------------------ */

/* Logs a batch of objects whose grace has passed. Called unlocked. */
static void reception_log_ripe(struct reception *r, struct s3_list_entry *e,
			       size_t n)
{
	struct log_state st = {.ripe = 1};
	size_t i;
	int rc;

	rc = reception_unlogged(r, e, n, 0, &st);
	if (rc && rc != -ECANCELED)
		log_warn("could not check recent uploads against the "
			 "reception log: %s (looked at again when seen)",
			 strerror(-rc));
	for (i = 0; i < n; i++)
		free(e[i].key);
}

static void *reception_worker(void *arg)
{
	struct reception *r = arg;
	int64_t next_scan =
	    ms_now(CLOCK_MONOTONIC) + (int64_t)r->cfg->scan_interval_s * 1000;
	struct s3_list_entry *ripe;

	ripe = calloc(DEFER_BATCH, sizeof(*ripe));
	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		struct saw_job *j = r->head;
		size_t n;

		if (j) {
			struct log_state st = {0};
			size_t i;
			int rc;

			r->head = j->next;
			if (!r->head)
				r->tail = NULL;
			r->working = 1;
			pthread_mutex_unlock(&r->lock);
			rc = reception_unlogged(r, j->e, j->n, 0, &st);
			if (rc && rc != -ECANCELED)
				log_warn("could not check listed objects "
					 "against the reception log: %s (will "
					 "retry when seen again)",
					 strerror(-rc));
			pthread_mutex_lock(&r->lock);
			for (i = 0; i < j->n; i++)
				fpset_del(&r->pending,
					  fp_of(j->e[i].key, j->e[i].etag));
			r->working = 0;
			pthread_cond_broadcast(&r->cond);
			saw_job_free(j);
			continue;
		}
		if (reception_undo_due(r)) {
			r->working = 1;
			pthread_mutex_unlock(&r->lock);
			reception_undo_run(r);
			pthread_mutex_lock(&r->lock);
			r->working = 0;
			continue;
		}
		if (ripe && defer_any_ripe(r)) {
			n = defer_take_ripe(r, ripe, DEFER_BATCH);
			r->working = 1;
			pthread_mutex_unlock(&r->lock);
			reception_log_ripe(r, ripe, n);
			pthread_mutex_lock(&r->lock);
			r->working = 0;
			pthread_cond_broadcast(&r->cond);
			continue;
		}
		if (r->cfg->scan_interval_s > 0 &&
		    ms_now(CLOCK_MONOTONIC) >= next_scan) {
			r->working = 1;
			pthread_mutex_unlock(&r->lock);
			reception_scan(r, "", NULL);
			pthread_mutex_lock(&r->lock);
			r->working = 0;
			next_scan = ms_now(CLOCK_MONOTONIC) +
				    (int64_t)r->cfg->scan_interval_s * 1000;
			continue;
		}
		{
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_broadcast(&r->cond);
			pthread_cond_timedwait(&r->cond, &r->lock, &ts);
		}
	}
	pthread_mutex_unlock(&r->lock);
	free(ripe);
	return NULL;
}

/* The grace period: [fs] foreign_grace_ms, else 2 statement deadlines (a
 * commit and its reconnect) plus one S3 request (a PUT's LastModified may be
 * when it began). */
static int64_t reception_grace_ms(const struct cfg *cfg)
{
	long req = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms
					       : S3_REQUEST_TIMEOUT_DEFAULT_MS;

	if (cfg->foreign_grace_ms >= 0)
		return (int64_t)cfg->foreign_grace_ms;
	return 2 * (int64_t)DB_STATEMENT_DEADLINE_MS + (int64_t)req;
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
	r->grace_ms = reception_grace_ms(cfg);
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
	log_debug("reception: uploads from other routes are logged once "
		  "older than %lld ms",
		  (long long)r->grace_ms);
	return r;
}

void reception_drain(struct reception *r)
{
	pthread_mutex_lock(&r->lock);
	while (r->head || r->working)
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
}

void reception_free(struct reception *r)
{
	size_t i;

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
	while (r->undos) {
		struct undo *u = r->undos;

		r->undos = u->next;
		log_error("%s/%s (ETag %s): its row failed and the database "
			  "never answered again before unmount; object kept "
			  "without a row (the next scan logs it)",
			  r->cfg->reception_bucket, u->key, u->res.etag);
		undo_free(u);
	}
	for (i = 0; i < TABLE_BUCKETS; i++) {
		while (r->busy[i]) {
			struct busy_ent *b = r->busy[i];

			r->busy[i] = b->next;
			free(b->key);
			free(b);
		}
		while (r->defer[i]) {
			struct defer_ent *d = r->defer[i];

			r->defer[i] = d->next;
			free(d->key);
			free(d);
		}
	}
	fpset_free(&r->known);
	fpset_free(&r->pending);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}
