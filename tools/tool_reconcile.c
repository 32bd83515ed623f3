/* tool_reconcile.c - `custodyfs reconcile -o config=FILE [--apply]
 * [--verify-hashes] [--json]`: drift between the reception bucket and
 * reception_audit, and (reported only) between the storage bucket and
 * storage_audit.
 *
 * The bucket's listing and the live rows are walked side by side in key
 * (byte) order, a page of each at a time, so neither is ever all in
 * memory. Each object and each live row is one of:
 *   ok         a live row records this upload: same ETag (or none, as the
 *              seed's rows; the mount decides the same way) and same size;
 *   unlogged   an object without a live row of its key;
 *   mismatch   a live row of the key records another upload (its ETag or
 *              size differs from the object's);
 *   gone       a live row whose object is not in the bucket;
 *   hash       (--verify-hashes) the SHA-256 of the object's bytes, read
 *              with If-Match its ETag, is not its row's (a hash is only
 *              ever compared with one this system computed, never with
 *              the object's metadata); an ok row without a SHA-256 (the
 *              seed's) is counted as unhashed, not as drift.
 * The storage bucket and storage_audit are walked the same way (every run;
 * keys under ".custodyfs-", the anchors and probes, are not files):
 *   storage_unlogged       an object without a live storage row that says
 *                          it is there (copied, restored, adopted,
 *                          duplicate) and no open promotion to it;
 *   storage_gone           such a row whose object is not in the bucket
 *                          (a HEAD confirms it);
 *   storage_hash_mismatch  (--verify-hashes) the SHA-256 of the object's
 *                          bytes is not its newest row's.
 * They are only ever reported, --apply or not: the storage bucket is the
 * definitive store, and which side lies is for a person to find out.
 * Without --apply nothing is changed. With --apply:
 *   - unlogged and mismatched objects are logged by the mount's own
 *     reception scan (reception_scan: hashed from their bytes, origin
 *     "foreign", a replaced row closed "replaced by a new upload"); one
 *     younger than the grace period is left for its uploader, reported;
 *   - a gone row is closed (removed_at, by id) when a HEAD confirms the
 *     object is still gone and no promotion of the key is open;
 *   - hash mismatches are reported only: which side lies is for a person
 *     to find out.
 * Exit status: 0 no drift (or all of it repaired), 3 drift found (left),
 * 1 the store or the database failed, 2 bad usage. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "db_recon.h"
#include "db_storage.h"
#include "log.h"
#include "names.h"
#include "objhash.h"
#include "reception.h"
#include "tools.h"

#define RECON_PAGE 1000	       /* keys / rows per page */
#define RECON_CHUNK (8u << 20) /* bytes per ranged GET when hashing */

enum recon_kind {
	RK_UNLOGGED,
	RK_MISMATCH,
	RK_GONE,
	RK_HASH,
	RK_S_UNLOGGED, /* the storage side: reported only */
	RK_S_GONE,
	RK_S_HASH,
	RK_N
};

static const char *const recon_kind_name[RK_N] = {"unlogged",
						  "mismatch",
						  "gone",
						  "hash_mismatch",
						  "storage_unlogged",
						  "storage_gone",
						  "storage_hash_mismatch"};

static int recon_storage_kind(enum recon_kind k)
{
	return k == RK_S_UNLOGGED || k == RK_S_GONE || k == RK_S_HASH;
}

struct recon_item {
	enum recon_kind kind;
	char *key;
	char etag[80];	/* the object's ("" for gone) */
	uint64_t size;	/* the object's (gone: its row's, UINT64_MAX: NULL) */
	int64_t row_id; /* 0: none */
	char *detail;
	const char *fix; /* with --apply: what became of it */
	int fixed;
};

struct recon_run {
	struct tool_env t;
	int apply, json, verify;
	struct recon_item *items;
	size_t n_items, cap;
	size_t n_objects, n_rows, n_ok, n_unhashed;
	/* --verify-hashes: objects whose bytes could not be read as one
	 * upload (changed meanwhile): not checked */
	size_t n_unchecked, s_unchecked;
	/* the storage bucket: objects, live rows, objects with a row, rows
	 * without a SHA-256 (--verify-hashes), objects of open promotions */
	size_t s_objects, s_rows, s_ok, s_unhashed, s_in_flight;
	size_t by_kind[RK_N];
};

