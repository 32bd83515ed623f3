/* dircache.c - listings of a bucket, cached for cache_ttl_ms.
 *
 * Two namespaces share the code and the lock: DC_INBOX (the reception
 * bucket; its listings feed reception_saw, which logs foreign uploads) and
 * DC_STORE (the storage bucket, read by projects/; nothing is logged from
 * its listings). Each has its own listings and flights.
 *
 * A lookup of "a/b.txt" is answered from the listing of "a/" (one
 * ListObjectsV2 with delimiter "/" per directory per TTL), so creating many
 * files in a directory costs no extra request per file. The daemon's own
 * changes are applied to the cached listings as they happen.
 *
 * Each listing is a dset (an array indexed by name): lookups, changes and
 * the merge of a fresh listing are O(1) per name, so a directory of 100,000
 * entries costs 100,000 steps, not 100,000 squared.
 *
 * One fetch per directory at a time ("flight"): whoever needs a listing
 * that is being fetched waits for that fetch instead of sending its own
 * LIST. The daemon's changes made while a fetch runs are journaled on the
 * flight and replayed onto its result, so a file just written never
 * vanishes from view.
 *
 * A listing a little stale (up to 4 x TTL) answers lookups at once and is
 * refreshed by a background thread. At unmount dcache_shutdown() stops new
 * refreshes and waits, bounded, for the running ones; they stop between
 * LIST pages. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

/* A change the daemon made to a directory while its listing was fetched. */
struct djournal {
	char *name;
	int removed;
	struct dentry e;       /* name unused */
	struct djournal *next; /* oldest first */
};

/* The cached listing of one directory. */
struct dcache {
	char *prefix;	    /* "" or "a/b/" */
	int64_t fetched_ms; /* CLOCK_MONOTONIC; -1: must be refetched */
	struct dset set;
	struct dcache *next;
};

/* A LIST of one prefix under way. */
struct dflight {
	struct dcns *ns;
	char *prefix;
	int done; /* the fetch ended (rc says how) */
	int rc;
	int lost; /* a change could not be journaled: refetch the result */
	int refs; /* the fetching thread and the waiters */
	struct djournal *journal, **jtail; /* changes since the flight began */
	struct dflight *next;
};

struct dcache_view {
	const struct dset *set;
};

/* One bucket's listings. */
struct dcns {
	enum dc_ns id;
	struct dcache *dirs;	 /* protected by dc_lock */
	struct nameidx dirs_ix;	 /* protected by dc_lock: prefix -> dcache */
	struct dflight *flights; /* protected by dc_lock */
};

static pthread_mutex_t dc_lock = PTHREAD_MUTEX_INITIALIZER;
/* Broadcast when a flight ends, a refresh thread ends, or a thread leaves
 * reception_saw. */
static pthread_cond_t dc_cond = PTHREAD_COND_INITIALIZER;
static struct dcns namespaces[2] = {
    {DC_INBOX, NULL, NAMEIDX_INIT, NULL},
    {DC_STORE, NULL, NAMEIDX_INIT, NULL},
};
static int refreshers; /* protected by dc_lock: background threads */
static int saw_busy;   /* protected by dc_lock: in reception_saw */
static int stopping;   /* protected by dc_lock: unmount began */

enum get_mode {
	GET_STALE_OK, /* a slightly stale listing will do (refreshed behind) */
	GET_FRESH,    /* within the TTL */
	GET_FORCE,    /* fetched now (or being fetched) */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void djournal_free(struct djournal *j)
{
	while (j) {
		struct djournal *n = j->next;

		free(j->name);
		free(j);
		j = n;
	}
}

static void dcache_free(struct dcache *d)
{
	dset_free(&d->set);
	free(d->prefix);
	free(d);
}

/* Caller holds dc_lock. */
static struct dcache *dcache_find(struct dcns *ns, const char *prefix)
{
	uintptr_t v;

