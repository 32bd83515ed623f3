/* test_s3.c - the S3 client (common/s3.c, s3_multipart.c) against a real
 * server, and against a fake local HTTP server for what a real one will not
 * do on demand (a "200 OK" whose body is <Error>).
 *
 *   test_s3 s3rver|swift   real server (see s3test.h; Swift's s3api
 *                          verifies SigV4 signatures)
 *   test_s3 local          the fake server only (always runs)
 *
 * Contents are checked byte for byte, hashes against independent code. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "hash.h"
#include "s3.h"
#include "s3test.h"

static struct s3test T;

#define MIB (1024u * 1024u)

/* A temp file holding len bytes of s3test_fill(seed); returns the fd. */
static int tmpfile_with(size_t len, uint32_t seed, unsigned char **copy)
{
	char path[] = "/tmp/custodyfs-ctest-XXXXXX";
	unsigned char *buf = malloc(len ? len : 1);
	int fd = mkstemp(path);

	assert_non_null(buf);
	assert_true(fd >= 0);
	unlink(path);
	s3test_fill(buf, len, 0, seed);
	assert_int_equal(pwrite(fd, buf, len, 0), (ssize_t)len);
	if (copy)
		*copy = buf;
	else
		free(buf);
	return fd;
}

static void md5_hex(const void *p, size_t n, char out[33])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl = 0;

	assert_int_equal(EVP_Digest(p, n, d, &dl, EVP_md5(), NULL), 1);
	hex_encode(d, dl, out);
}

static void assert_object_is(const char *bucket, const char *key,
			     const unsigned char *want, size_t len)
{
	size_t got;
	int err;
	unsigned char *obj = s3test_get(&T, bucket, key, &got, &err);

	assert_int_equal(err, 0);
	assert_int_equal(got, len);
	if (len)
		assert_memory_equal(obj, want, len);
	free(obj);
}

/* ---- objects ---------------------------------------------------------- */

static void test_put_head_get(void **state)
{
	static const char body[] = "custody: hello, world\n";
	const char *key = s3test_key(&T, "dir/relatório final 100%+x.txt");
	struct s3_kv meta[] = {
	    {(char *)"mtime", (char *)"1700000000"},
	    {(char *)"Origin", (char *)"scanner #3 (a=b; c)"},
	};
	struct s3_object_info info;
	char etag[80], md5[33], buf[64];
	size_t got;
	int fd;
	uint64_t size;

	(void)state;
	assert_int_equal(s3_put_buf(T.s3, T.bucket, key, body, sizeof(body) - 1,
				    meta, 2, etag),
			 0);
	md5_hex(body, sizeof(body) - 1, md5);
	assert_string_equal(etag, md5);

	assert_int_equal(s3_head(T.s3, T.bucket, key, &info), 0);
	assert_int_equal(info.size, sizeof(body) - 1);
	assert_string_equal(info.etag, md5);
	assert_true(info.mtime > 0);
	assert_non_null(s3_meta_get(&info, "mtime"));
	assert_string_equal(s3_meta_get(&info, "mtime"), "1700000000");
	/* names are sent and read back lowercase */
	assert_non_null(s3_meta_get(&info, "origin"));
	assert_string_equal(s3_meta_get(&info, "origin"),
			    "scanner #3 (a=b; c)");
	s3_object_info_free(&info);

	/* whole, middle, tail (short), past the end (0) */
	assert_int_equal(
	    s3_get_range(T.s3, T.bucket, key, 0, sizeof(buf), buf, &got), 0);
	assert_int_equal(got, sizeof(body) - 1);
	assert_memory_equal(buf, body, got);
	assert_int_equal(s3_get_range(T.s3, T.bucket, key, 9, 5, buf, &got), 0);
	assert_int_equal(got, 5);
	assert_memory_equal(buf, body + 9, 5);
	assert_int_equal(s3_get_range(T.s3, T.bucket, key, 15, 100, buf, &got),
			 0);
	assert_int_equal(got, sizeof(body) - 1 - 15);
	assert_memory_equal(buf, body + 15, got);
	assert_int_equal(s3_get_range(T.s3, T.bucket, key, 1000, 10, buf, &got),
			 0);
	assert_int_equal(got, 0);

	fd = tmpfile_with(0, 0, NULL);
	assert_int_equal(s3_get_to_fd(T.s3, T.bucket, key, fd, &size), 0);
	assert_int_equal(size, sizeof(body) - 1);
	assert_int_equal(pread(fd, buf, sizeof(buf), 0), (ssize_t)size);
	assert_memory_equal(buf, body, size);
	close(fd);

	/* missing key: -ENOENT for HEAD and GET */
	assert_int_equal(s3_head(T.s3, T.bucket, s3test_key(&T, "nope"), &info),
			 -ENOENT);
	assert_int_equal(s3_get_range(T.s3, T.bucket, s3test_key(&T, "nope"), 0,
				      4, buf, &got),
			 -ENOENT);
}

