/* ofile.c - files of inbox/ open for writing, and local temporary files.
 *
 * Every written file is spooled to an unlinked file in spool_dir (never all
 * in memory) and streamed to the store by an upload (common/upload.h) as it
 * is written; ofile_commit() (from flush/fsync) finishes the upload and
 * commits the reception row, and only then reports success. Files whose
 * name matches a temp pattern stay local until renamed to a final name. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "counters.h"
#include "fs.h"
#include "inval.h"
#include "log.h"
#include "names.h"
#include "s3err.h"

static int spool_open(void)
{
	char path[4096];
	int fd;

	fd = open(cfs->cfg.spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	/* File systems without O_TMPFILE: create and unlink at once. */
	snprintf(path, sizeof(path), "%s/spool.XXXXXX", cfs->cfg.spool_dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

int ofile_is_hidden_name(const char *rel)
{
	return !strncmp(names_basename(rel), ".fuse_hidden", 12);
}

struct ofile *ofile_find(const char *rel)
{
	struct ofile *of;

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next)
		if (!of->unlinked && !strcmp(of->rel, rel))
			break;
	if (of)
		of->refs++;
	pthread_mutex_unlock(&cfs->lock);
	return of;
}

static void ofile_free(struct ofile *of)
{
	upload_free(of->up);
	if (of->fd >= 0)
		close(of->fd);
	pthread_mutex_destroy(&of->lock);
	free(of->direct_to);
	free(of->claim);
	free(of->pub_from);
	free(of->pub_pending);
	free(of->node_name);
	free(of->rel);
	free(of);
}

void ofile_free_all(void)
{
	struct ofile *of;

	pthread_mutex_lock(&cfs->lock);
	while ((of = cfs->ofiles) != NULL) {
		cfs->ofiles = of->next;
		ofile_free(of);
	}
	pthread_mutex_unlock(&cfs->lock);
}

/* CLOCK_MONOTONIC, in ms. */
static int64_t ofile_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct ofile *ofile_create(const char *rel, int local, int *err)
{
	struct ofile *of = calloc(1, sizeof(*of)), *other;

	if (!of) {
		*err = -ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&of->lock, NULL);
	of->fd = spool_open();
	of->rel = strdup(rel);
	if (of->fd < 0 || !of->rel) {
		*err = of->fd < 0 ? of->fd : -ENOMEM;
		if (of->fd < 0)
			log_error("cannot create a spool file in %s: %s",
				  cfs->cfg.spool_dir, strerror(-of->fd));
		goto fail;
	}
	of->local = local;
	if (!local) {
		of->up =
		    upload_new(cfs->pool, cfs->s3, cfs->cfg.reception_bucket,
			       rel, of->fd, cfs->cfg.part_size);
		if (!of->up) {
			*err = -ENOMEM;
			goto fail;
		}
	}
	clock_gettime(CLOCK_REALTIME, &of->mtime);
	of->based_ms = ofile_mono_ms();
	of->refs = 1;
	/* Locked before anyone can find it: whoever shares it waits for
	 * the creator to fill it (or mark it failed). */
	pthread_mutex_lock(&of->lock);
	pthread_mutex_lock(&cfs->lock);
	for (other = cfs->ofiles; other; other = other->next)
		if (!other->unlinked && !strcmp(other->rel, rel))
			break;
	if (other) {
		/* Lost a race with another create: share the first one. */
		other->refs++;
		pthread_mutex_unlock(&cfs->lock);
		pthread_mutex_unlock(&of->lock);
		ofile_free(of);
		pthread_mutex_lock(&other->lock);
		return other;
	}
	of->next = cfs->ofiles;
	cfs->ofiles = of;
	pthread_mutex_unlock(&cfs->lock);
	return of;
fail:
	ofile_free(of);
	return NULL;
}

/* Caller holds cfs->lock. */
static void ofile_unlist(struct ofile *of)
{
	struct ofile **pp;

	for (pp = &cfs->ofiles; *pp; pp = &(*pp)->next) {
		if (*pp == of) {
			*pp = of->next;
			break;
		}
	}
}

void ofile_put(struct ofile *of)
{
	int drop = 0, unclaim = 0;
	char *unpend = NULL;

	pthread_mutex_lock(&cfs->lock);
	/* A local file outlives its handles (until renamed or unlinked);
	 * a hidden one goes with its last handle. */
	if (--of->refs == 0 && (!of->local || of->unlinked || of->hidden)) {
		ofile_unlist(of);
		drop = 1;
		/* Nobody else can reach it now: its claim on the name
		 * (its close failed, or it never wrote) goes. */
		unclaim = of->attrs_unbound && !of->in_store && !of->local &&
			  !of->unlinked && !of->hidden;
		/* A deferred publish never committed (its close failed):
		 * its pending row goes with it, the name keeps its row. */
		if (of->pub_pending && !of->unlinked && !of->hidden)
			unpend = strdup(of->rel);
	}
	pthread_mutex_unlock(&cfs->lock);
	if (unclaim) /* its own claim only: never a newer create's */
		attrov_unclaim(of->rel, of->claim);
	if (unpend)
		attrov_unpend(unpend, of->pub_pending);
	free(unpend);
	if (drop)
		ofile_free(of);
}

/* Two threads: the claims thread renews the claims of this mount's new
 * files each period, and only that; the rebind thread retries the queued
 * binds (struct rebind). Apart, a database slow to take the binds (each
 * retry may wait for a pooled connection and its statement bound, 20 s
 * each) never delays a renewal past the lease (E6). */
static struct {
	pthread_t thread;   /* the claims thread */
	pthread_t rebinder; /* the rebind thread */
	int started;
	int stop;	     /* protected by cfs->lock */
	pthread_cond_t cond; /* with cfs->lock: stop was set */
} renewer = {.cond = PTHREAD_COND_INITIALIZER};

/* A new file whose upload was recorded (its close returned 0: stored and
 * logged, SPEC §2) but whose claim's row could not be bound then (the
 * database failing): the claims thread keeps renewing its claim and tries
 * the bind again each period until it is done (D10), so the row never
 * lapses unbound onto whatever object is there later. */
struct rebind {
	struct rebind *next;
	char *rel, *etag, *token;
	char *from;	   /* a publish's (attrov_publish), or NULL */
	char *pending;	   /* with from: its pending row's token, or NULL */
	struct attrov cur; /* mode, owner, times only */
	int done;	   /* rebinds_retry's: this try bound it */
};
static struct rebind *rebinds; /* protected by cfs->lock */
/* The binds rebinds_retry is trying now (its list: next never changes
 * meanwhile, and none is freed but under the lock): their claims are
 * renewed all the same. Protected by cfs->lock. */
