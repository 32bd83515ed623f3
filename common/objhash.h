/* objhash.h - the hashes of a stored object, computed from its bytes.
 * Used by reception (a foreign upload's row) and promotion (an object with
 * no row of ours): a hash is only ever one this system computed. */
#ifndef CUSTODYFS_OBJHASH_H
#define CUSTODYFS_OBJHASH_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"
#include "s3.h"

/* Reads object (bucket, key) of ETag etag to its end, chunk bytes at a
 * time, each ranged GET with If-Match: etag so the hashes are of one
 * upload, never of a mix of two; fills xxh and sha (hex, NUL-terminated).
 * stop, when not NULL, is asked before each chunk (nonzero: give up). The
 * caller owns everything; nothing is kept. Returns 0; -ESTALE when the
 * object changed or vanished meanwhile; -EIO when its length is not size
 * (logged); -ECANCELED when stop said so; -ENOMEM; or the store's -errno. */
int objhash_compute(struct s3_client *c, const char *bucket, const char *key,
		    const char *etag, uint64_t size, size_t chunk,
		    int (*stop)(void *arg), void *arg,
		    char xxh[HASH_XXH128_HEX], char sha[HASH_SHA256_HEX]);

#endif
