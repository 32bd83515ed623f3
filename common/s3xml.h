/* s3xml.h - parsing S3 XML responses with expat.
 *
 * Every parser takes the body (not NUL-terminated necessarily) and returns
 * 0 on success or -errno: -EPROTO for a body that is not well-formed XML,
 * truncated, or has the wrong root element; -EIO (or the mapped errno) when
 * the root element is <Error>: the errno is errmap_s3(0, code), EIO when
 * the code is unknown (then *err, if given, is filled: that is how
 * a "200 OK" whose body is an error gets caught). Output structs are
 * caller-owned; free them with the matching _free function. */
#ifndef CUSTODYFS_S3XML_H
#define CUSTODYFS_S3XML_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct s3_error {
	char code[64];        /* "NoSuchKey" */
	char message[256];    /* human text, truncated */
	char request_id[128]; /* for the log */
};

/* Parses an <Error> document. Returns 0 when body is an S3 error document
 * (err filled), -ENOENT when it is well-formed XML with another root,
 * -EPROTO when it is not XML. */
int s3xml_parse_error(const char *body, size_t len, struct s3_error *err);

struct s3_list_entry {
	char *key;     /* decoded key (UTF-8) */
	uint64_t size;
	char etag[80]; /* with the quotes removed */
	time_t mtime;  /* LastModified, UTC */
	/* ListObjectVersions only (else NULL and 0): */
	char *version_id;   /* VersionId ("null" for an unversioned one) */
	int delete_marker;  /* a <DeleteMarker>, not a <Version> */
	int is_latest;      /* IsLatest: the key's current version */
};

struct s3_list_result {
	struct s3_list_entry *entries;
	size_t n_entries;
	char **prefixes; /* CommonPrefixes/Prefix values */
	size_t n_prefixes;
	int truncated;            /* IsTruncated */
	char *next_token;         /* NextContinuationToken (ListObjectVersions:
				     NextKeyMarker) or NULL */
	char *next_version;       /* ListObjectVersions: NextVersionIdMarker */
	char *key_count_str;      /* unused by callers; may be NULL */
};

/* ListObjectsV2 result. Appends to *out (so pages can be accumulated):
 * initialise *out with {0} before the first call. If the response uses
 * EncodingType=url, pass url_encoded=1 and keys/prefixes are decoded. */
int s3xml_parse_list(const char *body, size_t len, int url_encoded,
		     struct s3_list_result *out, struct s3_error *err);
void s3xml_list_free(struct s3_list_result *r);

/* ListObjectVersions result (root ListVersionsResult), as
 * s3xml_parse_list: every <Version> and <DeleteMarker> is an entry with
 * its key and version_id (both required); NextKeyMarker goes to
 * next_token, NextVersionIdMarker to next_version. Another root than
 * ListVersionsResult or <Error> (a store that ignores ?versions) is
 * -EPROTO. */
int s3xml_parse_list_versions(const char *body, size_t len, int url_encoded,
			      struct s3_list_result *out,
			      struct s3_error *err);

/* InitiateMultipartUploadResult -> *upload_id (malloc'd, caller frees). */
int s3xml_parse_initiate(const char *body, size_t len, char **upload_id,
			 struct s3_error *err);

/* CompleteMultipartUploadResult, CopyObjectResult or CopyPartResult ->
 * etag without quotes (etag_out at least 80 bytes). An <Error> root (the
 * 200-with-error case) returns the mapped -errno. */
int s3xml_parse_etag_result(const char *body, size_t len, char *etag_out,
			    size_t etag_len, struct s3_error *err);

/* Parses ISO 8601 "2009-10-12T17:50:30.000Z" into UTC time_t. -EINVAL. */
int s3xml_parse_time(const char *s, time_t *out);

#endif