static struct rebind *rebinds_trying;

static void rebind_free(struct rebind *r)
{
	if (!r)
		return;
	free(r->rel);
	free(r->etag);
	free(r->token);
	free(r->from);
	free(r->pending);
	free(r);
}

/* Queues the bind of rel's claim (token) to etag for the claims thread,
 * or with from the move of a published file's row from `from`
 * (attrov_publish: token, cur the publisher's claim and attributes). */
static void rebind_add(const char *rel, const char *etag, const char *token,
		       const struct attrov *cur, const char *from,
		       const char *pending)
{
	struct rebind *r = calloc(1, sizeof(*r));

	if (r) {
		r->rel = strdup(rel);
		r->etag = strdup(etag);
		r->token = token ? strdup(token) : NULL;
		r->from = from ? strdup(from) : NULL;
		r->pending = pending ? strdup(pending) : NULL;
		if (cur)
			r->cur = *cur;
		r->cur.rel = r->cur.etag = r->cur.miss = NULL;
	}
	if (!r || !r->rel || !r->etag || (token && !r->token) ||
	    (from && !r->from) || (pending && !r->pending)) {
		log_error("inbox/%s: the bind of its row to %s is not queued "
			  "for a retry (out of memory): its claim lapses "
			  "unbound",
			  rel, etag);
		rebind_free(r);
		return;
	}
	pthread_mutex_lock(&cfs->lock);
	r->next = rebinds;
	rebinds = r;
	pthread_mutex_unlock(&cfs->lock);
	log_warn("inbox/%s: the bind of its row to %s is retried until the "
		 "database takes it (its claim renewed meanwhile)",
		 rel, etag);
}

/* Tries each queued bind once (without cfs->lock); those that fail again
 * stay queued. One caller at a time: the rebind thread, or the stop after
 * it ended. */
static void rebinds_retry(void)
{
	struct rebind *list, *r, *next;

	pthread_mutex_lock(&cfs->lock);
	list = rebinds;
	rebinds = NULL;
	rebinds_trying = list;
	pthread_mutex_unlock(&cfs->lock);
	for (r = list; r; r = r->next)
		r->done =
		    (r->from ? attrov_publish(r->from, r->rel, r->etag,
					      r->token, &r->cur, r->pending)
			     : attrov_bind_claim(r->rel, r->etag, r->token,
						 &r->cur)) == 0;
	pthread_mutex_lock(&cfs->lock);
	rebinds_trying = NULL;
	for (r = list; r; r = next) {
		next = r->next;
		if (r->done) {
			rebind_free(r);
			continue;
		}
		r->next = rebinds;
		rebinds = r;
	}
	pthread_mutex_unlock(&cfs->lock);
}

/* Caller holds cfs->lock. The names of this mount's new files with a
 * claim (open, or whose bind is queued: rebinds) (malloc'd array of malloc'd
 * strings), *n of them; NULL on ENOMEM
 * (*n 0: nothing to renew this time). */
static char **claimed_names_locked(size_t *n)
{
	struct ofile *of;
	size_t cap = 0, i;
	char **keys = NULL;

	struct rebind *r;

	*n = 0;
	for (of = cfs->ofiles; of; of = of->next)
		cap += !of->unlinked && !of->hidden && of->attrs_unbound;
	for (r = rebinds; r; r = r->next)
		cap++;
	for (r = rebinds_trying; r; r = r->next)
		cap++;
	if (!cap)
		return NULL;
	keys = calloc(cap, sizeof(*keys));
	if (!keys)
		return NULL;
	for (of = cfs->ofiles, i = 0; of && i < cap; of = of->next) {
		if (of->unlinked || of->hidden || !of->attrs_unbound)
			continue;
		keys[i] = strdup(of->rel);
		if (!keys[i])
			break;
		i++;
	}
	for (r = rebinds; r && i < cap; r = r->next) {
		keys[i] = strdup(r->from ? r->from : r->rel);
		if (!keys[i])
			break;
		i++;
	}
	for (r = rebinds_trying; r && i < cap; r = r->next) {
		keys[i] = strdup(r->from ? r->from : r->rel);
		if (!keys[i])
			break;
		i++;
	}
	*n = i;
	return keys;
}

/* Caller holds cfs->lock. The pending rows' tokens of this mount's
 * deferred publishes (their files open, H5) (malloc'd array of malloc'd
 * strings), *n of them; NULL on ENOMEM or none (*n 0). */
static char **deferred_tokens_locked(size_t *n)
{
	struct ofile *of;
	size_t cap = 0, i = 0;
	char **tokens;

	*n = 0;
	for (of = cfs->ofiles; of; of = of->next)
		cap += of->pub_pending != NULL;
	if (!cap)
		return NULL;
	tokens = calloc(cap, sizeof(*tokens));
	if (!tokens)
		return NULL;
	for (of = cfs->ofiles; of && i < cap; of = of->next) {
		if (!of->pub_pending)
			continue;
		tokens[i] = strdup(of->pub_pending);
		if (!tokens[i])
			break;
		i++;
	}
	*n = i;
	return tokens;
}

/* Caller holds cfs->lock. Waits period_ms or until the stop: 1 when
 * stopping. */
