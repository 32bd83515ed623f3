/* tool_cleanup.c - `custodyfs cleanup -o config=FILE [--dry-run]
 * [--older-than D] [--verify-hashes] [--json]`: the seed's planned next
 * step, the controlled cleanup of the reception bucket.
 *
 * An object of the reception bucket is removed only when all of this
 * holds, else it is kept and reported with the reason:
 *   - it is the very upload that was logged: a live reception row of its
 *     key records its ETag (a row without an ETag, the seed's, cannot
 *     prove that) and its size;
 *   - that reception was promoted: a storage_audit row with its
 *     reception_id and a stored outcome (copied, restored, adopted,
 *     duplicate, duplicate_content) and a SHA-256;
 *   - the hashes this system computed agree: the reception row's SHA-256
 *     (when it has one) and size are the storage row's;
 *   - the stored object is in the storage bucket (for duplicate_content:
 *     the object of the same content it points at) with that size and our
 *     sha256 metadata (HEAD), and holds those bytes: it vouches for them
 *     only while its ETag is the one recorded when its promotion verified
 *     them (promotion_journal.dest_etag of its storage row's journal_id),
 *     else (another ETag: overwritten since; none recorded; always with
 *     --verify-hashes) its bytes are read and hashed (metadata anyone can
 *     write proves nothing);
 *   - no promotion of it is open in the journal;
 *   - with --older-than D, its reception row is at least D old (by the
 *     database's clock).
 * Then, in one transaction holding the key lock a mount takes to log an
 * upload (db_reception_remove_locked), and only while that row is still
 * the key's newest live row, the object is looked at again and deleted
 * while it is still that upload (DELETE If-Match its ETag, never an
 * unconditional DELETE: promote_delete_received_strict), and the row gets
 * removed_at with a reason naming the storage row and who ran the tool. A
 * live row of the key found afterwards (logged meanwhile) fails the run.
 * A real run first probes whether the store honours If-Match on DELETE
 * (cleanup_probe) and is refused where it does not, unless
 * --unsafe-unconditional-delete. What stays open: a PUT of the same bytes
 * by another route, not yet logged, between the last HEAD and the DELETE
 * (same ETag), and on a store ignoring If-Match any PUT in that window.
 * The object goes first (the DELETE before the row's UPDATE and COMMIT):
 * a crash between the two leaves a live row whose object is gone, which
 * `custodyfs reconcile --apply` closes; never an object without a row. Nothing
 * is changed unless both buckets and the database answer first; --dry-run
 * changes nothing at all.
 * A rename's staged copy (RECEPTION_RENAME_STAGING/<token> in the storage
 * bucket, reception.h) is deleted once no rename holds
 * it: its in-flight marker is gone (the rename ended, its own DELETE
 * failed) or lapsed (RECEPTION_RENAMING_LEASE_S: it crashed); kept while
 * one does. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_recon.h"
#include "db_storage.h"
#include "log.h"
#include "names.h"
#include "objhash.h"
#include "promote.h"
#include "reception.h"
#include "tools.h"

#define CLEANUP_PAGE 1000	 /* keys per listing page */
#define CLEANUP_CHUNK (8u << 20) /* bytes per ranged GET when hashing */

