/* test_upload.c - the upload path (common/upload.c) against a real S3
 * server: test_upload s3rver|swift (see s3test.h).
 *
 * Each test writes a spool file the way fs/ofile.c does (pwrite to the
 * spool, then upload_write with the same bytes), finishes, and checks with
 * independent means: the object (GET) equals the spool byte for byte,
 * res.sha256 equals coreutils sha256sum of the spool, res.xxh128 equals a
 * one-shot XXH3-128 of it. Which path ran is visible in the object: a
 * streamed multipart object has a "-N" ETag and no hash metadata (the
 * audit row is the hashes' record; nothing copies the object onto itself
 * to add them); a single PUT or a re-upload from the spool carries them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "hash.h"
#include "s3.h"
#include "s3test.h"
#include "upload.h"

#define MIB (1024u * 1024u)
#define PART (5 * MIB) /* the smallest part size S3 allows */

static struct s3test T;
static struct upload_pool *pool;
static char spool_dir[] = "/tmp/custodyfs-ctest-upload-XXXXXX";

struct spool {
	char path[512];
	int fd;
	struct upload *u;
	const char *key;
};

static void spool_open(struct spool *s, const char *name)
{
	static int n;

	snprintf(s->path, sizeof(s->path), "%s/spool%d", spool_dir, n++);
	s->fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(s->fd >= 0);
	s->key = strdup(s3test_key(&T, name));
	s->u = upload_new(pool, T.s3, T.bucket, s->key, s->fd, PART);
	assert_non_null(s->u);
}

static void spool_close(struct spool *s)
{
	upload_free(s->u);
	close(s->fd);
	unlink(s->path);
	free((char *)s->key);
}

/* Writes len bytes of pattern `seed` at off, as a FUSE write would: spool
 * first, then the upload, in chunks of `chunk` bytes. */
static void spool_write(struct spool *s, uint64_t off, size_t len,
			uint32_t seed, size_t chunk)
{
	unsigned char *buf = malloc(chunk);
	size_t done = 0;

	assert_non_null(buf);
	while (done < len) {
		size_t n = len - done < chunk ? len - done : chunk;

		s3test_fill(buf, n, off + done, seed);
		assert_int_equal(pwrite(s->fd, buf, n, (off_t)(off + done)),
				 (ssize_t)n);
		/* a part error is reported but the upload recovers at finish */
		(void)upload_write(s->u, buf, n, (off_t)(off + done));
		done += n;
	}
	free(buf);
}

static uint64_t spool_size(const struct spool *s)
{
	struct stat st;

	assert_int_equal(fstat(s->fd, &st), 0);
	return (uint64_t)st.st_size;
}

/* Checks the object against the spool and res against independent hashes.
 * want_parts: 0 = single PUT, N = multipart of N parts. want_meta: the
 * object carries xxh128/sha256 metadata equal to res. */
