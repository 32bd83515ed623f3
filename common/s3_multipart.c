/* s3_multipart.c - multipart uploads and server-side copies, see s3.h.
 *
 * Built on the request machinery of s3.c (s3_internal.h): each operation
 * fills one struct s3_xfer and runs it with s3_perform(). Initiate,
 * complete and the copies answer with an XML body, which may be a 200 with
 * <Error>: their on_ok callbacks parse it. s3_copy_auto() picks CopyObject
 * or a multipart copy by size and aborts the upload when a step fails. */
#include "s3.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "hash.h"
#include "log.h"
#include "s3_internal.h"
#include "sbuf.h"
#include "sigv4.h"

#define S3_COPY_MAX (5ULL << 30) /* CopyObject / single part limit */
#define S3_PART_DEFAULT (64ULL << 20)
#define S3_MAX_PARTS 10000

/* ---- multipart and copy ----------------------------------------------- */

static int s3_ok_etag_xml(struct s3_xfer *x)
{
	return s3xml_parse_etag_result(sbuf_str(&x->resp), x->resp.len, x->etag,
				       sizeof(x->etag), &x->err);
}

static int s3_ok_initiate(struct s3_xfer *x)
{
	free(x->upload_id);
	x->upload_id = NULL;
	return s3xml_parse_initiate(sbuf_str(&x->resp), x->resp.len,
				    &x->upload_id, &x->err);
}

/* Is ctype a Content-Type every store signs alike (s3_header_sendable)?
 * Else it is left out (the store's default), logged: never a request
 * refused for its signature (review Q1). */
static int s3_ctype_sendable(const char *ctype)
{
	if (s3_header_sendable(ctype))
		return 1;
	log_warn("s3: content-type not sent: its value is not plain "
		 "printable ASCII");
	return 0;
}

/* CreateMultipartUpload with meta, the content headers hdrs and, when not
 * NULL or "", ctype. */
static int s3_mpu_create_ct(struct s3_client *c, const char *bucket,
			    const char *key, const struct s3_kv *meta,
			    size_t n_meta, const struct s3_kv *hdrs,
			    size_t n_hdrs, const char *ctype, char **upload_id)
{
	struct sigv4_kv q = {"uploads", ""};
	struct s3_xfer x;
	int rc;

	*upload_id = NULL;
	s3_xfer_init(&x, "POST", bucket, key);
	x.query = &q;
	x.n_query = 1;
	x.on_ok = s3_ok_initiate;
	rc = s3_check(bucket, key, 1);
	if (!rc && ctype && *ctype && s3_ctype_sendable(ctype))
		rc = s3_hdrs_add(&x.hdrs, "content-type", ctype);
	if (!rc)
		rc = s3_hdrs_add_plain(&x.hdrs, hdrs, n_hdrs);
	if (!rc)
		rc = s3_hdrs_add_meta(&x.hdrs, meta, n_meta);
	if (!rc)
		rc = s3_perform(c, &x);
	if (rc)
		goto fail;
	*upload_id = x.upload_id;
	x.upload_id = NULL;
fail:
	s3_xfer_free(&x);
	return rc;
}

int s3_mpu_create(struct s3_client *c, const char *bucket, const char *key,
		  const struct s3_kv *meta, size_t n_meta, char **upload_id)
{
	return s3_mpu_create_ct(c, bucket, key, meta, n_meta, NULL, 0, NULL,
				upload_id);
}

/* The query of UploadPart and UploadPartCopy; num holds 16 bytes. */
static int s3_part_query(struct s3_xfer *x, struct sigv4_kv q[2], char *num,
			 const char *upload_id, int part_number)
{
	if (!upload_id || part_number < 1 || part_number > S3_MAX_PARTS)
		return -EINVAL;
	snprintf(num, 16, "%d", part_number);
	q[0].name = "partNumber";
	q[0].value = num;
	q[1].name = "uploadId";
	q[1].value = upload_id;
	x->query = q;
	x->n_query = 2;
	return 0;
}

