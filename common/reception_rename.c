/* reception_rename.c - a rename inside the reception bucket (see
 * reception_rename in reception.h): the server-side copy of the object the
 * rename names, its rows in one transaction (from_key's row closed
 * "renamed to", to_key's row with the hashes of the bytes copied), then
 * the source deleted under its key lock; the in-flight marker of to_key
 * (review F1), the undo of a copy whose rows failed, and the deletion of a
 * rename's leftover source (review E5). Part of the reception pipeline:
 * reception_int.h. */
#include "reception_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "counters.h"
#include "events.h"
#include "fpset.h"
#include "log.h"
#include "names.h"
#include "objhash.h"

/* A rename's source, deleted under its key lock (the one commits take). */
struct rename_src {
	struct reception *r;
	const char *key;
	const char *etag; /* what a HEAD saw before the copy */
};

/* Whether rs->key is still the object HEADed before the copy: 1 (same
 * ETag), 0 (another object), -ENOENT (none) or the store's -errno. */
static int rename_src_same(const struct rename_src *rs)
{
	struct s3_object_info info = {0};
	int rc;

	rc = s3_head(rs->r->s3, rs->r->cfg->reception_bucket, rs->key, &info);
	if (rc)
		return rc;
	rc = !strcmp(info.etag, rs->etag);
	s3_object_info_free(&info);
	return rc;
}

/* Under from_key's lock, when no upload of it committed a row since the
 * rename's: deletes the source only while it is still the object HEADed
 * before the copy (DELETE If-Match; where the store refuses that, HEAD
 * again and a plain DELETE only on the same ETag). Another upload there
 * now stays: its commit logs it (it cannot be committed meanwhile, so
 * one that a store ignoring If-Match deletes is uploaded again). 0 or the
 * store's -errno. Idempotent. */
static int reception_rename_srcdel(void *arg)
{
	struct rename_src *rs = arg;
	const char *b = rs->r->cfg->reception_bucket;
	int rc;

	rc = rename_src_same(rs);
	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;
	if (!rc)
		goto kept;
	rc = s3_delete_if(rs->r->s3, b, rs->key, rs->etag);
	if (rc != -EEXIST && rc != -ENOTSUP)
		return rc == -ENOENT ? 0 : rc;
	rc = rename_src_same(rs);
	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;
	if (rc)
		return s3_delete(rs->r->s3, b, rs->key);
kept:
	log_warn("renamed %s: its source was uploaded again meanwhile; the "
		 "new upload stays",
		 rs->key);
	return 0;
}

int reception_leftover_delete(struct reception *r, const char *key,
			      const char *etag, int64_t row_id)
{
	struct rename_src rs = {r, key, etag};
	int rc;

	rc = db_reception_newest_do(r->db, r->cfg->reception_bucket, key,
				    row_id, reception_rename_srcdel, &rs, NULL);
	if (rc == -ESTALE) /* a newer upload of key has its row: it stays */
		rc = 0;
	if (rc == -EBUSY) {
		/* A rename to key is in flight: the object may be its copy
		 * (review F1). Kept; looked at again later. */
		log_info("%s/%s: kept (a rename to it is in flight); not "
			 "taken for the leftover of row %" PRId64,
			 r->cfg->reception_bucket, key, row_id);
		return 0;
	}
	if (rc == -EINPROGRESS)
		rc = -EIO;
	if (rc)
		log_error("%s/%s: the leftover source of a rename (row %" PRId64
			  ") is still there: %s",
			  r->cfg->reception_bucket, key, row_id, strerror(-rc));
	else
		log_info("%s/%s: the leftover source of a rename (row %" PRId64
			 ") was deleted, not logged again",
			 r->cfg->reception_bucket, key, row_id);
	return rc;
}

#define RENAMING_LEASE_S RECEPTION_RENAMING_LEASE_S

/* A token no other rename (of any mount) has: for its in-flight marker. */
static void rename_token(char *buf, size_t n)
{
	static atomic_uint seq;
	uint64_t rnd = 0;

	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (uint64_t)ms_now(CLOCK_REALTIME) ^
		      ((uint64_t)getpid() << 32);
	snprintf(buf, n, "%ld.%u.%016" PRIx64, (long)getpid(),
		 atomic_fetch_add(&seq, 1), rnd);
}

/* What a copy tagged with RENAME_TAG may carry at most, below every
 * store's limit of user metadata (review N4): 2 KiB of names and values
 * (AWS, MinIO: 2 KiB; Swift: 4096 bytes) counted as s3_meta_size does,
 * and 90 items (Swift's default). */
#define RENAME_META_MAX 2048
#define RENAME_META_ITEMS 90

/* Can a rename's copy of source carry its tag: a metadata REPLACE that
 * sends source's metadata, content type and content headers back as they
 * are, plus the tag, within RENAME_META_MAX and RENAME_META_ITEMS? meta
 * (n_meta) is what it would send, the tag included. Else the copy keeps
 * the source's own (review N4). */
