/* cfg.c - see cfg.h. */
#include "cfg.h"

#include <errno.h>
#include <fnmatch.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "log.h"

static const char *const cfg_default_temp[] = {
	".goutputstream-*", "*.part", "*.crdownload", "*.tmp",
	"~$*",              ".~lock.*#", ".*.swp", NULL,
};

struct cfg_parse {
	struct cfg *c;
	char *err;
	size_t err_len;
	int rc;
	int has_secret; /* the file itself holds a secret */
	int temp_set;   /* temp_patterns given in the file */
};

static int cfg_set_str(char **dst, const char *v)
{
	char *s = strdup(v);

	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int cfg_parse_bool(const char *v, int *out)
{
	if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
	    !strcmp(v, "1") || !strcasecmp(v, "on")) {
		*out = 1;
		return 0;
	}
	if (!strcasecmp(v, "false") || !strcasecmp(v, "no") ||
	    !strcmp(v, "0") || !strcasecmp(v, "off")) {
		*out = 0;
		return 0;
	}
	return -EINVAL;
}

static int cfg_parse_long(const char *v, long min, long max, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max)
		return -EINVAL;
	*out = n;
	return 0;
}

/* "16M", "5G", "1048576" -> bytes. */
static int cfg_parse_size(const char *v, uint64_t *out)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || v[0] == '-')
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': n <<= 10; end++; break;
	case 'm': case 'M': n <<= 20; end++; break;
	case 'g': case 'G': n <<= 30; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	*out = n;
	return 0;
}

static void cfg_free_patterns(char **p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; p[i]; i++)
		free(p[i]);
	free(p);
}

/* Comma-separated list of fnmatch patterns. */
static int cfg_parse_patterns(const char *v, char ***out)
{
	char **list = NULL, *copy, *tok, *save = NULL;
	size_t n = 0;

	copy = strdup(v);
	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char **nl;
		char *end;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		end = tok + strlen(tok);
		while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (!*tok)
			continue;
		nl = realloc(list, (n + 2) * sizeof(*list));
		if (!nl)
			goto fail;
		list = nl;
		list[n] = strdup(tok);
		if (!list[n])
			goto fail;
		list[++n] = NULL;
	}
	free(copy);
	if (!list) {
		list = calloc(1, sizeof(*list));
		if (!list)
			return -ENOMEM;
	}
	*out = list;
	return 0;
fail:
	if (list)
		list[n] = NULL;
	cfg_free_patterns(list);
	free(copy);
	return -ENOMEM;
}

static int cfg_handler(void *user, const char *section, const char *name,
		       const char *value)
{
	struct cfg_parse *p = user;
	struct cfg *c = p->c;
	long n = 0;
	int rc = 0;

	if (!strcmp(section, "s3")) {
		if (!strcmp(name, "endpoint"))
			rc = cfg_set_str(&c->endpoint, value);
		else if (!strcmp(name, "region"))
			rc = cfg_set_str(&c->region, value);
		else if (!strcmp(name, "access_key_id"))
			rc = cfg_set_str(&c->access_key_id, value);
		else if (!strcmp(name, "secret_access_key")) {
			rc = cfg_set_str(&c->secret_access_key, value);
			p->has_secret = 1;
		} else if (!strcmp(name, "session_token")) {
			rc = cfg_set_str(&c->session_token, value);
			p->has_secret = 1;
		} else if (!strcmp(name, "reception_bucket"))
			rc = cfg_set_str(&c->reception_bucket, value);
		else if (!strcmp(name, "storage_bucket"))
			rc = cfg_set_str(&c->storage_bucket, value);
		else if (!strcmp(name, "path_style"))
			rc = cfg_parse_bool(value, &c->path_style);
		else if (!strcmp(name, "verify_tls"))
			rc = cfg_parse_bool(value, &c->verify_tls);
		else if (!strcmp(name, "ca_file"))
			rc = cfg_set_str(&c->ca_file, value);
		else if (!strcmp(name, "connect_timeout_ms")) {
			rc = cfg_parse_long(value, 1, 600000, &n);
			c->connect_timeout_ms = n;
		} else if (!strcmp(name, "request_timeout_ms")) {
			rc = cfg_parse_long(value, 1, 86400000, &n);
			c->request_timeout_ms = n;
		} else if (!strcmp(name, "max_retries")) {
			rc = cfg_parse_long(value, 0, 20, &n);
			c->max_retries = (int)n;
		} else
			goto unknown;
	} else if (!strcmp(section, "postgres")) {
		if (!strcmp(name, "conninfo")) {
			rc = cfg_set_str(&c->conninfo, value);
			if (strstr(value, "password"))
				p->has_secret = 1;
		} else if (!strcmp(name, "pool_size")) {
			rc = cfg_parse_long(value, 1, 64, &n);
			c->db_pool_size = (int)n;
		} else
			goto unknown;
	} else if (!strcmp(section, "fs")) {
		if (!strcmp(name, "spool_dir"))
			rc = cfg_set_str(&c->spool_dir, value);
		else if (!strcmp(name, "dedup")) {
			if (!strcmp(value, "content"))
				c->dedup = CFG_DEDUP_CONTENT;
			else if (!strcmp(value, "path"))
				c->dedup = CFG_DEDUP_PATH;
			else
				rc = -EINVAL;
		} else if (!strcmp(name, "temp_patterns")) {
			char **list = NULL;

			rc = cfg_parse_patterns(value, &list);
			if (!rc) {
				cfg_free_patterns(c->temp_patterns);
				c->temp_patterns = list;
				p->temp_set = 1;
			}
		} else if (!strcmp(name, "part_size")) {
			rc = cfg_parse_size(value, &c->part_size);
			if (!rc && (c->part_size < (5ULL << 20) ||
				    c->part_size > (5ULL << 30)))
				rc = -EINVAL;
		} else if (!strcmp(name, "copy_threshold")) {
			rc = cfg_parse_size(value, &c->copy_threshold);
			if (!rc && (c->copy_threshold < (5ULL << 20) ||
				    c->copy_threshold > (5ULL << 30)))
				rc = -EINVAL;
		} else if (!strcmp(name, "upload_workers")) {
			rc = cfg_parse_long(value, 1, 64, &n);
			c->upload_workers = (int)n;
		} else if (!strcmp(name, "cache_ttl_ms")) {
			rc = cfg_parse_long(value, 0, 3600000, &n);
			c->cache_ttl_ms = (int)n;
		} else if (!strcmp(name, "scan_interval")) {
			rc = cfg_parse_long(value, 0, 86400, &n);
			c->scan_interval_s = (int)n;
		} else if (!strcmp(name, "max_threads")) {
			rc = cfg_parse_long(value, 2, 1024, &n);
			c->max_threads = (int)n;
		} else if (!strcmp(name, "log_level")) {
			rc = cfg_parse_long(value, 0, 3, &n);
			c->log_level = (int)n;
		} else
			goto unknown;
	} else {
		goto unknown;
	}
	if (rc == -ENOMEM) {
		p->rc = rc;
		snprintf(p->err, p->err_len, "out of memory");
		return 0;
	}
	if (rc) {
		p->rc = -EINVAL;
		snprintf(p->err, p->err_len, "bad value for [%s] %s", section,
			 name);
		return 0;
	}
	return 1;
unknown:
	p->rc = -EINVAL;
	snprintf(p->err, p->err_len, "unknown key [%s] %s", section, name);
	return 0;
}

