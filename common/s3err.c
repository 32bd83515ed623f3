/* s3err.c - errno mapping for S3, libcurl and PostgreSQL failures, see
 * s3err.h.
 *
 * Everything is table-driven: one row per known code, carrying the errno and
 * whether the failure is worth retrying, so errmap_x() and
 * errmap_x_retryable() can never disagree about a code.
 *
 * Two conventions beyond the header: errmap_curl(CURLE_OK) and
 * errmap_sqlstate("00000") return 0 (nothing failed), and every unknown
 * input maps to EIO, not retryable (except the documented NULL SQLSTATE). */
#include "s3err.h"

#include <curl/curl.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define S3ERR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct s3err_code_row {
	const char *code;
	int err;
	int retry;
};

struct s3err_num_row {
	int num;
	int err;
	int retry;
};

/* S3 <Code> values (AWS and MinIO). Case-sensitive, as S3 sends them. */
static const struct s3err_code_row s3err_s3_codes[] = {
    /* missing things */
    {"NoSuchKey", ENOENT, 0},
    {"NoSuchBucket", ENOENT, 0},
    {"NoSuchUpload", ENOENT, 0},
    {"NoSuchVersion", ENOENT, 0},
    /* credentials, signatures, permissions */
    {"AccessDenied", EACCES, 0},
    {"AllAccessDisabled", EACCES, 0},
    {"AccountProblem", EACCES, 0},
    {"InvalidAccessKeyId", EACCES, 0},
    {"SignatureDoesNotMatch", EACCES, 0},
    {"RequestTimeTooSkewed", EACCES, 0},
    {"ExpiredToken", EACCES, 0},
    {"InvalidToken", EACCES, 0},
    {"TokenRefreshRequired", EACCES, 0},
    {"AuthorizationHeaderMalformed", EACCES, 0},
    {"MissingSecurityHeader", EACCES, 0},
    /* conflicts and conditions */
    {"BucketAlreadyOwnedByYou", EEXIST, 0},
    {"BucketAlreadyExists", EEXIST, 0},
    {"BucketNotEmpty", ENOTEMPTY, 0},
    {"PreconditionFailed", EEXIST, 0},
    {"ConditionalRequestConflict", EBUSY, 0},
    {"OperationAborted", EBUSY, 0},
    /* sizes and names */
    {"KeyTooLongError", ENAMETOOLONG, 0},
    {"EntityTooLarge", EFBIG, 0},
    {"EntityTooSmall", EINVAL, 0},
    {"MetadataTooLarge", E2BIG, 0},
    {"MaxMessageLengthExceeded", EINVAL, 0},
    /* bad requests (our bugs, retrying cannot help) */
    {"InvalidPart", EINVAL, 0},
    {"InvalidPartOrder", EINVAL, 0},
    {"InvalidRange", EINVAL, 0},
    {"InvalidDigest", EINVAL, 0},
    {"InvalidArgument", EINVAL, 0},
    {"InvalidRequest", EINVAL, 0},
    {"InvalidBucketName", EINVAL, 0},
    {"InvalidObjectName", EINVAL, 0},
    {"InvalidStorageClass", EINVAL, 0},
    {"MalformedXML", EINVAL, 0},
    {"MissingContentLength", EINVAL, 0},
    {"MissingRequestBodyError", EINVAL, 0},
    /* integrity: the body did not match what we declared */
    {"XAmzContentSHA256Mismatch", EIO, 0},
    {"BadDigest", EIO, 0},
    {"IncompleteBody", EIO, 1},
    /* unsupported */
    {"NotImplemented", ENOTSUP, 0},
    {"MethodNotAllowed", ENOTSUP, 0},
    /* space */
    {"QuotaExceeded", ENOSPC, 0},
    {"TooManyBuckets", ENOSPC, 0},
    {"XMinioStorageFull", ENOSPC, 0},
    {"XMinioAdminBucketQuotaExceeded", ENOSPC, 0},
    /* transient */
    {"SlowDown", EAGAIN, 1},
    {"SlowDownRead", EAGAIN, 1},
    {"SlowDownWrite", EAGAIN, 1},
    {"Throttling", EAGAIN, 1},
    {"RequestLimitExceeded", EAGAIN, 1},
    {"ServiceUnavailable", EAGAIN, 1},
    {"XMinioServerNotInitialized", EAGAIN, 1},
    {"XMinioReadQuorum", EAGAIN, 1},
    {"XMinioWriteQuorum", EAGAIN, 1},
    {"InternalError", EIO, 1},
    {"RequestTimeout", ETIMEDOUT, 1},
};