static void recon_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: custodyfs reconcile -o config=FILE [--apply] "
	    "[--verify-hashes] [--json]\n"
	    "\n"
	    "Reports the drift between the reception bucket and "
	    "reception_audit: objects\n"
	    "without a live row (unlogged), live rows whose object is gone, "
	    "and objects\n"
	    "whose live row records another upload (ETag or size mismatch). "
	    "With\n"
	    "--verify-hashes each logged object is read and the SHA-256 of "
	    "its bytes is\n"
	    "compared with its row's (never with the object's metadata).\n"
	    "\n"
	    "The storage bucket is checked against storage_audit the same "
	    "way: objects\n"
	    "without a live row that says they are stored (storage_unlogged), "
	    "such rows\n"
	    "whose object is gone (storage_gone) and, with --verify-hashes, "
	    "objects whose\n"
	    "bytes are not their row's SHA-256 (storage_hash_mismatch). "
	    "These are only\n"
	    "ever reported, with --apply too.\n"
	    "\n"
	    "Nothing is changed unless --apply is given. Then unlogged and "
	    "mismatched\n"
	    "objects are logged as a mount logs an upload that came by "
	    "another route\n"
	    "(hashed from their bytes; one younger than the grace period is "
	    "left for its\n"
	    "uploader), and rows whose object is still gone get removed_at. "
	    "Hash\n"
	    "mismatches are only reported.\n"
	    "\n"
	    "  -o config=FILE    the mount's configuration file\n"
	    "  --apply           log the unlogged objects, close the rows of "
	    "gone objects\n"
	    "  --verify-hashes   hash every logged object's bytes\n"
	    "  --json            one JSON object on stdout, for scripts\n"
	    "  -h, --help        this text\n"
	    "\n"
	    "Exit status: 0 no drift (or, with --apply, all of it repaired), "
	    "1 the store or\n"
	    "the database failed, 2 bad usage, 3 drift found (with --apply: "
	    "drift left).\n");
}

