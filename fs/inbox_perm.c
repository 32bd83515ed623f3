/* inbox_perm.c - the caller's permissions on inbox/ files that the kernel
 * could not check itself: attributes newer than those it cached (another
 * object under the name, G2), or a name it believed absent (a create over
 * a file its lookup did not see). The kernel's rules, applied by the
 * daemon on the attributes read now; nothing is checked without
 * default_permissions. Also the setuid/setgid clearing of a write, and the
 * object a change of attributes is made on (inbox_shown_etag). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "inbox.h"
#include "inbox_int.h"

int privs_clear(const char *rel, int by_writer)
{
	struct fuse_context *ctx = cfs_context();
	struct attrov in = {0};
	struct stat st;
	mode_t kill = 0;
	int rc;

	if (!ctx || ctx->uid == 0)
		return 0;
	memset(&st, 0, sizeof(st));
	st.st_mode = S_IFREG;
	rc = attrov_apply(rel, &st, NULL);
	if (rc == 0) {
		if (st.st_mode & S_ISUID)
			kill |= S_ISUID;
		if ((st.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
			kill |= S_ISGID;
		if (kill) {
			in.mode = st.st_mode & 07777 & ~kill;
			rc = attrov_set(rel, &in,
					ATTROV_MODE | ATTROV_KILLPRIV |
					    (by_writer ? ATTROV_OPENW : 0),
					&st, NULL);
		}
	}
	return rc == -EINPROGRESS ? -EIO : rc;
}

const char *inbox_shown_etag(const char *rel, char *out)
{
	struct ofile *of = ofile_find(rel);
	struct dentry e;
	int open_here = 0;

	out[0] = '\0';
	if (of) {
		pthread_mutex_lock(&cfs->lock);
		open_here = !of->unlinked;
		pthread_mutex_unlock(&cfs->lock);
		ofile_put(of);
	}
	if (open_here || dcache_lookup(rel, &e) || e.is_dir || !e.etag[0])
		return NULL;
	snprintf(out, 80, "%s", e.etag);
	attrov_bound_etag(rel, out);
	return out;
}

/* The kernel's rule on *st's mode for want (r 4, w 2, x 1) by its owner
 * (owner), a member of its group (in_group) or anyone else. 0 or
 * -EACCES. */
static int mode_permits(const struct stat *st, int owner, int in_group,
			mode_t want)
{
	mode_t bits = owner	 ? (st->st_mode >> 6) & 7
		      : in_group ? (st->st_mode >> 3) & 7
				 : st->st_mode & 7;

	return (bits & want) == want ? 0 : -EACCES;
}

int may_open(const struct stat *st, int acc)
{
	struct fuse_context *ctx = cfs_context();
	mode_t want = 0;
	int owner;

	if (!cfs->perm_checks || !ctx || ctx->uid == 0)
		return 0;
	if (acc != O_WRONLY)
		want |= 4;
	if (acc != O_RDONLY)
		want |= 2;
	owner = ctx->uid == st->st_uid;
	return mode_permits(
	    st, owner, !owner && cfs_caller_in_group(ctx, st->st_gid), want);
}

void inbox_default_stat(struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | (cfs->cfg.file_mode & 07777);
	st->st_nlink = 1;
	st->st_uid = cfs->foreign_uid;
	st->st_gid = cfs->foreign_gid;
}

int ofile_may_hold(struct ofile *of, int acc)
{
	struct stat held = {0};
	int set;

	pthread_mutex_lock(&cfs->lock);
	set = of->held_set;
	held.st_uid = of->held_uid;
	held.st_gid = of->held_gid;
	held.st_mode = S_IFREG | of->held_mode;
	pthread_mutex_unlock(&cfs->lock);
	return set ? may_open(&held, acc) : 0;
}

int ofile_may_open(struct ofile *of, const char *rel, int acc)
{
	struct fuse_context *ctx = cfs_context();
	struct stat now;
	int rc;

	if (!cfs->perm_checks || !ctx || ctx->uid == 0)
		return 0;
	/* the name's row read now, not this mount's snapshot of it: a
	 * writer's bytes go over whatever object the key holds */
	pthread_mutex_lock(&of->lock);
	ofile_stat(of, &now);
	pthread_mutex_unlock(&of->lock);
	/* A deferred publish's file (review-h5 N5): its own attributes until
	 * its close, never rel's row (rel's stored object's, which its
	 * close replaces: its rename was allowed to). */
	if (ofile_deferred_stat(of, &now))
		rc = 0;
	else
		rc = attrov_apply_fresh(rel, &now, NULL);
	if (rc == -EIO) /* (now untouched) the database unreachable: the row
			   as this mount has it, as for any other open */
		rc = attrov_apply(rel, &now, NULL);
	if (rc == 0)
		rc = may_open(&now, acc);
	return rc ? rc : ofile_may_hold(of, acc);
}

/* May w write a file of attributes *st? may_open's rule. */
static int writer_may_write(const struct ofile_writer_id *w,
			    const struct stat *st)
{
	int i, in_group = 0;

	for (i = 0; !in_group && i < w->ngroups; i++)
		in_group = w->groups[i] == st->st_gid;
	return mode_permits(st, w->uid == st->st_uid, in_group, 2);
}

int ofile_writer_may_replace(struct ofile *of, const char *rel)
{
	struct stat st;
	int rc, i;

	if (!cfs->perm_checks)
		return 0;
	if (of->wids_over)
		return -EACCES;
	if (!of->nwids)
		return 0; /* root's alone */
	inbox_default_stat(&st);
	rc = attrov_apply_fresh(rel, &st, NULL);
	for (i = 0; rc == 0 && i < of->nwids; i++)
		rc = writer_may_write(&of->wids[i], &st);
	return rc;
}

int may_replace(const char *rel, const struct stat *st, int acc)
{
	int rc = may_open(st, acc);

	if (rc)
		return rc;
	rc = inbox_may_remove(rel, st);
	return rc == -EPERM ? -EACCES : rc;
}

int inbox_may_remove(const char *rel, const struct stat *st)
{
	struct fuse_context *ctx = cfs_context();
	const char *slash = strrchr(rel, '/');
	struct stat dir;
	char *parent;
	int rc;

	if (!cfs->perm_checks || !ctx || ctx->uid == 0 ||
	    ctx->uid == st->st_uid)
		return 0;
	parent = slash ? strndup(rel, (size_t)(slash - rel)) : strdup("");
	if (!parent)
		return -ENOMEM;
	rc = inbox_getattr(parent, &dir);
	free(parent);
	if (rc)
		return rc;
	if ((dir.st_mode & S_ISVTX) && dir.st_uid != ctx->uid)
		return -EPERM;
	return 0;
}