/* HTTP statuses, used when the S3 code is absent or unknown. */
static const struct s3err_num_row s3err_statuses[] = {
    {400, EINVAL, 0}, {401, EACCES, 0},	      {403, EACCES, 0},
    {404, ENOENT, 0}, {405, ENOTSUP, 0},      {408, ETIMEDOUT, 1},
    {409, EBUSY, 0},  {411, EINVAL, 0},	      {412, EEXIST, 0},
    {413, EFBIG, 0},  {414, ENAMETOOLONG, 0}, {416, EINVAL, 0},
    {429, EAGAIN, 1}, {501, ENOTSUP, 0},      {503, EAGAIN, 1},
    {507, ENOSPC, 0},
};

/* libcurl CURLcode values. */
static const struct s3err_num_row s3err_curl_codes[] = {
    {CURLE_OK, 0, 0},
    {CURLE_UNSUPPORTED_PROTOCOL, EPROTONOSUPPORT, 0},
    {CURLE_FAILED_INIT, EIO, 0},
    {CURLE_URL_MALFORMAT, EINVAL, 0},
    {CURLE_NOT_BUILT_IN, ENOTSUP, 0},
    {CURLE_COULDNT_RESOLVE_PROXY, EHOSTUNREACH, 1},
    {CURLE_COULDNT_RESOLVE_HOST, EHOSTUNREACH, 1},
    {CURLE_COULDNT_CONNECT, ECONNREFUSED, 1},
    {CURLE_WEIRD_SERVER_REPLY, EPROTO, 1},
    {CURLE_REMOTE_ACCESS_DENIED, EACCES, 0},
    {CURLE_HTTP2, ECONNRESET, 1},
    {CURLE_PARTIAL_FILE, EIO, 1},
    {CURLE_HTTP_RETURNED_ERROR, EIO, 0},
    {CURLE_WRITE_ERROR, EIO, 0},
    {CURLE_UPLOAD_FAILED, EIO, 0},
    {CURLE_READ_ERROR, EIO, 0},
    {CURLE_OUT_OF_MEMORY, ENOMEM, 0},
    {CURLE_OPERATION_TIMEDOUT, ETIMEDOUT, 1},
    {CURLE_RANGE_ERROR, EINVAL, 0},
    {CURLE_SSL_CONNECT_ERROR, EIO, 1},
    {CURLE_ABORTED_BY_CALLBACK, EINTR, 0},
    {CURLE_BAD_FUNCTION_ARGUMENT, EINVAL, 0},
    {CURLE_INTERFACE_FAILED, EADDRNOTAVAIL, 0},
    {CURLE_TOO_MANY_REDIRECTS, ELOOP, 0},
    {CURLE_UNKNOWN_OPTION, EINVAL, 0},
    {CURLE_GOT_NOTHING, ECONNRESET, 1},
    {CURLE_SSL_ENGINE_NOTFOUND, EIO, 0},
    {CURLE_SSL_ENGINE_SETFAILED, EIO, 0},
    {CURLE_SEND_ERROR, ECONNRESET, 1},
    {CURLE_RECV_ERROR, ECONNRESET, 1},
    {CURLE_SSL_CERTPROBLEM, EACCES, 0},
    {CURLE_SSL_CIPHER, EACCES, 0},
    {CURLE_PEER_FAILED_VERIFICATION, EACCES, 0},
    {CURLE_BAD_CONTENT_ENCODING, EPROTO, 0},
    {CURLE_FILESIZE_EXCEEDED, EFBIG, 0},
    {CURLE_SEND_FAIL_REWIND, EIO, 0},
    {CURLE_SSL_ENGINE_INITFAILED, EIO, 0},
    {CURLE_LOGIN_DENIED, EACCES, 0},
    {CURLE_REMOTE_DISK_FULL, ENOSPC, 0},
    {CURLE_SSL_CACERT_BADFILE, EACCES, 0},
    {CURLE_SSL_SHUTDOWN_FAILED, EIO, 0},
    {CURLE_AGAIN, EAGAIN, 1},
    {CURLE_SSL_CRL_BADFILE, EACCES, 0},
    {CURLE_SSL_ISSUER_ERROR, EACCES, 0},
    {CURLE_NO_CONNECTION_AVAILABLE, EAGAIN, 1},
    {CURLE_SSL_PINNEDPUBKEYNOTMATCH, EACCES, 0},
    {CURLE_SSL_INVALIDCERTSTATUS, EACCES, 0},
    {CURLE_HTTP2_STREAM, ECONNRESET, 1},
    {CURLE_RECURSIVE_API_CALL, EINVAL, 0},
    {CURLE_AUTH_ERROR, EACCES, 0},
    {CURLE_HTTP3, ECONNRESET, 1},
    {CURLE_QUIC_CONNECT_ERROR, ECONNREFUSED, 1},
#if LIBCURL_VERSION_NUM >= 0x074900 /* 7.73.0 */
    {CURLE_PROXY, ECONNREFUSED, 1},
#endif
#if LIBCURL_VERSION_NUM >= 0x074d00 /* 7.77.0 */
    {CURLE_SSL_CLIENTCERT, EACCES, 0},
#endif
#if LIBCURL_VERSION_NUM >= 0x075400 /* 7.84.0 */
    {CURLE_UNRECOVERABLE_POLL, EIO, 0},
#endif
};