/* Metadata values beyond ASCII travel RFC 2047-encoded and come back as
 * they were given; values a header cannot carry are refused before
 * anything is sent. */
static void test_meta_non_ascii(void **state)
{
	const char *key = s3test_key(&T, "meta-utf8");
	const char *bad = s3test_key(&T, "meta-bad");
	static const char *const values[] = {
	    "relatório – ação",
	    "日本語のファイル",
	    "=?UTF-8?B?not-base64?=",
	    "  padded  ",
	};
	struct s3_kv meta[4], badmeta = {(char *)"x", (char *)"line\nbreak"};
	struct s3_kv badutf = {(char *)"x", (char *)"bad\xff"};
	struct s3_object_info info;
	size_t i;

	(void)state;
	for (i = 0; i < 4; i++) {
		meta[i].name = (char *[]){"a", "b", "c", "d"}[i];
		meta[i].value = (char *)values[i];
	}
	assert_int_equal(s3_put_buf(T.s3, T.bucket, key, "x", 1, meta, 4, NULL),
			 0);
	assert_int_equal(s3_head(T.s3, T.bucket, key, &info), 0);
	assert_string_equal(s3_meta_get(&info, "a"), values[0]);
	assert_string_equal(s3_meta_get(&info, "b"), values[1]);
	assert_string_equal(s3_meta_get(&info, "c"), values[2]);
	assert_string_equal(s3_meta_get(&info, "d"), values[3]);
	/* each comes back as it was sent: a copy may send it again */
	assert_int_equal(info.meta_inexact, 0);
	assert_int_equal(info.n_hdrs, 0);
	s3_object_info_free(&info);
	/* "x-amz-meta-" + name + the value as sent: "=?UTF-8?B?" + 4 per 3
	 * bytes + "?=" where a word is needed (review N4) */
	assert_int_equal(s3_meta_size(meta + 3, 1), 11 + 1 + 12 + 4 * 4);
	meta[3].value = (char *)"plain";
	assert_int_equal(s3_meta_size(meta + 3, 1), 11 + 1 + 5);
	assert_int_equal(s3_meta_size(meta, 0), 0);

	assert_int_equal(
	    s3_put_buf(T.s3, T.bucket, bad, "x", 1, &badmeta, 1, NULL),
	    -EINVAL);
	assert_int_equal(
	    s3_put_buf(T.s3, T.bucket, bad, "x", 1, &badutf, 1, NULL), -EINVAL);
	assert_int_equal(s3_head(T.s3, T.bucket, bad, &info), -ENOENT);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Seven objects listed 3 per page: every key exactly once, in order, the
 * tokens followed; with a delimiter, the subdirectory is a prefix; keys
 * that need URL encoding come back decoded. */
static void test_list_pages(void **state)
{
	static const char *const names[] = {
	    "list/a+b.txt", "list/b 100%.txt", "list/c&d<e>.txt",
	    "list/d/inner", "list/e/f/g",      "list/ã.txt",
	    "list/z",
	};
	char *want[7];
	struct s3_list_result r = {0}, d = {0};
	char *token = NULL;
	size_t i, pages = 0;
	const char *prefix = s3test_key(&T, "list/");
	char pfx[512];

	(void)state;
	snprintf(pfx, sizeof(pfx), "%s", prefix);
	for (i = 0; i < 7; i++) {
		want[i] = strdup(s3test_key(&T, names[i]));
		assert_int_equal(
		    s3_put_buf(T.s3, T.bucket, want[i], "x", 1, NULL, 0, NULL),
		    0);
	}
	qsort(want, 7, sizeof(want[0]), cmp_str);
	for (;;) {
		size_t before = r.n_entries;

		assert_true(pages < 10);
		assert_int_equal(
		    s3_list_page(T.s3, T.bucket, pfx, NULL, token, 3, &r), 0);
		pages++;
		assert_true(r.n_entries - before <= 3);
		free(token);
		token = r.next_token ? strdup(r.next_token) : NULL;
		if (!r.truncated)
			break;
		assert_non_null(token);
	}
	free(token);
	assert_int_equal(pages, 3);
	assert_int_equal(r.n_entries, 7);
	for (i = 0; i < 7; i++) {
		assert_string_equal(r.entries[i].key, want[i]);
		assert_int_equal(r.entries[i].size, 1);
	}
	s3xml_list_free(&r);

	/* bounded s3_list_all stops and says so */
	memset(&r, 0, sizeof(r));
	assert_int_equal(s3_list_all(T.s3, T.bucket, pfx, NULL, 5, &r), 0);
	assert_int_equal(r.n_entries, 5);
	assert_int_equal(r.truncated, 1);
	s3xml_list_free(&r);

	assert_int_equal(s3_list_all(T.s3, T.bucket, pfx, "/", 0, &d), 0);
	assert_int_equal(d.truncated, 0);
	assert_int_equal(d.n_entries, 5);
	assert_int_equal(d.n_prefixes, 2);
	snprintf(pfx, sizeof(pfx), "%sd/", prefix);
	assert_string_equal(d.prefixes[0], pfx);
	snprintf(pfx, sizeof(pfx), "%se/", prefix);
	assert_string_equal(d.prefixes[1], pfx);
	s3xml_list_free(&d);
	for (i = 0; i < 7; i++)
		free(want[i]);
}

static void test_delete(void **state)
{
	const char *key = s3test_key(&T, "del/x");
	struct s3_object_info info;

	(void)state;
	assert_int_equal(s3_put_buf(T.s3, T.bucket, key, "x", 1, NULL, 0, NULL),
			 0);
	assert_int_equal(s3_delete(T.s3, T.bucket, key), 0);
	assert_int_equal(s3_head(T.s3, T.bucket, key, &info), -ENOENT);
	/* deleting what is gone succeeds; a missing bucket does not */
	assert_int_equal(s3_delete(T.s3, T.bucket, key), 0);
	assert_int_not_equal(s3_delete(T.s3, "custodyfs-no-such-bucket", "k"),
			     0);
}

static void test_copy(void **state)
{
	const char *src = s3test_key(&T, "copy/src");
	const char *keep = s3test_key(&T, "copy/keep");
	const char *repl = s3test_key(&T, "copy/replaced");
	struct s3_kv meta = {(char *)"sha256", (char *)"abc"};
	struct s3_kv meta2 = {(char *)"other", (char *)"v2"};
	struct s3_object_info info;
	unsigned char *body;
	int fd;

	(void)state;
	fd = tmpfile_with(100000, 7, &body);
	assert_int_equal(
	    s3_put_fd(T.s3, T.bucket, src, fd, 0, 100000, NULL, &meta, 1, NULL),
	    0);
	close(fd);
	/* COPY keeps the metadata, across buckets */
	assert_int_equal(
	    s3_copy(T.s3, T.bucket, src, T.bucket2, keep, NULL, 0, NULL), 0);
	assert_object_is(T.bucket2, keep, body, 100000);
	assert_int_equal(s3_head(T.s3, T.bucket2, keep, &info), 0);
	assert_string_equal(s3_meta_get(&info, "sha256"), "abc");
	s3_object_info_free(&info);
	/* REPLACE sets exactly the new metadata */
	assert_int_equal(
	    s3_copy(T.s3, T.bucket, src, T.bucket, repl, &meta2, 1, NULL), 0);
	assert_object_is(T.bucket, repl, body, 100000);
	assert_int_equal(s3_head(T.s3, T.bucket, repl, &info), 0);
	assert_string_equal(s3_meta_get(&info, "other"), "v2");
	assert_null(s3_meta_get(&info, "sha256"));
	s3_object_info_free(&info);
	/* copy of a missing source */
	assert_int_equal(s3_copy(T.s3, T.bucket, s3test_key(&T, "copy/none"),
				 T.bucket, repl, NULL, 0, NULL),
			 -ENOENT);
	free(body);
}

/* ---- multipart -------------------------------------------------------- */

/* The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s,
 * "-N". */
static void mpu_etag(const unsigned char *body, const size_t *lens, size_t n,
		     char out[80])
{
	unsigned char all[16 * 8];
	char hex[33];
	size_t i, off = 0;

	for (i = 0; i < n; i++) {
		unsigned int dl = 0;

		assert_int_equal(EVP_Digest(body + off, lens[i], all + 16 * i,
					    &dl, EVP_md5(), NULL),
				 1);
		off += lens[i];
	}
	md5_hex(all, 16 * n, hex);
	snprintf(out, 80, "%s-%zu", hex, n);
}

static void test_multipart(void **state)
{
	const char *key = s3test_key(&T, "mpu/big é.bin");
	size_t lens[] = {5 * MIB, 5 * MIB, 1234};
	size_t total = lens[0] + lens[1] + lens[2];
	struct s3_kv meta = {(char *)"mtime", (char *)"42"};
	struct s3_part parts[3];
	struct s3_object_info info;
	char *id = NULL, etag[80], want[80], sha[HASH_SHA256_HEX];
	unsigned char *body;
	size_t i, off = 0;
	int fd;

	(void)state;
	fd = tmpfile_with(total, 11, &body);
	assert_int_equal(s3_mpu_create(T.s3, T.bucket, key, &meta, 1, &id), 0);
	assert_non_null(id);
	/* parts out of order; one signed with its SHA-256, others unsigned */
	for (i = 3; i-- > 0;) {
		off = i == 0 ? 0 : i == 1 ? lens[0] : lens[0] + lens[1];
		parts[i].number = (int)i + 1;
		sha256_hex(body + off, lens[i], sha);
		assert_int_equal(
		    s3_mpu_upload_part(T.s3, T.bucket, key, id, (int)i + 1, fd,
				       (off_t)off, lens[i], i == 1 ? sha : NULL,
				       parts[i].etag),
		    0);
		md5_hex(body + off, lens[i], want);
		assert_string_equal(parts[i].etag, want);
	}
	/* not there before completion */
	assert_int_equal(s3_head(T.s3, T.bucket, key, &info), -ENOENT);
	assert_int_equal(
	    s3_mpu_complete(T.s3, T.bucket, key, id, parts, 3, etag), 0);
	if (T.mpu_etag)
		mpu_etag(body, lens, 3, want);
	else
		md5_hex(body, total, want);
	assert_string_equal(etag, want);
	assert_object_is(T.bucket, key, body, total);
	assert_int_equal(s3_head(T.s3, T.bucket, key, &info), 0);
	assert_string_equal(info.etag, want);
	assert_string_equal(s3_meta_get(&info, "mtime"), "42");
	s3_object_info_free(&info);
	free(id);
	close(fd);
	free(body);
}

static void test_multipart_abort(void **state)
{
	const char *key = s3test_key(&T, "mpu/aborted");
	struct s3_part part = {1, ""};
	struct s3_object_info info;
	char *id = NULL;
	int fd;

	(void)state;
	fd = tmpfile_with(5 * MIB, 3, NULL);
	assert_int_equal(s3_mpu_create(T.s3, T.bucket, key, NULL, 0, &id), 0);
	assert_int_equal(s3_mpu_upload_part(T.s3, T.bucket, key, id, 1, fd, 0,
					    5 * MIB, NULL, part.etag),
			 0);
	if (T.mpu_abort) {
		assert_int_equal(s3_mpu_abort(T.s3, T.bucket, key, id), 0);
		/* the upload is gone: completing it fails, nothing appears */
		assert_int_not_equal(
		    s3_mpu_complete(T.s3, T.bucket, key, id, &part, 1, NULL),
		    0);
		/* a second abort: the upload is not there any more */
		assert_int_equal(s3_mpu_abort(T.s3, T.bucket, key, id),
				 -ENOENT);
	} else {
		/* the server's refusal (405) is reported, not swallowed */
		assert_int_equal(s3_mpu_abort(T.s3, T.bucket, key, id),
				 -EOPNOTSUPP);
	}
	assert_int_equal(s3_head(T.s3, T.bucket, key, &info), -ENOENT);
	/* invalid arguments are refused locally */
	assert_int_equal(s3_mpu_upload_part(T.s3, T.bucket, key, id, 0, fd, 0,
					    1, NULL, part.etag),
			 -EINVAL);
	assert_int_equal(s3_mpu_abort(T.s3, T.bucket, key, NULL), -EINVAL);
	free(id);
	close(fd);
}

/* s3_copy_auto above a (lowered, as cfg copy_threshold may be) threshold
 * copies with UploadPartCopy: the copy equals the source, with the given
 * metadata. s3rver has no UploadPartCopy: there the copy must fail and
 * leave no destination behind (the upload aborted). */
static void test_copy_multipart(void **state)
{
	const char *src = s3test_key(&T, "pcopy/src");
	const char *dst = s3test_key(&T, "pcopy/dst");
	const char *small = s3test_key(&T, "pcopy/small");
	size_t total = 11 * MIB + 5;
	size_t lens[] = {5 * MIB, 5 * MIB, MIB + 5};
	struct s3_kv meta = {(char *)"sha256", (char *)"feed"};
	struct s3_object_info info;
	char etag[80], want[80];
	unsigned char *body;
	int fd, rc;

	(void)state;
	fd = tmpfile_with(total, 5, &body);
	assert_int_equal(
	    s3_put_fd(T.s3, T.bucket, src, fd, 0, total, NULL, NULL, 0, NULL),
	    0);
	close(fd);
	rc = s3_copy_auto(T.s3, T.bucket, src, T.bucket2, dst, total, 5 * MIB,
			  5 * MIB, &meta, 1, etag);
	if (!T.part_copy) {
		assert_int_not_equal(rc, 0);
		assert_int_equal(s3_head(T.s3, T.bucket2, dst, &info), -ENOENT);
	} else {
		assert_int_equal(rc, 0);
		mpu_etag(body, lens, 3, want);
		assert_string_equal(etag, want);
		assert_object_is(T.bucket2, dst, body, total);
		assert_int_equal(s3_head(T.s3, T.bucket2, dst, &info), 0);
		assert_string_equal(s3_meta_get(&info, "sha256"), "feed");
		s3_object_info_free(&info);
	}
	/* at or below the threshold: one CopyObject (single-part ETag) */
	rc = s3_copy_auto(T.s3, T.bucket, src, T.bucket2, small, total, total,
			  5 * MIB, NULL, 0, etag);
	assert_int_equal(rc, 0);
	assert_null(strchr(etag, '-'));
	assert_object_is(T.bucket2, small, body, total);
	free(body);
}

/* ---- a fake server: 200 OK with an <Error> body ------------------------ */

struct fake {
	int lfd;
	int port;
	pthread_t th;
	pthread_mutex_t lock;
	int requests;  /* protected by lock */
	char code[64]; /* protected by lock: the <Error> code to answer */
	/* protected by lock: when set, the "lost completion" store: POST
	 * (complete) answers 404 NoSuchUpload, HEAD a 10-byte object with
	 * this ETag */
	char head_etag[80];
	int list_mode; /* protected by lock: how to answer ListObjectsV2 */
};

static struct fake F;

enum { LIST_PAGES = 1, LIST_NO_TOKEN, LIST_SAME_TOKEN, LIST_ERROR };

#define LIST_HEAD                                                              \
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                         \
	"<ListBucketResult><Name>b</Name><EncodingType>url</EncodingType>"
#define LIST_KEY(k) "<Contents><Key>" k "</Key><Size>1</Size></Contents>"

/* The ListObjectsV2 answer for request line `line` in mode `mode`. */
static void fake_list(int mode, const char *line, char *body, size_t n)
{
	/* the token holds characters the client must encode in the query */
	int page2 = strstr(line, "continuation-token=tok%2F1%2B%3D") != NULL;

	if (mode == LIST_ERROR)
		snprintf(body, n, "<Error><Code>AccessDenied</Code></Error>");
	else if (mode == LIST_PAGES && page2)
		snprintf(body, n,
			 LIST_HEAD
			 "<IsTruncated>false</IsTruncated>" LIST_KEY("c")
			     LIST_KEY("d%%2Be%%20f") "</ListBucketResult>");
	else if (mode == LIST_NO_TOKEN)
		snprintf(body, n,
			 LIST_HEAD "<IsTruncated>true</IsTruncated>" LIST_KEY(
			     "a") "</ListBucketResult>");
	else
		snprintf(body, n,
			 LIST_HEAD "<IsTruncated>true</IsTruncated>"
				   "<NextContinuationToken>tok/1+="
				   "</NextContinuationToken>" LIST_KEY("a")
				       LIST_KEY("b") "</ListBucketResult>");
}

/* Reads one request (headers, then Content-Length bytes) from fd. Returns
 * 1 for a request that asked for an XML result (POST, or a copy); *method
 * gets its first letter. */
static int fake_read_request(int fd, int *ok, char *method, char *line,
			     size_t line_len)
{
	char buf[65536];
	size_t have = 0;
	char *end = NULL, *cl;
	long body = 0;
	int xml;

	*ok = 0;
	while (!end && have < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);

		if (n <= 0)
			return 0;
		have += (size_t)n;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	if (!end)
		return 0;
	cl = strcasestr(buf, "\r\ncontent-length:");
	if (cl)
		body = strtol(cl + 17, NULL, 10);
	body -= (long)(have - (size_t)(end + 4 - buf));
	while (body > 0) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n <= 0)
			return 0;
		body -= n;
	}
	*method = buf[0];
	snprintf(line, line_len, "%.*s", (int)strcspn(buf, "\r\n"), buf);
	xml = !strncmp(buf, "POST ", 5) ||
	      strcasestr(buf, "\r\nx-amz-copy-source:") != NULL;
	*ok = 1;
	return xml;
}

