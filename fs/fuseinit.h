/* fuseinit.h - the INIT reply carries FUSE_PARALLEL_DIROPS (fuseinit.c). */
#ifndef CUSTODYFS_FUSEINIT_H
#define CUSTODYFS_FUSEINIT_H

#include "fs.h"

/* Called by main() after fuse_mount(), before the loop starts: the
 * session's device I/O goes through plain writev/read/splice wrappers
 * that can amend the INIT reply (fuseinit.c). 0, or -errno (the mount
 * still works, without parallel directory operations). */
int fuseinit_install(struct fuse_session *se);

/* Does the FUSE loop still take requests? 1 when one of its threads waits
 * on /dev/fuse for the kernel's next request now, or one came back with a
 * request within the last within_ns nanoseconds; 0 when none has for
 * longer (every thread busy or stuck in a handler: *idle_ns says how
 * long); -1 when not known (fuseinit_install() failed: the device I/O is
 * libfuse's own). Thread-safe, cheap (two atomic loads). */
int fuseinit_loop_alive(long long within_ns, long long *idle_ns);

/* Called from the init handler (cfs_init), as its last step: notes
 * whether conn->want asks for FUSE_CAP_PARALLEL_DIROPS (which requires
 * conn->capable to have it); the INIT reply that libfuse sends next, on
 * this thread, then carries FUSE_PARALLEL_DIROPS. */
void fuseinit_note_want(const struct fuse_conn_info *conn);

/* The kernel's number of the FUSE connection mounted on mountpoint: the
 * minor of the device number of its root (statx without a sync: the file
 * system itself is never asked), checked against /proc/self/mountinfo (a
 * FUSE mount has that device number), or -1. Called right after
 * fuse_mount, so the number is this mount's whatever is mounted on the
 * path later (never picked by path at stop: that could be another file
 * system's, E10b). */
long fuseinit_conn_id(const char *mountpoint);

/* Aborts connection id (fusectl's /sys/fs/fuse/connections/ID/abort;
 * fusectl is mounted there first when it is not and the process may):
 * every request waiting on the daemon fails, pages they held locked are
 * released. For a stop whose threads are stuck in the kernel on requests
 * the ended loop will never answer. 0 or -errno (ENOENT: no such
 * connection, or no fusectl directory; EPERM/EACCES: not root). */
int fuseinit_abort_conn(long id);

#endif
