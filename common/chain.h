/* chain.h - the chain anchors: the heads of the audit tables' hash chains
 * (db_chain.h) written as small objects into the storage bucket, and the
 * database checked against them, so a database rewritten with recomputed
 * hashes is caught against the store.
 *
 * An anchor is the object
 *   CHAIN_ANCHOR_PREFIX <16 digits> "-" <host> "-" <pid> ".txt"
 * where the digits are 9999999999999999 minus the microseconds since the
 * epoch: a listing gives the newest first. The prefix starts with '.',
 * which no project prefix may (SPEC section 3): it never collides with a
 * project's files and projects/ (a view of projects_registry) never shows
 * it. Its text (doc/custodyfs.1, TAMPER EVIDENCE):
 *   custodyfs-chain-anchor 1
 *   time <ISO 8601 UTC, the database's clock when the heads were read>
 *   host <host>
 *   head <table> <lane> <chain_seq> <row_hash>  one line per lane
 *
 * Uses the S3 client and the database; knows nothing of FUSE. */
#ifndef CUSTODYFS_CHAIN_H
#define CUSTODYFS_CHAIN_H

#include <stddef.h>

#include "db.h"
#include "db_chain.h"
#include "s3.h"

#define CHAIN_ANCHOR_PREFIX ".custodyfs-chain/anchors/"

/* Anchors checked by chain_anchor_check: the newest ones. */
#define CHAIN_ANCHORS_CHECKED 32

/* Reads the heads and writes them as a new anchor into bucket. key (may
 * be NULL) gets the object key, heads (may be NULL) what was written. 0 or
 * -errno (the database's or the store's). */
int chain_anchor_write(struct db *d, struct s3_client *s3, const char *bucket,
		       const char *host, char *key, size_t key_len,
		       struct db_chain_head heads[DB_CHAIN_NHEADS]);

/* What chain_anchor_check found. */
struct chain_anchor_report {
	int n_anchors;	  /* anchors read (at most CHAIN_ANCHORS_CHECKED) */
	char newest[512]; /* the newest anchor's key, "" when none */
	char newest_time[40];
	int broken; /* 1: brk says where, anchor which anchor */
	struct db_chain_break brk;
	char anchor[512];
};

/* Checks the database against the newest anchors of bucket: every head
 * they hold must be the row_hash of that table's row at that chain_seq.
 * 0 (r->broken says whether it holds) or -errno when the store or the
 * database could not be read. */
int chain_anchor_check(struct db *d, struct s3_client *s3, const char *bucket,
		       struct chain_anchor_report *r);

/* A mount's periodic anchors: every interval_s seconds, when a head moved
 * since the last anchor this process wrote, a new one. */
struct chain_anchorer;

/* Starts the thread (interval_s > 0; strings copied, d and s3 borrowed
 * until chain_anchorer_stop). NULL with errno set. */
struct chain_anchorer *chain_anchorer_start(struct db *d, struct s3_client *s3,
					    const char *bucket,
					    const char *host, int interval_s);

/* Stops and joins the thread, frees a. NULL is a no-op. */
void chain_anchorer_stop(struct chain_anchorer *a);

#endif
