/* test_cfg.c - configuration parsing and the secret-permission refusal. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cfg.h"

static char dir[64];

static const char *write_cfg(const char *name, const char *text, mode_t mode)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static const char full[] =
	"[s3]\n"
	"endpoint = http://127.0.0.1:9000\n"
	"region = eu-west-1\n"
	"access_key_id = AKIDTEST\n"
	"secret_access_key = s3cr3t\n"
	"reception_bucket = in-bucket\n"
	"storage_bucket = out-bucket\n"
	"path_style = false\n"
	"[postgres]\n"
	"conninfo = host=127.0.0.1 port=5432 dbname=custody user=custody\n"
	"[fs]\n"
	"spool_dir = /tmp/spool\n"
	"dedup = path\n"
	"part_size = 8M\n";

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/cfgtest.XXXXXX");
	assert_non_null(mkdtemp(dir));
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
	return 0;
}

static void test_full(void **state)
{
	struct cfg c;
	char err[256];

	(void)state;
	assert_int_equal(cfg_load(write_cfg("a.ini", full, 0600), &c, err,
				  sizeof(err)),
			 0);
	assert_string_equal(c.endpoint, "http://127.0.0.1:9000");
	assert_string_equal(c.region, "eu-west-1");
	assert_string_equal(c.access_key_id, "AKIDTEST");
	assert_string_equal(c.secret_access_key, "s3cr3t");
	assert_string_equal(c.reception_bucket, "in-bucket");
	assert_string_equal(c.storage_bucket, "out-bucket");
	assert_int_equal(c.path_style, 0);
	assert_int_equal(c.verify_tls, 1);
	assert_int_equal(c.dedup, CFG_DEDUP_PATH);
	assert_int_equal(c.part_size, 8ULL << 20);
	assert_string_equal(c.spool_dir, "/tmp/spool");
	cfg_free(&c);
}

static void test_secret_permissions(void **state)
{
	struct cfg c;
	char err[256];

	(void)state;
	assert_int_equal(cfg_load(write_cfg("b.ini", full, 0644), &c, err,
				  sizeof(err)),
			 -EACCES);
	assert_non_null(strstr(err, "chmod 600"));
	assert_null(strstr(err, "s3cr3t"));
	assert_int_equal(cfg_load(write_cfg("c.ini", full, 0640), &c, err,
				  sizeof(err)),
			 -EACCES);
}

static void test_defaults_and_env(void **state)
{
	static const char nosecret[] =
		"[s3]\nendpoint = https://s3.example.com\n"
		"[postgres]\nconninfo = dbname=custody\n";
	const char *p = write_cfg("d.ini", nosecret, 0644);
	struct cfg c;
	char err[256];

	(void)state;
	/* No secret in a world-readable file is fine, but then we need
	 * credentials from somewhere. */
	assert_int_equal(cfg_load(p, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "credentials"));
	setenv("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "ENVSECRET", 1);
	assert_int_equal(cfg_load(p, &c, err, sizeof(err)), 0);
	assert_string_equal(c.access_key_id, "ENVKEY");
	assert_string_equal(c.secret_access_key, "ENVSECRET");
	assert_string_equal(c.reception_bucket, "recepcao-raw");
	assert_string_equal(c.storage_bucket, "storage-unique");
	assert_string_equal(c.region, "us-east-1");
	assert_int_equal(c.path_style, 1);
	assert_int_equal(c.dedup, CFG_DEDUP_CONTENT);
	assert_true(cfg_is_temp_name(&c, ".goutputstream-ABC123"));
	assert_true(cfg_is_temp_name(&c, "video.mp4.part"));
	assert_true(cfg_is_temp_name(&c, "x.crdownload"));
	assert_true(cfg_is_temp_name(&c, "a.tmp"));
	assert_true(cfg_is_temp_name(&c, "~$report.docx"));
	assert_true(cfg_is_temp_name(&c, ".~lock.report.odt#"));
	assert_true(cfg_is_temp_name(&c, ".notes.txt.swp"));
	assert_false(cfg_is_temp_name(&c, "report.pdf"));
	assert_false(cfg_is_temp_name(&c, "partial.txt"));
	cfg_free(&c);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void test_credentials_file(void **state)
{
	static const char nosecret[] =
		"[s3]\nendpoint = http://127.0.0.1:1\n"
		"[postgres]\nconninfo = dbname=custody\n";
	static const char creds[] =
		"[default]\naws_access_key_id = FILEKEY\n"
		"aws_secret_access_key = FILESECRET\n";
	char credpath[160];
	struct cfg c;
	char err[256];
	const char *p;

	(void)state;
	snprintf(credpath, sizeof(credpath), "%s",
		 write_cfg("credentials", creds, 0644));
	setenv("AWS_SHARED_CREDENTIALS_FILE", credpath, 1);
	p = write_cfg("e.ini", nosecret, 0644);
	assert_int_equal(cfg_load(p, &c, err, sizeof(err)), -EACCES);
	assert_int_equal(chmod(credpath, 0600), 0);
	assert_int_equal(cfg_load(p, &c, err, sizeof(err)), 0);
	assert_string_equal(c.access_key_id, "FILEKEY");
	assert_string_equal(c.secret_access_key, "FILESECRET");
	cfg_free(&c);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
}

static void test_bad_values(void **state)
{
	static const struct {
		const char *text;
		const char *err_has;
	} bad[] = {
		{"[s3]\nendpoint = ftp://x\n[postgres]\nconninfo = x\n",
		 "http"},
		{"[postgres]\nconninfo = x\n", "endpoint"},
		{"[s3]\nendpoint = http://x\n", "conninfo"},
		{"[s3]\nendpoint = http://x\nbogus = 1\n", "bogus"},
		{"[s3]\nendpoint = http://x\npath_style = maybe\n",
		 "path_style"},
		{"[fs]\ndedup = sometimes\n", "dedup"},
		{"[fs]\npart_size = 1M\n", "part_size"},
		{"[s3]\nendpoint = http://x\nreception_bucket = same\n"
		 "storage_bucket = same\n[postgres]\nconninfo = x\n",
		 "differ"},
		{"not an ini line\n", "syntax"},
	};
	struct cfg c;
	char err[256];
	size_t i;

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = cfg_load(write_cfg("bad.ini", bad[i].text, 0600), &c,
				  err, sizeof(err));

		if (rc != -EINVAL || !strstr(err, bad[i].err_has))
			fail_msg("case %zu: rc %d err '%s'", i, rc, err);
	}
	assert_int_equal(cfg_load("/nonexistent/x.ini", &c, err, sizeof(err)),
			 -ENOENT);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void test_temp_patterns(void **state)
{
	static const char text[] =
		"[s3]\nendpoint = http://x\n[postgres]\nconninfo = x\n"
		"[fs]\ntemp_patterns = *.partial, .#*\n";
	struct cfg c;
	char err[256];

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	assert_int_equal(cfg_load(write_cfg("t.ini", text, 0600), &c, err,
				  sizeof(err)),
			 0);
	assert_true(cfg_is_temp_name(&c, "a.partial"));
	assert_true(cfg_is_temp_name(&c, ".#lock"));
	assert_false(cfg_is_temp_name(&c, "a.tmp"));
	cfg_free(&c);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_secret_permissions),
		cmocka_unit_test(test_defaults_and_env),
		cmocka_unit_test(test_credentials_file),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_temp_patterns),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
