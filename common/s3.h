/* s3.h - a small S3 client over libcurl (OpenSSL), signing with sigv4.
 *
 * Knows nothing of the database or of FUSE. A struct s3_client is shared by
 * all threads: every call takes an easy handle from an internal pool
 * (connection reuse, keep-alive) and returns it. Every request has connect
 * and total timeouts; 5xx, SlowDown, RequestTimeout and network errors are
 * retried (bounded count, full-jitter exponential backoff); bodies are never
 * sent with "Expect: 100-continue". A 200 whose body is <Error> is an error.
 * Every function returns 0 or -errno (mapped in s3err.c); the detail
 * (method, bucket, key, status, S3 code, request id — never a secret) goes
 * to the log. Keys are raw UTF-8; the client encodes them. */
#ifndef CUSTODYFS_S3_H
#define CUSTODYFS_S3_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "s3xml.h"

struct s3_config {
	const char *endpoint; /* "http://127.0.0.1:9000" or https://... */
	const char *region;   /* "us-east-1" */
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token; /* NULL unless temporary credentials */
	int path_style;		   /* 1: endpoint/bucket/key; 0: bucket.host */
	int verify_tls;		   /* 1 by default */
	const char *ca_file;	   /* NULL: system store */
	long connect_timeout_ms;   /* 0: default 5000 */
	long request_timeout_ms;   /* per request, 0: default 30000; copies and
				      completions get at least 15 min; transfers
				      abort below 1 KiB/s for 20 s instead.
				      A timed-out request is retried once. */
	int max_retries;	   /* 0: default 4 (so 5 attempts) */
	long retry_base_ms;	   /* 0: default 100 */
};

/* User metadata. Values are UTF-8 text without control characters; those
 * beyond what a header carries travel RFC 2047-encoded and are decoded when
 * read (s3_head), so any such value round-trips. */
struct s3_kv {
	char *name; /* metadata name without "x-amz-meta-", lowercase */
	char *value;
};

struct s3_object_info {
	uint64_t size;
	char etag[80]; /* quotes removed */
	time_t mtime;
	char content_type[256]; /* "" when the answer names none */
	struct s3_kv *meta;	/* x-amz-meta-* headers, malloc'd; free with
				   s3_object_info_free */
	size_t n_meta;
	int meta_inexact;   /* 1: a value of meta would not be sent back
			       byte for byte by a request that carries meta
			       (one custodyfs refuses: a tab, not UTF-8;
			       one it would RFC 2047-encode, or encode
			       otherwise than the store returned it), or
			       content_type or a value of hdrs is not
			       s3_header_sendable (left out if re-sent) */
	struct s3_kv *hdrs; /* the content headers S3 keeps with the object
			       but for Content-Type, as the answer gives
			       them: cache-control, content-disposition,
			       content-encoding, content-language, expires
			       (names lowercase, values verbatim; malloc'd,
			       freed with s3_object_info_free). A copy with
			       metadata REPLACE drops them unless they are
			       sent again (s3_copy_req.hdrs). */
	size_t n_hdrs;
};

struct s3_part {
	int number;    /* 1..10000 */
	char etag[80]; /* quotes removed */
};

struct s3_client;

/* Copies what it needs from cfg (strings duplicated). NULL on error with
 * errno set. The secret is kept in memory only. */
struct s3_client *s3_client_new(const struct s3_config *cfg);
void s3_client_free(struct s3_client *c);

/* For an https endpoint: one TLS handshake with it (no request; bounded by
 * connect_timeout_ms), verified as every request is (verify_tls, ca_file).
 * 0 when it succeeds, the endpoint is plain http, or requests are
 * virtual-hosted (bucket.host: not checked here); -EACCES when the
 * certificate is refused (unknown CA, wrong name, expired, ca_file
 * unreadable: a configuration error); -EIO when no verdict was reached
 * (not reachable, handshake broken off); -ENOMEM. Except for 0, why (a
 * line, no secret) says what curl reported. */
int s3_tls_check(struct s3_client *c, char *why, size_t why_len);

/* The bytes of meta as S3 counts them against its limit of user metadata
 * (AWS, MinIO: 2 KiB), counted high: each "x-amz-meta-" name and its value
 * as sent (an RFC 2047 word where one is needed). Pure. */
