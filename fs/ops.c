/* ops.c - the FUSE operation table: routes each path to its area.
 *
 *   /            inbox/ projects/ audit/, nothing else may be created
 *   /inbox/...   the reception bucket (ops_inbox.c)
 *   /projects/   the definitive store (ops_projects.c)
 *   /audit/      read-only views: every change is EROFS
 *
 * Handlers return 0 or -errno. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "audit.h"
#include "counters.h"
#include "fs.h"
#include "fuseinit.h"
#include "inbox.h"
#include "inbox_int.h"
#include "inval.h"
#include "log.h"
#include "names.h"
#include "projects.h"

struct cfs *cfs;

enum cfs_area cfs_area_of(const char *path, const char **rel)
{
	static const struct {
		const char *name;
		enum cfs_area area;
	} top[] = {
	    {"inbox", AREA_INBOX},
	    {"projects", AREA_PROJECTS},
	    {"audit", AREA_AUDIT},
	};
	size_t i;

	*rel = "";
	if (!path) /* a removed node: libfuse has no path for it */
		return AREA_NONE;
	if (!strcmp(path, "/"))
		return AREA_ROOT;
	for (i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
		size_t n = strlen(top[i].name);

		if (strncmp(path + 1, top[i].name, n))
			continue;
		if (path[1 + n] == '\0')
			return top[i].area;
		if (path[1 + n] == '/') {
			*rel = path + 2 + n;
			return top[i].area;
		}
	}
	return AREA_NONE;
}

/* Is the caller of this request in group gid (its own or a
 * supplementary one)? */
void cfs_ro_file_stat(struct stat *st, uint64_t size,
		      const struct timespec *when)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_uid = cfs->uid;
	st->st_gid = cfs->gid;
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	if (when && when->tv_sec)
		st->st_mtim = st->st_ctim = st->st_atim = *when;
	else
		st->st_mtime = st->st_ctime = st->st_atime = cfs->started;
}

int cfs_caller_in_group(const struct fuse_context *ctx, gid_t gid)
{
	gid_t list[256];
	int n, i;

	if (ctx->gid == gid)
		return 1;
	n = cfs_getgroups(256, list);
	for (i = 0; i < n && i < 256; i++)
		if (list[i] == gid)
			return 1;
	return 0;
}

/* The last uid -> name resolved: files are mostly written by one user. */
static pthread_mutex_t actor_lock = PTHREAD_MUTEX_INITIALIZER;
static uid_t actor_uid = (uid_t)-1; /* protected by actor_lock */
static char actor_user[64];	    /* protected by actor_lock */
static time_t actor_when;	    /* protected by actor_lock */

void cfs_actor(struct actor *a)
{
	struct fuse_context *ctx = cfs_context();

	cfs_actor_uid(a, ctx ? ctx->uid : getuid());
}

void cfs_actor_uid(struct actor *a, uid_t uid)
{
	struct passwd pw, *res = NULL;
	char buf[1024];
	time_t now = time(NULL);
	int hit;

	memset(a, 0, sizeof(*a));
	a->uid = uid;
	snprintf(a->host, sizeof(a->host), "%s", cfs->host);
	pthread_mutex_lock(&actor_lock);
	hit = actor_uid == a->uid && now - actor_when < 60;
	if (hit)
		memcpy(a->user, actor_user, sizeof(a->user));
	pthread_mutex_unlock(&actor_lock);
	if (hit)
		return;
	if (getpwuid_r(a->uid, &pw, buf, sizeof(buf), &res) == 0 && res)
		snprintf(a->user, sizeof(a->user), "%s", pw.pw_name);
	else
		snprintf(a->user, sizeof(a->user), "%u", (unsigned)a->uid);
	pthread_mutex_lock(&actor_lock);
	actor_uid = a->uid;
	actor_when = now;
	memcpy(actor_user, a->user, sizeof(actor_user));
	pthread_mutex_unlock(&actor_lock);
}

/* ---- helpers ---- */

static void dir_stat(struct stat *st, mode_t mode)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFDIR | mode;
	st->st_nlink = 2;
	st->st_uid = cfs->uid;
	st->st_gid = cfs->gid;
	st->st_mtime = st->st_ctime = st->st_atime = cfs->started;
}

/* Names no operation looks further at (SPEC §7): a component over 255
 * bytes, or a key below inbox/ over 1024 bytes. Checked here, once, for
 * every operation that takes a path, before anything reaches the store
 * (the kernel lets components up to 1024 bytes through to us). A NULL path
 * (a removed node) passes. Errors: ENAMETOOLONG. */
static int path_check(const char *path)
{
	const char *p, *c, *rel;

	if (!path)
		return 0;
	for (c = p = path;; p++) {
		if (*p != '/' && *p)
			continue;
		if (p - c > NAMES_MAX_COMPONENT)
			return -ENAMETOOLONG;
		if (!*p)
			break;
		c = p + 1;
	}
	if (cfs_area_of(path, &rel) == AREA_INBOX &&
	    strlen(rel) > NAMES_MAX_KEY)
		return -ENAMETOOLONG;
	return 0;
}

