/* tool_status.c - `custodyfs status -o config=FILE [--json]`: can the
 * store (both buckets) and the database be reached, the schema version,
 * what the audit tables count, and the promotion journal's open entries
 * (is their owner alive, or gone and waiting for recovery).
 *
 * Read-only: no migration, no lock, nothing written. Exit 0 when both
 * buckets and the database answer, 1 when one does not, 2 on bad usage. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "db_status.h"
#include "log.h"
#include "tools.h"

/* Open entries listed one by one (the counts cover them all). */
#define STATUS_ENTRIES_MAX 100

static void status_usage(FILE *f)
{
	fprintf(
	    f, "usage: custodyfs status -o config=FILE [--json]\n"
	       "\n"
	       "Reports whether the store (the reception and the storage "
	       "bucket) and the\n"
	       "database answer, the schema version, the counts of the audit "
	       "tables\n"
	       "(received files live and in all, stored rows per outcome, "
	       "projects), and\n"
	       "the promotion journal's open entries: of a running process, or "
	       "of one\n"
	       "that is gone (custodyfs recover finishes those). Changes "
	       "nothing.\n"
	       "\n"
	       "  -o config=FILE   the mount's configuration file\n"
	       "  --json           one JSON object on stdout, for scripts\n"
	       "  -h, --help       this text\n"
	       "\n"
	       "Exit status: 0 all answer, 1 the store or the database does "
	       "not, 2 bad usage.\n");
}

struct status {
	int rc_reception, rc_storage; /* 0 or -errno */
	int db_ok;
	char db_err[512];
	int version, latest;
	int have_counts;
	struct db_counts c;
	struct db_journal_info *open;
	size_t n_open;
};

static const char *status_err(int rc)
{
	return rc ? strerror(-rc) : NULL;
}

static void status_json(const struct tool_env *t, const struct status *s)
{
	char ep[512];
	size_t i;

	cfg_redact_url(t->cfg.endpoint ? t->cfg.endpoint : "", ep, sizeof(ep));
	printf("{\"ok\": %s,\n \"store\": {\"endpoint\": ",
	       !s->rc_reception && !s->rc_storage && s->db_ok ? "true"
							      : "false");
	tool_json_str(stdout, ep);
	printf(",\n  \"reception_bucket\": {\"name\": ");
	tool_json_str(stdout, t->cfg.reception_bucket);
	printf(", \"ok\": %s, \"error\": ", s->rc_reception ? "false" : "true");
	tool_json_str(stdout, status_err(s->rc_reception));
	printf("},\n  \"storage_bucket\": {\"name\": ");
	tool_json_str(stdout, t->cfg.storage_bucket);
	printf(", \"ok\": %s, \"error\": ", s->rc_storage ? "false" : "true");
	tool_json_str(stdout, status_err(s->rc_storage));
	printf("}},\n \"database\": {\"ok\": %s, \"error\": ",
	       s->db_ok ? "true" : "false");
	tool_json_str(stdout, s->db_ok ? NULL : s->db_err);
	if (s->db_ok)
		printf(", \"schema_version\": %d, \"schema_latest\": %d",
		       s->version, s->latest);
	printf("}");
	if (s->have_counts) {
		const struct db_counts *c = &s->c;

		printf(",\n \"counts\": {\"received_live\": %lld, "
		       "\"received_rows\": %lld, \"stored_rows\": %lld, "
		       "\"stored\": {",
		       (long long)c->received_live, (long long)c->received_rows,
		       (long long)c->stored_rows);
		for (i = 0; i < c->n_outcomes; i++) {
			printf("%s", i ? ", " : "");
			tool_json_str(stdout, c->by_outcome[i].outcome);
			printf(": %lld", (long long)c->by_outcome[i].rows);
		}
		printf("}, \"projects\": %lld},\n \"journal\": {\"open\": "
		       "%lld, \"open_owner_alive\": %lld, \"open_owner_gone\": "
		       "%lld, \"failed\": %lld, \"entries\": [",
		       (long long)c->projects, (long long)c->journal_open,
		       (long long)c->journal_alive,
		       (long long)(c->journal_open - c->journal_alive),
		       (long long)c->journal_failed);
		for (i = 0; i < s->n_open; i++) {
			const struct db_journal_info *e = &s->open[i];

			printf("%s\n  {\"id\": %lld, \"state\": ", i ? "," : "",
			       (long long)e->id);
			tool_json_str(stdout, e->state);
			printf(", \"outcome\": ");
			tool_json_str(stdout, e->outcome);
			printf(", \"owner\": %d, \"owner_alive\": %s, "
			       "\"created_at\": ",
			       e->owner, e->owner_alive ? "true" : "false");
			tool_json_str(stdout, e->created);
			printf(", \"source_bucket\": ");
			tool_json_str(stdout, e->source_bucket);
			printf(", \"source_key\": ");
			tool_json_str(stdout, e->source_key);
			printf(", \"dest_bucket\": ");
			tool_json_str(stdout, e->dest_bucket);
			printf(", \"dest_key\": ");
			tool_json_str(stdout, e->dest_key);
			printf("}");
		}
		printf("]}");
	}
	printf("}\n");
}

