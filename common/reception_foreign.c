/* reception_foreign.c - objects that came by other routes: the observer
 * side of the reception pipeline (see the top of reception.c). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counters.h"
#include "db_attrs.h"
#include "events.h"
#include "log.h"
#include "names.h"
#include "objhash.h"
#include "reception_int.h"

/* ---- objects that came by other routes ------------------------------- */

/* Hashes an object by reading it in ranged chunks, each sent with
 * If-Match: etag, so that the hash is of one object, never of a mix of two
 * uploads. -EAGAIN when the object changed meanwhile (look again),
 * -ECANCELED when the reception is being freed. */
static int reception_hash_stop(void *arg)
{
	return reception_stopping(arg);
}

static int reception_hash_object(struct reception *r, const char *key,
				 uint64_t size, const char *etag, char *xxh,
				 char *sha)
{
	int rc =
	    objhash_compute(r->s3, r->cfg->reception_bucket, key, etag, size,
			    FOREIGN_CHUNK, reception_hash_stop, r, xxh, sha);

	if (rc == -ESTALE) {
		log_info("%s/%s changed while it was hashed; looked at again",
			 r->cfg->reception_bucket, key);
		rc = -EAGAIN;
	}
	return rc;
}

/* Under the key lock, before an observer's row is inserted: the key is not
 * being written here, and the object is still the one that was hashed. */
static int reception_foreign_check(void *arg)
{
	struct still_ours *so = arg;

	if (reception_is_busy(so->r, so->key))
		return -EBUSY;
	return reception_still_ours(so);
}

/* Logs one object that arrived by another route, if it is old enough (see
 * the top of this file). seen_etag is the ETag it was listed with; ripe
 * says its grace has passed already; expect_live is the id of the key's
 * live row when the database was read (0: none). 0 or -errno; *inserted
 * says whether a row was added. */
static int reception_log_foreign(struct reception *r, const char *key,
				 const char *seen_etag, int ripe,
				 int64_t expect_live, int *inserted)
{
	char xxh[HASH_XXH128_HEX], sha[HASH_SHA256_HEX];
	struct s3_object_info before = {0}, after = {0};
	struct reception_new rn = {0};
	struct still_ours so = {.r = r, .key = key, .own = -1};
	struct db_record_guard g = {.expect_live = expect_live,
				    .check = reception_foreign_check,
				    .arg = &so,
				    .based_ms_ago = -1};
	int rc, attempt;
	int64_t due, id = 0;

	*inserted = 0;
	if (!ripe) {
		struct defer_ent *d;
		int wait;

		pthread_mutex_lock(&r->lock);
		d = defer_find(r, key, seen_etag);
		wait = d && d->due_ms > ms_now(CLOCK_REALTIME);
		pthread_mutex_unlock(&r->lock);
		if (wait)
			return 0; /* waiting for its grace: no need to look */
	}
	for (attempt = 0; attempt < 3; attempt++) {
		s3_object_info_free(&before);
		s3_object_info_free(&after);
		if (reception_is_busy(r, key))
			return 0; /* this process is writing it */
		rc = s3_head(r->s3, r->cfg->reception_bucket, key, &before);
		if (rc == -ENOENT)
			return 0; /* gone already: nothing to log */
		if (rc)
			return rc;
		if (expect_live == 0) {
			/* No live row: the source a rename could not delete
			 * after its rows said it was renamed away is not a
			 * new arrival (review E5): deleted, never logged. */
			int64_t gone = 0;

			rc = db_reception_renamed_away(
			    r->db, r->cfg->reception_bucket, key, before.etag,
			    before.mtime, &gone);
			if (rc == 0 && gone > 0)
				rc = reception_leftover_delete(
				    r, key, before.etag, gone);
			if (rc || gone > 0)
				goto out;
		}
		if (!ripe || strcmp(before.etag, seen_etag)) {
			pthread_mutex_lock(&r->lock);
			due = defer_due(r, key, before.etag, before.mtime);
			pthread_mutex_unlock(&r->lock);
			if (due) {
				log_debug("%s/%s: recent upload, logged when "
					  "its uploader has had time to",
					  r->cfg->reception_bucket, key);
				rc = 0;
				goto out;
			}
		}
		rc = reception_hash_object(r, key, before.size, before.etag,
					   xxh, sha);
		if (rc == -EAGAIN)
			continue; /* replaced while we read it: again */
		if (rc)
			goto out;
		rc = s3_head(r->s3, r->cfg->reception_bucket, key, &after);
		if (rc)
			goto out;
		if (!strcmp(after.etag, before.etag) &&
		    after.size == before.size)
			break;
		rc = -EAGAIN; /* replaced while we read it: again */
	}
	if (rc)
		goto out;
	rn.source_bucket = r->cfg->reception_bucket;
	rn.object_key = key;
	rn.file_name = names_basename(key);
	rn.size = before.size;
	rn.xxh128 = xxh;
	rn.sha256 = sha;
	rn.etag = before.etag;
	rn.origin = "foreign";
	rn.who = &r->foreign;
	so.etag = before.etag;
	rc = db_reception_record_guarded(r->db, &rn, "replaced by a new upload",
					 &g, &id, inserted);
	if (rc == -ESTALE || rc == -ENOENT || rc == -EBUSY) {
		/* Someone logged, replaced or removed it meanwhile, or this
		 * process writes it now: what is there is looked at when it
		 * is next seen. */
		rc = 0;
	} else if (rc == 0) {
		reception_mark_known(r, key, before.etag);
		if (*inserted) {
			ctr_add(CTR_RECEIVED, 1);
			ctr_add(CTR_BYTES_RECEIVED, before.size);
		}
		if (*inserted) {
			struct upload_result res = {.size = before.size};

			/* a live row read before (expect_live) was closed */
			memcpy(res.sha256, sha, sizeof(res.sha256));
			reception_event(
			    r, expect_live > 0 ? "overwritten" : "received",
			    NULL, 0, key, &res, id, &r->foreign, "foreign");
		}
		/* Its owner and mode are the configured ones now, not those
		 * recorded for what it replaced (nor any its uploader set). */
		if (*inserted &&
		    db_attrs_drop_replaced(r->db, r->cfg->reception_bucket, key,
					   before.etag, &r->foreign) != 0)
			log_error("%s/%s: attributes of the replaced file "
				  "kept",
				  r->cfg->reception_bucket, key);
	}
	pthread_mutex_lock(&r->lock);
	defer_del(r, key, before.etag);
	pthread_mutex_unlock(&r->lock);
out:
	s3_object_info_free(&before);
	s3_object_info_free(&after);
	return rc;
}

