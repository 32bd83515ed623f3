/* cfg.c - see cfg.h. */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
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
	const char *path;
	char *err;
	size_t err_len;
	int rc;
	int has_secret; /* the file itself holds a secret */
	int temp_set;   /* temp_patterns given in the file */
};

/* ---- INI files --------------------------------------------------------
 *
 * The syntax inih accepts (its defaults, as Debian builds it): sections
 * "[name]", "name = value" or "name: value", comments starting with ';' or
 * '#', inline comments from a ';' that follows a blank, an indented line
 * continuing the previous value (the handler gets it as a new value for the
 * same name), a UTF-8 BOM. Unlike inih's 200-byte buffer, a line may be up
 * to CFG_MAX_LINE bytes (a conninfo, an STS session token), and a longer
 * one is an error, never silently cut. */

#define CFG_MAX_LINE 65536

typedef int (*cfg_ini_handler)(void *user, int line, const char *section,
			       const char *name, const char *value);

static char *cfg_rstrip(char *s)
{
	char *p = s + strlen(s);

	while (p > s && isspace((unsigned char)p[-1]))
		*--p = '\0';
	return s;
}

static char *cfg_lskip(char *s)
{
	while (*s && isspace((unsigned char)*s))
		s++;
	return s;
}

/* First of chars in s, or an inline comment (';' after a blank), or the
 * end of s. */
static char *cfg_find_chars_or_comment(char *s, const char *chars)
{
	int was_space = 0;

	while (*s && (!chars || !strchr(chars, *s)) &&
	       !(was_space && *s == ';')) {
		was_space = isspace((unsigned char)*s);
		s++;
	}
	return s;
}

/* Parses f, calling handler for each value; stops at the first line the
 * handler refuses (returns 0). Returns 0, or the number of the first bad
 * line (syntax, too long, refused); *too_long tells which. -ENOMEM. */
static int cfg_ini_parse(FILE *f, cfg_ini_handler handler, void *user,
			 int *too_long)
{
	char section[128] = "", prev_name[128] = "";
	char *line = NULL, *start, *end, *name, *value;
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, error = 0;

	*too_long = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (len > CFG_MAX_LINE) {
			*too_long = 1;
			error = lineno;
			break;
		}
		if ((size_t)len != strlen(line)) {
			error = lineno; /* a NUL byte */
			break;
		}
		start = line;
		if (lineno == 1 && !strncmp(start, "\xef\xbb\xbf", 3))
			start += 3;
		start = cfg_rstrip(cfg_lskip(cfg_rstrip(start)));
		if (!*start || *start == ';' || *start == '#')
			continue;
		if (*prev_name && start > line &&
		    isspace((unsigned char)line[0])) {
			/* An indented line: more of the previous value. */
			end = cfg_find_chars_or_comment(start, NULL);
			*end = '\0';
			cfg_rstrip(start);
			if (!handler(user, lineno, section, prev_name, start)) {
				error = lineno;
				break;
			}
			continue;
		}
		if (*start == '[') {
			end = cfg_find_chars_or_comment(start + 1, "]");
			if (*end != ']') {
				error = lineno;
				break;
			}
			*end = '\0';
			snprintf(section, sizeof(section), "%s", start + 1);
			*prev_name = '\0';
			continue;
		}
		end = cfg_find_chars_or_comment(start, "=:");
		if (*end != '=' && *end != ':') {
			error = lineno;
			break;
		}
		*end = '\0';
		name = cfg_rstrip(start);
		value = cfg_lskip(end + 1);
		end = cfg_find_chars_or_comment(value, NULL);
		*end = '\0';
		cfg_rstrip(value);
		snprintf(prev_name, sizeof(prev_name), "%s", name);
		if (!handler(user, lineno, section, name, value)) {
			error = lineno;
			break;
		}
	}
	if (!error && ferror(f))
		error = lineno + 1;
	free(line);
	return error;
}

/* ---- secrets in URLs and conninfo strings ---------------------------- */

