/* attrs.c - attributes of inbox/ files: the mode and owner given at create
 * and mkdir, and those set with chmod, chown and utimens. PostgreSQL holds
 * them (file_attrs, db_attrs.h) so they survive remounts and every mount
 * sharing the database sees them; each chmod/chown/utimens is logged there
 * with who and when (file_attr_changes).
 *
 * This file keeps a cache in front of it: one snapshot per directory of
 * the bucket (its direct children's rows, fetched in one query), refreshed
 * when older than the listing TTL ([fs] cache_ttl_ms), so a change made by
 * another mount shows within a few seconds. Changes made here go to the
 * database first (an error there: -errno, nothing changed) and then into
 * the snapshot. A snapshot load that raced with a change made here is not
 * applied (its epoch moved): the next getattr loads again.
 *
 * Everything below is protected by cfs->lock; a load runs without it (one
 * loader per directory, marked by dirsnap.loading; others use the previous
 * snapshot, or wait for the first one). */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_attrs.h"
#include "fs.h"
#include "log.h"
#include "nameidx.h"

struct dirsnap {
	char *dir;		/* "" (inbox/) or "a/b/" */
	struct nameidx kids;	/* protected by cfs->lock: rel -> attrov */
	struct timespec loaded; /* protected by cfs->lock: CLOCK_MONOTONIC */
	time_t loaded_rt; /* protected by cfs->lock: CLOCK_REALTIME when the
			     last successful load started */
	uint64_t epoch;	  /* protected by cfs->lock: bumped by each change */
	int loading;	  /* protected by cfs->lock: a load is running */
	int ok;		  /* protected by cfs->lock: loaded at least once */
};

static struct nameidx snaps = NAMEIDX_INIT; /* protected by cfs->lock:
					       dir -> struct dirsnap * */
static pthread_cond_t loaded_cond = PTHREAD_COND_INITIALIZER; /* cfs->lock */

static void attrov_free(struct attrov *a)
{
	if (!a)
		return;
	free(a->rel);
	free(a->etag);
	free(a->miss);
	free(a->alias);
	free(a);
}

/* The directory of rel as a key prefix ("a/b.txt" -> "a/", "b" -> ""),
 * malloc'd, or NULL. */
static char *dir_of(const char *rel)
{
	const char *s = strrchr(rel, '/');

	return s ? strndup(rel, (size_t)(s - rel) + 1) : strdup("");
}

/* Caller holds cfs->lock. rel's directory snapshot (created when create is
 * set), or NULL. */
static struct dirsnap *snap_find(const char *rel, int create)
{
	struct dirsnap *s;
	uintptr_t v;
	char *dir = dir_of(rel);

	if (!dir)
		return NULL;
	if (nameidx_get(&snaps, dir, &v)) {
		free(dir);
		return (struct dirsnap *)v;
	}
	if (!create) {
		free(dir);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s || nameidx_put(&snaps, dir, (uintptr_t)s)) {
		free(s);
		free(dir);
		return NULL;
	}
	s->dir = dir;
	return s;
}

static void kids_free(struct nameidx *kids)
{
	size_t i;

	for (i = 0; i < kids->cap; i++)
		if (kids->slots[i].key)
			attrov_free((struct attrov *)kids->slots[i].val);
	nameidx_free(kids);
}

struct timespec attrs_ns_ts(int64_t ns)
{
	struct timespec t;

