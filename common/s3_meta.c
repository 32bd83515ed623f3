/* s3_meta.c - what an object carries besides its bytes, see s3.h: its
 * user metadata (x-amz-meta-*: values a header cannot carry as they are
 * travel as RFC 2047 words, as AWS S3 itself does) and the content headers
 * S3 keeps with it (Content-Disposition and the like), read from a HEAD's
 * answer and sent with a request. Over the request machinery of s3.c
 * (s3_internal.h). */
#include "s3.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "names.h"
#include "s3_internal.h"
#include "sbuf.h"

#define S3_META_PREFIX "x-amz-meta-"

/* The content headers S3 keeps with an object, but for Content-Type
 * (struct s3_object_info.hdrs). */
static const char *const s3_content_hdrs[] = {
    "cache-control", "content-disposition", "content-encoding",
    "content-language", "expires"};

/* ---- metadata values (RFC 2047, as AWS S3 does) ----------------------- */

static const char s3_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Does value need "=?UTF-8?B?...?=" to cross a header intact? Bytes >= 0x80,
 * blanks at either end (trimmed by HTTP), or a value that would read back
 * as an encoded word. */
static int s3_meta_needs_word(const char *v)
{
	size_t n = strlen(v);
	const unsigned char *p;

	if (n && (strchr(" \t", v[0]) || strchr(" \t", v[n - 1])))
		return 1;
	if (!strncmp(v, "=?", 2))
		return 1;
	for (p = (const unsigned char *)v; *p; p++)
		if (*p >= 0x80)
			return 1;
	return 0;
}

static int s3_meta_word(struct sbuf *out, const char *v)
{
	const unsigned char *p = (const unsigned char *)v;
	size_t n = strlen(v), i;
	int rc = sbuf_adds(out, "=?UTF-8?B?");

	for (i = 0; !rc && i < n; i += 3) {
		uint32_t w = (uint32_t)p[i] << 16;
		char q[4];

		if (i + 1 < n)
			w |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			w |= p[i + 2];
		q[0] = s3_b64[(w >> 18) & 63];
		q[1] = s3_b64[(w >> 12) & 63];
		q[2] = i + 1 < n ? s3_b64[(w >> 6) & 63] : '=';
		q[3] = i + 2 < n ? s3_b64[w & 63] : '=';
		rc = sbuf_add(out, q, 4);
	}
	if (!rc)
		rc = sbuf_adds(out, "?=");
	return rc;
}

/* Decodes an RFC 2047 encoded word "=?UTF-8?B|Q?...?=" (v[0..n)) into a
 * malloc'd string. NULL when v is not one, or does not decode to valid
 * UTF-8 without control characters: the caller keeps v as it is. */