	return nameidx_get(&ns->dirs_ix, prefix, &v) ? (struct dcache *)v
						     : NULL;
}

/* Caller holds dc_lock. Age of d in ms; INT64_MAX when it must be
 * refetched. */
static int64_t dcache_age(const struct dcache *d)
{
	return d->fetched_ms < 0 ? INT64_MAX : now_ms() - d->fetched_ms;
}

static int is_stopping(void)
{
	int s;

	pthread_mutex_lock(&dc_lock);
	s = stopping;
	pthread_mutex_unlock(&dc_lock);
	return s;
}

static const char *dc_bucket(const struct dcns *ns)
{
	return ns->id == DC_INBOX ? cfs->cfg.reception_bucket
				  : cfs->cfg.storage_bucket;
}

/* Lists prefix from the store into a new dcache. No lock held. Stops
 * between pages at unmount (-ESHUTDOWN). */
static int dcache_fetch(struct dcns *ns, const char *prefix,
			struct dcache **out)
{
	struct s3_list_result res = {0};
	struct dcache *d;
	size_t plen = strlen(prefix), i;
	char *token = NULL;
	int rc;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->prefix = strdup(prefix);
	if (!d->prefix) {
		free(d);
		return -ENOMEM;
	}
	for (;;) {
		if (is_stopping()) {
			rc = -ESHUTDOWN;
			break;
		}
		rc = s3_list_page(cfs->s3, dc_bucket(ns), plen ? prefix : NULL,
				  "/", token, 0, &res);
		if (rc || !res.truncated)
			break;
		if (!res.next_token || !*res.next_token ||
		    (token && !strcmp(token, res.next_token))) {
			log_warn("list %s/%s: truncated without a new token",
				 dc_bucket(ns), prefix);
			rc = -EPROTO;
			break;
		}
		free(token);
		token = strdup(res.next_token);
		if (!token) {
			rc = -ENOMEM;
			break;
		}
	}
	free(token);
	if (rc)
		goto fail;
	rc = dset_reserve(&d->set, res.n_prefixes + res.n_entries);
	for (i = 0; i < res.n_prefixes && !rc; i++) {
		char *name = res.prefixes[i] + plen;
		size_t n = strlen(name);

		if (strncmp(res.prefixes[i], prefix, plen) || n < 2)
			continue;
		name[n - 1] = '\0'; /* "sub/" -> "sub" */
		rc = dset_set(&d->set, name, 1, 0, 0, NULL);
	}
	for (i = 0; i < res.n_entries && !rc; i++) {
		const struct s3_list_entry *e = &res.entries[i];
		const char *name = e->key + plen;

		if (strncmp(e->key, prefix, plen) || !*name ||
		    strchr(name, '/'))
			continue; /* the directory's own marker */
		if (dset_find(&d->set, name))
			continue; /* both "x" and "x/": the directory wins */
		rc = dset_set(&d->set, name, 0, e->size, e->mtime, e->etag);
	}
	if (rc)
		goto fail;
	if (ns->id != DC_INBOX)
		goto done;
	/* Foreign uploads are logged from listings; never once unmount
	 * began (the reception worker is being freed). */
	pthread_mutex_lock(&dc_lock);
	if (stopping) {
		pthread_mutex_unlock(&dc_lock);
		rc = -ESHUTDOWN;
		goto fail;
	}
	saw_busy++;
	pthread_mutex_unlock(&dc_lock);
	reception_saw(cfs->rcp, prefix, res.entries, res.n_entries);
	pthread_mutex_lock(&dc_lock);
	saw_busy--;
	pthread_cond_broadcast(&dc_cond);
	pthread_mutex_unlock(&dc_lock);
done:
	s3xml_list_free(&res);
	d->fetched_ms = now_ms();
	*out = d;
	return 0;
fail:
	s3xml_list_free(&res);
	dcache_free(d);
	return rc;
}

/* Caller holds dc_lock. Sets or removes one entry of d. */
static void dcache_apply(struct dcache *d, const char *name, int removed,
			 const struct dentry *src)
{
	if (removed)
		dset_remove(&d->set, name);
	else if (dset_set(&d->set, name, src->is_dir, src->size, src->mtime,
			  src->etag))
		d->fetched_ms = -1; /* out of memory: refetch */
}

/* Caller holds dc_lock. Puts a new listing in place of the old one. */
static void dcache_install(struct dcns *ns, struct dcache *fresh)
{
	struct dcache **pp, *old = dcache_find(ns, fresh->prefix);

	if (!old) {
		/* New directory: forget listings unused for a while, so the
		 * cache stays small however many directories are visited. */
		for (pp = &ns->dirs; *pp;) {
			struct dcache *o = *pp;

			if (dcache_age(o) >
			    10 * (int64_t)cfs->cfg.cache_ttl_ms + 10000) {
				*pp = o->next;
				nameidx_del(&ns->dirs_ix, o->prefix);
				dcache_free(o);
			} else {
				pp = &o->next;
			}
		}
	}
	if (nameidx_put(&ns->dirs_ix, fresh->prefix, (uintptr_t)fresh)) {
		/* Out of memory: keep what is cached, drop the new one. */
		dcache_free(fresh);
		if (old)
			old->fetched_ms = -1;
		return;
	}
	if (old) {
		for (pp = &ns->dirs; *pp != old; pp = &(*pp)->next)
			;
		*pp = old->next;
		dcache_free(old);
	}
	fresh->next = ns->dirs;
	ns->dirs = fresh;
}

/* Caller holds dc_lock. */
static struct dflight *flight_find(struct dcns *ns, const char *prefix)
{
	struct dflight *f;

