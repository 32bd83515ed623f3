/* ops_promote.c - rename(inbox/<path>, projects/<prefix>/<relpath>): the
 * promotion of one received file, or of every file under a directory
 * (common/promote.c, [fs] promote_workers in parallel), run synchronously
 * so that rename returns 0 only once it is durable.
 *
 * The kernel holds one lock per mount (s_vfs_rename_mutex) for every
 * cross-directory rename while this runs: other renames between
 * directories of this mount wait for a directory's promotion to end. Large
 * batches belong to `custodyfs promote`.
 *
 * Writers of this mount cannot slip a new version of a promoted file in
 * between the promotion's look at its source and the source's DELETE:
 * libfuse's high-level path locks make every operation on the renamed
 * node or a path below it (open, write, flush, release of inbox/d/f while
 * inbox/d is renamed) wait for the rename to end, and a handle already
 * open for writing or holding uncommitted data makes the promotion EBUSY
 * (promote_src_check). Other processes are looked for after the DELETE
 * (promote.c, promote_after_delete).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "inbox.h"
#include "inval.h"
#include "log.h"
#include "projects.h"
#include "promote.h"

/* Can inbox/<rel> be promoted as it is stored? -EBUSY while it is open
 * for writing or written and not yet committed here (close it first: its
 * close commits it), -EPERM for a local temporary file (never uploaded). */
static int promote_src_check(const char *rel)
{
	struct ofile *of = ofile_find(rel);
	int rc = 0;

	if (!of)
		return 0;
	pthread_mutex_lock(&of->lock);
	if (of->writers > 0 || of->pending > 0 || of->dirty)
		rc = -EBUSY;
	else if (of->local)
		rc = -EPERM;
	pthread_mutex_unlock(&of->lock);
	ofile_put(of);
	return rc;
}

/* The first promote_src_check failure among the files this mount has
 * under dir/ (open, being written, not uploaded, local), or 0. */
static int promote_dir_check(const char *dir)
{
	size_t dl = strlen(dir), n = 0, i;
	struct ofile *of;
	char **rels = NULL, **more;
	int rc = 0;

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of && rc == 0; of = of->next) {
		if (of->unlinked || strncmp(of->rel, dir, dl) ||
		    of->rel[dl] != '/')
			continue;
		more = realloc(rels, (n + 1) * sizeof(*rels));
		if (!more || !(more[n] = strdup(of->rel)))
			rc = -ENOMEM;
		if (more) {
			rels = more;
			if (!rc)
				n++;
		}
	}
	pthread_mutex_unlock(&cfs->lock);
	for (i = 0; i < n; i++) {
		if (!rc)
			rc = promote_src_check(rels[i]);
		free(rels[i]);
	}
	free(rels);
	return rc;
}

/* Who asks for a promotion, taken in the FUSE thread (promote_dir's
 * workers have no FUSE context). */
struct promoter {
	int check; /* permissions enforced and not root */
	uid_t uid;
	gid_t gid;
	int n; /* supplementary groups in groups[] */
	gid_t groups[256];
};

static void promoter_get(struct promoter *w)
{
	struct fuse_context *ctx = cfs_context();

	memset(w, 0, sizeof(*w));
	w->check = cfs->perm_checks && ctx && ctx->uid != 0;
	if (!w->check)
		return;
	w->uid = ctx->uid;
	w->gid = ctx->gid;
	w->n = cfs_getgroups(256, w->groups);
	if (w->n < 0 || w->n > 256)
		w->n = 0;
}

/* A promotion publishes inbox/<rel> in projects/, where everyone on the
 * mount may read it (0444): the promoter must be able to read it here.
 * The kernel checks the directories of a rename, never the file's mode.
 * 0, -EACCES, or inbox_getattr's error. */
static int promoter_may_read(const struct promoter *w, const char *rel)
{
	struct stat st;
	mode_t bit = S_IROTH;
	int rc, i;

	if (!w->check)
		return 0;
	rc = inbox_getattr(rel, &st);
	if (rc)
		return rc;
	if (st.st_uid == w->uid) {
		bit = S_IRUSR;
	} else {
		if (st.st_gid == w->gid)
			bit = S_IRGRP;
		for (i = 0; i < w->n; i++)
			if (w->groups[i] == st.st_gid)
				bit = S_IRGRP;
	}
	if (st.st_mode & bit)
		return 0;
	log_info("promotion of inbox/%s refused to uid %u: it may not read it",
		 rel, (unsigned)w->uid);
	return -EACCES;
}

