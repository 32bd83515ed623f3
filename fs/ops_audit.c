/* ops_audit.c - audit/: read-only views of the audit tables.
 *
 *   audit/stats                          counters, "key value" per line
 *   audit/chain                          the hash chains' heads (db_chain.h):
 *                                        "time <ISO 8601 UTC>", then one
 *                                        "<table> <lane> <chain_seq>
 *                                        <row_hash>" line per lane
 *   audit/<table>.csv, <table>.jsonl     projects_registry, reception_audit,
 *                                        storage_audit
 *   audit/by-project/<prefix>.csv|.jsonl one project's storage_audit rows
 *
 * A view is a snapshot taken at open (db_export: one COPY, one snapshot)
 * into an unnamed spool file of [fs] spool_dir, read with pread and gone
 * with the last close; the daemon's memory does not grow with the table.
 * The handle is direct_io: reads go to the snapshot until it ends, so no
 * tool stops at a size the kernel cached earlier. stat reports the size of
 * the newest snapshot taken of that view (0 before the first open): exact
 * for an open view. Handlers return 0 or -errno. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "counters.h"
#include "db_chain.h"
#include "db_export.h"
#include "db_projects.h"
#include "inval.h"
#include "ll.h"
#include "log.h"

#define AUDIT_BY_PROJECT "by-project"

struct au_handle {
	struct fhandle base; /* base.area == AREA_AUDIT */
	int fd;		     /* the spool of a table view, or -1 */
	char *text;	     /* audit/stats, audit/chain: its text, or NULL */
	uint64_t size;
	struct timespec when; /* taken at */
};

/* The newest snapshot size of each view opened so far. */
struct au_seen {
	char *rel;
	uint64_t size;
	struct timespec when;
	struct au_seen *next;
};
static pthread_mutex_t au_lock = PTHREAD_MUTEX_INITIALIZER;
static struct au_seen *au_seen; /* protected by au_lock */

/* What rel names. */
struct au_view {
	int stats;		/* audit/stats */
	int chain;		/* audit/chain */
	enum db_export_table t; /* otherwise: a table view */
	enum db_export_fmt f;
	char prefix[256]; /* by-project: the project, else "" */
};

/* Parses "<table>.csv" (or .jsonl) into v->t / v->f. 0 or -ENOENT. */
static int au_parse_file(const char *name, struct au_view *v)
{
	const char *dot = strrchr(name, '.');
	int t;

	if (!dot)
		return -ENOENT;
	if (!strcmp(dot, ".csv"))
		v->f = DBX_CSV;
	else if (!strcmp(dot, ".jsonl"))
		v->f = DBX_JSONL;
	else
		return -ENOENT;
	for (t = 0; t < DBX_N; t++) {
		const char *tn = db_export_table_name((enum db_export_table)t);

		if (strlen(tn) == (size_t)(dot - name) &&
		    !strncmp(name, tn, (size_t)(dot - name))) {
			v->t = (enum db_export_table)t;
			return 0;
		}
	}
	return -ENOENT;
}

/* rel as a file of audit/. 0, -ENOENT, or -errno (EIO: the registry could
 * not be read for a by-project file). */
static int au_parse(const char *rel, struct au_view *v)
{
	const char *name;
	const char *dot;
	int rc;

	memset(v, 0, sizeof(*v));
	if (!strcmp(rel, "stats")) {
		v->stats = 1;
		return 0;
	}
	if (!strcmp(rel, "chain")) {
		v->chain = 1;
		return 0;
	}
	if (strncmp(rel, AUDIT_BY_PROJECT "/", sizeof(AUDIT_BY_PROJECT)))
		return strchr(rel, '/') ? -ENOENT : au_parse_file(rel, v);
	name = rel + sizeof(AUDIT_BY_PROJECT);
	dot = strrchr(name, '.');
	if (!dot || strchr(name, '/') || dot == name ||
	    (size_t)(dot - name) >= sizeof(v->prefix))
		return -ENOENT;
	if (strcmp(dot, ".csv") && strcmp(dot, ".jsonl"))
		return -ENOENT;
	v->t = DBX_STORAGE;
	v->f = strcmp(dot, ".csv") ? DBX_JSONL : DBX_CSV;
	memcpy(v->prefix, name, (size_t)(dot - name));
	v->prefix[dot - name] = '\0';
	if (!db_project_prefix_valid(v->prefix))
		return -ENOENT;
	rc = db_export_project_exists(cfs->db, v->prefix);
	if (rc < 0)
		return rc;
	return rc ? 0 : -ENOENT;
}

static void au_dir_stat(struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFDIR | 0555;
	st->st_nlink = 2;
	st->st_uid = cfs->uid;
	st->st_gid = cfs->gid;
	st->st_mtime = st->st_ctime = st->st_atime = cfs->started;
}