/* Values from the AWS shared credentials file, [profile] section. */
struct cfg_aws {
	const char *profile;
	char *key;
	char *secret;
	char *token;
};

static int cfg_aws_handler(void *user, const char *section, const char *name,
			   const char *value)
{
	struct cfg_aws *a = user;
	char **dst = NULL;

	if (strcmp(section, a->profile))
		return 1;
	if (!strcmp(name, "aws_access_key_id"))
		dst = &a->key;
	else if (!strcmp(name, "aws_secret_access_key"))
		dst = &a->secret;
	else if (!strcmp(name, "aws_session_token"))
		dst = &a->token;
	if (dst && cfg_set_str(dst, value))
		return 0;
	return 1;
}

static int cfg_credentials_fallback(struct cfg *c, char *err, size_t err_len)
{
	const char *ak = getenv("AWS_ACCESS_KEY_ID");
	const char *sk = getenv("AWS_SECRET_ACCESS_KEY");
	const char *tok = getenv("AWS_SESSION_TOKEN");
	struct cfg_aws a = {0};
	char path[PATH_MAX];
	const char *file, *home;
	struct stat st;
	int rc = 0;

	if (c->access_key_id && c->secret_access_key)
		return 0;
	if (ak && *ak && sk && *sk) {
		if (cfg_set_str(&c->access_key_id, ak) ||
		    cfg_set_str(&c->secret_access_key, sk) ||
		    (tok && *tok && cfg_set_str(&c->session_token, tok)))
			return -ENOMEM;
		return 0;
	}
	file = getenv("AWS_SHARED_CREDENTIALS_FILE");
	home = getenv("HOME");
	if (!file && home) {
		snprintf(path, sizeof(path), "%s/.aws/credentials", home);
		file = path;
	}
	if (!file || stat(file, &st) != 0)
		goto none;
	if (st.st_mode & 077) {
		snprintf(err, err_len,
			 "%s is readable by group or others; refusing "
			 "credentials from it (chmod 600)", file);
		return -EACCES;
	}
	a.profile = getenv("AWS_PROFILE");
	if (!a.profile || !*a.profile)
		a.profile = "default";
	if (ini_parse(file, cfg_aws_handler, &a) < 0)
		goto none;
	if (a.key && a.secret) {
		free(c->access_key_id);
		free(c->secret_access_key);
		c->access_key_id = a.key;
		c->secret_access_key = a.secret;
		a.key = a.secret = NULL;
		if (a.token) {
			free(c->session_token);
			c->session_token = a.token;
			a.token = NULL;
		}
	}
	free(a.key);
	free(a.secret);
	free(a.token);
none:
	if (!c->access_key_id || !c->secret_access_key) {
		snprintf(err, err_len,
			 "no S3 credentials: set access_key_id and "
			 "secret_access_key in [s3], or AWS_ACCESS_KEY_ID and "
			 "AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials");
		rc = -EINVAL;
	}
	return rc;
}