/* The userinfo of url ("scheme://userinfo@host..."): its offset and length
 * in *off, *len; 0 when there is none. The authority ends at the first '/'
 * or '#' (not '?': libpq takes "u:p?x@h" as userinfo), the userinfo at its
 * last '@'. */
static int cfg_url_userinfo(const char *url, size_t *off, size_t *len)
{
	const char *p = strstr(url, "://"), *q, *at = NULL;

	if (!p)
		return 0;
	for (q = p + 3; *q && *q != '/' && *q != '#'; q++)
		if (*q == '@')
			at = q;
	if (!at)
		return 0;
	*off = (size_t)(p + 3 - url);
	*len = (size_t)(at - (p + 3));
	return 1;
}

void cfg_redact_url(const char *url, char *out, size_t out_len)
{
	size_t off, len;

	if (!out_len)
		return;
	if (!cfg_url_userinfo(url, &off, &len)) {
		snprintf(out, out_len, "%s", url);
		return;
	}
	if (off >= out_len) {
		/* Not even the scheme fits: show nothing of the URL. */
		snprintf(out, out_len, "%s", "");
		return;
	}
	snprintf(out, out_len, "%.*s***%s", (int)off, url, url + off + len);
}

static int cfg_is_secret_keyword(const char *k)
{
	return !strcmp(k, "password") || !strcmp(k, "sslpassword");
}

static int cfg_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0, n) into out (out_len bytes, NUL-terminated;
 * truncated when longer). */
