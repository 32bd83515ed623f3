/* attrs.c - attributes set with chmod, chown and utimens on inbox/ files,
 * kept for the view (an object store holds none of them), so cp -p,
 * rsync -a and file managers work.
 *
 * A hash table from the file's key to its override (nameidx), protected by
 * cfs->lock: getattr asks it for every file, in O(1). Overrides live as long
 * as the mount; they follow renames and go with removals. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "nameidx.h"

static struct nameidx attrs = NAMEIDX_INIT; /* protected by cfs->lock:
					       rel -> struct attrov * */

static void attrov_free(struct attrov *a)
{
	free(a->rel);
	free(a);
}

/* Caller holds cfs->lock. The override for rel (created empty when create
 * is set), or NULL (absent, or out of memory). */
static struct attrov *attrov_find(const char *rel, int create)
{
	struct attrov *a;
	uintptr_t v;

	if (nameidx_get(&attrs, rel, &v))
		return (struct attrov *)v;
	if (!create)
		return NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->rel = strdup(rel);
	if (!a->rel || nameidx_put(&attrs, a->rel, (uintptr_t)a)) {
		attrov_free(a);
		return NULL;
	}
	return a;
}

int attrov_set(const char *rel, const struct attrov *in, unsigned what,
	       const struct stat *st)
{
	struct timespec now;
	struct attrov *a;

	clock_gettime(CLOCK_REALTIME, &now);
	pthread_mutex_lock(&cfs->lock);
	a = attrov_find(rel, 1);
	if (a) {
		if (what & ATTROV_RESET)
			a->has_mode = a->has_owner = a->has_atime =
			    a->has_mtime = a->has_ctime = 0;
		if (what & ATTROV_MODE) {
			a->mode = in->mode & 07777;
			a->has_mode = 1;
		}
		if (what & ATTROV_OWNER) {
			a->uid = in->uid == (uid_t)-1 ? st->st_uid : in->uid;
			a->gid = in->gid == (gid_t)-1 ? st->st_gid : in->gid;
			a->has_owner = 1;
		}
		if (what & ATTROV_ATIME) {
			a->atime = in->atime;
			a->has_atime = 1;
		}
		if (what & ATTROV_MTIME) {
			a->mtime = in->mtime;
			a->has_mtime = 1;
		}
		if (what & ATTROV_CTIME) {
			a->ctime = now;
			a->has_ctime = 1;
		}
	}
	pthread_mutex_unlock(&cfs->lock);
	return a ? 0 : -ENOMEM;
}

static int ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

void attrov_apply(const char *rel, struct stat *st)
{
	struct attrov *a;

	pthread_mutex_lock(&cfs->lock);
	a = attrov_find(rel, 0);
	if (a) {
		if (a->has_mode)
			st->st_mode =
			    (st->st_mode & S_IFMT) | (a->mode & 07777);
		if (a->has_owner) {
			st->st_uid = a->uid;
			st->st_gid = a->gid;
		}
		if (a->has_mtime)
			st->st_mtim = a->mtime;
		if (a->has_atime)
			st->st_atim = a->atime;
		if (a->has_ctime && ts_after(&a->ctime, &st->st_ctim))
			st->st_ctim = a->ctime;
	}
	pthread_mutex_unlock(&cfs->lock);
}

/* Caller holds cfs->lock. */
static void attrov_drop_locked(const char *rel)
{
	uintptr_t v;

	if (!nameidx_get(&attrs, rel, &v))
		return;
	nameidx_del(&attrs, rel);
	attrov_free((struct attrov *)v);
}

/* Caller holds cfs->lock. a (indexed) is now named n (allocated; taken
 * over, freed on failure). Out of memory, the override is lost, not left
 * under the old name: a new file there must not inherit it. */
static void attrov_rename_locked(struct attrov *a, char *n)
{
	nameidx_del(&attrs, a->rel);
	if (n) {
		attrov_drop_locked(n);
		if (nameidx_put(&attrs, n, (uintptr_t)a) == 0) {
			free(a->rel);
			a->rel = n;
			return;
		}
	}
	free(n);
	attrov_free(a);
}

/* Caller holds cfs->lock. Everything under from/ moves to to/ (the index
 * cannot be walked while it changes: the overrides are gathered first). */
static void attrov_move_tree_locked(const char *from, const char *to)
{
	size_t fl = strlen(from), i, n = 0;
	struct attrov **v = NULL;
	char *nn;

	for (i = 0; i < attrs.cap; i++) {
		const char *k = attrs.slots[i].key;

		if (k && !strncmp(k, from, fl) && k[fl] == '/')
			n++;
	}
	if (n == 0)
		return;
	v = malloc(n * sizeof(*v));
	n = 0;
	for (i = 0; i < attrs.cap; i++) {
		const char *k = attrs.slots[i].key;

		if (!k || strncmp(k, from, fl) || k[fl] != '/')
			continue;
		if (v)
			v[n++] = (struct attrov *)attrs.slots[i].val;
	}
	if (!v) {
		/* Out of memory: the overrides under from/ are lost rather
		 * than left for new files there (the index is walked again
		 * from the start after each removal). */
		for (i = 0; i < attrs.cap; i++) {
			const char *k = attrs.slots[i].key;

			if (k && !strncmp(k, from, fl) && k[fl] == '/') {
				attrov_drop_locked(k);
				i = (size_t)-1;
			}
		}
		return;
	}
	for (i = 0; i < n; i++) {
		if (asprintf(&nn, "%s%s", to, v[i]->rel + fl) < 0)
			nn = NULL;
		attrov_rename_locked(v[i], nn);
	}
	free(v);
}

void attrov_move(const char *from, const char *to, int tree)
{
	struct attrov *a;

	pthread_mutex_lock(&cfs->lock);
	attrov_drop_locked(to);
	a = attrov_find(from, 0);
	if (a)
		attrov_rename_locked(a, strdup(to));
	if (tree)
		attrov_move_tree_locked(from, to);
	pthread_mutex_unlock(&cfs->lock);
}

void attrov_drop(const char *rel)
{
	pthread_mutex_lock(&cfs->lock);
	attrov_drop_locked(rel);
	pthread_mutex_unlock(&cfs->lock);
}

void attrov_free_all(void)
{
	size_t i;

	pthread_mutex_lock(&cfs->lock);
	for (i = 0; i < attrs.cap; i++)
		if (attrs.slots[i].key)
			attrov_free((struct attrov *)attrs.slots[i].val);
	nameidx_free(&attrs);
	pthread_mutex_unlock(&cfs->lock);
}