static void cleanup_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: custodyfs cleanup -o config=FILE [--dry-run] "
	    "[--older-than D]\n"
	    "                         [--verify-hashes] [--json]\n"
	    "                         [--unsafe-unconditional-delete]\n"
	    "\n"
	    "Removes from the reception bucket the objects that are promoted, "
	    "verified and\n"
	    "logged, and nothing else. An object goes only when a live "
	    "reception row records\n"
	    "its ETag and size (it is the very upload that was received), a "
	    "storage_audit\n"
	    "row of that reception says it was stored (copied, restored, "
	    "adopted, duplicate,\n"
	    "duplicate_content) with the same SHA-256 and size, and the "
	    "stored object is in\n"
	    "the storage bucket with that size and SHA-256: its ETag must be "
	    "the one recorded\n"
	    "when its promotion verified its bytes, else (and always with "
	    "--verify-hashes)\n"
	    "its bytes are read and hashed; its sha256 metadata alone proves "
	    "nothing. It is\n"
	    "deleted only while it is still that upload (If-Match\n"
	    "its ETag) and its reception row then gets removed_at, as a "
	    "promotion's cleanup\n"
	    "does. Everything else (not logged, not promoted, replaced since, "
	    "a promotion in\n"
	    "progress, too young) is kept and reported with the reason.\n"
	    "A rename's staged copy (" RECEPTION_RENAME_STAGING "/... in the "
	    "storage bucket) is removed once no\n"
	    "rename holds it any more (it ended or crashed).\n"
	    "\n"
	    "  -o config=FILE    the mount's configuration file\n"
	    "  --dry-run         check everything, remove nothing, change "
	    "nothing\n"
	    "  --older-than D    only receptions logged at least D ago: N "
	    "followed by\n"
	    "                    s, m, h, d or w (a bare N is days)\n"
	    "  --verify-hashes   read every stored object and compare the "
	    "SHA-256 of its\n"
	    "                    bytes, also those whose ETag is the recorded "
	    "one\n"
	    "  --json            one JSON object on stdout, for scripts\n"
	    "  --unsafe-unconditional-delete\n"
	    "                    run on a store that ignores If-Match on "
	    "DELETE (MinIO,\n"
	    "                    s3rver). Without it such a run is refused: "
	    "before a real\n"
	    "                    run cleanup probes the store (a PUT, a DELETE "
	    "If-Match a\n"
	    "                    wrong ETag, a DELETE of "
	    ".custodyfs-probe/HOST.PID "
	    "in the\n"
	    "                    storage bucket). RISK: there, an upload "
	    "that lands\n"
	    "                    between cleanup's last look and its DELETE "
	    "(a PUT not\n"
	    "                    yet logged) is deleted; cleanup reports a "
	    "failure when a\n"
	    "                    newer row of the key is logged meanwhile, "
	    "but the bytes\n"
	    "                    are gone. Run it only with no uploads going "
	    "on.\n"
	    "  -h, --help        this text\n"
	    "\n"
	    "Exit status: 0 the run completed (kept objects are not errors), "
	    "1 the store or\n"
	    "the database failed (nothing is removed unless both answer "
	    "first), an object\n"
	    "could not be removed, a newer upload of a removed key was "
	    "logged meanwhile, or\n"
	    "the store ignores If-Match on DELETE (without "
	    "--unsafe-unconditional-delete),\n"
	    "2 bad usage.\n");
}

/* "30d", "12h", "90m", "45s", "2w", "7" (days) into seconds; -1 bad. */
static double cleanup_duration(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0 || v != v)
		return -1;
	if (!*end || !strcmp(end, "d"))
		return v * 86400;
	if (end[1])
		return -1;
	switch (*end) {
	case 's':
		return v;
	case 'm':
		return v * 60;
	case 'h':
		return v * 3600;
	case 'w':
		return v * 7 * 86400;
	}
	return -1;
}

struct cleanup_run {
	struct tool_env *t;
	struct actor who;
	int dry_run, json, verify, unsafe;
	double older_than; /* seconds, 0: any age */
	size_t n_objects, n_removed, n_kept, n_failed;
	uint64_t bytes_removed;
	size_t n_out; /* JSON entries written */
};

static void cleanup_report(struct cleanup_run *r, const char *key,
			   const char *action, const char *reason,
			   const struct db_received *row,
			   const struct db_stored_row *st)
{
	char shown[NAMES_MAX_KEY * 4 + 1];

	if (r->json) {
		printf("%s\n  {\"key\": ", r->n_out++ ? "," : "");
		tool_json_str(stdout, key);
		printf(", \"action\": ");
		tool_json_str(stdout, action);
		printf(", \"reason\": ");
		tool_json_str(stdout, reason);
		if (row)
			printf(", \"reception_id\": %lld", (long long)row->id);
		else
			printf(", \"reception_id\": null");
		if (st) {
			printf(", \"storage_id\": %lld, \"outcome\": ",
			       (long long)st->id);
			tool_json_str(stdout, st->outcome);
			printf(", \"dest_key\": ");
			tool_json_str(stdout, st->dest_key);
		} else {
			printf(", \"storage_id\": null, \"outcome\": null, "
			       "\"dest_key\": null");
		}
		printf("}");
		return;
	}
	printf("%-12s %s", action, tool_shown(key, shown, sizeof(shown)));
	if (st)
		printf(" -> %s",
		       tool_shown(st->dest_key, shown, sizeof(shown)));
	printf("%s%s\n", reason ? ": " : "", reason ? reason : "");
}

static int cleanup_row_cmp(const void *a, const void *b)
{
	const struct db_received *x = a, *y = b;
	int c = strcmp(x->object_key, y->object_key);

	return c ? c : (x->id > y->id) - (x->id < y->id);
}

/* The row of key recording this upload (etag, size), or why there is none
 * (*why). rows sorted by (key, id). */
static const struct db_received *cleanup_row_of(const struct db_received *rows,
						size_t n,
						const struct s3_list_entry *le,
						const char **why)
{
	const struct db_received *row = NULL, *r;
	int any = 0, noetag = 0;
	size_t i;

	*why = NULL;
	for (i = 0; i < n; i++) {
		r = &rows[i];
		if (strcmp(r->object_key, le->key))
			continue;
		any = 1;
		if (!r->etag[0])
			noetag = 1;
		else if (!strcmp(r->etag, le->etag))
			row = r;
	}
	if (row && row->size != (int64_t)le->size) {
		*why = "not the logged upload: its size differs from its "
		       "reception row";
		return NULL;
	}
	if (row)
		return row;
	if (!any)
		*why = "not logged: no live reception row";
	else if (noetag)
		*why = "its reception row records no ETag: cannot prove it is "
		       "the object that was received";
	else
		*why = "replaced since it was logged: another upload than the "
		       "logged one";
	return NULL;
}

