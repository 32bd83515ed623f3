/* upload_journal.c - which multipart uploads a process has open, kept in a
 * local file so that the next process can abort those a death left behind
 * (see upload.h). Knows S3 (the aborts) but no database and no FUSE.
 *
 * A journal is spool_dir/mpu-XXXXXX.journal, held with flock(LOCK_EX) by
 * the process that writes it for as long as it lives: a journal whose lock
 * can be taken belongs to a process that is gone. Lines (one write(2) each,
 * O_APPEND): "C\t<bucket>\t<upload id>\t<key>\n" when an upload is created,
 * "E\t<bucket>\t<upload id>\n" when it is completed or aborted. */
#include "upload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "log.h"

#define UPLOAD_JOURNAL_PREFIX "mpu-"
#define UPLOAD_JOURNAL_SUFFIX ".journal"

int upload_journal_open(const char *dir, int *fd_out, char **path_out)
{
	char path[4096], final[4096];
	int fd, n;

	/* Created under another name and locked before it takes the
	 * journal's: a sweep never sees it unlocked. */
	n = snprintf(path, sizeof(path),
		     "%s/" UPLOAD_JOURNAL_PREFIX "XXXXXX.new", dir);
	if (n < 0 || (size_t)n + 4 >= sizeof(path))
		return -ENAMETOOLONG;
	fd = mkostemps(path, 4, O_CLOEXEC | O_APPEND);
	if (fd < 0)
		return -errno;
	memcpy(final, path, (size_t)n - 4);
	strcpy(final + n - 4, UPLOAD_JOURNAL_SUFFIX);
	if (flock(fd, LOCK_EX | LOCK_NB) != 0 || rename(path, final) != 0) {
		int err = errno;

		close(fd);
		unlink(path);
		return -err;
	}
	*path_out = strdup(final);
	if (!*path_out) {
		close(fd);
		unlink(final);
		return -ENOMEM;
	}
	*fd_out = fd;
	return 0;
}

/* One upload a journal left open. */
struct jent {
	char *bucket, *id, *key;
};

static void jents_free(struct jent *e, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(e[i].bucket);
		free(e[i].id);
		free(e[i].key);
	}
	free(e);
}

/* The uploads journal f created and did not end, into *out (*n of them).
 * 0 or -ENOMEM. Malformed lines (a write cut short by the death) are
 * skipped. */
static int journal_read(FILE *f, struct jent **out, size_t *n)
{
	struct jent *e = NULL;
	size_t cnt = 0, cap = 0, len = 0, i;
	char *line = NULL;
	int rc = 0;

	while (getline(&line, &len, f) > 0) {
		char *save = NULL, *kind, *bucket, *id, *key;
		size_t l = strlen(line);

		if (!l || line[l - 1] != '\n')
			continue; /* cut short */
		line[l - 1] = '\0';
		kind = strtok_r(line, "\t", &save);
		bucket = strtok_r(NULL, "\t", &save);
		id = strtok_r(NULL, "\t", &save);
		key = strtok_r(NULL, "", &save);
		if (!kind || !bucket || !id)
			continue;
		if (!strcmp(kind, "E")) {
			for (i = 0; i < cnt; i++) {
				if (!strcmp(e[i].id, id) &&
				    !strcmp(e[i].bucket, bucket)) {
					free(e[i].bucket);
					free(e[i].id);
					free(e[i].key);
					e[i] = e[--cnt];
					break;
				}
			}
			continue;
		}
		if (strcmp(kind, "C") || !key || !*key)
			continue;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct jent *ne = realloc(e, nc * sizeof(*ne));

			if (!ne) {
				rc = -ENOMEM;
				break;
			}
			e = ne;
			cap = nc;
		}
		e[cnt].bucket = strdup(bucket);
		e[cnt].id = strdup(id);
		e[cnt].key = strdup(key);
		cnt++;
		if (!e[cnt - 1].bucket || !e[cnt - 1].id || !e[cnt - 1].key) {
			rc = -ENOMEM;
			break;
		}
	}
	free(line);
	if (rc) {
		jents_free(e, cnt);
		return rc;
	}
	*out = e;
	*n = cnt;
	return 0;
}

/* Aborts what the dead process's journal at path left open; the journal
 * goes once every one is aborted (or gone: NoSuchUpload). fd holds its
 * lock. 0 or the first abort's error (the journal is kept: the next sweep
 * tries again). */
static int journal_sweep_one(struct s3_client *s3, const char *path, int fd,
			     const atomic_int *stop, size_t *aborted)
{
	struct jent *e = NULL;
	size_t n = 0, i;
	FILE *f;
	int rc, first = 0;

	f = fdopen(dup(fd), "re");
	if (!f)
		return -errno;
	rc = journal_read(f, &e, &n);
	fclose(f);
	if (rc)
		return rc;
	for (i = 0; i < n; i++) {
		if (stop && atomic_load(stop)) {
			if (!first)
				first = -ECANCELED;
			break;
		}
		rc = s3_mpu_abort(s3, e[i].bucket, e[i].key, e[i].id);
		if (rc == 0) {
			(*aborted)++;
			log_info("aborted multipart upload %s of %s/%s left "
				 "open by a process that died",
				 e[i].id, e[i].bucket, e[i].key);
		} else if (rc != -ENOENT) {
			log_warn("abort of multipart upload %s of %s/%s left "
				 "by a process that died: %s (tried again "
				 "later)",
				 e[i].id, e[i].bucket, e[i].key, strerror(-rc));
			if (!first)
				first = rc;
		}
	}
	jents_free(e, n);
	if (!first && unlink(path) != 0 && errno != ENOENT)
		log_warn("cannot remove %s: %s", path, strerror(errno));
	return first;
}

int upload_journal_sweep(struct s3_client *s3, const char *dir,
			 const atomic_int *stop, size_t *aborted)
{
	size_t pl = strlen(UPLOAD_JOURNAL_PREFIX);
	size_t sl = strlen(UPLOAD_JOURNAL_SUFFIX);
	struct dirent *de;
	int rc = 0;
	DIR *d;

	*aborted = 0;
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		char path[4096];
		int fd, r;

		if (stop && atomic_load(stop)) {
			if (!rc)
				rc = -ECANCELED;
			break;
		}

		if (l <= pl + sl ||
		    strncmp(de->d_name, UPLOAD_JOURNAL_PREFIX, pl) ||
		    strcmp(de->d_name + l - sl, UPLOAD_JOURNAL_SUFFIX))
			continue;
		r = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (r < 0 || (size_t)r >= sizeof(path))
			continue;
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		/* Held: its process lives (this one's own, or another
		 * mount's sharing the spool directory). */
		if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
			close(fd);
			continue;
		}
		r = journal_sweep_one(s3, path, fd, stop, aborted);
		if (r && !rc)
			rc = r;
		close(fd);
	}
	closedir(d);
	return rc;
}
