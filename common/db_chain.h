/* db_chain.h - the audit tables' hash chains (migration 9) as the
 * verifier and the anchors read them: the heads, a full walk that
 * recomputes every row_hash on the client (independently of the
 * database's trigger), and the mutable columns against their events.
 * doc/custodyfs.1 (TAMPER EVIDENCE) defines the encoding this file implements.
 *
 * Read-only. Same conventions as db.h: knows nothing of S3 or FUSE, SQL
 * parameterised, 0 or -errno; every output is the caller's. */
#ifndef CUSTODYFS_DB_CHAIN_H
#define CUSTODYFS_DB_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"

/* The schema version that has the chains. */
#define DB_CHAIN_MIN_SCHEMA 9

/* The chained tables, in the order every report lists them. */
#define DB_CHAIN_NTABLES 4
extern const char *const db_chain_tables[DB_CHAIN_NTABLES];

/* Each table has this many chains ("lanes", 0 to 7; migration 9): an
 * insert takes a lane no other transaction holds, so concurrent inserters
 * do not wait for each other's commits. The heads are indexed
 * table * DB_CHAIN_LANES + lane. */
#define DB_CHAIN_LANES 8
#define DB_CHAIN_NHEADS (DB_CHAIN_NTABLES * DB_CHAIN_LANES)

/* Index of table name in db_chain_tables, or -1. */
int db_chain_table_index(const char *name);

/* One chain's head: its newest link. seq 0 (and 64 zeros) for an empty
 * lane. */
struct db_chain_head {
	char table[32];
	int lane;
	int64_t seq;
	char row_hash[65];
};

/* The heads of every lane of every table (each lane's last row, one
 * snapshot) and the database's clock then, ISO 8601 UTC
 * ("2026-12-01T03:13:54.123456Z"). */
int db_chain_heads(struct db *d, struct db_chain_head out[DB_CHAIN_NHEADS],
		   char now[40]);

/* The first broken link found. */
struct db_chain_break {
	char table[32];
	int lane;	/* its lane, -1 unknown */
	int64_t row_id; /* the row named, -1 when none (an empty tail) */
	int64_t seq;	/* its chain_seq (or the missing one), -1 unknown */
	char reason[256];
};

/* What a walk saw. */
struct db_chain_walk {
	int64_t rows[DB_CHAIN_NTABLES];		     /* rows walked per table */
	struct db_chain_head heads[DB_CHAIN_NHEADS]; /* the last good links */
	int broken;				     /* 1: brk says where */
	struct db_chain_break brk;
};

/* Walks every lane of every table in chain_seq order in one snapshot
 * (REPEATABLE READ, READ ONLY), recomputing each row_hash from the row
 * and checking each link (no row outside the lanes, no chain_seq missing,
 * each prev_hash the row_hash before it), then checks the mutable columns
 * (removed_at and removal_reason, a project's name) against their newest
 * event. A lane's last rows deleted leave no gap: the anchors catch that
 * (chain.h). Stops at
 * the first break. 0 (w->broken says whether the chains hold) or -errno
 * when the database could not be read. */
int db_chain_walk(struct db *d, struct db_chain_walk *w);

/* The row_hash and id of table's row at (lane, chain_seq seq). 0 with
 * *found 0 or 1, or -errno. */
int db_chain_hash_at(struct db *d, const char *table, int lane, int64_t seq,
		     char row_hash[65], int64_t *row_id, int *found);

#endif