static int renewer_wait_locked(long period_ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += period_ms / 1000;
	until.tv_nsec += (period_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (!renewer.stop &&
	       pthread_cond_timedwait(&renewer.cond, &cfs->lock, &until) !=
		   ETIMEDOUT)
		;
	return renewer.stop;
}

static void *claims_main(void *arg)
{
	long period_ms = (long)cfs->cfg.claim_lease_s * 1000 / 4;
	size_t n, i, nt;
	char **keys, **tokens;
	int rc;

	(void)arg;
	pthread_mutex_lock(&cfs->lock);
	while (!renewer_wait_locked(period_ms)) {
		keys = claimed_names_locked(&n);
		tokens = deferred_tokens_locked(&nt);
		pthread_mutex_unlock(&cfs->lock);
		/* The pending rows of deferred publishes hold while their
		 * files are open (a lapsed one may be cleared by a later
		 * rename over the name; the close then publishes from
		 * memory). */
		rc = db_attrs_defer_renew(cfs->db, cfs->cfg.reception_bucket,
					  (const char *const *)tokens, nt,
					  cfs->cfg.claim_lease_s);
		if (rc)
			log_error("pending attributes of %zu open renamed "
				  "files not renewed (tried again in %ld "
				  "ms): %s",
				  nt, period_ms, strerror(-rc));
		for (i = 0; i < nt; i++)
			free(tokens[i]);
		free(tokens);
		rc = db_attrs_renew(cfs->db, cfs->cfg.reception_bucket,
				    cfs->claimer, (const char *const *)keys, n,
				    cfs->cfg.claim_lease_s);
		if (rc)
			log_error("claims on the names of %zu new files not "
				  "renewed (tried again in %ld ms): %s",
				  n, period_ms, strerror(-rc));
		for (i = 0; i < n; i++)
			free(keys[i]);
		free(keys);
		/* The liveness lock is not this thread's (db_live_watch
		 * takes it back): a round trip on its connection here could
		 * stop every renewal for as long as a dead peer takes to be
		 * noticed (review-36 R4). */
		pthread_mutex_lock(&cfs->lock);
	}
	pthread_mutex_unlock(&cfs->lock);
	return NULL;
}

/* The rebind thread: the queued binds, tried again each period (the
 * claims thread's), however long the database takes with them. */
static void *rebinds_main(void *arg)
{
	long period_ms = (long)cfs->cfg.claim_lease_s * 1000 / 4;

	(void)arg;
	pthread_mutex_lock(&cfs->lock);
	while (!renewer_wait_locked(period_ms)) {
		if (!rebinds)
			continue;
		pthread_mutex_unlock(&cfs->lock);
		rebinds_retry();
		pthread_mutex_lock(&cfs->lock);
	}
	pthread_mutex_unlock(&cfs->lock);
	return NULL;
}

int ofile_claims_start(void)
{
	int rc = pthread_create(&renewer.thread, NULL, claims_main, NULL);

	if (rc)
		return -rc;
	rc = pthread_create(&renewer.rebinder, NULL, rebinds_main, NULL);
	if (rc) {
		pthread_mutex_lock(&cfs->lock);
		renewer.stop = 1;
		pthread_cond_broadcast(&renewer.cond);
		pthread_mutex_unlock(&cfs->lock);
		pthread_join(renewer.thread, NULL);
		renewer.stop = 0;
		return -rc;
	}
	renewer.started = 1;
	return 0;
}

void ofile_claims_stop(void)
{
	struct rebind *r;

	if (!renewer.started)
		return;
	pthread_mutex_lock(&cfs->lock);
	renewer.stop = 1;
	pthread_cond_broadcast(&renewer.cond);
	pthread_mutex_unlock(&cfs->lock);
	pthread_join(renewer.thread, NULL);
	pthread_join(renewer.rebinder, NULL);
	renewer.started = 0;
	/* A last try; a bind left now lapses with its claim (logged). */
	rebinds_retry();
	pthread_mutex_lock(&cfs->lock);
	while ((r = rebinds) != NULL) {
		rebinds = r->next;
		log_error("inbox/%s: its row is left unbound (its claim "
			  "lapses; then it applies to whatever object is "
			  "there): the database did not take its bind to %s",
			  r->rel, r->etag);
		rebind_free(r);
	}
	pthread_mutex_unlock(&cfs->lock);
}

void ofile_drop_name(const char *rel)
{
	struct ofile *of;

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next)
		if (!of->unlinked && !strcmp(of->rel, rel))
			break;
	if (of) {
		of->unlinked = 1;
		if (of->refs == 0)
			ofile_unlist(of);
		else
			of = NULL; /* freed by its last ofile_put */
	}
	pthread_mutex_unlock(&cfs->lock);
	if (of)
		ofile_free(of);
}

int ofile_load(struct ofile *of, const char *key, const char *etag)
{
	uint64_t size = 0;
	int rc;

	of->loaded[0] = '\0';
	of->base_tag[0] = '\0';
	of->base_known = 0;
	rc =
	    s3_get_to_fd_tagged(cfs->s3, cfs->cfg.reception_bucket, key, of->fd,
				etag, &size, of->loaded, sizeof(of->loaded),
				UPLOAD_TAG, of->base_tag, sizeof(of->base_tag));
	if (rc == 0 && ftruncate(of->fd, (off_t)size) != 0)
		rc = -errno;
	if (rc) {
		/* Every handle sharing this spool sees the failure; a later
		 * open starts over with a new ofile. */
		of->failed = rc < 0 ? rc : -EIO;
		pthread_mutex_lock(&cfs->lock);
		of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
		return of->failed;
	}
	of->size = size;
	of->in_store = 1;
	of->stored_size = size;
	of->dirty = 0;
	of->ready = 1;
	of->base_known = of->loaded[0] != '\0';
	if (of->up)
		upload_invalidate(of->up);
	return 0;
}

char *ofile_rel(struct ofile *of)
{
	char *rel;

	pthread_mutex_lock(&cfs->lock);
	rel = strdup(of->rel);
	pthread_mutex_unlock(&cfs->lock);
	return rel;
}

struct ofile_meta {
	char mtime[32], mode[16], uid[16], gid[16];
	struct s3_kv kv[4];
};

/* Caller holds of->lock: the object metadata of of, its attributes those
 * of rel's row (a published file's: its name before the rename). What
 * s3fs and rclone read (s3fs's forms: st_mode with the file type and
 * mtime in decimal seconds), as getattr shows the file. Only ever
 * written, never read back: ownership comes from the database, not from
 * an object's metadata. 0 or -errno (attrov_apply's). */
static int ofile_meta(struct ofile *of, const char *rel, struct ofile_meta *m)
{
	struct stat st;
	int rc;

	ofile_stat(of, &st);
	rc = ofile_deferred_stat(of, &st) ? 0 : attrov_apply(rel, &st, NULL);
	if (rc)
		return rc;
	snprintf(m->mtime, sizeof(m->mtime), "%lld",
		 (long long)st.st_mtim.tv_sec);
	snprintf(m->mode, sizeof(m->mode), "%u", (unsigned)st.st_mode);
	snprintf(m->uid, sizeof(m->uid), "%u", (unsigned)st.st_uid);
	snprintf(m->gid, sizeof(m->gid), "%u", (unsigned)st.st_gid);
	m->kv[0].name = (char *)"mtime";
	m->kv[0].value = m->mtime;
	m->kv[1].name = (char *)"mode";
	m->kv[1].value = m->mode;
	m->kv[2].name = (char *)"uid";
	m->kv[2].value = m->uid;
	m->kv[3].name = (char *)"gid";
	m->kv[3].value = m->gid;
	return 0;
}

void ofile_stream_meta(struct ofile *of)
{
	struct ofile_meta m;
	char *rel = of->up ? ofile_rel(of) : NULL;

	/* On failure the upload is created without (or with older)
	 * metadata, and upload_finish sends the spool again. */
	if (rel && ofile_meta(of, rel, &m) == 0)
		upload_set_meta(of->up, m.kv, 4);
	free(rel);
}