static int rename_taggable(const struct s3_object_info *source,
			   const struct s3_kv *meta, size_t n_meta)
{
	return !source->meta_inexact &&
	       strlen(source->content_type) + 1 <
		   sizeof(source->content_type) && /* not cut */
	       n_meta <= RENAME_META_ITEMS &&
	       s3_meta_size(meta, n_meta) <= RENAME_META_MAX;
}

/* Tries for a rename whose source is replaced during its copy. */
#define RENAME_TRIES 3

static int reception_rename_stop(void *arg)
{
	return reception_stopping(arg);
}

/* One try of a rename's copy: HEADs from_key and copies exactly that
 * object to dst_bucket/to_key (x-amz-copy-source-if-match, checked after
 * the copy where the store ignores it), with the source's content type,
 * content headers and metadata plus RENAME_TAG: token (metadata REPLACE;
 * an earlier rename's tag replaced). Where that cannot be sent as the
 * source has it (rename_taggable: metadata near the store's limit, a
 * value custodyfs would not send back byte for byte), a CopyObject keeps
 * the source's own (directive COPY) and carries no tag: a lost answer of
 * that copy then stays unknown (rename_copy_lost never adopts it), and a
 * copy by parts (CreateMultipartUpload: no directive COPY) sends the
 * source's metadata without the tag, as any copy by parts does (review
 * N4). src_etag (80 bytes) is the object the
 * rename names: "" on the first try (it gets the HEAD's ETag), else a
 * source with another ETag is not copied (-EEXIST). 0 with copy->etag
 * and copy->size set; -EEXIST when from_key is, or was meanwhile, another
 * object (copy->etag is set when a copy landed at to_key all the same);
 * or the store's -errno (-ENOENT: no source). *sent is set once the copy
 * itself was asked of the store (its error may then come after the store
 * copied: rename_copy_lost); a request the client refuses to build
 * (-EINVAL) is a refusal too (rename_copy_refused). */
static int reception_rename_copy(struct reception *r, const char *from_key,
				 const char *dst_bucket, const char *to_key,
				 const char *token, char *src_etag,
				 struct upload_result *copy, int *sent)
{
	const char *b = r->cfg->reception_bucket;
	struct s3_object_info source = {0};
	struct s3_copy_req q = {0};
	struct s3_kv *meta = NULL;
	size_t n_meta = 0, i;
	int rc, tagged;

	copy->etag[0] = '\0';
	rc = s3_head(r->s3, b, from_key, &source);
	if (rc)
		return rc;
	if (src_etag[0] && strcmp(src_etag, source.etag)) {
		/* another writer's upload: never this rename's to move */
		s3_object_info_free(&source);
		return -EEXIST;
	}
	snprintf(src_etag, 80, "%s", source.etag);
	/* An upload no live row logs is logged before it is moved: the
	 * rename then closes its row (review F4). */
	rc = reception_log_unlogged(r, from_key, source.etag, source.size);
	if (rc == -EAGAIN) /* replaced while it was hashed */
		rc = -EBUSY;
	else if (rc == -ECANCELED || rc == -EPROTO)
		rc = -EIO;
	if (rc) {
		s3_object_info_free(&source);
		return rc;
	}
	/* The source's own metadata (as read with the ETag copied), but
	 * for an earlier rename's tag, plus this rename's: a copy whose
	 * answer is lost is known by it (review L2); where there is no room
	 * for it, the source's own as it is (review N4). */
	meta = calloc(source.n_meta + 1, sizeof(*meta));
	if (!meta) {
		s3_object_info_free(&source);
		return -ENOMEM;
	}
	for (i = 0; i < source.n_meta; i++)
		if (strcmp(source.meta[i].name, RENAME_TAG))
			meta[n_meta++] = source.meta[i];
	meta[n_meta].name = (char *)RENAME_TAG;
	meta[n_meta++].value = (char *)token;
	tagged = rename_taggable(&source, meta, n_meta);
	if (!tagged) {
		log_info("rename %s: the source's metadata is sent as it is, "
			 "without the rename's tag (near the store's limit, or "
			 "a value not sent back byte for byte)",
			 from_key);
		for (i = 0; i < source.n_meta; i++)
			meta[i] = source.meta[i];
		n_meta = source.n_meta;
	}
	q.keep_meta = !tagged;
	/* What tells this copy from another client's of the same bytes
	 * (its undo deletes only an object with it) */
	snprintf(copy->tag, sizeof(copy->tag), "%s", tagged ? token : "");
	q.hdrs = source.hdrs;
	q.n_hdrs = source.n_hdrs;
	q.src_bucket = b;
	q.src_key = from_key;
	q.src_etag = src_etag;
	q.dst_bucket = dst_bucket;
	q.dst_key = to_key;
	q.content_type = source.content_type[0] ? source.content_type : NULL;
	q.meta = meta;
	q.n_meta = n_meta;
	q.size = source.size;
	q.threshold = r->cfg->copy_threshold;
	q.part_size = r->cfg->part_size;
	q.workers = 1;
	*sent = 1;
	rc = s3_copy_guarded(r->s3, &q, copy->etag);
	copy->size = source.size; /* (the source's, whatever came of it) */
	free(meta);		  /* (its strings are source's and token) */
	s3_object_info_free(&source);
	return rc;
}

