/* inbox_int.h - what ops_inbox.c, ops_inbox_rename.c and holders.c share:
 * the inbox/ handlers' internal helpers (not the dispatch's interface,
 * which is inbox.h). */
#ifndef CUSTODYFS_INBOX_INT_H
#define CUSTODYFS_INBOX_INT_H

#include "fs.h"

/* Is rel's basename a temp name (kept local, never uploaded)? */
int is_temp(const char *rel);
/* Checks a name for the store: 0, -EINVAL or -ENAMETOOLONG (logged). */
int check_name(const char *rel);
/* The read-only handles of stored object rel now read from of (the object
 * is about to leave the store); each takes a reference. etag (NULL: every
 * reader takes it) is the ETag of the object of's content was loaded from:
 * a reader pinned to another object (opened on it, and checked for it,
 * before another mount replaced it) is not given of but marked stale, its
 * reads failing with ESTALE from then on (review-T T2). */
void readers_attach(const char *rel, struct ofile *of, const char *etag);
/* Stored objects renamed (from, or everything under from/): their readers
 * follow. For one object copied (not NULL): its readers pinned to src, the
 * ETag of the object copied, are pinned to etag, its copy's (a copy's ETag
 * may differ: a multipart object). */
void readers_rename(const char *from, const char *to, const char *src,
		    const char *etag);
/* Stored object rel (ETag src) was copied to its new name by this mount's
 * rename (the copy's ETag etag; NULL or "": nothing done): its readers
 * pinned to src are also the copy's readers (readers_attach), before
 * readers_rename moves them. */
void readers_copied(const char *rel, const char *src, const char *etag);
/* How many read-only handles read stored object rel from the store. */
int readers_of(const char *rel);

/* holders.c: at the close of a descriptor of h's description, does another
 * descriptor of it remain (in this process, the opener, or any process),
 * so the last close commits? 0 when it cannot be told. Caller holds
 * of->lock. */
int description_held_elsewhere(struct fhandle *h, struct ofile *of);

#endif
