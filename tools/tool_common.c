/* tool_common.c - what the batch tools share: dispatch, config, clients,
 * who runs them, JSON strings. See tools.h. */
#include "tools.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_status.h"
#include "log.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} tools[] = {
    {"status", tool_status},   {"recover", tool_recover},
    {"promote", tool_promote}, {"reconcile", tool_reconcile},
    {"cleanup", tool_cleanup}, {"verify", tool_verify},
};

#define N_TOOLS (sizeof(tools) / sizeof(tools[0]))

int tool_is_name(const char *name)
{
	size_t i;

	for (i = 0; name && i < N_TOOLS; i++)
		if (!strcmp(name, tools[i].name))
			return 1;
	return 0;
}

int tool_main(int argc, char **argv)
{
	size_t i;

	for (i = 0; i < N_TOOLS; i++)
		if (!strcmp(argv[0], tools[i].name))
			return tools[i].fn(argc, argv);
	return TOOL_USAGE;
}

struct s3_client *tool_s3_new(const struct cfg *cfg)
{
	struct s3_config sc = {0};

	sc.endpoint = cfg->endpoint;
	sc.region = cfg->region;
	sc.access_key_id = cfg->access_key_id;
	sc.secret_access_key = cfg->secret_access_key;
	sc.session_token = cfg->session_token;
	sc.path_style = cfg->path_style;
	sc.verify_tls = cfg->verify_tls;
	sc.ca_file = cfg->ca_file;
	sc.connect_timeout_ms = cfg->connect_timeout_ms;
	sc.request_timeout_ms = cfg->request_timeout_ms;
	sc.max_retries = cfg->max_retries;
	return s3_client_new(&sc);
}

int tool_parse_o(const char *prog, const char *arg, char **config)
{
	char *copy = strdup(arg), *save = NULL, *o;
	int rc = 0;

	if (!copy)
		return -1;
	for (o = strtok_r(copy, ",", &save); o;
	     o = strtok_r(NULL, ",", &save)) {
		if (!strncmp(o, "config=", 7) && o[7]) {
			free(*config);
			*config = strdup(o + 7);
			if (!*config)
				rc = -1;
			continue;
		}
		fprintf(stderr,
			"custodyfs %s: unknown option -o %s (the tools take "
			"only -o config=FILE)\n",
			prog, o);
		rc = -1;
	}
	free(copy);
	return rc;
}

int tool_env_load(struct tool_env *t, const char *prog, const char *config)
{
	char err[512];
	int rc;

	memset(t, 0, sizeof(*t));
	if (!config) {
		fprintf(stderr, "custodyfs %s: missing -o config=FILE\n", prog);
		return TOOL_USAGE;
	}
	rc = cfg_load(config, &t->cfg, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "custodyfs %s: config: %s\n", prog, err);
		return TOOL_USAGE;
	}
	log_set_level((enum log_level)t->cfg.log_level);
	if (gethostname(t->host, sizeof(t->host) - 1) != 0)
		snprintf(t->host, sizeof(t->host), "unknown");
	t->s3 = tool_s3_new(&t->cfg);
	if (!t->s3) {
		fprintf(stderr,
			"custodyfs %s: cannot set up the S3 client: %s\n", prog,
			strerror(errno));
		return TOOL_FAILED;
	}
	return 0;
}

int tool_db_open(struct tool_env *t, int pool_min, char *err, size_t len)
{
	int size =
	    t->cfg.db_pool_size > pool_min ? t->cfg.db_pool_size : pool_min;

	t->db = db_open(t->cfg.conninfo, size, err, len);
	return t->db ? 0 : -EIO;
}

int tool_db_schema(struct tool_env *t, const char *prog, int migrate,
		   const char **why)
{
	int rc, version = 0, latest = 0;

	if (migrate) {
		rc = db_migrate(t->db);
		if (!rc)
			return 0;
		fprintf(stderr,
			"custodyfs %s: database migration failed: %s: nothing "
			"done\n",
			prog, strerror(-rc));
		*why = "database migration failed";
		return -1;
	}
	rc = db_schema_version(t->db, &version, &latest);
	if (rc) {
		fprintf(stderr, "custodyfs %s: database: %s: nothing done\n",
			prog, strerror(-rc));
		*why = "the database does not answer";
		return -1;
	}
	if (version < latest) {
		fprintf(stderr,
			"custodyfs %s: the database schema is version %d, this "
			"program needs %d: a read-only run does not migrate it "
			"(mount once, or run a tool that changes things)\n",
			prog, version, latest);
		*why = "the database schema is older than this program's";
		return -1;
	}
	return 0;
}

void tool_env_free(struct tool_env *t)
{
	db_close(t->db);
	t->db = NULL;
	s3_client_free(t->s3);
	t->s3 = NULL;
	cfg_free(&t->cfg);
}

void tool_actor(const struct tool_env *t, struct actor *a)
{
	struct passwd pw, *res = NULL;
	char buf[1024];

	memset(a, 0, sizeof(*a));
	a->uid = getuid();
	snprintf(a->host, sizeof(a->host), "%s", t->host);
	if (getpwuid_r(a->uid, &pw, buf, sizeof(buf), &res) == 0 && res)
		snprintf(a->user, sizeof(a->user), "%s", pw.pw_name);
	else
		snprintf(a->user, sizeof(a->user), "%u", (unsigned)a->uid);
}

int tool_bucket_check(struct tool_env *t, const char *bucket)
{
	struct s3_list_result r = {0};
	int rc = s3_list_page(t->s3, bucket, NULL, NULL, NULL, 1, &r);

	s3xml_list_free(&r);
	return rc;
}

/* Length of the UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	for (i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	/* overlongs and surrogates */
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

void tool_json_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	while (*p) {
		size_t n;

		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p++);
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(f, "\\u%04x", *p++);
		} else if ((n = utf8_len(p)) > 0) {
			fwrite(p, 1, n, f);
			p += n;
		} else {
			fputs("\\ufffd", f);
			p++;
		}
	}
	fputc('"', f);
}

const char *tool_shown(const char *s, char *out, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = 0;

	if (!len)
		return out;
	for (; *p && o + 5 < len; p++) {
		if (*p < 0x20 || *p == 0x7f)
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
	return out;
}

void tool_bytes(char *out, size_t len, double n)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	size_t u = 0;

	while (n >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		n /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%.0f B", n);
	else
		snprintf(out, len, "%.1f %s", n, units[u]);
}

void tool_removed_event(const char *op, int rc, const char *bucket,
			const char *key, long long size, int64_t id,
			const char *reason, const char *dest_key,
			const struct actor *who)
{
	struct log_ev ev;

	log_ev_begin(&ev, rc ? "error" : "removed");
	if (rc) {
		log_ev_str(&ev, "op", op);
		log_ev_err(&ev, rc);
	}
	log_ev_str(&ev, "bucket", bucket);
	log_ev_str(&ev, "key", key);
	if (size >= 0)
		log_ev_int(&ev, "size", size);
	if (id > 0)
		log_ev_int(&ev, "id", (long long)id);
	log_ev_str(&ev, "reason", reason);
	log_ev_str(&ev, "dest_key", dest_key);
	if (who)
		log_ev_who(&ev, (unsigned long)who->uid, who->user, who->host);
	log_ev_duration(&ev);
	log_ev_emit(&ev, rc ? LOG_LVL_ERROR : LOG_LVL_INFO);
}
