/* attrs.c - attributes set with chmod, chown and utimens on inbox/ files,
 * kept for the view (an object store holds none of them), so cp -p,
 * rsync -a and file managers work.
 *
 * A hash table from the file's key to its override (nameidx), protected by
 * cfs->lock: getattr asks it for every file, in O(1). Overrides live as long
 * as the mount; they follow renames and go with removals. */
#include <errno.h>
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

struct attrov *attrov_find(const char *rel, int create)
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
	struct attrov *a;

	pthread_mutex_lock(&cfs->lock);
	a = attrov_find(rel, 1);
	if (a) {
		if (what & ATTROV_MODE) {
			a->mode = in->mode;
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
	}
	pthread_mutex_unlock(&cfs->lock);
	return a ? 0 : -ENOMEM;
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

void attrov_move(const char *from, const char *to)
{
	struct attrov *a;
	char *n;

	pthread_mutex_lock(&cfs->lock);
	attrov_drop_locked(to);
	a = attrov_find(from, 0);
	if (a) {
		n = strdup(to);
		nameidx_del(&attrs, a->rel);
		if (n && nameidx_put(&attrs, n, (uintptr_t)a) == 0) {
			free(a->rel);
			a->rel = n;
		} else {
			/* Out of memory: the override is lost, not left
			 * under the old name (a new file there must not
			 * inherit it). */
			free(n);
			attrov_free(a);
		}
	}
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