/* Caller holds of->lock: rel's attributes unbound before its upload
 * (attrov_prepare); over a stored object, the one there now (HEAD). With
 * check_only (a deferred publish: rel's row stays until the upload is
 * recorded) only the object there is checked, nothing prepared. */
static int ofile_prepare_attrs(struct ofile *of, const char *rel,
			       int check_only)
{
	struct s3_object_info info;
	const char *tag;
	int rc;

	/* A new file's row is unbound since its create: nothing to do, and
	 * its first upload does not wait on the database (SPEC §2: the
	 * object first, then its row). */
	if (!of->in_store && of->attrs_unbound)
		return 0;
	if (!of->in_store)
		return check_only ? 0 : attrov_prepare(rel, 0, NULL);
	rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);
	if (rc == -ENOENT)
		return check_only ? 0 : attrov_prepare(rel, 1, NULL);
	if (rc)
		return rc;
	tag = s3_meta_get(&info, UPLOAD_TAG);
	if (!tag)
		tag = "";
	/* Another object than its base: another tag (or one where the base
	 * had none), or, both untagged (an SDK's uploads), another ETag. */
	if (of->base_known && (strcmp(tag, of->base_tag) ||
			       (!*tag && strcmp(info.etag, of->loaded) &&
				strcmp(info.etag, of->committed)))) {
		/* Not the object this content is based on: another mount's,
		 * put at the name since (maybe with the same bytes, so the
		 * same ETag). Its row is not this file's to inherit, nor its
		 * bytes this writer's to replace unless allowed. */
		rc = ofile_writer_may_replace(of, rel);
		if (rc)
			log_error("inbox/%s: not stored: the object there now "
				  "(ETag %s) is not the one this file was "
				  "opened on, and a writer of this file may "
				  "not replace it: %s",
				  rel, info.etag, strerror(-rc));
	}
	if (rc == 0 && !check_only)
		rc = attrov_prepare(rel, 1, info.etag);
	s3_object_info_free(&info);
	return rc;
}

/* The event line (log.h) of an upload that failed before its row was
 * tried (reception_commit writes its own). */
static void ofile_upload_error(const struct ofile *of, const char *rel,
			       const struct actor *who, int rc)
{
	struct log_ev ev;

	/* a failed reception, as reception_commit counts its own */
	ctr_add(CTR_ERR_RECEPTION, 1);
	log_ev_begin(&ev, "error");
	log_ev_str(&ev, "op", "upload");
	log_ev_err(&ev, rc);
	log_ev_str(&ev, "bucket", cfs->cfg.reception_bucket);
	log_ev_str(&ev, "key", rel);
	log_ev_int(&ev, "size", (long long)of->size);
	log_ev_str(&ev, "origin", "mount");
	log_ev_who(&ev, (unsigned long)who->uid, who->user, who->host);
	log_ev_duration(&ev);
	log_ev_emit(&ev, LOG_LVL_ERROR);
}

/* Re-uploads of a file whose object vanished before its row. */
#define OFILE_REUPLOADS 3

/* Caller holds of->lock. The upload of of under rel was committed, but
 * as a removed row: before its row went in, the store's object was
 * replaced by another upload (another mount's, another route's) or
 * removed (seen: what the HEAD under the key lock found). Last writer
 * wins: the mount shows the store's object from now on, not these bytes.
 * The file is clean (nothing of it is owed to the store any more); when
 * no handle can write it again (leaving: writable handles going away with
 * this commit), it forgets its name, so that lookups, stats and new opens
 * see the store (handles still open read what they opened, as from a file
 * renamed over); the listing takes the store's object, and the kernel
 * forgets what it cached of the path (off the handler: inval.h). Its
 * attributes row is left as it is (the replacing upload's, or bound to
 * it) and read again when next shown. */
static void ofile_superseded(struct ofile *of, const char *rel,
			     const struct reception_seen *seen, int leaving)
{
	of->dirty = 0;
	of->in_store = !seen->gone;
	of->stored_size = seen->gone ? 0 : seen->size;
	/* base_tag stays: a later commit of this file is checked against
	 * the object that won here (review-held2 F5) */
	pthread_mutex_lock(&cfs->lock);
	of->attrs_unbound = 0;
	pthread_mutex_unlock(&cfs->lock);
	if (seen->gone)
		dcache_remove(rel);
	else
		dcache_upsert(rel, 0, seen->size, seen->mtime, seen->etag);
	attrov_forget_tree(rel);
	if (of->writers <= leaving) {
		pthread_mutex_lock(&cfs->lock);
		if (!of->unlinked && !of->hidden && !strcmp(of->rel, rel))
			of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
	}
	if (of->direct_to)
		log_warn("%s: the direct write into projects/%s was replaced "
			 "in reception before its row; not promoted",
			 rel, of->direct_to);
	inval_inbox(rel);
}

/* Caller holds of->lock: uploads the spool under rel and logs it. leaving:
 * writable handles of of that go away with this commit (a closing one).
 * pub (NULL: none): a publish from that name (ofile_publish), whose row
 * describes the upload and follows it to rel once it is recorded; rel's
 * own row is left as it is until then. A deferred publish of of
 * (pub_from: rename_pending, H5) is committed as such, its pending row
 * recorded at the rename; it ends when the upload is recorded (or
 * removed, or superseded), and stays after a failure. Errors as
 * upload_finish /
 * reception_commit, and EIO when the object was deleted by another client
 * before its row every time (OFILE_REUPLOADS). */