int s3_mpu_upload_part(struct s3_client *c, const char *bucket, const char *key,
		       const char *upload_id, int part_number, int fd,
		       off_t offset, uint64_t len, const char *sha256_hex,
		       char *etag_out)
{
	struct sigv4_kv q[2];
	struct s3_xfer x;
	char num[16];

	s3_xfer_init(&x, "PUT", bucket, key);
	if (fd < 0 || offset < 0 ||
	    s3_part_query(&x, q, num, upload_id, part_number))
		return -EINVAL;
	s3_xfer_fd(&x, fd, offset, len, sha256_hex);
	return s3_put_common(c, &x, NULL, 0, etag_out);
}

static int s3_xml_escape(struct sbuf *b, const char *s)
{
	static const char *const ent[] = {"&amp;", "&lt;", "&gt;", "&quot;"};
	static const char special[] = "&<>\"";
	const char *hit;
	int rc = 0;

	for (; *s && !rc; s++) {
		hit = strchr(special, *s);
		rc = hit ? sbuf_adds(b, ent[hit - special]) : sbuf_addc(b, *s);
	}
	return rc;
}

int s3_mpu_etag(const struct s3_part *parts, size_t n_parts, char out[80])
{
	unsigned char md[EVP_MAX_MD_SIZE], bin[16];
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx;
	size_t i, j;
	int rc = 0;

	if (!n_parts || n_parts > S3_MAX_PARTS)
		return -EINVAL;
	ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL)) {
		EVP_MD_CTX_free(ctx);
		return -ENOMEM;
	}
	for (i = 0; !rc && i < n_parts; i++) {
		const char *e = parts[i].etag;

		if (strlen(e) != 32)
			rc = -EINVAL;
		for (j = 0; !rc && j < 16; j++) {
			unsigned v;

			if (sscanf(e + 2 * j, "%2x", &v) != 1)
				rc = -EINVAL;
			bin[j] = (unsigned char)v;
		}
		if (!rc && !EVP_DigestUpdate(ctx, bin, sizeof(bin)))
			rc = -ENOMEM;
	}
	if (!rc && !EVP_DigestFinal_ex(ctx, md, &md_len))
		rc = -ENOMEM;
	EVP_MD_CTX_free(ctx);
	if (rc)
		return rc;
	hex_encode(md, md_len, out);
	snprintf(out + 2 * md_len, 80 - 2 * md_len, "-%zu", n_parts);
	return 0;
}

/* The completion failed as far as we know (its answer lost, then a retry
 * told NoSuchUpload; or the retries ran out): is the object nonetheless
 * exactly these parts? Only an S3-style multipart ETag proves it. */
static int s3_mpu_completed_anyway(struct s3_client *c, const char *bucket,
				   const char *key, const struct s3_part *parts,
				   size_t n_parts, char *etag_out)
{
	struct s3_object_info info;
	char want[80];
	int same;

	if (s3_mpu_etag(parts, n_parts, want) || s3_head(c, bucket, key, &info))
		return 0;
	same = !strcmp(info.etag, want);
	s3_object_info_free(&info);
	if (same && etag_out)
		memcpy(etag_out, want, sizeof(want));
	return same;
}

