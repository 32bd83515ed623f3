/* ops_inbox.c - the FUSE operations on inbox/, the reception bucket.
 *
 * Paths arrive relative to inbox/ ("a/b.txt"); the dispatch in ops.c has
 * already routed by area. Each handler returns 0 or -errno. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "db_attrs.h"
#include "fs.h"
#include "inbox.h"
#include "inbox_int.h"
#include "inval.h"
#include "log.h"
#include "names.h"
#include "s3err.h"

int is_temp(const char *rel)
{
	return cfg_is_temp_name(&cfs->cfg, names_basename(rel));
}

/* Errors: EINVAL, ENAMETOOLONG. */
int check_name(const char *rel)
{
	int rc = names_check_relpath(rel, 0);

	if (rc)
		log_info("refused name in inbox/ (%s)", strerror(-rc));
	return rc;
}

/* What a listing entry looks like before its recorded attributes apply
 * (attrov_apply): owned by the configured owner of foreign objects, with
 * the configured modes. An uploader's x-amz-meta-uid/gid/mode are never
 * read: an object nobody created here cannot claim an owner. */
static void dentry_stat(const struct dentry *e, struct stat *st)
{
	inbox_default_stat(st);
	if (e->is_dir) {
		st->st_mode = S_IFDIR | (cfs->cfg.dir_mode & 07777);
		st->st_nlink = 2;
		st->st_mtime = cfs->started;
	} else {
		st->st_size = (off_t)e->size;
		st->st_blocks = (blkcnt_t)((e->size + 511) / 512);
		st->st_mtime = e->mtime;
	}
	st->st_blksize = 1 << 20;
	st->st_ctime = st->st_mtime;
	st->st_atime = st->st_mtime;
}

/* The attributes new file or directory rel is recorded with: the
 * caller's uid and gid, mode with the caller's umask applied (the kernel
 * applied it already unless told not to: applying it twice changes
 * nothing). In a setgid directory, as ext4 does: the directory's group,
 * a subdirectory setgid too, and a file's own setgid bit kept only when
 * its creator is in that group (or root). 0 or -errno (the parent's
 * attributes cannot be read: EIO, ENOMEM; a parent that does not exist,
 * as a direct write's staging key has none, is not setgid). */
static int creator_attrs(const char *rel, struct attrov *in, mode_t mode,
			 int is_dir)
{
	struct fuse_context *ctx = cfs_context();
	const char *slash = strrchr(rel, '/');
	struct stat pst;
	char *parent;
	int rc;

	in->mode = mode & 07777;
	in->uid = ctx ? ctx->uid : cfs->uid;
	in->gid = ctx ? ctx->gid : cfs->gid;
	if (ctx)
		in->mode &= ~(ctx->umask & 0777);
	if (!slash)
		return 0; /* in inbox/ itself: 01777, not setgid */
	parent = strndup(rel, (size_t)(slash - rel));
	if (!parent)
		return -ENOMEM;
	rc = inbox_getattr(parent, &pst);
	free(parent);
	if (rc == -ENOENT)
		return 0; /* no such directory: a direct write's staging key */
	if (rc)
		return rc;
	if (!(pst.st_mode & S_ISGID))
		return 0;
	in->gid = pst.st_gid;
	if (is_dir)
		in->mode |= S_ISGID;
	else if ((in->mode & S_ISGID) && ctx && ctx->uid != 0 &&
		 !cfs_caller_in_group(ctx, in->gid))
		in->mode &= ~(mode_t)S_ISGID;
	return 0;
}

/* A hidden name no file of this process has (review-hide H6): libfuse
 * (and ll.c) take a name for a hide only when getattr says ENOENT, and
 * another process's hidden name in the same directory is the same string
 * whenever both counted the same (node id + a counter per process): it
 * shows as taken while the row its hide copied is there, so the hide
 * takes the next name instead of the other's row. 0 (taken: st a
 * placeholder), -ENOENT (free) or -EIO (the database cannot tell: the
 * hide fails rather than risk another's row). */
static int hidden_taken(const char *rel, struct stat *st)
{
	struct db_attrs row = {0};
	int found = 0, rc;

	rc =
	    db_attrs_get(cfs->db, cfs->cfg.reception_bucket, rel, &row, &found);
	if (rc) {
		log_error("inbox/%s: whether another process's hide holds the "
			  "name cannot be read: %s",
			  rel, strerror(-rc));
		return -EIO;
	}
	db_attrs_free_row(&row);
	if (!found)
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG;
	st->st_nlink = 1;
	st->st_uid = cfs->uid;
	st->st_gid = cfs->gid;
	return 0;
}

/* Errors: ENOENT, EIO (store unreachable), ENOMEM. */
int inbox_getattr(const char *rel, struct stat *st)
{
	return inbox_getattr_shown(rel, st, NULL);
}

int inbox_getattr_shown(const char *rel, struct stat *st, char *etag)
{
	struct ofile *of;
	struct dentry e;
	int rc;

	if (etag)
		etag[0] = '\0';
	if (!*rel) {
		/* A shared drop: anyone may create; only a file's owner (or
		 * root) may rename or remove it (the kernel checks, with
		 * default_permissions). */
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFDIR | 01777;
		st->st_nlink = 2;
		st->st_uid = cfs->uid;
		st->st_gid = cfs->gid;
		st->st_mtime = st->st_ctime = st->st_atime = cfs->started;
		return 0;
	}
	of = ofile_find(rel);
	if (!of && ofile_is_hidden_name(rel))
		return hidden_taken(rel, st); /* never in the store */
	if (of) {
		int gone;

		pthread_mutex_lock(&cfs->lock);
		gone = of->unlinked;
		pthread_mutex_unlock(&cfs->lock);
		if (!gone) {
			int own;

			pthread_mutex_lock(&of->lock);
			ofile_stat(of, st);
			/* a deferred publish: its own, not rel's row's */
			own = ofile_deferred_stat(of, st);
			pthread_mutex_unlock(&of->lock);
			ofile_put(of);
			return own ? 0 : attrov_apply(rel, st, NULL);
		}
		ofile_put(of);
	}
	rc = dcache_lookup(rel, &e);
	if (rc)
		return rc;
	dentry_stat(&e, st);
	rc = attrov_apply(rel, st, e.is_dir ? NULL : e.etag);
	if (rc == 0 && etag && !e.is_dir && e.etag[0]) {
		snprintf(etag, 80, "%s", e.etag);
		attrov_bound_etag(rel, etag);
	}
	return rc;
}