static int live_cmp(const void *a, const void *b)
{
	const struct reception_live *x = a, *y = b;

	return strcmp(x->object_key, y->object_key);
}

/* Entries not known to be logged (and not busy here) are checked against
 * the database with one query for their keys; each one that is unlogged is
 * logged. Stops early (-ECANCELED) when the reception is being freed. */
static int reception_unlogged_page(struct reception *r,
				   const struct s3_list_entry *e, size_t n,
				   int skip_pending, struct log_state *st)
{
	struct reception_live *rows = NULL;
	size_t n_rows = 0, i, n_keys = 0, *idx;
	const char **keys;
	int rc;

	keys = calloc(n ? n : 1, sizeof(*keys));
	idx = calloc(n ? n : 1, sizeof(*idx));
	if (!keys || !idx) {
		free(keys);
		free(idx);
		return -ENOMEM;
	}
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < n; i++) {
		uint64_t fp;
		size_t kl = strlen(e[i].key);

		if (kl == 0 || e[i].key[kl - 1] == '/')
			continue; /* directory marker */
		fp = fp_of(e[i].key, e[i].etag);
		if (fpset_has(&r->known, fp) ||
		    (skip_pending && fpset_has(&r->pending, fp)) ||
		    busy_has(r, e[i].key))
			continue;
		idx[n_keys] = i;
		keys[n_keys++] = e[i].key;
	}
	pthread_mutex_unlock(&r->lock);
	if (!n_keys) {
		rc = 0;
		goto out;
	}
	rc = db_reception_live_keys(r->db, r->cfg->reception_bucket, keys,
				    n_keys, &rows, &n_rows);
	if (rc)
		goto out;
	if (n_rows)
		qsort(rows, n_rows, sizeof(*rows), live_cmp);
	for (i = 0; i < n_keys; i++) {
		const struct s3_list_entry *en = &e[idx[i]];
		struct reception_live k = {.object_key = (char *)keys[i]};
		struct reception_live *row = NULL;
		int64_t newest = 0;
		int logged = 0, ins = 0, lrc;

		if (reception_stopping(r)) {
			rc = -ECANCELED;
			goto out;
		}
		if (n_rows)
			row =
			    bsearch(&k, rows, n_rows, sizeof(*rows), live_cmp);
		while (row && row > rows &&
		       !strcmp(row[-1].object_key, keys[i]))
			row--;
		for (; row && row < rows + n_rows &&
		       !strcmp(row->object_key, keys[i]);
		     row++) {
			/* As the database decides for an observer: same
			 * ETag (or none: seed rows, other tools) and same
			 * size. */
			if ((!row->etag || !strcmp(row->etag, en->etag)) &&
			    row->size == (int64_t)en->size)
				logged = 1;
			if (row->id > newest)
				newest = row->id;
		}
		if (logged) {
			reception_mark_known(r, en->key, en->etag);
			continue;
		}
		lrc = reception_log_foreign(r, en->key, en->etag, st->ripe,
					    newest, &ins);
		if (lrc == -ECANCELED) {
			rc = lrc;
			goto out;
		}
		if (lrc) {
			log_error("could not log %s/%s: %s",
				  r->cfg->reception_bucket, en->key,
				  strerror(-lrc));
			if (!st->rc)
				st->rc = lrc;
		}
		st->logged += (size_t)ins;
	}