	for (f = ns->flights; f; f = f->next)
		if (!f->done && !strcmp(f->prefix, prefix))
			return f;
	return NULL;
}

/* Caller holds dc_lock. A new flight, in the list, one reference. */
static struct dflight *flight_new(struct dcns *ns, const char *prefix)
{
	struct dflight *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->prefix = strdup(prefix);
	if (!f->prefix) {
		free(f);
		return NULL;
	}
	f->ns = ns;
	f->refs = 1;
	f->jtail = &f->journal;
	f->next = ns->flights;
	ns->flights = f;
	return f;
}

/* Caller holds dc_lock. Drops a reference. */
static void flight_put(struct dflight *f)
{
	if (--f->refs > 0)
		return;
	djournal_free(f->journal);
	free(f->prefix);
	free(f);
}

/* Fetches f->prefix (no lock held), installs the result with the changes
 * journaled meanwhile (unless unmount began), marks f done and wakes who
 * waits for it. Returns f's result with dc_lock held. */
static int flight_fly(struct dflight *f)
{
	struct dcache *fresh = NULL;
	struct dflight **pp;
	struct djournal *j;
	int rc;

	rc = dcache_fetch(f->ns, f->prefix, &fresh);
	pthread_mutex_lock(&dc_lock);
	if (!rc && stopping) {
		dcache_free(fresh);
		rc = -ESHUTDOWN;
	}
	if (!rc) {
		for (j = f->journal; j; j = j->next)
			dcache_apply(fresh, j->name, j->removed, &j->e);
		if (f->lost)
			fresh->fetched_ms = -1;
		dcache_install(f->ns, fresh);
	}
	f->done = 1;
	f->rc = rc;
	for (pp = &f->ns->flights; *pp != f; pp = &(*pp)->next)
		;
	*pp = f->next;
	pthread_cond_broadcast(&dc_cond);
	return rc;
}

static void *dcache_refresh_main(void *arg)
{
	struct dflight *f = arg; /* this thread's reference */

	flight_fly(f);
	flight_put(f);
	refreshers--;
	pthread_cond_broadcast(&dc_cond);
	pthread_mutex_unlock(&dc_lock);
	return NULL;
}

/* Caller holds dc_lock. Starts a detached thread refetching prefix. */
static void dcache_refresh_behind(struct dcns *ns, const char *prefix)
{
	pthread_attr_t attr;
	struct dflight *f, **pp;
	pthread_t t;

	if (stopping)
		return;
	f = flight_new(ns, prefix);
	if (!f)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, dcache_refresh_main, f) == 0) {
		refreshers++;
	} else {
		for (pp = &ns->flights; *pp != f; pp = &(*pp)->next)
			;
		*pp = f->next;
		flight_put(f);
	}
	pthread_attr_destroy(&attr);
}

/* Makes sure a listing of prefix is cached as mode asks; returns 0 with
 * dc_lock held and *dp set, or -errno without the lock. */
static int dcache_get_locked(struct dcns *ns, const char *prefix,
			     enum get_mode mode, struct dcache **dp)
{
	int64_t ttl = cfs->cfg.cache_ttl_ms;
	struct dcache *d;
	struct dflight *f;
	int rc, tries, lost;