static void *fake_main(void *arg)
{
	(void)arg;
	for (;;) {
		char resp[4096], body[2048], code[64], etag[80], line[512];
		char m = 0;
		int fd = accept(F.lfd, NULL, NULL), ok, xml, list_mode;
		const char *status = "200 OK";

		if (fd < 0)
			return NULL;
		xml = fake_read_request(fd, &ok, &m, line, sizeof(line));
		pthread_mutex_lock(&F.lock);
		F.requests++;
		list_mode = F.list_mode;
		snprintf(code, sizeof(code), "%s", F.code);
		snprintf(etag, sizeof(etag), "%s", F.head_etag);
		pthread_mutex_unlock(&F.lock);
		if (!ok) {
			close(fd);
			continue;
		}
		if (etag[0] && m == 'H') {
			snprintf(resp, sizeof(resp),
				 "HTTP/1.1 200 OK\r\nETag: \"%s\"\r\n"
				 "Content-Length: 10\r\nConnection: close"
				 "\r\n\r\n",
				 etag);
			if (write(fd, resp, strlen(resp)) < 0)
				(void)0;
			close(fd);
			continue;
		}
		if (etag[0]) {
			status = "404 Not Found";
			snprintf(code, sizeof(code), "NoSuchUpload");
		}
		if (list_mode && strstr(line, "list-type=2"))
			fake_list(list_mode, line, body, sizeof(body));
		else if (xml)
			snprintf(body, sizeof(body),
				 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				 "<Error><Code>%s</Code><Message>injected"
				 "</Message><RequestId>fake</RequestId>"
				 "</Error>",
				 code);
		else
			body[0] = '\0';
		snprintf(resp, sizeof(resp),
			 "HTTP/1.1 %s\r\nETag: \"0123\"\r\n"
			 "Content-Type: application/xml\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 status, strlen(body), body);
		if (write(fd, resp, strlen(resp)) < 0)
			(void)0;
		close(fd);
	}
}

static int fake_start(void **state)
{
	struct sockaddr_in a = {0};
	socklen_t al = sizeof(a);

	(void)state;
	pthread_mutex_init(&F.lock, NULL);
	F.lfd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (F.lfd < 0 || bind(F.lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(F.lfd, 16) || getsockname(F.lfd, (struct sockaddr *)&a, &al))
		return -1;
	F.port = ntohs(a.sin_port);
	if (pthread_create(&F.th, NULL, fake_main, NULL))
		return -1;
	return 0;
}

static int fake_stop(void **state)
{
	(void)state;
	shutdown(F.lfd, SHUT_RDWR);
	close(F.lfd);
	pthread_join(F.th, NULL);
	pthread_mutex_destroy(&F.lock);
	return 0;
}

static struct s3_client *fake_client(void)
{
	char ep[64];
	struct s3_config c = {0};

	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", F.port);
	c.endpoint = ep;
	c.region = "us-east-1";
	c.access_key_id = "AK";
	c.secret_access_key = "SK";
	c.path_style = 1;
	c.max_retries = 2;
	c.retry_base_ms = 1;
	return s3_client_new(&c);
}

static void fake_set(const char *code, const char *head_etag)
{
	pthread_mutex_lock(&F.lock);
	snprintf(F.code, sizeof(F.code), "%s", code);
	snprintf(F.head_etag, sizeof(F.head_etag), "%s", head_etag);
	F.list_mode = 0;
	F.requests = 0;
	pthread_mutex_unlock(&F.lock);
}

static int fake_requests(void)
{
	int n;

	pthread_mutex_lock(&F.lock);
	n = F.requests;
	pthread_mutex_unlock(&F.lock);
	return n;
}

static void test_200_with_error(void **state)
{
	struct s3_client *c = fake_client();
	struct s3_part part = {1, "0123"};
	char etag[80], *id = NULL;

	(void)state;
	assert_non_null(c);
	/* positive control: a plain 200 to a PUT is a success */
	fake_set("AccessDenied", "");
	assert_int_equal(s3_put_buf(c, "b", "k", "x", 1, NULL, 0, etag), 0);
	assert_string_equal(etag, "0123");
	assert_int_equal(fake_requests(), 1);

	/* not retryable: one request each, the mapped errno */
	fake_set("AccessDenied", "");
	assert_int_equal(s3_mpu_complete(c, "b", "k", "id", &part, 1, etag),
			 -EACCES);
	assert_int_equal(s3_copy(c, "b", "src", "b", "dst", NULL, 0, etag),
			 -EACCES);
	assert_int_equal(s3_mpu_create(c, "b", "k", NULL, 0, &id), -EACCES);
	assert_null(id);
	assert_int_equal(s3_mpu_upload_part_copy(c, "b", "k", "id", 1, "b",
						 "src", 0, 9, etag),
			 -EACCES);
	assert_int_equal(fake_requests(), 4);

	/* retryable (InternalError): 1 + max_retries attempts, then EIO */
	fake_set("InternalError", "");
	assert_int_equal(s3_mpu_complete(c, "b", "k", "id", &part, 1, etag),
			 -EIO);
	assert_int_equal(fake_requests(), 3);
	s3_client_free(c);
}

/* A completion whose answer is lost (the retry hears NoSuchUpload) is a
 * success only when the object's ETag proves it is exactly these parts. */
static void test_complete_answer_lost(void **state)
{
	struct s3_client *c = fake_client();
	struct s3_part parts[2] = {
	    {1, "0cc175b9c0f1b6a831c399e269772661"}, /* md5("a") */
	    {2, "92eb5ffee6ae2fec3ad71c777531578f"}, /* md5("b") */
	};
	char etag[80] = "", want[80];
	unsigned char bin[32];
	size_t i;

	(void)state;
	assert_non_null(c);
	/* the multipart ETag, computed here independently */
	for (i = 0; i < 32; i++) {
		unsigned v;

		assert_int_equal(
		    sscanf(parts[i / 16].etag + 2 * (i % 16), "%2x", &v), 1);
		bin[i] = (unsigned char)v;
	}
	md5_hex(bin, 32, want);
	strcat(want, "-2");
	assert_int_equal(s3_mpu_etag(parts, 2, etag), 0);
	assert_string_equal(etag, want);

	/* the object is the completion of these parts: success */
	fake_set("", want);
	etag[0] = '\0';
	assert_int_equal(s3_mpu_complete(c, "b", "k", "id", parts, 2, etag), 0);
	assert_string_equal(etag, want);
	/* it is something else (another writer, a store whose ETags differ):
	 * the error stands */
	fake_set("", "0cc175b9c0f1b6a831c399e269772661");
	assert_int_equal(s3_mpu_complete(c, "b", "k", "id", parts, 2, etag),
			 -ENOENT);
	fake_set("", "");
	s3_client_free(c);
}

static void fake_set_list(int mode)
{
	fake_set("", "");
	pthread_mutex_lock(&F.lock);
	F.list_mode = mode;
	pthread_mutex_unlock(&F.lock);
}

/* s3_list_all follows continuation tokens (encoded in the query) across
 * pages and decodes url-encoded keys; a truncated page without a new token
 * or with the same one again is an error, not an endless loop or a short
 * listing; a 200 whose body is <Error> is an error. */
static void test_list_all_pages(void **state)
{
	struct s3_client *c = fake_client();
	struct s3_list_result r = {0};

	(void)state;
	assert_non_null(c);
	fake_set_list(LIST_PAGES);
	assert_int_equal(s3_list_all(c, "b", NULL, NULL, 0, &r), 0);
	assert_int_equal(fake_requests(), 2);
	assert_int_equal(r.n_entries, 4);
	assert_int_equal(r.truncated, 0);
	assert_string_equal(r.entries[0].key, "a");
	assert_string_equal(r.entries[1].key, "b");
	assert_string_equal(r.entries[2].key, "c");
	assert_string_equal(r.entries[3].key, "d+e f");
	s3xml_list_free(&r);

	memset(&r, 0, sizeof(r));
	fake_set_list(LIST_NO_TOKEN);
	assert_int_equal(s3_list_all(c, "b", NULL, NULL, 0, &r), -EPROTO);
	s3xml_list_free(&r);

	memset(&r, 0, sizeof(r));
	fake_set_list(LIST_SAME_TOKEN);
	assert_int_equal(s3_list_all(c, "b", NULL, NULL, 0, &r), -EPROTO);
	assert_int_equal(fake_requests(), 2);
	s3xml_list_free(&r);

	memset(&r, 0, sizeof(r));
	fake_set_list(LIST_ERROR);
	assert_int_equal(s3_list_all(c, "b", NULL, NULL, 0, &r), -EACCES);
	assert_int_equal(r.n_entries, 0);
	s3xml_list_free(&r);
	fake_set("", "");
	s3_client_free(c);
}

/* review Q1: only values every store signs alike are re-sent. */
static void test_header_sendable(void **state)
{
	static const char *const yes[] = {"attachment; filename=\"r.txt\"",
					  "gzip", "max-age=60", "a b c", "x"};
	static const char *const no[] = {
	    "",		 " lead",	  "trail ",	   "two  spaces",
	    "tab\there", "nbsp\xc2\xa0x", "\xc3\xa0 utf8", "del\x7f",
	    "\x85",	 "cr\r"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_int_equal(s3_header_sendable(yes[i]), 1);
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_int_equal(s3_header_sendable(no[i]), 0);
	assert_int_equal(s3_header_sendable(NULL), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest server[] = {
	    cmocka_unit_test(test_put_head_get),
	    cmocka_unit_test(test_meta_non_ascii),
	    cmocka_unit_test(test_list_pages),
	    cmocka_unit_test(test_delete),
	    cmocka_unit_test(test_copy),
	    cmocka_unit_test(test_multipart),
	    cmocka_unit_test(test_multipart_abort),
	    cmocka_unit_test(test_copy_multipart),
	};
	const struct CMUnitTest local[] = {
	    cmocka_unit_test(test_200_with_error),
	    cmocka_unit_test(test_complete_answer_lost),
	    cmocka_unit_test(test_list_all_pages),
	    cmocka_unit_test(test_header_sendable),
	};
	int rc;

	if (argc > 1 && !strcmp(argv[1], "local"))
		return cmocka_run_group_tests_name("s3_client_local", local,
						   fake_start, fake_stop);
	s3test_setup(&T, argc, argv);
	rc = cmocka_run_group_tests_name("s3_client", server, NULL, NULL);
	s3_client_free(T.s3);
	return rc;
}