static struct fhandle *fh_of(struct fuse_file_info *fi)
{
	return fi ? (struct fhandle *)(uintptr_t)fi->fh : NULL;
}

/* An inbox/ path that is the hidden name a failed rename over an open file
 * left libfuse's node at (review-hide H7, ofile_set_node): the file's name
 * now (malloc'd), else NULL. */
static char *node_rel(enum cfs_area area, const char *rel)
{
	if (area != AREA_INBOX || !ofile_is_hidden_name(rel))
		return NULL;
	return ofile_node_rel(rel);
}

/* The errno for a change in an area that takes none. */
static int readonly_errno(enum cfs_area area)
{
	switch (area) {
	case AREA_AUDIT:
		return -EROFS;
	case AREA_NONE:
		return -ENOENT;
	default:
		return -EPERM;
	}
}

/* ---- operations ---- */

/* The attributes of an open file, through its handle (path may be NULL).
 * Errors: ENOMEM. */
static int fh_getattr(struct fhandle *h, struct stat *st)
{
	struct ofile *of = fh_file(h);
	char *rel;
	int rc;

	if (!of) {
		/* A read-only handle on a stored object. */
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFREG | (cfs->cfg.file_mode & 07777);
		st->st_nlink = 1;
		st->st_size = (off_t)h->size;
		st->st_uid = cfs->foreign_uid;
		st->st_gid = cfs->foreign_gid;
		st->st_mtime = st->st_ctime = st->st_atime = cfs->started;
	} else {
		int own;

		pthread_mutex_lock(&of->lock);
		ofile_stat(of, st);
		/* a deferred publish: its own, not its name's row's */
		own = ofile_deferred_stat(of, st);
		pthread_mutex_unlock(&of->lock);
		if (own)
			return 0;
	}
	rel = fh_rel(h);
	if (!rel)
		return -ENOMEM;
	rc = attrov_apply(rel, st, NULL);
	free(rel);
	return rc;
}

/* 1 when fuse path's type changed under an inode the kernel may hold (a
 * content duplicate made a symlink, inval.h) and this request's caller
 * is to be answered ESTALE (once per thread, inval_stale_take): its path
 * walk then retries with a forced lookup, which replaces the inode,
 * instead of the kernel refusing the new type with EIO (getattr) or the
 * old inode's request failing (open, xattrs: review-O A1, A3). */
static int type_changed_stale(const char *path)
{
	struct fuse_context *ctx = cfs_context();

	return inval_stale_take(path, ctx ? ctx->pid : 0);
}

/* Errors: ENOENT, ENAMETOOLONG, ESTALE (no path, no handle; or, once per
 * thread, a name whose type changed under the kernel), EIO. */
static int cfs_getattr(const char *path, struct stat *st,
		       struct fuse_file_info *fi)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	struct fhandle *h = fh_of(fi);
	int rc = path_check(path);

	if (rc)
		return rc;
	if (h && h->area == AREA_PROJECTS && !path)
		return projects_fh_getattr(h, st);
	if (h && h->area == AREA_AUDIT)
		return audit_fh_getattr(h, st);
	if (h && h->area != AREA_PROJECTS &&
	    (fh_file(h) || !path || (h->area == AREA_INBOX && fh_stale(h))))
		return fh_getattr(h, st);
	if (!path)
		return -ESTALE;
	switch (area) {
	case AREA_ROOT:
		dir_stat(st, 0755);
		return 0;
	case AREA_INBOX: {
		char *now = node_rel(area, rel);

		rc = inbox_getattr(now ? now : rel, st);
		free(now);
		return rc;
	}
	case AREA_PROJECTS:
		if (!h && type_changed_stale(path))
			return -ESTALE;
		rc = projects_getattr(rel, st);
		if (rc == -ENOENT && *rel) {
			/* a file being written into the project */
			char *key = direct_open_key(rel);

			if (key)
				rc = inbox_getattr(key, st);
			free(key);
		}
		if (rc == -ENOENT && *rel)
			rc = direct_held_getattr(rel, st);
		return rc;
	case AREA_AUDIT:
		return audit_getattr(rel, st);
	default:
		return -ENOENT;
	}
}

/* Errors: ENOENT, ENOTDIR, ENAMETOOLONG, EIO. */
static int cfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		       off_t offset, struct fuse_file_info *fi,
		       enum fuse_readdir_flags flags)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;

	filler(buf, ".", NULL, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	switch (area) {
	case AREA_ROOT:
		filler(buf, "inbox", NULL, 0, 0);
		filler(buf, "projects", NULL, 0, 0);
		filler(buf, "audit", NULL, 0, 0);
		return 0;
	case AREA_INBOX:
		return inbox_readdir(rel, buf, filler);
	case AREA_PROJECTS:
		return projects_readdir(rel, buf, filler);
	case AREA_AUDIT:
		return audit_readdir(rel, buf, filler);
	default:
		return -ENOENT;
	}
}