	t.tv_sec = (time_t)(ns / 1000000000);
	t.tv_nsec = (long)(ns % 1000000000);
	if (t.tv_nsec < 0) {
		t.tv_sec--;
		t.tv_nsec += 1000000000;
	}
	return t;
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* A cache entry from a database row (rel taken over), or NULL. */
static struct attrov *attrov_from_row(struct db_attrs *r)
{
	struct attrov *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->rel = r->key;
	r->key = NULL;
	a->etag = r->etag;
	r->etag = NULL;
	if (r->what & DB_ATTR_MODE) {
		a->mode = (mode_t)(r->mode & 07777);
		a->has_mode = 1;
	}
	if (r->what & DB_ATTR_OWNER) {
		a->uid = (uid_t)r->uid;
		a->gid = (gid_t)r->gid;
		a->has_owner = 1;
	}
	if (r->what & DB_ATTR_ATIME) {
		a->atime = attrs_ns_ts(r->atime_ns);
		a->has_atime = 1;
	}
	if (r->what & DB_ATTR_MTIME) {
		a->mtime = attrs_ns_ts(r->mtime_ns);
		a->has_mtime = 1;
	}
	a->ctime = attrs_ns_ts(r->ctime_ns);
	a->has_ctime = 1;
	return a;
}

static long ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(now.tv_sec - t->tv_sec) * 1000 +
	       (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* Caller holds cfs->lock (released while the database is asked); s is
 * marked loading by the caller, and no longer when this returns. Loads s
 * from the database: 0, -EAGAIN (changed here meanwhile: the load may
 * predate that change, so it is not applied), or -errno (logged). */
static int snap_load_locked(struct dirsnap *s)
{
	struct db_attrs *rows = NULL;
	struct nameidx kids = NAMEIDX_INIT;
	uint64_t epoch = s->epoch;
	const char *dir = s->dir; /* never freed while loads run */
	time_t started = time(NULL);
	size_t n = 0, i;
	int rc;

	pthread_mutex_unlock(&cfs->lock);
	rc = db_attrs_list_dir(cfs->db, cfs->cfg.reception_bucket, dir, &rows,
			       &n);
	for (i = 0; rc == 0 && i < n; i++) {
		struct attrov *a = attrov_from_row(&rows[i]);

		if (!a || nameidx_put(&kids, a->rel, (uintptr_t)a)) {
			attrov_free(a);
			rc = -ENOMEM;
		}
	}
	db_attrs_free(rows, n);
	pthread_mutex_lock(&cfs->lock);
	s->loading = 0;
	pthread_cond_broadcast(&loaded_cond);
	if (rc == 0 && s->epoch != epoch)
		rc = -EAGAIN;
	if (rc) {
		if (rc != -EAGAIN)
			log_error("attributes of inbox/%s: %s", dir,
				  strerror(-rc));
		kids_free(&kids);
		return rc;
	}
	kids_free(&s->kids);
	s->kids = kids;
	s->ok = 1;
	s->loaded_rt = started;
	clock_gettime(CLOCK_MONOTONIC, &s->loaded);
	return 0;
}

static int bg_loads;   /* protected by cfs->lock: background loads running */
static int bg_stopped; /* protected by cfs->lock: unmounting, none starts */

/* A background refresh of a stale snapshot: getattr never waits on the
 * database for a directory it has attributes for (a frozen server must
 * not stall stat; SPEC §7). */
static void *snap_bg_load(void *arg)
{
	struct dirsnap *s = arg;

	pthread_mutex_lock(&cfs->lock);
	if (snap_load_locked(s) != 0)
		/* Tried: served stale until the TTL passes again. */
		clock_gettime(CLOCK_MONOTONIC, &s->loaded);
	bg_loads--;
	pthread_cond_broadcast(&loaded_cond);
	pthread_mutex_unlock(&cfs->lock);
	return NULL;
}

/* Caller holds cfs->lock (released while the database is asked). Makes
 * rel's directory snapshot fresh enough, and returns it (NULL: -errno in
 * *err: never loaded and the database cannot be read, or ENOMEM). A
 * snapshot loaded before is returned at once: when stale, a background
 * thread refreshes it. A directory never loaded is loaded now (waiting
 * for a load another thread runs). */
static struct dirsnap *snap_fresh_locked(const char *rel, int *err)
{
	struct dirsnap *s = snap_find(rel, 1);
	pthread_attr_t at;
	pthread_t t;
	int rc, tries;

	*err = -ENOMEM;
	if (!s)
		return NULL;
	for (tries = 0;; tries++) {
		if (s->ok) {
			if (s->loading || bg_stopped ||
			    ms_since(&s->loaded) < (long)cfs->cfg.cache_ttl_ms)
				return s;
			s->loading = 1;
			bg_loads++;
			rc = pthread_attr_init(&at);
			if (rc == 0) {
				pthread_attr_setdetachstate(
				    &at, PTHREAD_CREATE_DETACHED);
				rc = pthread_create(&t, &at, snap_bg_load, s);
				pthread_attr_destroy(&at);
			}
			if (rc == 0)
				return s;
			bg_loads--;
			(void)snap_load_locked(s); /* no thread: here */
			return s;
		}
		if (s->loading) {
			pthread_cond_wait(&loaded_cond, &cfs->lock);
			continue;
		}
		s->loading = 1;
		rc = snap_load_locked(s);
		if (rc == -EAGAIN && tries < 3)
			continue;
		if (rc && !s->ok) {
			*err = rc == -EAGAIN ? -EIO : rc;
			return NULL;
		}
		return s;
	}
}

/* Caller holds cfs->lock. The entry for rel in s (created empty when
 * create is set), or NULL. */
static struct attrov *kid_find(struct dirsnap *s, const char *rel, int create)
{
	struct attrov *a;
	uintptr_t v;

	if (nameidx_get(&s->kids, rel, &v))
		return (struct attrov *)v;
	if (!create)
		return NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->rel = strdup(rel);
	if (!a->rel || nameidx_put(&s->kids, a->rel, (uintptr_t)a)) {
		attrov_free(a);
		return NULL;
	}
	return a;
}

/* Caller holds cfs->lock. Forgets the cached entry of rel. */
static void forget_entry_locked(const char *rel)
{
	struct dirsnap *s = snap_find(rel, 0);
	uintptr_t v;

	if (!s)
		return;
	s->epoch++;
	if (nameidx_get(&s->kids, rel, &v)) {
		nameidx_del(&s->kids, rel);
		attrov_free((struct attrov *)v);
	}
}

/* Caller holds cfs->lock. Forgets what is cached under rel/: those
 * snapshots are loaded again before anything in them is shown. */
static void forget_tree_locked(const char *rel)
{
	size_t i, l = strlen(rel);

	for (i = 0; i < snaps.cap; i++) {
		const char *k = snaps.slots[i].key;
		struct dirsnap *s;

		if (!k || strncmp(k, rel, l) || k[l] != '/')
			continue;
		s = (struct dirsnap *)snaps.slots[i].val;
		s->epoch++;
		s->ok = 0;
		kids_free(&s->kids);
	}
}

/* Does a row bound to a (NULL: not bound) describe the object with ETag
 * etag (NULL: not known, any; "": no stored object)? */
static int binds(const char *a, const char *etag)
{
	if (!etag || !a)
		return 1;
	return !strcmp(a, etag);
}

/* Caller holds cfs->lock. Does entry a describe the object the store
 * shows with ETag etag (as binds)? */
static int entry_binds(const struct attrov *a, const char *etag)
{
	return binds(a->etag, etag) ||
	       (etag && a->alias && !strcmp(a->alias, etag));
}

static void cache_set(const char *rel, const struct attrov *in, unsigned what,
		      const struct db_attrs *r, const char *etag, char *bound,
		      int64_t ctime_ns);
static void reload_entry_locked(const char *rel);

/* A change named the object with ETag etag ("": none stored) at rel, and
 * the database refused it: rel's row is bound to another object. Is the
 * row stale, the store holding etag's object at rel now (HEAD: unlocked,
 * before the change is made again)? 0 yes; -ESTALE no (the caller's view
 * of rel is older than the store: review-T H-b), the listing's entry for
 * rel then set to what the store holds; or the HEAD's errno (EIO,
 * ENOMEM, ...). */
static int store_holds(const char *rel, const char *etag)
{
	struct s3_object_info info = {0};
	int rc;

	rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);
	if (rc == -ENOENT && !*etag)
		return 0;
	if (rc == -ENOENT) {
		dcache_remove(rel);
	} else if (rc == 0 && strcmp(info.etag, etag)) {
		dcache_upsert(rel, 0, info.size, info.mtime, info.etag);
		rc = -ESTALE;
	}
	s3_object_info_free(&info);
	return rc == -ENOENT ? -ESTALE : rc;
}

/* Who may make the change what (not a RESET: the daemon's own), as the
 * database checks it (db_attrs_may): the caller of the current FUSE
 * request (root: allowed all), its groups into groups[ngroups max]; st
 * (may be NULL: a file) tells a directory's defaults from a file's. NULL
 * when nothing is checked (no request). */
static const struct db_attrs_may *may_of(unsigned what, const struct stat *st,
					 struct db_attrs_may *may,
					 int64_t *groups, size_t ngroups)
{
	struct fuse_context *ctx = cfs_context();
	gid_t list[256];
	int n, i;

	if ((what & ATTROV_RESET) || !ctx || ngroups < 2)
		return NULL;
	memset(may, 0, sizeof(*may));
	if (what & ATTROV_MODE)
		may->kind = !(what & ATTROV_KILLPRIV) ? DB_MAY_CHMOD
			    : what & ATTROV_OPENW     ? DB_MAY_KILL_OPEN
						      : DB_MAY_KILL;
	else if (what & ATTROV_OWNER)
		may->kind = DB_MAY_CHOWN;
	else
		may->kind = what & ATTROV_NOW ? DB_MAY_TOUCH : DB_MAY_TIMES;
	may->uid = ctx->uid;
	groups[0] = ctx->gid;
	may->ngroups = 1;
	n = cfs_getgroups(256, list);
	if (n < 0) {
		/* Not readable (/proc): the groups the user database gives,
		 * as the kernel's check had them (else a member's change the
		 * kernel allowed would be refused). */
		struct passwd pw, *res = NULL;
		char buf[1024];
		int cnt = 256;

		n = 0;
		if (getpwuid_r(ctx->uid, &pw, buf, sizeof(buf), &res) == 0 &&
		    res &&
		    getgrouplist(res->pw_name, ctx->gid, list, &cnt) >= 0)
			n = cnt;
	}
	for (i = 0; i < n && i < 256 && may->ngroups < ngroups; i++)
		groups[may->ngroups++] = list[i];
	may->groups = groups;
	may->def_uid = cfs->foreign_uid;
	may->def_gid = cfs->foreign_gid;
	may->def_mode =
	    st && S_ISDIR(st->st_mode) ? cfs->cfg.dir_mode : cfs->cfg.file_mode;
	return may;
}

int attrov_set(const char *rel, const struct attrov *in, unsigned what,
	       const struct stat *st, const char *etag)
{
	struct db_attrs r = {0};
	struct db_attrs_may may_buf;
	const struct db_attrs_may *may;
	int64_t groups[257];
	struct actor who;
	const char *op = NULL;
	char *bound = NULL, *pending;
	struct attrov cur;
	int64_t ctime_ns = 0;
	int rc;

	if (what & ATTROV_MODE) {
		r.what |= DB_ATTR_MODE;
		r.mode = in->mode & 07777;
		op = what & ATTROV_KILLPRIV ? "kill_priv" : "chmod";
	}
	if (what & ATTROV_OWNER) {
		r.what |= DB_ATTR_OWNER;
		/* -1: the row's, as the database has it (the caller's view,
		 * st, may be of another object: review-T-Hb) */
		r.uid = in->uid == (uid_t)-1 ? -1 : (int64_t)in->uid;
		r.gid = in->gid == (gid_t)-1 ? -1 : (int64_t)in->gid;
		op = "chown";
	}
	if (what & ATTROV_ATIME) {
		r.what |= DB_ATTR_ATIME;
		r.atime_ns = ts_ns(&in->atime);
		op = "utimens";
	}
	if (what & ATTROV_MTIME) {
		r.what |= DB_ATTR_MTIME;
		r.mtime_ns = ts_ns(&in->mtime);
		op = "utimens";
	}
	if (what & ATTROV_RESET) {
		r.what |= DB_ATTR_RESET;
		op = what & ATTROV_DIR ? "mkdir" : "create";
		etag = NULL;
	}
	cfs_actor(&who);
	/* the open file of a deferred publish at rel: its own (H5) */
	pending = what & ATTROV_RESET ? NULL : ofile_deferred(rel, &cur);
	if (pending) {
		rc =
		    attrov_set_deferred(rel, pending, &cur, &r, what, op, &who);
		free(pending);
		return rc;
	}
	may = may_of(what, st, &may_buf, groups, 257);
	rc = db_attrs_set(cfs->db, cfs->cfg.reception_bucket, rel, &r, etag,
			  NULL, may, op, &who, &ctime_ns, &bound);
	if (rc == -ESTALE && etag && bound) {
		/* Bound to another object (bound): stale only if the store
		 * holds etag's now; the store is asked only then. */
		char *row = bound;

		bound = NULL;
		rc = store_holds(rel, etag);
		if (rc == 0)
			rc = db_attrs_set(cfs->db, cfs->cfg.reception_bucket,
					  rel, &r, etag, row, may, op, &who,
					  &ctime_ns, &bound);
		free(row);
	}
	if (rc == -ESTALE || rc == -EPERM || rc == -EACCES) {
		/* Not the caller's object (or the row changed again since
		 * the HEAD), or one the caller may not change (its view of
		 * rel was older than the row): rel is shown as the database
		 * has it now. */
		free(bound);
		pthread_mutex_lock(&cfs->lock);
		reload_entry_locked(rel);
		pthread_mutex_unlock(&cfs->lock);
		return rc;
	}
	if (rc)
		return rc == -EINPROGRESS ? -EIO : rc;
	cache_set(rel, in, what, &r, etag, bound, ctime_ns);
	if (!(what & ATTROV_RESET))
		ofile_note_attrs(rel, &r);
	return 0;
}

/* The cache after rel's row was changed in the database as attrov_set
 * describes (r: the fields set, bound: the row's etag now, taken over,
 * ctime_ns its status-change time). */
static void cache_set(const char *rel, const struct attrov *in, unsigned what,
		      const struct db_attrs *r, const char *etag, char *bound,
		      int64_t ctime_ns)
{
	struct dirsnap *s;
	struct attrov *a;

	pthread_mutex_lock(&cfs->lock);
	s = snap_find(rel, 1);
	a = s ? kid_find(s, rel, 1) : NULL;
	if (s)
		s->epoch++;
	if (!a) {
		/* Stored, but not cached: shown once reloaded. */
		if (s)
			s->ok = 0;
		pthread_mutex_unlock(&cfs->lock);
		free(bound);
		return;
	}
	/* As the database did: a row bound to another object than the one
	 * changed starts from the defaults. */
	if ((what & ATTROV_RESET) || (etag && a->etag && !binds(a->etag, etag)))
		a->has_mode = a->has_owner = a->has_atime = a->has_mtime = 0;
	free(a->etag);
	a->etag = bound;
	free(a->miss);
	a->miss = NULL;
	free(a->alias);
	a->alias = NULL;
	if (what & ATTROV_MODE) {
		a->mode = r->mode;
		a->has_mode = 1;
	}
	if (what & ATTROV_OWNER) {
		a->uid = (uid_t)r->uid;
		a->gid = (gid_t)r->gid;
		a->has_owner = 1;
	}
	if (what & ATTROV_ATIME) {
		a->atime = in->atime;
		a->has_atime = 1;
	}
	if (what & ATTROV_MTIME) {
		a->mtime = in->mtime;
		a->has_mtime = 1;
	}
	a->ctime = attrs_ns_ts(ctime_ns);
	a->has_ctime = 1;
	pthread_mutex_unlock(&cfs->lock);
}

char *attrov_claim_token(void)
{
	static atomic_ulong seq;
	char *t = NULL;

	if (asprintf(&t, "%s#%lu", cfs->claimer,
		     atomic_fetch_add(&seq, 1) + 1) < 0)
		return NULL;
	return t;
}

int attrov_claim_mine(const char *holder)
{
	size_t l = strlen(cfs->claimer);

	return holder && !strncmp(holder, cfs->claimer, l) && holder[l] == '#';
}

int attrov_claim(const char *rel, const struct attrov *in, int take,
		 const char *from, const char *token, struct db_claim *held,
		 int (*gate)(void *), void *gate_arg)
{
	struct db_attrs r = {0};
	struct actor who;
	int64_t ctime_ns = 0;
	int rc;

	r.what = DB_ATTR_RESET | DB_ATTR_MODE | DB_ATTR_OWNER;
	r.mode = in->mode & 07777;
	r.uid = in->uid;
	r.gid = in->gid;
	cfs_actor(&who);
	rc = db_attrs_claim_gated(cfs->db, cfs->cfg.reception_bucket, rel, &r,
				  token, cfs->cfg.claim_lease_s, take, from,
				  &who, &ctime_ns, held, gate, gate_arg);
	if (rc == -EEXIST) {
		/* Not ours: what this mount cached of it is reloaded. */
		pthread_mutex_lock(&cfs->lock);
		reload_entry_locked(rel);
		pthread_mutex_unlock(&cfs->lock);
		return rc;
	}
	if (rc)
		return rc == -EINPROGRESS ? -EIO : rc;
	cache_set(rel, in, ATTROV_RESET | ATTROV_MODE | ATTROV_OWNER, &r, NULL,
		  NULL, ctime_ns);
	return 0;
}

int attrov_move_claim(const char *from, const char *to, const char *own1,
		      const char *own2, const struct attrov *in, int take,
		      const char *token, struct attrov *out,
		      struct db_claim *held)
{
	struct db_attrs r = {0}, row = {0};
	struct actor who;
	int rc;

