/* db_export.h - the audit tables as files: CSV and JSON Lines snapshots,
 * and the all-time counters of audit/stats.
 *
 * Knows nothing of FUSE or S3. The export is one COPY of one SELECT (so one
 * snapshot of the table), streamed from the server into a file descriptor
 * the caller owns, through a bounded buffer: memory does not grow with the
 * table. */
#ifndef CUSTODYFS_DB_EXPORT_H
#define CUSTODYFS_DB_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"

enum db_export_table {
	DBX_PROJECTS,  /* projects_registry */
	DBX_RECEPTION, /* reception_audit */
	DBX_STORAGE,   /* storage_audit */
	DBX_N
};

enum db_export_fmt {
	DBX_CSV,  /* RFC 4180: header row, quoted as needed, records end
		     in CRLF (line breaks inside quoted fields as stored) */
	DBX_JSONL /* one JSON object per line (row_to_json) */
};

/* The table's name ("reception_audit", ...), or NULL. */
const char *db_export_table_name(enum db_export_table t);

/* Writes a snapshot of table t, every column in table order, rows ordered
 * by id, in format f, to fd from offset 0 (pwrite; the file is truncated
 * first, also when a retry starts over). project_prefix (may be NULL):
 * only the rows whose project_prefix is that (storage_audit only).
 * Timestamps (timestamptz) are ISO 8601 UTC with microseconds
 * ("2026-11-30T23:31:02.123456Z"), whatever the session's TimeZone; NULL
 * is an empty field in CSV and null in JSON; text is UTF-8. *size gets
 * the bytes written. fd stays the caller's. 0 or -errno: EIO (database),
 * ENOSPC/EIO (writing fd), EINVAL. */
int db_export(struct db *d, enum db_export_table t, enum db_export_fmt f,
	      const char *project_prefix, int fd, uint64_t *size);

/* Does projects_registry hold prefix? 1, 0, or -errno. */
int db_export_project_exists(struct db *d, const char *prefix);

/* All-time counts from the tables (one snapshot). */
struct db_totals {
	int64_t received;	/* reception rows, renames excluded */
	int64_t bytes_received; /* their size_bytes */
	int64_t copied;		/* storage rows by outcome */
	int64_t restored;
	int64_t adopted;
	int64_t duplicates_path;    /* outcome duplicate */
	int64_t duplicates_content; /* outcome duplicate_content */
	int64_t conflicts;	    /* storage rows with outcome conflict (the
				       mount records none: refusals) */
	int64_t bytes_stored;	    /* size_bytes of copied/restored/adopted */
	int64_t errors_promotion;   /* promotion_journal entries 'failed' */
	int64_t projects;	    /* projects_registry rows */
};

/* Fills *t. 0 or -errno. */
int db_export_totals(struct db *d, struct db_totals *t);

#endif
