/* dircache.c - listings of the reception bucket, cached for cache_ttl_ms.
 *
 * A lookup of "a/b.txt" is answered from the listing of "a/" (one
 * ListObjectsV2 with delimiter "/" per directory per TTL), so creating many
 * files in a directory costs no extra request per file. The daemon's own
 * changes are applied to the cached listings as they happen. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t ts_ms(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
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
	size_t i;

	djournal_free(d->journal);
	for (i = 0; i < d->n; i++)
		free(d->ents[i].name);
	free(d->ents);
	free(d->prefix);
	free(d);
}

/* Caller holds cfs->lock. */
static struct dcache *dcache_find(const char *prefix)
{
	struct dcache *d;

	for (d = cfs->dirs; d; d = d->next)
		if (!strcmp(d->prefix, prefix))
			return d;
	return NULL;
}

static struct dentry *dcache_entry(struct dcache *d, const char *name)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		if (!strcmp(d->ents[i].name, name))
			return &d->ents[i];
	return NULL;
}

static int dcache_add(struct dcache *d, const char *name, int is_dir,
		      uint64_t size, time_t mtime, const char *etag)
{
	struct dentry *e;

	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 32;
		struct dentry *ne = realloc(d->ents, cap * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		d->ents = ne;
		d->cap = cap;
	}
	e = &d->ents[d->n];
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	if (!e->name)
		return -ENOMEM;
	e->is_dir = is_dir;
	e->size = size;
	e->mtime = mtime;
	if (etag)
		snprintf(e->etag, sizeof(e->etag), "%s", etag);
	d->n++;
	return 0;
}

/* Lists prefix from the store into a new dcache (no lock held). */
static int dcache_fetch(const char *prefix, struct dcache **out)
{
	struct s3_list_result res = {0};
	struct dcache *d;
	size_t plen = strlen(prefix), i;
	int rc;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->prefix = strdup(prefix);
	if (!d->prefix) {
		free(d);
		return -ENOMEM;
	}
	d->fetch_start_ms = now_ms();
	rc = s3_list_all(cfs->s3, cfs->cfg.reception_bucket,
			 plen ? prefix : NULL, "/", 0, &res);
	if (rc)
		goto fail;
	for (i = 0; i < res.n_prefixes && !rc; i++) {
		char *name = res.prefixes[i] + plen;
		size_t n = strlen(name);

		if (strncmp(res.prefixes[i], prefix, plen) || n < 2)
			continue;
		name[n - 1] = '\0'; /* "sub/" -> "sub" */
		rc = dcache_add(d, name, 1, 0, 0, NULL);
	}
	for (i = 0; i < res.n_entries && !rc; i++) {
		const struct s3_list_entry *e = &res.entries[i];
		const char *name = e->key + plen;

		if (strncmp(e->key, prefix, plen) || !*name ||
		    strchr(name, '/'))
			continue; /* the directory's own marker */
		if (dcache_entry(d, name))
			continue; /* both "x" and "x/": the directory wins */
		rc = dcache_add(d, name, 0, e->size, e->mtime, e->etag);
	}
	if (rc)
		goto fail;
	reception_saw(cfs->rcp, prefix, res.entries, res.n_entries);
	s3xml_list_free(&res);
	clock_gettime(CLOCK_MONOTONIC, &d->fetched);
	*out = d;
	return 0;
fail:
	s3xml_list_free(&res);
	dcache_free(d);
	return rc;
}

static void dcache_install(struct dcache *fresh);

static int dcache_refreshers; /* protected by cfs->lock */

static void *dcache_refresh_main(void *arg)
{
	char *prefix = arg;
	struct dcache *fresh = NULL, *d;

	if (dcache_fetch(prefix, &fresh) == 0) {
		pthread_mutex_lock(&cfs->lock);
		dcache_install(fresh);
		pthread_mutex_unlock(&cfs->lock);
	} else {
		pthread_mutex_lock(&cfs->lock);
		d = dcache_find(prefix);
		if (d)
			d->refreshing = 0;
		pthread_mutex_unlock(&cfs->lock);
	}
	pthread_mutex_lock(&cfs->lock);
	dcache_refreshers--;
	pthread_mutex_unlock(&cfs->lock);
	free(prefix);
	return NULL;
}

