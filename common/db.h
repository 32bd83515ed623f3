/* db.h - the audit store in PostgreSQL (libpq).
 *
 * Knows nothing of S3 or FUSE. SQL is always parameterised (PQexecParams
 * with typed casts); every PGresult is cleared on every path. A struct db is
 * a small pool of connections shared by all threads; a lost connection is
 * reset and the statement retried once; serialization failures and
 * deadlocks are retried (bounded, with backoff). Functions return 0 or
 * -errno mapped by errmap_sqlstate(); details go to the log. Strings in
 * output structs are malloc'd and owned by the caller. */
#ifndef CUSTODYFS_DB_H
#define CUSTODYFS_DB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct db;

/* The client-side bound on one statement (a server that stops answering
 * fails the statement after this long). A commit is at most two such
 * statements apart from the upload it logs, plus a reconnect. */
#define DB_STATEMENT_DEADLINE_MS 20000

/* Who did it: the calling process's user and uid, and this host. uid
 * (uid_t)-1 means the change came by another route (console, SDK): the row
 * then names that and the host that logged it, with no uid. */
struct actor {
	uid_t uid;
	char user[64]; /* login name, or the uid in decimal when unknown */
	char host[256];
};

/* Formats "user (uid N) @ host" into out. */
void actor_format(const struct actor *a, char *out, size_t len);

/* Opens up to pool_size connections lazily (at least one now, so a bad
 * conninfo fails here). conninfo is libpq's; passwords come from PGPASSFILE
 * or service files, never from us. NULL on failure, with a reason (no
 * secret) in err. */
struct db *db_open(const char *conninfo, int pool_size, char *err,
		   size_t err_len);
void db_close(struct db *d);
/* Names this process's claims on file names (file_attrs.claimed_by is
 * claimer + "#" + a number for each): a live claim of any other claimer is
 * never dropped or moved by this process's renames and removals (it marks
 * where another mount's new file will land). Called once, before any other
 * use of d; claimer is copied. A claimer is also held as a session
 * advisory lock on a connection of its own (its liveness lock) while d
 * lives: other processes tell a gone process's leftovers by it
 * (db_attrs_sweep_hidden). 0, -ENOMEM, or -errno (not connected: the lock
 * is not held; d has the claimer all the same). Without it, every live
 * claim is another's. NULL: no claimer, the lock let go. */
int db_set_claimer(struct db *d, const char *claimer);

/* The liveness lock of d's claimer (db_set_claimer) is held, as far as
 * the client knows: checked without a round trip (what the server sent,
 * as db_live_watch does), taken again on a new connection when its
 * session ended. Never blocks on the old connection; a new one's round
 * trips are bounded (review-36 R4). 0, -EINVAL (no claimer), or -errno
 * (not held). */
int db_live_ensure(struct db *d);

/* Starts two threads: one, every DB_LIVE_WATCH_MS (1 s), writes this
 * process's heartbeat on a connection of its own, never a pool slot, each
 * write within DB_LIVE_ANSWER_MS (5 s) connect included (live_heartbeat:
 * seen_at by the server's clock, and grace_s; a failing streak logged once);
 * the other notices without a round trip that the liveness lock's session ended
 * and takes the lock again on a new connection (try-lock: never waits; logged
 * once while it fails). Other processes (their sweeps,
 * db_attrs_sweep_hidden, db_attrs_sweep_pending, and tree drops) take a
 * process for gone only when its lock is free and its heartbeat is
 * more than its grace old (a claimer with no heartbeat row at all, a
 * daemon of before migration 17: once its lock was seen free for
 * DB_LIVE_NOBEAT_MS, 30 s, by the sweeps; never by tree drops), so a live
 * process that lost its session, or cannot take its lock again, keeps its rows
 * (review-31 R1, review-36 R1-R3). File system requests never take the lock nor
 * wait on it (review-31 R2). Stopped by db_close, which ends the heartbeat
 * (stale from then on). grace_s <= 0: DB_LIVE_GRACE_S (30). Call after any
 * fork. 0 or -errno. */