static int ofile_commit_key(struct ofile *of, const char *rel, int leaving,
			    const char *pub)
{
	int64_t now = ofile_mono_ms(); /* before the upload's end */
	int64_t based; /* since when a removal of rel wins over this file */
	struct reception_seen seen = {0};
	struct db_attrs_binding bind = {0};
	struct upload_result res;
	struct actor who, binder;
	struct ofile_meta m;
	uint64_t t0 = ctr_now_ns(), t1;
	int rc, tries, removed = 0, replaces, landed = 0, row_failed = 0;
	struct attrov cur;
	struct db_attrs own;
	char *token = NULL, *pending = NULL, *deferred = NULL;

	pthread_mutex_lock(&cfs->lock);
	if (!pub && of->pub_from) {
		deferred = strdup(of->pub_from);
		pending = strdup(of->pub_pending);
	}
	pthread_mutex_unlock(&cfs->lock);
	if (!pub && of->pub_from && (!deferred || !pending)) {
		free(deferred);
		free(pending);
		return -ENOMEM;
	}
	if (deferred)
		pub = deferred;
	/* A deferred publish whose pending row went: its file was unlinked
	 * on another mount (db_attrs_defer_unlink, review-h5 N1). Read
	 * before any upload, it stores nothing (never over what is at rel
	 * now) and fails ENOENT, as a file whose key another mount removed
	 * (below): the writer learns that her bytes are not stored. */
	based = deferred ? ofile_mono_ms() : of->based_ms;
	rc = deferred ? attrov_defer_has(pending) : 1;
	if (rc == 0) {
		log_info("inbox/%s: unlinked on another mount while open "
			 "(its deferred publish's row went): not stored",
			 rel);
		pthread_mutex_lock(&cfs->lock);
		of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
		of->dirty = 0;
		of->in_store = 0;
		dcache_remove(rel);
		ofile_defer_clear(of);
		rc = -ENOENT;
		goto out;
	}
	/* Still there: a removal of rel since its rename did not remove
	 * this file (who made it may not: db_attrs_defer_unlink kept its
	 * row); one after this read wins at the commit (based), and one by
	 * who may remove it only marks its row, which keeps the name until
	 * the commit refuses this upload (review n19 Y1: no other file is
	 * stored at rel meanwhile for it to replace). */
	if (rc < 0)
		goto out;
	rc = ofile_meta(of, pub ? pub : rel, &m);
	if (rc)
		goto out;
	/* received_by: who changed the file, not who happens to commit it
	 * (an fsync through another descriptor, a child's close). */
	if (of->has_writer)
		cfs_actor_uid(&who, of->writer);
	else
		cfs_actor(&who);
	/* An overwrite cannot be undone if its row then fails: check first.
	 * (A new object is simply deleted again in that case.) Whether it is
	 * one is the database's answer, not this file's belief: a name another
	 * mount stored since this file was created (its claim lapsed and was
	 * taken over here) has a live row whose object this upload replaces. */
	rc = reception_will_replace(cfs->rcp, rel, of->in_store);
	replaces = rc == 1;
	if (rc == 1)
		rc = 0;
	if (rc) {
		ofile_upload_error(of, rel, &who, rc);
		hist_observe_since(HIST_UPLOAD, t0, 1);
		goto out;
	}
	/* From the upload to its row, the key is ours: the foreign-upload
	 * logger must not log the object it sees meanwhile. */
	rc = reception_busy_add(cfs->rcp, rel);
	if (rc) {
		ofile_upload_error(of, rel, &who, rc);
		hist_observe_since(HIST_UPLOAD, t0, 1);
		goto out;
	}
	/* Its attributes describe what this upload stores: unbound from the
	 * object replaced (one replaced by another route meanwhile is not
	 * this file's: its row goes), bound to the new one once recorded. */
	rc = pub && !deferred ? 0 : ofile_prepare_attrs(of, rel, pub != NULL);
	if (rc)
		ofile_upload_error(of, rel, &who, rc); /* nothing stored */
	if (rc == 0)
		rc = upload_set_key(of->up, rel);
	/* That bind (a new file's claim, R7; or the row unbound above) or a
	 * publish's row move (D1, D2) runs in the transaction of its
	 * reception row, right after the row is recorded live under the key
	 * lock (one COMMIT; no crash window between the two; D8's check
	 * holds there): bind.done. Not when it would wait on a row another
	 * transaction holds, nor a claim's take (it logs first): then below,
	 * after the commit, as before. A failing bind statement there fails
	 * the row's transaction: the close fails and the upload is undone,
	 * as for any failed row. */
	pthread_mutex_lock(&cfs->lock);
	/* A publish moves only its own claim's row (E3): its token too. */
	token = of->attrs_unbound && of->claim ? strdup(of->claim) : NULL;
	cur = of->creator;
	pthread_mutex_unlock(&cfs->lock);
	/* A publish's attributes are recorded before its object lands at
	 * rel (E1): pending there, shown for it until its rows commit (a
	 * deferred one's since its rename). */
	if (rc == 0 && pub && !deferred)
		rc = attrov_pend_publish(pub, rel, token, &cur, &pending);
	/* A deferred publish's claim at pub went at its rename: no row
	 * there is its own (its pending token matches none). */
	if (deferred && !token)
		token = strdup(pending);
	if (deferred && !token)
		rc = -ENOMEM;
	cfs_actor(&binder);
	bind.claimer = token;
	bind.from = pub;
	bind.pending = pending;
	/* A deferred publish's claim at pub went at its rename: to's row
	 * takes its own attributes in the row's transaction. */
	if (deferred) {
		attrov_row_of(&cur, &own);
		bind.attrs = &own;
	}
	bind.who = &binder;
	/* An object deleted by another client before its row (the commit
	 * finds none under the key lock: -ENODATA) is uploaded again from
	 * the spool, at most OFILE_REUPLOADS times; then the file fails with
	 * EIO (never 0 without its object and row). */
	for (tries = 0; rc == 0; tries++) {
		row_failed = 0;
		/* Its pending row describes this upload's object only (its
		 * tag), no other that arrives at rel (review-h5 N2). */
		if (pending) {
			rc = attrov_pend_tag(pending, of->up);
			if (rc) {
				ofile_upload_error(of, rel, &who, rc);
				break;
			}
		}
		t1 = ctr_now_ns();
		rc = upload_finish(of->up, of->size, m.kv, 4, &res);
		stage_observe_since(STG_UPLOAD_FINISH, t1);
		if (rc && res.sent) {
			struct errmap_cause cause;

			/* Answered with an error (or not at all) after the
			 * write took effect (review G1): the object is this
			 * upload when its bytes say so, and is recorded as
			 * such; when that cannot be told, a publish's
			 * pending row stays (shown for what may be its
			 * object, never the defaults). Nothing sent:
			 * nothing of it can be there. */
			errmap_cause(&cause);
			landed = reception_landed(cfs->rcp, rel, &res);
			if (landed == 1)
				rc = 0;
			else /* its failure's cause for the log, not the
				look's requests' */
				errmap_cause_restore(&cause);
		}
		if (rc) {
			ofile_upload_error(of, rel, &who, rc);
			break;
		}
		t1 = ctr_now_ns();
		rc = reception_commit(cfs->rcp, rel, &res, &who, !replaces,
				      ofile_mono_ms() - based, &bind, &seen);
		/* (-ENODATA: its object was deleted, no undo started) */
		row_failed = rc != 0 && rc != -ENODATA;
		stage_observe_since(STG_RECEPTION_ROW, t1);
		/* (never an upload's own ENOENT: NoSuchUpload, NoSuchBucket) */
		removed = rc == -ENOENT;
		if (rc != -ENODATA)
			break;
		if (tries >= OFILE_REUPLOADS) {
			log_error("%s/%s: its object was deleted before its "
				  "row %d times: not stored",
				  cfs->cfg.reception_bucket, rel, tries + 1);
			rc = -EIO;
			ofile_upload_error(of, rel, &who, rc);
			break;
		}
		rc = 0; /* the spool goes up again */
	}
	/* A row that failed after the object landed: its undo logs an
	 * overwrite late (the pending row then settles onto it), or deletes
	 * a new object; while it waits for the database, the object stays
	 * and is shown with the publish's attributes, never the defaults. */
	if (row_failed && !removed && landed >= 0 && pending &&
	    reception_undo_waits(cfs->rcp, rel, res.etag))
		landed = -EINPROGRESS;
	reception_busy_del(cfs->rcp, rel);
	if (removed) {
		/* Another mount removed the key after this file was opened
		 * (or last stored): the removal won; like a local unlink,
		 * the name is free and this content is not stored. A
		 * publish's rename (pub, not deferred) fails instead: the
		 * file stays under its name (ofile_publish, review n19 Y2:
		 * it was unlinked with it before). */
		pthread_mutex_lock(&cfs->lock);
		if (!pub || deferred)
			of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
		of->dirty = 0;
		of->in_store = 0;
		dcache_remove(rel);
		attrov_unpend(rel, pending);
		if (deferred)
			ofile_defer_clear(of);
		free(token);
		hist_observe_since(HIST_UPLOAD, t0, 1);
		goto out;
	}
	if (rc == 0 && seen.superseded) {
		of->based_ms = now;
		ofile_superseded(of, rel, &seen, leaving);
	} else if (rc == 0) {
		of->based_ms = now;
		of->dirty = 0;
		of->in_store = 1;
		of->stored_size = res.size;
		snprintf(of->committed, sizeof(of->committed), "%s", res.etag);
		snprintf(of->base_tag, sizeof(of->base_tag), "%s", res.tag);
		of->base_known = 1;
		pthread_mutex_lock(&cfs->lock);
		cur = of->creator;     /* as it is now: chmod since included */
		of->attrs_unbound = 0; /* bound: the claim ends */
		pthread_mutex_unlock(&cfs->lock);
		/* A new file's row is bound only while it is still its claim
		 * (R7): one taken by another create meanwhile becomes this
		 * file's again, never theirs on these bytes. A published
		 * file's row moves to rel only now (D1, D2): until its
		 * object is recorded there, rel's old object shows with its
		 * own row. Done with the row (bind.done), or now. */
		/* One that fails now is retried (D10: never left to lapse). */
		if (bind.done) {
			attrov_bound(rel, res.etag, NULL, token != NULL, pub);
		} else if (pub) {
			if (attrov_publish(pub, rel, res.etag, token, &cur,
					   pending) != 0)
				rebind_add(rel, res.etag, token, &cur, pub,
					   pending);
		} else if (token) {
			if (attrov_bind_claim(rel, res.etag, token, &cur) != 0)
				rebind_add(rel, res.etag, token, &cur, NULL,
					   NULL);
		} else {
			attrov_bind(rel, res.etag, NULL);
		}
		/* A direct write: promoted by direct_settle, under this
		 * lock hold or the next. */
		of->direct_pending = of->direct_to && !of->direct_hold;
		dcache_upsert(rel, 0, res.size, of->mtime.tv_sec, res.etag);
	} else if (!of->in_store) {
		dcache_remove(rel);
	}
	if (deferred && rc == 0)
		ofile_defer_clear(of); /* published (or superseded) */
	if (deferred && rc && !seen.superseded)
		; /* kept: the file is still to be published at rel */
	else if ((rc && landed >= 0) || seen.superseded)
		attrov_unpend(rel, pending); /* not what rel shows */
	else if (rc)
		log_warn("inbox/%s: the attributes of its publish are kept "
			 "pending (its object may be there)",
			 rel);
	free(token);
	hist_observe_since(HIST_UPLOAD, t0, rc != 0);
out:
	free(pending);
	free(deferred);
	return rc;
}