/* Errors: EPERM (root), EROFS (audit/), EEXIST, EINVAL, EACCES
 * (projects/<p>: not in project_group), ENOENT, ENAMETOOLONG, EIO. */
static int cfs_mkdir(const char *path, mode_t mode)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;
	if (area == AREA_INBOX && *rel && direct_is_reserved(rel))
		return -EPERM;
	if (area == AREA_INBOX && *rel)
		return inbox_mkdir(rel, mode);
	if (area == AREA_PROJECTS && *rel)
		return projects_mkdir(rel, mode);
	if (area != AREA_NONE && !*rel)
		return -EEXIST;
	return readonly_errno(area == AREA_NONE ? AREA_ROOT : area);
}

/* Errors: EPERM, EROFS, ENOENT, ENOTEMPTY, EBUSY, ENAMETOOLONG, EIO. */
static int cfs_rmdir(const char *path)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;

	if (area == AREA_INBOX && *rel)
		return inbox_rmdir(rel);
	if (area == AREA_PROJECTS && *rel)
		return projects_rmdir(rel);
	if (area == AREA_INBOX || area == AREA_PROJECTS || area == AREA_ROOT)
		return -EBUSY;
	return readonly_errno(area);
}

/* Errors: EPERM, EROFS, EINVAL, ENAMETOOLONG, EIO, ENOSPC. */
static int cfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;
	if (area == AREA_INBOX && *rel && direct_is_reserved(rel))
		return -EPERM;
	if (area == AREA_INBOX && *rel)
		return inbox_create(rel, mode, fi);
	if (area == AREA_PROJECTS)
		return direct_create(rel, mode, fi);
	return readonly_errno(area == AREA_NONE ? AREA_ROOT : area);
}

/* Errors: ENOENT, EISDIR, EROFS, EPERM (projects/: for writing),
 * ENOSPC (audit/: the snapshot could not be spooled), ENAMETOOLONG, EIO. */
static int cfs_open(const char *path, struct fuse_file_info *fi)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;

	if (area == AREA_INBOX && *rel)
		return inbox_open(rel, fi);
	if (area == AREA_PROJECTS && *rel) {
		/* opened through the old inode of a name now a symlink */
		if (!(fi->flags & O_PATH) && type_changed_stale(path))
			return -ESTALE;
		/* a file being written into the project: as in inbox/ */
		char *key = direct_open_key(rel);
		struct stat st;

		/* (once promoted, it is a stored file: immutable) */
		if (key && projects_getattr(rel, &st) == -ENOENT) {
			rc = inbox_open(key, fi);
			free(key);
			return rc;
		}
		free(key);
		/* Opened for writing through an entry the kernel still
		 * holds (entry timeout) for a name that is gone (a create
		 * whose promotion failed, another mount's change): ESTALE
		 * makes the kernel look the name up again once (LOOKUP_REVAL),
		 * and an O_CREAT then becomes a create. */
		if ((fi->flags & O_ACCMODE) != O_RDONLY &&
		    projects_getattr(rel, &st) == -ENOENT)
			return -ESTALE;
	}
	if (area == AREA_PROJECTS)
		return projects_open(rel, fi);
	if (area == AREA_AUDIT)
		return audit_open(rel, fi);
	return area == AREA_ROOT || !*rel ? -EISDIR : -ENOENT;
}

static int cfs_read(const char *path, char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fhandle *h = fh_of(fi);

	if (h && h->area == AREA_PROJECTS)
		return projects_read(h, buf, size, off);
	if (h && h->area == AREA_AUDIT)
		return audit_read(h, buf, size, off);
	return h ? inbox_read(h, buf, size, off) : -EBADF;
}

static int cfs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fhandle *h = fh_of(fi);

	if (h && h->area == AREA_PROJECTS)
		return -EBADF; /* opened read-only */
	if (h && h->area == AREA_AUDIT)
		return -EROFS;
	return h ? inbox_write(h, buf, size, off) : -EBADF;
}

/* close(2): the upload and the reception row are committed here, and a
 * direct write into a project promoted (direct_settle), so a failure
 * reaches the caller of close. */
static int cfs_flush(const char *path, struct fuse_file_info *fi)
{
	struct fhandle *h = fh_of(fi);

	if (h && (h->area == AREA_PROJECTS || h->area == AREA_AUDIT))
		return 0;
	return h ? direct_settle(h, inbox_sync(h, 1)) : 0;
}

static int cfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct fhandle *h = fh_of(fi);

	if (h && (h->area == AREA_PROJECTS || h->area == AREA_AUDIT))
		return 0;
	return h ? direct_settle(h, inbox_sync(h, 0)) : 0;
}