struct promote_veto {
	const struct promoter *who;	     /* the caller */
	const char *from;		     /* inbox/ directory */
	const char *to;			     /* its place in projects/ */
	const struct promote_dir_result *dr; /* n_files set before the end */
	const char *prefix;		     /* the project */
	pthread_mutex_t lock;
	char **dups;	/* protected by lock: content duplicates, "p/rel" */
	char **dup_src; /* protected by lock: their fuse paths in inbox/ */
	size_t n_dups;	/* protected by lock */
	int dups_lost;	/* protected by lock: one not noted (no memory) */
};

/* promote_dir's report of a promoted file: a content duplicate is noted,
 * its name to be made a symlink for the kernel once the rename is done
 * (promote_dups_changed). */
static void promote_file_done(void *arg, const char *src_key, const char *dest,
			      const struct promote_result *r)
{
	struct promote_veto *v = arg;
	char *rel = NULL, *src = NULL, **grown, **grown_src;

	if (r->outcome != DB_OUT_DUPLICATE_CONTENT)
		return;
	pthread_mutex_lock(&v->lock);
	grown = realloc(v->dups, (v->n_dups + 1) * sizeof(*v->dups));
	if (grown)
		v->dups = grown;
	grown_src = realloc(v->dup_src, (v->n_dups + 1) * sizeof(*v->dup_src));
	if (grown_src)
		v->dup_src = grown_src;
	if (!grown || !grown_src ||
	    asprintf(&rel, "%s/%s", v->prefix, dest) < 0) {
		v->dups_lost = 1;
	} else if (asprintf(&src, "/inbox/%s", src_key) < 0) {
		free(rel);
		v->dups_lost = 1;
	} else {
		v->dups[v->n_dups] = rel;
		v->dup_src[v->n_dups++] = src;
	}
	pthread_mutex_unlock(&v->lock);
}

/* How long a rename waits for the worker to drop the attributes the
 * kernel cached (forget_inode_attrs, promote_dups_changed). */
#define FORGET_WAIT_MS 200
/* The most content duplicates of a directory promotion whose entries are
 * dropped one by one (promote_dups_changed). */
#define DUPS_ENTRY_MAX 32

/* After a directory promotion (promoted: it succeeded, the kernel moves
 * the directory with the entries it knows under it): each content
 * duplicate noted is marked for its first getattr (inval_stale_mark) and
 * the attributes the kernel cached for its inode are dropped, so that its
 * next stat asks (inval.c's worker takes them in order: the last one
 * waited for, as forget_inode_attrs does), and the kernel drops its entry
 * of it (inval_entry_moved; beyond DUPS_ENTRY_MAX, the directory's entry
 * instead, with those under it; not waited for: it waits for this
 * rename). Frees the list. Called once
 * promote_dir has returned (no worker left): the list needs no lock. */
static void promote_dups_changed(struct promote_veto *v, int promoted)
{
	/* Each duplicate's own entry dropped, not the directory's: an
	 * invalidated directory makes getcwd() fail for the processes
	 * inside it and detaches mounts under it (review-O A5). Past
	 * DUPS_ENTRY_MAX (or one not noted), the directory's, once: the
	 * queue and the mark table are small (review-O A7). */
	int per_dup = !v->dups_lost && v->n_dups <= DUPS_ENTRY_MAX;
	char *path;
	size_t i;

	for (i = 0; i < v->n_dups; i++) {
		if (promoted &&
		    asprintf(&path, "/projects/%s", v->dups[i]) >= 0) {
			inval_stale_mark(path);
			if (per_dup)
				inval_entry_moved(path, v->dup_src[i]);
			free(path);
		}
		if (promoted && i + 1 < v->n_dups)
			inval_path(v->dup_src[i]);
		else if (promoted)
			(void)inval_path_wait(v->dup_src[i], FORGET_WAIT_MS);
		free(v->dups[i]);
		free(v->dup_src[i]);
	}
	if (promoted && !per_dup && (v->n_dups || v->dups_lost) &&
	    asprintf(&path, "/projects/%s", v->to) >= 0) {
		inval_entry(path);
		free(path);
	}
	if (promoted && v->dups_lost)
		log_debug("projects/%s: a content duplicate under it may show "
			  "EIO once (no memory to note it)",
			  v->to);
	free(v->dups);
	free(v->dup_src);
	v->dups = NULL;
	v->dup_src = NULL;
	v->n_dups = 0;
}