/* A rename's copy at to_key, as its rows check it (review K1). */
struct rename_dst {
	struct reception *r;
	const char *key;
	const char *etag; /* the copy's */
};

/* Under both key locks, before a rename's rows: 0 while to_key still holds
 * the copy (or the store cannot say now: the rows are written as before,
 * as a commit's guard does), -ESTALE when another object is there, -ENOENT
 * when none is: another mount's commit, rename or rm of to_key since the
 * copy (db_rename_src.check). */
static int rename_dst_check(void *arg)
{
	struct rename_dst *rd = arg;
	struct s3_object_info info = {0};
	int rc;

	rc = s3_head(rd->r->s3, rd->r->cfg->reception_bucket, rd->key, &info);
	if (rc == -ENOENT)
		return rc;
	if (rc) {
		log_warn("%s/%s: cannot check the rename's copy before its "
			 "rows: %s",
			 rd->r->cfg->reception_bucket, rd->key, strerror(-rc));
		return 0;
	}
	rc = strcmp(info.etag, rd->etag) ? -ESTALE : 0;
	s3_object_info_free(&info);
	return rc;
}

/* Is rc, a rename copy's error, the store's refusal of it (412: the source
 * is another object; 404: no source; 403; a 400: -EINVAL, or -E2BIG for
 * MetadataTooLarge, which is also what the client answers for a request
 * it does not send), after which nothing landed? Any other error (a 5xx,
 * a reset, a timeout) may come after the store copied: its answer was
 * lost (review K3). */
static int rename_copy_refused(int rc)
{
	return rc == -EEXIST || rc == -ENOENT || rc == -EACCES ||
	       rc == -EINVAL || rc == -E2BIG;
}

/* A rename's copy to to_key failed with rc, not a refusal: the store may
 * have copied all the same (review K3). to_key is HEADed again: an object
 * tagged with this rename's token (RENAME_TAG: only its own copies carry
 * it) is the copy (copy->etag and copy->size from the HEAD), and 0
 * returned: the rename goes on, that object's bytes checked as any copy's
 * are (its ETag vouches for the bytes from_key's row logs, else they are
 * hashed and compared by the rows; undone when they differ; *adopted
 * set: the tag is all that names it, never its bytes). Any other
 * object there is someone else's (review L2): never taken, never undone.
 * Else rc, with *unknown set: the copy may still land (a store still at
 * it, a HEAD that failed), so the rename's in-flight marker of to_key is
 * kept until its lease (no leftover there is deleted meanwhile). */
static int rename_copy_lost(struct reception *r, const char *to_key,
			    const char *token, struct upload_result *copy,
			    int rc, int *unknown, int *adopted)
{
	struct s3_object_info now = {0};
	int hr = s3_head(r->s3, r->cfg->reception_bucket, to_key, &now);
	const char *tag = hr ? NULL : s3_meta_get(&now, RENAME_TAG);

	if (tag && !strcmp(tag, token)) {
		log_warn("rename -> %s/%s: the copy failed (%s), but it "
			 "landed all the same (ETag %s): taken for the copy",
			 r->cfg->reception_bucket, to_key, strerror(-rc),
			 now.etag);
		snprintf(copy->etag, sizeof(copy->etag), "%s", now.etag);
		copy->size = now.size;
		*adopted = 1;
		s3_object_info_free(&now);
		return 0;
	}
	s3_object_info_free(&now);
	*unknown = 1;
	log_error("rename -> %s/%s: the copy failed (%s) and %s: its "
		  "in-flight marker is kept (the copy may yet land)",
		  r->cfg->reception_bucket, to_key, strerror(-rc),
		  hr ? "the target cannot be looked at"
		     : "the target is not this rename's copy");
	return rc;
}

/* A rename's copy at a new to_key was undone (etag: the copy's): if it
 * is gone (or another object is there), the rename's marker and the
 * caller's ETag for it go too (review L3, L5): nothing of the rename is
 * left at to_key. */
static void rename_undone(struct reception *r, const char *to_key,
			  struct upload_result *copy, char *new_etag)
{
	struct s3_object_info t = {0};
	int rc = s3_head(r->s3, r->cfg->reception_bucket, to_key, &t);

	if (rc == -ENOENT || (rc == 0 && strcmp(t.etag, copy->etag))) {
		copy->etag[0] = '\0';
		if (new_etag)
			new_etag[0] = '\0';
	}
	s3_object_info_free(&t);
}

/* res (etag, size) at key hashed from its bytes (If-Match its ETag) into
 * res->xxh128 and res->sha256: 0, -EBUSY (key replaced since), or
 * objhash_compute's -errno. */
