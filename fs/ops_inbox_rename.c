/* ops_inbox_rename.c - rename(2) and the hiding of open files in inbox/.
 *
 * A rename inside the reception bucket is a server-side copy with its rows
 * (reception_rename); an open file follows its name; a file renamed to a
 * temp name leaves the store, one renamed to a final name is published.
 * libfuse hides an open file that is unlinked or renamed over by renaming
 * it to ".fuse_hidden…" (hard_remove = 0): inbox_hide. Handlers return 0
 * or -errno. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"
#include "inbox.h"
#include "inbox_int.h"
#include "inval.h"
#include "ll.h"
#include "log.h"
#include "names.h"

/* Is the caller of the current request blocked in rename(2) (rather than
 * unlink(2))? libfuse hides an open file the same way for both, from
 * inside the caller's system call: /proc/<pid>/syscall names it. 0 when it
 * cannot be told (not readable: another user, Yama ptrace_scope; a compat
 * system call), so the caller keeps the unlink behaviour. */
static int caller_in_rename(void)
{
	struct fuse_context *ctx = cfs_context();
	char path[64], line[64], *end;
	long nr;
	FILE *f;

	if (!ctx || ctx->pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)ctx->pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	nr = strtol(line, &end, 10);
	if (end == line)
		return 0; /* "running" */
#ifdef SYS_rename
	if (nr == SYS_rename)
		return 1;
#endif
#ifdef SYS_renameat
	if (nr == SYS_renameat)
		return 1;
#endif
#ifdef SYS_renameat2
	if (nr == SYS_renameat2)
		return 1;
#endif
	return 0;
}

/* The target of a rename, hidden by libfuse just before the rename itself
 * (hide_node, then the rename, in one request and so in one thread). The
 * store is not touched until the rename's outcome is known: a rename that
 * fails must leave its target as it was. */
struct hide_pending {
	char *name;	  /* the target's key */
	char *hidden;	  /* the hidden name its open file got */
	struct ofile *of; /* its open file (a reference), or NULL when it
			     had only read-only handles */
};
static __thread struct hide_pending hidden_for_rename;

/* fs.h (hidden_note, hidden_forget). */
struct hidden_name {
	char *name;
	int drop;
	struct hidden_name *next;
};
static struct hidden_name *hidden_names; /* protected by cfs->lock */

void hidden_note(const char *name, int drop)
{
	struct hidden_name *h, *n = NULL;

	pthread_mutex_lock(&cfs->lock);
	for (h = hidden_names; h; h = h->next)
		if (!strcmp(h->name, name))
			break;
	if (h) {
		h->drop = drop;
	} else {
		n = calloc(1, sizeof(*n));
		if (n)
			n->name = strdup(name);
		if (n && n->name) {
			n->drop = drop;
			n->next = hidden_names;
			hidden_names = n;
			n = NULL;
		}
	}
	pthread_mutex_unlock(&cfs->lock);
	if (n) /* no memory: its last close's unlink is refused, its row
		  is left for the sweep */
		free(n);
}

int hidden_forget(const char *name, int *drop)
{
	struct hidden_name **pp, *h = NULL;

	pthread_mutex_lock(&cfs->lock);
	for (pp = &hidden_names; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->name, name)) {
			h = *pp;
			*pp = h->next;
			break;
		}
	pthread_mutex_unlock(&cfs->lock);
	if (!h)
		return 0;
	*drop = h->drop;
	free(h->name);
	free(h);
	return 1;
}

/* The rename that hid hidden_for_rename.name has succeeded (ok: the target's
 * object and row were replaced by it) or failed, or never came (the target is
 * left as it was: its open file gets its name back, so a writer's later
 * close still commits to it). */
static void pending_finish(int ok)
{
	struct ofile *of = hidden_for_rename.of;
	int node_back = 0, drop;

	if (!hidden_for_rename.name)
		return;
	if (of) {
		pthread_mutex_lock(&of->lock);
		if (ok || ofile_unhide(of, hidden_for_rename.hidden,
				       hidden_for_rename.name)) {
			/* Never uploaded again (a streaming upload in
			 * flight is aborted), never listed; nor published
			 * (a deferred publish's pending row goes). */
			ofile_make_local(of);
			ofile_defer_drop(of, hidden_for_rename.name);
		} else if (!ll_active()) {
			/* libfuse's node stays at the hidden name */
			ofile_set_node(of, hidden_for_rename.hidden);
		} else {
			node_back = 1; /* ll.c renames its node back */
		}
		pthread_mutex_unlock(&of->lock);
		ofile_put(of);
	}
	if (!ok) {
		/* The name kept its row: the hidden copy goes now (never
		 * another process's, review-34 Z7), and nothing at the
		 * hidden name is this hide's any more (Z2: another process
		 * may take it before libfuse unlinks it). */
		attrov_drop_hidden(hidden_for_rename.hidden);
		if (node_back) /* no unlink of it comes */
			hidden_forget(hidden_for_rename.hidden, &drop);
		else
			hidden_note(hidden_for_rename.hidden, 0);
	}
	free(hidden_for_rename.name);
	free(hidden_for_rename.hidden);
	memset(&hidden_for_rename, 0, sizeof(hidden_for_rename));
}

/* inbox_hide for a rename over `from` (see hidden_for_rename): the open file
 * moves to the hidden name locally (its readers keep their content), and the
 * store is left alone. Errors: EINVAL, EBUSY (another process's hide took
 * the hidden name: attrov_copy_hidden), EIO, ENOMEM. */
/* Is `from` held open: its open file has a handle beyond the reference
 * the caller just took (of may be NULL), or read-only handles read it from
 * the store? A hidden name is only for open files. */
static int held_open(struct ofile *of, const char *from)
{
	int open = 0;

	if (of) {
		pthread_mutex_lock(&cfs->lock);
		open = of->refs > 1;
		pthread_mutex_unlock(&cfs->lock);
	}
	return open || readers_of(from);
}

