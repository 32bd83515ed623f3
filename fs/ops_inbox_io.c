/* ops_inbox_io.c - read, write, fsync and release of inbox/ handles: reads
 * from the spool or the stored object, writes into the spool, the commit
 * at flush/fsync/close. Split from ops_inbox.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "counters.h"
#include "db_attrs.h"
#include "fs.h"
#include "inbox.h"
#include "inbox_int.h"
#include "inval.h"
#include "log.h"
#include "names.h"

/* Caller holds no lock. Errors: EIO (spool), or the failed download's. */
static int spool_read(struct ofile *of, char *buf, size_t size, off_t off)
{
	ssize_t n;
	int rc;

	pthread_mutex_lock(&of->lock);
	rc = of->failed;
	n = rc ? 0 : pread(of->fd, buf, size, off);
	if (n < 0)
		rc = -errno;
	pthread_mutex_unlock(&of->lock);
	return rc ? rc : (int)n;
}

/* Ranged GET with a read-ahead window that grows on sequential reads; the
 * buffer is never larger than the window or what is left of the object.
 * Errors: EIO, ENOMEM. */
/* The object at key is not the one h was opened on (or last checked
 * for): it is read only if the caller may read it with its own attributes
 * (another mount's publish may have put a file there that it may not
 * read: E1). With the kernel checking permissions, the listing's entry is
 * refreshed, the file's attributes looked at for the new object, and h
 * pinned to it. An object this mount's open file of that name committed
 * is that file: h is also its reader (h->copied: the file's identity, so
 * an unlink here later hands h its spool, readers_attach). Caller holds
 * h->lock. 0 (read it), -EACCES, or -errno. */
static int reader_recheck(struct fhandle *h, const char *key)
{
	struct s3_object_info info = {0};
	char same[80] = "";
	struct ofile *of;
	struct stat st;
	int rc;

	rc = entry_refresh(key, &info);
	if (rc)
		return rc;
	rc = inbox_getattr(key, &st);
	if (rc == 0)
		rc = may_open(&st, O_RDONLY);
	if (rc == 0 && (of = ofile_find(key)) != NULL) {
		pthread_mutex_lock(&of->lock);
		if (of->committed[0] && !strcmp(of->committed, info.etag))
			snprintf(same, sizeof(same), "%s", of->loaded);
		pthread_mutex_unlock(&of->lock);
		ofile_put(of);
	}
	if (rc == 0) {
		pthread_mutex_lock(&cfs->lock);
		snprintf(h->etag, sizeof(h->etag), "%s", info.etag);
		if (same[0])
			snprintf(h->copied, sizeof(h->copied), "%s", same);
		pthread_mutex_unlock(&cfs->lock);
	}
	s3_object_info_free(&info);
	return rc;
}

static int remote_read(struct fhandle *h, char *out, size_t size, uint64_t off)
{
	size_t got = 0, want, n;
	struct ofile *spool;
	char *key, *now;
	int rc = 0, tries = 0;

	if (off >= h->size)
		return 0;
	if (size > h->size - off)
		size = (size_t)(h->size - off);
	pthread_mutex_lock(&h->lock);
	if (rawin_serve(&h->win, out, off, size)) {
		pthread_mutex_unlock(&h->lock);
		return (int)size;
	}
	rc = rawin_plan(&h->win, off, size, h->size, &want);
	if (rc) {
		pthread_mutex_unlock(&h->lock);
		return rc;
	}
	key = fh_rel(h);
	if (!key) {
		pthread_mutex_unlock(&h->lock);
		return -ENOMEM;
	}
	for (;;) {
		if (h->etag[0]) {
			rc = s3_get_range_if(cfs->s3, cfs->cfg.reception_bucket,
					     key, off, want, h->etag,
					     h->win.buf, &got);
			if (rc == -EEXIST) {
				/* Another object (or ETag) than the one
				 * checked at open. */
				rc = reader_recheck(h, key);
				if (rc == 0 && h->etag[0])
					rc = s3_get_range_if(
					    cfs->s3, cfs->cfg.reception_bucket,
					    key, off, want, h->etag, h->win.buf,
					    &got);
				if (rc == -EEXIST)
					rc = -ESTALE;
			}
		} else {
			rc = s3_get_range(cfs->s3, cfs->cfg.reception_bucket,
					  key, off, want, h->win.buf, &got);
		}
		if (rc == -EACCES || rc == -ESTALE)
			break;
		/* Renamed while this read was on its way: read the new
		 * name (same content). */
		now = rc && tries++ < 3 && !fh_file(h) ? fh_rel(h) : NULL;
		if (!now || !strcmp(now, key)) {
			free(now);
			break;
		}
		free(key);
		key = now;
	}
	free(key);
	n = rawin_filled(&h->win, out, off, size, got, rc);
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		/* Unlinked while this read was on its way: the content the
		 * handle opened is in its spool now. */
		if (fh_stale(h))
			return -ESTALE; /* its spool is another object's */
		spool = fh_file(h);
		return spool ? spool_read(spool, out, size, (off_t)off) : rc;
	}
	return (int)n;
}

