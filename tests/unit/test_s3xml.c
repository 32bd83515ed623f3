/* test_s3xml.c - unit tests for s3xml.c (S3 XML responses) and s3err.c
 * (errno mapping). Table-driven; bodies are shaped like real AWS S3 and
 * MinIO answers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "s3err.h"
#include "s3xml.h"
#include "sbuf.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* assert_int_equal / assert_string_equal for table rows: the failure names
 * the row. */
#define CASE_INT(i, got, want)                                                 \
	do {                                                                   \
		long long got_ = (long long)(got);                             \
		long long want_ = (long long)(want);                           \
		if (got_ != want_)                                             \
			fail_msg("row %zu: %s is %lld, want %lld",             \
				 (size_t)(i), #got, got_, want_);              \
	} while (0)

#define CASE_STR(i, got, want)                                                 \
	do {                                                                   \
		const char *gots_ = (got), *wants_ = (want);                   \
		if (!gots_ || strcmp(gots_, wants_) != 0)                      \
			fail_msg("row %zu: %s is \"%s\", want \"%s\"",         \
				 (size_t)(i), #got, gots_ ? gots_ : "(null)",  \
				 wants_);                                      \
	} while (0)

#define XML_DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
#define S3_NS "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""

/* ---- ListObjectsV2 ---------------------------------------------------- */

struct want_entry {
	const char *key;
	uint64_t size;
	const char *etag;
	time_t mtime;
};

/* Page 1: truncated, compact like AWS sends it, with CommonPrefixes and keys
 * that need XML escaping. */
static const char list_page1[] =
	XML_DECL
	"<ListBucketResult " S3_NS ">"
	"<Name>reception</Name><Prefix>in/</Prefix><KeyCount>5</KeyCount>"
	"<MaxKeys>5</MaxKeys><Delimiter>/</Delimiter>"
	"<IsTruncated>true</IsTruncated>"
	"<ContinuationToken>abc</ContinuationToken>"
	"<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
	"</NextContinuationToken>"
	"<StartAfter></StartAfter>"
	"<Contents><Key>in/a b.pdf</Key>"
	"<LastModified>2009-10-12T17:50:30.000Z</LastModified>"
	"<ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>"
	"<ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm>"
	"<Size>434234</Size><StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>in/Gr\xc3\xb6\xc3\x9f"
	"e \xe2\x80\x93 \xed\x95\x9c\xea\xb8\x80.txt</Key>"
	"<LastModified>2024-02-29T12:00:00Z</LastModified>"
	"<ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag>"
	"<Size>0</Size><Owner><ID>6cf4ba</ID><DisplayName>x</DisplayName>"
	"</Owner><StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>in/a+b 100%.csv</Key>"
	"<LastModified>2026-01-01T00:00:00.123Z</LastModified>"
	"<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag>"
	"<Size>18446744073709551615</Size></Contents>"
	"<Contents><Key>in/R&amp;D &lt;v2&gt; &apos;; DROP TABLE storage_audit;"
	" --.pdf</Key>"
	"<LastModified>1999-12-31T23:59:59.999Z</LastModified>"
	"<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag>"
	"<Size>7</Size></Contents>"
	"<CommonPrefixes><Prefix>in/sub/</Prefix></CommonPrefixes>"
	"<CommonPrefixes><Prefix>in/run books/</Prefix></CommonPrefixes>"
	"</ListBucketResult>";

/* Page 2: final, pretty-printed like MinIO's verbose mode. */
static const char list_page2[] =
	XML_DECL
	"<ListBucketResult " S3_NS ">\n"
	"  <Name>reception</Name>\n"
	"  <Prefix>in/</Prefix>\n"
	"  <KeyCount>1</KeyCount>\n"
	"  <MaxKeys>5</MaxKeys>\n"
	"  <IsTruncated>false</IsTruncated>\n"
	"  <Contents>\n"
	"    <Key>in/z.bin</Key>\n"
	"    <LastModified>2009-10-12T17:50:30Z</LastModified>\n"
	"    <ETag>&#34;abc&#34;</ETag>\n"
	"    <Size>42</Size>\n"
	"  </Contents>\n"
	"  <CommonPrefixes>\n"
	"    <Prefix>in/zz/</Prefix>\n"
	"  </CommonPrefixes>\n"
	"</ListBucketResult>\n";

static const struct want_entry list_want[] = {
	{"in/a b.pdf", 434234, "fba9dede5f27731c9771645a39863328", 1255369830},
	{"in/Gr\xc3\xb6\xc3\x9f"
	 "e \xe2\x80\x93 \xed\x95\x9c\xea\xb8\x80.txt",
	 0, "3858f62230ac3c915f300c664312c11f-9", 1709208000},
	{"in/a+b 100%.csv", UINT64_MAX, "d41d8cd98f00b204e9800998ecf8427e",
	 1767225600},
	{"in/R&D <v2> '; DROP TABLE storage_audit; --.pdf", 7,
	 "0123456789abcdef0123456789abcdef", 946684799},
	{"in/z.bin", 42, "abc", 1255369830},
};

static const char *const list_want_prefixes[] = {
	"in/sub/", "in/run books/", "in/zz/",
};

static void check_entries(const struct s3_list_result *r,
			  const struct want_entry *w, size_t n)
{
	size_t i;

	assert_int_equal(r->n_entries, n);
	for (i = 0; i < n; i++) {
		CASE_STR(i, r->entries[i].key, w[i].key);
		CASE_INT(i, r->entries[i].size == w[i].size, 1);
		CASE_STR(i, r->entries[i].etag, w[i].etag);
		CASE_INT(i, r->entries[i].mtime, w[i].mtime);
	}
}

static void check_prefixes(const struct s3_list_result *r,
			   const char *const *w, size_t n)
{
	size_t i;

	assert_int_equal(r->n_prefixes, n);
	for (i = 0; i < n; i++)
		CASE_STR(i, r->prefixes[i], w[i]);
}

static void test_list_two_pages(void **state)
{
	struct s3_list_result r = {0};
	struct s3_error err;

	(void)state;
	assert_int_equal(s3xml_parse_list(list_page1, strlen(list_page1), 0,
					  &r, &err),
			 0);
	assert_int_equal(r.truncated, 1);
	assert_non_null(r.next_token);
	assert_string_equal(r.next_token,
			    "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
	assert_string_equal(r.key_count_str, "5");
	check_entries(&r, list_want, 4);
	check_prefixes(&r, list_want_prefixes, 2);

	assert_int_equal(s3xml_parse_list(list_page2, strlen(list_page2), 0,
					  &r, &err),
			 0);
	assert_int_equal(r.truncated, 0);
	assert_null(r.next_token);
	assert_string_equal(r.key_count_str, "1");
	check_entries(&r, list_want, ARRAY_SIZE(list_want));
	check_prefixes(&r, list_want_prefixes, ARRAY_SIZE(list_want_prefixes));
	s3xml_list_free(&r);
	assert_null(r.entries);
	assert_int_equal(r.n_entries, 0);
	s3xml_list_free(&r); /* idempotent */
}

static void test_list_empty_and_prefixed(void **state)
{
	static const char empty[] =
		XML_DECL "<ListBucketResult " S3_NS "><Name>b</Name>"
			 "<Prefix>none/</Prefix><KeyCount>0</KeyCount>"
			 "<MaxKeys>1000</MaxKeys>"
			 "<IsTruncated>false</IsTruncated>"
			 "</ListBucketResult>";
	/* A namespace prefix on every element is matched by local name. */
	static const char prefixed[] =
		"<s3:ListBucketResult "
		"xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<s3:IsTruncated>false</s3:IsTruncated>"
		"<s3:Contents><s3:Key>k</s3:Key><s3:Size>1</s3:Size>"
		"</s3:Contents></s3:ListBucketResult>";
	struct s3_list_result r = {0};

	(void)state;
	assert_int_equal(s3xml_parse_list(empty, strlen(empty), 0, &r, NULL),
			 0);
	assert_int_equal(r.n_entries, 0);
	assert_int_equal(r.n_prefixes, 0);
	assert_int_equal(r.truncated, 0);
	assert_null(r.next_token);
	assert_int_equal(s3xml_parse_list(prefixed, strlen(prefixed), 0, &r,
					  NULL),
			 0);
	assert_int_equal(r.n_entries, 1);
	assert_string_equal(r.entries[0].key, "k");
	assert_true(r.entries[0].size == 1);
	assert_string_equal(r.entries[0].etag, "");
	assert_int_equal(r.entries[0].mtime, 0);
	s3xml_list_free(&r);
}

/* EncodingType=url: AWS sends a space as '+', '+' as %2B; other stores send
 * %20. Both must decode. */
static void test_list_url_encoded(void **state)
{
	static const char body[] =
		XML_DECL
		"<ListBucketResult " S3_NS "><Name>b</Name>"
		"<Prefix>run+books%2F</Prefix><Delimiter>%2F</Delimiter>"
		"<EncodingType>url</EncodingType>"
		"<IsTruncated>true</IsTruncated>"
		"<NextContinuationToken>a+b%2F</NextContinuationToken>"
		"<Contents><Key>a+b.txt</Key><Size>1</Size></Contents>"
		"<Contents><Key>a%2Bb.txt</Key><Size>2</Size></Contents>"
		"<Contents><Key>100%25.csv</Key><Size>3</Size></Contents>"
		"<Contents><Key>%ED%95%9C%EA%B8%80/x.txt</Key><Size>4</Size>"
		"</Contents>"
		"<Contents><Key>run%20books/x%0a.txt</Key><Size>5</Size>"
		"</Contents>"
		"<Contents><Key>test_file%283%29.png</Key><Size>6</Size>"
		"</Contents>"
		"<CommonPrefixes><Prefix>run+books/</Prefix></CommonPrefixes>"
		"<CommonPrefixes><Prefix>%ED%95%9C%EA%B8%80/</Prefix>"
		"</CommonPrefixes>"
		"</ListBucketResult>";
	static const char *const keys[] = {
		"a b.txt",
		"a+b.txt",
		"100%.csv",
		"\xed\x95\x9c\xea\xb8\x80/x.txt",
		"run books/x\n.txt",
		"test_file(3).png",
	};
	struct s3_list_result r = {0};
	size_t i;

	(void)state;
	assert_int_equal(s3xml_parse_list(body, strlen(body), 1, &r, NULL), 0);
	assert_int_equal(r.n_entries, ARRAY_SIZE(keys));
	for (i = 0; i < ARRAY_SIZE(keys); i++) {
		CASE_STR(i, r.entries[i].key, keys[i]);
		assert_true(r.entries[i].size == i + 1);
	}
	assert_int_equal(r.n_prefixes, 2);
	assert_string_equal(r.prefixes[0], "run books/");
	assert_string_equal(r.prefixes[1], "\xed\x95\x9c\xea\xb8\x80/");
	/* The continuation token is opaque, never decoded. */
	assert_string_equal(r.next_token, "a+b%2F");
	s3xml_list_free(&r);

	/* Without url_encoded the same body is taken literally. */
	assert_int_equal(s3xml_parse_list(body, strlen(body), 0, &r, NULL), 0);
	assert_string_equal(r.entries[0].key, "a+b.txt");
	assert_string_equal(r.entries[1].key, "a%2Bb.txt");
	s3xml_list_free(&r);
}

/* Bodies s3xml_parse_list must refuse with -EPROTO. */
static const char *const list_bad[] = {
	/* bad escapes (only with url_encoded) */
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a%G1</Key></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a%2</Key></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a%00b</Key></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<CommonPrefixes><Prefix>%</Prefix></CommonPrefixes>"
	"</ListBucketResult>",
	/* structure */
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Size>1</Size></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key></Key></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a</Key><Key>b</Key></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a</Key><Size>18446744073709551616</Size></Contents>"
	"</ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a</Key><Size> 1</Size></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a</Key><LastModified>yesterday</LastModified>"
	"</Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a</Key><ETag>\"\"</ETag></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a</Key><ETag>"
	"0123456789012345678901234567890123456789"
	"0123456789012345678901234567890123456789</ETag></Contents>"
	"</ListBucketResult>",
	"<ListBucketResult><IsTruncated>maybe</IsTruncated>"
	"</ListBucketResult>",
	"<ListBucketResult></ListBucketResult>",
	"<ListBucketResult><IsTruncated>true</IsTruncated>"
	"</ListBucketResult>",
	/* wrong root */
	"<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>",
	"<InitiateMultipartUploadResult><UploadId>x</UploadId>"
	"</InitiateMultipartUploadResult>",
	/* not XML */
	"",
	"   \n",
	"<ListBucketResult><IsTruncated>false</IsTruncated>",
	"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a",
	"<ListBucketResult><IsTruncated>false</IsTrunc></ListBucketResult>",
	"<html><body>502 Bad Gateway</body></html",
	"ListBucketResult",
	"<ListBucketResult>&nbsp;</ListBucketResult>",
	"<ListBucketResult/><ListBucketResult/>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>a\x01</Key></Contents></ListBucketResult>",
	"<ListBucketResult><IsTruncated>false</IsTruncated>"
	"<Contents><Key>\xff\xfe</Key></Contents></ListBucketResult>",
};

static void test_list_bad(void **state)
{
	static const char good[] =
		"<ListBucketResult><IsTruncated>true</IsTruncated>"
		"<NextContinuationToken>t1</NextContinuationToken>"
		"<Contents><Key>kept</Key><Size>1</Size></Contents>"
		"<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes>"
		"</ListBucketResult>";
	struct s3_list_result r = {0};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(list_bad); i++) {
		/* Each failure leaves the accumulated pages untouched. */
		CASE_INT(i, s3xml_parse_list(good, strlen(good), 1, &r,
						  NULL),
				 0);
		CASE_INT(i, s3xml_parse_list(list_bad[i],
						  strlen(list_bad[i]), 1, &r,
						  NULL),
				 -EPROTO);
		CASE_INT(i, r.n_entries, 1);
		CASE_STR(i, r.entries[0].key, "kept");
		CASE_INT(i, r.n_prefixes, 1);
		CASE_INT(i, r.truncated, 1);
		CASE_STR(i, r.next_token, "t1");
		s3xml_list_free(&r);
	}
	assert_int_equal(s3xml_parse_list(NULL, 0, 0, &r, NULL), -EPROTO);
	s3xml_list_free(&r);
}

/* Builds a page of n entries named <tag>-<i>, ending badly when bad. */
static void make_page(struct sbuf *b, const char *tag, size_t n, int bad)
{
	size_t i;

	sbuf_reset(b);
	assert_int_equal(sbuf_adds(b, "<ListBucketResult><IsTruncated>false"
				      "</IsTruncated>"),
			 0);
	for (i = 0; i < n; i++)
		assert_int_equal(sbuf_addf(b,
					   "<Contents><Key>%s-%zu</Key>"
					   "</Contents><CommonPrefixes><Prefix>%s-%zu/"
					   "</Prefix></CommonPrefixes>",
					   tag, i, tag, i),
				 0);
	assert_int_equal(sbuf_adds(b, bad ? "<Contents><Size>1</Size>"
					    "</Contents></ListBucketResult>"
					  : "</ListBucketResult>"),
			 0);
}

/* Pages accumulate; a failed page in the middle is rolled back, also when
 * it crossed an allocation boundary. */
static void test_list_accumulate(void **state)
{
	struct s3_list_result r = {0};
	struct sbuf b = SBUF_INIT;
	char want[32];
	size_t i;

	(void)state;
	make_page(&b, "a", 20, 0);
	assert_int_equal(s3xml_parse_list(b.s, b.len, 0, &r, NULL), 0);
	make_page(&b, "b", 50, 1);
	assert_int_equal(s3xml_parse_list(b.s, b.len, 0, &r, NULL), -EPROTO);
	assert_int_equal(r.n_entries, 20);
	assert_int_equal(r.n_prefixes, 20);
	make_page(&b, "c", 70, 0);
	assert_int_equal(s3xml_parse_list(b.s, b.len, 0, &r, NULL), 0);
	assert_int_equal(r.n_entries, 90);
	assert_int_equal(r.n_prefixes, 90);
	for (i = 0; i < 90; i++) {
		snprintf(want, sizeof(want), "%s-%zu", i < 20 ? "a" : "c",
			 i < 20 ? i : i - 20);
		CASE_STR(i, r.entries[i].key, want);
		snprintf(want, sizeof(want), "%s-%zu/", i < 20 ? "a" : "c",
			 i < 20 ? i : i - 20);
		CASE_STR(i, r.prefixes[i], want);
	}
	s3xml_list_free(&r);
	sbuf_free(&b);
}

/* A listing above 1 MiB goes through expat in several chunks; a 1024-byte
 * UTF-8 key is fine. */
static void test_list_large(void **state)
{
	struct sbuf b = SBUF_INIT;
	struct s3_list_result r = {0};
	char longkey[1025];
	char want[32];
	size_t i;

	(void)state;
	for (i = 0; i < 1024; i += 2)
		memcpy(longkey + i, "\xc3\xa9", 2);
	longkey[1024] = '\0';
	assert_int_equal(sbuf_adds(&b, XML_DECL "<ListBucketResult " S3_NS ">"
					    "<IsTruncated>false</IsTruncated>"),
			 0);
	for (i = 0; i < 20000; i++)
		assert_int_equal(
			sbuf_addf(&b,
				  "<Contents><Key>dir/file-%06zu</Key>"
				  "<LastModified>2009-10-12T17:50:30.000Z"
				  "</LastModified><ETag>&quot;%032zx&quot;"
				  "</ETag><Size>%zu</Size><StorageClass>"
				  "STANDARD</StorageClass></Contents>",
				  i, i, i),
			0);
	assert_int_equal(sbuf_addf(&b,
				   "<Contents><Key>%s</Key><Size>1</Size>"
				   "</Contents></ListBucketResult>",
				   longkey),
			 0);
	assert_true(b.len > 2 * 1024 * 1024);
	assert_int_equal(s3xml_parse_list(b.s, b.len, 0, &r, NULL), 0);
	assert_int_equal(r.n_entries, 20001);
	for (i = 0; i < 20000; i += 997) {
		snprintf(want, sizeof(want), "dir/file-%06zu", i);
		assert_string_equal(r.entries[i].key, want);
		assert_true(r.entries[i].size == i);
		assert_int_equal(strlen(r.entries[i].etag), 32);
	}
	assert_string_equal(r.entries[20000].key, longkey);
	s3xml_list_free(&r);
	sbuf_free(&b);
}

/* Text nodes are bounded (64 KiB) and nesting is bounded. */
static void test_list_bounds(void **state)
{
	struct sbuf b = SBUF_INIT;
	struct s3_list_result r = {0};
	size_t i;

	(void)state;
	assert_int_equal(sbuf_adds(&b, "<ListBucketResult><IsTruncated>false"
				       "</IsTruncated><Contents><Key>"),
			 0);
	for (i = 0; i < 64 * 1024 + 1; i++)
		assert_int_equal(sbuf_addc(&b, 'k'), 0);
	assert_int_equal(sbuf_adds(&b, "</Key></Contents></ListBucketResult>"),
			 0);
	assert_int_equal(s3xml_parse_list(b.s, b.len, 0, &r, NULL), -EPROTO);
	assert_int_equal(r.n_entries, 0);
	sbuf_free(&b);

	/* Text outside wanted elements is not collected, so not bounded. */
	assert_int_equal(sbuf_adds(&b, "<ListBucketResult><IsTruncated>false"
				       "</IsTruncated><Owner>"),
			 0);
	for (i = 0; i < 128 * 1024; i++)
		assert_int_equal(sbuf_addc(&b, 'o'), 0);
	assert_int_equal(sbuf_adds(&b, "</Owner></ListBucketResult>"), 0);
	assert_int_equal(s3xml_parse_list(b.s, b.len, 0, &r, NULL), 0);
	s3xml_list_free(&r);
	sbuf_free(&b);

	assert_int_equal(sbuf_adds(&b, "<ListBucketResult>"), 0);
	for (i = 0; i < 1000; i++)
		assert_int_equal(sbuf_adds(&b, "<a>"), 0);
	for (i = 0; i < 1000; i++)
		assert_int_equal(sbuf_adds(&b, "</a>"), 0);
	assert_int_equal(sbuf_adds(&b, "</ListBucketResult>"), 0);
	assert_int_equal(s3xml_parse_list(b.s, b.len, 0, &r, NULL), -EPROTO);
	sbuf_free(&b);
	s3xml_list_free(&r);
}

/* ---- Hostile documents ------------------------------------------------ */

static const char *const hostile[] = {
	/* billion laughs */
	XML_DECL
	"<!DOCTYPE lolz [\n"
	" <!ENTITY lol \"lol\">\n"
	" <!ENTITY lol1 "
	"\"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
	" <!ENTITY lol2 "
	"\"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
	" <!ENTITY lol3 "
	"\"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
	"]>\n"
	"<Error><Code>&lol3;</Code></Error>",
	/* external entity */
	XML_DECL "<!DOCTYPE Error "
		 "[<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>"
		 "<Error><Code>&xxe;</Code></Error>",
	/* external DTD */
	XML_DECL "<!DOCTYPE Error SYSTEM \"http://example.com/x.dtd\">"
		 "<Error><Code>NoSuchKey</Code></Error>",
	/* plain DOCTYPE */
	"<!DOCTYPE Error><Error><Code>NoSuchKey</Code></Error>",
	/* undeclared entity */
	"<Error><Code>&xxe;</Code></Error>",
};

/* ListObjectVersions (the shape of AWS's documented answer): versions and
 * delete markers are entries with their VersionId; the markers of the next
 * page; a store that answers a ListBucketResult is -EPROTO; an entry without
 * VersionId is -EPROTO, and the page is dropped whole. */
static void test_list_versions(void **state)
{
	static const char body[] =
	    XML_DECL "<ListVersionsResult " S3_NS "><Name>b</Name>"
		     "<Prefix>.custodyfs-rename/</Prefix><KeyMarker/>"
		     "<VersionIdMarker/><MaxKeys>2</MaxKeys>"
		     "<EncodingType>url</EncodingType>"
		     "<IsTruncated>true</IsTruncated>"
		     "<NextKeyMarker>.custodyfs-rename/t%2B1</NextKeyMarker>"
		     "<NextVersionIdMarker>v2</NextVersionIdMarker>"
		     "<Version><Key>.custodyfs-rename/t%2B1</Key>"
		     "<VersionId>v1</VersionId><IsLatest>false</IsLatest>"
		     "<LastModified>2026-12-02T04:00:00.000Z</LastModified>"
		     "<ETag>&quot;abc&quot;</ETag><Size>3</Size>"
		     "<StorageClass>STANDARD</StorageClass></Version>"
		     "<DeleteMarker><Key>.custodyfs-rename/t%2B1</Key>"
		     "<VersionId>v2</VersionId><IsLatest>true</IsLatest>"
		     "<LastModified>2026-12-02T04:00:01.000Z</LastModified>"
		     "</DeleteMarker></ListVersionsResult>";
	static const char last[] =
	    XML_DECL "<ListVersionsResult " S3_NS ">"
		     "<IsTruncated>false</IsTruncated>"
		     "<Version><Key>k</Key><VersionId>null</VersionId>"
		     "<IsLatest>true</IsLatest><Size>1</Size></Version>"
		     "</ListVersionsResult>";
	static const char no_id[] =
	    XML_DECL "<ListVersionsResult " S3_NS ">"
		     "<IsTruncated>false</IsTruncated>"
		     "<Version><Key>k2</Key><Size>1</Size></Version>"
		     "</ListVersionsResult>";
	static const char objects[] =
	    XML_DECL "<ListBucketResult " S3_NS ">"
		     "<IsTruncated>false</IsTruncated>"
		     "<Contents><Key>k</Key><Size>1</Size></Contents>"
		     "</ListBucketResult>";
	struct s3_list_result r = {0};

	(void)state;
	assert_int_equal(
	    s3xml_parse_list_versions(body, strlen(body), 1, &r, NULL), 0);
	assert_int_equal(r.truncated, 1);
	assert_string_equal(r.next_token, ".custodyfs-rename/t+1");
	assert_string_equal(r.next_version, "v2");
	assert_int_equal(r.n_entries, 2);
	assert_string_equal(r.entries[0].key, ".custodyfs-rename/t+1");
	assert_string_equal(r.entries[0].version_id, "v1");
	assert_int_equal(r.entries[0].delete_marker, 0);
	assert_int_equal(r.entries[0].is_latest, 0);
	assert_string_equal(r.entries[0].etag, "abc");
	assert_true(r.entries[0].size == 3);
	assert_string_equal(r.entries[1].version_id, "v2");
	assert_int_equal(r.entries[1].delete_marker, 1);
	assert_int_equal(r.entries[1].is_latest, 1);
	assert_int_equal(
	    s3xml_parse_list_versions(last, strlen(last), 0, &r, NULL), 0);
	assert_int_equal(r.truncated, 0);
	assert_null(r.next_token);
	assert_null(r.next_version);
	assert_int_equal(r.n_entries, 3);
	assert_string_equal(r.entries[2].version_id, "null");
	assert_int_equal(
	    s3xml_parse_list_versions(no_id, strlen(no_id), 0, &r, NULL),
	    -EPROTO);
	assert_int_equal(r.n_entries, 3);
	assert_int_equal(
	    s3xml_parse_list_versions(objects, strlen(objects), 0, &r, NULL),
	    -EPROTO);
	assert_int_equal(r.n_entries, 3);
	/* and a version listing is no object listing */
	assert_int_equal(s3xml_parse_list(body, strlen(body), 1, &r, NULL),
			 -EPROTO);
	s3xml_list_free(&r);
	assert_null(r.next_version);
}

static void test_hostile(void **state)
{
	struct s3_list_result r = {0};
	struct s3_error err;
	char etag[80];
	char *id = NULL;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(hostile); i++) {
		size_t len = strlen(hostile[i]);

		CASE_INT(i, s3xml_parse_error(hostile[i], len, &err),
				 -EPROTO);
		CASE_INT(i, s3xml_parse_list(hostile[i], len, 0, &r, &err),
				 -EPROTO);
		CASE_INT(i, s3xml_parse_initiate(hostile[i], len, &id,
						      &err),
				 -EPROTO);
		assert_null(id);
		CASE_INT(i, s3xml_parse_etag_result(hostile[i], len, etag,
							 sizeof(etag), &err),
				 -EPROTO);
	}
	s3xml_list_free(&r);
}