/* Caller holds of->lock, of a spool just loaded (from key `from`, ETag
 * of->loaded) for the read-only handles of `from` and hidden. First the
 * attributes its hidden name gets (moved from `from` by the caller) are
 * read now for the object loaded (this mount's may be an older object's);
 * failing, nothing is attached. Then the handles read it, but those opened
 * on another object (another mount replaced it) are stale
 * (readers_attach). With none left to read it, it fails (ESTALE) and is
 * emptied: another object's, kept only for its hidden name (the stale
 * handles' open files), nothing may read it through that name (a reopen
 * by /proc/<pid>/fd). 0 or -errno (attrov_apply_fresh's). */
static int spool_for_readers(struct ofile *of, const char *from)
{
	const char *seen = of->loaded;
	struct stat st;
	int rc;

	inbox_default_stat(&st);
	rc = attrov_apply_fresh(from, &st, seen);
	if (rc)
		return rc;
	ofile_hold_attrs(of, &st); /* an open of the hidden name: T4 */
	if (readers_attach(from, of, seen[0] ? seen : NULL, NULL) == 0) {
		of->failed = -ESTALE;
		if (ftruncate(of->fd, 0) == 0)
			of->size = of->stored_size = 0;
	}
	return 0;
}

static int hide_for_rename(const char *from, const char *to)
{
	char seen[80] = "";
	const char *pin = NULL;
	struct ofile *of;
	int rc = 0, copied = 0;

	hidden_for_rename.name = strdup(from);
	hidden_for_rename.hidden = strdup(to);
	if (!hidden_for_rename.name || !hidden_for_rename.hidden) {
		rc = -ENOMEM;
		goto fail;
	}
	of = ofile_find(from);
	if (of ? !held_open(of, from) : !readers_of(from)) {
		if (of)
			ofile_put(of);
		rc = -EINVAL; /* not open: the name is reserved */
		goto fail;
	}
	/* The name keeps its row until the rename's outcome (review-k L3:
	 * other mounts show the target with it meanwhile; L5: a crash
	 * leaves it there); the hidden name gets a copy, first, before
	 * anything is changed: libfuse's getattr found the name free, but
	 * another process's hide may have copied its row there since
	 * (review-34 Z7). Then this hide fails (EBUSY, so does the rename)
	 * and nothing changed: its file never shows the other's row. */
	rc = attrov_copy_hidden(from, to);
	if (rc) {
		if (of)
			ofile_put(of);
		goto fail;
	}
	copied = 1;
	if (of) {
		pthread_mutex_lock(&of->lock);
		rc = of->failed;
		if (rc == 0)
			ofile_hide(of, to); /* upload kept until the outcome */
		snprintf(seen, sizeof(seen), "%s", of->loaded);
		pin = seen[0] ? seen : NULL;
		if (rc == 0)
			readers_attach(from, of, pin, of->committed);
		pthread_mutex_unlock(&of->lock);
		if (rc) {
			ofile_put(of);
			goto fail;
		}
		hidden_for_rename.of = of; /* keeps the reference */
	} else {
		/* Only read-only handles: they keep the content they opened
		 * (the same as the store's if the rename fails), when it is
		 * the object at the key now (else they are stale). */
		of = ofile_create(to, 1, &rc);
		if (!of)
			goto fail;
		rc = of->failed ? of->failed : ofile_load(of, from, NULL);
		of->in_store = 0;
		if (rc == -ENOENT) {
			/* Gone from the store (removed on another mount): the
			 * rename goes on over a free name, and the readers,
			 * opened on an object that is no more, are stale. */
			ofile_hide(of, to);
			of->failed = -ESTALE;
			readers_attach(from, of, "-", NULL);
			rc = 0;
		} else if (rc == 0) {
			ofile_hide(of, to);
			rc = spool_for_readers(of, from);
		}
		if (rc) {
			pthread_mutex_lock(&cfs->lock);
			of->unlinked = 1;
			pthread_mutex_unlock(&cfs->lock);
		}
		pthread_mutex_unlock(&of->lock);
		if (rc) {
			ofile_put(of);
			goto fail;
		}
	}
	if (!hidden_for_rename.of)
		ofile_put(of);
	hidden_note(to, 1);
	return 0;
fail:
	if (copied) /* the hide failed: its copy goes (only its own) */
		attrov_drop_hidden(to);
	free(hidden_for_rename.name);
	free(hidden_for_rename.hidden);
	memset(&hidden_for_rename, 0, sizeof(hidden_for_rename));
	return rc;
}

/* libfuse (hard_remove=0) hides an open file on unlink, or as the target
 * of a rename, by renaming it to the hidden name `to`. For an unlink (or
 * when the caller's system call cannot be told) this is the unlink of
 * `from` for the store (object deleted, row marked removed), while the
 * open file lives on locally under `to` with the content its handles
 * opened. For a rename, see hide_for_rename. Errors: EINVAL (not open:
 * the name is reserved), EBUSY (a rename's: hide_for_rename), EIO,
 * ENOMEM. */