/* Is the promoted content in the storage bucket as recorded? 1 yes, 0 no
 * (*why), -errno when the store cannot tell. A storage row that names
 * this reception: its size and SHA-256 are the reception row's (when it
 * has one), and the stored object has them: its size and sha256 metadata
 * (HEAD; metadata that disagrees keeps the object, metadata that agrees
 * proves nothing), and its bytes: the object vouches for them only while
 * its ETag is the one the row's journal entry recorded when its promotion
 * verified them (st->dest_etag), else (another ETag: overwritten since;
 * none recorded; --verify-hashes) they are read and hashed, as the
 * promotion does (objhash_compute). A row without a reception_id
 * (the seed's, naming only the source key): the stored object's bytes are
 * always hashed and must give the reception row's SHA-256, which this
 * system computed. */
static int cleanup_stored_ok(struct cleanup_run *r,
			     const struct db_received *row,
			     const struct db_stored_row *st, const char **why)
{
	const char *bucket =
	    st->dest_bucket[0] ? st->dest_bucket : r->t->cfg.storage_bucket;
	const char *key = strcmp(st->outcome, "duplicate_content")
			      ? st->dest_key
			      : st->duplicate_of;
	const char *want = st->by_key ? row->sha256 : st->sha256;
	char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX];
	struct s3_object_info info;
	const char *m;
	int rc, ok, vouched;

	if (strcmp(bucket, r->t->cfg.storage_bucket)) {
		*why = "its storage row names another bucket";
		return 0;
	}
	if (st->by_key && !row->sha256[0]) {
		*why = "neither its reception row (no SHA-256) nor its storage "
		       "row (no reception id) ties the stored object to this "
		       "upload";
		return 0;
	}
	if (!key[0] || !want[0] || (!st->by_key && st->size < 0)) {
		*why = "its storage row records no key, size or SHA-256";
		return 0;
	}
	if ((st->size >= 0 && st->size != row->size) ||
	    (row->sha256[0] && st->sha256[0] &&
	     strcmp(row->sha256, st->sha256))) {
		*why = "its storage row's size or SHA-256 is not its "
		       "reception row's";
		return 0;
	}
	rc = s3_head(r->t->s3, bucket, key, &info);
	if (rc == -ENOENT) {
		*why = "the stored object is missing from the storage bucket";
		return 0;
	}
	if (rc)
		return rc;
	m = s3_meta_get(&info, "sha256");
	ok = (int64_t)info.size == row->size &&
	     (st->by_key || (m && !strcmp(m, want)));
	if (!ok) {
		s3_object_info_free(&info);
		*why = "the stored object's size or SHA-256 is not the "
		       "recorded one";
		return 0;
	}
	/* Its metadata anyone can write: the object vouches for the
	 * recorded SHA-256 only while it has the ETag recorded when its
	 * promotion verified its bytes (a duplicate_content's entry records
	 * none for the object it points at); any other object is hashed. */
	vouched = st->dest_etag[0] &&
		  strcmp(st->outcome, "duplicate_content") &&
		  !strcmp(info.etag, st->dest_etag);
	if (!r->verify && !st->by_key && vouched) {
		s3_object_info_free(&info);
		return 1;
	}
	rc = objhash_compute(r->t->s3, bucket, key, info.etag, info.size,
			     CLEANUP_CHUNK, NULL, NULL, xxh, sha);
	s3_object_info_free(&info);
	if (rc == -ESTALE) {
		*why = "the stored object changed while it was hashed";
		return 0;
	}
	if (rc)
		return rc;
	if (strcmp(sha, want)) {
		*why = "the SHA-256 of the stored object's bytes is not the "
		       "recorded one";
		log_error("%s/%s: its bytes hash to %s, recorded %s", bucket,
			  key, sha, want);
		return 0;
	}
	return 1;
}

/* The DELETE of one object, run under the key lock by
 * db_reception_remove_locked: only while the key still shows the verified
 * upload (HEAD: ETag and size), and only conditionally (no unconditional
 * fallback). Idempotent: a retried transaction does not delete twice. */
struct cleanup_del {
	struct cleanup_run *r;
	const char *key;
	const struct db_received *row;
	int deleted; /* the DELETE succeeded */
	int obj_rc;  /* why the object stays: -ENOENT, -ESTALE, -EOPNOTSUPP */
};