/* ---- Multipart and copy results --------------------------------------- */

static void test_initiate(void **state)
{
	static const char body[] =
		XML_DECL
		"<InitiateMultipartUploadResult " S3_NS ">"
		"<Bucket>example-bucket</Bucket><Key>example-object</Key>"
		"<UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIH"
		"VwbG9hZA</UploadId></InitiateMultipartUploadResult>";
	static const char *const bad[] = {
		"<InitiateMultipartUploadResult><Bucket>b</Bucket>"
		"</InitiateMultipartUploadResult>",
		"<InitiateMultipartUploadResult><UploadId></UploadId>"
		"</InitiateMultipartUploadResult>",
		"<InitiateMultipartUploadResult><UploadId>a</UploadId>"
		"<UploadId>b</UploadId></InitiateMultipartUploadResult>",
		"<InitiateMultipartUploadResult><UploadId>a</UploadId>",
		"<CopyObjectResult><ETag>x</ETag></CopyObjectResult>",
		"",
	};
	char *id = NULL;
	size_t i;

	(void)state;
	assert_int_equal(s3xml_parse_initiate(body, strlen(body), &id, NULL),
			 0);
	assert_string_equal(id, "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5t"
				"MnRzIHVwbG9hZA");
	free(id);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		id = (char *)"poison";
		CASE_INT(i, s3xml_parse_initiate(bad[i], strlen(bad[i]),
						      &id, NULL),
				 -EPROTO);
		assert_null(id);
	}
}

