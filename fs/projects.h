/* projects.h - handlers of projects/ (ops_projects.c), called by the
 * dispatch in ops.c for AREA_PROJECTS. rel is the path below "projects/"
 * ("" for projects/ itself, "p" for a project, "p/a/b" inside one; the key
 * in the storage bucket is rel itself). */
#ifndef CUSTODYFS_PROJECTS_H
#define CUSTODYFS_PROJECTS_H

#include "fs.h"

/* At mount, before the FUSE loop: resolves [fs] project_group. 0, or
 * -EINVAL with a message on stderr (no such group). */
int projects_init(void);
/* At unmount: frees the registry cache and the empty subdirectories. */
void projects_free_all(void);

/* May the caller promote into project prefix? Root, anyone when [fs]
 * project_group is unset, or its members. 0 or -EACCES (logged). */
int projects_may_promote(const char *prefix);

/* A promotion just made projects/<rel> a symlink (duplicate_content)
 * where the kernel holds the regular file that was renamed or written
 * there: inval_type_changed (inval.h) of its fuse path. Any thread, any
 * lock held; never waits. */
void projects_type_changed(const char *rel);

int projects_getattr(const char *rel, struct stat *st);
int projects_readdir(const char *rel, void *buf, fuse_fill_dir_t filler);
int projects_readlink(const char *rel, char *buf, size_t size);
int projects_mkdir(const char *rel, mode_t mode);
int projects_rmdir(const char *rel);
int projects_open(const char *rel, struct fuse_file_info *fi);
/* Handles made by projects_open (h->area == AREA_PROJECTS). */
int projects_read(struct fhandle *h, char *buf, size_t size, off_t off);
int projects_fh_getattr(struct fhandle *h, struct stat *st);
void projects_release(struct fhandle *h);
/* Changes to what projects/ holds: write, truncate, unlink, rename, link
 * (create of a new file is direct_create's). Errors: EPERM (stored files
 * are immutable), ENOENT. */
int projects_change(const char *rel);

int projects_getxattr(const char *rel, const char *name, char *value,
		      size_t size);
int projects_setxattr(const char *rel, const char *name, const char *value,
		      size_t size, int flags);
int projects_listxattr(const char *rel, char *list, size_t size);
int projects_removexattr(const char *rel, const char *name);

#endif
