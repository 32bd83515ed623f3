/* ops_promote.c - rename(inbox/<path>, projects/<prefix>/<relpath>): the
 * promotion of one received file, or of every file under a directory
 * (common/promote.c, [fs] promote_workers in parallel), run synchronously
 * so that rename returns 0 only once it is durable.
 *
 * The kernel holds one lock per mount (s_vfs_rename_mutex) for every
 * cross-directory rename while this runs: other renames between
 * directories of this mount wait for a directory's promotion to end. Large
 * batches belong to `custodyfs promote`.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "inbox.h"
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

/* promote_dir's veto: a file open for writing here stays. */
static int promote_src_veto(void *arg, const char *key)
{
	(void)arg;
	return promote_src_check(key);
}

/* from: below inbox/, to: below projects/ ("<prefix>/<relpath>"). A
 * directory promotes every file under it (promote_dir): 0 only when all
 * were, else the first failure's errno, the failed files staying in
 * inbox/ and the others promoted.
 * Errors: EPERM (to names no file in a project), EINVAL (RENAME_EXCHANGE),
 * EACCES (the caller is not in [fs] project_group),
 * EBUSY (the file is open
 * for writing or not committed: close it first; or the source changed
 * during the promotion), EPERM also for a local temporary file, EINVAL /
 * ENAMETOOLONG (a name the store cannot hold), ENOENT (no such project or
 * file), EEXIST (another file is stored under that name: nothing overwritten,
 * the file stays in inbox/), and the store's or database's (EIO...). */
int promote_rename(const char *from, const char *to, unsigned int flags)
{
	struct promote_result res;
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
	if (!S_ISDIR(st.st_mode)) {
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

		rc = promote_dir(cfs->promote, from, prefix, slash + 1, &who,
				 promote_src_veto, NULL, &dr);
		free(prefix);
		/* Its files left inbox/ (all, or some) for projects/:
		 * listings of both again. */
		dcache_invalidate_all();
		dcache_invalidate_in(DC_STORE);
		if (rc == 0)
			attrov_drop(from, 1);
		else
			log_info("rename inbox/%s -> projects/%s: %zu of %zu "
				 "files promoted, the first failure %s: %s",
				 from, to, dr.n_done, dr.n_files,
				 dr.first_failed, strerror(-rc));
		return rc;
	}
	rc = promote_file(cfs->promote, from, prefix, slash + 1, &who, &res);
	free(prefix);
	/* Whatever the outcome, the project may show something new (a file,
	 * a symlink, a directory): its listings are fetched again. */
	dcache_invalidate_in(DC_STORE);
	if (rc == 0) {
		dcache_remove(from);
		attrov_drop(from, 0);
	} else {
		log_info("rename inbox/%s -> projects/%s: %s", from, to,
			 strerror(-rc));
	}
	return rc;
}
