/* ll.h - the daemon on libfuse's low-level API (-o lowlevel, experimental).
 *
 * ll.c keeps a node table of its own (node id -> parent, name, lookup
 * count, open count) and turns each low-level request into a call of the
 * path-based handlers of cfs_ops (ops.c), as libfuse's high-level layer
 * (lib/fuse.c) does: same paths, same hidden names (".fuse_hidden…") for
 * open files that are unlinked or renamed over, same path locks. Step 1 of
 * doc/reviews/design-lowlevel.md: a node is a name, as in libfuse. */
#ifndef CUSTODYFS_LL_H
#define CUSTODYFS_LL_H

#include "fs.h"

#include <fuse_lowlevel.h>

/* The low-level operation table, for fuse_session_new. */
extern const struct fuse_lowlevel_ops cfs_ll_ops;

/* Called by main() before fuse_session_new when -o lowlevel is given:
 * cfs_context() and cfs_getgroups() then answer from the low-level request
 * each thread serves. Sets up the node table (the root, id 1). 0 or
 * -ENOMEM. */
int ll_setup(void);

/* 1 once ll_setup() has succeeded (the low-level API is in use). Any
 * thread. */
int ll_active(void);

/* The node id the kernel knows fuse path (e.g. "/inbox/a") by: 0, or
 * -ENOENT (no node for it: the kernel has not looked it up, or has
 * forgotten it), -ENOMEM. Any thread; takes the node table's lock only. */
int ll_path_ino(const char *path, fuse_ino_t *ino);

/* How many nodes the table holds, the root included. Any thread. */
size_t ll_node_count(void);

/* Called by main() once the session is unmounted, before
 * fuse_session_destroy: unlinks the hidden names of files still open (as
 * libfuse's fuse_destroy), then logs the nodes the kernel did not forget
 * (at info level: the kernel sends no FORGET at unmount). */
void ll_unmounted(void);

/* Frees the node table, after fuse_session_destroy. */
void ll_free_all(void);

#endif
