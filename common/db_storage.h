/* db_storage.h - storage_audit rows and the promotion journal (migration 6).
 *
 * The database half of a promotion (promote.c drives it): the decision
 * under advisory locks, the journal's steps, the storage rows, and the
 * owner lock each mount holds while it lives. Knows nothing of S3: where a
 * step needs the store, the caller's callback runs inside the transaction,
 * under the locks. Functions return 0 or -errno (mapped by
 * errmap_sqlstate()); -EINPROGRESS when the connection was lost at COMMIT
 * (read the journal back to learn the outcome). Strings in output structs
 * are owned by the struct (fixed buffers) unless said. */
#ifndef CUSTODYFS_DB_STORAGE_H
#define CUSTODYFS_DB_STORAGE_H

#include <stdint.h>

#include "db.h"

enum db_outcome {
	DB_OUT_COPIED = 0,
	DB_OUT_RESTORED,
	DB_OUT_ADOPTED,
	DB_OUT_DUPLICATE,
	DB_OUT_DUPLICATE_CONTENT,
	DB_OUT_CONFLICT, /* never stored: the decision's refusal */
};

/* "copied", "restored", ... as in storage_audit.outcome. */
const char *db_outcome_name(enum db_outcome o);

/* The project of prefix in projects_registry: its name (out, len bytes).
 * 0, -ENOENT (no such project) or -errno. */
int db_project_name(struct db *d, const char *prefix, char *out, size_t len);

/* The newest live reception row of (bucket, key), with its hashes. */
struct db_reception_row {
	int64_t id;
	int64_t size;	 /* -1 when NULL */
	char etag[80];	 /* "" when NULL */
	char sha256[65]; /* "" when NULL (seed rows, foreign not hashed) */
	char xxh128[33]; /* "" when NULL */
};

/* 0 with *out, -ENOENT when the key has no live row, or -errno. */
int db_reception_row_get(struct db *d, const char *bucket, const char *key,
			 struct db_reception_row *out);

/* One promotion's facts, borrowed from the caller. */
struct db_promo {
	int64_t reception_id; /* the source's live reception row */
	const char *source_bucket;
	const char *source_key;
	const char *source_etag; /* quotes removed */
	const char *dest_bucket;
	const char *dest_key;
	const char *project_prefix;
	const char *project_name;
	uint64_t size;
	const char *sha256; /* computed by this system (the reception row's) */
	const char *xxh128; /* NULL when unknown */
	int dedup_content;  /* [fs] dedup = content */
	int owner;	    /* the mount's owner id (db_owner_take) */
	const struct actor *who;
};

/* What the decision reads under the locks, for the caller's callback. */
struct db_promo_seen {
	int has_row;	       /* a storage row claims dest_key (newest one) */
	int row_dup_content;   /* that row is a duplicate_content */
	int row_same;	       /* its sha256 and size are the source's */
	int row_nohash;	       /* it has no sha256 (a seed row): only the
				  object's bytes can tell */
	char row_dup_of[1025]; /* its duplicate_of, when row_dup_content */
	char row_etag[80];     /* the ETag of the object that row recorded
				  (its journal entry's dest_etag), "" when
				  not known: then only the bytes can tell */
	int has_content;       /* dedup=content: the same (sha256, size) is
				  stored in the project under another key */
	char content_key[1025];
	char target_etag[80]; /* the ETag recorded for the object a
				 duplicate_content would point at (row_dup_of
				 or content_key), "" when not known */
	int busy;	 /* an open journal entry holds dest_key, the source, or
			    (dedup=content) this content: decide again later */
	int source_live; /* the reception row is still live */
};

/* Called inside the decision's transaction, under the locks of the
 * destination key and of the content, with what the database holds: sets
 * *outcome and, for a duplicate, dest_etag (80 bytes, "" when unknown) to
 * the ETag of the object it found at the key (it may look at the store;
 * it may be called again when the transaction is retried, so it must be
 * idempotent). 0, or -errno to give up (rolled back). */
typedef int (*db_decide_fn)(void *arg, const struct db_promo_seen *seen,
			    enum db_outcome *outcome, char *dest_etag);

/* The decision. In one transaction: lock the destination key and the
 * content (advisory, transaction-scoped; the same locks as every other
 * writer of storage rows), read what the database holds, call fn. Then:
 * -EBUSY when seen.busy (nothing written; the caller waits and retries),
 * -ESTALE when the reception row is no longer live, -EEXIST for a
 * conflict; duplicate / duplicate_content insert their storage row and a
 * journal entry in state 'stored' (only the cleanup remains; a duplicate's
 * with the ETag fn gave as its dest_etag); copied /
 * restored / adopted insert a journal entry in state 'intent'. *journal_id
 * gets the entry's id and *outcome the decision; dup_of (1025 bytes, may be
 * NULL) the key a duplicate_content points at. */
int db_promote_decide(struct db *d, const struct db_promo *p, db_decide_fn fn,
		      void *arg, enum db_outcome *outcome, int64_t *journal_id,
		      char *dup_of);

struct db_owner;