static int recon_add(struct recon_run *r, enum recon_kind kind, const char *key,
		     const char *etag, uint64_t size, int64_t row_id,
		     const char *detail)
{
	struct recon_item *it;

	if (r->n_items == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct recon_item *n = realloc(r->items, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		r->items = n;
		r->cap = cap;
	}
	it = &r->items[r->n_items];
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	it->key = strdup(key);
	it->detail = detail ? strdup(detail) : NULL;
	if (!it->key || (detail && !it->detail)) {
		free(it->key);
		free(it->detail);
		return -ENOMEM;
	}
	snprintf(it->etag, sizeof(it->etag), "%s", etag ? etag : "");
	it->size = size;
	it->row_id = row_id;
	r->n_items++;
	r->by_kind[kind]++;
	return 0;
}

/* The listing, a page at a time, directory markers skipped. */
struct recon_objs {
	const char *bucket;
	int skip_internal; /* keys under ".custodyfs-": not files */
	struct s3_list_result pg;
	size_t i;
	char *token;
	int started, done;
};

static int recon_obj_peek(struct recon_run *r, struct recon_objs *o,
			  const struct s3_list_entry **out)
{
	int rc;

	*out = NULL;
	for (;;) {
		while (o->i < o->pg.n_entries) {
			const struct s3_list_entry *e = &o->pg.entries[o->i];
			size_t kl = strlen(e->key);

			if (kl && e->key[kl - 1] != '/' &&
			    !(o->skip_internal &&
			      !strncmp(e->key, ".custodyfs-", 11))) {
				*out = e;
				return 0;
			}
			o->i++; /* a directory marker, an anchor */
		}
		if (o->done)
			return 0;
		if (o->started && !o->token) {
			o->done = 1;
			return 0;
		}
		s3xml_list_free(&o->pg);
		memset(&o->pg, 0, sizeof(o->pg));
		o->i = 0;
		rc = s3_list_page(r->t.s3, o->bucket, NULL, NULL, o->token,
				  RECON_PAGE, &o->pg);
		free(o->token);
		o->token = NULL;
		o->started = 1;
		if (rc)
			return rc;
		if (o->pg.truncated && o->pg.next_token) {
			o->token = strdup(o->pg.next_token);
			if (!o->token)
				return -ENOMEM;
		}
	}
}

/* The live rows, a page at a time. */
struct recon_rows {
	int storage; /* storage_audit's rows of the storage bucket */
	struct db_received *rows;
	size_t n, i;
	char *last_key;
	int64_t last_id;
	int done;
};

static int recon_row_peek(struct recon_run *r, struct recon_rows *w,
			  const struct db_received **out)
{
	int rc;

	*out = NULL;
	if (w->i < w->n) {
		*out = &w->rows[w->i];
		return 0;
	}
	if (w->done)
		return 0;
	if (w->n) {
		free(w->last_key);
		w->last_key = strdup(w->rows[w->n - 1].object_key);
		if (!w->last_key)
			return -ENOMEM;
		w->last_id = w->rows[w->n - 1].id;
	}
	db_recon_received_free(w->rows, w->n);
	w->rows = NULL;
	w->n = w->i = 0;
	if (w->storage)
		rc = db_recon_stored_page(r->t.db, r->t.cfg.storage_bucket,
					  w->last_key, w->last_id, RECON_PAGE,
					  &w->rows, &w->n);
	else
		rc = db_recon_live_page(r->t.db, r->t.cfg.reception_bucket,
					w->last_key, w->last_id, RECON_PAGE,
					&w->rows, &w->n);
	if (rc)
		return rc;
	if (w->n < RECON_PAGE)
		w->done = 1;
	if (w->n)
		*out = &w->rows[0];
	return 0;
}

/* Does row record the upload e, as the mount decides for an observer? */
static int recon_row_logs(const struct db_received *row,
			  const struct s3_list_entry *e)
{
	return (!row->etag[0] || !strcmp(row->etag, e->etag)) &&
	       row->size == (int64_t)e->size;
}

/* --verify-hashes: the object's bytes (of bucket) against the row's
 * SHA-256; a mismatch is an item of kind. */
static int recon_verify(struct recon_run *r, const char *bucket,
			enum recon_kind kind, size_t *unhashed,
			size_t *unchecked, const struct s3_list_entry *e,
			const struct db_received *row)
{
	char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX], d[256];
	struct s3_object_info info;
	int rc;

	if (!row->sha256[0]) {
		(*unhashed)++;
		return 0;
	}
	rc = objhash_compute(r->t.s3, bucket, e->key, e->etag, e->size,
			     RECON_CHUNK, NULL, NULL, xxh, sha);
	/* A store may list an object with another ETag than the one its
	 * HEAD and If-Match know (Swift: a copy of an object uploaded in
	 * parts): read once more with HEAD's, when the size is the listed
	 * one. */
	if (rc == -ESTALE && s3_head(r->t.s3, bucket, e->key, &info) == 0) {
		if (strcmp(info.etag, e->etag) && info.size == e->size)
			rc = objhash_compute(r->t.s3, bucket, e->key, info.etag,
					     e->size, RECON_CHUNK, NULL, NULL,
					     xxh, sha);
		s3_object_info_free(&info);
	}
	if (rc == -ESTALE) {
		log_info("%s/%s changed while it was hashed: not checked",
			 bucket, e->key);
		(*unchecked)++;
		return 0;
	}
	if (rc)
		return rc;
	if (!strcmp(sha, row->sha256) &&
	    (!row->xxh128[0] || !strcmp(xxh, row->xxh128)))
		return 0;
	snprintf(d, sizeof(d), "bytes hash to SHA-256 %s, row %lld records %s",
		 sha, (long long)row->id, row->sha256);
	return recon_add(r, kind, e->key, e->etag, e->size, row->id, d);
}

