/* holders.c - who else holds an open file description of inbox/ (read
 * from /proc): a close commits at the LAST close of its description.
 *
 * Called by inbox_sync (ops_inbox.c) with the file's lock held; reads
 * /proc/<pid>/fd links with readlink only (a stat() would re-enter this
 * file system) and /proc/<pid>/fdinfo for the access mode. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "inbox_int.h"

/* Is the descriptor open for writing? (/proc/<pid>/fdinfo/<fd> flags) */
static int fd_writable(int pid, const char *fd)
{
	char path[320], line[256];
	int w = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", pid, fd);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "flags:", 6)) {
			unsigned long fl = strtoul(line + 6, NULL, 8);

			w = (fl & O_ACCMODE) != O_RDONLY;
			break;
		}
	}
	fclose(f);
	return w;
}

/* The path a descriptor of `of` shows in /proc/<pid>/fd:
 * "<mountpoint>/inbox/<rel>", or "<mountpoint>/projects/<direct_to>" for a
 * direct write into a project (ops_direct.c), or NULL (mountpoint unknown,
 * ENOMEM). Caller holds of->lock. */
static char *fd_link_path(struct ofile *of)
{
	const char *mnt = cfs->mountpoint;
	char *rel, *p = NULL;

	if (!mnt)
		return NULL;
	rel = ofile_rel(of);
	if (!rel)
		return NULL;
	if (!strcmp(mnt, "/"))
		mnt = "";
	if (of->direct_to) {
		if (asprintf(&p, "%s/projects/%s", mnt, of->direct_to) < 0)
			p = NULL;
	} else if (asprintf(&p, "%s/inbox/%s", mnt, rel) < 0)
		p = NULL;
	free(rel);
	return p;
}

/* Does process (or thread) pid hold a descriptor open for writing whose
 * /proc link is exactly `path`? Read with readlink only (a stat() would
 * re-enter this file system). 0 when it cannot be told (gone, not ours to
 * read, another mount namespace). */
static int pid_holds(int pid, const char *path)
{
	char dir[64], fdp[352], link[PATH_MAX];
	size_t pl = strlen(path);
	struct dirent *de;
	int found = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	d = opendir(dir);
	if (!d)
		return 0;
	while (!found && (de = readdir(d)) != NULL) {
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(fdp, sizeof(fdp), "%s/%s", dir, de->d_name);
		n = readlink(fdp, link, sizeof(link));
		if (n != (ssize_t)pl || memcmp(link, path, pl))
			continue;
		found = fd_writable(pid, de->d_name);
	}
	closedir(d);
	return found;
}

int pid_writes(int pid, const char *rel)
{
	const char *mnt = cfs->mountpoint;
	char *path = NULL;
	int found;

	if (!mnt || pid <= 0)
		return 0;
	if (!strcmp(mnt, "/"))
		mnt = "";
	if (asprintf(&path, "%s/inbox/%s", mnt, rel) < 0)
		return 0;
	found = pid_holds(pid, path);
	free(path);
	return found;
}

/* The thread group (process) of thread pid, or 0. */
static int tgid_of(int pid)
{
	char path[64], line[128];
	int tgid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "Tgid:", 5)) {
			tgid = atoi(line + 5);
			break;
		}
	fclose(f);
	return tgid;
}

static int same_process(int a, int b)
{
	int ta;

	if (a == b)
		return 1;
	if (a <= 0 || b <= 0)
		return 0;
	ta = tgid_of(a);
	return ta > 0 && ta == tgid_of(b);
}

/* Does any process hold a writable descriptor on `path`? Every
 * /proc/<pid>/fd is read (unreadable ones skipped), up to the first
 * match. */
static int anyone_holds(const char *path)
{
	struct dirent *de;
	int found = 0;
	DIR *d = opendir("/proc");

	if (!d)
		return 0;
	while (!found && (de = readdir(d)) != NULL) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		if (*end || pid <= 0 || pid > INT_MAX)
			continue;
		found = pid_holds((int)pid, path);
	}
	closedir(d);
	return found;
}

/* Is the open file description of h still referenced by a descriptor
 * other than the one being closed? Caller holds h->of->lock, and
 * of->writers == 1: h is the only writable description of the file, so any
 * other writable descriptor on it is a dup of h (its close commits).
 *  (a) the closing process holds another one (shell redirect, dd: open,
 *      dup2, close the original);
 *  (b) the closer is not the opener, and the opener still holds one (a
 *      child of the shell that inherited the redirected stdout exits);
 *  (c) h wrote nothing itself (created or truncated only: rare, so a
 *      full scan is affordable), or the closer is not the opener: any
 *      process holds one (Popen(stdout=f) whose parent closes first).
 * The common case (the opener wrote and closes) reads only the closer's
 * own /proc/<pid>/fd. Whatever cannot be told counts as "no": the close
 * then commits, so a close() never returns 0 with nothing stored and
 * nobody left to commit. */
int description_held_elsewhere(struct fhandle *h, struct ofile *of)
{
	struct fuse_context *ctx = cfs_context();
	int pid = ctx ? (int)ctx->pid : 0, same, found;
	char *path;

	if (pid <= 0)
		return 0;
	path = fd_link_path(of);
	if (!path)
		return 0;
	found = pid_holds(pid, path);
	same = same_process(pid, (int)h->opener);
	if (!found && !same && h->opener > 0)
		found = pid_holds((int)h->opener, path);
	if (!found && (!h->wrote || !same))
		found = anyone_holds(path);
	free(path);
	return found;
}