/* Exact SQLSTATEs, looked up before the classes below. */
static const struct s3err_code_row s3err_sqlstates[] = {
    {"00000", 0, 0},	     /* successful_completion */
    {"23505", EEXIST, 0},    /* unique_violation */
    {"2BP01", ENOTEMPTY, 0}, /* dependent_objects_still_exist (project
				with stored files, migration 7) */
    {"23P01", EEXIST, 0},    /* exclusion_violation */
    {"40001", EAGAIN, 1},    /* serialization_failure */
    {"40P01", EAGAIN, 1},    /* deadlock_detected */
    {"42501", EPERM, 0},     /* insufficient_privilege */
    {"53300", EAGAIN, 1},    /* too_many_connections */
    {"55P03", EAGAIN, 1},    /* lock_not_available */
    {"57014", ETIMEDOUT, 1}, /* query_canceled (statement_timeout) */
    {"57P01", EIO, 1},	     /* admin_shutdown */
    {"57P02", EIO, 1},	     /* crash_shutdown */
    {"57P03", EIO, 1},	     /* cannot_connect_now */
    {"57P05", EIO, 1},	     /* idle_session_timeout */
    {"P0001", EPERM, 0},     /* raise_exception (append-only trigger) */
};

/* SQLSTATE classes (first two characters). */
static const struct s3err_code_row s3err_sqlclasses[] = {
    {"08", EIO, 1},	/* connection_exception */
    {"0A", ENOTSUP, 0}, /* feature_not_supported */
    {"22", EINVAL, 0},	/* data_exception */
    {"23", EINVAL, 0},	/* integrity_constraint_violation */
    {"25", EIO, 0},	/* invalid_transaction_state */
    {"28", EACCES, 0},	/* invalid_authorization_specification */
    {"40", EIO, 0},	/* transaction_rollback (40003: outcome unknown) */
    {"42", EIO, 0},	/* syntax_error_or_access_rule_violation */
    {"53", ENOSPC, 0},	/* insufficient_resources */
    {"54", EINVAL, 0},	/* program_limit_exceeded */
    {"57", EIO, 0},	/* operator_intervention */
    {"58", EIO, 0},	/* system_error */
    {"XX", EIO, 0},	/* internal_error */
};

/* Finds code in a string table. Returns the row or NULL. */
static const struct s3err_code_row *
s3err_find_code(const struct s3err_code_row *tab, size_t n, const char *code,
		size_t cmp_len)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (cmp_len ? strncmp(tab[i].code, code, cmp_len) == 0
			    : strcmp(tab[i].code, code) == 0)
			return &tab[i];
	}
	return NULL;
}

/* Finds num in a numeric table. Returns the row or NULL. */
static const struct s3err_num_row *
s3err_find_num(const struct s3err_num_row *tab, size_t n, long num)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (tab[i].num == num)
			return &tab[i];
	}
	return NULL;
}

/* Resolves an S3 failure into *err and *retry: the code wins when known,
 * then the exact status, then the status class. */
static void s3err_s3_lookup(long status, const char *code, int *err, int *retry)
{
	const struct s3err_code_row *c = NULL;
	const struct s3err_num_row *s;

	if (code && *code)
		c = s3err_find_code(s3err_s3_codes,
				    S3ERR_ARRAY_SIZE(s3err_s3_codes), code, 0);
	if (c) {
		*err = c->err;
		*retry = c->retry;
		return;
	}
	s = s3err_find_num(s3err_statuses, S3ERR_ARRAY_SIZE(s3err_statuses),
			   status);
	if (s) {
		*err = s->err;
		*retry = s->retry;
		return;
	}
	*err = EIO;
	*retry = status >= 500 && status <= 599;
}

/* The last failure mapped in this thread, for the log (errmap_cause). */
static __thread char s3err_cause_s3[64]; /* S3 <Code>, or "" */
static __thread long s3err_cause_http;	 /* HTTP status, or 0 */
static __thread int s3err_cause_curl;	 /* CURLcode, or 0 */
static __thread char s3err_cause_sql[8]; /* SQLSTATE, "lost", "pool" or "" */