static void check_object(const struct spool *s, const struct upload_result *res,
			 int want_parts, int want_meta)
{
	uint64_t size = spool_size(s);
	unsigned char *want = malloc(size ? size : 1), *obj;
	struct s3_object_info info;
	XXH128_canonical_t canon;
	char sha[65], xxh[HASH_XXH128_HEX], suffix[16];
	const char *dash;
	size_t got;
	int err;

	assert_non_null(want);
	assert_int_equal(pread(s->fd, want, size, 0), (ssize_t)size);
	assert_int_equal(res->size, size);
	assert_int_equal(s3test_sha256sum(s->path, sha), 0);
	assert_string_equal(res->sha256, sha);
	XXH128_canonicalFromHash(&canon, XXH3_128bits(want, size));
	hex_encode(canon.digest, sizeof(canon.digest), xxh);
	assert_string_equal(res->xxh128, xxh);

	obj = s3test_get(&T, T.bucket, s->key, &got, &err);
	assert_int_equal(err, 0);
	assert_int_equal(got, size);
	if (size)
		assert_memory_equal(obj, want, size);
	free(obj);
	free(want);

	assert_int_equal(s3_head(T.s3, T.bucket, s->key, &info), 0);
	assert_string_equal(info.etag, res->etag);
	dash = strchr(info.etag, '-');
	if (want_parts && !T.mpu_etag) {
		/* s3rver: the MD5 of the whole object, whatever the parts */
		assert_null(dash);
	} else if (want_parts) {
		snprintf(suffix, sizeof(suffix), "-%d", want_parts);
		assert_non_null(dash);
		assert_string_equal(dash, suffix);
	} else {
		assert_null(dash);
	}
	/* Whatever the route, the object carries the version's tag. */
	assert_int_equal(strlen(res->tag), UPLOAD_TAG_HEX - 1);
	assert_int_equal(strspn(res->tag, "0123456789abcdef"), UPLOAD_TAG_HEX - 1);
	assert_non_null(s3_meta_get(&info, UPLOAD_TAG));
	assert_string_equal(s3_meta_get(&info, UPLOAD_TAG), res->tag);
	if (want_meta) {
		assert_non_null(s3_meta_get(&info, "sha256"));
		assert_string_equal(s3_meta_get(&info, "sha256"), sha);
		assert_non_null(s3_meta_get(&info, "xxh128"));
		assert_string_equal(s3_meta_get(&info, "xxh128"), xxh);
	} else {
		assert_null(s3_meta_get(&info, "sha256"));
		assert_null(s3_meta_get(&info, "xxh128"));
	}
	s3_object_info_free(&info);
}

static const struct s3_kv mtime_meta = {(char *)"mtime", (char *)"1234"};

/* A small file: one PUT carrying the metadata and the hashes. */
static void test_single_put(void **state)
{
	struct upload_result res;
	struct s3_object_info info;
	struct spool s;

	(void)state;
	spool_open(&s, "single.bin");
	spool_write(&s, 0, 300000, 1, 4096);
	assert_int_equal(upload_finish(s.u, 300000, &mtime_meta, 1, &res), 0);
	check_object(&s, &res, 0, 1);
	assert_int_equal(s3_head(T.s3, T.bucket, s.key, &info), 0);
	assert_string_equal(s3_meta_get(&info, "mtime"), "1234");
	s3_object_info_free(&info);
	spool_close(&s);
}

/* Sequential writes over several parts: the parts go up while the file is
 * written and close completes the upload. No hash metadata: the object is
 * never copied onto itself to add it. */
static void test_streamed_multipart(void **state)
{
	struct upload_result res;
	struct spool s;
	uint64_t size = 2 * PART + 777777;

	(void)state;
	spool_open(&s, "streamed.bin");
	spool_write(&s, 0, size, 2, 131072);
	assert_int_equal(upload_finish(s.u, size, &mtime_meta, 1, &res), 0);
	check_object(&s, &res, 3, 0);
	spool_close(&s);
}

/* A write that is not an append breaks the stream: finish hashes the spool
 * and uploads it again, with the hashes given at CreateMultipartUpload. */
static void test_random_write_fallback(void **state)
{
	struct upload_result res;
	struct spool s;
	uint64_t size = 2 * PART + 4096;

	(void)state;
	spool_open(&s, "random.bin");
	spool_write(&s, 0, size, 3, 65536);
	spool_write(&s, MIB + 3, 10000, 99, 4096); /* rewrite inside part 1 */
	spool_write(&s, size + 100, 50, 98, 4096); /* and a hole at the end */
	assert_int_equal(upload_finish(s.u, spool_size(&s), NULL, 0, &res), 0);
	check_object(&s, &res, 3, 1);
	spool_close(&s);
}

/* Truncate to 0 mid-stream (O_TRUNC on a file being written): the parts
 * already sent are dropped and the new content streams from offset 0. */
static void test_truncate_restart(void **state)
{
	struct upload_result res;
	struct spool s;
	uint64_t size = 2 * PART + 1;

	(void)state;
	spool_open(&s, "restart.bin");
	spool_write(&s, 0, PART + MIB, 4, 65536); /* one part sent */
	assert_int_equal(ftruncate(s.fd, 0), 0);
	upload_restart(s.u);
	spool_write(&s, 0, size, 5, 65536);
	assert_int_equal(upload_finish(s.u, size, NULL, 0, &res), 0);
	check_object(&s, &res, 3, 0);
	spool_close(&s);
}