static int cfs_release(const char *path, struct fuse_file_info *fi)
{
	struct fhandle *h = fh_of(fi);

	if (h && h->area == AREA_PROJECTS)
		projects_release(h);
	else if (h && h->area == AREA_AUDIT)
		audit_release(h);
	else if (h)
		inbox_release(h);
	return 0;
}

/* Errors: EPERM, EROFS, ENOENT, EISDIR, ESTALE, ENAMETOOLONG, EIO. */
static int cfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;

	if (fi && fh_of(fi) && fh_of(fi)->area == AREA_PROJECTS)
		return -EPERM; /* a stored file */
	if (fi && fh_of(fi) && fh_of(fi)->area == AREA_AUDIT)
		return -EROFS;
	if (area == AREA_PROJECTS && fi && fh_of(fi) && fh_of(fi)->of)
		return inbox_truncate(NULL, size, fh_of(fi)); /* direct write */
	if (area == AREA_PROJECTS && *rel && !fi) {
		char *key = direct_open_key(rel);

		if (key) {
			rc = inbox_truncate(key, size, NULL);
			free(key);
			return rc;
		}
	}
	if (!path)
		return fi ? inbox_truncate(NULL, size, fh_of(fi)) : -ESTALE;
	if (area == AREA_INBOX && *rel) {
		char *now = node_rel(area, rel);

		rc = inbox_truncate(now ? now : rel, size, fh_of(fi));
		free(now);
		return rc;
	}
	if (area == AREA_PROJECTS)
		return projects_change(rel);
	return readonly_errno(area);
}

/* Errors: EPERM, EROFS, ENOENT, EISDIR, ENAMETOOLONG, EIO. */
static int cfs_unlink(const char *path)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;

	if (area == AREA_INBOX && *rel)
		return inbox_unlink(rel);
	if (area == AREA_PROJECTS && *rel) {
		rc = direct_unlink(rel); /* an rsync temp file received */
		if (rc != -ENOENT)
			return rc;
	}
	if (area == AREA_PROJECTS)
		return projects_change(rel);
	return readonly_errno(area);
}

/* Errors: EPERM (root; projects/: stored files are immutable; out of
 * projects/), EROFS (audit/), ENOENT, ENAMETOOLONG, plus those of
 * inbox_rename and, from inbox/ into a project, of promote_rename
 * (EEXIST, EBUSY, ENOENT, EIO...). */
static int cfs_rename(const char *from, const char *to, unsigned int flags)
{
	const char *rf, *rt;
	enum cfs_area af = cfs_area_of(from, &rf);
	enum cfs_area at = cfs_area_of(to, &rt);
	int rc = path_check(from);

	if (rc == 0)
		rc = path_check(to);
	if (rc)
		return rc;

	if (af == AREA_AUDIT || at == AREA_AUDIT)
		return -EROFS;
	/* The staging area of direct writes: only left there by them. */
	if ((at == AREA_INBOX && direct_is_reserved(rt)) ||
	    (af == AREA_INBOX && direct_is_staging(rf)))
		return -EPERM;
	if (af == AREA_INBOX && at == AREA_INBOX && *rf && *rt)
		return inbox_rename(rf, rt, flags);
	if (af == AREA_INBOX && at == AREA_PROJECTS && *rf && *rt)
		return promote_rename(rf, rt, flags);
	if (af == AREA_PROJECTS && at == AREA_PROJECTS && *rf && *rt &&
	    !(flags & RENAME_EXCHANGE)) {
		/* rsync's temp file into place: promoted under rt */
		rc = direct_rename(rf, rt);
		if (rc != -ENOENT)
			return rc;
	}
	if (af == AREA_PROJECTS)
		return projects_change(rf);
	return -EPERM;
}

/* Is this mode change the kernel's clearing of setuid/setgid for a write
 * or truncation through its page cache (file_remove_privs: sent as a
 * chmod with the writer's credentials) rather than a chmod? Told apart
 * when the caller is neither root nor the owner (who could not chmod the
 * file; the owner's own kill stays a chmod, indistinguishable) and the
 * change drops exactly the bits the kernel's rule drops (setuid; setgid
 * with group execute) and nothing else. */
