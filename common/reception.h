/* reception.h - the reception half of the custody pipeline.
 *
 * Logs what enters the reception bucket (one reception_audit row per
 * distinct upload), removes and renames received objects with their rows,
 * and finds objects that arrived by other routes (console, mc, SDKs) so they
 * get their row the first time they are seen. Knows S3 and the database,
 * nothing of FUSE: the daemon and the command-line tools call the same code.
 * Thread-safe. Functions return 0 or -errno. */
#ifndef CUSTODYFS_RECEPTION_H
#define CUSTODYFS_RECEPTION_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cfg.h"
#include "db.h"
#include "s3.h"
#include "upload.h"

struct reception;

/* cfg, s3 and db are borrowed and must outlive the reception. Starts the
 * background worker that logs foreign uploads (and, when
 * cfg->scan_interval_s > 0, scans the whole bucket that often). */
struct reception *reception_new(const struct cfg *cfg, struct s3_client *s3,
				struct db *db);
/* Stops the worker: a scan or a hash in progress stops at its next page,
 * object or chunk, so this waits at most for one S3 request or database
 * statement in flight. Undos still waiting for the database are logged as
 * such (their objects stay; a later scan logs them). */
void reception_free(struct reception *r);

/* Can a change be logged now (is the database answering)? Called before
 * replacing an object, whose old content cannot be brought back if its
 * row then fails. 0 or -errno. */
int reception_ready(struct reception *r);

/* Before a mount uploads key: does the upload replace an object with a
 * row (stored: the caller's file was stored or opened from the store; else
 * the database is asked whether the key has a live row now, e.g. another
 * mount stored the name since this file was created)? Such an overwrite
 * cannot be undone if its row then fails, so the database must answer
 * first. 1 (an overwrite: the database answers), 0 (a new key, as far as
 * the database knows now; the commit and its undo decide again under the
 * key lock), or -errno (the database does not answer). */
int reception_will_replace(struct reception *r, const char *key, int stored);

/* After a reception_commit of key's upload with ETag etag that failed: 1
 * when its undo waits for the database (the upload's object stays until
 * then, and may yet be logged, late), 0 when no undo of that upload
 * waits (another upload's undo of the key is not this one's). */
int reception_undo_waits(struct reception *r, const char *key,
			 const char *etag);

/* An upload of key by this process failed (an error answered, or no
 * answer), and may have taken effect all the same (a lost answer, a 5xx
 * after the write). Is the object under key now that upload? It is when
 * it carries the upload's UPLOAD_TAG (res->tag: drawn by this process,
 * known to nobody before its object lands) and its bytes say so: same
 * size as res (not empty: every empty object is alike), the SHA-256 and
 * XXH128 res holds (computed by this process from what it sent) equal to
 * the object's, hashed again here If-Match its ETag; not an object whose
 * ETag a live row of the key names (that row's). The tag alone is not
 * trusted for the bytes, nor any other metadata, which any client can
 * write: another client's object of the same bytes (stored before or
 * during this upload) has no such tag (review-W 4b, W2). Not asked: a
 * write that lands after this answer (a timed-out request the store
 * still finishes; review-W W3). The caller holds key busy (this
 * process's foreign-upload logger leaves it alone).
 * 1: it is: res->etag is set to the object's ETag, and the caller records
 * it as if the upload had been answered; 0: it is not (no object, another
 * one, res has no hashes or no tag); -errno: cannot tell (the store or
 * the database does not answer). */
int reception_landed(struct reception *r, const char *key,
		     struct upload_result *res);

/* What reception_commit found under the key, under the key lock, when it
 * wrote the upload's row. */
struct reception_seen {
	/* The object was no longer this upload (another upload replaced it,
	 * or it was removed, before the row went in): the row was logged as
	 * a removed one and the upload does not stand in the store. */
	int superseded;
	int gone;      /* superseded, and no object under the key now */
	char etag[80]; /* superseded && !gone: the object there now */
	uint64_t size; /* its size */
	time_t mtime;  /* its LastModified */
};