static char *s3_meta_unword(const char *v, size_t n)
{
	const char *t, *e = v + n - 2;
	char *out, *o;
	uint32_t acc = 0;
	int bits = 0, enc;
	size_t i;

	if (n < 12 || strncasecmp(v, "=?utf-8?", 8) || strncmp(e, "?=", 2) ||
	    v[9] != '?')
		return NULL;
	enc = toupper((unsigned char)v[8]);
	if (enc != 'B' && enc != 'Q')
		return NULL;
	o = out = malloc(n);
	if (!out)
		return NULL;
	for (t = v + 10; t < e; t++) {
		if (enc == 'Q') {
			unsigned hi, lo;

			if (*t == '_') {
				*o++ = ' ';
			} else if (*t == '=' && e - t > 2 &&
				   sscanf(t + 1, "%1x%1x", &hi, &lo) == 2) {
				*o++ = (char)(hi << 4 | lo);
				t += 2;
			} else if (*t == '=' || *t == '?') {
				goto bad;
			} else {
				*o++ = *t;
			}
			continue;
		}
		if (*t == '=')
			break;
		if (!strchr(s3_b64, *t) || !*t)
			goto bad;
		acc = acc << 6 | (uint32_t)(strchr(s3_b64, *t) - s3_b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			*o++ = (char)(acc >> bits);
		}
	}
	for (; enc == 'B' && t < e; t++)
		if (*t != '=')
			goto bad;
	*o = '\0';
	for (i = 0; i < (size_t)(o - out); i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			goto bad;
	if (names_utf8_valid(out, (size_t)(o - out)))
		return out;
bad:
	free(out);
	return NULL;
}

/* The header value s3_hdrs_add_meta sends for v: v itself (*wire = v) or
 * its RFC 2047 word, built in word (*wire = word->s). -EINVAL for a value
 * it refuses (NULL, a control character, not UTF-8), -ENOMEM. */
static int s3_meta_wire(const char *v, struct sbuf *word, const char **wire)
{
	const unsigned char *p;
	int rc;

	if (!v)
		return -EINVAL;
	for (p = (const unsigned char *)v; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return -EINVAL;
	if (!names_utf8_valid(v, strlen(v)))
		return -EINVAL;
	*wire = v;
	if (!s3_meta_needs_word(v))
		return 0;
	sbuf_reset(word);
	rc = s3_meta_word(word, v);
	if (!rc)
		*wire = sbuf_str(word);
	return rc;
}

int s3_hdrs_add_meta(struct s3_hdrs *h, const struct s3_kv *meta, size_t n_meta)
{
	struct sbuf name = SBUF_INIT, word = SBUF_INIT;
	const unsigned char *p;
	const char *wire = NULL;
	size_t i, j;
	int rc = 0;

	for (i = 0; i < n_meta && !rc; i++) {
		if (!meta[i].name || !*meta[i].name)
			rc = -EINVAL;
		for (p = (const unsigned char *)(meta[i].name ? meta[i].name
							      : "");
		     *p; p++)
			if (!isalnum(*p) && !strchr("!#$%&'*+-.^_`|~", *p))
				rc = -EINVAL;
		if (!rc)
			rc = s3_meta_wire(meta[i].value, &word, &wire);
		if (rc == -EINVAL)
			log_warn("s3: metadata %s: bad name, or value not "
				 "UTF-8 text",
				 meta[i].name ? meta[i].name : "");
		if (rc)
			break;
		sbuf_reset(&name);
		rc = sbuf_addf(&name, S3_META_PREFIX "%s", meta[i].name);
		for (j = 0; !rc && j < name.len; j++)
			name.s[j] = (char)tolower((unsigned char)name.s[j]);
		if (!rc)
			rc = s3_hdrs_add(h, name.s, wire);
	}
	sbuf_free(&name);
	sbuf_free(&word);
	return rc;
}

size_t s3_meta_size(const struct s3_kv *meta, size_t n_meta)
{
	size_t i, n = 0, len;

	for (i = 0; i < n_meta; i++) {
		n += strlen(S3_META_PREFIX);
		n += meta[i].name ? strlen(meta[i].name) : 0;
		len = meta[i].value ? strlen(meta[i].value) : 0;
		/* "=?UTF-8?B?" base64 "?=" */
		if (meta[i].value && s3_meta_needs_word(meta[i].value))
			len = 12 + 4 * ((len + 2) / 3);
		n += len;
	}
	return n;
}

int s3_header_sendable(const char *v)
{
	const unsigned char *p = (const unsigned char *)v;

	if (!p || !*p || *p == ' ')
		return 0;
	for (; *p; p++) {
		if (*p == ' ' && (p[1] == ' ' || !p[1]))
			return 0; /* two blanks, or one at the end */
		if (*p != ' ' && (*p < 0x21 || *p > 0x7e))
			return 0;
	}
	return 1;
}

int s3_hdrs_add_plain(struct s3_hdrs *h, const struct s3_kv *hdrs,
		      size_t n_hdrs)
{
	const unsigned char *p;
	size_t i;
	int rc = 0;

	for (i = 0; i < n_hdrs && !rc; i++) {
		if (!hdrs[i].name || !*hdrs[i].name || !hdrs[i].value)
			return -EINVAL;
		for (p = (const unsigned char *)hdrs[i].name; *p; p++)
			if (!islower(*p) && !isdigit(*p) && *p != '-')
				return -EINVAL;
		for (p = (const unsigned char *)hdrs[i].value; *p; p++)
			if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
				return -EINVAL;
		/* Bytes stores canonicalise differently when they check the
		 * signature (review Q1): left out, never a refused request. */
		if (!s3_header_sendable(hdrs[i].value)) {
			log_warn("s3: header %s not sent: its value is not "
				 "plain printable ASCII",
				 hdrs[i].name);
			continue;
		}
		rc = s3_hdrs_add(h, hdrs[i].name, hdrs[i].value);
	}
	return rc;
}

/* Appends name[0..nlen), lowercased, = value (taken: freed on failure)
 * to *kv, *n of them. 0 or -ENOMEM. */
static int s3_kv_push(struct s3_kv **kv, size_t *n, const char *name,
		      size_t nlen, char *value)
{
	struct s3_kv *a;
	char *nm = value ? strndup(name, nlen) : NULL;
	size_t i;

	a = nm ? realloc(*kv, (*n + 1) * sizeof(*a)) : NULL;
	if (!a) {
		free(nm);
		free(value);
		return -ENOMEM;
	}
	*kv = a;
	for (i = 0; nm[i]; i++)
		nm[i] = (char)tolower((unsigned char)nm[i]);
	a[*n].name = nm;
	a[*n].value = value;
	(*n)++;
	return 0;
}

int s3_hdr_info(const struct s3_xfer *x, struct s3_object_info *info)
{
	const char *pos = sbuf_str(&x->rhdr), *n, *v, *wire;
	size_t nlen, vlen, plen = strlen(S3_META_PREFIX), i;
	struct sbuf word = SBUF_INIT;
	char *val;
	int rc = 0;

	while (!rc && s3_hdr_next(&pos, &n, &nlen, &v, &vlen)) {
		if (nlen > plen && !strncasecmp(n, S3_META_PREFIX, plen)) {
			val = s3_meta_unword(v, vlen);
			if (!val)
				val = strndup(v, vlen);
			/* sent back as it came? */
			if (val &&
			    (s3_meta_wire(val, &word, &wire) ||
			     strlen(wire) != vlen || memcmp(wire, v, vlen)))
				info->meta_inexact = 1;
			rc = s3_kv_push(&info->meta, &info->n_meta, n + plen,
					nlen - plen, val);
			continue;
		}
		for (i = 0;
		     i < sizeof(s3_content_hdrs) / sizeof(s3_content_hdrs[0]);
		     i++)
			if (nlen == strlen(s3_content_hdrs[i]) &&
			    !strncasecmp(n, s3_content_hdrs[i], nlen)) {
				rc = s3_kv_push(&info->hdrs, &info->n_hdrs, n,
						nlen, strndup(v, vlen));
				if (!rc &&
				    !s3_header_sendable(
					info->hdrs[info->n_hdrs - 1].value))
					info->meta_inexact = 1;
			}
	}
	sbuf_free(&word);
	return rc;
}

const char *s3_meta_get(const struct s3_object_info *info, const char *name)
{
	size_t i;

	for (i = 0; info && i < info->n_meta; i++)
		if (!strcasecmp(info->meta[i].name, name))
			return info->meta[i].value;
	return NULL;
}

void s3_object_info_free(struct s3_object_info *info)
{
	size_t i;

	if (!info)
		return;
	for (i = 0; i < info->n_meta; i++) {
		free(info->meta[i].name);
		free(info->meta[i].value);
	}
	for (i = 0; i < info->n_hdrs; i++) {
		free(info->hdrs[i].name);
		free(info->hdrs[i].value);
	}
	free(info->meta);
	free(info->hdrs);
	info->meta = NULL;
	info->n_meta = 0;
	info->hdrs = NULL;
	info->n_hdrs = 0;
	info->meta_inexact = 0;
}