struct etag_case {
	const char *body;
	int rc;
	const char *etag; /* when rc == 0 */
	const char *code; /* when the body is an <Error> */
};

static const struct etag_case etag_cases[] = {
	{XML_DECL "<CompleteMultipartUploadResult " S3_NS ">"
		  "<Location>http://Example-Bucket.s3.amazonaws.com/"
		  "Example-Object</Location><Bucket>Example-Bucket</Bucket>"
		  "<Key>Example-Object</Key>"
		  "<ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag>"
		  "</CompleteMultipartUploadResult>",
	 0, "3858f62230ac3c915f300c664312c11f-9", NULL},
	{XML_DECL "<CopyObjectResult " S3_NS ">"
		  "<LastModified>2009-10-28T22:32:00</LastModified>"
		  "<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>"
		  "</CopyObjectResult>",
	 0, "9b2cf535f27731c974343645a3985328", NULL},
	{XML_DECL "<CopyPartResult>"
		  "<LastModified>2011-04-11T20:34:56.000Z</LastModified>"
		  "<ETag>\"9b2cf535f27731c974343645a3985328\"</ETag>"
		  "</CopyPartResult>",
	 0, "9b2cf535f27731c974343645a3985328", NULL},
	/* unquoted ETag, as some stores send it */
	{"<CopyPartResult><ETag>abc</ETag></CopyPartResult>", 0, "abc", NULL},
	/* 200 OK carrying an error: CompleteMultipartUpload */
	{XML_DECL "<Error><Code>InternalError</Code>"
		  "<Message>We encountered an internal error. Please try "
		  "again.</Message>"
		  "<RequestId>656c76696e6727732072657175657374</RequestId>"
		  "<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTa"
		  "OFg==</HostId></Error>",
	 -EIO, NULL, "InternalError"},
	/* 200 OK carrying an error: CopyObject */
	{XML_DECL "<Error><Code>SlowDown</Code><Message>Please reduce your "
		  "request rate.</Message><RequestId>A1</RequestId></Error>",
	 -EAGAIN, NULL, "SlowDown"},
	{XML_DECL "<Error " S3_NS "><Code>NoSuchKey</Code>"
		  "<Message>The specified key does not exist.</Message>"
		  "<Key>a</Key><RequestId>B2</RequestId></Error>",
	 -ENOENT, NULL, "NoSuchKey"},
	{"<Error><Code>NoSuchUpload</Code></Error>", -ENOENT, NULL,
	 "NoSuchUpload"},
	{"<Error><Code>EntityTooSmall</Code></Error>", -EINVAL, NULL,
	 "EntityTooSmall"},
	{"<Error><Code>XMinioStorageFull</Code></Error>", -ENOSPC, NULL,
	 "XMinioStorageFull"},
	{"<Error><Code>SomethingNew</Code></Error>", -EIO, NULL,
	 "SomethingNew"},
	{"<Error></Error>", -EIO, NULL, ""},
	/* malformed */
	{"<CompleteMultipartUploadResult><Bucket>b</Bucket>"
	 "</CompleteMultipartUploadResult>",
	 -EPROTO, NULL, NULL},
	{"<CopyObjectResult><ETag></ETag></CopyObjectResult>", -EPROTO, NULL,
	 NULL},
	{"<CopyObjectResult><ETag>a</ETag><ETag>b</ETag></CopyObjectResult>",
	 -EPROTO, NULL, NULL},
	{"<CompleteMultipartUploadResult><ETag>\"abc\"</ETag>", -EPROTO, NULL,
	 NULL},
	{"<Error><Code>InternalError</Code>", -EPROTO, NULL, NULL},
	{"<ListBucketResult><ETag>a</ETag></ListBucketResult>", -EPROTO, NULL,
	 NULL},
	{"", -EPROTO, NULL, NULL},
	{"not xml at all", -EPROTO, NULL, NULL},
};

