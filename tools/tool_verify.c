/* tool_verify.c - `custodyfs verify -o config=FILE [--anchor] [--json]`:
 * walks the hash chain of every audit table (db_chain_walk: each row_hash
 * recomputed here, each link and chain_seq checked, the mutable columns
 * against their events), then checks the database against the newest
 * anchors in the storage bucket (chain_anchor_check), and reports the first
 * broken link, naming the table and the row. --anchor then writes the
 * current heads as a new anchor, only when everything held (a broken chain
 * is never anchored).
 *
 * No migration: a database older than the chains is reported, not changed.
 * Exit 0 when the chains hold, 1 when one is broken or the database or the
 * store could not be read, 2 on bad usage. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "db_chain.h"
#include "db_status.h"
#include "log.h"
#include "tools.h"

static void verify_usage(FILE *f)
{
	fprintf(f,
		"usage: custodyfs verify -o config=FILE [--anchor] [--json]\n"
		"\n"
		"Walks the hash chains of projects_registry, reception_audit,\n"
		"storage_audit and audit_chain_events, recomputing every "
		"row_hash,\n"
		"checks removed_at, removal_reason and project names against "
		"their\n"
		"chained events, and checks the database against the newest "
		"anchors\n"
		"(chain heads) in the storage bucket. Reports the first broken "
		"link.\n"
		"\n"
		"  -o config=FILE   the mount's configuration file\n"
		"  --anchor         when everything holds, write the current "
		"heads as a\n"
		"                   new anchor into the storage bucket\n"
		"  --json           one JSON object on stdout, for scripts\n"
		"  -h, --help       this text\n"
		"\n"
		"Exit status: 0 the chains hold, 1 a link is broken or the "
		"database or\n"
		"the store could not be read, 2 bad usage.\n");
}

struct verify {
	int version;
	char err[512]; /* "" or why it could not check */
	int walked;
	struct db_chain_walk w;
	int anchors_checked;
	struct chain_anchor_report a;
	char written[512]; /* the anchor written, "" none */
	int broken;
	const struct db_chain_break *brk;
	const char *brk_anchor; /* the anchor that caught it, or NULL */
};

static void verify_json(const struct verify *v)
{
	int t, k;

	printf("{\"ok\": %s, \"error\": ",
	       !v->err[0] && !v->broken ? "true" : "false");
	tool_json_str(stdout, v->err[0] ? v->err : NULL);
	printf(",\n \"tables\": [");
	for (t = 0; v->walked && t < DB_CHAIN_NTABLES; t++)
		printf("%s\n  {\"table\": \"%s\", \"rows\": %lld}",
		       t ? "," : "", db_chain_tables[t],
		       (long long)v->w.rows[t]);
	printf("],\n \"heads\": [");
	for (k = 0; v->walked && !v->broken && k < DB_CHAIN_NHEADS; k++)
		printf("%s\n  {\"table\": \"%s\", \"lane\": %d, "
		       "\"seq\": %lld, \"row_hash\": \"%s\"}",
		       k ? "," : "", db_chain_tables[k / DB_CHAIN_LANES],
		       k % DB_CHAIN_LANES, (long long)v->w.heads[k].seq,
		       v->w.heads[k].row_hash);
	printf("],\n \"anchors\": {\"checked\": %d, \"newest\": ",
	       v->anchors_checked ? v->a.n_anchors : 0);
	tool_json_str(stdout, v->anchors_checked && v->a.newest[0] ? v->a.newest
								   : NULL);
	printf(", \"newest_time\": ");
	tool_json_str(stdout, v->anchors_checked && v->a.newest_time[0]
				  ? v->a.newest_time
				  : NULL);
	printf("},\n \"break\": ");
	if (v->broken) {
		printf("{\"table\": ");
		tool_json_str(stdout, v->brk->table);
		printf(", \"row_id\": ");
		if (v->brk->row_id >= 0)
			printf("%lld", (long long)v->brk->row_id);
		else
			printf("null");
		printf(", \"lane\": ");
		if (v->brk->lane >= 0)
			printf("%d", v->brk->lane);
		else
			printf("null");
		printf(", \"seq\": ");
		if (v->brk->seq >= 0)
			printf("%lld", (long long)v->brk->seq);
		else
			printf("null");
		printf(", \"reason\": ");
		tool_json_str(stdout, v->brk->reason);
		printf(", \"anchor\": ");
		tool_json_str(stdout, v->brk_anchor);
		printf("}");
	} else {
		printf("null");
	}
	printf(",\n \"anchor_written\": ");
	tool_json_str(stdout, v->written[0] ? v->written : NULL);
	printf("}\n");
}