static int kernel_kill_priv(const struct stat *st, const struct attrov *in,
			    unsigned what)
{
	struct fuse_context *ctx = cfs_context();
	mode_t old = st->st_mode & 07777, kill = 0;

	if (what != ATTROV_MODE || !ctx || ctx->uid == 0 ||
	    ctx->uid == st->st_uid)
		return 0;
	if (old & S_ISUID)
		kill |= S_ISUID;
	if ((old & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		kill |= S_ISGID;
	return kill && (in->mode & 07777) == (old & ~kill);
}

/* Without default_permissions (-o no_default_permissions, [fs]
 * default_permissions = false) the kernel checks nothing, yet a chmod or
 * chown is recorded in the shared database and honoured by every mount
 * that enforces permissions: the daemon keeps the kernel's rules for
 * those. chmod: the owner or root (anyone may only drop setuid/setgid:
 * what a write does). chown: root; the owner may only set its file's
 * group to one of its own groups. utimens: explicit times, the owner or
 * root (EPERM); both times now, also whoever may write the file (else
 * EACCES). 0, -EPERM or -EACCES. */
static int daemon_checks(const struct stat *st, const struct attrov *in,
			 unsigned what, int explicit_times)
{
	struct fuse_context *ctx = cfs_context();

	mode_t old = st->st_mode & 07777, bit;

	if (cfs->perm_checks || !ctx || ctx->uid == 0)
		return 0;
	if ((what & (ATTROV_ATIME | ATTROV_MTIME)) && ctx->uid != st->st_uid) {
		if (explicit_times)
			return -EPERM;
		if (cfs_caller_in_group(ctx, st->st_gid))
			bit = S_IWGRP;
		else
			bit = S_IWOTH;
		if (!(old & bit))
			return -EACCES;
	}
	if (!(what & (ATTROV_MODE | ATTROV_OWNER)))
		return 0;
	/* The kernel's clearing of setuid/setgid when another user writes
	 * (file_remove_privs) comes as a chmod by the writer: let through
	 * a mode change that drops exactly the bits its rule drops (the
	 * database checks it again as a kill). */
	if (kernel_kill_priv(st, in, what))
		return 0;
	if (ctx->uid != st->st_uid)
		return -EPERM;
	if (!(what & ATTROV_OWNER))
		return 0;
	if (in->uid != (uid_t)-1 && in->uid != st->st_uid)
		return -EPERM;
	if (in->gid != (gid_t)-1 && in->gid != st->st_gid &&
	    !cfs_caller_in_group(ctx, in->gid))
		return -EPERM;
	return 0;
}

/* The mount's root, inbox/ and projects/ keep the modes and owner the
 * daemon gives them: a chmod or chown that would change them fails
 * (EPERM, for root too: a success would be a lie), one that changes
 * nothing succeeds (rsync -a, cp -a into the mount), and so do times
 * (not kept). 0 or -EPERM, or getattr's errno. */
static int top_dir_setattr(const char *path, const struct attrov *in,
			   unsigned what)
{
	struct stat st;
	int rc = cfs_getattr(path, &st, NULL);

	if (rc)
		return rc;
	if ((what & ATTROV_MODE) && (in->mode & 07777) != (st.st_mode & 07777))
		return -EPERM;
	if ((what & ATTROV_OWNER) &&
	    ((in->uid != (uid_t)-1 && in->uid != st.st_uid) ||
	     (in->gid != (gid_t)-1 && in->gid != st.st_gid)))
		return -EPERM;
	return 0;
}

/* chmod/chown/utimens succeed on inbox/ files (kept for the view), so
 * cp -p, rsync -a and file managers work; each is a status change (ctime).
 * On /, inbox/ and projects/ themselves see top_dir_setattr; below
 * projects/ they succeed and change nothing.
 * The database checks the change again on the row as it is (the caller's
 * view may be older: db_attrs_set).
 * Errors: ENOENT, ENAMETOOLONG, EROFS, EPERM, EACCES, ESTALE, EIO, ENOMEM. */
static int cfs_setattr_common(const char *path, struct fuse_file_info *fi,
			      struct attrov *in, unsigned what,
			      int explicit_times)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	struct fhandle *h = fh_of(fi);
	char *own = NULL, etag[80] = "";
	struct stat st;
	int rc = path_check(path);

	if (rc)
		return rc;
	if (!path) {
		/* A removed node: act on the open file its handle names. */
		if (!h)
			return -ESTALE;
		if (h->area == AREA_PROJECTS)
			return 0; /* a stored file: as projects/ paths */
		if (h->area == AREA_AUDIT)
			return -EROFS;
		rc = fh_getattr(h, &st);
		if (rc)
			return rc;
		own = fh_rel(h);
		if (!own)
			return -ENOMEM;
		rel = own;
	} else {
		if (area == AREA_AUDIT)
			return -EROFS;
		if (area == AREA_NONE)
			return -ENOENT;
		if (!*rel)
			return top_dir_setattr(path, in, what);
		if (area != AREA_INBOX)
			return 0;
		own = node_rel(area, rel);
		if (own)
			rel = own;
		/* The object checked is the one changed: one lookup. */
		rc = inbox_getattr_shown(rel, &st, etag);
		if (rc)
			return rc;
	}
	rc = daemon_checks(&st, in, what, explicit_times);
	if (rc == 0 && kernel_kill_priv(&st, in, what)) {
		what |= ATTROV_KILLPRIV; /* logged as what it is */
		/* A write through a descriptor open for writing here (its
		 * permission checked at open, as POSIX has it): the kernel
		 * clears the bits whatever the mode says now. The kernel's
		 * chmod carries no handle: a descriptor the calling process
		 * holds open for writing on this name (whoever opened it; a
		 * handle of another process does not count). */
		struct fuse_context *ctx = cfs_context();

		if ((h && h->writable) || (ctx && pid_writes(ctx->pid, rel)))
			what |= ATTROV_OPENW;
	}
	if ((what & (ATTROV_ATIME | ATTROV_MTIME)) && !explicit_times)
		what |= ATTROV_NOW;
	/* Nothing to change (utimens with both times UTIME_OMIT, chown to
	 * -1:-1): no status change either. */
	if (rc == 0 && what)
		rc = attrov_set(rel, in, what, &st, etag[0] ? etag : NULL);
	free(own);
	return rc;
}

static int cfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct attrov in = {.mode = mode};

	return cfs_setattr_common(path, fi, &in, ATTROV_MODE, 0);
}