out:
	db_reception_live_free(rows, n_rows);
	free(keys);
	free(idx);
	return rc;
}

/* Is the object at key (ETag etag, size) logged by a live row, as an
 * observer decides (same ETag or none, same size)? 1, 0 or -errno. */
static int reception_row_logs(struct reception *r, const char *key,
			      const char *etag, uint64_t size, int64_t *newest)
{
	struct reception_live *rows = NULL;
	size_t n = 0, i;
	int logged = 0, rc;

	*newest = 0;
	rc = db_reception_live_keys(r->db, r->cfg->reception_bucket, &key, 1,
				    &rows, &n);
	if (rc)
		return rc;
	for (i = 0; i < n; i++) {
		if (strcmp(rows[i].object_key, key))
			continue;
		if ((!rows[i].etag || !strcmp(rows[i].etag, etag)) &&
		    rows[i].size == (int64_t)size)
			logged = 1;
		if (rows[i].id > *newest)
			*newest = rows[i].id;
	}
	db_reception_live_free(rows, n);
	return logged;
}

int reception_log_unlogged(struct reception *r, const char *key,
			   const char *etag, uint64_t size)
{
	int64_t newest = 0;
	int ins = 0, rc;

	/* The database says, never the known set: the same bytes may have
	 * been renamed away and uploaded again since (review M1). */
	rc = reception_row_logs(r, key, etag, size, &newest);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		rc = reception_log_foreign(r, key, etag, 0, newest, &ins);
		if (rc)
			return rc;
		if (!ins) {
			/* Logged by another meanwhile (review L1)? */
			rc = reception_row_logs(r, key, etag, size, &newest);
			if (rc < 0)
				return rc;
			if (rc == 0) {
				log_info("%s/%s: an upload not logged yet "
					 "(ETag %s): not moved until it is",
					 r->cfg->reception_bucket, key, etag);
				return -EBUSY;
			}
		}
	}
	reception_mark_known(r, key, etag);
	return 0;
}