/* The walk: listing and live rows side by side. 0 or -errno. */
static int recon_walk(struct recon_run *r)
{
	struct recon_objs o = {.bucket = r->t.cfg.reception_bucket};
	struct recon_rows w = {0};
	int rc;

	for (;;) {
		const struct s3_list_entry *e;
		const struct db_received *row;
		int c, logged = 0;
		int64_t newest = 0;
		char d[512];

		rc = recon_obj_peek(r, &o, &e);
		if (!rc)
			rc = recon_row_peek(r, &w, &row);
		if (rc || (!e && !row))
			break;
		c = !e ? 1 : !row ? -1 : strcmp(e->key, row->object_key);
		if (c > 0) { /* a live row without its object */
			r->n_rows++;
			snprintf(d, sizeof(d),
				 "row %lld (%lld bytes) has no "
				 "object in the bucket",
				 (long long)row->id, (long long)row->size);
			/* size: the row's (UINT64_MAX: NULL), for its line */
			rc = recon_add(r, RK_GONE, row->object_key, NULL,
				       row->size >= 0 ? (uint64_t)row->size
						      : UINT64_MAX,
				       row->id, d);
			w.i++;
			if (rc)
				break;
			continue;
		}
		r->n_objects++;
		if (c < 0) { /* an object without a live row */
			rc = recon_add(r, RK_UNLOGGED, e->key, e->etag, e->size,
				       0, "no live reception row");
			o.i++;
			if (rc)
				break;
			continue;
		}
		/* Every live row of the key (several only in adopted data
		 * without the unique index); reading on may free the page a
		 * row was in, so nothing points into it across a read. */
		{
			char *key = strdup(e->key);

			if (!key) {
				rc = -ENOMEM;
				break;
			}
			while (!rc && row && !strcmp(row->object_key, key)) {
				r->n_rows++;
				if (!logged && recon_row_logs(row, e)) {
					logged = 1;
					r->n_ok++;
					if (r->verify)
						rc = recon_verify(
						    r,
						    r->t.cfg.reception_bucket,
						    RK_HASH, &r->n_unhashed,
						    &r->n_unchecked, e, row);
				}
				if (row->id > newest)
					newest = row->id;
				w.i++;
				if (!rc)
					rc = recon_row_peek(r, &w, &row);
			}
			if (!rc && !logged) {
				snprintf(d, sizeof(d),
					 "live row %lld records another upload "
					 "(object: %llu bytes, ETag %s)",
					 (long long)newest,
					 (unsigned long long)e->size, e->etag);
				rc = recon_add(r, RK_MISMATCH, key, e->etag,
					       e->size, newest, d);
			}
			free(key);
			o.i++;
			if (rc)
				break;
		}
	}
	s3xml_list_free(&o.pg);
	free(o.token);
	db_recon_received_free(w.rows, w.n);
	free(w.last_key);
	return rc;
}

/* A storage object without a row, or a row without its object, seen
 * while the other side moved on: is it drift now? 1 yes, 0 no (a
 * promotion is storing it, its row committed since, the object arrived
 * since), or -errno. */
static int recon_s_confirm(struct recon_run *r, const char *key, int gone)
{
	struct s3_object_info info;
	int rc;

	if (!gone) {
		rc = db_recon_storage_accounted(r->t.db,
						r->t.cfg.storage_bucket, key);
		return rc < 0 ? rc : !rc;
	}
	rc = s3_head(r->t.s3, r->t.cfg.storage_bucket, key, &info);
	if (rc == 0) {
		s3_object_info_free(&info);
		return 0;
	}
	return rc == -ENOENT ? 1 : rc;
}

/* The storage bucket against storage_audit, as recon_walk. Reports only.
 * 0 or -errno. */
static int recon_storage_walk(struct recon_run *r)
{
	struct recon_objs o = {.bucket = r->t.cfg.storage_bucket,
			       .skip_internal = 1};
	struct recon_rows w = {.storage = 1};
	int rc;

	for (;;) {
		const struct s3_list_entry *e;
		const struct db_received *row;
		struct db_received newest;
		char d[512], *key;
		int c, hashed = 0;

		rc = recon_obj_peek(r, &o, &e);
		if (!rc)
			rc = recon_row_peek(r, &w, &row);
		if (rc || (!e && !row))
			break;
		c = !e ? 1 : !row ? -1 : strcmp(e->key, row->object_key);
		if (c > 0) { /* a live row without its object */
			r->s_rows++;
			rc = recon_s_confirm(r, row->object_key, 1);
			if (rc > 0) {
				snprintf(d, sizeof(d),
					 "row %lld (%lld bytes) says it is "
					 "stored: no object in the bucket",
					 (long long)row->id,
					 (long long)row->size);
				rc = recon_add(
				    r, RK_S_GONE, row->object_key, NULL,
				    row->size >= 0 ? (uint64_t)row->size
						   : UINT64_MAX,
				    row->id, d);
			}
			w.i++;
			if (rc)
				break;
			continue;
		}
		r->s_objects++;
		if (c < 0) { /* an object without a live row */
			rc = recon_s_confirm(r, e->key, 0);
			if (rc > 0)
				rc = recon_add(r, RK_S_UNLOGGED, e->key,
					       e->etag, e->size, 0,
					       "no live storage row");
			else if (rc == 0)
				r->s_in_flight++;
			o.i++;
			if (rc)
				break;
			continue;
		}
		/* Every live row of the key (a copy and its duplicates). */
		key = strdup(e->key);
		if (!key) {
			rc = -ENOMEM;
			break;
		}
		memset(&newest, 0, sizeof(newest));
		while (!rc && row && !strcmp(row->object_key, key)) {
			r->s_rows++;
			if (row->sha256[0] || !hashed) {
				newest = *row;
				newest.object_key = NULL;
				hashed = row->sha256[0] != '\0';
			}
			w.i++;
			rc = recon_row_peek(r, &w, &row);
		}
		if (!rc) {
			r->s_ok++;
			if (r->verify)
				rc = recon_verify(r, r->t.cfg.storage_bucket,
						  RK_S_HASH, &r->s_unhashed,
						  &r->s_unchecked, e, &newest);
		}
		free(key);
		o.i++;
		if (rc)
			break;
	}
	s3xml_list_free(&o.pg);
	free(o.token);
	db_recon_received_free(w.rows, w.n);
	free(w.last_key);
	return rc;
}