	pthread_mutex_lock(&dc_lock);
	for (tries = 0;; tries++) {
		d = dcache_find(ns, prefix);
		f = flight_find(ns, prefix);
		if (d && mode != GET_FORCE && dcache_age(d) < ttl) {
			*dp = d;
			return 0;
		}
		if (d && mode == GET_STALE_OK && dcache_age(d) < 4 * ttl) {
			/* Slightly stale: answer now, refresh behind (a big
			 * directory takes a while to list, and lookups must
			 * not wait for it). */
			if (!f)
				dcache_refresh_behind(ns, prefix);
			*dp = d;
			return 0;
		}
		if (!f || tries >= 3)
			break;
		/* Being fetched: wait for that fetch, send no LIST. */
		f->refs++;
		while (!f->done)
			pthread_cond_wait(&dc_cond, &dc_lock);
		rc = f->rc;
		lost = f->lost;
		flight_put(f);
		if (rc) {
			pthread_mutex_unlock(&dc_lock);
			return rc;
		}
		/* A change made while it was fetched could not be replayed
		 * onto it (dcache_invalidate_in: a directory renamed or
		 * promoted): its LIST may predate what the caller already saw
		 * done. Only a lookup that a stale listing satisfies takes
		 * it; the others fetch again. */
		if (lost && mode != GET_STALE_OK)
			continue;
		d = dcache_find(ns, prefix);
		if (d) {
			*dp = d;
			return 0;
		}
		/* Gone again (out of memory at install): look again. */
	}
	f = flight_new(ns, prefix);
	if (!f) {
		pthread_mutex_unlock(&dc_lock);
		return -ENOMEM;
	}
	pthread_mutex_unlock(&dc_lock);
	rc = flight_fly(f);
	flight_put(f);
	d = rc ? NULL : dcache_find(ns, prefix);
	if (!d) {
		pthread_mutex_unlock(&dc_lock);
		return rc ? rc : -ENOMEM;
	}
	*dp = d;
	return 0;
}

/* Caller holds dc_lock. Applies a change to the cached listing of its
 * directory, if cached, and journals it on a fetch of it under way. */
static void dcache_change(struct dcns *ns, const char *prefix, const char *name,
			  int removed, const struct dentry *src)
{
	struct dcache *d = dcache_find(ns, prefix);
	struct dflight *f;
	struct djournal *j;

	if (d)
		dcache_apply(d, name, removed, src);
	for (f = ns->flights; f; f = f->next) {
		if (f->done || strcmp(f->prefix, prefix))
			continue;
		j = calloc(1, sizeof(*j));
		if (j)
			j->name = strdup(name);
		if (!j || !j->name) {
			free(j);
			f->lost = 1; /* cannot journal: refetch */
			continue;
		}
		j->removed = removed;
		if (src)
			j->e = *src;
		j->e.name = NULL;
		*f->jtail = j;
		f->jtail = &j->next;
	}
}

/* Splits rel into the parent prefix ("" or "a/") and the last name. */
static int split_rel(const char *rel, char **prefix, const char **name)
{
	const char *slash = strrchr(rel, '/');

	if (!slash) {
		*prefix = strdup("");
		*name = rel;
	} else {
		*prefix = strndup(rel, (size_t)(slash - rel) + 1);
		*name = slash + 1;
	}
	return *prefix ? 0 : -ENOMEM;
}

int dcache_lookup_in(enum dc_ns which, const char *rel, struct dentry *out)
{
	struct dcns *ns = &namespaces[which];
	struct dcache *d;
	struct dentry *e;
	const char *name;
	char *prefix;
	int rc;

	rc = split_rel(rel, &prefix, &name);
	if (rc)
		return rc;
	rc = dcache_get_locked(ns, prefix, GET_STALE_OK, &d);
	if (rc)
		goto out;
	e = dset_find(&d->set, name);
	if (!e && dcache_age(d) >= cfs->cfg.cache_ttl_ms) {
		/* "Absent" is never answered from a stale listing: it decides
		 * whether a create (O_EXCL included) may write that key. */
		pthread_mutex_unlock(&dc_lock);
		rc = dcache_get_locked(ns, prefix, GET_FRESH, &d);
		if (rc)
			goto out;
		e = dset_find(&d->set, name);
	}
	if (e) {
		*out = *e;
		out->name = NULL;
	}
	pthread_mutex_unlock(&dc_lock);
	rc = e ? 0 : -ENOENT;
out:
	free(prefix);
	return rc;
}

int dcache_view_has(const struct dcache_view *v, const char *name)
{
	return dset_find(v->set, name) != NULL;
}

int dcache_lookup(const char *rel, struct dentry *out)
{
	return dcache_lookup_in(DC_INBOX, rel, out);
}