struct list_ctx {
	void *buf;
	fuse_fill_dir_t filler;
	const char *rel; /* the directory listed */
};

static void list_add(void *arg, const struct dentry *e)
{
	struct list_ctx *c = arg;
	struct stat st;

	if (ofile_is_hidden_name(e->name))
		return;
	/* Files being written into projects (ops_direct.c). */
	if (!*c->rel && direct_is_staging(e->name))
		return;
	dentry_stat(e, &st);
	c->filler(c->buf, e->name, &st, 0, 0);
}

/* Still under the listing's lock: the files of the directory being
 * written or kept local that are not (yet) in the store, each checked
 * against the listing in O(1). */
static void list_open_files(void *arg, const struct dcache_view *v)
{
	struct list_ctx *c = arg;
	size_t rl = strlen(c->rel);
	struct ofile *of;

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next) {
		const char *name;
		struct stat st;

		if (of->unlinked || of->hidden)
			continue;
		if (rl && (strncmp(of->rel, c->rel, rl) || of->rel[rl] != '/'))
			continue;
		name = of->rel + (rl ? rl + 1 : 0);
		if (strchr(name, '/') || dcache_view_has(v, name))
			continue;
		memset(&st, 0, sizeof(st));
		st.st_mode = S_IFREG | 0644;
		c->filler(c->buf, name, &st, 0, 0);
	}
	pthread_mutex_unlock(&cfs->lock);
}

/* Errors: ENOENT, EIO, ENOMEM. */
int inbox_readdir(const char *rel, void *buf, fuse_fill_dir_t filler)
{
	struct list_ctx c = {.buf = buf, .filler = filler, .rel = rel};

	return dcache_list_ex(rel, list_add, list_open_files, &c);
}

/* Does the store hold rel now, as a file or as a directory (its marker or
 * anything under rel/)? Asks the store, not the listing cache, which may
 * be younger than the TTL and not show what another mount or route made
 * since; what is found is put into the cache. 1 yes, 0 no, or -errno. */
static int name_stored_now(const char *rel)
{
	struct s3_object_info info;
	int rc;

	rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);
	if (rc == 0) {
		dcache_upsert(rel, 0, info.size, info.mtime, info.etag);
		s3_object_info_free(&info);
		return 1;
	}
	if (rc != -ENOENT)
		return rc;
	return inbox_dir_stored_now(rel);
}

/* inbox.h. */
int inbox_stored_kind_now(const char *rel)
{
	struct s3_object_info info;
	int rc;

	rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);
	if (rc == 0) {
		dcache_upsert(rel, 0, info.size, info.mtime, info.etag);
		s3_object_info_free(&info);
		return 1;
	}
	if (rc != -ENOENT)
		return rc;
	rc = inbox_dir_stored_now(rel);
	return rc == 1 ? 2 : rc;
}

int inbox_dir_stored_now(const char *rel)
{
	struct s3_list_result res = {0};
	char *prefix;
	int rc;

	if (asprintf(&prefix, "%s/", rel) < 0)
		return -ENOMEM;
	rc = s3_list_page(cfs->s3, cfs->cfg.reception_bucket, prefix, NULL,
			  NULL, 1, &res);
	free(prefix);
	if (rc == 0 && res.n_entries > 0) {
		dcache_upsert(rel, 1, 0, time(NULL), NULL);
		rc = 1;
	}
	s3xml_list_free(&res);
	return rc;
}

int inbox_marker_put(const char *marker, const struct stat *st)
{
	char mtime[32], mode[16], uid[16], gid[16];
	struct s3_kv meta[4] = {{(char *)"mtime", mtime},
				{(char *)"mode", mode},
				{(char *)"uid", uid},
				{(char *)"gid", gid}};

	/* s3fs's forms, as for files (ofile_commit_key): written, never
	 * read back. */
	snprintf(mtime, sizeof(mtime), "%lld", (long long)st->st_mtime);
	snprintf(mode, sizeof(mode), "%u",
		 (unsigned)(S_IFDIR | (st->st_mode & 07777)));
	snprintf(uid, sizeof(uid), "%u", (unsigned)st->st_uid);
	snprintf(gid, sizeof(gid), "%u", (unsigned)st->st_gid);
	return s3_put_buf(cfs->s3, cfs->cfg.reception_bucket, marker, "", 0,
			  meta, 4, NULL);
}

/* mode: the directory's, the umask applied (kept as its override). A
 * name that exists (in the store, whatever this mount's listing says)
 * fails with EEXIST and keeps its attributes.
 * Errors: EINVAL, ENAMETOOLONG, EEXIST, EIO, ENOMEM. */