int s3_mpu_complete(struct s3_client *c, const char *bucket, const char *key,
		    const char *upload_id, const struct s3_part *parts,
		    size_t n_parts, char *etag_out)
{
	struct sigv4_kv q = {"uploadId", upload_id};
	struct sbuf body = SBUF_INIT;
	char sha[HASH_SHA256_HEX];
	struct s3_xfer x;
	size_t i;
	int rc;

	s3_xfer_init(&x, "POST", bucket, key);
	x.slow = 1;
	rc = s3_check(bucket, key, 1);
	if (!rc && (!upload_id || !n_parts))
		rc = -EINVAL;
	if (!rc)
		rc = sbuf_adds(&body, "<CompleteMultipartUpload>");
	for (i = 0; !rc && i < n_parts; i++) {
		rc = sbuf_addf(&body,
			       "<Part><PartNumber>%d</PartNumber>"
			       "<ETag>&quot;",
			       parts[i].number);
		if (!rc)
			rc = s3_xml_escape(&body, parts[i].etag);
		if (!rc)
			rc = sbuf_adds(&body, "&quot;</ETag></Part>");
	}
	if (!rc)
		rc = sbuf_adds(&body, "</CompleteMultipartUpload>");
	if (!rc)
		rc = s3_hdrs_add(&x.hdrs, "content-type", "application/xml");
	if (rc)
		goto fail;
	sha256_hex(body.s, body.len, sha);
	x.query = &q;
	x.n_query = 1;
	x.body = body.s;
	x.body_len = body.len;
	x.payload_hash = sha;
	x.on_ok = s3_ok_etag_xml;
	rc = s3_perform(c, &x);
	if (!rc && etag_out)
		memcpy(etag_out, x.etag, sizeof(x.etag));
	if (rc && rc != -ENOMEM &&
	    s3_mpu_completed_anyway(c, bucket, key, parts, n_parts, etag_out)) {
		log_warn("s3: completion of %s/%s: its answer was lost (%s) "
			 "but the object is exactly the %zu parts: complete",
			 bucket, key, strerror(-rc), n_parts);
		rc = 0;
		/* If it was not this request that completed it, no parts
		 * stay behind (NoSuchUpload otherwise: nothing to do). */
		(void)s3_delete_common(c, bucket, key, upload_id);
	}
fail:
	sbuf_free(&body);
	s3_xfer_free(&x);
	return rc;
}

int s3_mpu_abort(struct s3_client *c, const char *bucket, const char *key,
		 const char *upload_id)
{
	if (!upload_id)
		return -EINVAL;
	return s3_delete_common(c, bucket, key, upload_id);
}

/* CopyObject (range NULL: metadata COPY, or REPLACE with meta, the
 * content headers hdrs and ctype) or, when x has the part query,
 * UploadPartCopy of range "bytes=first-last". */
static int s3_copy_common(struct s3_client *c, struct s3_xfer *x,
			  const char *src_bucket, const char *src_key,
			  const char *range, const struct s3_kv *meta,
			  size_t n_meta, const struct s3_kv *hdrs,
			  size_t n_hdrs, const char *if_match,
			  const char *ctype, char *etag_out)
{
	struct sbuf raw = SBUF_INIT, src = SBUF_INIT;
	char im[84];
	int rc;

	x->on_ok = s3_ok_etag_xml;
	rc = s3_check(x->bucket, x->key, 1);
	if (!rc)
		rc = s3_check(src_bucket, src_key, 1);
	/* "/bucket/key", the key encoded like a path */
	if (!rc)
		rc = sbuf_addf(&raw, "/%s/%s", src_bucket, src_key);
	if (!rc)
		rc = sigv4_encode_path(&src, raw.s);
	if (!rc)
		rc = s3_hdrs_add(&x->hdrs, "x-amz-copy-source", src.s);
	if (!rc && range)
		rc = s3_hdrs_add(&x->hdrs, "x-amz-copy-source-range", range);
	if (!rc && !range)
		rc = s3_hdrs_add(&x->hdrs, "x-amz-metadata-directive",
				 meta ? "REPLACE" : "COPY");
	if (!rc && if_match) {
		if (!*if_match || strchr(if_match, '"') ||
		    (size_t)snprintf(im, sizeof(im), "\"%s\"", if_match) >=
			sizeof(im))
			rc = -EINVAL;
		else
			rc = s3_hdrs_add(&x->hdrs, "x-amz-copy-source-if-match",
					 im);
	}
	if (!rc && ctype && *ctype && !range && s3_ctype_sendable(ctype))
		rc = s3_hdrs_add(&x->hdrs, "content-type", ctype);
	if (!rc && meta && !range)
		rc = s3_hdrs_add_plain(&x->hdrs, hdrs, n_hdrs);
	if (!rc && meta)
		rc = s3_hdrs_add_meta(&x->hdrs, meta, n_meta);
	if (!rc)
		rc = s3_perform(c, x);
	if (!rc && etag_out)
		memcpy(etag_out, x->etag, sizeof(x->etag));
	sbuf_free(&raw);
	sbuf_free(&src);
	s3_xfer_free(x);
	return rc;
}