/* Errors: EIO, ENOMEM. */
int inbox_read(struct fhandle *h, char *buf, size_t size, off_t off)
{
	struct ofile *of;

	if (fh_stale(h))
		return -ESTALE;
	of = fh_file(h);
	if (!of)
		return remote_read(h, buf, size, (uint64_t)off);
	return spool_read(of, buf, size, off);
}

/* The kernel clears those bits itself for writes through its page cache
 * (by a chmod it sends us), but not for direct_io handles
 * (write_only_direct): so every write by another than root looks at the
 * file's recorded mode (the attribute cache: no round trip unless it is
 * stale) and clears them before the data lands. A failed clear fails the
 * write and the next write tries again. kill_lock serialises the rare
 * clears so two writers of one file record one change. 0 or -errno (EIO:
 * the database). */
static pthread_mutex_t kill_lock = PTHREAD_MUTEX_INITIALIZER;

static int kill_privs(struct fhandle *h)
{
	struct fuse_context *ctx = cfs_context();
	struct ofile *of = h->of;
	struct stat st;
	char *rel = NULL;
	int rc;

	if (!ctx || ctx->uid == 0)
		return 0;
	pthread_mutex_lock(&cfs->lock);
	if (!of->unlinked && !of->hidden)
		rel = strdup(of->rel);
	pthread_mutex_unlock(&cfs->lock);
	if (!rel)
		return 0; /* unlinked: nobody can exec it by name */
	memset(&st, 0, sizeof(st));
	st.st_mode = S_IFREG;
	rc = attrov_apply(rel, &st, NULL);
	if (rc == 0 &&
	    ((st.st_mode & S_ISUID) ||
	     (st.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))) {
		pthread_mutex_lock(&kill_lock);
		rc = privs_clear(rel, 1);
		pthread_mutex_unlock(&kill_lock);
	}
	free(rel);
	return rc == -EINPROGRESS ? -EIO : rc;
}

/* Errors: EBADF (read-only handle), ENOSPC/EIO (spool), EFBIG. */
int inbox_write(struct fhandle *h, const char *buf, size_t size, off_t off)
{
	struct ofile *of = h->of;
	size_t done = 0;
	uint64_t t0;
	int rc;

	if (!of)
		return -EBADF;
	rc = kill_privs(h);
	if (rc)
		return rc;
	pthread_mutex_lock(&of->lock);
	if (of->failed) {
		int err = of->failed;

		pthread_mutex_unlock(&of->lock);
		return err;
	}
	t0 = ctr_now_ns();
	while (done < size) {
		ssize_t n =
		    pwrite(of->fd, buf + done, size - done, off + (off_t)done);

		if (n < 0) {
			int err = errno;

			if (err == EINTR)
				continue;
			log_error("spool write failed: %s", strerror(err));
			if (!done) {
				pthread_mutex_unlock(&of->lock);
				return -err;
			}
			/* Some bytes landed in the spool: a short write,
			 * and the upload (its hashes) must know of them. */
			size = done;
			break;
		}
		done += (size_t)n;
	}
	stage_observe_since(STG_SPOOL_WRITE, t0);
	clock_gettime(CLOCK_REALTIME, &of->mtime);
	/* A sequential writer about to reach the first part: the multipart
	 * upload the stream creates takes the file's metadata as it is. */
	if (of->up && (uint64_t)off < cfs->cfg.part_size &&
	    (uint64_t)off + size >= cfs->cfg.part_size)
		ofile_stream_meta(of);
	if (of->up)
		upload_write(of->up, buf, size, off);
	if ((uint64_t)off + size > of->size)
		of->size = (uint64_t)off + size;
	of->dirty = 1;
	ofile_set_writer(of);
	fh_pend(h);
	h->wrote = 1;
	pthread_mutex_unlock(&of->lock);
	return (int)size;
}