int inbox_mkdir(const char *rel, mode_t mode)
{
	struct attrov in = {0};
	struct stat st;
	char *marker;
	int rc;

	rc = check_name(rel);
	if (rc)
		return rc;
	if (ofile_is_hidden_name(rel))
		return -EINVAL;
	if (strlen(rel) + 1 > NAMES_MAX_KEY)
		return -ENAMETOOLONG;
	if (inbox_getattr(rel, &st) == 0)
		return -EEXIST;
	rc = name_stored_now(rel);
	if (rc)
		return rc > 0 ? -EEXIST : rc;
	/* Another mount's new file, not stored yet: only its claim shows it
	 * (its row must stay its own, never become this directory's). */
	rc = inbox_claimed_attrs(rel, &st);
	if (rc)
		return rc > 0 ? -EEXIST : rc;
	if (asprintf(&marker, "%s/", rel) < 0)
		return -ENOMEM;
	/* Its mode, owner and times first: nothing stored without them (a
	 * directory is a key prefix: its times are only the record's). */
	rc = creator_attrs(rel, &in, mode, 1);
	if (rc) {
		free(marker);
		return rc;
	}
	clock_gettime(CLOCK_REALTIME, &in.mtime);
	in.atime = in.mtime;
	rc = attrov_set(rel, &in,
			ATTROV_RESET | ATTROV_DIR | ATTROV_MODE | ATTROV_OWNER |
			    ATTROV_ATIME | ATTROV_MTIME,
			NULL, NULL);
	if (rc == 0) {
		memset(&st, 0, sizeof(st));
		st.st_mode = in.mode;
		st.st_uid = in.uid;
		st.st_gid = in.gid;
		st.st_mtim = in.mtime;
		rc = inbox_marker_put(marker, &st);
	}
	free(marker);
	if (rc == 0)
		dcache_upsert(rel, 1, 0, in.mtime.tv_sec, NULL);
	else
		attrov_drop(rel, 0);
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
		busy = !of->unlinked && !of->hidden &&
		       !strncmp(of->rel, rel, rl) && of->rel[rl] == '/';
	pthread_mutex_unlock(&cfs->lock);
	if (busy)
		return -ENOTEMPTY;
	/* Another mount's new file under it (open there, not stored yet): no
	 * listing shows it, only its claim does; it is not empty (review-k
	 * L6: a rename over it would let that file replace what moved in). */
	rc = db_attrs_others_claim_under(cfs->db, cfs->cfg.reception_bucket,
					 rel);
	if (rc)
		return rc > 0 ? -ENOTEMPTY : rc == -EINPROGRESS ? -EIO : rc;
	if (asprintf(&prefix, "%s/", rel) < 0)
		return -ENOMEM;
	rc = s3_list_page(cfs->s3, cfs->cfg.reception_bucket, prefix, NULL,
			  NULL, 0, &res);
	for (i = 0; rc == 0 && i < res.n_entries; i++)
		if (strcmp(res.entries[i].key, prefix))
			rc = -ENOTEMPTY;
	if (rc == 0)
		rc = s3_delete(cfs->s3, cfs->cfg.reception_bucket, prefix);
	if (rc == 0) {
		dcache_remove(rel);
		/* a claim made under it since the check stays its file's */
		attrov_drop_spare(rel, 1);
	}
	s3xml_list_free(&res);
	free(prefix);
	return rc;
}

/* A write-only handle bypasses the kernel's page cache (direct_io): its
 * writes reach inbox_write straight from the writer's buffer. Through the
 * page cache every byte written costs the writer a copy into a page that
 * is then kept, the whole file over again in memory beside the spool
 * (measured: a third of a large cp's time). Nothing is lost: such a handle
 * cannot read or mmap, and the kernel drops the cached pages a direct
 * write overlaps, so readers of the same file through other handles stay
 * coherent (test_posix.py::test_reader_sees_write_only_handle_writes).
 * Read-write handles keep the page cache (shared mmap needs it). */
static void write_only_direct(struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) == O_WRONLY)
		fi->direct_io = 1;
}

/* The attributes of stored object rel that this mount's listing did not
 * show (info: its HEAD), with its row read from the database now. */
static int stored_stat(const char *rel, const struct s3_object_info *info,
		       struct stat *st)
{
	struct dentry e = {0};

	e.size = info->size;
	e.mtime = info->mtime;
	dentry_stat(&e, st);
	return attrov_apply_fresh(rel, st, info->etag);
}

int inbox_stored_attrs(const char *rel, struct stat *st, struct seen_obj *seen)
{
	struct s3_object_info info;
	const char *tag;
	int rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, rel, &info);

	if (rc)
		return rc;
	rc = stored_stat(rel, &info, st);
	if (rc == 0 && seen) {
		tag = s3_meta_get(&info, UPLOAD_TAG);
		snprintf(seen->etag, sizeof(seen->etag), "%s", info.etag);
		snprintf(seen->tag, sizeof(seen->tag), "%s", tag ? tag : "");
		seen->mtime = info.mtime;
	}
	s3_object_info_free(&info);
	return rc;
}

/* A row's attributes as a stat for may_replace (the defaults where not
 * set). */
static void claim_stat(const struct db_claim *c, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | (c->has_mode ? c->mode & 07777
					     : cfs->cfg.file_mode & 07777);
	st->st_uid = c->has_owner ? (uid_t)c->uid : cfs->foreign_uid;
	st->st_gid = c->has_owner ? (gid_t)c->gid : cfs->foreign_gid;
}

int inbox_claimed_attrs(const char *rel, struct stat *st)
{
	struct db_claim c;
	struct ofile *of;
	int rc =
	    db_attrs_claim_get(cfs->db, cfs->cfg.reception_bucket, rel, &c);

	if (rc)
		return rc == -EINPROGRESS ? -EIO : rc;
	rc = c.found && c.live;
	if (rc && attrov_claim_mine(c.holder)) {
		/* This mount's: a file open here (the kernel knows it), or
		 * a leftover of one gone (its drop failed, or running). */
		of = ofile_find(rel);
		rc = of != NULL;
		if (of)
			ofile_put(of);
	}
	if (rc)
		claim_stat(&c, st);
	db_claim_free(&c);
	return rc;
}

