/* db_status.h - what `custodyfs status` and `custodyfs recover` read from
 * the database: the schema version, counts of the audit tables, and the
 * promotion journal's entries with whether their owner still lives.
 *
 * Read-only (no migration, no lock taken). Same conventions as db.h: knows
 * nothing of S3 or FUSE, SQL parameterised, 0 or -errno (errmap_sqlstate),
 * output owned by the caller (free functions below). */
#ifndef CUSTODYFS_DB_STATUS_H
#define CUSTODYFS_DB_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"

/* The schema version applied (0: no schema_migrations table, the seed's
 * tables at most) and the newest this program knows. */
int db_schema_version(struct db *d, int *version, int *latest);

/* Storage rows of one outcome ("" for rows without one: the seed's). */
struct db_outcome_count {
	char outcome[32];
	int64_t rows;
};

#define DB_STATUS_OUTCOMES 16

/* The schema version that has every table the counts read (the journal). */
#define DB_STATUS_MIN_SCHEMA 6

struct db_counts {
	int64_t
	    received_live; /* reception rows of the bucket, removed_at NULL */
	int64_t received_rows; /* all of them, removed ones too */
	int64_t stored_rows;   /* storage rows of the storage bucket */
	struct db_outcome_count by_outcome[DB_STATUS_OUTCOMES]; /* by name */
	size_t n_outcomes;
	int64_t projects;	/* projects_registry rows */
	int64_t journal_open;	/* entries 'intent' or 'stored' */
	int64_t journal_alive;	/* ... whose owner's lock is held now */
	int64_t journal_failed; /* entries 'failed' */
};

/* The counts for reception_bucket and storage_bucket, in one snapshot
 * (one REPEATABLE READ, READ ONLY transaction). Needs a migrated schema
 * (DB_STATUS_MIN_SCHEMA or newer: ask db_schema_version first); on an older
 * one the missing tables fail it (-EIO). */
int db_status_counts(struct db *d, const char *reception_bucket,
		     const char *storage_bucket, struct db_counts *out);

/* One promotion journal entry as the tools report it. */
struct db_journal_info {
	int64_t id;
	char state[16];	  /* intent, stored, done, failed */
	char outcome[24]; /* copied, ..., duplicate_content */
	int owner;	  /* the owner id */
	int owner_alive;  /* some session holds that owner's lock now */
	char created[32]; /* ISO 8601 UTC, "2026-12-01T00:15:02Z" */
	char *source_bucket;
	char *source_key;
	char *dest_bucket;
	char *dest_key;
	char *error; /* "" when none */
};

/* Journal entries by id: the open ones (ids NULL: state 'intent' or
 * 'stored', by id, at most max, 0: no bound), or exactly those of ids[]
 * (n_ids of them; missing ones are absent). *out malloc'd, *n set; free
 * with db_journal_infos_free. */
int db_journal_infos(struct db *d, const int64_t *ids, size_t n_ids, size_t max,
		     struct db_journal_info **out, size_t *n);
void db_journal_infos_free(struct db_journal_info *e, size_t n);

#endif