static void status_text(const struct tool_env *t, const struct status *s)
{
	char ep[512];
	size_t i;

	cfg_redact_url(t->cfg.endpoint ? t->cfg.endpoint : "", ep, sizeof(ep));
	printf("store       %s\n", ep);
	printf("  reception bucket %s: %s\n", t->cfg.reception_bucket,
	       s->rc_reception ? strerror(-s->rc_reception) : "ok");
	printf("  storage bucket   %s: %s\n", t->cfg.storage_bucket,
	       s->rc_storage ? strerror(-s->rc_storage) : "ok");
	if (!s->db_ok) {
		printf("database    unreachable: %s\n", s->db_err);
		return;
	}
	printf("database    ok, schema version %d (this program's: %d)%s\n",
	       s->version, s->latest,
	       s->version < s->latest
		   ? ": migrated by the next mount or promote"
		   : "");
	if (!s->have_counts) {
		printf("counts      not available (schema older than %d)\n",
		       DB_STATUS_MIN_SCHEMA);
		return;
	}
	printf("received    %lld live (%lld rows, removed ones included)\n",
	       (long long)s->c.received_live, (long long)s->c.received_rows);
	printf("stored      %lld rows", (long long)s->c.stored_rows);
	for (i = 0; i < s->c.n_outcomes; i++)
		printf("%s %s %lld", i ? "," : ":",
		       s->c.by_outcome[i].outcome[0]
			   ? s->c.by_outcome[i].outcome
			   : "(none)",
		       (long long)s->c.by_outcome[i].rows);
	printf("\nprojects    %lld\n", (long long)s->c.projects);
	printf("journal     %lld open (%lld of running processes, %lld of "
	       "processes gone%s), %lld failed\n",
	       (long long)s->c.journal_open, (long long)s->c.journal_alive,
	       (long long)(s->c.journal_open - s->c.journal_alive),
	       s->c.journal_open > s->c.journal_alive
		   ? ": custodyfs recover finishes them"
		   : "",
	       (long long)s->c.journal_failed);
	for (i = 0; i < s->n_open; i++) {
		const struct db_journal_info *e = &s->open[i];

		printf("  entry %lld  %s %s  owner %d (%s)  since %s  %s/%s -> "
		       "%s/%s\n",
		       (long long)e->id, e->state, e->outcome, e->owner,
		       e->owner_alive ? "running" : "gone", e->created,
		       e->source_bucket, e->source_key, e->dest_bucket,
		       e->dest_key);
	}
	if ((int64_t)s->n_open < s->c.journal_open)
		printf("  (%lld more)\n",
		       (long long)(s->c.journal_open - (int64_t)s->n_open));
}

int tool_status(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct tool_env t;
	struct status s = {0};
	char *config = NULL;
	int json = 0, c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (tool_parse_o("status", optarg, &config)) {
				free(config);
				return TOOL_USAGE;
			}
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			status_usage(stdout);
			free(config);
			return TOOL_OK;
		default:
			status_usage(stderr);
			free(config);
			return TOOL_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "custodyfs status: unexpected argument %s\n",
			argv[optind]);
		status_usage(stderr);
		free(config);
		return TOOL_USAGE;
	}
	rc = tool_env_load(&t, "status", config);
	free(config);
	if (rc) {
		tool_env_free(&t);
		return rc;
	}
	s.rc_reception = tool_bucket_check(&t, t.cfg.reception_bucket);
	s.rc_storage = tool_bucket_check(&t, t.cfg.storage_bucket);
	s.db_ok = !tool_db_open(&t, 1, s.db_err, sizeof(s.db_err));
	if (s.db_ok) {
		rc = db_schema_version(t.db, &s.version, &s.latest);
		if (rc) {
			s.db_ok = 0;
			snprintf(s.db_err, sizeof(s.db_err),
				 "schema version: %s", strerror(-rc));
		}
	}
	if (s.db_ok && s.version >= DB_STATUS_MIN_SCHEMA) {
		rc = db_status_counts(t.db, t.cfg.reception_bucket,
				      t.cfg.storage_bucket, &s.c);
		if (!rc)
			rc = db_journal_infos(t.db, NULL, 0, STATUS_ENTRIES_MAX,
					      &s.open, &s.n_open);
		if (rc) {
			s.db_ok = 0;
			snprintf(s.db_err, sizeof(s.db_err), "counts: %s",
				 strerror(-rc));
		} else {
			s.have_counts = 1;
		}
	}
	if (json)
		status_json(&t, &s);
	else
		status_text(&t, &s);
	fflush(stdout);
	db_journal_infos_free(s.open, s.n_open);
	tool_env_free(&t);
	return !s.rc_reception && !s.rc_storage && s.db_ok ? TOOL_OK
							   : TOOL_FAILED;
}