static int inbox_hide(const char *from, const char *to)
{
	struct actor who;
	struct ofile *of;
	int rc = 0, in_store, deferred = 0, copied = 0;

	if (caller_in_rename())
		return hide_for_rename(from, to);
	of = ofile_find(from);
	if (of ? !held_open(of, from) : !readers_of(from)) {
		if (of)
			ofile_put(of);
		return -EINVAL; /* not open: the name is reserved */
	}
	if (of) {
		pthread_mutex_lock(&of->lock);
		deferred = of->pub_from != NULL;
		pthread_mutex_unlock(&of->lock);
	}
	if (!deferred) {
		/* The hidden name gets a copy of from's row first, as for
		 * a rename (hide_for_rename): taken by another process's
		 * hide since libfuse's getattr, the unlink fails (EBUSY)
		 * with nothing changed (review-34 Z7). from's row goes
		 * once the object is removed. */
		rc = attrov_copy_hidden(from, to);
		if (rc) {
			if (of)
				ofile_put(of);
			return rc;
		}
		copied = 1;
	}
	if (!of) {
		/* Only read-only handles: keep the content they opened,
		 * when it is the object at the key now (else they are
		 * stale: another mount replaced it). */
		of = ofile_create(to, 1, &rc);
		if (!of)
			goto out;
		rc = of->failed ? of->failed : ofile_load(of, from, NULL);
		of->in_store = 0;
		if (rc == 0) {
			cfs_actor(&who);
			rc = reception_remove(cfs->rcp, from, &who);
		}
		if (rc == 0) {
			ofile_hide(of, to);
			/* Removed: the hide stands. Without the attributes
			 * of what it holds, nothing reads it (fails closed:
			 * its readers get EIO). */
			if (spool_for_readers(of, from) != 0) {
				of->failed = -EIO;
				readers_attach(from, of, NULL, NULL);
			}
		} else {
			pthread_mutex_lock(&cfs->lock);
			of->unlinked = 1;
			pthread_mutex_unlock(&cfs->lock);
		}
		pthread_mutex_unlock(&of->lock);
	} else {
		pthread_mutex_lock(&of->lock);
		rc = of->failed;
		in_store = of->in_store && !of->local;
		deferred = of->pub_from != NULL;
		/* Its content is the object it was loaded from (and this
		 * mount's writes): readers opened on another are stale. */
		if (rc == 0 && in_store) {
			cfs_actor(&who);
			rc = reception_remove(cfs->rcp, from, &who);
		}
		if (rc == 0) {
			/* Never uploaded again (a streaming upload in flight
			 * is aborted), never listed. */
			ofile_make_local(of);
			ofile_hide(of, to);
			readers_attach(from, of,
				       of->loaded[0] ? of->loaded : NULL,
				       of->committed);
		}
		pthread_mutex_unlock(&of->lock);
	}
	/* A file of a deferred publish (rename_defer): from's row is its
	 * removed object's, not this file's (which keeps its own in
	 * memory); it goes, and its pending row with it. */
	if (rc == 0 && deferred) {
		dcache_remove(from);
		attrov_drop(from, 0);
		pthread_mutex_lock(&of->lock);
		/* its own pending row: a live one outlives the name's
		 * drop (db_attrs_drop, review-h5 N1) */
		ofile_defer_drop(of, from);
		pthread_mutex_unlock(&of->lock);
	} else if (rc == 0) {
		dcache_remove(from);
		/* its copy is at the hidden name; another mount's live
		 * claim stays, as it did from the row's move */
		attrov_drop_spare(from, 0);
	}
	if (rc == 0)
		hidden_note(to, 1);
	ofile_put(of);
out:
	/* failed, or a deferred publish's file now (its own row is in
	 * memory): the copy goes (only this hide's) */
	if (copied && (rc || deferred))
		attrov_drop_hidden(to);
	return rc;
}

/* A stored file gets a temp name: it leaves the store (row marked removed)
 * and lives on as a local file. */
static int rename_stored_to_temp(const char *from, const char *to)
{
	char seen[80] = "";
	struct actor who;
	struct ofile *of;
	struct stat st;
	int rc;

	inbox_default_stat(&st);
	ofile_drop_name(to);
	of = ofile_create(to, 1, &rc);
	if (!of)
		return rc;
	rc = of->failed ? of->failed : ofile_load(of, from, NULL);
	of->in_store = 0;
	if (rc == 0) {
		/* The attributes that go with it to the temp name (the
		 * caller's attrov_move) are those of the object loaded, read
		 * now: this mount's may be an older object's (another mount
		 * replaced it), looser than the content's. */
		rc = attrov_apply_fresh(from, &st, of->loaded);
		snprintf(seen, sizeof(seen), "%s", of->loaded);
	}
	if (rc == 0)
		ofile_hold_attrs(of, &st); /* an open of the temp name: T4 */
	if (rc == 0) {
		cfs_actor(&who);
		rc = reception_remove(cfs->rcp, from, &who);
	}
	if (rc) {
		pthread_mutex_lock(&cfs->lock);
		of->unlinked = 1;
		pthread_mutex_unlock(&cfs->lock);
	}
	pthread_mutex_unlock(&of->lock);
	if (rc == 0) {
		readers_attach(from, of, seen, NULL);
		dcache_remove(from);
	}
	ofile_put(of);
	return rc;
}

/* Caller holds of->lock. A rename here copied the object whose ETag is src
 * to of's new name, answering etag. When src is the object of was loaded
 * from or last committed (not another mount's replacement of it), the copy
 * is of's stored file: it becomes its last commit. A copy's ETag may differ
 * from its source's (MinIO's CopyObject of a multipart object, a multipart
 * copy in other parts than the upload's); a reader refused its old ETag is
 * rechecked onto the copy's (reader_recheck), and stays of's reader when
 * the name leaves the store (readers_attach). */
static void ofile_copied(struct ofile *of, const char *src, const char *etag)
{
	if (!src || !etag || !src[0] || !etag[0])
		return;
	if (strcmp(src, of->loaded) && strcmp(src, of->committed))
		return;
	snprintf(of->committed, sizeof(of->committed), "%s", etag);
}

/* rename_dir, the open files under from/ (open[n_open]) locked by the
 * caller. */
static int rename_dir_locked(const char *from, const char *to,
			     struct ofile **open, size_t n_open)
{
	struct s3_list_result res = {0};
	char *fp = NULL, *nk = NULL, *ok = NULL, etag[80] = "";
	struct actor who;
	struct stat st;
	size_t fl, i, j;
	int rc;