int db_live_watch(struct db *d, int grace_s);

/* For how long (ms) this process's heartbeats (db_live_watch) have been
 * written without a failure: 0 when the last one failed or none was
 * written yet. A sweep of other processes' rows is sound only after this
 * has reached the grace: after a database outage longer than the grace,
 * every heartbeat is stale, and a live process needs a moment to write
 * its own again (review-37 F3). Any thread; no round trip. */
long db_live_steady_ms(struct db *d);

/* The heartbeats of processes that are gone (their liveness lock free,
 * their heartbeat past its grace) go, after the sweeps dropped their rows
 * (a missing heartbeat is as gone). How many went, or -errno. */
long db_live_beats_sweep(struct db *d);

/* Applies the versioned migrations (schema_migrations table), idempotent,
 * under pg_advisory_lock so several mounts starting at once serialise.
 * Adopts the seed's tables: creates what is missing, adds missing columns,
 * never drops or rewrites rows. Installs the append-only triggers. */
int db_migrate(struct db *d);

/* Is the database reachable now? 0 or -EIO (for status / health). */
int db_ping(struct db *d);

struct reception_new {
	const char *source_bucket;
	const char *object_key; /* full key in the bucket */
	const char *file_name;	/* last path component */
	uint64_t size;
	const char
	    *xxh128; /* hex, or NULL when unknown (foreign, not hashed) */
	const char *sha256; /* hex, or NULL */
	const char *etag; /* the object's ETag, quotes removed; NULL unknown */
	const char *origin;	 /* "mount", "foreign", "rename", "tool" */
	const struct actor *who; /* NULL for foreign uploads seen by a scan */
};

/* Functions that commit return -EINPROGRESS when the connection was lost
 * during COMMIT: the change may or may not be in the database. */

/* Logs one reception. Atomically (one transaction, row lock on the key):
 * origin "mount" (the uploader: each of its uploads is distinct, even of the
 * same bytes) always inserts. Another origin (an observer) inserts nothing
 * when a live row (removed_at IS NULL) for (bucket, key) has the same etag,
 * or a NULL etag (seed rows, other tools), and the same size: *id_out is
 * that row's id, *inserted = 0. Otherwise an existing live row gets
 * removed_at = now() with removal_reason = replaced_reason and a new row is
 * inserted (*inserted = 1). Safe against concurrent mounts (a
 * unique partial index on live rows). id_out/inserted may be NULL. */
int db_reception_record(struct db *d, const struct reception_new *r,
			const char *replaced_reason, int64_t *id_out,
			int *inserted);

/* Sets removed_at = now(), removal_reason = reason on the live row of
 * (bucket, key), if any. 0 also when there was none. */
int db_reception_mark_removed(struct db *d, const char *bucket, const char *key,
			      const char *reason);

/* The rows one db_reception_mark_removed_ret closed. */
struct db_closed {
	int n;	      /* how many (0: none) */
	int64_t id;   /* the newest one's id */
	int64_t size; /* its size_bytes (-1: NULL) */
};

/* db_reception_mark_removed, telling in *closed (may be NULL) which rows
 * it closed. */
int db_reception_mark_removed_ret(struct db *d, const char *bucket,
				  const char *key, const char *reason,
				  struct db_closed *closed);

/* Sets removed_at = now(), removal_reason = reason on reception row id
 * while it is live: in one transaction under the key lock of its (bucket,
 * key), as every writer of reception rows. For a change found by a tool
 * (reconcile, cleanup): by id, so a newer upload's row of the same key is
 * never the one closed. 0 when this call closed it; -ENOENT when the row
 * is not live (closed meanwhile) or does not exist. */
int db_reception_remove_id(struct db *d, int64_t id, const char *reason);

/* Rename of a received object: one transaction marks the live row of
 * old_key removed ("renamed to <new_key>") and inserts a row for new_key
 * with the given size, etag, origin "rename", and who. Its hashes are the
 * old row's only when that row logs the object copied (see
 * db_reception_rename_ret; here new_etag is taken as the source's ETag, as
 * a single-part CopyObject's is), else NULL. When old_key had no live row,
 * only the new row is inserted (hashes NULL). */
