/* dset.h - the entries of one directory listing, indexed by name.
 *
 * An array of entries (in listing order until the first removal, which
 * moves the last entry into the gap) and a nameidx from name to position,
 * so finding, adding, updating and removing a name cost O(1) on average
 * however large the directory. The set owns its entries and their names.
 * Not thread-safe: the caller's lock protects it. */
#ifndef CUSTODYFS_DSET_H
#define CUSTODYFS_DSET_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "nameidx.h"

/* One entry of a listing of the reception bucket. */
struct dentry {
	char *name; /* the last path component */
	int is_dir;
	uint64_t size;
	time_t mtime;
	char etag[80];
};

struct dset {
	struct dentry *ents; /* [0, n) */
	size_t n, cap;
	struct nameidx ix; /* name -> position in ents */
};

#define DSET_INIT                                                              \
	{                                                                      \
		NULL, 0, 0, NAMEIDX_INIT                                       \
	}

/* The entry named name, or NULL. Valid until the set next changes. */
struct dentry *dset_find(const struct dset *s, const char *name);

/* Adds name, or updates the entry already named so (is_dir, size, mtime,
 * etag; etag NULL means ""). 0 or -ENOMEM (the set is unchanged then). */
int dset_set(struct dset *s, const char *name, int is_dir, uint64_t size,
	     time_t mtime, const char *etag);

/* Removes name: 1 if it was there, 0 if not. */
int dset_remove(struct dset *s, const char *name);

/* Makes room for n entries. 0 or -ENOMEM. */
int dset_reserve(struct dset *s, size_t n);

/* Frees every entry; the set is empty and usable again. */
void dset_free(struct dset *s);

#endif
