/* fhandle.c - open handles of inbox/ (and direct writes): their list, the
 * read-only handles on stored objects (readers) that an unlink or a
 * rename hands content to, and their release. Split from ops_inbox.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "counters.h"
#include "db_attrs.h"
#include "fs.h"
#include "inbox.h"
#include "inbox_int.h"
#include "inval.h"
#include "log.h"
#include "names.h"

/* Read-only handles on stored objects (h->of == NULL), so that an unlink
 * can hand them the content they opened. Protected by cfs->lock. */
static struct fhandle *readers;
/* Every handle made by fh_new and not freed yet. Protected by cfs->lock. */
static struct fhandle *all_handles;

void readers_add(struct fhandle *h)
{
	pthread_mutex_lock(&cfs->lock);
	h->rnext = readers;
	readers = h;
	pthread_mutex_unlock(&cfs->lock);
}

struct fhandle *fh_new(struct ofile *of)
{
	struct fuse_context *ctx = cfs_context();
	struct fhandle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;

	h->of = of;
	h->area = AREA_INBOX;
	h->opener = ctx ? ctx->pid : 0;
	h->opened_ns = ctr_now_ns();
	pthread_mutex_init(&h->lock, NULL);
	pthread_mutex_lock(&cfs->lock);
	h->anext = all_handles;
	if (all_handles)
		all_handles->aprev = h;
	all_handles = h;
	pthread_mutex_unlock(&cfs->lock);
	return h;
}

/* Caller holds h->of->lock. The file was changed through h: h's close
 * (or fsync) commits it. */
void fh_pend(struct fhandle *h)
{
	h->modified = 1;
	if (!h->pending) {
		h->pending = 1;
		h->of->pending++;
	}
}

/* Caller holds h->of->lock. h's commit obligation is met (committed, or
 * its close reported the failure). */
void fh_settle(struct fhandle *h)
{
	if (h->pending) {
		h->pending = 0;
		h->of->pending--;
	}
}

void fh_free(struct fhandle *h)
{
	struct fhandle **pp;
	struct ofile *spool = NULL;

	if (!h)
		return;
	pthread_mutex_lock(&cfs->lock);
	if (h->aprev)
		h->aprev->anext = h->anext;
	else if (all_handles == h)
		all_handles = h->anext;
	if (h->anext)
		h->anext->aprev = h->aprev;
	h->anext = h->aprev = NULL;
	pthread_mutex_unlock(&cfs->lock);
	if (h->of) {
		if (h->writable || h->pending) {
			pthread_mutex_lock(&h->of->lock);
			h->of->writers -= h->writable;
			fh_settle(h);
			pthread_mutex_unlock(&h->of->lock);
		}
		ofile_put(h->of);
	} else {
		pthread_mutex_lock(&cfs->lock);
		for (pp = &readers; *pp; pp = &(*pp)->rnext) {
			if (*pp == h) {
				*pp = h->rnext;
				break;
			}
		}
		spool = h->spool;
		pthread_mutex_unlock(&cfs->lock);
		if (spool)
			ofile_put(spool);
	}
	pthread_mutex_destroy(&h->lock);
	rawin_free(&h->win);
	free(h->rel);
	free(h);
}

void fh_free_all(void)
{
	struct fhandle *h;

	for (;;) {
		pthread_mutex_lock(&cfs->lock);
		h = all_handles;
		pthread_mutex_unlock(&cfs->lock);
		if (!h)
			break;
		fh_free(h); /* unlinks it */
	}
}

struct ofile *fh_file(struct fhandle *h)
{
	struct ofile *of;

	if (h->of)
		return h->of;
	/* A stale handle's spool is another object's: never read (its
	 * reference only keeps the hidden name while it is open). */
	pthread_mutex_lock(&cfs->lock);
	of = h->stale ? NULL : h->spool;
	pthread_mutex_unlock(&cfs->lock);
	return of;
}

/* The read-only handles of stored object `rel` now read from `of` (the
 * object is about to leave the store). Each takes a reference (which
 * keeps of, under its hidden name, while it is open). A handle pinned to
 * another object than etag's is stale: it never reads of. A handle with
 * no pin ("": the listing named no ETag at its open) reads it, as every
 * handle does when etag is NULL. */
int readers_attach(const char *rel, struct ofile *of, const char *etag,
		   const char *etag2)
{
	struct fhandle *h;
	int n = 0;

	if (etag2 && !etag2[0])
		etag2 = NULL;
	pthread_mutex_lock(&cfs->lock);
	for (h = readers; h; h = h->rnext) {
		if (h->spool || strcmp(h->rel, rel))
			continue;
		if (etag && h->etag[0] && strcmp(h->etag, etag) &&
		    strcmp(h->copied, etag) &&
		    (!etag2 ||
		     (strcmp(h->etag, etag2) && strcmp(h->copied, etag2))))
			h->stale = 1;
		h->spool = of;
		of->refs++;
		n += !h->stale;
	}
	pthread_mutex_unlock(&cfs->lock);
	return n;
}

/* Stored objects renamed (from, or everything under from/ for a
 * directory): their readers follow, the content being the same (the
 * copy's ETag: readers_copied, called first). */
void readers_rename(const char *from, const char *to)
{
	size_t fl = strlen(from);
	struct fhandle *h;

	pthread_mutex_lock(&cfs->lock);
	for (h = readers; h; h = h->rnext) {
		char *n = NULL;

		if (h->spool)
			continue; /* not the store's object any more */
		if (!strcmp(h->rel, from)) {
			n = strdup(to);
		} else if (!strncmp(h->rel, from, fl) && h->rel[fl] == '/' &&
			   asprintf(&n, "%s%s", to, h->rel + fl) < 0) {
			n = NULL;
		}
		if (n) {
			free(h->rel);
			h->rel = n;
		}
	}
	pthread_mutex_unlock(&cfs->lock);
}

void readers_copied(const char *rel, const char *src, const char *etag)
{
	struct fhandle *h;

	if (!src || !etag || !src[0] || !etag[0])
		return;
	pthread_mutex_lock(&cfs->lock);
	for (h = readers; h; h = h->rnext)
		if (!h->spool && !strcmp(h->rel, rel) &&
		    (!strcmp(h->etag, src) || !strcmp(h->copied, src)))
			snprintf(h->copied, sizeof(h->copied), "%s", etag);
	pthread_mutex_unlock(&cfs->lock);
}

int fh_stale(struct fhandle *h)
{
	int stale;

	pthread_mutex_lock(&cfs->lock);
	stale = h->stale;
	pthread_mutex_unlock(&cfs->lock);
	return stale;
}

char *fh_rel(struct fhandle *h)
{
	struct ofile *of = fh_file(h);
	char *rel;

	if (of)
		return ofile_rel(of);
	pthread_mutex_lock(&cfs->lock);
	rel = strdup(h->rel);
	pthread_mutex_unlock(&cfs->lock);
	return rel;
}

int readers_of(const char *rel)
{
	struct fhandle *h;
	int n = 0;

	pthread_mutex_lock(&cfs->lock);
	for (h = readers; h; h = h->rnext)
		n += !h->spool && !strcmp(h->rel, rel);
	pthread_mutex_unlock(&cfs->lock);
	return n;
}