/* key has just been uploaded (res) into the reception bucket by who: log
 * it (always a row of its own: each upload is distinct, even of the same
 * bytes). `created`: the caller believes the key did not exist before; a
 * key found with a live row under the key lock is an overwrite all the
 * same (logged so; its undo never deletes it). Returns 0 when the
 * row is committed; then any pending undo of an older upload of the key by
 * this process is dropped, and *seen (may be NULL) says whether the object
 * was still this upload when the row went in (HEAD under the key lock) and,
 * if not, what the store holds instead (the row is then a removed one: the
 * caller must show the store's object, not its own bytes). Otherwise
 * -errno (-EIO when the outcome is unknown), and the upload is undone only
 * as far as it can be proven to be this one's: a created object is deleted
 * if it still has res->etag (HEAD), the key has no live row (asked of the
 * database under the key lock: a live row of another object makes it an
 * overwrite, whatever `created` said) and this process is not uploading
 * the key again (busy beyond the caller's own hold); an overwrite is
 * logged late instead (its old content is gone). When the database cannot
 * be asked, that is done by the worker once it answers (the key stays busy
 * until then). Returns 0 also when the commit turns out to have happened
 * (an unknown outcome read back; *seen then says not superseded).
 * -ENODATA when, under the key lock, the object is found gone (deleted by
 * another client, or by a promotion's cleanup of an earlier upload of the
 * key, before this row): nothing is written, nothing is undone; the caller
 * uploads again and commits again (or fails the file).
 * based_ms_ago: how long ago the content uploaded was based on the store
 * (the file created or opened, or last committed), -1 unknown: when
 * another mount removed the key since (reception_remove), the removal
 * wins: the upload is deleted if still there, logged as a removed row, and
 * -ENOENT returned.
 * bind: NULL, or the binding of key's attributes row to res->etag, run in
 * the row's transaction once it is recorded live (db_record_guard.bind,
 * db_attrs.h: bind->done says whether it bound the row there; never for a
 * superseded, removed or read-back row). A failing bind statement fails
 * the row like any failure of it (-errno, the upload undone). */
struct db_attrs_binding;
int reception_commit(struct reception *r, const char *key,
		     const struct upload_result *res, const struct actor *who,
		     int created, int64_t based_ms_ago,
		     struct db_attrs_binding *bind,
		     struct reception_seen *seen);

/* Keys this process is writing or committing: the foreign-upload logger
 * and the scan leave them alone (a counted set: add and del pair up; the
 * key is busy while its count is above 0). The caller marks a key busy
 * before it first writes the object and unbusies it after its
 * reception_commit (or removal) returned. busy_add returns 0, or -ENOMEM
 * (then the key is not marked). Strings are copied. */
int reception_busy_add(struct reception *r, const char *key);
void reception_busy_del(struct reception *r, const char *key);

/* Deletes a received object and sets removed_at on its live rows, with a
 * reason naming who did it, both under the key lock that commits take (an
 * upload of the key not committed yet is deleted too; its commit then logs
 * it removed). 0, or -errno (the database's or the store's; nothing is
 * deleted without the database). */
int reception_remove(struct reception *r, const char *key,
		     const struct actor *who);
/* reception_remove for an unlink: with spared (NULL: reception_remove),
 * when the key has no live row, another mount's live claim is on it (its
 * new file is being written there) and a HEAD under the key lock finds no
 * object (the object this removal meant is gone already, as through a
 * stale listing), nothing is deleted, marked or noted, *spared is set to
 * 1 (review-k L7: that file's commit must not be refused as removed) and
 * -ENOENT is returned (nothing was there). An object there with no live
 * row yet (review-31 R4) is removed as by reception_remove. Else *spared
 * is 0. After a lost COMMIT answer, the pass that checks the rows again
 * may be spared for a new file begun since: the object this call deleted
 * is still logged removed and 0 returned (review-31 R7); when it finds a
 * newer object stored there instead, *spared is RECEPTION_NEWER and 0 is
 * returned: the name's attribute row is that file's, not to be dropped
 * (review-34 Z6). Same returns. */
#define RECEPTION_NEWER 2
int reception_remove_spare(struct reception *r, const char *key,
			   const struct actor *who, int *spared);

