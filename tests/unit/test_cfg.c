/* test_cfg.c - configuration parsing and the secret-permission refusal. */
#include <errno.h>
#include <fcntl.h>
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
#include "log.h"
#include "s3.h"

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
	"part_size = 8M\n"
	"live_grace = 7\n";

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
	assert_int_equal(
	    cfg_load(write_cfg("a.ini", full, 0600), &c, err, sizeof(err)), 0);
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
	assert_int_equal(c.live_grace_s, 7);
	cfg_free(&c);
}

static void test_secret_permissions(void **state)
{
	struct cfg c;
	char err[256];

	(void)state;
	assert_int_equal(
	    cfg_load(write_cfg("b.ini", full, 0644), &c, err, sizeof(err)),
			 -EACCES);
	assert_non_null(strstr(err, "chmod 600"));
	assert_null(strstr(err, "s3cr3t"));
	assert_int_equal(
	    cfg_load(write_cfg("c.ini", full, 0640), &c, err, sizeof(err)),
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
	assert_int_equal(c.live_grace_s, 30);
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
	static const char creds[] = "[default]\naws_access_key_id = FILEKEY\n"
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
	    {"[s3]\nendpoint = ftp://x\n[postgres]\nconninfo = x\n", "http"},
		{"[postgres]\nconninfo = x\n", "endpoint"},
		{"[s3]\nendpoint = http://x\n", "conninfo"},
		{"[s3]\nendpoint = http://x\nbogus = 1\n", "bogus"},
	    {"[s3]\nendpoint = http://x\npath_style = maybe\n", "path_style"},
		{"[fs]\ndedup = sometimes\n", "dedup"},
		{"[fs]\npart_size = 1M\n", "part_size"},
		{"[fs]\nlive_grace = 1\n", "live_grace"},
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

/* [fs] ownership and permission keys: defaults, octal modes, bad values. */
static void test_permission_keys(void **state)
{
	static const char base[] = "[s3]\nendpoint = http://x\n"
				   "[postgres]\nconninfo = x\n";
	static const char *const bad[] = {
	    "[fs]\nfile_mode = 0899\n",     "[fs]\nfile_mode = 17777\n",
	    "[fs]\ndir_mode = -755\n",      "[fs]\ndir_mode = rwx\n",
	    "[fs]\nforeign_uid = -1\n",     "[fs]\nforeign_gid = 4294967295\n",
	    "[fs]\ndefault_permissions = sometimes\n",
	};
	char text[256], err[256];
	struct cfg c;
	size_t i;

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	assert_int_equal(
	    cfg_load(write_cfg("p.ini", base, 0600), &c, err, sizeof(err)), 0);
	assert_int_equal(c.file_mode, 0644);
	assert_int_equal(c.dir_mode, 0755);
	assert_int_equal(c.foreign_uid, -1);
	assert_int_equal(c.foreign_gid, -1);
	assert_int_equal(c.default_permissions, 1);
	cfg_free(&c);
	snprintf(text, sizeof(text),
		 "%s[fs]\nfile_mode = 0600\ndir_mode = 2770\n"
		 "foreign_uid = 3000\nforeign_gid = 0\n"
		 "default_permissions = false\n",
		 base);
	assert_int_equal(
	    cfg_load(write_cfg("p.ini", text, 0600), &c, err, sizeof(err)), 0);
	assert_int_equal(c.file_mode, 0600);
	assert_int_equal(c.dir_mode, 02770);
	assert_int_equal(c.foreign_uid, 3000);
	assert_int_equal(c.foreign_gid, 0);
	assert_int_equal(c.default_permissions, 0);
	cfg_free(&c);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc;

		snprintf(text, sizeof(text), "%s%s", base, bad[i]);
		rc = cfg_load(write_cfg("p.ini", text, 0600), &c, err,
			      sizeof(err));
		if (rc != -EINVAL)
			fail_msg("case %zu: rc %d", i, rc);
	}
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

/* [fs] metrics_file and metrics_interval: off and 15 s by default, an
 * absolute path, empty is off, an interval of at least 1 s. */
static void test_metrics_keys(void **state)
{
	static const char base[] = "[s3]\nendpoint = http://x\n"
				   "[postgres]\nconninfo = x\n";
	static const char *const bad[] = {
	    "[fs]\nmetrics_file = custodyfs.prom\n",
	    "[fs]\nmetrics_file = /\n",
	    "[fs]\nmetrics_interval = 0\n",
	    "[fs]\nmetrics_interval = 1m\n",
	};
	char text[256], err[256];
	struct cfg c;
	size_t i;

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	assert_int_equal(
	    cfg_load(write_cfg("m.ini", base, 0600), &c, err, sizeof(err)), 0);
	assert_null(c.metrics_file);
	assert_int_equal(c.metrics_interval_s, 15);
	cfg_free(&c);
	snprintf(text, sizeof(text),
		 "%s[fs]\nmetrics_file = /var/lib/node/custodyfs.prom\n"
		 "metrics_interval = 60\n",
		 base);
	assert_int_equal(
	    cfg_load(write_cfg("m.ini", text, 0600), &c, err, sizeof(err)), 0);
	assert_string_equal(c.metrics_file, "/var/lib/node/custodyfs.prom");
	assert_int_equal(c.metrics_interval_s, 60);
	cfg_free(&c);
	snprintf(text, sizeof(text),
		 "%s[fs]\nmetrics_file = /x.prom\nmetrics_file =\n", base);
	assert_int_equal(
	    cfg_load(write_cfg("m.ini", text, 0600), &c, err, sizeof(err)), 0);
	assert_null(c.metrics_file);
	cfg_free(&c);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc;

		snprintf(text, sizeof(text), "%s%s", base, bad[i]);
		rc = cfg_load(write_cfg("m.ini", text, 0600), &c, err,
			      sizeof(err));
		if (rc != -EINVAL || !strstr(err, "metrics_"))
			fail_msg("case %zu: rc %d err '%s'", i, rc, err);
	}
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
	assert_int_equal(
	    cfg_load(write_cfg("t.ini", text, 0600), &c, err, sizeof(err)), 0);
	assert_true(cfg_is_temp_name(&c, "a.partial"));
	assert_true(cfg_is_temp_name(&c, ".#lock"));
	assert_false(cfg_is_temp_name(&c, "a.tmp"));
	cfg_free(&c);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

/* A config whose only possible secret is its conninfo. */
static const char *conninfo_cfg(const char *conninfo, mode_t mode)
{
	static char text[16384];

	snprintf(text, sizeof(text),
		 "[s3]\nendpoint = http://127.0.0.1:9000\n"
		 "[postgres]\nconninfo = %s\n",
		 conninfo);
	return write_cfg("ci.ini", text, mode);
}

static void test_conninfo_password_is_a_secret(void **state)
{
	static const char *const secret[] = {
	    "postgresql://u:hunter2@db.example.org/custody",
	    "postgres://u:hunter2@db.example.org:5432/custody?sslmode=require",
	    "postgresql://u:hunter2@h1,h2:5433/custody",
	    "postgresql://u@db.example.org/custody?password=hunter2",
	    "postgresql://u@h/custody?sslmode=require&pass%77ord=hunter2",
	    "postgresql:///custody?host=/run/pg&password=hunter2",
	    "host=db.example.org password=hunter2 dbname=custody",
	    "host=h password = 'hun ter2' dbname=custody",
	    "host=h sslpassword=hunter2 sslkey=/k.pem",
	    "dbname=postgresql://u:hunter2@h/custody",
	    "dbname='host=h password=hunter2'",
	};
	static const char *const clean[] = {
	    "postgresql://u@db.example.org/custody?sslmode=verify-full",
	    "postgresql:///custody",
	    "host=h dbname=password_archive user=custody",
	    "host=h dbname=custody passfile=/etc/custodyfs/pgpass",
	    "service=custody",
	};
	struct cfg c;
	char err[512];
	size_t i;

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	for (i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
		int rc = cfg_load(conninfo_cfg(secret[i], 0644), &c, err,
				  sizeof(err));

		if (rc != -EACCES || !strstr(err, "chmod 600"))
			fail_msg("0644 conninfo %s: rc %d err '%s'", secret[i],
				 rc, err);
		assert_null(strstr(err, "hunter2"));
		assert_int_equal(cfg_load(conninfo_cfg(secret[i], 0640), &c,
					  err, sizeof(err)),
				 -EACCES);
		rc = cfg_load(conninfo_cfg(secret[i], 0600), &c, err,
			      sizeof(err));
		if (rc != 0)
			fail_msg("0600 conninfo %s: rc %d err '%s'", secret[i],
				 rc, err);
		assert_string_equal(c.conninfo, secret[i]);
		cfg_free(&c);
	}
	for (i = 0; i < sizeof(clean) / sizeof(clean[0]); i++) {
		int rc = cfg_load(conninfo_cfg(clean[i], 0644), &c, err,
				  sizeof(err));

		if (rc != 0)
			fail_msg("0644 conninfo %s: rc %d err '%s'", clean[i],
				 rc, err);
		assert_string_equal(c.conninfo, clean[i]);
		cfg_free(&c);
	}
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void test_size_overflow(void **state)
{
	static const struct {
		const char *line;
		const char *err_has;
	} bad[] = {
	    {"part_size = 99999999999999999999G", "part_size"},
	    /* (2^34 + 1) GiB wraps to 1 GiB in 64 bits */
	    {"part_size = 17179869185G", "part_size"},
	    {"copy_threshold = 18014398509481985M", "copy_threshold"},
	    {"copy_threshold = 18446744073709551616", "copy_threshold"},
	    {"part_size = 6G", "part_size"},
	    {"part_size = -16M", "part_size"},
	    {"part_size = 16X", "part_size"},
	};
	static const struct {
		const char *line;
		uint64_t part;
	} good[] = {
	    {"part_size = 16M", 16ULL << 20},
	    {"part_size = 5G", 5ULL << 30},
	    {"part_size = 8MiB", 8ULL << 20},
	    {"part_size = 6291456", 6291456},
	};
	char text[512];
	struct cfg c;
	char err[256];
	size_t i;

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc;

		snprintf(text, sizeof(text),
			 "[s3]\nendpoint = http://x\n[postgres]\nconninfo = x\n"
			 "[fs]\n%s\n",
			 bad[i].line);
		rc = cfg_load(write_cfg("sz.ini", text, 0600), &c, err,
			      sizeof(err));
		if (rc != -EINVAL || !strstr(err, bad[i].err_has) ||
		    !strstr(err, "line 6"))
			fail_msg("'%s': rc %d err '%s'", bad[i].line, rc, err);
	}
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text),
			 "[s3]\nendpoint = http://x\n[postgres]\nconninfo = x\n"
			 "[fs]\n%s\n",
			 good[i].line);
		assert_int_equal(cfg_load(write_cfg("sz.ini", text, 0600), &c,
					  err, sizeof(err)),
				 0);
		assert_int_equal(c.part_size, good[i].part);
		cfg_free(&c);
	}
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void test_long_lines(void **state)
{
	static char conninfo[8300], token[3000], text[12000], creds[4000];
	struct cfg c;
	char err[256];
	char credpath[160];
	size_t n;

	(void)state;
	n = (size_t)snprintf(conninfo, sizeof(conninfo),
			     "host=db.example.org dbname=custody user=custody "
			     "application_name=");
	memset(conninfo + n, 'a', 8192 - n);
	conninfo[8192] = '\0';
	assert_int_equal(
	    cfg_load(conninfo_cfg(conninfo, 0644), &c, err, sizeof(err)),
	    -EINVAL); /* no credentials yet: but not "syntax" */
	assert_null(strstr(err, "syntax"));
	memset(token, 'T', 2048);
	token[2048] = '\0';
	snprintf(creds, sizeof(creds),
		 "[default]\naws_access_key_id = FILEKEY\n"
		 "aws_secret_access_key = FILESECRET\n"
		 "aws_session_token = %s\n",
		 token);
	snprintf(credpath, sizeof(credpath), "%s",
		 write_cfg("longcreds", creds, 0600));
	setenv("AWS_SHARED_CREDENTIALS_FILE", credpath, 1);
	snprintf(text, sizeof(text),
		 "[s3]\nendpoint = http://127.0.0.1:9000\n"
		 "[postgres]\nconninfo = %s\n[fs]\nlog_level = 1\n",
		 conninfo);
	assert_int_equal(
	    cfg_load(write_cfg("long.ini", text, 0644), &c, err, sizeof(err)),
	    0);
	assert_int_equal(strlen(c.conninfo), 8192);
	assert_string_equal(c.conninfo, conninfo);
	assert_int_equal(c.log_level, 1); /* the line after it is read */
	assert_string_equal(c.session_token, token);
	cfg_free(&c);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
}

