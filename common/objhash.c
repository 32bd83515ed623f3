/* objhash.c - the hashes of a stored object from its bytes; see objhash.h. */
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "objhash.h"

int objhash_compute(struct s3_client *c, const char *bucket, const char *key,
		    const char *etag, uint64_t size, size_t chunk,
		    int (*stop)(void *arg), void *arg,
		    char xxh[HASH_XXH128_HEX], char sha[HASH_SHA256_HEX])
{
	struct hash_ctx h;
	uint64_t off = 0;
	char *buf;
	int rc;

	rc = hash_init(&h);
	if (rc)
		return rc;
	buf = malloc(chunk);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	/* To the end of the object, not just to the size HEAD gave: bytes
	 * that differ from what was described fail. */
	for (;;) {
		size_t got = 0;

		if (stop && stop(arg)) {
			rc = -ECANCELED;
			goto out;
		}
		rc = s3_get_range_if(c, bucket, key, off, chunk, etag, buf,
				     &got);
		if (rc == -EEXIST || rc == -ENOENT)
			rc = -ESTALE; /* 412: another ETag now; or gone */
		if (rc)
			goto out;
		hash_update(&h, buf, got);
		off += got;
		if (got < chunk)
			break;
	}
	if (off != size) {
		log_warn("%s/%s: read %llu bytes, its HEAD said %llu", bucket,
			 key, (unsigned long long)off,
			 (unsigned long long)size);
		rc = -EIO; /* changed under us, or a store that lies */
		goto out;
	}
	hash_final(&h, xxh, sha);
out:
	free(buf);
	hash_free(&h);
	return rc;
}