	if (asprintf(&fp, "%s/", from) < 0)
		return -ENOMEM;
	fl = strlen(fp);
	rc = s3_list_all(cfs->s3, cfs->cfg.reception_bucket, fp, NULL, 0, &res);
	/* Every object is logged before any moves: one that cannot be yet
	 * fails the rename before it starts, not halfway. */
	if (rc == 0)
		rc = reception_log_listed(cfs->rcp, res.entries, res.n_entries);
	/* The directory's own row (it may have no marker). */
	if (rc == 0)
		rc = attrov_copy(from, to, NULL);
	cfs_actor(&who);
	for (i = 0; rc == 0 && i < res.n_entries; i++) {
		const struct s3_list_entry *e = &res.entries[i];

		free(nk);
		if (asprintf(&nk, "%s/%s", to, e->key + fl) < 0) {
			nk = NULL;
			rc = -ENOMEM;
			break;
		}
		/* Per object: its attributes are copied first, the object
		 * moved, then the old row dropped, so an object that moved
		 * (a partial rename, a crash) always has its attributes. */
		if (e->key[strlen(e->key) - 1] == '/') {
			/* A directory marker "d/": the name is "d". */
			nk[strlen(nk) - 1] = '\0';
			ok = strndup(e->key, strlen(e->key) - 1);
			rc = ok ? names_check_relpath(nk, 1) : -ENOMEM;
			if (rc == 0)
				rc = attrov_copy(ok, nk, NULL);
			if (rc == 0)
				rc = inbox_getattr(ok, &st);
			strcat(nk, "/");
			if (rc == 0)
				rc = inbox_marker_put(nk, &st);
			if (rc == 0)
				rc = s3_delete(
				    cfs->s3, cfs->cfg.reception_bucket, e->key);
		} else {
			struct attrov_undo undo = {0};

			ok = strdup(e->key);
			rc = ok ? names_check_relpath(nk, 0) : -ENOMEM;
			if (rc == 0)
				rc = attrov_copy_rename(ok, nk, &undo);
			etag[0] = '\0';
			if (rc == 0) {
				rc =
				    reception_rename(cfs->rcp, e->key, nk,
						     e->size, &who, etag, NULL);
				/* Nothing landed at nk: no row of ok's
				 * there for a later object to inherit. */
				if (rc && !etag[0])
					attrov_undo_copy(nk, &undo);
				else if (rc)
					attrov_renamed(ok, nk, etag, e->etag);
			}
			if (rc == 0) {
				attrov_bind(nk, etag, e->etag);
				readers_copied(ok, e->etag, etag);
				for (j = 0; j < n_open; j++) {
					int at;

					pthread_mutex_lock(&cfs->lock);
					at = !strcmp(open[j]->rel, ok);
					pthread_mutex_unlock(&cfs->lock);
					if (at)
						ofile_copied(open[j], e->etag,
							     etag);
				}
			}
			attrov_undo_free(&undo);
		}
		/* A directory's row stays until every object under it moved
		 * (a partial rename leaves both directories with theirs). */
		if (rc == 0 && e->key[strlen(e->key) - 1] != '/')
			attrov_drop(ok, 0);
		free(ok);
		ok = NULL;
	}
	free(nk);
	free(fp);
	s3xml_list_free(&res);
	if (rc) {
		attrov_forget_tree(from);
		attrov_forget_tree(to);
	}
	if (rc == 0) {
		/* Open files follow; their basenames, hence whether they
		 * are local, do not change. */
		ofile_rebase(from, to);
		readers_rename(from, to);
		/* The files under from/ took theirs along; the rows of the
		 * directories go now. Another mount's new file under from/
		 * keeps its claim (review-31 R3): it lands at its name there
		 * at its close, and nobody else may create that name first. */
		attrov_drop_spare(from, 1);
		attrov_forget_tree(from);
		attrov_forget_tree(to);
		dcache_remove(from);
		dcache_upsert(to, 1, 0, time(NULL), NULL);
	}
	dcache_invalidate_all();
	return rc;
}

/* The open files under directory dir (names "dir/..."), each with a
 * reference, in an array the caller frees. *n = 0 and NULL when there are
 * none; NULL with *n = 1 on ENOMEM. */
static struct ofile **ofiles_under(const char *dir, size_t *n)
{
	size_t dl = strlen(dir), cap = 0, k = 0;
	struct ofile **v = NULL, *of;

	*n = 0;
	pthread_mutex_lock(&cfs->lock);
	for (of = cfs->ofiles; of; of = of->next)
		cap += !of->unlinked && !strncmp(of->rel, dir, dl) &&
		       of->rel[dl] == '/';
	if (cap)
		v = calloc(cap, sizeof(*v));
	for (of = cfs->ofiles; v && of; of = of->next) {
		if (of->unlinked || strncmp(of->rel, dir, dl) ||
		    of->rel[dl] != '/')
			continue;
		of->refs++;
		v[k++] = of;
	}
	pthread_mutex_unlock(&cfs->lock);
	*n = cap && !v ? 1 : k;
	return v;
}

/* Serialises directory renames: each holds the locks of several open
 * files at once (taken in list order, released before the next one). */
static pthread_mutex_t dir_rename_lock = PTHREAD_MUTEX_INITIALIZER;

/* Renames every object under from/ to to/ (server-side). The open files
 * under from/ are locked first and until they are rebased: a commit in
 * flight (which uploads under the key it read) ends before the listing,
 * and none starts under an old key after it. (libfuse's path locks give
 * the same today: a rename waits for the requests on paths beneath it;
 * this keeps it true of any caller, e.g. with nullpath_ok.) */
static int rename_dir(const char *from, const char *to)
{
	struct ofile **open;
	size_t n_open, j;
	int rc;

	pthread_mutex_lock(&dir_rename_lock);
	open = ofiles_under(from, &n_open);
	if (!open && n_open) {
		pthread_mutex_unlock(&dir_rename_lock);
		return -ENOMEM;
	}
	for (j = 0; j < n_open; j++)
		pthread_mutex_lock(&open[j]->lock);
	rc = rename_dir_locked(from, to, open, n_open);
	for (j = 0; j < n_open; j++) {
		pthread_mutex_unlock(&open[j]->lock);
		ofile_put(open[j]);
	}
	free(open);
	pthread_mutex_unlock(&dir_rename_lock);
	return rc;
}

