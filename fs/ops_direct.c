/* ops_direct.c - a file created directly in a project (cp, cat >, dd,
 * rsync into projects/<prefix>/...) is a drop plus a promotion
 * (SPEC §3), through the same code as inbox/ and rename:
 *
 *   create   an inbox/ file (ofile.c) under the reserved reception key
 *            DIRECT_STAGING/<host>.<pid>/<prefix>/<relpath>
 *            (".custodyfs-direct/..."; <host>.<pid> names this mount),
 *            spooled, hashed and streamed exactly like a drop;
 *   close    (or fsync) commits it there: the object and its
 *            reception_audit row (object_key = the staging key, the honest
 *            place the bytes were received), then promote_file() moves it
 *            to <prefix>/<relpath> in the storage bucket (double check,
 *            dedup, conflict, journal, verification, and the staging
 *            object deleted with removed_at on its row). close returns 0
 *            only when all of that is durable.
 *
 * Why a reserved prefix: a visible inbox key would collide with users'
 * files of the same name and show in inbox/ listings while it is written.
 * Why one per mount: two mounts (or hosts) writing the same new name at
 * once would otherwise upload to one key, the second overwriting the
 * first's received bytes before their promotion; apart, each is received
 * and promoted on its own (one copied, the other duplicate or conflict).
 * Within a mount, writers of one name share one file (ofile_create).
 * inbox/.custodyfs-direct is never listed in inbox/, but it can be reached
 * by its path: a file whose promotion failed stays there, with its
 * reception row, and can be read, moved into a project under another name
 * (mv inbox/.custodyfs-direct/p/x projects/p/y) or removed.
 *
 * Conflict at close (another file with other bytes is stored under the
 * name): EEXIST is not an errno close(2) may return, so close fails with
 * EPERM (stored files are immutable) and logs where the bytes are. Temp
 * names (the [fs] temp_patterns) are refused at create with EPERM: a
 * stored file is immutable, so a temp file could never be renamed into
 * place. rsync's temp name (".<name>.XXXXXX") is held instead: received at
 * close, never promoted under that name; its rename within projects/
 * promotes the received bytes under the final name (direct_rename), its
 * unlink removes them (direct_unlink). A held file is its writer's (the
 * owner and mode of its staging key, bound at create): only the writer,
 * the project directory's owner or root may rename or unlink it, as in a
 * sticky directory (direct_may_remove).
 * Handlers return 0 or -errno. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "inbox.h"
#include "inbox_int.h"
#include "log.h"
#include "names.h"
#include "projects.h"

int direct_is_held_name(const char *rel)
{
	const char *b = names_basename(rel);
	size_t n = strlen(b), i;

	/* ".<at least one char>.<six letters or digits>" */
	if (n < 9 || b[0] != '.' || b[n - 7] != '.')
		return 0;
	for (i = n - 6; i < n; i++)
		if (!((b[i] >= 'a' && b[i] <= 'z') ||
		      (b[i] >= 'A' && b[i] <= 'Z') ||
		      (b[i] >= '0' && b[i] <= '9')))
			return 0;
	return 1;
}

int direct_is_staging(const char *rel)
{
	return !strcmp(rel, DIRECT_STAGING);
}

int direct_is_reserved(const char *rel)
{
	size_t n = strlen(DIRECT_STAGING);

	return !strncmp(rel, DIRECT_STAGING, n) &&
	       (rel[n] == '\0' || rel[n] == '/');
}

/* The staging key of projects/<rel> on this mount (NULL: ENOMEM). */
static char *direct_key(const char *rel)
{
	char *key;

	if (asprintf(&key, "%s/%s.%ld/%s", DIRECT_STAGING, cfs->host,
		     (long)getpid(), rel) < 0)
		return NULL;
	return key;
}

char *direct_open_key(const char *rel)
{
	struct ofile *of;
	char *key = direct_key(rel);

	if (!key)
		return NULL;
	of = ofile_find(key);
	if (!of) {
		free(key);
		return NULL;
	}
	ofile_put(of);
	return key;
}

/* projects/<rel> exists? 1, 0, or -errno. */
static int direct_exists(const char *rel, struct stat *st)
{
	int rc = projects_getattr(rel, st);

	if (rc == -ENOENT)
		return 0;
	return rc ? rc : 1;
}

