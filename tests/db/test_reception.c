/* test_reception.c - common/reception.c against a real PostgreSQL and a
 * real S3 server (TAP output): the foreign-upload logger computes hashes
 * from the bytes, leaves busy keys and recent uploads alone, lets the
 * uploader's row win, and scans a bucket page by page.
 *
 * Needs CUSTODYFS_TEST_PG (a role that may CREATE DATABASE; a throw-away
 * database is made and dropped) and CUSTODYFS_TEST_S3_ENDPOINT,
 * _ACCESS_KEY, _SECRET_KEY, _REGION with a bucket recepcao-raw (what
 * tests/run.sh exports for meson tests). Without them it reports a skip. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "cfg.h"
#include "db.h"
#include "hash.h"
#include "log.h"
#include "reception.h"
#include "s3.h"

#define BUCKET "recepcao-raw"

static int test_n, test_failed;
static PGconn *raw;
static struct s3_client *s3;
static struct db *db;
static struct cfg cfg;
static char prefix[64];

static void ok(int cond, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void ok(int cond, const char *fmt, ...)
{
	va_list ap;

	test_n++;
	if (!cond)
		test_failed++;
	printf("%sok %d - ", cond ? "" : "not ", test_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Every reception_audit row of key (removed ones too). */
static long rows_of(const char *key)
{
	const char *p[2] = {BUCKET, key};
	PGresult *res = PQexecParams(raw,
				     "SELECT count(*) FROM reception_audit "
				     "WHERE source_bucket = $1::text"
				     " AND object_key = $2::text",
				     2, NULL, p, NULL, NULL, 0);
	long n = -1;

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n;
}

/* Column col of key's newest row, malloc'd (NULL: none or NULL). */
static char *row_col(const char *key, const char *col)
{
	const char *p[2] = {BUCKET, key};
	char sql[256];
	PGresult *res;
	char *v = NULL;

	snprintf(sql, sizeof(sql),
		 "SELECT %s FROM reception_audit WHERE source_bucket = $1::text"
		 " AND object_key = $2::text ORDER BY id DESC LIMIT 1",
		 col);
	res = PQexecParams(raw, sql, 2, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
	    !PQgetisnull(res, 0, 0))
		v = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

static int col_is(const char *key, const char *col, const char *want)
{
	char *v = row_col(key, col);
	int same = v && want && !strcmp(v, want);

	if (!same)
		printf("# %s of %s: %s, want %s\n", col, key, v ? v : "NULL",
		       want ? want : "NULL");
	free(v);
	return same;
}

/* Waits (bounded) until key has n rows. */
static long wait_rows(const char *key, long n, int max_ms)
{
	long got = rows_of(key);
	int waited = 0;

	while (got != n && waited < max_ms) {
		sleep_ms(200);
		waited += 200;
		got = rows_of(key);
	}
	return got;
}

static struct reception *new_reception(long grace_ms)
{
	cfg.foreign_grace_ms = grace_ms;
	return reception_new(&cfg, s3, db);
}

static void put(const char *key, const void *buf, size_t len,
		const struct s3_kv *meta, size_t n_meta, char *etag)
{
	int rc = s3_put_buf(s3, BUCKET, key, buf, len, meta, n_meta, etag);

	if (rc) {
		printf("Bail out! PUT %s: %s\n", key, strerror(-rc));
		exit(1);
	}
}

/* Point 5 and 7: a forged hash is never copied; busy keys are skipped. */
static void test_hashes_and_busy(void)
{
	struct s3_kv meta[2] = {
	    {(char *)"sha256", (char *)"0000000000000000000000000000000000"
				       "000000000000000000000000000000"},
	    {(char *)"xxh128", (char *)"00000000000000000000000000000000"},
	};
	char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX], etag[80], key[128];
	size_t len = (9u << 20) + 3, logged = 99, i;
	struct reception *r = new_reception(0);
	struct hash_ctx h;
	char *buf = malloc(len);
	int rc;

	if (!r || !buf) {
		printf("Bail out! setup\n");
		exit(1);
	}
	for (i = 0; i < len; i++)
		buf[i] = (char)(i * 2654435761u >> 13);
	hash_init(&h);
	hash_update(&h, buf, len);
	hash_final(&h, xxh, sha);
	hash_free(&h);
	snprintf(key, sizeof(key), "%s/forged.bin", prefix);
	put(key, buf, len, meta, 2, etag);
	sleep_ms(2500); /* LastModified (Swift rounds it up) + 1 s, grace 0 */
	{
		char chunk[16];
		size_t got = 0;

		rc = s3_get_range_if(s3, BUCKET, key, 1, sizeof(chunk), etag,
				     chunk, &got);
		ok(rc == 0 && got == sizeof(chunk) &&
		       !memcmp(chunk, buf + 1, sizeof(chunk)),
		   "ranged GET with If-Match of its ETag (rc %d)", rc);
		rc = s3_get_range_if(s3, BUCKET, key, 1, sizeof(chunk),
				     "0123456789abcdef0123456789abcdef", chunk,
				     &got);
		ok(rc == -EEXIST,
		   "ranged GET with another ETag: -EEXIST "
		   "(rc %d)",
		   rc);
	}

	ok(reception_busy_add(r, key) == 0 && reception_busy_add(r, key) == 0,
	   "busy twice");
	rc = reception_scan(r, prefix, &logged);
	ok(rc == 0 && logged == 0 && rows_of(key) == 0,
	   "a busy key is not logged by the scan (rc %d)", rc);
	reception_busy_del(r, key);
	rc = reception_scan(r, prefix, &logged);
	ok(rc == 0 && logged == 0 && rows_of(key) == 0,
	   "still busy after one of two dels");
	reception_busy_del(r, key);
	rc = reception_scan(r, prefix, &logged);
	ok(rc == 0 && logged == 1 && rows_of(key) == 1,
	   "logged once no longer busy (rc %d, %zu)", rc, logged);
	ok(col_is(key, "sha256", sha) && col_is(key, "xxh128", xxh),
	   "hashes computed from the bytes (9 MiB, several ranged GETs), not "
	   "the metadata's");
	ok(col_is(key, "etag", etag) && col_is(key, "origin", "foreign"),
	   "etag and origin of the row");
	rc = reception_scan(r, prefix, &logged);
	ok(rc == 0 && logged == 0 && rows_of(key) == 1,
	   "a second scan: no row");
	reception_busy_del(r, "never/added"); /* harmless */
	reception_free(r);
	free(buf);
}

