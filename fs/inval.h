/* inval.h - the kernel forgets what it cached of a path (its attributes
 * and pages, or its directory entry), asked from a thread of its own.
 *
 * A FUSE handler must never notify the kernel itself: the notification may
 * wait for locks the kernel holds for the very request being served (an
 * inode's pages, its directory), a deadlock. Handlers queue the path here
 * instead and return; a worker notifies: one for inodes, another for
 * entries, so an entry's wait for its directory's lock never delays an
 * inode's notification (nor inval_path_wait). */
#ifndef CUSTODYFS_INVAL_H
#define CUSTODYFS_INVAL_H

#include <sys/types.h>

struct fuse;
struct fuse_session;

/* Starts the workers for f and its session se (which must outlive
 * inval_stop; f NULL with the low-level API, ll.h: nodes are then found in
 * ll.c's table), mounted on mountpoint (absolute; copied), whose device
 * number is dev (0: unknown; else a path that leads to another device is
 * not this mount's, and its entry is left to time out). Called once,
 * before the FUSE loop. 0 or -errno (the inode thread cannot start: nothing
 * is invalidated then, the kernel's caches time out by themselves; an
 * entry thread that cannot start is logged, and entries time out). */
int inval_start(struct fuse *f, struct fuse_session *se, const char *mountpoint,
		dev_t dev);

/* Queues fuse path (e.g. "/inbox/a/b.txt") for invalidation. Any thread,
 * any lock held: never waits on the kernel. Copies path. A full queue, no
 * memory or no worker drop the request (logged at debug level): the
 * kernel then keeps what it cached until its attribute timeout. */
void inval_path(const char *path);
/* inval_path of inbox/<rel> (rel: a key of the reception bucket). */
void inval_inbox(const char *rel);

/* inval_path, then waits until the worker has notified the kernel, at most
 * wait_ms: for a handler whose caller's next stat must see the new
 * attributes (an open's fstat). Bounded, so a notification that waits on
 * the kernel for the very request being served delays it by wait_ms at
 * most, never deadlocks it. 0, or -ETIMEDOUT (dropped, not done yet, or
 * the worker stopping: left to the worker or the attribute timeout). */
int inval_path_wait(const char *path, int wait_ms);

/* Fuse path (e.g. "/projects/p/g") now names a node of another type than
 * the inode the kernel holds under that name: a rename whose new name is
 * a symlink to a stored duplicate, not the regular file renamed. The
 * kernel keeps the renamed inode for the new name until its entry times
 * out, and refuses the first answer of the other type for it with EIO
 * (the inode is marked bad). Two things, any thread, any lock held:
 * - the entry worker invalidates the kernel's entry of the name in its
 *   directory (it finds the directory's node id with a stat through the
 *   mount: use_ino is off, ops.c). The notification waits for the
 *   directory's lock, held by the rename until it has returned: never
 *   from a handler, and the caller never waits for it;
 * - until then a stat or open may already have found the old inode:
 *   within INVAL_STALE_MS, the first getattr or open of path by each
 *   calling thread answers ESTALE (inval_stale_take), and the kernel's
 *   path walk retries once with a forced lookup (LOOKUP_REVAL), by the
 *   same thread, served: it replaces the inode. Per thread, as two
 *   observers may both hold the old inode (review-O A1). A readlink as
 *   the first access is answered by the kernel from the old inode
 *   without asking (EINVAL): not helped (README, known limits).
 * A full table or no memory drop the request (logged at debug level): the
 * old EIO once, as before. */
void inval_type_changed(const char *path);

/* inval_type_changed's two halves, for a directory renamed with names of
 * a changed type under it: each of those marked (inval_stale_mark), and
 * the directory's own entry dropped once (inval_entry: the kernel drops
 * the entries it knows under it with it; the directory's parent existed
 * before the rename, where the new name may still be a negative entry
 * until the rename is done). Any thread, any lock held; never wait. */
void inval_stale_mark(const char *path);
void inval_entry(const char *path);

/* inval_entry of fuse path, a name under a directory that the rename
 * being served moves (before: the same name's path before it, e.g.
 * "/inbox/d/g" for "/projects/p/d/g"): the worker drops that one entry,
 * not the whole directory (an invalidated directory in use makes its
 * users' getcwd() fail, review-O A5). Any thread, any lock held; never
 * waits. */
void inval_entry_moved(const char *path, const char *before);

/* How long inval_type_changed keeps path for inval_stale_take: twice the
 * kernel's entry timeout (cfs_init), counted from the end of the rename,
 * after which the old entry is asked about again by a lookup, which the
 * kernel handles (a new inode). */
#define INVAL_STALE_MS 2000

/* For a getattr of fuse path without a file handle, or an open of it (not
 * O_PATH), by thread caller (the request's pid: the caller's thread id):
 * 1 when inval_type_changed marked path within INVAL_STALE_MS and caller
 * was not answered so since (answer -ESTALE: caller's retry is then
 * served), else 0. The mark stays for its whole window, for each thread
 * (up to 256 threads per mark, never answered twice: past that, served;
 * caller 0, a thread of another pid namespace, is one caller for all of
 * them). Cheap when nothing is marked (one atomic load). */
int inval_stale_take(const char *path, pid_t caller);

/* Stops both workers, once the FUSE loop has ended and before the session
 * is unmounted: queued paths are dropped, and a notification in flight is
 * waited for at most wait_ms. Returns 1 when a worker is still inside
 * the kernel then (e.g. dropping a page that a READ the ended loop will
 * never answer holds locked: fuseinit_abort_conn ends that; call again),
 * else 0 (joined). */
int inval_stop(int wait_ms);

/* After inval_stop returned 1 for good: the workers still inside the
 * kernel are detached and left behind; they use f's session, so f must
 * not be destroyed. */
void inval_abandon(void);

#endif