static void cfg_pct_decode(const char *s, size_t n, char *out, size_t out_len)
{
	size_t i, o = 0;

	for (i = 0; i < n && o + 1 < out_len; i++) {
		if (s[i] == '%' && i + 2 < n &&
		    cfg_hexval((unsigned char)s[i + 1]) >= 0 &&
		    cfg_hexval((unsigned char)s[i + 2]) >= 0) {
			out[o++] =
			    (char)(cfg_hexval((unsigned char)s[i + 1]) * 16 +
				   cfg_hexval((unsigned char)s[i + 2]));
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
}

static int cfg_conninfo_has_secret(const char *ci, int depth);

/* postgresql://[userinfo@][hosts][/db][?k=v&...] */
static int cfg_uri_has_secret(const char *uri, int depth)
{
	const char *p = strstr(uri, "://") + 3, *q, *amp, *eq;
	size_t off, len;

	if (cfg_url_userinfo(uri, &off, &len) && memchr(uri + off, ':', len))
		return 1;
	/* libpq's own rule too: userinfo up to the first '@' before '/'. */
	for (q = p; *q && *q != '@' && *q != '/'; q++)
		;
	if (*q == '@' && memchr(p, ':', (size_t)(q - p)))
		return 1;
	q = strchr(p, '?');
	if (!q)
		return 0;
	for (q++; *q; q = *amp ? amp + 1 : amp) {
		char key[64], val[1024];

		amp = strchrnul(q, '&');
		eq = memchr(q, '=', (size_t)(amp - q));
		cfg_pct_decode(q, (size_t)((eq ? eq : amp) - q), key,
			       sizeof(key));
		if (cfg_is_secret_keyword(key))
			return 1;
		if (eq && !strcmp(key, "dbname") && depth == 0) {
			cfg_pct_decode(eq + 1, (size_t)(amp - eq - 1), val,
				       sizeof(val));
			if (cfg_conninfo_has_secret(val, 1))
				return 1;
		}
	}
	return 0;
}

/* "k=v k='v v' ..." (libpq's key/value syntax); -1 when malformed. */
static int cfg_kv_has_secret(const char *s, int depth)
{
	char *val = malloc(strlen(s) + 1), key[64];
	int rc = 0;

	if (!val)
		return -1;
	while (!rc) {
		const char *k;
		size_t kl;
		char *o = val;

		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		for (k = s; *s && *s != '=' && !isspace((unsigned char)*s); s++)
			;
		kl = (size_t)(s - k);
		while (isspace((unsigned char)*s))
			s++;
		if (*s != '=' || !kl) {
			rc = -1;
			break;
		}
		s++;
		while (isspace((unsigned char)*s))
			s++;
		if (*s == '\'') {
			for (s++; *s && *s != '\''; s++) {
				if (*s == '\\' && s[1])
					s++;
				*o++ = *s;
			}
			if (*s != '\'') {
				rc = -1;
				break;
			}
			s++;
		} else {
			for (; *s && !isspace((unsigned char)*s); s++) {
				if (*s == '\\' && s[1])
					s++;
				*o++ = *s;
			}
		}
		*o = '\0';
		snprintf(key, sizeof(key), "%.*s", (int)kl, k);
		if (cfg_is_secret_keyword(key))
			rc = 1;
		else if (!strcmp(key, "dbname") && depth == 0 &&
			 cfg_conninfo_has_secret(val, 1) > 0)
			rc = 1;
	}
	free(val);
	return rc;
}

/* 1 when the conninfo string (key/value or URI) holds a password: a
 * "password" or "sslpassword" keyword, a URI's "user:password@", also
 * inside a dbname that is itself a conninfo. When it cannot be parsed, any
 * "password" in it counts. */
static int cfg_conninfo_has_secret(const char *ci, int depth)
{
	int rc;

	while (isspace((unsigned char)*ci))
		ci++;
	if (!strncmp(ci, "postgresql://", 13) ||
	    !strncmp(ci, "postgres://", 11))
		return cfg_uri_has_secret(ci, depth);
	if (!strchr(ci, '='))
		return 0; /* a plain database name */
	rc = cfg_kv_has_secret(ci, depth);
	if (rc < 0)
		rc = strcasestr(ci, "password") != NULL;
	return rc;
}

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

/* A mode in octal ("0644", "644"), permission bits only (07777). */
static int cfg_parse_mode(const char *v, unsigned *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 8);
	if (errno || end == v || *end || *v == '-' || n > 07777)
		return -EINVAL;
	*out = (unsigned)n;
	return 0;
}

/* "16M", "5G", "8MiB", "1048576" -> bytes. -EINVAL for bad syntax,
 * -ERANGE for a value that does not fit in 64 bits. */
static int cfg_parse_size(const char *v, uint64_t *out)
{
	unsigned long long n;
	unsigned shift = 0;
	char *end;

	if (!isdigit((unsigned char)v[0]))
		return -EINVAL; /* no sign, no blank: strtoull would take them
				 */
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (errno || end == v)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	if (shift && n > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)n << shift;
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

/* A size key of [fs]: within [min, max], with a message that says why
 * not. */
static int cfg_size_key(struct cfg_parse *p, int line, const char *name,
			const char *value, uint64_t min, uint64_t max,
			const char *range, uint64_t *out)
{
	int rc = cfg_parse_size(value, out);

	if (!rc && (*out < min || *out > max))
		rc = -ERANGE;
	if (rc == -ERANGE)
		snprintf(p->err, p->err_len,
			 "%s: line %d: [fs] %s = %s is out of range (%s)",
			 p->path, line, name, value, range);
	else if (rc)
		snprintf(p->err, p->err_len,
			 "%s: line %d: [fs] %s = %s is not a size (a number, "
			 "optionally followed by K, M, G or T)",
			 p->path, line, name, value);
	return rc ? -ERANGE : 0; /* -ERANGE: the message is written */
}

static int cfg_handler(void *user, int line, const char *section,
		       const char *name, const char *value)
{
	struct cfg_parse *p = user;
	struct cfg *c = p->c;
	size_t off, len;
	long n = 0;
	int rc = 0;

	if (!strcmp(section, "s3")) {
		if (!strcmp(name, "endpoint")) {
			rc = cfg_set_str(&c->endpoint, value);
			if (cfg_url_userinfo(value, &off, &len) &&
			    memchr(value + off, ':', len))
				p->has_secret = 1; /* user:password@ */
		} else if (!strcmp(name, "region"))
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
		} else if (!strcmp(name, "multipart_copy_threshold")) {
			rc = cfg_size_key(p, line, name, value, 5ULL << 20,
					  5ULL << 30, "5M to 5G",
					  &c->copy_threshold);
		} else
			goto unknown;
	} else if (!strcmp(section, "postgres")) {
		if (!strcmp(name, "conninfo")) {
			rc = cfg_set_str(&c->conninfo, value);
			if (cfg_conninfo_has_secret(value, 0))
				p->has_secret = 1;
		} else if (!strcmp(name, "pool_size")) {
			rc = cfg_parse_long(value, 1, 64, &n);
			c->db_pool_size = (int)n;
		} else
			goto unknown;
	} else if (!strcmp(section, "fs")) {
		if (!strcmp(name, "spool_dir"))
			rc = cfg_set_str(&c->spool_dir, value);
		else if (!strcmp(name, "project_group"))
			rc = *value ? cfg_set_str(&c->project_group, value)
				    : -EINVAL;
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
			rc =
			    cfg_size_key(p, line, name, value, 5ULL << 20,
					 5ULL << 30, "5M to 5G", &c->part_size);
		} else if (!strcmp(name, "copy_threshold")) {
			rc = cfg_size_key(p, line, name, value, 5ULL << 20,
					  5ULL << 30, "5M to 5G",
					  &c->copy_threshold);
		} else if (!strcmp(name, "upload_workers")) {
			rc = cfg_parse_long(value, 1, 64, &n);
			c->upload_workers = (int)n;
		} else if (!strcmp(name, "promote_workers")) {
			rc = cfg_parse_long(value, 1, 32, &n);
			c->promote_workers = (int)n;
		} else if (!strcmp(name, "recover_interval")) {
			rc = cfg_parse_long(value, 1, 86400, &n);
			c->recover_interval_s = (int)n;
		} else if (!strcmp(name, "stop_timeout")) {
			rc = cfg_parse_long(value, 0, 86400, &n);
			c->stop_timeout_s = (int)n;
		} else if (!strcmp(name, "cache_ttl_ms")) {
			rc = cfg_parse_long(value, 0, 3600000, &n);
			c->cache_ttl_ms = (int)n;
		} else if (!strcmp(name, "scan_interval")) {
			rc = cfg_parse_long(value, 0, 86400, &n);
			c->scan_interval_s = (int)n;
		} else if (!strcmp(name, "chain_anchor_interval")) {
			rc = cfg_parse_long(value, 0, 86400, &n);
			c->chain_anchor_interval_s = (int)n;
		} else if (!strcmp(name, "claim_lease")) {
			rc = cfg_parse_long(value, 2, 86400, &n);
			c->claim_lease_s = (int)n;
		} else if (!strcmp(name, "live_grace")) {
			rc = cfg_parse_long(value, 2, 86400, &n);
			c->live_grace_s = (int)n;
		} else if (!strcmp(name, "foreign_grace_ms")) {
			rc = cfg_parse_long(value, 0, 86400000, &n);
			c->foreign_grace_ms = n;
		} else if (!strcmp(name, "foreign_uid")) {
			rc = cfg_parse_long(value, 0, 4294967294L, &n);
			c->foreign_uid = n;
		} else if (!strcmp(name, "foreign_gid")) {
			rc = cfg_parse_long(value, 0, 4294967294L, &n);
			c->foreign_gid = n;
		} else if (!strcmp(name, "file_mode")) {
			rc = cfg_parse_mode(value, &c->file_mode);
		} else if (!strcmp(name, "dir_mode")) {
			rc = cfg_parse_mode(value, &c->dir_mode);
		} else if (!strcmp(name, "default_permissions")) {
			rc = cfg_parse_bool(value, &c->default_permissions);
		} else if (!strcmp(name, "max_threads")) {
			rc = cfg_parse_long(value, 2, 1024, &n);
			c->max_threads = (int)n;
		} else if (!strcmp(name, "metrics_file")) {
			/* An absolute path (the daemon runs from /), or
			 * empty: none. */
			if (!*value) {
				free(c->metrics_file);
				c->metrics_file = NULL;
			} else
				rc = value[0] == '/' && value[1]
					 ? cfg_set_str(&c->metrics_file, value)
					 : -EINVAL;
		} else if (!strcmp(name, "metrics_interval")) {
			rc = cfg_parse_long(value, 1, 86400, &n);
			c->metrics_interval_s = (int)n;
		} else if (!strcmp(name, "log_level")) {
			enum log_level lvl;

			rc = log_level_parse(value, &lvl);
			c->log_level = (int)lvl;
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
	if (rc == -ERANGE) { /* message written */
		p->rc = -EINVAL;
		return 0;
	}
	if (rc) {
		/* The value is not shown: it may be a secret. */
		p->rc = -EINVAL;
		snprintf(p->err, p->err_len,
			 "%s: line %d: bad value for [%s] %s", p->path, line,
			 section, name);
		return 0;
	}
	return 1;
unknown:
	p->rc = -EINVAL;
	snprintf(p->err, p->err_len, "%s: line %d: unknown key [%s] %s",
		 p->path, line, section, name);
	return 0;
}

/* Values from the AWS shared credentials file, [profile] section. */
struct cfg_aws {
	const char *profile;
	char *key;
	char *secret;
	char *token;
};

static int cfg_aws_handler(void *user, int line, const char *section,
			   const char *name, const char *value)
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
	int rc = 0, bad, too_long;
	struct stat st;
	FILE *f;

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
	f = fopen(file, "r");
	if (!f)
		goto none;
	bad = cfg_ini_parse(f, cfg_aws_handler, &a, &too_long);
	fclose(f);
	if (bad) {
		/* Never half a credential (a session token cut short). */
		snprintf(err, err_len, "%s: line %d: %s", file, bad,
			 too_long ? "line too long" : "syntax error");
		free(a.key);
		free(a.secret);
		free(a.token);
		return -EINVAL;
	}
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
	c->promote_workers = 4;
	c->recover_interval_s = 300;
	c->stop_timeout_s = 30;
	c->cache_ttl_ms = 3000;
	c->scan_interval_s = 60;
	c->chain_anchor_interval_s = 600;
	c->claim_lease_s = 900;
	c->live_grace_s = 30;
	c->foreign_grace_ms = -1;
	c->foreign_uid = -1;
	c->foreign_gid = -1;
	c->file_mode = 0644;
	c->dir_mode = 0755;
	c->default_permissions = 1;
	c->max_threads = 32;
	c->log_level = 2;
	c->metrics_interval_s = 15;
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
	struct cfg_parse p = {
	    .c = c, .path = path, .err = err, .err_len = err_len};
	char redacted[512];
	struct stat st;
	size_t off, len;
	int rc, too_long;
	FILE *f;

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
	rc = cfg_ini_parse(f, cfg_handler, &p, &too_long);
	fclose(f);
	if (p.rc) {
		rc = p.rc;
		goto fail;
	}
	if (rc != 0) {
		if (too_long)
			snprintf(err, err_len,
				 "%s: line %d: longer than %d bytes", path, rc,
				 CFG_MAX_LINE);
		else
			snprintf(err, err_len, "%s: line %d: syntax error",
				 path, rc);
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
	if (cfg_url_userinfo(c->endpoint, &off, &len)) {
		cfg_redact_url(c->endpoint, redacted, sizeof(redacted));
		snprintf(err, err_len,
			 "%s: [s3] endpoint must not hold user:password@ (S3 "
			 "credentials go in access_key_id and "
			 "secret_access_key): %s",
			 path, redacted);
		rc = -EINVAL;
		goto fail;
	}
	if (strncmp(c->endpoint, "http://", 7) &&
	    strncmp(c->endpoint, "https://", 8)) {
		snprintf(
		    err, err_len,
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
	free(c->metrics_file);
	free(c->project_group);
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