/* --apply for the unlogged and mismatched objects: the mount's scan, then
 * each one looked up again. */
static int recon_apply_unlogged(struct recon_run *r, size_t *logged)
{
	struct reception *rcp;
	size_t i;
	int rc;

	*logged = 0;
	r->t.cfg.scan_interval_s = 0; /* this one scan only */
	rcp = reception_new(&r->t.cfg, r->t.s3, r->t.db);
	if (!rcp)
		return -ENOMEM;
	rc = reception_scan(rcp, "", logged);
	reception_free(rcp);
	if (rc)
		log_error("reception scan: %s", strerror(-rc));
	for (i = 0; i < r->n_items; i++) {
		struct recon_item *it = &r->items[i];
		struct db_received *rows = NULL;
		const char *k = it->key;
		size_t n = 0, j;
		int qrc;

		if (it->kind != RK_UNLOGGED && it->kind != RK_MISMATCH)
			continue;
		qrc = db_recon_live_keys(r->t.db, r->t.cfg.reception_bucket, &k,
					 1, &rows, &n);
		if (qrc) {
			it->fix = "not logged: the database failed";
			if (!rc)
				rc = qrc;
			continue;
		}
		for (j = 0; j < n; j++)
			if (!strcmp(rows[j].etag, it->etag) &&
			    rows[j].size == (int64_t)it->size)
				it->fixed = 1;
		db_recon_received_free(rows, n);
		it->fix = it->fixed ? "logged"
				    : "not logged yet (too recent: left for "
				      "its uploader, or changed meanwhile)";
	}
	return rc;
}

/* --apply for a gone row: closed when the object is still gone. */
static int recon_apply_gone(struct recon_run *r, struct recon_item *it,
			    const struct actor *who)
{
	struct s3_object_info info;
	struct db_journal_entry *je;
	char reason[1024], a[400];
	int rc;

	rc = s3_head(r->t.s3, r->t.cfg.reception_bucket, it->key, &info);
	if (rc == 0) {
		s3_object_info_free(&info);
		it->fix = "not closed: an object is there now";
		return 0;
	}
	if (rc != -ENOENT) {
		it->fix = "not closed: the store failed";
		return rc;
	}
	je = calloc(1, sizeof(*je));
	if (!je)
		return -ENOMEM;
	rc = db_journal_open_for_source(r->t.db, r->t.cfg.reception_bucket,
					it->key, je);
	free(je);
	if (rc == 0) {
		it->fix = "not closed: a promotion of it is in progress";
		return 0;
	}
	if (rc != -ENOENT) {
		it->fix = "not closed: the database failed";
		return rc;
	}
	actor_format(who, a, sizeof(a));
	snprintf(reason, sizeof(reason),
		 "object gone from %s (found by custodyfs reconcile, %s)",
		 r->t.cfg.reception_bucket, a);
	rc = db_reception_remove_id(r->t.db, it->row_id, reason);
	if (rc == -EINPROGRESS) {
		/* its COMMIT's answer was lost: once more (idempotent) */
		rc = db_reception_remove_id(r->t.db, it->row_id, reason);
		rc = rc == 0 || rc == -ENOENT ? 0 : -EIO;
	}
	if (rc == -ENOENT) {
		it->fix = "closed meanwhile by another writer";
		it->fixed = 1;
		return 0;
	}
	tool_removed_event("reconcile", rc, r->t.cfg.reception_bucket, it->key,
			   it->size == UINT64_MAX ? -1 : (long long)it->size,
			   it->row_id, "object_gone", NULL, who);
	if (rc) {
		it->fix = "not closed: the database failed";
		return rc;
	}
	it->fix = "row closed";
	it->fixed = 1;
	return 0;
}

