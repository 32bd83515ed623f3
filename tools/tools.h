/* tools.h - the batch tools: `custodyfs status | recover | promote |
 * reconcile | cleanup | verify`,
 * subcommands of the mount's binary (fs/main.c dispatches on argv[1]).
 *
 * They run the code paths of the mount (common/: promote.c for every
 * promotion and its recovery, reception.c for objects that arrived by
 * other routes, the same config, S3 client and database layer) without a
 * mount and without FUSE. Output for people on stdout (a progress bar on
 * a terminal's stderr), --json for scripts; log lines on stderr.
 *
 * Exit status of every tool: 0 success, 1 the work failed or was left
 * unfinished (the tool says what), 2 bad usage or configuration; and for
 * reconcile, 3 drift found (and left). */
#ifndef CUSTODYFS_TOOLS_H
#define CUSTODYFS_TOOLS_H

#include <stdio.h>

#include "cfg.h"
#include "db.h"
#include "s3.h"

/* TOOL_DRIFT: reconcile found drift (left unrepaired). */
enum { TOOL_OK = 0, TOOL_FAILED = 1, TOOL_USAGE = 2, TOOL_DRIFT = 3 };

/* Is name a tool ("status", ...)? 1 or 0. */
int tool_is_name(const char *name);

/* Runs tool argv[0] with its arguments; returns the exit status. */
int tool_main(int argc, char **argv);

/* The S3 client of cfg (borrowed strings are copied): the mount's and the
 * tools'. NULL with errno set. */
struct s3_client *tool_s3_new(const struct cfg *cfg);

/* What a tool runs on: the config and the clients built from it. */
struct tool_env {
	struct cfg cfg;
	struct s3_client *s3;
	struct db *db;	/* NULL until tool_db_open */
	char host[256]; /* this host, for who did it */
};

/* -o's argument: "config=FILE[,config=FILE]" (other options are refused:
 * the tools take no FUSE option). *config gets a malloc'd copy. 0, or -1
 * with a message on stderr. */
int tool_parse_o(const char *prog, const char *arg, char **config);

/* Loads config into t->cfg (the log level is the config's) and makes the
 * S3 client. 0, or TOOL_USAGE (bad or unsafe config: message on stderr) /
 * TOOL_FAILED. */
int tool_env_load(struct tool_env *t, const char *prog, const char *config);

/* Opens the database with at least pool_min connections. 0 or -errno,
 * with a reason (no secret) in err. */
int tool_db_open(struct tool_env *t, int pool_min, char *err, size_t len);

/* The schema the tool needs: migrated (db_migrate) when the tool may
 * change things, else only checked (a read-only run changes nothing, not
 * even the schema: an older schema is refused). 0, or -1 with a message
 * naming prog on stderr and a short reason in *why. */
int tool_db_schema(struct tool_env *t, const char *prog, int migrate,
		   const char **why);

void tool_env_free(struct tool_env *t);

/* Who runs the tool: the calling user (uid, login name) on this host. */
void tool_actor(const struct tool_env *t, struct actor *a);

/* Is bucket reachable: one ListObjectsV2 of one key. 0 or -errno. */
int tool_bucket_check(struct tool_env *t, const char *bucket);

/* The event line (log.h) of a reception row a tool closed: "removed" with
 * bucket, key, size (< 0: left out), id, reason, dest_key (NULL: left out)
 * and who; rc != 0 makes it an error line for op instead (the row was not
 * closed). */
void tool_removed_event(const char *op, int rc, const char *bucket,
			const char *key, long long size, int64_t id,
			const char *reason, const char *dest_key,
			const struct actor *who);

/* s as a JSON string (quotes and escapes; invalid UTF-8 bytes become
 * U+FFFD), written to f. NULL writes null. */
void tool_json_str(FILE *f, const char *s);

/* s for a terminal or a log line: control characters (an uploader may
 * put them in a key) as \xNN, cut to fit out (len bytes). Returns out. */
const char *tool_shown(const char *s, char *out, size_t len);

/* "1.5 GiB", "12 B": n bytes for people, into out. */
void tool_bytes(char *out, size_t len, double n);

int tool_status(int argc, char **argv);
int tool_recover(int argc, char **argv);
int tool_promote(int argc, char **argv);
int tool_reconcile(int argc, char **argv);
int tool_cleanup(int argc, char **argv);
int tool_verify(int argc, char **argv);

#endif