int s3_copy(struct s3_client *c, const char *src_bucket, const char *src_key,
	    const char *dst_bucket, const char *dst_key,
	    const struct s3_kv *replace_meta, size_t n_meta, char *etag_out)
{
	struct s3_xfer x;

	s3_xfer_init(&x, "PUT", dst_bucket, dst_key);
	x.slow = 1;
	return s3_copy_common(c, &x, src_bucket, src_key, NULL, replace_meta,
			      n_meta, NULL, 0, NULL, NULL, etag_out);
}

int s3_mpu_upload_part_copy(struct s3_client *c, const char *bucket,
			    const char *key, const char *upload_id,
			    int part_number, const char *src_bucket,
			    const char *src_key, uint64_t first, uint64_t last,
			    char *etag_out)
{
	struct sigv4_kv q[2];
	struct s3_xfer x;
	char num[16], range[64];

	s3_xfer_init(&x, "PUT", bucket, key);
	x.slow = 1;
	if (last < first || s3_part_query(&x, q, num, upload_id, part_number))
		return -EINVAL;
	snprintf(range, sizeof(range), "bytes=%llu-%llu",
		 (unsigned long long)first, (unsigned long long)last);
	return s3_copy_common(c, &x, src_bucket, src_key, range, NULL, 0, NULL,
			      0, NULL, NULL, etag_out);
}

int s3_copy_auto(struct s3_client *c, const char *src_bucket,
		 const char *src_key, const char *dst_bucket,
		 const char *dst_key, uint64_t size, uint64_t threshold,
		 uint64_t part_size, const struct s3_kv *meta, size_t n_meta,
		 char *etag_out)
{
	struct s3_object_info src = {0};
	struct s3_part *parts = NULL;
	char *upload_id = NULL;
	uint64_t off, n_parts, i;
	int rc;

	if (size <= threshold && size <= S3_COPY_MAX)
		return s3_copy(c, src_bucket, src_key, dst_bucket, dst_key,
			       meta, n_meta, etag_out);
	if (!part_size)
		part_size = S3_PART_DEFAULT;
	if (part_size > S3_COPY_MAX)
		part_size = S3_COPY_MAX;
	while ((size + part_size - 1) / part_size > S3_MAX_PARTS)
		part_size *= 2;
	n_parts = (size + part_size - 1) / part_size;
	if (!meta) {
		/* The destination gets the source's metadata. */
		rc = s3_head(c, src_bucket, src_key, &src);
		if (rc)
			goto fail;
		meta = src.meta;
		n_meta = src.n_meta;
	}
	parts = calloc(n_parts ? n_parts : 1, sizeof(*parts));
	if (!parts) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = s3_mpu_create(c, dst_bucket, dst_key, meta, n_meta, &upload_id);
	if (rc)
		goto fail;
	for (i = 0, off = 0; i < n_parts; i++, off += part_size) {
		uint64_t last = off + part_size - 1;

		if (last >= size)
			last = size - 1;
		parts[i].number = (int)i + 1;
		rc = s3_mpu_upload_part_copy(c, dst_bucket, dst_key, upload_id,
					     parts[i].number, src_bucket,
					     src_key, off, last, parts[i].etag);
		if (rc)
			goto fail;
	}
	rc = s3_mpu_complete(c, dst_bucket, dst_key, upload_id, parts,
			     (size_t)n_parts, etag_out);
fail:
	if (rc && upload_id && s3_mpu_abort(c, dst_bucket, dst_key, upload_id))
		log_warn("s3: copy to %s/%s: abort of upload failed",
			 dst_bucket, dst_key);
	free(upload_id);
	free(parts);
	s3_object_info_free(&src);
	return rc;
}

/* ---- the guarded copy ------------------------------------------------- */

/* The parts of one multipart copy, shared by its workers. */
struct s3_pcopy {
	struct s3_client *c;
	const struct s3_copy_req *r;
	const char *if_match; /* NULL: the ETag is checked after the copy */
	const char *upload_id;
	struct s3_part *parts;
	uint64_t n_parts, part_size;
	pthread_mutex_t lock;
	uint64_t next; /* protected by lock: the next part to copy */
	int rc;	       /* protected by lock: the first failure */
};