/* A new file rel (nothing stored under that name, nor open here): its row
 * (in's mode and owner) claims the name in the database, under token (this
 * create's own: claimed_by), where of creates racing on it from every mount
 * exactly one wins (attrov_claim). Another mount's live claim (a file being
 * written there) is the file: O_EXCL fails on it (EEXIST); a plain create,
 * once may_replace allows it (sticky inbox/: its owner or root; else
 * EACCES), fails with EBUSY and changes nothing (that file is not shared
 * with this mount, which knows nothing of its content: its claim, mode and
 * owner stay its own), except under a temp name (local: such a file is
 * never shared between mounts), which it takes over. A claim of this mount's
 * that nothing open here holds (its drop failed, or is running) or that lapsed
 * (a dead mount's) does not exist. Another row (a stored object's, a
 * directory's, one left behind) is taken only when the store has nothing under
 * the name now: a directory there is EISDIR for a plain create (EEXIST with
 * O_EXCL); an object that landed since the caller's HEAD sets *again (a
 * plain create opens it as a stored file). gate (NULL: none) runs before a
 * claim's COMMIT (attrov_claim): its nonzero return undoes the claim and is
 * returned.
 * 0 (claimed) or -errno: EEXIST, EBUSY, EISDIR, EACCES, EIO, ENOMEM, or
 * the gate's. */
static int claim_name(const char *rel, const struct attrov *in, int excl,
		      int local, const char *token, int *again,
		      int (*gate)(void *), void *gate_arg)
{
	struct db_claim held = {0};
	struct stat st;
	char *from = NULL;
	int rc = -EEXIST, tries, take = 0, mine;

	*again = 0;
	for (tries = 0; tries < 4; tries++) {
		rc = attrov_claim(rel, in, take, from, token, &held, gate,
				  gate_arg);
		free(from);
		from = NULL;
		if (rc != -EEXIST)
			break;
		if (!held.found)
			continue; /* gone meanwhile: try again */
		mine = held.live && attrov_claim_mine(held.holder);
		if (held.live && !mine && held.pending) {
			/* an open file lands here at its close (its publish
			 * deferred): never opened as a file here */
			rc = excl ? -EEXIST : -EBUSY;
			break;
		}
		if (held.live && !mine && excl)
			break; /* another mount's new file */
		if (held.live && !mine) {
			claim_stat(&held, &st);
			rc = may_replace(rel, &st, O_WRONLY);
			if (rc)
				break;
			if (!local) {
				rc = -EBUSY; /* being written there */
				break;
			}
		}
		if (held.live) {
			/* That very claim (a leftover here, or the file
			 * replaced): its drop, if one runs, takes only its
			 * own token, never this create's. */
			from = held.holder;
			held.holder = NULL;
		} else {
			rc = inbox_stored_kind_now(rel);
			if (rc) {
				if (rc == 1 && !excl)
					*again = 1;
				if (rc > 0)
					rc = rc == 2 && !excl ? -EISDIR
							      : -EEXIST;
				break;
			}
			take = 1; /* nothing there: a stale row */
		}
		db_claim_free(&held);
		rc = -EEXIST;
	}
	free(from);
	db_claim_free(&held);
	return rc;
}

/* rel's attributes *st and the ETag of the object they are for (etag, 80
 * bytes; "" when rel is open here or the listing names none), read as one:
 * the listing may move on to another object between the two reads. 0,
 * -ESTALE when it kept moving, or getattr's -errno. */
static int open_stat(const char *rel, struct stat *st, char *etag)
{
	char again[80];
	int rc, tries;

	for (tries = 0; tries < 4; tries++) {
		inbox_shown_etag(rel, etag);
		rc = inbox_getattr(rel, st);
		if (rc)
			return rc;
		inbox_shown_etag(rel, again);
		if (!strcmp(etag, again))
			return 0;
	}
	return -ESTALE;
}

/* The object at key now, by HEAD, put into the listing (and the kernel's
 * entry for it dropped): a handle found the listing's object gone. *info
 * filled (the caller frees it). 0 or -errno. */
int entry_refresh(const char *key, struct s3_object_info *info)
{
	int rc;

	rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, key, info);
	if (rc)
		return rc;
	dcache_upsert(key, 0, info->size, info->mtime, info->etag);
	inval_inbox(key);
	return 0;
}

/* Caller holds of->lock, of not ready: load it with the object of ETag etag
 * ("": whatever is there), the one whose attributes were checked for the
 * caller. -EAGAIN when it was replaced since (the listing is refreshed,
 * and every handle sharing of fails so: try again with a new ofile),
 * -ESTALE when it was removed (the listing forgets it: the kernel looks
 * the name up again), or ofile_load's -errno. */
static int load_checked(struct ofile *of, const char *rel, const char *etag)
{
	struct s3_object_info info = {0};
	int rc = ofile_load(of, rel, etag[0] ? etag : NULL);

	if (rc == -EEXIST) {
		if (entry_refresh(rel, &info) == 0)
			s3_object_info_free(&info);
		of->failed = rc = -EAGAIN;
	} else if (rc == -ENOENT) {
		/* Removed since its check (another mount): the kernel looks
		 * the name up again, and an O_CREAT open creates it. */
		dcache_remove(rel);
		inval_inbox(rel);
		of->failed = rc = -ESTALE;
	}
	return rc;
}

