/* audit.h - handlers of audit/ (ops_audit.c), called by the dispatch in
 * ops.c for AREA_AUDIT. rel is the path below "audit/" ("" for audit/
 * itself). Every change under audit/ is refused in ops.c (EROFS). */
#ifndef CUSTODYFS_AUDIT_H
#define CUSTODYFS_AUDIT_H

#include "fs.h"

int audit_getattr(const char *rel, struct stat *st);
int audit_readdir(const char *rel, void *buf, fuse_fill_dir_t filler);
int audit_open(const char *rel, struct fuse_file_info *fi);
/* Handles made by audit_open (h->area == AREA_AUDIT). */
int audit_read(struct fhandle *h, char *buf, size_t size, off_t off);
int audit_fh_getattr(struct fhandle *h, struct stat *st);
void audit_release(struct fhandle *h);
/* At unmount: frees the remembered snapshot sizes. */
void audit_free_all(void);

#endif