static int cfs_chown(const char *path, uid_t uid, gid_t gid,
		     struct fuse_file_info *fi)
{
	struct attrov in = {.uid = uid, .gid = gid};
	int none = uid == (uid_t)-1 && gid == (gid_t)-1;

	return cfs_setattr_common(path, fi, &in, none ? 0 : ATTROV_OWNER, 0);
}

static int cfs_utimens(const char *path, const struct timespec tv[2],
		       struct fuse_file_info *fi)
{
	struct attrov in = {0};
	unsigned what = 0;
	struct timespec now;
	int explicit_times = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	if (!tv) {
		in.atime = in.mtime = now;
		what = ATTROV_ATIME | ATTROV_MTIME;
	} else {
		if (tv[0].tv_nsec != UTIME_OMIT) {
			in.atime = tv[0].tv_nsec == UTIME_NOW ? now : tv[0];
			what |= ATTROV_ATIME;
			explicit_times |= tv[0].tv_nsec != UTIME_NOW;
		}
		if (tv[1].tv_nsec != UTIME_OMIT) {
			in.mtime = tv[1].tv_nsec == UTIME_NOW ? now : tv[1];
			what |= ATTROV_MTIME;
			explicit_times |= tv[1].tv_nsec != UTIME_NOW;
		}
	}
	/* One time now, the other omitted, is not explicit here, though the
	 * kernel's utimensat takes it so (owner only, checked there with
	 * default_permissions): a truncation's mtime update by a writer
	 * (open O_TRUNC, ftruncate) comes in the same form. */
	return cfs_setattr_common(path, fi, &in, what, explicit_times);
}

/* Links: S3 holds neither. Errors: EROFS (audit/), ENAMETOOLONG, EPERM
 * elsewhere. */
static int cfs_symlink(const char *target, const char *path)
{
	const char *rel;
	int rc = path_check(path);

	if (rc)
		return rc;
	return readonly_errno(
	    cfs_area_of(path, &rel) == AREA_AUDIT ? AREA_AUDIT : AREA_ROOT);
}

/* FIFOs, device nodes and sockets: a bucket holds none (ENOSYS, as when
 * there was no handler; a regular file's mknod is a create, libfuse's).
 * Errors: EROFS (audit/), ENAMETOOLONG, ENOSYS elsewhere. */
static int cfs_mknod(const char *path, mode_t mode, dev_t rdev)
{
	const char *rel;
	int rc = path_check(path);

	(void)mode;
	(void)rdev;
	if (rc)
		return rc;
	return cfs_area_of(path, &rel) == AREA_AUDIT ? -EROFS : -ENOSYS;
}

/* A hard link to an audit/ file changes it (its link count): EROFS too. */
static int cfs_link(const char *from, const char *to)
{
	const char *rel;

	if (cfs_area_of(from, &rel) == AREA_AUDIT && !path_check(from))
		return -EROFS;
	return cfs_symlink(from, to);
}

static int cfs_statfs(const char *path, struct statvfs *sv)
{
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = 1 << 20;
	sv->f_frsize = 4096;
	sv->f_blocks = sv->f_bfree = sv->f_bavail = 1ULL << 40;
	sv->f_files = sv->f_ffree = sv->f_favail = 1ULL << 32;
	sv->f_namemax = 255;
	return 0;
}

/* Extended attributes: only user.custodyfs.name on projects/<p> (its
 * name in projects_registry). Elsewhere there are none: getxattr ENODATA,
 * listxattr empty, setxattr ENOTSUP (EROFS in audit/), as a filesystem
 * without xattr support for that name answers; cp -a and rsync -X accept
 * that. Cost: the kernel now asks getxattr(security.capability) before
 * every write(2) (FUSE clears SB_NOSEC; only ENOSYS, which is sticky for
 * the whole mount, would stop it): one request answered here without I/O
 * (no measurable change writing 32 MiB in 4 KiB writes). */
static int cfs_getxattr(const char *path, const char *name, char *value,
			size_t size)
{
	const char *rel;
	int rc = path_check(path);

	if (rc)
		return rc;
	if (cfs_area_of(path, &rel) != AREA_PROJECTS)
		return -ENODATA;
	if (*rel && type_changed_stale(path))
		return -ESTALE; /* the old inode (path_getxattr retries) */
	return projects_getxattr(rel, name, value, size);
}

