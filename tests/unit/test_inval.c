/* test_inval.c - fs/inval.c's two queues, without a kernel: the FUSE
 * notifications and the node table are this file's fakes, and an entry
 * notification can be held on a gate, as a directory's lock held by a
 * long rename holds it in the kernel (review-O A2). */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "inval.h"
#include "ll.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int gate_shut;	  /* protected by lock: entry notifications wait */
	int entry_in;	  /* protected by lock: entry notifications entered */
	int entries_done; /* protected by lock */
	int inodes_done;  /* protected by lock */
	fuse_ino_t last_parent; /* protected by lock: of the last entry */
	char last_inode[256];	/* protected by lock */
} fake = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* The node table: every path has a node (its id is irrelevant here).
 * fake_ll 0: the high-level API (a directory's node id is its st_ino
 * through the mount point). */
static int fake_ll = 1;

int ll_active(void)
{
	return fake_ll;
}

int ll_path_ino(const char *path, fuse_ino_t *ino)
{
	(void)path;
	*ino = 2;
	return 0;
}

int fuse_lowlevel_notify_inval_entry(struct fuse_session *se, fuse_ino_t parent,
				     const char *name, size_t namelen)
{
	(void)se;
	(void)name;
	(void)namelen;
	pthread_mutex_lock(&fake.lock);
	fake.last_parent = parent;
	fake.entry_in++;
	pthread_cond_broadcast(&fake.cond);
	while (fake.gate_shut)
		pthread_cond_wait(&fake.cond, &fake.lock);
	fake.entries_done++;
	pthread_cond_broadcast(&fake.cond);
	pthread_mutex_unlock(&fake.lock);
	return 0;
}

int fuse_lowlevel_notify_inval_inode(struct fuse_session *se, fuse_ino_t ino,
				     off_t off, off_t len)
{
	(void)se;
	(void)ino;
	(void)off;
	(void)len;
	pthread_mutex_lock(&fake.lock);
	fake.inodes_done++;
	pthread_cond_broadcast(&fake.cond);
	pthread_mutex_unlock(&fake.lock);
	return 0;
}

/* Not reached with ll_active() = 1; here for the link. */
int fuse_invalidate_path(struct fuse *f, const char *path)
{
	(void)f;
	pthread_mutex_lock(&fake.lock);
	snprintf(fake.last_inode, sizeof(fake.last_inode), "%s", path);
	fake.inodes_done++;
	pthread_mutex_unlock(&fake.lock);
	return 0;
}

/* Waits (at most 5 s) until *counter reaches n: 0, or -ETIMEDOUT. */
static int wait_count(int *counter, int n)
{
	struct timespec until;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&fake.lock);
	while (*counter < n && rc == 0)
		rc = pthread_cond_timedwait(&fake.cond, &fake.lock, &until);
	rc = *counter >= n ? 0 : -ETIMEDOUT;
	pthread_mutex_unlock(&fake.lock);
	return rc;
}

static void set_gate(int shut)
{
	pthread_mutex_lock(&fake.lock);
	fake.gate_shut = shut;
	pthread_cond_broadcast(&fake.cond);
	pthread_mutex_unlock(&fake.lock);
}

/* An entry notification held on its directory's lock does not delay an
 * inode notification, nor its waiter (review-O A2: one FIFO for both made
 * inval_path_wait time out, and the forget was lost). */
static void test_entry_held_never_delays_inode_waiters(void **state)
{
	static struct fuse_session *se; /* never dereferenced by the fakes */
	int i;

	(void)state;
	assert_int_equal(inval_start(NULL, se, "/m", 0), 0);
	set_gate(1);
	inval_entry("/projects/p/g");
	assert_int_equal(wait_count(&fake.entry_in, 1), 0);
	/* The entry worker is now inside the kernel, held. */
	for (i = 0; i < 3; i++)
		assert_int_equal(inval_path_wait("/audit/x", 200), 0);
	inval_path("/inbox/c");
	assert_int_equal(wait_count(&fake.inodes_done, 4), 0);
	pthread_mutex_lock(&fake.lock);
	assert_int_equal(fake.entries_done, 0); /* still held */
	pthread_mutex_unlock(&fake.lock);
	/* More entries queue behind the held one, and are done once the
	 * directory's lock is free. */
	inval_entry("/projects/p/h");
	set_gate(0);
	assert_int_equal(wait_count(&fake.entries_done, 2), 0);
	assert_int_equal(inval_stop(1000), 0);
}

/* A stop while an entry notification is held inside the kernel reports it
 * (1: the caller aborts the connection and calls again), and the inode
 * worker is joined meanwhile. */
static void test_stop_reports_a_held_entry_worker(void **state)
{
	static struct fuse_session *se;
	int before;

	(void)state;
	pthread_mutex_lock(&fake.lock);
	before = fake.entry_in;
	pthread_mutex_unlock(&fake.lock);
	assert_int_equal(inval_start(NULL, se, "/m", 0), 0);
	set_gate(1);
	inval_entry("/projects/p/k");
	assert_int_equal(wait_count(&fake.entry_in, before + 1), 0);
	assert_int_equal(inval_stop(100), 1);
	set_gate(0); /* the connection's abort, in the daemon */
	assert_int_equal(inval_stop(1000), 0);
}

/* High-level API: a path through the mount point that leads to another
 * device (a mount over one of our directories, or this mount moved away)
 * gives an inode number that is no node id of ours: its entry is left to
 * time out, never sent for an unrelated node (review-O A6). The mount
 * point is a temporary directory here, "mine" on its device, "other" a
 * symlink to /proc (another device). */
static void test_entry_on_another_device_is_left(void **state)
{
	static struct fuse_session *se;
	char root[] = "/tmp/test_inval_XXXXXX", p[64];
	struct stat st;
	int before;

	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(p, sizeof(p), "%s/mine", root);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(stat(p, &st), 0);
	snprintf(p, sizeof(p), "%s/other", root);
	assert_int_equal(symlink("/proc", p), 0);
	fake_ll = 0;
	pthread_mutex_lock(&fake.lock);
	before = fake.entries_done;
	pthread_mutex_unlock(&fake.lock);
	assert_int_equal(inval_start(NULL, se, root, st.st_dev), 0);
	inval_entry("/other/sys/g"); /* FIFO: done before the next */
	inval_entry("/mine/g");
	assert_int_equal(wait_count(&fake.entries_done, before + 1), 0);
	assert_int_equal(inval_stop(1000), 0);
	pthread_mutex_lock(&fake.lock);
	assert_int_equal(fake.entries_done, before + 1); /* mine only */
	assert_int_equal(fake.last_parent, (fuse_ino_t)st.st_ino);
	pthread_mutex_unlock(&fake.lock);
	fake_ll = 1;
	unlink(p);
	snprintf(p, sizeof(p), "%s/mine", root);
	rmdir(p);
	rmdir(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_entry_held_never_delays_inode_waiters),
	    cmocka_unit_test(test_stop_reports_a_held_entry_worker),
	    cmocka_unit_test(test_entry_on_another_device_is_left),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