int db_reception_rename(struct db *d, const char *bucket, const char *old_key,
			const char *new_key, const char *new_etag,
			uint64_t size, const struct actor *who);

/* What a rename copied. The old row's hashes go to the new row only when
 * that row's ETag is etag (the source object the copy is proven to be of)
 * and its size is the rename's: a row never gets hashes of other bytes. */
struct db_rename_src {
	const char *etag;   /* the source's ETag copied; NULL: unknown */
	const char *xxh128; /* computed from the copy's bytes, or NULL: used */
	const char *sha256; /* when the old row's cannot be carried over */
	int require;	    /* nonzero: -ESTALE (nothing written) rather than
			       a new row without hashes */
	const char *token;  /* the rename's in-flight marker of new_key
			       (db_reception_renaming), deleted with the
			       rows; NULL: none */
	int copy_hashed;    /* xxh128/sha256 are of the copy's bytes, hashed
			       because its ETag did not vouch for them: a
			       live row logging the source with another
			       SHA-256 is -EBADMSG (nothing written) */
	/* NULL, or run under both key locks once the old row is checked and
	 * before anything is written: is new_key still the copy? (review
	 * K1). -ESTALE (another object there) or -ENOENT (none), with
	 * superseded_reason: the rename did happen and something replaced or
	 * removed its result since: the old row is closed as renamed, the
	 * new row inserted already removed with superseded_reason, new_key's
	 * live rows and attributes are left alone, *superseded (may be NULL)
	 * set to 1. Any other error: returned, nothing written. */
	int (*check)(void *arg);
	void *check_arg;
	const char *superseded_reason;
	int *superseded;
	/* Nonzero: the copy at new_key was checked before it was put there
	 * (db_reception_rename_check passed: its bytes are those of the
	 * upload old_key's live row logged then; xxh128/sha256, when set,
	 * are theirs). If old_key's live row no longer logs that upload
	 * (another upload committed there since: review L3), the rename
	 * still happened: new_key's rows are written as always (with
	 * xxh128/sha256; -ESTALE when require and both are NULL), old_key's
	 * rows are left alone (the newer upload's) and out->src_moved is 1.
	 * check still applies. Only when old_key's live row is newer than
	 * checked_id (the row the check passed: a new upload, or another
	 * rename onto old_key, committed since); none, or that very row
	 * closed (old_key renamed away or removed by another mount: review
	 * N1), stays -EBADMSG. */
	int verified;
	int64_t checked_id; /* with verified: db_reception_rename_check's */
	/* Nonzero: the call again after one that answered -EINPROGRESS (its
	 * COMMIT's answer lost) and a read back that did not find its rows:
	 * they are written only while token's marker (deleted with them) is
	 * still there, else -EALREADY and nothing is written (the first
	 * call may have committed after all). */
	int again;
};

/* A rename in flight to key (review F1): lease_s > 0 records the marker
 * token (before the rename's copy; it lapses after lease_s seconds),
 * lease_s == 0 deletes it (a rename that ended without its rows;
 * db_reception_rename_ret deletes it with them). Both under key's lock.
 * While a marker holds, db_reception_newest_do runs nothing and returns
 * -EBUSY: the object at key may be that rename's copy. 0 or -errno. */
int db_reception_renaming(struct db *d, const char *bucket, const char *key,
			  const char *token, int lease_s);
/* Does a rename's in-flight marker of key hold (recorded by
 * db_reception_renaming, its lease not lapsed)? 1, 0 or -errno. A look. */
int db_reception_renaming_held(struct db *d, const char *bucket,
			       const char *key);

/* What one db_reception_rename_ret changed (0: nothing). */
struct db_renamed {
	int64_t id;	     /* the row inserted for new_key */
	int64_t from_id;     /* old_key's row it closed */
	int64_t replaced_id; /* new_key's live row it closed (a file there) */
	int src_moved;	     /* src->verified, and old_key's live row was
				another upload's: left alone (from_id 0) */
};