static int cleanup_delete_locked(void *arg)
{
	struct cleanup_del *d = arg;
	struct s3_object_info now;
	int rc, same;

	if (d->deleted)
		return 0;
	d->obj_rc = 0;
	rc = s3_head(d->r->t->s3, d->r->t->cfg.reception_bucket, d->key, &now);
	if (rc == -ENOENT)
		d->obj_rc = rc;
	if (rc)
		return rc;
	same = !strcmp(now.etag, d->row->etag) &&
	       (int64_t)now.size == d->row->size;
	s3_object_info_free(&now);
	if (!same) {
		d->obj_rc = -ESTALE;
		return -ESTALE;
	}
	rc = promote_delete_received_strict(
	    d->r->t->s3, d->r->t->cfg.reception_bucket, d->key, d->row->etag);
	if (rc == -ENOENT || rc == -ESTALE || rc == -EOPNOTSUPP)
		d->obj_rc = rc;
	if (!rc)
		d->deleted = 1;
	return rc;
}

/* After a removal: a live row of key now is a newer upload logged while
 * (or after) its object was deleted. 1 there is one (*newer its id), 0
 * none, -errno. */
static int cleanup_newer_row(struct cleanup_run *r, const char *key,
			     int64_t removed, int64_t *newer)
{
	struct db_received *rows = NULL;
	size_t n = 0, i;
	const char *keys[1] = {key};
	int rc;

	*newer = 0;
	rc = db_recon_live_keys(r->t->db, r->t->cfg.reception_bucket, keys, 1,
				&rows, &n);
	if (rc)
		return rc;
	for (i = 0; i < n; i++)
		if (rows[i].id != removed && rows[i].id > *newer)
			*newer = rows[i].id;
	db_recon_received_free(rows, n);
	return *newer > 0;
}

