/* promote.c - the promotion protocol; see promote.h and
 * shared/design/promotion.md.
 *
 * One file:
 *   facts    HEAD source; its live reception row gives the hashes (computed
 *            by this system); a row without hashes, or an object without a
 *            row of its ETag, is hashed from its bytes first (ranged GETs
 *            with If-Match: one and the same object)
 *   decide   db_promote_decide: under the key and content locks, the
 *            callback HEADs the destination (and hashes its bytes unless
 *            its ETag is the one recorded with its row: an object
 *            overwritten behind its row is judged by its bytes) and
 *            promote_outcome() decides; a journal entry is
 *            committed ('intent', or 'stored' for the duplicates)
 *   copy     s3_copy_guarded (x-amz-copy-source-if-match), metadata
 *            REPLACE: the source's x-amz-meta-* and Content-Type, plus our
 *            sha256 / xxh128
 *   verify   HEAD destination: size and the copy's ETag (else its bytes
 *            hashed, never metadata)
 *   record   db_promote_record: storage row + 'stored' + the ETag verified
 *   cleanup  under the source key's lock, DELETE source (only while it
 *            is still that upload and no newer one has its row), then
 *            db_promote_done: reception row removed_at + 'done'
 * A failure after 'intent' first tries to settle the entry at once (the
 * destination is either verifiably ours or absent); when even that cannot
 * be told (store down) the entry stays open for recovery: this process's
 * next promotion of the same source resumes it, and once this process is
 * gone promote_recover() in another one does. */
#include "promote.h"
#include "counters.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "hash.h"
#include "log.h"
#include "names.h"
#include "objhash.h"

#define PROMOTE_CHUNK (8u << 20)    /* ranged GET size when hashing */
#define PROMOTE_BUSY_WAIT_MS 120000 /* waiting for another promotion */
#define PROMOTE_META_MAX 64

#include "promote_internal.h"

/* ---- in flight --------------------------------------------------------- */