/* db_reception_rename with the source as src says (NULL: unknown, so no
 * hashes carried over), telling in *out (may be NULL) the rows. -ESTALE
 * when src->require and the new row would have no hashes: nothing changed
 * (hash the copy and call again with them). */
int db_reception_rename_ret(struct db *d, const char *bucket,
			    const char *old_key, const char *new_key,
			    const char *new_etag,
			    const struct db_rename_src *src, uint64_t size,
			    const struct actor *who, struct db_renamed *out);

/* After db_reception_rename_ret answered -EINPROGRESS (its COMMIT's answer
 * was lost), under both key locks: *done = 1 when its rows committed:
 * old_key's newest row is closed "renamed to <new_key>" and logs src_etag
 * (or no ETag), and new_key has a newer row of origin "rename" with
 * new_etag; *live (may be NULL): that row is live (0: logged removed, the
 * copy was replaced or removed before the rows); out (may be NULL): its id
 * and the old row's (replaced_id 0: not known). 0 or the database's
 * -errno (*done 0: not known). Nothing is written. */
int db_reception_rename_readback(struct db *d, const char *bucket,
				 const char *old_key, const char *new_key,
				 const char *src_etag, const char *new_etag,
				 int *done, int *live, struct db_renamed *out);

/* Would db_reception_rename_ret(d, bucket, old_key, new_key, ..., src,
 * size, ...) take src as what the rename copied, as old_key's live row is
 * now? A look only: nothing is locked or written, and the rename's own
 * transaction checks again. 0: yes; -EBADMSG: that row does not log the
 * object copied, or (src->copy_hashed) the copy's bytes are not the ones it
 * logs; -ESTALE: src->require and the new row would have no hashes (hash
 * the copy); or -errno. For a rename that checks its copy before it
 * touches its target (reception_rename over an existing file). *row_id
 * (may be NULL): the id of the live row judged (0: none). */
int db_reception_rename_check(struct db *d, const char *bucket,
			      const char *old_key, const char *new_key,
			      const struct db_rename_src *src, uint64_t size,
			      int64_t *row_id);

struct reception_live {
	char *object_key;
	char *etag; /* NULL when the row has none */
	int64_t id;
	int64_t size; /* size_bytes, -1 when NULL */
};

/* Live rows of bucket whose key starts with prefix ("" = all), in key
 * order, at most max (0 = no bound). *rows malloc'd; free with
 * db_reception_live_free. */
int db_reception_live(struct db *d, const char *bucket, const char *prefix,
		      size_t max, struct reception_live **rows, size_t *n);
void db_reception_live_free(struct reception_live *rows, size_t n);

/* The live rows of exactly these keys of bucket (one query, an index probe
 * per key: for checking one listing page), in key order. Keys without a
 * live row are simply absent. *rows as for db_reception_live. */
int db_reception_live_keys(struct db *d, const char *bucket,
			   const char *const *keys, size_t n_keys,
			   struct reception_live **rows, size_t *n);

/* Called by the db layer inside a transaction that holds the key lock of
 * (bucket, key), before anything is written: 0 to go on, -errno to give up
 * (the transaction is rolled back and the errno returned). It may be called
 * again when the transaction is retried, so it must be idempotent. */
typedef int (*db_locked_fn)(void *arg);

struct db_attrs_binding;

/* Conditions on a reception row logged by an observer (an object seen in a
 * listing) rather than by its uploader. */