/* Caller holds of->lock. An open file whose writer's close stores it
 * (of->pending) under a free final name `to` (taken: not free), and that
 * holds no claim on its name (it was stored before, and a temp name made it
 * local), claims `to` before it takes the name, as a create would
 * (review-held5 N3): its own row at `from` (bound to its object) moves
 * there, logged as a move, as this mount's claim (attrov_move_claim);
 * without one, the claim has the owner and mode of what it holds. Another
 * mount's create there is then refused or checked against it until that
 * close. A row at `to` that is no live claim is taken only once the store
 * has nothing there (an object lands before its row: review-stale2 R2).
 * sf: its attributes (when nothing is held). *token: the claim taken
 * (NULL: none needed), *cl its attributes. 0 or -errno: EBUSY (another
 * mount's create claimed `to`), ESTALE (a file was stored there: the
 * kernel looks again), EISDIR, EIO, ENOMEM. */
static int rename_claim(struct ofile *of, const char *from, const char *to,
			int taken, const struct stat *sf, char **token,
			struct attrov *cl)
{
	struct db_claim held = {0};
	struct attrov in = {0};
	int rc = 0, take = 0, tries;

	*token = NULL;
	if (taken || is_temp(to) || of->failed || of->pending <= 0 ||
	    of->attrs_unbound || (!of->local && of->in_store))
		return 0;
	pthread_mutex_lock(&cfs->lock);
	in.mode = of->held_set ? of->held_mode : sf->st_mode & 07777;
	in.uid = of->held_set ? of->held_uid : sf->st_uid;
	in.gid = of->held_set ? of->held_gid : sf->st_gid;
	pthread_mutex_unlock(&cfs->lock);
	*token = attrov_claim_token();
	if (!*token)
		return -ENOMEM;
	for (tries = 0; tries < 4; tries++) {
		rc = attrov_move_claim(from, to, of->loaded, of->committed, &in,
				       take, *token, cl, &held);
		if (rc != -EEXIST)
			break;
		if (held.found && held.live) {
			rc = -EBUSY; /* another mount's new file there */
			break;
		}
		take = 0;
		if (held.found) {
			rc = inbox_stored_kind_now(to);
			if (rc > 0)
				rc = rc == 2 ? -EISDIR : -ESTALE;
			if (rc)
				break;
			/* nothing there: a stale row, taken next round if it is
			 * still the one seen (held, read by the next call) */
			take = 1;
		}
		rc = -EBUSY;
	}
	db_claim_free(&held);
	if (rc) {
		free(*token);
		*token = NULL;
	}
	return rc;
}

/* Caller holds of->lock. After the rename (rc: its outcome) of an open
 * file that claimed `to` (rename_claim; token is freed or handed on):
 * renamed, the claim is the file's row, bound to its object by its commit
 * as a new file's; failed, the row goes back to `from` (the claim on it
 * lapses). */
static void rename_claim_done(struct ofile *of, const char *from,
			      const char *to, int rc, char *token,
			      const struct attrov *cl, int *attrs_moved)
{
	if (rc) {
		attrov_move(to, from, 0, NULL, NULL);
		free(token);
		return;
	}
	pthread_mutex_lock(&cfs->lock);
	of->creator = *cl;
	of->attrs_unbound = 1; /* its claim, renewed */
	free(of->claim);
	of->claim = token;
	pthread_mutex_unlock(&cfs->lock);
	*attrs_moved = 1;
}

/* The store step of a stored file's rename (rename_open, rename_stored)
 * with its attributes: from's are copied to `to` first (attrov_copy_rename:
 * pending there while a target keeps its own until the copy's rows are
 * recorded), then the server-side copy and its rows (reception_rename).
 * On failure, if nothing landed at `to`, to's rows are put back as they
 * were; a copy that landed keeps from's attributes (it has from's
 * content). etag[80] gets the copy's ETag, old[80] the ETag `from` was
 * shown with (empty when unknown), src[80] the source object's the rename
 * copied. 0 or the -errno of either step. */
static int rename_copy_with_attrs(const char *from, const char *to,
				  uint64_t size, const struct actor *who,
				  char *etag, char *old, char *src)
{
	struct attrov_undo undo = {0};
	int rc;

	inbox_shown_etag(from, old);
	rc = attrov_copy_rename(from, to, &undo);
	if (rc)
		return rc;
	rc = reception_rename(cfs->rcp, from, to, size, who, etag, src);
	if (rc) {
		if (!etag[0])
			attrov_undo_copy(to, &undo);
		else /* the copy landed: it has from's content */
			attrov_renamed(from, to, etag, old[0] ? old : NULL);
	}
	attrov_undo_free(&undo);
	return rc;
}

/* The row move of rename_pending lost its connection at COMMIT: did it
 * commit? from had the row (the file's claim) and a committed move took it
 * away; the read waits for the move's transaction if the server still
 * holds it (review-31 R5: an EIO after a move that committed left the
 * file at from and its row over to's). 0 (it moved) or -EIO (it did not,
 * or the database cannot tell now: nothing is renamed). */
static int move_settled(const char *from)
{
	int found = 1, rc;

	rc = db_attrs_settled(cfs->db, cfs->cfg.reception_bucket, from, &found);
	if (rc || found) {
		log_error("rename of inbox/%s: its attributes' move %s", from,
			  rc ? "may have committed (the database cannot tell "
			       "now): refused"
			     : "did not commit: refused");
		return -EIO;
	}
	return 0; /* attrov_move reloaded both names from the database */
}

