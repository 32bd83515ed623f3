/* s3err.h - the one place that maps transport failures, HTTP statuses,
 * S3 error codes and PostgreSQL SQLSTATEs to errno values.
 *
 * Every function returns a positive errno. Callers log the detail (code,
 * message, request id) and return -errno to their own callers. */
#ifndef CUSTODYFS_S3ERR_H
#define CUSTODYFS_S3ERR_H

/* From an HTTP status and the S3 <Code> of the error body (code may be NULL
 * or ""). E.g. 404/NoSuchKey -> ENOENT, 403/AccessDenied -> EACCES,
 * 409/BucketNotEmpty -> ENOTEMPTY, 412 -> EEXIST... , 5xx -> EIO,
 * SlowDown/503 -> EAGAIN, 400/KeyTooLongError -> ENAMETOOLONG,
 * EntityTooLarge -> EFBIG, InvalidRange/416 -> EINVAL... */
int errmap_s3(long http_status, const char *s3_code);

/* Is this S3 failure worth retrying (5xx, SlowDown, RequestTimeout,
 * InternalError, ServiceUnavailable)? 1 or 0. */
int errmap_s3_retryable(long http_status, const char *s3_code);

/* From a libcurl CURLcode (passed as int so this header needs no curl.h):
 * timeouts -> ETIMEDOUT, connection refused/couldn't connect -> ECONNREFUSED
 * (callers may fold to EIO), TLS verification -> EACCES... */
int errmap_curl(int curl_code);
/* Transport failures worth retrying (connect, timeouts, resets): 1 or 0. */
int errmap_curl_retryable(int curl_code);

/* From a 5-char SQLSTATE (NULL: connection lost -> EIO). E.g. 23505
 * unique_violation -> EEXIST, 40001/40P01 -> EAGAIN, 08xxx -> EIO,
 * 57P0x admin shutdown -> EIO, 53xxx insufficient resources -> ENOSPC,
 * 2BP01 (a project with stored files, refused by its guard) -> ENOTEMPTY,
 * 42501 insufficient privilege / P0001 raised by append-only trigger ->
 * EPERM, 22xxx data exception -> EINVAL. */
int errmap_sqlstate(const char *sqlstate);
/* Serialization failure, deadlock, connection failure: worth retrying. */
int errmap_sqlstate_retryable(const char *sqlstate);

/* No pooled database connection came free within the wait's bound (all
 * busy: a slow or unreachable server, or too small a pool): EIO, recorded
 * as the cause sqlstate "pool". */
int errmap_db_pool_wait(void);

/* The last failure this thread mapped with errmap_s3, errmap_curl or
 * errmap_sqlstate (successes are not recorded), for the log's error lines:
 * an operation clears it when it starts (log_op_begin) and reads it when
 * it fails. Part uploads run in other threads: their causes are theirs. */
struct errmap_cause {
	char s3_code[64]; /* S3 <Code> ([A-Za-z0-9._-] only), or "" */
	long http_status; /* 0 when none */
	int curl_code;	  /* 0 when none */
	char sqlstate[8]; /* SQLSTATE, "lost" (no result), "pool" (no
			     connection came free in time), or "" */
};
void errmap_cause_clear(void);
void errmap_cause(struct errmap_cause *c);
/* The calling thread's cause becomes c (one saved by errmap_cause before
 * other requests replaced it). */
void errmap_cause_restore(const struct errmap_cause *c);

#endif