	r.what = DB_ATTR_MODE | DB_ATTR_OWNER;
	r.mode = in->mode & 07777;
	r.uid = in->uid;
	r.gid = in->gid;
	cfs_actor(&who);
	rc = db_attrs_move_claim(cfs->db, cfs->cfg.reception_bucket, from, to,
				 own1, own2, &r, token, cfs->cfg.claim_lease_s,
				 take, &who, &row, held);
	/* read again when next shown: moved and unbound, or as it is */
	pthread_mutex_lock(&cfs->lock);
	reload_entry_locked(from);
	reload_entry_locked(to);
	pthread_mutex_unlock(&cfs->lock);
	if (rc)
		return rc == -EINPROGRESS ? -EIO : rc;
	memset(out, 0, sizeof(*out));
	out->mode = row.mode & 07777;
	out->has_mode = (row.what & DB_ATTR_MODE) != 0;
	out->uid = (uid_t)row.uid;
	out->gid = (gid_t)row.gid;
	out->has_owner = (row.what & DB_ATTR_OWNER) != 0;
	out->atime = attrs_ns_ts(row.atime_ns);
	out->has_atime = (row.what & DB_ATTR_ATIME) != 0;
	out->mtime = attrs_ns_ts(row.mtime_ns);
	out->has_mtime = (row.what & DB_ATTR_MTIME) != 0;
	return 0;
}

void attrov_unclaim(const char *rel, const char *token)
{
	struct actor who;
	int rc;

	if (!token)
		return;
	cfs_actor(&who);
	rc = db_attrs_unclaim(cfs->db, cfs->cfg.reception_bucket, rel, token,
			      &who);
	if (rc) {
		size_t ql = 4 * strlen(rel) + 3;
		char *q = malloc(ql);

		if (q)
			log_quote(q, ql, rel);
		log_error("claim on the name of a new file never stored "
			  "(inbox/ %s) not dropped (it lapses in %d s): %s",
			  q ? q : "?", cfs->cfg.claim_lease_s, strerror(-rc));
		free(q);
	}
	pthread_mutex_lock(&cfs->lock);
	reload_entry_locked(rel);
	pthread_mutex_unlock(&cfs->lock);
}

static int ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

/* Caller holds cfs->lock. a's attributes onto *st. */
static void apply_locked(const struct attrov *a, struct stat *st)
{
	if (a->has_mode)
		st->st_mode = (st->st_mode & S_IFMT) | (a->mode & 07777);
	if (a->has_owner) {
		st->st_uid = a->uid;
		st->st_gid = a->gid;
	}
	if (a->has_mtime)
		st->st_mtim = a->mtime;
	if (a->has_atime)
		st->st_atim = a->atime;
	if (a->has_ctime && ts_after(&a->ctime, &st->st_ctim))
		st->st_ctim = a->ctime;
}

/* Clock skew allowed between the store (Last-Modified, whole seconds) and
 * this host: an object modified up to this long before a snapshot's load
 * may have a row the snapshot does not hold. */
#define ATTR_SKEW_S 30

/* Caller holds cfs->lock. a onto *st if it describes the object with ETag
 * etag; if not, remembers that etag was found not to match. */
static void apply_bound_locked(struct attrov *a, struct stat *st,
			       const char *etag)
{
	if (entry_binds(a, etag)) {
		apply_locked(a, st);
		return;
	}
	free(a->miss);
	a->miss = strdup(etag);
}

/* rel's row read now (found 0: none) as an entry for the object the store
 * shows with ETag etag (NULL: any). When the row is bound to another ETag:
 * the store may give one object two ETags (a listing's is not always
 * HEAD's, nor the one its copy answered), so HEAD says whether the row's
 * is the object's (etag is kept as its alias then); and a row is looked
 * for among the pending ones (db_attrs_copy: a rename's copy that landed
 * before its rows were recorded, a crash in between). Unlocked. 0 or
 * -errno; *out NULL when there is no row. */
/* A publish's pending row shown for rel's object (ETag etag, or head, as
 * HEAD says): once its lease is over and that object is its recorded
 * upload, it becomes rel's row (db_attrs_settle_pending: a crash cut the
 * publish short, E1). Failures are logged; the pending row is shown
 * meanwhile. */
static void settle_pending(const char *rel, const char *etag, const char *head,
			   const char *tag)
{
	struct actor who;
	int rc, done = 0;

	cfs_actor(&who);
	rc = db_attrs_settle_pending(
	    cfs->db, cfs->cfg.reception_bucket, rel, etag,
	    head && !strcmp(head, etag) ? tag : NULL, &who, &done);
	if (rc == 0 && !done && head && strcmp(head, etag))
		rc = db_attrs_settle_pending(cfs->db, cfs->cfg.reception_bucket,
					     rel, head, tag, &who, &done);
	if (rc)
		log_error("inbox/%s: the pending attributes of its publish "
			  "not made its row (shown meanwhile): %s",
			  rel, strerror(-rc));
	else if (done)
		log_warn("inbox/%s: the attributes of a publish a crash cut "
			 "short are its row now",
			 rel);
}

/* The UPLOAD_TAG of the object with ETag e as read by HEAD (hrc its
 * answer; 1: not asked): "" when it has none, or when HEAD showed
 * another object (e is not the one HEAD sees); NULL when not known. */
static const char *tag_of(const struct s3_object_info *info, int hrc,
			  const char *e)
{
	const char *t;

	if (hrc == 1 || (hrc && hrc != -ENOENT))
		return NULL;
	if (hrc || strcmp(info->etag, e))
		return "";
	t = s3_meta_get(info, UPLOAD_TAG);
	return t ? t : "";
}

static int key_read(const char *rel, const char *etag, struct attrov **out)
{
	struct s3_object_info info = {0};
	struct db_attrs row = {0}, pend = {0};
	const char *head = NULL;
	int rc, found = 0, pfound = 0, need = 0, hrc = 1;

	*out = NULL;
	rc =
	    db_attrs_get(cfs->db, cfs->cfg.reception_bucket, rel, &row, &found);
	if (rc)
		return rc;
	if (found && binds(row.etag, etag))
		goto done;
	if (found && etag) {
		hrc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);
		if (hrc == 0)
			head = info.etag;
	}
	if (found && head && binds(row.etag, head))
		goto done;
	/* A publish's pending row describes only the object its upload made
	 * (its tag, review-h5 N2): read by HEAD when such a row may apply. */
	rc = etag ? db_attrs_get_pending(cfs->db, cfs->cfg.reception_bucket,
					 rel, etag, tag_of(&info, hrc, etag),
					 &pend, &pfound, &need)
		  : 0;
	if (rc == 0 && need && hrc == 1) {
		hrc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);
		if (hrc == 0)
			head = info.etag;
		if (hrc == 0 && !strcmp(head, etag))
			rc = db_attrs_get_pending(
			    cfs->db, cfs->cfg.reception_bucket, rel, etag,
			    tag_of(&info, hrc, etag), &pend, &pfound, &need);
	}
	/* Its tag unknown (the store did not answer): fail closed, never
	 * the object's own attributes for what may be that upload. */
	if (rc == 0 && need && hrc && hrc != -ENOENT)
		rc = hrc == 1 ? -EIO : hrc;
	if (rc == 0 && !pfound && etag && head && strcmp(head, etag))
		rc = db_attrs_get_pending(cfs->db, cfs->cfg.reception_bucket,
					  rel, head, tag_of(&info, hrc, head),
					  &pend, &pfound, NULL);
	if (rc == 0 && pfound &&
	    (!pend.etag || !strcmp(pend.etag, etag) ||
	     (head && !strcmp(pend.etag, head)))) {
		/* The copy of a rename cut short, or an object whose row is
		 * still pending (a publish's upload in flight, or cut short
		 * by a crash: E1): its attributes, never the target's old
		 * row's nor the defaults. */
		db_attrs_free_row(&row);
		row = pend;
		memset(&pend, 0, sizeof(pend));
		found = 1;
		if (!row.etag)
			settle_pending(rel, etag, head,
				       tag_of(&info, hrc, head ? head : etag));
	}
	db_attrs_free_row(&pend);
	rc = 0;