/* A create's HEAD of a name, run on a thread of its own while the create
 * claims the name (the claim a new name needs, whose transaction waits for
 * the HEAD before its COMMIT and is rolled back when the name turns out to
 * be stored): the two round trips, to the store and to the database,
 * overlap (issue 10). */
struct create_head {
	pthread_t thread;
	int started; /* on its own thread (else it ran in the caller's) */
	int joined;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* done set: on CLOCK_MONOTONIC */
	int done;	   /* protected by mu: the HEAD has answered */
	const char *rel;
	uint64_t t0;
	int rc;
	struct s3_object_info info; /* rc 0: the caller's to free */
	struct errmap_cause cause;  /* the failure's, for the caller */
};

static void *create_head_main(void *arg)
{
	struct create_head *h = arg;

	errmap_cause_clear();
	h->rc = s3_head(cfs->s3, cfs->cfg.reception_bucket, h->rel, &h->info);
	errmap_cause(&h->cause);
	stage_observe_since(STG_CREATE_CHECK, h->t0);
	pthread_mutex_lock(&h->mu);
	h->done = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* How long a claim's transaction waits for its HEAD (create_head_gate):
 * the name's lock and a pooled connection are held meanwhile, idle in
 * transaction on the server. A store slower than that (a retried 503, a
 * hung route) must hold neither: other mounts' creates, renames and
 * unlinks of the name queue on that lock, and a server's
 * idle_in_transaction_session_timeout may end the session (review-38 F1,
 * F2). Past it the claim is rolled back and made again after the HEAD. */
#define CREATE_HEAD_GATE_MS 250

/* Creates whose claim's transaction waits for their HEAD now: each holds
 * a pooled database connection meanwhile, so at most half the pool do (a
 * slow store must not hold every connection); the others HEAD first, then
 * claim, as before the overlap. */
static atomic_int create_heads_waited;

/* Starts the HEAD of rel (kept by pointer: create_head_join before rel
 * goes). Returns 1 when it runs on its own thread and the caller may claim
 * meanwhile (create_head_join then ends that); 0 when it ran now, in the
 * caller's thread (half the pool waits on HEADs already, or no thread). */
static int create_head_start(struct create_head *h, const char *rel)
{
	int most = cfs->cfg.db_pool_size / 2;

	pthread_condattr_t ca;

	memset(h, 0, sizeof(*h));
	h->rel = rel;
	h->t0 = ctr_now_ns();
	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (atomic_fetch_add(&create_heads_waited, 1) < most)
		h->started =
		    pthread_create(&h->thread, NULL, create_head_main, h) == 0;
	if (!h->started) {
		atomic_fetch_sub(&create_heads_waited, 1);
		create_head_main(h);
	}
	return h->started;
}

/* Waits for the HEAD (once; then its answer again): s3_head's result. */
static int create_head_wait(struct create_head *h)
{
	if (h->started && !h->joined)
		pthread_join(h->thread, NULL);
	h->joined = 1;
	return h->rc;
}

/* claim_name's gate, in the claim's transaction before its COMMIT: the
 * HEAD answers first, and a name that is stored (or that the store cannot
 * tell) rolls the claim back: nothing of it committed nor logged
 * (-ECANCELED). A HEAD that has not answered within CREATE_HEAD_GATE_MS
 * rolls it back too (-EAGAIN): the caller claims again once it has. */
static int create_head_gate(void *arg)
{
	struct create_head *h = arg;
	struct timespec until;
	int done;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += (long)CREATE_HEAD_GATE_MS * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&h->mu);
	while (!h->done &&
	       pthread_cond_timedwait(&h->cv, &h->mu, &until) != ETIMEDOUT)
		;
	done = h->done;
	pthread_mutex_unlock(&h->mu);
	if (!done)
		return -EAGAIN;
	return create_head_wait(h) == -ENOENT ? 0 : -ECANCELED;
}

/* Waits for the HEAD: s3_head's result (0: *info holds the object's, to
 * free), its failure's cause made the caller's. */
static int create_head_join(struct create_head *h, struct s3_object_info *info)
{
	create_head_wait(h);
	if (h->started)
		atomic_fetch_sub(&create_heads_waited, 1);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	if (h->rc == 0)
		*info = h->info;
	else if (h->rc != -ENOENT)
		errmap_cause_restore(&h->cause);
	return h->rc;
}

/* The kernel creates only after a lookup found no such name, but that
 * answer may be stale (negative dentry, a listing younger than the TTL):
 * an object that arrived since by another route or another mount is in
 * the store, and the kernel checked nothing against it. O_EXCL fails on
 * it; otherwise the caller must be allowed to open it so (may_replace, on
 * its recorded owner and mode, read now) and it is opened as it is: its
 * owner, mode and row stay, its content too unless O_TRUNC. A store that
 * cannot say whether the name exists fails the create (never a blind
 * overwrite). mode: a new file's, the umask applied (kept as its
 * override).
 * A name another mount is writing now (its live claim) is not opened here:
 * EBUSY (claim_name). An object replaced between its check and its load
 * is checked again (twice at most, then ESTALE).
 * Errors: EEXIST (O_EXCL), EACCES (another user's file, or one the access
 * mode asks too much of), EBUSY, EINVAL (hidden name), EISDIR, ESTALE,
 * EIO, ENOSPC, ENOMEM. */
