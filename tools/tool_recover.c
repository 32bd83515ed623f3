/* tool_recover.c - `custodyfs recover -o config=FILE [--json]`: finishes or
 * rolls back the promotions that processes gone (a crashed mount, a killed
 * `custodyfs promote`) left open in the journal, with the mount's own code
 * (promote_recover: take the entries over, then per entry finish the copy,
 * record, clean up, or mark it failed), and reports each entry.
 *
 * Entries whose owner is alive (a running mount or promote works on them)
 * are not touched, only reported. Exit 0 when no entry of a process that is
 * gone is left open, 1 otherwise (the store or the database failed: run it
 * again once they answer), 2 on bad usage. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "db_status.h"
#include "log.h"
#include "promote.h"
#include "tools.h"
#include "upload.h"

static void recover_usage(FILE *f)
{
	fprintf(
	    f, "usage: custodyfs recover -o config=FILE [--json]\n"
	       "\n"
	       "Finishes or rolls back the promotions that processes which are "
	       "gone (a\n"
	       "crashed mount, a killed custodyfs promote) left open in the "
	       "promotion\n"
	       "journal, with the code a mount runs when it starts: the copy "
	       "is redone or\n"
	       "verified, the storage row recorded and the source removed, or "
	       "the entry\n"
	       "marked failed when neither the source nor the destination is "
	       "there.\n"
	       "Entries of running processes are reported, never touched.\n"
	       "\n"
	       "  -o config=FILE   the mount's configuration file\n"
	       "  --json           one JSON object on stdout, for scripts\n"
	       "  -h, --help       this text\n"
	       "\n"
	       "Exit status: 0 nothing left open, 1 entries left open (the "
	       "store or the\n"
	       "database failed: run it again), 2 bad usage.\n");
}

/* What became of an entry: by its state now and who holds it. */
static const char *recover_fate(const struct db_journal_info *e, int me)
{
	if (!strcmp(e->state, "done"))
		return "finished";
	if (!strcmp(e->state, "failed"))
		return "rolled back";
	if (e->owner_alive && e->owner != me)
		return "running elsewhere";
	return "left open";
}

static int recover_left(const struct db_journal_info *e, int me)
{
	return (!strcmp(e->state, "intent") || !strcmp(e->state, "stored")) &&
	       (!e->owner_alive || e->owner == me);
}