static int rename_hash(struct reception *r, const char *bucket, const char *key,
		       struct upload_result *res)
{
	int rc = objhash_compute(r->s3, bucket, key, res->etag, res->size,
				 FOREIGN_CHUNK, reception_rename_stop, r,
				 res->xxh128, res->sha256);

	return rc == -ESTALE ? -EBUSY : rc;
}

/* A rename over an existing to_key copies from_key to a private staging
 * key first (review H M2) and checks that copy (stage, staged) before
 * to_key is touched: its bytes must be those from_key's live row logs
 * (its ETag vouches, else it is hashed and db_reception_rename_check
 * compares); dsrc says how, for the rows. 0; -EBADMSG (another upload's
 * bytes, or another row: refused); -EBUSY (stage replaced meanwhile);
 * -EIO (its bytes could not be hashed); or the database's -errno. */
static int rename_stage_check(struct reception *r, const char *from_key,
			      const char *to_key, const char *stage,
			      struct upload_result *staged,
			      struct db_rename_src *dsrc)
{
	int rc, hashed = 0;

	if (!s3_etag_vouches(staged->etag, dsrc->etag)) {
		rc = rename_hash(r, r->cfg->storage_bucket, stage, staged);
		if (rc)
			goto out;
		dsrc->xxh128 = staged->xxh128;
		dsrc->sha256 = staged->sha256;
		dsrc->copy_hashed = 1;
		hashed = 1;
	}
	rc = db_reception_rename_check(r->db, r->cfg->reception_bucket,
				       from_key, to_key, dsrc, staged->size,
				       &dsrc->checked_id);
	if (rc != -ESTALE || hashed)
		return rc == -ESTALE ? -EIO : rc;
	/* The row has no hashes to carry: the staged bytes'. */
	rc = rename_hash(r, r->cfg->storage_bucket, stage, staged);
	if (!rc) {
		dsrc->xxh128 = staged->xxh128;
		dsrc->sha256 = staged->sha256;
	}
out: /* a hash that failed: -EIO (no row is ever written without one) */
	return rc && rc != -EBUSY && rc != -ENOMEM ? -EIO : rc;
}

/* Copies the checked staged copy (stage, staged->etag) to to_key
 * (x-amz-copy-source-if-match its ETag); copy gets what landed there
 * (copy->etag stays "" when nothing did). A copy that answered holds the
 * checked bytes (s3_copy_guarded saw the staged key unchanged around it).
 * One taken by its tag after a lost answer, whose ETag does not vouch for
 * the staged bytes, has its own bytes hashed, which must be the staged
 * ones (dsrc then carries to_key's): else it is another writer's object
 * (-EBUSY, copy->etag ""). A copy whose answer was lost
 * (not a refusal) is looked for at to_key as rename_copy_lost does
 * (before: to_key's ETag before the rename; *unknown set when its outcome
 * stays unknown). 0; -EBUSY (stage replaced: with copy->etag set when a
 * copy of it landed all the same); or -errno. */
static int
rename_stage_put(struct reception *r, const char *to_key, const char *stage,
		 const struct upload_result *staged, struct upload_result *copy,
		 struct db_rename_src *dsrc, const char *token, int *unknown)
{
	const char *b = r->cfg->storage_bucket;
	struct s3_object_info si = {0};
	struct s3_copy_req q = {0};
	struct upload_result sh;
	int rc, adopted = 0;