size_t s3_meta_size(const struct s3_kv *meta, size_t n_meta);

/* 1 when v can be sent as a header value that every store signs alike
 * (bytes 0x21-0x7e, single spaces between them), else 0: stores
 * canonicalise other bytes differently when they check a signature
 * (MinIO collapses Unicode spaces, Swift 0x85/0xA0), so such a value
 * is never re-sent (review Q1). Pure. */
int s3_header_sendable(const char *v);

/* Returns the value of metadata `name` in info, or NULL. */
const char *s3_meta_get(const struct s3_object_info *info, const char *name);
void s3_object_info_free(struct s3_object_info *info);

/* HEAD. -ENOENT when there is no such key. */
int s3_head(struct s3_client *c, const char *bucket, const char *key,
	    struct s3_object_info *out);

/* PUT of len bytes read from fd at offset (pread; never all in memory).
 * sha256_hex is the payload's SHA-256 (signed into the request). meta may be
 * NULL. etag_out (80 bytes) may be NULL. */
int s3_put_fd(struct s3_client *c, const char *bucket, const char *key, int fd,
	      off_t offset, uint64_t len, const char *sha256_hex,
	      const struct s3_kv *meta, size_t n_meta, char *etag_out);

/* PUT of a small in-memory body (directory markers, tests). */
int s3_put_buf(struct s3_client *c, const char *bucket, const char *key,
	       const void *buf, size_t len, const struct s3_kv *meta,
	       size_t n_meta, char *etag_out);

/* GET of bytes [offset, offset+len) into buf; *got gets the count (short at
 * end of object; 0 past the end). */
int s3_get_range(struct s3_client *c, const char *bucket, const char *key,
		 uint64_t offset, size_t len, void *buf, size_t *got);

/* s3_get_range only while the object has ETag etag (quotes removed; sent
 * as If-Match, and the answer's ETag is checked too, for stores that ignore
 * If-Match): every chunk read this way is of one and the same object.
 * -EEXIST (412 Precondition Failed, mapped in s3err.c) when the object has
 * another ETag now; -EPROTO when the answer names none; -EINVAL for an
 * empty etag or one holding a quote. */
int s3_get_range_if(struct s3_client *c, const char *bucket, const char *key,
		    uint64_t offset, size_t len, const char *etag, void *buf,
		    size_t *got);

/* GET of the whole object written to fd from offset 0 (pwrite). *size gets
 * the byte count. */
int s3_get_to_fd(struct s3_client *c, const char *bucket, const char *key,
		 int fd, uint64_t *size);
/* s3_get_to_fd only while the object has ETag etag (quotes removed; NULL:
 * any), as s3_get_range_if checks it: -EEXIST when another object is there
 * (fd may hold some of its bytes then), -EPROTO when the answer names no
 * ETag. */
int s3_get_to_fd_if(struct s3_client *c, const char *bucket, const char *key,
		    int fd, const char *etag, uint64_t *size);
/* s3_get_to_fd_if, and seen (seenlen bytes; NULL: not wanted) gets the
 * ETag the answer names, quotes removed ("" when it names none or the GET
 * failed): the object whose bytes fd holds. */
int s3_get_to_fd_seen(struct s3_client *c, const char *bucket, const char *key,
		      int fd, const char *etag, uint64_t *size, char *seen,
		      size_t seenlen);
/* s3_get_to_fd_seen, and tag (taglen bytes; NULL: not wanted) gets the
 * value of the user metadata x-amz-meta-<meta> the answer carries (""
 * when it carries none, or the GET failed). */
int s3_get_to_fd_tagged(struct s3_client *c, const char *bucket,
			const char *key, int fd, const char *etag,
			uint64_t *size, char *seen, size_t seenlen,
			const char *meta, char *tag, size_t taglen);

/* DELETE. Deleting a missing key succeeds (S3 semantics). */
int s3_delete(struct s3_client *c, const char *bucket, const char *key);

/* DELETE of one version of key (versionId, as a version listing names it,
 * "null" included) or of one delete marker: on a versioned bucket it is
 * gone for good, and no delete marker is added. A version already gone
 * succeeds; -EACCES when the store keeps it (object lock retention, legal
 * hold); -EINVAL for an empty version_id. */
