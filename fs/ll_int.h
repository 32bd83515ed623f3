/* ll_int.h - what ll.c and ll_dir.c share (the low-level API, ll.h). */
#ifndef CUSTODYFS_LL_INT_H
#define CUSTODYFS_LL_INT_H

#include "ll.h"

/* Around each low-level request on the thread serving it: ll_enter makes
 * req's caller this thread's cfs_context() (fuse_req_ctx), ll_leave ends
 * that (before the reply: req is freed by it). */
void ll_enter(fuse_req_t req);
void ll_leave(void);

/* ll_leave, then the error reply -err (0: success without data). */
void ll_reply_err(fuse_req_t req, int err);

/* The fuse path of node id in *path, its nodes locked for reading (waits
 * for a rename, unlink or rmdir holding one): 0, -ESTALE (removed),
 * -ENOMEM. ll_get_path_nullok: a removed node is 0 with *path NULL.
 * ll_free_path releases the locks and frees path (NULL: nothing). */
int ll_get_path(fuse_ino_t id, char **path);
int ll_get_path_nullok(fuse_ino_t id, char **path);
void ll_free_path(fuse_ino_t id, char *path);

/* ll_dir.c: the operations of the same names of cfs_ll_ops. */
void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi);
void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi);
void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ll_statfs(fuse_req_t req, fuse_ino_t ino);
void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 const char *value, size_t size, int flags);
void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

/* ll_io.c: the operations of the same names of cfs_ll_ops. */
void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	     struct fuse_file_info *fi);
void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	      off_t off, struct fuse_file_info *fi);
void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
	      struct fuse_file_info *fi);

#endif