/* One listed object: kept (reported), removed, or failed. */
static void cleanup_one(struct cleanup_run *r, const struct s3_list_entry *le,
			const struct db_received *rows, size_t n_rows,
			const struct db_stored_row *st_rows, size_t n_st)
{
	const struct db_stored_row *st = NULL;
	const struct db_received *row;
	struct db_journal_entry *je;
	struct s3_object_info now;
	const char *why = NULL;
	char reason[2048], a[400], msg[64], msg2[256];
	struct cleanup_del del = {0};
	int64_t newer = 0;
	size_t i;
	int rc, same;

	r->n_objects++;
	row = cleanup_row_of(rows, n_rows, le, &why);
	if (!row)
		goto kept;
	for (i = 0; i < n_st; i++)
		if (st_rows[i].reception_id == row->id)
			st = &st_rows[i];
	if (!st) {
		why = "not promoted: no storage_audit row of its reception";
		goto kept;
	}
	if (r->older_than > 0 &&
	    (row->age_s < 0 || row->age_s < r->older_than)) {
		why = row->age_s < 0 ? "its reception row has no upload time"
				     : "younger than --older-than";
		goto kept;
	}
	je = calloc(1, sizeof(*je));
	if (!je) {
		rc = -ENOMEM;
		goto failed;
	}
	rc = db_journal_open_for_source(r->t->db, r->t->cfg.reception_bucket,
					le->key, je);
	free(je);
	if (rc == 0) {
		why = "a promotion of it is in progress (open journal entry)";
		goto kept;
	}
	if (rc != -ENOENT)
		goto failed;
	rc = cleanup_stored_ok(r, row, st, &why);
	if (rc < 0)
		goto failed;
	if (!rc)
		goto kept;
	/* The listing may be minutes old by now, and a store that ignores
	 * If-Match (s3rver does) deletes whatever is there: look again
	 * right before (the conditional DELETE below closes the window
	 * where the store honours it). */
	rc = s3_head(r->t->s3, r->t->cfg.reception_bucket, le->key, &now);
	if (rc == -ENOENT) {
		why = "removed by someone else meanwhile";
		goto kept;
	}
	if (rc)
		goto failed;
	same = !strcmp(now.etag, row->etag) && (int64_t)now.size == row->size;
	s3_object_info_free(&now);
	if (!same) {
		why = "replaced since it was listed: the new upload stays";
		goto kept;
	}
	if (r->dry_run) {
		cleanup_report(r, le->key, "would remove", NULL, row, st);
		r->n_removed++;
		r->bytes_removed += le->size;
		return;
	}
	/* The row must follow the object: nothing is deleted that could not
	 * be marked removed (as reception_remove). The DELETE happens under
	 * the key lock a mount takes to log an upload, and only while row is
	 * still the key's newest live row: an upload logged since stays. */
	rc = db_ping(r->t->db);
	if (rc)
		goto failed;
	actor_format(&r->who, a, sizeof(a));
	snprintf(reason, sizeof(reason),
		 "cleaned up: promoted to %s/%s (storage_audit %lld, %s); "
		 "removed by custodyfs cleanup, %s",
		 r->t->cfg.storage_bucket, st->dest_key, (long long)st->id,
		 st->outcome, a);
	del.r = r;
	del.key = le->key;
	del.row = row;
	rc = db_reception_remove_locked(r->t->db, r->t->cfg.reception_bucket,
					le->key, row->id, reason,
					cleanup_delete_locked, &del, &newer);
	if (rc && del.obj_rc && !del.deleted) {
		if (del.obj_rc == -ESTALE)
			why = "replaced since it was checked: the new upload "
			      "stays";
		else if (del.obj_rc == -ENOENT)
			why = "removed by someone else meanwhile";
		else
			why = "the store refused the DELETE If-Match its ETag "
			      "(Swift does for a multipart ETag): kept, an "
			      "unconditional DELETE could remove a newer "
			      "upload of the key";
		goto kept;
	}
	if (rc == -ESTALE && !del.deleted) {
		snprintf(msg2, sizeof(msg2),
			 "a newer upload of the key was logged since it was "
			 "checked (reception row %lld): it stays",
			 (long long)newer);
		why = msg2;
		goto kept;
	}
	if (rc == -ENOENT && !del.deleted) {
		why = "its reception row was closed meanwhile (by its "
		      "promotion or a mount)";
		goto kept;
	}
	if (rc == -EINPROGRESS && del.deleted) {
		/* its COMMIT's answer was lost: once more (idempotent) */
		rc = db_reception_remove_id(r->t->db, row->id, reason);
		if (rc == -ENOENT)
			rc = 0; /* that COMMIT happened */
		else if (rc)
			rc = -EIO;
	}
	if (rc && !del.deleted)
		goto failed;
	tool_removed_event("cleanup", rc, r->t->cfg.reception_bucket, le->key,
			   (long long)le->size, row->id, "cleaned_up",
			   st->dest_key, &r->who);
	if (rc) {
		log_error("%s/%s removed, but its reception row %lld could not "
			  "be closed (%s): custodyfs reconcile --apply closes "
			  "it",
			  r->t->cfg.reception_bucket, le->key,
			  (long long)row->id, strerror(-rc));
		snprintf(msg, sizeof(msg), "row not closed: %s", strerror(-rc));
		cleanup_report(r, le->key, "failed", msg, row, st);
		r->n_failed++;
		r->n_removed++;
		r->bytes_removed += le->size;
		return;
	}
	/* A newer upload logged right after the DELETE (its PUT landed
	 * between the last look and the DELETE, on a store that ignores
	 * If-Match, or an identical one): its object may be gone. Loudly. */
	rc = cleanup_newer_row(r, le->key, row->id, &newer);
	if (rc) {
		if (rc > 0)
			snprintf(msg2, sizeof(msg2),
				 "removed, but a newer upload of the key was "
				 "logged meanwhile (reception row %lld): its "
				 "object may have been deleted; check it",
				 (long long)newer);
		else
			snprintf(msg2, sizeof(msg2),
				 "removed, but whether a newer upload was "
				 "logged meanwhile is unknown: %s",
				 strerror(-rc));
		log_error("%s/%s: %s", r->t->cfg.reception_bucket, le->key,
			  msg2);
		cleanup_report(r, le->key, "failed", msg2, row, st);
		r->n_failed++;
		r->n_removed++;
		r->bytes_removed += le->size;
		return;
	}
	log_info("removed %s/%s (promoted to %s/%s)",
		 r->t->cfg.reception_bucket, le->key, r->t->cfg.storage_bucket,
		 st->dest_key);
	cleanup_report(r, le->key, "removed", NULL, row, st);
	r->n_removed++;
	r->bytes_removed += le->size;
	return;
kept:
	cleanup_report(r, le->key, "kept", why, row, st);
	r->n_kept++;
	return;
failed:
	log_error("%s/%s: %s: kept", r->t->cfg.reception_bucket, le->key,
		  strerror(-rc));
	cleanup_report(r, le->key, "failed", strerror(-rc), row, st);
	r->n_failed++;
}

/* Is key under RECEPTION_RENAME_STAGING "/"? Nothing else of the storage
 * bucket is ever deleted here, whatever a listing answers. */
static int cleanup_is_staged(const char *key)
{
	static const char pre[] = RECEPTION_RENAME_STAGING "/";

	return !strncmp(key, pre, sizeof(pre) - 1) && key[sizeof(pre) - 1];
}

/* A rename's staged copy (RECEPTION_RENAME_STAGING of the storage
 * bucket), or with versions set one version or delete marker of it that a
 * versioned bucket keeps after its DELETE (review N2): removed (a current
 * one with every version of it; a version by its id) when no rename holds
 * its key (its in-flight marker gone or lapsed), else kept. A delete marker
 * holds no bytes: removed or kept without a report line. */
