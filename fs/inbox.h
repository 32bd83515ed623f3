/* inbox.h - handlers of inbox/ (ops_inbox.c), called by the dispatch. */
#ifndef CUSTODYFS_INBOX_H
#define CUSTODYFS_INBOX_H

#include "fs.h"

int inbox_getattr(const char *rel, struct stat *st);
/* inbox_getattr, and the ETag of the stored object *st shows (from the
 * same lookup of the listing, as inbox_shown_etag) into etag (80 bytes,
 * may be NULL): "" when not known (a directory, a file open here). A
 * change of attributes checked against *st is made on that object, never
 * on one a later lookup shows (review-T H-b). Errors as inbox_getattr. */
int inbox_getattr_shown(const char *rel, struct stat *st, char *etag);
/* May the caller remove or replace inbox/<rel> (attributes *st, read
 * now), a name its kernel may believe absent (a stale negative dentry or
 * listing) and so checked nothing against? In a sticky directory (inbox/
 * is 1777) only its owner, the directory's owner or root. 0, -EPERM (as
 * the kernel's sticky check), or -errno of the directory's attributes.
 * Nothing is checked without default_permissions. */
int inbox_may_remove(const char *rel, const struct stat *st);
/* The attributes of the object stored at inbox/<rel> now (HEAD, and its
 * row read from the database now), whatever this mount's listing says;
 * seen (may be NULL) gets that object's ETag and UPLOAD_TAG. 0, -ENOENT
 * (nothing stored under that name), or -errno (EIO...). */
int inbox_stored_attrs(const char *rel, struct stat *st,
		       struct seen_obj *seen);
/* Does the store hold a directory inbox/<rel> now (its marker or anything
 * under rel/), whatever this mount's listing says? Found, it is put into
 * the listing cache. 1 yes, 0 no, or -errno. */
int inbox_dir_stored_now(const char *rel);
/* What the store holds at inbox/<rel> now, whatever this mount's listing
 * says: 1 an object, 2 a directory, 0 nothing, or -errno. */
int inbox_stored_kind_now(const char *rel);
/* Is inbox/<rel> another create's new file, not stored yet, that only its
 * live claim in the database shows (another mount's, or this mount's still
 * open here)? 1 and *st its recorded mode and owner (a regular file), 0
 * no, or -errno (EIO: the database). */
int inbox_claimed_attrs(const char *rel, struct stat *st);
int inbox_readdir(const char *rel, void *buf, fuse_fill_dir_t filler);
int inbox_mkdir(const char *rel, mode_t mode);
int inbox_rmdir(const char *rel);
/* PUTs the empty directory marker "d/" (marker, with its slash) carrying
 * st's mode, uid, gid and mtime as x-amz-meta-* (s3fs's names and forms).
 * 0 or -errno (the S3 client's). */
int inbox_marker_put(const char *marker, const struct stat *st);
int inbox_create(const char *rel, mode_t mode, struct fuse_file_info *fi);
int inbox_open(const char *rel, struct fuse_file_info *fi);
int inbox_read(struct fhandle *h, char *buf, size_t size, off_t off);
int inbox_write(struct fhandle *h, const char *buf, size_t size, off_t off);
/* closing: flush (close(2)), else fsync. */
int inbox_sync(struct fhandle *h, int closing);
/* release: a deferred commit as a last resort, then fh_free. */
void inbox_release(struct fhandle *h);
/* The open file a handle reads and writes: h->of, or the spool a
 * read-only handle got when its file was unlinked; NULL: the store. */
struct ofile *fh_file(struct fhandle *h);
/* Has read-only handle h been made stale (its object left the store here
 * while another was at its key: readers_attach)? Its reads fail with
 * ESTALE and it shows what it was opened with. */
int fh_stale(struct fhandle *h);
/* A copy of the key the handle's file has now (NULL: ENOMEM). */
char *fh_rel(struct fhandle *h);
int inbox_truncate(const char *rel, off_t size, struct fhandle *h);
int inbox_unlink(const char *rel);
int inbox_rename(const char *from, const char *to, unsigned int flags);
void fh_free(struct fhandle *h);
/* At unmount, once no request runs: frees the handles never released (a
 * stop before their release reached the daemon); nothing is committed. */
void fh_free_all(void);

#endif
