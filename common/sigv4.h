/* sigv4.h - AWS Signature Version 4, pure: no transport, no clock, no I/O.
 *
 * Each step is a function of its inputs only, so every step is testable
 * against AWS's published SigV4 test-suite vectors. The caller passes the
 * time in and owns every string it passes; outputs are written into sbufs
 * owned by the caller. All functions return 0 or -errno (-EINVAL, -ENOMEM). */
#ifndef CUSTODYFS_SIGV4_H
#define CUSTODYFS_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "sbuf.h"

struct sigv4_kv {
	const char *name;  /* header or query parameter name, not encoded */
	const char *value; /* value, not encoded (may be "" but not NULL) */
};

struct sigv4_request {
	const char *method; /* "GET", "PUT", ... */
	/* Path exactly as it goes on the wire, already URI-encoded by
	 * sigv4_encode_path() (S3: each key byte encoded once, '/' kept).
	 * The canonical URI is this string verbatim; "" means "/". */
	const char *path;
	const struct sigv4_kv *query; /* unencoded; any order */
	size_t n_query;
	/* Headers that are signed, any order and case; values are trimmed and
	 * inner runs of spaces collapsed for the canonical form. Must include
	 * "host" and "x-amz-date"; S3 also wants "x-amz-content-sha256". */
	const struct sigv4_kv *headers;
	size_t n_headers;
	/* Hex SHA-256 of the payload, or "UNSIGNED-PAYLOAD". */
	const char *payload_hash;
};

struct sigv4_credentials {
	const char *access_key_id;
	const char *secret_access_key;
	const char *region;  /* "us-east-1" */
	const char *service; /* "s3" */
};

/* RFC 3986 encoding of one string: unreserved A-Z a-z 0-9 - _ . ~ kept,
 * everything else %XX (uppercase). If keep_slash, '/' is kept. Appends. */
int sigv4_uri_encode(struct sbuf *out, const char *s, size_t len,
		     int keep_slash);

/* Encodes "/bucket/key" style paths for the wire and the canonical URI. */
int sigv4_encode_path(struct sbuf *out, const char *raw_path);

/* Canonical query string: params encoded, sorted by encoded name then value,
 * joined with '&'. Also what the caller puts after '?' on the wire. */
int sigv4_canonical_query(struct sbuf *out, const struct sigv4_kv *q,
			  size_t n);

/* Formats t as "YYYYMMDDTHHMMSSZ" (16 chars + NUL). */
void sigv4_amz_date(time_t t, char out[17]);

/* Step 1: canonical request text (method \n uri \n query \n headers \n
 * signed-headers \n payload-hash). signed_headers gets "host;x-amz-date". */
int sigv4_canonical_request(struct sbuf *out, struct sbuf *signed_headers,
			    const struct sigv4_request *req);

/* Step 2: string to sign for the canonical request, at time t. */
int sigv4_string_to_sign(struct sbuf *out, const char *canonical_request,
			 time_t t, const char *region, const char *service);

/* Step 3: signing key: HMAC chain of date, region, service, "aws4_request". */
void sigv4_signing_key(const char *secret, time_t t, const char *region,
		       const char *service, unsigned char key[32]);

/* Steps 1-4: the Authorization header value
 * "AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
 *  SignedHeaders=..., Signature=hex". */
int sigv4_authorization(struct sbuf *out, const struct sigv4_request *req,
			const struct sigv4_credentials *cred, time_t t);

#endif