struct db_record_guard {
	/* The id of the key's newest live row when the observer read it (0:
	 * none); if another row has been committed since, nothing is logged
	 * and -ESTALE returned (the observation may be stale; look again).
	 * -1: no such condition. */
	int64_t expect_live;
	db_locked_fn check; /* NULL, or run under the key lock before the
			       insert (e.g. "is the object still there?") */
	void *arg;
	/* Origin "mount" only: the first commit's outcome is unknown (its
	 * COMMIT's answer was lost), so a live row with r->etag is taken as
	 * that commit's row (nothing inserted). 0: always insert. */
	int readback;
	/* NULL, or: when check answers -ESTALE or -ENOENT (the object is
	 * no longer the upload r describes: another upload replaced it, or
	 * it was removed, before this row), r is logged all the same but as
	 * a removed row with this removal_reason, and the live row (the
	 * replacing upload's, if committed) is left alone: 0 is returned,
	 * *superseded_out (if not NULL) set to 1. */
	const char *superseded_reason;
	int *superseded_out;
	/* NULL, or set to whether the key had a live row under the key lock
	 * (before r's row): an upload that commits is an overwrite then,
	 * whatever its uploader believed. */
	int *had_live_out;
	/* >= 0 (with removed_reason): the content r describes was based on
	 * the store (created, opened or last committed) this many ms ago.
	 * When a mount removed the key since (db_reception_mark_removed_locked
	 * notes each removal), the removal wins: gone (NULL, or run under the
	 * key lock: deletes the object if it is still the upload; 0 to go on)
	 * is called, r is logged as a removed row with removed_reason (check
	 * is not called, the live rows are left alone), *removed_out (if not
	 * NULL) set to 1 and 0 returned. -1: no such condition. Not when the
	 * key has a live row now: the removal closed them all, so that row
	 * was written after it (the key was created again) and the removal is
	 * no longer the key's state; r is then guarded by check as usual. */
	int64_t based_ms_ago;
	/* CLOCK_MONOTONIC ms when based_ms_ago was measured (0: unknown):
	 * the time spent since (the pool, the key lock's wait, retries) is
	 * added under the lock, just before the removals are read, so that a
	 * commit that waited behind the very removal it races still sees it
	 * as newer than its content. */
	int64_t measured_mono_ms;
	db_locked_fn gone;
	const char *removed_reason;
	int *removed_out;
	/* NULL, or the binding of the key's attributes row to r's object
	 * (db_attrs.h), run in this transaction once r is recorded as the
	 * key's live row, under the key lock (not when superseded, removed
	 * or read back): one COMMIT for both. A failing statement of it
	 * fails the transaction. bind->done: whether it bound the row in
	 * the transaction that committed. */
	struct db_attrs_binding *bind;
};

/* db_reception_record with a guard (NULL: none). A live row that logs the
 * upload already (for an observer: same etag, or none, and same size; for
 * origin "mount": only with g->readback, the same etag) counts whatever
 * the guard says: *inserted = 0, *id_out its id. */
int db_reception_record_guarded(struct db *d, const struct reception_new *r,
				const char *replaced_reason,
				const struct db_record_guard *g,
				int64_t *id_out, int *inserted);

/* The undo of an upload of a new key whose row did not (or may not)
 * commit: under the key lock of (bucket, key), if the key has no live row
 * (a removed row is of an earlier upload, perhaps of the same bytes), calls
 * fn(arg) (which deletes the object if it is still that upload) and sets
 * *rowed = 0 and *other = 0; otherwise fn is not called and either *rowed
 * = 1 (a live row records etag: the commit happened after all, keep the
 * object) or *other = 1 (the key has a live row of another object: the
 * upload, if it is the object now, replaced that row's object, so it is an
 * overwrite, never to be deleted; the caller logs it late). other may be
 * NULL (then fn runs in that case as before the key had live rows).
 * Returns 0, fn's error, or the database's (then fn may not have run: ask
 * again). */
int db_reception_unrowed_do(struct db *d, const char *bucket, const char *key,
			    const char *etag, db_locked_fn fn, void *arg,
			    int *rowed, int *other);