done:
	if (found) {
		*out = attrov_from_row(&row);
		if (*out && head && etag && (*out)->etag &&
		    !strcmp((*out)->etag, head) && strcmp(head, etag))
			(*out)->alias = strdup(etag);
	}
	db_attrs_free_row(&row);
	s3_object_info_free(&info);
	if (found && !*out)
		return -ENOMEM;
	return rc;
}

/* Caller holds cfs->lock (released while the database is asked). Reads
 * rel's row now (key_read), caches it (an empty entry when there is none:
 * not asked again before the next snapshot load) unless a change made
 * here raced with the read, and applies it to *st if it describes the
 * object with ETag etag (NULL: any). 0 or -errno (the database cannot be
 * read: nothing applied, the caller fails closed). */
static int key_load_locked(const char *rel, struct stat *st, const char *etag)
{
	struct dirsnap *s = snap_find(rel, 1);
	struct attrov *a = NULL, *cached;
	uint64_t epoch = s ? s->epoch : 0;
	int rc;

	if (!s)
		return -ENOMEM;
	pthread_mutex_unlock(&cfs->lock);
	rc = key_read(rel, etag, &a);
	if (rc == 0 && !a) {
		a = calloc(1, sizeof(*a));
		if (a)
			a->rel = strdup(rel);
		if (!a || !a->rel) {
			attrov_free(a);
			a = NULL;
			rc = -ENOMEM;
		}
	}
	pthread_mutex_lock(&cfs->lock);
	if (rc) {
		attrov_free(a);
		log_error("attributes of inbox/%s: %s", rel, strerror(-rc));
		return rc;
	}
	if (s->epoch != epoch) {
		/* Changed here meanwhile: the cache is the newer. */
		cached = kid_find(s, rel, 0);
		if (!cached || entry_binds(cached, etag))
			apply_bound_locked(cached ? cached : a, st, etag);
		attrov_free(a);
		return 0;
	}
	apply_bound_locked(a, st, etag);
	cached = kid_find(s, rel, 0);
	if (cached) {
		nameidx_del(&s->kids, rel);
		attrov_free(cached);
	}
	if (nameidx_put(&s->kids, a->rel, (uintptr_t)a))
		attrov_free(a);
	return 0;
}