int direct_create(const char *rel, mode_t mode, struct fuse_file_info *fi)
{
	const char *slash = strchr(rel, '/');
	char *prefix = NULL, *parent = NULL, *key = NULL;
	struct fhandle *h;
	struct ofile *of;
	struct stat st;
	int rc;

	if (!slash || !slash[1])
		return projects_change(rel); /* projects/<new>: mkdir only */
	if (cfg_is_temp_name(&cfs->cfg, names_basename(rel)))
		return -EPERM; /* could never be renamed into place */
	if (!cfs->promote)
		return -EIO;
	prefix = strndup(rel, (size_t)(slash - rel));
	parent = strdup(rel);
	if (!prefix || !parent) {
		rc = -ENOMEM;
		goto out;
	}
	*strrchr(parent, '/') = '\0';
	rc = direct_exists(parent, &st);
	if (rc == 0)
		rc = -ENOENT;
	else if (rc > 0)
		rc = S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (rc)
		goto out;
	rc = projects_may_promote(prefix);
	if (rc)
		goto out;
	/* The kernel creates only after a lookup found nothing, which may be
	 * stale: a stored file is immutable (O_TRUNC or not). */
	rc = direct_exists(rel, &st);
	if (rc > 0)
		rc = (fi->flags & O_EXCL) ? -EEXIST : -EPERM;
	if (rc)
		goto out;
	key = direct_key(rel);
	if (!key) {
		rc = -ENOMEM;
		goto out;
	}
	/* A second writer of the same new name shares the first one's file
	 * (ofile_create) under inbox/'s rules: each close commits what it
	 * holds. Otherwise the name is new in the project, so the file starts
	 * empty: a file this mount left received under the staging key (a
	 * failed promotion) is replaced (its row gets removed_at, as any
	 * overwrite in inbox/; another user's: EACCES), never written into. */
	of = ofile_find(key);
	if (of)
		ofile_put(of);
	else
		fi->flags |= O_TRUNC;
	rc = inbox_create(key, mode, fi);
	if (rc)
		goto out;
	h = (struct fhandle *)(uintptr_t)fi->fh;
	of = h->of;
	pthread_mutex_lock(&of->lock);
	if (!of->direct_to && !(of->direct_to = strdup(rel)))
		rc = -ENOMEM;
	of->direct_hold = direct_is_held_name(rel);
	pthread_mutex_unlock(&of->lock);
	if (rc) {
		inbox_release(h);
		fi->fh = 0;
	}
out:
	free(key);
	free(parent);
	free(prefix);
	return rc;
}

int direct_promote_locked(struct ofile *of)
{
	struct promote_result res;
	struct actor who;
	char *key = ofile_rel(of), *prefix = NULL;
	const char *slash = strchr(of->direct_to, '/');
	int rc;

	if (!key || !slash ||
	    !(prefix =
		  strndup(of->direct_to, (size_t)(slash - of->direct_to)))) {
		free(key);
		return -ENOMEM;
	}
	/* moved_by: who wrote it, as received_by (not whoever closes). */
	if (of->has_writer)
		cfs_actor_uid(&who, of->writer);
	else
		cfs_actor(&who);
	rc = promote_file(cfs->promote, key, prefix, slash + 1, &who, &res);
	dcache_invalidate_in(DC_STORE);
	if (rc == 0) {
		/* The staging object is gone (its row has removed_at): the
		 * next commit of this file is a new drop. */
		of->direct_pending = 0;
		of->in_store = 0;
		of->stored_size = 0;
		dcache_remove(key);
		attrov_drop(key, 0);
		if (res.outcome == DB_OUT_DUPLICATE_CONTENT)
			projects_type_changed(of->direct_to);
	} else if (rc == -EEXIST) {
		/* inbox/ listings fetched before may not show the staging
		 * directory the file stays in: fetched again. */
		dcache_invalidate_all();
		/* Nothing overwritten; the bytes stay received. Retrying
		 * cannot succeed: not pending any more. */
		of->direct_pending = 0;
		log_error("projects/%s: another file is stored under that "
			  "name: close fails with EPERM; the bytes written "
			  "are kept in reception as inbox/%s",
			  of->direct_to, key);
		rc = -EPERM;
	} else {
		dcache_invalidate_all();
		log_error("projects/%s: received as inbox/%s, not promoted: "
			  "%s",
			  of->direct_to, key, strerror(-rc));
		if (rc == -ENOENT || rc == -EINVAL || rc == -ENAMETOOLONG)
			of->direct_pending = 0;
	}
	free(prefix);
	free(key);
	return rc;
}