static void verify_text(const struct verify *v)
{
	char shown[1024];
	int t, k;

	for (t = 0; v->walked && !v->broken && t < DB_CHAIN_NTABLES; t++) {
		printf("%-20s %lld rows\n", db_chain_tables[t],
		       (long long)v->w.rows[t]);
		for (k = t * DB_CHAIN_LANES; k < (t + 1) * DB_CHAIN_LANES; k++)
			if (v->w.heads[k].seq > 0)
				printf("  lane %d head chain_seq %lld %s\n",
				       k % DB_CHAIN_LANES,
				       (long long)v->w.heads[k].seq,
				       v->w.heads[k].row_hash);
	}
	if (v->anchors_checked) {
		if (v->a.n_anchors)
			printf("anchors              %d checked, newest %s "
			       "(%s)\n",
			       v->a.n_anchors,
			       tool_shown(v->a.newest, shown, sizeof(shown)),
			       v->a.newest_time);
		else
			printf("anchors              none in the store yet\n");
	}
	if (v->err[0]) {
		printf("not verified: %s\n", v->err);
		return;
	}
	if (v->broken) {
		printf("BROKEN: %s", v->brk->table);
		if (v->brk->row_id >= 0)
			printf(" row id %lld", (long long)v->brk->row_id);
		printf(": %s", v->brk->reason);
		if (v->brk_anchor)
			printf(" (anchor %s)",
			       tool_shown(v->brk_anchor, shown, sizeof(shown)));
		printf("\n");
		return;
	}
	if (v->written[0])
		printf("anchor written       %s\n",
		       tool_shown(v->written, shown, sizeof(shown)));
	printf("chains ok\n");
}

int tool_verify(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"anchor", no_argument, NULL, 'a'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct tool_env t;
	struct verify v;
	char *config = NULL;
	int json = 0, anchor = 0, c, rc, latest;

	memset(&v, 0, sizeof(v));
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (tool_parse_o("verify", optarg, &config)) {
				free(config);
				return TOOL_USAGE;
			}
			break;
		case 'j':
			json = 1;
			break;
		case 'a':
			anchor = 1;
			break;
		case 'h':
			verify_usage(stdout);
			free(config);
			return TOOL_OK;
		default:
			verify_usage(stderr);
			free(config);
			return TOOL_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "custodyfs verify: unexpected argument %s\n",
			argv[optind]);
		verify_usage(stderr);
		free(config);
		return TOOL_USAGE;
	}
	rc = tool_env_load(&t, "verify", config);
	free(config);
	if (rc) {
		tool_env_free(&t);
		return rc;
	}
	if (tool_db_open(&t, 1, v.err, sizeof(v.err)))
		goto report;
	rc = db_schema_version(t.db, &v.version, &latest);
	if (rc) {
		snprintf(v.err, sizeof(v.err), "schema version: %s",
			 strerror(-rc));
		goto report;
	}
	if (v.version < DB_CHAIN_MIN_SCHEMA) {
		snprintf(v.err, sizeof(v.err),
			 "the database's schema (version %d) has no chains "
			 "yet (version %d): the next mount or promote "
			 "migrates it",
			 v.version, DB_CHAIN_MIN_SCHEMA);
		goto report;
	}
	rc = db_chain_walk(t.db, &v.w);
	if (rc) {
		snprintf(v.err, sizeof(v.err), "reading the chains: %s",
			 strerror(-rc));
		goto report;
	}
	v.walked = 1;
	if (v.w.broken) {
		v.broken = 1;
		v.brk = &v.w.brk;
	}
	rc = chain_anchor_check(t.db, t.s3, t.cfg.storage_bucket, &v.a);
	if (rc) {
		snprintf(v.err, sizeof(v.err), "reading the anchors in %s: %s",
			 t.cfg.storage_bucket, strerror(-rc));
		goto report;
	}
	v.anchors_checked = 1;
	if (!v.broken && v.a.broken) {
		v.broken = 1;
		v.brk = &v.a.brk;
		v.brk_anchor = v.a.anchor;
	}
	if (anchor && !v.broken) {
		rc =
		    chain_anchor_write(t.db, t.s3, t.cfg.storage_bucket, t.host,
				       v.written, sizeof(v.written), NULL);
		if (rc)
			snprintf(v.err, sizeof(v.err),
				 "writing the anchor into %s: %s",
				 t.cfg.storage_bucket, strerror(-rc));
	}
report:
	if (json)
		verify_json(&v);
	else
		verify_text(&v);
	fflush(stdout);
	tool_env_free(&t);
	return !v.err[0] && !v.broken ? TOOL_OK : TOOL_FAILED;
}