/* Caller holds cfs->lock. Starts a detached thread refetching d. */
static void dcache_refresh_behind(struct dcache *d)
{
	pthread_attr_t attr;
	pthread_t t;
	char *prefix = strdup(d->prefix);

	if (!prefix)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, dcache_refresh_main, prefix) == 0) {
		d->refreshing = 1;
		dcache_refreshers++;
	} else {
		free(prefix);
	}
	pthread_attr_destroy(&attr);
}

/* Makes sure a listing of prefix is cached (fresh, or when stale_ok only a
 * little stale); returns with cfs->lock held and *dp set, or -errno without
 * the lock. */
static int dcache_get_locked(const char *prefix, int stale_ok,
			     struct dcache **dp)
{
	struct dcache *d, *fresh = NULL;
	int rc;

	pthread_mutex_lock(&cfs->lock);
	d = dcache_find(prefix);
	if (d && now_ms() - ts_ms(&d->fetched) < cfs->cfg.cache_ttl_ms) {
		*dp = d;
		return 0;
	}
	if (d && stale_ok && d->fetched.tv_sec &&
	    now_ms() - ts_ms(&d->fetched) < 4 * (int64_t)cfs->cfg.cache_ttl_ms) {
		/* Slightly stale: answer now, refresh behind (a big directory
		 * takes a while to list, and lookups must not wait for it). */
		if (!d->refreshing)
			dcache_refresh_behind(d);
		*dp = d;
		return 0;
	}
	pthread_mutex_unlock(&cfs->lock);
	rc = dcache_fetch(prefix, &fresh);
	if (rc)
		return rc;
	pthread_mutex_lock(&cfs->lock);
	dcache_install(fresh);
	*dp = fresh;
	return 0;
}

/* Caller holds cfs->lock. Sets or removes one entry of d. */
static void dcache_apply(struct dcache *d, const char *name, int removed,
			 const struct dentry *src)
{
	struct dentry *e = dcache_entry(d, name);

	if (removed) {
		if (e) {
			free(e->name);
			*e = d->ents[--d->n];
		}
		return;
	}
	if (e) {
		e->is_dir = src->is_dir;
		e->size = src->size;
		e->mtime = src->mtime;
		memcpy(e->etag, src->etag, sizeof(e->etag));
	} else if (dcache_add(d, name, src->is_dir, src->size, src->mtime,
			      src->etag)) {
		d->fetched.tv_sec = 0; /* out of memory: refetch */
	}
}

/* Caller holds cfs->lock. Applies a change to the cached listing of its
 * directory, if cached, and journals it for a listing being fetched. */
static void dcache_change(const char *prefix, const char *name, int removed,
			  const struct dentry *src)
{
	struct dcache *d = dcache_find(prefix);
	struct djournal *j;

	if (!d)
		return;
	dcache_apply(d, name, removed, src);
	j = calloc(1, sizeof(*j));
	if (j)
		j->name = strdup(name);
	if (!j || !j->name) {
		free(j);
		d->fetched.tv_sec = 0; /* cannot journal: refetch */
		return;
	}
	j->removed = removed;
	if (src)
		j->e = *src;
	j->e.name = NULL;
	j->ms = now_ms();
	j->next = d->journal;
	d->journal = j;
	/* Only a listing still being fetched needs the journal: drop what
	 * is older than any fetch lasts (requests time out well before). */
	for (; j->next; j = j->next) {
		if (j->next->ms < j->ms - 600000) {
			djournal_free(j->next);
			j->next = NULL;
			break;
		}
	}
}

/* Caller holds cfs->lock. Puts a new listing in place of the old one; the
 * daemon's own changes made while it was being fetched are replayed onto
 * it (oldest first), so a file just written never vanishes from view. */
