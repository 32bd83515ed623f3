/* ofile_defer.c - an open new file renamed over a stored object while its
 * writer is open (review-hide H5): its publish is deferred to its close
 * (db_attrs_defer), its attributes meanwhile its own (creator) and the
 * pending row they are recorded in at the name, the name's row its stored
 * object's until the upload is recorded there. See fs.h (attrov_defer,
 * ofile_deferred and their kin; struct ofile's pub_from). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db_attrs.h"
#include "fs.h"
#include "inbox.h"
#include "log.h"
#include "upload.h"

/* fs.h. */
int attrov_set_deferred(const char *rel, const char *pending,
			const struct attrov *cur, struct db_attrs *r,
			unsigned what, const char *op, const struct actor *who)
{
	mode_t m = cur->mode & 07777; /* a new file's: always set */
	int rc;

	if (what & ATTROV_RESET)
		return -EINVAL; /* never a new file's row there */
	if (what & ATTROV_KILLPRIV) {
		m &= ~(mode_t)S_ISUID;
		if ((m & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
			m &= ~(mode_t)S_ISGID;
		r->mode = m & 07777;
	}
	if (r->what & DB_ATTR_OWNER) {
		if (r->uid < 0)
			r->uid = (int64_t)cur->uid;
		if (r->gid < 0)
			r->gid = (int64_t)cur->gid;
	}
	rc = db_attrs_defer_set(cfs->db, cfs->cfg.reception_bucket, rel,
				pending, r, op, who);
	if (rc) {
		log_error("inbox/%s: the change of its open file's attributes "
			  "not recorded: %s",
			  rel, strerror(-rc));
		return rc == -EINPROGRESS ? -EIO : rc;
	}
	ofile_note_attrs(rel, r);
	return 0;
}

void ofile_own_attrs(const struct ofile *of, struct attrov *cur)
{
	memset(cur, 0, sizeof(*cur));
	cur->mode = of->held_set ? of->held_mode : cfs->cfg.file_mode;
	cur->uid = of->held_set ? of->held_uid : cfs->foreign_uid;
	cur->gid = of->held_set ? of->held_gid : cfs->foreign_gid;
	cur->mode &= 07777;
	cur->has_mode = cur->has_owner = 1;
}

int attrov_defer(const char *from, const char *to, const char *token,
		 const char *own1, const char *own2, struct attrov *cur,
		 const char *pending)
{
	struct db_attrs r, got;
	struct actor who;
	int rc;

	attrov_row_of(cur, &r);
	cfs_actor(&who);
	rc = db_attrs_defer(cfs->db, cfs->cfg.reception_bucket, from, to,
			    pending, cfs->cfg.claim_lease_s, token, own1, own2,
			    &r, &who, &got);
	attrov_reload(from);
	if (rc && rc != -EBUSY)
		log_error("inbox/%s: the attributes of its rename over "
			  "inbox/%s not recorded%s: %s",
			  from, to,
			  rc == -EINPROGRESS ? " (or their answer lost)" : "",
			  strerror(-rc));
	/* without a claim: its own row's mode and owner (as every mount
	 * left them: review-34 Z5), and its times where it held none */
	if (rc == 0 && !token) {
		cur->mode = got.mode & 07777;
		cur->uid = (uid_t)got.uid;
		cur->gid = (gid_t)got.gid;
	}
	if (rc == 0 && !token && !cur->has_atime &&
	    (got.what & DB_ATTR_ATIME)) {
		cur->atime = attrs_ns_ts(got.atime_ns);
		cur->has_atime = 1;
	}
	if (rc == 0 && !token && !cur->has_mtime &&
	    (got.what & DB_ATTR_MTIME)) {
		cur->mtime = attrs_ns_ts(got.mtime_ns);
		cur->has_mtime = 1;
	}
	return rc;
}

void attrov_defer_move(const char *key, const char *to, const char *pending)
{
	int rc = db_attrs_defer_move(cfs->db, cfs->cfg.reception_bucket, key,
				     to, pending);

	if (rc)
		log_error("inbox/%s: the pending attributes of its open file "
			  "not moved to inbox/%s (they lapse; its close "
			  "records them): %s",
			  key, to, strerror(-rc));
}

int attrov_defer_undo(const char *key, const char *pending, const char *to,
		      const char *token, int log)
{
	struct actor who;
	int rc;

	cfs_actor(&who);
	rc = db_attrs_defer_undo(cfs->db, cfs->cfg.reception_bucket, key,
				 pending, to, token, cfs->cfg.claim_lease_s,
				 log, &who);
	if (rc)
		log_error("inbox/%s: the pending attributes of its open file "
			  "not made its claim at inbox/%s: %s",
			  key, to, strerror(-rc));
	attrov_reload(to);
	return rc == -EINPROGRESS ? -EIO : rc;
}

char *ofile_deferred(const char *rel, struct attrov *cur)
{
	struct ofile *of;
	char *token = NULL;

	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next)
		if (!of->unlinked && !of->hidden && of->pub_pending &&
		    !strcmp(of->rel, rel))
			break;
	if (of) {
		token = strdup(of->pub_pending);
		*cur = of->creator;
		cur->rel = cur->etag = cur->miss = cur->alias = NULL;
	}
	pthread_mutex_unlock(&cfs->lock);
	return token;
}

int ofile_deferred_stat(struct ofile *of, struct stat *st)
{
	int own;

	pthread_mutex_lock(&cfs->lock);
	own = of->pub_from != NULL;
	if (own) {
		/* a new file's mode and owner are always its creator's */
		st->st_mode =
		    (st->st_mode & S_IFMT) | (of->creator.mode & 07777);
		st->st_uid = of->creator.uid;
		st->st_gid = of->creator.gid;
		if (of->creator.has_mtime)
			st->st_mtim = of->creator.mtime;
		if (of->creator.has_atime)
			st->st_atim = of->creator.atime;
	}
	pthread_mutex_unlock(&cfs->lock);
	return own;
}

void ofile_defer_drop(struct ofile *of, const char *key)
{
	char *pending;

	pthread_mutex_lock(&cfs->lock);
	pending = of->pub_pending;
	of->pub_pending = NULL;
	pthread_mutex_unlock(&cfs->lock);
	if (key && pending)
		attrov_unpend(key, pending);
	free(pending);
}

void ofile_defer_clear(struct ofile *of)
{
	char *from, *pending;

	pthread_mutex_lock(&cfs->lock);
	from = of->pub_from;
	pending = of->pub_pending;
	of->pub_from = of->pub_pending = NULL;
	pthread_mutex_unlock(&cfs->lock);
	free(from);
	free(pending);
}

void attrov_sweep_pending(void)
{
	long rc = db_attrs_sweep_pending(cfs->db, cfs->cfg.reception_bucket);

	if (rc < 0)
		log_warn("pending attributes of publishes a crash cut short: "
			 "not dropped (%s)",
			 strerror((int)-rc));
	else if (rc)
		log_info("pending attributes of publishes a crash cut short: "
			 "%ld dropped",
			 rc);
}

void attrov_unlink_pending(const char *rel, const struct actor *who)
{
	const char *slash = strrchr(rel, '/');
	struct db_unlink_perm perm = {0};
	struct stat dir;
	char *parent;
	int rc, dropped = 0, kept = 0;

	perm.def_uid = cfs->foreign_uid;
	perm.any = !cfs->perm_checks || who->uid == 0;
	if (!perm.any) {
		/* the directory as this mount knows it (the kernel's check
		 * of the unlink used the same) */
		parent =
		    slash ? strndup(rel, (size_t)(slash - rel)) : strdup("");
		rc = parent ? inbox_getattr(parent, &dir) : -ENOMEM;
		free(parent);
		if (rc) {
			/* judged strictly: only the file's owner */
			dir.st_mode = S_IFDIR | S_ISVTX;
			dir.st_uid = (uid_t)-1;
		}
		perm.sticky = (dir.st_mode & S_ISVTX) != 0;
		perm.dir_uid =
		    dir.st_uid == (uid_t)-1 ? -1 : (int64_t)dir.st_uid;
	}
	rc = db_attrs_defer_unlink(cfs->db, cfs->cfg.reception_bucket, rel,
				   &perm, who, &dropped, &kept);
	if (rc)
		log_error("inbox/%s: the pending attributes of an open file "
			  "there not dropped with its unlink (it lands there "
			  "at its close): %s",
			  rel, strerror(-rc));
	else if (dropped || kept)
		log_info("inbox/%s: unlinked with %d open file(s) whose "
			 "publish was deferred there (%d kept: %s may not "
			 "remove them)",
			 rel, dropped, kept, who->user);
}

int attrov_pend_tag(const char *pending, struct upload *up)
{
	char tag[UPLOAD_TAG_HEX];
	int rc;

	upload_tag(up, tag, sizeof(tag));
	if (!tag[0])
		return 0; /* none drawn: shown for no object (upload.c warns) */
	rc =
	    db_attrs_pend_tag(cfs->db, cfs->cfg.reception_bucket, pending, tag);
	if (rc)
		log_error("a publish's pending attributes (%s) not tied to "
			  "its upload: %s",
			  pending, strerror(-rc));
	return rc == -EINPROGRESS ? -EIO : rc;
}

int attrov_defer_has(const char *pending)
{
	int rc =
	    db_attrs_defer_has(cfs->db, cfs->cfg.reception_bucket, pending);

	if (rc < 0)
		log_error("a deferred publish's pending attributes (%s) not "
			  "read: %s",
			  pending, strerror(-rc));
	return rc == -EINPROGRESS ? -EIO : rc;
}
