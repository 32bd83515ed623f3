/* test_promote.c - the outcome decision of a promotion (SPEC §3 steps 1-4,
 * common/promote.c promote_outcome()), over every combination of what the
 * database and the store can say. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "promote.h"

/* promote_outcome(has_row, row_same, row_dup_content, dest_present,
 *                 dest_same, has_content) */

static void test_no_row(void **state)
{
	(void)state;
	/* nothing anywhere: copied, or duplicate_content under dedup */
	assert_int_equal(promote_outcome(0, 0, 0, 0, 0, 0), DB_OUT_COPIED);
	assert_int_equal(promote_outcome(0, 0, 0, 0, 0, 1),
			 DB_OUT_DUPLICATE_CONTENT);
	/* an object without a row: its bytes decide */
	assert_int_equal(promote_outcome(0, 0, 0, 1, 1, 0), DB_OUT_ADOPTED);
	assert_int_equal(promote_outcome(0, 0, 0, 1, 1, 1), DB_OUT_ADOPTED);
	assert_int_equal(promote_outcome(0, 0, 0, 1, 0, 0), DB_OUT_CONFLICT);
	assert_int_equal(promote_outcome(0, 0, 0, 1, 0, 1), DB_OUT_CONFLICT);
}

static void test_row(void **state)
{
	(void)state;
	/* the double check: row and object agree -> duplicate */
	assert_int_equal(promote_outcome(1, 1, 0, 1, 1, 0), DB_OUT_DUPLICATE);
	/* the row's object is gone -> restored */
	assert_int_equal(promote_outcome(1, 1, 0, 0, 0, 0), DB_OUT_RESTORED);
	assert_int_equal(promote_outcome(1, 1, 0, 0, 0, 1), DB_OUT_RESTORED);
	/* the object was changed behind the row: never overwritten */
	assert_int_equal(promote_outcome(1, 1, 0, 1, 0, 0), DB_OUT_CONFLICT);
	/* another content under the key: conflict, whatever the object */
	assert_int_equal(promote_outcome(1, 0, 0, 1, 1, 0), DB_OUT_CONFLICT);
	assert_int_equal(promote_outcome(1, 0, 0, 0, 0, 0), DB_OUT_CONFLICT);
	assert_int_equal(promote_outcome(1, 0, 1, 0, 0, 1), DB_OUT_CONFLICT);
	/* the key is a duplicate_content of the same content: again so */
	assert_int_equal(promote_outcome(1, 1, 1, 0, 0, 1),
			 DB_OUT_DUPLICATE_CONTENT);
	assert_int_equal(promote_outcome(1, 1, 1, 0, 0, 0),
			 DB_OUT_DUPLICATE_CONTENT);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(db_outcome_name(DB_OUT_COPIED), "copied");
	assert_string_equal(db_outcome_name(DB_OUT_DUPLICATE_CONTENT),
			    "duplicate_content");
	assert_string_equal(db_outcome_name((enum db_outcome)99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_row),
	    cmocka_unit_test(test_row),
	    cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