/* Point 7: an observer waits out the grace period, and a row the uploader
 * commits meanwhile wins. */
static void test_grace(void)
{
	char key_a[128], key_b[128], etag_a[80], etag_b[80];
	struct reception *r = new_reception(3000);
	struct reception_new rn = {0};
	struct actor who = {.uid = 1234};
	size_t logged = 99;
	int rc, ins = 0;

	snprintf(key_a, sizeof(key_a), "%s/young.bin", prefix);
	snprintf(key_b, sizeof(key_b), "%s/uploader.bin", prefix);
	put(key_a, "young", 5, NULL, 0, etag_a);
	put(key_b, "by the uploader", 15, NULL, 0, etag_b);
	rc = reception_scan(r, prefix, &logged);
	ok(rc == 0 && logged == 0 && rows_of(key_a) == 0 && rows_of(key_b) == 0,
	   "recent uploads are not logged at once");

	/* the uploader (another mount) commits its row within the grace */
	snprintf(who.user, sizeof(who.user), "uploader");
	snprintf(who.host, sizeof(who.host), "host-b");
	rn.source_bucket = BUCKET;
	rn.object_key = key_b;
	rn.size = 15;
	rn.etag = etag_b;
	rn.origin = "mount";
	rn.who = &who;
	rc = db_reception_record(db, &rn, "overwritten", NULL, &ins);
	ok(rc == 0 && ins == 1, "the uploader's row");

	ok(wait_rows(key_a, 1, 20000) == 1,
	   "the foreign upload is logged once its grace has passed");
	sleep_ms(2000);
	reception_drain(r);
	ok(rows_of(key_a) == 1 && col_is(key_a, "origin", "foreign"),
	   "exactly one row for it");
	ok(rows_of(key_b) == 1 && col_is(key_b, "origin", "mount") &&
	       col_is(key_b, "received_user", "uploader"),
	   "the uploader's row is the only one for its upload");
	reception_free(r);
}

