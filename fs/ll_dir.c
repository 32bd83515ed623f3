/* ll_dir.c - the low-level operations on directories (opendir, readdir,
 * readdirplus, releasedir), statfs and extended attributes, over the
 * handlers of cfs_ops; see ll.h. A directory is read whole at offset 0 (the
 * handlers give every entry offset 0) and served from its handle, its
 * entries numbered from 1, as libfuse's fuse.c does. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "ll_int.h"

#define FUSE_UNKNOWN_INO 0xffffffff /* libfuse's, for "no inode number" */

/* A directory handle: its entries, read at offset 0. */
struct ll_dh {
	pthread_mutex_t lock;
	char **names;	  /* protected by lock */
	struct stat *sts; /* protected by lock */
	size_t n, cap;	  /* protected by lock */
	int filled;	  /* protected by lock */
	int error;	  /* protected by lock */
};

/* ---- directories: read whole at offset 0, served from the handle ---- */

static int dh_fill(void *buf, const char *name, const struct stat *st,
		   off_t off, enum fuse_fill_dir_flags flags)
{
	struct ll_dh *dh = buf;

	(void)off; /* every handler gives 0: entries are numbered here */
	if ((flags & ~FUSE_FILL_DIR_PLUS) != 0) {
		dh->error = -EIO;
		return 1;
	}
	if (dh->n == dh->cap) {
		size_t cap = dh->cap ? dh->cap * 2 : 64;
		char **names = realloc(dh->names, cap * sizeof(*names));
		struct stat *sts;

		if (!names) {
			dh->error = -ENOMEM;
			return 1;
		}
		dh->names = names;
		sts = realloc(dh->sts, cap * sizeof(*sts));
		if (!sts) {
			dh->error = -ENOMEM;
			return 1;
		}
		dh->sts = sts;
		dh->cap = cap;
	}
	dh->names[dh->n] = strdup(name);
	if (!dh->names[dh->n]) {
		dh->error = -ENOMEM;
		return 1;
	}
	memset(&dh->sts[dh->n], 0, sizeof(dh->sts[dh->n]));
	if (st)
		dh->sts[dh->n].st_mode = st->st_mode;
	dh->sts[dh->n].st_ino = FUSE_UNKNOWN_INO; /* use_ino 0 */
	dh->n++;
	dh->filled = 1;
	return 0;
}

static void dh_clear(struct ll_dh *dh)
{
	size_t i;

	for (i = 0; i < dh->n; i++)
		free(dh->names[i]);
	dh->n = 0;
	dh->filled = 0;
	dh->error = 0;
}

void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ll_dh *dh = calloc(1, sizeof(*dh));
	char *path;
	int err;

	ll_enter(req);
	if (!dh) {
		ll_reply_err(req, -ENOMEM);
		return;
	}
	pthread_mutex_init(&dh->lock, NULL);
	fi->fh = (uintptr_t)dh;
	/* No opendir handler: only the path is checked. */
	err = ll_get_path(ino, &path);
	if (!err)
		ll_free_path(ino, path);
	if (err) {
		ll_reply_err(req, err);
	} else {
		ll_leave();
		if (fuse_reply_open(req, fi) != -ENOENT)
			return;
	}
	pthread_mutex_destroy(&dh->lock);
	free(dh);
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *llfi, int plus)
{
	struct ll_dh *dh = (struct ll_dh *)(uintptr_t)llfi->fh;
	struct fuse_file_info fi;
	char *buf, *path;
	size_t len = 0;
	off_t pos;
	int err = 0;

	ll_enter(req);
	memset(&fi, 0, sizeof(fi)); /* no opendir handler: no fh */
	pthread_mutex_lock(&dh->lock);
	if (!off)
		dh->filled = 0; /* rewinddir reads it again */
	if (!dh->filled) {
		err = ll_get_path_nullok(ino, &path);
		if (!err) {
			dh_clear(dh);
			err = cfs_ops.readdir(path, dh, dh_fill, off, &fi,
					      plus ? FUSE_READDIR_PLUS : 0);
			if (!err)
				err = dh->error;
			if (err)
				dh->filled = 0;
			ll_free_path(ino, path);
		}
	}
	if (err) {
		pthread_mutex_unlock(&dh->lock);
		ll_reply_err(req, err);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		pthread_mutex_unlock(&dh->lock);
		ll_reply_err(req, -ENOMEM);
		return;
	}
	for (pos = off; dh->filled && pos >= 0 && (size_t)pos < dh->n; pos++) {
		size_t one;

		if (plus) {
			struct fuse_entry_param e = {.ino = 0};

			e.attr = dh->sts[pos];
			one =
			    fuse_add_direntry_plus(req, buf + len, size - len,
						   dh->names[pos], &e, pos + 1);
		} else {
			one = fuse_add_direntry(req, buf + len, size - len,
						dh->names[pos], &dh->sts[pos],
						pos + 1);
		}
		if (len + one > size)
			break;
		len += one;
	}
	pthread_mutex_unlock(&dh->lock);
	ll_leave();
	fuse_reply_buf(req, buf, len);
	free(buf);
}

void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, 0);
}

void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, 1);
}

void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ll_dh *dh = (struct ll_dh *)(uintptr_t)fi->fh;

	(void)ino;
	pthread_mutex_lock(&dh->lock);
	dh_clear(dh);
	pthread_mutex_unlock(&dh->lock);
	pthread_mutex_destroy(&dh->lock);
	free(dh->names);
	free(dh->sts);
	free(dh);
	fuse_reply_err(req, 0);
}

void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	char *path = NULL;
	int err = 0;

	memset(&sv, 0, sizeof(sv));
	ll_enter(req);
	if (ino)
		err = ll_get_path(ino, &path);
	if (!err) {
		err = cfs_ops.statfs(path ? path : "/", &sv);
		ll_free_path(ino, path);
	}
	if (err) {
		ll_reply_err(req, err);
		return;
	}
	ll_leave();
	fuse_reply_statfs(req, &sv);
}

void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 const char *value, size_t size, int flags)
{
	char *path;
	int err;

	ll_enter(req);
	err = ll_get_path(ino, &path);
	if (!err) {
		err = cfs_ops.setxattr(path, name, value, size, flags);
		ll_free_path(ino, path);
	}
	ll_reply_err(req, err);
}

/* getxattr (name) or listxattr (name NULL): the value, or its size when
 * size is 0 (libfuse's replies). */
static void xattr_common(fuse_req_t req, fuse_ino_t ino, const char *name,
			 size_t size)
{
	char *path, *value = NULL;
	int res;

	ll_enter(req);
	if (size && !(value = malloc(size))) {
		ll_reply_err(req, -ENOMEM);
		return;
	}
	res = ll_get_path(ino, &path);
	if (!res) {
		res = name ? cfs_ops.getxattr(path, name, value, size)
			   : cfs_ops.listxattr(path, value, size);
		ll_free_path(ino, path);
	}
	if (size && res > 0) {
		ll_leave();
		fuse_reply_buf(req, value, (size_t)res);
	} else if (!size && res >= 0) {
		ll_leave();
		fuse_reply_xattr(req, (size_t)res);
	} else {
		ll_reply_err(req, res);
	}
	free(value);
}

void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	xattr_common(req, ino, name, size);
}

void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	xattr_common(req, ino, NULL, size);
}

void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	char *path;
	int err;

	ll_enter(req);
	err = ll_get_path(ino, &path);
	if (!err) {
		err = cfs_ops.removexattr(path, name);
		ll_free_path(ino, path);
	}
	ll_reply_err(req, err);
}