/* Caller holds of->lock. */
int ofile_commit(struct ofile *of, int leaving)
{
	char *rel;
	int rc, skip;

	if (of->failed)
		return of->failed;
	pthread_mutex_lock(&cfs->lock);
	skip = of->unlinked || of->hidden;
	rel = skip ? NULL : strdup(of->rel);
	pthread_mutex_unlock(&cfs->lock);
	if (skip || !of->dirty || of->local) {
		free(rel);
		return 0;
	}
	if (!rel)
		return -ENOMEM;
	rc = ofile_commit_key(of, rel, leaving, NULL);
	free(rel);
	return rc;
}

/* Caller holds of->lock. Its attributes row stays under its name during
 * its upload to `to`, and to's row as it is (describing to's object, which
 * is shown meanwhile, and stays after a failure or a crash); the upload's
 * record moves it to `to`, bound to the new object (R8: a temp file's
 * claim ends there), in one transaction (attrov_publish). */
int ofile_publish(struct ofile *of, const char *to, int replaces)
{
	int was_local = of->local, was_in_store = of->in_store;
	uint64_t was_stored_size = of->stored_size;
	char *n = strdup(to), *from = ofile_rel(of), *old;
	int rc;

	if (!n || !from) {
		rc = -ENOMEM;
		goto out;
	}
	if (was_local) {
		of->up =
		    upload_new(cfs->pool, cfs->s3, cfs->cfg.reception_bucket,
			       to, of->fd, cfs->cfg.part_size);
		if (!of->up) {
			rc = -ENOMEM;
			goto out;
		}
	}
	of->local = 0;
	of->dirty = 1;
	of->in_store = replaces;
	of->based_ms = ofile_mono_ms(); /* the name is bound now */
	rc = ofile_commit_key(of, to, 0, from);
	if (rc) {
		/* Stays what it was, under its name (a local file stays
		 * local: its temp name is never uploaded). */
		if (was_local) {
			upload_free(of->up);
			of->up = NULL;
			of->local = 1;
		}
		of->in_store = was_in_store;
		of->stored_size = was_stored_size;
		of->dirty = 1;
		goto out;
	}
	pthread_mutex_lock(&cfs->lock);
	old = of->rel;
	of->rel = n;
	n = NULL;
	pthread_mutex_unlock(&cfs->lock);
	free(old);
out:
	free(from);
	free(n);
	return rc;
}