/* `echo x > f` and `dd` close a first descriptor before writing: an empty
 * version is committed. The real content written next must still stream
 * (a streamed multipart object, no hash metadata), not be turned into a
 * re-upload from the spool for the rest of the file's life. */
static void test_stream_after_empty_commit(void **state)
{
	struct upload_result res;
	struct spool s;
	uint64_t size = 2 * PART + 12345;

	(void)state;
	spool_open(&s, "after-empty.bin");
	assert_int_equal(upload_finish(s.u, 0, &mtime_meta, 1, &res), 0);
	check_object(&s, &res, 0, 1);
	spool_write(&s, 0, size, 6, 131072);
	assert_int_equal(upload_finish(s.u, size, &mtime_meta, 1, &res), 0);
	check_object(&s, &res, 3, 0);
	/* and a truncate to 0 of that committed file streams again too */
	assert_int_equal(ftruncate(s.fd, 0), 0);
	upload_restart(s.u);
	spool_write(&s, 0, PART + 3, 7, 65536);
	assert_int_equal(upload_finish(s.u, PART + 3, NULL, 0, &res), 0);
	check_object(&s, &res, 2, 0);
	spool_close(&s);
}

/* After a non-empty version, an append (a log file, fsync then more
 * writes) gives a correct object holding both (from the spool). */
static void test_append_after_commit(void **state)
{
	struct upload_result res;
	struct spool s;

	(void)state;
	spool_open(&s, "append.bin");
	spool_write(&s, 0, 100000, 8, 4096);
	assert_int_equal(upload_finish(s.u, 100000, NULL, 0, &res), 0);
	check_object(&s, &res, 0, 1);
	spool_write(&s, 100000, PART + 200000, 9, 65536);
	assert_int_equal(upload_finish(s.u, PART + 300000, NULL, 0, &res), 0);
	check_object(&s, &res, 2, 1);
	spool_close(&s);
}

/* A rename before close moves the upload to the new key; the multipart
 * upload begun under the old one is dropped, not completed there. */
static void test_set_key_mid_stream(void **state)
{
	struct upload_result res;
	struct s3_object_info info;
	struct spool s;
	const char *old;
	uint64_t size = PART + MIB;

	(void)state;
	spool_open(&s, "old-name.part");
	old = strdup(s.key);
	spool_write(&s, 0, size, 10, 65536);
	free((char *)s.key);
	s.key = strdup(s3test_key(&T, "new-name.bin"));
	assert_int_equal(upload_set_key(s.u, s.key), 0);
	spool_write(&s, size, 1000, 10, 4096);
	assert_int_equal(upload_finish(s.u, size + 1000, NULL, 0, &res), 0);
	check_object(&s, &res, 2, 1);
	assert_int_equal(s3_head(T.s3, T.bucket, old, &info), -ENOENT);
	free((char *)old);
	spool_close(&s);
}

/* A failed finish (the bucket is gone) reports the error and leaves no
 * object; a later finish to a good bucket uploads everything. */
static void test_failure_then_retry(void **state)
{
	struct upload_result res;
	struct spool s;
	struct upload *bad;
	uint64_t size = PART + 10;

	(void)state;
	spool_open(&s, "retry.bin");
	bad = upload_new(pool, T.s3, "custodyfs-no-such-bucket", s.key, s.fd,
			 PART);
	assert_non_null(bad);
	upload_free(s.u);
	s.u = bad;
	spool_write(&s, 0, size, 11, 65536);
	assert_int_not_equal(upload_finish(s.u, size, NULL, 0, &res), 0);
	upload_free(s.u);
	s.u = upload_new(pool, T.s3, T.bucket, s.key, s.fd, PART);
	assert_non_null(s.u);
	upload_invalidate(s.u); /* the spool is there, the stream is not */
	assert_int_equal(upload_finish(s.u, size, NULL, 0, &res), 0);
	check_object(&s, &res, 2, 1);
	spool_close(&s);
}