int attrov_apply(const char *rel, struct stat *st, const char *etag)
{
	struct dirsnap *s;
	struct attrov *a;
	int rc = 0;

	pthread_mutex_lock(&cfs->lock);
	s = snap_fresh_locked(rel, &rc);
	if (s)
		rc = 0;
	a = s ? kid_find(s, rel, 0) : NULL;
	if (etag && !*etag)
		etag = NULL; /* not known */
	if (a && entry_binds(a, etag)) {
		apply_locked(a, st);
	} else if (a && a->miss && !strcmp(a->miss, etag)) {
		/* Its row describes another object (removed or replaced by
		 * another route): this one has the defaults. */
	} else if (a || (s && (S_ISDIR(st->st_mode) ||
			       st->st_mtime + ATTR_SKEW_S >= s->loaded_rt))) {
		/* Not in the snapshot, or bound there to another object,
		 * but possibly newer than it (made or rewritten on another
		 * mount since): never shown with the defaults unless its
		 * row is known absent or another object's. Unreadable:
		 * fail closed. */
		rc = key_load_locked(rel, st, etag);
		if (rc && rc != -ENOMEM)
			rc = -EIO;
	}
	pthread_mutex_unlock(&cfs->lock);
	return rc;
}

void attrov_bound_etag(const char *rel, char *etag)
{
	struct dirsnap *s;
	struct attrov *a;

	pthread_mutex_lock(&cfs->lock);
	s = snap_find(rel, 0);
	a = s ? kid_find(s, rel, 0) : NULL;
	if (a && a->etag && a->alias && !strcmp(a->alias, etag) &&
	    strlen(a->etag) < 80)
		strcpy(etag, a->etag);
	pthread_mutex_unlock(&cfs->lock);
}