static void test_etag_results(void **state)
{
	struct s3_error err;
	char etag[80];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(etag_cases); i++) {
		const struct etag_case *c = &etag_cases[i];

		memset(&err, 'x', sizeof(err));
		CASE_INT(i, s3xml_parse_etag_result(c->body,
							 strlen(c->body), etag,
							 sizeof(etag), &err),
				 c->rc);
		if (c->etag)
			CASE_STR(i, etag, c->etag);
		if (c->code)
			CASE_STR(i, err.code, c->code);
		/* Without err the result is the same. */
		CASE_INT(i, s3xml_parse_etag_result(c->body,
							 strlen(c->body), etag,
							 sizeof(etag), NULL),
				 c->rc);
	}
	/* The ETag must fit the caller's buffer. */
	assert_int_equal(s3xml_parse_etag_result(etag_cases[0].body,
						 strlen(etag_cases[0].body),
						 etag, 10, NULL),
			 -EPROTO);
}

/* ---- Error documents -------------------------------------------------- */

struct error_case {
	const char *body;
	long status;
	int rc;	   /* of s3xml_parse_error */
	int err;   /* errmap_s3(status, code) when rc == 0 */
	int retry; /* errmap_s3_retryable(status, code) */
	const char *code;
	const char *request_id;
};