void errmap_cause_clear(void)
{
	s3err_cause_s3[0] = '\0';
	s3err_cause_http = 0;
	s3err_cause_curl = 0;
	s3err_cause_sql[0] = '\0';
}

void errmap_cause_restore(const struct errmap_cause *c)
{
	snprintf(s3err_cause_s3, sizeof(s3err_cause_s3), "%s", c->s3_code);
	s3err_cause_http = c->http_status;
	s3err_cause_curl = c->curl_code;
	snprintf(s3err_cause_sql, sizeof(s3err_cause_sql), "%s", c->sqlstate);
}

void errmap_cause(struct errmap_cause *c)
{
	snprintf(c->s3_code, sizeof(c->s3_code), "%s", s3err_cause_s3);
	c->http_status = s3err_cause_http;
	c->curl_code = s3err_cause_curl;
	snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", s3err_cause_sql);
}

/* Codes come from a server: only [A-Za-z0-9._-] are kept (a hostile
 * server's text stays out of the log). */
static void s3err_keep_code(char *out, size_t len, const char *code)
{
	size_t o = 0;

	for (; code && *code && o + 1 < len; code++) {
		char ch = *code;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		    ch == '-')
			out[o++] = ch;
	}
	out[o] = '\0';
}

int errmap_s3(long http_status, const char *s3_code)
{
	int err, retry;

	s3err_s3_lookup(http_status, s3_code, &err, &retry);
	s3err_keep_code(s3err_cause_s3, sizeof(s3err_cause_s3), s3_code);
	s3err_cause_http = http_status;
	return err;
}

int errmap_s3_retryable(long http_status, const char *s3_code)
{
	int err, retry;

	s3err_s3_lookup(http_status, s3_code, &err, &retry);
	return retry;
}

int errmap_curl(int curl_code)
{
	const struct s3err_num_row *r;

	r = s3err_find_num(s3err_curl_codes, S3ERR_ARRAY_SIZE(s3err_curl_codes),
			   curl_code);
	if (curl_code != CURLE_OK)
		s3err_cause_curl = curl_code;
	return r ? r->err : EIO;
}

int errmap_curl_retryable(int curl_code)
{
	const struct s3err_num_row *r;

	r = s3err_find_num(s3err_curl_codes, S3ERR_ARRAY_SIZE(s3err_curl_codes),
			   curl_code);
	return r ? r->retry : 0;
}

/* Is s a syntactically valid SQLSTATE (five of [0-9A-Z])? */
static int s3err_sqlstate_valid(const char *s)
{
	size_t i;

	for (i = 0; i < 5; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'A' && s[i] <= 'Z')))
			return 0;
	}
	return s[5] == '\0';
}

/* Resolves a SQLSTATE into *err and *retry: NULL or "" (no result, the
 * connection is gone) is EIO and retryable; then exact codes, then classes;
 * anything else, malformed included, is EIO and not retryable. */
static void s3err_sql_lookup(const char *sqlstate, int *err, int *retry)
{
	const struct s3err_code_row *r;

	*err = EIO;
	*retry = 0;
	if (!sqlstate || !*sqlstate) {
		*retry = 1;
		return;
	}
	if (!s3err_sqlstate_valid(sqlstate))
		return;
	r = s3err_find_code(s3err_sqlstates, S3ERR_ARRAY_SIZE(s3err_sqlstates),
			    sqlstate, 0);
	if (!r)
		r = s3err_find_code(s3err_sqlclasses,
				    S3ERR_ARRAY_SIZE(s3err_sqlclasses),
				    sqlstate, 2);
	if (r) {
		*err = r->err;
		*retry = r->retry;
	}
}

int errmap_sqlstate(const char *sqlstate)
{
	int err, retry;

	s3err_sql_lookup(sqlstate, &err, &retry);
	if (!sqlstate || !*sqlstate)
		snprintf(s3err_cause_sql, sizeof(s3err_cause_sql), "lost");
	else if (strcmp(sqlstate, "00000"))
		s3err_keep_code(s3err_cause_sql, sizeof(s3err_cause_sql),
				sqlstate);
	return err;
}

int errmap_db_pool_wait(void)
{
	snprintf(s3err_cause_sql, sizeof(s3err_cause_sql), "pool");
	return EIO;
}

int errmap_sqlstate_retryable(const char *sqlstate)
{
	int err, retry;

	s3err_sql_lookup(sqlstate, &err, &retry);
	return retry;
}