/* Remembers the size of rel's newest snapshot. */
static void au_remember(const char *rel, uint64_t size,
			const struct timespec *when)
{
	struct au_seen *s;

	pthread_mutex_lock(&au_lock);
	for (s = au_seen; s; s = s->next)
		if (!strcmp(s->rel, rel))
			break;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (s)
			s->rel = strdup(rel);
		if (s && !s->rel) {
			free(s);
			s = NULL;
		}
		if (s) {
			s->next = au_seen;
			au_seen = s;
		}
	}
	if (s && (when->tv_sec > s->when.tv_sec ||
		  (when->tv_sec == s->when.tv_sec &&
		   when->tv_nsec >= s->when.tv_nsec))) {
		s->size = size;
		s->when = *when;
	}
	pthread_mutex_unlock(&au_lock);
}

/* Errors: ENOENT, EIO (the registry, for by-project/<p>.*). */
int audit_getattr(const char *rel, struct stat *st)
{
	struct au_view v;
	struct au_seen *s;
	uint64_t size = 0;
	struct timespec when = {0};
	int rc;

	if (!*rel || !strcmp(rel, AUDIT_BY_PROJECT)) {
		au_dir_stat(st);
		return 0;
	}
	rc = au_parse(rel, &v);
	if (rc)
		return rc;
	pthread_mutex_lock(&au_lock);
	for (s = au_seen; s; s = s->next)
		if (!strcmp(s->rel, rel)) {
			size = s->size;
			when = s->when;
			break;
		}
	pthread_mutex_unlock(&au_lock);
	cfs_ro_file_stat(st, size, &when);
	return 0;
}

/* Errors: ENOENT, ENOTDIR, EIO (the registry). */
int audit_readdir(const char *rel, void *buf, fuse_fill_dir_t filler)
{
	struct project_row *rows = NULL;
	size_t n = 0, i;
	char name[300];
	int t, rc;

	if (!*rel) {
		filler(buf, "stats", NULL, 0, 0);
		filler(buf, "chain", NULL, 0, 0);
		for (t = 0; t < DBX_N; t++) {
			const char *tn =
			    db_export_table_name((enum db_export_table)t);

			snprintf(name, sizeof(name), "%s.csv", tn);
			filler(buf, name, NULL, 0, 0);
			snprintf(name, sizeof(name), "%s.jsonl", tn);
			filler(buf, name, NULL, 0, 0);
		}
		filler(buf, AUDIT_BY_PROJECT, NULL, 0, 0);
		return 0;
	}
	if (strcmp(rel, AUDIT_BY_PROJECT))
		return audit_getattr(rel, &(struct stat){0}) ? -ENOENT
							     : -ENOTDIR;
	rc = db_projects_list(cfs->db, &rows, &n, NULL);
	if (rc)
		return rc;
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s.csv", rows[i].prefix);
		filler(buf, name, NULL, 0, 0);
		snprintf(name, sizeof(name), "%s.jsonl", rows[i].prefix);
		filler(buf, name, NULL, 0, 0);
	}
	db_projects_free(rows, n);
	return 0;
}