static const struct error_case error_cases[] = {
	{XML_DECL "<Error><Code>NoSuchKey</Code><Message>The resource you "
		  "requested does not exist</Message><Resource>/mybucket/"
		  "myfoto.jpg</Resource><RequestId>4442587FB7D0A2F9</RequestId>"
		  "</Error>",
	 404, 0, ENOENT, 0, "NoSuchKey", "4442587FB7D0A2F9"},
	{XML_DECL "<Error><Code>SlowDown</Code><Message>Reduce your request "
		  "rate.</Message><RequestId>R1</RequestId><HostId>H</HostId>"
		  "</Error>",
	 503, 0, EAGAIN, 1, "SlowDown", "R1"},
	{XML_DECL "<Error><Code>InternalError</Code><Message>We encountered "
		  "an internal error.</Message><RequestId>R2</RequestId>"
		  "</Error>",
	 500, 0, EIO, 1, "InternalError", "R2"},
	{"<Error><Code>AccessDenied</Code></Error>", 403, 0, EACCES, 0,
	 "AccessDenied", ""},
	{"<Error><Code>BucketNotEmpty</Code></Error>", 409, 0, ENOTEMPTY, 0,
	 "BucketNotEmpty", ""},
	{"<Error><Code>KeyTooLongError</Code></Error>", 400, 0, ENAMETOOLONG,
	 0, "KeyTooLongError", ""},
	{"<Error><Code>XMinioServerNotInitialized</Code><Resource>/b"
	 "</Resource></Error>",
	 503, 0, EAGAIN, 1, "XMinioServerNotInitialized", ""},
	/* another root, well-formed */
	{"<ListBucketResult><IsTruncated>false</IsTruncated>"
	 "</ListBucketResult>",
	 200, -ENOENT, 0, 0, NULL, NULL},
	/* not XML: a proxy's HTML page, an empty HEAD body */
	{"<html><body><h1>502 Bad Gateway</h1></body>", 502, -EPROTO, 0, 0,
	 NULL, NULL},
	{"", 404, -EPROTO, 0, 0, NULL, NULL},
	{"<Error><Code>NoSuchKey</Code></Error", 404, -EPROTO, 0, 0, NULL,
	 NULL},
};

