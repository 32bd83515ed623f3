/* test_names.c - name validation (SPEC §7). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "names.h"

struct name_case {
	const char *path;
	int expect;
};

static void test_relpaths(void **state)
{
	static char long_comp[300], long_key[1100];
	static const struct name_case cases[] = {
		{"a.txt", 0},
		{"dir/sub/file.pdf", 0},
		{"relatório final.pdf", 0},
		{"'; DROP TABLE storage_audit; --.pdf", 0},
		{"a+b%20c&d=e?f#g", 0},
		{"with space/and\"quote'", 0},
		{"日本語/ファイル.txt", 0},
		{"", -EINVAL},
		{".", -EINVAL},
		{"..", -EINVAL},
		{"a/../b", -EINVAL},
		{"a/./b", -EINVAL},
		{"a//b", -EINVAL},
		{"/abs", -EINVAL},
		{"trailing/", -EINVAL},
		{"ctl\x01name", -EINVAL},
		{"new\nline", -EINVAL},
		{"del\x7f", -EINVAL},
		{"bad\xff utf8", -EINVAL},
		{"overlong\xc0\xaf", -EINVAL},
		{"surrogate\xed\xa0\x80", -EINVAL},
		{"truncated\xe6\x97", -EINVAL},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = names_check_relpath(cases[i].path, 0);

		if (rc != cases[i].expect)
			fail_msg("case %zu (%s): got %d, want %d", i,
				 cases[i].path, rc, cases[i].expect);
	}
	memset(long_comp, 'x', 256);
	assert_int_equal(names_check_relpath(long_comp, 0), -ENAMETOOLONG);
	long_comp[255] = '\0';
	assert_int_equal(names_check_relpath(long_comp, 0), 0);
	/* 1024-byte key limit, counted with the prefix. */
	memset(long_key, 'k', sizeof(long_key) - 1);
	for (i = 100; i < sizeof(long_key) - 1; i += 101)
		long_key[i] = '/';
	long_key[1024] = '\0';
	assert_int_equal(names_check_relpath(long_key, 0), 0);
	assert_int_equal(names_check_relpath(long_key, 1), -ENAMETOOLONG);
	long_key[1024] = 'k';
	long_key[1025] = '\0';
	assert_int_equal(names_check_relpath(long_key, 0), -ENAMETOOLONG);
}

static void test_utf8(void **state)
{
	(void)state;
	assert_true(names_utf8_valid("plain", 5));
	assert_true(names_utf8_valid("\xc3\xa9", 2));
	assert_true(names_utf8_valid("\xf0\x9f\x98\x80", 4));
	assert_false(names_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(names_utf8_valid("\xe0\x80\x80", 3));     /* overlong */
	assert_false(names_utf8_valid("\x80", 1));
}

static void test_basename(void **state)
{
	(void)state;
	assert_string_equal(names_basename("a/b/c.txt"), "c.txt");
	assert_string_equal(names_basename("c.txt"), "c.txt");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_relpaths),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_basename),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