static int inflight_add(struct promote *p, int64_t id)
{
	struct inflight *f = malloc(sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->id = id;
	pthread_mutex_lock(&p->lock);
	f->next = p->inflight;
	p->inflight = f;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* Claims id if no thread of this process works on it or is deciding
 * (and may have just committed it): 1, else 0. */
static int inflight_claim(struct promote *p, int64_t id)
{
	struct inflight *f;
	int busy = 0, claimed;

	pthread_rwlock_wrlock(&p->decide_lock);
	pthread_mutex_lock(&p->lock);
	for (f = p->inflight; f; f = f->next)
		busy |= f->id == id;
	pthread_mutex_unlock(&p->lock);
	claimed = !busy && !inflight_add(p, id);
	pthread_rwlock_unlock(&p->decide_lock);
	return claimed;
}

static void inflight_del(struct promote *p, int64_t id)
{
	struct inflight **pp, *f;

	pthread_mutex_lock(&p->lock);
	for (pp = &p->inflight; (f = *pp); pp = &f->next) {
		if (f->id == id) {
			*pp = f->next;
			free(f);
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
}

/* The owner id for a new promotion (the session checked: taken again or
 * a new one if it was lost). */
static int promote_owner(struct promote *p, int *id)
{
	return db_owner_check(p->owner, id);
}

/* Is an entry of owner id this process's (the id its owner session holds
 * now, which may have changed since the last promote_owner)? */
static int promote_ours(struct promote *p, int id)
{
	return id && id == db_owner_id(p->owner);
}

/* A step was refused by its fence (-ENOLCK): another process took the
 * entry over and finishes it; nothing more is done here. 0 when the
 * entry is done already, else -EBUSY. */
static int promote_fence_lost(struct promote *p,
			      const struct db_journal_entry *e)
{
	struct db_journal_entry now = {0};

	if (!db_journal_get(p->db, e->id, &now) && !strcmp(now.state, "done")) {
		log_info("promotion: journal entry %lld (%s/%s) was finished "
			 "by owner %d",
			 (long long)e->id, e->dest_bucket, e->dest_key,
			 now.owner);
		return 0;
	}
	log_error("promotion: journal entry %lld (%s/%s -> %s/%s) was taken "
		  "over by another process (owner %d) while this one worked "
		  "on it: stopped here, nothing deleted",
		  (long long)e->id, e->source_bucket, e->source_key,
		  e->dest_bucket, e->dest_key, now.owner);
	return -EBUSY;
}

/* ---- the store --------------------------------------------------------- */

/* Hashes object (bucket, key) of ETag etag from its bytes, each chunk read
 * with If-Match. -EBUSY when it changed meanwhile, -EIO when its length is
 * not size. */
static int promote_hash_object(struct promote *p, const char *bucket,
			       const char *key, const char *etag, uint64_t size,
			       char *xxh, char *sha)
{
	int rc = objhash_compute(p->s3, bucket, key, etag, size, PROMOTE_CHUNK,
				 NULL, NULL, xxh, sha);

	return rc == -ESTALE ? -EBUSY : rc; /* another object now */
}

/* The destination's metadata: the source's x-amz-meta-* except our hash
 * names, then our hashes. Entries borrowed from src; *n set. */
static int promote_meta(const struct s3_object_info *src, const char *sha,
			const char *xxh, struct s3_kv *out, size_t *n)
{
	size_t i, k = 0;

	for (i = 0; i < src->n_meta; i++) {
		if (!strcmp(src->meta[i].name, "sha256") ||
		    !strcmp(src->meta[i].name, "xxh128"))
			continue;
		if (k >= PROMOTE_META_MAX - 2)
			return -E2BIG;
		out[k++] = src->meta[i];
	}
	out[k].name = (char *)"sha256";
	out[k++].value = (char *)sha;
	if (xxh && *xxh) {
		out[k].name = (char *)"xxh128";
		out[k++].value = (char *)xxh;
	}
	*n = k;
	return 0;
}

/* Does (bucket, key) hold the file of size and SHA-256 sha? Its ETag
 * vouches for its bytes only when it is etag (not NULL nor empty: the
 * copy's answer, or the ETag recorded when they were last verified); any
 * other object of that size is hashed from its bytes (its metadata anyone
 * could write). 1, 0 (absent or other bytes), or -errno when it cannot be
 * told. seen (may be NULL) gets the object's LastModified and ETag when
 * it is there (1, or 0 for other bytes). */
static int promote_dest_is(struct promote *p, const char *bucket,
			   const char *key, uint64_t size, const char *sha,
			   const char *etag, struct promote_result *seen)
{
	char xxh[HASH_XXH128_HEX], got[HASH_SHA256_HEX];
	struct s3_object_info info;
	int rc;

	rc = s3_head(p->s3, bucket, key, &info);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	if (info.size != size) {
		rc = 0;
	} else if (etag && *etag && !strcmp(info.etag, etag)) {
		rc = 1;
	} else {
		rc = promote_hash_object(p, bucket, key, info.etag, info.size,
					 xxh, got);
		if (!rc)
			rc = !strcmp(got, sha);
	}
	if (rc >= 0 && seen) {
		seen->dest_mtime = info.mtime;
		snprintf(seen->dest_etag, sizeof(seen->dest_etag), "%s",
			 info.etag);
	}
	s3_object_info_free(&info);
	return rc;
}

/* The copy of a journal entry's source to its destination. */
static int promote_copy(struct promote *p, const struct db_journal_entry *e,
			const struct s3_object_info *src, char *etag_out)
{
	struct s3_kv meta[PROMOTE_META_MAX];
	struct s3_copy_req r = {0};
	size_t n = 0;
	int rc;

	rc = promote_meta(src, e->sha256, e->xxh128, meta, &n);
	if (rc)
		return rc;
	r.src_bucket = e->source_bucket;
	r.src_key = e->source_key;
	r.src_etag = e->source_etag;
	r.dst_bucket = e->dest_bucket;
	r.dst_key = e->dest_key;
	r.content_type = src->content_type[0] ? src->content_type : NULL;
	r.meta = meta;
	r.n_meta = n;
	/* Content-Disposition, -Encoding, -Language, Cache-Control, Expires
	 * as the source has them (SPEC §3: metadata kept; review R3). */
	r.hdrs = src->hdrs;
	r.n_hdrs = src->n_hdrs;
	r.size = src->size;
	r.threshold = p->cfg->copy_threshold;
	r.part_size = p->cfg->part_size;
	r.workers = p->cfg->promote_workers > 0 ? p->cfg->promote_workers : 1;
	return s3_copy_guarded(p->s3, &r, etag_out);
}

/* ---- the steps after the decision ------------------------------------- */

/* The cleanup's DELETE of a promoted source, done under the source key's
 * lock (promote_srcdel_locked). */
struct promote_srcdel {
	struct promote *p;
	const struct db_journal_entry *e;
	const char *result; /* "deleted", "absent" (gone already), "kept" */
	const char *after;  /* deleted: what a HEAD then saw ("absent",
			       "newer": an upload landed after the DELETE) */
	char etag[80];	    /* kept / newer: the object's ETag */
};

/* Under the key lock a mount takes to log an upload of the source key
 * (db_reception_newest_do: no newer live row), the source goes only while
 * it is the promoted upload: HEAD, then promote_delete_received (If-Match;
 * where the store refuses it, HEAD again and a plain DELETE only while the
 * ETag is still the promoted one), then a HEAD to verify. A mount's upload
 * that lands in between (a store ignoring If-Match, s3rver, deletes it)
 * cannot be committed meanwhile: its commit then finds no object and
 * uploads again (reception_commit: -ENODATA). Idempotent (run again on a
 * retry). 0, or the store's -errno. */
static int promote_srcdel_locked(void *arg)
{
	struct promote_srcdel *sd = arg;
	const struct db_journal_entry *e = sd->e;
	struct s3_object_info info;
	int rc, same;

	sd->after = NULL;
	sd->etag[0] = '\0';
	rc = s3_head(sd->p->s3, e->source_bucket, e->source_key, &info);
	if (rc == -ENOENT) {
		sd->result = "absent";
		return 0;
	}
	if (rc)
		return rc;
	same = !strcmp(info.etag, e->source_etag);
	snprintf(sd->etag, sizeof(sd->etag), "%s", info.etag);
	s3_object_info_free(&info);
	if (!same) {
		sd->result = "kept";
		return 0;
	}
	rc = promote_delete_received(sd->p->s3, e->source_bucket, e->source_key,
				     e->source_etag);
	if (rc == -ENOENT) {
		sd->result = "absent";
		return 0;
	}
	if (rc && rc != -ESTALE)
		return rc;
	sd->result = rc ? "kept" : "deleted"; /* -ESTALE: another upload */
	sd->etag[0] = '\0';
	rc = s3_head(sd->p->s3, e->source_bucket, e->source_key, &info);
	if (rc == 0) {
		if (!strcmp(sd->result, "deleted"))
			sd->after = "newer";
		snprintf(sd->etag, sizeof(sd->etag), "%s", info.etag);
		s3_object_info_free(&info);
	} else if (rc == -ENOENT && !strcmp(sd->result, "deleted")) {
		sd->after = "absent";
	}
	return 0; /* (a HEAD that failed: not verified after) */
}

/* The event line of a source's removal after its promotion. */
static void promote_srcdel_event(const struct promote_srcdel *sd,
				 int64_t newer_row)
{
	const struct db_journal_entry *e = sd->e;
	struct log_ev ev;

	log_ev_begin(&ev, "source_delete_verified");
	log_ev_str(&ev, "bucket", e->source_bucket);
	log_ev_str(&ev, "key", e->source_key);
	log_ev_str(&ev, "etag", e->source_etag);
	log_ev_int(&ev, "journal", (long long)e->id);
	log_ev_str(&ev, "result", sd->result);
	if (sd->after)
		log_ev_str(&ev, "after", sd->after);
	if (sd->etag[0])
		log_ev_str(&ev, "current_etag", sd->etag);
	if (newer_row > 0)
		log_ev_int(&ev, "newer_row", (long long)newer_row);
	log_ev_emit(&ev, LOG_LVL_INFO);
}

/* cleanup: the source goes (under its key lock, only while it is the
 * promoted upload and no newer upload of the key has its row), then its
 * row and the entry. A newer upload stays, with its row live. */
static int promote_cleanup(struct promote *p, const struct db_journal_entry *e)
{
	struct promote_srcdel sd = {.p = p, .e = e};
	int64_t newest = 0, closed = 0;
	int rc;

	rc = db_reception_newest_do(p->db, e->source_bucket, e->source_key,
				    e->reception_id > 0 ? e->reception_id : 0,
				    promote_srcdel_locked, &sd, &newest);
	if (rc == -ESTALE) { /* a newer upload has its row: it stays */
		sd.result = "kept";
		sd.after = NULL;
		sd.etag[0] = '\0';
		rc = 0;
	}
	if (rc) {
		log_error(
		    "promotion: %s/%s is stored as %s/%s but could not be "
		    "removed from reception (%s): journal entry %lld "
		    "stays open",
		    e->source_bucket, e->source_key, e->dest_bucket,
		    e->dest_key, strerror(-rc), (long long)e->id);
		return rc;
	}
	promote_srcdel_event(&sd, newest > e->reception_id ? newest : 0);
	if (!strcmp(sd.result, "kept") ||
	    (sd.after && !strcmp(sd.after, "newer")))
		log_warn("promotion: %s/%s was uploaded again after its "
			 "promotion (ETag %s, promoted %s): the new upload "
			 "stays",
			 e->source_bucket, e->source_key,
			 sd.etag[0] ? sd.etag : "?", e->source_etag);
	rc = db_promote_done(p->db, p->owner, e->id, &closed);
	if (rc == -EINPROGRESS) /* idempotent */
		rc = db_promote_done(p->db, p->owner, e->id, &closed);
	if (rc == -ENOLCK)
		rc = promote_fence_lost(p, e);
	if (!rc && closed > 0)
		events_promoted(e->source_bucket, e->source_key, e->size,
				closed, e->dest_bucket, e->dest_key, e->id,
				&e->who);
	return rc;
}

/* record (with etag: the ETag of the object verified to hold the entry's
 * bytes, NULL when not known), then cleanup. */
static int promote_record_cleanup(struct promote *p,
				  const struct db_journal_entry *e,
				  const char *etag)
{
	int rc = db_promote_record(p->db, p->owner, e->id, etag);

	if (rc == -EINPROGRESS) /* idempotent */
		rc = db_promote_record(p->db, p->owner, e->id, etag);
	if (rc == -ENOLCK)
		return promote_fence_lost(p, e);
	if (rc)
		return rc;
	return promote_cleanup(p, e);
}

static int promote_del_dest(void *arg, const char *bucket, const char *key)
{
	struct promote *p = arg;

	return s3_delete(p->s3, bucket, key);
}

/* What one copy left at a key, to remove only while it is there. */
struct promote_del_if {
	struct promote *p;
	const char *etag; /* the copy's answer */
};

/* promote_del_dest, If-Match the copy's ETag: another object there now
 * (written since the copy) is not the copy's, and is left alone. */
static int promote_del_dest_if(void *arg, const char *bucket, const char *key)
{
	struct promote_del_if *d = arg;
	int rc = s3_delete_if(d->p->s3, bucket, key, d->etag);

	return rc == -EEXIST ? 0 : rc;
}

/* The entry was recorded by another worker or mount meanwhile (state
 * 'stored' or 'done'): the file is promoted; a 'stored' one is cleaned up
 * (idempotent). Anything else: fail_rc. */
static int promote_settled_elsewhere(struct promote *p,
				     const struct db_journal_entry *e,
				     const char *state, int fail_rc)
{
	if (!strcmp(state, "done")) {
		log_info("promotion: journal entry %lld (%s/%s) was finished "
			 "elsewhere meanwhile",
			 (long long)e->id, e->dest_bucket, e->dest_key);
		return 0;
	}
	if (!strcmp(state, "stored"))
		return promote_cleanup(p, e);
	return fail_rc;
}

/* After a failure past 'intent' with nothing recorded: settle the entry
 * when the store can tell. The destination is verifiably ours -> record
 * and clean up (returns 0 then); absent -> 'failed' (returns fail_rc);
 * otherwise the entry stays open (returns fail_rc). An entry recorded
 * meanwhile by another worker or mount is never undone: its object stays
 * (returns 0 when it is done). */
static int promote_settle(struct promote *p, const struct db_journal_entry *e,
			  int fail_rc, const char *why, const char *etag)
{
	struct promote_result v = {0};
	char state[16];
	int is, rc;

	if (fail_rc == -EBUSY && strcmp(e->outcome, "adopted")) {
		/* The source changed during the copy: whatever the copy left
		 * at the key (a store that ignored the If-Match) is not the
		 * promoted file. Removed only while the database says the
		 * entry is still 'intent' and no row claims the key (checked
		 * under the entry's row lock and the key lock). */
		struct promote_del_if dif = {p, etag};

		/* etag (not empty): the copy's answer; only that object goes
		 * (one written at the key since is not the copy's). */
		rc = etag && *etag
			 ? db_promote_discard(p->db, p->owner, e->id, why,
					      promote_del_dest_if, &dif, state)
			 : db_promote_discard(p->db, p->owner, e->id, why,
					      promote_del_dest, p, state);
		if (rc == -ENOLCK)
			return promote_fence_lost(p, e) ? fail_rc : 0;
		if (rc == -EALREADY)
			return promote_settled_elsewhere(p, e, state, fail_rc);
		if (rc == -EEXIST)
			log_error(
			    "promotion: %s/%s is claimed by a storage row: "
			    "not removed; journal entry %lld failed",
			    e->dest_bucket, e->dest_key, (long long)e->id);
		else if (rc)
			log_error("promotion: %s/%s: the copy of a changed "
				  "source could not be removed (%s): journal "
				  "entry %lld left to recovery",
				  e->dest_bucket, e->dest_key, strerror(-rc),
				  (long long)e->id);
		return fail_rc;
	}
	is = promote_dest_is(p, e->dest_bucket, e->dest_key, e->size, e->sha256,
			     etag, &v);
	if (is == 1 && strcmp(e->outcome, "adopted")) {
		log_info("promotion: %s/%s: the copy answered %s but the "
			 "destination is ours: recorded",
			 e->dest_bucket, e->dest_key, strerror(-fail_rc));
		return promote_record_cleanup(p, e, v.dest_etag);
	}
	if (is == 0) {
		rc = db_promote_fail(p->db, p->owner, e->id, why);
		if (rc == -ENOLCK)
			return promote_fence_lost(p, e) ? fail_rc : 0;
		if (rc == -EALREADY)
			log_error("promotion: journal entry %lld was recorded "
				  "meanwhile but %s/%s is not there",
				  (long long)e->id, e->dest_bucket,
				  e->dest_key);
		else if (rc && rc != -ENOENT)
			log_error("promotion: journal entry %lld could not be "
				  "marked failed: left to recovery",
				  (long long)e->id);
		return fail_rc;
	}
	log_error("promotion: %s/%s -> %s/%s: %s, and the destination cannot "
		  "be checked: journal entry %lld left to recovery",
		  e->source_bucket, e->source_key, e->dest_bucket, e->dest_key,
		  why, (long long)e->id);
	return fail_rc;
}

/* copy (unless adopted), verify, record, cleanup of an 'intent' entry.
 * The verification takes the copy's answer: the destination is ours when
 * its ETag is the one the copy answered, else only when its bytes hash to
 * the entry's (never by size and metadata, which anyone can write), and a
 * single-part copy of a single-part source must answer the source's ETag
 * (the MD5 of the same bytes). adopted: vouch is the ETag whose bytes the
 * decision hashed (NULL: hashed again). The storage row is recorded with
 * the ETag the verification saw; seen (may be NULL) gets it and the
 * stored object's LastModified. */
static int promote_store(struct promote *p, const struct db_journal_entry *e,
			 const struct s3_object_info *src, const char *vouch,
			 struct promote_result *seen)
{
	struct promote_result v = {0};
	char etag[80] = "", copied[80];
	int rc = 0, is;

	if (!strcmp(e->outcome, "adopted")) {
		snprintf(etag, sizeof(etag), "%s", vouch ? vouch : "");
	} else {
		rc = promote_copy(p, e, src, etag);
		if (rc == -EEXIST) /* 412 or a changed ETag */
			return promote_settle(p, e, -EBUSY,
					      "the source changed during the "
					      "copy",
					      NULL);
		if (rc)
			return promote_settle(p, e, rc, "the copy failed",
					      NULL);
		if (*etag && !strchr(etag, '-') && !strchr(src->etag, '-') &&
		    strcmp(etag, src->etag)) {
			log_error(
			    "promotion: %s/%s: the copy answered ETag %s, "
			    "the source's is %s: not the same bytes",
			    e->dest_bucket, e->dest_key, etag, src->etag);
			return promote_settle(p, e, -EBUSY,
					      "the copy's ETag is not the "
					      "source's",
					      NULL);
		}
	}
	/* The copy's ETag vouches for its bytes only as the MD5 of the
	 * bytes the source's row describes: a single-part ETag equal to the
	 * source's. A multipart source's ETag is of its parts: another
	 * upload put there during the copy and the promoted one put back
	 * (the same parts) show that ETag before and after it (review F3):
	 * the destination is hashed then. */
	memcpy(copied, etag, sizeof(copied));
	if (strcmp(e->outcome, "adopted") && !s3_etag_vouches(etag, src->etag))
		etag[0] = '\0';
	is = promote_dest_is(p, e->dest_bucket, e->dest_key, e->size, e->sha256,
			     etag, &v);
	if (is == 1 && seen) {
		seen->dest_mtime = v.dest_mtime;
		memcpy(seen->dest_etag, v.dest_etag, sizeof(seen->dest_etag));
	}
	if (is < 0)
		return promote_settle(p, e, is, "the verification failed",
				      etag);
	if (is == 0) {
		log_error("promotion: %s/%s does not verify (size, or bytes "
			  "of another ETag) after the copy",
			  e->dest_bucket, e->dest_key);
		/* What this copy put there is not the promoted upload: the
		 * source changed during the copy (review H1). Removed as
		 * for any such copy; an adopted object was not ours. */
		if (strcmp(e->outcome, "adopted") && copied[0] &&
		    !strcmp(v.dest_etag, copied))
			return promote_settle(p, e, -EBUSY,
					      "the copy is not the promoted "
					      "upload (the source changed "
					      "during the copy)",
					      copied);
		return promote_settle(p, e, -EIO, "verification failed", etag);
	}
	return promote_record_cleanup(p, e, v.dest_etag);
}

/* Finishes an open entry (recovery, or this process resuming its own). */
static int promote_resume(struct promote *p, const struct db_journal_entry *e)
{
	struct promote_result v = {0};
	struct s3_object_info src;
	int rc, is;

	if (!strcmp(e->state, "stored"))
		return promote_cleanup(p, e);
	if (strcmp(e->state, "intent"))
		return 0;
	if (!strcmp(e->outcome, "adopted")) {
		char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX];
		struct s3_object_info d;

		rc = s3_head(p->s3, e->dest_bucket, e->dest_key, &d);
		if (rc == 0) {
			rc = promote_hash_object(p, e->dest_bucket, e->dest_key,
						 d.etag, d.size, xxh, sha);
			snprintf(v.dest_etag, sizeof(v.dest_etag), "%s",
				 d.etag);
			s3_object_info_free(&d);
			if (!rc && !strcmp(sha, e->sha256))
				return promote_record_cleanup(p, e,
							      v.dest_etag);
		}
		if (rc && rc != -ENOENT)
			return rc;
		return promote_settle(
		    p, e, -EIO, "the adopted object changed or vanished", NULL);
	}
	is = promote_dest_is(p, e->dest_bucket, e->dest_key, e->size, e->sha256,
			     NULL, &v);
	if (is < 0)
		return is;
	if (is == 1)
		return promote_record_cleanup(p, e, v.dest_etag);
	rc = s3_head(p->s3, e->source_bucket, e->source_key, &src);
	if (rc == 0 && strcmp(src.etag, e->source_etag))
		rc = -ENOENT; /* another upload now: not the promoted one */
	if (rc == 0) {
		rc = promote_store(p, e, &src, NULL, NULL);
		s3_object_info_free(&src);
		return rc;
	}
	if (rc != -ENOENT)
		return rc;
	log_error("promotion: journal entry %lld (%s/%s -> %s/%s): neither "
		  "the source nor the destination is there: marked failed",
		  (long long)e->id, e->source_bucket, e->source_key,
		  e->dest_bucket, e->dest_key);
	rc = db_promote_fail(p->db, p->owner, e->id,
			     "source and destination both gone");
	if (rc == -ENOLCK)
		return promote_fence_lost(p, e);
	return rc ? rc : -EIO;
}

/* ---- the decision ------------------------------------------------------ */

struct promote_decide {
	struct promote *p;
	const char *dest_bucket;
	const char *dest_key;
	const char *sha256;
	uint64_t size;
	/* the destination as last seen (idempotent across retries) */
	int looked;
	int present;
	char etag[80];
	uint64_t dsize;
	time_t mtime; /* its LastModified */
	int hashed;   /* the bytes of etag hashed: same_bytes valid */
	int same_bytes;
};

static int promote_decide_cb(void *arg, const struct db_promo_seen *seen,
			     enum db_outcome *outcome, char *dest_etag)
{
	struct promote_decide *a = arg;
	struct s3_object_info info;
	int rc, same, row_same, vouched, moot;

	/* Under the key lock: what is at the key now. */
	rc = s3_head(a->p->s3, a->dest_bucket, a->dest_key, &info);
	if (rc && rc != -ENOENT)
		return rc;
	a->present = !rc;
	if (a->present) {
		if (strcmp(a->etag, info.etag) || a->dsize != info.size)
			a->hashed = a->same_bytes = 0;
		snprintf(a->etag, sizeof(a->etag), "%s", info.etag);
		a->dsize = info.size;
		a->mtime = info.mtime;
		s3_object_info_free(&info);
	}
	/* The row's sha256 tells what the object holds only while it is the
	 * object its promotion verified (the ETag recorded with it): one
	 * overwritten behind the row (same size, our hashes forged in its
	 * metadata), a row without a recorded ETag or without a hash (seed),
	 * and an object without a row are judged by their bytes, never by
	 * metadata. A row of other content is a conflict whatever is there. */
	vouched = a->present && seen->has_row && !seen->row_nohash &&
		  seen->row_etag[0] && !strcmp(seen->row_etag, a->etag) &&
		  a->dsize == a->size;
	moot = seen->has_row && !seen->row_nohash && !seen->row_same;
	if (a->present && !a->hashed && !vouched && !moot) {
		char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX];

		if (a->dsize != a->size) {
			a->same_bytes = 0;
		} else {
			rc = promote_hash_object(a->p, a->dest_bucket,
						 a->dest_key, a->etag, a->dsize,
						 xxh, sha);
			if (rc)
				return rc;
			a->same_bytes = !strcmp(sha, a->sha256);
		}
		a->hashed = 1;
	}
	same = a->present && (vouched || (a->hashed && a->same_bytes));
	/* A seed row has no hash: it is this file when the object it
	 * claims holds these bytes (hashed above); else, as before, a
	 * conflict. */
	row_same =
	    seen->row_same || (seen->row_nohash && !seen->row_dup_content &&
			       a->present && a->hashed && a->same_bytes);
	*outcome =
	    promote_outcome(seen->has_row, row_same, seen->row_dup_content,
			    a->present, same, seen->has_content);
	if (*outcome == DB_OUT_DUPLICATE_CONTENT) {
		/* Only a duplicate of an object that is there: else the
		 * source would be deleted with its content nowhere. */
		const char *of = seen->row_dup_content ? seen->row_dup_of
						       : seen->content_key;

		rc = promote_dest_is(a->p, a->dest_bucket, of, a->size,
				     a->sha256, seen->target_etag, NULL);
		if (rc < 0)
			return rc;
		if (!rc) {
			log_warn("promotion: %s/%s: the stored object of the "
				 "same content %s is missing or changed: "
				 "%s/%s is stored itself",
				 a->dest_bucket, a->dest_key, of,
				 a->dest_bucket, a->dest_key);
			if (!a->present)
				*outcome = DB_OUT_COPIED;
			else if (a->hashed && a->same_bytes)
				*outcome = DB_OUT_ADOPTED;
			else
				*outcome = DB_OUT_CONFLICT;
		}
	}
	/* a duplicate: the object just verified (vouched for or hashed) */
	snprintf(dest_etag, 80, "%s",
		 *outcome == DB_OUT_DUPLICATE ? a->etag : "");
	return 0;
}

/* The source's facts: HEAD, and the hashes of its live reception row (or
 * computed from its bytes, and logged when it has no row of its upload). */
static int promote_source(struct promote *p, const char *key,
			  struct s3_object_info *src,
			  struct db_reception_row *row)
{
	const char *bucket = p->cfg->reception_bucket;
	char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX];
	int rc, has_row, rowed;

	rc = s3_head(p->s3, bucket, key, src);
	if (rc)
		return rc;
	rc = db_reception_row_get(p->db, bucket, key, row);
	if (rc && rc != -ENOENT)
		goto fail;
	has_row = !rc;
	rowed = has_row && (!row->etag[0] || !strcmp(row->etag, src->etag)) &&
		(row->size < 0 || (uint64_t)row->size == src->size);
	if (rowed && row->sha256[0])
		return 0;
	rc =
	    promote_hash_object(p, bucket, key, src->etag, src->size, xxh, sha);
	if (rc)
		goto fail;
	if (!rowed) {
		/* An upload by another route not logged yet: logged now, as
		 * the reception's scan would. */
		struct reception_new rn = {0};
		struct db_record_guard g = {
		    .expect_live = has_row ? row->id : 0, .based_ms_ago = -1};
		int64_t id = 0;
		int ins = 0;

		rn.source_bucket = bucket;
		rn.object_key = key;
		rn.file_name = names_basename(key);
		rn.size = src->size;
		rn.xxh128 = xxh;
		rn.sha256 = sha;
		rn.etag = src->etag;
		rn.origin = "foreign";
		rc = db_reception_record_guarded(
		    p->db, &rn, "replaced by a new upload", &g, &id, &ins);
		if (rc == -ESTALE)
			rc = -EBUSY; /* logged by someone meanwhile: again */
		if (rc)
			goto fail;
		/* its line, as the scan would write it (overwritten: it
		 * closed the key's live row) */
		if (ins) {
			/* a reception row this process wrote, as the scan's */
			ctr_add(CTR_RECEIVED, 1);
			ctr_add(CTR_BYTES_RECEIVED, src->size);
			events_reception(has_row ? "overwritten" : "received",
					 NULL, 0, bucket, key,
					 (long long)src->size, sha, id,
					 "foreign", NULL, NULL);
		}
		row->id = id;
		row->size = (int64_t)src->size;
		snprintf(row->etag, sizeof(row->etag), "%s", src->etag);
	}
	/* Hashes this system computed now, from the bytes (the row keeps
	 * its NULLs: audit rows are never rewritten). */
	memcpy(row->sha256, sha, sizeof(row->sha256));
	memcpy(row->xxh128, xxh, sizeof(row->xxh128));
	return 0;
fail:
	s3_object_info_free(src);
	return rc;
}

static void promote_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static void promote_resumed_event(struct promote *p, int rc,
				  const struct db_journal_entry *e);

/* The entry blocking decision pr: when it is this process's and no thread
 * works on it, or its owner is gone (taken over), it is finished here
 * (*e: as it ends). 1 when it was, 0 when it is another's to wait for, or
 * the resume's -errno. */
static int promote_blocker(struct promote *p, const struct db_promo *pr,
			   struct db_journal_entry *e)
{
	int64_t id;
	int rc;

	if (db_journal_blocker(p->db, pr, e))
		return 0;
	if (!promote_ours(p, e->owner)) {
		rc = db_journal_takeover(p->owner, e->id, e->owner, e);
		if (rc)
			return 0; /* it lives, or it changed: wait, see again */
		log_warn("promotion: journal entry %lld (%s/%s -> %s/%s) of "
			 "a process that is gone: finished here",
			 (long long)e->id, e->source_bucket, e->source_key,
			 e->dest_bucket, e->dest_key);
	}
	id = e->id;
	if (!inflight_claim(p, id))
		return 0; /* another thread of this process works on it */
	/* read again once claimed: it may have been finished since */
	rc = db_journal_get(p->db, id, e);
	if (!rc) {
		int other = strcmp(e->source_key, pr->source_key) ||
			    strcmp(e->source_bucket, pr->source_bucket);

		rc = promote_resume(p, e);
		/* another file's promotion has its line here (this file's:
		 * its caller writes it) */
		if (other)
			promote_resumed_event(p, rc, e);
	}
	if (!rc && db_journal_get(p->db, id, e))
		e->state[0] = '\0';
	inflight_del(p, id);
	return rc ? rc : 1;
}

/* An open entry of this process's for key that no thread works on (left
 * by a failure that could not be settled): finished now. 1 when it was
 * resumed to its end, 0 when there was none to resume, or -errno. */
static int promote_resume_own(struct promote *p, const char *key,
			      struct db_journal_entry *e)
{
	int rc;

	rc =
	    db_journal_open_for_source(p->db, p->cfg->reception_bucket, key, e);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	if (!promote_ours(p, e->owner) || !inflight_claim(p, e->id))
		return 0;
	log_info("promotion: resuming journal entry %lld (%s/%s -> %s/%s)",
		 (long long)e->id, e->source_bucket, e->source_key,
		 e->dest_bucket, e->dest_key);
	rc = promote_resume(p, e);
	inflight_del(p, e->id);
	return rc ? rc : 1;
}

/* The outcome a journal entry records ("copied", ...): a promotion
 * resumed from its entry ends with it. */
static enum db_outcome promote_outcome_of(const char *name)
{
	enum db_outcome o;

	for (o = DB_OUT_COPIED; o < DB_OUT_CONFLICT; o++)
		if (!strcmp(db_outcome_name(o), name))
			return o;
	return DB_OUT_COPIED;
}

/* The counters (counters.h) of one promotion that ended with outcome. */
static void promote_count(enum db_outcome o, uint64_t size)
{
	static const enum ctr by_outcome[] = {
	    [DB_OUT_COPIED] = CTR_COPIED,
	    [DB_OUT_RESTORED] = CTR_RESTORED,
	    [DB_OUT_ADOPTED] = CTR_ADOPTED,
	    [DB_OUT_DUPLICATE] = CTR_DUP_PATH,
	    [DB_OUT_DUPLICATE_CONTENT] = CTR_DUP_CONTENT,
	    [DB_OUT_CONFLICT] = CTR_CONFLICTS,
	};

	if ((unsigned)o >= sizeof(by_outcome) / sizeof(by_outcome[0]))
		return;
	ctr_add(by_outcome[o], 1);
	if (o == DB_OUT_COPIED || o == DB_OUT_RESTORED || o == DB_OUT_ADOPTED)
		ctr_add(CTR_BYTES_STORED, size);
}

/* The one event line (log.h) of a promotion: its outcome, "conflict" for
 * EEXIST, else an error line. src may be NULL (the source was not read);
 * sha256 "" or NULL when unknown. */
static void promote_event(struct promote *p, int rc,
			  const struct promote_result *res, const char *src_key,
			  const char *dest, const struct s3_object_info *src,
			  const char *sha256, const struct actor *who,
			  int recovered)
{
	struct log_ev ev;

	if (rc == -EEXIST)
		log_ev_begin(&ev, "conflict");
	else if (rc)
		log_ev_begin(&ev, "error");
	else
		log_ev_begin(&ev, db_outcome_name(res->outcome));
	if (rc && rc != -EEXIST) {
		log_ev_str(&ev, "op", "promote");
		log_ev_err(&ev, rc);
	}
	log_ev_str(&ev, "bucket", p->cfg->storage_bucket);
	log_ev_str(&ev, "key", dest);
	log_ev_str(&ev, "source_bucket", p->cfg->reception_bucket);
	log_ev_str(&ev, "source_key", src_key);
	if (src)
		log_ev_int(&ev, "size", (long long)src->size);
	if (sha256 && *sha256)
		log_ev_str(&ev, "sha256", sha256);
	if (!rc && res->dup_of[0])
		log_ev_str(&ev, "duplicate_of", res->dup_of);
	if (res && res->journal_id > 0)
		log_ev_int(&ev, "journal", (long long)res->journal_id);
	if (recovered)
		log_ev_int(&ev, "recovered", 1);
	if (who)
		log_ev_who(&ev, (unsigned long)who->uid, who->user, who->host);
	log_ev_duration(&ev);
	log_ev_emit(&ev, rc && rc != -EEXIST ? LOG_LVL_ERROR : LOG_LVL_INFO);
}

/* The event line of an entry finished by resuming it (recovery, or a
 * promotion that met it): its outcome, recovered=1, who asked for it. */
static void promote_resumed_event(struct promote *p, int rc,
				  const struct db_journal_entry *e)
{
	struct promote_result r = {.journal_id = e->id};
	struct s3_object_info si = {.size = (uint64_t)e->size};

	r.outcome = promote_outcome_of(e->outcome);
	promote_event(p, rc, &r, e->source_key, e->dest_key, &si, e->sha256,
		      &e->who, 1);
}

int promote_file(struct promote *p, const char *src_key, const char *prefix,
		 const char *relpath, const struct actor *who,
		 struct promote_result *res)
{
	struct promote_result local;
	struct s3_object_info src = {0};
	struct db_reception_row row;
	struct db_journal_entry e;
	struct promote_decide dc = {0};
	struct db_promo pr = {0};
	char name[1024], *dest = NULL;
	long waited = 0, step = 50;
	int rc, counted = 0, have_src = 0;
	uint64_t t0 = ctr_now_ns();

	if (!res)
		res = &local;
	memset(res, 0, sizeof(*res));
	if (!p || !src_key || !*src_key || !prefix || !*prefix || !relpath ||
	    !*relpath || strchr(prefix, '/'))
		return -EINVAL;
	rc = names_check_component(prefix);
	if (!rc)
		rc = names_check_relpath(relpath, strlen(prefix) + 1);
	if (rc)
		return rc;
	if (asprintf(&dest, "%s/%s", prefix, relpath) < 0)
		return -ENOMEM;
	rc = db_project_name(p->db, prefix, name, sizeof(name));
	if (rc)
		goto out;

	/* A promotion of this source that this process left open. */
	rc = promote_resume_own(p, src_key, &e);
	if (rc < 0)
		goto out;
	if (rc == 1) {
		rc = strcmp(e.dest_key, dest) ? -ENOENT : 0;
		res->journal_id = e.id;
		res->outcome = promote_outcome_of(e.outcome);
		goto out;
	}

	rc = promote_source(p, src_key, &src, &row);
	if (rc)
		goto out;
	have_src = 1;
	pr.reception_id = row.id;
	pr.source_bucket = p->cfg->reception_bucket;
	pr.source_key = src_key;
	pr.source_etag = src.etag;
	pr.dest_bucket = p->cfg->storage_bucket;
	pr.dest_key = dest;
	pr.project_prefix = prefix;
	pr.project_name = name;
	pr.size = src.size;
	pr.sha256 = row.sha256;
	pr.xxh128 = row.xxh128[0] ? row.xxh128 : NULL;
	pr.dedup_content = p->cfg->dedup == CFG_DEDUP_CONTENT;
	rc = promote_owner(p, &pr.owner);
	if (rc)
		goto out;
	pr.who = who;
	dc.p = p;
	dc.dest_bucket = pr.dest_bucket;
	dc.dest_key = dest;
	dc.sha256 = row.sha256;
	dc.size = src.size;
	for (;;) {
		/* The entry is listed in inflight before another thread can
		 * claim it (inflight_claim waits for the write lock). */
		pthread_rwlock_rdlock(&p->decide_lock);
		rc = db_promote_decide(p->db, &pr, promote_decide_cb, &dc,
				       &res->outcome, &res->journal_id,
				       res->dup_of);
		if (rc == -EINPROGRESS) {
			/* The decision's COMMIT went unanswered: its entry
			 * tells. */
			if (db_journal_open_for_source(p->db, pr.source_bucket,
						       src_key, &e) == 0 &&
			    !strcmp(e.dest_key, dest) && e.owner == pr.owner) {
				res->journal_id = e.id;
				rc = 0;
			} else {
				rc = -EIO;
			}
		}
		if (!rc)
			rc = inflight_add(p, res->journal_id);
		pthread_rwlock_unlock(&p->decide_lock);
		if (rc != -EBUSY || waited >= PROMOTE_BUSY_WAIT_MS)
			break;
		/* Another promotion holds the key, the source or the
		 * content. One this process left open, or one of a process
		 * that is gone (its owner lock is free: taken over here), is
		 * finished now; a living one's is waited for; then decide
		 * again. */
		rc = promote_blocker(p, &pr, &e);
		if (rc < 0)
			break;
		if (rc == 1 && !strcmp(e.source_key, src_key) &&
		    !strcmp(e.source_bucket, pr.source_bucket) &&
		    !strcmp(e.state, "done")) {
			/* it was this very file's promotion */
			rc = strcmp(e.dest_key, dest) ? -ENOENT : 0;
			res->journal_id = e.id;
			res->outcome = promote_outcome_of(e.outcome);
			goto out;
		}
		if (rc == 1) {
			rc = -EBUSY;
			waited += 50; /* bounded even if it keeps coming back */
			continue;
		}
		rc = -EBUSY;
		promote_sleep_ms(step);
		waited += step;
		if (step < 1000)
			step *= 2;
	}
	if (rc == -ESTALE)
		rc = -EBUSY; /* its reception row was replaced meanwhile */
	if (rc == -EEXIST) {
		ctr_add(CTR_CONFLICTS, 1);
		counted = 1;
	}
	if (rc)
		goto out; /* (an inflight_add failure leaves the entry open:
			     resumed by the next attempt) */
	rc = db_journal_get(p->db, res->journal_id, &e);
	if (rc) {
		inflight_del(p, res->journal_id);
		goto out;
	}
	if (!strcmp(e.state, "stored")) {
		rc = promote_cleanup(p, &e); /* the duplicates */
		if (res->outcome == DB_OUT_DUPLICATE && dc.present) {
			/* the decision's HEAD */
			res->dest_mtime = dc.mtime;
			memcpy(res->dest_etag, dc.etag, sizeof(res->dest_etag));
		}
	} else {
		rc = promote_store(p, &e, &src,
				   dc.hashed && dc.same_bytes ? dc.etag : NULL,
				   res);
	}
	if (rc)
		res->dest_mtime = 0;
	else
		res->dest_size = src.size;
	inflight_del(p, e.id);
	if (!rc) {
		promote_count(res->outcome, src.size);
		counted = 1;
	}
out:
	if (rc && !counted)
		ctr_add(CTR_ERR_PROMOTION, 1);
	hist_observe_since(HIST_PROMOTION, t0, rc && !counted);
	promote_event(p, rc == -EINPROGRESS ? -EIO : rc, res, src_key, dest,
		      have_src ? &src : NULL, have_src ? row.sha256 : NULL, who,
		      0);
	s3_object_info_free(&src);
	free(dest);
	/* A COMMIT whose outcome stayed unknown after the retry: the entry
	 * is left to recovery; never rename's errno (EINPROGRESS). */
	return rc == -EINPROGRESS ? -EIO : rc;
}

/* ---- lifecycle and recovery ------------------------------------------- */

struct promote *promote_new(const struct cfg *cfg, struct s3_client *s3,
			    struct db *db, int *err)
{
	struct promote *p = calloc(1, sizeof(*p));
	int rc, id;

	if (!p) {
		*err = -ENOMEM;
		return NULL;
	}
	p->cfg = cfg;
	p->s3 = s3;
	p->db = db;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->stop_cond, NULL);
	pthread_rwlock_init(&p->decide_lock, NULL);
	rc = db_owner_take(db, &p->owner, &id);
	if (rc) {
		pthread_rwlock_destroy(&p->decide_lock);
		pthread_cond_destroy(&p->stop_cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		*err = rc;
		return NULL;
	}
	*err = 0;
	return p;
}

void promote_free(struct promote *p)
{
	struct inflight *f;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->stop_cond);
	pthread_mutex_unlock(&p->lock);
	if (p->recovering) /* (set before this thread could call free) */
		pthread_join(p->recovery, NULL);
	db_owner_release(p->owner);
	while ((f = p->inflight)) {
		p->inflight = f->next;
		free(f);
	}
	pthread_rwlock_destroy(&p->decide_lock);
	pthread_cond_destroy(&p->stop_cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

struct promote_sweep {
	struct promote *p;
	int resumed; /* entries worked on (not skipped) */
};

static int promote_recover_one(void *arg, const struct db_journal_entry *e)
{
	struct promote_sweep *sw = arg;
	struct promote *p = sw->p;
	struct db_journal_entry now;
	int rc, stop;

	pthread_mutex_lock(&p->lock);
	stop = p->stopping;
	pthread_mutex_unlock(&p->lock);
	if (stop)
		return -ECANCELED; /* left open: taken over again later */
	/* A rename that met this entry may have claimed it first (it
	 * finishes it itself); else it waits for this claim. */
	if (!inflight_claim(p, e->id))
		return 0;
	rc = db_journal_get(p->db, e->id, &now);
	if (rc || !promote_ours(p, now.owner) ||
	    (strcmp(now.state, "intent") && strcmp(now.state, "stored"))) {
		inflight_del(p, e->id); /* finished or taken meanwhile */
		return rc;
	}
	sw->resumed++;
	log_warn("promotion: recovering journal entry %lld (%s, %s/%s -> "
		 "%s/%s)",
		 (long long)now.id, now.state, now.source_bucket,
		 now.source_key, now.dest_bucket, now.dest_key);
	log_op_begin();
	rc = promote_resume(p, &now);
	inflight_del(p, e->id);
	if (rc)
		log_error("promotion: journal entry %lld not recovered: %s",
			  (long long)e->id, strerror(-rc));
	promote_resumed_event(p, rc, &now);
	log_op_end();
	return rc;
}

/* At start, then every [fs] recover_interval: entries of processes that are
 * gone, and this process's own left open (a source DELETE or a step that
 * failed while the store or the database was down), are finished. */
static void *promote_recovery_thread(void *arg)
{
	struct promote *p = arg;
	int rc, last = 0, stop = 0;
	int every =
	    p->cfg->recover_interval_s > 0 ? p->cfg->recover_interval_s : 300;

	while (!stop) {
		struct timespec until;

		rc = promote_recover(p, NULL);
		if (rc && rc != last)
			log_error("promotion: recovery left journal entries "
				  "open (%s): tried again in %d s",
				  strerror(-rc), every);
		last = rc;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += every;
		pthread_mutex_lock(&p->lock);
		while (!p->stopping &&
		       pthread_cond_timedwait(&p->stop_cond, &p->lock,
					      &until) != ETIMEDOUT)
			;
		stop = p->stopping;
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

int promote_owner_id(struct promote *p)
{
	return p ? db_owner_id(p->owner) : 0;
}

int promote_recover_start(struct promote *p)
{
	int rc;

	if (!p)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	rc = p->recovering ? -EALREADY : 0;
	if (!rc) {
		rc = -pthread_create(&p->recovery, NULL,
				     promote_recovery_thread, p);
		p->recovering = !rc;
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

int promote_recover(struct promote *p, int *n_entries)
{
	struct promote_sweep sw = {p, 0};
	int n = 0, rc;

	if (!p)
		return -EINVAL;
	rc = db_journal_recover(p->owner, promote_recover_one, &sw, &n);
	if (n_entries)
		*n_entries = sw.resumed;
	if (sw.resumed)
		log_info("promotion: recovery handled %d journal entr%s (%s)",
			 sw.resumed, sw.resumed == 1 ? "y" : "ies",
			 rc ? strerror(-rc) : "ok");
	return rc;
}
