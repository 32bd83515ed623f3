/* dset.c - see dset.h. */
#include "dset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dentry *dset_find(const struct dset *s, const char *name)
{
	uintptr_t i;

	return nameidx_get(&s->ix, name, &i) ? &s->ents[i] : NULL;
}

int dset_reserve(struct dset *s, size_t n)
{
	if (n > s->cap) {
		struct dentry *ne;

		if (n > SIZE_MAX / sizeof(*ne))
			return -ENOMEM;
		ne = realloc(s->ents, n * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		s->ents = ne;
		s->cap = n;
	}
	return nameidx_reserve(&s->ix, n);
}

static void fill(struct dentry *e, int is_dir, uint64_t size, time_t mtime,
		 const char *etag)
{
	e->is_dir = is_dir;
	e->size = size;
	e->mtime = mtime;
	snprintf(e->etag, sizeof(e->etag), "%s", etag ? etag : "");
}

int dset_set(struct dset *s, const char *name, int is_dir, uint64_t size,
	     time_t mtime, const char *etag)
{
	struct dentry *e = dset_find(s, name);
	int rc;

	if (e) {
		fill(e, is_dir, size, mtime, etag);
		return 0;
	}
	if (s->n == s->cap) {
		rc = dset_reserve(s, s->cap ? s->cap * 2 : 32);
		if (rc)
			return rc;
	}
	e = &s->ents[s->n];
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	if (!e->name)
		return -ENOMEM;
	rc = nameidx_put(&s->ix, e->name, s->n);
	if (rc) {
		free(e->name);
		return rc;
	}
	fill(e, is_dir, size, mtime, etag);
	s->n++;
	return 0;
}

int dset_remove(struct dset *s, const char *name)
{
	uintptr_t i;
	char *gone;

	if (!nameidx_get(&s->ix, name, &i))
		return 0;
	gone = s->ents[i].name;
	nameidx_del(&s->ix, gone);
	if (i != s->n - 1) {
		/* The last entry fills the gap; its index entry follows it
		 * (same key string, new position: cannot fail, the name is
		 * already indexed). */
		s->ents[i] = s->ents[s->n - 1];
		nameidx_put(&s->ix, s->ents[i].name, i);
	}
	s->n--;
	free(gone);
	return 1;
}

void dset_free(struct dset *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->ents[i].name);
	free(s->ents);
	nameidx_free(&s->ix);
	s->ents = NULL;
	s->n = s->cap = 0;
}
