/* test_counters.c - the counters' and histograms' Prometheus text
 * exposition (common/counters.c): names, HELP/TYPE, cumulative buckets,
 * the sum in seconds, labels, escaping. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "counters.h"

/* The exposition as one string (the caller frees it). */
static char *expose(const char *labels)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(ctr_write_prom(f, labels), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* 1 when text holds line as a whole line. */
static int has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && (p[n] == '\n' || !p[n]))
			return 1;
		p += n;
	}
	return 0;
}

static void test_counters_and_types(void **state)
{
	char *t;

	(void)state;
	ctr_add(CTR_RECEIVED, 3);
	ctr_add(CTR_BYTES_RECEIVED, 70020);
	ctr_add(CTR_DUP_CONTENT, 1);
	t = expose(NULL);
	assert_true(has_line(t, "# TYPE custodyfs_receptions_total counter"));
	assert_true(has_line(t, "custodyfs_receptions_total 3"));
	assert_true(has_line(t, "custodyfs_received_bytes_total 70020"));
	assert_true(has_line(
	    t, "custodyfs_promotions_total{outcome=\"duplicate_content\"} 1"));
	assert_true(
	    has_line(t, "custodyfs_promotions_total{outcome=\"copied\"} 0"));
	assert_true(
	    has_line(t, "# TYPE custodyfs_upload_duration_seconds histogram"));
	assert_non_null(strstr(t, "# HELP custodyfs_upload_duration_seconds "));
	free(t);
}

static void test_histogram(void **state)
{
	char *t;

	(void)state;
	hist_observe_ns(HIST_PROMOTION, 1500000, 0);	     /* 1.5 ms */
	hist_observe_ns(HIST_PROMOTION, 1000000000, 0);	     /* 1 s: le="1" */
	hist_observe_ns(HIST_PROMOTION, 400000000000ULL, 1); /* 400 s */
	t = expose("mountpoint=\"/m\"");
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"0.001\"} 0"));
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"0.005\"} 1"));
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"0.5\"} 1"));
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"1\"} 2"));
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"300\"} 2"));
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"+Inf\"} 3"));
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_sum{"
				"mountpoint=\"/m\"} 401.001500000"));
	assert_true(has_line(t, "custodyfs_promotion_duration_seconds_count{"
				"mountpoint=\"/m\"} 3"));
	free(t);
}

static void test_s3_and_sql(void **state)
{
	char *t;

	(void)state;
	hist_observe_ns(HIST_S3_COPY, 20000000, 0);
	hist_observe_ns(HIST_S3_HEAD, 2000000, 1);
	hist_observe_ns(HIST_SQL, 3000000, 1);
	t = expose("");
	assert_true(has_line(t, "custodyfs_s3_request_duration_seconds_count{"
				"op=\"copy\"} 1"));
	assert_true(has_line(t, "custodyfs_s3_request_duration_seconds_bucket{"
				"op=\"copy\",le=\"0.025\"} 1"));
	assert_true(has_line(t, "custodyfs_s3_request_duration_seconds_sum{"
				"op=\"copy\"} 0.020000000"));
	assert_true(
	    has_line(t, "custodyfs_s3_request_failures_total{op=\"head\"} 1"));
	assert_true(
	    has_line(t, "custodyfs_s3_request_failures_total{op=\"copy\"} 0"));
	assert_true(has_line(t, "custodyfs_sql_failures_total 1"));
	assert_true(has_line(t, "custodyfs_sql_duration_seconds_count 1"));
	/* one TYPE line per family, however many label sets */
	{
		const char *p = t;
		int n = 0;

		while ((p = strstr(p, "# TYPE custodyfs_s3_request_duration_"
				      "seconds ")) != NULL) {
			n++;
			p++;
		}
		assert_int_equal(n, 1);
	}
	free(t);
}

/* The per-file breakdown: stages and FUSE operations as summaries (a sum
 * in seconds and a count per label), the file-open histogram. */