/* promote_dir's veto: a file open for writing here stays. Asked with key
 * NULL at the end: a file under the directory that the store's listing
 * cannot show yet keeps the directory; an empty directory is kept empty in
 * the project, as mkdir there would (already there: merged), before it
 * leaves reception. */
static int promote_src_veto(void *arg, const char *key)
{
	const struct promote_veto *v = arg;
	int rc;

	/* A stop asked for stop_timeout ago: no new file (it stays). */
	if (key && cfs_stop_due())
		return -EINTR;
	if (key) {
		rc = promoter_may_read(v->who, key);
		return rc ? rc : promote_src_check(key);
	}
	rc = promote_dir_check(v->from);
	if (rc || v->dr->n_files)
		return rc;
	rc = projects_mkdir(v->to, 0755);
	if (rc == -EEXIST) {
		struct stat st;

		rc = projects_getattr(v->to, &st);
		if (!rc && !S_ISDIR(st.st_mode))
			rc = -ENOTDIR;
	}
	return rc;
}

/* from: below inbox/, to: below projects/ ("<prefix>/<relpath>"). A
 * directory promotes every file under it (promote_dir): 0 only when all
 * were, else the first failure's errno, the failed files staying in
 * inbox/ and the others promoted.
 * Errors: EPERM (to names no file in a project), EINVAL (RENAME_EXCHANGE),
 * EACCES (the caller is not in [fs] project_group, or may not read a
 * file it would publish),
 * EBUSY (the file is open
 * for writing or not committed: close it first; or the source changed
 * during the promotion), EPERM also for a local temporary file, EINVAL /
 * ENAMETOOLONG (a name the store cannot hold), ENOENT (no such project or
 * file), EEXIST (another file is stored under that name: nothing overwritten,
 * the file stays in inbox/), ENOTDIR (an empty directory onto a stored
 * file), and the store's or database's (EIO...). A directory holding a
 * file this mount has not stored yet (open for writing) fails with EBUSY
 * after the others were promoted, and stays in inbox/ with it; an empty
 * directory becomes an empty directory in the project. */
/* The kernel moves the renamed inode with the attributes it cached in
 * inbox/ (a writable file) and serves them until they time out: forget
 * them, so the next stat asks (read-only, the stored size). Only the
 * inode: an entry invalidation would wait for the directory locks this
 * rename holds. Not for a content duplicate: it becomes a symlink, a type
 * change under the inode the kernel keeps, which would refuse it with EIO:
 * inval_type_changed instead (the entry dropped once the rename has
 * returned, the first stat before that answered ESTALE). Through inval.c's
 * worker, waited for a bounded time: the notification also drops the
 * inode's pages, and a page locked by a read in flight (a slow store)
 * would hold this handler, and the rename, as long as that read. */
static void forget_inode_attrs(const char *from)
{
	char *path;

	if (asprintf(&path, "/inbox/%s", from) < 0)
		return;
	(void)inval_path_wait(path, FORGET_WAIT_MS);
	free(path);
}

void projects_type_changed(const char *rel)
{
	char *path;

	if (asprintf(&path, "/projects/%s", rel) < 0)
		return;
	inval_type_changed(path);
	free(path);
}

/* The file stored at projects/<to> ("<prefix>/<relpath>", the storage
 * key), as the promotion's last HEAD of it saw it, put into this mount's
 * cached listings of its directory and of the directories above it up to
 * the project: a rename per file (mv of each file of a directory) costs no
 * LIST of the destination per file. Listings not cached are fetched at
 * their next use as before. */
static void store_listing_add(const char *to, const struct promote_result *r)
{
	char *rel = strdup(to), *slash;

	if (!rel) {
		dcache_invalidate_in(DC_STORE);
		return;
	}
	dcache_upsert_in(DC_STORE, rel, 0, r->dest_size, r->dest_mtime,
			 r->dest_etag);
	/* each directory between the project and the file: "p/a", "p/a/b" */
	while ((slash = strrchr(rel, '/'))) {
		*slash = '\0';
		if (!strchr(rel, '/'))
			break; /* "p": the project, listed from the registry */
		dcache_upsert_in(DC_STORE, rel, 1, 0, 0, NULL);
	}
	free(rel);
}

