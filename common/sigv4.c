/* sigv4.c - AWS Signature Version 4, see sigv4.h.
 *
 * One function per step of the AWS documentation. Every step appends to a
 * caller-owned sbuf and, on error, leaves that sbuf as the caller gave it.
 * Inputs that would make the signed text ambiguous (control characters in a
 * header name, a '/' in the region, ...) are refused with -EINVAL rather than
 * signed: the server would only answer with an opaque 403. */
#include "sigv4.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR "aws4_request"
#define SIGV4_DATE_LEN 8 /* "YYYYMMDD", the first part of the amz date */

/* "AWS4" + secret is built in a stack buffer, so the secret is bounded.
 * Real secrets are 40 bytes (AWS, MinIO, Ceph) or 64 (Garage). */
#define SIGV4_MAX_SECRET 256

struct sigv4_hdr {
	char *name;   /* lowercase */
	char *value;  /* trimmed, whitespace runs collapsed to one space */
	size_t order; /* position in the request: keeps the sort stable */
};

struct sigv4_param {
	char *name;  /* URI-encoded */
	char *value; /* URI-encoded */
};

static int sigv4_is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
	       c == '~';
}

static int sigv4_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Visible ASCII: no controls, no space, no DEL, no 8-bit bytes. */
static int sigv4_is_visible(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

static char sigv4_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Drops what a failed step appended, so b is as the caller gave it. */
static void sigv4_truncate(struct sbuf *b, size_t len)
{
	if (b->s && b->len > len) {
		b->len = len;
		b->s[len] = '\0';
	}
}

/* A method, header name or payload hash: visible ASCII, no ':'. */
static int sigv4_valid_token(const char *s)
{
	if (!s || !*s)
		return 0;
	for (; *s; s++)
		if (!sigv4_is_visible((unsigned char)*s) || *s == ':')
			return 0;
	return 1;
}

/* A credential scope part (access key id, region, service): a token that
 * also holds none of the separators of the Authorization header. */
static int sigv4_valid_scope(const char *s)
{
	return sigv4_valid_token(s) && !strpbrk(s, "/,;=");
}

/* The wire path: what sigv4_encode_path() produces, so visible ASCII with
 * neither the query nor the fragment separator. */
static int sigv4_valid_path(const char *s)
{
	if (!s)
		return 0;
	for (; *s; s++)
		if (!sigv4_is_visible((unsigned char)*s) || *s == '?' ||
		    *s == '#')
			return 0;
	return 1;
}

int sigv4_uri_encode(struct sbuf *out, const char *s, size_t len,
		     int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len0 = out->len, i = 0, run;
	char esc[3];
	int rc;

	if (!s && len)
		return -EINVAL;
	while (i < len) {
		for (run = i; run < len; run++) {
			unsigned char c = (unsigned char)s[run];

			if (!sigv4_is_unreserved(c) &&
			    !(keep_slash && c == '/'))
				break;
		}
		if (run > i) {
			rc = sbuf_add(out, s + i, run - i);
			if (rc)
				goto fail;
			i = run;
			continue;
		}
		esc[0] = '%';
		esc[1] = hex[(unsigned char)s[i] >> 4];
		esc[2] = hex[(unsigned char)s[i] & 15];
		rc = sbuf_add(out, esc, sizeof(esc));
		if (rc)
			goto fail;
		i++;
	}
	return 0;
fail:
	sigv4_truncate(out, len0);
	return rc;
}

int sigv4_encode_path(struct sbuf *out, const char *raw_path)
{
	if (!raw_path)
		return -EINVAL;
	return sigv4_uri_encode(out, raw_path, strlen(raw_path), 1);
}

/* *dst = encoded copy of s, to be freed by the caller. */
static int sigv4_encode_dup(char **dst, const char *s)
{
	struct sbuf b = SBUF_INIT;
	int rc;

	rc = sigv4_uri_encode(&b, s, strlen(s), 0);
	if (rc)
		goto fail;
	*dst = sbuf_detach(&b);
	if (!*dst)
		rc = -ENOMEM;
fail:
	sbuf_free(&b);
	return rc;
}

static int sigv4_param_cmp(const void *a, const void *b)
{
	const struct sigv4_param *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

static void sigv4_free_params(struct sigv4_param *p, size_t n)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].value);
	}
	free(p);
}