/* An unnamed file in the spool directory. fd or -errno. */
static int au_spool(void)
{
	char path[4096];
	int fd;

	fd = open(cfs->cfg.spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	snprintf(path, sizeof(path), "%s/audit.XXXXXX", cfs->cfg.spool_dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

/* The text of audit/stats: this mount's counters, then the all-time
 * counts from the tables (when the database answers: all.available 1).
 * NULL on failure (*err = -ENOMEM). */
static char *au_stats_text(size_t *len, int *err)
{
	struct db_totals t;
	char *text = NULL;
	size_t cap = 0;
	FILE *f;
	int i, rc;

	/* The database down is when an operator looks at the counters: this
	 * mount's are shown anyway, with all.available 0 instead of all.*. */
	rc = db_export_totals(cfs->db, &t);
	if (rc)
		log_warn("audit/stats: all-time counts unavailable: %s",
			 strerror(-rc));
	f = open_memstream(&text, &cap);
	if (!f) {
		*err = -ENOMEM;
		return NULL;
	}
	for (i = 0; i < CTR_N; i++)
		fprintf(f, "mount.%s %" PRIu64 "\n", ctr_name((enum ctr)i),
			ctr_get((enum ctr)i));
	fprintf(f, "mount.started %lld\n", (long long)cfs->started);
	if (ll_active()) /* -o lowlevel: the nodes the kernel holds (ll.h) */
		fprintf(f, "ll.nodes %zu\n", ll_node_count());
	fprintf(f, "all.available %d\n", rc ? 0 : 1);
	if (!rc)
		fprintf(f,
			"all.received %" PRId64 "\nall.bytes_received %" PRId64
			"\nall.copied %" PRId64 "\nall.restored %" PRId64
			"\nall.adopted %" PRId64
			"\nall.duplicates_path %" PRId64
			"\nall.duplicates_content %" PRId64
			"\nall.conflicts %" PRId64 "\nall.bytes_stored %" PRId64
			"\nall.errors_promotion %" PRId64
			"\nall.projects %" PRId64 "\n",
			t.received, t.bytes_received, t.copied, t.restored,
			t.adopted, t.duplicates_path, t.duplicates_content,
			t.conflicts, t.bytes_stored, t.errors_promotion,
			t.projects);
	if (fclose(f)) {
		free(text);
		*err = -ENOMEM;
		return NULL;
	}
	*len = cap;
	return text;
}

/* The text of audit/chain: the heads, read now. NULL on failure (*err:
 * -ENOMEM, or the database's -errno). */
static char *au_chain_text(size_t *len, int *err)
{
	struct db_chain_head h[DB_CHAIN_NHEADS];
	char now[40], *text = NULL;
	size_t cap = 0;
	FILE *f;
	int rc, t;

	rc = db_chain_heads(cfs->db, h, now);
	if (rc) {
		*err = rc;
		return NULL;
	}
	f = open_memstream(&text, &cap);
	if (!f) {
		*err = -ENOMEM;
		return NULL;
	}
	fprintf(f, "time %s\n", now);
	for (t = 0; t < DB_CHAIN_NHEADS; t++)
		fprintf(f, "%s %d %lld %s\n", h[t].table, h[t].lane,
			(long long)h[t].seq, h[t].row_hash);
	if (fclose(f)) {
		free(text);
		*err = -ENOMEM;
		return NULL;
	}
	*len = cap;
	return text;
}

/* The kernel forgets the attributes it cached for audit/<rel>, so the next
 * stat (fstat after this open, as cp and python do before a sendfile,
 * which stops at the size the kernel knows) asks again and gets the new
 * snapshot's size. Only attributes: these files have no cached pages
 * (direct_io), so nothing waits on a page lock. */
#define AU_INVAL_WAIT_MS 200
static void au_invalidate(const char *rel)
{
	char path[1024];

	if (snprintf(path, sizeof(path), "/audit/%s", rel) >= (int)sizeof(path))
		return;
	/* Through inval.c's worker (never from a handler: inval.h), waited
	 * for a bounded time so that the caller's fstat comes after it. */
	(void)inval_path_wait(path, AU_INVAL_WAIT_MS);
}

/* Errors: EROFS (not read-only), EISDIR, ENOENT, ENOMEM, EIO (database),
 * ENOSPC (spool), plus the spool directory's open errors. */
int audit_open(const char *rel, struct fuse_file_info *fi)
{
	struct au_handle *h;
	struct au_view v;
	size_t len = 0;
	int rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	if (!*rel || !strcmp(rel, AUDIT_BY_PROJECT))
		return -EISDIR;
	rc = au_parse(rel, &v);
	if (rc)
		return rc;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->base.area = AREA_AUDIT;
	h->fd = -1;
	if (v.stats) {
		h->text = au_stats_text(&len, &rc);
		if (!h->text)
			goto fail;
		h->size = len;
	} else if (v.chain) {
		h->text = au_chain_text(&len, &rc);
		if (!h->text)
			goto fail;
		h->size = len;
	} else {
		rc = h->fd = au_spool();
		if (rc < 0)
			goto fail;
		rc = db_export(cfs->db, v.t, v.f, v.prefix[0] ? v.prefix : NULL,
			       h->fd, &h->size);
		if (rc)
			goto fail_fd;
	}
	clock_gettime(CLOCK_REALTIME, &h->when);
	au_remember(rel, h->size, &h->when);
	au_invalidate(rel);
	fi->fh = (uint64_t)(uintptr_t)h;
	/* Reads go to this snapshot until it ends, whatever size the kernel
	 * cached for the path; nothing of an earlier snapshot is kept. */
	fi->direct_io = 1;
	fi->keep_cache = 0;
	return 0;

fail_fd:
	close(h->fd);
fail:
	log_error("audit/%s: cannot take the snapshot: %s", rel, strerror(-rc));
	free(h);
	return rc;
}

/* Errors: EIO (the spool). */
int audit_read(struct fhandle *fh, char *buf, size_t size, off_t off)
{
	struct au_handle *h = (struct au_handle *)fh;
	size_t done = 0;

	if (off < 0)
		return -EINVAL;
	if ((uint64_t)off >= h->size)
		return 0;
	if (size > h->size - (uint64_t)off)
		size = (size_t)(h->size - (uint64_t)off);
	if (h->text) {
		memcpy(buf, h->text + off, size);
		return (int)size;
	}
	while (done < size) {
		ssize_t n =
		    pread(h->fd, buf + done, size - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the spool is shorter than written */
		done += (size_t)n;
	}
	return (int)done;
}

int audit_fh_getattr(struct fhandle *fh, struct stat *st)
{
	struct au_handle *h = (struct au_handle *)fh;

	cfs_ro_file_stat(st, h->size, &h->when);
	return 0;
}

void audit_release(struct fhandle *fh)
{
	struct au_handle *h = (struct au_handle *)fh;

	if (h->fd >= 0)
		close(h->fd);
	free(h->text);
	free(h);
}

void audit_free_all(void)
{
	struct au_seen *s, *next;

	pthread_mutex_lock(&au_lock);
	for (s = au_seen; s; s = next) {
		next = s->next;
		free(s->rel);
		free(s);
	}
	au_seen = NULL;
	pthread_mutex_unlock(&au_lock);
}
