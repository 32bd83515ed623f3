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
 * (under the shared i_rwsem).
 *
 * The same wrappers tell whether the loop still takes requests (systemd's
 * watchdog, monitor.c): how many of its threads wait in read(2)/splice(2)
 * on /dev/fuse for the kernel's next request, and when one last came back
 * with one. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fuseinit.h"
#include "log.h"

#include <fuse_lowlevel.h>

/* Set by the init handler on its thread, cleared by the INIT reply. */
static __thread int init_reply_next;

/* The loop's threads now waiting on /dev/fuse for a request. */
static atomic_int dev_waiting;
/* CLOCK_MONOTONIC ns when a read of a request last came back; 0 before
 * fuseinit_install() (then nothing is known). */
static atomic_llong dev_last_ns;

static long long fuseinit_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

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
	ssize_t n;

	(void)userdata;
	atomic_fetch_add(&dev_waiting, 1);
	n = read(fd, buf, buf_len);
	atomic_store(&dev_last_ns, fuseinit_now_ns());
	atomic_fetch_sub(&dev_waiting, 1);
	return n;
}

/* Receives a request (fdin is /dev/fuse). */
static ssize_t fuseinit_splice_in(int fdin, off_t *offin, int fdout,
				  off_t *offout, size_t len, unsigned int flags,
				  void *userdata)
{
	ssize_t n;

	(void)userdata;
	atomic_fetch_add(&dev_waiting, 1);
	n = splice(fdin, offin, fdout, offout, len, flags);
	atomic_store(&dev_last_ns, fuseinit_now_ns());
	atomic_fetch_sub(&dev_waiting, 1);
	return n;
}

/* Sends a reply (fdout is /dev/fuse). */
static ssize_t fuseinit_splice_out(int fdin, off_t *offin, int fdout,
				   off_t *offout, size_t len,
				   unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

int fuseinit_install(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
	    .writev = fuseinit_writev,
	    .read = fuseinit_read,
	    .splice_receive = fuseinit_splice_in,
	    .splice_send = fuseinit_splice_out,
	};
	int rc;

	/* The mount's /dev/fuse descriptor stays the session's: libfuse
	 * still unmounts and closes it. -EBADF, -EINVAL, -ENOMEM. */
	rc = fuse_session_custom_io(se, &io, fuse_session_fd(se));
	if (!rc) /* the kernel's INIT request is waiting already */
		atomic_store(&dev_last_ns, fuseinit_now_ns());
	return rc;
}

int fuseinit_loop_alive(long long within_ns, long long *idle_ns)
{
	long long last = atomic_load(&dev_last_ns);
	long long idle;

	*idle_ns = 0;
	if (!last)
		return -1;
	if (atomic_load(&dev_waiting) > 0)
		return 1;
	idle = fuseinit_now_ns() - last;
	*idle_ns = idle;
	return idle <= within_ns;
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

/* Is maj:min a FUSE mount's in /proc/self/mountinfo? 1, 0, or -1 (the
 * table could not be read). */
static int mi_is_fuse_dev(unsigned maj, unsigned min)
{
	char line[8192];
	int found = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return -1;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned a, b;
		char *dash;

		/* id parent maj:min root mountpoint ... - fstype ... */
		if (sscanf(line, "%*s %*s %u:%u", &a, &b) != 2 || a != maj ||
		    b != min)
			continue;
		dash = strstr(line, " - ");
		found = dash && !strncmp(dash + 3, "fuse", 4);
	}
	fclose(f);
	return found;
}

long fuseinit_conn_id(const char *mountpoint)
{
	struct statx stx;

	/* AT_STATX_DONT_SYNC: the attributes the kernel has, no GETATTR
	 * (the loop does not run yet: a request would never be answered).
	 * st_dev is the superblock's, whatever the path shows later. */
	if (statx(AT_FDCWD, mountpoint, AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT,
		  STATX_TYPE, &stx))
		return -1;
	/* FUSE's superblocks have anonymous device numbers (major 0); the
	 * fusectl directory of the connection is named by the minor. */
	if (stx.stx_dev_major != 0 ||
	    mi_is_fuse_dev(stx.stx_dev_major, stx.stx_dev_minor) != 1)
		return -1;
	return (long)stx.stx_dev_minor;
}

/* fusectl's mount point; mounted there by the kernel's fuse module or
 * systemd, not always (a container). */
#define FUSECTL_DIR "/sys/fs/fuse/connections"
#define FUSECTL_MAGIC 0x65735543

/* Makes sure fusectl is mounted on FUSECTL_DIR (mounts it when the
 * process may). 0 or -errno. */
static int fusectl_ensure(void)
{
	struct statfs sf;

	if (statfs(FUSECTL_DIR, &sf))
		return -errno;
	if (sf.f_type == FUSECTL_MAGIC)
		return 0;
	if (mount("fusectl", FUSECTL_DIR, "fusectl",
		  MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
		return -errno;
	log_info("mounted fusectl on %s", FUSECTL_DIR);
	return 0;
}

int fuseinit_abort_conn(long id)
{
	char path[96];
	int fd, rc = 0;

	if (id < 0)
		return -ENOENT;
	snprintf(path, sizeof(path), FUSECTL_DIR "/%ld/abort", id);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		rc = fusectl_ensure();
		if (rc)
			return rc;
		fd = open(path, O_WRONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	if (write(fd, "1", 1) != 1)
		rc = -errno;
	close(fd);
	return rc;
}
