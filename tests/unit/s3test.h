/* s3test.h - what the C tests against real S3 servers share (header-only;
 * each test is one executable run once per backend by tests/meson.build).
 *
 * The backend is argv[1]: "s3rver" or "swift". Its coordinates come from
 * the variables tests/run.sh exports while `meson test` runs:
 *   s3rver: CUSTODYFS_TEST_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY, _REGION
 *   swift:  CUSTODYFS_TEST_SWIFT_ENDPOINT, _ACCESS_KEY, _SECRET_KEY
 * A backend without its variables is a TAP "1..0 # SKIP" (counted as
 * skipped) when nobody meant to start it, and a FAILED test when tests/run.sh
 * did: CUSTODYFS_TEST_EXPECT (a list of backends, if set) decides; without
 * it, run.sh's own rule is replayed: run.sh exported something for the C
 * tests (a CUSTODYFS_TEST_* server variable) and always starts s3rver, and
 * starts Swift when swift-proxy-server is installed and CUSTODYFS_BACKENDS
 * (default "s3rver swift") names it. */
#ifndef CUSTODYFS_S3TEST_H
#define CUSTODYFS_S3TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3.h"

struct s3test {
	const char *backend;
	struct s3_config cfg;
	struct s3_client *s3;
	char prefix[96]; /* unique per run: "ctest-<backend>-<pid>-<time>/" */
	const char *bucket;  /* recepcao-raw */
	const char *bucket2; /* storage-unique */
	/* What the server implements (s3rver: none of them). A test checks
	 * what the client does without a feature instead of skipping. */
	int mpu_etag;  /* multipart ETag "md5(part md5s)-N" (else MD5) */
	int mpu_abort; /* AbortMultipartUpload (s3rver: 405) */
	int part_copy; /* UploadPartCopy (s3rver: 501) */
};

static inline int s3test_word_in(const char *list, const char *word)
{
	size_t n = strlen(word);
	const char *p = list;

	while (p && (p = strstr(p, word)) != NULL) {
		if ((p == list || p[-1] == ' ' || p[-1] == ',') &&
		    (p[n] == '\0' || p[n] == ' ' || p[n] == ','))
			return 1;
		p += n;
	}
	return 0;
}

static inline int s3test_in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[4096];

	while (path && *path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
		if (access(buf, X_OK) == 0)
			return 1;
		path += n;
		if (*path == ':')
			path++;
	}
	return 0;
}

/* 1 when tests/run.sh meant this backend to be there. */
static inline int s3test_expected(const char *backend)
{
	const char *expect = getenv("CUSTODYFS_TEST_EXPECT");
	const char *backends = getenv("CUSTODYFS_BACKENDS");
	int run_sh = getenv("CUSTODYFS_TEST_PG") ||
		     getenv("CUSTODYFS_TEST_PG_CONNINFO") ||
		     getenv("CUSTODYFS_TEST_S3_ENDPOINT") ||
		     getenv("CUSTODYFS_TEST_SWIFT_ENDPOINT");

	if (expect)
		return s3test_word_in(expect, backend);
	if (!run_sh)
		return 0;
	if (!strcmp(backend, "s3rver"))
		return 1;
	return s3test_in_path("swift-proxy-server") &&
	       s3test_word_in(backends ? backends : "s3rver swift", "swift");
}

/* Fills t for argv[1]. Returns 1 to run the tests, or exits after printing
 * the TAP for a skip (0) or a failure (1). */
