/* ops_inbox.c - the FUSE operations on inbox/, the reception bucket.
 *
 * Paths arrive relative to inbox/ ("a/b.txt"); the dispatch in ops.c has
 * already routed by area. Each handler returns 0 or -errno. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "inbox.h"
#include "log.h"
#include "names.h"

static int is_temp(const char *rel)
{
	return cfg_is_temp_name(&cfs->cfg, names_basename(rel));
}

/* Errors: EINVAL, ENAMETOOLONG. */
static int check_name(const char *rel)
{
	int rc = names_check_relpath(rel, 0);

	if (rc)
		log_info("refused name in inbox/ (%s)", strerror(-rc));
	return rc;
}

static void dentry_stat(const struct dentry *e, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_uid = cfs->uid;
	st->st_gid = cfs->gid;
	if (e->is_dir) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		st->st_mtime = cfs->started;
	} else {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		st->st_size = (off_t)e->size;
		st->st_blocks = (blkcnt_t)((e->size + 511) / 512);
		st->st_mtime = e->mtime;
	}
	st->st_blksize = 1 << 20;
	st->st_ctime = st->st_mtime;
	st->st_atime = st->st_mtime;
}

/* Errors: ENOENT, EIO (store unreachable), ENOMEM. */
int inbox_getattr(const char *rel, struct stat *st)
{
	struct ofile *of;
	struct dentry e;
	int rc;

	if (!*rel) {
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		st->st_uid = cfs->uid;
		st->st_gid = cfs->gid;
		st->st_mtime = st->st_ctime = st->st_atime = cfs->started;
		return 0;
	}
	of = ofile_find(rel);
	if (of) {
		int gone;

		pthread_mutex_lock(&cfs->lock);
		gone = of->unlinked;
		pthread_mutex_unlock(&cfs->lock);
		if (!gone) {
			pthread_mutex_lock(&of->lock);
			ofile_stat(of, st);
			pthread_mutex_unlock(&of->lock);
			ofile_put(of);
			attrov_apply(rel, st);
			return 0;
		}
		ofile_put(of);
	}
	rc = dcache_lookup(rel, &e);
	if (rc)
		return rc;
	dentry_stat(&e, st);
	attrov_apply(rel, st);
	return 0;
}

struct list_ctx {
	void *buf;
	fuse_fill_dir_t filler;
	char **names; /* names already given, to merge local files */
	size_t n, cap;
	int err;
};

static void list_add(void *arg, const struct dentry *e)
{
	struct list_ctx *c = arg;
	struct stat st;

	if (c->err)
		return;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		char **nn = realloc(c->names, cap * sizeof(*nn));

		if (!nn) {
			c->err = -ENOMEM;
			return;
		}
		c->names = nn;
		c->cap = cap;
	}
	c->names[c->n] = strdup(e->name);
	if (!c->names[c->n]) {
		c->err = -ENOMEM;
		return;
	}
	c->n++;
	dentry_stat(e, &st);
	c->filler(c->buf, e->name, &st, 0, 0);
}

/* Errors: ENOENT, EIO, ENOMEM. */
int inbox_readdir(const char *rel, void *buf, fuse_fill_dir_t filler)
{
	struct list_ctx c = {.buf = buf, .filler = filler};
	size_t rl = strlen(rel), i;
	struct ofile *of;
	int rc;

	rc = dcache_list(rel, list_add, &c);
	if (rc)
		goto out;
	rc = c.err;
	if (rc)
		goto out;
	/* Files being written or kept local are not (yet) in the store. */
	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next) {
		const char *name;
		struct stat st;
		int seen = 0;

		if (of->unlinked)
			continue;
		if (rl && (strncmp(of->rel, rel, rl) || of->rel[rl] != '/'))
			continue;
		name = of->rel + (rl ? rl + 1 : 0);
		if (strchr(name, '/'))
			continue;
		for (i = 0; i < c.n && !seen; i++)
			seen = !strcmp(c.names[i], name);
		if (seen)
			continue;
		memset(&st, 0, sizeof(st));
		st.st_mode = S_IFREG | 0644;
		filler(buf, name, &st, 0, 0);
	}
	pthread_mutex_unlock(&cfs->lock);
out:
	for (i = 0; i < c.n; i++)
		free(c.names[i]);
	free(c.names);
	return rc;
}

