/* inval.h - the kernel forgets what it cached of a path (its attributes
 * and pages), asked from a thread of its own.
 *
 * A FUSE handler must never notify the kernel itself: the notification may
 * wait for locks the kernel holds for the very request being served (an
 * inode's pages, its directory), a deadlock. Handlers queue the path here
 * instead and return; the worker notifies. */
#ifndef CUSTODYFS_INVAL_H
#define CUSTODYFS_INVAL_H

struct fuse;

/* Starts the worker for f (which must outlive inval_stop). Called once,
 * before the FUSE loop. 0 or -errno (the thread cannot start: nothing is
 * invalidated then, the kernel's caches time out by themselves). */
int inval_start(struct fuse *f);

/* Queues fuse path (e.g. "/inbox/a/b.txt") for invalidation. Any thread,
 * any lock held: never waits on the kernel. Copies path. A full queue, no
 * memory or no worker drop the request (logged at debug level): the
 * kernel then keeps what it cached until its attribute timeout. */
void inval_path(const char *path);

/* inval_path, then waits until the worker has notified the kernel, at most
 * wait_ms: for a handler whose caller's next stat must see the new
 * attributes (an open's fstat). Bounded, so a notification that waits on
 * the kernel for the very request being served delays it by wait_ms at
 * most, never deadlocks it. 0, or -ETIMEDOUT (dropped, not done yet, or
 * the worker stopping: left to the worker or the attribute timeout). */
int inval_path_wait(const char *path, int wait_ms);

/* Stops the worker, once the FUSE loop has ended and before the session
 * is unmounted: queued paths are dropped, and a notification in flight is
 * waited for at most wait_ms. Returns 1 when the worker is still inside
 * the kernel then (e.g. dropping a page that a READ the ended loop will
 * never answer holds locked: fuseinit_abort_conn ends that; call again),
 * else 0 (joined). */
int inval_stop(int wait_ms);

/* After inval_stop returned 1 for good: the worker is detached and left
 * behind; it uses f's session, so f must not be destroyed. */
void inval_abandon(void);

#endif