int sigv4_canonical_query(struct sbuf *out, const struct sigv4_kv *q, size_t n)
{
	struct sigv4_param *p = NULL;
	size_t len0 = out->len, i;
	int rc;

	if (!n)
		return 0;
	if (!q)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!q[i].name || !q[i].value)
			return -EINVAL;
	p = calloc(n, sizeof(*p));
	if (!p)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		rc = sigv4_encode_dup(&p[i].name, q[i].name);
		if (rc)
			goto fail;
		rc = sigv4_encode_dup(&p[i].value, q[i].value);
		if (rc)
			goto fail;
	}
	qsort(p, n, sizeof(*p), sigv4_param_cmp);
	for (i = 0; i < n; i++) {
		rc = sbuf_addf(out, "%s%s=%s", i ? "&" : "", p[i].name,
			       p[i].value);
		if (rc)
			goto fail;
	}
	rc = 0;
fail:
	if (rc)
		sigv4_truncate(out, len0);
	sigv4_free_params(p, n);
	return rc;
}

void sigv4_amz_date(time_t t, char out[17])
{
	struct tm tm;

	/* A time gmtime cannot represent, or a year outside 0..9999, gives an
	 * all-zero date: never a valid signature, never an overflow. */
	if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 ||
	    tm.tm_year > 9999 - 1900 ||
	    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
		memcpy(out, "00000000T000000Z", 17);
}

static char *sigv4_lower_dup(const char *s)
{
	size_t i, len = strlen(s);
	char *d = malloc(len + 1);

	if (!d)
		return NULL;
	for (i = 0; i <= len; i++)
		d[i] = sigv4_lower(s[i]);
	return d;
}

/* Copy of s without leading and trailing whitespace, each inner run of
 * whitespace (folded lines included) collapsed to one space. */
static char *sigv4_trim_dup(const char *s)
{
	char *d = malloc(strlen(s) + 1), *p;

	if (!d)
		return NULL;
	p = d;
	while (sigv4_is_space(*s))
		s++;
	while (*s) {
		if (sigv4_is_space(*s)) {
			while (sigv4_is_space(*s))
				s++;
			if (*s)
				*p++ = ' ';
			continue;
		}
		*p++ = *s++;
	}
	*p = '\0';
	return d;
}

static int sigv4_hdr_cmp(const void *a, const void *b)
{
	const struct sigv4_hdr *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return (x->order > y->order) - (x->order < y->order);
}

static void sigv4_free_hdrs(struct sigv4_hdr *h, size_t n)
{
	size_t i;

	if (!h)
		return;
	for (i = 0; i < n; i++) {
		free(h[i].name);
		free(h[i].value);
	}
	free(h);
}

/* *out = the headers, lowercased, trimmed and sorted by name, same-name
 * headers kept in request order. */
static int sigv4_sort_headers(struct sigv4_hdr **out, const struct sigv4_kv *kv,
			      size_t n)
{
	struct sigv4_hdr *h = NULL;
	size_t i;
	int rc;

	if (!n || !kv)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!sigv4_valid_token(kv[i].name) || !kv[i].value)
			return -EINVAL;
	h = calloc(n, sizeof(*h));
	if (!h)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		h[i].order = i;
		h[i].name = sigv4_lower_dup(kv[i].name);
		h[i].value = sigv4_trim_dup(kv[i].value);
		if (!h[i].name || !h[i].value) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	qsort(h, n, sizeof(*h), sigv4_hdr_cmp);
	*out = h;
	return 0;
fail:
	sigv4_free_hdrs(h, n);
	return rc;
}

static int sigv4_has_header(const struct sigv4_hdr *h, size_t n,
			    const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(h[i].name, name))
			return 1;
	return 0;
}