static void test_stages_and_fuse_ops(void **state)
{
	uint64_t t0;
	char *t;

	(void)state;
	stage_observe_ns(STG_RECEPTION_ROW, 2500000);
	stage_observe_ns(STG_RECEPTION_ROW, 1500000);
	stage_observe_ns(STG_HASH, 7);
	fop_observe_ns(FOP_GETATTR, 1000);
	fop_observe_ns(FOP_GETATTR, 2000);
	fop_observe_ns(FOP_GETATTR, 3000);
	fop_observe_ns(FOP_REMOVEXATTR, 1000000000);
	hist_observe_ns(HIST_FILE_OPEN, 6000000, 0);
	/* out of range: ignored, never written past the arrays */
	stage_observe_ns(STG_N, 1);
	fop_observe_ns(FOP_N, 1);
	/* since(): a later t0 counts as 0, and a real one as >= 0 */
	t0 = ctr_now_ns();
	fop_observe_since(FOP_LINK, t0 + 1000000000000ULL);
	stage_observe_since(STG_SQL_COMMIT, t0);
	t = expose("mountpoint=\"/m\"");
	assert_true(
	    has_line(t, "# TYPE custodyfs_stage_duration_seconds summary"));
	assert_true(has_line(
	    t, "# TYPE custodyfs_fuse_request_duration_seconds summary"));
	assert_true(has_line(t, "custodyfs_stage_duration_seconds_sum{"
				"mountpoint=\"/m\",stage=\"reception_row\"} "
				"0.004000000"));
	assert_true(has_line(t,
			     "custodyfs_stage_duration_seconds_count{"
			     "mountpoint=\"/m\",stage=\"reception_row\"} 2"));
	assert_true(has_line(t,
			     "custodyfs_stage_duration_seconds_sum{"
			     "mountpoint=\"/m\",stage=\"hash\"} 0.000000007"));
	assert_true(has_line(t, "custodyfs_stage_duration_seconds_count{"
				"mountpoint=\"/m\",stage=\"spool_write\"} 0"));
	assert_true(has_line(t, "custodyfs_stage_duration_seconds_count{"
				"mountpoint=\"/m\",stage=\"sql_commit\"} 1"));
	assert_true(has_line(t, "custodyfs_fuse_request_duration_seconds_count{"
				"mountpoint=\"/m\",op=\"getattr\"} 3"));
	assert_true(has_line(t,
			     "custodyfs_fuse_request_duration_seconds_sum{"
			     "mountpoint=\"/m\",op=\"getattr\"} 0.000006000"));
	assert_true(
	    has_line(t, "custodyfs_fuse_request_duration_seconds_sum{"
			"mountpoint=\"/m\",op=\"removexattr\"} 1.000000000"));
	assert_true(has_line(t, "custodyfs_fuse_request_duration_seconds_sum{"
				"mountpoint=\"/m\",op=\"link\"} 0.000000000"));
	assert_true(has_line(t, "custodyfs_fuse_request_duration_seconds_count{"
				"mountpoint=\"/m\",op=\"link\"} 1"));
	assert_true(has_line(t, "custodyfs_file_open_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"0.005\"} 0"));
	assert_true(has_line(t, "custodyfs_file_open_duration_seconds_bucket{"
				"mountpoint=\"/m\",le=\"0.01\"} 1"));
	assert_true(has_line(t, "custodyfs_file_open_duration_seconds_count{"
				"mountpoint=\"/m\"} 1"));
	/* the S3 family stops at its own ops: no op="" from the new one */
	assert_null(strstr(t, "op=\"\""));
	assert_null(strstr(t, "(null)"));
	free(t);
}

/* Database operations by name: one series per name (the same name by
 * another pointer is the same series), names escaped, NULL "unnamed". */
static void test_sql_by_name(void **state)
{
	char other[] = "reception record";
	char *t;

	(void)state;
	sql_what_observe_ns("reception record", 2000000);
	sql_what_observe_ns(other, 1000000);
	sql_what_observe_ns("claim \"a\" name", 5);
	sql_what_observe_ns(NULL, 1);
	t = expose("");
	assert_true(has_line(
	    t, "# TYPE custodyfs_sql_operation_duration_seconds summary"));
	assert_true(has_line(t,
			     "custodyfs_sql_operation_duration_seconds_count{"
			     "what=\"reception record\"} 2"));
	assert_true(has_line(t, "custodyfs_sql_operation_duration_seconds_sum{"
				"what=\"reception record\"} 0.003000000"));
	assert_true(has_line(t,
			     "custodyfs_sql_operation_duration_seconds_count{"
			     "what=\"claim \\\"a\\\" name\"} 1"));
	assert_true(has_line(t,
			     "custodyfs_sql_operation_duration_seconds_count{"
			     "what=\"unnamed\"} 1"));
	assert_null(strstr(t, "what=\"other\""));
	free(t);
}

/* Past CTR_SQL_WHATS names, the rest are counted as "other". */
static void test_sql_by_name_full(void **state)
{
	static char names[CTR_SQL_WHATS + 5][16];
	char *t;
	int i;

	(void)state;
	for (i = 0; i < CTR_SQL_WHATS + 5; i++) {
		snprintf(names[i], sizeof(names[i]), "op%d", i);
		sql_what_observe_ns(names[i], 1000);
	}
	t = expose("");
	assert_true(has_line(t,
			     "custodyfs_sql_operation_duration_seconds_count{"
			     "what=\"op0\"} 1"));
	assert_null(strstr(t, "what=\"op100\""));
	/* 3 names of test_sql_by_name took slots: 8 left over */
	assert_true(has_line(t,
			     "custodyfs_sql_operation_duration_seconds_count{"
			     "what=\"other\"} 8"));
	free(t);
}

static void test_escape(void **state)
{
	char out[16];

	(void)state;
	assert_int_equal(ctr_prom_escape("/mnt/a\"b\\c\nd", out, sizeof(out)),
			 0);
	assert_string_equal(out, "/mnt/a\\\"b\\\\c\\nd");
	assert_int_equal(ctr_prom_escape("0123456789abcdefg", out, sizeof(out)),
			 -ENAMETOOLONG);
	assert_int_equal(strlen(out), 15);
	assert_int_equal(ctr_prom_escape("ab\"", out, 4), -ENAMETOOLONG);
	assert_string_equal(out, "ab");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counters_and_types),
	    cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_s3_and_sql),
	    cmocka_unit_test(test_stages_and_fuse_ops),
	    cmocka_unit_test(test_sql_by_name),
	    cmocka_unit_test(test_sql_by_name_full),
	    cmocka_unit_test(test_escape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