static void test_error_docs(void **state)
{
	struct s3_error err;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(error_cases); i++) {
		const struct error_case *c = &error_cases[i];

		CASE_INT(i, s3xml_parse_error(c->body, strlen(c->body),
						   &err),
				 c->rc);
		CASE_INT(i, s3xml_parse_error(c->body, strlen(c->body),
						   NULL),
				 c->rc);
		if (c->rc)
			continue;
		CASE_STR(i, err.code, c->code);
		CASE_STR(i, err.request_id, c->request_id);
		CASE_INT(i, errmap_s3(c->status, err.code), c->err);
		CASE_INT(i, errmap_s3_retryable(c->status, err.code),
				 c->retry);
	}
}

/* Long fields are truncated on a UTF-8 boundary. */
static void test_error_truncation(void **state)
{
	struct sbuf b = SBUF_INIT;
	struct s3_error err;
	size_t i;

	(void)state;
	assert_int_equal(sbuf_adds(&b, "<Error><Code>NoSuchKey</Code>"
				       "<Message>x"),
			 0);
	for (i = 0; i < 300; i++)
		assert_int_equal(sbuf_adds(&b, "\xc3\xa9"), 0);
	assert_int_equal(sbuf_adds(&b, "</Message><RequestId>"), 0);
	for (i = 0; i < 200; i++)
		assert_int_equal(sbuf_addc(&b, 'r'), 0);
	assert_int_equal(sbuf_adds(&b, "</RequestId></Error>"), 0);
	assert_int_equal(s3xml_parse_error(b.s, b.len, &err), 0);
	/* 'x' plus whole two-byte characters: 1 + 2 * 127 = 255 bytes. */
	assert_int_equal(strlen(err.message), 255);
	assert_int_equal(strlen(err.request_id), sizeof(err.request_id) - 1);
	assert_string_equal(err.code, "NoSuchKey");
	sbuf_free(&b);
}