static void recon_report(struct recon_run *r, const char *fail, size_t logged)
{
	char shown[NAMES_MAX_KEY * 4 + 1];
	size_t i, left = 0;

	for (i = 0; i < r->n_items; i++)
		left += !r->items[i].fixed;
	if (r->json) {
		printf("{\"ok\": %s, \"clean\": %s, \"applied\": %s, "
		       "\"verify_hashes\": %s, \"error\": ",
		       fail ? "false" : "true",
		       !fail && !r->n_items ? "true" : "false",
		       r->apply ? "true" : "false",
		       r->verify ? "true" : "false");
		tool_json_str(stdout, fail);
		printf(
		    ", \"objects\": %zu, \"live_rows\": %zu, \"ok_objects\": "
		    "%zu, \"unhashed\": %zu, \"unchecked\": %zu",
		    r->n_objects, r->n_rows, r->n_ok, r->n_unhashed,
		    r->n_unchecked);
		printf(
		    ", \"storage_objects\": %zu, \"storage_live_rows\": %zu, "
		    "\"storage_ok_objects\": %zu, \"storage_unhashed\": %zu, "
		    "\"storage_unchecked\": %zu, \"storage_in_flight\": %zu",
		    r->s_objects, r->s_rows, r->s_ok, r->s_unhashed,
		    r->s_unchecked, r->s_in_flight);
		for (i = 0; i < RK_N; i++)
			printf(", \"%s\": %zu", recon_kind_name[i],
			       r->by_kind[i]);
		printf(", \"logged\": %zu, \"drift_left\": %zu, \"drift\": [",
		       logged, left);
		for (i = 0; i < r->n_items; i++) {
			struct recon_item *it = &r->items[i];

			printf("%s\n  {\"kind\": \"%s\", \"bucket\": ",
			       i ? "," : "", recon_kind_name[it->kind]);
			tool_json_str(stdout, recon_storage_kind(it->kind)
						  ? r->t.cfg.storage_bucket
						  : r->t.cfg.reception_bucket);
			printf(", \"key\": ");
			tool_json_str(stdout, it->key);
			if (it->kind == RK_GONE || it->kind == RK_S_GONE)
				printf(", \"etag\": null, \"size\": null");
			else {
				printf(", \"etag\": ");
				tool_json_str(stdout, it->etag);
				printf(", \"size\": %llu",
				       (unsigned long long)it->size);
			}
			if (it->row_id)
				printf(", \"row_id\": %lld",
				       (long long)it->row_id);
			else
				printf(", \"row_id\": null");
			printf(", \"detail\": ");
			tool_json_str(stdout, it->detail);
			printf(", \"fixed\": %s, \"applied\": ",
			       it->fixed ? "true" : "false");
			tool_json_str(stdout, it->fix);
			printf("}");
		}
		printf("]}\n");
		return;
	}
	for (i = 0; i < r->n_items; i++) {
		struct recon_item *it = &r->items[i];

		printf("%-13s %s: %s%s%s\n", recon_kind_name[it->kind],
		       tool_shown(it->key, shown, sizeof(shown)),
		       it->detail ? it->detail : "", it->fix ? " -> " : "",
		       it->fix ? it->fix : "");
	}
	if (fail)
		printf("reconcile failed: %s\n", fail);
	printf("reception: %zu objects, %zu live rows: %zu unlogged, %zu "
	       "mismatched, "
	       "%zu gone, %zu hash mismatches%s",
	       r->n_objects, r->n_rows, r->by_kind[RK_UNLOGGED],
	       r->by_kind[RK_MISMATCH], r->by_kind[RK_GONE],
	       r->by_kind[RK_HASH], r->verify ? "" : " (hashes not checked)");
	if (r->verify && r->n_unhashed)
		printf(", %zu rows without a SHA-256", r->n_unhashed);
	if (r->n_unchecked)
		printf(", %zu changed while hashed (not checked)",
		       r->n_unchecked);
	if (r->apply)
		printf("; applied: %zu logged, %zu drift left", logged, left);
	printf("\n");
	printf("storage: %zu objects, %zu live rows: %zu unlogged, %zu gone, "
	       "%zu hash mismatches%s",
	       r->s_objects, r->s_rows, r->by_kind[RK_S_UNLOGGED],
	       r->by_kind[RK_S_GONE], r->by_kind[RK_S_HASH],
	       r->verify ? "" : " (hashes not checked)");
	if (r->verify && r->s_unhashed)
		printf(", %zu rows without a SHA-256", r->s_unhashed);
	if (r->s_unchecked)
		printf(", %zu changed while hashed (not checked)",
		       r->s_unchecked);
	if (r->s_in_flight)
		printf(", %zu being promoted", r->s_in_flight);
	printf(" (reported only)\n");
}