/* Caller holds of->lock. rename_pending's row step for a new file (its
 * claim) renamed over a stored object at `to` (review-hide H5): its
 * attributes become to's pending row and its claim at `from` goes, in one
 * transaction (attrov_defer), to's row staying to's object's until the
 * file's close records its upload there (ofile_commit_key publishes it
 * then). of->pub_from and of->pub_pending are set here (before of takes
 * the name: from then on this mount shows and changes the file's own
 * attributes there). 0 or -errno (EBUSY: another mount's new file at
 * `to`; EIO; ENOMEM). */
static int rename_defer(struct ofile *of, const char *from, const char *to)
{
	char *token = NULL, *pending = attrov_claim_token();
	char *pfrom = strdup(from);
	struct attrov cur;
	int rc, claimed;

	pthread_mutex_lock(&cfs->lock);
	claimed = of->attrs_unbound && of->claim;
	if (claimed) {
		token = strdup(of->claim);
		cur = of->creator;
	} else {
		/* A file stored before (no claim: review-h5 N6): its own
		 * attributes as it holds them, where its own row at from
		 * is gone (db_attrs_defer takes that row's, as every mount
		 * left them: review-34 Z5); never those of another file's
		 * row there (review n17 X2, review-34 Z3). */
		ofile_own_attrs(of, &cur);
	}
	pthread_mutex_unlock(&cfs->lock);
	if ((claimed && !token) || !pending || !pfrom) {
		rc = -ENOMEM;
		goto out;
	}
	/* its own row at from: bound to one of its own objects */
	rc = attrov_defer(from, to, token, *of->loaded ? of->loaded : NULL,
			  *of->committed ? of->committed : NULL, &cur, pending);
	if (rc == -EINPROGRESS)
		rc = move_settled(from); /* committed: its row went */
	if (rc)
		goto out;
	pthread_mutex_lock(&cfs->lock);
	of->pub_from = pfrom;
	of->pub_pending = pending;
	if (!claimed)
		of->creator = cur; /* what it shows and publishes now */
	pthread_mutex_unlock(&cfs->lock);
	pfrom = pending = NULL;
out:
	free(token);
	free(pending);
	free(pfrom);
	return rc;
}

/* Caller holds of->lock. rename_defer undone (the rename failed after
 * it): the file's attributes are its claim at `from` again. */
static void rename_defer_undo(struct ofile *of, const char *from,
			      const char *to)
{
	char *token;

	pthread_mutex_lock(&cfs->lock);
	token = of->attrs_unbound && of->claim ? strdup(of->claim) : NULL;
	pthread_mutex_unlock(&cfs->lock);
	if (of->pub_pending) /* no claim: its row there, unclaimed */
		attrov_defer_undo(to, of->pub_pending, from, token, 0);
	free(token);
	ofile_defer_clear(of);
}

/* Caller holds of->lock. rename_open of a file never stored (or local)
 * whose writer's close commits it under `to` (the rest as for
 * rename_open). Its row (a new file's claim) moves first, checked in the
 * move's transaction, and only then the file: another mount's live claim
 * at `to`, made after rename_entry looked (its new file is written there:
 * review-k L4), fails the rename (EBUSY) with nothing moved, the file
 * under `from` with its row (EEXIST with RENAME_NOREPLACE in flags). Over
 * a stored object (to_exists) a new file's claim is not moved there: its
 * publish is deferred to its close (rename_defer, H5), to's row staying
 * its object's until then, whatever happens before (a crash).
 * *attrs_moved: set on entry when its row is at `to` already
 * (rename_claim's claim), set here when moved. 0 or -errno: EBUSY,
 * EEXIST, EIO, ENOMEM. */
static int rename_pending(struct ofile *of, const char *from, const char *to,
			  int to_exists, uint64_t to_size,
			  const struct seen_obj *to_seen, unsigned int flags,
			  int *attrs_moved)
{
	int moved = 0, defer = 0, rc;

	if (!*attrs_moved) {
		/* Every file whose row at `from` is its own (a new file's
		 * claim, or a stored file's row that followed it to a temp
		 * name: review-h5 N6) over a stored object. */
		pthread_mutex_lock(&cfs->lock);
		defer = to_exists && !of->pub_from;
		pthread_mutex_unlock(&cfs->lock);
		if (defer) {
			rc = rename_defer(of, from, to);
		} else {
			rc = attrov_move(from, to, 0, NULL, NULL);
			if (rc == -EINPROGRESS)
				rc = move_settled(from);
		}
		if (rc == -EBUSY && (flags & RENAME_NOREPLACE))
			rc = -EEXIST; /* claimed meanwhile: it exists */
		if (rc)
			return rc;
		moved = 1;
	}
	rc = ofile_rename_uncommitted(of, to, to_exists, to_size, to_seen);
	if (rc && moved && defer) /* nothing changed: the row goes back */
		rename_defer_undo(of, from, to);
	else if (rc && moved)
		attrov_move(to, from, 0, NULL, NULL);
	else if (rc == 0)
		*attrs_moved = 1;
	return rc;
}

/* Caller holds of->lock. A file of a deferred publish (rename_defer)
 * at `from` got the temp name `to` (its stored object, the one the publish
 * was to replace, removed from `from`): it is never published; its
 * attributes are its claim at `to` (logged 'move'), and from's row (the
 * removed object's) goes. *attrs_moved set. */
static void rename_defer_end(struct ofile *of, const char *from, const char *to,
			     int *attrs_moved)
{
	char *token;

	pthread_mutex_lock(&cfs->lock);
	token = of->attrs_unbound && of->claim ? strdup(of->claim) : NULL;
	pthread_mutex_unlock(&cfs->lock);
	/* no claim (a file stored before): its row there, unclaimed */
	attrov_defer_undo(from, of->pub_pending, to, token, 1);
	free(token);
	ofile_defer_clear(of);
	attrov_drop(from, 0);
	*attrs_moved = 1;
}