static void cleanup_staged(struct cleanup_run *r,
			   const struct s3_list_entry *le, int versions)
{
	const char *what =
	    versions ? "a noncurrent version of a rename's staged copy"
		     : "a rename's staged copy that no rename holds (it "
		       "ended or crashed)";
	const char *b = r->t->cfg.storage_bucket;
	char name[1200];
	int rc;

	if (!cleanup_is_staged(le->key))
		return; /* a store that ignored the prefix (review P6) */
	if (versions)
		snprintf(name, sizeof(name), "%s?versionId=%s", le->key,
			 le->version_id);
	else
		snprintf(name, sizeof(name), "%s", le->key);
	if (!versions)
		r->n_objects++;
	rc = db_reception_renaming_held(r->t->db, b, le->key);
	if (rc > 0) {
		if (!le->delete_marker) {
			cleanup_report(r, name, "kept",
				       "a rename's staged copy: its rename is "
				       "in flight",
				       NULL, NULL);
			r->n_kept++;
		}
		return;
	}
	/* A private key of custodyfs's own bucket (its rename's token): no
	 * uploader writes there, so an unconditional DELETE takes nothing
	 * of anyone's; with every version a versioned bucket keeps. */
	if (!rc && !r->dry_run)
		rc = versions ? s3_delete_version(r->t->s3, b, le->key,
						  le->version_id)
			      : s3_delete_every_version(r->t->s3, b, le->key);
	if (rc) {
		log_error("%s/%s: %s%s: kept", b, name, strerror(-rc),
			  rc == -EACCES ? " (object lock?)" : "");
		cleanup_report(r, name, "failed", strerror(-rc), NULL, NULL);
		r->n_failed++;
		return;
	}
	if (le->delete_marker)
		return; /* nothing stored: not a removal to report */
	if (!r->dry_run)
		log_info("removed %s/%s: %s", b, name, what);
	cleanup_report(r, name, r->dry_run ? "would remove" : "removed", what,
		       NULL, NULL);
	r->n_removed++;
	r->bytes_removed += le->size;
}

/* Every staged copy of the storage bucket, a listing page at a time (its
 * prefix only: nothing else of that bucket), then every version of them a
 * versioned bucket keeps (none listed on a store without versions). 0 or
 * -errno. */
static int cleanup_staged_all(struct cleanup_run *r)
{
	struct s3_list_result v = {0};
	char *token = NULL;
	size_t i, j, k, failed;
	int rc;

	do {
		struct s3_list_result pg = {0};

		rc = s3_list_page(r->t->s3, r->t->cfg.storage_bucket,
				  RECEPTION_RENAME_STAGING "/", NULL, token,
				  CLEANUP_PAGE, &pg);
		free(token);
		token = NULL;
		for (i = 0; !rc && i < pg.n_entries; i++)
			cleanup_staged(r, &pg.entries[i], 0);
		if (!rc && pg.truncated && pg.next_token) {
			token = strdup(pg.next_token);
			if (!token)
				rc = -ENOMEM;
		}
		s3xml_list_free(&pg);
	} while (!rc && token);
	free(token);
	if (rc)
		return rc;
	rc = s3_list_versions_all(r->t->s3, r->t->cfg.storage_bucket,
				  RECEPTION_RENAME_STAGING "/", S3_VERSIONS_MAX,
				  &v);
	if (rc == -ENOTSUP)
		rc = 0;	     /* a store without versions: nothing more */
	if (rc == -EACCES) { /* not allowed to list versions: said */
		fprintf(
		    stderr,
		    "custodyfs cleanup: %s/" RECEPTION_RENAME_STAGING
		    "/: versions cannot be listed (no "
		    "s3:ListBucketVersions?): noncurrent versions of staged "
		    "copies not looked at\n",
		    r->t->cfg.storage_bucket);
		rc = 0;
	}
	/* A key with a current object was the first listing's (in a real
	 * run its versions went with it): not seen twice (review P4). The
	 * listing is by key, its versions side by side. */
	for (i = 0; !rc && i < v.n_entries; i = j) {
		int current = 0;

		for (j = i; j < v.n_entries &&
			    !strcmp(v.entries[j].key, v.entries[i].key);
		     j++)
			current |= v.entries[j].is_latest &&
				   !v.entries[j].delete_marker;
		if (current)
			continue;
		/* the stored versions, then the markers (see
		 * s3_delete_every_version) */
		failed = r->n_failed;
		for (k = i; k < j; k++)
			if (!v.entries[k].delete_marker)
				cleanup_staged(r, &v.entries[k], 1);
		for (k = i; k < j && r->n_failed == failed; k++)
			if (v.entries[k].delete_marker)
				cleanup_staged(r, &v.entries[k], 1);
	}
	s3xml_list_free(&v);
	return rc;
}

/* Does the store honour If-Match on DELETE? A probe object under a
 * reserved key of the storage bucket (no project prefix starts with a
 * dot, and nothing scans that bucket for uploads to log: a probe left
 * behind is never logged as a reception), a DELETE
 * If-Match a wrong ETag (honoured: 412 and the object still there), then
 * the probe goes. 1 honoured, 0 ignored, -errno cannot tell. */
