/* db_recon.h - what `custodyfs reconcile` and `custodyfs cleanup` read of
 * the audit tables.
 *
 * Knows nothing of S3: the tools compare these rows with the buckets. The
 * one change they make, removed_at on a row by id, is
 * db_reception_remove_id() (db.h), beside the other reception writers.
 * Functions return 0 or -errno (errmap_sqlstate()); arrays they return
 * are malloc'd and owned by the caller (free with the matching _free). */
#ifndef CUSTODYFS_DB_RECON_H
#define CUSTODYFS_DB_RECON_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"

/* A live reception_audit row with what the tools compare. */
struct db_received {
	int64_t id;
	char *object_key;
	char etag[80];	 /* "" when NULL (seed rows, other tools) */
	int64_t size;	 /* -1 when NULL */
	char sha256[65]; /* "" when NULL: only hashes this system computed
			    are ever stored there */
	char xxh128[33]; /* "" when NULL */
	double age_s;	 /* now() - uploaded_at by the database's clock, in
			    seconds; -1 when uploaded_at is NULL */
};

/* Live rows of bucket after (after_key, after_id) in (key, id) order, key
 * in byte order (COLLATE "C", as S3 lists keys): after_key NULL starts at
 * the first. At most max rows (max > 0). */
int db_recon_live_page(struct db *d, const char *bucket, const char *after_key,
		       int64_t after_id, size_t max, struct db_received **rows,
		       size_t *n);

/* The storage side, paged the same way: live storage_audit rows that say
 * an object is at their dest_key of the storage bucket (outcome copied,
 * restored, adopted or duplicate; NULL outcome or dest_bucket: the seed's,
 * copied into the storage bucket), as struct db_received: object_key is
 * dest_key, etag the one the promotion's journal entry verified ("" when
 * unknown), age_s from moved_at. */
int db_recon_stored_page(struct db *d, const char *bucket,
			 const char *after_key, int64_t after_id, size_t max,
			 struct db_received **rows, size_t *n);

/* Is the object at (bucket, key) of the storage bucket accounted for now:
 * a promotion to it is open (its journal entry intent or stored: the
 * object is there before its row), or a live row of the kind
 * db_recon_stored_page reads names it (committed since a page was read)?
 * 1, 0, or -errno. */
int db_recon_storage_accounted(struct db *d, const char *bucket,
			       const char *key);

/* Live rows of exactly these keys of bucket, in (key, id) order. */
int db_recon_live_keys(struct db *d, const char *bucket,
		       const char *const *keys, size_t n_keys,
		       struct db_received **rows, size_t *n);

void db_recon_received_free(struct db_received *rows, size_t n);

/* A storage_audit row that says a reception was stored: outcome copied,
 * restored, adopted, duplicate or duplicate_content (NULL, the seed's,
 * counts as copied), not removed. */
struct db_stored_row {
	int64_t id;
	int64_t reception_id; /* the reception it was found for */
	int by_key; /* the row has no reception_id (the seed's): it names the
		       key as its source, not this reception, so only the
		       stored bytes can tell it holds this upload's content */
	char outcome[24];
	char dest_bucket[256];	 /* "" when NULL (seed rows) */
	char dest_key[1025];	 /* the key it was promoted to */
	char duplicate_of[1025]; /* duplicate_content: the stored key of the
				    same content; else "" */
	int64_t size;		 /* -1 when NULL */
	char sha256[65];	 /* "" when NULL */
	char dest_etag[80];	 /* the ETag of the object at dest_key when its
				    promotion verified it (its journal entry's
				    dest_etag); "" when not known (no journal
				    entry, an old one, duplicate_content): then
				    only the object's bytes can tell */
};

/* For each of these receptions (live rows of bucket), its newest such
 * storage row naming it (reception_id), else the newest one without a
 * reception_id whose source is (bucket, its key). At most one per
 * reception, in the order of recv. *rows is malloc'd (free()). */
int db_recon_stored_for(struct db *d, const char *bucket,
			const struct db_received *recv, size_t n_recv,
			struct db_stored_row **rows, size_t *n);

#endif