static int cfg_defaults(struct cfg *c)
{
	size_t i;

	c->path_style = 1;
	c->verify_tls = 1;
	c->part_size = 16ULL << 20;
	c->copy_threshold = 5ULL << 30;
	c->upload_workers = 4;
	c->cache_ttl_ms = 3000;
	c->scan_interval_s = 60;
	c->max_threads = 32;
	c->log_level = 2;
	c->db_pool_size = 8;
	c->temp_patterns = calloc(sizeof(cfg_default_temp) /
					  sizeof(cfg_default_temp[0]),
				  sizeof(char *));
	if (!c->temp_patterns)
		return -ENOMEM;
	for (i = 0; cfg_default_temp[i]; i++) {
		c->temp_patterns[i] = strdup(cfg_default_temp[i]);
		if (!c->temp_patterns[i])
			return -ENOMEM;
	}
	if (cfg_set_str(&c->region, "us-east-1") ||
	    cfg_set_str(&c->reception_bucket, "recepcao-raw") ||
	    cfg_set_str(&c->storage_bucket, "storage-unique") ||
	    cfg_set_str(&c->spool_dir, "/var/cache/custodyfs"))
		return -ENOMEM;
	return 0;
}

int cfg_load(const char *path, struct cfg *c, char *err, size_t err_len)
{
	struct cfg_parse p = {.c = c, .err = err, .err_len = err_len};
	struct stat st;
	FILE *f;
	int rc;

	memset(c, 0, sizeof(*c));
	err[0] = '\0';
	rc = cfg_defaults(c);
	if (rc) {
		snprintf(err, err_len, "out of memory");
		goto fail;
	}
	f = fopen(path, "r");
	if (!f) {
		rc = -errno;
		snprintf(err, err_len, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(fileno(f), &st) != 0) {
		rc = -errno;
		fclose(f);
		snprintf(err, err_len, "%s: %s", path, strerror(-rc));
		goto fail;
	}
	rc = ini_parse_file(f, cfg_handler, &p);
	fclose(f);
	if (p.rc) {
		rc = p.rc;
		goto fail;
	}
	if (rc != 0) {
		snprintf(err, err_len, "%s: line %d: syntax error", path, rc);
		rc = -EINVAL;
		goto fail;
	}
	if (p.has_secret && (st.st_mode & 077)) {
		snprintf(err, err_len,
			 "%s holds a secret and is readable by group or others "
			 "(mode %03o); refusing it: chmod 600 %s",
			 path, (unsigned)(st.st_mode & 0777), path);
		rc = -EACCES;
		goto fail;
	}
	if (!c->endpoint || !*c->endpoint) {
		snprintf(err, err_len, "%s: [s3] endpoint is required", path);
		rc = -EINVAL;
		goto fail;
	}
	if (strncmp(c->endpoint, "http://", 7) &&
	    strncmp(c->endpoint, "https://", 8)) {
		snprintf(err, err_len,
			 "%s: [s3] endpoint must start with http:// or https://",
			 path);
		rc = -EINVAL;
		goto fail;
	}
	if (!c->conninfo) {
		snprintf(err, err_len, "%s: [postgres] conninfo is required",
			 path);
		rc = -EINVAL;
		goto fail;
	}
	if (!strcmp(c->reception_bucket, c->storage_bucket)) {
		snprintf(err, err_len,
			 "%s: reception_bucket and storage_bucket must differ",
			 path);
		rc = -EINVAL;
		goto fail;
	}
	rc = cfg_credentials_fallback(c, err, err_len);
	if (rc)
		goto fail;
	return 0;
fail:
	cfg_free(c);
	return rc;
}

void cfg_free(struct cfg *c)
{
	if (c->secret_access_key)
		explicit_bzero(c->secret_access_key,
			       strlen(c->secret_access_key));
	if (c->session_token)
		explicit_bzero(c->session_token, strlen(c->session_token));
	free(c->endpoint);
	free(c->region);
	free(c->access_key_id);
	free(c->secret_access_key);
	free(c->session_token);
	free(c->reception_bucket);
	free(c->storage_bucket);
	free(c->ca_file);
	free(c->conninfo);
	free(c->spool_dir);
	cfg_free_patterns(c->temp_patterns);
	memset(c, 0, sizeof(*c));
}

int cfg_is_temp_name(const struct cfg *c, const char *name)
{
	size_t i;

	if (!c->temp_patterns)
		return 0;
	for (i = 0; c->temp_patterns[i]; i++)
		if (fnmatch(c->temp_patterns[i], name, 0) == 0)
			return 1;
	return 0;
}
