/* hash.h - streaming content hashes: XXH3-128 and SHA-256 in one pass.
 *
 * A hash_ctx is caller-owned; hash_init() allocates the internal states,
 * hash_free() releases them (safe on a zeroed or already-freed ctx). */
#ifndef CUSTODYFS_HASH_H
#define CUSTODYFS_HASH_H

#include <stddef.h>

#define HASH_XXH128_HEX 33 /* 32 hex digits + NUL */
#define HASH_SHA256_HEX 65 /* 64 hex digits + NUL */

/* SHA-256 of the empty string, the payload hash of bodiless requests. */
#define HASH_SHA256_EMPTY \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct hash_ctx {
	void *xxh; /* XXH3_state_t * */
	void *sha; /* EVP_MD_CTX * */
};

/* Returns 0 or -ENOMEM. */
int hash_init(struct hash_ctx *h);
void hash_update(struct hash_ctx *h, const void *data, size_t len);
/* Writes lowercase hex digests; the ctx must be re-initialised (hash_reset)
 * before further use. */
void hash_final(struct hash_ctx *h, char xxh_hex[HASH_XXH128_HEX],
		char sha_hex[HASH_SHA256_HEX]);
/* Starts over without reallocating. */
void hash_reset(struct hash_ctx *h);
void hash_free(struct hash_ctx *h);

/* Streaming SHA-256 alone (per-part payload hashes). Returns NULL on OOM. */
void *sha256_new(void);
void sha256_update(void *ctx, const void *data, size_t len);
/* Finishes, writes hex and resets ctx for reuse. */
void sha256_final_hex(void *ctx, char out[HASH_SHA256_HEX]);
void sha256_free(void *ctx);

/* One-shot helpers. */
void sha256_hex(const void *data, size_t len, char out[HASH_SHA256_HEX]);
void hmac_sha256(const void *key, size_t key_len, const void *data,
		 size_t data_len, unsigned char out[32]);
void hex_encode(const unsigned char *in, size_t len, char *out);

/* Hashes a whole file from fd (pread from offset 0 to EOF).
 * Returns 0 or -errno; *size_out gets the byte count. */
int hash_fd(int fd, char xxh_hex[HASH_XXH128_HEX],
	    char sha_hex[HASH_SHA256_HEX], unsigned long long *size_out);

#endif
