/* fpset.h - a set of non-zero 64-bit fingerprints (open addressing,
 * backward-shift deletion), used by the reception pipeline to remember
 * which (key, ETag) pairs are known to be logged. Not thread-safe: the
 * caller locks. A zeroed struct fpset is an empty set. */
#ifndef CUSTODYFS_FPSET_H
#define CUSTODYFS_FPSET_H

#include <stddef.h>
#include <stdint.h>

struct fpset {
	uint64_t *slots; /* 0 = empty */
	size_t cap, n;
};

/* 1 when fp (non-zero) is in s. */
int fpset_has(const struct fpset *s, uint64_t fp);
/* Adds fp (non-zero). Past max entries the set forgets everything first
 * (a forgotten fingerprint only costs the caller a check elsewhere); on
 * ENOMEM while growing, fp is not added. */
void fpset_add(struct fpset *s, uint64_t fp, size_t max);
/* Removes fp if present. */
void fpset_del(struct fpset *s, uint64_t fp);
/* Frees the slots; s is empty again. */
void fpset_free(struct fpset *s);

#endif