int tool_recover(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct db_journal_info *before = NULL, *after = NULL, *now = NULL;
	size_t n_before = 0, n_after = 0, n_now = 0, i, n_ids = 0;
	size_t n_done = 0, n_failed = 0, n_left = 0, n_elsewhere = 0;
	size_t swept = 0;
	struct promote *p = NULL;
	struct tool_env t;
	int64_t *ids = NULL;
	char *config = NULL, err[512];
	int json = 0, c, rc, mrc, me = 0, handled = 0, status = TOOL_FAILED;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (tool_parse_o("recover", optarg, &config)) {
				free(config);
				return TOOL_USAGE;
			}
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			recover_usage(stdout);
			free(config);
			return TOOL_OK;
		default:
			recover_usage(stderr);
			free(config);
			return TOOL_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "custodyfs recover: unexpected argument %s\n",
			argv[optind]);
		recover_usage(stderr);
		free(config);
		return TOOL_USAGE;
	}
	rc = tool_env_load(&t, "recover", config);
	free(config);
	if (rc) {
		tool_env_free(&t);
		return rc;
	}
	if (tool_db_open(&t, 2, err, sizeof(err))) {
		fprintf(stderr, "custodyfs recover: database: %s\n", err);
		goto out;
	}
	rc = db_migrate(t.db);
	if (rc) {
		fprintf(stderr,
			"custodyfs recover: database migration failed: %s\n",
			strerror(-rc));
		goto out;
	}
	/* What is open now: the entries of processes gone are this run's. */
	rc = db_journal_infos(t.db, NULL, 0, 0, &before, &n_before);
	if (rc) {
		fprintf(stderr, "custodyfs recover: journal: %s\n",
			strerror(-rc));
		goto out;
	}
	ids = calloc(n_before + 1, sizeof(*ids));
	if (!ids)
		goto out;
	for (i = 0; i < n_before; i++)
		if (!before[i].owner_alive)
			ids[n_ids++] = before[i].id;
	p = promote_new(&t.cfg, t.s3, t.db, &rc);
	if (!p) {
		fprintf(stderr,
			"custodyfs recover: cannot take a journal owner id: "
			"%s\n",
			strerror(-rc));
		goto out;
	}
	me = promote_owner_id(p);
	rc = promote_recover(p, &handled);
	if (rc)
		log_error("recovery: %s", strerror(-rc));
	/* Multipart uploads of mounts (with this spool directory) that
	 * died: aborted, a live mount's left alone. */
	mrc = upload_journal_sweep(t.s3, t.cfg.spool_dir, NULL, &swept);
	if (swept)
		log_info("aborted %zu multipart uploads left open by processes "
			 "that died",
			 swept);
	if (mrc)
		log_warn("multipart uploads left by processes that died: %s",
			 strerror(-mrc));
	/* Each entry as it ends, and what is open now (entries of processes
	 * that died meanwhile are left open too). */
	if (n_ids && db_journal_infos(t.db, ids, n_ids, 0, &after, &n_after))
		goto out;
	if (db_journal_infos(t.db, NULL, 0, 0, &now, &n_now))
		goto out;
	for (i = 0; i < n_after; i++) {
		const char *fate = recover_fate(&after[i], me);

		n_done += !strcmp(fate, "finished");
		n_failed += !strcmp(fate, "rolled back");
		n_elsewhere += !strcmp(fate, "running elsewhere");
	}
	for (i = 0; i < n_now; i++)
		n_left += (size_t)recover_left(&now[i], me);
	if (json) {
		printf("{\"ok\": %s, \"handled\": %d, \"finished\": %zu, "
		       "\"rolled_back\": %zu, \"taken_by_running\": %zu, "
		       "\"left_open\": %zu, \"entries\": [",
		       n_left || rc ? "false" : "true", handled, n_done,
		       n_failed, n_elsewhere, n_left);
		for (i = 0; i < n_after; i++) {
			printf("%s\n  {\"id\": %lld, \"result\": ",
			       i ? "," : "", (long long)after[i].id);
			tool_json_str(stdout, recover_fate(&after[i], me));
			printf(", \"state\": ");
			tool_json_str(stdout, after[i].state);
			printf(", \"outcome\": ");
			tool_json_str(stdout, after[i].outcome);
			printf(", \"source_key\": ");
			tool_json_str(stdout, after[i].source_key);
			printf(", \"dest_key\": ");
			tool_json_str(stdout, after[i].dest_key);
			printf(", \"error\": ");
			tool_json_str(stdout, after[i].error[0] ? after[i].error
								: NULL);
			printf("}");
		}
		printf("]}\n");
	} else {
		for (i = 0; i < n_after; i++)
			printf("entry %lld  %s/%s -> %s/%s  (%s): %s%s%s\n",
			       (long long)after[i].id, after[i].source_bucket,
			       after[i].source_key, after[i].dest_bucket,
			       after[i].dest_key, after[i].outcome,
			       recover_fate(&after[i], me),
			       after[i].error[0] ? ": " : "", after[i].error);
		printf("recovered %zu journal entr%s of processes gone: %zu "
		       "finished, %zu rolled back, %zu taken by a running "
		       "process; %zu left open\n",
		       n_after, n_after == 1 ? "y" : "ies", n_done, n_failed,
		       n_elsewhere, n_left);
		for (i = 0; i < n_now; i++)
			if (recover_left(&now[i], me))
				printf("  left open: entry %lld (%s) %s/%s -> "
				       "%s/%s\n",
				       (long long)now[i].id, now[i].state,
				       now[i].source_bucket, now[i].source_key,
				       now[i].dest_bucket, now[i].dest_key);
	}
	status = n_left || rc ? TOOL_FAILED : TOOL_OK;
out:
	fflush(stdout);
	promote_free(p);
	free(ids);
	db_journal_infos_free(before, n_before);
	db_journal_infos_free(after, n_after);
	db_journal_infos_free(now, n_now);
	tool_env_free(&t);
	return status;
}