static void test_ini_syntax(void **state)
{
	static const char text[] =
	    "\xef\xbb\xbf; a comment\n"
	    "# another\n"
	    "[s3]\n"
	    "endpoint: http://127.0.0.1:9000   ; inline comment\n"
	    "region = eu;west\n"
	    "  \n"
	    "[postgres]\n"
	    "conninfo = host=h\n"
	    "  dbname=custody\n" /* continuation: inih calls again */
	    "[fs]\n"
	    "spool_dir =   /tmp/sp ool  \n";
	struct cfg c;
	char err[256];

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	assert_int_equal(
	    cfg_load(write_cfg("syn.ini", text, 0600), &c, err, sizeof(err)),
	    0);
	assert_string_equal(c.endpoint, "http://127.0.0.1:9000");
	assert_string_equal(c.region, "eu;west");
	assert_string_equal(c.conninfo, "dbname=custody");
	assert_string_equal(c.spool_dir, "/tmp/sp ool");
	cfg_free(&c);
	assert_int_equal(
	    cfg_load(
		write_cfg("syn2.ini", "[s3]\nendpoint = http://x\n[fs\n", 0600),
		&c, err, sizeof(err)),
	    -EINVAL);
	assert_non_null(strstr(err, "line 3"));
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void test_endpoint_userinfo(void **state)
{
	static const char text[] =
	    "[s3]\nendpoint = "
	    "https://AKUSER:pAsSw0rd@s3.example.org:9000/base\n"
	    "[postgres]\nconninfo = dbname=custody\n";
	char out[256];
	struct cfg c;
	char err[256];

	(void)state;
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	/* userinfo with a password is a secret in the file */
	assert_int_equal(
	    cfg_load(write_cfg("ep.ini", text, 0644), &c, err, sizeof(err)),
	    -EACCES);
	assert_null(strstr(err, "pAsSw0rd"));
	assert_int_equal(
	    cfg_load(write_cfg("ep.ini", text, 0600), &c, err, sizeof(err)),
	    -EINVAL);
	assert_null(strstr(err, "pAsSw0rd"));
	assert_null(strstr(err, "AKUSER"));
	assert_non_null(strstr(err, "https://***@s3.example.org:9000/base"));
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");

	cfg_redact_url("http://u:p@h:1/x?y=1", out, sizeof(out));
	assert_string_equal(out, "http://***@h:1/x?y=1");
	cfg_redact_url("postgresql://u:secret@h/db", out, sizeof(out));
	assert_string_equal(out, "postgresql://***@h/db");
	cfg_redact_url("http://h:9000/a@b", out, sizeof(out));
	assert_string_equal(out, "http://h:9000/a@b");
	cfg_redact_url("https://a:b@c@host", out, sizeof(out));
	assert_string_equal(out, "https://***@host");
	cfg_redact_url("no url here", out, sizeof(out));
	assert_string_equal(out, "no url here");
	cfg_redact_url("http://u:p@h", out, 8);
	assert_null(strstr(out, "p@"));
}

/* The S3 client logs a bad endpoint without its userinfo. */
static void test_s3_log_redacts_endpoint(void **state)
{
	struct s3_config sc = {0};
	char path[160], buf[4096];
	struct s3_client *s3;
	int fd, saved;
	ssize_t n;

	(void)state;
	snprintf(path, sizeof(path), "%s/stderr.log", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, 2), 2);
	close(fd);
	log_init("test_cfg", 0, LOG_LVL_DEBUG);
	sc.endpoint = "http://AKUSER:pAsSw0rd@127.0.0.1:9000";
	sc.access_key_id = "K";
	sc.secret_access_key = "S";
	s3 = s3_client_new(&sc);
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	assert_null(s3);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "endpoint"));
	assert_null(strstr(buf, "pAsSw0rd"));
	assert_null(strstr(buf, "AKUSER"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_metrics_keys),
		cmocka_unit_test(test_secret_permissions),
		cmocka_unit_test(test_defaults_and_env),
		cmocka_unit_test(test_credentials_file),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_temp_patterns),
	    cmocka_unit_test(test_permission_keys),
	    cmocka_unit_test(test_conninfo_password_is_a_secret),
	    cmocka_unit_test(test_size_overflow),
	    cmocka_unit_test(test_long_lines),
	    cmocka_unit_test(test_ini_syntax),
	    cmocka_unit_test(test_endpoint_userinfo),
	    cmocka_unit_test(test_s3_log_redacts_endpoint),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