static int cleanup_probe(struct tool_env *t)
{
	static const char body[] = "custodyfs If-Match probe\n";
	const char *b = t->cfg.storage_bucket;
	char host[256] = "", key[512];
	struct s3_object_info info;
	int rc, honoured = 0, drc;

	if (gethostname(host, sizeof(host) - 1) || !host[0])
		snprintf(host, sizeof(host), "host");
	host[sizeof(host) - 1] = 0;
	snprintf(key, sizeof(key), ".custodyfs-probe/%s.%ld", host,
		 (long)getpid());
	rc = s3_put_buf(t->s3, b, key, body, sizeof(body) - 1, NULL, 0, NULL);
	if (rc)
		return rc;
	rc = s3_delete_if(t->s3, b, key, "00000000000000000000000000000000");
	if (rc == -EEXIST) {
		rc = s3_head(t->s3, b, key, &info);
		if (!rc) {
			s3_object_info_free(&info);
			honoured = 1;
		} else if (rc == -ENOENT) {
			rc = 0;
		}
	}
	drc = s3_delete(t->s3, b, key);
	if (drc)
		log_error("%s/%s: the If-Match probe could not be deleted "
			  "(%s)",
			  b, key, strerror(-drc));
	if (rc)
		return rc;
	return honoured;
}

/* One listing page: its live rows and their storage rows in two queries,
 * then each object. 0 or -errno (the page could not be checked). */