int inbox_create(const char *rel, mode_t mode, struct fuse_file_info *fi)
{
	int excl = (fi->flags & O_EXCL) != 0, stored = 0;
	int trunc = (fi->flags & O_TRUNC) != 0, acc = fi->flags & O_ACCMODE;
	/* what the open needs on an existing file: a truncation, write */
	int need = trunc && acc == O_RDONLY ? O_RDWR : acc;
	struct s3_object_info info;
	struct attrov in = {0};
	struct fhandle *h;
	struct ofile *of;
	struct stat st;
	char *token = NULL, seen[80] = "", seen_tag[64] = "";
	const char *tag;
	int rc = 0, local = is_temp(rel), again = 0, retries = 2, tries = 0;
	int spec, spec_rc = 0; /* the claim made during the HEAD, its rc */

	rc = check_name(rel);
	if (rc)
		return rc;
	if (ofile_is_hidden_name(rel))
		return -EINVAL; /* reserved for open files being unlinked */
retry:
	stored = 0;
	spec = 0;
	seen[0] = '\0';
	of = ofile_find(rel);
	if (of && excl) {
		ofile_put(of);
		return -EEXIST;
	}
	if (of) {
		/* Open here already (or a local file): its own rules. */
		rc = inbox_getattr(rel, &st);
		if (rc == 0)
			rc = may_replace(rel, &st, need);
		if (rc == 0)
			rc = ofile_may_open(of, rel, need); /* T4 */
		if (rc == 0 && trunc)
			rc = privs_clear(rel, 0);
		if (rc) {
			ofile_put(of);
			return rc;
		}
	} else if (excl || !local) {
		struct create_head ch;

		/* The name's claim, which a new name needs, while the HEAD
		 * says whether it is one: the claim's transaction waits for
		 * the HEAD before its COMMIT (create_head_gate), and a
		 * stored name's claim is rolled back, never committed nor
		 * logged (its failure does not count: a stored name is
		 * opened as it is, as without the claim). An object that
		 * landed since is the claim's to find (claim_name). */
		spec = create_head_start(&ch, rel);
		spec_rc = spec ? creator_attrs(rel, &in, mode, 0) : -EAGAIN;
		if (spec && spec_rc == 0) {
			token = attrov_claim_token();
			spec_rc = token ? 0 : -ENOMEM;
		}
		if (spec && spec_rc == 0)
			spec_rc = claim_name(rel, &in, excl, local, token,
					     &again, create_head_gate, &ch);
		rc = create_head_join(&ch, &info);
		if (rc == -ENOENT && spec && spec_rc == -EAGAIN) {
			/* a slow HEAD: the claim was rolled back, and is made
			 * now that the name is known to be new */
			free(token);
			token = NULL;
			spec = 0;
			again = 0;
		}
		if (rc != -ENOENT) {	  /* stored, or not known: no claim */
			if (spec_rc == 0) /* never: the gate refused it */
				attrov_unclaim(rel, token);
			free(token);
			token = NULL;
			spec = 0;
			again = 0;
		}
		if (rc == 0) {
			if (excl) {
				s3_object_info_free(&info);
				return -EEXIST;
			}
			rc = stored_stat(rel, &info, &st);
			snprintf(seen, sizeof(seen), "%s", info.etag);
			tag = s3_meta_get(&info, UPLOAD_TAG);
			snprintf(seen_tag, sizeof(seen_tag), "%s",
				 tag ? tag : "");
			s3_object_info_free(&info);
			if (rc == 0)
				rc = may_replace(rel, &st, need);
			if (rc == 0 && trunc)
				rc = privs_clear(rel, 0);
			if (rc)
				return rc;
			stored = 1;
		} else if (rc != -ENOENT) {
			return rc;
		}
		rc = 0;
	}
	if (of) {
		/* Already open elsewhere (or a local file): O_TRUNC applies. */
		pthread_mutex_lock(&of->lock);
		rc = of->failed;
		if (rc == 0 && trunc)
			rc = ofile_truncate(of, 0);
	} else {
		/* A new file: its mode and owner (the creator), and none of
		 * an earlier file's attributes under that name. A stored
		 * one keeps its own. */
		if (!stored && !spec) {
			rc = creator_attrs(rel, &in, mode, 0);
			if (rc)
				return rc;
			token = attrov_claim_token();
			if (!token)
				return -ENOMEM;
			rc = claim_name(rel, &in, excl, local, token, &again,
					NULL, NULL);
		} else if (!stored) {
			rc = spec_rc; /* the claim made during the HEAD */
		}
		if (!stored && rc) {
			free(token);
			token = NULL;
			if (again && retries-- > 0)
				goto retry; /* stored meanwhile */
			return rc;
		}
		of = ofile_create(rel, local, &rc);
		if (!of) {
			if (!stored)
				attrov_unclaim(rel, token);
			free(token);
			return rc;
		}
		/* another opener's (a race lost): checked on its object
		 * too; else it holds the object checked above, or the new
		 * file's attributes */
		rc = ofile_may_hold(of, need);
		if (rc == 0 && stored) {
			ofile_hold_attrs(of, &st);
		} else if (rc == 0) {
			struct stat cst = {0};

			cst.st_mode = S_IFREG | in.mode;
			cst.st_uid = in.uid;
			cst.st_gid = in.gid;
			ofile_hold_attrs(of, &cst);
		}
		if (rc == 0)
			rc = of->failed;
		if (rc == 0 && !stored && !of->ready) {
			of->creator = in;
			pthread_mutex_lock(&cfs->lock);
			of->attrs_unbound = 1; /* its claim, renewed */
			free(of->claim);
			of->claim = token;
			token = NULL;
			pthread_mutex_unlock(&cfs->lock);
		}
		/* A claim this create took and did not hand to the file (a
		 * shared one failed: tried again) goes now, not at its
		 * lease's end. */
		if (token && rc)
			attrov_unclaim(rel, token);
		free(token);
		token = NULL;
		if (rc == 0 && !of->ready && stored && !trunc) {
			/* as open(2) would: the object checked above */
			rc = load_checked(of, rel, seen);
		} else if (rc == 0 && !of->ready && stored) {
			of->in_store = 1;
			of->stored_size = (uint64_t)st.st_size;
			snprintf(of->loaded, sizeof(of->loaded), "%s", seen);
			/* the object checked, as its HEAD above found it */
			snprintf(of->base_tag, sizeof(of->base_tag), "%s",
				 seen_tag);
			of->base_known = 1;
			rc = ofile_truncate(of, 0);
		} else if (rc == 0 && !of->ready) {
			of->dirty = 1; /* even empty, it is uploaded at close */
			of->ready = 1;
			/* no stored file's readers read it */
			snprintf(of->loaded, sizeof(of->loaded), "%s",
				 OFILE_NEW);
		} else if (rc == 0 && trunc) {
			rc = ofile_truncate(of, 0);
		}
	}
	h = rc ? NULL : fh_new(of);
	/* An existing stored file opened as it is: a writer only once it
	 * truncates or writes (inbox_open's rules). */
	if (h && (stored ? trunc : !of->has_writer || trunc))
		ofile_set_writer(of);
	if (h) {
		if (!stored || trunc)
			fh_pend(h);
		h->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
		of->writers += h->writable;
		if (h->writable || trunc)
			ofile_note_writer(of);
	}
	pthread_mutex_unlock(&of->lock);
	if (!h) {
		ofile_put(of);
		/* replaced since it was checked (here, or for an opener whose
		 * ofile this shared): checked again */
		if (rc == -EAGAIN && ++tries < 3)
			goto retry;
		return rc == -EAGAIN ? -ESTALE : rc ? rc : -ENOMEM;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	write_only_direct(fi);
	return 0;
}

/* One try of inbox_open: -EAGAIN when the object its attributes were
 * checked for was replaced before its load (the listing is refreshed: try
 * again). */
static int inbox_open_try(const char *rel, struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE;
	int wr = acc != O_RDONLY;
	int trunc = wr && (fi->flags & O_TRUNC);
	char etag[80] = "";
	struct fhandle *h;
	struct ofile *of;
	struct stat st = {0};
	int rc = 0;

	of = ofile_find(rel);
	if (of) {
		/* Checked on the name's row now and on the object the open
		 * file holds (T4). Then, for a truncating open
		 * (FUSE_CAP_ATOMIC_O_TRUNC): the kernel sends no setattr, so
		 * the bits it would clear are cleared here. */
		rc = ofile_may_open(of, rel, acc);
		if (rc == 0 && trunc)
			rc = privs_clear(rel, 0);
		if (rc) {
			ofile_put(of);
			return rc;
		}
		pthread_mutex_lock(&of->lock);
	} else {
		/* The attributes of the object this handle will be pinned
		 * to, checked for the caller: the kernel checked those it
		 * cached (attr_timeout), maybe another object's (G2). */
		rc = open_stat(rel, &st, etag);
		if (rc)
			return rc;
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		rc = may_open(&st, acc);
		if (rc)
			return rc;
		if (trunc) {
			rc = privs_clear(rel, 0);
			if (rc)
				return rc;
		}
		if (!wr) {
			/* Read from the store, nothing spooled. */
			h = fh_new(NULL);
			if (!h)
				return -ENOMEM;
			h->rel = strdup(rel);
			h->size = (uint64_t)st.st_size;
			/* Its reads get the object its attributes were
			 * checked for, never a newer one unchecked (E1). */
			snprintf(h->etag, sizeof(h->etag), "%s", etag);
			if (!h->rel) {
				fh_free(h);
				return -ENOMEM;
			}
			readers_add(h);
			fi->fh = (uint64_t)(uintptr_t)h;
			return 0;
		}
		of = ofile_create(rel, is_temp(rel), &rc);
		if (!of)
			return rc;
		/* another opener's (a race lost): checked on its object
		 * too; else this one is the object checked above */
		rc = ofile_may_hold(of, acc);
		if (rc) {
			pthread_mutex_unlock(&of->lock);
			ofile_put(of);
			return rc;
		}
		ofile_hold_attrs(of, &st);
	}
	/* A second opener waited on of->lock for the first one's download:
	 * a failed download fails every handle. */
	rc = of->failed;
	if (rc == 0 && !of->ready) {
		if (trunc) {
			of->in_store = 1; /* listed above: it exists */
			of->stored_size = (uint64_t)st.st_size;
			/* the file it is: the object checked */
			snprintf(of->loaded, sizeof(of->loaded), "%s", etag);
			rc = ofile_base_head(of, rel, etag);
			if (rc == 0)
				rc = ofile_truncate(of, 0);
		} else {
			rc = load_checked(of, rel, etag);
		}
	} else if (rc == 0 && trunc) {
		rc = ofile_truncate(of, 0);
	}
	h = rc ? NULL : fh_new(of);
	if (h && trunc)
		ofile_set_writer(of);
	if (h) {
		if (trunc)
			fh_pend(h);
		h->writable = wr;
		of->writers += wr;
		if (wr)
			ofile_note_writer(of);
	}
	pthread_mutex_unlock(&of->lock);
	if (!h) {
		ofile_put(of);
		return rc ? rc : -ENOMEM;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	write_only_direct(fi);
	return 0;
}

/* Errors: ENOENT, EISDIR, EACCES (the object's attributes, newer than
 * those the kernel checked, refuse the caller), ESTALE (the object was
 * replaced at every try), EIO, ENOSPC, ENOMEM. */
int inbox_open(const char *rel, struct fuse_file_info *fi)
{
	int rc, tries = 0;

	do
		rc = inbox_open_try(rel, fi);
	while (rc == -EAGAIN && ++tries < 3);
	return rc == -EAGAIN ? -ESTALE : rc;
}

/* truncate(2) by path of rel: one try. A file not open here is checked
 * for the caller on the object it rewrites (the kernel checked attributes
 * it cached, maybe another object's: review-T T6), then rewritten through
 * a spool and committed. -EAGAIN when that object was replaced before its
 * load (the listing is refreshed: try again); else inbox_truncate's. */
static int truncate_path(const char *rel, off_t size)
{
	struct ofile *of;
	struct stat st;
	char etag[80] = "";
	int rc;

	of = ofile_find(rel);
	if (of) {
		/* Open here: the caller is checked all the same (the kernel
		 * checked attributes it cached, maybe older than the row). */
		rc = ofile_may_open(of, rel, O_WRONLY);
		if (rc) {
			ofile_put(of);
			return rc;
		}
		pthread_mutex_lock(&of->lock);
	} else {
		/* A stored file, not open: rewrite it through a spool. */
		rc = open_stat(rel, &st, etag);
		if (rc)
			return rc;
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		rc = may_open(&st, O_WRONLY);
		if (rc)
			return rc;
		of = ofile_create(rel, 0, &rc);
		if (!of)
			return rc;
		rc = ofile_may_hold(of, O_WRONLY);
		if (rc == 0)
			ofile_hold_attrs(of, &st);
		if (rc == 0)
			rc = of->failed;
		if (rc == 0 && !of->ready) {
			if (size == 0) {
				of->in_store = 1;
				of->stored_size = (uint64_t)st.st_size;
				snprintf(of->loaded, sizeof(of->loaded), "%s",
					 etag);
				rc = ofile_base_head(of, rel, etag);
				if (rc == 0)
					of->ready = 1;
			} else {
				rc = load_checked(of, rel, etag);
			}
		}
		if (rc) {
			pthread_mutex_unlock(&of->lock);
			ofile_put(of);
			return rc;
		}
	}
	rc = ofile_truncate(of, (uint64_t)size);
	if (rc == 0) {
		ofile_set_writer(of);
		ofile_note_writer(of);
	}
	/* Not through an open handle: durable now, like any other change. */
	if (rc == 0 && !of->local)
		rc = ofile_commit(of, 0);
	pthread_mutex_unlock(&of->lock);
	ofile_put(of);
	return rc;
}

/* rel is NULL when libfuse has no path for the file (h then given).
 * Errors: ENOENT, EISDIR, EINVAL, EACCES (the object's attributes, newer
 * than those the kernel checked, refuse the caller), ESTALE (no path, or
 * the object was replaced at every try), EIO, ENOMEM. */
int inbox_truncate(const char *rel, off_t size, struct fhandle *h)
{
	struct ofile *of = h ? h->of : NULL;
	int rc, tries = 0;

	if (size < 0)
		return -EINVAL;
	if (of) {
		/* Through an open handle: committed at its close. */
		pthread_mutex_lock(&of->lock);
		rc = ofile_truncate(of, (uint64_t)size);
		if (rc == 0) {
			ofile_set_writer(of);
			fh_pend(h);
		}
		pthread_mutex_unlock(&of->lock);
		return rc;
	}
	if (h && !rel)
		return -EINVAL; /* a read-only handle */
	if (!rel)
		return -ESTALE;
	do
		rc = truncate_path(rel, size);
	while (rc == -EAGAIN && ++tries < 3);
	return rc == -EAGAIN ? -ESTALE : rc;
}

/* Errors: ENOENT, EISDIR, EIO. An unlink that removes nothing in the store
 * (a new file never stored, or a name listed here whose object is gone
 * already: then ENOENT) never ends another mount's live claim on the name,
 * nor its upload: that mount's new file lands there (review-k L7); one of
 * an object in the store (logged or not yet, review-31 R4) ends it. */
int inbox_unlink(const char *rel)
{
	struct actor who;
	struct ofile *of;
	struct stat st;
	int rc, in_store = 1, spared = 0;

	of = ofile_find(rel);
	if (ofile_is_hidden_name(rel)) {
		/* libfuse removes a hidden file when its last handle closes:
		 * it never was in the store. Only a hidden name this
		 * process's hide took: another's (shown as taken, H6) is
		 * that process's to remove (review-34 Z1). */
		int drop = 0;

		if (!hidden_forget(rel, &drop)) {
			if (of)
				ofile_put(of);
			return -EBUSY;
		}
		/* a failed rename's: the file has its name again */
		ofile_node_forget(rel);
		if (of) {
			pthread_mutex_lock(&cfs->lock);
			of->unlinked = 1;
			pthread_mutex_unlock(&cfs->lock);
			ofile_put(of);
		}
		if (drop) /* gone with its last handle */
			attrov_drop_hidden(rel);
		return 0;
	}
	if (of) {
		pthread_mutex_lock(&of->lock);
		in_store = of->in_store && !of->local;
		pthread_mutex_lock(&cfs->lock);
		of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
		pthread_mutex_unlock(&of->lock);
		ofile_put(of);
		if (!in_store) {
			attrov_drop_spare(rel, 0);
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
	rc = reception_remove_spare(cfs->rcp, rel, &who, &spared);
	if (rc == 0 && spared == RECEPTION_NEWER) {
		/* a newer file stored at the name meanwhile (review-34 Z6):
		 * its row stays, shown fresh */
		dcache_remove(rel);
		attrov_reload(rel);
		return 0;
	}
	if (rc == 0 || rc == -ENOENT) {
		dcache_remove(rel);
		if (spared)
			attrov_drop_spare(rel, 0);
		else
			attrov_drop(rel, 0);
	}
	/* rel is also the name of an open file whose publish is deferred
	 * there (another mount's, review-h5 N1): unlinked with it when who
	 * may remove it */
	if (rc == 0 && !spared)
		attrov_unlink_pending(rel, &who);
	return rc;
}
