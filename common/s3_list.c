/* s3_list.c - ListObjectsV2 (s3.h's s3_list_page, s3_list_all) and
 * ListObjectVersions (s3_list_versions_all): pages merged into one result;
 * keys decoded when the store says it encoded them. */
#include "s3.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "s3_internal.h"
#include "s3xml.h"

/* dst (dn elements of sz bytes) grown by the sn elements of src; NULL on
 * OOM (dst unchanged). */
static void *s3_append(void *dst, size_t dn, const void *src, size_t sn,
		       size_t sz)
{
	char *p = realloc(dst, (dn + sn) * sz);

	if (p)
		memcpy(p + dn * sz, src, sn * sz);
	return p;
}

/* Moves the entries and prefixes of src (one page) to the end of dst; its
 * token and flag replace dst's. */
static int s3_list_merge(struct s3_list_result *dst, struct s3_list_result *src)
{
	struct s3_list_entry *e = dst->entries;
	char **p = dst->prefixes;

	if (src->n_entries)
		e = s3_append(e, dst->n_entries, src->entries, src->n_entries,
			      sizeof(*e));
	if (!e && src->n_entries)
		return -ENOMEM;
	dst->entries = e;
	dst->n_entries += src->n_entries;
	src->n_entries = 0; /* the strings now belong to dst */
	if (src->n_prefixes)
		p = s3_append(p, dst->n_prefixes, src->prefixes,
			      src->n_prefixes, sizeof(*p));
	if (!p && src->n_prefixes)
		return -ENOMEM;
	dst->prefixes = p;
	dst->n_prefixes += src->n_prefixes;
	src->n_prefixes = 0;
	free(dst->next_token);
	dst->next_token = src->next_token;
	src->next_token = NULL;
	free(dst->next_version);
	dst->next_version = src->next_version;
	src->next_version = NULL;
	dst->truncated = src->truncated;
	return 0;
}

static void s3_query_add(struct sigv4_kv *q, size_t *n, const char *name,
			 const char *value)
{
	if (value && *value) {
		q[*n].name = name;
		q[(*n)++].value = value;
	}
}

/* One listing request of bucket with query q[n] (ListObjectsV2, or with
 * versions set ListObjectVersions), its page merged into *out. */
static int s3_list_get(struct s3_client *c, const char *bucket,
		       const struct sigv4_kv *q, size_t n, int versions,
		       const char *prefix, struct s3_list_result *out)
{
	static const char enc_tag[] = "<EncodingType>url</EncodingType>";
	struct s3_list_result page = {0};
	struct s3_xfer x;
	int rc, url_encoded, attempt;

	rc = s3_check(bucket, NULL, 0);
	if (rc)
		return rc;
	/* A 200 whose listing does not parse is retried like a 5xx, with
	 * the same bound: a store can list an object it is still writing
	 * with an empty ETag (s3rver does), and the next listing is whole. */
	for (attempt = 0;; attempt++) {
		s3_xfer_init(&x, "GET", bucket, NULL);
		x.query = q;
		x.n_query = n;
		if (versions) /* a store without versions says so: no warning */
			x.quiet_status = 405;
		rc = s3_perform(c, &x);
		if (rc)
			goto fail;
		/* Decode only what the server says it encoded: a store that
		 * ignores encoding-type sends raw keys, where '%' and '+' are
		 * literal. */
		url_encoded = x.resp.len && memmem(x.resp.s, x.resp.len,
						   enc_tag, strlen(enc_tag));
		rc = versions
			 ? s3xml_parse_list_versions(sbuf_str(&x.resp),
						     x.resp.len, url_encoded,
						     &page, &x.err)
			 : s3xml_parse_list(sbuf_str(&x.resp), x.resp.len,
					    url_encoded, &page, &x.err);
		if (!rc)
			break;
		log_warn("s3: list %s%s prefix '%s': bad response %s (%s)",
			 versions ? "versions of " : "", bucket,
			 prefix ? prefix : "", x.err.code, strerror(-rc));
		if (rc != -EPROTO)
			goto fail;
		s3xml_list_free(&page);
		memset(&page, 0, sizeof(page));
		s3_xfer_free(&x);
		if (!s3_retry_wait(c, attempt))
			return -EPROTO; /* logged above */
	}
	rc = s3_list_merge(out, &page);
fail:
	s3xml_list_free(&page);
	s3_xfer_free(&x);
	return rc;
}

int s3_list_page(struct s3_client *c, const char *bucket, const char *prefix,
		 const char *delimiter, const char *token, int max_keys,
		 struct s3_list_result *out)
{
	struct sigv4_kv q[6];
	char mk[16];
	size_t n = 0;

	if (max_keys > 0)
		snprintf(mk, sizeof(mk), "%d", max_keys);
	s3_query_add(q, &n, "list-type", "2");
	s3_query_add(q, &n, "encoding-type", "url");
	s3_query_add(q, &n, "prefix", prefix);
	s3_query_add(q, &n, "delimiter", delimiter);
	s3_query_add(q, &n, "continuation-token", token);
	s3_query_add(q, &n, "max-keys", max_keys > 0 ? mk : NULL);
	return s3_list_get(c, bucket, q, n, 0, prefix, out);
}