/* An open (or local) file is renamed. Caller holds of->lock.
 *
 * Only writers commit (SPEC §2): a file changed through a handle that is
 * still open and owes its close a commit (of->pending) is not committed
 * here; that close uploads and logs it under `to`, once, with its final
 * content. A stored earlier version moves with the name (server-side, its
 * rows as for any rename). When no such handle remains (a closed local
 * file, only readers or unchanged writable handles open), what must be
 * stored is stored now, under `to`, and on failure the file keeps `from`:
 * the commit obligation is never lost. to_exists/to_size: `to` names a
 * stored object of that size, which the file replaces. flags: rename's.
 * *attrs_moved: as for rename_pending; set when from's row was moved to
 * `to` here (else the caller moves it after). */
static int rename_open(struct ofile *of, const char *from, const char *to,
		       int to_exists, uint64_t to_size,
		       const struct seen_obj *to_seen, unsigned int flags,
		       int *attrs_moved)
{
	int pending = of->pending > 0, rc;
	uint64_t size = of->size;
	struct actor who;
	char etag[80] = "", old[80] = "", src[80] = "";

	if (of->failed)
		return of->failed;
	cfs_actor(&who);
	if (is_temp(to)) {
		/* Leaves the store, lives on locally under the temp name:
		 * nothing is committed, a stored version is removed. */
		if (!of->local && of->in_store) {
			rc = reception_remove(cfs->rcp, from, &who);
			if (rc)
				return rc;
		}
		/* Its readers (opened before this open file) take its
		 * content if it was loaded from their object. */
		rc = ofile_rename_uncommitted(of, to, 0, 0, NULL);
		if (rc == 0)
			readers_attach(from, of,
				       of->loaded[0] ? of->loaded : NULL,
				       of->committed);
		if (rc == 0 && of->pub_from)
			rename_defer_end(of, from, to, attrs_moved);
		return rc;
	}
	if (of->local || !of->in_store) {
		/* Uploaded and logged under `to` by the writer still open,
		 * else now (failing: still `from`); never stored: nothing
		 * to move in the store. ofile_publish moves its attributes
		 * itself, before its upload binds them. */
		if (pending)
			return rename_pending(of, from, to, to_exists, to_size,
					      to_seen, flags, attrs_moved);
		rc = ofile_publish(of, to, to_exists);
		*attrs_moved = rc == 0;
		return rc;
	}
	if (of->dirty && !pending) {
		/* Written by handles that are all closed (their close
		 * failed): stored now, then renamed. */
		rc = ofile_commit(of, 0);
		if (rc)
			return rc;
		/* of's size, or the store's object that replaced it
		 * meanwhile (ofile_commit): what is there moves. */
		size = of->stored_size;
	} else if (of->dirty) {
		/* The stored earlier version moves; the writer's close
		 * overwrites it under `to`. */
		size = of->stored_size;
	}
	/* Its attributes as for a closed file's (rename_stored, E4): copied
	 * first (pending at a target that keeps its own until the copy's
	 * rows are recorded, in their transaction), so a crash anywhere
	 * after the copy's rows never shows it with the target's row or the
	 * defaults. */
	rc = rename_copy_with_attrs(from, to, size, &who, etag, old, src);
	if (rc)
		return rc;
	readers_copied(from, src, etag);
	readers_rename(from, to);
	ofile_copied(of, src, etag);
	dcache_upsert(to, 0, size, of->mtime.tv_sec, etag);
	attrov_bind(to, etag, old[0] ? old : NULL);
	attrov_copy_done(from, src);
	*attrs_moved = 1;
	/* A deferred publish (the stored object is the one it replaces):
	 * its pending row follows it (its close publishes at `to`). */
	if (of->pub_pending)
		attrov_defer_move(from, to, of->pub_pending);
	rc = ofile_rename_uncommitted(of, to, 0, 0, NULL);
	if (rc)
		log_error("%s: renamed in the store, not in memory: %s", to,
			  strerror(-rc));
	return rc;
}

/* A stored file that is not open gets a final name (sf: its attributes):
 * a server-side copy with its rows (reception_rename). Its attributes are
 * copied to `to` first (pending there while a target keeps its own
 * until the copy's rows are recorded: attrov_copy_rename) and dropped
 * from `from` once it moved, so a crash or a lost database in between
 * never shows it under `to` with the defaults (review-perm2 O1), nor a
 * target whose copy never landed with from's (R5). If nothing landed at
 * `to`, to's rows are put back as they were: no row of from's stays there
 * for a later object with the same ETag, and a target keeps its own. A
 * copy that landed keeps from's attributes (it has from's content)
 * whatever the rest of the rename did. Errors: EIO (the database or the
 * store failed), ENOMEM, and the store's other errors as common/s3err.c
 * maps them. */
static int rename_stored(const char *from, const char *to,
			 const struct stat *sf)
{
	char etag[80] = "", old[80] = "", src[80] = "";
	struct actor who;
	int rc;

	cfs_actor(&who);
	rc = rename_copy_with_attrs(from, to, (uint64_t)sf->st_size, &who, etag,
				    old, src);
	if (rc)
		return rc;
	readers_copied(from, src, etag);
	readers_rename(from, to);
	dcache_upsert(to, 0, (uint64_t)sf->st_size, sf->st_mtime, etag);
	dcache_remove(from);
	attrov_bind(to, etag, old[0] ? old : NULL);
	attrov_copy_done(from, src);
	return 0;
}

/* Errors: ENOENT, EEXIST (RENAME_NOREPLACE), EINVAL, EISDIR, ENOTDIR, EBUSY
 * (another upload replaced the source during the rename: not renamed; or
 * another mount's new file is being written at `to`), ESTALE,
 * ENOTEMPTY, ENAMETOOLONG, EIO. */
