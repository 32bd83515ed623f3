/* test_log.c - event lines (common/log.c, doc/custodyfs.1 LOGGING): the
 * quoting rule, errno names and causes, truncation, level names. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
			    "event=received key=a/relatório.pdf empty=\"\" "
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
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_level_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