int attrov_apply_fresh(const char *rel, struct stat *st, const char *etag)
{
	int rc;

	if (etag && !*etag)
		etag = NULL;
	pthread_mutex_lock(&cfs->lock);
	rc = key_load_locked(rel, st, etag);
	pthread_mutex_unlock(&cfs->lock);
	return rc;
}

/* Caller holds cfs->lock. The cached entry of from, if any, becomes to's
 * (to's own goes); a directory snapshot that cannot take it is reloaded. */
static void move_entry_locked(const char *from, const char *to)
{
	struct dirsnap *fs = snap_find(from, 0), *ts = snap_find(to, 1);
	struct attrov *a = NULL;
	uintptr_t v;
	char *n;

	if (fs) {
		fs->epoch++;
		if (nameidx_get(&fs->kids, from, &v)) {
			nameidx_del(&fs->kids, from);
			a = (struct attrov *)v;
		}
	}
	if (!ts) {
		attrov_free(a);
		return;
	}
	ts->epoch++;
	if (nameidx_get(&ts->kids, to, &v)) {
		nameidx_del(&ts->kids, to);
		attrov_free((struct attrov *)v);
	}
	if (!a)
		return;
	n = strdup(to);
	if (!n || nameidx_put(&ts->kids, n, (uintptr_t)a)) {
		free(n);
		attrov_free(a);
		ts->ok = 0; /* reloaded before it is shown again */
		return;
	}
	free(a->rel);
	a->rel = n;
}

/* Caller holds cfs->lock. Forgets rel's entry and makes its directory's
 * snapshot load again before it is shown: the database's state, whatever
 * it is after a failure, is what shows next. */
static void reload_entry_locked(const char *rel)
{
	struct dirsnap *s;

	forget_entry_locked(rel);
	s = snap_find(rel, 0);
	if (s)
		s->ok = 0;
}

/* Caller holds cfs->lock. rel's cached entry, its directory's epoch
 * bumped (a load running now may predate the change), or NULL. */
static struct attrov *entry_changing_locked(const char *rel)
{
	struct dirsnap *s = snap_find(rel, 0);

	if (!s)
		return NULL;
	s->epoch++;
	return kid_find(s, rel, 0);
}

/* Caller holds cfs->lock. a now bound to etag (NULL: unbound). */
static void entry_bind_locked(struct attrov *a, const char *etag)
{
	char *e = etag ? strdup(etag) : NULL;

	free(a->etag);
	a->etag = e;
	free(a->miss);
	a->miss = NULL;
	if (etag && !e)
		a->has_mode = a->has_owner = a->has_atime = a->has_mtime = 0;
}

int attrov_move(const char *from, const char *to, int tree, const char *etag,
		const char *old)
{
	struct attrov *a;
	struct actor who;
	int rc;

	cfs_actor(&who);
	rc = db_attrs_move(cfs->db, cfs->cfg.reception_bucket, from, to, tree,
			   etag, old, &who);
	if (rc)
		log_error("attributes of inbox/%s did not follow its rename "
			  "to inbox/%s: %s",
			  from, to, strerror(-rc));
	pthread_mutex_lock(&cfs->lock);
	if (rc) {
		reload_entry_locked(from);
		reload_entry_locked(to);
	} else {
		move_entry_locked(from, to);
		a = etag && *etag ? entry_changing_locked(to) : NULL;
		if (a && (!a->etag || (old && !strcmp(a->etag, old))))
			entry_bind_locked(a, etag);
	}
	if (tree) {
		forget_tree_locked(from);
		forget_tree_locked(to);
	}
	pthread_mutex_unlock(&cfs->lock);
	return rc;
}

int attrov_copy_hidden(const char *name, const char *hidden)
{
	struct actor who;
	int rc;

	cfs_actor(&who);
	rc = db_attrs_copy_hidden(cfs->db, cfs->cfg.reception_bucket, name,
				  hidden, &who);
	if (rc)
		log_error(
		    "attributes of inbox/%s not copied to its hidden name "
		    "%s: %s",
		    name, hidden, strerror(-rc));
	if (rc && rc != -EEXIST) /* the outcome may be unknown: a copy
				    that was made goes (only this one's) */
		attrov_drop_hidden(hidden);
	pthread_mutex_lock(&cfs->lock);
	reload_entry_locked(hidden);
	pthread_mutex_unlock(&cfs->lock);
	if (rc == -EEXIST) /* another process's hide took the name first */
		return -EBUSY;
	return rc == -EINPROGRESS ? -EIO : rc;
}

void attrov_sweep_hidden(void)
{
	struct actor who;
	long dropped = 0;
	int rc;

	cfs_actor_uid(&who, getuid());
	rc = db_attrs_sweep_hidden(cfs->db, cfs->cfg.reception_bucket, &who,
				   &dropped);
	if (rc)
		log_warn("attributes left at hidden names by processes that "
			 "are gone: not dropped (%s)",
			 strerror(-rc));
	else if (dropped)
		log_info("attributes left at hidden names by processes that "
			 "are gone: %ld dropped",
			 dropped);
}

static int copy_attrs(const char *from, const char *to,
		      struct attrov_undo *undo, int keep)
{
	struct dirsnap *ts;
	struct actor who;
	char *token = NULL;
	int rc;