static int rename_entry(const char *from, const char *to, unsigned int flags)
{
	struct seen_obj to_seen = {0};
	struct attrov cl = {0};
	struct stat sf, st, now;
	struct ofile *of;
	char shown[80], *token = NULL;
	int rc, to_exists, listed, claimed = 0, attrs_moved = 0;

	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	if (ofile_is_hidden_name(from))
		return -EINVAL;
	if (ofile_is_hidden_name(to))
		return flags ? -EINVAL : inbox_hide(from, to);
	rc = check_name(to);
	if (rc)
		return rc;
	rc = inbox_getattr(from, &sf);
	if (rc)
		return rc;
	if (!strcmp(from, to))
		return 0;
	to_exists = inbox_getattr(to, &st) == 0;
	/* A stored file this mount lists (not open here) may be gone, or be
	 * another object, since the listing (another mount's, a foreign
	 * upload): the rename checks, and replaces, the object there now
	 * (review-held5 N2, review-held6 P1). */
	listed = to_exists && !S_ISDIR(st.st_mode) && !is_temp(to) &&
		 inbox_shown_etag(to, shown) != NULL;
	if ((!to_exists || listed) && !is_temp(to)) {
		/* This mount's listing may predate it (another mount's
		 * file, a foreign upload): the store says. */
		rc = inbox_stored_attrs(to, &now, &to_seen);
		if (rc == 0)
			st = now;
		if (rc == 0 && listed && strcmp(shown, to_seen.etag)) {
			dcache_upsert(to, 0, (uint64_t)st.st_size,
				      to_seen.mtime, to_seen.etag);
			inval_inbox(to);
		}
		if (rc == -ENOENT && listed) {
			dcache_remove(to);
			inval_inbox(to);
			to_exists = 0;
		}
		if (rc == -ENOENT) {
			rc = inbox_dir_stored_now(to);
			if (rc == 1)
				rc = inbox_getattr(to, &st);
			else if (rc == 0)
				rc = -ENOENT;
		}
		if (rc == 0)
			to_exists = 1;
		else if (rc != -ENOENT)
			return rc;
	}
	if (!to_exists) {
		/* Another mount's new file, not stored yet (a temp name's
		 * too): only its claim in the database shows it. */
		rc = inbox_claimed_attrs(to, &st);
		if (rc < 0)
			return rc;
		claimed = rc;
	}
	if (to_exists && hidden_for_rename.name &&
	    !strcmp(hidden_for_rename.name, to)) {
		struct stat hs;

		/* An open target hidden for this rename took its attributes
		 * to the hidden name (hide_for_rename): it is checked with
		 * them, not with the defaults its name shows meanwhile. */
		rc = inbox_getattr(hidden_for_rename.hidden, &hs);
		/* its row as the database has it now (this mount's copy may
		 * be an older object's) */
		if (rc == 0)
			rc = attrov_apply_fresh(hidden_for_rename.hidden, &hs,
						NULL);
		if (rc)
			return rc;
		st.st_mode = hs.st_mode;
		st.st_uid = hs.st_uid;
		st.st_gid = hs.st_gid;
	}
	if ((to_exists || claimed) && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (to_exists || claimed) {
		/* Another user's file or directory the kernel did not know
		 * of (another mount's, or a foreign upload, newer than this
		 * mount's listing): never replaced past the sticky bit. */
		rc = inbox_may_remove(to, &st);
		if (rc)
			return rc;
	}
	if (S_ISDIR(sf.st_mode)) {
		size_t fl = strlen(from);

		if (!strncmp(to, from, fl) && to[fl] == '/')
			return -EINVAL;
		if (claimed || (to_exists && !S_ISDIR(st.st_mode)))
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
	/* Another mount's new file being written there: its content is not
	 * this mount's to replace, as for a create there (review-stale3 S1:
	 * its claim dropped, the last close took the other file's row). */
	if (claimed)
		return -EBUSY;
	/* Its attributes follow (copied first by rename_stored, moved after
	 * by the other paths): with the database down a file would be renamed
	 * without them and show the defaults (0600 -> 0644), so nothing moves
	 * then (review-perm 11). */
	rc = reception_ready(cfs->rcp);
	if (rc)
		return rc;

	of = ofile_find(from);
	if (of) {
		pthread_mutex_lock(&of->lock);
		rc = rename_claim(of, from, to, to_exists || claimed, &sf,
				  &token, &cl);
		if (rc == -EBUSY && (flags & RENAME_NOREPLACE))
			rc = -EEXIST; /* claimed meanwhile: it exists */
		/* its row is at `to` already: rename_claim's claim */
		attrs_moved = token != NULL;
		if (rc == 0)
			rc = rename_open(
			    of, from, to, to_exists && !is_temp(to),
			    to_exists ? (uint64_t)st.st_size : 0,
			    to_exists ? &to_seen : NULL, flags, &attrs_moved);
		if (token)
			rename_claim_done(of, from, to, rc, token, &cl,
					  &attrs_moved);
		pthread_mutex_unlock(&of->lock);
		ofile_put(of);
		if (rc)
			return rc;
	} else if (is_temp(to)) {
		rc = rename_stored_to_temp(from, to);
		if (rc)
			return rc;
	} else {
		return rename_stored(from, to, &sf);
	}
	dcache_remove(from);
	if (!attrs_moved)
		attrov_move(from, to, 0, NULL, NULL);
	return 0;
}

/* rename, with the outcome of a rename over an open file that libfuse hid
 * first (hide_for_rename) settled. Errors: those of rename_entry. */
int inbox_rename(const char *from, const char *to, unsigned int flags)
{
	int hiding = ofile_is_hidden_name(to), rc;

	/* A hide whose rename never came (libfuse failed in between). */
	if (hidden_for_rename.name &&
	    (hiding || strcmp(hidden_for_rename.name, to)))
		pending_finish(0);
	if (hidden_for_rename.name) {
		/* The target is replaced: its row must be able to follow
		 * (reception_rename copies before it logs). */
		rc = reception_ready(cfs->rcp);
		if (rc) {
			pending_finish(0);
			return rc;
		}
	}
	rc = rename_entry(from, to, flags);
	if (!hiding)
		pending_finish(rc == 0);
	return rc;
}