/* Point 10: more keys than one listing page. */
static void test_paged_scan(void)
{
	char sub[96], key[160];
	struct reception *r;
	size_t logged = 0;
	int i, rc, n = 1100;

	snprintf(sub, sizeof(sub), "%s/many", prefix);
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s/%05d", sub, i);
		put(key, key, strlen(key), NULL, 0, NULL);
	}
	sleep_ms(2500);
	r = new_reception(0);
	rc = reception_scan(r, sub, &logged);
	ok(rc == 0 && logged == (size_t)n,
	   "a scan over two listing pages logs every object (%zu of %d)",
	   logged, n);
	snprintf(key, sizeof(key), "%s/%05d", sub, n - 1);
	ok(rows_of(key) == 1, "the last key, on the second page");
	rc = reception_scan(r, sub, &logged);
	ok(rc == 0 && logged == 0, "again: nothing new");
	reception_free(r);
}

/* Deletes what the test put under prefix. */
static void cleanup(void)
{
	struct s3_list_result res = {0};
	size_t i;

	if (s3_list_all(s3, BUCKET, prefix, NULL, 0, &res) == 0)
		for (i = 0; i < res.n_entries; i++)
			s3_delete(s3, BUCKET, res.entries[i].key);
	s3xml_list_free(&res);
}

/* The checks against one S3 server. 0, or 1 when it cannot be used. */
static int run_backend(const char *name, const char *ep, const char *ak,
		       const char *sk, const char *region)
{
	struct s3_config sc = {0};

	printf("# %s at %s\n", name, ep);
	sc.endpoint = ep;
	sc.region = region ? region : "us-east-1";
	sc.access_key_id = ak;
	sc.secret_access_key = sk;
	sc.path_style = 1;
	sc.verify_tls = 1;
	s3 = s3_client_new(&sc);
	if (!s3) {
		printf("Bail out! s3 client for %s\n", name);
		return 1;
	}
	snprintf(prefix, sizeof(prefix), "rcptest-%s-%ld-%ld", name,
		 (long)getpid(), (long)time(NULL));
	test_hashes_and_busy();
	test_grace();
	test_paged_scan();
	cleanup();
	s3_client_free(s3);
	s3 = NULL;
	return 0;
}

int main(void)
{
	const char *pg = getenv("CUSTODYFS_TEST_PG");
	const char *ep = getenv("CUSTODYFS_TEST_S3_ENDPOINT");
	const char *sw;
	char dbname[96], q[192], conninfo[512], err[256];
	PGconn *admin;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	log_init("test_reception", 0, LOG_LVL_ERROR);
	if (!pg || !*pg || !ep || !*ep) {
		printf("1..0 # SKIP CUSTODYFS_TEST_PG / CUSTODYFS_TEST_S3_* "
		       "not set\n");
		return 0;
	}
	admin = PQconnectdb(pg);
	if (PQstatus(admin) != CONNECTION_OK) {
		printf("Bail out! %s", PQerrorMessage(admin));
		return 1;
	}
	snprintf(dbname, sizeof(dbname), "custodyfs_test_rcp_%ld",
		 (long)getpid());
	snprintf(q, sizeof(q), "CREATE DATABASE \"%s\"", dbname);
	PQclear(PQexec(admin, q));
	snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", pg, dbname);
	raw = PQconnectdb(conninfo);
	db = db_open(conninfo, 4, err, sizeof(err));
	if (PQstatus(raw) != CONNECTION_OK || !db || db_migrate(db)) {
		printf("Bail out! database: %s\n", db ? "migrate" : err);
		return 1;
	}
	cfg.reception_bucket = (char *)BUCKET;
	cfg.part_size = 16u << 20;
	cfg.copy_threshold = 5ULL << 30;
	cfg.scan_interval_s = 0;
	if (run_backend("s3rver", ep, getenv("CUSTODYFS_TEST_S3_ACCESS_KEY"),
			getenv("CUSTODYFS_TEST_S3_SECRET_KEY"),
			getenv("CUSTODYFS_TEST_S3_REGION")))
		return 1;
	sw = getenv("CUSTODYFS_TEST_SWIFT_ENDPOINT");
	if (sw && *sw &&
	    run_backend("swift", sw, getenv("CUSTODYFS_TEST_SWIFT_ACCESS_KEY"),
			getenv("CUSTODYFS_TEST_SWIFT_SECRET_KEY"), "us-east-1"))
		return 1;

	db_close(db);
	PQfinish(raw);
	snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)",
		 dbname);
	if (!getenv("CUSTODYFS_TEST_KEEP"))
		PQclear(PQexec(admin, q));
	PQfinish(admin);
	rc = test_failed ? 1 : 0;
	printf("1..%d\n", test_n);
	if (test_failed)
		printf("# %d of %d checks failed\n", test_failed, test_n);
	return rc;
}
