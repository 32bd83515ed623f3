/* hash.c - see hash.h. */
#include "hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>

void hex_encode(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int hash_init(struct hash_ctx *h)
{
	h->xxh = XXH3_createState();
	h->sha = EVP_MD_CTX_new();
	if (!h->xxh || !h->sha) {
		hash_free(h);
		return -ENOMEM;
	}
	hash_reset(h);
	return 0;
}

void hash_reset(struct hash_ctx *h)
{
	XXH3_128bits_reset(h->xxh);
	EVP_DigestInit_ex(h->sha, EVP_sha256(), NULL);
}

void hash_update(struct hash_ctx *h, const void *data, size_t len)
{
	XXH3_128bits_update(h->xxh, data, len);
	EVP_DigestUpdate(h->sha, data, len);
}

void hash_final(struct hash_ctx *h, char xxh_hex[HASH_XXH128_HEX],
		char sha_hex[HASH_SHA256_HEX])
{
	XXH128_hash_t x = XXH3_128bits_digest(h->xxh);
	XXH128_canonical_t canon;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	XXH128_canonicalFromHash(&canon, x);
	hex_encode(canon.digest, sizeof(canon.digest), xxh_hex);
	EVP_DigestFinal_ex(h->sha, md, &mdlen);
	hex_encode(md, mdlen, sha_hex);
}

void hash_free(struct hash_ctx *h)
{
	if (h->xxh)
		XXH3_freeState(h->xxh);
	if (h->sha)
		EVP_MD_CTX_free(h->sha);
	h->xxh = NULL;
	h->sha = NULL;
}

void *sha256_new(void)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	if (c)
		EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	return c;
}

void sha256_update(void *ctx, const void *data, size_t len)
{
	EVP_DigestUpdate(ctx, data, len);
}

void sha256_final_hex(void *ctx, char out[HASH_SHA256_HEX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	EVP_DigestFinal_ex(ctx, md, &mdlen);
	hex_encode(md, mdlen, out);
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
}

void sha256_free(void *ctx)
{
	if (ctx)
		EVP_MD_CTX_free(ctx);
}

void sha256_hex(const void *data, size_t len, char out[HASH_SHA256_HEX])
{
	unsigned char md[32];

	EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL);
	hex_encode(md, 32, out);
}

void hmac_sha256(const void *key, size_t key_len, const void *data,
		 size_t data_len, unsigned char out[32])
{
	unsigned int len = 32;

	HMAC(EVP_sha256(), key, (int)key_len, data, data_len, out, &len);
}

int hash_fd(int fd, char xxh_hex[HASH_XXH128_HEX],
	    char sha_hex[HASH_SHA256_HEX], unsigned long long *size_out)
{
	struct hash_ctx h;
	unsigned long long total = 0;
	size_t bufsz = 1 << 20;
	char *buf;
	int rc;

	rc = hash_init(&h);
	if (rc)
		return rc;
	buf = malloc(bufsz);
	if (!buf) {
		rc = -ENOMEM;
		goto fail;
	}
	for (;;) {
		ssize_t n = pread(fd, buf, bufsz, (off_t)total);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		hash_update(&h, buf, (size_t)n);
		total += (unsigned long long)n;
	}
	hash_final(&h, xxh_hex, sha_hex);
	if (size_out)
		*size_out = total;
	rc = 0;
fail:
	free(buf);
	hash_free(&h);
	return rc;
}