	copy->etag[0] = '\0';
	copy->size = staged->size;
	/* The copy keeps the staged copy's metadata, its token too */
	snprintf(copy->tag, sizeof(copy->tag), "%s", staged->tag);
	rc = s3_head(r->s3, b, stage, &si);
	if (rc)
		return rc == -ENOENT ? -EBUSY : rc;
	if (strcmp(si.etag, staged->etag)) {
		rc = -EBUSY;
		goto out;
	}
	q.src_bucket = b;
	q.src_key = stage;
	q.src_etag = staged->etag;
	q.dst_bucket = r->cfg->reception_bucket;
	q.dst_key = to_key;
	q.keep_meta = 1; /* the staged copy's: the source's, and the tag */
	q.content_type = si.content_type[0] ? si.content_type : NULL;
	q.meta = si.meta;
	q.n_meta = si.n_meta;
	q.hdrs = si.hdrs; /* for a copy by parts */
	q.n_hdrs = si.n_hdrs;
	q.size = si.size;
	q.threshold = r->cfg->copy_threshold;
	q.part_size = r->cfg->part_size;
	q.workers = 1;
	rc = s3_copy_guarded(r->s3, &q, copy->etag);
	/* An answer lost after the store copied (review K3): what landed
	 * at to_key is checked as any copy of the staged bytes is. */
	if (rc && !rename_copy_refused(rc))
		rc = rename_copy_lost(r, to_key, token, copy, rc, unknown,
				      &adopted);
	if (rc == -EEXIST)
		rc = -EBUSY;
	if (rc || s3_etag_vouches(copy->etag, staged->etag))
		goto out;
	/* A copy that answered: s3_copy_guarded saw the staging key (the
	 * storage bucket's, custodyfs's own) still the checked object after
	 * it, so to_key holds the checked bytes, whose hashes dsrc carries
	 * (review N3: a second hash only added a failure after to_key was
	 * overwritten). A copy taken by its tag after a lost answer has no
	 * such proof (review P1: anyone can copy a tag): to_key's own bytes
	 * are hashed and must be the staged ones. */
	if (!adopted)
		goto out;
	rc = rename_hash(r, r->cfg->reception_bucket, to_key, copy);
	if (rc)
		goto out;
	sh = *staged;
	if (!sh.sha256[0]) /* its ETag vouched: never hashed until now */
		rc = rename_hash(r, b, stage, &sh);
	if (rc)
		goto out;
	if (strcmp(copy->sha256, sh.sha256) ||
	    strcmp(copy->xxh128, sh.xxh128)) {
		/* The tag, not the bytes: another writer's object, put after
		 * this rename's copy (whose tag it carries) replaced T. Not
		 * this rename's; the observer logs it (review P1). */
		log_error("rename -> %s: the object there carries this "
			  "rename's tag but other bytes (SHA-256 %s) than the "
			  "staged copy checked (%s): another writer's, not "
			  "taken; not renamed",
			  to_key, copy->sha256, sh.sha256);
		copy->etag[0] = '\0';
		rc = -EBUSY;
		goto out;
	}
	dsrc->xxh128 = copy->xxh128;
	dsrc->sha256 = copy->sha256;
	dsrc->copy_hashed = 1;
out:
	s3_object_info_free(&si);
	return rc;
}

/* The staging key of a rename (token), busy here and marked in flight as
 * its target is: "" when the rename has none (a new target), else 0 or
 * -errno (nothing held then). */
static int rename_stage_begin(struct reception *r, const char *token,
			      char *stage, size_t n)
{
	int rc;

	snprintf(stage, n, "%s/%s", RECEPTION_RENAME_STAGING, token);
	rc = db_reception_renaming(r->db, r->cfg->storage_bucket, stage, token,
				   RENAMING_LEASE_S);
	if (rc)
		stage[0] = '\0';
	return rc;
}

/* The end of a staged rename: its staging object (whatever is there)
 * deleted, with every version of it a versioned storage bucket keeps
 * (review N2: else each staged copy stays there, a full copy of the file
 * with no row), its marker and busy hold dropped. A failed DELETE is
 * logged: the object is never listed nor logged, and cleanup removes it. */
static void rename_stage_end(struct reception *r, const char *stage,
			     const char *token)
{
	const char *b = r->cfg->storage_bucket;
	int rc;

	if (!stage[0])
		return;
	rc = s3_delete_every_version(r->s3, b, stage);
	if (rc && rc != -ENOENT)
		log_error("%s/%s: a rename's staged copy could not be deleted "
			  "(%s%s): left for custodyfs cleanup",
			  b, stage, strerror(-rc),
			  rc == -EACCES ? ": object lock on the storage bucket?"
					: "");
	(void)db_reception_renaming(r->db, b, stage, token, 0);
}

/* from_key's source object (src_etag) is no longer taken for logged: an
 * upload of the same bytes there later is looked up again (review M1). */
static void rename_forget_src(struct reception *r, const char *from_key,
			      const char *src_etag)
{
	pthread_mutex_lock(&r->lock);
	fpset_del(&r->known, fp_of(from_key, src_etag));
	pthread_mutex_unlock(&r->lock);
}

/* A rename refused because the copy is not what from_key's live row logs:
 * its source is looked up again next time (review M1). -EBUSY. */
static int rename_refused(struct reception *r, const char *from_key,
			  const char *to_key, const char *src_etag)
{
	/* from_key's live row is not the upload copied (one logged,
	 * replaced or removed since the rename looked: review H2), or the
	 * copy's bytes are not that upload's (F3). */
	log_error("rename %s -> %s: the source was replaced or removed during "
		  "the rename; not renamed",
		  from_key, to_key);
	rename_forget_src(r, from_key, src_etag);
	return -EBUSY;
}