/* The prefix and name quoted (log_quote) into a new string, or NULL. */
static char *quoted_path(const char *prefix, const char *name)
{
	size_t l = strlen(prefix) + strlen(name);
	char *raw = malloc(l + 1), *q = malloc(4 * l + 3);

	if (raw && q) {
		snprintf(raw, l + 1, "%s%s", prefix, name);
		log_quote(q, 4 * l + 3, raw);
	} else {
		free(q);
		q = NULL;
	}
	free(raw);
	return q;
}

/* rename "inbox/F" -> "projects/T": ... with the names quoted: a name may
 * hold spaces, '=' or text posing as an event line. n_files 0: one file. */
static void log_rename_failed(const char *from, const char *to, size_t n_done,
			      size_t n_files, const char *first_failed, int rc)
{
	char *qf = quoted_path("inbox/", from),
	     *qt = quoted_path("projects/", to);
	char *qx = quoted_path("", first_failed ? first_failed : "");

	if (qf && qt && qx) {
		if (n_files)
			log_info("rename %s -> %s: %zu of %zu files promoted, "
				 "the first failure %s: %s",
				 qf, qt, n_done, n_files, qx, strerror(-rc));
		else
			log_info("rename %s -> %s: %s", qf, qt, strerror(-rc));
	}
	free(qf);
	free(qt);
	free(qx);
}

int promote_rename(const char *from, const char *to, unsigned int flags)
{
	struct promote_result res;
	struct promoter caller;
	struct actor who;
	struct stat st;
	char *prefix, *slash;
	int rc;

	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	slash = strchr(to, '/');
	if (!slash || !slash[1])
		return -EPERM; /* projects/<name> itself is a project */
	if (!cfs->promote)
		return -EIO;
	rc = inbox_getattr(from, &st);
	if (rc)
		return rc;
	promoter_get(&caller);
	if (!S_ISDIR(st.st_mode)) {
		rc = promoter_may_read(&caller, from);
		if (rc == 0)
			rc = promote_src_check(from);
		if (rc)
			return rc;
	}
	prefix = strndup(to, (size_t)(slash - to));
	if (!prefix)
		return -ENOMEM;
	rc = projects_may_promote(prefix);
	if (rc) {
		free(prefix);
		return rc;
	}
	cfs_actor(&who);
	if (S_ISDIR(st.st_mode)) {
		struct promote_dir_result dr;

		struct promote_veto v = {.who = &caller,
					 .from = from,
					 .to = to,
					 .dr = &dr,
					 .prefix = prefix,
					 .lock = PTHREAD_MUTEX_INITIALIZER};

		rc = promote_dir(cfs->promote, from, prefix, slash + 1, &who,
				 promote_src_veto, promote_file_done, &v, &dr);
		pthread_mutex_destroy(&v.lock);
		free(prefix);
		/* Its files left inbox/ (all, or some) for projects/:
		 * listings of both again. */
		dcache_invalidate_all();
		dcache_invalidate_in(DC_STORE);
		if (rc == 0) {
			attrov_drop(from, 1);
			forget_inode_attrs(from);
		} else
			log_rename_failed(from, to, dr.n_done, dr.n_files,
					  dr.first_failed, rc);
		promote_dups_changed(&v, rc == 0);
		return rc;
	}
	rc = promote_file(cfs->promote, from, prefix, slash + 1, &who, &res);
	free(prefix);
	/* The stored file is known: added to the cached listings. Any other
	 * end (a symlink of a content duplicate, a promotion resumed from its
	 * journal entry, a failure that may have left something): the
	 * project's listings are fetched again. */
	if (rc == 0 && res.dest_mtime &&
	    res.outcome != DB_OUT_DUPLICATE_CONTENT)
		store_listing_add(to, &res);
	else
		dcache_invalidate_in(DC_STORE);
	if (rc == 0) {
		dcache_remove(from);
		attrov_drop(from, 0);
		if (res.outcome != DB_OUT_DUPLICATE_CONTENT)
			forget_inode_attrs(from);
		else
			projects_type_changed(to);
	} else {
		log_rename_failed(from, to, 0, 0, NULL, rc);
	}
	return rc;
}