int tool_reconcile(int argc, char **argv)
{
	enum { O_APPLY = 256, O_JSON, O_VERIFY };
	static const struct option lopts[] = {
	    {"apply", no_argument, NULL, O_APPLY},
	    {"verify-hashes", no_argument, NULL, O_VERIFY},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct recon_run r;
	struct actor who;
	char *config = NULL, err[512];
	const char *fail = NULL;
	size_t i, logged = 0, left = 0;
	int c, rc, env_loaded = 0, status = TOOL_USAGE;

	memset(&r, 0, sizeof(r));
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (tool_parse_o("reconcile", optarg, &config))
				goto out;
			break;
		case O_APPLY:
			r.apply = 1;
			break;
		case O_VERIFY:
			r.verify = 1;
			break;
		case O_JSON:
			r.json = 1;
			break;
		case 'h':
			recon_usage(stdout);
			status = TOOL_OK;
			goto out;
		default:
			recon_usage(stderr);
			goto out;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "custodyfs reconcile: unexpected argument %s\n",
			argv[optind]);
		recon_usage(stderr);
		goto out;
	}
	rc = tool_env_load(&r.t, "reconcile", config);
	env_loaded = 1;
	if (rc) {
		status = rc;
		goto out;
	}
	status = TOOL_FAILED;
	tool_actor(&r.t, &who);
	rc = tool_bucket_check(&r.t, r.t.cfg.reception_bucket);
	if (!rc)
		rc = tool_bucket_check(&r.t, r.t.cfg.storage_bucket);
	if (rc) {
		fprintf(stderr,
			"custodyfs reconcile: the store does not answer (%s): "
			"nothing done\n",
			strerror(-rc));
		fail = "the store does not answer";
		goto report;
	}
	if (tool_db_open(&r.t, 2, err, sizeof(err))) {
		fprintf(stderr,
			"custodyfs reconcile: database: %s: nothing done\n",
			err);
		fail = "the database does not answer";
		goto report;
	}
	/* Only --apply may change the schema: a plain run reads. */
	if (tool_db_schema(&r.t, "reconcile", r.apply, &fail))
		goto report;
	rc = recon_walk(&r);
	if (!rc)
		rc = recon_storage_walk(&r);
	if (rc) {
		fprintf(stderr, "custodyfs reconcile: %s: nothing %s\n",
			strerror(-rc), r.apply ? "applied" : "more checked");
		fail = "the store or the database failed during the check";
		goto report;
	}
	if (!r.apply)
		goto report;
	if (r.by_kind[RK_UNLOGGED] || r.by_kind[RK_MISMATCH]) {
		rc = recon_apply_unlogged(&r, &logged);
		if (rc)
			fail = "logging the unlogged objects failed";
	}
	for (i = 0; i < r.n_items; i++) {
		if (r.items[i].kind != RK_GONE)
			continue;
		rc = recon_apply_gone(&r, &r.items[i], &who);
		if (rc) {
			log_error("%s: %s", r.items[i].key, strerror(-rc));
			fail = "closing the rows of gone objects failed";
		}
	}
	for (i = 0; i < r.n_items; i++)
		if (recon_storage_kind(r.items[i].kind))
			r.items[i].fix = "reported only";
report:
	recon_report(&r, fail, logged);
	for (i = 0; i < r.n_items; i++)
		left += !r.items[i].fixed;
	status = fail ? TOOL_FAILED : left ? TOOL_DRIFT : TOOL_OK;
out:
	fflush(stdout);
	for (i = 0; i < r.n_items; i++) {
		free(r.items[i].key);
		free(r.items[i].detail);
	}
	free(r.items);
	if (env_loaded)
		tool_env_free(&r.t);
	free(config);
	return status;
}