int reception_log_listed(struct reception *r, const struct s3_list_entry *e,
			 size_t n)
{
	struct reception_live *rows = NULL;
	const char **keys = NULL;
	size_t *idx = NULL, off, i, n_keys, n_rows = 0;
	int rc = 0;

	keys = calloc(SCAN_PAGE, sizeof(*keys));
	idx = calloc(SCAN_PAGE, sizeof(*idx));
	if (!keys || !idx) {
		rc = -ENOMEM;
		goto out;
	}
	for (off = 0; off < n && rc == 0; off += SCAN_PAGE) {
		size_t end = n - off < SCAN_PAGE ? n : off + SCAN_PAGE;

		n_keys = 0;
		for (i = off; i < end; i++) {
			size_t kl = strlen(e[i].key);

			if (kl == 0 || e[i].key[kl - 1] == '/')
				continue; /* directory marker */
			idx[n_keys] = i;
			keys[n_keys++] = e[i].key;
		}
		if (!n_keys)
			continue;
		rc = db_reception_live_keys(r->db, r->cfg->reception_bucket,
					    keys, n_keys, &rows, &n_rows);
		if (rc)
			break;
		if (n_rows)
			qsort(rows, n_rows, sizeof(*rows), live_cmp);
		for (i = 0; i < n_keys && rc == 0; i++) {
			const struct s3_list_entry *en = &e[idx[i]];
			struct reception_live k = {.object_key = en->key};
			struct reception_live *row = NULL;
			int logged = 0;

			if (n_rows)
				row = bsearch(&k, rows, n_rows, sizeof(*rows),
					      live_cmp);
			while (row && row > rows &&
			       !strcmp(row[-1].object_key, en->key))
				row--;
			for (; row && row < rows + n_rows && !logged &&
			       !strcmp(row->object_key, en->key);
			     row++)
				logged = (!row->etag ||
					  !strcmp(row->etag, en->etag)) &&
					 row->size == (int64_t)en->size;
			if (!logged)
				rc = reception_log_unlogged(r, en->key,
							    en->etag, en->size);
		}
		db_reception_live_free(rows, n_rows);
		rows = NULL;
		n_rows = 0;
	}
out:
	free(keys);
	free(idx);
	return rc;
}

/* reception_unlogged_page over slices of SCAN_PAGE entries: a long listing
 * costs one query per slice, never one with every key. */
int reception_unlogged(struct reception *r, const struct s3_list_entry *e,
		       size_t n, int skip_pending, struct log_state *st)
{
	size_t off;
	int rc = 0;

	for (off = 0; off < n && rc == 0; off += SCAN_PAGE)
		rc = reception_unlogged_page(
		    r, e + off, n - off < SCAN_PAGE ? n - off : SCAN_PAGE,
		    skip_pending, st);
	return rc;
}

void saw_job_free(struct saw_job *j)
{
	size_t i;

	for (i = 0; i < j->n; i++)
		free(j->e[i].key);
	free(j->e);
	free(j);
}

void reception_saw(struct reception *r, const char *prefix,
		   const struct s3_list_entry *entries, size_t n)
{
	struct saw_job *j;
	size_t i;

	(void)prefix;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->e = calloc(n ? n : 1, sizeof(*j->e));
	if (!j->e)
		goto drop;
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < n; i++) {
		const struct s3_list_entry *e = &entries[i];
		size_t kl = strlen(e->key);
		uint64_t fp;

		if (kl == 0 || e->key[kl - 1] == '/')
			continue; /* directory marker */
		fp = fp_of(e->key, e->etag);
		if (fpset_has(&r->known, fp) || fpset_has(&r->pending, fp) ||
		    busy_has(r, e->key))
			continue;
		j->e[j->n] = *e;
		j->e[j->n].key = strdup(e->key);
		if (!j->e[j->n].key)
			break;
		fpset_add(&r->pending, fp, FP_MAX_ENTRIES);
		j->n++;
	}
	if (j->n) {
		if (r->tail)
			r->tail->next = j;
		else
			r->head = j;
		r->tail = j;
		pthread_cond_broadcast(&r->cond);
		j = NULL;
	}
	pthread_mutex_unlock(&r->lock);
drop:
	if (j)
		saw_job_free(j);
}

int reception_scan(struct reception *r, const char *prefix, size_t *logged)
{
	struct log_state st = {0};
	char *token = NULL;
	int rc;

	if (prefix && !*prefix)
		prefix = NULL;
	/* A page at a time: neither the bucket's keys nor the live rows are
	 * ever all in memory. */
	do {
		struct s3_list_result page = {0};

		if (reception_stopping(r)) {
			rc = -ECANCELED;
			break;
		}
		rc = s3_list_page(r->s3, r->cfg->reception_bucket, prefix, NULL,
				  token, SCAN_PAGE, &page);
		free(token);
		token = NULL;
		if (rc == 0)
			rc = reception_unlogged(r, page.entries, page.n_entries,
						1, &st);
		if (rc == 0 && page.truncated && page.next_token) {
			token = strdup(page.next_token);
			if (!token)
				rc = -ENOMEM;
		}
		s3xml_list_free(&page);
	} while (rc == 0 && token);
	free(token);
	if (logged)
		*logged = st.logged;
	return rc ? rc : st.rc;
}
