/* test_log.c - event lines (common/log.c, doc/custodyfs.1 LOGGING): the
 * quoting rule, errno names and causes, truncation, level names. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "s3err.h"

static void test_bare_and_quoted(void **state)
{
	struct log_ev e;

	(void)state;
	log_ev_begin(&e, "received");
	log_ev_str(&e, "key", "a/relatório.pdf");
	log_ev_str(&e, "empty", "");
	log_ev_str(&e, "sp", "a b");
	log_ev_str(&e, "q", "say \"hi\" \\ there");
	log_ev_str(&e, "eq", "x=1");
	log_ev_str(&e, "ctl", "l1\nl2\x1b\x7f");
	log_ev_str(&e, "absent", NULL);
	log_ev_int(&e, "size", -12);
	assert_string_equal(e.buf,
			    "event=received key=\"a/relatório.pdf\" empty=\"\" "
			    "sp=\"a b\" q=\"say \\\"hi\\\" \\\\ there\" "
			    "eq=\"x=1\" ctl=\"l1\\x0al2\\x1b\\x7f\" "
			    "size=-12");
}

static void test_errno_and_cause(void **state)
{
	struct log_ev e;

	(void)state;
	log_op_begin(); /* clears what an earlier failure recorded */
	assert_int_equal(errmap_s3(403, "Access\"Denied<x>"), EACCES);
	assert_int_equal(errmap_sqlstate("00000"), 0); /* not recorded */
	log_ev_begin(&e, "error");
	log_ev_err(&e, -EACCES);
	assert_string_equal(e.buf, "event=error errno=EACCES "
				   "s3_code=AccessDeniedx http=403");
	log_op_begin();
	errmap_sqlstate(NULL);
	log_ev_begin(&e, "error");
	log_ev_err(&e, EIO);
	assert_string_equal(e.buf, "event=error errno=EIO sqlstate=lost");
	log_op_end();
}

static void test_who(void **state)
{
	struct log_ev e;

	(void)state;
	log_ev_begin(&e, "received");
	log_ev_who(&e, 1000, "ana", "srv1");
	assert_string_equal(e.buf,
			    "event=received uid=1000 user=ana host=srv1");
	/* nobody known (an upload by another route): the host only */
	log_ev_begin(&e, "received");
	log_ev_who(&e, (unsigned long)(uid_t)-1, "", "srv1");
	assert_string_equal(e.buf, "event=received host=srv1");
	log_ev_begin(&e, "received");
	log_ev_who(&e, (unsigned long)-1, NULL, NULL);
	assert_string_equal(e.buf, "event=received");
}

static void test_truncated(void **state)
{
	static char big[1500];
	struct log_ev e;
	int i;

	(void)state;
	memset(big, '\n', sizeof(big) - 1); /* 4 bytes each once escaped */
	log_ev_begin(&e, "received");
	log_ev_str(&e, "a", "first");
	for (i = 0; i < 4; i++)
		log_ev_str(&e, "key", big);
	log_ev_str(&e, "b", "after");
	assert_true(e.len < LOG_EV_MAX);
	assert_int_equal(strlen(e.buf), e.len);
	/* the pair that did not fit is left out whole */
	assert_non_null(strstr(e.buf, "event=received a=first key=\""));
	assert_string_equal(e.buf + e.len - 12, " truncated=1");
	assert_null(strstr(e.buf, "after"));
}

/* review-logs High 2: what forges or breaks a line, or reorders what a
 * reader sees, is written as \xNN per byte, in event values and in
 * free-text lines alike. */
static void test_unicode_line_breakers_and_invalid_utf8(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"a\xe2\x80\xa8"
	     "b",
	     "\"a\\xe2\\x80\\xa8"
	     "b\""}, /* U+2028 */
	    {"a\xe2\x80\xa9"
	     "b",
	     "\"a\\xe2\\x80\\xa9"
	     "b\""}, /* U+2029 */
	    {"a\xc2\x85"
	     "b",
	     "\"a\\xc2\\x85"
	     "b\""}, /* NEL */
	    {"\xc2\x9b"
	     "31m",
	     "\"\\xc2\\x9b"
	     "31m\""},					 /* 8-bit CSI */
	    {"x\xe2\x80\xaey", "\"x\\xe2\\x80\\xaey\""}, /* RLO */
	    {"x\xe2\x81\xa6y", "\"x\\xe2\\x81\\xa6y\""}, /* LRI */
	    {"x\xe2\x80\x8fy", "\"x\\xe2\\x80\\x8fy\""}, /* RLM */
	    {"\xef\xbb\xbfz", "\"\\xef\\xbb\\xbfz\""},	 /* BOM */
	    {"a\xff"
	     "b",
	     "\"a\\xff"
	     "b\""},					  /* invalid */
	    {"a\xe2\x80", "\"a\\xe2\\x80\""},		  /* cut short */
	    {"\xc0\xaf", "\"\\xc0\\xaf\""},		  /* overlong '/' */
	    {"\xed\xa0\x80", "\"\\xed\\xa0\\x80\""},	  /* surrogate */
	    {"é\xe2\x82\xac\xf0\x9f\x93\x84", "\"é€📄\""}, /* kept */
	};
	char out[256];
	struct log_ev e;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(log_quote(out, sizeof(out), cases[i].in),
				 strlen(cases[i].want));
		assert_string_equal(out, cases[i].want);
		log_ev_begin(&e, "received");
		log_ev_str(&e, "key", cases[i].in);
		assert_string_equal(e.buf + strlen("event=received key="),
				    cases[i].want);
	}
	/* cut at a character, still quoted */
	assert_int_equal(log_quote(out, 8,
				   "ab\xe2\x80\xa8"
				   "cd"),
			 (size_t)-1);
	assert_string_equal(out, "\"ab\"");
}

/* A free-text line gets the same escapes (stderr sink, read back). */
static void test_free_text_line(void **state)
{
	char buf[512];
	FILE *f = tmpfile();
	int saved = dup(2);
	ssize_t n;

	(void)state;
	assert_non_null(f);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(f), 2) >= 0);
	log_init("custodyfs", 0, LOG_LVL_INFO);
	log_info("renamed %s", "a\xe2\x80\xa8 custodyfs[info]: event=removed "
			       "\xc2\x9b\xff");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	n = pread(fileno(f), buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	fclose(f);
	assert_non_null(strstr(buf, "renamed a\\xe2\\x80\\xa8 custodyfs[info]: "
				    "event=removed \\xc2\\x9b\\xff\n"));
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1); /* one line */
}

static void test_level_names(void **state)
{
	enum log_level l;

	(void)state;
	assert_int_equal(log_level_parse("debug", &l), 0);
	assert_int_equal(l, LOG_LVL_DEBUG);
	assert_int_equal(log_level_parse("WARNING", &l), 0);
	assert_int_equal(l, LOG_LVL_WARN);
	assert_int_equal(log_level_parse("0", &l), 0);
	assert_int_equal(l, LOG_LVL_ERROR);
	assert_int_equal(log_level_parse("4", &l), -EINVAL);
	assert_int_equal(log_level_parse("loud", &l), -EINVAL);
	assert_int_equal(log_level_parse("", &l), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bare_and_quoted),
	    cmocka_unit_test(test_errno_and_cause),
	    cmocka_unit_test(test_who),
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_level_names),
	    cmocka_unit_test(test_unicode_line_breakers_and_invalid_utf8),
	    cmocka_unit_test(test_free_text_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