static void dcache_install(struct dcache *fresh)
{
	struct dcache **pp;

	for (pp = &cfs->dirs; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->prefix, fresh->prefix)) {
			struct dcache *old = *pp;
			struct djournal *j, *rev = NULL;

			/* The journal is newest first: reverse it. */
			while ((j = old->journal) != NULL) {
				old->journal = j->next;
				j->next = rev;
				rev = j;
			}
			for (j = rev; j; j = j->next)
				if (j->ms >= fresh->fetch_start_ms)
					dcache_apply(fresh, j->name,
						     j->removed, &j->e);
			djournal_free(rev);
			fresh->next = old->next;
			*pp = fresh;
			dcache_free(old);
			return;
		}
	}
	/* New directory: forget listings unused for a while, so the cache
	 * stays small however many directories are visited. */
	for (pp = &cfs->dirs; *pp;) {
		struct dcache *old = *pp;

		if (!old->refreshing &&
		    now_ms() - ts_ms(&old->fetched) >
			    10 * (int64_t)cfs->cfg.cache_ttl_ms + 10000) {
			*pp = old->next;
			dcache_free(old);
		} else {
			pp = &old->next;
		}
	}
	fresh->next = cfs->dirs;
	cfs->dirs = fresh;
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

int dcache_lookup(const char *rel, struct dentry *out)
{
	struct dcache *d;
	struct dentry *e;
	const char *name;
	char *prefix;
	int rc;

	rc = split_rel(rel, &prefix, &name);
	if (rc)
		return rc;
	rc = dcache_get_locked(prefix, 1, &d);
	if (rc)
		goto out;
	e = dcache_entry(d, name);
	if (!e && now_ms() - ts_ms(&d->fetched) >= cfs->cfg.cache_ttl_ms) {
		/* "Absent" is never answered from a stale listing: it decides
		 * whether a create (O_EXCL included) may write that key. */
		pthread_mutex_unlock(&cfs->lock);
		rc = dcache_get_locked(prefix, 0, &d);
		if (rc)
			goto out;
		e = dcache_entry(d, name);
	}
	if (e) {
		*out = *e;
		out->name = NULL;
	}
	pthread_mutex_unlock(&cfs->lock);
	rc = e ? 0 : -ENOENT;
out:
	free(prefix);
	return rc;
}

int dcache_list(const char *rel, void (*fn)(void *arg, const struct dentry *e),
		void *arg)
{
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
	/* A listing asked for by readdir is always fresh: that is where
	 * uploads from other routes show up. */
	pthread_mutex_lock(&cfs->lock);
	d = dcache_find(prefix);
	if (d)
		d->fetched.tv_sec = 0;
	pthread_mutex_unlock(&cfs->lock);
	rc = dcache_get_locked(prefix, 0, &d);
	free(prefix);
	if (rc)
		return rc;
	for (i = 0; i < d->n; i++)
		fn(arg, &d->ents[i]);
	pthread_mutex_unlock(&cfs->lock);
	return 0;
}

void dcache_upsert(const char *rel, int is_dir, uint64_t size, time_t mtime,
		   const char *etag)
{
	struct dentry e = {.is_dir = is_dir, .size = size, .mtime = mtime};
	const char *name;
	char *prefix;

	if (split_rel(rel, &prefix, &name))
		return;
	snprintf(e.etag, sizeof(e.etag), "%s", etag ? etag : "");
	pthread_mutex_lock(&cfs->lock);
	dcache_change(prefix, name, 0, &e);
	pthread_mutex_unlock(&cfs->lock);
	free(prefix);
}

void dcache_remove(const char *rel)
{
	const char *name;
	char *prefix;

	if (split_rel(rel, &prefix, &name))
		return;
	pthread_mutex_lock(&cfs->lock);
	dcache_change(prefix, name, 1, NULL);
	pthread_mutex_unlock(&cfs->lock);
	free(prefix);
}

void dcache_invalidate_all(void)
{
	struct dcache *d;

	pthread_mutex_lock(&cfs->lock);
	for (d = cfs->dirs; d; d = d->next)
		d->fetched.tv_sec = 0;
	pthread_mutex_unlock(&cfs->lock);
}

void dcache_free_all(void)
{
	int i;

	/* Background refreshes end within the S3 request timeouts. */
	for (i = 0; i < 6000; i++) {
		int n;

		pthread_mutex_lock(&cfs->lock);
		n = dcache_refreshers;
		pthread_mutex_unlock(&cfs->lock);
		if (!n)
			break;
		usleep(10000);
	}
	pthread_mutex_lock(&cfs->lock);
	while (cfs->dirs) {
		struct dcache *d = cfs->dirs;

		cfs->dirs = d->next;
		dcache_free(d);
	}
	pthread_mutex_unlock(&cfs->lock);
}
