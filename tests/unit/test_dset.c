/* test_dset.c - the name index (nameidx) and the directory entry set (dset)
 * with 100,000 synthetic names: every lookup finds its entry, removed names
 * are gone, survivors keep their values. Correctness only, never timing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dset.h"
#include "nameidx.h"

#define N 100000

static char **make_names(size_t n)
{
	char **names = calloc(n, sizeof(*names));
	size_t i;

	assert_non_null(names);
	for (i = 0; i < n; i++) {
		/* Long shared prefixes and near-identical names, as in a
		 * directory of numbered scans. */
		assert_true(
		    asprintf(&names[i], "scan-2026-11-30-%07zu.tif", i) > 0);
	}
	return names;
}

static void free_names(char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static void test_nameidx_100k(void **state)
{
	struct nameidx ix = NAMEIDX_INIT;
	char **names = make_names(N);
	uintptr_t v;
	size_t i;

	(void)state;
	assert_int_equal(nameidx_get(&ix, "absent", &v), 0);
	assert_int_equal(nameidx_del(&ix, "absent"), 0);
	for (i = 0; i < N; i++)
		assert_int_equal(nameidx_put(&ix, names[i], i * 7), 0);
	assert_int_equal(ix.n, N);
	assert_true(ix.cap >= 2 * N);
	for (i = 0; i < N; i++) {
		v = 0;
		assert_int_equal(nameidx_get(&ix, names[i], &v), 1);
		assert_int_equal(v, i * 7);
	}
	/* A lookup by an equal string at another address finds it too. */
	{
		char probe[64];

		snprintf(probe, sizeof(probe), "%s", names[12345]);
		assert_int_equal(nameidx_get(&ix, probe, &v), 1);
		assert_int_equal(v, 12345 * 7);
	}
	assert_int_equal(nameidx_get(&ix, "scan-2026-11-30-0100000.tif", &v),
			 0);
	/* Remove two names of every three: the backward shift must keep
	 * every survivor reachable. */
	for (i = 0; i < N; i++)
		if (i % 3)
			assert_int_equal(nameidx_del(&ix, names[i]), 1);
	assert_int_equal(ix.n, (N + 2) / 3);
	for (i = 0; i < N; i++) {
		int found = nameidx_get(&ix, names[i], &v);

		assert_int_equal(found, i % 3 == 0);
		if (found)
			assert_int_equal(v, i * 7);
		if (i % 3)
			assert_int_equal(nameidx_del(&ix, names[i]), 0);
	}
	/* Replace: the value and the key pointer change, the count not. */
	{
		char *again = strdup(names[3]);

		assert_non_null(again);
		assert_int_equal(nameidx_put(&ix, again, 42), 0);
		assert_int_equal(ix.n, (N + 2) / 3);
		assert_int_equal(nameidx_get(&ix, names[3], &v), 1);
		assert_int_equal(v, 42);
		assert_int_equal(nameidx_del(&ix, names[3]), 1);
		free(again);
	}
	/* Put back what was removed: all found again. */
	for (i = 0; i < N; i++)
		if (i % 3)
			assert_int_equal(nameidx_put(&ix, names[i], i), 0);
	for (i = 0; i < N; i++) {
		assert_int_equal(nameidx_get(&ix, names[i], &v), i != 3);
		if (i != 3 && i % 3)
			assert_int_equal(v, i);
	}
	nameidx_free(&ix);
	assert_int_equal(ix.n, 0);
	assert_int_equal(nameidx_get(&ix, names[0], &v), 0);
	free_names(names, N);
}

static void test_dset_100k(void **state)
{
	struct dset s = DSET_INIT;
	char **names = make_names(N);
	struct dentry *e;
	size_t i, seen;
	char *mark;

	(void)state;
	for (i = 0; i < N; i++)
		assert_int_equal(
		    dset_set(&s, names[i], i % 10 == 0, i, (time_t)i, "etag"),
		    0);
	assert_int_equal(s.n, N);
	for (i = 0; i < N; i++) {
		e = dset_find(&s, names[i]);
		assert_non_null(e);
		assert_string_equal(e->name, names[i]);
		assert_int_equal(e->size, i);
		assert_int_equal(e->is_dir, i % 10 == 0);
	}
	/* Update in place: no second entry. */
	assert_int_equal(dset_set(&s, names[5], 0, 999, 1, NULL), 0);
	assert_int_equal(s.n, N);
	e = dset_find(&s, names[5]);
	assert_int_equal(e->size, 999);
	assert_string_equal(e->etag, "");
	/* Remove the odd ones (every removal moves the last entry). */
	for (i = 1; i < N; i += 2)
		assert_int_equal(dset_remove(&s, names[i]), 1);
	assert_int_equal(dset_remove(&s, names[1]), 0);
	assert_int_equal(s.n, N / 2);
	for (i = 0; i < N; i++) {
		e = dset_find(&s, names[i]);
		if (i % 2) {
			assert_null(e);
			continue;
		}
		assert_non_null(e);
		assert_string_equal(e->name, names[i]);
		assert_int_equal(e->size, i == 5 ? 999 : i);
	}
	/* The array holds exactly the survivors, each once. */
	mark = calloc(N, 1);
	assert_non_null(mark);
	for (i = 0, seen = 0; i < s.n; i++) {
		unsigned long k;

		assert_int_equal(
		    sscanf(s.ents[i].name, "scan-2026-11-30-%7lu.tif", &k), 1);
		assert_true(k < N && k % 2 == 0 && !mark[k]);
		mark[k] = 1;
		seen++;
	}
	assert_int_equal(seen, N / 2);
	free(mark);
	dset_free(&s);
	assert_null(dset_find(&s, names[0]));
	free_names(names, N);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nameidx_100k),
	    cmocka_unit_test(test_dset_100k),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