/* Server-side rename inside the reception bucket: copy, log (old row gets
 * removed_at "renamed to ...", new row for to_key), delete the source.
 * The copy is of the source object a HEAD saw when the rename started
 * (x-amz-copy-source-if-match, checked after the copy where the store
 * ignores it): that is the object the rename moves (not necessarily the
 * one a listing showed the caller: a store may give one object two ETags,
 * and rename(2) acts on the name). If another upload
 * replaced it meanwhile, -EBUSY and nothing is renamed
 * (the newer upload stays at from_key, never moved; a copy of it that a
 * store ignoring the If-Match let land at a new to_key is undone).
 * An object at from_key that no live row logs (another route's upload not
 * logged yet) gets its own arrival row first, so the rename closes that
 * row, never the row of what it replaced (review F4); one too recent to be
 * logged yet (its uploader may still log it) is -EBUSY.
 * The new row carries the old row's hashes only when that row logs the
 * very object copied (its ETag) and the copy answered that single-part
 * ETag (the MD5 of the bytes); otherwise they are computed from the copy's
 * bytes, and a copy whose bytes are not those the row logs (a multipart
 * source swapped and put back during the copy: review F3) is -EBUSY,
 * undone. size is the caller's; the row has the copied object's.
 * An existing to_key (found by HEAD before the copy) is never copied onto
 * directly (review H M2): from_key is copied to a private staging key
 * of the storage bucket (RECEPTION_RENAME_STAGING "/<token>", marked in
 * flight as to_key is) and that copy is checked there (its ETag, else its hash,
 * against from_key's live row: db_reception_rename_check); one refused
 * (-EBUSY) or whose hash fails (-EIO) leaves to_key untouched (its
 * object, rows and attributes: new_etag is not set). Only a checked copy
 * is copied to to_key (If-Match its ETag; to_key hashed when that copy's
 * ETag does not vouch, and must be the staged bytes). The staging object
 * is deleted on every path (a failed DELETE is logged; cleanup removes
 * what a crash left).
 * Nothing is copied unless the database answers (db_ping); to_key is busy
 * from before the copy until its row. When the rows fail after the copy:
 * a new to_key's copy is undone as in reception_commit; an existing
 * to_key (found by HEAD before the copy) was overwritten, so it is never
 * deleted: the copy is logged late (origin "rename", hashes unknown).
 * new_etag (80 bytes, may be NULL) gets the copy's ETag as soon as the copy
 * landed at to_key, also when the rename then fails (the copy may stay
 * there); it is left untouched when nothing was copied. src_etag (80
 * bytes, may be NULL) gets the ETag of the source object the rename
 * copied ("" when none was): an upload of from_key since is another
 * object (its attributes are its own: review-N N6). Every row change
 * has its "renamed" event line. A source DELETE that fails after the rows
 * changed has an error line op=rename_source_delete (errno, S3 code)
 * before the renamed line, and returns 0 all the same (review K2): the
 * rename took effect and is durable (to_key holds the file with its row;
 * from_key's row is closed "renamed to ..."), only from_key's object is
 * still in the store, and may still be listed (and read) until the next
 * listing, lookup or scan of the bucket finds it: an object whose ETag is
 * that of the row renamed away from its key, no live row there, is that
 * rename's leftover: deleted then (If-Match its ETag), never logged as a
 * new arrival (reception_leftover_delete).
 * A copy that fails with anything but the store's refusal (412, 404, 403:
 * a 5xx, a reset, a timeout) may have landed, its answer lost (review
 * K3): to_key is HEADed again, and an object there tagged with this
 * rename's token (user metadata custodyfs-rename, which every copy of a
 * rename carries) is taken for the copy (the rename goes on, its bytes
 * checked as any copy's are); any other object there is another
 * upload's, never taken nor undone (review L2). When to_key holds no copy
 * of this rename (or cannot be HEADed) the rename fails with the copy's error
 * and its in-flight marker of to_key stays until its lease: the copy may yet
 * land. */
/* Every object of a listing e[0..n) of the reception bucket (directory
 * markers skipped) has a live row logging it, or is logged now as another
 * route's arrival: 0; -EBUSY when one cannot be logged yet (too recent:
 * its uploader may still log it), or -errno; one batched query per 1,000
 * entries when all are logged. A directory rename runs it first, so it
 * moves every file or none for this reason (review M6). */
int reception_log_listed(struct reception *r, const struct s3_list_entry *e,
			 size_t n);

int reception_rename(struct reception *r, const char *from_key,
		     const char *to_key, uint64_t size, const struct actor *who,
		     char *new_etag, char *src_etag);

/* The private prefix of the STORAGE bucket (custodyfs's own: no uploader
 * writes it; no project prefix starts with a dot) where reception_rename
 * stages its copy over an existing target (review H M2, L1):
 * RECEPTION_RENAME_STAGING "/<token>", marked in flight under the storage
 * bucket's name. The reception bucket reserves nothing: an object under
 * that name in the inbox is an ordinary upload (review L6).
 * `custodyfs cleanup` deletes a staged copy no rename holds any more
 * (marker gone, or lapsed after RECEPTION_RENAMING_LEASE_S: a crash). */
#define RECEPTION_RENAME_STAGING ".custodyfs-rename"
/* How long a rename's in-flight marker (and its staged copy) holds when
 * the rename never ends (a crash): longer than any copy. */
#define RECEPTION_RENAMING_LEASE_S 3600

/* Objects just listed: those not known to be logged are checked against
 * the database and, if unlogged and not busy here, queued for logging by
 * the worker. Their hashes are always computed by reading the object
 * (ranged GETs), never taken from its metadata. An object younger than the
 * grace period (2 database statement deadlines + the S3 request timeout;
 * for a multipart object also counted from when this process first saw
 * it) is logged when that has passed, so that its uploader, if it is a
 * custodyfs mount, logs it itself. Returns quickly. prefix is unused. */
void reception_saw(struct reception *r, const char *prefix,
		   const struct s3_list_entry *entries, size_t n);

/* Lists the reception bucket (under prefix, "" for all) a page at a time
 * and logs what is unlogged, synchronously (recent uploads are left to the
 * worker, as in reception_saw). *logged gets the number of new rows.
 * -ECANCELED when reception_free was called meanwhile. */
int reception_scan(struct reception *r, const char *prefix, size_t *logged);

/* Waits until the foreign-upload queue is empty (tests, tools). */
void reception_drain(struct reception *r);

#endif