/* "name:v1,v2\n" per distinct name to out, "name;name" to signed_headers. */
static int sigv4_add_headers(struct sbuf *out, struct sbuf *signed_headers,
			     const struct sigv4_hdr *h, size_t n)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		int first = !i || strcmp(h[i].name, h[i - 1].name);
		int last = i + 1 == n || strcmp(h[i].name, h[i + 1].name);

		if (first)
			rc = sbuf_addf(out, "%s:%s", h[i].name, h[i].value);
		else
			rc = sbuf_addf(out, ",%s", h[i].value);
		if (!rc && last)
			rc = sbuf_addc(out, '\n');
		if (!rc && first)
			rc = sbuf_addf(signed_headers, "%s%s", i ? ";" : "",
				       h[i].name);
		if (rc)
			return rc;
	}
	return 0;
}

int sigv4_canonical_request(struct sbuf *out, struct sbuf *signed_headers,
			    const struct sigv4_request *req)
{
	size_t len0 = out->len, slen0 = signed_headers->len;
	struct sigv4_hdr *h = NULL;
	int rc;

	if (!req || !sigv4_valid_token(req->method) ||
	    !sigv4_valid_path(req->path) ||
	    !sigv4_valid_token(req->payload_hash))
		return -EINVAL;
	rc = sigv4_sort_headers(&h, req->headers, req->n_headers);
	if (rc)
		return rc;
	if (!sigv4_has_header(h, req->n_headers, "host") ||
	    !sigv4_has_header(h, req->n_headers, "x-amz-date")) {
		rc = -EINVAL;
		goto fail;
	}
	rc = sbuf_addf(out, "%s\n%s\n", req->method,
		       *req->path ? req->path : "/");
	if (rc)
		goto fail;
	rc = sigv4_canonical_query(out, req->query, req->n_query);
	if (rc)
		goto fail;
	rc = sbuf_addc(out, '\n');
	if (rc)
		goto fail;
	rc = sigv4_add_headers(out, signed_headers, h, req->n_headers);
	if (rc)
		goto fail;
	rc = sbuf_addf(out, "\n%s\n%s", sbuf_str(signed_headers) + slen0,
		       req->payload_hash);
fail:
	if (rc) {
		sigv4_truncate(out, len0);
		sigv4_truncate(signed_headers, slen0);
	}
	sigv4_free_hdrs(h, req->n_headers);
	return rc;
}

int sigv4_string_to_sign(struct sbuf *out, const char *canonical_request,
			 time_t t, const char *region, const char *service)
{
	char date[17], hash[HASH_SHA256_HEX];

	if (!canonical_request || !sigv4_valid_scope(region) ||
	    !sigv4_valid_scope(service))
		return -EINVAL;
	sigv4_amz_date(t, date);
	sha256_hex(canonical_request, strlen(canonical_request), hash);
	return sbuf_addf(
	    out, SIGV4_ALGORITHM "\n%s\n%.*s/%s/%s/" SIGV4_TERMINATOR "\n%s",
	    date, SIGV4_DATE_LEN, date, region, service, hash);
}

/* Called with a secret longer than SIGV4_MAX_SECRET (or NULL arguments),
 * writes an all-zero key: sigv4_authorization() refuses such secrets
 * before it gets here. */
void sigv4_signing_key(const char *secret, time_t t, const char *region,
		       const char *service, unsigned char key[32])
{
	char k_secret[4 + SIGV4_MAX_SECRET];
	unsigned char k_date[32], k_region[32], k_service[32];
	char date[17];
	size_t slen;

	memset(key, 0, 32);
	if (!secret || !region || !service)
		return;
	slen = strlen(secret);
	if (slen > SIGV4_MAX_SECRET)
		return;
	sigv4_amz_date(t, date);
	memcpy(k_secret, "AWS4", 4);
	memcpy(k_secret + 4, secret, slen);
	hmac_sha256(k_secret, 4 + slen, date, SIGV4_DATE_LEN, k_date);
	hmac_sha256(k_date, 32, region, strlen(region), k_region);
	hmac_sha256(k_region, 32, service, strlen(service), k_service);
	hmac_sha256(k_service, 32, SIGV4_TERMINATOR, strlen(SIGV4_TERMINATOR),
		    key);
	explicit_bzero(k_secret, sizeof(k_secret));
	explicit_bzero(k_date, sizeof(k_date));
	explicit_bzero(k_region, sizeof(k_region));
	explicit_bzero(k_service, sizeof(k_service));
}

