/* test_fpset.c - the fingerprint set of the reception pipeline
 * (common/fpset.c): membership through growth, deletion inside probe
 * chains, and the bound that forgets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fpset.h"

#define N 1500

/* Distinct non-zero values whose low bits all collide (one long probe
 * chain: the worst case for deletion). */
static uint64_t val(uint64_t i)
{
	return ((i + 1) << 20) | 7;
}

static void test_add_has_del(void **state)
{
	struct fpset s = {0};
	uint64_t i;

	(void)state;
	assert_false(fpset_has(&s, 1));
	for (i = 0; i < N; i++)
		fpset_add(&s, val(i), 1u << 20);
	assert_int_equal(s.n, N);
	for (i = 0; i < N; i++)
		assert_true(fpset_has(&s, val(i)));
	assert_false(fpset_has(&s, val(N)));
	/* every other one removed: the rest stay reachable */
	for (i = 0; i < N; i += 2)
		fpset_del(&s, val(i));
	assert_int_equal(s.n, N / 2);
	for (i = 0; i < N; i++)
		assert_int_equal(fpset_has(&s, val(i)), (int)(i % 2));
	fpset_del(&s, val(N + 5)); /* absent: no change */
	assert_int_equal(s.n, N / 2);
	fpset_free(&s);
	assert_false(fpset_has(&s, val(1)));
}

static void test_bound_forgets(void **state)
{
	struct fpset s = {0};
	uint64_t i;

	(void)state;
	for (i = 0; i < 100; i++)
		fpset_add(&s, val(i), 100);
	assert_int_equal(s.n, 100);
	fpset_add(&s, val(100), 100); /* past the bound: starts over */
	assert_int_equal(s.n, 1);
	assert_true(fpset_has(&s, val(100)));
	assert_false(fpset_has(&s, val(0)));
	fpset_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_add_has_del),
	    cmocka_unit_test(test_bound_forgets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
