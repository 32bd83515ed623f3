/* fuseinit.h - the INIT reply carries FUSE_PARALLEL_DIROPS (fuseinit.c). */
#ifndef CUSTODYFS_FUSEINIT_H
#define CUSTODYFS_FUSEINIT_H

#include "fs.h"

/* Called by main() after fuse_mount(), before the loop starts: the
 * session's device I/O goes through plain writev/read/splice wrappers
 * that can amend the INIT reply (fuseinit.c). 0, or -errno (the mount
 * still works, without parallel directory operations). */
int fuseinit_install(struct fuse_session *se);

/* Called from the init handler (cfs_init), as its last step: notes
 * whether conn->want asks for FUSE_CAP_PARALLEL_DIROPS (which requires
 * conn->capable to have it); the INIT reply that libfuse sends next, on
 * this thread, then carries FUSE_PARALLEL_DIROPS. */
void fuseinit_note_want(const struct fuse_conn_info *conn);

#endif