static void *s3_pcopy_worker(void *arg)
{
	struct s3_pcopy *p = arg;
	const struct s3_copy_req *r = p->r;

	for (;;) {
		struct sigv4_kv q[2];
		struct s3_xfer x;
		uint64_t i, first, last;
		char num[16], range[64];
		int rc;

		pthread_mutex_lock(&p->lock);
		i = p->next++;
		rc = p->rc;
		pthread_mutex_unlock(&p->lock);
		if (rc || i >= p->n_parts)
			break;
		first = i * p->part_size;
		last = first + p->part_size - 1;
		if (last >= r->size)
			last = r->size - 1;
		p->parts[i].number = (int)i + 1;
		s3_xfer_init(&x, "PUT", r->dst_bucket, r->dst_key);
		x.slow = 1;
		rc =
		    s3_part_query(&x, q, num, p->upload_id, p->parts[i].number);
		snprintf(range, sizeof(range), "bytes=%llu-%llu",
			 (unsigned long long)first, (unsigned long long)last);
		if (!rc)
			rc = s3_copy_common(
			    p->c, &x, r->src_bucket, r->src_key, range, NULL, 0,
			    NULL, 0, p->if_match, NULL, p->parts[i].etag);
		else
			s3_xfer_free(&x);
		if (rc) {
			pthread_mutex_lock(&p->lock);
			if (!p->rc)
				p->rc = rc;
			pthread_mutex_unlock(&p->lock);
			break;
		}
	}
	return NULL;
}

#define S3_COPY_WORKERS_MAX 32

static int s3_copy_parts(struct s3_client *c, const struct s3_copy_req *r,
			 const char *if_match, char *etag_out)
{
	struct s3_pcopy p = {.c = c, .r = r, .if_match = if_match};
	pthread_t th[S3_COPY_WORKERS_MAX];
	char *upload_id = NULL;
	int n_th = 0, i, rc;

	p.part_size = r->part_size ? r->part_size : S3_PART_DEFAULT;
	if (p.part_size > S3_COPY_MAX)
		p.part_size = S3_COPY_MAX;
	while ((r->size + p.part_size - 1) / p.part_size > S3_MAX_PARTS)
		p.part_size *= 2;
	p.n_parts = (r->size + p.part_size - 1) / p.part_size;
	if (!p.n_parts)
		return -EINVAL; /* an empty object is never above a threshold */
	p.parts = calloc(p.n_parts, sizeof(*p.parts));
	if (!p.parts)
		return -ENOMEM;
	rc = s3_mpu_create_ct(c, r->dst_bucket, r->dst_key, r->meta, r->n_meta,
			      r->hdrs, r->n_hdrs, r->content_type, &upload_id);
	if (rc)
		goto out;
	p.upload_id = upload_id;
	pthread_mutex_init(&p.lock, NULL);
	for (i = 0; i < r->workers && i < S3_COPY_WORKERS_MAX &&
		    (uint64_t)i < p.n_parts;
	     i++) {
		if (pthread_create(&th[n_th], NULL, s3_pcopy_worker, &p))
			break;
		n_th++;
	}
	if (!n_th)
		s3_pcopy_worker(&p); /* no thread: copy them here */
	for (i = 0; i < n_th; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&p.lock);
	rc = p.rc;
	if (!rc)
		rc = s3_mpu_complete(c, r->dst_bucket, r->dst_key, upload_id,
				     p.parts, (size_t)p.n_parts, etag_out);
	if (rc && s3_mpu_abort(c, r->dst_bucket, r->dst_key, upload_id))
		log_warn("s3: copy to %s/%s: abort of upload failed",
			 r->dst_bucket, r->dst_key);
out:
	free(upload_id);
	free(p.parts);
	return rc;
}

/* One copy attempt: CopyObject, or multipart above the threshold (or a
 * single CopyObject when the store has no UploadPartCopy). */