static int cleanup_page(struct cleanup_run *r, const struct s3_list_result *pg)
{
	struct db_received *rows = NULL;
	struct db_stored_row *st = NULL;
	size_t n_rows = 0, n_st = 0, nk = 0, i;
	const char **keys;
	int rc;

	keys = calloc(pg->n_entries + 1, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	for (i = 0; i < pg->n_entries; i++) {
		const char *k = pg->entries[i].key;

		if (*k && k[strlen(k) - 1] != '/')
			keys[nk++] = k;
	}
	rc = db_recon_live_keys(r->t->db, r->t->cfg.reception_bucket, keys, nk,
				&rows, &n_rows);
	if (rc)
		goto out;
	if (n_rows)
		qsort(rows, n_rows, sizeof(*rows), cleanup_row_cmp);
	rc = db_recon_stored_for(r->t->db, r->t->cfg.reception_bucket, rows,
				 n_rows, &st, &n_st);
	if (rc)
		goto out;
	for (i = 0; i < pg->n_entries; i++) {
		const struct s3_list_entry *le = &pg->entries[i];
		size_t kl = strlen(le->key);

		if (!kl || le->key[kl - 1] == '/')
			continue; /* a directory marker: not a received file */
		cleanup_one(r, le, rows, n_rows, st, n_st);
	}
out:
	free(keys);
	free(st);
	db_recon_received_free(rows, n_rows);
	return rc;
}

int tool_cleanup(int argc, char **argv)
{
	enum { O_DRY = 256, O_OLDER, O_JSON, O_VERIFY, O_UNSAFE };
	static const struct option lopts[] = {
	    {"dry-run", no_argument, NULL, O_DRY},
	    {"older-than", required_argument, NULL, O_OLDER},
	    {"verify-hashes", no_argument, NULL, O_VERIFY},
	    {"json", no_argument, NULL, O_JSON},
	    {"unsafe-unconditional-delete", no_argument, NULL, O_UNSAFE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct cleanup_run r = {0};
	struct tool_env t;
	char *config = NULL, *token = NULL, err[512];
	const char *fail = NULL;
	int c, rc, env_loaded = 0, started = 0, status = TOOL_USAGE;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (tool_parse_o("cleanup", optarg, &config))
				goto out;
			break;
		case O_DRY:
			r.dry_run = 1;
			break;
		case O_OLDER:
			r.older_than = cleanup_duration(optarg);
			if (r.older_than < 0) {
				fprintf(stderr,
					"custodyfs cleanup: --older-than %s: "
					"N followed by s, m, h, d or w\n",
					optarg);
				goto out;
			}
			break;
		case O_VERIFY:
			r.verify = 1;
			break;
		case O_JSON:
			r.json = 1;
			break;
		case O_UNSAFE:
			r.unsafe = 1;
			break;
		case 'h':
			cleanup_usage(stdout);
			status = TOOL_OK;
			goto out;
		default:
			cleanup_usage(stderr);
			goto out;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "custodyfs cleanup: unexpected argument %s\n",
			argv[optind]);
		cleanup_usage(stderr);
		goto out;
	}
	rc = tool_env_load(&t, "cleanup", config);
	env_loaded = 1;
	if (rc) {
		status = rc;
		goto out;
	}
	status = TOOL_FAILED;
	r.t = &t;
	tool_actor(&t, &r.who);
	if (r.json) {
		printf("{\"objects\": [");
		started = 1;
	}
	/* Nothing is changed unless the store and the database answer. */
	rc = tool_bucket_check(&t, t.cfg.reception_bucket);
	if (!rc)
		rc = tool_bucket_check(&t, t.cfg.storage_bucket);
	if (rc) {
		fprintf(stderr,
			"custodyfs cleanup: the store does not answer (%s): "
			"nothing done\n",
			strerror(-rc));
		fail = "the store does not answer";
		goto summary;
	}
	if (tool_db_open(&t, 2, err, sizeof(err))) {
		fprintf(stderr,
			"custodyfs cleanup: database: %s: nothing done\n", err);
		fail = "the database does not answer";
		goto summary;
	}
	/* --dry-run changes nothing, not even the schema. */
	if (tool_db_schema(&t, "cleanup", !r.dry_run, &fail))
		goto summary;
	/* A store that ignores If-Match on DELETE deletes whatever is
	 * there: refused unless the operator takes that risk. */
	if (!r.dry_run) {
		rc = cleanup_probe(&t);
		if (rc < 0) {
			fprintf(stderr,
				"custodyfs cleanup: probing whether the store "
				"honours If-Match on DELETE failed (%s): "
				"nothing done\n",
				strerror(-rc));
			fail = "the If-Match probe failed";
			goto summary;
		}
		if (!rc && !r.unsafe) {
			fprintf(stderr,
				"custodyfs cleanup: the store ignores If-Match "
				"on DELETE (a DELETE of a probe object with a "
				"wrong ETag deleted it): a DELETE could remove "
				"an upload that lands meanwhile. Refused: "
				"nothing done. --dry-run still works; "
				"--unsafe-unconditional-delete runs anyway "
				"(see --help for the risk)\n");
			fail = "the store ignores If-Match on DELETE: refused "
			       "without --unsafe-unconditional-delete";
			goto summary;
		}
		if (!rc)
			log_warn("the store ignores If-Match on DELETE: "
				 "running with --unsafe-unconditional-delete");
	}
	/* A page at a time: neither the bucket's keys nor the rows are ever
	 * all in memory. */
	do {
		struct s3_list_result pg = {0};

		rc = s3_list_page(t.s3, t.cfg.reception_bucket, NULL, NULL,
				  token, CLEANUP_PAGE, &pg);
		free(token);
		token = NULL;
		if (!rc)
			rc = cleanup_page(&r, &pg);
		if (!rc && pg.truncated && pg.next_token) {
			token = strdup(pg.next_token);
			if (!token)
				rc = -ENOMEM;
		}
		s3xml_list_free(&pg);
	} while (!rc && token);
	free(token);
	if (rc) {
		fprintf(stderr, "custodyfs cleanup: %s: stopped: %s\n",
			t.cfg.reception_bucket, strerror(-rc));
		fail = "stopped: the store or the database failed";
	} else {
		rc = cleanup_staged_all(&r);
		if (rc) {
			fprintf(
			    stderr,
			    "custodyfs cleanup: %s/" RECEPTION_RENAME_STAGING
			    "/: stopped: %s\n",
			    t.cfg.storage_bucket, strerror(-rc));
			fail = "stopped: the store or the database failed";
		}
	}
summary:
	if (r.json) {
		printf("], \"ok\": %s, \"dry_run\": %s, \"error\": ",
		       fail || r.n_failed ? "false" : "true",
		       r.dry_run ? "true" : "false");
		tool_json_str(stdout, fail);
		printf(", \"older_than_s\": %.0f, \"objects_seen\": %zu, "
		       "\"%s\": %zu, \"kept\": %zu, \"failed\": %zu, "
		       "\"bytes_%s\": %llu}\n",
		       r.older_than, r.n_objects,
		       r.dry_run ? "would_remove" : "removed", r.n_removed,
		       r.n_kept, r.n_failed,
		       r.dry_run ? "would_remove" : "removed",
		       (unsigned long long)r.bytes_removed);
		started = 0;
	} else if (!fail || r.n_objects) {
		char b[32];

		tool_bytes(b, sizeof(b), (double)r.bytes_removed);
		printf("%s: %zu objects seen in %s: %zu %s (%s), %zu kept, %zu "
		       "failed\n",
		       r.dry_run ? "dry run" : "cleanup", r.n_objects,
		       t.cfg.reception_bucket, r.n_removed,
		       r.dry_run ? "would be removed" : "removed", b, r.n_kept,
		       r.n_failed);
	}
	status = fail || r.n_failed ? TOOL_FAILED : TOOL_OK;
out:
	if (started)
		printf("]}\n");
	fflush(stdout);
	if (env_loaded)
		tool_env_free(&t);
	free(config);
	return status;
}