static inline int s3test_setup(struct s3test *t, int argc, char **argv)
{
	const char *ep, *ak, *sk, *region = NULL;
	int rc;

	memset(t, 0, sizeof(*t));
	t->backend = argc > 1 ? argv[1] : "";
	if (!strcmp(t->backend, "s3rver")) {
		ep = getenv("CUSTODYFS_TEST_S3_ENDPOINT");
		ak = getenv("CUSTODYFS_TEST_S3_ACCESS_KEY");
		sk = getenv("CUSTODYFS_TEST_S3_SECRET_KEY");
		region = getenv("CUSTODYFS_TEST_S3_REGION");
	} else if (!strcmp(t->backend, "swift")) {
		ep = getenv("CUSTODYFS_TEST_SWIFT_ENDPOINT");
		ak = getenv("CUSTODYFS_TEST_SWIFT_ACCESS_KEY");
		sk = getenv("CUSTODYFS_TEST_SWIFT_SECRET_KEY");
	} else {
		printf("1..1\nnot ok 1 - unknown backend '%s' (s3rver or "
		       "swift)\n",
		       t->backend);
		exit(1);
	}
	if (!ep || !*ep || !ak || !sk) {
		if (s3test_expected(t->backend)) {
			printf(
			    "1..1\nnot ok 1 - %s: tests/run.sh meant to start "
			    "it but its CUSTODYFS_TEST_* variables are "
			    "unset (did the server fail to start?)\n",
			    t->backend);
			exit(1);
		}
		printf("1..0 # SKIP no %s server (run through tests/run.sh)\n",
		       t->backend);
		exit(0);
	}
	t->cfg.endpoint = ep;
	t->cfg.access_key_id = ak;
	t->cfg.secret_access_key = sk;
	t->cfg.region = region && *region ? region : "us-east-1";
	t->cfg.path_style = 1;
	t->cfg.verify_tls = 1;
	t->cfg.max_retries = 2;
	t->cfg.retry_base_ms = 20;
	t->s3 = s3_client_new(&t->cfg);
	t->bucket = "recepcao-raw";
	t->mpu_etag = t->mpu_abort = t->part_copy =
	    strcmp(t->backend, "s3rver") != 0;
	t->bucket2 = "storage-unique";
	/* s3rver answers BucketAlreadyExists (-EEXIST) for its own */
	rc = t->s3 ? s3_create_bucket(t->s3, t->bucket) : -errno;
	if (!rc || rc == -EEXIST)
		rc = s3_create_bucket(t->s3, t->bucket2);
	if (rc == -EEXIST)
		rc = 0;
	if (rc) {
		printf("1..1\nnot ok 1 - %s at %s: client or buckets: %s\n",
		       t->backend, ep, strerror(-rc));
		exit(1);
	}
	snprintf(t->prefix, sizeof(t->prefix), "ctest-%s-%ld-%ld/", t->backend,
		 (long)getpid(), (long)time(NULL));
	return 1;
}

/* t->prefix + name, in a static ring of buffers (valid for a few calls). */
static inline const char *s3test_key(const struct s3test *t, const char *name)
{
	static char ring[8][512];
	static int next;
	char *k = ring[next++ % 8];

	snprintf(k, 512, "%s%s", t->prefix, name);
	return k;
}

/* The whole object, malloc'd (NULL + *len 0 when missing). */
static inline unsigned char *s3test_get(const struct s3test *t,
					const char *bucket, const char *key,
					size_t *len, int *err)
{
	struct s3_object_info info;
	unsigned char *buf;
	size_t got = 0;
	int rc;

	*len = 0;
	rc = s3_head(t->s3, bucket, key, &info);
	if (rc) {
		*err = rc;
		return NULL;
	}
	s3_object_info_free(&info);
	buf = malloc(info.size ? info.size : 1);
	if (!buf) {
		*err = -ENOMEM;
		return NULL;
	}
	rc = info.size
		 ? s3_get_range(t->s3, bucket, key, 0, info.size, buf, &got)
		 : 0;
	*err = rc;
	if (!rc && got != info.size)
		*err = -EIO;
	*len = got;
	return buf;
}

/* Deterministic bytes for offset off of a stream seeded by seed. */
static inline void s3test_fill(unsigned char *buf, size_t len, uint64_t off,
			       uint32_t seed)
{
	size_t i;

	for (i = 0; i < len; i++) {
		uint64_t x = (off + i) * 0x9E3779B97F4A7C15ULL ^ seed;

		x ^= x >> 29;
		x *= 0xBF58476D1CE4E5B9ULL;
		x ^= x >> 32;
		buf[i] = (unsigned char)x;
	}
}

/* SHA-256 of a file by an independent program (coreutils sha256sum). */
static inline int s3test_sha256sum(const char *path, char out[65])
{
	char cmd[4200];
	FILE *p;
	int ok;

	snprintf(cmd, sizeof(cmd), "sha256sum -- '%s'", path);
	p = popen(cmd, "r");
	if (!p)
		return -errno;
	ok = fscanf(p, "%64s", out) == 1 && strlen(out) == 64;
	return pclose(p) == 0 && ok ? 0 : -EIO;
}

#endif
