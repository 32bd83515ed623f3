/* fuseinit.c - the INIT reply carries FUSE_PARALLEL_DIROPS.
 *
 * Why: libfuse up to 3.17.0 (Debian's 3.14.0 included) puts
 * FUSE_CAP_PARALLEL_DIROPS in conn->want by default, but do_init() never
 * copies it into the flags of the INIT reply (upstream fixed that in
 * 3.17.1, commit c9905341 "Pass FUSE_PARALLEL_DIROPS to kernel"). Without
 * the flag the kernel serializes LOOKUP and READDIR of one directory
 * (fuse_lock_inode): 8 listings of a directory started at once reach the
 * daemon one after the other, so the 7 later ones cannot join the LIST of
 * the first (dircache.c "flights") and each sends its own.
 *
 * How: the session's device I/O goes through fuse_session_custom_io()
 * with wrappers that are plain writev(2), read(2) and splice(2), so
 * nothing else changes (splice stays available). The init handler marks
 * its thread (fuseinit_note_want); do_init() sends the INIT reply from
 * that thread right after the handler returns, so the next reply written
 * there (unique != 0; notifications have 0) is the INIT reply: when it is
 * a success with a struct fuse_init_out, a copy of it with
 * FUSE_PARALLEL_DIROPS set is written instead. With a libfuse that sets
 * the flag itself this changes nothing.
 *
 * The kernel still takes a directory's i_rwsem exclusively for create,
 * mknod, mkdir, unlink, rmdir, rename, link and symlink; the flag only
 * lets lookups and readdirs of one directory run at once, with each other
 * (under the shared i_rwsem). */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fuseinit.h"
#include "log.h"

#include <fuse_lowlevel.h>

/* Set by the init handler on its thread, cleared by the INIT reply. */
static __thread int init_reply_next;

static ssize_t fuseinit_writev(int fd, struct iovec *iov, int count,
			       void *userdata)
{
	const struct fuse_out_header *out;
	struct fuse_init_out init;
	struct iovec amended[2];

	(void)userdata;
	if (!init_reply_next || count < 1 || iov[0].iov_len < sizeof(*out))
		return writev(fd, iov, count);
	out = iov[0].iov_base;
	if (out->unique == 0) /* a notification, not a reply */
		return writev(fd, iov, count);
	init_reply_next = 0;
	/* An error reply (EPROTO), or a layout not known here: as is. Older
	 * protocol minors get a shorter struct fuse_init_out; flags is in
	 * every one of them. */
	if (out->error != 0 || count != 2 ||
	    iov[1].iov_len <
		offsetof(struct fuse_init_out, flags) + sizeof(init.flags) ||
	    iov[1].iov_len > sizeof(init))
		return writev(fd, iov, count);
	memset(&init, 0, sizeof(init));
	memcpy(&init, iov[1].iov_base, iov[1].iov_len);
	init.flags |= FUSE_PARALLEL_DIROPS;
	amended[0] = iov[0];
	amended[1].iov_base = &init;
	amended[1].iov_len = iov[1].iov_len;
	return writev(fd, amended, 2);
}

static ssize_t fuseinit_read(int fd, void *buf, size_t buf_len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, buf_len);
}

static ssize_t fuseinit_splice(int fdin, off_t *offin, int fdout, off_t *offout,
			       size_t len, unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

int fuseinit_install(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
	    .writev = fuseinit_writev,
	    .read = fuseinit_read,
	    .splice_receive = fuseinit_splice,
	    .splice_send = fuseinit_splice,
	};

	/* The mount's /dev/fuse descriptor stays the session's: libfuse
	 * still unmounts and closes it. -EBADF, -EINVAL, -ENOMEM. */
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

void fuseinit_note_want(const struct fuse_conn_info *conn)
{
	if (!(conn->capable & FUSE_CAP_PARALLEL_DIROPS)) {
		log_info(
		    "the kernel offers no parallel directory operations: "
		    "lookups and listings of one directory are serialized");
		return;
	}
	if (conn->want & FUSE_CAP_PARALLEL_DIROPS)
		init_reply_next = 1;
}

/* Undoes mountinfo's octal escapes (\040 for a space...) in place. */
static void mi_unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 3;
		} else
			*o++ = *s;
	}
	*o = '\0';
}

long fuseinit_conn_id(const char *mountpoint)
{
	char line[8192];
	long id = -1;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char dev[64], mnt[4096], *dash;
		unsigned maj, min;

		/* id parent maj:min root mountpoint ... - fstype ... */
		if (sscanf(line, "%*s %*s %63s %*s %4095s", dev, mnt) != 2 ||
		    sscanf(dev, "%u:%u", &maj, &min) != 2)
			continue;
		dash = strstr(line, " - ");
		if (!dash || strncmp(dash + 3, "fuse", 4))
			continue;
		mi_unescape(mnt);
		if (!strcmp(mnt, mountpoint))
			id = (long)min; /* the last one: ours, mounted on top */
	}
	fclose(f);
	return id;
}

int fuseinit_abort_conn(long id)
{
	char path[96];
	int fd, rc = 0;

	if (id < 0)
		return -ENOENT;
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%ld/abort", id);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, "1", 1) != 1)
		rc = -errno;
	close(fd);
	return rc;
}
