/* ll_io.c - the low-level operations on an open file's data (read, write,
 * flush, fsync) over the handlers of cfs_ops; see ll.h. Each acts on the
 * file handle, with the node's path when it still has one (a removed or
 * hidden file's handlers get NULL or its hidden name). */
#include <errno.h>
#include <stdlib.h>

#include "ll_int.h"

void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	     struct fuse_file_info *fi)
{
	char *path, *buf = NULL;
	int res;

	ll_enter(req);
	res = ll_get_path_nullok(ino, &path);
	if (res == 0) {
		buf = malloc(size ? size : 1);
		res = buf ? cfs_ops.read(path, buf, size, off, fi) : -ENOMEM;
		ll_free_path(ino, path);
	}
	if (res >= 0) {
		ll_leave();
		fuse_reply_buf(req, buf, (size_t)res);
	} else {
		ll_reply_err(req, res);
	}
	free(buf);
}

void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	      off_t off, struct fuse_file_info *fi)
{
	char *path;
	int res;

	ll_enter(req);
	res = ll_get_path_nullok(ino, &path);
	if (res == 0) {
		res = cfs_ops.write(path, buf, size, off, fi);
		ll_free_path(ino, path);
	}
	if (res >= 0) {
		ll_leave();
		fuse_reply_write(req, (size_t)res);
	} else {
		ll_reply_err(req, res);
	}
}

void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char *path = NULL;
	int err;

	ll_enter(req);
	ll_get_path_nullok(ino, &path);
	err = cfs_ops.flush(path, fi);
	ll_free_path(ino, path);
	ll_reply_err(req, err);
}

void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
	      struct fuse_file_info *fi)
{
	char *path;
	int err;

	ll_enter(req);
	err = ll_get_path_nullok(ino, &path);
	if (!err) {
		err = cfs_ops.fsync(path, datasync, fi);
		ll_free_path(ino, path);
	}
	ll_reply_err(req, err);
}