void ofile_hold_attrs(struct ofile *of, const struct stat *st)
{
	pthread_mutex_lock(&cfs->lock);
	if (!of->held_set) {
		of->held_uid = st->st_uid;
		of->held_gid = st->st_gid;
		of->held_mode = st->st_mode & 07777;
		of->held_set = 1;
	}
	pthread_mutex_unlock(&cfs->lock);
}

void ofile_note_attrs(const char *rel, const struct db_attrs *r)
{
	struct fuse_context *ctx = cfs_context();
	uid_t by = ctx ? ctx->uid : (uid_t)-1; /* no request: nobody */
	struct ofile *of;

	pthread_mutex_lock(&cfs->lock);
	/* A change made through this mount by the owner of the file open
	 * here under rel, or by root, is that file's: the database made it
	 * on the row at rel, which they may change (another user's row
	 * there, another object's, changes nothing of this file). */
	for (of = cfs->ofiles; of; of = of->next) {
		if (of->unlinked || of->hidden || !of->held_set ||
		    strcmp(of->rel, rel) || by == (uid_t)-1 ||
		    (by != 0 && by != of->held_uid))
			continue;
		if (r->what & DB_ATTR_MODE)
			of->held_mode = (mode_t)(r->mode & 07777);
		if (r->what & DB_ATTR_OWNER) {
			of->held_uid = (uid_t)r->uid;
			of->held_gid = (gid_t)r->gid;
		}
	}
	/* a new file's, or a deferred publish's (its own attributes until
	 * its close: review-h5 N6, a file stored before among them) */
	for (of = cfs->ofiles; of; of = of->next)
		if (!of->unlinked && !of->hidden &&
		    (of->attrs_unbound || of->pub_from) &&
		    !strcmp(of->rel, rel))
			break;
	if (of && (r->what & DB_ATTR_MODE)) {
		of->creator.mode = (mode_t)(r->mode & 07777);
		of->creator.has_mode = 1;
		/* its own claim's row: its object's */
		of->held_mode = of->creator.mode;
	}
	if (of && (r->what & DB_ATTR_OWNER)) {
		of->creator.uid = (uid_t)r->uid;
		of->creator.gid = (gid_t)r->gid;
		of->creator.has_owner = 1;
		of->held_uid = of->creator.uid;
		of->held_gid = of->creator.gid;
	}
	if (of && (r->what & DB_ATTR_ATIME)) {
		of->creator.atime = attrs_ns_ts(r->atime_ns);
		of->creator.has_atime = 1;
	}
	if (of && (r->what & DB_ATTR_MTIME)) {
		of->creator.mtime = attrs_ns_ts(r->mtime_ns);
		of->creator.has_mtime = 1;
	}
	pthread_mutex_unlock(&cfs->lock);
}

/* Caller holds of->lock. */
int ofile_rename_uncommitted(struct ofile *of, const char *to, int replaces,
			     uint64_t to_size, const struct seen_obj *base)
{
	int to_local = cfg_is_temp_name(&cfs->cfg, names_basename(to));
	struct upload *up = NULL;
	struct ofile *other, **pp;
	char *n = strdup(to), *old;

	if (!n)
		return -ENOMEM;
	if (of->local && !to_local) {
		/* Its writer's close uploads it: the whole spool, whatever
		 * is appended later. */
		up = upload_new(cfs->pool, cfs->s3, cfs->cfg.reception_bucket,
				to, of->fd, cfs->cfg.part_size);
		if (!up) {
			free(n);
			return -ENOMEM;
		}
		if (of->size)
			upload_invalidate(up);
		of->up = up;
		of->local = 0;
		of->dirty = 1;
	} else if (!of->local && to_local) {
		ofile_make_local(of);
	}
	if (replaces) {
		of->in_store = 1;
		of->stored_size = to_size;
		/* It replaces `to`'s object, as the rename allowed: the
		 * object the rename checked is its base now, so that
		 * another put there later (another mount's) is checked at
		 * its commit (review-held4 F1, review-held5 N1). None seen:
		 * a base no object has, so that whatever is there at the
		 * commit is checked (fails closed: review-held6 P1). */
		of->committed[0] = '\0';
		of->base_known = 1;
		snprintf(of->loaded, sizeof(of->loaded), "%s",
			 base && base->etag[0] ? base->etag : OFILE_NEW);
		snprintf(of->base_tag, sizeof(of->base_tag), "%s",
			 base && base->etag[0] ? base->tag : "");
	}
	/* Its content is based on `to` from now on: a removal of `to`
	 * before this rename (by any mount) is not one of this file. */
	of->based_ms = ofile_mono_ms();
	/* A local file under `to` is replaced (an open one was hidden by
	 * libfuse before); then of takes the name. */
	pthread_mutex_lock(&cfs->lock);
	for (pp = &cfs->ofiles; (other = *pp) != NULL; pp = &other->next)
		if (other != of && !other->unlinked && !strcmp(other->rel, to))
			break;
	if (other) {
		other->unlinked = 1;
		if (other->refs == 0)
			*pp = other->next;
		else
			other = NULL; /* freed by its last ofile_put */
	}
	old = of->rel;
	of->rel = n;
	pthread_mutex_unlock(&cfs->lock);
	free(old);
	if (other)
		ofile_free(other);
	return 0;
}

/* Caller holds of->lock. */
void ofile_make_local(struct ofile *of)
{
	upload_free(of->up);
	of->up = NULL;
	of->local = 1;
	of->in_store = 0;
}

void ofile_hide(struct ofile *of, const char *to)
{
	char *n = strdup(to), *old = NULL;

	pthread_mutex_lock(&cfs->lock);
	of->hidden = 1;
	if (n) {
		old = of->rel;
		of->rel = n;
	} else {
		of->unlinked = 1; /* no name: found only by its handles */
	}
	pthread_mutex_unlock(&cfs->lock);
	free(old);
}

/* Caller holds of->lock. */
int ofile_unhide(struct ofile *of, const char *hidden, const char *rel)
{
	char *n = strdup(rel), *old = NULL;
	struct ofile *other;
	int rc = 0;

	if (!n)
		return -ENOMEM;
	pthread_mutex_lock(&cfs->lock);
	for (other = cfs->ofiles; other; other = other->next)
		if (!other->unlinked && !strcmp(other->rel, rel))
			break;
	if (other)
		rc = -EEXIST;
	else if (of->unlinked || !of->hidden || strcmp(of->rel, hidden))
		rc = -ENOENT;
	if (rc == 0) {
		old = of->rel;
		of->rel = n;
		of->hidden = 0;
		n = NULL;
	}
	pthread_mutex_unlock(&cfs->lock);
	free(old);
	free(n);
	return rc;
}