/* upload_result.sent: set once the request that makes the object (the PUT
 * or the completion) went out, and only then: a failure before it leaves
 * nothing of the upload at the key (review-W: never claimed by its bytes). */
static void test_sent(void **state)
{
	struct upload_result res;
	struct upload *u;
	struct spool s;
	int fd;

	(void)state;
	spool_open(&s, "sent.bin");
	spool_write(&s, 0, 1000, 12, 4096);
	assert_int_equal(upload_finish(s.u, 1000, NULL, 0, &res), 0);
	assert_int_equal(res.sent, 1);
	/* Refused by the store (no such bucket): it went out. */
	u = upload_new(pool, T.s3, "custodyfs-no-such-bucket", s.key, s.fd,
		       PART);
	assert_non_null(u);
	upload_invalidate(u);
	assert_int_not_equal(upload_finish(u, 1000, NULL, 0, &res), 0);
	assert_int_equal(res.sent, 1);
	upload_free(u);
	/* A spool shorter than the size asked: nothing sent. */
	u = upload_new(pool, T.s3, T.bucket, s.key, s.fd, PART);
	assert_non_null(u);
	upload_invalidate(u);
	assert_int_not_equal(upload_finish(u, 5000, NULL, 0, &res), 0);
	assert_int_equal(res.sent, 0);
	upload_free(u);
	/* A spool that cannot be read: nothing sent. */
	fd = dup(s.fd);
	assert_true(fd >= 0);
	u = upload_new(pool, T.s3, T.bucket, s.key, fd, PART);
	assert_non_null(u);
	upload_invalidate(u);
	close(fd);
	assert_int_not_equal(upload_finish(u, 1000, NULL, 0, &res), 0);
	assert_int_equal(res.sent, 0);
	upload_free(u);
	spool_close(&s);
}

/* Each version of a file gets its own tag: a later upload of the same bytes
 * is not the earlier one. */
static void test_tag_per_version(void **state)
{
	struct upload_result r1, r2;
	struct spool s;

	(void)state;
	spool_open(&s, "tags.bin");
	spool_write(&s, 0, 5000, 7, 4096);
	assert_int_equal(upload_finish(s.u, 5000, NULL, 0, &r1), 0);
	check_object(&s, &r1, 0, 1);
	assert_int_equal(upload_finish(s.u, 5000, NULL, 0, &r2), 0);
	check_object(&s, &r2, 0, 1);
	assert_string_equal(r1.etag, r2.etag);
	assert_string_not_equal(r1.tag, r2.tag);
	spool_close(&s);
}

/* A failed assertion leaves its spool file behind: remove them all. */
static void spool_cleanup(void)
{
	DIR *d = opendir(spool_dir);
	struct dirent *e;

	while (d && (e = readdir(d)) != NULL)
		if (!strncmp(e->d_name, "spool", 5))
			unlinkat(dirfd(d), e->d_name, 0);
	if (d)
		closedir(d);
	rmdir(spool_dir);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_put),
	    cmocka_unit_test(test_streamed_multipart),
	    cmocka_unit_test(test_random_write_fallback),
	    cmocka_unit_test(test_truncate_restart),
	    cmocka_unit_test(test_stream_after_empty_commit),
	    cmocka_unit_test(test_append_after_commit),
	    cmocka_unit_test(test_set_key_mid_stream),
	    cmocka_unit_test(test_failure_then_retry),
	    cmocka_unit_test(test_sent),
	    cmocka_unit_test(test_tag_per_version),
	};
	int rc;

	s3test_setup(&T, argc, argv);
	if (!mkdtemp(spool_dir)) {
		printf("1..1\nnot ok 1 - mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	pool = upload_pool_new(3);
	if (!pool) {
		printf("1..1\nnot ok 1 - upload_pool_new\n");
		return 1;
	}
	rc = cmocka_run_group_tests_name("upload", tests, NULL, NULL);
	upload_pool_free(pool);
	s3_client_free(T.s3);
	spool_cleanup();
	return rc;
}
