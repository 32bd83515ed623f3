/* inbox_int.h - what ops_inbox.c, ops_inbox_rename.c, holders.c and
 * inbox_perm.c share: the inbox/ handlers' internal helpers (not the
 * dispatch's interface, which is inbox.h). */
#ifndef CUSTODYFS_INBOX_INT_H
#define CUSTODYFS_INBOX_INT_H

#include "fs.h"

/* A new handle of inbox/ on of (NULL: a read-only handle on a stored
 * object), owned by the caller until fh_free; on the list fh_free_all
 * walks. NULL when out of memory. (fhandle.c) */
struct fhandle *fh_new(struct ofile *of);
/* Caller holds h->of->lock. The file was changed through h: h's close
 * (or fsync) commits it. */
void fh_pend(struct fhandle *h);
/* Caller holds h->of->lock. h's commit obligation is met (committed, or
 * its close reported the failure). */
void fh_settle(struct fhandle *h);
/* A new read-only handle h (h->of == NULL, h->rel set) joins the readers
 * an unlink or rename hands content to; fh_free takes it off. */
void readers_add(struct fhandle *h);
/* Caller holds no lock. HEADs key in the reception bucket, puts what it
 * found in the listing and drops the kernel's cached attributes of it.
 * 0, or the HEAD's -errno (info untouched then). */
int entry_refresh(const char *key, struct s3_object_info *info);
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
/* etag2 (NULL: none) is another ETag of's content is (its last upload from
 * this mount). Returns how many handles read of now (not stale). */
int readers_attach(const char *rel, struct ofile *of, const char *etag,
		   const char *etag2);
/* Stored objects renamed (from, or everything under from/): their readers
 * follow (readers_copied first says which are the copy's). */
void readers_rename(const char *from, const char *to);
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
/* Does process (or thread) pid hold a descriptor open for writing on
 * inbox/<rel> of this mount (read from /proc/<pid>/fd, readlink only)? 0
 * when it cannot be told. Takes no lock. */
int pid_writes(int pid, const char *rel);

/* inbox_perm.c: the caller's permissions that the kernel could not check
 * (attributes newer than those it cached, a name it believed absent). */
/* A write or truncation by a caller without root clears setuid, and
 * setgid when group execute is set (the kernel's rule,
 * should_remove_suid), and records the new mode as that caller's
 * 'kill_priv' (not a chmod: nobody asked for one). by_writer: through a
 * descriptor open for writing (allowed whatever the mode says now, as the
 * kernel does); else the caller must be the owner or may write (the
 * database checks it on the row). 0 or -errno (EIO: the database; nothing
 * changed). */
int privs_clear(const char *rel, int by_writer);
/* May the caller of this request open a file of attributes *st with
 * access mode acc (O_RDONLY, O_WRONLY, O_RDWR)? The kernel's rule on the
 * owner, group and other bits; root may. 0 or -EACCES; nothing is checked
 * without default_permissions (the daemon checks what the kernel could not
 * see: attributes newer than those it cached). */
int may_open(const struct stat *st, int acc);
/* *st as a stored file without a row shows: the foreign owner and group,
 * file_mode; nothing else set. */
void inbox_default_stat(struct stat *st);
/* May the caller open, with access mode acc, the spool of of, a file open
 * here (its first opener's, or creator's, owner and mode: of->held_*)?
 * may_open's rules; 0 when none were remembered. Caller holds no lock or
 * of->lock (takes cfs.lock). 0 or -EACCES. */
int ofile_may_hold(struct ofile *of, int acc);
/* May the caller open rel, open here as of, with access mode acc? Both
 * the name's attributes now (its row read from the database: the kernel
 * and this mount's snapshot have older ones) and those of the object of's spool
 * holds (ofile_may_hold): the row may be another object's since (another mount
 * renamed a file over the name, maybe with the same bytes, so the same ETag:
 * review-T T4, review-t4c F2), and the spool is the old object; a writer's
 * bytes replace whatever the key holds at its commit (review-t4c F1). Caller
 * holds no lock. 0, -EACCES, or getattr's -errno. */
int ofile_may_open(struct ofile *of, const char *rel, int acc);
/* May the caller open the existing file rel (attributes *st) with access
 * mode acc by a create the kernel sent believing the name absent, so that
 * it checked only the directory? The kernel's own rules, on the file's
 * recorded owner and mode: the permissions of access mode acc (may_open;
 * the caller passes O_RDWR for an O_RDONLY|O_TRUNC open, whose truncation
 * needs write permission too), and, always (the kernel only with its
 * protected_regular sysctl, and not quite so), the sticky rule: in a
 * sticky directory (inbox/ is 1777) only its owner, the directory's owner
 * or root. 0, -EACCES, or
 * -errno of the directory's attributes. Nothing is checked without
 * default_permissions. */
int may_replace(const char *rel, const struct stat *st, int acc);

#endif