/* ---- s3err ------------------------------------------------------------ */

struct s3map_case {
	long status;
	const char *code;
	int err;
	int retry;
};

static const struct s3map_case s3map_cases[] = {
	{404, "NoSuchKey", ENOENT, 0},
	{404, "NoSuchBucket", ENOENT, 0},
	{404, "NoSuchUpload", ENOENT, 0},
	{403, "AccessDenied", EACCES, 0},
	{403, "InvalidAccessKeyId", EACCES, 0},
	{403, "SignatureDoesNotMatch", EACCES, 0},
	{403, "RequestTimeTooSkewed", EACCES, 0},
	{400, "ExpiredToken", EACCES, 0},
	{409, "BucketAlreadyOwnedByYou", EEXIST, 0},
	{409, "BucketAlreadyExists", EEXIST, 0},
	{409, "BucketNotEmpty", ENOTEMPTY, 0},
	{400, "KeyTooLongError", ENAMETOOLONG, 0},
	{400, "EntityTooLarge", EFBIG, 0},
	{400, "EntityTooSmall", EINVAL, 0},
	{400, "InvalidPart", EINVAL, 0},
	{400, "InvalidPartOrder", EINVAL, 0},
	{416, "InvalidRange", EINVAL, 0},
	{412, "PreconditionFailed", EEXIST, 0},
	{503, "SlowDown", EAGAIN, 1},
	{503, "ServiceUnavailable", EAGAIN, 1},
	{500, "InternalError", EIO, 1},
	{0, "InternalError", EIO, 1},
	{400, "RequestTimeout", ETIMEDOUT, 1},
	{400, "XAmzContentSHA256Mismatch", EIO, 0},
	{400, "BadDigest", EIO, 0},
	{400, "InvalidDigest", EINVAL, 0},
	{400, "InvalidArgument", EINVAL, 0},
	{400, "InvalidRequest", EINVAL, 0},
	{400, "MalformedXML", EINVAL, 0},
	{501, "NotImplemented", ENOTSUP, 0},
	{403, "QuotaExceeded", ENOSPC, 0},
	{507, "XMinioStorageFull", ENOSPC, 0},
	/* status only (code absent or unknown) */
	{400, NULL, EINVAL, 0},
	{401, "", EACCES, 0},
	{403, "Whatever", EACCES, 0},
	{404, NULL, ENOENT, 0},
	{405, NULL, ENOTSUP, 0},
	{409, NULL, EBUSY, 0},
	{411, NULL, EINVAL, 0},
	{412, NULL, EEXIST, 0},
	{416, NULL, EINVAL, 0},
	{429, NULL, EAGAIN, 1},
	{500, NULL, EIO, 1},
	{501, NULL, ENOTSUP, 0},
	{502, "", EIO, 1},
	{503, NULL, EAGAIN, 1},
	{504, "Unknown", EIO, 1},
	{0, NULL, EIO, 0},
	{0, "Unknown", EIO, 0},
	{200, NULL, EIO, 0},
	{301, "PermanentRedirect", EIO, 0},
	/* codes are case-sensitive */
	{0, "nosuchkey", EIO, 0},
};

static void test_errmap_s3(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(s3map_cases); i++) {
		const struct s3map_case *c = &s3map_cases[i];

		CASE_INT(i, errmap_s3(c->status, c->code), c->err);
		CASE_INT(i, errmap_s3_retryable(c->status, c->code),
				 c->retry);
	}
}

struct num_case {
	int code;
	int err;
	int retry;
};

static const struct num_case curl_cases[] = {
	{CURLE_OK, 0, 0},
	{CURLE_OPERATION_TIMEDOUT, ETIMEDOUT, 1},
	{CURLE_COULDNT_CONNECT, ECONNREFUSED, 1},
	{CURLE_COULDNT_RESOLVE_HOST, EHOSTUNREACH, 1},
	{CURLE_SEND_ERROR, ECONNRESET, 1},
	{CURLE_RECV_ERROR, ECONNRESET, 1},
	{CURLE_GOT_NOTHING, ECONNRESET, 1},
	{CURLE_PARTIAL_FILE, EIO, 1},
	{CURLE_PEER_FAILED_VERIFICATION, EACCES, 0},
	{CURLE_SSL_CACERT_BADFILE, EACCES, 0},
	{CURLE_OUT_OF_MEMORY, ENOMEM, 0},
	{CURLE_URL_MALFORMAT, EINVAL, 0},
	{CURLE_ABORTED_BY_CALLBACK, EINTR, 0},
	{CURLE_WRITE_ERROR, EIO, 0},
	{CURLE_READ_ERROR, EIO, 0},
	{CURLE_AGAIN, EAGAIN, 1},
	{-1, EIO, 0},
	{100000, EIO, 0},
};