	cfs_actor(&who);
	if (keep) {
		/* Its pending row is this rename's own (E2). */
		token = attrov_claim_token();
		if (!token)
			return -ENOMEM;
		rc = db_attrs_copy_rename(
		    cfs->db, cfs->cfg.reception_bucket, from, to, token,
		    cfs->cfg.claim_lease_s, &who, undo ? &undo->row : NULL,
		    undo ? &undo->had : NULL, undo ? &undo->pending : NULL,
		    undo ? &undo->copied : NULL);
		if (rc == 0 && undo) {
			free(undo->token);
			undo->token = token;
			token = NULL;
		}
		free(token);
	} else
		rc = db_attrs_copy(cfs->db, cfs->cfg.reception_bucket, from, to,
				   &who, undo ? &undo->row : NULL,
				   undo ? &undo->had : NULL,
				   undo ? &undo->copied : NULL);
	if (rc) {
		log_error("attributes of inbox/%s not copied to inbox/%s: %s",
			  from, to, strerror(-rc));
		return rc == -EINPROGRESS ? -EIO : rc;
	}
	pthread_mutex_lock(&cfs->lock);
	forget_entry_locked(to);
	ts = snap_find(to, 0);
	if (ts)
		ts->ok = 0; /* reloaded before it is shown again */
	pthread_mutex_unlock(&cfs->lock);
	return 0;
}

int attrov_copy(const char *from, const char *to, struct attrov_undo *undo)
{
	return copy_attrs(from, to, undo, 0);
}

int attrov_copy_rename(const char *from, const char *to,
		       struct attrov_undo *undo)
{
	return copy_attrs(from, to, undo, 1);
}

void attrov_copy_done(const char *from, const char *etag)
{
	int rc =
	    db_attrs_copy_done(cfs->db, cfs->cfg.reception_bucket, from, etag);

	if (rc)
		log_error("attributes of renamed inbox/%s not dropped (they "
			  "stay bound to the moved object): %s",
			  from, strerror(-rc));
	pthread_mutex_lock(&cfs->lock);
	if (rc)
		reload_entry_locked(from);
	else
		forget_entry_locked(from);
	pthread_mutex_unlock(&cfs->lock);
}

void attrov_undo_free(struct attrov_undo *undo)
{
	db_attrs_free_row(&undo->row);
	free(undo->token);
	undo->token = NULL;
	undo->had = undo->pending = 0;
	undo->copied = 0;
}

void attrov_undo_copy(const char *to, struct attrov_undo *undo)
{
	struct actor who;
	int rc;

	cfs_actor(&who);
	if (undo->pending)
		rc = db_attrs_unpend(cfs->db, cfs->cfg.reception_bucket, to,
				     undo->token);
	else
		rc = db_attrs_restore(cfs->db, cfs->cfg.reception_bucket, to,
				      undo->had ? &undo->row : NULL,
				      undo->copied, &who);
	if (rc)
		log_error("attributes copied to inbox/%s for a rename that "
			  "failed not put back (they stay bound to the "
			  "renamed object): %s",
			  to, strerror(-rc));
	pthread_mutex_lock(&cfs->lock);
	reload_entry_locked(to);
	pthread_mutex_unlock(&cfs->lock);
	attrov_undo_free(undo);
}

void attrov_renamed(const char *from, const char *to, const char *etag,
		    const char *old)
{
	struct actor who;
	int rc;

	if (!etag || !*etag)
		return;
	cfs_actor(&who);
	rc = db_attrs_renamed(cfs->db, cfs->cfg.reception_bucket, from, to,
			      etag, old, &who);
	if (rc)
		log_error("attributes of inbox/%s not given to its copy at "
			  "inbox/%s: %s",
			  from, to, strerror(-rc));
	pthread_mutex_lock(&cfs->lock);
	reload_entry_locked(to);
	pthread_mutex_unlock(&cfs->lock);
}

/* attrov_drop, with spare 1: attrov_drop_spare, 2: attrov_drop_hidden. */
static void drop_attrs(const char *rel, int tree, int spare)
{
	struct actor who;
	int rc;

	cfs_actor(&who);
	if (spare == 2)
		rc = db_attrs_drop_hidden(cfs->db, cfs->cfg.reception_bucket,
					  rel, &who);
	else if (spare)
		rc = db_attrs_drop_spare(cfs->db, cfs->cfg.reception_bucket,
					 rel, tree, &who);
	else
		rc = db_attrs_drop(cfs->db, cfs->cfg.reception_bucket, rel,
				   tree, &who);
	if (rc)
		log_error("attributes of removed inbox/%s not dropped (they "
			  "stay bound to the removed object): %s",
			  rel, strerror(-rc));
	pthread_mutex_lock(&cfs->lock);
	if (rc)
		reload_entry_locked(rel);
	else
		forget_entry_locked(rel);
	if (tree)
		forget_tree_locked(rel);
	pthread_mutex_unlock(&cfs->lock);
}

void attrov_drop(const char *rel, int tree)
{
	drop_attrs(rel, tree, 0);
}

void attrov_drop_spare(const char *rel, int tree)
{
	drop_attrs(rel, tree, 1);
}

void attrov_drop_hidden(const char *rel)
{
	drop_attrs(rel, 0, 2);
}

int attrov_prepare(const char *rel, int check, const char *replaced)
{
	struct attrov *a;
	int rc = db_attrs_prepare(cfs->db, cfs->cfg.reception_bucket, rel,
				  check, replaced);

	pthread_mutex_lock(&cfs->lock);
	a = entry_changing_locked(rel);
	if (rc) {
		reload_entry_locked(rel);
	} else if (a) {
		/* As the database did: a row of another object goes. */
		if (check && a->etag &&
		    !binds(a->etag, replaced ? replaced : ""))
			a->has_mode = a->has_owner = a->has_atime =
			    a->has_mtime = 0;
		entry_bind_locked(a, NULL);
	}
	pthread_mutex_unlock(&cfs->lock);
	if (rc)
		log_error("attributes of inbox/%s not prepared for its "
			  "upload: %s",
			  rel, strerror(-rc));
	return rc == -EINPROGRESS ? -EIO : rc;
}

void attrov_bind(const char *rel, const char *etag, const char *old)
{
	int rc;

	if (!etag || !*etag)
		return;
	rc = db_attrs_bind(cfs->db, cfs->cfg.reception_bucket, rel, etag, old);
	if (rc)
		log_error("attributes of inbox/%s not bound to its object %s "
			  "(they apply to whatever is there until then): %s",
			  rel, etag, strerror(-rc));
	if (rc == 0) {
		attrov_bound(rel, etag, old, 0, NULL);
		return;
	}
	pthread_mutex_lock(&cfs->lock);
	(void)entry_changing_locked(rel); /* the epoch */
	reload_entry_locked(rel);
	pthread_mutex_unlock(&cfs->lock);
}