/* The removal of (bucket, key) together with its object: in one
 * transaction holding the key lock (the one a mount takes to log an
 * upload), calls fn(arg) (which deletes the object) and, if it returns 0,
 * sets removed_at = now(), removal_reason = reason on the key's live rows
 * (0 also when there were none) and notes the removal's time for the
 * commits of uploads already under way (db_record_guard.based_ms_ago). So no
 * commit of another upload of the key falls between the deletion and the
 * marking: such a commit, waiting for the lock, then finds the object gone (and
 * logs its upload removed) or its own object there. Returns 0; fn's error
 * (nothing written); or the database's, -EINPROGRESS when the COMMIT's answer
 * was lost (the rows may or may not be marked). *fn_ran (may be NULL): fn was
 * called (the object may be gone even on an error). fn may be called again on a
 * retry, so it must be idempotent. *closed (may be NULL): the rows it closed
 * (as db_reception_mark_removed_ret). Nothing is owned. */
int db_reception_mark_removed_locked(struct db *d, const char *bucket,
				     const char *key, const char *reason,
				     db_locked_fn fn, void *arg, int *fn_ran,
				     struct db_closed *closed);
/* db_reception_mark_removed_locked for an unlink (review-k L7): when,
 * under the key lock, the key has no live row, its file_attrs row is
 * another mount's live claim (db_set_claimer: that mount's new file is
 * being written there) and absent(arg) returns 0 (no object at the key:
 * the removal, through a stale listing, is of an object gone already),
 * nothing is done (fn not called, no row marked, no removal noted: that
 * file's commit is not refused) and *spared is set to 1. absent returns
 * -ESTALE when an object is there (one with no live row yet, review-31
 * R4: it came by another route, or is another upload's before its
 * commit): it is removed as db_reception_mark_removed_locked does, and
 * *spared is 0, as it is when the key has a live row or no such claim.
 * absent's other errors are returned (nothing written). Same returns. */
int db_reception_remove_spare(struct db *d, const char *bucket, const char *key,
			      const char *reason, db_locked_fn fn,
			      db_locked_fn absent, void *arg, int *fn_ran,
			      struct db_closed *closed, int *spared);

/* The removal of reception row id of (bucket, key) together with its
 * object: in one transaction holding the key lock (the one a mount takes
 * to log an upload), when id is the key's newest live row, calls fn(arg)
 * (which deletes the object if it is still that upload) and, if fn returns
 * 0, gives row id removed_at with reason. Returns 0; -ESTALE a newer live
 * row exists, *newest its id (fn not called: that upload's object must
 * stay); -ENOENT row id is not live (fn not called); fn's error (nothing
 * written); or the database's, -EINPROGRESS when the COMMIT's answer was
 * lost (fn may have run). fn may be called again on a retry, so it must be
 * idempotent. Nothing is owned. */
int db_reception_remove_locked(struct db *d, const char *bucket,
			       const char *key, int64_t id, const char *reason,
			       db_locked_fn fn, void *arg, int64_t *newest);

/* Under the key lock of (bucket, key) (the one a mount takes to log an
 * upload), when no live row of that key is newer than row id (id 0: the
 * row is not known, fn is always called), calls fn(arg); nothing is
 * written.
 * Returns 0 or fn's error; -ESTALE when a newer live row exists, *newest
 * (may be NULL) its id (fn not called: that upload's object must stay);
 * -EBUSY when a rename to key is in flight (db_reception_renaming; fn not
 * called: the object may be that rename's copy);
 * or the database's (fn may have run: it may be called again on a retry,
 * so it must be idempotent). */
int db_reception_newest_do(struct db *d, const char *bucket, const char *key,
			   int64_t id, db_locked_fn fn, void *arg,
			   int64_t *newest);

/* Whether an object of (bucket, key) with this ETag, last modified at
 * mtime, is the leftover source of a rename whose rows committed and whose
 * DELETE of the source failed: the key has no live row and its newest row
 * logs that ETag and was closed by a rename ("renamed to ...") at or after
 * mtime, less 2 s (Last-Modified's whole seconds, rounded up by Swift, and
 * clocks): an upload of the same bytes made later than that after the
 * rename is a new arrival. *id gets that row's id, 0 when it is not so.
 * 0 or the database's -errno. */
int db_reception_renamed_away(struct db *d, const char *bucket, const char *key,
			      const char *etag, time_t mtime, int64_t *id);

#endif