static void test_errmap_curl(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(curl_cases); i++) {
		CASE_INT(i, errmap_curl(curl_cases[i].code),
				 curl_cases[i].err);
		CASE_INT(i, errmap_curl_retryable(curl_cases[i].code),
				 curl_cases[i].retry);
	}
}

struct sql_case {
	const char *state;
	int err;
	int retry;
};

static const struct sql_case sql_cases[] = {
	{NULL, EIO, 1},
	{"", EIO, 1},
	{"00000", 0, 0},
	{"23505", EEXIST, 0}, /* unique_violation */
	{"2BP01", ENOTEMPTY, 0}, /* a project with stored files (migration 7) */
	{"23502", EINVAL, 0}, /* not_null_violation */
	{"23503", EINVAL, 0}, /* foreign_key_violation */
	{"23514", EINVAL, 0}, /* check_violation */
	{"40001", EAGAIN, 1}, /* serialization_failure */
	{"40P01", EAGAIN, 1}, /* deadlock_detected */
	{"40003", EIO, 0},    /* statement_completion_unknown */
	{"08000", EIO, 1},
	{"08006", EIO, 1}, /* connection_failure */
	{"08P01", EIO, 1},
	{"57P01", EIO, 1}, /* admin_shutdown */
	{"57P02", EIO, 1},
	{"57P03", EIO, 1},
	{"57P04", EIO, 0}, /* database_dropped */
	{"53000", ENOSPC, 0},
	{"53100", ENOSPC, 0}, /* disk_full */
	{"53300", EAGAIN, 1}, /* too_many_connections */
	{"42501", EPERM, 0},
	{"P0001", EPERM, 0},
	{"22001", EINVAL, 0},
	{"22P02", EINVAL, 0},
	{"42P01", EIO, 0}, /* undefined_table */
	{"42601", EIO, 0}, /* syntax_error */
	{"28P01", EACCES, 0},
	{"XX000", EIO, 0},
	{"ZZ999", EIO, 0},
	{"2350", EIO, 0},
	{"235055", EIO, 0},
	{"2350a", EIO, 0},
};

static void test_errmap_sqlstate(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(sql_cases); i++) {
		const struct sql_case *c = &sql_cases[i];

		CASE_INT(i, errmap_sqlstate(c->state), c->err);
		CASE_INT(i, errmap_sqlstate_retryable(c->state), c->retry);
	}
}

/* ---- s3xml_parse_time ------------------------------------------------- */

struct time_case {
	const char *s;
	int rc;
	time_t t;
};

static const struct time_case time_cases[] = {
	{"2009-10-12T17:50:30.000Z", 0, 1255369830},
	{"2009-10-12T17:50:30Z", 0, 1255369830},
	{"2009-10-12T17:50:30.999999Z", 0, 1255369830},
	{"1970-01-01T00:00:00.000Z", 0, 0},
	{"1969-12-31T23:59:59Z", 0, -1},
	{"2024-02-29T12:00:00Z", 0, 1709208000},
	{"1999-12-31T23:59:59.5Z", 0, 946684799},
	{"2023-02-29T00:00:00Z", -EINVAL, 0},
	{"2009-04-31T00:00:00Z", -EINVAL, 0},
	{"2009-13-01T00:00:00Z", -EINVAL, 0},
	{"2009-00-01T00:00:00Z", -EINVAL, 0},
	{"2009-10-00T00:00:00Z", -EINVAL, 0},
	{"2009-10-12T24:00:00Z", -EINVAL, 0},
	{"2009-10-12T17:60:00Z", -EINVAL, 0},
	{"2009-10-12T17:50:60Z", -EINVAL, 0},
	{"2009-10-12T17:50:30", -EINVAL, 0},
	{"2009-10-12T17:50:30.Z", -EINVAL, 0},
	{"2009-10-12T17:50:30.000", -EINVAL, 0},
	{"2009-10-12T17:50:30+00:00", -EINVAL, 0},
	{"2009-10-12T17:50:30.000Zjunk", -EINVAL, 0},
	{"2009-10-12 17:50:30Z", -EINVAL, 0},
	{"2009-1-12T17:50:30Z", -EINVAL, 0},
	{"Mon, 12 Oct 2009 17:50:30 GMT", -EINVAL, 0},
	{"", -EINVAL, 0},
	{NULL, -EINVAL, 0},
};

static void test_parse_time(void **state)
{
	size_t i;
	time_t t;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(time_cases); i++) {
		const struct time_case *c = &time_cases[i];

		t = 12345;
		CASE_INT(i, s3xml_parse_time(c->s, &t), c->rc);
		CASE_INT(i, t, c->rc ? 12345 : c->t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_list_two_pages),
		cmocka_unit_test(test_list_empty_and_prefixed),
		cmocka_unit_test(test_list_url_encoded),
		cmocka_unit_test(test_list_bad),
		cmocka_unit_test(test_list_accumulate),
		cmocka_unit_test(test_list_large),
		cmocka_unit_test(test_list_bounds),
		cmocka_unit_test(test_list_versions),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_initiate),
		cmocka_unit_test(test_etag_results),
		cmocka_unit_test(test_error_docs),
		cmocka_unit_test(test_error_truncation),
		cmocka_unit_test(test_errmap_s3),
		cmocka_unit_test(test_errmap_curl),
		cmocka_unit_test(test_errmap_sqlstate),
		cmocka_unit_test(test_parse_time),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