int s3_delete_version(struct s3_client *c, const char *bucket, const char *key,
		      const char *version_id);

/* DELETE only while the object's ETag is etag (If-Match; quotes added):
 * -EEXIST (412) when another object is there now. Stores that ignore the
 * header (s3rver) delete whatever is there: the caller looks again
 * afterwards. A missing key succeeds. */
int s3_delete_if(struct s3_client *c, const char *bucket, const char *key,
		 const char *etag);

/* One ListObjectsV2 page; results are appended to *out (init with {0}).
 * prefix/delimiter/token may be NULL. max_keys 0 means server default.
 * Uses encoding-type=url and decodes. */
int s3_list_page(struct s3_client *c, const char *bucket, const char *prefix,
		 const char *delimiter, const char *token, int max_keys,
		 struct s3_list_result *out);

/* All pages, accumulated into *out (init with {0}); bounded by max_entries
 * (0: unbounded). out->truncated stays 1 if the bound stopped it. */
int s3_list_all(struct s3_client *c, const char *bucket, const char *prefix,
		const char *delimiter, size_t max_entries,
		struct s3_list_result *out);

/* ListObjectVersions of prefix, all pages accumulated into *out (init
 * with {0}; entries carry version_id and delete_marker), bounded by
 * max_entries (0: unbounded) and S3_VERSIONS_PAGES_MAX pages
 * (out->truncated stays 1 if a bound stopped it).
 * -ENOTSUP when the store has no version listing (405 MethodNotAllowed,
 * 501 NotImplemented): a store without versioning, where a DELETE removes
 * the only copy. */
int s3_list_versions_all(struct s3_client *c, const char *bucket,
			 const char *prefix, size_t max_entries,
			 struct s3_list_result *out);

/* Deletes key, then (a versioned bucket) every version and delete marker of
 * key that a version listing names: nothing of it is left, current or
 * noncurrent. The stored versions go first; the delete markers only when
 * all of them went, so a version the store keeps stays noncurrent. On a
 * store without version listing (-ENOTSUP), or where listing them is not
 * allowed (-EACCES: logged once), the DELETE is all. 0; -EACCES when the
 * store keeps a version (object lock); -EAGAIN when more than
 * S3_VERSIONS_MAX versions were left; or another -errno (the first
 * failure; every listed version is tried). */
#define S3_VERSIONS_MAX 10000
#define S3_VERSIONS_PAGES_MAX 1000
int s3_delete_every_version(struct s3_client *c, const char *bucket,
			    const char *key);

/* Multipart upload. *upload_id is malloc'd (caller frees). */
int s3_mpu_create(struct s3_client *c, const char *bucket, const char *key,
		  const struct s3_kv *meta, size_t n_meta, char **upload_id);
int s3_mpu_upload_part(struct s3_client *c, const char *bucket, const char *key,
		       const char *upload_id, int part_number, int fd,
		       off_t offset, uint64_t len, const char *sha256_hex,
		       char *etag_out);
/* CompleteMultipartUpload of parts[] (ascending numbers). When the request
 * fails after it may have reached the server (an answer lost, then a retry
 * told NoSuchUpload), the object is read back: if its ETag is the S3
 * multipart ETag of exactly these parts (s3_mpu_etag), the completion did
 * happen and this returns 0. Stores whose ETags differ (s3rver) keep the
 * error: never a success that is not proven. */
int s3_mpu_complete(struct s3_client *c, const char *bucket, const char *key,
		    const char *upload_id, const struct s3_part *parts,
		    size_t n_parts, char *etag_out);
/* The ETag S3 gives the completion of parts[] (their ETags must be MD5 hex):
 * hex MD5 of the parts' binary MD5s, "-N". 0 or -EINVAL/-ENOMEM. */
int s3_mpu_etag(const struct s3_part *parts, size_t n_parts, char out[80]);
int s3_mpu_abort(struct s3_client *c, const char *bucket, const char *key,
		 const char *upload_id);

/* Server-side copy. replace_meta NULL keeps the source metadata
 * (x-amz-metadata-directive: COPY); non-NULL replaces it (REPLACE).
 * Only for sources up to 5 GiB; see s3_copy_multipart. */