/* An access key id: visible ASCII without the Credential separators '/'
 * and ','. ':' is allowed (Swift's tempauth keys are "account:user"). */
static int sigv4_valid_key_id(const char *s)
{
	if (!s || !*s)
		return 0;
	for (; *s; s++)
		if (!sigv4_is_visible((unsigned char)*s) || *s == '/' ||
		    *s == ',')
			return 0;
	return 1;
}

static int sigv4_check_credentials(const struct sigv4_credentials *cred)
{
	if (!cred || !sigv4_valid_key_id(cred->access_key_id) ||
	    !sigv4_valid_scope(cred->region) ||
	    !sigv4_valid_scope(cred->service) || !cred->secret_access_key ||
	    !*cred->secret_access_key ||
	    strlen(cred->secret_access_key) > SIGV4_MAX_SECRET)
		return -EINVAL;
	return 0;
}

/* Case-insensitive ASCII name compare, independent of the locale. */
static int sigv4_name_eq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (sigv4_lower(*a) != sigv4_lower(*b))
			return 0;
	return *a == *b;
}

/* Every X-Amz-Date header must carry date (whitespace aside): a request
 * signed for one time and dated another is refused by the server. */
static int sigv4_check_date_header(const struct sigv4_request *req,
				   const char *date)
{
	size_t i, dlen = strlen(date);

	for (i = 0; i < req->n_headers; i++) {
		const char *v = req->headers[i].value;
		size_t vlen;

		if (!sigv4_name_eq(req->headers[i].name, "x-amz-date"))
			continue;
		while (sigv4_is_space(*v))
			v++;
		vlen = strlen(v);
		while (vlen && sigv4_is_space(v[vlen - 1]))
			vlen--;
		if (vlen != dlen || memcmp(v, date, dlen))
			return -EINVAL;
	}
	return 0;
}

int sigv4_authorization(struct sbuf *out, const struct sigv4_request *req,
			const struct sigv4_credentials *cred, time_t t)
{
	struct sbuf creq = SBUF_INIT, signed_headers = SBUF_INIT;
	struct sbuf sts = SBUF_INIT;
	unsigned char key[32], mac[32];
	char date[17], sig[HASH_SHA256_HEX];
	int rc;

	rc = sigv4_check_credentials(cred);
	if (rc)
		return rc;
	sigv4_amz_date(t, date);
	rc = sigv4_canonical_request(&creq, &signed_headers, req);
	if (rc)
		goto fail;
	rc = sigv4_check_date_header(req, date);
	if (rc)
		goto fail;
	rc = sigv4_string_to_sign(&sts, sbuf_str(&creq), t, cred->region,
				  cred->service);
	if (rc)
		goto fail;
	sigv4_signing_key(cred->secret_access_key, t, cred->region,
			  cred->service, key);
	hmac_sha256(key, sizeof(key), sts.s, sts.len, mac);
	explicit_bzero(key, sizeof(key));
	hex_encode(mac, sizeof(mac), sig);
	rc = sbuf_addf(out,
		       SIGV4_ALGORITHM
		       " Credential=%s/%.*s/%s/%s/" SIGV4_TERMINATOR
		       ", SignedHeaders=%s, Signature=%s",
		       cred->access_key_id, SIGV4_DATE_LEN, date, cred->region,
		       cred->service, sbuf_str(&signed_headers), sig);
fail:
	sbuf_free(&sts);
	sbuf_free(&signed_headers);
	sbuf_free(&creq);
	return rc;
}