/* The steps below are fenced by owner o (NULL: unfenced, for tests of
 * this layer): inside their transaction, under the entry's row lock, the
 * entry must belong to o's owner id and o's session must hold that id's
 * lock. When not, o's session is checked (a lost one is reconnected,
 * taking its id again when it can) and the step tried once more; still
 * not: -ENOLCK, nothing written (another process's recovery took the
 * entry over; it finishes it). */

/* The record step of journal entry id: one transaction, under the key
 * lock, inserts its storage row (unless one records the entry already:
 * idempotent) and sets state 'stored' and dest_etag (the ETag of the
 * object its verification found to hold the entry's bytes; NULL or "":
 * not known, a later decision then hashes the object). 0 also when the
 * entry is 'done' already (another worker or mount finished it); -ENOENT
 * when it is 'failed' or missing. */
int db_promote_record(struct db *d, struct db_owner *o, int64_t journal_id,
		      const char *dest_etag);

/* The cleanup's database half: the reception row gets removed_at with
 * reason "promoted to <bucket>/<key>" (when still live) and the entry
 * state 'done'. Idempotent. *closed (may be NULL): the id of the
 * reception row this call closed, 0 when it closed none. */
int db_promote_done(struct db *d, struct db_owner *o, int64_t journal_id,
		    int64_t *closed);

/* An entry that cannot go on (source and destination both gone, or a
 * refused copy before anything was stored): state 'failed' with the
 * reason, from intent only. -EALREADY when the entry is 'stored' or 'done'
 * (recorded meanwhile: it is not failed), -ENOENT when failed or missing. */
int db_promote_fail(struct db *d, struct db_owner *o, int64_t journal_id,
		    const char *why);

/* Removes what a copy left at the destination of an entry: called with the
 * entry's row locked (FOR UPDATE) and under the key lock, only while the
 * entry is 'intent' and no live storage row claims its destination key;
 * the entry is then 'failed' with why. 0 when del ran (its -errno rolls
 * back and is returned: the entry stays open), -EALREADY when the entry
 * is no longer 'intent' (*state, 16 bytes, tells which: nothing deleted),
 * -EEXIST when a storage row claims the key (nothing deleted, entry
 * failed), -ENOENT when there is no such entry. del may run again when
 * the transaction is retried (it must be idempotent); it owns nothing. */
int db_promote_discard(struct db *d, struct db_owner *o, int64_t journal_id,
		       const char *why,
		       int (*del)(void *arg, const char *bucket,
				  const char *key),
		       void *arg, char *state);

/* One journal entry, as recovery reads it. */
struct db_journal_entry {
	int64_t id;
	int64_t reception_id;
	char state[16];
	char outcome[24];
	int owner;
	char source_bucket[256];
	char source_key[1025];
	char source_etag[80];
	char dest_bucket[256];
	char dest_key[1025];
	char sha256[65];
	char xxh128[33]; /* "" when unknown */
	uint64_t size;
	struct actor who; /* who asked for it (uid -1, "" when unknown) */
};

/* The entry id (for reading back an unknown outcome). -ENOENT if none. */
int db_journal_get(struct db *d, int64_t id, struct db_journal_entry *e);

/* The open entry (intent or stored) of source (bucket, key), if any:
 * 0 with *e, or -ENOENT. */
int db_journal_open_for_source(struct db *d, const char *bucket,
			       const char *key, struct db_journal_entry *e);

/* The first open entry that makes db_promote_decide(p) -EBUSY (same
 * destination, same source, or same content under dedup=content): 0 with
 * *e, or -ENOENT. */
int db_journal_blocker(struct db *d, const struct db_promo *p,
		       struct db_journal_entry *e);

/* The mount's owner id, held as a session-level advisory lock on a
 * connection of its own for as long as the owner lives. */
int db_owner_take(struct db *d, struct db_owner **out, int *owner_id);
/* The owner id to journal new entries under: the current one while its
 * session answers, else a new session that takes the same id again when
 * its lock is free (nobody took it meanwhile), or a new id (the old id's
 * entries are then anyone's to take over). 0 with *owner_id, or -errno.
 * Thread-safe. */
int db_owner_check(struct db_owner *o, int *owner_id);
/* The owner id o's session holds now (0 while it has none); no round
 * trip. Thread-safe. */
int db_owner_id(struct db_owner *o);
void db_owner_release(struct db_owner *o);

/* Takes over open entry journal_id of owner dead when dead's lock is free
 * (its process is gone or lost its session): while holding that lock, the
 * entry's owner becomes o's id (so the old owner's fenced steps are
 * refused from then on). 0 with *e (now o's), -EBUSY when dead lives (or
 * is o's own id), -ENOENT when the entry is no longer open or dead's. */
int db_journal_takeover(struct db_owner *o, int64_t journal_id, int dead,
			struct db_journal_entry *e);

/* Open entries whose owner is gone (its lock can be taken now) are taken
 * over (made o's, as db_journal_takeover); then every open entry of o's
 * (those, and o's own left open) is passed to fn, outside the owner's
 * session lock: fn skips those its process works on. fn returns 0 or
 * -errno (recorded, the others still run). Returns 0, the first fn error,
 * or the database's. *n_seen gets the number of entries passed to fn. */
int db_journal_recover(struct db_owner *o,
		       int (*fn)(void *arg, const struct db_journal_entry *e),
		       void *arg, int *n_seen);

#endif