/* Errors: EINVAL, ENAMETOOLONG, EEXIST, EIO, ENOMEM. */
int inbox_mkdir(const char *rel)
{
	struct stat st;
	char *marker;
	int rc;

	rc = check_name(rel);
	if (rc)
		return rc;
	if (strlen(rel) + 1 > NAMES_MAX_KEY)
		return -ENAMETOOLONG;
	if (inbox_getattr(rel, &st) == 0)
		return -EEXIST;
	if (asprintf(&marker, "%s/", rel) < 0)
		return -ENOMEM;
	rc = s3_put_buf(cfs->s3, cfs->cfg.reception_bucket, marker, "", 0,
			NULL, 0, NULL);
	free(marker);
	if (rc == 0)
		dcache_upsert(rel, 1, 0, time(NULL), NULL);
	return rc;
}

/* Errors: ENOENT, ENOTDIR, ENOTEMPTY, EIO, ENOMEM. */
int inbox_rmdir(const char *rel)
{
	struct s3_list_result res = {0};
	size_t rl = strlen(rel), i;
	struct ofile *of;
	struct stat st;
	char *prefix;
	int rc, busy = 0;

	rc = inbox_getattr(rel, &st);
	if (rc)
		return rc;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of && !busy; of = of->next)
		busy = !of->unlinked && !strncmp(of->rel, rel, rl) &&
		       of->rel[rl] == '/';
	pthread_mutex_unlock(&cfs->lock);
	if (busy)
		return -ENOTEMPTY;
	if (asprintf(&prefix, "%s/", rel) < 0)
		return -ENOMEM;
	rc = s3_list_page(cfs->s3, cfs->cfg.reception_bucket, prefix, NULL,
			  NULL, 0, &res);
	for (i = 0; rc == 0 && i < res.n_entries; i++)
		if (strcmp(res.entries[i].key, prefix))
			rc = -ENOTEMPTY;
	if (rc == 0)
		rc = s3_delete(cfs->s3, cfs->cfg.reception_bucket, prefix);
	if (rc == 0)
		dcache_remove(rel);
	s3xml_list_free(&res);
	free(prefix);
	return rc;
}

static struct fhandle *fh_new(struct ofile *of)
{
	struct fhandle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->of = of;
	h->area = AREA_INBOX;
	pthread_mutex_init(&h->lock, NULL);
	return h;
}

void fh_free(struct fhandle *h)
{
	if (!h)
		return;
	if (h->of)
		ofile_put(h->of);
	pthread_mutex_destroy(&h->lock);
	free(h->buf);
	free(h->rel);
	free(h);
}