static int s3_copy_once(struct s3_client *c, const struct s3_copy_req *r,
			const char *if_match, char *etag_out)
{
	static const struct s3_kv none;
	struct s3_xfer x;
	int rc = -ENOTSUP;

	if (r->size > r->threshold || r->size > S3_COPY_MAX) {
		rc = s3_copy_parts(c, r, if_match, etag_out);
		if (rc != -ENOTSUP || r->size > S3_COPY_MAX)
			return rc;
		/* A store without UploadPartCopy (s3rver). */
		log_warn("s3: copy to %s/%s: UploadPartCopy not implemented by "
			 "the store: one CopyObject",
			 r->dst_bucket, r->dst_key);
	}
	s3_xfer_init(&x, "PUT", r->dst_bucket, r->dst_key);
	x.slow = 1;
	if (r->keep_meta)
		return s3_copy_common(c, &x, r->src_bucket, r->src_key, NULL,
				      NULL, 0, NULL, 0, if_match, NULL,
				      etag_out);
	/* REPLACE even without metadata: the hashes are the caller's. */
	return s3_copy_common(c, &x, r->src_bucket, r->src_key, NULL,
			      r->meta ? r->meta : &none,
			      r->meta ? r->n_meta : 0, r->hdrs, r->n_hdrs,
			      if_match, r->content_type, etag_out);
}

int s3_etag_vouches(const char *copy_etag, const char *src_etag)
{
	return copy_etag && src_etag && *copy_etag && !strchr(copy_etag, '-') &&
	       !strcmp(copy_etag, src_etag);
}

/* The source's ETag now: 0 and *same, or -errno (-ENOENT: gone). */
static int s3_src_same(struct s3_client *c, const struct s3_copy_req *r,
		       int *same)
{
	struct s3_object_info now;
	int rc = s3_head(c, r->src_bucket, r->src_key, &now);

	if (rc)
		return rc;
	*same = !strcmp(now.etag, r->src_etag);
	if (!*same)
		log_error("s3: copy %s/%s -> %s/%s: the source changed (ETag "
			  "%s, expected %s)",
			  r->src_bucket, r->src_key, r->dst_bucket, r->dst_key,
			  now.etag, r->src_etag);
	s3_object_info_free(&now);
	return 0;
}

int s3_copy_guarded(struct s3_client *c, const struct s3_copy_req *r,
		    char *etag_out)
{
	int rc, same = 0;

	if (!r || !r->src_etag || !*r->src_etag)
		return -EINVAL;
	rc = s3_copy_once(c, r, r->src_etag, etag_out);
	if (rc == -EEXIST && strchr(r->src_etag, '-')) {
		/* Swift's s3api refuses x-amz-copy-source-if-match for every
		 * multipart (SLO) source, changed or not: if the source is
		 * unchanged, the copy goes without the header and is checked
		 * by the HEADs before and after it instead. */
		rc = s3_src_same(c, r, &same);
		if (rc == -ENOENT)
			return -EEXIST;
		if (rc)
			return rc;
		if (!same)
			return -EEXIST;
		log_info("s3: copy %s/%s: the store refused the If-Match of "
			 "an unchanged multipart source: checked by HEAD",
			 r->src_bucket, r->src_key);
		rc = s3_copy_once(c, r, NULL, etag_out);
	}
	if (rc)
		return rc;
	/* A single-part copy that answered the source's single-part ETag
	 * (the MD5 of the bytes) copied the bytes of that source, whatever
	 * the store did with the If-Match: a HEAD of the source now could
	 * only tell less (what it is after the copy, not what was copied). */
	if (etag_out && s3_etag_vouches(etag_out, r->src_etag))
		return 0;
	/* Stores that ignore x-amz-copy-source-if-match (s3rver): was it
	 * still that source? A source replaced meanwhile fails the copy. */
	rc = s3_src_same(c, r, &same);
	if (rc == -ENOENT) {
		log_error("s3: copy %s/%s -> %s/%s: the source vanished "
			  "during the copy",
			  r->src_bucket, r->src_key, r->dst_bucket, r->dst_key);
		return -EEXIST;
	}
	if (rc)
		return rc;
	return same ? 0 : -EEXIST;
}
