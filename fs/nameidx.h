/* nameidx.h - an index from names (NUL-terminated strings) to values.
 *
 * Open addressing with linear probing and backward-shift deletion, keyed by
 * a seeded 64-bit hash (XXH3; the seed is random per process, so names an
 * uploader chooses cannot be made to collide on purpose). Lookup, insert and
 * removal are O(1) on average, whatever the number of names.
 *
 * The index does not own the names: the caller keeps each indexed string
 * alive and unchanged while it is in the index (nameidx_put stores the
 * pointer it is given). Not thread-safe: the caller's lock protects it. */
#ifndef CUSTODYFS_NAMEIDX_H
#define CUSTODYFS_NAMEIDX_H

#include <stddef.h>
#include <stdint.h>

struct nameidx_slot {
	const char *key; /* NULL: empty slot */
	uint64_t hash;
	uintptr_t val;
};

struct nameidx {
	struct nameidx_slot *slots;
	size_t cap; /* 0 or a power of two */
	size_t n;   /* names indexed */
};

#define NAMEIDX_INIT                                                           \
	{                                                                      \
		NULL, 0, 0                                                     \
	}

/* Releases the slots (not the names); the index is empty and usable again. */
void nameidx_free(struct nameidx *ix);

/* 1 and *val (may be NULL) when name is indexed, else 0. */
int nameidx_get(const struct nameidx *ix, const char *name, uintptr_t *val);

/* Indexes name -> val. An existing entry for an equal name is replaced:
 * both its value and its key pointer (which becomes `name`). 0 or -ENOMEM
 * (the index is unchanged then). */
int nameidx_put(struct nameidx *ix, const char *name, uintptr_t val);

/* Removes name: 1 when it was indexed, 0 when not. Call it before freeing
 * the indexed string. */
int nameidx_del(struct nameidx *ix, const char *name);

/* Makes room for n names without growing again. 0 or -ENOMEM. */
int nameidx_reserve(struct nameidx *ix, size_t n);

#endif