int s3_list_versions_all(struct s3_client *c, const char *bucket,
			 const char *prefix, size_t max_entries,
			 struct s3_list_result *out)
{
	char *key_marker = NULL, *version_marker = NULL;
	struct sigv4_kv q[5];
	size_t n;
	int rc = 0, pages;

	/* Pages are bounded too: a store that pages on without entries (or
	 * alternates markers) never loops for ever (review P7). */
	for (pages = 0;; pages++) {
		if (max_entries && out->n_entries >= max_entries)
			break;
		if (pages >= S3_VERSIONS_PAGES_MAX) {
			log_warn("s3: list versions of %s: stopped after %d "
				 "pages",
				 bucket, pages);
			break; /* out->truncated stays 1 */
		}
		n = 0;
		q[n].name = "versions";
		q[n++].value = "";
		s3_query_add(q, &n, "encoding-type", "url");
		s3_query_add(q, &n, "prefix", prefix);
		s3_query_add(q, &n, "key-marker", key_marker);
		s3_query_add(q, &n, "version-id-marker", version_marker);
		rc = s3_list_get(c, bucket, q, n, 1, prefix, out);
		if (rc || !out->truncated)
			break;
		if (!out->next_token || !*out->next_token ||
		    (key_marker && !strcmp(key_marker, out->next_token) &&
		     version_marker && out->next_version &&
		     !strcmp(version_marker, out->next_version))) {
			log_warn("s3: list versions of %s: truncated without "
				 "a new marker",
				 bucket);
			rc = -EPROTO;
			break;
		}
		free(key_marker);
		free(version_marker);
		key_marker = strdup(out->next_token);
		version_marker =
		    out->next_version ? strdup(out->next_version) : NULL;
		if (!key_marker || (out->next_version && !version_marker)) {
			rc = -ENOMEM;
			break;
		}
	}
	free(key_marker);
	free(version_marker);
	return rc;
}

int s3_list_all(struct s3_client *c, const char *bucket, const char *prefix,
		const char *delimiter, size_t max_entries,
		struct s3_list_result *out)
{
	char *token = NULL;
	int rc = 0, mk;

	for (;;) {
		size_t have = out->n_entries + out->n_prefixes;

		mk = 0;
		if (max_entries && have >= max_entries)
			break;
		if (max_entries && max_entries - have < 1000)
			mk = (int)(max_entries - have);
		rc = s3_list_page(c, bucket, prefix, delimiter, token, mk, out);
		if (rc || !out->truncated)
			break;
		if (!out->next_token || !*out->next_token ||
		    (token && !strcmp(token, out->next_token))) {
			log_warn("s3: list %s: truncated without a new token",
				 bucket);
			rc = -EPROTO;
			break;
		}
		free(token);
		token = strdup(out->next_token);
		if (!token) {
			rc = -ENOMEM;
			break;
		}
	}
	free(token);
	return rc;
}

int s3_delete_every_version(struct s3_client *c, const char *bucket,
			    const char *key)
{
	static atomic_int warned_list;
	struct s3_list_result v = {0};
	size_t i;
	int rc, rc2, pass;

	rc = s3_delete(c, bucket, key);
	if (rc)
		return rc;
	rc = s3_list_versions_all(c, bucket, key, S3_VERSIONS_MAX, &v);
	if (rc == -ENOTSUP) { /* no versions here: the DELETE removed it */
		rc = 0;
		goto out;
	}
	if (rc == -EACCES) { /* not allowed to list them: said once */
		if (!atomic_exchange(&warned_list, 1))
			log_warn("s3: %s: versions cannot be listed (no "
				 "s3:ListBucketVersions?): noncurrent versions "
				 "of deleted objects stay",
				 bucket);
		rc = 0;
		goto out;
	}
	if (rc)
		goto out;
	/* The stored versions first, then (only when all of them went) the
	 * delete markers: a version the store keeps (object lock) stays
	 * behind its marker, never current again (review P3). */
	for (pass = 0; pass < 2 && !(pass && rc); pass++) {
		for (i = 0; i < v.n_entries; i++) {
			const struct s3_list_entry *e = &v.entries[i];

			if (strcmp(e->key, key) || e->delete_marker != pass)
				continue; /* another key under this prefix */
			rc2 = s3_delete_version(c, bucket, key, e->version_id);
			if (rc2)
				log_error("s3: %s/%s: version %s could not be "
					  "deleted: %s",
					  bucket, key, e->version_id,
					  strerror(-rc2));
			if (!rc)
				rc = rc2;
		}
	}
	if (!rc && v.truncated)
		rc = -EAGAIN;
out:
	s3xml_list_free(&v);
	return rc;
}
