/* s3_internal.h - what s3.c, s3_multipart.c and s3_meta.c share; not installed
 * and included by no other file.
 *
 * A request is a struct s3_xfer: s3_xfer_init() it, set what differs from
 * a bodiless request without query, s3_perform() it, read the answer from
 * it, s3_xfer_free() it. The helpers below return 0 or -errno like s3.h,
 * and log like it. struct s3_client stays opaque here. */
#ifndef CUSTODYFS_S3_INTERNAL_H
#define CUSTODYFS_S3_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>

#include "s3.h"
#include "sbuf.h"
#include "sigv4.h"

/* Extra headers of one request (signed and sent); strings owned. */
struct s3_hdrs {
	struct sigv4_kv *kv;
	size_t n;
	size_t cap;
};

/* One request and its answer; see the top of s3.c. */
struct s3_xfer {
	/* request */
	const char *method;
	const char *bucket;
	const char *key; /* NULL: bucket-level request */
	const struct sigv4_kv *query;
	size_t n_query;
	struct s3_hdrs hdrs;
	const char *payload_hash;
	const char *body; /* memory body, or NULL: read body_fd */
	int body_fd;
	off_t body_off;
	uint64_t body_len;
	int large;	   /* no total timeout, only the low-speed limit */
	int slow;	   /* server-side work (copy, complete): long timeout */
	long quiet_status; /* a final status that is not worth a warning */

	/* response: into range_buf, else to out_fd, else into resp */
	char *range_buf;
	uint64_t range_off;
	size_t range_len;
	int out_fd;
	struct sbuf resp; /* XML result or error body */
	struct sbuf rhdr; /* header lines of the last response */
	/* parses a 2xx body; may fail (a 200 with <Error>) */
	int (*on_ok)(struct s3_xfer *x);
	char etag[80];
	char *upload_id;
	struct s3_error err;
	char curl_err[CURL_ERROR_SIZE];
	struct { /* the state of one attempt, zeroed before each */
		long status;
		uint64_t body_pos;
		int body_err; /* errno of a failed pread */
		size_t range_got;
		uint64_t range_seen; /* bytes of a 200 body seen */
		int range_done;	     /* stopped a 200 once the slice was full */
		uint64_t out_pos;
		int out_err;	 /* errno of a failed pwrite, or ENOMEM */
		int resp_over;	 /* result body over S3_XML_BODY_MAX */
		const char *why; /* failure text, for the log */
	} at;
};

/* 0 when bucket is a non-empty name without '/' or control characters and
 * key (NULL allowed unless need_key) is non-empty and at most S3's 1024
 * bytes; else -EINVAL, or -ENAMETOOLONG for a longer key. */
int s3_check(const char *bucket, const char *key, int need_key);

/* Appends copies of name and value to h (sent and signed as they are, so
 * name lowercase). 0 or -ENOMEM, h then unchanged. */
int s3_hdrs_add(struct s3_hdrs *h, const char *name, const char *value);

/* Adds x-amz-meta-NAME headers. Names must be header tokens (lowercased
 * here); values UTF-8 text without control characters (else -EINVAL).
 * A value that a header cannot carry as it is (bytes >= 0x80, blanks at
 * either end, or one starting "=?") is sent as an RFC 2047 encoded word
 * "=?UTF-8?B?...?=", as AWS S3 itself stores and returns such values;
 * s3_head() decodes it. 0 or -EINVAL/-ENOMEM; on failure h may hold the
 * first of them (the caller gives the request up). */
int s3_hdrs_add_meta(struct s3_hdrs *h, const struct s3_kv *meta,
		     size_t n_meta);

/* Adds hdrs (names lowercase header tokens; values sent as they are:
 * no control character but HTAB) to h, such as the content headers of an
 * object (struct s3_object_info.hdrs). 0 or -EINVAL/-ENOMEM; on failure
 * h may hold the first of them (the caller gives the request up). */
int s3_hdrs_add_plain(struct s3_hdrs *h, const struct s3_kv *hdrs,
		      size_t n_hdrs);

/* Steps *pos (start: sbuf_str(&x->rhdr)) over one "Name: value" line of
 * the last response's headers: name/value point into the block, blanks
 * trimmed. 0 at the end. */
int s3_hdr_next(const char **pos, const char **name, size_t *nlen,
		const char **val, size_t *vlen);

/* Adds the last response's x-amz-meta-* headers (names lowercased,
 * values RFC 2047-decoded; meta_inexact set when one would not be sent
 * back byte for byte) and content headers (hdrs) to info. 0 or -ENOMEM
 * (info then holds what was added: s3_object_info_free it). */
int s3_hdr_info(const struct s3_xfer *x, struct s3_object_info *info);

/* Sets *x to a bodiless request (empty-payload hash) without query,
 * headers or sinks: the answer goes to x->resp. method, bucket and key are
 * borrowed and must outlive x. Allocates nothing, but once x has been used
 * it must go to s3_xfer_free(). */
void s3_xfer_init(struct s3_xfer *x, const char *method, const char *bucket,
		  const char *key);

/* Frees what x owns (headers, response bodies, upload id) and leaves it
 * free-able again; not the borrowed strings. */
void s3_xfer_free(struct s3_xfer *x);

/* Runs x with retries. Returns 0 or -errno; x keeps the last response.
 * 0 means a 2xx that x->on_ok (if set) accepted; a failure is logged.
 * Does not free x. */
int s3_perform(struct s3_client *c, struct s3_xfer *x);

/* After a failed attempt (0-based) of something s3_perform cannot retry
 * itself (an answer that does not parse): sleeps the backoff and returns 1
 * while c's retry bound allows another attempt, else returns 0 at once. */
int s3_retry_wait(const struct s3_client *c, int attempt);

/* Body of x from fd (pread); NULL sha256_hex: UNSIGNED-PAYLOAD. len bytes
 * from offset; x becomes large (no total timeout). fd and sha256_hex are
 * borrowed. */
void s3_xfer_fd(struct s3_xfer *x, int fd, off_t offset, uint64_t len,
		const char *sha256_hex);

/* PutObject or UploadPart of x's body, with meta; ETag from the response
 * header (required for a part: it goes into CompleteMultipartUpload).
 * A part is x with a query. etag_out (80 bytes) may be NULL. Frees x,
 * whatever the outcome. */
int s3_put_common(struct s3_client *c, struct s3_xfer *x,
		  const struct s3_kv *meta, size_t n_meta, char *etag_out);

/* DELETE of an object, or of a multipart upload (upload_id non-NULL).
 * An object already gone is 0 (unless the bucket is); an upload already
 * gone is -ENOENT. */
int s3_delete_common(struct s3_client *c, const char *bucket, const char *key,
		     const char *upload_id);

#endif /* CUSTODYFS_S3_INTERNAL_H */