int dcache_list_in(enum dc_ns which, const char *rel,
		   void (*fn)(void *arg, const struct dentry *e),
		   void (*done)(void *arg, const struct dcache_view *v),
		   void *arg)
{
	struct dcns *ns = &namespaces[which];
	struct dcache_view v;
	struct dcache *d;
	char *prefix;
	size_t i;
	int rc;

	if (*rel) {
		if (asprintf(&prefix, "%s/", rel) < 0)
			return -ENOMEM;
	} else {
		prefix = strdup("");
		if (!prefix)
			return -ENOMEM;
	}
	/* A listing asked for by readdir is always fetched (or joins the
	 * fetch under way): that is where uploads from other routes show. */
	rc = dcache_get_locked(ns, prefix, GET_FORCE, &d);
	free(prefix);
	if (rc)
		return rc;
	for (i = 0; i < d->set.n; i++)
		fn(arg, &d->set.ents[i]);
	if (done) {
		v.set = &d->set;
		done(arg, &v);
	}
	pthread_mutex_unlock(&dc_lock);
	return 0;
}

int dcache_list_ex(const char *rel,
		   void (*fn)(void *arg, const struct dentry *e),
		   void (*done)(void *arg, const struct dcache_view *v),
		   void *arg)
{
	return dcache_list_in(DC_INBOX, rel, fn, done, arg);
}

int dcache_list(const char *rel, void (*fn)(void *arg, const struct dentry *e),
		void *arg)
{
	return dcache_list_ex(rel, fn, NULL, arg);
}

void dcache_upsert_in(enum dc_ns which, const char *rel, int is_dir,
		      uint64_t size, time_t mtime, const char *etag)
{
	struct dentry e = {.is_dir = is_dir, .size = size, .mtime = mtime};
	const char *name;
	char *prefix;

	if (split_rel(rel, &prefix, &name))
		return;
	snprintf(e.etag, sizeof(e.etag), "%s", etag ? etag : "");
	pthread_mutex_lock(&dc_lock);
	dcache_change(&namespaces[which], prefix, name, 0, &e);
	pthread_mutex_unlock(&dc_lock);
	free(prefix);
}

void dcache_upsert(const char *rel, int is_dir, uint64_t size, time_t mtime,
		   const char *etag)
{
	dcache_upsert_in(DC_INBOX, rel, is_dir, size, mtime, etag);
}

void dcache_remove(const char *rel)
{
	const char *name;
	char *prefix;

	if (split_rel(rel, &prefix, &name))
		return;
	pthread_mutex_lock(&dc_lock);
	dcache_change(&namespaces[DC_INBOX], prefix, name, 1, NULL);
	pthread_mutex_unlock(&dc_lock);
	free(prefix);
}

void dcache_invalidate_all(void)
{
	dcache_invalidate_in(DC_INBOX);
}

void dcache_invalidate_in(enum dc_ns which)
{
	struct dcns *ns = &namespaces[which];
	struct dcache *d;
	struct dflight *f;

	pthread_mutex_lock(&dc_lock);
	for (d = ns->dirs; d; d = d->next)
		d->fetched_ms = -1;
	/* A fetch under way may have listed before the change. */
	for (f = ns->flights; f; f = f->next)
		f->lost = 1;
	pthread_mutex_unlock(&dc_lock);
}

int dcache_shutdown(int timeout_ms)
{
	struct timespec dl;
	int n;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&dc_lock);
	stopping = 1;
	while (refreshers > 0 &&
	       pthread_cond_clockwait(&dc_cond, &dc_lock, CLOCK_MONOTONIC,
				      &dl) != ETIMEDOUT)
		;
	/* Whoever is inside reception_saw leaves it soon (no I/O there);
	 * no one enters it any more. */
	while (saw_busy > 0)
		pthread_cond_wait(&dc_cond, &dc_lock);
	n = refreshers;
	pthread_mutex_unlock(&dc_lock);
	if (n)
		log_warn("unmount: %d listing refresh%s still waiting for the "
			 "store after %d ms; leaving without waiting more",
			 n, n == 1 ? "" : "es", timeout_ms);
	return n;
}

void dcache_free_all(void)
{
	size_t i;

	pthread_mutex_lock(&dc_lock);
	for (i = 0; i < sizeof(namespaces) / sizeof(namespaces[0]); i++) {
		struct dcns *ns = &namespaces[i];

		while (ns->dirs) {
			struct dcache *d = ns->dirs;

			ns->dirs = d->next;
			dcache_free(d);
		}
		nameidx_free(&ns->dirs_ix);
	}
	/* Flights still listed belong to refresh threads that outlived
	 * dcache_shutdown's wait: each frees its own. */
	pthread_mutex_unlock(&dc_lock);
}