/* flush (closing) and fsync: the data is in the store and its row
 * committed when this returns 0.
 *
 * A close commits at the LAST close of the open file description: a
 * description is shared by dup()s and by the children that inherit it
 * (echo x > f, dd of=f, { a; b; } > f, Popen(stdout=f)), and each of their
 * closes is a flush here; all but the last leave the commit to the last
 * (see description_held_elsewhere). Only a handle that created, truncated
 * or wrote the file commits at close; release commits a deferred handle
 * as a last resort. fsync is an explicit durability request: it commits
 * the file whenever it is dirty, whichever descriptor changed it.
 * Errors: EIO (also: the object was deleted by another client before its
 * row every time it was uploaded, 1 + 3 times; nothing stored, the data
 * stays in the spool for the next fsync/close), ENOSPC, EACCES, ETIMEDOUT,
 * EAGAIN... */
int inbox_sync(struct fhandle *h, int closing)
{
	struct ofile *of = h->of;
	int rc = 0;

	if (!of)
		return 0;
	pthread_mutex_lock(&of->lock);
	if (of->failed)
		rc = of->failed;
	else if (closing && !h->modified)
		rc = 0;
	else if (closing && of->dirty && !of->local && of->writers == 1 &&
		 h->writable && description_held_elsewhere(h, of))
		h->deferred = 1;
	else if ((rc = ofile_commit(of, closing ? h->writable : 0)) == 0 ||
		 closing)
		/* Committed, or its failure reported to this close: not
		 * retried at release behind the caller's back. */
		h->deferred = 0;
	/* After a close (unless deferred), or an fsync that stored the file,
	 * h owes no commit: a rename from now on stores the file itself. A
	 * local file's fsync stores nothing: h still owes its close. */
	if (closing ? !h->deferred : rc == 0 && !of->dirty)
		fh_settle(h);
	pthread_mutex_unlock(&of->lock);
	return rc;
}

/* The last close of a handle whose commit was deferred to a descriptor
 * that never committed, or that changed the file after its last flush
 * (a shared mapping outlives its descriptors: the kernel writes its pages
 * back when it is unmapped, then releases): last resort, errors can only
 * be logged. */
void inbox_release(struct fhandle *h)
{
	struct ofile *of = h->of;
	char *rel;
	int rc, committed = 0;

	if (of) {
		pthread_mutex_lock(&of->lock);
		if ((h->deferred || h->pending) && !of->failed && of->dirty) {
			rc = ofile_commit(of, h->writable);
			committed = rc == 0;
			if (rc) {
				rel = ofile_rel(of);
				log_error("%s: written, not stored at its last "
					  "close: %s",
					  rel ? rel : "?", strerror(-rc));
				free(rel);
			}
		}
		/* A direct write into a project committed by this last
		 * resort: promoted too (errors logged there). */
		if (committed && of->direct_to && of->direct_pending)
			direct_promote_locked(of);
		pthread_mutex_unlock(&of->lock);
		if (h->writable)
			hist_observe_since(HIST_FILE_OPEN, h->opened_ns, 0);
	}
	fh_free(h);
}