/* fs.h. */
void ofile_set_node(struct ofile *of, const char *node)
{
	char *n = strdup(node), *old;

	pthread_mutex_lock(&cfs->lock);
	old = of->node_name;
	of->node_name = n;
	pthread_mutex_unlock(&cfs->lock);
	free(old);
}

char *ofile_node_rel(const char *node)
{
	struct ofile *of;
	char *rel = NULL;

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next)
		if (of->node_name && !of->unlinked && !of->hidden &&
		    !strcmp(of->node_name, node)) {
			rel = strdup(of->rel);
			break;
		}
	pthread_mutex_unlock(&cfs->lock);
	return rel;
}

void ofile_node_forget(const char *node)
{
	struct ofile *of;
	char *old = NULL;

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next)
		if (of->node_name && !strcmp(of->node_name, node)) {
			old = of->node_name;
			of->node_name = NULL;
			break;
		}
	pthread_mutex_unlock(&cfs->lock);
	free(old);
}

/* Caller holds of->lock. */
void ofile_note_writer(struct ofile *of)
{
	struct fuse_context *ctx = cfs_context();
	struct ofile_writer_id *w;
	gid_t list[OFILE_WRITER_GROUPS];
	int i, n;

	if (!ctx || ctx->uid == 0)
		return;
	for (i = 0; i < of->nwids; i++)
		if (of->wids[i].uid == ctx->uid)
			return;
	if (of->nwids == OFILE_WRITER_IDS) {
		of->wids_over = 1;
		return;
	}
	w = &of->wids[of->nwids++];
	w->uid = ctx->uid;
	w->groups[0] = ctx->gid;
	w->ngroups = 1;
	n = cfs_getgroups(OFILE_WRITER_GROUPS, list);
	for (i = 0; i < n && i < OFILE_WRITER_GROUPS &&
		    w->ngroups < OFILE_WRITER_GROUPS;
	     i++)
		w->groups[w->ngroups++] = list[i];
}

int ofile_base_head(struct ofile *of, const char *rel, const char *etag)
{
	struct s3_object_info info;
	const char *tag;
	int rc;

	of->base_tag[0] = '\0';
	of->base_known = 0;
	if (!etag[0])
		return 0; /* no object checked: not known, as before */
	rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);
	if (rc && rc != -ENOENT)
		goto fail;
	if (rc == 0 && !strcmp(info.etag, etag)) {
		tag = s3_meta_get(&info, UPLOAD_TAG);
		snprintf(of->base_tag, sizeof(of->base_tag), "%s",
			 tag ? tag : "");
		of->base_known = 1;
		s3_object_info_free(&info);
		return 0;
	}
	/* replaced (or removed) since its check: the listing takes it */
	if (rc == 0) {
		dcache_upsert(rel, 0, info.size, info.mtime, info.etag);
		s3_object_info_free(&info);
	} else {
		dcache_remove(rel);
	}
	inval_inbox(rel);
	/* gone: ESTALE, so that the kernel looks the name up again (and
	 * sends a create); another one: checked again here */
	rc = rc == -ENOENT ? -ESTALE : -EAGAIN;
fail:
	/* Every handle sharing it fails so; a new try starts over with a
	 * new ofile (as ofile_load's failure). */
	of->failed = rc;
	pthread_mutex_lock(&cfs->lock);
	of->unlinked = 1;
	pthread_mutex_unlock(&cfs->lock);
	return rc;
}

void ofile_set_writer(struct ofile *of)
{
	struct fuse_context *ctx = cfs_context();

	if (!ctx)
		return;
	of->writer = ctx->uid;
	of->has_writer = 1;
}

/* Caller holds of->lock. */
int ofile_truncate(struct ofile *of, uint64_t size)
{
	if (of->failed)
		return of->failed;
	if (ftruncate(of->fd, (off_t)size) != 0)
		return -errno;
	if (of->up) {
		if (size == 0)
			upload_restart(of->up);
		else if (size != of->size)
			upload_invalidate(of->up);
	}
	of->size = size;
	of->dirty = 1;
	of->ready = 1;
	clock_gettime(CLOCK_REALTIME, &of->mtime);
	return 0;
}

/* Caller holds of->lock. */
void ofile_stat(struct ofile *of, struct stat *st)
{
	int hidden;

	pthread_mutex_lock(&cfs->lock);
	hidden = of->hidden || of->unlinked;
	pthread_mutex_unlock(&cfs->lock);
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | (cfs->cfg.file_mode & 07777);
	st->st_nlink = hidden ? 0 : 1; /* an open, unlinked file has none */
	st->st_size = (off_t)of->size;
	st->st_blocks = (blkcnt_t)((of->size + 511) / 512);
	st->st_blksize = 1 << 20;
	st->st_mtim = of->mtime;
	st->st_ctim = of->mtime;
	st->st_atim = of->mtime;
	/* Until attrov_apply: as any file with no recorded owner. */
	st->st_uid = cfs->foreign_uid;
	st->st_gid = cfs->foreign_gid;
}

/* A deferred publish's pending row to move (ofile_rebase). */
struct defer_moved {
	struct defer_moved *next;
	char *key, *to, *pending;
};

void ofile_rebase(const char *from_arg, const char *to)
{
	char *from = strdup(from_arg); /* from_arg may be an of->rel */
	struct defer_moved *moved = NULL, *m;
	size_t fl;
	struct ofile *of;

	if (!from)
		return;
	fl = strlen(from);

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next) {
		char *n = NULL;

		if (of->unlinked)
			continue;
		if (!strcmp(of->rel, from))
			n = strdup(to);
		else if (!strncmp(of->rel, from, fl) && of->rel[fl] == '/' &&
			 asprintf(&n, "%s%s", to, of->rel + fl) < 0)
			n = NULL;
		/* a deferred publish's pending row follows (H5) */
		m = n && of->pub_pending && !of->hidden ? calloc(1, sizeof(*m))
							: NULL;
		if (m) {
			m->key = of->rel;
			m->to = strdup(n);
			m->pending = strdup(of->pub_pending);
			m->next = moved;
			moved = m;
		}
		if (n) {
			if (!m)
				free(of->rel);
			of->rel = n; /* the upload follows at commit */
		}
	}
	pthread_mutex_unlock(&cfs->lock);
	while ((m = moved) != NULL) {
		moved = m->next;
		if (m->to && m->pending)
			attrov_defer_move(m->key, m->to, m->pending);
		free(m->key);
		free(m->to);
		free(m->pending);
		free(m);
	}
	free(from);
}
