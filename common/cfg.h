/* cfg.h - configuration: an INI file (inih's syntax, read by cfg.c itself:
 * Debian's inih cuts lines at 200 bytes), AWS_* variables and the AWS
 * shared credentials file as fallbacks.
 *
 * cfg_load() fills a caller-owned struct cfg whose strings it allocates;
 * cfg_free() releases them (the secret is wiped first). Secrets are never
 * taken from argv: only from the file (which must then not be readable by
 * group or others), the environment, or ~/.aws/credentials. */
#ifndef CUSTODYFS_CFG_H
#define CUSTODYFS_CFG_H

#include <stddef.h>
#include <stdint.h>

enum cfg_dedup { CFG_DEDUP_CONTENT = 0, CFG_DEDUP_PATH };

struct cfg {
	/* [s3] */
	char *endpoint;
	char *region;
	char *access_key_id;
	char *secret_access_key;
	char *session_token;
	char *reception_bucket; /* default recepcao-raw */
	char *storage_bucket;   /* default storage-unique */
	int path_style;         /* default 1 */
	int verify_tls;         /* default 1 */
	char *ca_file;
	long connect_timeout_ms;
	long request_timeout_ms;
	int max_retries;
	/* [postgres] */
	char *conninfo;
	int db_pool_size;
	/* [fs] */
	char *spool_dir; /* default /var/cache/custodyfs */
	enum cfg_dedup dedup;
	/* Who may create, remove and name projects besides root: a group
	 * name or gid; NULL: anyone. */
	char *project_group;
	char **temp_patterns; /* fnmatch patterns, NULL-terminated */
	uint64_t part_size;   /* multipart part size, default 16 MiB */
	uint64_t copy_threshold; /* CopyObject up to this, default 5 GiB
				    ([fs] copy_threshold or
				    [s3] multipart_copy_threshold) */
	int promote_workers;  /* parallel promotion work, default 4 */
	int recover_interval_s; /* journal sweeps of a mount, default 300 */
	int stop_timeout_s; /* a stopping mount starts no new file of a
			       directory promotion after this, default 30 */
	int upload_workers;   /* parallel part uploads, default 4 */
	int cache_ttl_ms;     /* directory listing cache, default 3000 */
	int scan_interval_s;  /* periodic reception scan, 0 = off, default 60 */
	int chain_anchor_interval_s; /* chain anchors into the storage bucket,
					0 = off, default 600 */
	int claim_lease_s; /* a new file's claim on its name lapses this long
			      after its mount last renewed it (it renews it
			      while the file is open), default 900 */
	int live_grace_s; /* other mounts take this process for gone this long
			     after its last heartbeat, while its liveness
			     lock is free, default 30 */
	long foreign_grace_ms; /* wait before logging an upload by another route;
				* -1 (default): derived from the timeouts */
	/* Owner of what no mount created (objects that arrived by other
	 * routes, directories only implied by keys): -1 (default) is the
	 * daemon's own uid/gid (root for the shared allow_other mount).
	 * An uploader's x-amz-meta-uid/gid are never trusted. */
	long foreign_uid;
	long foreign_gid;
	unsigned file_mode;   /* mode of a file with none recorded, 0644 */
	unsigned dir_mode;    /* of a directory with none recorded, 0755 */
	int default_permissions; /* the kernel checks permissions, default 1 */
	int max_threads;      /* FUSE worker threads, default 32 */
	int log_level;        /* 0 error .. 3 debug, default 2 */
	char *metrics_file;   /* Prometheus text file, NULL (default): none */
	int metrics_interval_s; /* how often it is written, default 15 */
};

/* Loads path into *c (zeroed first, defaults applied). Returns 0, or -errno
 * with a one-line reason in err: -EACCES for a secret-bearing file that is
 * readable by group/others (a secret: [s3] secret_access_key or
 * session_token, an endpoint's user:password@, a conninfo password in
 * key/value or URI form), -EINVAL for bad values (the line is named),
 * -ENOENT for a missing file. Never puts a secret in err. */
int cfg_load(const char *path, struct cfg *c, char *err, size_t err_len);
void cfg_free(struct cfg *c);

/* Copies url into out (out_len bytes, always NUL-terminated) with the
 * userinfo of "scheme://user:password@host" replaced by "***": for any URL
 * that goes into a log line or an error message. */
void cfg_redact_url(const char *url, char *out, size_t out_len);

/* 1 if name (the last path component) matches a temp pattern. */
int cfg_is_temp_name(const struct cfg *c, const char *name);

#endif