static int cfs_listxattr(const char *path, char *list, size_t size)
{
	const char *rel;
	int rc = path_check(path);

	if (rc)
		return rc;
	if (cfs_area_of(path, &rel) != AREA_PROJECTS)
		return 0;
	if (*rel && type_changed_stale(path))
		return -ESTALE; /* the old inode (path_listxattr retries) */
	return projects_listxattr(rel, list, size);
}

/* Errors: ENOTSUP, EROFS (audit/), plus those of projects_setxattr. */
static int cfs_setxattr(const char *path, const char *name, const char *value,
			size_t size, int flags)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;
	if (area == AREA_PROJECTS)
		return projects_setxattr(rel, name, value, size, flags);
	return area == AREA_AUDIT ? -EROFS : -ENOTSUP;
}

static int cfs_removexattr(const char *path, const char *name)
{
	const char *rel;
	enum cfs_area area = cfs_area_of(path, &rel);
	int rc = path_check(path);

	if (rc)
		return rc;
	if (area == AREA_PROJECTS)
		return projects_removexattr(rel, name);
	return area == AREA_AUDIT ? -EROFS : -ENODATA;
}

/* Errors: EINVAL (not a link), ENOENT, EIO. */
static int cfs_readlink(const char *path, char *buf, size_t size)
{
	const char *rel;
	int rc = path_check(path);

	if (rc)
		return rc;
	if (cfs_area_of(path, &rel) == AREA_PROJECTS)
		return projects_readlink(rel, buf, size);
	return -EINVAL;
}

static void *cfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/* libfuse's node ids as inode numbers: inval.c finds a directory's
	 * node id by its st_ino (entry invalidation). */
	cfg->use_ino = 0;
	cfg->nullpath_ok = 0;
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
	/* A name just looked up and absent is not asked again for a second:
	 * cp's stat-then-create costs one lookup, not two. */
	cfg->negative_timeout = 1.0;
	cfg->kernel_cache = 0;
	/* An open file that is unlinked (or renamed over) is hidden by
	 * libfuse: renamed to ".fuse_hidden…" (inbox_rename treats that as
	 * the unlink for the store) and unlinked at its last release, so
	 * every operation on it still has a node (and, unless its directory
	 * was removed, a path). */
	cfg->hard_remove = 0;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Setuid/setgid bits are kept (attrs.c): the kernel clears them on a
	 * write or truncate by a non-root writer, through setattr (chmod),
	 * so the recorded mode follows. FUSE_CAP_HANDLE_KILLPRIV would leave
	 * that to us: not asked for. */
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	conn->max_write = 1 << 20;
	conn->max_readahead = 1 << 20;
	/* Lookups and listings of one directory run at once (listings of a
	 * directory being fetched join that fetch, dircache.c); libfuse
	 * 3.14 wants this by default but does not tell the kernel:
	 * fuseinit.c does. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	fuseinit_note_want(conn);
	return cfs;
}

static void cfs_destroy(void *data)
{
	attrov_free_all();
	audit_free_all();
}

/* The requests that decide outcomes (log.h events) run between
 * log_op_begin and log_op_end: their lines carry duration_ms, and an error
 * line the S3 code or SQLSTATE met by this request. */
static int cfs_flush_op(const char *path, struct fuse_file_info *fi)
{
	int rc;

	log_op_begin();
	rc = cfs_flush(path, fi);
	log_op_end();
	return rc;
}

static int cfs_fsync_op(const char *path, int datasync,
			struct fuse_file_info *fi)
{
	int rc;

	log_op_begin();
	rc = cfs_fsync(path, datasync, fi);
	log_op_end();
	return rc;
}

static int cfs_release_op(const char *path, struct fuse_file_info *fi)
{
	int rc;

	log_op_begin();
	rc = cfs_release(path, fi);
	log_op_end();
	return rc;
}

static int cfs_unlink_op(const char *path)
{
	int rc;

	log_op_begin();
	rc = cfs_unlink(path);
	log_op_end();
	return rc;
}

static int cfs_rename_op(const char *from, const char *to, unsigned int flags)
{
	int rc;

	log_op_begin();
	rc = cfs_rename(from, to, flags);
	log_op_end();
	return rc;
}

/* Every operation is timed (counters.h: custodyfs_fuse_request_duration_
 * seconds{op}): a CLOCK_MONOTONIC reading and two atomic adds. */
#define CFS_TIMED(fn, op, params, args)                                        \
	static int fn##_timed params                                           \
	{                                                                      \
		uint64_t t0 = ctr_now_ns();                                    \
		int rc = fn args;                                              \
                                                                               \
		fop_observe_since(op, t0);                                     \
		return rc;                                                     \
	}

typedef const char *cstr;
typedef struct fuse_file_info *ffi;