int s3_copy(struct s3_client *c, const char *src_bucket, const char *src_key,
	    const char *dst_bucket, const char *dst_key,
	    const struct s3_kv *replace_meta, size_t n_meta, char *etag_out);

/* UploadPartCopy of bytes [first, last] of the source. */
int s3_mpu_upload_part_copy(struct s3_client *c, const char *bucket,
			    const char *key, const char *upload_id,
			    int part_number, const char *src_bucket,
			    const char *src_key, uint64_t first, uint64_t last,
			    char *etag_out);

/* Copy of any size: CopyObject when size <= threshold, otherwise multipart
 * UploadPartCopy with part_size parts (aborted on failure). meta is the
 * metadata the destination gets (NULL: the source's, re-read by HEAD). */
int s3_copy_auto(struct s3_client *c, const char *src_bucket,
		 const char *src_key, const char *dst_bucket,
		 const char *dst_key, uint64_t size, uint64_t threshold,
		 uint64_t part_size, const struct s3_kv *meta, size_t n_meta,
		 char *etag_out);

/* A server-side copy guarded by the source's ETag (promotion). */
struct s3_copy_req {
	const char *src_bucket;
	const char *src_key;
	const char *src_etag; /* required, quotes removed: sent as
				 x-amz-copy-source-if-match */
	const char *dst_bucket;
	const char *dst_key;
	const char *content_type; /* the destination's, NULL: none */
	const struct s3_kv *meta; /* the destination's (REPLACE) */
	size_t n_meta;
	uint64_t size;	    /* the source's size (HEAD) */
	uint64_t threshold; /* CopyObject up to this size, else multipart */
	uint64_t part_size; /* 0: 64 MiB */
	int workers;	    /* parts copied in parallel, at least 1 */
	int keep_meta;	    /* a single CopyObject keeps the source's own
			       metadata (directive COPY); meta, hdrs and
			       content_type are then for a multipart copy */
	const struct s3_kv *hdrs; /* content headers the destination gets
				     (the source's s3_object_info.hdrs:
				     REPLACE drops them), sent as they are
				     with the CopyObject (REPLACE) or the
				     CreateMultipartUpload; NULL: none */
	size_t n_hdrs;
};

/* CopyObject (metadata REPLACE: r->meta, r->hdrs and r->content_type) or, above
 * r->threshold, CreateMultipartUpload + UploadPartCopy (ranges, with up to
 * r->workers parts in flight) + CompleteMultipartUpload, aborted on
 * failure (r->keep_meta: a CopyObject with metadata COPY instead). Every
 * request carries x-amz-copy-source-if-match: a source
 * replaced since r->src_etag was read fails with -EEXIST (412, s3err.c);
 * for stores that ignore that header the source is HEADed after the copy
 * and a changed ETag fails with -EEXIST too (the copy then stays in
 * dst_key: the caller has not recorded it and must delete it), unless the
 * copy answered the source's own single-part ETag (the MD5 of the bytes
 * copied: that source's bytes, replaced since or not). A 200 whose
 * body is <Error> fails. A store without UploadPartCopy (-ENOTSUP) gets
 * one CopyObject instead, up to 5 GiB. A store that refuses the If-Match
 * of a multipart source although its ETag has not changed (Swift s3api:
 * SLO ETags) gets the copy without it, guarded by the HEADs before and
 * after only. etag_out (80 bytes) may be NULL. */
int s3_copy_guarded(struct s3_client *c, const struct s3_copy_req *r,
		    char *etag_out);

/* Does a copy that answered copy_etag hold the bytes of the source read
 * with src_etag? 1 only when both are the same single-part ETag (the MD5
 * of the bytes); else 0, NULL or "" included. A multipart ETag is of the
 * parts an upload had, not of the bytes a copy took: an upload put at the
 * source during the copy, then the first one put back with the same parts,
 * shows that ETag before and after the copy (review F3). Pure. */
int s3_etag_vouches(const char *copy_etag, const char *src_etag);

/* PUT bucket (test and local-stack helper). Existing bucket owned by us: 0. */
int s3_create_bucket(struct s3_client *c, const char *bucket);

#endif