void attrov_bound(const char *rel, const char *etag, const char *old, int claim,
		  const char *from)
{
	struct attrov *a;

	pthread_mutex_lock(&cfs->lock);
	if (from) {
		reload_entry_locked(from);
		reload_entry_locked(rel);
		pthread_mutex_unlock(&cfs->lock);
		return;
	}
	a = entry_changing_locked(rel);
	if (a && (claim || !a->etag || (old && !strcmp(a->etag, old))))
		entry_bind_locked(a, etag);
	else if (a && strcmp(a->etag, etag))
		reload_entry_locked(rel); /* the database says which */
	pthread_mutex_unlock(&cfs->lock);
}

/* cur's mode, owner and times as a row (what: the times set). */
static void row_of(const struct attrov *cur, struct db_attrs *r)
{
	attrov_row_of(cur, r);
}

void attrov_row_of(const struct attrov *cur, struct db_attrs *r)
{
	memset(r, 0, sizeof(*r));
	r->mode = cur->mode & 07777;
	r->uid = cur->uid;
	r->gid = cur->gid;
	if (cur->has_atime) {
		r->what |= DB_ATTR_ATIME;
		r->atime_ns = ts_ns(&cur->atime);
	}
	if (cur->has_mtime) {
		r->what |= DB_ATTR_MTIME;
		r->mtime_ns = ts_ns(&cur->mtime);
	}
}

int attrov_bind_claim(const char *rel, const char *etag, const char *token,
		      const struct attrov *cur)
{
	struct db_attrs r;
	struct actor who;
	int rc, taken = DB_BIND_MINE;

	if (!etag || !*etag || !token)
		return 0;
	row_of(cur, &r);
	cfs_actor(&who);
	rc = db_attrs_bind_claim(cfs->db, cfs->cfg.reception_bucket, rel, etag,
				 token, &r, &who, &taken);
	if (rc)
		log_error("attributes of inbox/%s not bound to its object %s: "
			  "%s",
			  rel, etag, strerror(-rc));
	else if (taken == DB_BIND_TAKEN)
		log_warn("inbox/%s: its claim was taken by another create "
			 "before its upload was recorded; the row is its "
			 "writer's again (uid %lu, mode %o), bound to %s",
			 rel, (unsigned long)r.uid, (unsigned)r.mode, etag);
	else if (taken == DB_BIND_STALE)
		log_warn("inbox/%s: its claim was taken by another create "
			 "and its object %s replaced before its row was "
			 "bound; the newer object's row stays",
			 rel, etag);
	if (rc == 0 && taken == DB_BIND_MINE) {
		attrov_bound(rel, etag, NULL, 1, NULL);
		return 0;
	}
	pthread_mutex_lock(&cfs->lock);
	(void)entry_changing_locked(rel); /* the epoch */
	reload_entry_locked(rel);
	pthread_mutex_unlock(&cfs->lock);
	return rc == -EINPROGRESS ? -EIO : rc;
}

int attrov_pend_publish(const char *from, const char *to, const char *token,
			const struct attrov *cur, char **pending)
{
	struct db_attrs r;
	struct actor who;
	char *t = attrov_claim_token();
	int rc;

	*pending = NULL;
	if (!t)
		return -ENOMEM;
	if (cur)
		row_of(cur, &r);
	cfs_actor(&who);
	rc = db_attrs_pend_publish(cfs->db, cfs->cfg.reception_bucket, from, to,
				   t, cfs->cfg.claim_lease_s, token,
				   cur ? &r : NULL, &who);
	if (rc) {
		log_error("inbox/%s: the attributes of its publish to inbox/%s "
			  "not recorded first: not published: %s",
			  from, to, strerror(-rc));
		free(t);
		return rc == -EINPROGRESS ? -EIO : rc;
	}
	*pending = t;
	return 0;
}

void attrov_unpend(const char *to, const char *pending)
{
	int rc;

	if (!pending)
		return;
	rc = db_attrs_unpend(cfs->db, cfs->cfg.reception_bucket, to, pending);
	if (rc)
		log_error("inbox/%s: the pending attributes of a publish that "
			  "failed not dropped (they lapse): %s",
			  to, strerror(-rc));
}

int attrov_publish(const char *from, const char *to, const char *etag,
		   const char *token, const struct attrov *cur,
		   const char *pending)
{
	struct db_attrs r;
	struct actor who;
	int rc, live = 0;

	if (!etag || !*etag)
		return 0;
	if (cur)
		row_of(cur, &r);
	cfs_actor(&who);
	rc =
	    db_attrs_publish(cfs->db, cfs->cfg.reception_bucket, from, to, etag,
			     token, pending, cur ? &r : NULL, &who, &live);
	if (rc)
		log_error("attributes of inbox/%s not moved to inbox/%s for "
			  "its object %s (that object shows the defaults "
			  "until then): %s",
			  from, to, etag, strerror(-rc));
	else if (!live)
		log_warn("inbox/%s: its object %s was replaced before the "
			 "attributes of inbox/%s followed it; the newer "
			 "object's row stays",
			 to, etag, from);
	attrov_bound(to, etag, NULL, 0, from);
	return rc == -EINPROGRESS ? -EIO : rc;
}

void attrov_reload(const char *rel)
{
	pthread_mutex_lock(&cfs->lock);
	reload_entry_locked(rel);
	pthread_mutex_unlock(&cfs->lock);
}

void attrov_forget_tree(const char *rel)
{
	pthread_mutex_lock(&cfs->lock);
	forget_entry_locked(rel);
	forget_tree_locked(rel);
	pthread_mutex_unlock(&cfs->lock);
}

void attrov_free_all(void)
{
	size_t i;

	pthread_mutex_lock(&cfs->lock);
	/* No new background load; the running ones end within a statement
	 * deadline (DB_STATEMENT_DEADLINE_MS). */
	bg_stopped = 1;
	while (bg_loads > 0)
		pthread_cond_wait(&loaded_cond, &cfs->lock);
	for (i = 0; i < snaps.cap; i++) {
		struct dirsnap *s = (struct dirsnap *)snaps.slots[i].val;

		if (!snaps.slots[i].key)
			continue;
		kids_free(&s->kids);
		free(s->dir);
		free(s);
	}
	nameidx_free(&snaps);
	pthread_mutex_unlock(&cfs->lock);
}