CFS_TIMED(cfs_getattr, FOP_GETATTR, (cstr p, struct stat *st, ffi fi),
	  (p, st, fi))
CFS_TIMED(cfs_readdir, FOP_READDIR,
	  (cstr p, void *buf, fuse_fill_dir_t filler, off_t off, ffi fi,
	   enum fuse_readdir_flags flags),
	  (p, buf, filler, off, fi, flags))
CFS_TIMED(cfs_mkdir, FOP_MKDIR, (cstr p, mode_t mode), (p, mode))
CFS_TIMED(cfs_rmdir, FOP_RMDIR, (cstr p), (p))
CFS_TIMED(cfs_create, FOP_CREATE, (cstr p, mode_t mode, ffi fi), (p, mode, fi))
CFS_TIMED(cfs_open, FOP_OPEN, (cstr p, ffi fi), (p, fi))
CFS_TIMED(cfs_read, FOP_READ, (cstr p, char *buf, size_t n, off_t off, ffi fi),
	  (p, buf, n, off, fi))
CFS_TIMED(cfs_write, FOP_WRITE,
	  (cstr p, const char *buf, size_t n, off_t off, ffi fi),
	  (p, buf, n, off, fi))
CFS_TIMED(cfs_flush_op, FOP_FLUSH, (cstr p, ffi fi), (p, fi))
CFS_TIMED(cfs_fsync_op, FOP_FSYNC, (cstr p, int datasync, ffi fi),
	  (p, datasync, fi))
CFS_TIMED(cfs_release_op, FOP_RELEASE, (cstr p, ffi fi), (p, fi))
CFS_TIMED(cfs_truncate, FOP_TRUNCATE, (cstr p, off_t size, ffi fi),
	  (p, size, fi))
CFS_TIMED(cfs_unlink_op, FOP_UNLINK, (cstr p), (p))
CFS_TIMED(cfs_rename_op, FOP_RENAME, (cstr from, cstr to, unsigned int flags),
	  (from, to, flags))
CFS_TIMED(cfs_chmod, FOP_CHMOD, (cstr p, mode_t mode, ffi fi), (p, mode, fi))
CFS_TIMED(cfs_chown, FOP_CHOWN, (cstr p, uid_t uid, gid_t gid, ffi fi),
	  (p, uid, gid, fi))
CFS_TIMED(cfs_utimens, FOP_UTIMENS,
	  (cstr p, const struct timespec tv[2], ffi fi), (p, tv, fi))
CFS_TIMED(cfs_statfs, FOP_STATFS, (cstr p, struct statvfs *sv), (p, sv))
CFS_TIMED(cfs_symlink, FOP_SYMLINK, (cstr target, cstr p), (target, p))
CFS_TIMED(cfs_readlink, FOP_READLINK, (cstr p, char *buf, size_t n),
	  (p, buf, n))
CFS_TIMED(cfs_link, FOP_LINK, (cstr from, cstr to), (from, to))
CFS_TIMED(cfs_mknod, FOP_MKNOD, (cstr p, mode_t mode, dev_t rdev),
	  (p, mode, rdev))
CFS_TIMED(cfs_getxattr, FOP_GETXATTR,
	  (cstr p, cstr name, char *value, size_t n), (p, name, value, n))
CFS_TIMED(cfs_setxattr, FOP_SETXATTR,
	  (cstr p, cstr name, cstr value, size_t n, int flags),
	  (p, name, value, n, flags))
CFS_TIMED(cfs_listxattr, FOP_LISTXATTR, (cstr p, char *list, size_t n),
	  (p, list, n))
CFS_TIMED(cfs_removexattr, FOP_REMOVEXATTR, (cstr p, cstr name), (p, name))

const struct fuse_operations cfs_ops = {
    .init = cfs_init,
    .destroy = cfs_destroy,
    .getattr = cfs_getattr_timed,
    .readdir = cfs_readdir_timed,
    .mkdir = cfs_mkdir_timed,
    .rmdir = cfs_rmdir_timed,
    .create = cfs_create_timed,
    .open = cfs_open_timed,
    .read = cfs_read_timed,
    .write = cfs_write_timed,
    .flush = cfs_flush_op_timed,
    .fsync = cfs_fsync_op_timed,
    .release = cfs_release_op_timed,
    .truncate = cfs_truncate_timed,
    .unlink = cfs_unlink_op_timed,
    .rename = cfs_rename_op_timed,
    .chmod = cfs_chmod_timed,
    .chown = cfs_chown_timed,
    .utimens = cfs_utimens_timed,
    .statfs = cfs_statfs_timed,
    .symlink = cfs_symlink_timed,
    .readlink = cfs_readlink_timed,
    .getxattr = cfs_getxattr_timed,
    .setxattr = cfs_setxattr_timed,
    .listxattr = cfs_listxattr_timed,
    .removexattr = cfs_removexattr_timed,
    .link = cfs_link_timed,
    .mknod = cfs_mknod_timed,
};