int reception_rename(struct reception *r, const char *from_key,
		     const char *to_key, uint64_t size, const struct actor *who,
		     char *new_etag, char *src_etag_out)
{
	char src_etag[80] = "";
	struct rename_src rs = {r, from_key, src_etag};
	const char *b = r->cfg->reception_bucket;
	struct upload_result copy = {.size = size}, staged = {.size = size};
	struct db_rename_src dsrc = {.etag = src_etag, .require = 1};
	struct s3_object_info target = {0};
	struct db_renamed ren = {0};
	struct rename_dst rd = {r, to_key, copy.etag};
	char token[64], stage[sizeof(RECEPTION_RENAME_STAGING) + 64] = "";
	int rc, existed, tries, renamed = 0, marked = 0, superseded = 0;
	int sent = 0, unknown = 0, adopted = 0;
	uint64_t src_size;
	unsigned gen;

	/* The copy may replace an existing target, whose old content cannot
	 * be brought back if the rows then fail: only with a database that
	 * answers. */
	rc = db_ping(r->db);
	if (rc)
		return rc;
	/* to_key is busy from the copy to its row (the observer leaves it
	 * alone; an older undo of it waits). */
	rc = reception_busy_add(r, to_key);
	if (rc)
		return rc;
	/* to_key is marked as a rename's target in the database before the
	 * copy, until its rows (in their transaction): no mount takes the
	 * copy for the leftover of an earlier rename away from to_key and
	 * deletes it (review F1). */
	rename_token(token, sizeof(token));
	rc = db_reception_renaming(r->db, b, to_key, token, RENAMING_LEASE_S);
	if (rc)
		goto out;
	marked = 1;
	dsrc.token = token;
	rc = s3_head(r->s3, b, to_key, &target);
	s3_object_info_free(&target);
	if (rc && rc != -ENOENT)
		goto out;
	existed = rc == 0;
	if (!existed)
		target.etag[0] = '\0';
	gen = busy_gen(r, to_key);
	/* An existing target's content cannot be brought back once a copy
	 * overwrote it: the source is copied to a private staging key of the
	 * storage bucket and checked there first (review H M2, L1); to_key only
	 * gets a copy that passed. */
	if (existed) {
		rc = rename_stage_begin(r, token, stage, sizeof(stage));
		if (rc)
			goto out;
	}
	/* The copy is of the source as the first HEAD saw it, the object the
	 * rename names when it starts (only that object is deleted after the
	 * copy; another upload landing meanwhile stays). A copy that fails
	 * its check goes again only while the source is still that object:
	 * another writer's newer upload is never moved (review E8). */
	for (tries = 1;; tries++) {
		struct upload_result *c = existed ? &staged : &copy;

		rc = reception_rename_copy(
		    r, from_key, existed ? r->cfg->storage_bucket : b,
		    existed ? stage : to_key, token, src_etag, c, &sent);
		if (rc != -EEXIST || c->etag[0] || tries >= RENAME_TRIES)
			break; /* (a copy that landed is undone below) */
		log_info("rename %s -> %s: the copy of the source failed its "
			 "check; copied again",
			 from_key, to_key);
	}
	/* A copy whose answer was lost may have landed (review K3); at a
	 * staging key it is deleted with the key (rename_stage_end). */
	src_size = copy.size; /* (rename_copy_lost puts to_key's there) */
	if (rc && sent && !existed && !rename_copy_refused(rc))
		rc = rename_copy_lost(r, to_key, token, &copy, rc, &unknown,
				      &adopted);
	if (rc == -EEXIST) {
		log_error("rename %s -> %s: the source was replaced by another "
			  "upload during the rename; not renamed",
			  from_key, to_key);
		rc = -EBUSY;
		if (copy.etag[0]) /* a store that ignored the If-Match */
			reception_undo_start(r, to_key, &copy, who, "rename",
					     !existed, gen, -1, rc);
	}
	if (rc)
		goto out;
	if (existed) {
		/* to_key untouched until the staged copy passed (its rows,
		 * content and attributes); then its copy is checked too. */
		rc = rename_stage_check(r, from_key, to_key, stage, &staged,
					&dsrc);
		if (!rc)
			rc = rename_stage_put(r, to_key, stage, &staged, &copy,
					      &dsrc, token, &unknown);
		if (copy.etag[0] && new_etag)
			memcpy(new_etag, copy.etag, sizeof(copy.etag));
		if (rc == -EBADMSG)
			rc = rename_refused(r, from_key, to_key, src_etag);
		if (rc && copy.etag[0]) /* to_key was overwritten */
			reception_undo_start(r, to_key, &copy, who, "rename", 0,
					     gen, -1, rc);
		if (rc)
			goto out;
	} else if (new_etag) {
		/* The copy is at to_key now, whatever follows (the caller's
		 * attributes for it stay). */
		memcpy(new_etag, copy.etag, sizeof(copy.etag));
	}
	if (!existed && adopted && !s3_etag_vouches(copy.etag, src_etag)) {
		/* Taken by its tag after a lost answer: a tag can be copied
		 * (review Q2). Only bytes equal to the source's (hashed
		 * both) make it this rename's copy; else, or unproven, it is
		 * another writer's object: never taken, never undone (the
		 * observer logs it), the rename fails. */
		struct upload_result src = {0};

		snprintf(src.etag, sizeof(src.etag), "%s", src_etag);
		src.size = src_size;
		/* another size: not the source's bytes, nothing to read
		 * (review R1) */
		rc = copy.size != src_size ? -EBADMSG : 0;
		if (!rc)
			rc = rename_hash(r, b, to_key, &copy);
		if (!rc)
			rc = rename_hash(r, b, from_key, &src);
		if (!rc && (strcmp(copy.sha256, src.sha256) ||
			    strcmp(copy.xxh128, src.xxh128)))
			rc = -EBADMSG;
		if (rc) {
			log_error("rename %s -> %s: the object there carries "
				  "this rename's tag but %s: another writer's, "
				  "not taken; not renamed",
				  from_key, to_key,
				  rc == -EBADMSG ? "other bytes than the source"
						 : "its bytes cannot be "
						   "compared now");
			copy.etag[0] = '\0';
			if (new_etag)
				new_etag[0] = '\0';
			if (rc != -EBADMSG)
				unknown = 1; /* the marker stays its lease */
			rc = rc == -EBADMSG ? -EBUSY : -EIO;
			goto out;
		}
		dsrc.xxh128 = copy.xxh128;
		dsrc.sha256 = copy.sha256;
		dsrc.copy_hashed = 1;
	} else if (!existed && !s3_etag_vouches(copy.etag, src_etag)) {
		/* The copy's ETag is not the MD5 of the bytes from_key's row
		 * logs: its own bytes are hashed, and must be those (review
		 * F3: db_reception_rename_ret refuses them otherwise). */
		rc = rename_hash(r, r->cfg->reception_bucket, to_key, &copy);
		if (rc) {
			reception_undo_start(r, to_key, &copy, who, "rename", 1,
					     gen, -1, rc);
			rename_undone(r, to_key, &copy, new_etag);
			goto out;
		}
		dsrc.xxh128 = copy.xxh128;
		dsrc.sha256 = copy.sha256;
		dsrc.copy_hashed = 1;
	}
	/* Under both key locks the rows first check that to_key is still
	 * the copy; if another mount replaced or removed it since, the
	 * rename's row is logged removed and to_key's are left (K1). */
	dsrc.check = rename_dst_check;
	dsrc.check_arg = &rd;
	dsrc.superseded_reason = "replaced or removed before the rename's "
				 "row was written";
	dsrc.superseded = &superseded;
	/* A staged copy was checked against from_key's live row before
	 * to_key was touched: another upload of from_key committed since
	 * does not undo the rename (review L3). */
	dsrc.verified = existed;
	rc = db_reception_rename_ret(r->db, b, from_key, to_key, copy.etag,
				     &dsrc, copy.size, who, &ren);
	if (rc == -EBADMSG)
		rc = rename_refused(r, from_key, to_key, src_etag);
	if (rc == -ESTALE) {
		/* from_key's live row does not log the object copied (none
		 * yet, or another upload): the hashes come from the copy's
		 * bytes, never from another row or from metadata. */
		rc = rename_hash(r, r->cfg->reception_bucket, to_key, &copy);
		if (!rc) {
			dsrc.xxh128 = copy.xxh128;
			dsrc.sha256 = copy.sha256;
			rc = db_reception_rename_ret(r->db, b, from_key, to_key,
						     copy.etag, &dsrc,
						     copy.size, who, &ren);
		}
		if (rc == -ESTALE)
			rc = -EIO;
	}
	if (rc == -EINPROGRESS) {
		/* The rows' COMMIT's answer was lost (review K4): read back
		 * under both key locks, busy still held. Committed: the
		 * rename goes on. Else (or unknown) the copy is undone: the
		 * undo reads back by its ETag again before it deletes. */
		int done = 0, live = 0, again;

		rc = db_reception_rename_readback(r->db, b, from_key, to_key,
						  src_etag, copy.etag, &done,
						  &live, &ren);
		if (!rc && !done && existed) {
			/* Not committed, and the checked copy is on to_key
			 * (an undo cannot bring T back): the rows once more,
			 * only while the first call's marker is there
			 * (review L3). */
			log_warn("rename %s -> %s: its rows did not commit "
				 "(database lost at commit): written again",
				 from_key, to_key);
			dsrc.again = 1;
			again = db_reception_rename_ret(
			    r->db, b, from_key, to_key, copy.etag, &dsrc,
			    copy.size, who, &ren);
			if (!again) {
				done = 1;
				live = !superseded;
			} else if (again == -EBADMSG) {
				(void)rename_refused(r, from_key, to_key,
						     src_etag);
			} /* else not known (-EALREADY: the marker is gone,
			     -EINPROGRESS) or failed: undone as before */
		}
		if (!rc && done) {
			log_info("rename %s -> %s: its rows were committed "
				 "after all (database lost at commit)",
				 from_key, to_key);
			superseded = !live;
		} else {
			log_error("rename %s -> %s: its rows are %s (database "
				  "lost at commit): the copy is undone",
				  from_key, to_key,
				  rc ? "not known" : "not committed");
			reception_undo_start(r, to_key, &copy, who, "rename",
					     !existed, gen, -1, -EINPROGRESS);
			if (!existed && !rc)
				rename_undone(r, to_key, &copy, new_etag);
			rc = -EIO;
			goto out;
		}
	}
	if (rc) {
		/* A new key: the copy goes again, if it is still ours and
		 * unrowed. An existing target was overwritten by the copy
		 * (its old content is gone): never deleted, the copy is
		 * logged late instead, as a rename's overwrite. */
		reception_undo_start(r, to_key, &copy, who, "rename", !existed,
				     gen, -1, rc);
		if (!existed && rc != -EIO && rc != -ETIMEDOUT)
			rename_undone(r, to_key, &copy, new_etag);
		goto out;
	}
	if (superseded) {
		/* Renamed, then replaced or removed by another mount before
		 * the rows: to_key's rows are the replacement's (K1). */
		log_warn("renamed %s -> %s: the copy was replaced or removed "
			 "meanwhile; logged as removed",
			 from_key, to_key);
		events_reception("removed", NULL, 0, b, to_key,
				 (long long)copy.size,
				 copy.sha256[0] ? copy.sha256 : NULL, ren.id,
				 "rename", "superseded", who);
	} else {
		reception_mark_known(r, to_key, copy.etag);
		reception_undos_cancel(r, to_key);
	}
	/* An upload of the same bytes at from_key later is a new arrival
	 * (review M1): looked up again, never taken for logged. */
	rename_forget_src(r, from_key, src_etag);
	marked = 0; /* the marker went with the rows */
	if (ren.src_moved) {
		/* from_key holds the upload committed after the staged check
		 * (its row is live): it stays (review L3). */
		log_warn("renamed %s -> %s: the source was uploaded again "
			 "meanwhile; the new upload stays",
			 from_key, to_key);
		rc = 0;
	} else {
		rc = db_reception_newest_do(r->db, b, from_key, ren.from_id,
					    reception_rename_srcdel, &rs, NULL);
	}
	if (rc == -ESTALE) /* a newer upload of from_key has its row: stays */
		rc = 0;
	if (rc == -EBUSY) {
		/* Another rename to from_key is in flight: the object there
		 * may be its copy; kept, looked at again (a leftover then). */
		log_warn("renamed %s -> %s: its source is kept while a rename "
			 "to it is in flight",
			 from_key, to_key);
		rename_forget_src(r, from_key, src_etag);
		rc = 0;
	}
	renamed = 1; /* the rows changed: their line, whatever follows */
	if (rc) {
		/* The source's object outlived its closed row: its own error
		 * line (errno, S3 code), before the rows' line. */
		struct log_ev ev;

		/* The rows say the source was renamed away: its object is
		 * looked at again at the next listing or scan, which deletes
		 * it (reception_leftover_delete), never logs it (review E5). */
		rename_forget_src(r, from_key, src_etag);
		log_ev_begin(&ev, "error");
		log_ev_str(&ev, "op", "rename_source_delete");
		log_ev_err(&ev, rc);
		log_ev_str(&ev, "bucket", b);
		log_ev_str(&ev, "key", from_key);
		log_ev_str(&ev, "to", to_key);
		if (ren.from_id > 0)
			log_ev_int(&ev, "from_id", (long long)ren.from_id);
		if (who)
			log_ev_who(&ev, (unsigned long)who->uid, who->user,
				   who->host);
		log_ev_duration(&ev);
		log_ev_emit(&ev, LOG_LVL_ERROR);
		/* Renamed all the same: its rows committed, so it is durable
		 * (review K2); only its source's object is left over. */
		rc = 0;
	}
out:
	/* A rename that ended without its rows: its marker goes unless a
	 * copy of it may be at to_key, or land there yet (then it lapses
	 * with its lease, and no leftover there is deleted until then: kept,
	 * never lost). */
	if (marked && !copy.etag[0] && !unknown)
		(void)db_reception_renaming(r->db, b, to_key, token, 0);
	rename_stage_end(r, stage, token);
	if (src_etag_out)
		memcpy(src_etag_out, src_etag, sizeof(src_etag));
	reception_busy_del(r, to_key);
	{
		struct log_ev ev;

		log_ev_begin(&ev, rc && !renamed ? "error" : "renamed");
		if (rc && !renamed) {
			log_ev_str(&ev, "op", "rename");
			log_ev_err(&ev, rc);
		}
		log_ev_str(&ev, "bucket", b);
		log_ev_str(&ev, "key", to_key);
		log_ev_str(&ev, "from", from_key);
		log_ev_int(&ev, "size", (long long)copy.size);
		if (renamed && ren.id > 0)
			log_ev_int(&ev, "id", (long long)ren.id);
		if (renamed && ren.from_id > 0)
			log_ev_int(&ev, "from_id", (long long)ren.from_id);
		if (renamed && ren.replaced_id > 0)
			log_ev_int(&ev, "replaced_id",
				   (long long)ren.replaced_id);
		if (who)
			log_ev_who(&ev, (unsigned long)who->uid, who->user,
				   who->host);
		log_ev_duration(&ev);
		log_ev_emit(&ev, rc && !renamed ? LOG_LVL_ERROR : LOG_LVL_INFO);
	}
	return rc;
}
