/* promote.h - promotion: a received file into a project of the storage
 * bucket (SPEC §3), audited, deduplicated and crash-safe.
 *
 * The per-file protocol (design/promotion.md): decide under advisory locks
 * (db_storage.c) -> server-side copy guarded by the source's ETag -> verify
 * by HEAD (the copy's ETag, else the bytes hashed) -> storage row + journal
 * 'stored' (with the ETag verified)
 * -> delete the source + reception row removed_at + journal 'done'. Every
 * step is idempotent and journaled, so a crash anywhere is finished or
 * rolled back by promote_recover(). Knows S3 and the database, nothing of
 * FUSE: the daemon and the command-line tools run the same code.
 * Thread-safe. Functions return 0 or -errno. */
#ifndef CUSTODYFS_PROMOTE_H
#define CUSTODYFS_PROMOTE_H

#include <stdint.h>
#include <time.h>

#include "cfg.h"
#include "db.h"
#include "db_storage.h"
#include "s3.h"

struct promote;

/* cfg, s3 and db are borrowed and must outlive the promote. Takes this
 * process's journal owner id (a session advisory lock on a connection of
 * its own, held until promote_free). NULL with *err = -errno. */
struct promote *promote_new(const struct cfg *cfg, struct s3_client *s3,
			    struct db *db, int *err);
/* Releases the owner lock: entries this process left open become
 * recoverable by others. Callers first let promotions in flight end. */
void promote_free(struct promote *p);

struct promote_result {
	enum db_outcome outcome; /* also of a promotion that was finished from
				    its journal entry (resumed) */
	int64_t journal_id;
	char dup_of[1025]; /* duplicate_content: the stored key it points at */
	/* The object now stored at the destination key (copied, restored,
	 * adopted, duplicate) as the promotion's last HEAD of it saw it:
	 * LastModified, 0 when not known (a promotion resumed from its
	 * journal entry, another outcome, a failure), its ETag and size. */
	time_t dest_mtime;
	char dest_etag[80];
	uint64_t dest_size;
};

/* Promotes the received object src_key (reception bucket) to
 * <prefix>/<relpath> in the storage bucket, for who (moved_by). Returns 0
 * only when the storage row, the source's deletion and the reception row's
 * removed_at are all durable (res may be NULL). Errors: ENOENT (no such
 * project, or no such source), EEXIST (conflict: another file is stored
 * under that key; nothing overwritten, the source stays), EBUSY (the
 * source changed during the copy, or another promotion holds the key or
 * the content for too long), EINVAL / ENAMETOOLONG (bad names), EIO and
 * the store's or database's errors (the source stays, or the journal entry
 * is left for recovery). */
int promote_file(struct promote *p, const char *src_key, const char *prefix,
		 const char *relpath, const struct actor *who,
		 struct promote_result *res);

/* Vetoes one file of a directory promotion (0: go on, -errno: that file
 * fails with it and stays), e.g. the daemon's "open for writing". Asked
 * with src_key NULL once every listed file was tried: -errno when the
 * directory holds something the store's listing cannot show (a file being
 * written, not uploaded yet), which then fails the call like a file and
 * keeps the directory in reception. */
typedef int (*promote_check_fn)(void *arg, const char *src_key);

/* Told about each file of a directory promotion once it was promoted:
 * src_key its key in reception, dest its relpath in the project
 * ("<reldir>/<the rest of its key>"), r its result (e.g. the outcome).
 * Called on the promotion's worker threads, at once. */
typedef void (*promote_done_fn)(void *arg, const char *src_key,
				const char *dest,
				const struct promote_result *r);

struct promote_dir_result {
	size_t n_files;		 /* files found under the directory */
	size_t n_done;		 /* promoted (any outcome but conflict) */
	size_t n_failed;	 /* left in reception */
	char first_failed[1025]; /* the source key of the first failure */
};

/* Promotes every file under src_dir/ (reception bucket, paged listing) to
 * <prefix>/<reldir>/<the rest of its key>, each with promote_file, on up
 * to cfg->promote_workers threads. Directory markers (keys ending in '/')
 * are not files: once every file is promoted they are removed too, so the
 * directory leaves reception; after a partial failure they stay with the
 * failed files. check (may be NULL) is asked about each file first, done
 * (may be NULL) told about each promoted file; both get check_arg.
 * Returns 0 when every file was promoted, else the first failure's errno
 * (the others were still tried); res may be NULL. */
int promote_dir(struct promote *p, const char *src_dir, const char *prefix,
		const char *reldir, const struct actor *who,
		promote_check_fn check, promote_done_fn done, void *check_arg,
		struct promote_dir_result *res);

/* Finishes or rolls back the open journal entries whose owner is gone (a
 * crashed process, or one that lost its database session and could not
 * take its id again), after taking them over (their owner becomes this
 * process's id, so the old owner's fenced steps are refused):
 * 'intent' -> destination present with our bytes (hashed): record; else
 * source present: copy again; else 'failed' (logged as an error);
 * 'stored' -> cleanup. Run at mount and by `custodyfs recover`. *n_entries (may
 * be NULL) gets the number of entries handled. 0 or the first error. */
int promote_recover(struct promote *p, int *n_entries);

/* promote_recover() on a thread of its own, so a mount answers while it
 * runs: each entry it took over is claimed before it is worked on, and a
 * rename that meets one first finishes it itself (the other skips it).
 * It runs again every [fs] recover_interval (entries of processes gone since,
 * and this process's own that a failure left open: a source DELETE refused
 * while the store was down is retried without another rename). promote_free()
 * stops it between entries (the rest stay open for the next taker) and
 * joins it. 0, -EALREADY (started before), or -errno. */
int promote_recover_start(struct promote *p);

/* The journal owner id this process holds now (0 while it has none):
 * entries of that id are this process's. */
int promote_owner_id(struct promote *p);

/* Deletes received object (bucket, key) only while it is still the upload
 * of ETag etag (quotes removed): DELETE with If-Match; when the store
 * refuses that (412, or 501: not implemented) but the key still shows
 * etag (Swift does not match a multipart upload's S3 ETag on DELETE), a
 * plain DELETE. The promotion's
 * cleanup and `custodyfs cleanup` use it. 0 deleted; -ESTALE another
 * upload is there now (kept); -ENOENT gone already; or the store's
 * -errno. Nothing is owned. */
int promote_delete_received(struct s3_client *s3, const char *bucket,
			    const char *key, const char *etag);

/* promote_delete_received without the plain DELETE: when the store
 * refuses the conditional DELETE (412, 501) while the key still shows etag,
 * nothing is deleted and -EOPNOTSUPP returned (an unconditional DELETE
 * could remove a newer upload of the same key). `custodyfs cleanup` uses
 * it. Nothing is owned. */
int promote_delete_received_strict(struct s3_client *s3, const char *bucket,
				   const char *key, const char *etag);

/* The decision of SPEC §3 from what is known (pure; unit-tested):
 * has_row - a storage row claims the key; row_same - its sha256 and size
 * are the source's; row_dup_content - that row is a duplicate_content;
 * dest_present - an object is at the key; dest_same - that object has the
 * source's size and sha256 (for a rowed key: its ETag is the one recorded
 * with the row; else, and for a key without a row, its bytes hashed, never
 * its metadata); has_content - dedup=content found the
 * content stored under another key of the project. */
enum db_outcome promote_outcome(int has_row, int row_same, int row_dup_content,
				int dest_present, int dest_same,
				int has_content);

#endif
