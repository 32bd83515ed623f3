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
/* Stops the worker (waits for the object being logged). */
void reception_free(struct reception *r);

/* Can a change be logged now (is the database answering)? Called before
 * replacing an object, whose old content cannot be brought back if its
 * row then fails. 0 or -errno. */
int reception_ready(struct reception *r);

/* key has just been uploaded (res) into the reception bucket by who: log it.
 * `created` says the key did not exist before. If the row cannot be
 * committed, a created object is deleted again, so no object stays that the
 * caller was told failed; -errno is returned either way. */
int reception_commit(struct reception *r, const char *key,
		     const struct upload_result *res, const struct actor *who,
		     int created);

/* Deletes a received object and sets removed_at on its row, with a reason
 * naming who did it. */
int reception_remove(struct reception *r, const char *key,
		     const struct actor *who);

/* Server-side rename inside the reception bucket: copy, log (old row gets
 * removed_at "renamed to ...", new row for to_key), delete the source. On
 * failure before the log commit, the copy is removed again. *new_etag
 * (80 bytes) may be NULL. */
int reception_rename(struct reception *r, const char *from_key,
		     const char *to_key, uint64_t size,
		     const struct actor *who, char *new_etag);

/* Objects just listed: those not known to be logged are checked against
 * the database and, if unlogged, queued for logging (hashes taken from the
 * object's metadata when present, else computed by reading it). Returns
 * quickly; the rows appear when the worker has hashed the objects. */
void reception_saw(struct reception *r, const char *prefix,
		   const struct s3_list_entry *entries, size_t n);

/* Lists the whole reception bucket (under prefix, "" for all) and logs
 * what is unlogged, synchronously. *logged gets the number of new rows. */
int reception_scan(struct reception *r, const char *prefix, size_t *logged);

/* Waits until the foreign-upload queue is empty (tests, tools). */
void reception_drain(struct reception *r);

#endif