int direct_settle(struct fhandle *h, int rc)
{
	struct ofile *of = h ? h->of : NULL;

	if (rc || !of)
		return rc;
	pthread_mutex_lock(&of->lock);
	if (of->direct_to && of->direct_pending && !of->failed)
		rc = direct_promote_locked(of);
	pthread_mutex_unlock(&of->lock);
	return rc;
}

/* May the caller rename or unlink the held file projects/<rel> (st: its
 * attributes, its staging key's: its writer's owner)? The sticky rule:
 * its owner, the project directory's owner (the mount's, pj_dir_stat) or
 * root. Project directories are not shown sticky, so the kernel never
 * checks this (nor does anything without default_permissions): a sticky
 * project directory would also have the kernel refuse every user's
 * promotion onto a stored name (a duplicate, SPEC 3), stored files being
 * the mount's. 0 or -EPERM. */
static int direct_may_remove(const char *rel, const struct stat *st)
{
	struct fuse_context *ctx = cfs_context();

	if (!ctx || ctx->uid == 0 || ctx->uid == st->st_uid ||
	    ctx->uid == cfs->uid)
		return 0;
	log_info("projects/%s: held file of uid %u: rename or unlink refused "
		 "to uid %u",
		 rel, (unsigned)st->st_uid, (unsigned)ctx->uid);
	return -EPERM;
}

int direct_held_getattr(const char *rel, struct stat *st)
{
	char *key;
	int rc;

	if (!direct_is_held_name(rel) || !(key = direct_key(rel)))
		return -ENOENT;
	rc = inbox_getattr(key, st);
	free(key);
	return rc ? -ENOENT : 0;
}

int direct_rename(const char *from, const char *to)
{
	const char *slash = strchr(to, '/');
	struct promote_result res;
	struct actor who;
	struct ofile *of;
	struct stat st;
	char *key = NULL, *prefix = NULL;
	int rc;

	if (!direct_is_held_name(from) || !slash || !slash[1])
		return -ENOENT;
	if (cfg_is_temp_name(&cfs->cfg, names_basename(to)) ||
	    direct_is_held_name(to))
		return -EPERM; /* held again: stays what it is */
	key = direct_key(from);
	if (!key)
		return -ENOMEM;
	/* Its attributes first: whose it is decides before anything else
	 * (the kernel's sticky check would come before the daemon). */
	rc = inbox_getattr(key, &st);
	if (rc == 0)
		rc = direct_may_remove(from, &st);
	if (rc)
		goto out;
	of = ofile_find(key);
	if (of) {
		pthread_mutex_lock(&of->lock);
		rc = of->writers > 0 || of->pending > 0 || of->dirty ? -EBUSY
								     : 0;
		pthread_mutex_unlock(&of->lock);
		ofile_put(of);
		if (rc)
			goto out;
	}
	prefix = strndup(to, (size_t)(slash - to));
	if (!prefix) {
		rc = -ENOMEM;
		goto out;
	}
	rc = projects_may_promote(prefix);
	if (rc)
		goto out;
	cfs_actor(&who);
	rc = promote_file(cfs->promote, key, prefix, slash + 1, &who, &res);
	dcache_invalidate_in(DC_STORE);
	if (rc == 0) {
		dcache_remove(key);
		attrov_drop(key, 0);
		if (res.outcome == DB_OUT_DUPLICATE_CONTENT)
			projects_type_changed(to);
	} else {
		dcache_invalidate_all();
		log_info("rename projects/%s -> projects/%s (received as "
			 "inbox/%s): %s",
			 from, to, key, strerror(-rc));
	}
out:
	free(prefix);
	free(key);
	return rc;
}

int direct_unlink(const char *rel)
{
	struct stat st;
	char *key;
	int rc;

	if (!direct_is_held_name(rel) || !(key = direct_key(rel)))
		return -ENOENT;
	rc = inbox_getattr(key, &st);
	if (rc == 0)
		rc = direct_may_remove(rel, &st);
	if (rc == 0)
		rc = inbox_unlink(key);
	free(key);
	return rc;
}