/* Errors: EINVAL, ENAMETOOLONG, EISDIR, EIO, ENOSPC, ENOMEM. */
int inbox_create(const char *rel, struct fuse_file_info *fi)
{
	struct fhandle *h;
	struct ofile *of;
	int rc = 0, local = is_temp(rel);

	rc = check_name(rel);
	if (rc)
		return rc;
	of = ofile_find(rel);
	if (of) {
		/* Already open elsewhere (or a local file): O_TRUNC applies. */
		pthread_mutex_lock(&of->lock);
		if (fi->flags & O_TRUNC)
			rc = ofile_truncate(of, 0);
		of->dirty = 1;
		pthread_mutex_unlock(&of->lock);
	} else {
		of = ofile_create(rel, local, &rc);
		if (!of)
			return rc;
		pthread_mutex_lock(&of->lock);
		of->dirty = 1; /* even empty, it is uploaded at close */
		pthread_mutex_unlock(&of->lock);
	}
	h = fh_new(of);
	if (!h || rc) {
		ofile_put(of);
		free(h);
		return rc ? rc : -ENOMEM;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

/* Errors: ENOENT, EISDIR, EIO, ENOSPC, ENOMEM. */
int inbox_open(const char *rel, struct fuse_file_info *fi)
{
	int wr = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct fhandle *h;
	struct ofile *of;
	struct stat st;
	int rc = 0;

	of = ofile_find(rel);
	if (!of) {
		rc = inbox_getattr(rel, &st);
		if (rc)
			return rc;
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		if (wr) {
			of = ofile_create(rel, is_temp(rel), &rc);
			if (!of)
				return rc;
			pthread_mutex_lock(&of->lock);
			if (!of->in_store && !of->dirty) {
				if (fi->flags & O_TRUNC) {
					of->in_store = 1;
					rc = ofile_truncate(of, 0);
				} else {
					rc = ofile_load(of, rel);
				}
			}
			pthread_mutex_unlock(&of->lock);
		}
	} else if (wr && (fi->flags & O_TRUNC)) {
		pthread_mutex_lock(&of->lock);
		rc = ofile_truncate(of, 0);
		pthread_mutex_unlock(&of->lock);
	}
	if (rc) {
		if (of)
			ofile_put(of);
		return rc;
	}
	h = fh_new(of);
	if (!h) {
		if (of)
			ofile_put(of);
		return -ENOMEM;
	}
	if (!of) {
		h->rel = strdup(rel);
		h->size = (uint64_t)st.st_size;
		if (!h->rel) {
			fh_free(h);
			return -ENOMEM;
		}
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

#define RA_MIN (128u << 10)
#define RA_MAX (8u << 20)

/* Ranged GET with a read-ahead window that grows on sequential reads.
 * Errors: EIO, ENOMEM. */
static int remote_read(struct fhandle *h, char *out, size_t size,
		       uint64_t off)
{
	size_t got = 0, want;
	int rc = 0;

	if (off >= h->size)
		return 0;
	if (size > h->size - off)
		size = (size_t)(h->size - off);
	pthread_mutex_lock(&h->lock);
	if (h->buf && off >= h->buf_off && off + size <= h->buf_off + h->buf_len) {
		memcpy(out, h->buf + (off - h->buf_off), size);
		h->next_off = off + size;
		pthread_mutex_unlock(&h->lock);
		return (int)size;
	}
	if (off == h->next_off && h->ra)
		h->ra = h->ra * 2 > RA_MAX ? RA_MAX : h->ra * 2;
	else
		h->ra = RA_MIN;
	want = size > h->ra ? size : h->ra;
	if (!h->buf) {
		h->buf = malloc(RA_MAX > size ? RA_MAX : size);
		if (!h->buf) {
			pthread_mutex_unlock(&h->lock);
			return -ENOMEM;
		}
	}
	if (want > RA_MAX && want > size)
		want = RA_MAX;
	if (want > size && size > RA_MAX)
		want = size;
	rc = s3_get_range(cfs->s3, cfs->cfg.reception_bucket, h->rel, off,
			  want, h->buf, &got);
	if (rc) {
		h->buf_len = 0;
		pthread_mutex_unlock(&h->lock);
		return rc;
	}
	h->buf_off = off;
	h->buf_len = got;
	if (got < size)
		size = got;
	memcpy(out, h->buf, size);
	h->next_off = off + size;
	pthread_mutex_unlock(&h->lock);
	return (int)size;
}

/* Errors: EIO, ENOMEM. */
int inbox_read(struct fhandle *h, char *buf, size_t size, off_t off)
{
	struct ofile *of = h->of;
	ssize_t n;

	if (!of)
		return remote_read(h, buf, size, (uint64_t)off);
	pthread_mutex_lock(&of->lock);
	n = pread(of->fd, buf, size, off);
	pthread_mutex_unlock(&of->lock);
	return n < 0 ? -errno : (int)n;
}

/* Errors: EBADF (read-only handle), ENOSPC/EIO (spool), EFBIG. */
int inbox_write(struct fhandle *h, const char *buf, size_t size, off_t off)
{
	struct ofile *of = h->of;
	size_t done = 0;

	if (!of)
		return -EBADF;
	pthread_mutex_lock(&of->lock);
	while (done < size) {
		ssize_t n = pwrite(of->fd, buf + done, size - done,
				   off + (off_t)done);

		if (n < 0) {
			int err = errno;

			if (err == EINTR)
				continue;
			pthread_mutex_unlock(&of->lock);
			log_error("spool write failed: %s", strerror(err));
			return -err;
		}
		done += (size_t)n;
	}
	if (of->up)
		upload_write(of->up, buf, size, off);
	if ((uint64_t)off + size > of->size)
		of->size = (uint64_t)off + size;
	of->dirty = 1;
	clock_gettime(CLOCK_REALTIME, &of->mtime);
	pthread_mutex_unlock(&of->lock);
	return (int)size;
}

/* flush and fsync: the data is in the store and its row committed when
 * this returns 0. Errors: EIO, ENOSPC, EACCES, ETIMEDOUT, EAGAIN... */
int inbox_sync(struct fhandle *h)
{
	int rc;

	if (!h->of)
		return 0;
	pthread_mutex_lock(&h->of->lock);
	rc = ofile_commit(h->of);
	pthread_mutex_unlock(&h->of->lock);
	return rc;
}

/* Errors: ENOENT, EISDIR, EIO, ENOMEM. */
int inbox_truncate(const char *rel, off_t size, struct fhandle *h)
{
	struct ofile *of = h ? h->of : NULL;
	struct stat st;
	int rc, own = 0;

	if (size < 0)
		return -EINVAL;
	if (!of) {
		of = ofile_find(rel);
		own = of != NULL;
	}
	if (!of) {
		/* A stored file, not open: rewrite it through a spool. */
		rc = inbox_getattr(rel, &st);
		if (rc)
			return rc;
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		of = ofile_create(rel, 0, &rc);
		if (!of)
			return rc;
		own = 1;
		pthread_mutex_lock(&of->lock);
		if (size == 0)
			of->in_store = 1;
		else
			rc = ofile_load(of, rel);
		if (rc == 0)
			rc = ofile_truncate(of, (uint64_t)size);
		if (rc == 0)
			rc = ofile_commit(of);
		pthread_mutex_unlock(&of->lock);
		ofile_put(of);
		return rc;
	}
	pthread_mutex_lock(&of->lock);
	rc = ofile_truncate(of, (uint64_t)size);
	/* Not through an open handle: durable now, like any other change. */
	if (rc == 0 && !h && !of->local)
		rc = ofile_commit(of);
	pthread_mutex_unlock(&of->lock);
	if (own)
		ofile_put(of);
	return rc;
}

/* Errors: ENOENT, EISDIR, EIO. */
int inbox_unlink(const char *rel)
{
	struct actor who;
	struct ofile *of;
	struct stat st;
	int rc, in_store = 1;

	of = ofile_find(rel);
	if (of) {
		pthread_mutex_lock(&of->lock);
		in_store = of->in_store && !of->local;
		pthread_mutex_lock(&cfs->lock);
		of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
		pthread_mutex_unlock(&of->lock);
		ofile_put(of);
		if (!in_store) {
			attrov_drop(rel);
			return 0;
		}
	} else {
		rc = inbox_getattr(rel, &st);
		if (rc)
			return rc;
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
	}
	cfs_actor(&who);
	rc = reception_remove(cfs->rcp, rel, &who);
	if (rc == 0 || rc == -ENOENT) {
		dcache_remove(rel);
		attrov_drop(rel);
	}
	return rc;
}

/* A local (temp-named) file gets a final name: upload and log it now. */
static int rename_local_to_final(struct ofile *of, const char *to)
{
	int rc = 0;

	pthread_mutex_lock(&of->lock);
	of->up = upload_new(cfs->pool, cfs->s3, cfs->cfg.reception_bucket, to,
			    of->fd, cfs->cfg.part_size);
	if (!of->up) {
		pthread_mutex_unlock(&of->lock);
		return -ENOMEM;
	}
	ofile_rebase(of->rel, to);
	of->local = 0;
	of->dirty = 1;
	of->in_store = 0;
	rc = ofile_commit(of);
	if (rc) {
		/* Stays a local file under its new name until it works. */
		upload_free(of->up);
		of->up = NULL;
		of->local = 1;
	}
	pthread_mutex_unlock(&of->lock);
	return rc;
}

/* A stored file gets a temp name: it leaves the store (row marked removed)
 * and lives on as a local file. */
static int rename_stored_to_temp(const char *from, const char *to)
{
	struct actor who;
	struct ofile *of;
	int rc;

	of = ofile_create(to, 1, &rc);
	if (!of)
		return rc;
	pthread_mutex_lock(&of->lock);
	rc = ofile_load(of, from);
	of->in_store = 0;
	pthread_mutex_unlock(&of->lock);
	if (rc == 0) {
		cfs_actor(&who);
		rc = reception_remove(cfs->rcp, from, &who);
	}
	if (rc) {
		pthread_mutex_lock(&cfs->lock);
		of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
	} else {
		dcache_remove(from);
	}
	ofile_put(of);
	return rc;
}

/* Renames every object under from/ to to/ (server-side). */
static int rename_dir(const char *from, const char *to)
{
	struct s3_list_result res = {0};
	char *fp = NULL, *nk = NULL;
	struct actor who;
	size_t fl, i;
	int rc;

	if (asprintf(&fp, "%s/", from) < 0)
		return -ENOMEM;
	fl = strlen(fp);
	rc = s3_list_all(cfs->s3, cfs->cfg.reception_bucket, fp, NULL, 0,
			 &res);
	cfs_actor(&who);
	for (i = 0; rc == 0 && i < res.n_entries; i++) {
		const struct s3_list_entry *e = &res.entries[i];

		free(nk);
		if (asprintf(&nk, "%s/%s", to, e->key + fl) < 0) {
			nk = NULL;
			rc = -ENOMEM;
			break;
		}
		if (e->key[strlen(e->key) - 1] == '/') {
			/* A directory marker "d/": the name is "d". */
			nk[strlen(nk) - 1] = '\0';
			rc = names_check_relpath(nk, 1);
			strcat(nk, "/");
			if (rc)
				break;
			rc = s3_put_buf(cfs->s3, cfs->cfg.reception_bucket,
					nk, "", 0, NULL, 0, NULL);
			if (rc == 0)
				rc = s3_delete(cfs->s3,
					       cfs->cfg.reception_bucket,
					       e->key);
		} else {
			rc = names_check_relpath(nk, 0);
			if (rc)
				break;
			rc = reception_rename(cfs->rcp, e->key, nk, e->size,
					      &who, NULL);
		}
	}
	free(nk);
	free(fp);
	s3xml_list_free(&res);
	if (rc == 0) {
		ofile_rebase(from, to);
		dcache_remove(from);
		dcache_upsert(to, 1, 0, time(NULL), NULL);
	}
	dcache_invalidate_all();
	return rc;
}

/* Errors: ENOENT, EEXIST (RENAME_NOREPLACE), EINVAL, EISDIR, ENOTDIR,
 * ENOTEMPTY, ENAMETOOLONG, EIO. */
int inbox_rename(const char *from, const char *to, unsigned int flags)
{
	struct stat sf, st;
	struct ofile *of;
	struct actor who;
	char etag[80];
	int rc, to_exists;

	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	rc = check_name(to);
	if (rc)
		return rc;
	rc = inbox_getattr(from, &sf);
	if (rc)
		return rc;
	if (!strcmp(from, to))
		return 0;
	to_exists = inbox_getattr(to, &st) == 0;
	if (to_exists && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (S_ISDIR(sf.st_mode)) {
		size_t fl = strlen(from);

		if (!strncmp(to, from, fl) && to[fl] == '/')
			return -EINVAL;
		if (to_exists && !S_ISDIR(st.st_mode))
			return -ENOTDIR;
		if (to_exists) {
			rc = inbox_rmdir(to);
			if (rc)
				return rc;
		}
		return rename_dir(from, to);
	}
	if (to_exists && S_ISDIR(st.st_mode))
		return -EISDIR;

	of = ofile_find(from);
	if (of) {
		int local, dirty;

		pthread_mutex_lock(&of->lock);
		local = of->local;
		/* A written file not yet closed: make it durable first. */
		rc = ofile_commit(of);
		dirty = of->dirty;
		pthread_mutex_unlock(&of->lock);
		if (rc == 0 && local && !is_temp(to)) {
			rc = rename_local_to_final(of, to);
		} else if (rc == 0 && local) {
			ofile_rebase(from, to);
		} else if (rc == 0 && !dirty) {
			cfs_actor(&who);
			rc = reception_rename(cfs->rcp, from, to,
					      (uint64_t)sf.st_size, &who,
					      etag);
			if (rc == 0) {
				ofile_rebase(from, to);
				dcache_upsert(to, 0, (uint64_t)sf.st_size,
					      sf.st_mtime, etag);
			}
		}
		ofile_put(of);
		if (rc)
			return rc;
	} else if (is_temp(to)) {
		rc = rename_stored_to_temp(from, to);
		if (rc)
			return rc;
	} else {
		cfs_actor(&who);
		rc = reception_rename(cfs->rcp, from, to,
				      (uint64_t)sf.st_size, &who, etag);
		if (rc)
			return rc;
		dcache_upsert(to, 0, (uint64_t)sf.st_size, sf.st_mtime, etag);
	}
	dcache_remove(from);
	attrov_move(from, to);
	return 0;
}
